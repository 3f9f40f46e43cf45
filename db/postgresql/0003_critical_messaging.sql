-- Critical results and messaging (the SQLite originals are db/migrations/0013 and 0014; the
-- corrections' `acknowledged` kind, `action_answers` and `timers` are in the core).
--
-- Groups of staff (an on-duty switch per member), items that stay open until a person acknowledges
-- them, the copies each recipient got, and every step of an item's life as an append-only event
-- (never the notification's content). An item's sends (the first one and each escalation step) are
-- durable timers owned by 'critical:<item id>': the trigger below records the copies a send stored
-- in the transaction that stores them (the one that marks its job done), so a copy is never lost
-- nor recorded twice, whichever process ran the send.

CREATE TABLE groups (
    name       text PRIMARY KEY,
    created_at text NOT NULL
);

CREATE TABLE group_members (
    group_name text    NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    user_id    text    NOT NULL,
    on_duty    integer NOT NULL DEFAULT 1 CHECK (on_duty IN (0, 1)),
    added_at   text    NOT NULL,
    PRIMARY KEY (group_name, user_id)
);

CREATE TABLE critical_items (
    id               text    PRIMARY KEY,
    -- who sent it ('apikey:<id>'), and to whom ('user:<id>' or 'group:<name>')
    owner            text    NOT NULL,
    target           text    NOT NULL,
    type             text    NOT NULL,
    priority         text    NOT NULL,
    requires_ack     integer NOT NULL CHECK (requires_ack IN (0, 1)),
    -- the escalation policy's name (NULL: none matched)
    policy           text,
    -- 'sent': a group send that needs no acknowledgement
    state            text    NOT NULL CHECK (state IN ('open', 'acknowledged', 'sent')),
    created_at       text    NOT NULL,
    -- a retry with the same Idempotency-Key must carry the same body
    request_hash     text,
    acknowledged_at  text,
    acknowledged_by  text,
    acknowledged_via text,
    device           text,
    on_behalf        integer NOT NULL DEFAULT 0 CHECK (on_behalf IN (0, 1)),
    -- the acknowledgement that closed it (its corrections' ids start with it)
    ack_id           text
);
-- The lists, newest first: in byte order (as SQLite orders text), whatever the database's collation.
CREATE INDEX critical_items_open ON critical_items (created_at COLLATE "C", id COLLATE "C") WHERE state = 'open';
CREATE INDEX critical_items_recent ON critical_items (created_at COLLATE "C", id COLLATE "C");

-- Each notification an item stored: its recipient, and the step that sent it (0: the first send).
CREATE TABLE critical_copies (
    notification_id text    PRIMARY KEY,
    item_id         text    NOT NULL,
    user_id         text    NOT NULL,
    step            integer NOT NULL
);
CREATE INDEX critical_copies_by_item ON critical_copies (item_id, step);

-- The item's timeline: opened, sent, delivered, escalated, channel_not_configured, acknowledged...
CREATE TABLE critical_events (
    id      bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item_id text    NOT NULL,
    at      text    NOT NULL,
    event   text    NOT NULL,
    step    integer,
    channel text,
    user_id text,
    actor   text,
    details text    NOT NULL DEFAULT '{}'
);
CREATE INDEX critical_events_by_item ON critical_events (item_id, id);
CREATE TRIGGER critical_events_append_only BEFORE UPDATE OR DELETE ON critical_events
    FOR EACH ROW EXECUTE FUNCTION append_only();

-- A send of an item (its job is done in the transaction that stored its notifications): its copies
-- and one event per recipient, in that same transaction, in the order the send stored them.
CREATE FUNCTION critical_copies_with_their_send() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_item text := substr(NEW.owner, 10);
    v_step integer := (NEW.payload::json ->> 'step')::integer;
BEGIN
    INSERT INTO critical_copies (notification_id, item_id, user_id, step)
        SELECT n.id, v_item, n.user_id, v_step
        FROM json_array_elements_text(NEW.result::json) WITH ORDINALITY AS r (id, ord)
        JOIN notifications AS n ON n.id = r.id
        ORDER BY r.ord;
    INSERT INTO critical_events (item_id, at, event, step, channel, user_id)
        SELECT v_item, NEW.finished_at, CASE WHEN v_step = 0 THEN 'sent' ELSE 'escalated' END,
               v_step, 'socket', n.user_id
        FROM json_array_elements_text(NEW.result::json) WITH ORDINALITY AS r (id, ord)
        JOIN notifications AS n ON n.id = r.id
        ORDER BY r.ord;
    RETURN NULL;
END;
$$;
CREATE TRIGGER critical_copies_with_their_send AFTER UPDATE OF state ON timers
    FOR EACH ROW WHEN (OLD.state = 'pending' AND NEW.state = 'done' AND NEW.owner LIKE 'critical:%')
    EXECUTE FUNCTION critical_copies_with_their_send();

-- A copy reached its recipient's device (a v1 client's ack, or written to a plain client). The
-- condition is checked before the function is called: a notification that is no copy costs one
-- index probe.
CREATE FUNCTION critical_copies_delivered() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO critical_events (item_id, at, event, step, channel, user_id)
        SELECT item_id, NEW.delivered_at, 'delivered', step, 'socket', user_id
        FROM critical_copies WHERE notification_id = NEW.id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER critical_copies_delivered AFTER UPDATE OF delivered_at ON notifications
    FOR EACH ROW WHEN (OLD.delivered_at IS NULL AND NEW.delivered_at IS NOT NULL)
    EXECUTE FUNCTION critical_copies_delivered();

-- The language a user's notifications are worded in (a BCP 47 tag such as `de` or `en-GB`).
CREATE TABLE user_locales (
    user_id    text PRIMARY KEY,
    locale     text NOT NULL,
    updated_at text NOT NULL
);

-- Staff's own wording of a standard text: per notification type and locale, a title and a message
-- template (sandboxed Jinja, plain text), replacing the built-in one.
CREATE TABLE message_templates (
    type       text NOT NULL,
    locale     text NOT NULL,
    title      text NOT NULL,
    message    text NOT NULL,
    updated_at text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (type, locale)
);
