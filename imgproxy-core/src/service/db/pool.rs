//! The two backends (SQLite, Postgres): connecting, migrating, and the macros that run one
//! body of portable SQL on either. Only `$N` placeholders, `RETURNING`, `ON CONFLICT` and `CASE`
//! are used, which both databases understand; the schemas differ only in column types.

use std::{
    borrow::Cow,
    fmt::Display,
    path::PathBuf,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use sqlx::{
    migrate::{Migration, MigrationType, Migrator},
    pool::PoolOptions,
    postgres::{PgConnectOptions, PgPool, PgRow},
    sqlite::{
        SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteRow, SqliteSynchronous,
    },
    AssertSqlSafe, ConnectOptions, Connection, FromRow, SqlSafeStr,
};

use crate::{Error, Result};

/// How long a SQLite writer waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a connection (SQLite's held ones, Postgres's pooled ones): long
/// enough for hundreds of queued writes.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);
/// SQLite read connections; reads never block on the writer in WAL mode.
const SQLITE_READERS: usize = 4;
/// Postgres connections per instance; several instances share one server's limit (100).
const POSTGRES_CONNECTIONS: u32 = 8;

/// The migrations of `$dialect` (a folder of `migrations/`), in order: version, name, SQL. Both
/// dialects have the same list; only the SQL differs.
macro_rules! migrations {
    ($dialect:literal) => {
        &[
            migration!($dialect, 1, "accounts"),
            migration!($dialect, 2, "records"),
            migration!($dialect, 3, "tasks"),
            migration!($dialect, 4, "instances"),
            migration!($dialect, 5, "limits"),
            migration!($dialect, 6, "request_ids"),
            migration!($dialect, 7, "idempotency"),
            migration!($dialect, 8, "callback_formats"),
            migration!($dialect, 9, "key_response_formats"),
        ]
    };
}

/// Migration `$version` of `$dialect`, in `migrations/$dialect/000<version>_<name>.sql`.
macro_rules! migration {
    ($dialect:literal, $version:literal, $name:literal) => {
        (
            $version,
            $name,
            include_str!(concat!(
                "../../../migrations/",
                $dialect,
                "/000",
                $version,
                "_",
                $name,
                ".sql"
            )),
        )
    };
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = migrations!("sqlite");
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = migrations!("postgres");

/// A connection pool of either backend.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    /// All writes go through `writer`, one connection, so writers of this process queue in the
    /// pool instead of spinning on `SQLITE_BUSY`; `BEGIN IMMEDIATE` and the busy timeout cover
    /// other processes (the CLI) on the same file. Commits are written to the write-ahead log
    /// without waiting for the disk; `wal` then makes the durable ones durable (group commit).
    Sqlite {
        writer: SqliteConnections,
        /// `None` for an in-memory database, which lives in one connection: the writer's.
        reader: Option<SqliteConnections>,
        wal: Arc<WalSync>,
    },
    Postgres(PgPool),
}

/// SQLite connections opened at the start and held for good rather than pooled: handing one
/// from a caller to the next is then the wake-up of a lock. A pool hands a released connection
/// on only after a task of its own has pinged it (a round trip to the connection's thread), so
/// under load every write waited out two more scheduling delays while every other writer
/// waited for it, and the writer, which all writes share, was the gateway's bottleneck (issue
/// 18). Kept open, the writer also keeps the write-ahead log in place (see [`WalSync`]).
#[derive(Debug, Clone)]
pub(crate) struct SqliteConnections {
    connections: Arc<[Arc<tokio::sync::Mutex<Option<SqliteConnection>>>]>,
    /// Where the next caller starts looking for a free connection.
    next: Arc<AtomicUsize>,
}

/// A connection held by one caller (`None` inside once the database is closed); it can move
/// into a task (see [`OpenBatch`]).
pub(crate) struct Held(tokio::sync::OwnedMutexGuard<Option<SqliteConnection>>);

impl SqliteConnections {
    fn new(connections: Vec<SqliteConnection>) -> Self {
        Self {
            connections: connections
                .into_iter()
                .map(|connection| Arc::new(tokio::sync::Mutex::new(Some(connection))))
                .collect(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A free connection, or the first of one to come free (callers of one connection are
    /// served in order); fails after [`ACQUIRE_TIMEOUT`], or once the database is closed.
    pub(crate) async fn lock(&self) -> Result<Held> {
        let count = self.connections.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let free = (0..count).find_map(|i| {
            self.connections[(start + i) % count]
                .clone()
                .try_lock_owned()
                .ok()
        });
        let held = match free {
            Some(held) => held,
            None => tokio::time::timeout(
                ACQUIRE_TIMEOUT,
                self.connections[start % count].clone().lock_owned(),
            )
            .await
            .map_err(|_| Error::Internal("database: timed out waiting for a connection".into()))?,
        };
        match *held {
            Some(_) => Ok(Held(held)),
            None => Err(Error::Internal("database: closed".into())),
        }
    }

    async fn close(&self) {
        for connection in self.connections.iter() {
            if let Some(connection) = connection.lock().await.take() {
                let _ = connection.close().await;
            }
        }
    }
}

impl std::ops::Deref for Held {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("checked by `SqliteConnections::lock`"))
    }
}

impl std::ops::DerefMut for Held {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.0
            .as_mut()
            .unwrap_or_else(|| unreachable!("checked by `SqliteConnections::lock`"))
    }
}

/// How a write transaction commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Commit {
    /// On disk before the write returns: it survives a power cut. Credits, keys, settlements,
    /// tasks: whatever a user or the operator would lose.
    Durable,
    /// It survives the process crashing at once, and a power cut once the next durable commit
    /// (of any caller) or checkpoint is on disk: rows whose loss in a power cut costs nothing,
    /// such as cache entries and generation claims (a cache), or on SQLite a reservation (its
    /// request is not answered before its settlement is durable, and an instance that comes
    /// back refunds what was left open anyway).
    Lazy,
}

/// Makes committed SQLite transactions durable with one `fdatasync` of the write-ahead log,
/// which covers every transaction committed before it: callers that wait at once share one
/// (group commit), and the one writer connection never waits on the disk. This is what
/// `synchronous = FULL` does at each commit, moved after it and shared. The writer connection
/// stays open, so the log is never deleted and made anew behind it.
#[derive(Debug)]
pub(crate) struct WalSync {
    /// The log and the database file, symlinks resolved (SQLite keeps its log beside the real
    /// file); `None` for an in-memory database.
    files: Option<Arc<(PathBuf, PathBuf)>>,
    /// Durable commits counted so far: a commit's number is taken after it has been written.
    durable_commits: AtomicU64,
    /// The number of the last durable commit known to be on disk; held while syncing.
    synced: tokio::sync::Mutex<u64>,
    /// Set by a failed sync, for good: after a failed `fsync` the kernel may have dropped the
    /// pages it could not write and report the next one clean, so no later write is called
    /// durable (a restart is what recovers).
    failed: AtomicBool,
}

impl WalSync {
    fn new(database: Option<PathBuf>) -> Self {
        let files = database.map(|database| {
            let mut log = database.clone().into_os_string();
            log.push("-wal");
            Arc::new((PathBuf::from(log), database))
        });
        Self {
            files,
            durable_commits: AtomicU64::new(0),
            synced: tokio::sync::Mutex::new(0),
            failed: AtomicBool::new(false),
        }
    }

    /// Returns once a commit made just before is as safe as `commit` says.
    pub(super) async fn after(&self, commit: Commit) -> Result<()> {
        match commit {
            Commit::Durable => self.sync().await,
            Commit::Lazy => Ok(()),
        }
    }

    /// Returns once every transaction this process committed before the call is on disk. An
    /// error means the commit may not survive a power cut (it is committed all the same).
    pub(super) async fn sync(&self) -> Result<()> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let mine = self.durable_commits.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().await;
        if self.failed.load(Ordering::SeqCst) {
            return Err(Error::Internal(
                "an earlier sync of the SQLite log failed: writes are no longer durable; \
                 restart the server"
                    .into(),
            ));
        }
        if *synced >= mine {
            // A sync that began after this commit was written has finished.
            return Ok(());
        }
        let covered = self.durable_commits.load(Ordering::SeqCst);
        let files = files.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let (log, database) = &*files;
            match std::fs::File::open(log) {
                Ok(file) => file.sync_data(),
                // No log: it was checkpointed into the database file; sync that instead.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::File::open(database)?.sync_data()
                }
                Err(error) => Err(error),
            }
        })
        .await
        .db()
        .and_then(DbExt::db);
        if let Err(error) = outcome {
            self.failed.store(true, Ordering::SeqCst);
            tracing::error!(%error, "syncing the SQLite log failed: writes are no longer durable");
            return Err(error);
        }
        *synced = covered;
        Ok(())
    }
}

