//! `size` ↔ `aspect_ratio` + `image_size`: parsing and the one function, [`normalize`], that
//! reconciles them with what a model takes.

use crate::{
    catalog::{CustomSize, ModelSpec, ParamKind},
    quote, Error, Result,
};

/// Pixel dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Size {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Size {
    /// Parses `WxH` strictly: see [`side`] for what a side may be; the separator is `x` or
    /// `X`. Anything else (`+16x16`, ` 16x16`, `016x16`, `16x16px`) is not a size.
    pub fn parse(text: &str) -> Option<Self> {
        let (w, h) = text.split_once(['x', 'X'])?;
        Some(Self {
            width: side(w)?,
            height: side(h)?,
        })
    }

    /// The ratio in lowest terms, for example `16:9`.
    pub fn ratio(self) -> Ratio {
        let divisor = gcd(self.width, self.height);
        Ratio {
            width: self.width / divisor,
            height: self.height / divisor,
        }
    }

    /// The resolution tier the size falls in, by pixel count.
    pub fn tier(self) -> &'static str {
        let pixels = u64::from(self.width) * u64::from(self.height);
        TIERS
            .iter()
            .find(|(_, _, max_pixels)| pixels <= *max_pixels)
            .map_or("4K", |(name, _, _)| name)
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// An aspect ratio such as `16:9`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ratio {
    /// Width part.
    pub width: u32,
    /// Height part.
    pub height: u32,
}

impl Ratio {
    /// Parses `W:H` (sides as in [`side`]), reduced to lowest terms.
    pub fn parse(text: &str) -> Option<Self> {
        let (w, h) = text.split_once(':')?;
        let size = Size {
            width: side(w)?,
            height: side(h)?,
        };
        Some(size.ratio())
    }

    /// The size with this ratio whose long side is `long_side`, both sides rounded to
    /// multiples of `multiple_of`.
    pub fn at_long_side(self, long_side: u32, multiple_of: u32) -> Size {
        let round = |v: f64| {
            let m = f64::from(multiple_of.max(1));
            // Sides are small positive numbers, so the cast cannot truncate meaningfully.
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "bounded"
            )]
            let rounded = ((v / m).round().max(1.0) * m) as u32;
            rounded
        };
        let (w, h) = (f64::from(self.width), f64::from(self.height));
        let long = f64::from(long_side);
        if w >= h {
            Size {
                width: round(long),
                height: round(long * h / w),
            }
        } else {
            Size {
                width: round(long * w / h),
                height: round(long),
            }
        }
    }
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.width, self.height)
    }
}

/// Resolution tiers: name, long side in pixels, largest pixel count that still counts as it.
const TIERS: [(&str, u32, u64); 4] = [
    ("512", 512, 400_000),
    ("1K", 1024, 1_600_000),
    ("2K", 2048, 6_000_000),
    ("4K", 4096, u64::MAX),
];

/// The long side of a resolution tier (`1K` → 1024).
pub fn tier_long_side(tier: &str) -> Option<u32> {
    TIERS
        .iter()
        .find(|(name, _, _)| name.eq_ignore_ascii_case(tier))
        .map(|(_, side, _)| *side)
}

/// Most digits of one side: 5 covers every real image size (up to 99,999 px) and keeps the
/// parse far from `u32` overflow.
const MAX_SIDE_DIGITS: usize = 5;

/// One side of a size or ratio: 1 to [`MAX_SIDE_DIGITS`] ASCII digits, no sign, no
/// whitespace, no leading zero, not zero. Strict because the text is also the cache key's and
/// the upstream's: `016x16` and `16x16` must not be two spellings of one size.
fn side(text: &str) -> Option<u32> {
    let canonical = !text.is_empty()
        && text.len() <= MAX_SIDE_DIGITS
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    canonical.then(|| text.parse().ok()).flatten()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

/// The dimensions of a request after [`normalize`]: each field is set only if the model
/// takes that parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dimensions {
    /// `WxH` or `auto`.
    pub size: Option<String>,
    /// `W:H`.
    pub aspect_ratio: Option<String>,
    /// Resolution tier.
    pub image_size: Option<String>,
}

