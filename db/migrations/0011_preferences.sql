-- 0011: each user's channel preferences: which channels beyond the socket (push, webhook) they want
-- per category, and their quiet hours in their own time zone. One row per user who chose anything;
-- no row means the defaults (every channel on, no quiet hours). The body is the JSON that
-- `rules.preferences.encode` writes. No patient data: categories are notification types.
CREATE TABLE user_preferences (
    user_id    TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT, WITHOUT ROWID;
