//! The one place object names are made: a [`StorageKey`] built from ids and enums, never
//! from client input, and the layout of the stored tree (the seed's).

use std::path::{Path, PathBuf};

use crate::model::{ArchivedImage, ImageFormat, ImageId, ImageType, Owner, OwnerType, is_safe_segment};

/// Where one stored object lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageKey {
    /// The uploaded bytes, as received.
    Original { image_type: ImageType, owner: Owner, image_id: ImageId, format: ImageFormat },
    /// One thumbnail of an original, named after its configured size.
    Thumbnail { image_type: ImageType, owner: Owner, image_id: ImageId, size: String, format: ImageFormat },
}

impl StorageKey {
    /// The original an archived image restores to, derived from ids as every stored path is.
    pub fn of_archived(entry: &ArchivedImage) -> Self {
        Self::Original {
            image_type: entry.image_type,
            owner: entry.owner(),
            image_id: entry.image_id,
            format: entry.format,
        }
    }

    /// Path relative to the storage root, as the seed's layout has it:
    /// `images/{user|cloth|result}/{owner}/{images|thumbnails}/…`, with vendors' results
    /// under `images/result/vendor/{vendor_id}/`.
    pub fn relative_path(&self) -> PathBuf {
        match self {
            Self::Original { image_type, owner, image_id, format } => {
                owner_dir(*image_type, owner).join("images").join(format!("{image_id}.{}", format.extension()))
            }
            Self::Thumbnail { image_type, owner, image_id, size, format } => {
                debug_assert!(is_safe_segment(size), "thumbnail sizes are validated with the config");
                owner_dir(*image_type, owner)
                    .join("thumbnails")
                    .join(format!("{image_id}_{size}.{}", format.extension()))
            }
        }
    }

    /// The relative path as stored in the database.
    pub fn to_db_path(&self) -> String {
        self.relative_path().to_string_lossy().into_owned()
    }
}

fn owner_dir(image_type: ImageType, owner: &Owner) -> PathBuf {
    let base = Path::new("images").join(image_type.as_str());
    match (image_type, owner.kind) {
        (ImageType::Result, OwnerType::Vendor) => base.join("vendor").join(owner.id.to_string()),
        _ => base.join(owner.id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::model::OwnerId;

    fn owner(kind: OwnerType) -> Owner {
        Owner { id: OwnerId(Uuid::nil()), kind }
    }

    #[test]
    fn keys_follow_the_seed_layout() {
        let image_id = ImageId(Uuid::from_u128(1));
        let nil = Uuid::nil();
        let original = StorageKey::Original {
            image_type: ImageType::User,
            owner: owner(OwnerType::User),
            image_id,
            format: ImageFormat::Jpeg,
        };
        assert_eq!(original.to_db_path(), format!("images/user/{nil}/images/{image_id}.jpg"));
        let thumbnail = StorageKey::Thumbnail {
            image_type: ImageType::Cloth,
            owner: owner(OwnerType::Vendor),
            image_id,
            size: "small".into(),
            format: ImageFormat::Png,
        };
        assert_eq!(thumbnail.to_db_path(), format!("images/cloth/{nil}/thumbnails/{image_id}_small.png"));
        let vendor_result = StorageKey::Original {
            image_type: ImageType::Result,
            owner: owner(OwnerType::Vendor),
            image_id,
            format: ImageFormat::Webp,
        };
        assert_eq!(vendor_result.to_db_path(), format!("images/result/vendor/{nil}/images/{image_id}.webp"));
        let user_result = StorageKey::Original {
            image_type: ImageType::Result,
            owner: owner(OwnerType::User),
            image_id,
            format: ImageFormat::Gif,
        };
        assert_eq!(user_result.to_db_path(), format!("images/result/{nil}/images/{image_id}.gif"));
    }
}
