//! API keys: creation (the secret is returned once; only its hash is stored, and limits that
//! mean nothing are refused), listing, changing limits, revocation, credits and
//! authentication. Reservations
//! and the ledger are in `ledger.rs`; shared rate and concurrency counters in `limits.rs`.

use super::{
    key_not_found,
    pool::{bind_args, now_secs, write_tx, Arg, DbExt},
    secret, ApiKey, CreatedKey, Database, NewKey, MAX_BALANCE,
};
use crate::{Error, ResponseFormat, Result};

/// The columns of [`KeyRow`], in its order.
macro_rules! key_columns {
    () => {
        "id, name, balance, rpm, images_per_minute, max_concurrent, models, \
         default_response_format, revoked, created_at, secret_hash"
    };
}

/// `id, name, balance, rpm, images_per_minute, max_concurrent, models (JSON),
/// default_response_format, revoked, created_at, secret_hash`, as both backends decode them. The hash is only compared by
/// [`Database::authenticate`]; [`ApiKey`] never holds it.
type KeyRow = (
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    bool,
    i64,
    String,
);

/// Keys' names are shown in lists and logs: keep them to a line.
const MAX_NAME_CHARS: usize = 200;

impl Database {
    /// Creates a key. The secret is in the answer and nowhere else.
    pub async fn create_key(&self, new: NewKey) -> Result<CreatedKey> {
        let name = new.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.contains('\n') {
            return Err(Error::invalid_param(
                "name",
                format!("a key needs a name of 1 to {MAX_NAME_CHARS} characters on one line"),
            ));
        }
        if !(0..=MAX_BALANCE).contains(&new.credits) {
            return Err(Error::invalid_param(
                "credits",
                format!("credits must be between 0 and {MAX_BALANCE}"),
            ));
        }
        // Embedders that create keys directly get the same refusals as the admin API; only
        // the catalog check of `models` needs the caller's catalog (`NewKey::resolve_models`).
        new.check_limits()?;
        let models = match &new.models {
            Some(models) => Some(serde_json::to_string(models).db()?),
            None => None,
        };
        let (id, secret) = (secret::new_key_id()?, secret::new_secret()?);
        let hash = secret::hash_secret(&secret);
        let created_at = now_secs();
        let prefix = secret::lookup_prefix(&hash);
        let [rpm, images_per_minute, max_concurrent] = limit_args(&new);
        let key_args = [
            (&id).into(),
            name.into(),
            prefix.into(),
            (&hash).into(),
            new.credits.into(),
            rpm,
            images_per_minute,
            max_concurrent,
            (&models).into(),
            created_at.into(),
            format_arg(new.default_response_format),
        ];
        write_tx!(&self.db, tx => {
            bind_args!(
                sqlx::query(
                    "INSERT INTO api_keys (id, name, hash_prefix, secret_hash, balance, rpm, \
                     images_per_minute, max_concurrent, models, revoked, created_at, \
                     default_response_format) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, FALSE, $10, $11)",
                ),
                &key_args
            )
            .execute(&mut *tx)
            .await
            .db()?;
            if new.credits != 0 {
                // The opening balance is a credit like any other, so the ledger adds up.
                let credit = credit_args(&id, new.credits, new.credits, created_at);
                bind_args!(sqlx::query(INSERT_CREDIT), &credit)
                    .execute(&mut *tx)
                    .await
                    .db()?;
            }
            tx.commit().await.db()?;
        });
        let key = ApiKey {
            id,
            name: name.to_owned(),
            balance: new.credits,
            rpm: new.rpm,
            images_per_minute: new.images_per_minute,
            max_concurrent: new.max_concurrent,
            models: new.models,
            default_response_format: new.default_response_format,
            revoked: false,
            created_at,
        };
        Ok(CreatedKey { key, secret })
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let sql = concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys ORDER BY created_at, id"
        );
        let rows: Vec<KeyRow> = self.db.read_all(sql, &[]).await?;
        rows.into_iter().map(key_from_row).collect()
    }

    /// One key; [`Error::NotFound`] if there is none with this id.
    pub async fn get_key(&self, id: &str) -> Result<ApiKey> {
        let sql = concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = $1");
        let row: Option<KeyRow> = self.db.read_optional(sql, &[id.into()]).await?;
        key_from_row(row.ok_or_else(|| key_not_found(id))?)
    }

    /// Replaces a key's limits, models and default response format with those of `limits`
    /// (from [`super::KeyChange::applied_to`], its models already resolved against the
    /// catalog); they are checked first. Every instance sees the change from the key's next
    /// request.
    pub async fn set_key_limits(&self, id: &str, limits: &NewKey) -> Result<ApiKey> {
        limits.check_limits()?;
        let models = match &limits.models {
            Some(models) => Some(serde_json::to_string(models).db()?),
            None => None,
        };
        let [rpm, images_per_minute, max_concurrent] = limit_args(limits);
        let sql = concat!(
            "UPDATE api_keys SET rpm = $2, images_per_minute = $3, max_concurrent = $4, \
             models = $5, default_response_format = $6 WHERE id = $1 RETURNING ",
            key_columns!()
        );
        let args = [
            id.into(),
            rpm,
            images_per_minute,
            max_concurrent,
            (&models).into(),
            format_arg(limits.default_response_format),
        ];
        one_key(id, self.db.write_returning(sql, &args).await?)
    }

    /// Revokes a key at once; revoking twice changes nothing.
    pub async fn revoke_key(&self, id: &str) -> Result<ApiKey> {
        let sql = concat!(
            "UPDATE api_keys SET revoked = TRUE, revoked_at = COALESCE(revoked_at, $2) \
             WHERE id = $1 RETURNING ",
            key_columns!()
        );
        let rows = self
            .db
            .write_returning(sql, &[id.into(), now_secs().into()])
            .await?;
        one_key(id, rows)
    }

    /// Adds `amount` credits (negative to take some away) with a `credit` ledger row. The
    /// balance must stay between 0 and [`MAX_BALANCE`]; the check is part of the update, so a
    /// concurrent reservation cannot slip between them.
    pub async fn credit_key(&self, id: &str, amount: i64) -> Result<ApiKey> {
        if amount == 0 || !(-MAX_BALANCE..=MAX_BALANCE).contains(&amount) {
            return Err(Error::invalid_param(
                "amount",
                format!("amount must be non-zero and between -{MAX_BALANCE} and {MAX_BALANCE}"),
            ));
        }
        let row: Option<KeyRow> = write_tx!(&self.db, tx => {
            let row: Option<KeyRow> = bind_args!(
                sqlx::query_as(concat!(
                    "UPDATE api_keys SET balance = balance + $2 \
                     WHERE id = $1 AND balance + $2 BETWEEN 0 AND $3 RETURNING ",
                    key_columns!()
                )),
                &[id.into(), amount.into(), MAX_BALANCE.into()]
            )
            .fetch_optional(&mut *tx)
            .await
            .db()?;
            if let Some(row) = &row {
                bind_args!(sqlx::query(INSERT_CREDIT), &credit_args(id, amount, row.2, now_secs()))
                    .execute(&mut *tx)
                    .await
                    .db()?;
            }
            tx.commit().await.db()?;
            row
        });
        match row {
            Some(row) => key_from_row(row),
            None => {
                let key = self.get_key(id).await?;
                Err(Error::invalid_param(
                    "amount",
                    format!(
                        "key `{id}` has {} credits; adding {amount} would leave it \
                         outside 0..={MAX_BALANCE}",
                        key.balance
                    ),
                ))
            }
        }
    }

    /// The live key of a presented secret, or `None` if it is unknown or revoked.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<ApiKey>> {
        // Not one of ours (or absurdly long): no need to ask the database.
        if !secret.starts_with(secret::SECRET_PREFIX) || secret.len() > 256 {
            return Ok(None);
        }
        let hash = secret::hash_secret(secret);
        // Rows are found by a prefix of the hash and the full hash is compared in constant
        // time, so response times say nothing about how close a guess came.
        let sql = concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE hash_prefix = $1"
        );
        let prefix = secret::lookup_prefix(&hash);
        let rows: Vec<KeyRow> = self.db.read_all(sql, &[prefix.into()]).await?;
        for row in rows {
            if secret::hashes_match(&row.10, &hash) {
                let key = key_from_row(row)?;
                return Ok((!key.revoked).then_some(key));
            }
        }
        Ok(None)
    }
}

