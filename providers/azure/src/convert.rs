//! The pure half of the adapter: where a call of an upstream model goes (the deployment form
//! or the v1 API, and the model's deployment) and what Azure's failures mean. Every byte sent
//! or received goes through `client`.

use std::{collections::BTreeMap, time::Duration};

use imgproxy_core::{upstream, ProviderError};
use imgproxy_provider_openai::{compat, error_from_status as openai_error, ImagesRoute};

use crate::{wire, DEFAULT_API_VERSION, V1_API};

/// Codes with which Azure's safety system refuses a prompt, an input image or the image it
/// made (providers-2.md §10.4): `content_filter` (Azure's troubleshooting page: "content
/// filtering returns HTTP 400 with the `content_filter` code"), `content_policy_violation`
/// with the inner `ResponsibleAIPolicyViolation` (a logged real answer), `contentFilter` (the
/// older documented shape, status unverified, so also read from a 200), and OpenAI's own
/// `moderation_blocked`, which GPT image deployments may pass through.
const CONTENT_FILTER_CODES: [&str; 5] = [
    "content_filter",
    "content_policy_violation",
    "ResponsibleAIPolicyViolation",
    "contentFilter",
    "moderation_blocked",
];

/// What a 403 says when Azure's abuse monitoring has suspended the resource: a policy block,
/// not a rejected key (providers-2.md §10.4; Azure's troubleshooting page).
const SUSPENDED: &str = "temporarily blocked";

/// How calls reach the deployments of one Azure OpenAI resource: the API form the configured
/// `api-version` selects, and the deployment name of every upstream model that is not
/// deployed under its own id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Routing {
    /// The deployment form's `api-version`; `None` for the v1 API.
    api_version: Option<String>,
    /// Deployment names by upstream model id.
    deployments: BTreeMap<String, String>,
}

impl Default for Routing {
    /// The deployment form at [`DEFAULT_API_VERSION`], every model deployed under its id.
    fn default() -> Self {
        Self {
            api_version: Some(DEFAULT_API_VERSION.to_owned()),
            deployments: BTreeMap::new(),
        }
    }
}

impl Routing {
    /// The routing `api_version` selects ([`V1_API`] the v1 API, any other the deployment
    /// form with that version), with `deployments` by upstream model id. Both go into URLs as
    /// they are, so they are held to the characters Azure's names use.
    pub(crate) fn new(
        api_version: &str,
        deployments: BTreeMap<String, String>,
    ) -> Result<Self, ProviderError> {
        if !is_name(api_version) {
            return Err(upstream::failed(format!(
                "the `azure` api-version `{}` may hold only letters, digits, `-`, `_` and `.`",
                upstream::short(api_version)
            )));
        }
        if let Some((model, name)) = deployments.iter().find(|(_, name)| !is_name(name)) {
            return Err(upstream::failed(format!(
                "the `azure` deployment `{}` of `{model}` may hold only letters, digits, `-`, `_` and `.`",
                upstream::short(name)
            )));
        }
        Ok(Self {
            api_version: (api_version != V1_API).then(|| api_version.to_owned()),
            deployments,
        })
    }

    /// The deployment serving `upstream`: its mapped name, else the id itself.
    pub(crate) fn deployment<'a>(&'a self, upstream: &'a str) -> &'a str {
        self.deployments
            .get(upstream)
            .map_or(upstream, String::as_str)
    }

    /// Where a call of `upstream` goes below the resource endpoint `root` (ending with `/`),
    /// and the `model` its body names: the deployment, which the v1 API requires there
    /// (providers-2.md §10.1) and the deployment form takes as well.
    pub(crate) fn route(&self, root: &str, upstream: &str) -> ImagesRoute {
        let deployment = self.deployment(upstream);
        let url = |operation: &str| match &self.api_version {
            None => format!("{root}openai/v1/images/{operation}"),
            Some(version) => format!(
                "{root}openai/deployments/{deployment}/images/{operation}?api-version={version}"
            ),
        };
        ImagesRoute {
            generations: url("generations"),
            edits: url("edits"),
            model: deployment.to_owned(),
        }
    }
}

/// Whether `text` is a name Azure gives deployments and API versions: letters, digits, `-`,
/// `_` and `.`, with at least one letter or digit (so never `..`, which would climb the path).
fn is_name(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && text.chars().any(|c| c.is_ascii_alphanumeric())
}

