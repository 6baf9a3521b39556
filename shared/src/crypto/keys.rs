//! The key ring of master keys and the per-image data keys they wrap.

use std::collections::BTreeMap;
use std::fmt;

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::ExposeSecret;
use zeroize::Zeroize;

use super::{CryptoError, associated_data};
use crate::config::{EncryptionConfig, MASTER_KEY_BYTES, decode_master_key};
use crate::model::ImageId;

/// Length of a data key, in bytes.
const DATA_KEY_LEN: usize = 32;
/// XChaCha20-Poly1305 nonce length, in bytes.
pub(super) const NONCE_LEN: usize = 24;
/// Length of a wrapped data key: nonce ‖ encrypted key ‖ tag.
pub const WRAPPED_KEY_LEN: usize = NONCE_LEN + DATA_KEY_LEN + 16;

/// The nonce at the start of a sealed value; `nonce` is [`NONCE_LEN`] bytes (callers split
/// it off after checking the length).
pub(super) fn nonce_of(nonce: &[u8]) -> XNonce {
    let bytes: [u8; NONCE_LEN] = nonce.try_into().expect("callers pass NONCE_LEN bytes");
    XNonce::from(bytes)
}

/// One image's data key: 32 random bytes that encrypt its fields and files. Wiped from
/// memory when dropped; its `Debug` output shows no byte of it.
pub struct DataKey {
    bytes: [u8; DATA_KEY_LEN],
}

impl DataKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; DATA_KEY_LEN];
        OsRng.fill_bytes(&mut bytes);
        Self { bytes }
    }

    /// The cipher keyed with this data key.
    pub(super) fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.bytes).into())
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A data key encrypted by a master key: what `storage_image_keys` stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// Id of the master key that wrapped it (`encryption.keys`).
    pub key_id: String,
    /// nonce (24 bytes) ‖ encrypted data key (32) ‖ tag (16).
    pub bytes: Vec<u8>,
}

/// The master keys of `encryption.keys`, one of them active. The ciphers wipe their keys
/// when dropped; `Debug` shows only the ids.
pub struct KeyRing {
    active: String,
    keys: BTreeMap<String, XChaCha20Poly1305>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing").field("active", &self.active).field("keys", &self.keys.keys()).finish()
    }
}

const WRAP_LABEL: &str = "stayler-data-key-v1";

impl KeyRing {
    /// The ring of `encryption.keys`, with `encryption.activeKeyId` wrapping new keys.
    pub fn from_config(config: &EncryptionConfig) -> Result<Self, CryptoError> {
        let mut keys = BTreeMap::new();
        for (id, secret) in &config.keys {
            let bytes = decode_master_key(secret.expose_secret())
                .filter(|bytes| bytes.len() == MASTER_KEY_BYTES)
                .ok_or_else(|| CryptoError::BadMasterKey(id.clone()))?;
            keys.insert(id.clone(), XChaCha20Poly1305::new(bytes.as_slice().into()));
        }
        if !keys.contains_key(&config.active_key_id) {
            return Err(CryptoError::UnknownKeyId(config.active_key_id.clone()));
        }
        Ok(Self { active: config.active_key_id.clone(), keys })
    }

