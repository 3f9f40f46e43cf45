-- The stored and delivered counts (`/metrics`, the dashboard) kept by the database itself, and a
-- job's lease apart from its due time.

-- No process writes notifications between the seed below and the triggers taking over: this lock
-- waits for writes in flight and holds off new ones until the migration commits.
LOCK TABLE notifications IN SHARE ROW EXCLUSIVE MODE;

-- count(*) and count(delivered_at) of `notifications`, as the sums of these rows. Every statement
-- that changes notifications (inserts, delivery and read marks, purges, retractions, anything
-- else) adds its change to one row in its own transaction (the triggers below), so the sums are
-- exact for every process at every commit. Several rows, not one: a statement takes a row no
-- other transaction holds (`notification_counts_add`), so two processes writing at once never
-- wait on each other here.
CREATE TABLE notification_counts (
    slot      integer PRIMARY KEY,
    stored    bigint  NOT NULL DEFAULT 0,
    delivered bigint  NOT NULL DEFAULT 0
);
INSERT INTO notification_counts (slot) SELECT generate_series(0, 31);
UPDATE notification_counts SET (stored, delivered) =
    (SELECT count(*), count(delivered_at) FROM notifications) WHERE slot = 0;

-- Add a change to the row this backend prefers (its pid's), or else to the first row no other
-- transaction holds (a row this transaction holds already is its own); only when every row is
-- held by another transaction does it wait, for its own.
CREATE FUNCTION notification_counts_add(d_stored bigint, d_delivered bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_slot integer;
BEGIN
    IF d_stored = 0 AND d_delivered = 0 THEN
        RETURN;
    END IF;
    SELECT slot INTO v_slot FROM notification_counts WHERE slot = pg_backend_pid() % 32
        FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        SELECT slot INTO v_slot FROM notification_counts ORDER BY slot LIMIT 1
            FOR NO KEY UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            v_slot := pg_backend_pid() % 32;
        END IF;
    END IF;
    UPDATE notification_counts SET stored = stored + d_stored, delivered = delivered + d_delivered
        WHERE slot = v_slot;
END;
$$;

-- Once per statement, over the rows it changed (transition tables): a 1,000-row insert adds to a
-- counter once. An update that leaves delivered_at as it was (new words, a read of a delivered
-- notification) changes nothing.
CREATE FUNCTION notifications_counted_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM notification_counts_add(count(*), count(delivered_at)) FROM counted_new;
    RETURN NULL;
END;
$$;
CREATE TRIGGER notifications_counted_insert AFTER INSERT ON notifications
    REFERENCING NEW TABLE AS counted_new
    FOR EACH STATEMENT EXECUTE FUNCTION notifications_counted_insert();

CREATE FUNCTION notifications_counted_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM notification_counts_add(0,
        (SELECT count(delivered_at) FROM counted_new) - (SELECT count(delivered_at) FROM counted_old));
    RETURN NULL;
END;
$$;
CREATE TRIGGER notifications_counted_update AFTER UPDATE ON notifications
    REFERENCING OLD TABLE AS counted_old NEW TABLE AS counted_new
    FOR EACH STATEMENT EXECUTE FUNCTION notifications_counted_update();

CREATE FUNCTION notifications_counted_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM notification_counts_add(-count(*), -count(delivered_at)) FROM counted_old;
    RETURN NULL;
END;
$$;
CREATE TRIGGER notifications_counted_delete AFTER DELETE ON notifications
    REFERENCING OLD TABLE AS counted_old
    FOR EACH STATEMENT EXECUTE FUNCTION notifications_counted_delete();

CREATE FUNCTION notifications_counted_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE notification_counts SET stored = 0, delivered = 0;
    RETURN NULL;
END;
$$;
CREATE TRIGGER notifications_counted_truncate AFTER TRUNCATE ON notifications
    FOR EACH STATEMENT EXECUTE FUNCTION notifications_counted_truncate();

-- A job a process took (`due_timers`) is held until `leased_until`; `due_at` stays the time it is
-- due (`GET /v1/scheduled` shows it). A job is due when both have passed. A job rescheduled
-- (retried, revived) is held by nobody: NULL.
ALTER TABLE timers ADD COLUMN leased_until text;
CREATE INDEX timers_leased ON timers (leased_until) WHERE state = 'pending' AND leased_until IS NOT NULL;
