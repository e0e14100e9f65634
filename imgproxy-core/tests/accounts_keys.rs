//! API keys on SQLite and Postgres: creation, authentication (only a hash is stored),
//! credits, revocation, a key's default response format, and connecting.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "accounts_harness.rs"]
mod harness;

use harness::{charge, Ctx, Place};
use imgproxy_core::{
    service::{
        db::{KeyChange, NewKey},
        Database,
    },
    Error, ResponseFormat,
};
use sha2::{Digest, Sha256};

on_both_backends!(key_lifecycle, key_response_format);

async fn key_lifecycle(ctx: &Ctx) {
    let accounts = &ctx.accounts;
    let new = NewKey {
        name: "alice".into(),
        credits: 10,
        rpm: Some(60),
        models: Some(vec!["placeholder".into()]),
        ..NewKey::default()
    };
    let created = accounts.create_key(new).await.unwrap();
    let (key, secret) = (&created.key, &created.secret);
    assert!(secret.starts_with("ipk_") && secret.len() >= 36, "{secret}");
    assert!(!format!("{created:?}").contains(secret.as_str()));
    assert_eq!((key.balance, key.rpm, key.revoked), (10, Some(60), false));

    // The secret authenticates; near misses and strangers do not.
    assert_eq!(
        accounts.authenticate(secret).await.unwrap().as_ref(),
        Some(key)
    );
    // The last character changed (to one it is not: a random secret may end in `x`).
    let last = if secret.ends_with('x') { 'y' } else { 'x' };
    let near_miss = format!("{}{last}", &secret[..secret.len() - 1]);
    for wrong in [near_miss.as_str(), "ipk_wrong", "", "sk-master"] {
        assert_eq!(accounts.authenticate(wrong).await.unwrap(), None, "{wrong}");
    }

    // Only the hash is stored: the secret is in no column and, on SQLite, nowhere in the files.
    let hash = hex::encode(Sha256::digest(secret.as_bytes()));
    let by_hash = "SELECT COUNT(*) FROM api_keys WHERE secret_hash = $1";
    assert_eq!(ctx.count(by_hash, &hash).await, 1);
    let anywhere = "SELECT COUNT(*) FROM api_keys WHERE id = $1 OR name = $1 OR secret_hash = $1 \
                    OR hash_prefix = $1 OR models = $1";
    assert_eq!(ctx.count(anywhere, secret).await, 0);
    if let Place::Sqlite { path, .. } = &ctx.place {
        for file in [path.clone(), path.with_extension("db-wal")] {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
    }
    let json = serde_json::to_string(key).unwrap();
    assert!(!json.contains(secret.as_str()) && !json.contains(&hash) && !json.contains("hash"));

    assert_eq!(&accounts.get_key(&key.id).await.unwrap(), key);
    assert_eq!(accounts.list_keys().await.unwrap(), vec![key.clone()]);
    harness::assert_not_found(&accounts.get_key("key_nope").await);

    // Credits: positive, negative within the balance, never below zero, never for nobody.
    assert_eq!(accounts.credit_key(&key.id, 5).await.unwrap().balance, 15);
    assert_eq!(accounts.credit_key(&key.id, -3).await.unwrap().balance, 12);
    let overdraw = accounts.credit_key(&key.id, -13).await;
    assert!(
        matches!(overdraw, Err(Error::InvalidRequest { .. })),
        "{overdraw:?}"
    );
    assert!(accounts.credit_key(&key.id, 0).await.is_err());
    harness::assert_not_found(&accounts.credit_key("key_nope", 1).await);
    let kinds: Vec<_> = accounts.recent_charges(&key.id, 10).await.unwrap();
    let amounts: Vec<_> = kinds
        .iter()
        .map(|e| (e.kind.as_str(), e.amount, e.balance_after))
        .collect();
    assert_eq!(
        amounts,
        [("credit", -3, 12), ("credit", 5, 15), ("credit", 10, 10)]
    );
    assert_eq!(ctx.assert_ledger_adds_up(&key.id).await, 12);

    // Revocation takes effect at once and is idempotent.
    let revoked = accounts.revoke_key(&key.id).await.unwrap();
    assert!(revoked.revoked);
    assert_eq!(accounts.revoke_key(&key.id).await.unwrap(), revoked);
    assert_eq!(accounts.authenticate(secret).await.unwrap(), None);
    let reserve = accounts.reserve(&key.id, "r1", 1, charge("me")).await;
    harness::assert_not_found(&reserve);
    harness::assert_not_found(&accounts.revoke_key("key_nope").await);
    assert_eq!(ctx.assert_ledger_adds_up(&key.id).await, 12);

    // Bad input is a 400, before the database is touched.
    for bad in [
        NewKey {
            name: " ".into(),
            ..NewKey::default()
        },
        NewKey {
            name: "x".into(),
            credits: -1,
            ..NewKey::default()
        },
    ] {
        assert!(matches!(
            accounts.create_key(bad).await,
            Err(Error::InvalidRequest { .. })
        ));
    }
}

async fn key_response_format(ctx: &Ctx) {
    let accounts = &ctx.accounts;
    let new = NewKey {
        name: "dalle-tool".into(),
        default_response_format: Some(ResponseFormat::Url),
        ..NewKey::default()
    };
    let created = accounts.create_key(new).await.unwrap();
    let key = &created.key;
    assert_eq!(key.default_response_format, Some(ResponseFormat::Url));
    assert_eq!(&accounts.get_key(&key.id).await.unwrap(), key);
    let authenticated = accounts.authenticate(&created.secret).await.unwrap();
    assert_eq!(authenticated.as_ref(), Some(key));
    let stored = "SELECT COUNT(*) FROM api_keys WHERE default_response_format = $1";
    assert_eq!(ctx.count(stored, "url").await, 1);
    assert_eq!(
        serde_json::to_value(key).unwrap()["default_response_format"],
        "url"
    );

    // A change that leaves it out keeps it; a value replaces it; `null` clears it.
    let change = |json: &str| -> KeyChange { serde_json::from_str(json).unwrap() };
    let mut current = key.clone();
    for (json, expected) in [
        (r#"{"rpm": 5}"#, Some(ResponseFormat::Url)),
        (
            r#"{"default_response_format": "b64_json"}"#,
            Some(ResponseFormat::B64Json),
        ),
        (r#"{"default_response_format": null}"#, None),
    ] {
        let settings = change(json).applied_to(&current);
        current = accounts.set_key_limits(&key.id, &settings).await.unwrap();
        assert_eq!(current.default_response_format, expected, "{json}");
        assert_eq!(accounts.get_key(&key.id).await.unwrap(), current, "{json}");
    }
    assert_eq!(current.rpm, Some(5));
    assert_eq!(ctx.count(stored, "url").await, 0);
    let unknown = serde_json::from_str::<KeyChange>(r#"{"default_response_format": "png"}"#);
    assert!(unknown.is_err(), "{unknown:?}");
}

#[tokio::test]
async fn connect_refuses_unknown_schemes_and_reopens_sqlite() {
    let error = Database::connect("mysql://localhost/x").await.unwrap_err();
    assert!(!error.to_string().contains("localhost"), "{error}");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let key = Database::connect(&url)
        .await
        .unwrap()
        .create_key(NewKey {
            name: "k".into(),
            credits: 3,
            ..NewKey::default()
        })
        .await
        .unwrap();
    // Migrations are not re-run, and the data is still there.
    let reopened = Database::connect(&url).await.unwrap();
    assert_eq!(reopened.get_key(&key.key.id).await.unwrap().balance, 3);
    let memory = Database::connect("sqlite::memory:").await.unwrap();
    assert_eq!(memory.list_keys().await.unwrap(), vec![]);
    assert!(
        Database::connect_postgres_schema("postgres://127.0.0.1:1/x", "Bad-Name")
            .await
            .is_err()
    );
}
