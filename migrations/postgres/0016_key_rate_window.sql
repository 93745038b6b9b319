-- A key's own rate limit is stored with its window (`20/s`, `600/m`), not only as a count in
-- the server's window. NULL: a key made before, whose count is per the server's window.
ALTER TABLE api_keys ADD COLUMN rate_limit_window_secs BIGINT;