/// Reconciles the request's `size`, `aspect_ratio` and `image_size` with the parameters the
/// model takes, so that each provider receives the form it understands.
///
/// - The model takes `size` and the request gives it: it must be a listed size or fit the
///   model's custom-size rule.
/// - The model takes only `aspect_ratio` (+ `image_size`) and the request gives `size`: the
///   size is reduced to its ratio (`1536x1024` → `3:2`), which must be one the model lists,
///   and its tier (`1K`, `2K`, ...) becomes `image_size` when the model takes one.
/// - The model takes only `size` and the request gives `aspect_ratio` (+ `image_size`): the
///   listed size of that ratio (and tier) is chosen, or, for models with a custom-size rule,
///   the size of that ratio whose long side is the tier's (1024 by default).
/// - A request that gives both forms must give consistent ones; a conflict is a 400 naming
///   `aspect_ratio` or `image_size`, never silently resolved.
pub fn normalize(
    model: &ModelSpec,
    size: Option<&str>,
    aspect_ratio: Option<&str>,
    image_size: Option<&str>,
) -> Result<Dimensions> {
    let takes_size = model.param("size").is_some();
    let takes_ratio = model.param("aspect_ratio").is_some();
    let takes_tier = model.param("image_size").is_some();

    let parsed_size = match size {
        None | Some("auto") => None,
        Some(text) => Some(Size::parse(text).ok_or_else(|| {
            Error::invalid_param(
                "size",
                format!(
                    "size `{}` is not `WxH` (digits, no sign, space or leading zero) or `auto`",
                    quote(text)
                ),
            )
        })?),
    };
    let ratio = aspect_ratio
        .map(|text| {
            Ratio::parse(text).ok_or_else(|| {
                Error::invalid_param(
                    "aspect_ratio",
                    format!("aspect_ratio `{}` is not `W:H`", quote(text)),
                )
            })
        })
        .transpose()?;
    if let Some(tier) = image_size {
        if tier_long_side(tier).is_none() {
            return Err(Error::invalid_param(
                "image_size",
                format!("image_size `{}` is not one of 512, 1K, 2K, 4K", quote(tier)),
            ));
        }
    }

    // Both forms given: they must agree.
    if let Some(size) = parsed_size {
        if let Some(ratio) = ratio.filter(|r| *r != size.ratio()) {
            return Err(Error::invalid_param(
                "aspect_ratio",
                format!(
                    "aspect_ratio `{ratio}` conflicts with size `{size}` (which is {})",
                    size.ratio()
                ),
            ));
        }
        if let Some(tier) = image_size.filter(|t| !t.eq_ignore_ascii_case(size.tier())) {
            return Err(Error::invalid_param(
                "image_size",
                format!(
                    "image_size `{tier}` conflicts with size `{size}` (which is {})",
                    size.tier()
                ),
            ));
        }
    }

    let mut out = Dimensions::default();
    if size.is_some() && !takes_size && !takes_ratio {
        return Err(Error::unsupported_param("size", &model.id));
    }
    if aspect_ratio.is_some() && !takes_ratio && !takes_size {
        return Err(Error::unsupported_param("aspect_ratio", &model.id));
    }
    if image_size.is_some() && !takes_tier && !takes_size {
        return Err(Error::unsupported_param("image_size", &model.id));
    }

    if takes_size {
        out.size = match (size, ratio) {
            (Some(text), _) => Some(text.to_owned()),
            (None, Some(ratio)) if !takes_ratio => Some(size_for_ratio(model, ratio, image_size)?),
            (None, None) if image_size.is_some() && !takes_tier => Some(size_for_ratio(
                model,
                Ratio {
                    width: 1,
                    height: 1,
                },
                image_size,
            )?),
            _ => None,
        };
        // A tier the model cannot take is honoured through `size` or refused, never dropped.
        if out.size.is_none() && image_size.is_some() && !takes_tier {
            return Err(Error::invalid_param(
                "image_size",
                format!(
                    "model `{}` takes `aspect_ratio` without a resolution tier: give `size` \
                     for another resolution, or leave `image_size` out",
                    model.id
                ),
            ));
        }
        if let Some(text) = &out.size {
            check_size(model, text)?;
        }
    }
    if takes_ratio {
        let wanted = match (ratio, parsed_size) {
            (Some(ratio), _) => Some(ratio),
            (None, Some(size)) if !takes_size => Some(size.ratio()),
            _ => None,
        };
        if let Some(wanted) = wanted {
            let from_size = ratio.is_none().then_some(size).flatten();
            out.aspect_ratio = Some(listed_spelling(
                model,
                "aspect_ratio",
                &wanted.to_string(),
                from_size,
            )?);
        }
        // A model that takes neither sizes nor tiers makes images at its one native
        // resolution (about a megapixel); a larger or smaller size cannot be honoured.
        if let (Some(size), false, false) = (parsed_size, takes_size, takes_tier) {
            if size.tier() != "1K" {
                return Err(Error::invalid_param(
                    "size",
                    format!(
                        "model `{}` makes images of about one megapixel (1K); size `{size}` is {}",
                        model.id,
                        size.tier()
                    ),
                ));
            }
        }
    }
    if takes_tier {
        let wanted = match (image_size, parsed_size) {
            (Some(tier), _) => Some(tier.to_owned()),
            (None, Some(size)) if !takes_size => Some(size.tier().to_owned()),
            _ => None,
        };
        if let Some(wanted) = wanted {
            let from_size = image_size.is_none().then_some(size).flatten();
            out.image_size = Some(listed_spelling(model, "image_size", &wanted, from_size)?);
        }
    }
    Ok(out)
}

