-- 0012: signed webhooks to outside channels (a clinic's email or SMS gateway).
--
-- Endpoints are configured by staff. Each delivery to one endpoint is a durable timer of kind
-- 'webhook' (its id is the delivery's `webhook-id`); one that gave up is a dead letter: state
-- 'failed', with its body kept (in `content`) so that staff can send it again.
CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    -- `whsec_<base64>`: signs each delivery (HMAC-SHA256); shown to staff once, when created.
    secret      TEXT NOT NULL,
    -- A JSON array of the event types it receives.
    events      TEXT NOT NULL DEFAULT '[]',
    description TEXT NOT NULL DEFAULT '',
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL DEFAULT ''
) STRICT;

-- Dead letters, newest first (the dashboard's list and the metric's count read only these).
CREATE INDEX timers_dead_webhooks ON timers (finished_at, id) WHERE kind = 'webhook' AND state = 'failed';
