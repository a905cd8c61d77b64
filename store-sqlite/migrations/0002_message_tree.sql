-- The message tree. Every message has a parent, named by its seq in the same
-- conversation (0 for a root) and by its id; a conversation has a head (the leaf of
-- its active path, 0 and NULL when it has no message), the highest seq it ever
-- assigned, and the length of its active path. `message_path` holds the seqs of the
-- active path, each with how many siblings its message has.

ALTER TABLE messages ADD COLUMN parent_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN parent_id BLOB;

ALTER TABLE conversations ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN head_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN head_id BLOB;
ALTER TABLE conversations ADD COLUMN path_len INTEGER NOT NULL DEFAULT 0;

-- Until now every conversation was a chain: each message follows the one stored
-- before it, and the newest is the head.
UPDATE messages SET parent_seq = coalesce((
    SELECT max(p.seq) FROM messages AS p
    WHERE p.conversation_id = messages.conversation_id AND p.seq < messages.seq), 0);
UPDATE messages SET parent_id = (
    SELECT p.id FROM messages AS p
    WHERE p.conversation_id = messages.conversation_id AND p.seq = messages.parent_seq)
WHERE parent_seq > 0;
UPDATE conversations SET last_seq = coalesce((
    SELECT max(m.seq) FROM messages AS m WHERE m.conversation_id = conversations.id), 0);
UPDATE conversations SET
    head_seq = last_seq,
    head_id = (SELECT m.id FROM messages AS m
               WHERE m.conversation_id = conversations.id AND m.seq = conversations.last_seq),
    path_len = (SELECT count(*) FROM messages AS m WHERE m.conversation_id = conversations.id);

-- A message's children (roots under 0) by seq, with their ids: siblings, subtrees.
CREATE INDEX messages_by_parent ON messages (conversation_id, parent_seq, seq, id);

CREATE TABLE message_path (
    conversation_id BLOB    NOT NULL,
    seq             INTEGER NOT NULL,
    siblings        INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;

INSERT INTO message_path (conversation_id, seq, siblings)
    SELECT conversation_id, seq, 1 FROM messages;
