//! Converting a stored image to another raster format (PNG, JPEG, WebP), for the URL API's
//! `ext` and for output formats an upstream cannot produce itself.

use std::io::Cursor;

use bytes::Bytes;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

use crate::{Error, Result, ValidatedRequest};

/// A raster format imgproxy can encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RasterFormat {
    /// PNG.
    Png,
    /// JPEG (no alpha: transparent pixels are put on white).
    Jpeg,
    /// Lossless WebP.
    Webp,
}

impl RasterFormat {
    /// `png`, `jpg` / `jpeg` or `webp`.
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "png" => Some(Self::Png),
            "jpg" | "jpeg" => Some(Self::Jpeg),
            "webp" => Some(Self::Webp),
            _ => None,
        }
    }

    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
        }
    }

    /// The file extension (`jpg` for JPEG, as stored keys use it).
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            Self::Png => ImageFormat::Png,
            Self::Jpeg => ImageFormat::Jpeg,
            Self::Webp => ImageFormat::WebP,
        }
    }
}

/// Re-encodes `bytes` (of type `mime`) as `target`, JPEG at `quality` (0–100, default 75;
/// WebP is always lossless). CPU-bound: call it off the async runtime. An input that is not a
/// decodable PNG, JPEG or WebP is a 400 naming `param`.
pub fn convert(
    bytes: &[u8],
    mime: &str,
    target: RasterFormat,
    quality: Option<u8>,
    param: &str,
) -> Result<Bytes> {
    let source = match mime {
        "image/png" => ImageFormat::Png,
        "image/jpeg" => ImageFormat::Jpeg,
        "image/webp" => ImageFormat::WebP,
        other => {
            return Err(Error::invalid_param(
                param,
                format!(
                    "an image of type `{other}` cannot be converted to {}",
                    target.extension()
                ),
            ))
        }
    };
    let decoded = image::load_from_memory_with_format(bytes, source).map_err(|e| {
        Error::invalid_param(
            param,
            format!("the image cannot be decoded for conversion: {e}"),
        )
    })?;
    let encodable = match target {
        RasterFormat::Jpeg => DynamicImage::ImageRgb8(on_white(&decoded)),
        // The lossless WebP encoder takes 8-bit RGB(A) only.
        RasterFormat::Webp if decoded.color().has_alpha() => {
            DynamicImage::ImageRgba8(decoded.to_rgba8())
        }
        RasterFormat::Webp => DynamicImage::ImageRgb8(decoded.to_rgb8()),
        RasterFormat::Png => decoded,
    };
    let mut out = Cursor::new(Vec::new());
    let encoded = match (target, quality) {
        (RasterFormat::Jpeg, Some(quality)) => encodable.write_with_encoder(
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100)),
        ),
        _ => encodable.write_to(&mut out, target.image_format()),
    };
    encoded.map_err(|e| Error::Internal(format!("encoding {}: {e}", target.extension())))?;
    Ok(Bytes::from(out.into_inner()))
}

/// The pixel size of an encoded raster image, read from its header; `None` for SVG or bytes
/// that are not an image.
pub fn dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
}

/// OpenAI's `output_format` name of a MIME type (`png`, `jpeg`, `webp`, `gif`, `svg`).
pub fn format_name(mime: &str) -> Option<&'static str> {
    Some(match mime {
        "image/png" => "png",
        "image/jpeg" => "jpeg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "image/svg+xml" => "svg",
        _ => return None,
    })
}

/// Composites the image over white, so transparent areas do not turn black in a JPEG.
fn on_white(image: &DynamicImage) -> RgbImage {
    let rgba = image.to_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let blend = |c: u8| {
            let (c, a) = (u16::from(c), u16::from(a));
            // Exact integer blend over 255 (white); the result is at most 255.
            u8::try_from((c * a + 255 * (255 - a) + 127) / 255).unwrap_or(u8::MAX)
        };
        Rgb([blend(r), blend(g), blend(b)])
    })
}

