//! The statements of a search.

use conversation_core::ArchivedFilter;

use super::Statements;

/// [`CONVERSATION_COLUMNS`](super::CONVERSATION_COLUMNS) of the alias `c`.
const CONVERSATION_COLUMNS_OF_C: &str = "c.id, c.scope, c.title, c.title_source, c.created_at, c.updated_at, c.message_count, c.last_seq, c.head_id, c.pinned, c.archived, c.metadata, c.version, c.archived_at, c.active_run_id, c.prompt_tokens, c.completion_tokens, c.total_tokens";

impl Statements {
    /// At most `$3` conversations of a search, in rank order, each with its `score`
    /// and `seqs`, the seqs of its best rows (0 for the title), best first: `$1` the
    /// `tsquery` literal (`search::query`), `$2` the scope, and when
    /// `with_cursor` the cursor's `$4` score, `$5` updated_at and `$6` id.
    ///
    /// The query's lexemes carry the scope's key, so the GIN indexes
    /// (`messages_by_words`, `conversations_by_title_words`) yield the scope's rows;
    /// the scope test on each conversation is the guard against a collision of keys.
    /// Each matching row is ranked with `ts_rank`; a conversation takes its best
    /// row's score and keeps its best
    /// [`MAX_MATCHES_PER_HIT`](conversation_core::MAX_MATCHES_PER_HIT) rows (best
    /// first, then title first, then by seq); conversations rank by score, then newest
    /// activity, then id.
    pub fn search(&self, archived: ArchivedFilter, with_cursor: bool) -> String {
        let s = &self.schema;
        let archived = match archived {
            ArchivedFilter::Exclude => " AND NOT c.archived",
            ArchivedFilter::Only => " AND c.archived",
            ArchivedFilter::Include => "",
        };
        let cursor = if with_cursor {
            " AND (h.score, c.updated_at, c.id) < ($4, $5, $6)"
        } else {
            ""
        };
        let matches = conversation_core::MAX_MATCHES_PER_HIT;
        format!(
            "WITH found AS ( \
               SELECT c.id AS conversation_id, 0::bigint AS seq, \
                      ts_rank(c.title_words, $1::tsquery)::float8 AS score \
               FROM {s}.conversations c \
               WHERE c.title_words @@ $1::tsquery AND c.scope = $2{archived} \
               UNION ALL \
               SELECT m.conversation_id, m.seq, ts_rank(m.words, $1::tsquery)::float8 \
               FROM {s}.messages m JOIN {s}.conversations c ON c.id = m.conversation_id \
               WHERE m.words @@ $1::tsquery AND c.scope = $2{archived}), \
             hits AS (SELECT conversation_id, max(score) AS score, \
                 (array_agg(seq ORDER BY score DESC, seq))[1:{matches}] AS seqs \
               FROM found GROUP BY conversation_id) \
             SELECT {CONVERSATION_COLUMNS_OF_C}, h.score, h.seqs \
             FROM hits h JOIN {s}.conversations c ON c.id = h.conversation_id \
             WHERE true{cursor} \
             ORDER BY h.score DESC, c.updated_at DESC, c.id DESC LIMIT $3"
        )
    }

    /// The messages a page of search hits matched: `$1` conversation ids, `$2` seqs
    /// (pairs); `conversation_id`, `id`, `seq`, `role`, `content`, each by primary key.
    pub fn matched_messages(&self) -> String {
        format!(
            "SELECT m.conversation_id, m.id, m.seq, m.role, m.content \
             FROM UNNEST($1::uuid[], $2::bigint[]) AS k(conversation_id, seq) \
             JOIN {}.messages m ON m.conversation_id = k.conversation_id AND m.seq = k.seq",
            self.schema
        )
    }
}
