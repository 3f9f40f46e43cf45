-- 0010: finished jobs (sent, cancelled, failed) are purged a while after they finished, by the age
-- of their finish: an index on it, over finished jobs only, so the purge reads only what it deletes.
CREATE INDEX timers_finished ON timers (finished_at) WHERE state != 'pending';
