//! Colour: every thumbnail is sRGB, the colour space browsers assume for an image without a
//! profile, so thumbnails carry no profile and still show the original's colours.
//!
//! An embedded ICC profile (Display P3 from phones, Adobe RGB from cameras, a press profile
//! on a vendor's CMYK catalogue shot) is converted to sRGB with `moxcms`; ignoring it would
//! shift a garment's colour. Images without a profile are taken to be sRGB already and left
//! alone. A profile that cannot be used is logged and the image treated as sRGB, which is
//! what browsers do with it too.

use image::{DynamicImage, RgbImage};
use moxcms::{ColorProfile, DataColorSpace, Layout, RenderingIntent, TransformOptions};

use super::decode::{CmykImage, Decoded, Pixels};

/// The conversion every thumbnail goes through; tests compare against it.
pub(super) fn transform_options() -> TransformOptions {
    // Perceptual: for matrix profiles it equals relative colorimetric; for LUT profiles
    // (press CMYK) it is the intent made for photographs.
    TransformOptions { rendering_intent: RenderingIntent::Perceptual, ..TransformOptions::default() }
}

/// Turns decoded pixels into sRGB RGB8 or RGBA8.
pub(super) fn into_srgb(decoded: Decoded) -> DynamicImage {
    let profile = decoded.icc_profile.as_deref().and_then(|bytes| match ColorProfile::new_from_slice(bytes) {
        Ok(profile) => Some(profile),
        Err(error) => {
            tracing::warn!(%error, "unreadable embedded ICC profile; treating the image as sRGB");
            None
        }
    });
    match decoded.pixels {
        Pixels::Cmyk(cmyk) => {
            let profile = profile.filter(|p| p.color_space == DataColorSpace::Cmyk);
            DynamicImage::ImageRgb8(cmyk_into_srgb(cmyk, profile.as_ref()))
        }
        Pixels::Image(image) => match profile {
            Some(profile) => convert(image, &profile),
            None => image,
        },
    }
}

fn convert(image: DynamicImage, profile: &ColorProfile) -> DynamicImage {
    let converted = match (&image, profile.color_space) {
        (DynamicImage::ImageRgb8(_), DataColorSpace::Rgb) => transform(&image, profile, Layout::Rgb, Layout::Rgb),
        (DynamicImage::ImageRgba8(_), DataColorSpace::Rgb) => transform(&image, profile, Layout::Rgba, Layout::Rgba),
        (_, DataColorSpace::Gray) => gray_into_srgb(&image, profile),
        (_, other) => Err(format!("{other:?} profile on an RGB image")),
    };
    match converted {
        Ok(converted) => converted,
        Err(error) => {
            tracing::warn!(%error, "embedded ICC profile not applied; treating the image as sRGB");
            image
        }
    }
}

fn transform(image: &DynamicImage, profile: &ColorProfile, from: Layout, to: Layout) -> Result<DynamicImage, String> {
    let srgb = ColorProfile::new_srgb();
    let executor = profile.create_transform_8bit(from, &srgb, to, transform_options()).map_err(|e| e.to_string())?;
    let mut out = vec![0u8; image.as_bytes().len()];
    executor.transform(image.as_bytes(), &mut out).map_err(|e| e.to_string())?;
    let (width, height) = (image.width(), image.height());
    Ok(match to {
        Layout::Rgba => DynamicImage::ImageRgba8(image::RgbaImage::from_raw(width, height, out).expect("same size")),
        _ => DynamicImage::ImageRgb8(RgbImage::from_raw(width, height, out).expect("same size")),
    })
}

/// Greyscale arrives widened to RGB (R = G = B); a grey profile maps each of the 256 levels
/// to one sRGB colour, so one small table converts the whole image.
fn gray_into_srgb(image: &DynamicImage, profile: &ColorProfile) -> Result<DynamicImage, String> {
    let srgb = ColorProfile::new_srgb();
    let executor = profile
        .create_transform_8bit(Layout::Gray, &srgb, Layout::Rgb, transform_options())
        .map_err(|e| e.to_string())?;
    let levels: Vec<u8> = (0..=u8::MAX).collect();
    let mut table = vec![0u8; 256 * 3];
    executor.transform(&levels, &mut table).map_err(|e| e.to_string())?;
    let mut image = image.clone();
    let channels = usize::from(image.color().channel_count());
    let bytes = match &mut image {
        DynamicImage::ImageRgb8(rgb) => &mut **rgb,
        DynamicImage::ImageRgba8(rgba) => &mut **rgba,
        _ => return Err("unexpected pixel layout".to_owned()),
    };
    for pixel in bytes.chunks_exact_mut(channels) {
        let level = usize::from(pixel[0]) * 3;
        pixel[..3].copy_from_slice(&table[level..level + 3]);
    }
    Ok(image)
}