/// The model's own spelling of `value` among the values it lists for `param` (ratios compare
/// by value, so a client's `21:9` matches a listed `21:9` although it reduces to `7:3`; tiers
/// compare without case). When the value was derived from the client's `size`, an error names
/// `size`, the parameter the client actually sent.
fn listed_spelling(
    model: &ModelSpec,
    param: &str,
    value: &str,
    derived_from_size: Option<&str>,
) -> Result<String> {
    let listed = model.listed_values(param);
    if listed.is_empty() {
        return Ok(value.to_owned());
    }
    let same = |candidate: &str| match (Ratio::parse(candidate), Ratio::parse(value)) {
        (Some(a), Some(b)) if param == "aspect_ratio" => a == b,
        _ => candidate.eq_ignore_ascii_case(value),
    };
    if let Some(found) = listed.iter().find(|candidate| same(candidate)) {
        return Ok(found.clone());
    }
    let supported = listed.join(", ");
    Err(match derived_from_size {
        Some(size) => Error::invalid_param(
            "size",
            format!(
                "size `{size}` has {param} `{value}`, which model `{}` does not support; \
                 supported {param} values: {supported}",
                model.id
            ),
        ),
        None => Error::invalid_param(
            param,
            format!(
                "model `{}` does not support {param} `{value}`; supported: {supported}",
                model.id
            ),
        ),
    })
}

fn custom_rule(model: &ModelSpec) -> Option<CustomSize> {
    match model.param("size").map(|rule| &rule.kind) {
        Some(ParamKind::Size { custom, .. }) => *custom,
        _ => None,
    }
}

