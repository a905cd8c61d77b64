//! Every hot read is an index seek: `EXPLAIN QUERY PLAN` of the store's own SQL, on an
//! empty file and again on skewed data with `ANALYZE` statistics.

use conversation_core::ArchivedFilter;
use conversation_store_sqlite::{SqliteStore, sql};

use super::fresh_path;

/// The long conversation of [`seed_and_analyze`].
const LONG: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Values like the store binds: SQLite's planner (built with `STAT4`) looks at them
/// once it has statistics, so a plan is checked with the kind of value it gets.
fn value(kind: char) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match kind {
        'c' => Value::Blob(LONG.to_vec()),      // a conversation id
        'm' => Value::Blob(vec![0xab; 16]),     // a message id
        's' => Value::Text("long".to_owned()),  // a scope
        'q' => Value::Integer(19_990),          // a seq
        'p' => Value::Integer(19_989),          // a parent seq
        'z' => Value::Integer(0),               // a lower bound
        'x' => Value::Integer(i64::MAX),        // an upper bound
        'n' => Value::Integer(20),              // a count
        't' => Value::Text("title".to_owned()), // text
        'b' => Value::Integer(1),               // a flag
        _ => Value::Null,
    }
}

/// The plan's detail lines, with the parameters bound as `kinds` says (one letter of
/// [`value`] per parameter, `_` for NULL).
fn plan(conn: &rusqlite::Connection, statement: &str, kinds: &str) -> Vec<String> {
    let mut explain = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {statement}"))
        .unwrap();
    for index in 1..=explain.parameter_count() {
        let kind = kinds.chars().nth(index - 1).unwrap_or('_');
        explain.raw_bind_parameter(index, value(kind)).unwrap();
    }
    let mut rows = explain.raw_query();
    let mut lines = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        lines.push(row.get::<_, String>(3).unwrap());
    }
    lines
}

/// What a plan may scan: the queues of the recursive tree walks, and the constant row
/// that starts one.
const QUEUES: [&str; 3] = ["up", "sub", "CONSTANT ROW"];

/// Asserts that the plan reads each of `tables` through an index (a `SEARCH`), never
/// `SCAN`s a table (only the queue of a recursive walk), and sorts nothing. A walk's
/// step must look its table up from the queue, not the other way round: a `SEARCH`
/// with a range (`>`, `<`) on the parent index inside a walk would read the whole
/// conversation at every step.
#[track_caller]
fn assert_seeks(
    conn: &rusqlite::Connection,
    what: &str,
    (statement, kinds): (&str, &str),
    tables: &[&str],
) {
    let lines = plan(conn, statement, kinds);
    if std::env::var_os("SHOW_PLANS").is_some() {
        eprintln!("{what}:\n  {}", lines.join("\n  "));
    }
    let shown = lines.join("\n  ");
    for line in &lines {
        if let Some(scanned) = line.strip_prefix("SCAN ") {
            assert!(
                QUEUES.contains(&scanned),
                "{what} scans a table:\n  {shown}"
            );
        }
        assert!(!line.contains("TEMP B-TREE"), "{what} sorts:\n  {shown}");
        assert!(
            !line.contains("AUTOMATIC"),
            "{what} builds an index:\n  {shown}"
        );
        if lines.iter().any(|l| l == "RECURSIVE STEP") {
            assert!(
                !(line.contains("messages_by_parent") && line.contains("parent_seq>")),
                "{what} reads a range of the tree at each step:\n  {shown}"
            );
        }
    }
    for table in tables {
        let seek = lines.iter().any(|line| {
            line.starts_with(&format!("SEARCH {table} "))
                && (line.contains(" USING INDEX ")
                    || line.contains(" USING PRIMARY KEY ")
                    || line.contains(" USING COVERING INDEX "))
        });
        assert!(seek, "{what} does not seek {table} by an index:\n  {shown}");
    }
}

