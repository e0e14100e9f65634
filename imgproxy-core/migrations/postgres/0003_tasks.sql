-- Asynchronous tasks and their webhook deliveries (postgres). Keep in step with the other dialect.
-- Times are unix milliseconds. A task is claimed by exactly one instance with a conditional
-- update (status 'queued' -> 'processing'), and finished by the same kind of update, so each
-- runs and ends once whatever the number of instances.

CREATE TABLE tasks (
    id               TEXT PRIMARY KEY NOT NULL,
    tenant           TEXT NOT NULL,
    -- The paying key, for metered callers.
    key_id           TEXT,
    -- 'generation' or 'edit': the endpoint it came from (names its events and webhook type).
    kind             TEXT NOT NULL,
    model            TEXT NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('queued', 'processing', 'succeeded', 'failed', 'canceled')),
    -- JSON: the request as submitted (images of a multipart edit as data URLs).
    request          TEXT NOT NULL,
    -- JSON: the stored result (image keys and metadata), on success.
    result           TEXT,
    -- JSON: {"message", "type", "param", "code"}, on failure.
    error            TEXT,
    credits_used     BIGINT,
    callback_url     TEXT,
    owner            TEXT,
    -- JSON: {"<first_index>": "<token>"}, the upstream jobs its calls started, to resume them
    -- after a restart.
    upstream_jobs    TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms    BIGINT NOT NULL,
    started_at_ms    BIGINT,
    heartbeat_ms     BIGINT,
    finished_at_ms   BIGINT
);
CREATE INDEX tasks_queued ON tasks (status, created_at_ms);
CREATE INDEX tasks_tenant ON tasks (tenant, created_at_ms);

-- One row per terminal task with a callback_url (the payload is the task, which no longer
-- changes). Claimed for an attempt by pushing next_attempt_ms past the attempt's timeout (a
-- lease), so one instance delivers at a time.
CREATE TABLE webhook_deliveries (
    task_id          TEXT PRIMARY KEY NOT NULL,
    tenant           TEXT NOT NULL,
    url              TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT NOT NULL,
    next_attempt_ms  BIGINT NOT NULL,
    last_error       TEXT,
    created_at_ms    BIGINT NOT NULL,
    finished_at_ms   BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_ms);

-- Standard Webhooks signing secrets, one per tenant, made on first use.
CREATE TABLE webhook_secrets (
    tenant     TEXT PRIMARY KEY NOT NULL,
    secret     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
