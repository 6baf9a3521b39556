//! Sealed fields at rest: with `encryption.enabled`, the original file name (if
//! `encryption.encryptOriginalName`) and the values of the metadata keys listed in
//! `encryption.sensitiveMetadataKeys` are stored sealed with the image's data key
//! ([`crate::crypto::seal_field`]), and opened again on every read that shows them.
//!
//! Only the fields the configuration names are ever sealed or opened: a client value that
//! merely starts with [`crate::crypto::SEALED_PREFIX`] in another field is plain text and
//! stays as given; in a sealed field it is sealed like any other text. A metadata value of
//! any JSON type is sealed as its JSON text, so it opens to the same type.
//!
//! A value that cannot be opened (its key shredded, its master key missing from the ring,
//! or altered bytes) is shown as [`UNREADABLE_NAME`] for a name and `null` for a metadata
//! value, and logged: one unreadable image never fails a page.

use std::collections::HashMap;

use serde_json::{Map, Value};
use sqlx::{PgConnection, PgExecutor};

use crate::config::EncryptionConfig;
use crate::crypto::{CryptoError, DataKey, KeyRing, WrappedKey, is_sealed, open_field, seal_field};
use crate::db::image_keys;
use crate::db::storage_files::{MetadataChanges, StorageFile};
use crate::model::ImageId;

/// Field name (associated data) of the sealed original file name.
pub const NAME_FIELD: &str = "original_name";
/// What a sealed file name that cannot be opened is shown as.
pub const UNREADABLE_NAME: &str = "[sealed]";

/// Field name (associated data) of the sealed value of metadata key `key`.
fn metadata_field(key: &str) -> String {
    format!("metadata.{key}")
}

/// Seals and opens the configured fields; built once at start-up, only when encryption is
/// enabled.
#[derive(Debug)]
pub struct Sealer {
    ring: KeyRing,
    metadata_keys: Vec<String>,
    seal_name: bool,
}

impl Sealer {
    /// The sealer of `config`, or `None` when encryption is disabled (then nothing is sealed
    /// nor opened).
    pub fn from_config(config: &EncryptionConfig) -> Result<Option<Self>, CryptoError> {
        if !config.enabled {
            return Ok(None);
        }
        Ok(Some(Self {
            ring: KeyRing::from_config(config)?,
            metadata_keys: config.sensitive_metadata_keys.clone(),
            seal_name: config.encrypt_original_name,
        }))
    }

    /// A new data key for image `image_id`, and the same key wrapped for
    /// [`image_keys::insert`].
    pub fn new_key(&self, image_id: ImageId) -> (DataKey, WrappedKey) {
        let key = DataKey::generate();
        let wrapped = self.ring.wrap(&key, image_id);
        (key, wrapped)
    }

    /// `name` as stored: sealed when names are sealed, else as given.
    pub fn seal_name(&self, key: &DataKey, image_id: ImageId, name: &str) -> String {
        if self.seal_name { seal_field(key, image_id, NAME_FIELD, name) } else { name.to_owned() }
    }

    /// Replaces the values of the sensitive keys of `metadata` with their sealed JSON text.
    pub fn seal_metadata(&self, key: &DataKey, image_id: ImageId, metadata: &mut Map<String, Value>) {
        for name in &self.metadata_keys {
            if let Some(value) = metadata.get_mut(name) {
                let text = serde_json::to_string(value).expect("a JSON value serialises");
                *value = Value::String(seal_field(key, image_id, &metadata_field(name), &text));
            }
        }
    }

    /// Whether `changes` hold a field this sealer seals (and so need the image's data key).
    pub fn seals_any(&self, changes: &MetadataChanges) -> bool {
        let name = self.seal_name && changes.original_name.is_some();
        let metadata = changes
            .metadata
            .as_ref()
            .and_then(Value::as_object)
            .is_some_and(|map| self.metadata_keys.iter().any(|key| map.contains_key(key)));
        name || metadata
    }

    /// Seals the new name and the sensitive metadata values of `changes` for image
    /// `image_id`.
    pub fn seal_changes(&self, key: &DataKey, image_id: ImageId, changes: &mut MetadataChanges) {
        if let Some(name) = &mut changes.original_name {
            *name = self.seal_name(key, image_id, name);
        }
        if let Some(Value::Object(metadata)) = &mut changes.metadata {
            self.seal_metadata(key, image_id, metadata);
        }
    }

