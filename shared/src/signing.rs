//! Signed URLs: the one path segment that grants time-limited access to one variant of one
//! image, and the keys that sign and verify it.
//!
//! A signed path segment is `{image_id}.{variant}.{v|d}.{expires}[.{generation}].{key_id}.{signature}`:
//! the image id as a lower-case hyphenated UUID, the variant (`original` or a thumbnail size
//! name), `v` for view or `d` for download, the expiry in Unix seconds, the image's URL
//! generation when it is not 0, the id of the key that signed it, and the unpadded base64url
//! HMAC-SHA256 of everything before the last dot. The generation is how URLs are revoked
//! before they expire: serving refuses a URL whose generation is not the image's current one
//! (generation 0 is left out, so URLs signed before generations existed read as 0).
//! Every field comes from ids and enums (never from a client's file name), none may contain
//! a dot, and each has exactly one accepted spelling, so the signed bytes *are* the
//! canonical string and no encoding trick can make two different grants share a signature.
//!
//! Verification needs no database: parse strictly, find the key by id, check the MAC in
//! constant time, then the expiry. Several keys can be configured so the active one can be
//! rotated while URLs signed by the previous ones keep working until they expire.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use uuid::Uuid;

use crate::model::{ImageId, ORIGINAL, UnknownName, is_safe_segment};

/// Domain separation: a MAC made for anything else with the same key never verifies here.
const DOMAIN: &[u8] = b"stayler-signed-url-v1\n";
/// Longest accepted signed segment, in bytes (a real one is under 200).
const MAX_SEGMENT_BYTES: usize = 256;
/// Length of an HMAC-SHA256 in unpadded base64url.
const SIGNATURE_CHARS: usize = 43;
const UUID_CHARS: usize = 36;

type HmacSha256 = Hmac<Sha256>;

/// What a URL lets its holder do with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessType {
    /// Shown inline (an `<img>` source).
    View,
    /// Saved as a file (`Content-Disposition: attachment`).
    Download,
}

impl AccessType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::View => "view",
            Self::Download => "download",
        }
    }

    fn code(self) -> &'static str {
        match self {
            Self::View => "v",
            Self::Download => "d",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        match code {
            "v" => Some(Self::View),
            "d" => Some(Self::Download),
            _ => None,
        }
    }
}

impl FromStr for AccessType {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "view" => Ok(Self::View),
            "download" => Ok(Self::Download),
            _ => Err(UnknownName(s.to_owned())),
        }
    }
}

impl fmt::Display for AccessType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which bytes of an image: the original or one of its thumbnails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant<'a> {
    Original,
    /// A thumbnail, by configured size name (`small`, `medium`, `large`).
    Thumbnail(&'a str),
}

impl<'a> Variant<'a> {
    /// `original`, or any plain name (whether such a thumbnail size is configured is for the
    /// caller to decide).
    pub fn parse(name: &'a str) -> Option<Self> {
        if name == ORIGINAL {
            Some(Self::Original)
        } else if is_safe_segment(name) {
            Some(Self::Thumbnail(name))
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &'a str {
        match self {
            Self::Original => ORIGINAL,
            Self::Thumbnail(name) => name,
        }
    }
}

impl fmt::Display for Variant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a signed URL grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant<'a> {
    pub image_id: ImageId,
    pub variant: Variant<'a>,
    pub access: AccessType,
    /// Unix seconds after which the URL is refused.
    pub expires: i64,
    /// The image's URL generation when the URL was signed; serving refuses the URL once
    /// the image's generation has moved on (its URLs were revoked).
    pub generation: u32,
}

/// A grant whose signature checked out, and the key that signed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified<'a> {
    pub grant: Grant<'a>,
    pub key_id: &'a str,
}

/// Why a signed path is refused. Checked in this order, so a tampered expiry or access type
/// is a bad signature, never "expired" or "wrong access type".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signed URL is malformed")]
    Malformed,
    #[error("the signed URL names a key this service does not know")]
    UnknownKey,
    #[error("the signed URL's signature does not match")]
    BadSignature,
    #[error("the signed URL has expired")]
    Expired,
    #[error("the signed URL was issued for {issued} access, not {requested}")]
    WrongAccessType { issued: AccessType, requested: AccessType },
}

