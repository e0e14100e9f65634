//! The provider trait every upstream adapter implements, what it receives and returns, and
//! its error type. Providers return image bytes, never HTTP framework types.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Error, Usage, ValidatedRequest};

/// One upstream call's worth of a validated request.
#[derive(Debug, Clone, Copy)]
pub struct ProviderRequest<'a> {
    /// The whole validated request.
    pub request: &'a ValidatedRequest,
    /// Images to make in this call (≤ the model's `n_per_call`).
    pub n: u32,
    /// Index of this call's first image within the request, so that fanned-out calls of a
    /// deterministic provider make distinct images.
    pub first_index: u32,
    /// The request's reference images, already fetched and checked, in request order.
    pub references: &'a [ReferenceImage],
    /// The edit mask, fetched and checked, for models that take one.
    pub mask: Option<&'a ReferenceImage>,
    /// Where to send partial images as they arrive, when the client streams. Providers whose
    /// upstream has no partials ignore it.
    pub partials: Option<&'a PartialSender>,
    /// Where an asynchronous upstream reports the job it started (an opaque token for
    /// [`ImageProvider::resume`]), so that a task cut off mid-flight can be resumed.
    pub jobs: Option<&'a JobSender>,
}

/// The channel upstream job tokens go out on, with the `first_index` of the call that
/// started the job.
pub type JobSender = tokio::sync::mpsc::UnboundedSender<(u32, String)>;

/// A partial image an upstream streamed while generating (OpenAI's `*.partial_image`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialImage {
    /// Base64 of the encoded partial image.
    pub b64_json: String,
    /// Its 0-based index among the partials.
    pub index: u32,
    /// What the upstream said of it.
    pub meta: ImageMeta,
}

/// The channel partial images go out on.
pub type PartialSender = tokio::sync::mpsc::UnboundedSender<PartialImage>;

/// A reference image, fetched and checked: providers never fetch client URLs themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceImage {
    /// The encoded image.
    pub bytes: Bytes,
    /// Its MIME type.
    pub mime: String,
}

impl ReferenceImage {
    /// The image as a `data:` URL, for upstreams that take URLs.
    pub fn data_url(&self) -> String {
        format!(
            "data:{};base64,{}",
            self.mime,
            crate::b64::encode(&self.bytes)
        )
    }

    /// The image as bare base64, for upstreams that take that.
    pub fn base64(&self) -> String {
        crate::b64::encode(&self.bytes)
    }
}

impl ProviderRequest<'_> {
    /// Reports the upstream job this call started (a token for [`ImageProvider::resume`]).
    pub fn report_job(&self, token: String) {
        if let Some(jobs) = self.jobs {
            // The task may be gone; the generation still completes.
            let _ = jobs.send((self.first_index, token));
        }
    }

    /// The upstream model id.
    pub fn upstream_model(&self) -> &str {
        &self.request.model.upstream
    }

    /// The seed for this call: the request's seed offset by `first_index`, so that fanned-out
    /// calls stay reproducible yet distinct.
    pub fn seed(&self) -> Option<i64> {
        self.request
            .param_i64("seed")
            .map(|seed| seed.wrapping_add(i64::from(self.first_index)))
    }
}

/// What one upstream call produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generation {
    /// The images, in order.
    pub images: Vec<GeneratedImage>,
    /// Token usage, where the provider reports it.
    pub usage: Option<Usage>,
    /// Metadata the provider reports about the images (`background`, `quality`, ...).
    pub meta: ImageMeta,
}

/// Metadata of generated images, as OpenAI's response reports it (and a cache entry keeps).
#[serde_with::skip_serializing_none]
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(default)]
pub struct ImageMeta {
    /// `transparent` or `opaque`.
    pub background: Option<String>,
    /// Format of the images: `png`, `jpeg`, `webp`, `gif` or `svg`.
    pub output_format: Option<String>,
    /// Quality the images were made at.
    pub quality: Option<String>,
    /// `WxH` of the images.
    pub size: Option<String>,
}

