-- Conversations and their messages. Runs with `search_path` set to the store's
-- schema, so every name below lands there and nowhere else.

CREATE TABLE conversations (
    id            uuid        PRIMARY KEY,
    scope         text        NOT NULL,
    title         text,
    title_source  text        NOT NULL
                  CHECK (title_source IN ('none', 'heuristic', 'generated', 'user')),
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    message_count bigint      NOT NULL CHECK (message_count >= 0),
    pinned        boolean     NOT NULL,
    archived      boolean     NOT NULL,
    metadata      jsonb       NOT NULL CHECK (jsonb_typeof(metadata) = 'object'),
    version       bigint      NOT NULL CHECK (version >= 1),
    CHECK ((title IS NULL) = (title_source = 'none'))
);

-- List order without pinned first: newest activity, then id, within one archive
-- partition of one scope. Read backwards for "newest first".
CREATE INDEX conversations_list
    ON conversations (scope, archived, updated_at, id);

-- List order with pinned first.
CREATE INDEX conversations_list_pinned
    ON conversations (scope, archived, pinned, updated_at, id);

CREATE TABLE messages (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             bigint      NOT NULL CHECK (seq >= 1),
    id              uuid        NOT NULL,
    role            text        NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content         text        NOT NULL,
    tool_calls      jsonb       NOT NULL CHECK (jsonb_typeof(tool_calls) = 'array'),
    tool_call_id    text,
    metadata        jsonb       NOT NULL CHECK (jsonb_typeof(metadata) = 'object'),
    created_at      timestamptz NOT NULL,
    -- Windows and pages are ranges of this key.
    PRIMARY KEY (conversation_id, seq),
    -- Caller-supplied ids are unique per conversation: the idempotency key.
    UNIQUE (conversation_id, id)
);
