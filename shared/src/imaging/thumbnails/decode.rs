//! Decoding an original once, in two steps: [`Source::open`] reads only the header (size,
//! orientation, ICC profile) so that bombs are refused and the needed size is known before
//! any pixel is decoded; [`Source::decode`] then decodes no more pixels than needed.
//!
//! JPEG goes through libjpeg-turbo (the `turbojpeg` crate), which can decode straight to
//! 1/8, 2/8, … 8/8 of the full size by skipping DCT coefficients: a 12 MP photo needed at
//! 600 px is decoded at a quarter of its width, a sixteenth of the pixels. PNG, GIF and
//! WebP go through the `image` crate at full size (their codecs cannot scale).

use std::io::Cursor;

use image::codecs::gif::GifDecoder;
use image::codecs::jpeg::JpegDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, RgbImage};
use turbojpeg::{Colorspace, Decompressor, PixelFormat};

use super::jpeg_segments::{count_scans, read_jpeg_segments};
use super::orientation;
use super::resize::Size;
use crate::imaging::ImagingError;
use crate::model::ImageFormat;

/// Scans a JPEG may have. Progressive JPEGs use about ten (one per refinement pass); each
/// scan is a pass over the whole image, so thousands of tiny scans hold a worker for minutes.
pub const MAX_JPEG_SCANS: usize = 100;
/// What a decoder may allocate besides the pixels (tables, compressed chunks, row buffers).
const DECODER_OVERHEAD_BYTES: u64 = 16 * 1024 * 1024;

/// An original whose header has been read and whose pixels have not.
pub(super) struct Source<'a> {
    format: ImageFormat,
    /// Size as stored, before orientation.
    pub size: Size,
    pub orientation: Orientation,
    icc_profile: Option<Vec<u8>>,
    codec: Codec<'a>,
}

enum Codec<'a> {
    Jpeg { data: &'a [u8], decompressor: Decompressor, colorspace: Colorspace, adobe: bool },
    Image(Box<dyn ImageDecoder + 'a>),
}

/// Decoded pixels and the colour profile they are in.
pub(super) struct Decoded {
    pub pixels: Pixels,
    pub icc_profile: Option<Vec<u8>>,
}

pub(super) enum Pixels {
    /// RGB8 or RGBA8 (greyscale is widened to RGB).
    Image(DynamicImage),
    /// Print-separated JPEG (from vendors' catalogue workflows); 0 = no ink.
    Cmyk(CmykImage),
}

pub(super) struct CmykImage {
    pub size: Size,
    /// C, M, Y, K per pixel, row by row.
    pub samples: Vec<u8>,
}

impl<'a> Source<'a> {
    /// Reads the header of `data`, whatever supported format it is in. `max_pixels` is the
    /// caller's pixel limit, which it checks against [`Self::size`] before decoding.
    pub fn open(data: &'a [u8], max_pixels: u64) -> Result<Self, ImagingError> {
        let format = ImageFormat::sniff(data)
            .ok_or_else(|| ImagingError::Undecodable("not a JPEG, PNG, GIF or WebP image".to_owned()))?;
        let reader = Cursor::new(data);
        match format {
            ImageFormat::Jpeg => Self::open_jpeg(data),
            ImageFormat::Png => Self::open_with_image(format, PngDecoder::new(reader), max_pixels),
            ImageFormat::Gif => Self::open_with_image(format, GifDecoder::new(reader), max_pixels),
            ImageFormat::Webp => Self::open_with_image(format, WebPDecoder::new(reader), max_pixels),
        }
    }

    fn open_jpeg(data: &'a [u8]) -> Result<Self, ImagingError> {
        let scans = count_scans(data);
        if scans > MAX_JPEG_SCANS {
            return Err(ImagingError::Undecodable(format!(
                "the JPEG has {scans} scans, more than the {MAX_JPEG_SCANS} allowed"
            )));
        }
        let corrupt = |e: turbojpeg::Error| undecodable(ImageFormat::Jpeg, e);
        let mut decompressor = Decompressor::new().map_err(corrupt)?;
        let header = decompressor.read_header(data).map_err(corrupt)?;
        let size = Size { width: dimension(header.width)?, height: dimension(header.height)? };
        let segments = read_jpeg_segments(data);
        Ok(Source {
            format: ImageFormat::Jpeg,
            size,
            orientation: orientation::from_exif(segments.exif),
            icc_profile: segments.icc_profile,
            codec: Codec::Jpeg { data, decompressor, colorspace: header.colorspace, adobe: segments.adobe },
        })
    }

    fn open_with_image<D: ImageDecoder + 'a>(
        format: ImageFormat,
        decoder: image::ImageResult<D>,
        max_pixels: u64,
    ) -> Result<Self, ImagingError> {
        let mut decoder = decoder.map_err(|e| undecodable(format, e))?;
        // Decoders made with `new` have no allocation limit. The canvas itself is checked
        // against the pixel limit by the caller; this bounds what a decoder allocates
        // besides it, derived from the same limit, so that nothing else in the file can make
        // it allocate more: a GIF frame larger than its logical screen (its frames are
        // decoded as RGBA, 4 bytes a pixel, so no frame may exceed the pixel limit), a huge
        // metadata chunk, a PNG's 16-bit rows.
        let mut limits = image::Limits::default();
        let bytes_per_pixel = if format == ImageFormat::Gif { 4 } else { 8 };
        limits.max_alloc = Some(max_pixels.saturating_mul(bytes_per_pixel).saturating_add(DECODER_OVERHEAD_BYTES));
        decoder.set_limits(limits).map_err(|e| undecodable(format, e))?;
        let (width, height) = decoder.dimensions();
        if width == 0 || height == 0 {
            return Err(ImagingError::Undecodable(format!("the {} header says the image is empty", name(format))));
        }
        // Broken metadata is no reason to refuse an image that decodes: fall back to upright sRGB.
        let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
        let icc_profile = decoder.icc_profile().ok().flatten();
        Ok(Source {
            format,
            size: Size { width, height },
            orientation,
            icc_profile,
            codec: Codec::Image(Box::new(decoder)),
        })
    }

    /// Decodes the pixels (the first frame of an animation) at a size no smaller than
    /// `at_least` in either side (stored orientation), or at full size where the codec
    /// cannot scale.
    pub fn decode(self, at_least: Size) -> Result<Decoded, ImagingError> {
        let pixels = match self.codec {
            Codec::Jpeg { data, mut decompressor, colorspace, adobe } => {
                let scaled = dct_scaled_size(self.size, at_least);
                match decode_jpeg(&mut decompressor, data, scaled, colorspace, adobe) {
                    Ok(pixels) => pixels,
                    // TurboJPEG's one-call API fails on warnings too, e.g. a few stray bytes
                    // in a camera file that every viewer shows. Give such files a second chance
                    // with the more lenient decoder of the image crate.
                    Err(first) => match JpegDecoder::new(Cursor::new(data)).and_then(DynamicImage::from_decoder) {
                        Ok(image) => Pixels::Image(into_rgb_or_rgba(image)),
                        Err(_) => return Err(first),
                    },
                }
            }
            Codec::Image(decoder) => {
                let image = DynamicImage::from_decoder(decoder).map_err(|e| undecodable(self.format, e))?;
                Pixels::Image(into_rgb_or_rgba(image))
            }
        };
        Ok(Decoded { pixels, icc_profile: self.icc_profile })
    }
}

