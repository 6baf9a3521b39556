//! Which requests are logged, as what, and about which image: decided from the method and
//! path alone, so that the log needs nothing from the handlers.

use poem::http::Method;
use uuid::Uuid;

/// What a logged request asked for. A denial is the same action with a 401, 403, 404,
/// 410 or 429 status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessAction {
    Upload,
    ReadMetadata,
    UpdateMetadata,
    Delete,
    List,
    Search,
    IssueUrl,
    RevokeUrls,
    ServeFile,
}

impl AccessAction {
    /// The value of `storage_access_logs.action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::ReadMetadata => "read_metadata",
            Self::UpdateMetadata => "update_metadata",
            Self::Delete => "delete",
            Self::List => "list",
            Self::Search => "search",
            Self::IssueUrl => "issue_url",
            Self::RevokeUrls => "revoke_urls",
            Self::ServeFile => "serve_file",
        }
    }

    /// Whether a successful request of this kind reads the image, so that its
    /// `access_count` and `last_accessed` follow.
    pub fn reads_image(self) -> bool {
        matches!(self, Self::ReadMetadata | Self::ServeFile)
    }
}

/// A request worth logging: its action and the image its path names, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub action: AccessAction,
    pub image_id: Option<Uuid>,
}

/// Classifies a request; `None` for requests that are not logged (the OpenAPI document,
/// unknown routes).
pub fn classify(method: &Method, path: &str, public_path: &str) -> Option<Classified> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let public: Vec<&str> = public_path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let is_get = method == Method::GET || method == Method::HEAD;
    let found = |action, image_id| Some(Classified { action, image_id });

    if !public.is_empty() && segments.len() > public.len() && segments.starts_with(&public) {
        return if is_get { found(AccessAction::ServeFile, leading_uuid(segments[public.len()])) } else { None };
    }
    match segments.as_slice() {
        ["storage", "signed", token, ..] if is_get => found(AccessAction::ServeFile, leading_uuid(token)),
        ["storage", "images"] if method == Method::POST => found(AccessAction::Upload, None),
        ["storage", "images"] if is_get => found(AccessAction::List, None),
        ["storage", "images", "search"] if method == Method::POST => found(AccessAction::Search, None),
        ["storage", "images", id] => {
            let action = match *method {
                Method::GET | Method::HEAD => AccessAction::ReadMetadata,
                Method::PUT | Method::PATCH => AccessAction::UpdateMetadata,
                Method::DELETE => AccessAction::Delete,
                _ => return None,
            };
            found(action, leading_uuid(id))
        }
        ["storage", "images", id, "signed-url" | "access"] if is_get => found(AccessAction::IssueUrl, leading_uuid(id)),
        ["storage", "images", id, "revoke-urls"] if method == Method::POST => {
            found(AccessAction::RevokeUrls, leading_uuid(id))
        }
        _ => None,
    }
}

/// The UUID a path segment starts with (a signed path begins with the image id), if any.
fn leading_uuid(segment: &str) -> Option<Uuid> {
    segment.get(..36).and_then(|head| Uuid::try_parse(head).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0193a6a4-6c2e-7d3b-9a31-5f0e2b7c4d11";

    fn action(method: Method, path: &str) -> Option<(AccessAction, Option<Uuid>)> {
        classify(&method, path, "/public").map(|c| (c.action, c.image_id))
    }

    #[test]
    fn api_routes_map_to_their_actions_and_images() {
        let id = Some(Uuid::parse_str(ID).unwrap());
        assert_eq!(action(Method::GET, &format!("/storage/images/{ID}")), Some((AccessAction::ReadMetadata, id)));
        assert_eq!(action(Method::PUT, &format!("/storage/images/{ID}")), Some((AccessAction::UpdateMetadata, id)));
        assert_eq!(action(Method::DELETE, &format!("/storage/images/{ID}")), Some((AccessAction::Delete, id)));
        assert_eq!(
            action(Method::GET, &format!("/storage/images/{ID}/signed-url")),
            Some((AccessAction::IssueUrl, id))
        );
        assert_eq!(action(Method::GET, &format!("/storage/images/{ID}/access")), Some((AccessAction::IssueUrl, id)));
        assert_eq!(
            action(Method::POST, &format!("/storage/images/{ID}/revoke-urls")),
            Some((AccessAction::RevokeUrls, id))
        );
        assert_eq!(action(Method::POST, "/storage/images"), Some((AccessAction::Upload, None)));
        assert_eq!(action(Method::GET, "/storage/images"), Some((AccessAction::List, None)));
        assert_eq!(action(Method::POST, "/storage/images/search"), Some((AccessAction::Search, None)));
    }

    #[test]
    fn serving_paths_name_their_image() {
        let id = Some(Uuid::parse_str(ID).unwrap());
        let signed = format!("/storage/signed/{ID}.small.v.1790000000.k1.c2lnbmF0dXJl");
        assert_eq!(action(Method::GET, &signed), Some((AccessAction::ServeFile, id)));
        assert_eq!(action(Method::HEAD, &signed), Some((AccessAction::ServeFile, id)));
        assert_eq!(action(Method::GET, &format!("/public/{ID}/large")), Some((AccessAction::ServeFile, id)));
        assert_eq!(action(Method::GET, "/storage/signed/garbage"), Some((AccessAction::ServeFile, None)));
    }

    #[test]
    fn other_requests_are_not_logged() {
        assert_eq!(action(Method::GET, "/openapi.json"), None);
        assert_eq!(action(Method::GET, "/storage/nowhere"), None);
        assert_eq!(action(Method::POST, &format!("/storage/images/{ID}")), None);
        assert_eq!(action(Method::GET, "/publicity"), None);
    }

    #[test]
    fn only_successful_reads_count_as_accesses() {
        assert!(AccessAction::ServeFile.reads_image());
        assert!(AccessAction::ReadMetadata.reads_image());
        assert!(!AccessAction::IssueUrl.reads_image());
        assert!(!AccessAction::Delete.reads_image());
    }
}
