//! The search index: an FTS5 table of words, each prefixed with its scope's key.
//!
//! The store cuts titles and message contents into words itself, by core's rule
//! ([`conversation_core::backend::tokenize`]: runs of letters and digits, lowercased,
//! without diacritics), and hands FTS5 one line of `<scope key>_<word>` per row, which
//! its `ascii` tokenizer (with `_` as a word character) only splits at the spaces.
//! So:
//!
//! - the index holds exactly core's words, whatever Unicode version SQLite's
//!   `unicode61` tables know (6.1): every store finds the same conversations;
//! - a scope's words are terms of their own, so a search, prefixes included, reads
//!   only its scope's part of the index, never another scope's postings (a prefix
//!   query of FTS5 merges the postings of every term it matches);
//! - the index is contentless: it keeps words and rows, not the text, which lives
//!   in `conversations` and `messages`. A row is removed with FTS5's `delete` command
//!   given the words it was added with, recomputed from the stored text, and the
//!   table's `secure-delete` option removes them from the index pages at once.
//!
//! A row is `search_key << 32 | seq`, the title being seq 0. The rule that cuts
//! words is recorded (`search_state.words_format`); a build whose rule differs (a
//! new Unicode version of Rust's character tables) rebuilds the index when it opens
//! the database, since removing a row needs the very words it was added with.

use conversation_core::backend::{SearchTerms, normalize};
use conversation_core::{Error, Result, Scope};
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::error::db;
use crate::sql;

/// The rule the index's words are cut with; the index is rebuilt when it changes.
pub(crate) fn words_format() -> String {
    let (major, minor, update) = char::UNICODE_VERSION;
    format!("conversation-core words 1, unicode {major}.{minor}.{update}")
}

/// Calls `each` with every word of `text` by core's rule (the words of
/// [`conversation_core::backend::tokenize`]), in order, without building the
/// tokens' character ranges. ASCII words are lowercased directly; others go through
/// core's [`normalize`].
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

/// The line of words the index gets for `text` in the scope of `scope_key`: each word
/// prefixed with the key, separated by spaces. Empty when the text has no word.
pub(crate) fn words(scope_key: i64, text: &str) -> String {
    let prefix = format!("{scope_key}_");
    let mut line = String::with_capacity(text.len() + text.len() / 4);
    each_word(text, |word| {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&prefix);
        line.push_str(word);
    });
    line
}

/// The `MATCH` expression of a search in the scope of `scope_key`: each word a
/// quoted term of the scope, the last with `*` when it is a prefix. The words are
/// core's (letters and digits only), so nothing the user typed is FTS5 syntax; quotes
/// are doubled all the same.
pub(crate) fn match_expression(scope_key: i64, terms: &SearchTerms) -> String {
    let words = terms.words();
    let mut expression = String::new();
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            expression.push(' ');
        }
        expression.push('"');
        expression.push_str(&format!("{scope_key}_"));
        expression.push_str(&word.replace('"', "\"\""));
        expression.push('"');
        if terms.prefix() && i + 1 == words.len() {
            expression.push('*');
        }
    }
    expression
}

/// The largest seq a row of the index can name.
const MAX_SEQ: u64 = u32::MAX as u64;

/// The index row of message `seq` (0 for the title) of the conversation whose key is
/// `search_key`.
pub(crate) fn rowid(search_key: i64, seq: u64) -> Result<i64> {
    if seq > MAX_SEQ {
        return Err(Error::Backend {
            message: format!(
                "message {seq} cannot be indexed for search: the SQLite store indexes seqs up \
                 to {MAX_SEQ}"
            ),
            source: None,
        });
    }
    Ok((search_key << 32) | seq as i64)
}

fn change(conn: &Connection, statement: &str, rowid: i64, words: &str) -> Result<()> {
    if words.is_empty() {
        return Ok(()); // a text without words has no row
    }
    conn.prepare_cached(statement)
        .and_then(|mut s| s.execute(params![rowid, words]))
        .map(drop)
        .map_err(db("updating the search index"))
}

