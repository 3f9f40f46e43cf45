-- 0003: retention (expires_at), per-user receipts for broadcasts, unread lookups.

-- When a notification stops being served and gets purged. NULL: kept (rows from before 0002).
ALTER TABLE notifications ADD COLUMN expires_at TEXT;
CREATE INDEX notifications_expiry ON notifications (expires_at) WHERE expires_at IS NOT NULL;
-- Unread counts and "unread only" history stay index lookups however long the history grows.
CREATE INDEX notifications_unread ON notifications (user_id, seq) WHERE read_at IS NULL;

-- A broadcast is stored once; who has received it is recorded per user, so a user who was
-- offline gets it on the next connect, once.
CREATE TABLE broadcast_receipts (
    notification_id TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    delivered_at    TEXT NOT NULL,
    PRIMARY KEY (notification_id, user_id)
) STRICT, WITHOUT ROWID;

-- The highest seq purged per recipient (a user id, or '*' for broadcasts): a resume cursor below
-- it may have missed something that expired. Also keeps seqs from ever being reused after the
-- newest rows were purged.
CREATE TABLE purge_marks (
    user_id        TEXT PRIMARY KEY,
    purged_through INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
