//! Tests of the whole pipeline, on images built here and on two committed photos
//! (`shared/benches/images/`, see the README there).

use std::io::Cursor;

use image::codecs::gif::GifEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, ExtendedColorType, Frame, ImageEncoder, Rgb, RgbImage, Rgba, RgbaImage};
use moxcms::{ColorProfile, Layout};

use super::jpeg_segments::read_jpeg_segments;
use super::jpeg_segments::tests::{icc_segment, insert_after_soi, jpeg_with_scans, segment};
use super::*;

const PHOTO_2MP: &[u8] = include_bytes!("../../../benches/images/photo-2mp.jpg");
const PHOTO_WEBP: &[u8] = include_bytes!("../../../benches/images/photo.webp");
const PHOTO_ALPHA_WEBP: &[u8] = include_bytes!("../../../benches/images/photo-alpha.webp");

const LIMIT: u64 = 50_000_000;

fn specs() -> Vec<ThumbnailSpec> {
    [("small", 150), ("medium", 300), ("large", 600)]
        .into_iter()
        .map(|(name, side)| ThumbnailSpec { name: name.to_owned(), width: side, height: side })
        .collect()
}

fn sizes(thumbnails: &[Thumbnail]) -> Vec<(u32, u32)> {
    thumbnails.iter().map(|t| (t.width, t.height)).collect()
}

/// Decodes a thumbnail and checks it says what the struct says.
fn decoded(thumbnail: &Thumbnail) -> DynamicImage {
    let format = ImageFormat::sniff(&thumbnail.bytes);
    assert_eq!(format, Some(thumbnail.format), "{} bytes are not {:?}", thumbnail.name, thumbnail.format);
    let image = image::load_from_memory(&thumbnail.bytes).unwrap();
    assert_eq!((image.width(), image.height()), (thumbnail.width, thumbnail.height));
    image
}

fn jpeg(image: &RgbImage) -> Vec<u8> {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let pixels = turbojpeg::Image {
        pixels: image.as_raw().as_slice(),
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(pixels, 95, turbojpeg::Subsamp::None).unwrap().to_vec()
}

fn png(image: &DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

/// Left half red, right half blue: shows which way an image was turned.
fn red_left_blue_right(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, _| if x < width / 2 { Rgb([230, 20, 20]) } else { Rgb([20, 20, 230]) })
}

fn near(actual: [u8; 3], expected: [u8; 3], tolerance: u8) -> bool {
    actual.iter().zip(expected).all(|(a, e)| a.abs_diff(e) <= tolerance)
}

fn center(image: &DynamicImage) -> [u8; 3] {
    image.to_rgb8().get_pixel(image.width() / 2, image.height() / 2).0
}

/// A big-endian TIFF block as stored in EXIF: IFD0 with the orientation and, when asked, a
/// GPS IFD with a latitude.
fn exif(orientation: u16, with_gps: bool) -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    let entries: u16 = if with_gps { 2 } else { 1 };
    tiff.extend_from_slice(&entries.to_be_bytes());
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]);
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    let gps_ifd = 8 + 2 + 12 * u32::from(entries) + 4;
    if with_gps {
        tiff.extend_from_slice(&[0x88, 0x25, 0, 4, 0, 0, 0, 1]);
        tiff.extend_from_slice(&gps_ifd.to_be_bytes());
    }
    tiff.extend_from_slice(&[0, 0, 0, 0]);
    if with_gps {
        let latitude = gps_ifd + 2 + 12 * 2 + 4;
        tiff.extend_from_slice(&2u16.to_be_bytes());
        tiff.extend_from_slice(&[0, 1, 0, 2, 0, 0, 0, 2, b'N', 0, 0, 0]);
        tiff.extend_from_slice(&[0, 2, 0, 5, 0, 0, 0, 3]);
        tiff.extend_from_slice(&latitude.to_be_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0]);
        for (numerator, denominator) in [(48u32, 1u32), (51, 1), (2953, 100)] {
            tiff.extend_from_slice(&numerator.to_be_bytes());
            tiff.extend_from_slice(&denominator.to_be_bytes());
        }
    }
    tiff
}

