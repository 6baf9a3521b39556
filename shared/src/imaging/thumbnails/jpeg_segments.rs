//! Reads the metadata segments of a JPEG that libjpeg-turbo's TurboJPEG API does not hand
//! out: the ICC profile (APP2, possibly split over several chunks), the EXIF block (APP1)
//! and the Adobe marker (APP14) that says how CMYK samples are stored.
//!
//! Only the segments before the first scan are read; nothing here decodes pixels. Malformed
//! segments are skipped rather than reported: the decoder judges the image data itself, and
//! a broken optional segment is no reason to refuse a photo.

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const APP1: u8 = 0xE1;
const APP2: u8 = 0xE2;
const APP14: u8 = 0xEE;

const EXIF_SIGNATURE: &[u8] = b"Exif\0\0";
const ICC_SIGNATURE: &[u8] = b"ICC_PROFILE\0";
const ADOBE_SIGNATURE: &[u8] = b"Adobe";

/// What the header segments of a JPEG say beyond its geometry.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct JpegSegments<'a> {
    /// The embedded ICC profile, reassembled from its chunks in sequence order; `None` when
    /// absent or when chunks are missing (a partial profile would mis-colour the image).
    pub icc_profile: Option<Vec<u8>>,
    /// The TIFF structure of the first EXIF segment (after the `Exif\0\0` signature).
    pub exif: Option<&'a [u8]>,
    /// An Adobe APP14 marker is present: Photoshop, which writes nearly all CMYK JPEGs,
    /// stores CMYK samples inverted (255 = no ink) and flags it this way.
    pub adobe: bool,
}

/// Reads the segments between SOI and the first SOS.
pub(super) fn read_jpeg_segments(data: &[u8]) -> JpegSegments<'_> {
    let mut found = JpegSegments::default();
    // (sequence number, chunk) of every ICC chunk, and the chunk count they announce.
    let mut icc_chunks: Vec<(u8, &[u8])> = Vec::new();
    let mut icc_count: Option<u8> = None;
    let mut icc_consistent = true;

    if data.get(..2) != Some(&[0xFF, SOI]) {
        return found;
    }
    let mut pos = 2;
    loop {
        // A marker is 0xFF followed by a code; any number of 0xFF fill bytes may precede it.
        while data.get(pos) == Some(&0xFF) && data.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (data.get(pos), data.get(pos + 1)) else { break };
        pos += 2;
        match marker {
            SOS | EOI => break,
            // Standalone markers carry no length.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(length) = data.get(pos..pos + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
            break;
        };
        let Some(payload) = length.checked_sub(2).and_then(|len| data.get(pos + 2..pos + 2 + len)) else {
            break;
        };
        pos += length;

        match marker {
            APP1 if found.exif.is_none() => found.exif = payload.strip_prefix(EXIF_SIGNATURE),
            APP2 => {
                if let Some([sequence, count, chunk @ ..]) = payload.strip_prefix(ICC_SIGNATURE) {
                    icc_consistent &= *icc_count.get_or_insert(*count) == *count;
                    icc_chunks.push((*sequence, chunk));
                }
            }
            APP14 if payload.starts_with(ADOBE_SIGNATURE) => found.adobe = true,
            _ => {}
        }
    }

    if let Some(count) = icc_count.filter(|_| icc_consistent) {
        icc_chunks.sort_by_key(|(sequence, _)| *sequence);
        // Sequence numbers start at 1 and must be exactly 1..=count, each once.
        let complete = icc_chunks.len() == usize::from(count)
            && icc_chunks.iter().zip(1..).all(|((sequence, _), expected)| *sequence == expected);
        if complete {
            found.icc_profile = Some(icc_chunks.iter().flat_map(|(_, chunk)| chunk.iter().copied()).collect());
        }
    }
    found
}