/// Adds `text` as the row `rowid` of the scope of `scope_key`.
pub(crate) fn add(conn: &Connection, scope_key: i64, rowid: i64, text: &str) -> Result<()> {
    change(conn, sql::INSERT_SEARCH_ROW, rowid, &words(scope_key, text))
}

/// Removes the row `rowid`, which was added with `text` in the scope of `scope_key`.
pub(crate) fn remove(conn: &Connection, scope_key: i64, rowid: i64, text: &str) -> Result<()> {
    change(conn, sql::DELETE_SEARCH_ROW, rowid, &words(scope_key, text))
}

/// The key of `scope` in the index, if it has one (it has once a conversation was
/// created in it).
pub(crate) fn scope_key(conn: &Connection, scope: &Scope) -> Result<Option<i64>> {
    conn.prepare_cached(sql::SEARCH_SCOPE_KEY)
        .and_then(|mut s| s.query_row([scope.as_str()], |row| row.get(0)).optional())
        .map_err(db("reading the search index"))
}

/// The key of `scope` in the index, given one first when it has none.
pub(crate) fn ensure_scope_key(conn: &Connection, scope: &Scope) -> Result<i64> {
    if let Some(key) = scope_key(conn, scope)? {
        return Ok(key);
    }
    conn.prepare_cached(sql::INSERT_SEARCH_SCOPE)
        .and_then(|mut s| s.execute([scope.as_str()]))
        .map_err(db("updating the search index"))?;
    scope_key(conn, scope)?.ok_or_else(|| Error::Backend {
        message: "a scope key of the search index was not stored".to_owned(),
        source: None,
    })
}

/// A new conversation key of the index.
pub(crate) fn next_key(conn: &Connection) -> Result<i64> {
    conn.prepare_cached(sql::NEXT_SEARCH_KEY)
        .and_then(|mut s| s.query_row([], |row| row.get(0)))
        .map_err(db("updating the search index"))
}

/// Fills the index from scratch, from every title and message: after the migration
/// that creates it, and when the rule that cuts words has changed. Gives keys to the
/// conversations and scopes that have none. Runs inside the caller's transaction.
pub(crate) fn rebuild(conn: &Connection) -> Result<()> {
    let started = std::time::Instant::now();
    let step = |statement: &str| {
        conn.execute_batch(statement)
            .map_err(db("rebuilding the search index"))
    };
    step(
        "INSERT INTO search (search) VALUES ('delete-all');
         INSERT OR IGNORE INTO search_scopes (scope) SELECT DISTINCT scope FROM conversations;
         UPDATE conversations SET scope_key =
             (SELECT key FROM search_scopes AS s WHERE s.scope = conversations.scope)
             WHERE scope_key IS NULL;",
    )?;
    // Conversations without a key (those of a migrated database) take one after the
    // largest given, by their rowid, which is unique.
    let base: i64 = conn
        .query_row(
            "SELECT coalesce(max(search_key), 0) FROM conversations",
            [],
            |row| row.get(0),
        )
        .map_err(db("rebuilding the search index"))?;
    conn.execute(
        "UPDATE conversations SET search_key = ?1 + rowid WHERE search_key IS NULL",
        [base],
    )
    .map_err(db("rebuilding the search index"))?;
    conn.execute(
        "INSERT INTO search_state (id, words_format, next_key) \
         VALUES (1, ?1, (SELECT coalesce(max(search_key), 0) + 1 FROM conversations)) \
         ON CONFLICT (id) DO UPDATE SET words_format = excluded.words_format",
        [words_format()],
    )
    .map_err(db("rebuilding the search index"))?;
    let mut rows = 0_u64;
    {
        let mut titles = conn
            .prepare(
                "SELECT search_key, scope_key, title FROM conversations WHERE title IS NOT NULL",
            )
            .map_err(db("rebuilding the search index"))?;
        let mut cursor = titles
            .query([])
            .map_err(db("rebuilding the search index"))?;
        while let Some(row) = cursor.next().map_err(db("rebuilding the search index"))? {
            let (key, scope_key, title): (i64, i64, String) = (
                row.get(0).map_err(db("rebuilding the search index"))?,
                row.get(1).map_err(db("rebuilding the search index"))?,
                row.get(2).map_err(db("rebuilding the search index"))?,
            );
            add(conn, scope_key, rowid(key, 0)?, &title)?;
            rows += 1;
        }
        let mut messages = conn
            .prepare(
                "SELECT c.search_key, c.scope_key, m.seq, m.content \
                 FROM conversations AS c CROSS JOIN messages AS m ON m.conversation_id = c.id",
            )
            .map_err(db("rebuilding the search index"))?;
        let mut cursor = messages
            .query([])
            .map_err(db("rebuilding the search index"))?;
        while let Some(row) = cursor.next().map_err(db("rebuilding the search index"))? {
            let (key, scope_key, seq, content): (i64, i64, i64, String) = (
                row.get(0).map_err(db("rebuilding the search index"))?,
                row.get(1).map_err(db("rebuilding the search index"))?,
                row.get(2).map_err(db("rebuilding the search index"))?,
                row.get(3).map_err(db("rebuilding the search index"))?,
            );
            add(conn, scope_key, rowid(key, seq as u64)?, &content)?;
            rows += 1;
        }
    }
    tracing::info!(
        rows,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rebuilt the search index"
    );
    Ok(())
}

