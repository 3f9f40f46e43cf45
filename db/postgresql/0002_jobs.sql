-- The jobs on the durable timers (the `timers` table is in the core): a job done with its effect,
-- outgoing webhooks, Web Push. The SQLite originals are db/migrations/0008, 0012, 0015, 0016, 0017.

-- Payloads stay JSON text, changed in place by the functions below rather than through jsonb,
-- which reorders members. PostgreSQL's JSON functions cannot decode a "\u0000" escape (text holds
-- no NUL), which a notification's `data` may hold: while a payload is taken apart, each such
-- escape stands in as "\uDBFF\uDFFF" (U+10FFFF, a noncharacter the service's JSON encoder never
-- escapes), kept as written inside the members' values and put back after.
CREATE FUNCTION json_nul_hidden(doc text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN strpos(doc, '\u0000') = 0 THEN doc
        ELSE regexp_replace(doc, '(?<!\\)((?:\\\\)*)\\u0000', '\1\\uDBFF\\uDFFF', 'g') END
$$;

CREATE FUNCTION json_nul_shown(doc text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN strpos(doc, '\uDBFF\uDFFF') = 0 THEN doc
        ELSE regexp_replace(doc, '(?<!\\)((?:\\\\)*)\\uDBFF\\uDFFF', '\1\\u0000', 'g') END
$$;

-- One member of an object as JSON text (its key decoded by json_each, so written again).
CREATE FUNCTION json_member(key text, value json) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT replace(to_json(key)::text, U&'\+10FFFF', '\u0000') || ':' || value::text
$$;

-- The JSON object `doc` without its top-level member `member` (SQLite's json_remove).
CREATE FUNCTION json_text_without(doc text, member text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT json_nul_shown('{' || coalesce(string_agg(json_member(e.key, e.value), ',' ORDER BY e.n), '') || '}')
    FROM json_each(json_nul_hidden(doc)::json) WITH ORDINALITY AS e(key, value, n)
    WHERE e.key <> member
$$;

-- The JSON object `doc` with the top-level members of `patch` set: replaced where `doc` has them,
-- added at its end where not (SQLite's json_set).
CREATE FUNCTION json_text_set(doc text, patch json) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT json_nul_shown('{' || coalesce(string_agg(json_member(m.key, m.value), ',' ORDER BY m.n), '') || '}')
    FROM (
        SELECT e.key, coalesce(p.value, e.value) AS value, e.n
        FROM json_each(json_nul_hidden(doc)::json) WITH ORDINALITY AS e(key, value, n)
        LEFT JOIN json_each(patch) AS p ON p.key = e.key
        UNION ALL
        SELECT p.key, p.value, 2147483647 + p.n
        FROM json_each(patch) WITH ORDINALITY AS p(key, value, n)
        WHERE NOT EXISTS (SELECT 1 FROM json_each(json_nul_hidden(doc)::json) AS e WHERE e.key = p.key)
    ) AS m
$$;

-- A job runs exactly once because its effect claims it: what it stores is inserted with the
-- idempotency record ('timer', job id), and this trigger marks the job done in that transaction.
-- A cancellation claims the job the same way (status 0) before marking it cancelled. Across
-- processes the claim's primary key decides: the second insert waits for the first to commit,
-- then conflicts.
CREATE FUNCTION timers_done_with_their_effect() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE timers SET state = 'done', finished_at = NEW.created_at, result = NEW.notification_ids,
        payload = json_text_without(payload, 'content')
    WHERE id = NEW.key AND state = 'pending';
    RETURN NULL;
END;
$$;
CREATE TRIGGER timers_done_with_their_effect AFTER INSERT ON idempotency_keys
    FOR EACH ROW WHEN (NEW.api_key_id = 'timer' AND NEW.status = 201)
    EXECUTE FUNCTION timers_done_with_their_effect();

-- Signed webhooks to outside channels. Each delivery is a timer of kind 'webhook' (its id is the
-- delivery's `webhook-id`); one that gave up is a dead letter (state 'failed', body kept).
CREATE TABLE webhook_endpoints (
    id          text    PRIMARY KEY,
    url         text    NOT NULL,
    -- `whsec_<base64>`: signs each delivery; shown to staff once, when created.
    secret      text    NOT NULL,
    -- A JSON array of the event types it receives.
    events      text    NOT NULL DEFAULT '[]',
    description text    NOT NULL DEFAULT '',
    enabled     integer NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at  text    NOT NULL,
    created_by  text    NOT NULL DEFAULT ''
);

-- Dead letters, newest first (the dashboard's list and the metric's count read only these).
CREATE INDEX timers_dead_webhooks ON timers (finished_at, id) WHERE kind = 'webhook' AND state = 'failed';
-- The deliveries that carried a notification (the dashboard's "Where it went"), by its id.
CREATE INDEX timers_webhook_notification ON timers ((json_nul_hidden(payload)::json ->> 'notification_id'))
    WHERE kind = 'webhook';

-- Web Push subscriptions. An endpoint and its keys are secrets (never logged, never shown); an
-- endpoint belongs to one user at a time.
CREATE TABLE push_subscriptions (
    id           text    PRIMARY KEY,
    user_id      text    NOT NULL,
    endpoint     text    NOT NULL UNIQUE,
    p256dh       text    NOT NULL,
    auth         text    NOT NULL,
    host         text    NOT NULL,
    created_at   text    NOT NULL,
    user_agent   text,
    -- The last push service answer (HTTP status; 0: none) and when.
    last_status  integer,
    last_sent_at text
);
CREATE INDEX push_subscriptions_by_user ON push_subscriptions (user_id, created_at);

-- One row per answer (or failure to answer) of a push service: no content, no endpoint.
CREATE TABLE push_attempts (
    id              bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id text    NOT NULL,
    subscription_id text    NOT NULL,
    host            text    NOT NULL,
    -- The HTTP status (0: no answer; -1: the browser's key is not a P-256 point).
    status          integer NOT NULL,
    outcome         text    NOT NULL CHECK (outcome IN ('sent', 'gone', 'retry', 'failed')),
    at              text    NOT NULL,
    -- The push's Topic (RFC 8030), so a retraction replaces it; NULL for a digest or a retraction.
    topic           text
);
CREATE INDEX push_attempts_by_notification ON push_attempts (notification_id, id);
CREATE INDEX push_attempts_by_age ON push_attempts (at);
