//! The `[providers]` section: one table per family in the registry (`crate::providers`), plus
//! the `[[providers.compatible]]` endpoints, and how they and each family's environment
//! variables become the providers to start. Which families exist, and how a client starts, is
//! the registry's business, not this file's.

use std::{collections::BTreeMap, fmt, time::Duration};

use anyhow::Context as _;
use secrecy::SecretString;
use serde::{de, Deserialize, Deserializer};

use super::{Env, ProviderTable};
use crate::providers::{ProviderEntry, ProviderSettings, OPENAI, PROVIDERS};

const DEFAULT_UPSTREAM_TIMEOUT_SECS: u64 = 300;

/// Azure OpenAI's `api-version` (over `[providers.azure] api_version`), the name Azure's own
/// samples give it.
pub const ENV_AZURE_API_VERSION: &str = "AZURE_OPENAI_API_VERSION";
/// Azure OpenAI's deployments as `model=deployment` pairs separated by commas (over
/// `[providers.azure] deployments`).
pub const ENV_AZURE_DEPLOYMENTS: &str = "AZURE_OPENAI_DEPLOYMENTS";

/// The key of the OpenAI-compatible endpoints.
const COMPATIBLE: &str = "compatible";

/// Every key `[providers]` takes: the registered families in order, then `compatible`.
static KEYS: [&str; PROVIDERS.len() + 1] = {
    let mut keys = [COMPATIBLE; PROVIDERS.len() + 1];
    let mut i = 0;
    while i < PROVIDERS.len() {
        keys[i] = PROVIDERS[i].name;
        i += 1;
    }
    keys
};

/// Upstream providers: one table per registered family, plus OpenAI-compatible endpoints.
/// Strict like every config table: a key that names no family is refused by name.
#[derive(Debug, Default)]
pub struct ProvidersConfig {
    /// `[providers.<family>]` tables by family name.
    pub families: BTreeMap<&'static str, ProviderTable>,
    /// Other OpenAI-compatible endpoints, each a provider of its own `name`.
    pub compatible: Vec<ProviderTable>,
}

impl ProvidersConfig {
    /// The providers to start: each registered family that has a key (from its environment
    /// variables, else its table), in registry order, then the compatible endpoints.
    pub(super) fn settings(mut self, env: &dyn Env) -> anyhow::Result<Vec<ProviderSettings>> {
        let mut providers = Vec::new();
        for family in PROVIDERS {
            let table = self.families.remove(family.name).unwrap_or_default();
            let key = family
                .key_vars
                .iter()
                .find_map(|var| env.var(var).as_deref().and_then(ApiKeys::parse));
            let Some(api_key) = key.map_or_else(|| table.key(family.name, env), |k| Ok(Some(k)))?
            else {
                continue;
            };
            let base_url = env.over(family.base_url_var, table.base_url.clone())?;
            let table = table.with_deployment_env(family.name, env)?;
            providers.push(table.start(family, family.name.to_owned(), base_url, api_key));
        }
        for table in self.compatible {
            let name = table
                .name
                .clone()
                .context("every [[providers.compatible]] needs a `name`")?;
            let base_url = table
                .base_url
                .clone()
                .with_context(|| format!("provider `{name}` needs a `base_url`"))?;
            let api_key = table
                .key(&name, env)?
                .with_context(|| format!("provider `{name}` needs `api_key` or `api_key_env`"))?;
            table.refuse_deployments(&name)?;
            providers.push(table.start(&OPENAI, name, Some(base_url), api_key));
        }
        Ok(providers)
    }
}

impl ProviderTable {
    /// The keys this table gives, inline or through `api_key_env`.
    fn key(&self, name: &str, env: &dyn Env) -> anyhow::Result<Option<ApiKeys>> {
        match (&self.api_key, &self.api_key_env) {
            (Some(keys), _) => Ok(Some(keys.clone())),
            (None, Some(var)) => env
                .var(var)
                .as_deref()
                .and_then(ApiKeys::parse)
                .map(Some)
                .with_context(|| {
                    format!("provider `{name}`: environment variable {var} is not set")
                }),
            (None, None) => Ok(None),
        }
    }

    /// The table of family `family` with Azure's environment variables over its
    /// `api_version` and `deployments`; any other family's table must not set them.
    fn with_deployment_env(mut self, family: &str, env: &dyn Env) -> anyhow::Result<Self> {
        if family != imgproxy_provider_azure::PROVIDER_ID {
            self.refuse_deployments(family)?;
            return Ok(self);
        }
        self.api_version = env.over(ENV_AZURE_API_VERSION, self.api_version.take())?;
        let file = std::mem::take(&mut self.deployments);
        self.deployments = env
            .over(ENV_AZURE_DEPLOYMENTS, Some(file))?
            .unwrap_or_default();
        Ok(self)
    }

