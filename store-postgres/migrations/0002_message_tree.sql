-- The message tree: every message has a parent (NULL for a root), a conversation a
-- head (the leaf of its active branch) and the active path from a root to the head.
-- Runs with `search_path` set to the store's schema.
--
-- Conversations written before this migration are linear: each message's parent is
-- the message before it (by seq), the last message is the head, every message is on
-- the active path, and `last_seq` (the highest seq ever assigned) is the highest seq
-- stored, which 0001 kept equal to `message_count`.

-- The names the SQLite store gives the same indexes.
ALTER INDEX conversations_list RENAME TO conversations_by_activity;
ALTER INDEX conversations_list_pinned RENAME TO conversations_by_pin;
ALTER INDEX messages_conversation_id_id_key RENAME TO messages_by_id;

ALTER TABLE messages
    -- The message it follows, in the same conversation.
    ADD COLUMN parent_id     uuid,
    -- Its distance from its root, which is 1: a fork of it copies `depth` messages.
    ADD COLUMN depth         bigint,
    -- Its position among its siblings (the messages with the same parent) by seq,
    -- from 0: kept exact, so a read never counts siblings.
    ADD COLUMN sibling_index bigint NOT NULL DEFAULT 0,
    -- Whether it is the last of its siblings: a read of a message that is its
    -- parent's only child (most of them) then looks up no sibling at all.
    ADD COLUMN last_sibling  boolean NOT NULL DEFAULT true,
    -- Whether it is on the active path.
    ADD COLUMN on_path       boolean NOT NULL DEFAULT true;

UPDATE messages m
SET parent_id = linear.parent_id, depth = linear.depth
FROM (
    SELECT conversation_id, seq,
           lag(id) OVER (PARTITION BY conversation_id ORDER BY seq) AS parent_id,
           row_number() OVER (PARTITION BY conversation_id ORDER BY seq) AS depth
    FROM messages
) AS linear
WHERE m.conversation_id = linear.conversation_id AND m.seq = linear.seq;

ALTER TABLE messages
    ALTER COLUMN depth SET NOT NULL,
    ALTER COLUMN sibling_index DROP DEFAULT,
    ALTER COLUMN last_sibling DROP DEFAULT,
    ALTER COLUMN on_path DROP DEFAULT,
    ADD CONSTRAINT messages_depth CHECK (depth >= 1 AND (depth = 1) = (parent_id IS NULL)),
    ADD CONSTRAINT messages_sibling_index CHECK (sibling_index >= 0),
    -- A parent is a message of the same conversation; a message whose parent is gone
    -- cannot exist (a subtree is deleted whole, in one statement).
    ADD CONSTRAINT messages_parent FOREIGN KEY (conversation_id, parent_id)
        REFERENCES messages (conversation_id, id);

-- Children of a message by seq: the siblings of a message, the walks down a subtree
-- (switch, delete), and the parent check of `messages_parent`.
CREATE INDEX messages_by_parent ON messages (conversation_id, parent_id, seq);

-- The roots by seq (`parent_id IS NULL` is no equality, so `messages_by_parent`
-- cannot give them in seq order).
CREATE INDEX messages_roots ON messages (conversation_id, seq) WHERE parent_id IS NULL;

-- The active path by seq: windows and path pages are ranges of it.
CREATE INDEX messages_on_path ON messages (conversation_id, seq) WHERE on_path;

ALTER TABLE conversations
    -- The highest seq ever assigned: the next message gets `last_seq + 1`.
    ADD COLUMN last_seq bigint NOT NULL DEFAULT 0,
    -- The head, NULL when the conversation has no message; its seq and depth are
    -- kept beside it, so that an append after it reads nothing but this row.
    ADD COLUMN head_id    uuid,
    ADD COLUMN head_seq   bigint,
    ADD COLUMN head_depth bigint;

UPDATE conversations c
SET last_seq = last.seq, head_id = last.id, head_seq = last.seq, head_depth = last.depth
FROM (
    SELECT DISTINCT ON (conversation_id) conversation_id, seq, id, depth
    FROM messages
    ORDER BY conversation_id, seq DESC
) AS last
WHERE c.id = last.conversation_id;

ALTER TABLE conversations
    ALTER COLUMN last_seq DROP DEFAULT,
    ADD CONSTRAINT conversations_last_seq CHECK (last_seq >= message_count),
    ADD CONSTRAINT conversations_head CHECK ((head_id IS NULL) = (message_count = 0)
        AND (head_seq IS NULL) = (head_id IS NULL) AND (head_depth IS NULL) = (head_id IS NULL)),
    -- The head is a stored message of the conversation.
    ADD CONSTRAINT conversations_head_message FOREIGN KEY (id, head_id)
        REFERENCES messages (conversation_id, id);