/// Maps any database error to [`Error::Internal`]: the detail is logged, never sent.
pub(super) trait DbExt<T> {
    fn db(self) -> Result<T>;
}

impl<T, E: Display> DbExt<T> for Result<T, E> {
    fn db(self) -> Result<T> {
        self.map_err(|e| Error::Internal(format!("database: {e}")))
    }
}

/// Runs `$body` with `$tx` bound to a write transaction of whichever backend `$db` is, which
/// `$body` commits. The body is compiled once per backend, so the same SQL and binds serve
/// both. The commit is [`Commit::Durable`] unless the first argument is `lazy`. A durable
/// commit's sync runs after the body: a body must end with its commit, never return after it.
macro_rules! write_tx {
    (lazy $db:expr, $tx:ident => $body:expr) => {
        write_tx!(@commit $crate::service::db::pool::Commit::Lazy, $db, $tx => $body)
    };
    (@commit $commit:expr, $db:expr, $tx:ident => $body:expr) => {
        match $db {
            $crate::service::db::pool::Db::Sqlite { writer, wal, .. } => {
                // IMMEDIATE takes the write lock up front: a deferred transaction that reads and
                // then writes can fail with SQLITE_BUSY without waiting for another process.
                let mut held = writer.lock().await?;
                let mut $tx = $crate::service::db::pool::DbExt::db(
                    sqlx::Connection::begin_with(&mut *held, "BEGIN IMMEDIATE").await,
                )?;
                let done = $body;
                wal.after($commit).await?;
                done
            }
            $crate::service::db::pool::Db::Postgres(pool) => {
                let mut $tx = $crate::service::db::pool::DbExt::db(pool.begin().await)?;
                if $commit == $crate::service::db::pool::Commit::Lazy {
                    $crate::service::db::pool::DbExt::db(
                        sqlx::query("SET LOCAL synchronous_commit = off")
                            .execute(&mut *$tx)
                            .await,
                    )?;
                }
                $body
            }
        }
    };
    ($db:expr, $tx:ident => $body:expr) => {
        write_tx!(@commit $crate::service::db::pool::Commit::Durable, $db, $tx => $body)
    };
}

