-- 0016: the Topic (RFC 8030) each push went with, so that a retraction can be pushed with the same
-- Topic to the same subscriptions, replacing the first push at the push service if it has not
-- reached the browser yet. NULL: a push recorded before this, a digest, or a retraction itself.
ALTER TABLE push_attempts ADD COLUMN topic TEXT;