/// Checks `text` against the model's listed sizes and custom-size rule.
fn check_size(model: &ModelSpec, text: &str) -> Result<()> {
    let listed = model.listed_values("size");
    if listed.iter().any(|v| v == text) {
        return Ok(());
    }
    let reject = |why: String| {
        let mut message = format!("model `{}` does not support size `{text}`", model.id);
        if !listed.is_empty() {
            message.push_str(&format!("; supported: {}", listed.join(", ")));
        }
        if !why.is_empty() {
            message.push_str(&format!(" ({why})"));
        }
        Err(Error::invalid_param("size", message))
    };
    let (Some(rule), Some(size)) = (custom_rule(model), Size::parse(text)) else {
        return reject(String::new());
    };
    let (long, short) = (size.width.max(size.height), size.width.min(size.height));
    if size.width % rule.multiple_of != 0 || size.height % rule.multiple_of != 0 {
        return reject(format!(
            "custom sizes need both sides divisible by {}",
            rule.multiple_of
        ));
    }
    if short < rule.min_side || long > rule.max_side {
        return reject(format!(
            "custom sides must be {}–{} px",
            rule.min_side, rule.max_side
        ));
    }
    if rule
        .max_pixels
        .is_some_and(|max| u64::from(long) * u64::from(short) > max)
    {
        return reject(format!(
            "at most {} pixels",
            rule.max_pixels.unwrap_or_default()
        ));
    }
    if rule
        .max_ratio
        .is_some_and(|max| f64::from(long) / f64::from(short) > max)
    {
        return reject(format!(
            "ratio at most {}:1",
            rule.max_ratio.unwrap_or_default()
        ));
    }
    Ok(())
}

