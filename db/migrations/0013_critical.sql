-- 0013: critical results: groups of staff (with an on-duty switch per member), items that stay
-- open until a person acknowledges them, the copies each recipient got, and every step of an
-- item's life as an append-only event (never the notification's content).
--
-- An item's sends (the first one and each escalation step) are durable timers owned by
-- 'critical:<item id>': the trigger below records the copies a send stored in the transaction that
-- stores them (and marks its job done), so a copy is never lost nor recorded twice. Acknowledging
-- cancels the item's pending steps in the transaction that closes it.

CREATE TABLE groups (
    name       TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE group_members (
    group_name TEXT    NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    user_id    TEXT    NOT NULL,
    on_duty    INTEGER NOT NULL DEFAULT 1 CHECK (on_duty IN (0, 1)),
    added_at   TEXT    NOT NULL,
    PRIMARY KEY (group_name, user_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE critical_items (
    id               TEXT    PRIMARY KEY,
    -- who sent it ('apikey:<id>'), and to whom ('user:<id>' or 'group:<name>')
    owner            TEXT    NOT NULL,
    target           TEXT    NOT NULL,
    type             TEXT    NOT NULL,
    priority         TEXT    NOT NULL,
    requires_ack     INTEGER NOT NULL CHECK (requires_ack IN (0, 1)),
    -- the escalation policy's name (NULL: none matched)
    policy           TEXT,
    -- 'sent': a group send that needs no acknowledgement
    state            TEXT    NOT NULL CHECK (state IN ('open', 'acknowledged', 'sent')),
    created_at       TEXT    NOT NULL,
    -- a retry with the same Idempotency-Key must carry the same body
    request_hash     TEXT,
    acknowledged_at  TEXT,
    acknowledged_by  TEXT,
    acknowledged_via TEXT,
    device           TEXT,
    on_behalf        INTEGER NOT NULL DEFAULT 0,
    ack_id           TEXT
) STRICT;

CREATE INDEX critical_items_open ON critical_items (created_at, id) WHERE state = 'open';
CREATE INDEX critical_items_recent ON critical_items (created_at, id);

-- Each notification an item stored: its recipient, and the step that sent it (0: the first send).
CREATE TABLE critical_copies (
    notification_id TEXT    PRIMARY KEY,
    item_id         TEXT    NOT NULL,
    user_id         TEXT    NOT NULL,
    step            INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX critical_copies_by_item ON critical_copies (item_id, step);

-- The item's timeline: opened, sent, delivered, escalated, channel_not_configured, acknowledged...
CREATE TABLE critical_events (
    id      INTEGER PRIMARY KEY,
    item_id TEXT    NOT NULL,
    at      TEXT    NOT NULL,
    event   TEXT    NOT NULL,
    step    INTEGER,
    channel TEXT,
    user_id TEXT,
    actor   TEXT,
    details TEXT    NOT NULL DEFAULT '{}'
) STRICT;

CREATE INDEX critical_events_by_item ON critical_events (item_id, id);

CREATE TRIGGER critical_events_no_update BEFORE UPDATE ON critical_events
BEGIN
    SELECT RAISE(ABORT, 'critical_events is append-only');
END;

CREATE TRIGGER critical_events_no_delete BEFORE DELETE ON critical_events
BEGIN
    SELECT RAISE(ABORT, 'critical_events is append-only');
END;

-- A send of an item (its job is done in the transaction that stored its notifications): its copies
-- and one event per recipient, in that same transaction.
CREATE TRIGGER critical_copies_with_their_send AFTER UPDATE OF state ON timers
WHEN OLD.state = 'pending' AND NEW.state = 'done' AND NEW.owner LIKE 'critical:%'
BEGIN
    INSERT INTO critical_copies (notification_id, item_id, user_id, step)
        SELECT n.id, substr(NEW.owner, 10), n.user_id, NEW.payload->>'step'
        FROM json_each(NEW.result) AS r JOIN notifications AS n ON n.id = r.value;
    INSERT INTO critical_events (item_id, at, event, step, channel, user_id)
        SELECT substr(NEW.owner, 10), NEW.finished_at,
               CASE WHEN NEW.payload->>'step' = 0 THEN 'sent' ELSE 'escalated' END,
               NEW.payload->>'step', 'socket', n.user_id
        FROM json_each(NEW.result) AS r JOIN notifications AS n ON n.id = r.value;
END;

-- A copy reached its recipient's device (a v1 client's ack, or written to a plain client).
CREATE TRIGGER critical_copies_delivered AFTER UPDATE OF delivered_at ON notifications
WHEN OLD.delivered_at IS NULL AND NEW.delivered_at IS NOT NULL
BEGIN
    INSERT INTO critical_events (item_id, at, event, step, channel, user_id)
        SELECT item_id, NEW.delivered_at, 'delivered', step, 'socket', user_id
        FROM critical_copies WHERE notification_id = NEW.id;
END;

-- Corrections gain a third kind: `acknowledged`, one per copy of an acknowledged item, each with a
-- seq of its own in its recipient's stream (like a retraction), and `details` (the item's id, who
-- acknowledged, whether on behalf). SQLite cannot change a CHECK in place: the table is rebuilt.
CREATE TABLE corrections_new (
    seq              INTEGER PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    notification_id  TEXT    NOT NULL,
    user_id          TEXT    NOT NULL,
    notification_seq INTEGER NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('retracted', 'updated', 'acknowledged')),
    at               TEXT    NOT NULL,
    details          TEXT
) STRICT;
INSERT INTO corrections_new (seq, id, notification_id, user_id, notification_seq, kind, at)
    SELECT seq, id, notification_id, user_id, notification_seq, kind, at FROM corrections;
DROP TABLE corrections;
ALTER TABLE corrections_new RENAME TO corrections;
CREATE INDEX corrections_by_user ON corrections (user_id, seq);
CREATE UNIQUE INDEX corrections_retraction ON corrections (notification_id) WHERE kind = 'retracted';
CREATE UNIQUE INDEX corrections_acknowledgement ON corrections (notification_id) WHERE kind = 'acknowledged';
CREATE INDEX corrections_by_notification ON corrections (notification_id);