    /// The data key of image `image_id` for sealing a change, created when the image has
    /// none (stored before encryption was enabled). A concurrent creation may win: its key
    /// is then the one used.
    pub async fn key_for_change(&self, conn: &mut PgConnection, image_id: ImageId) -> Result<DataKey, SealingError> {
        if let Some(row) = image_keys::get(&mut *conn, image_id).await? {
            return Ok(self.unwrap(&row)?);
        }
        let (key, wrapped) = self.new_key(image_id);
        if image_keys::insert(&mut *conn, image_id, &wrapped.key_id, &wrapped.bytes).await? {
            return Ok(key);
        }
        let row = image_keys::get(&mut *conn, image_id).await?.ok_or(sqlx::Error::RowNotFound)?;
        Ok(self.unwrap(&row)?)
    }

    fn unwrap(&self, row: &image_keys::ImageKey) -> Result<DataKey, CryptoError> {
        let wrapped = WrappedKey { key_id: row.key_id.clone(), bytes: row.wrapped_key.clone() };
        self.ring.unwrap(&wrapped, row.image_id)
    }

    /// An opener of image `image_id` alone, with its data key at hand (a new upload's).
    pub fn opener_of(&self, image_id: ImageId, key: DataKey) -> Opener<'_> {
        Opener { sealer: self, keys: HashMap::from([(image_id, key)]) }
    }

    /// The data keys of the images `ids`, in one query, to open a page of them. Keys that
    /// do not unwrap are logged and left out (their fields show as unreadable).
    pub async fn opener(&self, db: impl PgExecutor<'_>, ids: &[ImageId]) -> sqlx::Result<Opener<'_>> {
        let mut keys = HashMap::with_capacity(ids.len());
        for row in image_keys::get_many(db, ids).await? {
            match self.unwrap(&row) {
                Ok(key) => {
                    keys.insert(row.image_id, key);
                }
                Err(error) => {
                    tracing::error!(image.id = %row.image_id, key.id = %row.key_id, %error, "an image's data key does not unwrap");
                }
            }
        }
        Ok(Opener { sealer: self, keys })
    }
}

/// Why a change could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealingError {
    /// The image's data key does not unwrap (master key missing from the ring, or altered).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Opens the sealed fields of a set of images whose keys it holds.
#[derive(Debug)]
pub struct Opener<'a> {
    sealer: &'a Sealer,
    keys: HashMap<ImageId, DataKey>,
}

impl Opener<'_> {
    /// The name of image `image_id` as shown: opened when names are sealed and it is
    /// sealed, [`UNREADABLE_NAME`] when it does not open.
    pub fn name(&self, image_id: ImageId, name: String) -> String {
        if !self.sealer.seal_name || !is_sealed(&name) {
            return name;
        }
        match self.open(image_id, NAME_FIELD, &name) {
            Some(plain) => plain,
            None => UNREADABLE_NAME.to_owned(),
        }
    }

    /// Opens the sealed values of the sensitive keys of `metadata`; `null` for one that does
    /// not open. Values stored before sealing began (not sealed) stay as they are.
    pub fn metadata(&self, image_id: ImageId, metadata: &mut Value) {
        let Value::Object(map) = metadata else { return };
        for name in &self.sealer.metadata_keys {
            let Some(value) = map.get_mut(name) else { continue };
            let Value::String(sealed) = &*value else { continue };
            if !is_sealed(sealed) {
                continue;
            }
            let opened = self.open(image_id, &metadata_field(name), sealed).and_then(|text| {
                serde_json::from_str(&text)
                    .inspect_err(|_| tracing::error!(image.id = %image_id, "a sealed metadata value is not JSON"))
                    .ok()
            });
            *value = opened.unwrap_or(Value::Null);
        }
    }

    /// Opens the name and metadata of a row in place.
    pub fn file(&self, file: &mut StorageFile) {
        file.original_name = self.name(file.id, std::mem::take(&mut file.original_name));
        self.metadata(file.id, &mut file.metadata);
    }

    fn open(&self, image_id: ImageId, field: &str, sealed: &str) -> Option<String> {
        let Some(key) = self.keys.get(&image_id) else {
            tracing::warn!(image.id = %image_id, field, "a sealed field has no data key (shredded): shown unreadable");
            return None;
        };
        open_field(key, image_id, field, sealed)
            .inspect_err(|error| tracing::error!(image.id = %image_id, field, %error, "a sealed field does not open"))
            .ok()
    }
}