/// Converts CMYK (0 = no ink) to sRGB through the embedded press profile, or without one by
/// the naive ink formula every viewer falls back to.
fn cmyk_into_srgb(cmyk: CmykImage, profile: Option<&ColorProfile>) -> RgbImage {
    let (width, height) = (cmyk.size.width, cmyk.size.height);
    if let Some(profile) = profile {
        let srgb = ColorProfile::new_srgb();
        // moxcms takes 4-channel CMYK in the RGBA layout.
        match profile.create_transform_8bit(Layout::Rgba, &srgb, Layout::Rgb, transform_options()) {
            Ok(executor) => {
                let mut out = vec![0u8; cmyk.samples.len() / 4 * 3];
                match executor.transform(&cmyk.samples, &mut out) {
                    Ok(()) => return RgbImage::from_raw(width, height, out).expect("3 samples per pixel"),
                    Err(error) => tracing::warn!(%error, "CMYK profile not applied; using the naive conversion"),
                }
            }
            Err(error) => tracing::warn!(%error, "CMYK profile not applied; using the naive conversion"),
        }
    }
    let rgb = cmyk
        .samples
        .chunks_exact(4)
        .flat_map(|p| {
            let white = u32::from(255 - p[3]);
            let ink = |c: u8| ((u32::from(255 - c) * white + 127) / 255) as u8;
            [ink(p[0]), ink(p[1]), ink(p[2])]
        })
        .collect();
    RgbImage::from_raw(width, height, rgb).expect("3 samples per pixel")
}

#[cfg(test)]
mod tests {
    use image::Rgb;

    use super::super::resize::Size;
    use super::*;

    fn decoded(pixels: Pixels, icc_profile: Option<Vec<u8>>) -> Decoded {
        Decoded { pixels, icc_profile }
    }

    #[test]
    fn images_without_a_profile_are_left_untouched() {
        let image = DynamicImage::ImageRgb8(RgbImage::from_pixel(2, 2, Rgb([10, 200, 30])));
        let out = into_srgb(decoded(Pixels::Image(image.clone()), None));
        assert_eq!(out, image);
    }

    #[test]
    fn an_unreadable_profile_leaves_the_image_as_it_is() {
        let image = DynamicImage::ImageRgb8(RgbImage::from_pixel(2, 2, Rgb([10, 200, 30])));
        let out = into_srgb(decoded(Pixels::Image(image.clone()), Some(b"not a profile".to_vec())));
        assert_eq!(out, image);
    }

    #[test]
    fn a_grey_profile_maps_every_level_through_the_profile() {
        let profile = ColorProfile::new_gray_with_gamma(1.0);
        let image = DynamicImage::ImageRgb8(RgbImage::from_pixel(2, 2, Rgb([128, 128, 128])));
        let out = into_srgb(decoded(Pixels::Image(image), Some(profile.encode().unwrap())));
        let pixel = out.as_rgb8().unwrap().get_pixel(1, 1).0;
        // Linear 50% grey is sRGB level ~188.
        assert!(pixel.iter().all(|&c| (185..=191).contains(&c)), "{pixel:?}");
    }

    #[test]
    fn cmyk_without_a_profile_uses_the_ink_formula() {
        let samples = [0, 0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 255, 0, 255, 255, 0].to_vec();
        let cmyk = CmykImage { size: Size { width: 4, height: 1 }, samples };
        let out = into_srgb(decoded(Pixels::Cmyk(cmyk), None));
        let pixels: Vec<[u8; 3]> = out.as_rgb8().unwrap().pixels().map(|p| p.0).collect();
        assert_eq!(pixels, [[255, 255, 255], [0, 255, 255], [0, 0, 0], [255, 0, 0]]);
    }
}
