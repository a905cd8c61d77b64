-- Round two: agent runs, full-text search, metadata filters, retention.
--
-- The search index (`search`) is filled by the store, not by this file: its words
-- are cut by conversation-core's rule, which SQL cannot run. The migrator fills it
-- right after this file, in the same transaction (see `search::rebuild`).

-- When a conversation was archived (NULL when it is not). Until now the time was
-- not kept: an archived conversation counts as archived at its last activity.
ALTER TABLE conversations ADD COLUMN archived_at INTEGER;
UPDATE conversations SET archived_at = updated_at WHERE archived;

-- The run in progress, and the tokens every run of the conversation used.
ALTER TABLE conversations ADD COLUMN active_run_id BLOB;
ALTER TABLE conversations ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN total_tokens INTEGER NOT NULL DEFAULT 0;

-- The keys of a conversation in the search index: its rows there are
-- `search_key << 32 | seq` (seq 0 for the title), and its words are prefixed with
-- the key of its scope. Filled for existing rows by the migrator.
ALTER TABLE conversations ADD COLUMN search_key INTEGER;
ALTER TABLE conversations ADD COLUMN scope_key INTEGER;

-- Retention: by inactivity across scopes (one scope reads `conversations_by_activity`),
-- and by archive age, across scopes or in one.
CREATE INDEX conversations_by_inactivity ON conversations (updated_at, id);
CREATE INDEX conversations_by_archive_age ON conversations (archived_at, id)
    WHERE archived_at IS NOT NULL;
CREATE INDEX conversations_by_scope_archive_age ON conversations (scope, archived_at, id)
    WHERE archived_at IS NOT NULL;

-- A search row of the index back to its conversation.
CREATE UNIQUE INDEX conversations_by_search_key ON conversations (search_key);

-- Agent runs, deleted with their conversation.
CREATE TABLE runs (
    conversation_id    BLOB    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id                 BLOB    NOT NULL CHECK (length(id) = 16),
    status             TEXT    NOT NULL,
    started_at         INTEGER NOT NULL,
    finished_at        INTEGER,
    lease_until        INTEGER NOT NULL,
    cancel_requested   INTEGER NOT NULL,
    steps              INTEGER NOT NULL,
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    total_tokens       INTEGER NOT NULL,
    error              TEXT,
    pending_tool_calls TEXT,
    PRIMARY KEY (conversation_id, id)
) WITHOUT ROWID;

-- The top-level scalar values of each conversation's metadata, for
-- `metadata_equals`: `kind` is 's' (string), 'n' (number) or 'b' (boolean, 0 or 1),
-- so that "1", 1 and true never equal each other while 1 equals 1.0.
CREATE TABLE conversation_metadata (
    conversation_id BLOB NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    key             TEXT NOT NULL,
    scope           TEXT NOT NULL,
    kind            TEXT NOT NULL,
    value,
    PRIMARY KEY (conversation_id, key)
) WITHOUT ROWID;
CREATE INDEX conversation_metadata_by_value
    ON conversation_metadata (scope, key, kind, value, conversation_id);

INSERT INTO conversation_metadata (conversation_id, key, scope, kind, value)
    SELECT c.id, j.key, c.scope,
        CASE j.type WHEN 'text' THEN 's' WHEN 'integer' THEN 'n' WHEN 'real' THEN 'n'
            ELSE 'b' END,
        CASE j.type WHEN 'true' THEN 1 WHEN 'false' THEN 0 ELSE j.value END
    FROM conversations AS c, json_each(c.metadata) AS j
    WHERE j.type IN ('text', 'integer', 'real', 'true', 'false');

-- The search index's scope keys: a scope's words are prefixed with its key, so a
-- search reads only its own scope's part of the index.
CREATE TABLE search_scopes (
    key   INTEGER PRIMARY KEY,
    scope TEXT NOT NULL UNIQUE
);

-- The state of the search index: the rule its words were cut with (it is rebuilt
-- when the rule changes) and the next conversation key.
CREATE TABLE search_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    words_format TEXT    NOT NULL,
    next_key     INTEGER NOT NULL
);

-- Titles and message contents, as words. Contentless: the text lives in
-- `conversations` and `messages`, the index holds only the words and their rows;
-- `secure-delete` makes a deletion remove its words from the index's pages at once.
CREATE VIRTUAL TABLE search USING fts5 (
    words,
    content = '',
    detail = none,
    tokenize = "ascii tokenchars '_'"
);
INSERT INTO search (search, rank) VALUES ('secure-delete', 1);