fn exif_segment(tiff: &[u8]) -> Vec<u8> {
    segment(0xE1, &[b"Exif\0\0".as_slice(), tiff].concat())
}

fn assert_no_metadata(thumbnail: &Thumbnail) {
    let bytes = &thumbnail.bytes;
    assert!(!bytes.windows(4).any(|w| w == b"Exif" || w == b"eXIf" || w == b"EXIF"), "{} carries EXIF", thumbnail.name);
    assert!(!bytes.windows(4).any(|w| w == b"iCCP" || w == b"ICCP"), "{} carries a profile", thumbnail.name);
    if thumbnail.format == ImageFormat::Jpeg {
        let segments = read_jpeg_segments(bytes);
        assert_eq!((segments.exif, segments.icc_profile), (None, None));
    }
}

#[test]
fn a_camera_jpeg_gives_three_jpeg_thumbnails_in_spec_order() {
    let thumbnails = make_thumbnails(PHOTO_2MP, &specs(), LIMIT).unwrap();
    assert_eq!(sizes(&thumbnails), [(150, 113), (300, 225), (600, 450)]);
    let names: Vec<&str> = thumbnails.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["small", "medium", "large"]);
    for thumbnail in &thumbnails {
        assert_eq!(thumbnail.format, ImageFormat::Jpeg);
        decoded(thumbnail);
        assert_no_metadata(thumbnail);
    }
}

#[test]
fn the_dct_scaled_jpeg_path_keeps_the_picture() {
    // A 1/8-scale decode of a two-colour image must still show both colours where they were.
    let thumbnails = make_thumbnails(&jpeg(&red_left_blue_right(1600, 800)), &specs()[..1], LIMIT).unwrap();
    let image = decoded(&thumbnails[0]).to_rgb8();
    assert_eq!((image.width(), image.height()), (150, 75));
    assert!(near(image.get_pixel(20, 37).0, [230, 20, 20], 6));
    assert!(near(image.get_pixel(130, 37).0, [20, 20, 230], 6));
}

#[test]
fn images_are_never_upscaled() {
    let thumbnails = make_thumbnails(&jpeg(&red_left_blue_right(100, 80)), &specs(), LIMIT).unwrap();
    assert_eq!(sizes(&thumbnails), [(100, 80), (100, 80), (100, 80)]);
    let boxes = [ThumbnailSpec { name: "wide".to_owned(), width: 400, height: 40 }];
    let thumbnails = make_thumbnails(&png(&DynamicImage::new_rgb8(100, 80)), &boxes, LIMIT).unwrap();
    assert_eq!(sizes(&thumbnails), [(50, 40)]);
}

#[test]
fn a_png_with_transparency_gives_webp_thumbnails_that_keep_it() {
    // An opaque red disc on a fully transparent background.
    let source = RgbaImage::from_fn(400, 300, |x, y| {
        let (dx, dy) = (x as f32 - 200.0, y as f32 - 150.0);
        if dx * dx + dy * dy < 100.0 * 100.0 { Rgba([220, 30, 40, 255]) } else { Rgba([0, 0, 0, 0]) }
    });
    let thumbnails = make_thumbnails(&png(&DynamicImage::ImageRgba8(source)), &specs(), LIMIT).unwrap();
    assert_eq!(sizes(&thumbnails), [(150, 113), (300, 225), (400, 300)]);
    for thumbnail in &thumbnails {
        assert_eq!(thumbnail.format, ImageFormat::Webp);
        assert_no_metadata(thumbnail);
        let image = decoded(thumbnail).to_rgba8();
        assert_eq!(image.get_pixel(0, 0)[3], 0, "corner stays transparent");
        assert_eq!(image.get_pixel(image.width() / 2, image.height() / 2).0, [220, 30, 40, 255]);
        // Premultiplied resizing: the soft edge of the disc is red, not darkened towards black.
        for pixel in image.pixels().filter(|p| p[3] >= 32) {
            assert!(pixel[0] >= 200, "dark fringe in {}: {pixel:?}", thumbnail.name);
        }
    }
}

