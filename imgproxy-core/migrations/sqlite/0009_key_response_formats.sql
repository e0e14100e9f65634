-- A key's own `response_format` for its generations and edits that name none: NULL for the
-- server's `default_response_format`, else `b64_json` or `url`.
ALTER TABLE api_keys ADD COLUMN default_response_format TEXT
    CHECK (default_response_format IN ('b64_json', 'url'));