    /// Id of the master key that wraps new data keys.
    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// Whether `key_id` is in the ring.
    pub fn contains(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    /// `key` encrypted by the active master key for the image `image_id`: it unwraps only
    /// with that image's id, so a row copied onto another image is refused.
    pub fn wrap(&self, key: &DataKey, image_id: ImageId) -> WrappedKey {
        let cipher = &self.keys[&self.active];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = associated_data(WRAP_LABEL, image_id, "");
        let sealed = cipher
            .encrypt(&nonce, Payload { msg: &key.bytes, aad: &aad })
            .expect("a 32-byte message is far below the cipher's limit");
        let mut bytes = Vec::with_capacity(WRAPPED_KEY_LEN);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        WrappedKey { key_id: self.active.clone(), bytes }
    }

    /// The data key of image `image_id`, with whichever master key `wrapped` names.
    pub fn unwrap(&self, wrapped: &WrappedKey, image_id: ImageId) -> Result<DataKey, CryptoError> {
        let cipher = self.keys.get(&wrapped.key_id).ok_or_else(|| CryptoError::UnknownKeyId(wrapped.key_id.clone()))?;
        if wrapped.bytes.len() != WRAPPED_KEY_LEN {
            return Err(CryptoError::BadFormat("a wrapped data key is 72 bytes"));
        }
        let (nonce, sealed) = wrapped.bytes.split_at(NONCE_LEN);
        let aad = associated_data(WRAP_LABEL, image_id, "");
        let mut plain = cipher
            .decrypt(&nonce_of(nonce), Payload { msg: sealed, aad: &aad })
            .map_err(|_| CryptoError::AuthenticationFailed)?;
        let mut key = DataKey { bytes: [0; DATA_KEY_LEN] };
        key.bytes.copy_from_slice(&plain);
        plain.zeroize();
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{open_field, seal_field};
    use secrecy::SecretString;

    const M1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const M2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    pub(crate) fn ring(active: &str, keys: &[(&str, &str)]) -> KeyRing {
        let config = EncryptionConfig {
            enabled: true,
            active_key_id: active.to_owned(),
            keys: keys.iter().map(|(id, key)| (id.to_string(), SecretString::from(key.to_string()))).collect(),
            ..Default::default()
        };
        KeyRing::from_config(&config).unwrap()
    }

    /// Whether two data keys are the same: what one seals, the other opens.
    fn same_key(a: &DataKey, b: &DataKey) -> bool {
        let image = ImageId::new();
        open_field(b, image, "probe", &seal_field(a, image, "probe", "x")).is_ok()
    }

    #[test]
    fn a_wrapped_key_unwraps_to_the_same_key_only_for_its_image() {
        let ring = ring("m1", &[("m1", M1)]);
        let (key, image) = (DataKey::generate(), ImageId::new());
        let wrapped = ring.wrap(&key, image);
        assert_eq!((wrapped.key_id.as_str(), wrapped.bytes.len()), ("m1", WRAPPED_KEY_LEN));
        assert!(same_key(&key, &ring.unwrap(&wrapped, image).unwrap()));
        assert!(!same_key(&key, &DataKey::generate()));
        assert!(matches!(ring.unwrap(&wrapped, ImageId::new()), Err(CryptoError::AuthenticationFailed)));
        for at in [0, NONCE_LEN, WRAPPED_KEY_LEN - 1] {
            let mut tampered = wrapped.clone();
            tampered.bytes[at] ^= 1;
            assert!(matches!(ring.unwrap(&tampered, image), Err(CryptoError::AuthenticationFailed)), "byte {at}");
        }
        let short = WrappedKey { key_id: "m1".into(), bytes: wrapped.bytes[..40].to_vec() };
        assert!(matches!(ring.unwrap(&short, image), Err(CryptoError::BadFormat(_))));
    }

    #[test]
    fn after_rotation_old_keys_still_unwrap_and_unknown_ids_are_errors() {
        let (key, image) = (DataKey::generate(), ImageId::new());
        let under_m1 = ring("m1", &[("m1", M1)]).wrap(&key, image);
        let rotated = ring("m2", &[("m1", M1), ("m2", M2)]);
        assert_eq!(rotated.active_key_id(), "m2");
        assert!(same_key(&key, &rotated.unwrap(&under_m1, image).unwrap()));
        let under_m2 = rotated.wrap(&rotated.unwrap(&under_m1, image).unwrap(), image);
        assert_eq!(under_m2.key_id, "m2");
        let without_m1 = ring("m2", &[("m2", M2)]);
        assert!(same_key(&key, &without_m1.unwrap(&under_m2, image).unwrap()));
        assert!(matches!(without_m1.unwrap(&under_m1, image), Err(CryptoError::UnknownKeyId(id)) if id == "m1"));
        // A wrapped key relabelled with another id does not open either.
        let relabelled = WrappedKey { key_id: "m2".into(), bytes: under_m1.bytes.clone() };
        assert!(matches!(rotated.unwrap(&relabelled, image), Err(CryptoError::AuthenticationFailed)));
    }

    #[test]
    fn a_ring_needs_its_active_key_and_shows_no_secret() {
        let config = EncryptionConfig { active_key_id: "m9".into(), ..Default::default() };
        assert!(matches!(KeyRing::from_config(&config), Err(CryptoError::UnknownKeyId(id)) if id == "m9"));
        let debug = format!("{:?} {:?}", ring("m1", &[("m1", M1)]), DataKey::generate());
        assert_eq!(debug, r#"KeyRing { active: "m1", keys: ["m1"] } DataKey(..)"#);
    }
}
