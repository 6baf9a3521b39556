//! The `encryption:` section: the master keys (key-encryption keys) of envelope encryption,
//! which of them wraps new data keys, and what gets encrypted. The key ring built from it
//! lives in [`crate::crypto`].

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{ConfigError, DEV_SECRET_PREFIX, Mode};

/// Length of a master key, in bytes (256 bits).
pub const MASTER_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// Turns encryption on; off by default.
    pub enabled: bool,
    /// Id of the master key that wraps new data keys (and that `rotate-keys` re-wraps every
    /// data key under). A plain name; lowercase, since environment overrides lowercase key ids.
    pub active_key_id: String,
    /// Master keys by id: base64 (standard or URL-safe, padded or not) of 32 random bytes.
    /// Retired keys stay here until `rotate-keys` has re-wrapped every data key they wrapped.
    pub keys: BTreeMap<String, SecretString>,
    /// Metadata keys whose values are sealed with the image's data key.
    pub sensitive_metadata_keys: Vec<String>,
    /// Seal the client's original file name too.
    pub encrypt_original_name: bool,
    /// Encrypt originals and thumbnails on the live store as well; backups are always
    /// encrypted when `enabled`.
    pub live_store: bool,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            active_key_id: "m1".to_owned(),
            keys: BTreeMap::new(),
            sensitive_metadata_keys: Vec::new(),
            encrypt_original_name: true,
            live_store: false,
        }
    }
}

/// The bytes of a master key written as base64, if it is valid base64 of any length.
/// Accepts both alphabets, so `openssl rand -base64 32` and URL-safe keys both work.
pub fn decode_master_key(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let normalised: Zeroizing<String> = Zeroizing::new(
        text.trim()
            .trim_end_matches('=')
            .chars()
            .map(|c| match c {
                '-' => '+',
                '_' => '/',
                other => other,
            })
            .collect(),
    );
    STANDARD_NO_PAD.decode(normalised.as_bytes()).ok().map(Zeroizing::new)
}

