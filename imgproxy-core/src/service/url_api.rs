//! Seed 000's URL API as data: a query string (and the path form's prompt and model) parsed
//! into an [`ImageRequest`] plus what only URLs carry (a name, `ext`, `reroll`), with every
//! alias. Query values are text; each becomes the type its parameter has in the catalog.

use serde_json::{Map, Value};

use crate::{
    catalog::ParamKind, convert::RasterFormat, quote, service::signing, text_params, Catalog,
    Error, ImageRequest, ModelSpec, Result,
};

/// The aspect ratio the URL API uses when a request gives no dimensions (seed 000's default),
/// where the model offers it.
pub const DEFAULT_ASPECT_RATIO: &str = "16:9";

/// Fields that make no sense for a URL that answers with image bytes.
const REFUSED_FIELDS: [&str; 5] = [
    "response_format",
    "stream",
    "partial_images",
    "async",
    "callback_url",
];
/// Names of the reference-image parameter (`images` also splits on commas).
const IMAGE_ALIASES: [&str; 4] = ["image", "image_url", "init_image", "images"];
/// Names of the name parameter.
const NAME_ALIASES: [&str; 3] = ["filename", "name", "slug"];

/// First path segments that are never prompts of the path form (compared without case): the
/// gateway's own routes and API prefixes, health and metrics probes, API docs, and the
/// directories scanners probe. Names with a file extension and dot-segments are refused by
/// rule (see [`path_form`]), so `openapi.json`, `favicon.ico`, `robots.txt`, `wp-login.php`,
/// `.env` and `.well-known` need no entry here.
pub const RESERVED_SEGMENTS: [&str; 29] = [
    "v1",
    "v2",
    "api",
    "images",
    "admin",
    "playground",
    "console",
    "ui",
    "health",
    "healthz",
    "healthcheck",
    "readyz",
    "ready",
    "livez",
    "live",
    "status",
    "ping",
    "metrics",
    "docs",
    "redoc",
    "swagger",
    "swagger-ui",
    "openapi",
    "graphql",
    "cgi-bin",
    "wp-admin",
    "wp-content",
    "wp-includes",
    "phpmyadmin",
];
/// Longest extension of a name that counts as a file name (`.webmanifest` is 11).
const MAX_EXTENSION_CHARS: usize = 12;

/// The decoded prompt (and model) of a path-form `path`, or `None` when the path is not one:
///
/// - one or two non-empty segments (`/{prompt}` or `/{prompt}/{model}`);
/// - the first segment is not one of [`RESERVED_SEGMENTS`];
/// - no segment starts with a dot (`/.env`, `/.well-known/...`, `/.git`);
/// - no segment is a file name: a last `.` followed by 1 to 12 ASCII letters and digits, at
///   least one a letter (`wp-login.php`, `favicon.ico`, `openapi.json`, `apple-touch-icon.png`;
///   image extensions too, which browsers probe). `a cat. the end` or `version 2.0` stay
///   prompts; a prompt like `hello.world` needs the query form (`/api/generate?prompt=`).
///
/// Segments are checked decoded (`%2Eenv` is `.env`); `+` is a space, as in the query form.
pub fn path_form(path: &str) -> Option<(String, Option<String>)> {
    let trimmed = path.strip_prefix('/')?.trim_end_matches('/');
    let mut parts = trimmed.split('/');
    let (first, second, rest) = (parts.next()?, parts.next(), parts.next());
    if first.is_empty() || rest.is_some() || second.is_some_and(str::is_empty) {
        return None;
    }
    let prompt = decode_segment(first)?;
    let model = match second {
        Some(segment) => Some(decode_segment(segment)?),
        None => None,
    };
    let reserved = RESERVED_SEGMENTS
        .iter()
        .any(|r| prompt.trim().eq_ignore_ascii_case(r));
    let probe = |segment: &str| {
        let segment = segment.trim();
        segment.starts_with('.') || is_file_name(segment)
    };
    if reserved || probe(&prompt) || model.as_deref().is_some_and(probe) {
        return None;
    }
    Some((prompt, model))
}