/// The keys that sign (the active one) and verify (all of them) URLs.
#[derive(Clone)]
pub struct SigningKeys {
    /// The active key first; ids are plain names without dots.
    keys: Vec<(String, HmacSha256)>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys").field("key_ids", &self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>()).finish()
    }
}

impl SigningKeys {
    /// The active key signs; `previous` keys only verify. Ids must be plain names (the
    /// configuration checks them); a repeated id keeps its first secret.
    pub fn new<'k>(
        active_id: &str,
        active: &SecretString,
        previous: impl IntoIterator<Item = (&'k str, &'k SecretString)>,
    ) -> Self {
        let keyed = |secret: &SecretString| {
            HmacSha256::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC accepts keys of any length")
        };
        let mut keys = vec![(active_id.to_owned(), keyed(active))];
        for (id, secret) in previous {
            if !keys.iter().any(|(known, _)| known == id) {
                keys.push((id.to_owned(), keyed(secret)));
            }
        }
        Self { keys }
    }

    /// Id of the key new URLs are signed with.
    pub fn active_key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// The signed path segment for `grant`, signed with the active key.
    pub fn sign(&self, grant: &Grant<'_>) -> String {
        let (key_id, key) = &self.keys[0];
        let mut segment =
            format!("{}.{}.{}.{}", grant.image_id.0.hyphenated(), grant.variant, grant.access.code(), grant.expires);
        if grant.generation > 0 {
            segment.push_str(&format!(".{}", grant.generation));
        }
        segment.push('.');
        segment.push_str(key_id);
        let mut mac = key.clone();
        mac.update(DOMAIN);
        mac.update(segment.as_bytes());
        segment.push('.');
        URL_SAFE_NO_PAD.encode_string(mac.finalize().into_bytes(), &mut segment);
        segment
    }

    /// Checks a signed path segment at time `now` (Unix seconds). `requested` is the access
    /// the request asks for, if it says so; it must be the one the URL was issued for.
    pub fn verify<'s>(
        &self,
        segment: &'s str,
        now: i64,
        requested: Option<AccessType>,
    ) -> Result<Verified<'s>, SignatureError> {
        let parsed = parse(segment).ok_or(SignatureError::Malformed)?;
        let (_, key) =
            self.keys.iter().find(|(id, _)| id == parsed.verified.key_id).ok_or(SignatureError::UnknownKey)?;
        let mut mac = key.clone();
        mac.update(DOMAIN);
        mac.update(parsed.signed.as_bytes());
        mac.verify_slice(&parsed.signature).map_err(|_| SignatureError::BadSignature)?;
        let grant = parsed.verified.grant;
        if now >= grant.expires {
            return Err(SignatureError::Expired);
        }
        if let Some(requested) = requested
            && requested != grant.access
        {
            return Err(SignatureError::WrongAccessType { issued: grant.access, requested });
        }
        Ok(parsed.verified)
    }
}

/// The grant and key id a segment claims, WITHOUT checking its signature: only for
/// bookkeeping about segments that were verified already (usage counting), never to grant
/// access.
pub fn claimed_grant(segment: &str) -> Option<Verified<'_>> {
    parse(segment).map(|parsed| parsed.verified)
}

/// A segment split into its fields, before its signature is checked.
struct Parsed<'s> {
    verified: Verified<'s>,
    /// Everything before the last dot: the bytes the MAC covers.
    signed: &'s str,
    signature: [u8; 32],
}

