//! Drawing and encoding of placeholder images: a gradient (or transparent) background with a
//! few discs and a band, colours and layout taken from a hash of prompt, seed and index.

use std::io::{Cursor, Write as _};

use image::{
    codecs::{jpeg::JpegEncoder, webp::WebPEncoder},
    ExtendedColorType, ImageEncoder, ImageError, Rgba,
};
use imgproxy_core::dimensions::Size;
use sha2::{Digest, Sha256};

/// Output encodings the placeholder makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PNG.
    Png,
    /// Baseline JPEG.
    Jpeg,
    /// Lossless WebP.
    WebP,
}

impl Format {
    /// The format named by an `output_format` value.
    pub fn from_param(name: &str) -> Option<Self> {
        match name {
            "png" => Some(Self::Png),
            "jpeg" | "jpg" => Some(Self::Jpeg),
            "webp" => Some(Self::WebP),
            _ => None,
        }
    }

    /// The `output_format` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::WebP => "webp",
        }
    }

    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::WebP => "image/webp",
        }
    }
}

/// Whether the background is drawn or left transparent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Background {
    /// A gradient.
    Opaque,
    /// Fully transparent (PNG and WebP only).
    Transparent,
}

impl Background {
    /// The `background` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Opaque => "opaque",
            Self::Transparent => "transparent",
        }
    }
}

/// One image to render: image `index` of the request for `prompt` and `seed`, `size`
/// pixels on `background`, encoded as `format` (JPEG at `jpeg_quality`, 1–100; default 90).
#[derive(Debug, Clone, Copy)]
pub struct Picture<'a> {
    /// What the image is derived from (with the seed and the index).
    pub prompt: &'a str,
    /// The request's seed; `None` draws the same as a fixed "no seed".
    pub seed: Option<i64>,
    /// The image's index in the request.
    pub index: u32,
    /// Its size.
    pub size: Size,
    /// Its encoding.
    pub format: Format,
    /// Opaque or transparent (JPEG is always opaque).
    pub background: Background,
    /// The JPEG quality.
    pub jpeg_quality: Option<u8>,
}

/// Renders `picture`.
pub fn render(picture: &Picture<'_>) -> Result<Vec<u8>, ImageError> {
    Ok(render_until(picture, &|| false)?.unwrap_or_default())
}

/// Rows drawn between two looks at the cancellation flag: a few milliseconds of work even for
/// the widest image, so a cancelled render stops well within a second.
const ROWS_PER_CHECK: u32 = 16;

/// [`render`], giving up (`Ok(None)`) as soon as `cancelled` says so, between rows and
/// before encoding. The pixels are drawn straight into the encoder's layout (RGB, or RGBA
/// when transparent), so a render holds one copy of the raw image and its encoding.
pub fn render_until(
    picture: &Picture<'_>,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<Vec<u8>>, ImageError> {
    let Picture {
        prompt,
        seed,
        index,
        size,
        format,
        background,
        jpeg_quality,
    } = *picture;
    let mut hasher = Sha256::new();
    hasher.update(prompt.as_bytes());
    hasher.update(seed.map_or([0xFF; 8], i64::to_le_bytes));
    hasher.update(index.to_le_bytes());
    let hash: [u8; 32] = hasher.finalize().into();
    let transparent = background == Background::Transparent && format != Format::Jpeg;
    let color = if transparent {
        ExtendedColorType::Rgba8
    } else {
        ExtendedColorType::Rgb8
    };
    let Some(bytes) = draw(&hash, size, background, transparent, cancelled) else {
        return Ok(None);
    };
    if cancelled() {
        return Ok(None);
    }
    let mut out = Cursor::new(Vec::new());
    let (width, height) = (size.width, size.height);
    match format {
        Format::Png => {
            if !encode_png(&mut out, &bytes, size, transparent, cancelled)? {
                return Ok(None);
            }
        }
        Format::Jpeg => {
            JpegEncoder::new_with_quality(&mut out, jpeg_quality.unwrap_or(90).clamp(1, 100))
                .write_image(&bytes, width, height, color)?
        }
        Format::WebP => {
            WebPEncoder::new_lossless(&mut out).write_image(&bytes, width, height, color)?
        }
    }
    Ok(Some(out.into_inner()))
}

