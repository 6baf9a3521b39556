//! The HTTP rules of file serving that need no I/O: `If-None-Match`, `Range` / `If-Range`,
//! and the RFC 6266 `Content-Disposition` of downloads.

use std::ops::Range;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use poem::http::HeaderValue;
use shared::fields::is_format_character;

/// Bytes that RFC 5987 `attr-char` allows unencoded in `filename*`.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');
/// Longest file name put in a header, in characters; longer names are cut (extension kept).
const MAX_FILE_NAME_CHARS: usize = 150;

/// Whether an `If-None-Match` header matches `etag` (weak comparison, as RFC 9110 asks for
/// this header): `*`, or any listed tag with the same opaque value.
pub fn none_match(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: serve everything (a missing, malformed or multi-range header, or
    /// a unit other than bytes; RFC 9110 lets a server ignore those).
    Full,
    /// One satisfiable range: serve these bytes with 206.
    Partial(Range<u64>),
    /// One range that starts past the end: 416.
    Unsatisfiable,
}

/// Parses a single-range `Range` header against a representation of `len` bytes (> 0).
pub fn range(header: &str, len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=").or_else(|| strip_prefix_ignore_case(header.trim(), "bytes="))
    else {
        return RangeRequest::Full;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |text: &str| {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse::<u64>().ok()).flatten()
    };
    match (first.is_empty(), number(first), number(last)) {
        // `bytes=-N`: the last N bytes.
        (true, _, Some(0)) => RangeRequest::Unsatisfiable,
        (true, _, Some(suffix)) => RangeRequest::Partial(len.saturating_sub(suffix)..len),
        (false, Some(start), _) if start >= len => RangeRequest::Unsatisfiable,
        // `bytes=A-`: from A to the end.
        (false, Some(start), None) if last.is_empty() => RangeRequest::Partial(start..len),
        // `bytes=A-B`, B inclusive and possibly past the end.
        (false, Some(start), Some(end)) if end >= start => RangeRequest::Partial(start..end.saturating_add(1).min(len)),
        _ => RangeRequest::Full,
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// Whether `If-Range` lets a range through: only a strong tag equal to ours does (a date, a
/// weak or another tag means the client's partial copy may be of other bytes: send it all).
pub fn if_range_allows(header: &str, etag: &str) -> bool {
    header.trim() == etag
}

/// `attachment` with the file name twice, per RFC 6266: `filename*` with the UTF-8 name
/// percent-encoded, and `filename` with an ASCII stand-in for clients that do not read the
/// former. Control and format characters (bidi overrides), quotes, backslashes and path
/// separators never get through.
pub fn attachment(file_name: &str) -> HeaderValue {
    let name = clean_file_name(file_name);
    let fallback: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%' | ';') || c == ' ' { c } else { '_' })
        .collect();
    let encoded = utf8_percent_encode(&name, ATTR_CHAR);
    HeaderValue::from_str(&format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"))
        .expect("only visible ASCII is left")
}

/// The name with path separators and control characters replaced, cut to a bounded length
/// (keeping the extension), and never empty.
fn clean_file_name(file_name: &str) -> String {
    let cleaned: String = file_name
        .chars()
        .filter(|&c| !is_format_character(c))
        .map(|c| if c.is_control() || matches!(c, '/' | '\\') { '_' } else { c })
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        return "image".to_owned();
    }
    if cleaned.chars().count() <= MAX_FILE_NAME_CHARS {
        return cleaned.to_owned();
    }
    let extension = cleaned.rsplit_once('.').map(|(_, ext)| ext).filter(|ext| ext.chars().count() <= 8);
    let keep = MAX_FILE_NAME_CHARS - extension.map_or(0, |ext| ext.chars().count() + 1);
    let stem: String = cleaned.chars().take(keep).collect();
    match extension {
        Some(ext) => format!("{stem}.{ext}"),
        None => stem,
    }
}

/// The download name of a thumbnail: the original's name with the size and the thumbnail's
/// own extension, e.g. `dress.png` → `dress_small.jpg`.
pub fn thumbnail_file_name(original_name: &str, size: &str, extension: &str) -> String {
    let stem = match original_name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => original_name,
    };
    format!("{stem}_{size}.{extension}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETAG: &str = "\"abc\"";

    #[test]
    fn if_none_match_uses_weak_comparison_over_a_list() {
        assert!(none_match("\"abc\"", ETAG));
        assert!(none_match("W/\"abc\"", ETAG));
        assert!(none_match("\"x\", \"abc\"", ETAG));
        assert!(none_match("*", ETAG));
        assert!(!none_match("\"abd\"", ETAG));
        assert!(!none_match("abc", ETAG));
        assert!(!none_match("", ETAG));
    }

    #[test]
    fn single_ranges_are_served_and_others_ignored() {
        use RangeRequest::*;
        assert_eq!(range("bytes=0-9", 100), Partial(0..10));
        assert_eq!(range("bytes=90-", 100), Partial(90..100));
        assert_eq!(range("bytes=90-1000", 100), Partial(90..100));
        assert_eq!(range("bytes=-10", 100), Partial(90..100));
        assert_eq!(range("bytes=-1000", 100), Partial(0..100));
        assert_eq!(range("Bytes=5-5", 100), Partial(5..6));
        assert_eq!(range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(range("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(range("bytes=-0", 100), Unsatisfiable);
        for ignored in ["", "bytes=", "bytes=a-b", "bytes=9-1", "bytes=0-1,5-6", "items=0-1", "bytes=+1-2", "bytes=--1"]
        {
            assert_eq!(range(ignored, 100), Full, "{ignored}");
        }
        assert!(if_range_allows("\"abc\"", ETAG));
        assert!(!if_range_allows("W/\"abc\"", ETAG));
        assert!(!if_range_allows("Wed, 21 Oct 2015 07:28:00 GMT", ETAG));
    }

    #[test]
    fn downloads_carry_an_encoded_name_and_an_ascii_fallback() {
        let value = attachment("Платье лето.jpg");
        assert_eq!(
            value.to_str().unwrap(),
            "attachment; filename=\"______ ____.jpg\"; \
             filename*=UTF-8''%D0%9F%D0%BB%D0%B0%D1%82%D1%8C%D0%B5%20%D0%BB%D0%B5%D1%82%D0%BE.jpg"
        );
        let value = attachment("a\"b\\c;d%e\r\n/..\\x.png");
        let text = value.to_str().unwrap();
        assert!(
            text.starts_with("attachment; filename=\"a_b_c_d_e___.._x.png\"; filename*=UTF-8''a%22b_c%3Bd%25e__"),
            "{text}"
        );
        assert_eq!(attachment("").to_str().unwrap(), "attachment; filename=\"image\"; filename*=UTF-8''image");
        let long = format!("{}.jpeg", "é".repeat(400));
        let text = attachment(&long).to_str().unwrap().to_owned();
        assert!(text.ends_with(".jpeg") && text.len() < 2000, "{text}");
    }

    #[test]
    fn bidi_overrides_and_other_format_characters_are_dropped_from_download_names() {
        // U+202E turns `gpj.exe` around: the save dialog would show `exe.jpg`.
        let text = attachment("photo\u{202E}gpj.exe").to_str().unwrap().to_owned();
        assert_eq!(text, "attachment; filename=\"photogpj.exe\"; filename*=UTF-8''photogpj.exe");
        let text = attachment("\u{FEFF}a\u{200B}b\u{2066}c\u{2069}.png").to_str().unwrap().to_owned();
        assert_eq!(text, "attachment; filename=\"abc.png\"; filename*=UTF-8''abc.png");
    }

    #[test]
    fn thumbnails_are_named_after_the_original() {
        assert_eq!(thumbnail_file_name("dress.png", "small", "jpg"), "dress_small.jpg");
        assert_eq!(thumbnail_file_name("dress", "large", "webp"), "dress_large.webp");
        assert_eq!(thumbnail_file_name(".hidden", "small", "jpg"), ".hidden_small.jpg");
        assert_eq!(thumbnail_file_name("a.b.c", "medium", "jpg"), "a.b_medium.jpg");
    }
}
