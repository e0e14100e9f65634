//! The layering of file, environment and flags into settings, end to end.

use std::collections::HashMap;

use secrecy::ExposeSecret as _;

use super::*;

struct FakeEnv(HashMap<&'static str, &'static str>);

impl Env for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|v| (*v).to_owned())
    }
}

fn no_state() -> Flags {
    Flags::default()
}

fn env(pairs: &[(&'static str, &'static str)]) -> FakeEnv {
    FakeEnv(pairs.iter().copied().collect())
}

/// The settings of no config file, no flags and these environment variables.
fn from_env(pairs: &[(&'static str, &'static str)]) -> anyhow::Result<Settings> {
    Config::default().into_settings(no_state(), &env(pairs))
}

#[test]
fn defaults_without_config_or_env() {
    let settings = from_env(&[]).unwrap();
    assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
    assert!(settings.providers.is_empty());
    assert!(settings.master_key.is_none());
}

#[test]
fn providers_are_enabled_by_their_keys_and_env_beats_file() {
    let config = Config::from_toml("[providers.openai]\nbase_url = \"http://file\"\n").unwrap();
    let vars = env(&[
        ("OPENAI_API_KEY", "sk-1"),
        ("OPENAI_BASE_URL", "http://env/v1"),
        ("GOOGLE_GENERATIVE_AI_API_KEY", "g-1"),
        ("FAL_KEY", "f-1"),
    ]);
    let settings = config.into_settings(no_state(), &vars).unwrap();
    let names: Vec<_> = settings.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["openai", "gemini", "fal"]);
    let openai = &settings.providers[0];
    assert_eq!(openai.base_url.as_deref(), Some("http://env/v1"));
    assert_eq!(openai.api_key.expose_secret(), "sk-1");
    assert_eq!(settings.providers[1].api_key.expose_secret(), "g-1");
    assert_eq!(settings.providers[2].base_url, None);
}

