//! What an image is to this service: its id, its kind and who owns it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Id of a stored image (UUID v7, so ids sort by upload time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct ImageId(pub Uuid);

impl ImageId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for ImageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Id of a user or vendor of the main application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct OwnerId(pub Uuid);

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who produced the image: a user's own photo, a vendor's clothing photo, or an AI try-on
/// result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ImageType {
    User,
    Cloth,
    Result,
}

/// Whether an owner id names a user or a vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum OwnerType {
    User,
    Vendor,
}

/// The owner of an image, with its kind: paths and quotas depend on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    pub id: OwnerId,
    pub kind: OwnerType,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s { $($text => Ok(Self::$variant),)+ _ => Err(UnknownName(s.to_owned())) }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(ImageType { User => "user", Cloth => "cloth", Result => "result" });
text_enum!(OwnerType { User => "user", Vendor => "vendor" });

/// A name that is not one of an enum's values.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown value `{0}`")]
pub struct UnknownName(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in [ImageType::User, ImageType::Cloth, ImageType::Result] {
            assert_eq!(t.as_str().parse::<ImageType>().unwrap(), t);
        }
        assert!("admin".parse::<ImageType>().is_err());
        assert_eq!("vendor".parse::<OwnerType>().unwrap(), OwnerType::Vendor);
    }

    #[test]
    fn image_ids_sort_by_creation() {
        let a = ImageId::new();
        let b = ImageId::new();
        assert!(a < b);
    }
}

/// What an owner reads in an image's `processing_error`: a stable code, a colon and a short
/// sentence. Causes (error texts, hashes) stay in the logs and `job_failures`; only a
/// failure that retrying cannot fix is recorded at all; infrastructure errors leave the
/// image pending for the sweeper.
pub mod processing_error {
    /// The original cannot be decoded, so it has no thumbnails.
    pub const THUMBNAILS_UNDECODABLE: &str = "thumbnails_failed: the image could not be decoded to make its thumbnails";
    /// The stored original no longer hashes to the SHA-256 recorded at upload.
    pub const CHECKSUM_MISMATCH: &str =
        "checksum_mismatch: the stored bytes no longer match the checksum recorded at upload";
}