    /// Refuses `api_version` and `deployments` in the table of provider `name`: they are Azure
    /// OpenAI's, and would do nothing elsewhere.
    fn refuse_deployments(&self, name: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.api_version.is_none() && self.deployments.is_empty(),
            "provider `{name}`: `api_version` and `deployments` are settings of [providers.azure] only"
        );
        Ok(())
    }

    /// The provider this table, under `name`, starts.
    fn start(
        self,
        family: &'static ProviderEntry,
        name: String,
        base_url: Option<String>,
        keys: ApiKeys,
    ) -> ProviderSettings {
        let ApiKeys(mut keys) = keys;
        let api_key = keys.remove(0);
        ProviderSettings {
            family,
            name,
            base_url,
            api_key,
            more_keys: keys,
            timeout: Duration::from_secs(
                self.timeout_secs.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_SECS),
            ),
            max_response_bytes: self.max_response_bytes.map_or(
                imgproxy_core::upstream::DEFAULT_MAX_DOWNLOAD_BYTES,
                std::num::NonZeroUsize::get,
            ),
            max_concurrent: self.max_concurrent,
            api_version: self.api_version,
            deployments: self.deployments,
        }
    }
}

/// The upstream keys of one provider, at least one: a pool when there are several. Written as
/// one string (keys separated by commas, as an environment variable holds them) or a list.
#[derive(Debug, Clone)]
pub struct ApiKeys(Vec<SecretString>);

impl ApiKeys {
    /// The keys in `text`, separated by commas (blanks around them ignored); `None` when it
    /// holds none.
    fn parse(text: &str) -> Option<Self> {
        let keys: Vec<SecretString> = text
            .split(',')
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .map(SecretString::from)
            .collect();
        (!keys.is_empty()).then_some(Self(keys))
    }
}

impl<'de> Deserialize<'de> for ApiKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// What the file may hold; the message never quotes it, as it is a key.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            One(String),
            Many(Vec<String>),
        }
        let text = match Written::deserialize(deserializer)
            .map_err(|_| de::Error::custom("`api_key` must be a string or a list of strings"))?
        {
            Written::One(text) => text,
            Written::Many(keys) => keys.join(","),
        };
        Self::parse(&text).ok_or_else(|| de::Error::custom("`api_key` holds no key"))
    }
}

/// A key of `[providers]`.
enum Key {
    /// A registered family's table.
    Family(&'static str),
    /// The compatible endpoints.
    Compatible,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl de::Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field identifier")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        if key == COMPATIBLE {
            return Ok(Key::Compatible);
        }
        PROVIDERS
            .iter()
            .find(|family| family.name == key)
            .map(|family| Key::Family(family.name))
            .ok_or_else(|| E::unknown_field(key, &KEYS))
    }
}

/// By hand rather than derived because the keys come from the registry; it accepts what the
/// derive of a struct with one field per family would.
impl<'de> Deserialize<'de> for ProvidersConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("ProvidersConfig", &KEYS, ProvidersVisitor)
    }
}

struct ProvidersVisitor;

impl<'de> de::Visitor<'de> for ProvidersVisitor {
    type Value = ProvidersConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct ProvidersConfig")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut config = ProvidersConfig::default();
        while let Some(key) = map.next_key()? {
            match key {
                Key::Family(name) => {
                    config.families.insert(name, map.next_value()?);
                }
                Key::Compatible => config.compatible = map.next_value()?,
            }
        }
        Ok(config)
    }

    /// The values in key order, as a derived struct takes them; missing ones are left out.
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut config = ProvidersConfig::default();
        for family in PROVIDERS {
            match seq.next_element::<Option<ProviderTable>>()? {
                Some(Some(table)) => {
                    config.families.insert(family.name, table);
                }
                Some(None) => {}
                None => return Ok(config),
            }
        }
        config.compatible = seq.next_element()?.unwrap_or_default();
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn keys_are_the_registry_then_compatible() {
        assert_eq!(
            KEYS[..PROVIDERS.len()],
            *PROVIDERS.iter().map(|p| p.name).collect::<Vec<_>>()
        );
        assert_eq!(KEYS.iter().filter(|k| **k == COMPATIBLE).count(), 1);
    }

    #[test]
    fn an_unknown_family_is_rejected_by_name() {
        let err = Config::from_toml("[providers.opena]\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("providers.opena"), "{text}");
        assert!(
            text.contains("unknown field `opena`, expected one of `openai`"),
            "{text}"
        );
    }

    #[test]
    fn tables_land_under_their_family() {
        let config = Config::from_toml(
            "[providers.xai]\ntimeout_secs = 5\n[[providers.compatible]]\nname = \"gw\"\n",
        )
        .unwrap();
        assert_eq!(config.providers.families["xai"].timeout_secs, Some(5));
        assert_eq!(config.providers.compatible[0].name.as_deref(), Some("gw"));
    }
}
