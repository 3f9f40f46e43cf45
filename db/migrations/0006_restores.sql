-- 0006: restores from a backup (`run.py restore`). A restored database is behind what its clients
-- saw: the seqs after the backup's newest one (after_seq), up to the highest the replaced database
-- had handed out, named notifications that are gone. cursor_seq is past all of them and was never
-- handed out: the restored server's first cursor (its welcome's last_seq until something new is
-- stored). New seqs start after it, so a seq never names two notifications, and a resume cursor
-- with after_seq < since < cursor_seq is answered `recovered: false`, reason `store_restored`.
CREATE TABLE restores (
    id          INTEGER PRIMARY KEY,
    restored_at TEXT    NOT NULL,
    after_seq   INTEGER NOT NULL,
    cursor_seq  INTEGER NOT NULL CHECK (cursor_seq > after_seq)
) STRICT;
