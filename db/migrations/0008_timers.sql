-- 0008: durable timers: jobs due at a time (a scheduled send; escalation steps later), kept in the
-- database so that a restart, or a kill -9, neither loses nor repeats one.
--
-- A job runs exactly once because its effect claims it: the notifications it stores are inserted
-- with an idempotency record ('timer', job id) in the same transaction, and the trigger below marks
-- the job done in that transaction too. A cancellation claims the job the same way (status 0)
-- before marking it cancelled, so a send and a cancellation can never both win.
CREATE TABLE timers (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    -- Who may see and cancel it ('apikey:<id>'), and their own name for it (unique while pending).
    owner       TEXT NOT NULL,
    key         TEXT,
    due_at      TEXT NOT NULL,
    -- A JSON object: what the job needs to run. Its `content` member (a notification's words) is
    -- removed once the job has run, was cancelled or failed; the rest (who, what type) is kept.
    payload     TEXT NOT NULL DEFAULT '{}',
    state       TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'done', 'cancelled', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    finished_at TEXT,
    -- Once done: a JSON array of the notification ids it stored.
    result      TEXT NOT NULL DEFAULT '[]'
) STRICT;

-- The next jobs due (the scheduler's only query on its path). Partial: only what is pending.
CREATE INDEX timers_due ON timers (due_at, id) WHERE state = 'pending';
-- An owner's pending jobs by their own key: one at a time.
CREATE UNIQUE INDEX timers_pending_key ON timers (owner, kind, key)
    WHERE state = 'pending' AND key IS NOT NULL;
-- An owner's pending jobs, soonest first (the list).
CREATE INDEX timers_by_owner ON timers (owner, kind, state, due_at, id);
-- An owner's jobs by their key, whatever their state (cancel by key: pending, or sent already?).
CREATE INDEX timers_by_key ON timers (owner, kind, key) WHERE key IS NOT NULL;

-- The job's completion commits with its effect: the claim its notifications are stored with.
CREATE TRIGGER timers_done_with_their_effect AFTER INSERT ON idempotency_keys
WHEN NEW.api_key_id = 'timer' AND NEW.status = 201
BEGIN
    UPDATE timers SET state = 'done', finished_at = NEW.created_at, result = NEW.notification_ids,
        payload = json_remove(payload, '$.content')
    WHERE id = NEW.key AND state = 'pending';
END;
