-- The PostgreSQL store's core: the same tables as the SQLite store's (db/migrations/), with
-- timestamps kept as the same ISO 8601 UTC text and JSON kept as text, so both stores read and
-- write the same values.

CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- The last seq handed out (notifications and corrections share it); only the writer holding the
-- seq lock moves it (store/postgres/writer.py), so seqs are committed in order and never reused.
CREATE TABLE seq_counter (
    last bigint NOT NULL
);
INSERT INTO seq_counter (last) VALUES (0);

CREATE TABLE notifications (
    seq          bigint PRIMARY KEY,
    id           text   NOT NULL UNIQUE,
    user_id      text   NOT NULL,
    type         text   NOT NULL,
    title        text   NOT NULL,
    message      text   NOT NULL,
    data         text   NOT NULL DEFAULT '{}',
    priority     text   NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'critical')),
    created_at   text   NOT NULL,
    delivered_at text,
    read_at      text,
    expires_at   text,
    links        text
);
CREATE INDEX notifications_by_user ON notifications (user_id, seq);
CREATE INDEX notifications_read ON notifications (read_at) WHERE read_at IS NOT NULL;
CREATE INDEX notifications_expiry ON notifications (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    secret_hash  text NOT NULL,
    created_at   text NOT NULL,
    last_used_at text,
    revoked_at   text
);

CREATE TABLE idempotency_keys (
    api_key_id       text    NOT NULL,
    key              text    NOT NULL,
    request_hash     text    NOT NULL,
    notification_ids text    NOT NULL,
    status           integer NOT NULL,
    created_at       text    NOT NULL,
    PRIMARY KEY (api_key_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

CREATE TABLE audit_log (
    id      bigserial PRIMARY KEY,
    at      text NOT NULL,
    actor   text NOT NULL,
    action  text NOT NULL,
    target  text,
    details text NOT NULL DEFAULT '{}'
);
CREATE FUNCTION append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION append_only();

CREATE TABLE staff_accounts (
    username      text PRIMARY KEY,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'staff')),
    created_at    text NOT NULL,
    disabled_at   text
);

CREATE TABLE staff_sessions (
    id_hash    text PRIMARY KEY,
    username   text NOT NULL REFERENCES staff_accounts (username),
    created_at text NOT NULL,
    expires_at text NOT NULL,
    revoked_at text
);

CREATE TABLE login_failures (
    id       bigserial PRIMARY KEY,
    username text NOT NULL,
    at       text NOT NULL
);
CREATE INDEX login_failures_by_user ON login_failures (username, at);

CREATE TABLE broadcast_receipts (
    notification_id text NOT NULL,
    user_id         text NOT NULL,
    delivered_at    text NOT NULL,
    PRIMARY KEY (notification_id, user_id)
);

CREATE TABLE purge_marks (
    user_id        text   PRIMARY KEY,
    purged_through bigint NOT NULL
);

CREATE TABLE devices (
    token_id     text PRIMARY KEY,
    user_id      text NOT NULL,
    created_at   text NOT NULL,
    expires_at   text NOT NULL,
    last_seen_at text,
    user_agent   text,
    revoked_at   text
);
CREATE INDEX devices_by_user ON devices (user_id, created_at);
CREATE INDEX devices_by_expiry ON devices (expires_at);

CREATE TABLE corrections (
    seq              bigint PRIMARY KEY,
    id               text   NOT NULL UNIQUE,
    notification_id  text   NOT NULL,
    user_id          text   NOT NULL,
    notification_seq bigint NOT NULL,
    kind             text   NOT NULL CHECK (kind IN ('retracted', 'updated', 'acknowledged')),
    at               text   NOT NULL,
    details          text
);
CREATE INDEX corrections_by_user ON corrections (user_id, seq);
CREATE UNIQUE INDEX corrections_retraction ON corrections (notification_id) WHERE kind = 'retracted';
CREATE UNIQUE INDEX corrections_acknowledgement ON corrections (notification_id) WHERE kind = 'acknowledged';
CREATE INDEX corrections_by_notification ON corrections (notification_id);

CREATE TABLE user_preferences (
    user_id    text PRIMARY KEY,
    body       text NOT NULL,
    updated_at text NOT NULL
);

-- An answer to a notification's action; purged with its notification.
CREATE TABLE action_answers (
    notification_id text PRIMARY KEY,
    user_id         text NOT NULL,
    action          text NOT NULL,
    answered_at     text NOT NULL
);

-- Durable timers (scheduled sends, webhook and push deliveries, escalation steps): jobs the
-- processes share. `due_at` is also the lease: a process that takes a job moves it forward.
CREATE TABLE timers (
    id          text    PRIMARY KEY,
    kind        text    NOT NULL,
    -- Who may see and cancel it ('apikey:<id>'), and their own name for it (unique while pending).
    owner       text    NOT NULL,
    key         text,
    due_at      text    NOT NULL,
    -- A JSON object: what the job needs to run; its `content` member is removed once it has run.
    payload     text    NOT NULL DEFAULT '{}',
    state       text    NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'done', 'cancelled', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    created_at  text    NOT NULL,
    finished_at text,
    -- Once done: a JSON array of the notification ids it stored.
    result      text    NOT NULL DEFAULT '[]'
);
CREATE INDEX timers_due ON timers (due_at, id) WHERE state = 'pending';
CREATE UNIQUE INDEX timers_pending_key ON timers (owner, kind, key) WHERE state = 'pending' AND key IS NOT NULL;
CREATE INDEX timers_by_owner ON timers (owner, kind, state, due_at, id);
CREATE INDEX timers_by_key ON timers (owner, kind, key) WHERE key IS NOT NULL;
CREATE INDEX timers_finished ON timers (finished_at) WHERE state != 'pending';