/// Strict parsing: six fields, or seven with a generation, each in its one canonical
/// spelling (a generation of 0 is never written, so it has one spelling too).
fn parse(segment: &str) -> Option<Parsed<'_>> {
    if segment.len() > MAX_SEGMENT_BYTES {
        return None;
    }
    let (signed, signature_text) = segment.rsplit_once('.')?;
    let fields: Vec<&str> = signed.split('.').collect();
    let (id, variant, access, expires, generation, key_id) = match fields[..] {
        [id, variant, access, expires, key_id] => (id, variant, access, expires, 0, key_id),
        [id, variant, access, expires, generation, key_id] => {
            (id, variant, access, expires, parse_generation(generation)?, key_id)
        }
        _ => return None,
    };
    let image_id = parse_uuid(id)?;
    let variant = Variant::parse(variant)?;
    let access = AccessType::from_code(access)?;
    let expires = parse_unix_seconds(expires)?;
    if !is_safe_segment(key_id) {
        return None;
    }
    let signature = parse_signature(signature_text)?;
    let grant = Grant { image_id: ImageId(image_id), variant, access, expires, generation };
    Some(Parsed { verified: Verified { grant, key_id }, signed, signature })
}

/// Only the lower-case hyphenated form, so one id has one spelling.
fn parse_uuid(text: &str) -> Option<Uuid> {
    if text.len() != UUID_CHARS || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let id = Uuid::try_parse(text).ok()?;
    let mut canonical = [0u8; UUID_CHARS];
    (id.hyphenated().encode_lower(&mut canonical) == text).then_some(id)
}

/// Decimal digits without sign or leading zero, at most `i64::MAX`.
fn parse_unix_seconds(text: &str) -> Option<i64> {
    let digits_only = !text.is_empty() && text.len() <= 19 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse::<i64>().ok().filter(|&seconds| seconds > 0)
}

/// A written generation: canonical decimal, at least 1, at most what the database keeps.
fn parse_generation(text: &str) -> Option<u32> {
    let generation = parse_unix_seconds(text)?;
    u32::try_from(generation).ok().filter(|&generation| i32::try_from(generation).is_ok())
}

/// Exactly 43 base64url characters whose unused trailing bits are zero (the decoder refuses
/// any other spelling of the same 32 bytes).
fn parse_signature(text: &str) -> Option<[u8; 32]> {
    if text.len() != SIGNATURE_CHARS {
        return None;
    }
    let mut signature = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(text, &mut signature) {
        Ok(32) => Some(signature),
        _ => None,
    }
}

