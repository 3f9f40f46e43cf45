-- 0001: notifications, API keys, idempotency records, audit log, server metadata.
-- Never edit a migration that has shipped: add the next number instead.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- seq is the rowid: monotonically increasing, the resume cursor clients hold.
CREATE TABLE notifications (
    seq          INTEGER PRIMARY KEY,
    id           TEXT    NOT NULL UNIQUE,
    user_id      TEXT    NOT NULL,
    type         TEXT    NOT NULL,
    title        TEXT    NOT NULL,
    message      TEXT    NOT NULL,
    data         TEXT    NOT NULL DEFAULT '{}',
    priority     TEXT    NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'critical')),
    created_at   TEXT    NOT NULL,
    delivered_at TEXT,
    read_at      TEXT
) STRICT;

CREATE INDEX notifications_by_user ON notifications (user_id, seq);
-- The offline queue: what a user has never been sent. Partial, so it stays small.
CREATE INDEX notifications_undelivered ON notifications (user_id, seq) WHERE delivered_at IS NULL;

-- API keys for backend services. Only a hash of the secret part is kept.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
) STRICT;

-- A retried request with the same Idempotency-Key stores nothing twice.
CREATE TABLE idempotency_keys (
    api_key_id       TEXT NOT NULL,
    key              TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    notification_ids TEXT NOT NULL,
    status           INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (api_key_id, key)
) STRICT;

-- Who did what and when. Never the body of a notification. Append-only.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT,
    details TEXT NOT NULL DEFAULT '{}'
) STRICT;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