/// The one key a statement returned; [`Error::NotFound`] if it matched none.
fn one_key(id: &str, rows: Vec<KeyRow>) -> Result<ApiKey> {
    key_from_row(rows.into_iter().next().ok_or_else(|| key_not_found(id))?)
}

/// A `credit` ledger row: key id, amount, balance after, created at.
const INSERT_CREDIT: &str = "INSERT INTO ledger (key_id, kind, amount, balance_after, created_at) \
                             VALUES ($1, 'credit', $2, $3, $4)";

/// The binds of [`INSERT_CREDIT`].
fn credit_args(key_id: &str, amount: i64, balance_after: i64, created_at: i64) -> [Arg<'_>; 4] {
    [
        key_id.into(),
        amount.into(),
        balance_after.into(),
        created_at.into(),
    ]
}

/// `rpm`, `images_per_minute` and `max_concurrent` of `key`, as bound.
fn limit_args(key: &NewKey) -> [Arg<'static>; 3] {
    [key.rpm, key.images_per_minute, key.max_concurrent].map(|limit| limit.map(i64::from).into())
}

/// A key's `default_response_format`, as bound: its name, or NULL.
fn format_arg(format: Option<ResponseFormat>) -> Arg<'static> {
    format.map(ResponseFormat::name).into()
}

fn key_from_row(row: KeyRow) -> Result<ApiKey> {
    let (
        id,
        name,
        balance,
        rpm,
        images_per_minute,
        max_concurrent,
        models,
        default_response_format,
        revoked,
        created_at,
        _,
    ) = row;
    let limit = |value: Option<i64>| -> Result<Option<u32>> {
        value
            .map(|v| {
                u32::try_from(v)
                    .map_err(|_| Error::Internal(format!("key `{id}`: limit {v} out of range")))
            })
            .transpose()
    };
    let models = match models {
        Some(json) => Some(serde_json::from_str(&json).db()?),
        None => None,
    };
    let default_response_format = default_response_format
        .map(|name| {
            ResponseFormat::from_name(&name).ok_or_else(|| {
                Error::Internal(format!("key `{id}`: response format `{name}` is unknown"))
            })
        })
        .transpose()?;
    Ok(ApiKey {
        rpm: limit(rpm)?,
        images_per_minute: limit(images_per_minute)?,
        max_concurrent: limit(max_concurrent)?,
        id,
        name,
        balance,
        models,
        default_response_format,
        revoked,
        created_at,
    })
}