/// Runs `$body` with `$pool` bound to a connection for reads of whichever backend `$db` is
/// (`&mut *pool` for each statement but the last).
macro_rules! read_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::service::db::pool::Db::Sqlite { writer, reader, .. } => {
                let mut held = reader.as_ref().unwrap_or(writer).lock().await?;
                let $pool = &mut *held;
                $body
            }
            $crate::service::db::pool::Db::Postgres(pool) => {
                let mut connection = $crate::service::db::pool::DbExt::db(pool.acquire().await)?;
                let $pool = &mut *connection;
                $body
            }
        }
    };
}

/// `$query` with `$args` (a slice of [`Arg`]) bound to `$1`, `$2`, ... in order, for whichever
/// backend `$query` is built for.
macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match *arg {
                $crate::service::db::pool::Arg::Text(value) => query.bind(value),
                $crate::service::db::pool::Arg::Int(value) => query.bind(value),
                $crate::service::db::pool::Arg::Bool(value) => query.bind(value),
            };
        }
        query
    }};
}

pub(super) use {bind_args, read_pool, write_tx};

/// A value bound to a `$N` placeholder: the column types the schema uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arg<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(bool),
}

/// `From` conversions into [`Arg`], each `type => |value| arg`.
macro_rules! arg_from {
    ($($ty:ty => |$value:ident| $arg:expr),* $(,)?) => {
        $(impl<'a> From<$ty> for Arg<'a> {
            fn from($value: $ty) -> Self {
                $arg
            }
        })*
    };
}