impl ImageMeta {
    /// This metadata, with what the request asked for where the upstream reported nothing
    /// (`auto` says nothing and is left out).
    #[must_use]
    pub fn or_asked(self, request: &crate::ValidatedRequest) -> Self {
        let asked = |name: &str| {
            request
                .param_str(name)
                .filter(|v| *v != "auto")
                .map(str::to_owned)
        };
        Self {
            background: self.background.or_else(|| asked("background")),
            output_format: self.output_format.or_else(|| asked("output_format")),
            quality: self.quality.or_else(|| asked("quality")),
            size: self.size.or_else(|| asked("size")),
        }
    }

    /// Overwrites `output_format` and `size` with those of the image made (`mime`, `bytes`),
    /// where they can be read from it: what was made, not what was asked for.
    pub fn report_actual(&mut self, mime: &str, bytes: &[u8]) {
        if let Some(format) = crate::convert::format_name(mime) {
            self.output_format = Some(format.to_owned());
        }
        if let Some((width, height)) = crate::convert::dimensions(bytes) {
            self.size = Some(format!("{width}x{height}"));
        }
    }
}

/// One generated image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedImage {
    /// The encoded image.
    pub bytes: Bytes,
    /// Its MIME type, for example `image/png`.
    pub mime: String,
    /// The prompt the provider used, if it rewrote it.
    pub revised_prompt: Option<String>,
}

/// One upstream key of a provider's pool, as the operator sees it: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct KeyStatus {
    /// The first 8 hex digits of the key's SHA-256: tells keys apart without revealing them
    /// (`printf %s "$KEY" | sha256sum | cut -c1-8`).
    pub fingerprint: String,
    /// `live` (in the pool) or `disabled` (taken out until a restart).
    pub state: &'static str,
    /// What took it out: the kind of the upstream's answer (`unauthorized`,
    /// `quota_exhausted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Calls using it now.
    pub in_flight: usize,
}

/// An image-generation backend.
#[async_trait]
pub trait ImageProvider: Send + Sync + std::fmt::Debug {
    /// The provider instance name that catalog entries refer to (`openai`, `placeholder`, ...).
    fn name(&self) -> &str;

    /// The upstream's `gen_ai.provider.name` in the OpenTelemetry GenAI conventions, where they
    /// have a well-known value for it (`gcp.gemini`, `x_ai`, ...); by default [`Self::name`].
    fn genai_name(&self) -> &str {
        self.name()
    }

