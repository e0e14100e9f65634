-- `Idempotency-Key` (postgres). Keep in step with the other dialect. One row per key a tenant
-- sent: the first request with it runs, every later one with the same key answers what it
-- made. A failed attempt deletes its row (the failure was refunded; a retry runs again).
CREATE TABLE idempotency_keys (
    tenant          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    -- SHA-256 (hex) of the route, how it is answered and the request as parsed: the same key
    -- with another request is a conflict.
    fingerprint     TEXT NOT NULL,
    -- 'running' while the first request runs, then 'done'.
    state           TEXT NOT NULL,
    -- The running attempt (random), so that only it can finish or release the row.
    attempt         TEXT NOT NULL,
    -- The instance that runs it: a dead instance's attempt is taken over at once.
    instance        TEXT NOT NULL,
    -- JSON, once done: what a task keeps, {"images": {"images": [..], ...}, "usage": {...}}.
    result          TEXT,
    -- Once done, for `async` requests: the task it submitted.
    task_id         TEXT,
    -- Unix seconds of the first request; the row expires after the retention window.
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant, idempotency_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