#[test]
fn an_alpha_channel_without_transparency_gives_jpeg() {
    let source = DynamicImage::ImageRgba8(RgbaImage::from_pixel(300, 200, Rgba([10, 120, 200, 255])));
    let thumbnails = make_thumbnails(&png(&source), &specs()[..1], LIMIT).unwrap();
    assert_eq!(thumbnails[0].format, ImageFormat::Jpeg);
    assert!(near(center(&decoded(&thumbnails[0])), [10, 120, 200], 3));
}

#[test]
fn an_animated_gif_gives_its_first_frame() {
    let mut gif = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut gif);
        let frames = [Rgba([200, 20, 20, 255]), Rgba([20, 20, 200, 255])]
            .map(|colour| Frame::new(RgbaImage::from_pixel(320, 240, colour)));
        encoder.encode_frames(frames).unwrap();
    }
    let thumbnails = make_thumbnails(&gif, &specs(), LIMIT).unwrap();
    assert_eq!(sizes(&thumbnails), [(150, 113), (300, 225), (320, 240)]);
    for thumbnail in &thumbnails {
        assert_eq!(thumbnail.format, ImageFormat::Jpeg);
        assert!(near(center(&decoded(thumbnail)), [200, 20, 20], 6), "{}", thumbnail.name);
    }
}

#[test]
fn a_still_gif_with_transparency_keeps_it() {
    let mut source = RgbaImage::from_pixel(200, 100, Rgba([20, 160, 20, 255]));
    (0..100).for_each(|y| (0..20).for_each(|x| source.put_pixel(x, y, Rgba([0, 0, 0, 0]))));
    let mut gif = Vec::new();
    GifEncoder::new(&mut gif).encode_frame(Frame::new(source)).unwrap();
    let thumbnails = make_thumbnails(&gif, &specs()[..1], LIMIT).unwrap();
    assert_eq!(sizes(&thumbnails), [(150, 75)]);
    assert_eq!(thumbnails[0].format, ImageFormat::Webp);
    assert_eq!(decoded(&thumbnails[0]).to_rgba8().get_pixel(0, 40)[3], 0);
}

#[test]
fn lossy_webp_photos_are_thumbnailed() {
    let thumbnails = make_thumbnails(PHOTO_WEBP, &specs(), LIMIT).unwrap();
    assert_eq!(sizes(&thumbnails), [(150, 113), (300, 225), (600, 450)]);
    assert!(thumbnails.iter().all(|t| t.format == ImageFormat::Jpeg));
    thumbnails.iter().for_each(|t| drop(decoded(t)));

    let thumbnails = make_thumbnails(PHOTO_ALPHA_WEBP, &specs()[..1], LIMIT).unwrap();
    assert_eq!(thumbnails[0].format, ImageFormat::Webp);
    assert_eq!(decoded(&thumbnails[0]).to_rgba8().get_pixel(0, 0)[3], 0);
}

#[test]
fn lossless_webp_is_thumbnailed_with_and_without_alpha() {
    let mut rgba = RgbaImage::from_pixel(240, 160, Rgba([30, 90, 200, 255]));
    rgba.put_pixel(0, 0, Rgba([0, 0, 0, 0]));
    let mut webp = Vec::new();
    WebPEncoder::new_lossless(&mut webp).write_image(rgba.as_raw(), 240, 160, ExtendedColorType::Rgba8).unwrap();
    let thumbnails = make_thumbnails(&webp, &specs()[..1], LIMIT).unwrap();
    assert_eq!((sizes(&thumbnails), thumbnails[0].format), (vec![(150, 100)], ImageFormat::Webp));

    let rgb = RgbImage::from_pixel(240, 160, Rgb([30, 90, 200]));
    let mut webp = Vec::new();
    WebPEncoder::new_lossless(&mut webp).write_image(rgb.as_raw(), 240, 160, ExtendedColorType::Rgb8).unwrap();
    let thumbnails = make_thumbnails(&webp, &specs()[..1], LIMIT).unwrap();
    assert_eq!((sizes(&thumbnails), thumbnails[0].format), (vec![(150, 100)], ImageFormat::Jpeg));
    assert!(near(center(&decoded(&thumbnails[0])), [30, 90, 200], 3));
}

