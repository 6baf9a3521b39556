//! Thumbnail pipeline: decode once, orient, convert to sRGB, resize, encode.
//!
//! The order is chosen for cost. The header is read first, so an image over the pixel limit
//! is refused before a single pixel is decoded and the largest size needed is known; a JPEG
//! is then decoded directly at the smallest DCT scale that still covers it. Resizing happens
//! in stored orientation, each size from the previous one; only the finished thumbnails are
//! turned upright and encoded.
//!
//! Single-threaded on purpose: the worker runs one pipeline per core.

mod color;
mod decode;
mod encode;
mod jpeg_segments;
mod orientation;
mod resize;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

pub use self::decode::MAX_JPEG_SCANS;
use self::decode::Source;
use self::encode::Encoder;
use self::resize::Size;
use super::{ImageFormat, ImagingError};

/// One configured box (`storage.thumbnailSizes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailSpec {
    pub name: String,
    pub width: u32,
    pub height: u32,
}

/// An encoded thumbnail, ready to be written.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    pub name: String,
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    pub bytes: Vec<u8>,
}

/// How long each stage of [`make_thumbnails_timed`] took, for the worker's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// Reading the header, decoding the pixels and converting them to sRGB.
    pub decode: Duration,
    /// Resizing to every size.
    pub resize: Duration,
    /// Turning each thumbnail upright and encoding it.
    pub encode: Duration,
}

/// Makes one thumbnail per spec, in spec order, from the bytes of a stored original (JPEG,
/// PNG, GIF or WebP; an animation gives its first frame).
///
/// Each thumbnail is the upright original (EXIF orientation applied) in sRGB, fitted inside
/// its box with the aspect ratio kept and never enlarged. Opaque images become JPEG, images
/// with transparency lossless WebP; no thumbnail carries metadata.
///
/// Images of more than `max_pixels` pixels are refused from their header alone
/// ([`ImagingError::TooManyPixels`]); data that does not decode gives
/// [`ImagingError::Undecodable`] with a short message fit for users, and so does a decode
/// that would allocate more than the pixel limit allows (a GIF frame larger than its
/// screen) or a JPEG of more than [`MAX_JPEG_SCANS`] scans.
pub fn make_thumbnails(data: &[u8], specs: &[ThumbnailSpec], max_pixels: u64) -> Result<Vec<Thumbnail>, ImagingError> {
    make_thumbnails_timed(data, specs, max_pixels).map(|(thumbnails, _)| thumbnails)
}

/// [`make_thumbnails`], with the time each stage took.
pub fn make_thumbnails_timed(
    data: &[u8],
    specs: &[ThumbnailSpec],
    max_pixels: u64,
) -> Result<(Vec<Thumbnail>, StageTimes), ImagingError> {
    let mut times = StageTimes::default();
    let started = Instant::now();
    let source = Source::open(data, max_pixels)?;
    let stored = source.size;
    if stored.pixels() > max_pixels {
        return Err(ImagingError::TooManyPixels { pixels: stored.pixels(), limit: max_pixels });
    }
    if specs.is_empty() {
        return Ok((Vec::new(), times));
    }

    let turn = source.orientation;
    let upright = orientation::turn_size(turn, stored);
    let sizes: Vec<Size> = specs
        .iter()
        .map(|spec| {
            let fitted = resize::fit_inside(upright, Size { width: spec.width, height: spec.height });
            orientation::turn_size(turn, fitted)
        })
        .collect();
    let largest = sizes.iter().copied().reduce(Size::union).expect("at least one spec");

    let image = color::into_srgb(source.decode(largest)?);
    let image = decode::drop_opaque_alpha(image);
    times.decode = started.elapsed();
    let started = Instant::now();
    let resized = resize::resize_all(image, &sizes)?;
    times.resize = started.elapsed();

    let started = Instant::now();
    let mut encoder = Encoder::new();
    let thumbnails = specs
        .iter()
        .zip(resized)
        .map(|(spec, image)| {
            let image = orientation::make_upright(image, turn);
            let (format, bytes) = encoder.encode(&image)?;
            Ok(Thumbnail { name: spec.name.clone(), format, width: image.width(), height: image.height(), bytes })
        })
        .collect::<Result<Vec<_>, ImagingError>>()?;
    times.encode = started.elapsed();
    Ok((thumbnails, times))
}