/// Fills the file with skewed data (a long conversation, a short one, a branched one,
/// many conversations in one scope) and runs `ANALYZE`, so that the planner decides
/// with statistics like those of a real database.
fn seed_and_analyze(conn: &rusqlite::Connection) {
    conn.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO conversations (id, scope, title, title_source, created_at, updated_at,
             message_count, last_seq, head_seq, head_id, path_len, pinned, archived, metadata,
             version)
         SELECT randomblob(16), 'busy', 't', 'user', i, i, 0, 0, 0, NULL, 0,
             i % 10 = 0, i % 7 = 0, '{}', 1 FROM n;
         INSERT INTO conversations (id, scope, title, title_source, created_at, updated_at,
             message_count, last_seq, head_seq, head_id, path_len, pinned, archived, metadata,
             version) VALUES
             (x'00000000000000000000000000000001', 'long', 't', 'user', 1, 1, 20000, 20000,
              20000, NULL, 20000, 0, 0, '{}', 1),
             (x'00000000000000000000000000000002', 'short', 't', 'user', 1, 1, 3, 3, 3, NULL,
              3, 0, 0, '{}', 1),
             (x'00000000000000000000000000000003', 'tree', 't', 'user', 1, 1, 2000, 2000, 2000,
              NULL, 20, 0, 0, '{}', 1);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO messages (conversation_id, seq, id, parent_seq, parent_id, role, content,
             tool_calls, tool_call_id, metadata, created_at)
         SELECT x'00000000000000000000000000000001', i, randomblob(16), i - 1, NULL, 'user',
             'hello', NULL, NULL, '{}', i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3)
         INSERT INTO messages (conversation_id, seq, id, parent_seq, parent_id, role, content,
             tool_calls, tool_call_id, metadata, created_at)
         SELECT x'00000000000000000000000000000002', i, randomblob(16), i - 1, NULL, 'user',
             'hello', NULL, NULL, '{}', i FROM n;
         -- 2,000 messages, 100 children of the root, each a branch of 19.
         WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
         INSERT INTO messages (conversation_id, seq, id, parent_seq, parent_id, role, content,
             tool_calls, tool_call_id, metadata, created_at)
         SELECT x'00000000000000000000000000000003', i, randomblob(16),
             CASE WHEN i % 20 = 2 THEN 1 ELSE i - 1 END, NULL, 'user', 'hello', NULL, NULL,
             '{}', i FROM n;
         INSERT INTO messages (conversation_id, seq, id, parent_seq, parent_id, role, content,
             tool_calls, tool_call_id, metadata, created_at)
         VALUES (x'00000000000000000000000000000003', 1, randomblob(16), 0, NULL, 'user', 'q',
             NULL, NULL, '{}', 1);
         INSERT INTO message_path (conversation_id, seq, siblings)
             SELECT conversation_id, seq, 1 FROM messages
             WHERE conversation_id <> x'00000000000000000000000000000003';
         INSERT INTO message_path (conversation_id, seq, siblings)
             SELECT conversation_id, seq, CASE WHEN seq = 1982 THEN 100 ELSE 1 END FROM messages
             WHERE conversation_id = x'00000000000000000000000000000003'
             AND (seq = 1 OR seq >= 1982);
         -- Every conversation has its own key in the search index.
         UPDATE conversations SET search_key = rowid, scope_key = 1;
         ANALYZE;",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reads_and_tree_writes_use_indexes_and_scan_no_table() {
    let path = fresh_path();
    SqliteStore::open(&path).await.unwrap().close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_all_plans(&conn);
    // And again once the planner has statistics of skewed data.
    seed_and_analyze(&conn);
    assert_all_plans(&conn);
}

