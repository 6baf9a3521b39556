//! Identity: HS256 bearer tokens shared with the main application, and what each role may
//! do with each kind of image.

use chrono::{Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::AuthConfig;
use crate::model::{ImageType, ListScope, Owner, OwnerId, OwnerType};

/// Clock skew tolerated on `exp` (and on the lifetime bound), in seconds.
const TOKEN_LEEWAY_SECS: u64 = 30;

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

/// What a caller may do with one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageAccess {
    /// Not even its existence: answered like a missing image.
    Hidden,
    /// Metadata and content (public images, for anyone).
    Read,
    /// Read, change its metadata, delete it.
    Write,
}

/// Why a listing was refused for the caller's role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListPermissionError {
    #[error("owner_id may only name another owner for the admin role")]
    OtherOwner,
    #[error("owner_id is required when the service lists images: it acts for the owner it names")]
    OwnerRequired,
}

/// Verifies and mints tokens with the shared secret.
#[derive(Clone)]
pub struct TokenKeys {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
    /// Longest accepted time between now and a token's expiry; `None`: any.
    max_lifetime: Option<Duration>,
}

/// What a minted token carries: [`Claims`] plus the configured issuer and audience.
#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: Uuid,
    role: Role,
    exp: i64,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    /// Keys checking only signature, `exp` and `sub` (tests, and tools without a config).
    pub fn new(secret: &SecretString) -> Self {
        let secret = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = TOKEN_LEEWAY_SECS;
        // An `aud` claim is only checked where an audience is configured.
        validation.validate_aud = false;
        Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
            issuer: None,
            audience: None,
            max_lifetime: None,
        }
    }

    /// Keys as `auth:` configures them: with `issuer` and `audience` set, a token must carry
    /// exactly those `iss` and `aud`; with `maxLifetimeSecs`, one expiring further ahead is
    /// refused, so a leaked long-lived token is worth little.
    pub fn from_config(config: &AuthConfig) -> Self {
        let mut keys = Self::new(&config.jwt_secret);
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = config.issuer.as_deref().filter(|issuer| !issuer.is_empty()) {
            keys.validation.set_issuer(&[issuer]);
            keys.issuer = Some(issuer.to_owned());
            required.push("iss");
        }
        if let Some(audience) = config.audience.as_deref().filter(|audience| !audience.is_empty()) {
            keys.validation.set_audience(&[audience]);
            keys.validation.validate_aud = true;
            keys.audience = Some(audience.to_owned());
            required.push("aud");
        }
        keys.validation.set_required_spec_claims(&required);
        keys.max_lifetime = (config.max_lifetime_secs > 0).then(|| Duration::seconds(config.max_lifetime_secs as i64));
        keys
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| AuthError::InvalidToken)?;
        if let Some(max_lifetime) = self.max_lifetime {
            let latest = (Utc::now() + max_lifetime).timestamp() + TOKEN_LEEWAY_SECS as i64;
            if claims.exp > latest {
                return Err(AuthError::InvalidToken);
            }
        }
        Ok(claims)
    }

    /// A token for `sub` with `role`, valid for `ttl` (the mint-token command and tests),
    /// with the configured issuer and audience.
    pub fn mint(&self, sub: Uuid, role: Role, ttl: Duration) -> String {
        let now = Utc::now();
        let claims = MintedClaims {
            sub,
            role,
            exp: (now + ttl).timestamp(),
            iat: now.timestamp(),
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
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

    /// Whether the caller may change an image's metadata or delete it: its owner, admins,
    /// and the service for `result` images, which it may store for any owner. Being public
    /// never makes an image writable by others.
    pub fn can_write(&self, owner: OwnerId, image_type: ImageType) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Service => image_type == ImageType::Result,
            Role::User | Role::Vendor => owner.0 == self.sub,
        }
    }

    /// Everything the caller may do with one image; whoever may write may also read.
    pub fn image_access(&self, owner: OwnerId, image_type: ImageType, is_public: bool) -> ImageAccess {
        if self.can_write(owner, image_type) {
            ImageAccess::Write
        } else if self.can_read(owner, is_public) {
            ImageAccess::Read
        } else {
            ImageAccess::Hidden
        }
    }

    /// Whose images a listing covers: users and vendors see their own (naming themselves is
    /// allowed), the service the results of the owner it names, admins anyone's or everyone's.
    pub fn list_scope(&self, requested: Option<OwnerId>) -> Result<ListScope, ListPermissionError> {
        match (self.role, requested) {
            (Role::Admin, None) => Ok(ListScope::Everyone),
            (Role::Admin, Some(owner)) => Ok(ListScope::Owner(owner)),
            (Role::Service, Some(owner)) => Ok(ListScope::ResultsOf(owner)),
            (Role::Service, None) => Err(ListPermissionError::OwnerRequired),
            (Role::User | Role::Vendor, Some(owner)) if owner.0 != self.sub => Err(ListPermissionError::OtherOwner),
            (Role::User | Role::Vendor, _) => Ok(ListScope::Owner(OwnerId(self.sub))),
        }
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

    fn configured(issuer: Option<&str>, audience: Option<&str>, max_lifetime_secs: u64) -> TokenKeys {
        TokenKeys::from_config(&AuthConfig {
            jwt_secret: SecretString::from("test-secret"),
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
            max_lifetime_secs,
        })
    }

    #[test]
    fn a_configured_issuer_and_audience_must_both_match() {
        let strict = configured(Some("stayler-app"), Some("storage"), 0);
        let sub = Uuid::from_u128(9);
        assert_eq!(strict.verify(&strict.mint(sub, Role::User, Duration::minutes(5))).unwrap().sub, sub);
        let plain = keys().mint(sub, Role::User, Duration::minutes(5));
        assert!(strict.verify(&plain).is_err(), "no iss or aud");
        let other_issuer =
            configured(Some("elsewhere"), Some("storage"), 0).mint(sub, Role::User, Duration::minutes(5));
        assert!(strict.verify(&other_issuer).is_err());
        let other_audience =
            configured(Some("stayler-app"), Some("mail"), 0).mint(sub, Role::User, Duration::minutes(5));
        assert!(strict.verify(&other_audience).is_err());
        // Without configured checks, tokens carrying either claim are accepted as before.
        assert!(keys().verify(&strict.mint(sub, Role::User, Duration::minutes(5))).is_ok());
    }

    #[test]
    fn a_token_expiring_beyond_the_maximum_lifetime_is_refused() {
        let bounded = configured(None, None, 3600);
        let sub = Uuid::from_u128(9);
        assert!(bounded.verify(&bounded.mint(sub, Role::Admin, Duration::seconds(3600))).is_ok(), "at the limit");
        let long = bounded.mint(sub, Role::Admin, Duration::seconds(3600 + 120));
        assert!(bounded.verify(&long).is_err(), "two minutes over (beyond the 30 s leeway)");
        assert!(configured(None, None, 0).verify(&long).is_ok(), "0 accepts any lifetime");
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

    #[test]
    fn only_owners_admins_and_the_service_for_results_may_write() {
        let own = OwnerId(Uuid::from_u128(7));
        let other = OwnerId(Uuid::from_u128(8));
        for role in [Role::User, Role::Vendor] {
            assert!(claims(role).can_write(own, ImageType::User));
            assert!(claims(role).can_write(own, ImageType::Result));
            assert!(!claims(role).can_write(other, ImageType::Cloth));
        }
        assert!(claims(Role::Admin).can_write(other, ImageType::Cloth));
        assert!(claims(Role::Service).can_write(other, ImageType::Result));
        assert!(!claims(Role::Service).can_write(other, ImageType::User));
        assert!(!claims(Role::Service).can_write(other, ImageType::Cloth));
    }

    #[test]
    fn public_images_are_readable_but_never_writable_by_others() {
        let other = OwnerId(Uuid::from_u128(8));
        let user = claims(Role::User);
        assert_eq!(user.image_access(other, ImageType::User, true), ImageAccess::Read);
        assert_eq!(user.image_access(other, ImageType::User, false), ImageAccess::Hidden);
        assert_eq!(user.image_access(OwnerId(user.sub), ImageType::User, false), ImageAccess::Write);
        let vendor = claims(Role::Vendor);
        assert_eq!(vendor.image_access(other, ImageType::Cloth, true), ImageAccess::Read);
        let service = claims(Role::Service);
        assert_eq!(service.image_access(other, ImageType::Result, false), ImageAccess::Write);
        assert_eq!(service.image_access(other, ImageType::User, false), ImageAccess::Hidden);
        assert_eq!(service.image_access(other, ImageType::Cloth, true), ImageAccess::Read);
        assert_eq!(claims(Role::Admin).image_access(other, ImageType::User, false), ImageAccess::Write);
    }

    #[test]
    fn listings_cover_the_callers_own_images_unless_admin() {
        let own = OwnerId(Uuid::from_u128(7));
        let other = OwnerId(Uuid::from_u128(8));
        assert_eq!(claims(Role::User).list_scope(None), Ok(ListScope::Owner(own)));
        assert_eq!(claims(Role::Vendor).list_scope(Some(own)), Ok(ListScope::Owner(own)));
        assert_eq!(claims(Role::User).list_scope(Some(other)), Err(ListPermissionError::OtherOwner));
        assert_eq!(claims(Role::Service).list_scope(Some(other)), Ok(ListScope::ResultsOf(other)));
        assert_eq!(claims(Role::Service).list_scope(None), Err(ListPermissionError::OwnerRequired));
        assert_eq!(claims(Role::Admin).list_scope(None), Ok(ListScope::Everyone));
        assert_eq!(claims(Role::Admin).list_scope(Some(other)), Ok(ListScope::Owner(other)));
    }
}