#[test]
fn a_phone_jpeg_with_orientation_6_comes_out_portrait_and_upright() {
    // Stored landscape, red on the left; orientation 6 means "turn 90° clockwise to view",
    // after which red is on top.
    let stored = jpeg(&red_left_blue_right(800, 600));
    let phone = insert_after_soi(&stored, &[exif_segment(&exif(6, false))]);
    let thumbnails = make_thumbnails(&phone, &specs(), LIMIT).unwrap();
    assert_eq!(sizes(&thumbnails), [(113, 150), (225, 300), (450, 600)]);
    for thumbnail in &thumbnails {
        let image = decoded(thumbnail);
        let (width, height) = (image.width(), image.height());
        let image = image.to_rgb8();
        assert!(near(image.get_pixel(width / 2, height / 8).0, [230, 20, 20], 8), "{} top", thumbnail.name);
        assert!(near(image.get_pixel(width / 2, height * 7 / 8).0, [20, 20, 230], 8), "{} bottom", thumbnail.name);
    }
}

#[test]
fn orientation_in_png_exif_is_applied_too() {
    let source = DynamicImage::ImageRgb8(red_left_blue_right(400, 200));
    let mut bytes = Vec::new();
    let mut encoder = PngEncoder::new(&mut bytes);
    encoder.set_exif_metadata(exif(8, false)).unwrap();
    source.write_with_encoder(encoder).unwrap();
    let thumbnails = make_thumbnails(&bytes, &specs()[..1], LIMIT).unwrap();
    // Orientation 8 turns 90° counter-clockwise: red ends up at the bottom.
    let image = decoded(&thumbnails[0]).to_rgb8();
    assert_eq!(image.dimensions(), (75, 150));
    assert!(near(image.get_pixel(37, 140).0, [230, 20, 20], 8));
}

#[test]
fn gps_exif_in_the_original_never_reaches_a_thumbnail() {
    let tiff = exif(1, true);
    let photo = insert_after_soi(&jpeg(&red_left_blue_right(640, 480)), &[exif_segment(&tiff)]);
    assert_eq!(read_jpeg_segments(&photo).exif, Some(tiff.as_slice()), "fixture carries EXIF");
    for thumbnail in make_thumbnails(&photo, &specs(), LIMIT).unwrap() {
        assert_no_metadata(&thumbnail);
    }
}

/// A saturated Display P3 green, and what moxcms makes of it in sRGB.
fn p3_colour_and_its_srgb() -> ([u8; 3], [u8; 3]) {
    let p3 = [40u8, 190, 70];
    let executor = ColorProfile::new_display_p3()
        .create_transform_8bit(Layout::Rgb, &ColorProfile::new_srgb(), Layout::Rgb, color::transform_options())
        .unwrap();
    let mut srgb = [0u8; 3];
    executor.transform(&p3, &mut srgb).unwrap();
    assert!(p3.iter().zip(srgb).any(|(a, b)| a.abs_diff(b) >= 12), "P3 {p3:?} and sRGB {srgb:?} must differ");
    (p3, srgb)
}

#[test]
fn a_jpeg_with_a_display_p3_profile_in_two_chunks_is_converted_to_srgb() {
    let (p3, srgb) = p3_colour_and_its_srgb();
    let profile = ColorProfile::new_display_p3().encode().unwrap();
    let (first, second) = profile.split_at(profile.len() / 2);
    let plain = jpeg(&RgbImage::from_pixel(320, 240, Rgb(p3)));
    let tagged = insert_after_soi(&plain, &[icc_segment(1, 2, first), icc_segment(2, 2, second)]);

    for thumbnail in make_thumbnails(&tagged, &specs(), LIMIT).unwrap() {
        let pixel = center(&decoded(&thumbnail));
        assert!(near(pixel, srgb, 3), "{}: {pixel:?}, moxcms says {srgb:?}", thumbnail.name);
        assert_no_metadata(&thumbnail);
    }
    let untagged = make_thumbnails(&plain, &specs()[..1], LIMIT).unwrap();
    assert!(near(center(&decoded(&untagged[0])), p3, 3), "without a profile the values stay as they are");
}

