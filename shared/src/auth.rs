//! Identity: HS256 bearer tokens shared with the main application, and what each role may
//! do with each kind of image.

use chrono::{Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::images::{ImageType, Owner, OwnerId, OwnerType};

/// What a caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An app user: their own photos.
    User,
    /// A clothing vendor: their own product photos.
    Vendor,
    /// The AI try-on service: writes result images for a named owner.
    Service,
    /// Operations: everything.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::User => "user",
            Self::Vendor => "vendor",
            Self::Service => "service",
            Self::Admin => "admin",
        })
    }
}

/// The claims this service reads from a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The caller's id: a user or vendor id for those roles.
    pub sub: Uuid,
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the bearer token is invalid or expired")]
    InvalidToken,
}

/// Why an upload was refused for the caller's role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadPermissionError {
    #[error("the {role} role cannot upload {image_type} images")]
    WrongRole { role: Role, image_type: ImageType },
    #[error("owner_id (and owner_type) are required when the service uploads a result")]
    OwnerRequired,
    #[error("owner_id may only be given by the service role")]
    OwnerNotAllowed,
}

/// Verifies and mints tokens with the shared secret.
#[derive(Clone)]
pub struct TokenKeys {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    pub fn new(secret: &SecretString) -> Self {
        let secret = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        Self { decoding: DecodingKey::from_secret(secret), encoding: EncodingKey::from_secret(secret), validation }
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| AuthError::InvalidToken)
    }

    /// A token for `sub` with `role`, valid for `ttl` (the mint-token command and tests).
    pub fn mint(&self, sub: Uuid, role: Role, ttl: Duration) -> String {
        let claims = Claims { sub, role, exp: (Utc::now() + ttl).timestamp() };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding cannot fail")
    }
}

impl Claims {
    /// Whose quota and folder an upload goes to: users and vendors upload for themselves,
    /// the service uploads results for the owner it names, admins may act for anyone.
    pub fn upload_owner(
        &self,
        image_type: ImageType,
        requested: Option<Owner>,
    ) -> Result<Owner, UploadPermissionError> {
        let own = |kind| Owner { id: OwnerId(self.sub), kind };
        let wrong_role = Err(UploadPermissionError::WrongRole { role: self.role, image_type });
        match (self.role, image_type, requested) {
            (Role::User | Role::Vendor, _, Some(_)) => Err(UploadPermissionError::OwnerNotAllowed),
            (Role::User, ImageType::User, None) => Ok(own(OwnerType::User)),
            (Role::Vendor, ImageType::Cloth, None) => Ok(own(OwnerType::Vendor)),
            (Role::Service, ImageType::Result, Some(owner)) => Ok(owner),
            (Role::Service | Role::Admin, ImageType::Result, None) => Err(UploadPermissionError::OwnerRequired),
            (Role::Admin, ImageType::User, Some(owner)) if owner.kind == OwnerType::User => Ok(owner),
            (Role::Admin, ImageType::Cloth, Some(owner)) if owner.kind == OwnerType::Vendor => Ok(owner),
            (Role::Admin, ImageType::Result, Some(owner)) => Ok(owner),
            (Role::Admin, _, None) => Err(UploadPermissionError::OwnerRequired),
            _ => wrong_role,
        }
    }

    /// Whether the caller may read an image's metadata and content.
    pub fn can_read(&self, owner: OwnerId, is_public: bool) -> bool {
        is_public || self.role == Role::Admin || owner.0 == self.sub
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(&SecretString::from("test-secret"))
    }

    fn claims(role: Role) -> Claims {
        Claims { sub: Uuid::from_u128(7), role, exp: 0 }
    }

    #[test]
    fn a_minted_token_verifies_and_a_tampered_one_does_not() {
        let keys = keys();
        let sub = Uuid::now_v7();
        let token = keys.mint(sub, Role::Vendor, Duration::minutes(5));
        let claims = keys.verify(&token).unwrap();
        assert_eq!((claims.sub, claims.role), (sub, Role::Vendor));
        let other = TokenKeys::new(&SecretString::from("other"));
        assert!(other.verify(&token).is_err());
        assert!(keys.verify(&format!("{token}x")).is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let token = keys().mint(Uuid::nil(), Role::User, Duration::minutes(-5));
        assert!(keys().verify(&token).is_err());
    }

    #[test]
    fn roles_upload_only_their_own_image_types() {
        let user = claims(Role::User);
        assert_eq!(user.upload_owner(ImageType::User, None).unwrap().kind, OwnerType::User);
        assert!(user.upload_owner(ImageType::Cloth, None).is_err());
        assert!(user.upload_owner(ImageType::Result, None).is_err());
        let vendor = claims(Role::Vendor);
        assert_eq!(vendor.upload_owner(ImageType::Cloth, None).unwrap().kind, OwnerType::Vendor);
        assert!(vendor.upload_owner(ImageType::User, None).is_err());
        let named = Owner { id: OwnerId(Uuid::from_u128(9)), kind: OwnerType::Vendor };
        let service = claims(Role::Service);
        assert_eq!(service.upload_owner(ImageType::Result, Some(named)).unwrap(), named);
        assert_eq!(service.upload_owner(ImageType::Result, None), Err(UploadPermissionError::OwnerRequired));
        assert!(matches!(
            service.upload_owner(ImageType::User, Some(named)),
            Err(UploadPermissionError::WrongRole { .. })
        ));
        assert_eq!(user.upload_owner(ImageType::User, Some(named)), Err(UploadPermissionError::OwnerNotAllowed));
    }

    #[test]
    fn private_images_are_readable_by_their_owner_and_admins_only() {
        let owner = OwnerId(Uuid::from_u128(7));
        let stranger = OwnerId(Uuid::from_u128(8));
        assert!(claims(Role::User).can_read(owner, false));
        assert!(!claims(Role::User).can_read(stranger, false));
        assert!(claims(Role::User).can_read(stranger, true));
        assert!(claims(Role::Admin).can_read(stranger, false));
    }
}