/// Whether the index was built with this build's rule for words.
pub(crate) fn is_current(conn: &Connection) -> Result<bool> {
    let format: Option<String> = conn
        .query_row(
            "SELECT words_format FROM search_state WHERE id = 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(db("reading the search index"))?;
    Ok(format.as_deref() == Some(words_format().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use conversation_core::backend::tokenize;
    use proptest::prelude::*;

    fn cut(text: &str) -> Vec<String> {
        let mut words = Vec::new();
        each_word(text, |word| words.push(word.to_owned()));
        words
    }

    #[test]
    fn words_are_cores_words_with_the_scope_key() {
        assert_eq!(words(7, "Café, \"NEAR\" (x*) -y"), "7_cafe 7_near 7_x 7_y");
        assert_eq!(words(7, " ... "), "");
        assert_eq!(
            words(12, "数据库的表 and 東京"),
            "12_数据库的表 12_and 12_東京"
        );
    }

    proptest! {
        /// The store's cut is core's `tokenize`, word for word.
        #[test]
        fn the_cut_is_cores(text in "(\\PC|[ .,;:'\"*()\\-_])*") {
            let core: Vec<String> = tokenize(&text).into_iter().map(|t| t.word).collect();
            prop_assert_eq!(cut(&text), core);
        }
    }

    #[test]
    fn the_cut_is_cores_on_tricky_text() {
        for text in [
            "ÉCOLE École e\u{301}cole",
            "İstanbul ǅemal ß ẞ ﬁne",
            "हिन्दी தமிழ் 𞤀𞤁 ①② Ⅻ",
            "𝐀𝐁 ＡＢ ｱｲ 🧪test☃x",
        ] {
            let core: Vec<String> = tokenize(text).into_iter().map(|t| t.word).collect();
            assert_eq!(cut(text), core, "{text}");
        }
    }

    #[test]
    fn queries_quote_every_word_and_star_only_a_prefix() {
        let terms = SearchTerms::parse("\"orders\" NEAR(x) AND col:y*").unwrap();
        assert_eq!(
            match_expression(3, &terms),
            "\"3_orders\" \"3_near\" \"3_x\" \"3_and\" \"3_col\" \"3_y\""
        );
        let typing = SearchTerms::parse("largest tab").unwrap();
        assert_eq!(match_expression(3, &typing), "\"3_largest\" \"3_tab\"*");
    }

    #[test]
    fn rows_pack_the_conversation_and_the_seq() {
        assert_eq!(rowid(5, 0).unwrap(), 5 << 32);
        assert_eq!(rowid(5, 7).unwrap(), (5 << 32) | 7);
        assert!(rowid(5, MAX_SEQ + 1).is_err());
    }
}