/// Opens the sealed fields of `files` in place (one query for all their keys); nothing to
/// do without a sealer.
pub async fn open_files<'a>(
    sealer: Option<&Sealer>,
    db: impl PgExecutor<'_>,
    files: impl IntoIterator<Item = &'a mut StorageFile>,
) -> sqlx::Result<()> {
    let Some(sealer) = sealer else { return Ok(()) };
    let mut files: Vec<&mut StorageFile> = files.into_iter().collect();
    let ids: Vec<ImageId> = files.iter().map(|file| file.id).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let opener = sealer.opener(db, &ids).await?;
    for file in &mut files {
        opener.file(file);
    }
    Ok(())
}

/// Shows the sealed fields of `file` as unreadable, without a key: for an answer that must
/// go out when the keys cannot be read (the upload is committed by then).
pub fn hide_sealed(sealer: Option<&Sealer>, file: &mut StorageFile) {
    if let Some(sealer) = sealer {
        Opener { sealer, keys: HashMap::new() }.file(file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use serde_json::json;

    const M1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn sealer(seal_name: bool) -> Sealer {
        let config = EncryptionConfig {
            enabled: true,
            keys: [("m1".to_owned(), SecretString::from(M1))].into(),
            sensitive_metadata_keys: vec!["body_measurements".into(), "email".into()],
            encrypt_original_name: seal_name,
            ..Default::default()
        };
        Sealer::from_config(&config).unwrap().unwrap()
    }

    fn opener(sealer: &Sealer, keys: Vec<(ImageId, DataKey)>) -> Opener<'_> {
        Opener { sealer, keys: keys.into_iter().collect() }
    }

    #[test]
    fn disabled_means_no_sealer() {
        assert!(Sealer::from_config(&EncryptionConfig::default()).unwrap().is_none());
    }

    #[test]
    fn sensitive_values_of_any_type_seal_and_open_to_the_same_value() {
        let sealer = sealer(true);
        let image = ImageId::new();
        let (key, _) = sealer.new_key(image);
        let original = json!({
            "body_measurements": {"chest_cm": 96, "tags": ["a"]},
            "email": "enc:v1:looks-sealed",
            "color": "red",
            "note": "enc:v1:not-a-sealed-field",
        });
        let mut metadata = original.as_object().unwrap().clone();
        sealer.seal_metadata(&key, image, &mut metadata);
        for name in ["body_measurements", "email"] {
            assert!(is_sealed(metadata[name].as_str().unwrap()), "{name}");
        }
        assert!(!metadata["body_measurements"].to_string().contains("chest_cm"));
        assert_eq!((&metadata["color"], &metadata["note"]), (&original["color"], &original["note"]));
        let mut stored = Value::Object(metadata);
        opener(&sealer, vec![(image, key)]).metadata(image, &mut stored);
        assert_eq!(stored, original);
    }

    #[test]
    fn names_seal_only_when_configured_and_unreadable_ones_get_the_placeholder() {
        let (sealing, plain) = (sealer(true), sealer(false));
        let image = ImageId::new();
        let (key, _) = sealing.new_key(image);
        let sealed = sealing.seal_name(&key, image, "me.jpg");
        assert!(is_sealed(&sealed));
        assert_eq!(plain.seal_name(&key, image, "me.jpg"), "me.jpg");
        let (key2, _) = sealing.new_key(image);
        let sealed2 = sealing.seal_name(&key2, image, "me.jpg");
        assert_eq!(opener(&sealing, vec![(image, key2)]).name(image, sealed2), "me.jpg");
        // Shredded: no key for the image.
        let none = opener(&sealing, Vec::new());
        assert_eq!(none.name(image, sealed.clone()), UNREADABLE_NAME);
        let mut metadata = json!({"email": sealed, "color": "red"});
        none.metadata(image, &mut metadata);
        assert_eq!(metadata, json!({"email": null, "color": "red"}));
        // Names are not sealed here: a name that looks sealed is shown as stored.
        assert_eq!(opener(&plain, Vec::new()).name(image, "enc:v1:x".into()), "enc:v1:x");
    }

    #[test]
    fn changes_need_the_key_only_for_sealed_fields() {
        let sealer = sealer(true);
        let tags = MetadataChanges { tags: Some(vec!["a".into()]), ..Default::default() };
        assert!(!sealer.seals_any(&tags));
        let color = MetadataChanges { metadata: Some(json!({"color": "red"})), ..Default::default() };
        assert!(!sealer.seals_any(&color));
        let email = MetadataChanges { metadata: Some(json!({"email": "a@b.c"})), ..Default::default() };
        assert!(sealer.seals_any(&email));
        let name = MetadataChanges { original_name: Some("x.jpg".into()), ..Default::default() };
        assert!(sealer.seals_any(&name) && !self::sealer(false).seals_any(&name));
    }
}