impl EncryptionConfig {
    pub(super) fn validate(&self, mode: Mode) -> Result<(), ConfigError> {
        let bad = |key, reason: String| Err(ConfigError::BadValue { key, reason });
        if !crate::model::is_safe_segment(&self.active_key_id) {
            return bad("encryption.activeKeyId", "must be a plain name (letters, digits, - and _)".to_owned());
        }
        if self.enabled && !self.keys.contains_key(&self.active_key_id) {
            return bad("encryption.activeKeyId", format!("`{}` is not in encryption.keys", self.active_key_id));
        }
        for (id, secret) in &self.keys {
            if !crate::model::is_safe_segment(id) {
                return bad("encryption.keys", format!("`{id}` must be a plain name (letters, digits, - and _)"));
            }
            let text = secret.expose_secret();
            let Some(bytes) = decode_master_key(text).filter(|bytes| bytes.len() == MASTER_KEY_BYTES) else {
                return bad(
                    "encryption.keys",
                    format!("key `{id}` must be base64 of exactly {MASTER_KEY_BYTES} bytes"),
                );
            };
            if mode == Mode::Production && text.starts_with(DEV_SECRET_PREFIX) {
                return bad(
                    "encryption.keys",
                    format!("key `{id}` is a development placeholder; set a real key outside dev mode"),
                );
            }
            if mode == Mode::Production && bytes.iter().all(|&byte| byte == bytes[0]) {
                return bad("encryption.keys", format!("key `{id}` repeats one byte: use 32 random bytes"));
            }
        }
        for name in &self.sensitive_metadata_keys {
            if name.is_empty() {
                return bad("encryption.sensitiveMetadataKeys", "holds an empty key".to_owned());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dev key of `config/dev.yaml`.
    const DEV_KEY: &str = "dev-stayler-local-master-key-m1-00000000000";
    /// Base64 of 32 bytes 0..32.
    const REAL_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn with_keys(enabled: bool, keys: &[(&str, &str)]) -> EncryptionConfig {
        EncryptionConfig {
            enabled,
            keys: keys.iter().map(|(id, key)| (id.to_string(), SecretString::from(key.to_string()))).collect(),
            ..Default::default()
        }
    }

    fn fault(config: &EncryptionConfig, mode: Mode) -> String {
        match config.validate(mode) {
            Err(ConfigError::BadValue { key, reason }) => format!("{key}: {reason}"),
            other => panic!("expected a bad value, got {other:?}"),
        }
    }

    #[test]
    fn the_defaults_are_off_and_valid() {
        let config = EncryptionConfig::default();
        assert!(!config.enabled && config.encrypt_original_name && !config.live_store);
        assert_eq!(config.active_key_id, "m1");
        config.validate(Mode::Production).unwrap();
    }

    #[test]
    fn enabled_needs_the_active_key_in_the_ring() {
        assert!(fault(&with_keys(true, &[]), Mode::Dev).starts_with("encryption.activeKeyId"));
        assert!(fault(&with_keys(true, &[("m2", REAL_KEY)]), Mode::Dev).contains("`m1` is not in"));
        with_keys(true, &[("m1", REAL_KEY)]).validate(Mode::Production).unwrap();
        with_keys(false, &[("m2", REAL_KEY)]).validate(Mode::Production).unwrap();
        let mut odd = with_keys(true, &[("m1", REAL_KEY)]);
        odd.active_key_id = "m/1".to_owned();
        assert!(fault(&odd, Mode::Dev).starts_with("encryption.activeKeyId"));
    }

    #[test]
    fn every_key_decodes_to_exactly_32_bytes() {
        let short = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg=="; // 31 bytes
        let long = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g"; // 33 bytes
        for bad in [short, long, "not base64!", ""] {
            let message = fault(&with_keys(false, &[("m1", REAL_KEY), ("old", bad)]), Mode::Dev);
            assert!(message.starts_with("encryption.keys") && message.contains("`old`"), "{message}");
        }
        let url_safe = REAL_KEY.replace('+', "-").replace('/', "_");
        with_keys(true, &[("m1", url_safe.trim_end_matches('='))]).validate(Mode::Dev).unwrap();
        assert_eq!(decode_master_key(REAL_KEY).unwrap().as_slice(), (0..32).collect::<Vec<u8>>());
    }

    #[test]
    fn placeholder_and_repeated_byte_keys_are_refused_outside_dev_mode() {
        let dev = with_keys(true, &[("m1", DEV_KEY)]);
        dev.validate(Mode::Dev).unwrap();
        let message = fault(&dev, Mode::Production);
        assert!(message.contains("key `m1` is a development placeholder"), "{message}");
        let zeros = with_keys(true, &[("m1", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")]);
        zeros.validate(Mode::Dev).unwrap();
        assert!(fault(&zeros, Mode::Production).contains("key `m1` repeats one byte"));
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn master_keys_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.yaml",
                "storage:\n  signedURLKey: dev-key\ndatabase:\n  url: postgres://x\nrabbitmq:\n  url: amqp://x\n\
                 auth:\n  jwtSecret: dev-secret\nencryption:\n  enabled: true\n",
            )?;
            let err = crate::config::Config::load_from(Some(std::path::Path::new("c.yaml"))).unwrap_err();
            assert!(err.to_string().contains("encryption.activeKeyId"), "{err}");
            jail.set_env("STAYLER_ENCRYPTION__KEYS__M1", REAL_KEY);
            jail.set_env("STAYLER_ENCRYPTION__SENSITIVE_METADATA_KEYS", "[email, phone]");
            let config = crate::config::Config::load_from(Some(std::path::Path::new("c.yaml"))).unwrap();
            assert_eq!(config.encryption.keys["m1"].expose_secret(), REAL_KEY);
            assert_eq!(config.encryption.sensitive_metadata_keys, ["email", "phone"]);
            Ok(())
        });
    }

    #[test]
    fn key_ids_are_plain_names() {
        let message = fault(&with_keys(false, &[("a.b", REAL_KEY)]), Mode::Dev);
        assert!(message.contains("`a.b` must be a plain name"), "{message}");
        let empty = EncryptionConfig { sensitive_metadata_keys: vec![String::new()], ..Default::default() };
        assert!(fault(&empty, Mode::Dev).starts_with("encryption.sensitiveMetadataKeys"));
    }
}
