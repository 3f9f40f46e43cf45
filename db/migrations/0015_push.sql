-- 0015: Web Push: the push subscriptions users register from their browsers, and what each push
-- service answered (for the dashboard). Pending pushes are durable timers (kinds `push`, one per
-- notification to route, and `push_send`, one per notification and subscription).
--
-- An endpoint URL and its keys are secrets (whoever holds them can push to that browser): they are
-- never logged and never shown; the dashboard shows the endpoint's host. An endpoint belongs to one
-- user at a time: registered again by someone else (a shared browser), it moves to them.
CREATE TABLE push_subscriptions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    endpoint     TEXT NOT NULL UNIQUE,
    -- The browser's public key (P-256, base64url) and authentication secret (RFC 8291).
    p256dh       TEXT NOT NULL,
    auth         TEXT NOT NULL,
    host         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    user_agent   TEXT,
    -- The last push service answer (HTTP status; 0: none) and when.
    last_status  INTEGER,
    last_sent_at TEXT
) STRICT;

-- A user's subscriptions, oldest first (the list, the per-user limit).
CREATE INDEX push_subscriptions_by_user ON push_subscriptions (user_id, created_at);

-- One row per answer (or failure to answer) of a push service: no content, no endpoint.
CREATE TABLE push_attempts (
    id              INTEGER PRIMARY KEY,
    notification_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    host            TEXT NOT NULL,
    -- The HTTP status (0: no answer: refused, timed out, unreachable; -1: the browser's key is not
    -- a P-256 point, nothing could be encrypted for it).
    status          INTEGER NOT NULL,
    -- sent, gone (the subscription was removed), retry, failed.
    outcome         TEXT NOT NULL CHECK (outcome IN ('sent', 'gone', 'retry', 'failed')),
    at              TEXT NOT NULL
) STRICT;

-- A notification's pushes (the dashboard), and the purge by age.
CREATE INDEX push_attempts_by_notification ON push_attempts (notification_id, id);
CREATE INDEX push_attempts_by_age ON push_attempts (at);
