-- Per-key rate and concurrency limits shared by the instances of one database (postgres). Keep in
-- step with ../sqlite. Only Postgres deployments use the two tables (SQLite instances count in
-- process); SQLite has them so that both schemas stay the same.

-- Before 0005, `rpm = 0` and `images_per_minute = 0` meant "unlimited" while
-- `max_concurrent = 0` refused everything. Zero is now refused when a key is created and means
-- "nothing allowed" wherever it is still found; the stored zeros keep what they meant when
-- they were written.
UPDATE api_keys SET rpm = NULL WHERE rpm = 0;
UPDATE api_keys SET images_per_minute = NULL WHERE images_per_minute = 0;

-- What a key was admitted in each second of the last minute: `kind` is 'requests' or
-- 'images', `second` unix seconds (the database's clock), `used` requests or images. A key
-- holds at most 61 rows per kind: admission deletes older ones. No foreign key: the public
-- URL-API limits count under an id of their own (`public:<key id>`).
CREATE TABLE key_rate_buckets (
    key_id TEXT NOT NULL,
    kind   TEXT NOT NULL CHECK (kind IN ('requests', 'images')),
    second BIGINT NOT NULL,
    used   BIGINT NOT NULL CHECK (used > 0),
    PRIMARY KEY (key_id, kind, second)
);

-- One row per request in flight under a key with `max_concurrent`. The admitting process
-- renews `expires_at_ms` while the request runs and deletes the row when it ends; a crashed
-- process's rows expire, so its slots come back without anyone's help.
CREATE TABLE key_leases (
    id            TEXT PRIMARY KEY NOT NULL,
    key_id        TEXT NOT NULL,
    owner         TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX key_leases_key ON key_leases (key_id, expires_at_ms);