fn assert_all_plans(conn: &rusqlite::Connection) {
    assert_seeks(
        conn,
        "get",
        (sql::GET_CONVERSATION, "cs"),
        &["conversations"],
    );
    assert_seeks(
        conn,
        "exists",
        (sql::CONVERSATION_EXISTS, "cs"),
        &["conversations"],
    );
    assert_seeks(
        conn,
        "message by id",
        (sql::MESSAGE_BY_ID, "csm"),
        &["c", "m", "s", "p"],
    );
    assert_seeks(
        conn,
        "message seq by id",
        (sql::MESSAGE_SEQ, "cm"),
        &["messages"],
    );
    // A lookup by id is a point read of the id's index, never a range of the
    // conversation's messages.
    for (what, statement) in [
        ("message by id", (sql::MESSAGE_BY_ID, "csm")),
        ("message seq by id", (sql::MESSAGE_SEQ, "cm")),
    ] {
        let lines = plan(conn, statement.0, statement.1);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("messages_by_id (conversation_id=? AND id=?)")),
            "{what}:\n  {}",
            lines.join("\n  ")
        );
    }
    assert_seeks(
        conn,
        "message by seq",
        (sql::MESSAGE_BY_SEQ, "cq"),
        &["m", "s"],
    );
    assert_seeks(conn, "ancestors", (sql::ANCESTORS, "cqn"), &["m", "s"]);
    for (what, statement) in [
        ("siblings before", sql::SIBLINGS_BEFORE),
        ("siblings after", sql::SIBLINGS_AFTER),
        ("siblings before count", sql::SIBLINGS_BEFORE_COUNT),
    ] {
        assert_seeks(conn, what, (statement, "cpq"), &["messages"]);
    }
    for newest_first in [true, false] {
        for limit in [21, 51] {
            for bounds in ["zx", "zq", "qx"] {
                let kinds = format!("cs{bounds}");
                assert_seeks(
                    conn,
                    &format!("path page (newest first {newest_first}, {limit}, {bounds})"),
                    (&sql::path_messages(newest_first, limit), &kinds),
                    &["c", "m", "p"],
                );
                assert_seeks(
                    conn,
                    &format!("tree page (newest first {newest_first}, {limit}, {bounds})"),
                    (&sql::all_messages(newest_first, limit), &kinds),
                    &["c", "m", "s"],
                );
            }
        }
    }
    for (what, statement, tables) in [
        ("parent step", (sql::PARENT_STEP, "cq"), &["m", "p"][..]),
        ("child count", (sql::CHILD_COUNT, "cq"), &["messages"][..]),
        ("message id", (sql::MESSAGE_ID, "cq"), &["messages"][..]),
        (
            "newest message",
            (sql::NEWEST_MESSAGE, "c"),
            &["messages"][..],
        ),
        ("newest under", (sql::NEWEST_UNDER, "cq"), &["m"][..]),
        ("on path", (sql::ON_PATH, "cq"), &["message_path"][..]),
        ("path after", (sql::PATH_AFTER, "cq"), &["message_path"][..]),
        ("cut path", (sql::CUT_PATH, "cq"), &["message_path"][..]),
        (
            "path siblings",
            (sql::ADD_PATH_SIBLINGS, "cqn"),
            &["message_path"][..],
        ),
        (
            "delete subtree",
            (sql::DELETE_SUBTREE, "cq"),
            &["messages", "m"][..],
        ),
        (
            "delete conversation",
            (sql::DELETE_CONVERSATION, "cs"),
            &["conversations"][..],
        ),
        (
            "delete its messages",
            (sql::DELETE_MESSAGES_OF, "c"),
            &["messages"][..],
        ),
        (
            "delete its path",
            (sql::DELETE_PATH_OF, "c"),
            &["message_path"][..],
        ),
        (
            "update conversation",
            (sql::UPDATE_CONVERSATION, "cs__zzzzz_zbb_n"),
            &["conversations"][..],
        ),
    ] {
        assert_seeks(conn, what, statement, tables);
    }
    // Retention: one index range (two merged for inactivity in one scope), no sort.
    for by_archive in [false, true] {
        for in_scope in [false, true] {
            for after in [false, true] {
                for include_pinned in [false, true] {
                    let what = format!(
                        "expired (archive {by_archive}, scope {in_scope}, after {after}, pinned {include_pinned})"
                    );
                    let statement = sql::expired(by_archive, in_scope, after, include_pinned);
                    assert_seeks(conn, &what, (&statement, "qqmns"), &["conversations"]);
                }
            }
        }
    }
    // The metadata filter: the first value's index range, each conversation by its
    // key, further values by key; the matches are sorted (never the scope).
    for filters in [1, 3] {
        let statement = sql::list_conversations_by_metadata(
            ArchivedFilter::Exclude,
            false,
            true,
            false,
            filters,
            51,
        );
        let lines = plan(conn, &statement, "sbnmttttttttttt");
        let shown = lines.join("\n  ");
        assert!(
            lines
                .iter()
                .any(|l| l
                    .starts_with("SEARCH f USING COVERING INDEX conversation_metadata_by_value")),
            "metadata filter:\n  {shown}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l
                    .starts_with("SEARCH c USING INDEX sqlite_autoindex_conversations_1 (id=?)")),
            "metadata filter:\n  {shown}"
        );
        assert!(
            !lines.iter().any(|l| l.starts_with("SCAN")),
            "metadata filter scans:\n  {shown}"
        );
    }
    // Search: the index's rows of the scope's words, each conversation by its key.
    for after in [false, true] {
        let statement = sql::search_hits(ArchivedFilter::Exclude, after, 51);
        let lines = plan(conn, &statement, "tsqqm");
        let shown = lines.join("\n  ");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("search VIRTUAL TABLE INDEX")),
            "search:\n  {shown}"
        );
        assert!(
            lines.iter().any(|l| l
                .starts_with("SEARCH c USING INDEX conversations_by_search_key (search_key=?)")),
            "search:\n  {shown}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("SCAN c") || l.starts_with("SCAN conversations")),
            "search scans conversations:\n  {shown}"
        );
    }
    for archived in [
        ArchivedFilter::Exclude,
        ArchivedFilter::Only,
        ArchivedFilter::Include,
    ] {
        for pinned_first in [false, true] {
            for after_cursor in [false, true] {
                for title_filter in [false, true] {
                    let what = format!(
                        "list page ({archived:?}, pinned_first {pinned_first}, cursor {after_cursor}, filter {title_filter})"
                    );
                    let statement = sql::list_conversations(
                        archived,
                        pinned_first,
                        after_cursor,
                        title_filter,
                        51,
                    );
                    assert_seeks(conn, &what, (&statement, "sbnmt"), &["conversations"]);
                }
            }
        }
    }
}