/// The number of scans (SOS markers) in a JPEG, walking its segments and skipping the
/// entropy-coded data after each scan header. A progressive JPEG has one scan per pass,
/// usually about ten; a file of thousands of tiny scans costs the decoder minutes, so the
/// count is checked before decoding. Stops at EOI or at the first byte that breaks the
/// structure (the decoder judges the rest).
pub(super) fn count_scans(data: &[u8]) -> usize {
    if data.get(..2) != Some(&[0xFF, SOI]) {
        return 0;
    }
    let (mut pos, mut scans) = (2, 0);
    loop {
        while data.get(pos) == Some(&0xFF) && data.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (data.get(pos), data.get(pos + 1)) else { return scans };
        pos += 2;
        match marker {
            EOI => return scans,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(length) = data.get(pos..pos + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
            return scans;
        };
        if length < 2 {
            return scans;
        }
        pos += length;
        if marker == SOS {
            scans += 1;
            // The scan's data runs to the next marker that is neither a stuffed 0xFF00 nor a
            // restart marker.
            while let Some(&byte) = data.get(pos) {
                if byte == 0xFF {
                    match data.get(pos + 1) {
                        Some(0x00 | 0xD0..=0xD7) => pos += 2,
                        Some(0xFF) => pos += 1,
                        _ => break,
                    }
                    continue;
                }
                pos += 1;
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// SOI, `scans` scans of a few entropy-coded bytes each (with a stuffed 0xFF00, a
    /// restart marker and fill bytes), then EOI.
    pub(in crate::imaging::thumbnails) fn jpeg_with_scans(scans: usize) -> Vec<u8> {
        let mut out = vec![0xFF, SOI];
        out.extend(segment(0xDB, &[0; 65]));
        for _ in 0..scans {
            out.extend(segment(SOS, &[1, 1, 0, 0, 63, 0]));
            out.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF, 0xFF]);
        }
        out.extend_from_slice(&[0xFF, EOI]);
        out
    }

    #[test]
    fn scans_are_counted_across_their_entropy_coded_data() {
        assert_eq!(count_scans(&jpeg_with_scans(0)), 0);
        assert_eq!(count_scans(&jpeg_with_scans(1)), 1);
        assert_eq!(count_scans(&jpeg_with_scans(1000)), 1000);
        assert_eq!(count_scans(b"not a jpeg"), 0);
        let mut truncated = jpeg_with_scans(3);
        truncated.truncate(truncated.len() - 5);
        assert_eq!(count_scans(&truncated), 3, "a cut file counts what it has");
    }

    /// A complete segment (marker, length, payload) as it appears in a JPEG file.
    pub(in crate::imaging::thumbnails) fn segment(marker: u8, payload: &[u8]) -> Vec<u8> {
        let length = u16::try_from(payload.len() + 2).expect("segment payload fits in 64 KiB");
        let mut out = vec![0xFF, marker];
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// An APP2 ICC chunk with its sequence number and the total chunk count.
    pub(in crate::imaging::thumbnails) fn icc_segment(sequence: u8, count: u8, chunk: &[u8]) -> Vec<u8> {
        let mut payload = ICC_SIGNATURE.to_vec();
        payload.extend_from_slice(&[sequence, count]);
        payload.extend_from_slice(chunk);
        segment(APP2, &payload)
    }

    /// Puts `segments` right after the SOI marker of `jpeg`.
    pub(in crate::imaging::thumbnails) fn insert_after_soi(jpeg: &[u8], segments: &[Vec<u8>]) -> Vec<u8> {
        assert_eq!(&jpeg[..2], &[0xFF, SOI]);
        let mut out = jpeg[..2].to_vec();
        segments.iter().for_each(|s| out.extend_from_slice(s));
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    fn jpeg_with(segments: &[Vec<u8>]) -> Vec<u8> {
        let mut fake = vec![0xFF, SOI];
        segments.iter().for_each(|s| fake.extend_from_slice(s));
        fake.extend_from_slice(&[0xFF, SOS, 0, 2, 0x12, 0x34, 0xFF, EOI]);
        fake
    }

    #[test]
    fn icc_chunks_are_joined_in_sequence_order_whatever_their_file_order() {
        let data = jpeg_with(&[icc_segment(2, 3, b"BB"), icc_segment(1, 3, b"AA"), icc_segment(3, 3, b"C")]);
        assert_eq!(read_jpeg_segments(&data).icc_profile.as_deref(), Some(&b"AABBC"[..]));
    }

    #[test]
    fn an_icc_profile_with_a_missing_or_duplicated_chunk_is_ignored() {
        let missing = jpeg_with(&[icc_segment(1, 3, b"AA"), icc_segment(3, 3, b"C")]);
        assert_eq!(read_jpeg_segments(&missing).icc_profile, None);
        let duplicated = jpeg_with(&[icc_segment(1, 2, b"AA"), icc_segment(1, 2, b"AA")]);
        assert_eq!(read_jpeg_segments(&duplicated).icc_profile, None);
        let disagreeing = jpeg_with(&[icc_segment(1, 2, b"AA"), icc_segment(2, 3, b"BB")]);
        assert_eq!(read_jpeg_segments(&disagreeing).icc_profile, None);
    }

    #[test]
    fn exif_and_adobe_segments_are_found_and_other_segments_skipped() {
        let data = jpeg_with(&[
            segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"),
            segment(APP1, b"http://ns.adobe.com/xap/1.0/\0<x/>"),
            segment(APP1, b"Exif\0\0MM\0*tiff"),
            segment(APP14, b"Adobe\0\x64\0\0\0\0\x02"),
        ]);
        let found = read_jpeg_segments(&data);
        assert_eq!(found.exif, Some(&b"MM\0*tiff"[..]));
        assert!(found.adobe);
        assert_eq!(found.icc_profile, None);
    }

    #[test]
    fn segments_after_the_first_scan_are_not_read() {
        let mut data = jpeg_with(&[]);
        data.extend_from_slice(&segment(APP1, b"Exif\0\0MM\0*"));
        assert_eq!(read_jpeg_segments(&data), JpegSegments::default());
    }

    #[test]
    fn truncated_or_foreign_data_yields_nothing_and_does_not_panic() {
        let whole = jpeg_with(&[segment(APP1, b"Exif\0\0MM\0*tiff"), icc_segment(1, 1, b"AA")]);
        for end in 0..whole.len() {
            let _ = read_jpeg_segments(&whole[..end]);
        }
        assert_eq!(read_jpeg_segments(b"\x89PNG\r\n\x1a\n"), JpegSegments::default());
        assert_eq!(read_jpeg_segments(&[0xFF, SOI, 0xFF, APP1, 0, 1]), JpegSegments::default());
    }
}
