//! The rules of the fields a client names an image by: tags, metadata and file names,
//! shared by uploads, metadata updates and searches, with their bounds.

use serde_json::{Map, Value};

/// Most tags one image may carry.
pub const MAX_TAGS: usize = 32;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;
/// Largest `metadata` object, in bytes of JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest kept file name, in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// A client-supplied field that breaks the rules shared by upload and metadata updates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// The tag rules of uploads and updates: trimmed, blanks dropped, de-duplicated in order,
/// at most [`MAX_TAGS`] of at most [`MAX_TAG_CHARS`] printable characters.
pub fn normalize_tags(items: impl IntoIterator<Item = String>) -> Result<Vec<String>, FieldError> {
    let mut tags: Vec<String> = Vec::new();
    for tag in items {
        let tag = tag.trim();
        if tag.is_empty() {
            continue;
        }
        if tag.chars().count() > MAX_TAG_CHARS || tag.chars().any(char::is_control) {
            return Err(FieldError::new("tags", format!("each tag is at most {MAX_TAG_CHARS} printable characters")));
        }
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(FieldError::new("tags", format!("at most {MAX_TAGS} tags")));
    }
    Ok(tags)
}

/// The metadata rules of updates: a JSON object of at most [`MAX_METADATA_BYTES`] once
/// serialised (uploads check the same bound on the text as sent), with no NUL character.
pub fn check_metadata(value: Value) -> Result<Map<String, Value>, FieldError> {
    let Value::Object(map) = value else { return Err(FieldError::new("metadata", "must be a JSON object")) };
    let size = serde_json::to_vec(&map).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_METADATA_BYTES {
        return Err(FieldError::new("metadata", format!("at most {MAX_METADATA_BYTES} bytes")));
    }
    refuse_nul(&map)?;
    Ok(map)
}

/// Refuses metadata with a NUL character in a key or a string: PostgreSQL's `jsonb` cannot
/// store one, and the row's insert or update would fail as an internal error.
pub fn refuse_nul(metadata: &Map<String, Value>) -> Result<(), FieldError> {
    fn holds_nul(value: &Value) -> bool {
        match value {
            Value::String(text) => text.contains('\0'),
            Value::Array(items) => items.iter().any(holds_nul),
            Value::Object(fields) => fields.iter().any(|(key, value)| key.contains('\0') || holds_nul(value)),
            _ => false,
        }
    }
    if metadata.iter().any(|(key, value)| key.contains('\0') || holds_nul(value)) {
        return Err(FieldError::new("metadata", "must not contain the NUL character (\\u0000)"));
    }
    Ok(())
}

/// A file name given in a metadata update: like an upload's name, but a name that is blank
/// once cleaned is refused rather than replaced by `unnamed`.
pub fn check_file_name(name: &str) -> Result<String, FieldError> {
    let cleaned = sanitize_file_name(name);
    if cleaned == "unnamed" && name.trim() != "unnamed" {
        return Err(FieldError::new("file_name", "must name a file (not blank, `.` or `..`)"));
    }
    Ok(cleaned)
}

/// Keeps the last path component of a client's file name, without control or format
/// characters, bounded in length. The result is only ever stored and shown, never used as
/// a path.
pub fn sanitize_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String =
        last.chars().filter(|&c| !c.is_control() && !is_format_character(c)).take(MAX_NAME_CHARS).collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." { "unnamed".to_owned() } else { cleaned.to_owned() }
}

/// Invisible characters that change how text around them is shown (Unicode category Cf):
/// bidirectional overrides and isolates, which turn `gpj.exe` into what reads as an image
/// name in a save dialog, zero-width characters and the byte-order mark. File names lose
/// them; nothing a client names needs them.
pub fn is_format_character(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_paths_and_control_characters() {
        assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_file_name("C:\\photos\\me.jpg"), "me.jpg");
        assert_eq!(sanitize_file_name("a\u{0}b\nc.png"), "abc.png");
        assert_eq!(sanitize_file_name("me\u{202E}gpj.exe"), "megpj.exe", "bidi overrides are dropped");
        assert_eq!(sanitize_file_name(""), "unnamed");
        assert_eq!(sanitize_file_name(".."), "unnamed");
        assert_eq!(sanitize_file_name(&"é".repeat(300)).chars().count(), MAX_NAME_CHARS);
    }

    #[test]
    fn tags_metadata_and_names_follow_the_rules() {
        assert_eq!(normalize_tags([" a ".to_owned(), "a".to_owned(), "".to_owned()]).unwrap(), vec!["a"]);
        assert_eq!(normalize_tags(vec!["x".repeat(MAX_TAG_CHARS + 1)]).unwrap_err().field, "tags");
        assert!(normalize_tags((0..=MAX_TAGS).map(|i| i.to_string())).is_err());
        assert_eq!(check_metadata(serde_json::json!({"a": 1})).unwrap()["a"], 1);
        assert!(check_metadata(serde_json::json!([1])).is_err());
        assert!(check_metadata(serde_json::json!({"a": "x".repeat(MAX_METADATA_BYTES)})).is_err());
        for nul in [serde_json::json!({"a\u{0}": 1}), serde_json::json!({"a": ["ok", {"b": "x\u{0}"}]})] {
            assert!(check_metadata(nul.clone()).is_err_and(|e| e.to_string().contains("NUL")), "{nul}");
        }
        assert_eq!(check_file_name("dir/me.jpg").unwrap(), "me.jpg");
        assert!(check_file_name("  ").is_err());
        assert!(check_file_name("a/..").is_err());
    }
}
