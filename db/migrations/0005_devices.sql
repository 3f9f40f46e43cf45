-- 0005: devices: one row per minted connection token, named by the token's id (its `jti`), so a
-- user's tokens can be listed and revoked. The token itself is never stored: its id cannot sign
-- anyone in. A token minted before this release gets its row when it first connects.
CREATE TABLE devices (
    token_id     TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    last_seen_at TEXT,
    user_agent   TEXT,
    revoked_at   TEXT
) STRICT;

-- A user's devices, newest first (the list, revoking all of them).
CREATE INDEX devices_by_user ON devices (user_id, created_at);
-- What has expired (the purge), and the revoked tokens still alive, loaded at start.
CREATE INDEX devices_by_expiry ON devices (expires_at);
