//! The file-serving routes in the document. `crate::serving` answers them in front of the
//! router, so poem-openapi never sees them; they are described here by hand, from what that
//! module answers (`docs/api.md`, "Serving files").

use serde_json::{Value, json};

pub use crate::serving::SIGNED_PREFIX;

/// `GET` and `HEAD /storage/signed/{signed_path}`.
pub fn signed() -> Value {
    let parameters = json!([{
        "name": "signed_path",
        "in": "path",
        "required": true,
        "description": "The last segment of a URL from `GET /storage/images/{id}/signed-url` or `/access`: \
                        `{id}.{variant}.{v|d}.{expires}[.{generation}].{key id}.{signature}`.",
        "schema": {"type": "string", "pattern": "^[^/]+$"},
    }]);
    let errors = [
        (403, "`invalid_signature` (malformed or tampered), `unknown_key`, or `wrong_access_type`"),
        (404, "`not_found`: the image was deleted, or has no such variant"),
        (410, "`url_expired`, or `url_revoked` (signed before the image's URLs were revoked)"),
    ];
    path_item("SignedFile", "a signed URL", parameters, &errors, true)
}

/// `GET` and `HEAD {server.publicPath}/{id}/{variant}`.
pub fn public(variants: &Value) -> Value {
    let parameters = json!([
        {"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}},
        {"name": "variant", "in": "path", "required": true, "schema": variants},
    ]);
    let errors = [(404, "`not_found`: no such image or variant, or the image is not public")];
    path_item("PublicFile", "the public URL of a public image", parameters, &errors, false)
}

/// One path item with a `GET` and a `HEAD` operation, `serve{name}` and `head{name}`.
fn path_item(name: &str, what: &str, mut parameters: Value, errors: &[(u16, &str)], signed: bool) -> Value {
    let list = parameters.as_array_mut().expect("an array");
    list.push(json!({
        "name": "access_type",
        "in": "query",
        "required": false,
        "description": "The intended use; for a signed URL it must be the one the URL was issued for.",
        "schema": {"$ref": "#/components/schemas/AccessType"},
    }));
    for (header, description) in [
        (
            "Range",
            "One range, `bytes=a-b`, `bytes=a-` or `bytes=-n`: answered with 206. Several ranges get the whole file.",
        ),
        ("If-None-Match", "An ETag: 304 when it is the file's."),
        ("If-Range", "The ETag the range applies to; otherwise the whole file is sent."),
    ] {
        list.push(json!({
            "name": header, "in": "header", "required": false, "description": description, "schema": {"type": "string"},
        }));
    }
    let mut responses = serde_json::Map::new();
    responses.insert("200".into(), file_answer("The file."));
    responses.insert("206".into(), file_answer("The requested range of the file, with `Content-Range`."));
    responses.insert(
        "304".into(),
        json!({"description": "Not modified: `If-None-Match` named the file's ETag.", "headers": file_headers()}),
    );
    if signed {
        responses.insert(
            "307".into(),
            json!({
                "description": "With `storage.s3.presignedRedirect`: to a presigned URL of the object store that \
                                lives no longer than the signed URL.",
                "headers": {"Location": {"required": true, "schema": {"type": "string"}}},
            }),
        );
    }
    let mut all_errors = vec![(400, "`invalid_access_type`: `access_type` is neither `view` nor `download`")];
    all_errors.extend_from_slice(errors);
    all_errors.extend([
        (416, "`range_not_satisfiable`: the range starts past the end (`Content-Range: bytes */{size}`)"),
        (429, "`rate_limited` (`rateLimit.serving`, per client address); retry after `Retry-After` seconds"),
        (500, "`internal`: a failure on our side"),
        (503, "`service_unavailable`: the object store is unreachable; retry after `Retry-After` seconds"),
    ]);
    for (status, description) in all_errors {
        let mut answer = json!({
            "description": description,
            "content": {"application/json; charset=utf-8": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        });
        if matches!(status, 429 | 503) {
            answer["headers"] =
                json!({"Retry-After": {"required": true, "schema": {"type": "integer", "format": "uint64"}}});
        }
        responses.insert(status.to_string(), answer);
    }
    let operation = |verb: &str, summary: String| {
        json!({
            "tags": ["Access"],
            "summary": summary,
            "description": "No token: the URL is the permission. Files carry `Content-Type` (sniffed at upload), \
                            a strong `ETag` (the SHA-256), `Accept-Ranges`, `Cache-Control`, \
                            `X-Content-Type-Options: nosniff`, `Content-Security-Policy: default-src 'none'; sandbox` \
                            and, for `download`, `Content-Disposition: attachment`. Errors carry \
                            `Cache-Control: no-store`.",
            "operationId": format!("{verb}{name}"),
            "security": [],
            "parameters": parameters,
            "responses": responses,
        })
    };
    json!({
        "get": operation("serve", format!("The bytes of an image through {what}")),
        "head": operation("head", format!("The headers of an image through {what}, without its bytes")),
    })
}

fn file_answer(description: &str) -> Value {
    let binary = json!({"schema": {"type": "string", "format": "binary"}});
    json!({
        "description": description,
        "headers": file_headers(),
        "content": {
            "image/jpeg": binary, "image/png": binary, "image/gif": binary, "image/webp": binary,
        },
    })
}

fn file_headers() -> Value {
    let text = json!({"type": "string"});
    json!({
        "ETag": {"required": true, "schema": text, "description": "`\"{SHA-256 hex}\"` of the file."},
        "Cache-Control": {"required": true, "schema": text},
    })
}