/// The error for a failed answer of the deployment `deployment`: a content-filter refusal
/// (whatever its status, a 200 included) is a moderation block that keeps any revised
/// prompt; a suspended resource and a missing deployment are the operator's to fix; the rest
/// reads as OpenAI's envelope does.
pub(crate) fn error_from_status(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    deployment: &str,
) -> ProviderError {
    let error = compat::read_error(body);
    let inner = wire::inner_error(body);
    let filtered = error
        .code()
        .into_iter()
        .chain(inner.code)
        .any(|code| CONTENT_FILTER_CODES.contains(&code.as_str()));
    if filtered {
        let said = error
            .message()
            .unwrap_or("Azure OpenAI's content filter refused the request");
        let message = match inner.revised_prompt {
            Some(revised) => format!("{said} (revised prompt: {revised})"),
            None => said.to_owned(),
        };
        return ProviderError::ModerationBlocked {
            message: upstream::short(&message),
        };
    }
    match status {
        403 if error.message().is_some_and(|m| m.contains(SUSPENDED)) => upstream::failed(
            "the Azure OpenAI resource is temporarily blocked by Azure's abuse monitoring (HTTP 403)",
        ),
        404 => upstream::failed(format!(
            "Azure OpenAI has no deployment `{deployment}` at this endpoint and api-version \
             (HTTP 404): deploy the model, or map it to its deployment in \
             `[providers.azure] deployments`"
        )),
        _ => openai_error(status, retry_after, body, deployment),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refusal(status: u16, body: serde_json::Value) -> ProviderError {
        error_from_status(status, None, body.to_string().as_bytes(), "d")
    }

    #[test]
    fn the_api_version_picks_the_form_and_the_deployment_the_name() {
        let mapped = BTreeMap::from([("gpt-image-2".to_owned(), "images-prod".to_owned())]);
        let dated = Routing::new("2025-04-01-preview", mapped.clone()).unwrap();
        assert_eq!(
            dated.route("https://r.openai.azure.com/", "gpt-image-2"),
            ImagesRoute {
                generations: "https://r.openai.azure.com/openai/deployments/images-prod/images/generations?api-version=2025-04-01-preview".into(),
                edits: "https://r.openai.azure.com/openai/deployments/images-prod/images/edits?api-version=2025-04-01-preview".into(),
                model: "images-prod".into(),
            }
        );
        let v1 = Routing::new(V1_API, mapped).unwrap();
        let route = v1.route("https://r.openai.azure.com/", "gpt-image-1.5");
        assert_eq!(
            (route.edits.as_str(), route.model.as_str()),
            (
                "https://r.openai.azure.com/openai/v1/images/edits",
                "gpt-image-1.5"
            )
        );
        assert_eq!(
            Routing::default(),
            Routing::new(DEFAULT_API_VERSION, BTreeMap::new()).unwrap()
        );
    }

    #[test]
    fn names_that_would_bend_a_url_are_refused() {
        for bad in ["..", "a/b", "x?y=1", "", "dé"] {
            let deployments = BTreeMap::from([("m".to_owned(), bad.to_owned())]);
            assert!(Routing::new("v1", deployments).is_err(), "{bad:?}");
            assert!(Routing::new(bad, BTreeMap::new()).is_err(), "{bad:?}");
        }
        assert!(Routing::new("2024-10-21", BTreeMap::new()).is_ok());
    }

    #[test]
    fn every_content_filter_shape_is_a_moderation_block() {
        let documented = json!({"created": 1698435368, "error": {"code": "contentFilter",
            "message": "Generated image was filtered as a result of our safety system."}});
        for status in [200, 400] {
            assert_eq!(
                refusal(status, documented.clone()),
                ProviderError::ModerationBlocked {
                    message: "Generated image was filtered as a result of our safety system."
                        .into()
                }
            );
        }
        let logged = json!({"error": {"code": "content_policy_violation",
            "type": "invalid_request_error", "message": "Rejected by our safety system.",
            "inner_error": {"code": "ResponsibleAIPolicyViolation", "revised_prompt": "a fox"}}});
        assert_eq!(
            refusal(400, logged),
            ProviderError::ModerationBlocked {
                message: "Rejected by our safety system. (revised prompt: a fox)".into()
            }
        );
        let bare = json!({"error": {"code": "content_filter"}});
        assert!(matches!(
            refusal(400, bare),
            ProviderError::ModerationBlocked { message } if message.contains("content filter")
        ));
    }

    #[test]
    fn suspension_and_missing_deployments_are_named_and_the_rest_reads_as_openai() {
        let suspended = json!({"error": {"code": "Forbidden", "message":
            "Your resource has been temporarily blocked because we detected behavior that may violate our content policy."}});
        assert!(matches!(
            refusal(403, suspended),
            ProviderError::Failed { message } if message.contains("abuse monitoring")
        ));
        assert_eq!(
            refusal(
                403,
                json!({"error": {"code": "Forbidden", "message": "Access denied"}})
            ),
            ProviderError::Unauthorized { status: 403 }
        );
        let missing = json!({"error": {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not exist."}});
        assert!(matches!(
            refusal(404, missing),
            ProviderError::Failed { message } if message.contains("`d`") && message.contains("deployments")
        ));
        assert!(matches!(
            refusal(400, json!({"error": {"code": "invalid_value", "param": "size", "message": "bad size"}})),
            ProviderError::InvalidRequest { param: Some(p), .. } if p == "size"
        ));
        let wait = Some(Duration::from_secs(3));
        assert_eq!(
            error_from_status(429, wait, b"{}", "d"),
            ProviderError::RateLimited { retry_after: wait }
        );
    }
}