/// The virtual-machine steps SQLite takes to run `statement` to its end (a count of
/// its work, the same on every machine), and the rows it returned.
fn steps(
    conn: &rusqlite::Connection,
    statement: &str,
    params: &[&dyn rusqlite::ToSql],
) -> (i32, usize) {
    let mut prepared = conn.prepare(statement).unwrap();
    let mut rows = prepared.query(params).unwrap();
    let mut count = 0;
    while rows.next().unwrap().is_some() {
        count += 1;
    }
    drop(rows);
    (
        prepared.get_status(rusqlite::StatementStatus::VmStep),
        count,
    )
}

/// A window and a page cost the same work in a conversation of 3 messages, of 20,000
/// on one branch, and in a tree of 2,000 messages on 100 branches: the cost does not
/// grow with the conversation or its tree. And so do the sibling reads of a message
/// with 100 versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_cost_the_same_whatever_the_tree() {
    let path = fresh_path();
    SqliteStore::open(&path).await.unwrap().close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    seed_and_analyze(&conn);
    let id = |n: u8| {
        let mut bytes = [0u8; 16];
        bytes[15] = n;
        bytes.to_vec()
    };
    let window = sql::path_messages(true, 3);
    let oldest = sql::path_messages(false, 3);
    let mut costs = Vec::new();
    for (n, scope) in [(2, "short"), (1, "long"), (3, "tree")] {
        for statement in [&window, &oldest] {
            let (steps, rows) = steps(&conn, statement, &[&id(n), &scope, &0_i64, &i64::MAX]);
            assert_eq!(rows, 3, "{scope}");
            costs.push((scope, steps));
        }
    }
    let least = costs.iter().map(|(_, steps)| *steps).min().unwrap();
    for (scope, steps) in &costs {
        assert!(
            *steps <= least * 2,
            "{scope}: {steps} steps against {least}: {costs:?}"
        );
    }
    // The newest page of the tree: its path, not the messages of other branches.
    let (_, rows) = steps(
        &conn,
        &sql::path_messages(true, 50),
        &[&id(3), &"tree", &0_i64, &i64::MAX],
    );
    assert_eq!(rows, 20, "the tree's path is 20 messages long");
    // Siblings: the window around the 50th of 100 versions is bounded.
    let (before, rows) = steps(&conn, sql::SIBLINGS_BEFORE, &[&id(3), &1_i64, &1002_i64]);
    assert_eq!(rows, 50);
    let (after, rows) = steps(&conn, sql::SIBLINGS_AFTER, &[&id(3), &1_i64, &1002_i64]);
    assert_eq!(rows, 49);
    let (first, _) = steps(&conn, sql::SIBLINGS_AFTER, &[&id(3), &1_i64, &2_i64]);
    assert!(
        before <= first * 2 && after <= first * 2,
        "{before} {after} {first}"
    );
}