/// The smallest libjpeg-turbo scaling factor n/8 (n = 1..=8) whose output still holds
/// `at_least`, as the decoder will round it (`TJSCALED`: rounded up).
fn dct_scaled_size(full: Size, at_least: Size) -> Size {
    let scale = |side: u32, eighths: u64| (u64::from(side) * eighths).div_ceil(8) as u32;
    (1..=8)
        .map(|eighths| Size { width: scale(full.width, eighths), height: scale(full.height, eighths) })
        .find(|scaled| scaled.contains(at_least))
        .unwrap_or(full)
}

/// Decodes at exactly `scaled`, one of the sizes [`dct_scaled_size`] picks: TurboJPEG uses
/// the largest scaling factor whose output fits the buffer, which is that one.
fn decode_jpeg(
    decompressor: &mut Decompressor,
    data: &[u8],
    scaled: Size,
    colorspace: Colorspace,
    adobe: bool,
) -> Result<Pixels, ImagingError> {
    let cmyk = matches!(colorspace, Colorspace::CMYK | Colorspace::YCCK);
    let format = if cmyk { PixelFormat::CMYK } else { PixelFormat::RGB };
    let (width, height) = (scaled.width as usize, scaled.height as usize);
    let pitch = width * format.size();
    let mut pixels = vec![0u8; pitch * height];
    let output = turbojpeg::Image { pixels: pixels.as_mut_slice(), width, pitch, height, format };
    decompressor.decompress(data, output).map_err(|e| undecodable(ImageFormat::Jpeg, e))?;

    if cmyk {
        if adobe {
            pixels.iter_mut().for_each(|sample| *sample = 255 - *sample);
        }
        return Ok(Pixels::Cmyk(CmykImage { size: scaled, samples: pixels }));
    }
    let image = RgbImage::from_raw(scaled.width, scaled.height, pixels).expect("buffer sized for the image");
    Ok(Pixels::Image(DynamicImage::ImageRgb8(image)))
}

