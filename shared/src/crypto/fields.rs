//! Sealed fields: a short text value (a metadata value, the original file name) encrypted
//! with the image's data key into text that fits the same column:
//! `enc:v1:` + base64url (no padding) of nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, AeadCore, OsRng, Payload};

use super::keys::{NONCE_LEN, nonce_of};
use super::{CryptoError, DataKey, associated_data};
use crate::model::ImageId;

/// What every sealed value starts with; the version names the format above.
pub const SEALED_PREFIX: &str = "enc:v1:";

const FIELD_LABEL: &str = "stayler-field-v1";
const TAG_LEN: usize = 16;

/// `plaintext` sealed for field `field` of image `image_id`: it opens only with the same key,
/// image and field name, so a value copied to another field or row is refused. Each call
/// draws a new nonce, so equal values seal to different text.
pub fn seal_field(key: &DataKey, image_id: ImageId, field: &str, plaintext: &str) -> String {
    let nonce = chacha20poly1305::XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let aad = associated_data(FIELD_LABEL, image_id, field);
    let sealed = key
        .cipher()
        .encrypt(&nonce, Payload { msg: plaintext.as_bytes(), aad: &aad })
        .expect("a field is far below the cipher's limit");
    let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(&sealed);
    format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The plaintext of a value [`seal_field`] made for the same image and field.
pub fn open_field(key: &DataKey, image_id: ImageId, field: &str, sealed: &str) -> Result<String, CryptoError> {
    let encoded = sealed.strip_prefix(SEALED_PREFIX).ok_or(CryptoError::BadFormat("a sealed field starts enc:v1:"))?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| CryptoError::BadFormat("a sealed field is base64url"))?;
    if bytes.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::BadFormat("a sealed field is too short"));
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
    let aad = associated_data(FIELD_LABEL, image_id, field);
    let plain = key
        .cipher()
        .decrypt(&nonce_of(nonce), Payload { msg: ciphertext, aad: &aad })
        .map_err(|_| CryptoError::AuthenticationFailed)?;
    String::from_utf8(plain).map_err(|_| CryptoError::BadFormat("a sealed field holds UTF-8"))
}

/// Whether `value` has the sealed form (its prefix); says nothing of whether it opens.
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_each_seal_differs() {
        let (key, image) = (DataKey::generate(), ImageId::new());
        for plain in ["", "x", "holiday photo — Zürich.jpg", &"long ".repeat(2000)] {
            let sealed = seal_field(&key, image, "original_name", plain);
            assert!(is_sealed(&sealed) && !sealed.contains("Zürich"), "{sealed}");
            assert_eq!(open_field(&key, image, "original_name", &sealed).unwrap(), plain);
        }
        let (a, b) = (seal_field(&key, image, "f", "same"), seal_field(&key, image, "f", "same"));
        assert_ne!(a, b);
        assert!(!is_sealed("plain text") && is_sealed("enc:v1:AAAA"));
        assert_eq!(seal_field(&key, image, "f", "").len(), SEALED_PREFIX.len() + 54);
    }

    #[test]
    fn a_sealed_field_moved_or_altered_does_not_open() {
        let (key, image) = (DataKey::generate(), ImageId::new());
        let sealed = seal_field(&key, image, "email", "a@b.c");
        let fails = |result: Result<String, CryptoError>| matches!(result, Err(CryptoError::AuthenticationFailed));
        assert!(fails(open_field(&key, image, "phone", &sealed)), "another field");
        assert!(fails(open_field(&key, ImageId::new(), "email", &sealed)), "another image");
        assert!(fails(open_field(&DataKey::generate(), image, "email", &sealed)), "another key");
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed[SEALED_PREFIX.len()..]).unwrap();
        for at in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[at] ^= 0x80;
            let tampered = format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes));
            assert!(fails(open_field(&key, image, "email", &tampered)), "byte {at}");
            bytes[at] ^= 0x80;
        }
        for bad in ["a@b.c", "enc:v1:***", "enc:v1:AAAA", "enc:v2:AAAA"] {
            assert!(matches!(open_field(&key, image, "email", bad), Err(CryptoError::BadFormat(_))), "{bad}");
        }
    }
}
