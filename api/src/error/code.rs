//! The stable, machine-readable codes of error answers (`{"error": {"code": …}}`).
//!
//! Clients and tests match on these strings: a code's spelling never changes. Every code is
//! documented in `docs/api.md`, in a `| status | code | when |` table; a test below keeps
//! the two in step.

use std::fmt;

/// Declares [`ErrorCode`], its wire spelling and [`ErrorCode::ALL`] from one list, so that a
/// variant cannot be left out of either.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $code:literal,)+) => {
        /// The stable, machine-readable code of an error answer (`docs/api.md` says when
        /// each is answered); [`ErrorCode::as_str`] is what goes on the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, poem_openapi::Enum)]
        pub enum ErrorCode {
            $($(#[$doc])* #[oai(rename = $code)] $variant,)+
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant,)+];

            /// The code as sent to clients, in snake_case.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)+
                }
            }
        }
    };
}

error_codes! {
    /// 400: a request the framework cannot parse: malformed JSON, a wrong JSON type, an
    /// unknown field, a bad path or query parameter.
    BadRequest => "bad_request",
    /// 400: a field (form field, JSON field or query parameter) that breaks its rules; the
    /// message names it.
    InvalidField => "invalid_field",
    /// 400: an upload whose file part is empty.
    EmptyFile => "empty_file",
    /// 400: an upload without a file part.
    MissingFile => "missing_file",
    /// 400: an unreadable multipart body, too many parts, or part headers too long.
    MalformedBody => "malformed_body",
    /// 400: a metadata or quota update that changes nothing.
    EmptyUpdate => "empty_update",
    /// 400: a signed URL asked for with a `ttl` of 0.
    InvalidTtl => "invalid_ttl",
    /// 400: a signed URL asked for with a `ttl` above `signedUrls.maxTtlSecs`.
    TtlTooLong => "ttl_too_long",
    /// 400: a `variant` that is neither `original` nor a configured thumbnail size.
    InvalidVariant => "invalid_variant",
    /// 400: an `access_type` that is neither `view` nor `download`.
    InvalidAccessType => "invalid_access_type",
    /// 400: a bulk request naming more images than `limits.bulkMaxIds`.
    TooManyIds => "too_many_ids",
    /// 401: a missing, invalid or expired bearer token.
    Unauthorized => "unauthorized",
    /// 403: the caller's role may not do this.
    Forbidden => "forbidden",
    /// 403: the owner's file count or bytes quota is used up.
    QuotaExceeded => "quota_exceeded",
    /// 403: a signed path that is malformed or tampered with.
    InvalidSignature => "invalid_signature",
    /// 403: a signed path whose key id is not configured.
    UnknownKey => "unknown_key",
    /// 403: a signed URL used with an `access_type` other than its own.
    WrongAccessType => "wrong_access_type",
    /// 404: no such resource visible to the caller, or no such route.
    NotFound => "not_found",
    /// 404: a thumbnail that will not exist (processing failed, or a size configured later).
    VariantNotFound => "variant_not_found",
    /// 404: a maintenance job name that does not exist.
    UnknownJob => "unknown_job",
    /// 405: a method the route does not take (file serving: anything but GET and HEAD).
    MethodNotAllowed => "method_not_allowed",
    /// 409: a thumbnail still being made.
    VariantNotReady => "variant_not_ready",
    /// 409: a backup to verify that has not finished, or was removed.
    BackupNotCheckable => "backup_not_checkable",
    /// 410: a signed URL past its expiry.
    UrlExpired => "url_expired",
    /// 410: a signed URL issued before the image's URLs were revoked or it was made private.
    UrlRevoked => "url_revoked",
    /// 413: an uploaded file over `storage.maxFileSize`.
    FileTooLarge => "file_too_large",
    /// 413: a request body over its bound (`limits.jsonBodyBytes`, or the upload's).
    BodyTooLarge => "body_too_large",
    /// 413: a body refused as too large by the framework rather than by our own bounds.
    PayloadTooLarge => "payload_too_large",
    /// 415: uploaded bytes that are not an accepted image type, or a body whose
    /// `Content-Type` the route does not take.
    UnsupportedMediaType => "unsupported_media_type",
    /// 416: a `Range` that starts past the end of the file.
    RangeNotSatisfiable => "range_not_satisfiable",
    /// 422: an uploaded image with an unreadable header, or truncated.
    CorruptImage => "corrupt_image",
    /// 422: an uploaded image with more pixels than `storage.maxPixels`.
    ImageTooLarge => "image_too_large",
    /// 422: a `source_ids` image that is missing, deleted, or not the owner's nor public.
    UnknownSource => "unknown_source",
    /// 422: an `Idempotency-Key` used before for different bytes.
    IdempotencyKeyReused => "idempotency_key_reused",
    /// 429: over the rate limit; retry after `Retry-After` seconds.
    RateLimited => "rate_limited",
    /// 500: something failed on our side; the cause is in the logs, never in the answer.
    Internal => "internal",
    /// 503: the database cannot be reached; retry after `Retry-After` seconds.
    ServiceUnavailable => "service_unavailable",
    /// 507: the storage disk is full.
    InsufficientStorage => "insufficient_storage",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::ErrorCode;

    const API_DOC: &str = include_str!("../../../docs/api.md");

    /// The codes in the code column of the doc's `| status | code | when |` tables.
    fn documented_codes() -> BTreeSet<&'static str> {
        let mut codes = BTreeSet::new();
        let mut in_table = false;
        for line in API_DOC.lines().map(str::trim) {
            if !line.starts_with('|') {
                in_table = false;
                continue;
            }
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if cells == ["status", "code", "when"] {
                in_table = true;
                continue;
            }
            if !in_table || cells.iter().all(|cell| cell.chars().all(|c| c == '-' || c == ':')) {
                continue;
            }
            let code_cell = cells.get(1).unwrap_or_else(|| panic!("a row without a code column: {line}"));
            codes.extend(code_cell.split('`').skip(1).step_by(2));
        }
        codes
    }

    #[test]
    fn codes_are_unique_snake_case_spellings_of_their_variants() {
        let spellings: BTreeSet<_> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(spellings.len(), ErrorCode::ALL.len(), "two variants share a code");
        for code in ErrorCode::ALL {
            let mut snake = String::new();
            for (i, c) in format!("{code:?}").chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    snake.push('_');
                }
                snake.push(c.to_ascii_lowercase());
            }
            assert_eq!(code.as_str(), snake, "{code:?}");
            assert_eq!(code.to_string(), code.as_str());
            let documented = poem_openapi::types::ToJSON::to_json(code);
            assert_eq!(documented, Some(serde_json::Value::from(code.as_str())), "the document spells it alike");
        }
    }

    #[test]
    fn the_api_doc_lists_exactly_the_codes() {
        let documented = documented_codes();
        let known: BTreeSet<_> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        let undocumented: Vec<_> = known.difference(&documented).collect();
        assert!(undocumented.is_empty(), "codes missing from the tables of docs/api.md: {undocumented:?}");
        let unknown: Vec<_> = documented.difference(&known).collect();
        assert!(unknown.is_empty(), "docs/api.md lists codes that are not `ErrorCode`s: {unknown:?}");
    }
}