/// Narrows whatever the codec produced to the two layouts the pipeline handles.
fn into_rgb_or_rgba(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => image,
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.into_rgba8()),
        other => DynamicImage::ImageRgb8(other.into_rgb8()),
    }
}

/// Drops an alpha channel that has no transparent pixel, so the image can become a JPEG.
pub(super) fn drop_opaque_alpha(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageRgba8(rgba) if rgba.pixels().all(|p| p[3] == u8::MAX) => {
            let (width, height) = rgba.dimensions();
            let rgb = rgba.into_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
            DynamicImage::ImageRgb8(RgbImage::from_raw(width, height, rgb).expect("3 samples per pixel"))
        }
        other => other,
    }
}

fn dimension(side: usize) -> Result<u32, ImagingError> {
    u32::try_from(side)
        .ok()
        .filter(|&side| side > 0)
        .ok_or_else(|| ImagingError::Undecodable("the JPEG header gives an impossible size".to_owned()))
}

fn name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::Gif => "GIF",
        ImageFormat::Webp => "WebP",
    }
}

/// The message users see in the image's metadata: the format and the codec's own words,
/// cut short. Decoding works on bytes in memory, so no path can appear in it.
fn undecodable(format: ImageFormat, detail: impl std::fmt::Display) -> ImagingError {
    const MAX_DETAIL: usize = 120;
    let detail = detail.to_string();
    let prefix = format!("corrupt {} data: ", name(format));
    let detail = detail.trim().trim_start_matches("TurboJPEG error: ");
    // libjpeg's own messages often start with the words this one starts with.
    let detail = match detail.get(..prefix.len()) {
        Some(start) if start.eq_ignore_ascii_case(&prefix) => &detail[prefix.len()..],
        _ => detail,
    };
    let detail: String = match detail.char_indices().nth(MAX_DETAIL) {
        Some((cut, _)) => format!("{}…", &detail[..cut]),
        None => detail.to_owned(),
    };
    ImagingError::Undecodable(format!("{prefix}{detail}"))
}

#[cfg(test)]
mod tests {
    use image::RgbaImage;

    use super::*;

    fn size(width: u32, height: u32) -> Size {
        Size { width, height }
    }

    #[test]
    fn dct_scaling_picks_the_smallest_factor_that_still_covers_the_need() {
        assert_eq!(dct_scaled_size(size(4032, 3024), size(600, 450)), size(1008, 756));
        assert_eq!(dct_scaled_size(size(1600, 1200), size(600, 450)), size(600, 450));
        assert_eq!(dct_scaled_size(size(1600, 1200), size(601, 450)), size(800, 600));
        assert_eq!(dct_scaled_size(size(4032, 3024), size(100, 75)), size(504, 378));
        // Portrait thumbnails of a landscape-stored phone photo need the height.
        assert_eq!(dct_scaled_size(size(4032, 3024), size(600, 800)), size(1512, 1134));
    }

    #[test]
    fn dct_scaling_never_enlarges_and_rounds_up_like_libjpeg_turbo() {
        assert_eq!(dct_scaled_size(size(100, 80), size(100, 80)), size(100, 80));
        assert_eq!(dct_scaled_size(size(9, 9), size(1, 1)), size(2, 2));
    }

    #[test]
    fn fully_opaque_alpha_is_dropped_and_real_transparency_kept() {
        let opaque = DynamicImage::ImageRgba8(RgbaImage::from_pixel(4, 4, image::Rgba([1, 2, 3, 255])));
        let dropped = drop_opaque_alpha(opaque);
        assert_eq!(dropped.as_rgb8().map(|i| i.get_pixel(3, 3).0), Some([1, 2, 3]));

        let mut translucent = RgbaImage::from_pixel(4, 4, image::Rgba([1, 2, 3, 255]));
        translucent.put_pixel(2, 2, image::Rgba([1, 2, 3, 254]));
        assert!(drop_opaque_alpha(DynamicImage::ImageRgba8(translucent)).as_rgba8().is_some());
    }

    #[test]
    fn undecodable_messages_are_short() {
        let ImagingError::Undecodable(message) = undecodable(ImageFormat::Png, "x".repeat(1000)) else { panic!() };
        assert!(message.chars().count() < 150, "{message}");
        assert!(message.starts_with("corrupt PNG data: xxx"));

        let libjpeg = "TurboJPEG error: Corrupt JPEG data: premature end of data segment";
        let ImagingError::Undecodable(message) = undecodable(ImageFormat::Jpeg, libjpeg) else { panic!() };
        assert_eq!(message, "corrupt JPEG data: premature end of data segment");
    }
}