/// `image` as the request wants it: converted to its raster `output_format` when the upstream
/// answered in another (SVG and GIF are left as they are: they cannot be converted).
pub async fn deliverable(
    request: &ValidatedRequest,
    image: crate::GeneratedImage,
) -> Result<crate::GeneratedImage> {
    let Some(target) = request.wanted_format() else {
        return Ok(image);
    };
    let convertible = matches!(
        image.mime.as_str(),
        "image/png" | "image/jpeg" | "image/webp"
    );
    if image.mime == target.mime() || !convertible {
        return Ok(image);
    }
    let (source, mime) = (image.bytes.clone(), image.mime.clone());
    let quality = request.wanted_compression();
    // On the bounded CPU pool: a conversion holds a whole decoded image. One that has not
    // started when its request goes away never starts; one that has is a single encode.
    let converted = crate::blocking::run(move |cancel| {
        if cancel.is_cancelled() {
            return Err(Error::Internal("the request went away".into()));
        }
        convert(&source, &mime, target, quality, "output_format")
    })
    .await?
    // Bytes the upstream sent that do not decode are the upstream's fault.
    .map_err(|error| Error::Upstream {
        provider: request.model.provider.clone(),
        message: format!("its image could not be converted: {error}"),
    })?;
    Ok(crate::GeneratedImage {
        bytes: converted,
        mime: target.mime().to_owned(),
        ..image
    })
}

#[cfg(test)]
mod tests {
    use image::{Rgba, RgbaImage};

    use super::*;

    fn png_with_transparency() -> Vec<u8> {
        let image = RgbaImage::from_fn(8, 4, |x, _| {
            if x < 4 {
                Rgba([255, 0, 0, 255])
            } else {
                Rgba([0, 0, 0, 0])
            }
        });
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn converts_between_every_raster_format() {
        let png = png_with_transparency();
        for target in [RasterFormat::Jpeg, RasterFormat::Webp, RasterFormat::Png] {
            let out = convert(&png, "image/png", target, None, "ext").unwrap();
            let format = image::guess_format(&out).unwrap();
            assert_eq!(format, target.image_format());
            let decoded = image::load_from_memory(&out).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (8, 4));
        }
        let jpeg = convert(&png, "image/png", RasterFormat::Jpeg, None, "ext").unwrap();
        let back = convert(&jpeg, "image/jpeg", RasterFormat::Png, None, "ext").unwrap();
        assert_eq!(dimensions(&back), Some((8, 4)));
        assert_eq!(dimensions(b"<svg/>"), None);
        let small = convert(&png, "image/png", RasterFormat::Jpeg, Some(5), "ext").unwrap();
        let large = convert(&png, "image/png", RasterFormat::Jpeg, Some(100), "ext").unwrap();
        assert!(small.len() < large.len());
        assert!(image::load_from_memory(&back).is_ok());
    }

    #[test]
    fn transparency_becomes_white_in_jpeg() {
        let jpeg = convert(
            &png_with_transparency(),
            "image/png",
            RasterFormat::Jpeg,
            None,
            "ext",
        )
        .unwrap();
        let decoded = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        let corner = decoded.get_pixel(7, 0).0;
        assert!(corner.iter().all(|c| *c > 240), "{corner:?}");
    }

    #[test]
    fn svg_and_garbage_are_400s_naming_the_param() {
        let err = convert(b"<svg/>", "image/svg+xml", RasterFormat::Png, None, "ext").unwrap_err();
        assert_eq!((err.status(), err.param()), (400, Some("ext")));
        let err = convert(b"not a png", "image/png", RasterFormat::Jpeg, None, "ext").unwrap_err();
        assert_eq!((err.status(), err.param()), (400, Some("ext")));
        assert_eq!(
            RasterFormat::from_extension("JPEG"),
            Some(RasterFormat::Jpeg)
        );
        assert_eq!(RasterFormat::from_extension("gif"), None);
    }
}
