-- 0007: idempotency records are purged by age, a slice at a time: an index on their age, so the
-- purge reads only what it deletes instead of scanning every record inside the writer's transaction.
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
