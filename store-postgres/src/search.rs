//! The words of the search columns, cut by core's rule, and the queries over them.
//!
//! PostgreSQL's text-search parser is not core's rule (it keeps `a@b.com`, `3.14` and
//! `well-known` whole beside their parts, keeps diacritics, and its `simple`
//! configuration still lowercases by the database's locale), so the store cuts the
//! words itself with [`conversation_core::backend::tokenize`]'s rule and hands
//! PostgreSQL a `tsvector` literal of finished lexemes, which its input function only
//! unquotes. Each lexeme is `<scope key>_<word>`: the scope key is 8 hex digits
//! of a hash of the scope, so a search's terms are its scope's own and the GIN index
//! yields (almost) only the scope's rows; the scope is checked on every conversation
//! found all the same, so a collision of two scopes' keys costs reads, never leaks.

use std::collections::HashSet;

use conversation_core::Result;
use conversation_core::backend::{SearchTerms, normalize, words_rule};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Row as _};
use uuid::Uuid;

use crate::error::db;

/// The longest lexeme PostgreSQL takes is 2046 bytes; longer words are cut (at a
/// character boundary) to this many bytes, key included, in the index and in queries
/// alike.
const MAX_LEXEME_BYTES: usize = 2046;

/// A tsvector holds at most 1 MiB of lexemes and their entries; a text with more
/// distinct words than fit keeps its first ones (a message of over 60,000 distinct
/// words; logged).
const MAX_WORDS_BYTES: usize = 1_000_000;

/// Rows read and written per statement while filling the search columns.
const REINDEX_BATCH: i64 = 200;

/// The key of `scope` in every lexeme: FNV-1a (32 bits) of its bytes, in hex. Stable
/// across builds and platforms (it is stored).
pub(crate) fn scope_key(scope: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in scope.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

/// `key_word`, cut to [`MAX_LEXEME_BYTES`] at a character boundary.
fn lexeme(key: &str, word: &str) -> String {
    let mut lexeme = String::with_capacity(key.len() + 1 + word.len());
    lexeme.push_str(key);
    lexeme.push('_');
    for c in word.chars() {
        if lexeme.len() + c.len_utf8() > MAX_LEXEME_BYTES {
            break;
        }
        lexeme.push(c);
    }
    lexeme
}

/// Appends `lexeme` quoted for the input syntax of `tsvector` and `tsquery`.
fn push_quoted(out: &mut String, lexeme: &str) {
    out.push('\'');
    for c in lexeme.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// Calls `each` with every word of `text` by core's rule (the words of
/// [`conversation_core::backend::tokenize`]), without building the tokens' ranges.
fn each_word(text: &str, mut each: impl FnMut(&str)) {
    let mut lowered = String::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        if word.is_ascii() {
            lowered.clear();
            lowered.push_str(word);
            lowered.make_ascii_lowercase();
            each(&lowered);
        } else {
            each(&normalize(word));
        }
    }
}

/// The `tsvector` literal of `text` in `scope` (cast with `::tsvector`): its distinct
/// words as lexemes of the scope, no positions. Empty for a text without a word.
pub(crate) fn words(scope: &str, text: &str) -> String {
    let key = scope_key(scope);
    let mut seen: HashSet<String> = HashSet::new();
    let mut literal = String::new();
    let mut size = 0;
    let mut dropped = 0_usize;
    each_word(text, |word| {
        let lexeme = lexeme(&key, word);
        if seen.contains(&lexeme) {
            return;
        }
        // Each lexeme costs its bytes and an entry of 4 bytes; 4 more of slack.
        if size + lexeme.len() + 8 > MAX_WORDS_BYTES {
            dropped += 1;
            return;
        }
        size += lexeme.len() + 8;
        if !literal.is_empty() {
            literal.push(' ');
        }
        push_quoted(&mut literal, &lexeme);
        seen.insert(lexeme);
    });
    if dropped > 0 {
        tracing::warn!(
            target: "conversation_store_postgres",
            dropped,
            "a text has more distinct words than a tsvector holds; its last ones are not searchable"
        );
    }
    literal
}

/// The `tsquery` literal (cast with `::tsquery`) of a search in `scope`: every word a
/// lexeme of the scope, all of them required (`&`), the last a prefix (`:*`) when
/// the terms say so. The words are core's (letters and digits), so nothing the user
/// typed is query syntax; quotes are doubled all the same.
pub(crate) fn query(scope: &str, terms: &SearchTerms) -> String {
    let key = scope_key(scope);
    let words = terms.words();
    let mut query = String::new();
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            query.push_str(" & ");
        }
        push_quoted(&mut query, &lexeme(&key, word));
        if terms.prefix() && i + 1 == words.len() {
            query.push_str(":*");
        }
    }
    query
}

