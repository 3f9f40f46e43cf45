-- 0014: messaging: a notification's portal link and actions, answers to actions, the users'
-- locales and the staff's templates of the standard texts.

-- A notification's `url`, `actions` (each `{"label", "url"}` or `{"label", "action"}`) and the API
-- key that sent it, as one JSON object; NULL (most notifications) when it has none. Only what
-- passed the link rules (https, a configured host) is ever stored here.
ALTER TABLE notifications ADD COLUMN links TEXT;

-- A user's answer to one of a notification's actions (confirm, decline...): one per notification,
-- recorded once; a second answer finds this row. No content: the action's name only.
CREATE TABLE action_answers (
    notification_id TEXT NOT NULL PRIMARY KEY,
    user_id         TEXT NOT NULL,
    action          TEXT NOT NULL,
    answered_at     TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- The language a user's notifications are worded in (a BCP 47 tag such as `de` or `en-GB`).
CREATE TABLE user_locales (
    user_id    TEXT NOT NULL PRIMARY KEY,
    locale     TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- Staff's own wording of a standard text: per notification type and locale, a title and a message
-- template (sandboxed Jinja, plain text), replacing the built-in one.
CREATE TABLE message_templates (
    type       TEXT NOT NULL,
    locale     TEXT NOT NULL,
    title      TEXT NOT NULL,
    message    TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (type, locale)
) STRICT, WITHOUT ROWID;
