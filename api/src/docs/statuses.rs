//! The error statuses each operation can answer. Every handler returns the one `ApiError`,
//! so the generated document lists all of them everywhere; here they are cut down to those
//! the operation really answers, and the ones a middleware adds are put in.

use std::collections::BTreeMap;

use serde_json::Value;

/// What any operation may answer whatever its handler does: 413 (a body over
/// `limits.jsonBodyBytes`, refused by `crate::body_limit` before the router, on every route
/// but the upload, which has its own bound), 429 (every route is rate limited), 500 and 503
/// (the database or the object store unreachable).
const ANY: [u16; 4] = [413, 429, 500, 503];

/// The error statuses of an operation, or `None` for an operation id this table does not
/// know (its document is then left as generated; `api/tests/openapi.rs` catches that).
pub fn error_statuses(operation_id: &str) -> Option<Vec<u16>> {
    // Beyond `ANY` and 401 (a missing or bad token): 400 for a bad parameter or body, 403
    // for a role or owner that may not, 404 for an id not found or not visible, 409 for a
    // resource not in the needed state, 415 for a body that is not JSON.
    let own: &[u16] = match operation_id {
        "getHealth" => return Some(vec![413, 429, 503]),
        "uploadImage" => &[400, 403, 415, 422, 507],
        "getImage" => &[400, 404],
        "updateImage" => &[400, 403, 404, 415],
        "deleteImage" | "reprocessImage" | "revokeUrls" => &[400, 403, 404],
        "listImages" | "getQuota" | "getStats" | "getMetricSeries" | "listBackups" => &[400, 403],
        "searchImages" | "setQuota" | "requestRestore" => &[400, 403, 415],
        "getSignedUrl" | "getAccessUrl" => &[400, 404, 409],
        // Per image, their outcomes are in the 200 answer.
        "bulkImages" | "getAccessUrls" => &[400, 415],
        "requestBackup" | "cleanupBackups" => &[403],
        "verifyBackup" => &[400, 403, 404, 409],
        "getBackup" | "getRestore" => &[400, 403, 404],
        "eraseOwner" => &[400, 403],
        "getErasure" => &[400, 403, 404],
        "runMaintenanceJob" => &[403, 404],
        "listQueues" => &[403],
        "listAuditLog" => &[400, 403],
        "listDeadLetters" | "redriveDeadLetters" => &[400, 403, 404],
        _ => return None,
    };
    let mut statuses: Vec<u16> = own.iter().copied().chain([401]).chain(ANY).collect();
    statuses.sort_unstable();
    statuses.dedup();
    Some(statuses)
}

/// Gives every operation of `document` exactly its error statuses, the `ApiError` answer
/// for each unless the operation has its own (the health check's 503).
pub(super) fn narrow(document: &mut Value) {
    let catalogue = error_answers(document);
    super::for_each_operation(document, |_, _, operation| {
        let Some(wanted) = operation["operationId"].as_str().and_then(error_statuses) else { return };
        let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else { return };
        responses.retain(|status, _| !is_error(status) || wanted.iter().any(|w| w.to_string() == *status));
        for status in wanted {
            let key = status.to_string();
            if !responses.contains_key(&key)
                && let Some(answer) = catalogue.get(&key)
            {
                responses.insert(key, answer.clone());
            }
        }
    });
}

/// The `ApiError` answer of each error status, as the generator wrote it.
fn error_answers(document: &mut Value) -> BTreeMap<String, Value> {
    let mut catalogue = BTreeMap::new();
    super::for_each_operation(document, |_, _, operation| {
        for (status, answer) in operation["responses"].as_object().into_iter().flatten() {
            let refs = answer["content"].as_object().into_iter().flatten().map(|(_, media)| &media["schema"]["$ref"]);
            let is_error_body = refs.into_iter().any(|r| r == "#/components/schemas/ErrorBody");
            if is_error(status) && is_error_body {
                catalogue.entry(status.clone()).or_insert_with(|| answer.clone());
            }
        }
    });
    catalogue
}

fn is_error(status: &str) -> bool {
    status.starts_with('4') || status.starts_with('5')
}
