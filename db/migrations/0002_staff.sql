-- 0002: the staff dashboard: staff accounts, server-side sessions, failed logins (throttling).
-- Never edit a migration that has shipped: add the next number instead.

-- People who sign in to the dashboard. Only an Argon2id hash of the password is kept.
CREATE TABLE staff_accounts (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'staff')),
    created_at    TEXT NOT NULL,
    disabled_at   TEXT
) STRICT;

-- One row per sign-in. The cookie carries the session id; only its SHA-256 is stored here, so a
-- copy of the database does not let anyone sign in. Logout sets revoked_at: the cookie, though
-- still decryptable, no longer authenticates anyone.
CREATE TABLE staff_sessions (
    id_hash    TEXT PRIMARY KEY,
    username   TEXT NOT NULL REFERENCES staff_accounts (username),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT
) STRICT;

-- Failed sign-ins per account name within the throttling window; cleared by a success.
CREATE TABLE login_failures (
    id       INTEGER PRIMARY KEY,
    username TEXT NOT NULL,
    at       TEXT NOT NULL
) STRICT;

CREATE INDEX login_failures_by_user ON login_failures (username, at);

-- "Read in the last minute/hour" on the overview: partial, so unread rows cost nothing.
CREATE INDEX notifications_read ON notifications (read_at) WHERE read_at IS NOT NULL;
