-- Conversations and their messages. Ids are the 16 bytes of a UUID; timestamps are
-- milliseconds since the Unix epoch (UTC); metadata and tool calls are JSON text.

CREATE TABLE conversations (
    id            BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    scope         TEXT    NOT NULL,
    title         TEXT,
    title_source  TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0,
    pinned        INTEGER NOT NULL DEFAULT 0,
    archived      INTEGER NOT NULL DEFAULT 0,
    metadata      TEXT    NOT NULL,
    version       INTEGER NOT NULL
);

-- The list in activity order: one seek to (scope, archived), read backwards.
CREATE INDEX conversations_by_activity
    ON conversations (scope, archived, updated_at, id);

-- The list with pinned conversations first.
CREATE INDEX conversations_by_pin
    ON conversations (scope, archived, pinned, updated_at, id);

-- Messages clustered by (conversation, seq): a window or a page is one contiguous
-- range of the table's own b-tree.
CREATE TABLE messages (
    conversation_id BLOB    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    id              BLOB    NOT NULL CHECK (length(id) = 16),
    role            TEXT    NOT NULL,
    content         TEXT    NOT NULL,
    tool_calls      TEXT,
    tool_call_id    TEXT,
    metadata        TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;

-- Caller-supplied message ids are unique per conversation (idempotent retries).
CREATE UNIQUE INDEX messages_by_id ON messages (conversation_id, id);