#[test]
fn a_png_with_a_display_p3_profile_is_converted_to_srgb() {
    let (p3, srgb) = p3_colour_and_its_srgb();
    let mut bytes = Vec::new();
    let mut encoder = PngEncoder::new(&mut bytes);
    encoder.set_icc_profile(ColorProfile::new_display_p3().encode().unwrap()).unwrap();
    DynamicImage::ImageRgb8(RgbImage::from_pixel(320, 240, Rgb(p3))).write_with_encoder(encoder).unwrap();
    let thumbnails = make_thumbnails(&bytes, &specs()[..1], LIMIT).unwrap();
    let pixel = center(&decoded(&thumbnails[0]));
    assert!(near(pixel, srgb, 3), "{pixel:?}, moxcms says {srgb:?}");
}

#[test]
fn a_cmyk_jpeg_from_photoshop_is_converted_to_rgb() {
    // Photoshop stores CMYK inverted (255 = no ink) under an Adobe marker, which libjpeg
    // writes for CMYK. Pure cyan ink:
    let inverted_cyan = [0u8, 255, 255, 255].repeat(64 * 48);
    let cmyk = turbojpeg::Image {
        pixels: inverted_cyan.as_slice(),
        width: 64,
        pitch: 256,
        height: 48,
        format: turbojpeg::PixelFormat::CMYK,
    };
    let bytes = turbojpeg::compress(cmyk, 95, turbojpeg::Subsamp::None).unwrap().to_vec();
    assert!(read_jpeg_segments(&bytes).adobe, "fixture has the Adobe marker");
    let thumbnails = make_thumbnails(&bytes, &specs()[..1], LIMIT).unwrap();
    assert!(near(center(&decoded(&thumbnails[0])), [0, 255, 255], 4));
}

#[test]
fn images_over_the_pixel_limit_are_refused_from_the_header() {
    let err = make_thumbnails(&png(&DynamicImage::new_rgb8(100, 100)), &specs(), 9_999).unwrap_err();
    assert!(matches!(err, ImagingError::TooManyPixels { pixels: 10_000, limit: 9_999 }), "{err:?}");

    // A JPEG whose header claims 40000x40000 but holds a few bytes of scan data: refused as
    // too large, which shows the limit is checked before any decoding.
    let mut bomb = jpeg(&RgbImage::new(16, 16));
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bomb[sof + 5..sof + 9].copy_from_slice(&[0x9C, 0x40, 0x9C, 0x40]);
    let err = make_thumbnails(&bomb, &specs(), LIMIT).unwrap_err();
    assert!(matches!(err, ImagingError::TooManyPixels { pixels: 1_600_000_000, .. }), "{err:?}");
}

#[test]
fn garbage_and_corrupt_images_are_undecodable_with_a_short_message() {
    let mut corrupt_png = png(&DynamicImage::ImageRgb8(red_left_blue_right(64, 64)));
    let idat = corrupt_png.windows(4).position(|w| w == b"IDAT").unwrap();
    corrupt_png[idat + 8..idat + 40].fill(0x55);
    let mut corrupt_jpeg = jpeg(&red_left_blue_right(64, 64));
    let sof = corrupt_jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    corrupt_jpeg[sof + 9] = 0; // zero colour components

    let cases: [(&str, &[u8]); 4] = [
        ("garbage", b"this is not an image, just some text"),
        ("empty", b""),
        ("corrupt PNG", &corrupt_png),
        ("corrupt JPEG", &corrupt_jpeg),
    ];
    for (case, bytes) in cases {
        match make_thumbnails(bytes, &specs(), LIMIT) {
            Err(ImagingError::Undecodable(message)) => {
                assert!(!message.is_empty() && message.len() < 200, "{case}: {message}");
                assert!(!message.contains('/'), "{case}: {message}");
            }
            other => panic!("{case}: expected Undecodable, got {other:?}"),
        }
    }
}

