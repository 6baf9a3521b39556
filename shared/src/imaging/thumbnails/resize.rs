//! Resizing: the size of each thumbnail and the resampling that produces it.
//!
//! Sizes fit inside their box with the aspect ratio kept and are never larger than the
//! source. Resampling uses `fast_image_resize` with a Lanczos3 filter. Several sizes are
//! made as libvips does: each from the smallest image already made that is at least as
//! large, so 150 comes from 300 which comes from 600, instead of three passes over the
//! original.

use fast_image_resize::{FilterType, MulDiv, ResizeAlg, ResizeOptions, Resizer};
use image::DynamicImage;

use crate::imaging::ImagingError;

/// Width and height in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    /// The smallest size that holds both.
    pub fn union(self, other: Size) -> Size {
        Size { width: self.width.max(other.width), height: self.height.max(other.height) }
    }

    pub fn contains(self, other: Size) -> bool {
        self.width >= other.width && self.height >= other.height
    }

    pub fn pixels(self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    fn of(image: &DynamicImage) -> Size {
        Size { width: image.width(), height: image.height() }
    }
}

/// The largest size with `image`'s aspect ratio that fits inside `bounds`, or `image` itself
/// when it already fits (thumbnails are never upscaled). No side drops below 1 pixel.
pub(super) fn fit_inside(image: Size, bounds: Size) -> Size {
    if bounds.contains(image) {
        return image;
    }
    let (w, h) = (u64::from(image.width), u64::from(image.height));
    let (bw, bh) = (u64::from(bounds.width.max(1)), u64::from(bounds.height.max(1)));
    // Cross-multiplied in integers: the width is the limit when w/h >= bw/bh.
    let (width, height) = if w * bh >= h * bw { (bw, (h * bw + w / 2) / w) } else { ((w * bh + h / 2) / h, bh) };
    // Both results are at most the original sides, which are u32.
    Size { width: width.max(1) as u32, height: height.max(1) as u32 }
}

/// Resizes `source` (RGB8 or RGBA8) to every size in `sizes`, returned in the same order.
///
/// Images with alpha are resized premultiplied: otherwise the colour of fully transparent
/// pixels (often black) bleeds into the visible edge as a dark fringe. They are
/// premultiplied once, stay premultiplied through the whole cascade, and each result is
/// divided back once. A size equal to the source's (a small original, never upscaled) is
/// the source itself, untouched by that round trip, which is lossy where alpha is low.
pub(super) fn resize_all(mut source: DynamicImage, sizes: &[Size]) -> Result<Vec<DynamicImage>, ImagingError> {
    let source_size = Size::of(&source);
    let mut made: Vec<Option<DynamicImage>> =
        sizes.iter().map(|&size| (size == source_size).then(|| source.clone())).collect();
    // Largest first, so every later size can start from an earlier result.
    let mut to_resize: Vec<usize> = (0..sizes.len()).filter(|&i| made[i].is_none()).collect();
    to_resize.sort_by_key(|&i| std::cmp::Reverse(sizes[i].pixels()));

    let mul_div = MulDiv::new();
    let has_alpha = source.color().has_alpha();
    if has_alpha && !to_resize.is_empty() {
        mul_div.multiply_alpha_inplace(&mut source).map_err(resize_failed)?;
    }
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)).use_alpha(false);
    let mut resizer = Resizer::new();
    let mut resized: Vec<(usize, DynamicImage)> = Vec::with_capacity(to_resize.len());
    for i in to_resize {
        let target = sizes[i];
        let from = resized
            .iter()
            .map(|(_, image)| image)
            .filter(|image| Size::of(image).contains(target))
            .min_by_key(|image| Size::of(image).pixels())
            .unwrap_or(&source);
        let image = if Size::of(from) == target {
            from.clone()
        } else {
            let mut image = DynamicImage::new(target.width, target.height, source.color());
            resizer.resize(from, &mut image, &options).map_err(resize_failed)?;
            image
        };
        resized.push((i, image));
    }

    for (i, mut image) in resized {
        if has_alpha {
            mul_div.divide_alpha_inplace(&mut image).map_err(resize_failed)?;
        }
        made[i] = Some(image);
    }
    Ok(made.into_iter().map(|image| image.expect("every size was made")).collect())
}

fn resize_failed(error: impl std::fmt::Display) -> ImagingError {
    ImagingError::Encode(format!("resizing failed: {error}"))
}

#[cfg(test)]
mod tests {
    use image::{Rgba, RgbaImage};

    use super::*;

    fn size(width: u32, height: u32) -> Size {
        Size { width, height }
    }

    #[test]
    fn fitting_keeps_the_aspect_ratio_inside_the_box() {
        assert_eq!(fit_inside(size(4032, 3024), size(600, 600)), size(600, 450));
        assert_eq!(fit_inside(size(3024, 4032), size(600, 600)), size(450, 600));
        assert_eq!(fit_inside(size(1600, 1200), size(300, 100)), size(133, 100));
        assert_eq!(fit_inside(size(1000, 1000), size(150, 300)), size(150, 150));
    }

    #[test]
    fn fitting_never_upscales() {
        assert_eq!(fit_inside(size(100, 80), size(150, 150)), size(100, 80));
        assert_eq!(fit_inside(size(150, 150), size(150, 150)), size(150, 150));
    }

    #[test]
    fn fitting_extreme_shapes_keeps_at_least_one_pixel() {
        assert_eq!(fit_inside(size(10_000, 1), size(150, 150)), size(150, 1));
        assert_eq!(fit_inside(size(1, 10_000), size(150, 150)), size(1, 150));
    }

    #[test]
    fn cascaded_sizes_come_out_in_the_requested_order() {
        let source = DynamicImage::new_rgb8(1200, 900);
        let sizes = [size(150, 113), size(600, 450), size(300, 225), size(600, 450)];
        let made = resize_all(source, &sizes).unwrap();
        let got: Vec<Size> = made.iter().map(Size::of).collect();
        assert_eq!(got, sizes);
    }

    #[test]
    fn a_source_that_needs_no_resizing_keeps_its_exact_pixels() {
        let mut source = RgbaImage::from_pixel(40, 30, Rgba([200, 100, 50, 255]));
        source.put_pixel(3, 3, Rgba([201, 99, 47, 3])); // barely visible: premultiplying would lose it
        let sizes = [size(40, 30), size(20, 15), size(40, 30)];
        let made = resize_all(DynamicImage::ImageRgba8(source.clone()), &sizes).unwrap();
        assert_eq!(made[0].as_rgba8(), Some(&source));
        assert_eq!(made[2].as_rgba8(), Some(&source));
        assert_eq!(Size::of(&made[1]), size(20, 15));
    }

    #[test]
    fn transparent_pixels_do_not_darken_visible_edges() {
        // Left half opaque white, right half fully transparent black.
        let source = RgbaImage::from_fn(64, 64, |x, _| if x < 32 { Rgba([255; 4]) } else { Rgba([0; 4]) });
        let made = resize_all(DynamicImage::ImageRgba8(source), &[size(16, 16)]).unwrap();
        let made = made[0].to_rgba8();
        for pixel in made.pixels().filter(|p| p[3] > 16) {
            assert!(pixel[0] >= 250, "edge pixel darkened: {pixel:?}");
        }
    }
}
