//! What the generated schemas leave out about the JSON the API reads and writes: absent
//! optional fields are written as `null`, request bodies refuse unknown fields, and tags
//! and search text have bounds.

use serde_json::{Value, json};
use shared::fields::{MAX_TAG_CHARS, MAX_TAGS};
use shared::search::MAX_QUERY_CHARS;
use shared::upload::MAX_IDEMPOTENCY_KEY_BYTES;

/// Any text without control characters (`char::is_control`), as `shared::fields` checks.
const PRINTABLE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// Completes `document`'s component schemas and the `tag` query parameter.
pub(super) fn refine(document: &mut Value) {
    let bodies = request_bodies(document);
    let Some(schemas) = document.pointer_mut("/components/schemas").and_then(Value::as_object_mut) else { return };
    for (name, schema) in schemas.iter_mut() {
        nullable_options(schema);
        if bodies.contains(name) {
            // Every JSON body of the API is an `Object` with `deny_unknown_fields`.
            schema["additionalProperties"] = Value::Bool(false);
        }
        // Image metadata is always a JSON object.
        for (property, rules) in [("tags", tags()), ("query", search_text()), ("metadata", json!({"type": "object"}))] {
            if let Some(field) = schema.pointer_mut(&format!("/properties/{property}")) {
                merge(field, rules);
            }
        }
    }
    super::for_each_operation(document, |_, _, operation| {
        // The upload's form is described inline; its handler refuses unknown fields too.
        if let Some(form) = operation.pointer_mut("/requestBody/content/multipart~1form-data/schema")
            && form["type"] == "object"
        {
            form["additionalProperties"] = Value::Bool(false);
        }
        // Their handlers read an empty query value as an absent one.
        let empty_is_absent = matches!(operation["operationId"].as_str(), Some("listImages" | "getQuota"));
        let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) else { return };
        for parameter in parameters.iter_mut() {
            let name = parameter["name"].as_str().unwrap_or_default().to_owned();
            match (parameter["in"].as_str(), name.as_str()) {
                (Some("query"), "tag") => merge(&mut parameter["schema"], tags()),
                (Some("query"), _) if empty_is_absent => parameter["allowEmptyValue"] = Value::Bool(true),
                (Some("header"), "Idempotency-Key") => merge(&mut parameter["schema"], idempotency_key()),
                _ => {}
            }
        }
    });
}

/// The rule of `shared::upload` for `Idempotency-Key`.
fn idempotency_key() -> Value {
    json!({"minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_BYTES, "pattern": "^[\\x00-\\x7f]+$"})
}

/// An optional field of an `Object` is written as `null` when absent (unless it is skipped),
/// and `null` is read as absent; the generator marks neither.
fn nullable_options(schema: &mut Value) {
    let required: Vec<String> = schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else { return };
    for (_, property) in properties.iter_mut().filter(|(name, _)| !required.contains(name)) {
        if let Some(reference) = property.get("$ref").cloned() {
            // OpenAPI 3.0 ignores siblings of a `$ref`.
            *property = json!({"allOf": [{"$ref": reference}], "nullable": true});
        } else {
            property["nullable"] = Value::Bool(true);
        }
    }
}

/// The components used as JSON request bodies.
fn request_bodies(document: &mut Value) -> Vec<String> {
    let mut names = Vec::new();
    super::for_each_operation(document, |_, _, operation| {
        let Some(content) = operation.pointer("/requestBody/content").and_then(Value::as_object) else { return };
        for (media, body) in content {
            if media.starts_with("application/json")
                && let Some(name) =
                    body["schema"]["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                names.push(name.to_owned());
            }
        }
    });
    names
}

/// The rules of `shared::fields::normalize_tags`.
fn tags() -> Value {
    json!({
        "maxItems": MAX_TAGS,
        "items": {"type": "string", "maxLength": MAX_TAG_CHARS, "pattern": PRINTABLE},
    })
}

/// The rules of `SearchParams::validate` for `query`.
fn search_text() -> Value {
    json!({"maxLength": MAX_QUERY_CHARS, "pattern": PRINTABLE})
}

/// Adds `rules` to `schema`, recursively for nested objects (`items`).
fn merge(schema: &mut Value, rules: Value) {
    let Value::Object(rules) = rules else { return };
    for (key, rule) in rules {
        match (schema.get_mut(&key), rule) {
            (Some(existing @ Value::Object(_)), rule @ Value::Object(_)) => merge(existing, rule),
            (_, rule) => schema[&key] = rule,
        }
    }
}
