-- The generation cache, named generations and uploaded files (postgres). Keep in step with the other
-- dialect. Every row is scoped by `tenant`: an API key's id, or '' for the operator (master
-- key or an open server). Image bytes live in the image store; rows hold their keys.

-- One row per distinct request: `cache_key` hashes the canonical validated request.
CREATE TABLE cache_entries (
    tenant     TEXT NOT NULL,
    cache_key  TEXT NOT NULL,
    model      TEXT NOT NULL,
    -- JSON: {"images": [{"key", "mime", "revised_prompt"}], "meta": {...}, "usage": {...}}
    result     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, cache_key)
);

-- Single-flight across instances: whoever holds the row generates that request; the others
-- wait for its cache entry. A claim older than the model's deadline is stale and may be taken.
CREATE TABLE generation_claims (
    tenant        TEXT NOT NULL,
    cache_key     TEXT NOT NULL,
    owner         TEXT NOT NULL,
    claimed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, cache_key)
);

-- Seed 000's `filename`: a name that recalls one image.
CREATE TABLE named_images (
    tenant         TEXT NOT NULL,
    name           TEXT NOT NULL,
    image_key      TEXT NOT NULL,
    model          TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);

-- `POST /v1/files`.
CREATE TABLE files (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant     TEXT NOT NULL,
    filename   TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    bytes      BIGINT NOT NULL,
    image_key  TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX files_tenant ON files (tenant, created_at);
