//! `imgproxy-provider-placeholder`: an offline provider that draws real PNG, JPEG or WebP
//! images of the requested size, deterministic from prompt, reference images and seed (and,
//! like a real model, different on every call without a seed). It is the default model of an
//! unconfigured server and serves tests and benchmarks.

mod render;

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use imgproxy_core::{
    blocking, dimensions::Size, provider::ImageMeta, GeneratedImage, Generation, ImageProvider,
    ProviderError, ProviderRequest,
};

pub use render::{render, render_until, Background, Format, Picture};

/// The provider name catalog entries use.
pub const PROVIDER_ID: &str = "placeholder";

/// Size used when a request gives none.
const DEFAULT_SIZE: Size = Size {
    width: 1024,
    height: 1024,
};

/// Renders given up because their request went away, since the process started.
static CANCELLED_RENDERS: AtomicU64 = AtomicU64::new(0);

/// How many renders were given up because their request went away, since the process started.
pub fn cancelled_renders() -> u64 {
    CANCELLED_RENDERS.load(Ordering::Relaxed)
}

/// The placeholder provider.
#[derive(Debug, Clone, Default)]
pub struct PlaceholderProvider;

impl PlaceholderProvider {
    /// A placeholder provider.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl ImageProvider for PlaceholderProvider {
    fn name(&self) -> &str {
        PROVIDER_ID
    }

    async fn generate(&self, call: ProviderRequest<'_>) -> Result<Generation, ProviderError> {
        let request = call.request;
        let size = request.pixel_size(DEFAULT_SIZE, 8);
        let format = Format::from_param(request.param_str("output_format").unwrap_or("png"))
            .ok_or(ProviderError::Unsupported {
                feature: "this output_format",
            })?;
        let background = match request.param_str("background") {
            Some("transparent") => Background::Transparent,
            _ => Background::Opaque,
        };
        let quality = request
            .param_i64("output_compression")
            .and_then(|q| u8::try_from(q).ok());
        // Without a seed every call draws a new image, as a real model's would: that is what
        // makes a `reroll` visible.
        let seed = request.param_i64("seed").unwrap_or_else(random_seed);
        let mut basis = request.prompt.clone();
        for reference in call.references {
            basis.push('\0');
            basis.push_str(&hex_digest(&reference.bytes));
        }
        // One image at a time on the bounded CPU pool (which runs one job per CPU across all
        // requests): each holds a whole raw image while it is drawn and encoded. Dropping this
        // future (the client left) cancels the image being drawn and never starts the rest.
        let mut images = Vec::with_capacity(call.n as usize);
        for index in call.first_index..call.first_index + call.n {
            let prompt = basis.clone();
            let rendered = blocking::run(move |cancel| {
                let cancelled = || cancel.is_cancelled();
                let picture = Picture {
                    prompt: &prompt,
                    seed: Some(seed),
                    index,
                    size,
                    format,
                    background,
                    jpeg_quality: quality,
                };
                let rendered = render_until(&picture, &cancelled);
                if let Ok(None) = rendered {
                    // Logged here, on the pool: the future that awaited this job is gone. The
                    // line and the counter are how an operator (and the tests) see it stop.
                    let total = CANCELLED_RENDERS.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::info!(
                        index,
                        total,
                        "placeholder rendering cancelled: the request went away"
                    );
                }
                rendered
            })
            .await
            .map_err(|e| ProviderError::Failed {
                message: format!("render task failed: {e}"),
            })?
            .map_err(|e| ProviderError::Failed {
                message: format!("encoding failed: {e}"),
            })?;
            // Only a dropped request cancels, and then nobody awaits this any more.
            let Some(bytes) = rendered else {
                return Err(ProviderError::Failed {
                    message: "rendering was cancelled".into(),
                });
            };
            images.push(GeneratedImage {
                bytes: Bytes::from(bytes),
                mime: format.mime().to_owned(),
                revised_prompt: None,
            });
        }
        Ok(Generation {
            images,
            usage: None,
            meta: ImageMeta {
                background: Some(background.name().to_owned()),
                output_format: Some(format.name().to_owned()),
                quality: request.param_str("quality").map(str::to_owned),
                size: Some(size.to_string()),
            },
        })
    }
}

