//! The web UI the binary serves itself: the landing page `/`, the playground `/playground`,
//! the operator console `/console`, and their scripts and stylesheet at `/ui/{asset}`. Every
//! file is embedded from `imgproxy-server/ui/` (plain HTML, CSS and JavaScript modules, no
//! build step), loads nothing from elsewhere and holds no data: the pages read the API with
//! the key typed into them, so every datum stays behind the API's own checks. The pages carry
//! a strict content-security policy: scripts, styles and connections to this origin only,
//! nothing inline; images also from `data:` and `blob:` (generated images shown inline) and
//! from the origin stored-image URLs are handed out under (`public_url`).

use axum::{
    extract::State,
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};

use crate::{error::ApiError, extract::OpenAIPath, state::AppState};

/// One embedded file of `/ui/{asset}`.
struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static str,
}

/// The scripts and the stylesheet the pages load.
const ASSETS: [Asset; 4] = [
    Asset {
        name: "style.css",
        mime: "text/css; charset=utf-8",
        body: include_str!("../../ui/style.css"),
    },
    Asset {
        name: "common.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("../../ui/common.js"),
    },
    Asset {
        name: "playground.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("../../ui/playground.js"),
    },
    Asset {
        name: "console.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("../../ui/console.js"),
    },
];

const LANDING: &str = include_str!("../../ui/index.html");
const PLAYGROUND: &str = include_str!("../../ui/playground.html");
const CONSOLE: &str = include_str!("../../ui/console.html");

/// The pages change with the binary: a browser revalidates them (a new version is never
/// mixed with an old script).
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

/// `GET /`: what this server is, and the way to the playground and the console.
pub async fn landing(State(state): State<AppState>) -> Response {
    page(&state, LANDING)
}

/// `GET /playground`.
pub async fn playground(State(state): State<AppState>) -> Response {
    page(&state, PLAYGROUND)
}

/// `GET /console`.
pub async fn console(State(state): State<AppState>) -> Response {
    page(&state, CONSOLE)
}

/// `GET /ui/{asset}`: a script or the stylesheet; 404 for any other name.
pub async fn asset(OpenAIPath(name): OpenAIPath<String>) -> Result<Response, ApiError> {
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == name) else {
        return Err(imgproxy_core::Error::NotFound {
            message: format!("no UI file `{}`", imgproxy_core::quote(&name)),
        }
        .into());
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.mime)),
            (header::CACHE_CONTROL, NO_CACHE),
        ],
        asset.body,
    )
        .into_response())
}

/// The content-security policy of the pages: see the module's documentation.
pub fn content_security_policy(public_url: &str) -> String {
    let images_origin = url::Url::parse(public_url)
        .ok()
        .map(|url| url.origin().ascii_serialization())
        .filter(|origin| origin != "null")
        .map(|origin| format!(" {origin}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self' data: blob:{images_origin}; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

fn page(state: &AppState, html: &'static str) -> Response {
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, NO_CACHE),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        html,
    )
        .into_response();
    if let Ok(policy) = HeaderValue::from_str(&content_security_policy(&state.public_url)) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_this_origin_and_where_images_are_served() {
        let policy = content_security_policy("https://img.example.com/base");
        assert!(policy.starts_with("default-src 'self'; script-src 'self';"));
        assert!(policy.contains("img-src 'self' data: blob: https://img.example.com;"));
        assert!(!policy.contains("unsafe-inline"));
        assert!(content_security_policy("not a url").contains("img-src 'self' data: blob:;"));
    }

    #[test]
    fn the_pages_load_only_embedded_files_and_nothing_inline() {
        for html in [LANDING, PLAYGROUND, CONSOLE] {
            for link in html.split(['"', '\'']).filter(|s| s.starts_with("/ui/")) {
                let name = link.trim_start_matches("/ui/");
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{link} is not embedded"
                );
            }
            assert!(!html.contains("<script>"), "an inline script");
            assert!(!html.contains(" style="), "an inline style");
            assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
        }
        for asset in &ASSETS {
            assert!(
                !asset.body.contains("innerHTML"),
                "{} parses HTML",
                asset.name
            );
        }
    }
}