/// A path segment percent-decoded, `+` as a space; `None` when the bytes are not UTF-8
/// (`/%ff` is no prompt: a lossy decode would generate an image of `�`).
fn decode_segment(segment: &str) -> Option<String> {
    let raw = segment.as_bytes();
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let hex = |at: usize| raw.get(at).and_then(|d| (*d as char).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                // Two hex digits are at most 255.
                bytes.push(u8::try_from(high * 16 + low).ok()?);
                i += 3;
            }
            (b'+', _, _) => {
                bytes.push(b' ');
                i += 1;
            }
            _ => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(bytes).ok()
}

/// Whether `segment` ends in a file extension (see [`path_form`]).
fn is_file_name(segment: &str) -> bool {
    segment.rsplit_once('.').is_some_and(|(_, extension)| {
        (1..=MAX_EXTENSION_CHARS).contains(&extension.len())
            && extension.bytes().all(|b| b.is_ascii_alphanumeric())
            && extension.bytes().any(|b| b.is_ascii_alphabetic())
    })
}

/// A parsed URL-API request.
#[derive(Debug, Clone, PartialEq)]
pub struct UrlQuery {
    /// The generation request (its `prompt` is `None` for a recall by name).
    pub request: ImageRequest,
    /// `filename` / `name` / `slug`.
    pub name: Option<String>,
    /// `ext`: the format to answer in.
    pub ext: Option<RasterFormat>,
    /// `reroll`: bypass the cache.
    pub reroll: bool,
}

/// Where the path form's segments go: `/{prompt}` and `/{prompt}/{model}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathForm<'a> {
    /// The first segment, decoded.
    pub prompt: Option<&'a str>,
    /// The second segment, decoded.
    pub model: Option<&'a str>,
}