    /// Generates `request.n` images.
    async fn generate(&self, request: ProviderRequest<'_>) -> Result<Generation, ProviderError>;

    /// Waits for the upstream job `job` (a token this provider sent on `request.jobs` when it
    /// started it, possibly in a previous run of the process) and returns its images.
    /// Providers whose upstream answers synchronously keep this default.
    async fn resume(
        &self,
        _request: ProviderRequest<'_>,
        _job: &str,
    ) -> Result<Generation, ProviderError> {
        Err(ProviderError::RESUME_UNSUPPORTED)
    }

    /// The upstream keys it calls with and their state, for readiness detail; providers
    /// without keys keep this default (none).
    fn keys(&self) -> Vec<KeyStatus> {
        Vec::new()
    }
}

/// How an upstream call failed, from the upstream's point of view.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The upstream refused the request as invalid; its message, param and code are kept.
    #[error("{message}")]
    InvalidRequest {
        /// The upstream's message.
        message: String,
        /// The parameter it named.
        param: Option<String>,
        /// Its error code.
        code: Option<String>,
    },
    /// The upstream refused the content.
    #[error("{message}")]
    ModerationBlocked {
        /// The upstream's explanation.
        message: String,
    },
    /// The upstream rate-limited us.
    #[error("rate limited")]
    RateLimited {
        /// How long the upstream asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The upstream turned the request away before starting any work: it could not be
    /// reached (connection refused, DNS or TLS failure) or answered 503 with `Retry-After`.
    /// Trying again, or elsewhere, cannot make (and bill) an image twice.
    #[error("{message}")]
    Unavailable {
        /// What went wrong, without secrets.
        message: String,
        /// How long the upstream asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The upstream rejected our credentials (401/403).
    #[error("credentials rejected with status {status}")]
    Unauthorized {
        /// The upstream status.
        status: u16,
    },
    /// The upstream account behind our key has no quota left (OpenAI's `insufficient_quota`):
    /// waiting does not help, another key may.
    #[error("{message}")]
    QuotaExhausted {
        /// What the upstream said, without secrets.
        message: String,
    },
    /// The upstream failed or answered something unusable.
    #[error("{message}")]
    Failed {
        /// What went wrong, without secrets.
        message: String,
    },
    /// The upstream did not answer in time.
    #[error("timed out")]
    Timeout,
    /// The provider does not offer this feature.
    #[error("{feature} not supported")]
    Unsupported {
        /// The feature.
        feature: &'static str,
    },
}

impl ProviderError {
    /// What a provider whose upstream answers synchronously says when asked to resume a job.
    pub const RESUME_UNSUPPORTED: Self = Self::Unsupported {
        feature: "resuming upstream jobs",
    };

    /// This error with every occurrence of `secret` (the upstream API key) replaced: an
    /// upstream may echo the key in its messages, and no message may carry it to a client.
    #[must_use]
    pub fn without_secret(self, secret: &str) -> Self {
        if secret.is_empty() {
            return self;
        }
        // Also catches a key that an adapter's cut (`upstream::short`) left half of.
        let scrub = |text: String| crate::upstream::scrub_text(&text, secret);
        match self {
            Self::InvalidRequest {
                message,
                param,
                code,
            } => Self::InvalidRequest {
                message: scrub(message),
                param: param.map(scrub),
                code: code.map(scrub),
            },
            Self::ModerationBlocked { message } => Self::ModerationBlocked {
                message: scrub(message),
            },
            Self::Failed { message } => Self::Failed {
                message: scrub(message),
            },
            Self::QuotaExhausted { message } => Self::QuotaExhausted {
                message: scrub(message),
            },
            Self::Unavailable {
                message,
                retry_after,
            } => Self::Unavailable {
                message: scrub(message),
                retry_after,
            },
            other => other,
        }
    }

    /// A label from a closed vocabulary, for the upstream-call metric's `outcome`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalid_request",
            Self::ModerationBlocked { .. } => "moderation_blocked",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } => "unavailable",
            Self::Unauthorized { .. } => "unauthorized",
            Self::QuotaExhausted { .. } => "quota_exhausted",
            Self::Failed { .. } => "failed",
            Self::Timeout => "timeout",
            Self::Unsupported { .. } => "unsupported",
        }
    }

    /// Whether the upstream turned the call away before it could have started any work, so
    /// that trying again (after a wait, with another key, or at another provider) cannot make
    /// and bill an image twice. A timeout, a 5xx or a broken answer are ambiguous: never.
    pub fn is_pre_start(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::RateLimited { .. }
                | Self::Unauthorized { .. }
                | Self::QuotaExhausted { .. }
        )
    }

    /// Whether the key that got this answer is unusable until an operator acts (rejected, or
    /// its account out of quota): a key pool takes it out.
    pub fn disables_key(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized { .. } | Self::QuotaExhausted { .. }
        )
    }

    /// How long the upstream asked us to wait before trying again, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::Unavailable { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The gateway error for a failure of provider `provider` serving `model`.
    pub fn into_error(self, provider: &str, model: &str) -> Error {
        let provider = provider.to_owned();
        match self {
            Self::InvalidRequest {
                message,
                param,
                code,
            } => Error::InvalidRequest {
                message,
                param,
                code,
            },
            Self::ModerationBlocked { message } => Error::ModerationBlocked { message },
            Self::RateLimited { retry_after } => Error::RateLimited {
                provider,
                retry_after,
            },
            Self::Unauthorized { .. } => Error::UpstreamAuth { provider },
            Self::Failed { message }
            | Self::Unavailable { message, .. }
            | Self::QuotaExhausted { message } => Error::Upstream { provider, message },
            Self::Timeout => Error::UpstreamTimeout { provider },
            Self::Unsupported { feature } => Error::InvalidRequest {
                message: format!("model `{model}` does not support {feature}"),
                param: None,
                code: Some("unsupported_feature".into()),
            },
        }
    }
}

