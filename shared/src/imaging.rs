//! What the service knows about image bytes: reading their format and dimensions from
//! headers, and making thumbnails. The formats themselves, and recognising one from magic
//! bytes, are [`ImageFormat`]'s, a noun of the model.
//!
//! Nothing here trusts a client's file name or Content-Type: the format is whatever the
//! bytes say it is.

use std::io::{BufReader, Read, Seek, SeekFrom};

use crate::model::ImageFormat;

mod thumbnails;

pub use thumbnails::{MAX_JPEG_SCANS, StageTimes, Thumbnail, ThumbnailSpec, make_thumbnails, make_thumbnails_timed};

/// Why bytes were not accepted as an image.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    #[error("the data is not a supported image format")]
    UnknownFormat,
    #[error("the image header is corrupt: {0}")]
    CorruptHeader(String),
    #[error("the image file is truncated")]
    Truncated,
    #[error("the image has {pixels} pixels; the limit is {limit}")]
    TooManyPixels { pixels: u64, limit: u64 },
    #[error("the image cannot be decoded: {0}")]
    Undecodable(String),
    #[error("the thumbnail cannot be encoded: {0}")]
    Encode(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What the header says about an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
}

impl ImageInfo {
    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

/// Reads format and dimensions from the header of a complete file, checks that the file
/// ends where its format says it ends (a truncated upload is refused at the door rather than
/// failing later in a worker), and refuses more than `max_pixels` pixels before anything
/// is decoded.
pub fn probe<R: Read + Seek>(mut file: R, max_pixels: u64) -> Result<ImageInfo, ImagingError> {
    let mut head = [0u8; ImageFormat::SNIFF_LEN];
    let total = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    let read = read_up_to(&mut file, &mut head)?;
    let format = ImageFormat::sniff(&head[..read]).ok_or(ImagingError::UnknownFormat)?;
    check_complete(&mut file, format, &head, total)?;

    file.seek(SeekFrom::Start(0))?;
    // Only the header is read (up to JPEG's SOF marker, PNG's IHDR…): memory and time stay
    // the same whatever the file size, and nothing is decoded.
    let size = imagesize::reader_size(BufReader::new(file)).map_err(|e| match e {
        imagesize::ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => ImagingError::Truncated,
        // imagesize reports malformed headers as InvalidData I/O errors.
        imagesize::ImageError::IoError(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            ImagingError::CorruptHeader(e.to_string())
        }
        imagesize::ImageError::IoError(e) => ImagingError::Io(e),
        other => ImagingError::CorruptHeader(other.to_string()),
    })?;
    let too_wide = |_| ImagingError::CorruptHeader("dimensions out of range".to_owned());
    let (width, height) = (u32::try_from(size.width).map_err(too_wide)?, u32::try_from(size.height).map_err(too_wide)?);
    if width == 0 || height == 0 {
        return Err(ImagingError::CorruptHeader("zero width or height".to_owned()));
    }
    let info = ImageInfo { format, width, height };
    if info.pixels() > max_pixels {
        return Err(ImagingError::TooManyPixels { pixels: info.pixels(), limit: max_pixels });
    }
    Ok(info)
}

/// Every supported format says where it ends: JPEG with an EOI marker, PNG with an IEND
/// chunk, GIF with a trailer byte, WebP with the RIFF length.
fn check_complete<R: Read + Seek>(
    file: &mut R,
    format: ImageFormat,
    head: &[u8; ImageFormat::SNIFF_LEN],
    total: u64,
) -> Result<(), ImagingError> {
    const PNG_IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];
    let tail_len = 64.min(total);
    let mut tail = vec![0u8; tail_len as usize];
    file.seek(SeekFrom::End(-(tail_len as i64)))?;
    file.read_exact(&mut tail)?;
    // Trailing bytes after the end marker are tolerated (some cameras pad); a missing
    // marker is not.
    let complete = match format {
        ImageFormat::Jpeg => tail.windows(2).any(|w| w == [0xFF, 0xD9]),
        ImageFormat::Png => tail.windows(PNG_IEND.len()).any(|w| w == PNG_IEND),
        ImageFormat::Gif => tail.contains(&0x3B),
        ImageFormat::Webp => {
            let riff_len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            u64::from(riff_len) + 8 <= total
        }
    };
    if complete { Ok(()) } else { Err(ImagingError::Truncated) }
}

