//! Envelope encryption: master keys from configuration wrap one random data key per image,
//! and that data key seals the image's sensitive fields and encrypts its files. Destroying
//! an image's wrapped data key (its `storage_image_keys` row) makes everything encrypted
//! with it unreadable wherever a copy lives (crypto-shredding); rotating a master key
//! re-wraps the small data keys and never touches the encrypted bytes.
//!
//! Every primitive is XChaCha20-Poly1305 (RustCrypto, pure Rust): 192-bit nonces, so random
//! nonces are safe, and a 16-byte tag that detects any change. Each use binds its context
//! as associated data, so ciphertext moved to another image, field or file fails to open.
//!
//! How the pieces are used:
//! - Start-up: [`KeyRing::from_config`] with `config.encryption` (validated with the
//!   configuration; an unknown active key is an error here too).
//! - A new image: [`DataKey::generate`], [`KeyRing::wrap`] it, and store the
//!   [`WrappedKey`] with `db::image_keys::insert` in the upload's transaction.
//! - Reading: `db::image_keys::get` (or `get_many` for a page of images), then
//!   [`KeyRing::unwrap`] with the image id. A missing row means the image was shredded.
//! - Fields: [`seal_field`] replaces a metadata value or the original name with text
//!   (`enc:v1:…`) that fits the same column; [`open_field`] gives it back; [`is_sealed`]
//!   tells sealed text from plain text by its prefix (callers still know which fields they
//!   seal: a client could send a value that starts with the prefix).
//! - Files: [`EncryptingWriter`] wraps any [`std::io::Write`] (call
//!   [`EncryptingWriter::finish`]: without it the final chunk is missing and the file never
//!   decrypts), [`DecryptingReader`] any [`std::io::Read`]. A byte range of the plaintext
//!   needs the header ([`StreamHeader`], the first [`HEADER_LEN`] bytes) and the chunks
//!   [`ciphertext_range`] names, read with [`DecryptingReader::from_chunk`].
//! - Shredding: `db::image_keys::delete` in the deletion's transaction.
//! - Rotation: `stayler-worker rotate-keys` re-wraps every data key under the active key.

mod fields;
mod keys;
mod stream;

pub use fields::{SEALED_PREFIX, is_sealed, open_field, seal_field};
pub use keys::{DataKey, KeyRing, WRAPPED_KEY_LEN, WrappedKey};
pub use stream::{
    CHUNK_LEN, ChunkRange, DecryptingReader, EncryptingWriter, HEADER_LEN, SEALED_CHUNK_LEN, StreamHeader, TAG_LEN,
    chunk_offset, ciphertext_len, ciphertext_range, plaintext_len,
};

/// Why something could not be encrypted or decrypted.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The master key a wrapped data key names is not in the ring (removed too early, or
    /// never configured here).
    #[error("master key `{0}` is not in the key ring (encryption.keys)")]
    UnknownKeyId(String),
    /// A master key of the configuration is not base64 of 32 bytes.
    #[error("master key `{0}` is not base64 of 32 bytes")]
    BadMasterKey(String),
    /// The bytes were changed, moved to another image, field or file, or the key is wrong.
    #[error("authentication failed: the data was altered, moved, or the key is wrong")]
    AuthenticationFailed,
    /// The encrypted stream ends before its final chunk.
    #[error("the encrypted data is truncated")]
    Truncated,
    /// Not something this module wrote (wrong prefix, magic, version or length).
    #[error("not in a known encrypted format: {0}")]
    BadFormat(&'static str),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl CryptoError {
    /// The crypto error inside an I/O error returned by [`DecryptingReader`] or
    /// [`EncryptingWriter`], if that is what it is (rather than a failure of the inner
    /// reader or writer).
    pub fn in_io_error(error: &std::io::Error) -> Option<&CryptoError> {
        error.get_ref().and_then(|inner| inner.downcast_ref::<CryptoError>())
    }

    fn into_io(self) -> std::io::Error {
        match self {
            CryptoError::Io(error) => error,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

/// Associated data binding a ciphertext to its use, its image and its name within the image
/// (a field or a file variant): `label ‖ 0 ‖ image id (16 bytes) ‖ name`.
fn associated_data(label: &str, image_id: crate::model::ImageId, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(label.len() + 1 + 16 + name.len());
    aad.extend_from_slice(label.as_bytes());
    aad.push(0);
    aad.extend_from_slice(image_id.0.as_bytes());
    aad.extend_from_slice(name.as_bytes());
    aad
}