/// A seed from the standard library's randomly keyed hasher: no extra dependency, and random
/// enough for a placeholder.
fn random_seed() -> i64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let hasher = std::collections::hash_map::RandomState::new().build_hasher();
    i64::from_le_bytes(hasher.finish().to_le_bytes())
}

fn hex_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use base64::Engine as _;
    use imgproxy_core::{Catalog, Gateway, ImageRequest};
    use serde_json::json;

    use super::*;

    fn gateway() -> Gateway {
        Gateway::builder(Catalog::embedded().unwrap())
            .provider(Arc::new(PlaceholderProvider::new()))
            .build()
    }

    async fn images(body: serde_json::Value) -> Vec<image::DynamicImage> {
        let request: ImageRequest = serde_json::from_value(body).unwrap();
        let response = gateway().generate(request).await.unwrap();
        response
            .data
            .iter()
            .map(|d| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(d.b64_json.as_ref().unwrap())
                    .unwrap();
                image::load_from_memory(&bytes).unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn n_images_of_the_requested_size_are_distinct() {
        let imgs = images(json!({"prompt": "otter", "n": 3, "size": "512x256"})).await;
        assert_eq!(imgs.len(), 3);
        for img in &imgs {
            assert_eq!((img.width(), img.height()), (512, 256));
        }
        assert_ne!(imgs[0].as_bytes(), imgs[1].as_bytes());
        assert_ne!(imgs[1].as_bytes(), imgs[2].as_bytes());
    }

    #[tokio::test]
    async fn same_prompt_and_seed_give_the_same_image() {
        let a = images(json!({"prompt": "otter", "seed": 7, "size": "256x256"})).await;
        let b = images(json!({"prompt": "otter", "seed": 7, "size": "256x256"})).await;
        let c = images(json!({"prompt": "otter", "seed": 8, "size": "256x256"})).await;
        assert_eq!(a[0].as_bytes(), b[0].as_bytes());
        assert_ne!(a[0].as_bytes(), c[0].as_bytes());
    }

    #[tokio::test]
    async fn aspect_ratio_and_image_size_set_the_dimensions() {
        let imgs =
            images(json!({"prompt": "p", "aspect_ratio": "16:9", "image_size": "512"})).await;
        assert_eq!((imgs[0].width(), imgs[0].height()), (512, 288));
    }

    #[tokio::test]
    async fn formats_and_transparency() {
        for (format, expected) in [
            ("jpeg", image::ImageFormat::Jpeg),
            ("webp", image::ImageFormat::WebP),
            ("png", image::ImageFormat::Png),
        ] {
            let request: ImageRequest = serde_json::from_value(
                json!({"prompt": "p", "size": "64x64", "output_format": format}),
            )
            .unwrap();
            let response = gateway().generate(request).await.unwrap();
            assert_eq!(response.meta.output_format.as_deref(), Some(format));
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(response.data[0].b64_json.as_ref().unwrap())
                .unwrap();
            assert_eq!(image::guess_format(&bytes).unwrap(), expected);
        }
        for format in ["png", "webp"] {
            let imgs = images(json!({"prompt": "p", "size": "64x64", "output_format": format, "background": "transparent"})).await;
            let rgba = imgs[0].to_rgba8();
            assert!(imgs[0].color().has_alpha());
            // Discs and a band are drawn at random places; the rest is see-through.
            let clear = rgba.pixels().filter(|p| p[3] == 0).count();
            assert!(
                clear > 0 && clear < rgba.pixels().len(),
                "a transparent {format} has see-through and drawn pixels ({clear})"
            );
        }
    }
}