/// The MIME type of an encoded image, from its leading bytes.
pub fn sniff_mime(bytes: &[u8]) -> Option<&'static str> {
    let text_start = std::str::from_utf8(&bytes[..bytes.len().min(256)])
        .unwrap_or("")
        .trim_start();
    match bytes {
        [0x89, b'P', b'N', b'G', ..] => Some("image/png"),
        [0xFF, 0xD8, 0xFF, ..] => Some("image/jpeg"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some("image/webp"),
        [b'G', b'I', b'F', b'8', ..] => Some("image/gif"),
        [_, _, _, _, b'f', b't', b'y', b'p', b'a', b'v', b'i', b'f', ..] => Some("image/avif"),
        [_, _, _, _, b'f', b't', b'y', b'p', b'h', b'e', b'i', b'c' | b'x', ..] => {
            Some("image/heic")
        }
        _ if text_start.starts_with("<svg") || text_start.starts_with("<?xml") => {
            Some("image/svg+xml")
        }
        _ => None,
    }
}

/// The MIME type of an encoded image: from its bytes, else the first `declared` type (a
/// download's `Content-Type`, a type the upstream reported, ...) that is `image/*`, without
/// parameters. `None` means nothing says the bytes are an image.
pub fn image_mime(bytes: &[u8], declared: &[Option<&str>]) -> Option<String> {
    sniff_mime(bytes).map(str::to_owned).or_else(|| {
        declared
            .iter()
            .flatten()
            .map(|t| t.split(';').next().unwrap_or(t).trim().to_ascii_lowercase())
            .find(|t| t.starts_with("image/"))
    })
}

/// The file extension of a MIME type.
pub fn extension_of(mime: &str) -> &'static str {
    match mime {
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "image/svg+xml" => "svg",
        _ => "png",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_common_formats() {
        assert_eq!(sniff_mime(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff_mime(b"\xFF\xD8\xFF\xE0"), Some("image/jpeg"));
        assert_eq!(sniff_mime(b"RIFF\0\0\0\0WEBPVP8L"), Some("image/webp"));
        assert_eq!(sniff_mime(b"GIF89a"), Some("image/gif"));
        assert_eq!(sniff_mime(b"  <svg xmlns=..."), Some("image/svg+xml"));
        assert_eq!(sniff_mime(b"{\"json\": 1}"), None);
    }

    #[test]
    fn secrets_are_scrubbed_from_messages() {
        let error = ProviderError::Failed {
            message: "bad key sk-123".into(),
        }
        .without_secret("sk-123");
        assert_eq!(
            error,
            ProviderError::Failed {
                message: "bad key [redacted]".into()
            }
        );
        let error = ProviderError::InvalidRequest {
            message: "m".into(),
            param: Some("sk-123".into()),
            code: None,
        };
        assert!(!format!("{:?}", error.without_secret("sk-123")).contains("sk-123"));
    }

    #[test]
    fn image_mime_prefers_bytes_then_the_first_declared_image_type() {
        assert_eq!(
            image_mime(b"\x89PNG....", &[Some("image/jpeg")]).as_deref(),
            Some("image/png")
        );
        let declared = [None, Some("text/html"), Some("Image/AVIF; q=1")];
        assert_eq!(
            image_mime(b"????", &declared).as_deref(),
            Some("image/avif")
        );
        assert_eq!(image_mime(b"<html>", &[Some("text/html")]), None);
    }

    #[test]
    fn provider_errors_keep_their_meaning() {
        let e = ProviderError::Unauthorized { status: 401 }.into_error("openai", "m");
        assert_eq!(e.status(), 502);
        let e = ProviderError::InvalidRequest {
            message: "bad".into(),
            param: Some("size".into()),
            code: Some("c".into()),
        }
        .into_error("openai", "m");
        assert_eq!(
            (e.status(), e.param(), e.code()),
            (400, Some("size"), Some("c"))
        );
        assert_eq!(ProviderError::Timeout.into_error("o", "m").status(), 504);
    }
}
