-- API keys, credit reservations and the ledger (SQLite). Keep in step with ../postgres.
-- Amounts are integer credits; `created_at` is unix seconds, `*_ms` unix milliseconds.

CREATE TABLE api_keys (
    id                TEXT PRIMARY KEY NOT NULL,
    name              TEXT NOT NULL,
    -- Only a SHA-256 of the secret is kept; its first 16 hex digits find the row, and the full
    -- hash is then compared in constant time.
    hash_prefix       TEXT NOT NULL,
    secret_hash       TEXT NOT NULL UNIQUE,
    -- The conditional updates never let it go negative; the CHECK makes a bug fail loudly.
    balance           INTEGER NOT NULL CHECK (balance >= 0),
    rpm               INTEGER,
    images_per_minute INTEGER,
    max_concurrent    INTEGER,
    models            TEXT,
    revoked           BOOLEAN NOT NULL DEFAULT FALSE,
    created_at        INTEGER NOT NULL,
    revoked_at        INTEGER
);
CREATE INDEX api_keys_hash_prefix ON api_keys (hash_prefix);

-- One row per metered request. Scoped by key so that one key's request id can never touch
-- another key's reservation.
CREATE TABLE reservations (
    key_id         TEXT NOT NULL REFERENCES api_keys (id),
    request_id     TEXT NOT NULL,
    amount         INTEGER NOT NULL CHECK (amount >= 0),
    status         TEXT NOT NULL CHECK (status IN ('reserved', 'settled', 'refunded')),
    kept           INTEGER,
    owner          TEXT NOT NULL,
    model          TEXT NOT NULL,
    inputs         TEXT NOT NULL,
    reserved_at_ms INTEGER NOT NULL,
    closed_at_ms   INTEGER,
    PRIMARY KEY (key_id, request_id)
);
CREATE INDEX reservations_open ON reservations (owner, reserved_at_ms) WHERE status = 'reserved';

CREATE TABLE ledger (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id        TEXT NOT NULL REFERENCES api_keys (id),
    kind          TEXT NOT NULL CHECK (kind IN ('reserve', 'settle', 'refund', 'credit')),
    request_id    TEXT,
    amount        INTEGER NOT NULL,
    balance_after INTEGER NOT NULL,
    model         TEXT,
    inputs        TEXT,
    created_at    INTEGER NOT NULL
);
CREATE INDEX ledger_key ON ledger (key_id, id);
