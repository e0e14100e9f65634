-- The id of the HTTP request that submitted a task (its `x-request-id`), shown in the task
-- object and its webhooks. NULL for tasks submitted before 0006 or without a request.
ALTER TABLE tasks ADD COLUMN request_id TEXT;
