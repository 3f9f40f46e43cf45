-- 0009: corrections: a notification sent in error is retracted (its row is deleted, so history,
-- unread counts and replay never serve it again; secure_delete overwrites it) or updated (new
-- title and/or message). Each correction takes its own seq from the notifications' counter: it is
-- an event in its recipient's stream, replayed on resume in seq order with the notifications, so
-- a client that was offline learns of it exactly once. No content here: who asked and why is in
-- the audit log; the words are only ever in the notification's own row.
CREATE TABLE corrections (
    seq              INTEGER PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    notification_id  TEXT    NOT NULL,
    -- the notification's recipient, '*' for a broadcast
    user_id          TEXT    NOT NULL,
    notification_seq INTEGER NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('retracted', 'updated')),
    at               TEXT    NOT NULL
) STRICT;

-- A resume's replay: the user's corrections (and broadcasts') after a cursor, in seq order.
CREATE INDEX corrections_by_user ON corrections (user_id, seq);
-- A notification is retracted once: retracting it again finds this row and changes nothing.
CREATE UNIQUE INDEX corrections_retraction ON corrections (notification_id) WHERE kind = 'retracted';
CREATE INDEX corrections_by_notification ON corrections (notification_id);