#[test]
fn a_provider_takes_a_pool_of_keys_from_its_variable_or_its_table() {
    let keys = |p: &ProviderSettings| {
        std::iter::once(&p.api_key)
            .chain(&p.more_keys)
            .map(|k| k.expose_secret().to_owned())
            .collect::<Vec<_>>()
    };
    let config = Config::from_toml(
        "[providers.gemini]\napi_key = [\"g-1\", \"g-2\"]\n\
         [providers.fal]\napi_key = \"f-1, f-2,\"\n",
    )
    .unwrap();
    let vars = env(&[("OPENAI_API_KEY", " sk-1 ,sk-2,,sk-3")]);
    let settings = config.into_settings(no_state(), &vars).unwrap();
    let pools: Vec<_> = settings.providers.iter().map(keys).collect();
    assert_eq!(
        pools,
        [
            vec!["sk-1", "sk-2", "sk-3"],
            vec!["g-1", "g-2"],
            vec!["f-1", "f-2"]
        ]
    );
    let report = settings.report().to_string();
    assert!(report.contains(r#""api_keys":3"#), "{report}");
    assert!(
        !report.contains("sk-") && !report.contains("g-1"),
        "{report}"
    );
    for text in ["api_key = []", "api_key = \" , \"", "api_key = 5"] {
        let err = Config::from_toml(&format!("[providers.xai]\n{text}\n")).unwrap_err();
        let shown = format!("{err:#}");
        assert!(shown.contains("api_key"), "{text}: {shown}");
    }
    let err = Config::from_toml("[providers.xai]\nmax_response_bytes = 0\n").unwrap_err();
    let shown = format!("{err:#}");
    assert!(
        shown.contains("max_response_bytes") && shown.contains("nonzero"),
        "{shown}"
    );
}

#[test]
fn azure_takes_its_api_version_and_deployments_from_env_over_its_table() {
    let azure = |vars: &[(&'static str, &'static str)]| {
        let vars = [
            &[
                ("AZURE_OPENAI_API_KEY", "az-1"),
                ("AZURE_OPENAI_ENDPOINT", "https://r.openai.azure.com"),
            ][..],
            vars,
        ]
        .concat();
        let settings = Config::from_toml(
            "[providers.azure]\napi_version = \"v1\"\n\
             deployments = { \"gpt-image-2\" = \"file-deploy\" }\n",
        )
        .unwrap()
        .into_settings(no_state(), &env(&vars))?;
        let azure = settings
            .providers
            .into_iter()
            .next()
            .context("no provider")?;
        Ok::<_, anyhow::Error>((azure.api_version, azure.deployments))
    };
    let (version, deployments) = azure(&[]).unwrap();
    assert_eq!(version.as_deref(), Some("v1"));
    assert_eq!(deployments["gpt-image-2"], "file-deploy");
    let (version, deployments) = azure(&[
        (ENV_AZURE_API_VERSION, "2025-04-01-preview"),
        (
            ENV_AZURE_DEPLOYMENTS,
            " gpt-image-2 = env-deploy, gpt-image-1.5=older,",
        ),
    ])
    .unwrap();
    assert_eq!(version.as_deref(), Some("2025-04-01-preview"));
    assert_eq!(
        deployments.into_iter().collect::<Vec<_>>(),
        [
            ("gpt-image-1.5".to_owned(), "older".to_owned()),
            ("gpt-image-2".to_owned(), "env-deploy".to_owned())
        ]
    );
    let err = azure(&[(ENV_AZURE_DEPLOYMENTS, "gpt-image-2")]).unwrap_err();
    assert!(
        format!("{err:#}").contains(ENV_AZURE_DEPLOYMENTS),
        "{err:#}"
    );
}

#[test]
fn deployments_belong_to_azure_and_azure_needs_its_endpoint() {
    for text in [
        "[providers.openai]\napi_key = \"sk\"\ndeployments = { a = \"b\" }\n",
        "[[providers.compatible]]\nname = \"gw\"\nbase_url = \"http://gw\"\napi_key = \"k\"\napi_version = \"v1\"\n",
    ] {
        let err = Config::from_toml(text)
            .unwrap()
            .into_settings(no_state(), &env(&[]))
            .unwrap_err();
        assert!(format!("{err:#}").contains("[providers.azure] only"), "{err:#}");
    }
    let settings = from_env(&[("AZURE_OPENAI_API_KEY", "az-1")]).unwrap();
    let err = settings.providers[0].start().unwrap_err();
    assert!(
        format!("{err:#}").contains("AZURE_OPENAI_ENDPOINT"),
        "{err:#}"
    );
}

#[test]
fn unknown_fields_are_rejected_by_name() {
    let err = Config::from_toml("[providers.openai]\nbase_ur = \"x\"\n").unwrap_err();
    assert!(format!("{err:#}").contains("base_ur"), "{err:#}");
}

#[test]
fn catalog_routing_fetch_and_compatible_providers_parse() {
    let text = r#"
        listen = "127.0.0.1:9000"
        [remap]
        "dall-e-3" = "gpt-image-2"
        [routing]
        "flux-1.1-pro" = ["bfl", "replicate"]
        [deadlines]
        ultra = 90
        [fetch]
        allow_hosts = ["images.internal"]
        [[providers.compatible]]
        name = "gw"
        base_url = "http://gw/v1"
        api_key_env = "GW_KEY"
        max_concurrent = 3
        max_response_bytes = 1048576
        [[models]]
        id = "gw-flux"
        provider = "gw"
        upstream = "flux-dev"
        upstream_params = { response_format = "b64_json" }
        [models.pricing]
        per_image = 3
    "#;
    let vars = env(&[("GW_KEY", "k"), (ENV_FETCH_MAX_BYTES, "1000")]);
    let settings = Config::from_toml(text)
        .unwrap()
        .into_settings(no_state(), &vars)
        .unwrap();
    assert_eq!(settings.listen.port(), 9000);
    assert_eq!(settings.providers[0].name, "gw");
    assert_eq!(settings.providers[0].max_concurrent, Some(3));
    assert_eq!(settings.providers[0].max_response_bytes, 1_048_576);
    assert_eq!(settings.models[0].id, "gw-flux");
    assert_eq!(settings.remap["dall-e-3"], "gpt-image-2");
    assert_eq!(settings.routing["flux-1.1-pro"], ["bfl", "replicate"]);
    assert_eq!(settings.deadlines["ultra"], 90);
    assert_eq!(
        (settings.fetch.allow_hosts.len(), settings.fetch.max_bytes),
        (1, Some(1000))
    );
}

#[test]
fn fetch_allow_list_comes_from_the_environment() {
    let settings = from_env(&[(ENV_FETCH_ALLOW_HOSTS, "127.0.0.1:9999, localhost")]).unwrap();
    assert_eq!(settings.fetch.allow_hosts, ["127.0.0.1:9999", "localhost"]);
}

#[test]
fn storage_urls_cache_url_api_and_public_mode_layer_env_over_file() {
    let text = r#"
        [storage]
        s3_bucket = "file-bucket"
        s3_region = "eu-west-1"
        [urls]
        secret = "0123456789abcdef0123456789abcdef"
        ttl_secs = 60
        [cache]
        enabled = false
        [url_api]
        default_model = "ultra"
        path_form = false
        [public]
        key_id = "key_file"
        rpm = 5
    "#;
    let vars = env(&[
        (ENV_S3_BUCKET, "env-bucket"),
        (ENV_S3_ENDPOINT, "http://127.0.0.1:9000"),
        (ENV_URL_TTL_SECS, "120"),
        (ENV_PUBLIC_KEY_ID, "key_env"),
    ]);
    let settings = Config::from_toml(text)
        .unwrap()
        .into_settings(no_state(), &vars)
        .unwrap();
    let s3 = settings.s3.unwrap();
    assert_eq!(
        (
            s3.bucket.as_str(),
            s3.endpoint.as_deref(),
            s3.region.as_deref()
        ),
        (
            "env-bucket",
            Some("http://127.0.0.1:9000"),
            Some("eu-west-1")
        )
    );
    assert_eq!(settings.url_ttl, Duration::from_secs(120));
    assert!(settings.url_secret.is_some());
    assert!(!settings.cache_enabled && !settings.path_form);
    assert_eq!(settings.url_api_default_model.as_deref(), Some("ultra"));
    let public = settings.public.unwrap();
    assert_eq!((public.key_id.as_str(), public.rpm), ("key_env", Some(5)));

    let defaults = from_env(&[]).unwrap();
    assert!(defaults.s3.is_none() && defaults.public.is_none());
    assert!(defaults.cache_enabled && defaults.path_form);
    assert_eq!(defaults.url_ttl, Duration::from_secs(7 * 24 * 60 * 60));
    let err = Config::from_toml("[public]\nrpm = 1\n")
        .unwrap()
        .into_settings(no_state(), &env(&[]))
        .unwrap_err();
    assert!(err.to_string().contains("key_id"), "{err}");
}

#[test]
fn task_settings_layer_env_over_file() {
    let text = "[tasks]\nworkers = 2\ninstance_lease_secs = 9\nwebhook_timeout_secs = 3\nwebhook_window_secs = 60\n";
    let vars = env(&[(ENV_TASK_WORKERS, "3"), (ENV_WEBHOOK_WINDOW_SECS, "5")]);
    let tasks = Config::from_toml(text)
        .unwrap()
        .into_settings(no_state(), &vars)
        .unwrap()
        .tasks;
    assert_eq!(tasks.workers, 3);
    assert_eq!(tasks.lease, Duration::from_secs(9));
    assert_eq!(
        tasks.renew,
        Duration::from_secs(3),
        "a third of a short lease"
    );
    assert_eq!(tasks.heartbeat, Duration::from_secs(2));
    assert_eq!(tasks.webhook_timeout, Duration::from_secs(3));
    assert_eq!(tasks.webhook_window, Duration::from_secs(5));
    let err = from_env(&[(ENV_INSTANCE_LEASE_SECS, "soon")]).unwrap_err();
    assert!(err.to_string().contains(ENV_INSTANCE_LEASE_SECS), "{err}");

    // The defaults: a 15 s lease renewed every 5 s; a renewal must come within the lease.
    let lease_and_renew = |vars| from_env(vars).map(|s| (s.tasks.lease, s.tasks.renew));
    let secs = Duration::from_secs;
    assert_eq!(lease_and_renew(&[]).unwrap(), (secs(15), secs(5)));
    let shorter = [
        (ENV_INSTANCE_LEASE_SECS, "4"),
        (ENV_INSTANCE_RENEW_SECS, "1"),
    ];
    assert_eq!(lease_and_renew(&shorter).unwrap(), (secs(4), secs(1)));
    let as_long = [
        (ENV_INSTANCE_LEASE_SECS, "4"),
        (ENV_INSTANCE_RENEW_SECS, "4"),
    ];
    let err = lease_and_renew(&as_long).unwrap_err();
    assert!(err.to_string().contains(ENV_INSTANCE_RENEW_SECS), "{err}");
}

#[test]
fn secrets_do_not_show_in_debug() {
    let config = Config::from_toml("master_key = \"super-secret\"").unwrap();
    assert!(!format!("{config:?}").contains("super-secret"));
}

#[test]
fn retention_is_off_by_default_and_limits_must_be_positive() {
    let settings = from_env(&[]).unwrap();
    assert!(!settings.retention.0.is_enabled());
    let config = Config::from_toml(
        "[storage]\nretention_max_age_secs = 86400\nretention_sweep_every_secs = 60\n",
    )
    .unwrap();
    let vars = env(&[("IMGPROXY_RETENTION_MAX_BYTES", "1000000")]);
    let (retention, every) = config.into_settings(no_state(), &vars).unwrap().retention;
    assert_eq!(
        retention.max_age,
        Some(std::time::Duration::from_secs(86_400))
    );
    assert_eq!(
        (retention.max_bytes, every.as_secs()),
        (Some(1_000_000), 60)
    );
    let zero = Config::from_toml("[storage]\nretention_max_bytes = 0\n").unwrap();
    let err = zero.into_settings(no_state(), &env(&[])).unwrap_err();
    assert!(
        format!("{err:#}").contains("retention_max_bytes"),
        "{err:#}"
    );
}
