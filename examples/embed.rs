//! Embeds the imgproxy gateway in a Rust program, with no HTTP server: the same catalog,
//! validation and providers as `imgproxy serve`.
//!
//! Run: `cargo run -p imgproxy-examples --example embed`
//! With `OPENAI_API_KEY` set, it also registers the OpenAI provider (not called here).

#![expect(clippy::print_stdout, reason = "an example reports what it did")]

use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use imgproxy_core::{Catalog, Gateway, ImageRequest};
use imgproxy_provider_placeholder::PlaceholderProvider;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut builder =
        Gateway::builder(Catalog::embedded()?).provider(Arc::new(PlaceholderProvider::new()));
    if let Ok(key) = std::env::var("OPENAI_API_KEY") {
        let config = imgproxy_provider_openai::OpenAIConfig::new(key);
        builder = builder.provider(Arc::new(imgproxy_provider_openai::OpenAIProvider::new(
            config,
        )?));
    }
    let gateway = builder.build();

    let mut request = ImageRequest::new("placeholder", "a lighthouse at dusk");
    request.n = Some(2);
    request.aspect_ratio = Some("16:9".into());
    request.image_size = Some("1K".into());
    let response = gateway.generate(request).await?;

    let dir = std::env::temp_dir();
    for (index, image) in response.data.iter().enumerate() {
        let b64 = image
            .b64_json
            .as_deref()
            .context("b64_json is the default response format")?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
        let path = dir.join(format!("lighthouse-{index}.png"));
        std::fs::write(&path, bytes)?;
        println!(
            "wrote {} ({})",
            path.display(),
            response.meta.size.as_deref().unwrap_or("?")
        );
    }

    // Validation errors name the parameter, exactly as the HTTP API reports them.
    let mut bad = ImageRequest::new("placeholder", "too many");
    bad.n = Some(50);
    if let Err(error) = gateway.generate(bad).await {
        println!(
            "rejected: {} (status {}, param {:?})",
            error,
            error.status(),
            error.param()
        );
    }
    Ok(())
}