/// Encodes `bytes` as a PNG into `out`, band by band so that a cancellation stops it between
/// bands too (encoding takes longer than drawing); `false` if it was cancelled.
fn encode_png(
    out: &mut Cursor<Vec<u8>>,
    bytes: &[u8],
    size: Size,
    alpha: bool,
    cancelled: &dyn Fn() -> bool,
) -> Result<bool, ImageError> {
    let failed = |e: png::EncodingError| ImageError::IoError(e.into());
    let mut encoder = png::Encoder::new(out, size.width, size.height);
    encoder.set_color(if alpha {
        png::ColorType::Rgba
    } else {
        png::ColorType::Rgb
    });
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    encoder.set_filter(png::Filter::Adaptive);
    let mut writer = encoder.write_header().map_err(failed)?;
    let mut stream = writer.stream_writer().map_err(failed)?;
    let row = size.width as usize * if alpha { 4 } else { 3 };
    for band in bytes.chunks(row * ROWS_PER_CHECK as usize * 4) {
        if cancelled() {
            return Ok(false);
        }
        stream.write_all(band).map_err(ImageError::IoError)?;
    }
    stream.finish().map_err(failed)?;
    writer.finish().map_err(failed)?;
    Ok(true)
}

/// The raw pixels, row after row, 4 bytes a pixel when `alpha` else 3; `None` if cancelled.
fn draw(
    hash: &[u8; 32],
    size: Size,
    background: Background,
    alpha: bool,
    cancelled: &dyn Fn() -> bool,
) -> Option<Vec<u8>> {
    let color = |i: usize| Rgba([hash[i], hash[i + 1], hash[i + 2], 255]);
    let (from, to, band) = (color(0), color(3), color(6));
    let (w, h) = (size.width, size.height);
    let scale = w.min(h);
    // Three discs whose centre and radius come from the hash.
    let discs: Vec<(i64, i64, i64, Rgba<u8>)> = (0..3)
        .map(|k| {
            let b = &hash[9 + k * 4..13 + k * 4];
            let cx = i64::from(u32::from(b[0]) * w / 255);
            let cy = i64::from(u32::from(b[1]) * h / 255);
            let r = i64::from(scale / 10 + u32::from(b[2]) * scale / 1024);
            (cx, cy, r * r, Rgba([b[3], b[2], b[1], 255]))
        })
        .collect();
    let band_at = u32::from(hash[30]) * h / 255;
    let band_half = (scale / 32).max(1);
    let pixel = |x: u32, y: u32| -> Rgba<u8> {
        for &(cx, cy, r2, c) in &discs {
            let (dx, dy) = (i64::from(x) - cx, i64::from(y) - cy);
            if dx * dx + dy * dy <= r2 {
                return c;
            }
        }
        if y.abs_diff(band_at) <= band_half {
            return band;
        }
        match background {
            Background::Transparent => Rgba([0, 0, 0, 0]),
            Background::Opaque => {
                let t = (u64::from(x) + u64::from(y)) * 255 / (u64::from(w) + u64::from(h)).max(1);
                let mix = |a: u8, b: u8| {
                    let v = (u64::from(a) * (255 - t) + u64::from(b) * t) / 255;
                    u8::try_from(v).unwrap_or(u8::MAX)
                };
                Rgba([
                    mix(from[0], to[0]),
                    mix(from[1], to[1]),
                    mix(from[2], to[2]),
                    255,
                ])
            }
        }
    };
    let channels = if alpha { 4 } else { 3 };
    let mut bytes = Vec::with_capacity(w as usize * h as usize * channels);
    for y in 0..h {
        if y % ROWS_PER_CHECK == 0 && cancelled() {
            return None;
        }
        for x in 0..w {
            bytes.extend_from_slice(&pixel(x, y).0[..channels]);
        }
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_cancelled_render_stops_between_rows() {
        let size = Size {
            width: 256,
            height: 256,
        };
        let checks = Cell::new(0);
        // Cancelled at the third look: well before the last row.
        let cancelled = || {
            checks.set(checks.get() + 1);
            checks.get() >= 3
        };
        let picture = Picture {
            prompt: "p",
            seed: Some(1),
            index: 0,
            size,
            format: Format::Png,
            background: Background::Opaque,
            jpeg_quality: None,
        };
        let rendered = render_until(&picture, &cancelled).unwrap();
        assert!(rendered.is_none());
        assert_eq!(checks.get(), 3);
        let whole = render(&picture).unwrap();
        let decoded = image::load_from_memory(&whole).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (256, 256));
    }
}
