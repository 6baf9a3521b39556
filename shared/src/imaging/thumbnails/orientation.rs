//! EXIF orientation: which way up a stored image is meant to be seen.
//!
//! Cameras and phones store the sensor's pixels as they came and record the turn in EXIF
//! (a phone held upright writes orientation 6). Thumbnails carry no EXIF, so the turn has to
//! be baked into their pixels. The pipeline resizes in stored orientation (where the decoder
//! works) and turns each finished thumbnail, which is cheaper than turning the original.

use image::DynamicImage;
use image::metadata::Orientation;

use super::resize::Size;

/// The orientation recorded in a raw EXIF (TIFF) block; upright when absent or invalid.
pub(super) fn from_exif(tiff: Option<&[u8]>) -> Orientation {
    tiff.and_then(Orientation::from_exif_chunk).unwrap_or(Orientation::NoTransforms)
}

/// True when the orientation turns the image a quarter, so width and height trade places.
pub(super) fn swaps_sides(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    )
}

/// Converts a size between stored and upright orientation (the swap is its own inverse).
pub(super) fn turn_size(orientation: Orientation, size: Size) -> Size {
    if swaps_sides(orientation) { Size { width: size.height, height: size.width } } else { size }
}

/// Turns stored pixels upright.
pub(super) fn make_upright(mut image: DynamicImage, orientation: Orientation) -> DynamicImage {
    image.apply_orientation(orientation);
    image
}

#[cfg(test)]
mod tests {
    use image::{Rgb, RgbImage};

    use super::*;

    /// A 3x2 image whose pixels are numbered 1..=6 row by row in their red channel.
    fn numbered() -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(3, 2, |x, y| Rgb([(1 + x + 3 * y) as u8, 0, 0])))
    }

    fn rows(image: &DynamicImage) -> Vec<Vec<u8>> {
        let image = image.to_rgb8();
        (0..image.height()).map(|y| (0..image.width()).map(|x| image.get_pixel(x, y)[0]).collect()).collect()
    }

    /// The stored image is
    /// ```text
    /// 1 2 3
    /// 4 5 6
    /// ```
    /// and each EXIF value names how it must be turned to be seen upright (TIFF 6.0, tag 274).
    #[test]
    fn every_exif_orientation_is_turned_upright() {
        let expected: [(u8, Vec<Vec<u8>>); 8] = [
            (1, vec![vec![1, 2, 3], vec![4, 5, 6]]),
            (2, vec![vec![3, 2, 1], vec![6, 5, 4]]),
            (3, vec![vec![6, 5, 4], vec![3, 2, 1]]),
            (4, vec![vec![4, 5, 6], vec![1, 2, 3]]),
            (5, vec![vec![1, 4], vec![2, 5], vec![3, 6]]),
            (6, vec![vec![4, 1], vec![5, 2], vec![6, 3]]),
            (7, vec![vec![6, 3], vec![5, 2], vec![4, 1]]),
            (8, vec![vec![3, 6], vec![2, 5], vec![1, 4]]),
        ];
        for (exif_value, upright) in expected {
            let orientation = Orientation::from_exif(exif_value).unwrap();
            let turned = make_upright(numbered(), orientation);
            assert_eq!(rows(&turned), upright, "orientation {exif_value}");
            let size = turn_size(orientation, Size { width: 3, height: 2 });
            assert_eq!((size.width, size.height), (turned.width(), turned.height()), "orientation {exif_value}");
        }
    }

    #[test]
    fn missing_or_broken_exif_means_upright() {
        assert_eq!(from_exif(None), Orientation::NoTransforms);
        assert_eq!(from_exif(Some(b"MM\0*garbage")), Orientation::NoTransforms);
    }
}
