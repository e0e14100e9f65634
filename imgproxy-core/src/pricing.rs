//! Prices in integer credits, as catalog data, and the one pure function that prices a
//! validated request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ValidatedRequest;

/// A model's price. The base price of one image is the `by_quality_and_resolution` entry for
/// the request's quality (the value of its `quality_param`) and tier if there is one, else the
/// `by_quality` entry for its quality, else the `by_resolution` entry for its tier, else
/// `per_image`; with `scale_by_area`, an explicit size larger than 1024×1024 multiplies it by
/// its area, and with `per_extra_megapixel` each megapixel past the first adds that much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// Credits per image.
    pub per_image: u64,
    /// Credits per image by `quality`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_quality: BTreeMap<String, u64>,
    /// The parameter whose value `by_quality` and `by_quality_and_resolution` are keyed by:
    /// `quality` unless named here, for upstreams whose price follows a knob of their own
    /// (Ideogram's `rendering_speed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_param: Option<String>,
    /// Credits per image by resolution tier (`1K`, `2K`, `4K`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_resolution: BTreeMap<String, u64>,
    /// Credits per image by `quality`, then resolution tier, for upstreams that bill by both.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_quality_and_resolution: BTreeMap<String, BTreeMap<String, u64>>,
    /// Credits added per started megapixel past the first of an explicit size, for upstreams
    /// that bill the first megapixel and each further one at different rates.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub per_extra_megapixel: u64,
    /// Credits added per reference image.
    #[serde(default)]
    pub per_reference_image: u64,
    /// Scale the base price by the image's area relative to 1024×1024 (never below the base),
    /// for upstreams that bill by pixels and take custom sizes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scale_by_area: bool,
}

/// The area the base price is for.
const BASE_PIXELS: u64 = 1024 * 1024;

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// The quality `request` is priced at: the value of its model's `quality_param`.
pub fn priced_quality(request: &ValidatedRequest) -> Option<&str> {
    let pricing = request.model.pricing.as_ref();
    request.param_str(
        pricing
            .and_then(|p| p.quality_param.as_deref())
            .unwrap_or("quality"),
    )
}

/// Credits for one image of `request`, or `None` if the model has no price.
pub fn credits_per_image(request: &ValidatedRequest) -> Option<u64> {
    let pricing = request.model.pricing.as_ref()?;
    let quality = priced_quality(request);
    let tier = request.tier();
    let by_both = quality
        .and_then(|q| pricing.by_quality_and_resolution.get(q))
        .and_then(|tiers| tiers.get(tier?));
    let by_quality = quality.and_then(|q| pricing.by_quality.get(q));
    let by_resolution = tier.and_then(|t| pricing.by_resolution.get(t));
    let base = by_both
        .or(by_quality)
        .or(by_resolution)
        .copied()
        .unwrap_or(pricing.per_image);
    // Rounded up: the reservation is the worst case, never an undercharge.
    let base = match request.size() {
        Some(size) => {
            let pixels = u64::from(size.width) * u64::from(size.height);
            let scaled = if pricing.scale_by_area {
                base.saturating_mul(pixels).div_ceil(BASE_PIXELS).max(base)
            } else {
                base
            };
            let extra_megapixels = pixels.saturating_sub(BASE_PIXELS).div_ceil(BASE_PIXELS);
            scaled.saturating_add(pricing.per_extra_megapixel.saturating_mul(extra_megapixels))
        }
        None => base,
    };
    let references = u64::try_from(request.reference_images.len()).unwrap_or(u64::MAX);
    Some(base.saturating_add(pricing.per_reference_image.saturating_mul(references)))
}

#[cfg(test)]
mod tests {
    use crate::{validate::validate, Catalog, ImageRequest};

    use super::*;

    fn price(model: &str, extra: &[(&str, &str)]) -> Option<u64> {
        let catalog = Catalog::embedded().unwrap();
        let mut request = ImageRequest::new(model, "p");
        for (key, value) in extra {
            request
                .extra
                .insert((*key).into(), serde_json::json!(value));
        }
        let request: ImageRequest =
            serde_json::from_value(serde_json::to_value(request).unwrap()).unwrap();
        credits_per_image(&validate(&catalog, request, "placeholder", &|_| true).unwrap())
    }

    #[test]
    fn table() {
        assert_eq!(price("placeholder", &[]), Some(1));
        assert_eq!(price("gpt-image-2", &[("quality", "low")]), Some(6));
        assert_eq!(price("gpt-image-2", &[("quality", "high")]), Some(211));
        // `auto` may pick any quality, so it is priced at the worst case.
        assert_eq!(price("gpt-image-2", &[]), Some(211));
        // Billed by area: 2048x2048 is four 1024x1024 images; 3840x2160 is 7.91 of them.
        assert_eq!(
            price("gpt-image-2", &[("quality", "low"), ("size", "2048x2048")]),
            Some(24)
        );
        assert_eq!(
            price("gpt-image-2", &[("quality", "low"), ("size", "3840x2160")]),
            Some(48)
        );
        assert_eq!(
            price("gpt-image-2", &[("quality", "low"), ("size", "512x512")]),
            Some(6)
        );
        // Tiers and reference images.
        assert_eq!(price("nano-banana-pro", &[("image_size", "4K")]), Some(240));
        assert_eq!(price("grok-imagine", &[]), Some(20));
        assert_eq!(price("flux-schnell", &[("size", "512x512")]), Some(2));
        // By quality and tier at once.
        assert_eq!(
            price("grok-imagine-image-2.0", &[("quality", "low")]),
            Some(40)
        );
        assert_eq!(
            price(
                "grok-imagine-image-2.0",
                &[("quality", "low"), ("image_size", "2K")]
            ),
            Some(60)
        );
        assert_eq!(
            price("grok-imagine-image-2.0", &[("image_size", "2K")]),
            Some(80)
        );
        // Priced by a parameter of the upstream's own (`quality_param`), its default included.
        assert_eq!(price("ideogram-v3", &[]), Some(60));
        assert_eq!(
            price("ideogram-v3", &[("rendering_speed", "TURBO")]),
            Some(30)
        );
        assert_eq!(
            price("ideogram-v3", &[("rendering_speed", "QUALITY")]),
            Some(90)
        );
        // The first megapixel, then each started one after it.
        assert_eq!(price("flux-2-pro", &[("size", "1024x1024")]), Some(30));
        assert_eq!(price("flux-2-pro", &[("size", "2048x1024")]), Some(45));
        assert_eq!(price("flux-2-pro", &[("size", "2048x2048")]), Some(75));
    }
}