arg_from! {
    &'a str => |value| Self::Text(Some(value)),
    &'a String => |value| Self::Text(Some(value)),
    Option<&'a str> => |value| Self::Text(value),
    &'a Option<String> => |value| Self::Text(value.as_deref()),
    i64 => |value| Self::Int(Some(value)),
    Option<i64> => |value| Self::Int(value),
    bool => |value| Self::Bool(value),
}

/// A row type both backends decode (a tuple of column types).
pub(super) trait Decoded:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> Decoded for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// SQLite's writer connection while a batch runs on it. If the caller goes away before it
/// knows how the batch ended, a task keeps the connection and sends a `ROLLBACK`, which runs
/// after the batch on the connection's thread, so that the next writer never finds a
/// transaction left open.
struct OpenBatch(Option<Held>);

impl Drop for OpenBatch {
    fn drop(&mut self) {
        let (Some(mut held), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            let _ = sqlx::query("ROLLBACK").execute(&mut *held).await;
        });
    }
}

/// Options of a pool of at most `connections`, whose callers wait up to [`ACQUIRE_TIMEOUT`] for
/// one.
fn pool_options<DB: sqlx::Database>(connections: u32) -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
}

impl Db {
    /// `sqlite://PATH` or `sqlite::memory:`.
    pub(super) async fn sqlite(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .db()?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL: a commit is in the log, safe from a crash of the process, without waiting
            // for the disk; `WalSync` then makes durable commits survive a power cut too.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory {
            if let Some(dir) = options.get_filename().parent() {
                if !dir.as_os_str().is_empty() {
                    tokio::fs::create_dir_all(dir).await.db()?;
                }
            }
        }
        let mut connection = options.connect().await.db()?;
        if in_memory {
            // An in-memory database lives as long as its one connection, which reads share.
            return Ok(Self::Sqlite {
                writer: SqliteConnections::new(vec![connection]),
                reader: None,
                wal: Arc::new(WalSync::new(None)),
            });
        }
        // NORMAL commits are only safe in WAL mode: refuse to run in any other.
        let mode: (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&mut connection)
            .await
            .db()?;
        if !mode.0.eq_ignore_ascii_case("wal") {
            return Err(Error::Internal(format!(
                "SQLite could not switch {} to WAL mode (it is in `{}` mode)",
                options.get_filename().display(),
                mode.0
            )));
        }
        let database = std::fs::canonicalize(options.get_filename()).db()?;
        // The writer has created the file and switched it to WAL before any reader opens it.
        let mut readers = Vec::with_capacity(SQLITE_READERS);
        for _ in 0..SQLITE_READERS {
            readers.push(options.connect().await.db()?);
        }
        Ok(Self::Sqlite {
            writer: SqliteConnections::new(vec![connection]),
            reader: Some(SqliteConnections::new(readers)),
            wal: Arc::new(WalSync::new(Some(database))),
        })
    }

    /// `postgres://...`; with `schema`, that schema is created and is the only one on the
    /// `search_path` of every pooled connection.
    pub(super) async fn postgres(url: &str, schema: Option<&str>) -> Result<Self> {
        let mut options = PgConnectOptions::from_str(url).db()?;
        if let Some(schema) = schema {
            let ident = schema_ident(schema)?;
            let mut conn = options.connect().await.db()?;
            sqlx::query(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {ident}"
            )))
            .execute(&mut conn)
            .await
            .db()?;
            conn.close().await.db()?;
            // A startup parameter, so it holds on every connection the pool ever opens.
            options = options.options([("search_path", schema)]);
        }
        let pool = pool_options(POSTGRES_CONNECTIONS)
            .connect_with(options)
            .await
            .db()?;
        Ok(Self::Postgres(pool))
    }

    /// Drops a schema made by [`Db::postgres`], with everything in it.
    pub(super) async fn drop_postgres_schema(url: &str, schema: &str) -> Result<()> {
        let ident = schema_ident(schema)?;
        let mut conn = PgConnectOptions::from_str(url).db()?.connect().await.db()?;
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {ident} CASCADE"
        )))
        .execute(&mut conn)
        .await
        .db()?;
        conn.close().await.db()
    }

    /// Applies the migrations this build embeds; Postgres serialises concurrent instances
    /// with an advisory lock.
    pub(super) async fn migrate(&self) -> Result<()> {
        match self {
            Self::Sqlite { writer, .. } => {
                let mut held = writer.lock().await?;
                migrator(SQLITE_MIGRATIONS).run(&mut *held).await.db()
            }
            Self::Postgres(pool) => migrator(POSTGRES_MIGRATIONS).run(pool).await.db(),
        }
    }

    /// Whether the database lives in this process (SQLite): it can then fail only with it.
    pub(super) fn is_embedded(&self) -> bool {
        matches!(self, Self::Sqlite { .. })
    }

    /// The database's clock in Unix milliseconds, as an SQL expression. Instance leases are
    /// written and compared with it alone, so instances on hosts whose clocks differ never
    /// disagree about which lease expired.
    pub(super) fn now_ms_sql(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Self::Postgres(_) => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// SQLite only: runs `batch`, statements that open a transaction (`BEGIN IMMEDIATE`) and
    /// end it (`COMMIT`), with `args` bound, in one round trip to the writer's thread, and
    /// returns the rows it returned, once the commit is as safe as `commit` says. `None` on
    /// Postgres, or when any statement failed: then nothing of the batch is kept (a
    /// transaction it left open is rolled back) and the caller takes its ordinary path, which
    /// finds out why. Each round trip inside a write transaction keeps every other writer
    /// waiting, and under load each costs as much as the scheduler takes to run two threads
    /// (issue 18), so a hot transaction whose usual outcome SQL alone can decide is worth one
    /// batch.
    pub(super) async fn sqlite_batch<T: Decoded>(
        &self,
        commit: Commit,
        batch: impl SqlSafeStr,
        args: &[Arg<'_>],
    ) -> Result<Option<Vec<T>>> {
        let Self::Sqlite { writer, wal, .. } = self else {
            return Ok(None);
        };
        let Some(rows) = Self::sqlite_batch_on(writer, batch, args).await else {
            return Ok(None);
        };
        wal.after(commit).await?;
        Ok(Some(rows))
    }

    async fn sqlite_batch_on<T: Decoded>(
        writer: &SqliteConnections,
        batch: impl SqlSafeStr,
        args: &[Arg<'_>],
    ) -> Option<Vec<T>> {
        let mut open = OpenBatch(Some(writer.lock().await.ok()?));
        let held = open.0.as_mut()?;
        let outcome = bind_args!(sqlx::query_as(batch), args)
            .fetch_all(&mut **held)
            .await;
        if outcome.is_err() {
            // "No transaction is active" when the batch never began or rolled back itself.
            let _ = sqlx::query("ROLLBACK").execute(&mut **held).await;
        }
        // Settled either way: the next writer may have the connection.
        open.0 = None;
        outcome
            .inspect_err(|error| {
                tracing::debug!(%error, "a write batch did not commit; taking the ordinary path");
            })
            .ok()
    }

    /// Runs one read, `sql` with `args` bound, and decodes every row.
    pub(super) async fn read_all<T: Decoded>(
        &self,
        sql: impl SqlSafeStr,
        args: &[Arg<'_>],
    ) -> Result<Vec<T>> {
        read_pool!(self, pool => {
            bind_args!(sqlx::query_as(sql), args).fetch_all(pool).await.db()
        })
    }

    /// Runs one read that finds at most one row (by key, or `LIMIT 1`), `sql` with `args`
    /// bound, and decodes it.
    pub(super) async fn read_optional<T: Decoded>(
        &self,
        sql: impl SqlSafeStr,
        args: &[Arg<'_>],
    ) -> Result<Option<T>> {
        Ok(self.read_all(sql, args).await?.into_iter().next())
    }

    /// Runs one statement, `sql` with `args` bound, in a durable write transaction of its own;
    /// returns how many rows it changed.
    pub(super) async fn write(&self, sql: impl SqlSafeStr, args: &[Arg<'_>]) -> Result<u64> {
        self.write_as(Commit::Durable, sql, args).await
    }

    /// [`Db::write`], committed as `commit` says.
    pub(super) async fn write_as(
        &self,
        commit: Commit,
        sql: impl SqlSafeStr,
        args: &[Arg<'_>],
    ) -> Result<u64> {
        if let Self::Sqlite { writer, wal, .. } = self {
            // One statement is a transaction of its own: no `BEGIN` and `COMMIT`, two round
            // trips to the writer's thread. SQLite retries its write lock under the busy
            // timeout for a statement outside a transaction, as `BEGIN IMMEDIATE` does.
            let done = bind_args!(sqlx::query(sql), args)
                .execute(&mut *writer.lock().await?)
                .await
                .db()?;
            wal.after(commit).await?;
            return Ok(done.rows_affected());
        }
        write_tx!(@commit commit, self, tx => {
            let done = bind_args!(sqlx::query(sql), args).execute(&mut *tx).await.db()?;
            tx.commit().await.db()?;
            Ok(done.rows_affected())
        })
    }

    /// Runs one statement with `RETURNING`, `sql` with `args` bound, in a durable write
    /// transaction of its own; returns the rows it returned.
    pub(super) async fn write_returning<T: Decoded>(
        &self,
        sql: impl SqlSafeStr,
        args: &[Arg<'_>],
    ) -> Result<Vec<T>> {
        self.write_returning_as(Commit::Durable, sql, args).await
    }

    /// [`Db::write_returning`], committed as `commit` says.
    pub(super) async fn write_returning_as<T: Decoded>(
        &self,
        commit: Commit,
        sql: impl SqlSafeStr,
        args: &[Arg<'_>],
    ) -> Result<Vec<T>> {
        if let Self::Sqlite { writer, wal, .. } = self {
            // As in `write_as`: one statement, no transaction around it.
            let rows = bind_args!(sqlx::query_as(sql), args)
                .fetch_all(&mut *writer.lock().await?)
                .await
                .db()?;
            wal.after(commit).await?;
            return Ok(rows);
        }
        write_tx!(@commit commit, self, tx => {
            let rows = bind_args!(sqlx::query_as(sql), args).fetch_all(&mut *tx).await.db()?;
            tx.commit().await.db()?;
            Ok(rows)
        })
    }

    pub(super) async fn close(&self) {
        match self {
            Self::Sqlite { writer, reader, .. } => {
                if let Some(reader) = reader {
                    reader.close().await;
                }
                writer.close().await;
            }
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

fn migrator(migrations: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// The quoted identifier of a schema name. Identifiers cannot be bound as parameters, so the
/// name is held to lowercase letters, digits and `_` (what Postgres would not fold or quote).
fn schema_ident(schema: &str) -> Result<String> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(Error::Internal(format!(
            "invalid schema name `{schema}`: use 1 to 63 of a-z, 0-9 and _, \
             not starting with a digit"
        )));
    }
    Ok(format!("\"{schema}\""))
}
pub(crate) use crate::clock::{now_ms, now_secs};

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_durable_writes_share_syncs_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::sqlite(&url).await.unwrap();
        db.write("CREATE TABLE t (n BIGINT)", &[]).await.unwrap();
        let writes = (0..32_i64).map(|n| {
            let db = db.clone();
            tokio::spawn(async move {
                let commit = if n % 2 == 0 {
                    Commit::Durable
                } else {
                    Commit::Lazy
                };
                db.write_as(commit, "INSERT INTO t (n) VALUES ($1)", &[n.into()])
                    .await
            })
        });
        for write in writes {
            assert_eq!(write.await.unwrap().unwrap(), 1);
        }
        let Db::Sqlite { wal, .. } = &db else {
            unreachable!("a SQLite URL opens SQLite")
        };
        // The table and the 16 durable inserts each counted one commit; concurrent ones
        // shared syncs, and the last sync covered every one of them.
        assert_eq!(wal.durable_commits.load(Ordering::SeqCst), 17);
        assert_eq!(*wal.synced.lock().await, 17);
        let rows: Vec<(i64,)> = db.read_all("SELECT n FROM t", &[]).await.unwrap();
        assert_eq!(rows.len(), 32);
    }
}
