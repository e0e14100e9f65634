//! `imgproxy sign-url`: a signed URL-API URL from the shell, with the server's own secret
//! (config, environment or data dir), for a key that exists and is not revoked.

use anyhow::Context as _;
use imgproxy_core::service::signing;

use crate::{
    cli::SignUrlArgs,
    config::Env,
    handlers::signed_urls::{GENERATE_PATH, MAX_EXPIRES_IN},
    keys, serve,
};

/// Prints the signed URL.
#[expect(clippy::print_stdout, reason = "the URL is the command's output")]
pub async fn run(args: SignUrlArgs, env: &dyn Env) -> anyhow::Result<()> {
    let settings = keys::settings(&args.state, env)?;
    let signer = serve::url_signer(&settings)?;
    let query = args
        .query
        .trim()
        .trim_start_matches(GENERATE_PATH)
        .trim_start_matches('?');
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    anyhow::ensure!(
        !pairs.is_empty(),
        "give the URL-API query to sign, e.g. 'prompt=a+red+fox&model=placeholder'"
    );
    if let Some((name, _)) = pairs
        .iter()
        .find(|(k, _)| [signing::SIG, signing::EXPIRES, signing::KEY_ID].contains(&k.as_str()))
    {
        anyhow::bail!("`{name}` is added by the signer; leave it out of the query");
    }
    if let Some(key_id) = &args.key_id {
        let db = keys::connect_with(&settings).await?;
        let key = db
            .get_key(key_id)
            .await
            .with_context(|| format!("key `{key_id}`"))?;
        anyhow::ensure!(!key.revoked, "key `{key_id}` is revoked");
        db.close().await;
        pairs.push((signing::KEY_ID.to_owned(), key.id));
    }
    let expires_in = args.expires_in.unwrap_or(settings.url_ttl.as_secs());
    anyhow::ensure!(
        (1..=MAX_EXPIRES_IN).contains(&expires_in),
        "--expires-in must be 1 to {MAX_EXPIRES_IN} seconds"
    );
    let expires_at = imgproxy_core::clock::now_secs()
        .saturating_add(i64::try_from(expires_in).unwrap_or(i64::MAX));
    let base = args
        .base_url
        .or(settings.public_url)
        .unwrap_or_else(|| format!("http://{}", settings.listen));
    let signed = signer.sign(GENERATE_PATH, &pairs, expires_at);
    println!("{}{GENERATE_PATH}?{signed}", base.trim_end_matches('/'));
    Ok(())
}