/// Parses decoded query `pairs` (and the path form's segments). `default_model` serves
/// requests that name none; `serves` tells which model variants have a provider (to read
/// parameter types from the variant that will serve).
pub fn parse(
    pairs: &[(String, String)],
    path: PathForm<'_>,
    catalog: &Catalog,
    default_model: &str,
    serves: &dyn Fn(&ModelSpec) -> bool,
) -> Result<UrlQuery> {
    let mut fields = Map::new();
    let mut images = Vec::new();
    let mut name: Option<String> = None;
    let mut ext = None;
    let mut reroll = false;
    let set = |fields: &mut Map<String, Value>, key: &str, value: Value| {
        if fields.insert(key.to_owned(), value).is_some() {
            return Err(Error::invalid_param(
                key,
                format!("`{}` is given more than once", quote(key)),
            ));
        }
        Ok(())
    };
    if let Some(prompt) = path.prompt {
        set(&mut fields, "prompt", Value::String(prompt.to_owned()))?;
    }
    if let Some(model) = path.model {
        set(&mut fields, "model", Value::String(model.to_owned()))?;
    }
    let mut typed = Vec::new();
    for (key, value) in pairs {
        let key = key.as_str();
        match key {
            k if [signing::SIG, signing::EXPIRES, signing::KEY_ID].contains(&k) => {}
            k if IMAGE_ALIASES.contains(&k) => {
                let parts: Vec<&str> = if k == "images" {
                    value.split(',').collect()
                } else {
                    vec![value.as_str()]
                };
                images.extend(
                    parts
                        .into_iter()
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(|p| Value::String(p.to_owned())),
                );
            }
            k if NAME_ALIASES.contains(&k) => {
                if name.as_ref().is_some_and(|n| n != value) {
                    return Err(Error::invalid_param(
                        "filename",
                        "`filename`, `name` and `slug` name different images",
                    ));
                }
                name = Some(value.clone());
            }
            "ext" => {
                ext = Some(RasterFormat::from_extension(value).ok_or_else(|| {
                    Error::invalid_param(
                        "ext",
                        format!("ext `{}` is not png, jpg or webp", quote(value)),
                    )
                })?);
            }
            "reroll" => reroll = text_params::parse_bool("reroll", value)?,
            "ar" => set(&mut fields, "aspect_ratio", Value::String(value.clone()))?,
            "prompt" | "model" => set(&mut fields, key, Value::String(value.clone()))?,
            k if REFUSED_FIELDS.contains(&k) => {
                return Err(Error::invalid_param(
                    k,
                    format!("`{k}` is not available in the URL API, which answers with the image itself; use POST /v1/images/generations"),
                ));
            }
            _ => typed.push((key, value.as_str())),
        }
    }

    if !fields.contains_key("prompt") && name.is_some() {
        // A recall by name takes the name and `ext`; anything else would be silently ignored.
        let extra = pairs.iter().map(|(k, _)| k.as_str()).find(|k| {
            !NAME_ALIASES.contains(k)
                && !matches!(
                    *k,
                    "ext" | signing::SIG | signing::EXPIRES | signing::KEY_ID
                )
        });
        if let Some(extra) = extra {
            return Err(Error::invalid_param(
                extra,
                format!(
                    "a recall by `filename` takes no `{}`: add a `prompt` to generate",
                    quote(extra)
                ),
            ));
        }
    }

    let model_id = fields
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(default_model)
        .to_owned();
    // An unknown model is reported by validation; here it only means no typing hints.
    let model = catalog.resolve(&model_id, serves).ok();
    for (key, text) in typed {
        let value = text_params::typed_value(model.map(AsRef::as_ref), key, text)?;
        set(&mut fields, key, value)?;
    }
    fields.insert("model".into(), Value::String(model_id));
    if !images.is_empty() {
        fields.insert("images".into(), Value::Array(images));
    }
    let has_dimensions = ["size", "aspect_ratio", "image_size"]
        .iter()
        .any(|f| fields.contains_key(*f));
    let offers_default_ratio = model
        .and_then(|m| m.param("aspect_ratio"))
        .is_some_and(|rule| match &rule.kind {
            ParamKind::Enum { values } => values.iter().any(|v| v == DEFAULT_ASPECT_RATIO),
            _ => false,
        });
    if !has_dimensions && offers_default_ratio {
        fields.insert(
            "aspect_ratio".into(),
            Value::String(DEFAULT_ASPECT_RATIO.into()),
        );
    }

    let request = text_params::into_request(fields)?;
    Ok(UrlQuery {
        request,
        name,
        ext,
        reroll,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ImageInput;

    fn query(text: &str) -> Result<UrlQuery> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(text.as_bytes())
            .into_owned()
            .collect();
        let catalog = Catalog::embedded().unwrap();
        parse(
            &pairs,
            PathForm::default(),
            &catalog,
            "placeholder",
            &|_| true,
        )
    }

    #[test]
    fn seed_000s_example_parses_with_every_alias() {
        let parsed = query(
            "prompt=modern+home&model=seedream-4&ar=16:9&image=https://e.com/a.jpg\
             &image_url=https://e.com/b.jpg&init_image=https://e.com/c.jpg\
             &images=https://e.com/d.jpg,https://e.com/e.jpg&slug=hero&reroll=true&ext=jpg",
        )
        .unwrap();
        let request = &parsed.request;
        assert_eq!(request.prompt.as_deref(), Some("modern home"));
        assert_eq!(request.model.as_deref(), Some("seedream-4"));
        assert_eq!(request.aspect_ratio.as_deref(), Some("16:9"));
        let images: Vec<_> = request.images.clone().unwrap();
        assert_eq!(images.len(), 5);
        assert_eq!(images[4], ImageInput::Text("https://e.com/e.jpg".into()));
        assert_eq!(parsed.name.as_deref(), Some("hero"));
        assert_eq!(parsed.ext, Some(RasterFormat::Jpeg));
        assert!(parsed.reroll);
    }

    #[test]
    fn values_take_their_catalog_types() {
        let parsed = query("prompt=neon+city&model=ultra&raw=true&seed=7").unwrap();
        assert_eq!(parsed.request.extra.get("raw"), Some(&json!(true)));
        assert_eq!(parsed.request.seed, Some(7));
        let err = query("prompt=x&model=ultra&raw=maybe").unwrap_err();
        assert_eq!(err.param(), Some("raw"));
        let err = query("prompt=x&seed=seven").unwrap_err();
        assert_eq!(err.param(), Some("seed"));
        // An unknown parameter stays text, for validation to name.
        let parsed = query("prompt=x&bogus=1").unwrap();
        assert_eq!(parsed.request.extra.get("bogus"), Some(&json!("1")));
    }

    #[test]
    fn the_default_ratio_applies_only_without_dimensions() {
        let parsed = query("prompt=x").unwrap();
        assert_eq!(parsed.request.aspect_ratio.as_deref(), Some("16:9"));
        let parsed = query("prompt=x&size=512x512").unwrap();
        assert_eq!(parsed.request.aspect_ratio, None);
        let parsed = query("prompt=x&ar=1:1").unwrap();
        assert_eq!(parsed.request.aspect_ratio.as_deref(), Some("1:1"));
    }

    #[test]
    fn recall_by_name_needs_no_prompt_and_takes_nothing_else() {
        let parsed = query("filename=hero&ext=png&kid=key_1&exp=9&sig=ab").unwrap();
        assert_eq!(parsed.request.prompt, None);
        assert_eq!(parsed.name.as_deref(), Some("hero"));
        assert!(parsed.request.extra.is_empty());
        for (text, param) in [
            ("filename=hero&model=ultra", "model"),
            ("slug=hero&seed=3", "seed"),
            ("name=hero&reroll=true", "reroll"),
        ] {
            assert_eq!(query(text).unwrap_err().param(), Some(param), "{text}");
        }
    }

    #[test]
    fn bad_or_contradictory_input_names_its_param() {
        for (text, param) in [
            ("prompt=x&ext=gif", "ext"),
            ("prompt=x&reroll=perhaps", "reroll"),
            ("prompt=x&response_format=url", "response_format"),
            ("prompt=x&stream=true", "stream"),
            ("prompt=x&prompt=y", "prompt"),
            ("prompt=x&filename=a&name=b", "filename"),
            ("prompt=x&n=two", "n"),
        ] {
            assert_eq!(query(text).unwrap_err().param(), Some(param), "{text}");
        }
    }

    #[test]
    fn the_path_form_never_answers_for_routes_probes_or_file_names() {
        assert_eq!(path_form("/a+red%20fox"), Some(("a red fox".into(), None)));
        assert_eq!(
            path_form("/fox/placeholder/"),
            Some(("fox".into(), Some("placeholder".into())))
        );
        assert_eq!(
            path_form("/a+cat.+the+end/gemini-2.5-flash-image"),
            Some((
                "a cat. the end".into(),
                Some("gemini-2.5-flash-image".into())
            ))
        );
        assert_eq!(path_form("/caf%C3%A9%2"), Some(("café%2".into(), None)));
        assert_eq!(
            path_form("/version+2.0"),
            Some(("version 2.0".into(), None))
        );
        for routed in [
            "/",
            "//x",
            "/a/b/c",
            "/v1/nope",
            "/API/x",
            "/images/k",
            "/health",
            "/HealthZ",
            "/readyz",
            "/livez",
            "/metrics",
            "/docs",
            "/openapi.json",
            "/favicon.ico",
            "/robots.txt",
            "/sitemap.xml",
            "/wp-login.php",
            "/index.html",
            "/apple-touch-icon.png",
            "/.env",
            "/%2Eenv",
            "/.git",
            "/.well-known/security.txt",
            "/.well-known/acme-challenge",
            "/fox/.env",
            "/fox/config.yaml",
            "/wp-admin/setup",
            "/wp-login%2Ephp",
            "/%ff",
            "/fox/%C3",
        ] {
            assert_eq!(path_form(routed), None, "{routed}");
        }
    }

    #[test]
    fn echoed_values_are_cut() {
        let long = "z".repeat(100_000);
        let err = query(&format!("prompt=x&ext={long}")).unwrap_err();
        assert!(err.public_message().len() < 200, "{}", err.public_message());
        let err = query(&format!("prompt=x&seed={long}")).unwrap_err();
        assert!(err.public_message().len() < 200, "{}", err.public_message());
    }

    #[test]
    fn the_path_form_gives_prompt_and_model() {
        let catalog = Catalog::embedded().unwrap();
        let path = PathForm {
            prompt: Some("a red fox"),
            model: Some("placeholder"),
        };
        let parsed = parse(&[], path, &catalog, "flux-1.1-pro", &|_| true).unwrap();
        assert_eq!(parsed.request.prompt.as_deref(), Some("a red fox"));
        assert_eq!(parsed.request.model.as_deref(), Some("placeholder"));
        let pairs = vec![("prompt".to_owned(), "again".to_owned())];
        let err = parse(&pairs, path, &catalog, "placeholder", &|_| true).unwrap_err();
        assert_eq!(err.param(), Some("prompt"));
    }
}