/// The size of `ratio` (at tier `image_size`) for a model that takes only `size`.
fn size_for_ratio(model: &ModelSpec, ratio: Ratio, image_size: Option<&str>) -> Result<String> {
    let listed = model
        .listed_values("size")
        .into_iter()
        .filter_map(|text| Size::parse(&text))
        .filter(|size| size.ratio() == ratio)
        .find(|size| image_size.is_none_or(|tier| tier.eq_ignore_ascii_case(size.tier())));
    if let Some(size) = listed {
        return Ok(size.to_string());
    }
    if let Some(rule) = custom_rule(model) {
        let long_side = image_size
            .and_then(tier_long_side)
            .unwrap_or(1024)
            .min(rule.max_side);
        let size = ratio.at_long_side(long_side, rule.multiple_of).to_string();
        if check_size(model, &size).is_ok() {
            return Ok(size);
        }
    }
    let param = if image_size.is_some() {
        "image_size"
    } else {
        "aspect_ratio"
    };
    Err(Error::invalid_param(
        param,
        format!(
            "model `{}` has no size for aspect_ratio {ratio}{}; supported sizes: {}",
            model.id,
            image_size.map(|t| format!(" at {t}")).unwrap_or_default(),
            model.listed_values("size").join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{catalog::embedded_model as model, Catalog};

    #[test]
    fn parses_and_reduces() {
        assert_eq!(Size::parse("1536x1024").unwrap().ratio().to_string(), "3:2");
        assert_eq!(Ratio::parse("32:18").unwrap().to_string(), "16:9");
        assert_eq!(Size::parse("1024x1024").unwrap().tier(), "1K");
        assert_eq!(Size::parse("2048x2048").unwrap().tier(), "2K");
        assert_eq!(Size::parse("512x512").unwrap().tier(), "512");
        assert!(Size::parse("0x10").is_none() && Size::parse("big").is_none());
    }

    #[test]
    fn sizes_and_ratios_are_parsed_strictly() {
        assert_eq!(
            Size::parse("16X16"),
            Some(Size {
                width: 16,
                height: 16
            })
        );
        for text in [
            "+16x16",
            "16x+16",
            "-16x16",
            " 16x16",
            "16x16 ",
            "16 x16",
            "016x16",
            "16x016",
            "0x0",
            "16x16px",
            "16x",
            "x16",
            "123456x16",
            "16x16x16",
            "１６x16",
            "16.0x16",
        ] {
            assert_eq!(Size::parse(text), None, "{text:?}");
        }
        for text in ["+16:9", " 16:9", "16:09", "16 :9", "0:1", "1.5:1"] {
            assert_eq!(Ratio::parse(text), None, "{text:?}");
        }
        let err = normalize(&model("placeholder"), Some("+1024x1024"), None, None).unwrap_err();
        assert_eq!(err.param(), Some("size"));
    }

    #[test]
    fn size_only_model_derives_size_from_ratio() {
        let m = model("gpt-image-1-mini");
        let dims = normalize(&m, None, Some("3:2"), None).unwrap();
        assert_eq!(dims.size.as_deref(), Some("1536x1024"));
        assert_eq!(dims.aspect_ratio, None);
        let err = normalize(&m, None, Some("16:9"), None).unwrap_err();
        assert_eq!(err.param(), Some("aspect_ratio"));
    }

    #[test]
    fn custom_size_model_computes_size_from_ratio_and_tier() {
        let m = model("gpt-image-2");
        let dims = normalize(&m, None, Some("16:9"), Some("2K")).unwrap();
        assert_eq!(dims.size.as_deref(), Some("2048x1152"));
        assert_eq!(
            normalize(&m, Some("1000x2000"), None, None)
                .unwrap_err()
                .param(),
            Some("size")
        );
        assert!(normalize(&m, Some("1920x1088"), None, None).is_ok());
    }

    #[test]
    fn conflicts_are_rejected_not_resolved() {
        let m = model("placeholder");
        let err = normalize(&m, Some("1024x1024"), Some("16:9"), None).unwrap_err();
        assert_eq!(err.param(), Some("aspect_ratio"));
        let err = normalize(&m, Some("1024x1024"), None, Some("4K")).unwrap_err();
        assert_eq!(err.param(), Some("image_size"));
        let ok = normalize(&m, Some("1024x1024"), Some("1:1"), Some("1K")).unwrap();
        assert_eq!(ok.size.as_deref(), Some("1024x1024"));
    }

    #[test]
    fn malformed_values_name_their_param() {
        let m = model("placeholder");
        assert_eq!(
            normalize(&m, Some("huge"), None, None).unwrap_err().param(),
            Some("size")
        );
        assert_eq!(
            normalize(&m, None, Some("wide"), None).unwrap_err().param(),
            Some("aspect_ratio")
        );
        assert_eq!(
            normalize(&m, None, None, Some("8K")).unwrap_err().param(),
            Some("image_size")
        );
    }

    /// A model that, like Gemini's, takes only `aspect_ratio` and `image_size`.
    fn ratio_only_model() -> ModelSpec {
        let text = r#"
            [[models]]
            id = "ratio-only"
            provider = "p"
            upstream = "u"
            [models.params]
            aspect_ratio = { type = "enum", values = ["1:1", "3:2", "2:3", "16:9"] }
            image_size = { type = "enum", values = ["1K", "2K"] }
        "#;
        (**Catalog::from_toml(text)
            .unwrap()
            .resolve("ratio-only", &|_| true)
            .unwrap())
        .clone()
    }

    #[test]
    fn ratio_only_model_gets_the_ratio_and_tier_of_a_size() {
        let m = ratio_only_model();
        let dims = normalize(&m, Some("1536x1024"), None, None).unwrap();
        assert_eq!(
            (
                dims.size,
                dims.aspect_ratio.as_deref(),
                dims.image_size.as_deref()
            ),
            (None, Some("3:2"), Some("1K"))
        );
        let dims = normalize(&m, Some("2048x2048"), None, None).unwrap();
        assert_eq!(
            (dims.aspect_ratio.as_deref(), dims.image_size.as_deref()),
            (Some("1:1"), Some("2K"))
        );
        let dims = normalize(&m, Some("auto"), Some("16:9"), None).unwrap();
        assert_eq!(
            (dims.aspect_ratio.as_deref(), dims.image_size),
            (Some("16:9"), None)
        );
    }

    #[test]
    fn ratio_only_model_rejects_what_it_cannot_honour() {
        let m = ratio_only_model();
        // 1000x700 reduces to 10:7, which the model does not list: rejected, not snapped.
        let err = normalize(&m, Some("1000x700"), None, None).unwrap_err();
        assert_eq!(
            err.param(),
            Some("size"),
            "the client sent size, not aspect_ratio"
        );
        assert!(err.to_string().contains("10:7"), "{err}");
        // 4096x4096 is 4K, which the model does not offer.
        assert_eq!(
            normalize(&m, Some("4096x4096"), None, None)
                .unwrap_err()
                .param(),
            Some("size")
        );
        assert_eq!(
            normalize(&m, None, Some("3:2"), Some("4K"))
                .unwrap_err()
                .param(),
            Some("image_size")
        );
        assert_eq!(
            normalize(&m, Some("1024x1024"), Some("3:2"), None)
                .unwrap_err()
                .param(),
            Some("aspect_ratio")
        );
    }

    #[test]
    fn a_model_without_dimensions_rejects_them() {
        let mut m = ratio_only_model();
        m.params.clear();
        assert_eq!(
            normalize(&m, Some("1024x1024"), None, None)
                .unwrap_err()
                .code(),
            Some("unknown_parameter")
        );
        assert_eq!(
            normalize(&m, None, Some("1:1"), None).unwrap_err().param(),
            Some("aspect_ratio")
        );
    }

    #[test]
    fn ratio_at_long_side_rounds_to_multiple() {
        let r = Ratio::parse("16:9").unwrap();
        assert_eq!(r.at_long_side(1024, 16).to_string(), "1024x576");
        assert_eq!(
            Ratio::parse("9:16")
                .unwrap()
                .at_long_side(1024, 8)
                .to_string(),
            "576x1024"
        );
    }

    #[test]
    fn listed_ratios_match_by_value_and_keep_the_catalog_spelling() {
        let mut m = ratio_only_model();
        if let Some(crate::catalog::ParamRule {
            kind: ParamKind::Enum { values },
            ..
        }) = m.params.get_mut("aspect_ratio")
        {
            values.push("21:9".into());
        }
        let dims = normalize(&m, None, Some("21:9"), None).unwrap();
        assert_eq!(dims.aspect_ratio.as_deref(), Some("21:9"));
        let dims = normalize(&m, Some("2016x864"), None, None).unwrap();
        assert_eq!(dims.aspect_ratio.as_deref(), Some("21:9"));
        let dims = normalize(&m, None, Some("3:2"), Some("2k")).unwrap();
        assert_eq!(dims.image_size.as_deref(), Some("2K"));
    }

    #[test]
    fn a_ratio_only_model_without_tiers_refuses_sizes_it_cannot_make() {
        let mut m = ratio_only_model();
        m.params.remove("image_size");
        assert!(normalize(&m, Some("1024x1024"), None, None).is_ok());
        let err = normalize(&m, Some("2048x2048"), None, None).unwrap_err();
        assert_eq!(err.param(), Some("size"));
    }

    #[test]
    fn a_tier_a_sized_model_cannot_take_with_a_ratio_is_refused_not_dropped() {
        let text = r#"
            [[models]]
            id = "sized"
            provider = "p"
            upstream = "u"
            [models.params]
            size = { type = "size", values = ["1024x1024", "1536x1024"] }
            aspect_ratio = { type = "enum", values = ["1:1", "3:2"] }
        "#;
        let catalog = Catalog::from_toml(text).unwrap();
        let m = catalog.resolve("sized", &|_| true).unwrap();
        let err = normalize(m, None, Some("3:2"), Some("2K")).unwrap_err();
        assert_eq!(err.param(), Some("image_size"));
        assert!(normalize(m, None, Some("3:2"), None).is_ok());
        assert!(normalize(m, None, None, Some("1K")).is_ok());
    }
}
