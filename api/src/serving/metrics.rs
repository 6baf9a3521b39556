//! The metrics of file serving, the hottest path: every handle is registered once, on its
//! first use, and kept, so that a serve costs a few atomic additions and no allocation.
//! Serves are counted in the API's request families under two route templates,
//! `/storage/signed/:path` and `{server.publicPath}/:id/:variant`; signed URLs are also
//! counted by the result of their check.

use std::sync::OnceLock;
use std::time::Instant;

use metrics::{Counter, Histogram};
use poem::Response;
use poem::http::Method;
use shared::observability::names;
use shared::signing::SignatureError;

use super::Denial;
use crate::metrics::{announced_length, status_label};

/// Statuses a serve answers with, each with a counter kept; any other is counted through
/// the facade (a registry look-up).
const STATUSES: [u16; 12] = [200, 206, 304, 307, 400, 403, 404, 405, 410, 416, 500, 503];
/// `GET`, `HEAD`, anything else (answered 405).
const METHODS: [&str; 3] = ["GET", "HEAD", "other"];

/// Which route a serve came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Signed = 0,
    Public = 1,
}

/// The result of checking a signed URL, in `stayler_signed_url_verifications_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verification {
    Valid = 0,
    Expired = 1,
    BadSignature = 2,
    Malformed = 3,
    UnknownKey = 4,
    WrongAccessType = 5,
    Revoked = 6,
}

const VERIFICATIONS: [&str; 7] =
    ["valid", "expired", "bad_signature", "malformed", "unknown_key", "wrong_access_type", "revoked"];

impl Verification {
    /// What a signed serve's outcome says of its URL; `None` when the URL was not checked (a
    /// method or an access type the route refuses first).
    pub(super) fn of(outcome: &Result<Response, Denial>) -> Option<Self> {
        Some(match outcome {
            Ok(_) => Self::Valid,
            Err(Denial::Signature(SignatureError::Expired)) => Self::Expired,
            Err(Denial::Signature(SignatureError::BadSignature)) => Self::BadSignature,
            Err(Denial::Signature(SignatureError::Malformed)) => Self::Malformed,
            Err(Denial::Signature(SignatureError::UnknownKey)) => Self::UnknownKey,
            Err(Denial::Signature(SignatureError::WrongAccessType { .. })) => Self::WrongAccessType,
            Err(Denial::Revoked) => Self::Revoked,
            Err(Denial::MethodNotAllowed | Denial::BadAccessType) => return None,
            // Checked and good; the image or the store failed after.
            Err(_) => Self::Valid,
        })
    }
}

/// One route's handles, each registered on its first use and kept: series appear once they
/// have something to say, and from then on cost no look-up.
struct Route {
    label: String,
    /// By method (`GET`, `HEAD`), then by status in [`STATUSES`] order.
    requests: [[OnceLock<Counter>; STATUSES.len()]; 2],
    duration: [OnceLock<Histogram>; 2],
    bytes_out: OnceLock<Counter>,
}

impl Route {
    fn new(label: String) -> Self {
        Self { label, requests: Default::default(), duration: Default::default(), bytes_out: OnceLock::new() }
    }
}

/// Every handle of serving; see the module documentation.
pub(super) struct ServingMetrics {
    routes: [Route; 2],
    verifications: [Counter; VERIFICATIONS.len()],
}

impl ServingMetrics {
    /// Registers the signed-URL results at zero, so that a rate of each exists from the
    /// start; call once the recorder is installed (handles taken before it record nothing).
    pub(super) fn new(public_prefix: &str) -> Self {
        let verifications = VERIFICATIONS.map(|result| {
            let counter = metrics::counter!(names::SIGNED_URL_VERIFICATIONS, "result" => result);
            counter.increment(0);
            counter
        });
        let signed = format!("{}:path", super::SIGNED_PREFIX);
        let public = format!("{public_prefix}:id/:variant");
        Self { routes: [Route::new(signed), Route::new(public)], verifications }
    }

    pub(super) fn verified(&self, result: Verification) {
        self.verifications[result as usize].increment(1);
    }

    /// Counts one finished serve.
    pub(super) fn served(&self, kind: Kind, method: &Method, response: &Response, started: Instant) {
        let route = &self.routes[kind as usize];
        let elapsed = started.elapsed().as_secs_f64();
        let status = response.status();
        let index = match *method {
            Method::GET => 0,
            Method::HEAD => 1,
            // Answered 405 before anything else: rare enough for the registry's look-up.
            _ => {
                let (label, status) = (route.label.clone(), status_label(status));
                metrics::counter!(names::HTTP_REQUESTS, "route" => label, "method" => METHODS[2], "status" => status)
                    .increment(1);
                return;
            }
        };
        let method = METHODS[index];
        let duration = route.duration[index].get_or_init(
            || metrics::histogram!(names::HTTP_REQUEST_DURATION, "route" => route.label.clone(), "method" => method),
        );
        duration.record(elapsed);
        let register = || {
            let (label, status) = (route.label.clone(), status_label(status));
            metrics::counter!(names::HTTP_REQUESTS, "route" => label, "method" => method, "status" => status)
        };
        match STATUSES.iter().position(|&known| known == status.as_u16()) {
            Some(known) => route.requests[index][known].get_or_init(register).increment(1),
            None => register().increment(1),
        }
        if index == 0 {
            let bytes_out = route
                .bytes_out
                .get_or_init(|| metrics::counter!(names::HTTP_RESPONSE_BYTES, "route" => route.label.clone()));
            bytes_out.increment(announced_length(response.headers()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signature_error_has_its_result_and_refusals_before_the_check_have_none() {
        let result = |denial| Verification::of(&Err(denial)).map(|result| VERIFICATIONS[result as usize]);
        assert_eq!(result(Denial::Signature(SignatureError::Expired)), Some("expired"));
        assert_eq!(result(Denial::Signature(SignatureError::BadSignature)), Some("bad_signature"));
        assert_eq!(result(Denial::Signature(SignatureError::Malformed)), Some("malformed"));
        assert_eq!(result(Denial::Signature(SignatureError::UnknownKey)), Some("unknown_key"));
        assert_eq!(result(Denial::Revoked), Some("revoked"));
        assert_eq!(result(Denial::NotFound), Some("valid"), "the URL was good, the image is gone");
        assert_eq!(result(Denial::MethodNotAllowed), None);
        assert_eq!(result(Denial::BadAccessType), None);
        assert_eq!(Verification::of(&Ok(Response::default())), Some(Verification::Valid));
    }
}