#[test]
fn a_jpeg_with_stray_bytes_that_viewers_show_still_gets_thumbnails() {
    // libjpeg-turbo only warns about these ("N extraneous bytes before marker 0xd9"), but its
    // TurboJPEG API reports the warning as a failure; the lenient decoder takes over.
    let mut photo = jpeg(&red_left_blue_right(320, 240));
    let end = photo.len() - 2;
    photo.splice(end..end, [0x5A; 64]);
    let thumbnails = make_thumbnails(&photo, &specs()[..1], LIMIT).unwrap();
    let image = decoded(&thumbnails[0]).to_rgb8();
    assert_eq!(image.dimensions(), (150, 113));
    assert!(near(image.get_pixel(20, 56).0, [230, 20, 20], 8));
}

#[test]
fn no_specs_means_no_thumbnails() {
    assert!(make_thumbnails(PHOTO_2MP, &[], LIMIT).unwrap().is_empty());
}

/// A GIF whose logical screen is `screen` but whose one frame is `frame` (width, height)
/// pixels of one colour: tiny on disk, huge once decoded.
fn gif_with_frame(screen: (u16, u16), frame: (u16, u16)) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = gif::Encoder::new(&mut out, screen.0, screen.1, &[0, 0, 0, 255, 255, 255]).unwrap();
        let pixels = vec![1u8; usize::from(frame.0) * usize::from(frame.1)];
        let frame = gif::Frame { width: frame.0, height: frame.1, buffer: pixels.into(), ..gif::Frame::default() };
        encoder.write_frame(&frame).unwrap();
    }
    out
}

#[test]
fn a_gif_frame_larger_than_the_pixel_limit_is_refused_whatever_its_screen_says() {
    let limit = 1_000_000;
    // 9 million pixels behind a 1×1 screen: 36 MB of RGBA that the canvas check never sees.
    let hostile = gif_with_frame((1, 1), (3000, 3000));
    assert!(hostile.len() < 100_000, "{} bytes", hostile.len());
    let refused = make_thumbnails(&hostile, &specs(), limit);
    assert!(matches!(refused, Err(ImagingError::Undecodable(_))), "{refused:?}");
    // Within the limit, the same trick decodes: the limit is on the frame, not the trick.
    let fits = gif_with_frame((1, 1), (1000, 1000));
    assert!(make_thumbnails(&fits, &specs(), limit).is_ok());
}

#[test]
fn a_jpeg_with_more_scans_than_allowed_is_refused_before_decoding() {
    let refused = make_thumbnails(&jpeg_with_scans(MAX_JPEG_SCANS + 1), &specs(), LIMIT);
    match refused {
        Err(ImagingError::Undecodable(reason)) => assert!(reason.contains("scans"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // At the limit the scan count is no reason to refuse: the decoder judges the bytes.
    match make_thumbnails(&jpeg_with_scans(MAX_JPEG_SCANS), &specs(), LIMIT) {
        Err(ImagingError::Undecodable(reason)) => assert!(!reason.contains("scans"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_timed_pipeline_makes_the_same_thumbnails_and_times_each_stage() {
    let (thumbnails, times) = make_thumbnails_timed(PHOTO_2MP, &specs(), LIMIT).unwrap();
    let plain = make_thumbnails(PHOTO_2MP, &specs(), LIMIT).unwrap();
    assert_eq!(sizes(&thumbnails), sizes(&plain));
    assert!(thumbnails.iter().zip(&plain).all(|(timed, plain)| timed.bytes == plain.bytes), "same bytes");
    for (stage, took) in [("decode", times.decode), ("resize", times.resize), ("encode", times.encode)] {
        assert!(took > Duration::ZERO, "{stage} was timed: {times:?}");
    }
    let (none, untimed) = make_thumbnails_timed(PHOTO_2MP, &[], LIMIT).unwrap();
    assert!(none.is_empty());
    assert_eq!(untimed, StageTimes::default(), "nothing decoded, nothing timed");
}
