-- 0004: one per-user index on notifications instead of three.
-- Every stored notification entered three (user_id, seq) indexes, and marking it delivered then
-- deleted it from one of them again: most of the cost of storing a burst. The remaining
-- notifications_by_user index serves the undelivered backlog and unread counts too, reading the
-- user's own rows only, which retention keeps to a bounded number.
DROP INDEX notifications_undelivered;
DROP INDEX notifications_unread;
