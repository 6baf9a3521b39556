//! Bearer-token authentication of API requests.

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use shared::auth::{Claims, Role, TokenKeys};

use crate::error::ApiError;

/// `Authorization: Bearer <JWT>`, HS256 with the secret shared with the main application;
/// claims `sub` (UUID), `role` (user | vendor | service | admin) and `exp`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "verify")]
pub struct BearerAuth(pub Claims);

async fn verify(request: &Request, bearer: Bearer) -> poem::Result<Claims> {
    let keys = request.data::<TokenKeys>().expect("TokenKeys is installed with the routes");
    keys.verify(&bearer.token).map_err(|_| ApiError::unauthorized().into())
}

/// The same bearer token, accepted only with role `admin` (403 `forbidden` for any other
/// role). Admin-only operations that take a body use it: a parameter is checked before the
/// body is read, so other callers are refused without reading a byte of it.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "verify_admin")]
pub struct AdminAuth(pub Claims);

async fn verify_admin(request: &Request, bearer: Bearer) -> poem::Result<Claims> {
    let claims = verify(request, bearer).await?;
    if claims.role != Role::Admin {
        return Err(ApiError::forbidden("this operation is for admins").into());
    }
    Ok(claims)
}

/// The token of an `Authorization: Bearer` header, for middleware that runs before the
/// handlers' own check.
pub fn bearer_token(request: &Request) -> Option<&str> {
    let value = request.headers().get(poem::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
