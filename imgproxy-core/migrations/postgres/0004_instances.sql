-- Instances and their leases (postgres). Keep in step with ../sqlite.
-- Every process that serves requests or runs tasks holds a row under an id of its own, fresh at
-- every start, and pushes `expires_at_ms` forward in the background. A row whose lease expired
-- is a dead process (it has not renewed for a whole lease): only then may another instance
-- refund its open reservations, take over its generation claims and recover its tasks. Lease
-- times are the database's clock, so instances on hosts whose clocks differ agree on expiry.
CREATE TABLE instances (
    id            TEXT PRIMARY KEY NOT NULL,
    started_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

-- The instance whose request holds a generation claim: the claim is taken over as soon as that
-- instance's lease has expired. NULL for claims made before this migration (they go stale).
ALTER TABLE generation_claims ADD COLUMN instance TEXT;
CREATE INDEX generation_claims_instance ON generation_claims (instance);

-- The running tasks of an instance, found when it died.
CREATE INDEX tasks_running ON tasks (owner) WHERE status = 'processing';
