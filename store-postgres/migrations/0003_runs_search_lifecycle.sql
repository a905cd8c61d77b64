-- Round two: agent runs, full-text search, metadata filters, retention. Runs with
-- `search_path` set to the store's schema.
--
-- The search columns (`messages.words`, `conversations.title_words`) are filled by
-- the store, not by this file: their words are cut by conversation-core's rule, which
-- SQL cannot run (PostgreSQL's text-search parser cuts `a@b.com`, `3.14` or
-- `well-known` differently, and keeps diacritics). Rows written before this migration
-- have `NULL` there until the store's migrator fills them, right after this file
-- (see `search::reindex`); `NULL` means "not indexed yet", an empty tsvector "no word".

-- When a conversation was archived (NULL when it is not). Until now the time was not
-- kept: an archived conversation counts as archived at its last activity.
ALTER TABLE conversations
    ADD COLUMN archived_at       timestamptz,
    -- The run in progress (or an abandoned one not yet settled by a write).
    ADD COLUMN active_run_id     uuid,
    -- The tokens every run of the conversation used.
    ADD COLUMN prompt_tokens     bigint NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    ADD COLUMN completion_tokens bigint NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    ADD COLUMN total_tokens      bigint NOT NULL DEFAULT 0 CHECK (total_tokens >= 0),
    -- The title's words, each `<scope key>_<word>` (see the crate docs, "Search").
    ADD COLUMN title_words       tsvector;

UPDATE conversations SET archived_at = updated_at WHERE archived;

-- Only an archived conversation has an archive time (the store clears it on restore,
-- and an import of a conversation that is not archived drops it), so that retention
-- by archive age reads the partial indexes below by `archived_at` alone.
ALTER TABLE conversations
    ADD CONSTRAINT conversations_archived_at CHECK (archived_at IS NULL OR archived);

-- A message's words (its content), each `<scope key>_<word>`.
ALTER TABLE messages ADD COLUMN words tsvector;

-- Search: the words of the scope's titles and messages, scope keys included in every
-- word, so a search reads only its scope's postings.
CREATE INDEX messages_by_words ON messages USING gin (words);
CREATE INDEX conversations_by_title_words ON conversations USING gin (title_words);

-- Metadata filters (`metadata @> {"key": value}`).
CREATE INDEX conversations_by_metadata ON conversations USING gin (metadata jsonb_path_ops);

-- Retention: by inactivity across scopes (one scope reads `conversations_by_activity`,
-- both archive states merged), and by archive age, across scopes or in one.
CREATE INDEX conversations_by_inactivity ON conversations (updated_at, id);
CREATE INDEX conversations_by_archive_age ON conversations (archived_at, id)
    WHERE archived_at IS NOT NULL;
CREATE INDEX conversations_by_scope_archive_age ON conversations (scope, archived_at, id)
    WHERE archived_at IS NOT NULL;

-- Agent runs, deleted with their conversation.
CREATE TABLE runs (
    conversation_id    uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id                 uuid        NOT NULL,
    status             text        NOT NULL CHECK (status IN
                           ('running', 'completed', 'requires_action', 'cancelled', 'failed')),
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz,
    lease_until        timestamptz NOT NULL,
    cancel_requested   boolean     NOT NULL,
    steps              bigint      NOT NULL CHECK (steps >= 0),
    prompt_tokens      bigint      NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens  bigint      NOT NULL CHECK (completion_tokens >= 0),
    total_tokens       bigint      NOT NULL CHECK (total_tokens >= 0),
    error              jsonb,
    pending_tool_calls jsonb       NOT NULL CHECK (jsonb_typeof(pending_tool_calls) = 'array'),
    PRIMARY KEY (conversation_id, id)
);

-- The rule the words of the search columns were cut with; the store refills them
-- when a build's rule differs (a Rust release with newer Unicode tables).
CREATE TABLE search_state (
    id         integer PRIMARY KEY CHECK (id = 1),
    words_rule text
);
INSERT INTO search_state (id, words_rule) VALUES (1, NULL);
