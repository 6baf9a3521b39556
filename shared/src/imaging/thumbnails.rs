//! Thumbnail pipeline: decode once, orient, convert to sRGB, resize, encode.

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

/// Makes one thumbnail per spec from the bytes of a stored original.
pub fn make_thumbnails(
    _data: &[u8],
    _specs: &[ThumbnailSpec],
    _max_pixels: u64,
) -> Result<Vec<Thumbnail>, ImagingError> {
    Err(ImagingError::Undecodable("thumbnail pipeline not built yet".to_owned()))
}