/// The expiry of a URL asked for at `now` to live `ttl_secs`, rounded up to the next
/// multiple of `window_secs`: every request within one window gets the same expiry, hence
/// the same URL, so browser and CDN caches keep working. The URL then lives at least
/// `ttl_secs` and less than `ttl_secs + window_secs`.
pub fn rounded_expiry(now: i64, ttl_secs: u64, window_secs: u64) -> i64 {
    let exact = now.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX));
    let window = i64::try_from(window_secs.max(1)).unwrap_or(i64::MAX);
    match exact % window {
        0 => exact,
        rest => exact.saturating_add(window - rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000;

    fn keys() -> SigningKeys {
        let old = SecretString::from("old-secret");
        SigningKeys::new("k2", &SecretString::from("active-secret"), [("k1", &old)])
    }

    fn grant() -> Grant<'static> {
        Grant {
            image_id: ImageId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00aa)),
            variant: Variant::Thumbnail("small"),
            access: AccessType::View,
            expires: NOW + 600,
            generation: 0,
        }
    }

    /// Replaces field `index` (0-based, dot-separated) of a signed segment.
    fn with_field(segment: &str, index: usize, value: &str) -> String {
        let mut fields: Vec<&str> = segment.split('.').collect();
        fields[index] = value;
        fields.join(".")
    }

    #[test]
    fn a_signed_segment_verifies_to_its_grant() {
        let keys = keys();
        let segment = keys.sign(&grant());
        assert!(segment.starts_with("01900000-0000-7000-8000-0000000000aa.small.v."), "{segment}");
        let verified = keys.verify(&segment, NOW, None).unwrap();
        assert_eq!(verified.grant, grant());
        assert_eq!(verified.key_id, "k2");
        assert_eq!(keys.verify(&segment, NOW, Some(AccessType::View)).unwrap().grant, grant());
        assert!(segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{segment}");
    }

    #[test]
    fn every_tampered_field_breaks_the_signature() {
        let keys = keys();
        let segment = keys.sign(&grant());
        let tampered = [
            with_field(&segment, 0, "01900000-0000-7000-8000-0000000000ab"),
            with_field(&segment, 1, "original"),
            with_field(&segment, 2, "d"),
            with_field(&segment, 3, &(NOW + 601).to_string()),
            with_field(&segment, 3, &(NOW - 1).to_string()),
            with_field(&segment, 4, "k1"),
        ];
        for segment in tampered {
            assert_eq!(keys.verify(&segment, NOW, None), Err(SignatureError::BadSignature), "{segment}");
        }
        let signature = segment.rsplit('.').next().unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        let segment = with_field(&segment, 5, &format!("{flipped}{}", &signature[1..]));
        assert_eq!(keys.verify(&segment, NOW, None), Err(SignatureError::BadSignature));
    }

    #[test]
    fn a_generation_is_written_only_when_not_zero_and_is_signed() {
        let keys = keys();
        let first = keys.sign(&grant());
        assert_eq!(first.split('.').count(), 6, "{first}");
        let revoked_once = Grant { generation: 1, ..grant() };
        let segment = keys.sign(&revoked_once);
        assert_eq!(segment.split('.').nth(4), Some("1"), "{segment}");
        assert_eq!(keys.verify(&segment, NOW, None).unwrap().grant, revoked_once);
        let max = Grant { generation: i32::MAX as u32, ..grant() };
        assert_eq!(keys.verify(&keys.sign(&max), NOW, None).unwrap().grant, max);
        // Another generation, or none, is another grant: the signature no longer matches.
        assert_eq!(keys.verify(&with_field(&segment, 4, "2"), NOW, None), Err(SignatureError::BadSignature));
        let mut fields: Vec<&str> = segment.split('.').collect();
        fields.remove(4);
        assert_eq!(keys.verify(&fields.join("."), NOW, None), Err(SignatureError::BadSignature));
        let mut fields: Vec<&str> = first.split('.').collect();
        fields.insert(4, "1");
        assert_eq!(keys.verify(&fields.join("."), NOW, None), Err(SignatureError::BadSignature));
        // One spelling: no written 0, no leading zero, nothing past what the database keeps.
        for generation in ["0", "01", "+1", "2147483648", "x"] {
            let segment = with_field(&segment, 4, generation);
            assert_eq!(keys.verify(&segment, NOW, None), Err(SignatureError::Malformed), "{segment}");
        }
    }

    #[test]
    fn a_key_id_nobody_configured_is_unknown() {
        let stranger = SigningKeys::new("k9", &SecretString::from("active-secret"), []);
        let segment = stranger.sign(&grant());
        assert_eq!(keys().verify(&segment, NOW, None), Err(SignatureError::UnknownKey));
    }

    #[test]
    fn urls_signed_with_a_previous_key_stay_valid_after_rotation() {
        let before = SigningKeys::new("k1", &SecretString::from("old-secret"), []);
        let segment = before.sign(&grant());
        assert_eq!(keys().verify(&segment, NOW, None).unwrap().key_id, "k1");
        assert_eq!(keys().active_key_id(), "k2");
        // The same id with another secret is not the same key.
        let impostor = SigningKeys::new("k1", &SecretString::from("guess"), []);
        assert_eq!(keys().verify(&impostor.sign(&grant()), NOW, None), Err(SignatureError::BadSignature));
    }

    #[test]
    fn expiry_is_checked_after_the_signature() {
        let keys = keys();
        let segment = keys.sign(&grant());
        assert!(keys.verify(&segment, NOW + 599, None).is_ok());
        assert_eq!(keys.verify(&segment, NOW + 600, None), Err(SignatureError::Expired));
        assert_eq!(keys.verify(&segment, NOW + 10_000, None), Err(SignatureError::Expired));
    }

    #[test]
    fn the_other_access_type_is_refused() {
        let keys = keys();
        let segment = keys.sign(&grant());
        assert_eq!(
            keys.verify(&segment, NOW, Some(AccessType::Download)),
            Err(SignatureError::WrongAccessType { issued: AccessType::View, requested: AccessType::Download })
        );
        let download = keys.sign(&Grant { access: AccessType::Download, ..grant() });
        assert!(keys.verify(&download, NOW, Some(AccessType::Download)).is_ok());
        assert!(keys.verify(&download, NOW, Some(AccessType::View)).is_err());
    }

    #[test]
    fn only_the_canonical_spelling_of_each_field_parses() {
        let keys = keys();
        let segment = keys.sign(&grant());
        let expires = (NOW + 600).to_string();
        let malformed = [
            String::new(),
            "x".repeat(300),
            segment.replace("01900000-0000-7000-8000-0000000000aa", "01900000-0000-7000-8000-0000000000AA"),
            segment.replace("01900000-0000-7000-8000-0000000000aa", "019000000000700080000000000000aa"),
            segment.replace("01900000-0000-7000-8000-0000000000aa", "{01900000-0000-7000-8000-0000000000aa}"),
            with_field(&segment, 1, ".."),
            with_field(&segment, 1, "a/b"),
            with_field(&segment, 1, "%2e%2e"),
            with_field(&segment, 1, ""),
            with_field(&segment, 2, "x"),
            with_field(&segment, 2, "view"),
            with_field(&segment, 3, &format!("0{expires}")),
            with_field(&segment, 3, &format!("+{expires}")),
            with_field(&segment, 3, "0"),
            with_field(&segment, 3, "99999999999999999999"),
            with_field(&segment, 4, "k/2"),
            with_field(&segment, 4, ""),
            format!("{segment}="),
            format!("{segment}.x"),
            format!("x.{segment}"),
            segment.rsplit_once('.').unwrap().0.to_owned(),
        ];
        for segment in malformed {
            assert_eq!(keys.verify(&segment, NOW, None), Err(SignatureError::Malformed), "{segment}");
        }
        // The last base64 character carries 2 unused bits; any other spelling of the same
        // bytes is refused rather than accepted as the same signature.
        let signature = segment.rsplit('.').next().unwrap();
        let last = signature.chars().last().unwrap();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.find(last).unwrap();
        let sibling = alphabet.chars().nth(index ^ 1).unwrap();
        let respelled = format!("{}{sibling}", &segment[..segment.len() - 1]);
        assert_eq!(keys.verify(&respelled, NOW, None), Err(SignatureError::Malformed));
    }

    #[test]
    fn expiry_rounds_up_to_the_window_so_repeated_requests_agree() {
        assert_eq!(rounded_expiry(1000, 3600, 300), 4800);
        assert_eq!(rounded_expiry(1001, 3600, 300), 4800);
        assert_eq!(rounded_expiry(1199, 3600, 300), 4800);
        assert_eq!(rounded_expiry(1201, 3600, 300), 5100);
        assert_eq!(rounded_expiry(1001, 3600, 1), 4601);
        assert_eq!(rounded_expiry(1001, 3600, 0), 4601);
        let keys = keys();
        let sign_at = |now| keys.sign(&Grant { expires: rounded_expiry(now, 3600, 300), ..grant() });
        assert_eq!(sign_at(1001), sign_at(1150));
        assert_ne!(sign_at(1001), sign_at(1250));
    }

    #[test]
    fn variants_and_access_types_have_one_name_each() {
        assert_eq!(Variant::parse("original"), Some(Variant::Original));
        assert_eq!(Variant::parse("large"), Some(Variant::Thumbnail("large")));
        assert_eq!(Variant::parse("a.b"), None);
        assert_eq!("download".parse::<AccessType>().unwrap(), AccessType::Download);
        assert!("d".parse::<AccessType>().is_err());
        let debug = format!("{:?}", keys());
        assert!(!debug.contains("secret"), "{debug}");
    }
}