/// Fills the search columns left `NULL` (rows written before migration 0003), and
/// refills every one when this build's words rule
/// ([`conversation_core::backend::words_rule`]) differs from the recorded one. Runs
/// on the migration connection under an advisory lock of its own, so instances
/// starting together fill each row once; in batches of [`REINDEX_BATCH`] rows, each
/// its own transaction, walking the primary keys (never rescanning what is done).
pub(crate) async fn reindex(conn: &mut PgConnection, s: &str) -> Result<()> {
    const WHAT: &str = "fill the search index";
    let lock_key = format!("conversation_store_postgres search {s}");
    sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
        .bind(&lock_key)
        .execute(&mut *conn)
        .await
        .map_err(db(WHAT))?;
    let outcome = reindex_locked(conn, s).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(&lock_key)
        .execute(&mut *conn)
        .await
        .map_err(db(WHAT));
    outcome.and(unlocked.map(drop))
}

async fn reindex_locked(conn: &mut PgConnection, s: &str) -> Result<()> {
    const WHAT: &str = "fill the search index";
    let rule = words_rule();
    let stored: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT words_rule FROM {s}.search_state WHERE id = 1"
    )))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db(WHAT))?
    .flatten();
    if stored.as_deref() == Some(rule.as_str()) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    if let Some(stored) = &stored {
        tracing::info!(target: "conversation_store_postgres", %stored, %rule, "the words rule changed: refilling the search index");
        for statement in [
            format!("UPDATE {s}.messages SET words = NULL"),
            format!("UPDATE {s}.conversations SET title_words = NULL"),
        ] {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *conn)
                .await
                .map_err(db(WHAT))?;
        }
    }
    let mut rows = 0_u64;
    // Titles, by id.
    let mut after = Uuid::nil();
    loop {
        let found = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, scope, title FROM {s}.conversations \
             WHERE id > $1 AND title_words IS NULL ORDER BY id LIMIT {REINDEX_BATCH}"
        )))
        .bind(after)
        .fetch_all(&mut *conn)
        .await
        .map_err(db(WHAT))?;
        let Some(last) = found.last() else { break };
        after = last.try_get("id").map_err(db(WHAT))?;
        let mut ids = Vec::with_capacity(found.len());
        let mut words_of = Vec::with_capacity(found.len());
        for row in &found {
            let scope: String = row.try_get("scope").map_err(db(WHAT))?;
            let title: Option<String> = row.try_get("title").map_err(db(WHAT))?;
            ids.push(row.try_get::<Uuid, _>("id").map_err(db(WHAT))?);
            words_of.push(words(&scope, title.as_deref().unwrap_or_default()));
        }
        rows += ids.len() as u64;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {s}.conversations c SET title_words = u.words::tsvector \
             FROM UNNEST($1::uuid[], $2::text[]) AS u(id, words) WHERE c.id = u.id"
        )))
        .bind(ids)
        .bind(words_of)
        .execute(&mut *conn)
        .await
        .map_err(db(WHAT))?;
    }
    // Messages, by primary key.
    let (mut after_conversation, mut after_seq) = (Uuid::nil(), 0_i64);
    loop {
        let found = sqlx::query(AssertSqlSafe(format!(
            "SELECT m.conversation_id, m.seq, c.scope, m.content FROM {s}.messages m \
             JOIN {s}.conversations c ON c.id = m.conversation_id \
             WHERE (m.conversation_id, m.seq) > ($1, $2) AND m.words IS NULL \
             ORDER BY m.conversation_id, m.seq LIMIT {REINDEX_BATCH}"
        )))
        .bind(after_conversation)
        .bind(after_seq)
        .fetch_all(&mut *conn)
        .await
        .map_err(db(WHAT))?;
        let Some(last) = found.last() else { break };
        after_conversation = last.try_get("conversation_id").map_err(db(WHAT))?;
        after_seq = last.try_get("seq").map_err(db(WHAT))?;
        let mut conversations = Vec::with_capacity(found.len());
        let mut seqs = Vec::with_capacity(found.len());
        let mut words_of = Vec::with_capacity(found.len());
        for row in &found {
            let scope: String = row.try_get("scope").map_err(db(WHAT))?;
            let content: String = row.try_get("content").map_err(db(WHAT))?;
            conversations.push(
                row.try_get::<Uuid, _>("conversation_id")
                    .map_err(db(WHAT))?,
            );
            seqs.push(row.try_get::<i64, _>("seq").map_err(db(WHAT))?);
            words_of.push(words(&scope, &content));
        }
        rows += seqs.len() as u64;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {s}.messages m SET words = u.words::tsvector \
             FROM UNNEST($1::uuid[], $2::bigint[], $3::text[]) AS u(conversation_id, seq, words) \
             WHERE m.conversation_id = u.conversation_id AND m.seq = u.seq"
        )))
        .bind(conversations)
        .bind(seqs)
        .bind(words_of)
        .execute(&mut *conn)
        .await
        .map_err(db(WHAT))?;
    }
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {s}.search_state SET words_rule = $1 WHERE id = 1"
    )))
    .bind(&rule)
    .execute(&mut *conn)
    .await
    .map_err(db(WHAT))?;
    tracing::info!(
        target: "conversation_store_postgres",
        rows,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "filled the search index"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use conversation_core::backend::tokenize;

    fn cut(text: &str) -> Vec<String> {
        let mut words = Vec::new();
        each_word(text, |word| words.push(word.to_owned()));
        words
    }

    #[test]
    fn the_cut_is_cores_on_tricky_text() {
        for text in [
            "ÉCOLE École e\u{301}cole",
            "İstanbul ǅemal ß ẞ ﬁne",
            "हिन्दी தமிழ் 𞤀𞤁 ①② Ⅻ",
            "𝐀𝐁 ＡＢ ｱｲ 🧪test☃x",
            "a@b.com 3.14 well-known foo_bar",
        ] {
            let core: Vec<String> = tokenize(text).into_iter().map(|t| t.word).collect();
            assert_eq!(cut(text), core, "{text}");
        }
    }

    #[test]
    fn words_are_distinct_quoted_lexemes_of_the_scope() {
        let key = scope_key("s");
        assert_eq!(key.len(), 8);
        assert_eq!(
            words("s", "Café, café 'NEAR' x"),
            format!("'{key}_cafe' '{key}_near' '{key}_x'")
        );
        assert_eq!(words("s", " ... "), "");
        assert_ne!(scope_key("s"), scope_key("t"));
    }

    #[test]
    fn queries_join_every_word_and_star_only_a_prefix() {
        let key = scope_key("s");
        let terms = SearchTerms::parse("\"orders\" & !x | y:*").unwrap();
        assert_eq!(
            query("s", &terms),
            format!("'{key}_orders' & '{key}_x' & '{key}_y'")
        );
        let typing = SearchTerms::parse("largest tab").unwrap();
        assert_eq!(
            query("s", &typing),
            format!("'{key}_largest' & '{key}_tab':*")
        );
    }

    #[test]
    fn long_words_are_cut_at_a_character_boundary() {
        let word = "é".repeat(2000);
        let lexeme = lexeme("abcdef01", &word);
        assert!(lexeme.len() <= MAX_LEXEME_BYTES);
        assert!(lexeme.len() > MAX_LEXEME_BYTES - 2);
    }
}