fn read_up_to<R: Read>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        image::RgbImage::new(width, height).write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn sniffing_ignores_names_and_reads_magic_bytes() {
        assert_eq!(ImageFormat::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(ImageFormat::Jpeg));
        assert_eq!(ImageFormat::sniff(b"GIF89a......"), Some(ImageFormat::Gif));
        assert_eq!(ImageFormat::sniff(b"RIFF\0\0\0\0WEBP"), Some(ImageFormat::Webp));
        assert_eq!(ImageFormat::sniff(b"RIFF\0\0\0\0WAVE"), None);
        assert_eq!(ImageFormat::sniff(b"<html><body>"), None);
        assert_eq!(ImageFormat::sniff(b""), None);
    }

    #[test]
    fn probe_reads_dimensions() {
        let info = probe(Cursor::new(png(7, 3)), 1000).unwrap();
        assert_eq!(info, ImageInfo { format: ImageFormat::Png, width: 7, height: 3 });
    }

    #[test]
    fn probe_reads_the_dimensions_of_every_accepted_format() {
        let fixture = |name: &str| {
            std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/images").join(name)).unwrap()
        };
        let encoded = |format| {
            let mut out = Vec::new();
            image::DynamicImage::new_rgba8(33, 21).write_to(&mut Cursor::new(&mut out), format).unwrap();
            out
        };
        let cases = [
            (fixture("photo-2mp.jpg"), ImageFormat::Jpeg, (1600, 1200)),
            (fixture("photo-alpha.png"), ImageFormat::Png, (1600, 1200)),
            (fixture("photo.webp"), ImageFormat::Webp, (1600, 1200)),
            (fixture("photo-alpha.webp"), ImageFormat::Webp, (1600, 1200)),
            (encoded(image::ImageFormat::WebP), ImageFormat::Webp, (33, 21)),
            (encoded(image::ImageFormat::Gif), ImageFormat::Gif, (33, 21)),
        ];
        for (bytes, format, (width, height)) in cases {
            let info = probe(Cursor::new(bytes), 50_000_000).unwrap();
            assert_eq!(info, ImageInfo { format, width, height });
        }
    }

    #[test]
    fn probe_refuses_more_pixels_than_the_limit() {
        let err = probe(Cursor::new(png(10, 10)), 99).unwrap_err();
        assert!(matches!(err, ImagingError::TooManyPixels { pixels: 100, limit: 99 }));
    }

    #[test]
    fn probe_refuses_truncated_files() {
        let mut bytes = png(64, 64);
        bytes.truncate(bytes.len() - 20);
        assert!(matches!(probe(Cursor::new(bytes), 1 << 20), Err(ImagingError::Truncated)));
    }

    #[test]
    fn probe_calls_a_malformed_header_corrupt() {
        let mut bytes = b"RIFF\0\0\0\0WEBPVP8?".to_vec();
        bytes.resize(64, 0);
        let riff_len = (bytes.len() - 8) as u32;
        bytes[4..8].copy_from_slice(&riff_len.to_le_bytes());
        assert!(matches!(probe(Cursor::new(bytes), 1000), Err(ImagingError::CorruptHeader(_))));
    }

    #[test]
    fn probe_refuses_unknown_bytes() {
        let err = probe(Cursor::new(b"hello, I am a text file".to_vec()), 100).unwrap_err();
        assert!(matches!(err, ImagingError::UnknownFormat));
    }
}
