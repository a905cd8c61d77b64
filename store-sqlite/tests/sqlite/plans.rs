//! Every hot read is an index seek: `EXPLAIN QUERY PLAN` of the store's own SQL.

use conversation_core::ArchivedFilter;
use conversation_store_sqlite::{SqliteStore, sql};

use super::fresh_path;

/// The plan's detail lines; parameters are bound to NULL (plans do not depend on them).
fn plan(conn: &rusqlite::Connection, statement: &str) -> Vec<String> {
    let mut explain = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {statement}"))
        .unwrap();
    for index in 1..=explain.parameter_count() {
        explain
            .raw_bind_parameter(index, rusqlite::types::Null)
            .unwrap();
    }
    let mut rows = explain.raw_query();
    let mut lines = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        lines.push(row.get::<_, String>(3).unwrap());
    }
    lines
}

/// Asserts that the plan reads each table through an index (a `SEARCH`), never a
/// `SCAN` of a table (only of `page`, the subquery a JSON page aggregates), and
/// sorts nothing.
#[track_caller]
fn assert_seeks(conn: &rusqlite::Connection, what: &str, statement: &str, tables: &[&str]) {
    let lines = plan(conn, statement);
    if std::env::var_os("SHOW_PLANS").is_some() {
        eprintln!("{what}:\n  {}", lines.join("\n  "));
    }
    let shown = lines.join("\n  ");
    for line in &lines {
        assert!(
            !line.starts_with("SCAN ") || line == "SCAN page",
            "{what} scans a table:\n  {shown}"
        );
        assert!(!line.contains("TEMP B-TREE"), "{what} sorts:\n  {shown}");
    }
    for table in tables {
        let seek = lines.iter().any(|line| {
            let searched = line.starts_with(&format!("SEARCH {table} "))
                || line.starts_with(&format!("SEARCH {} ", &table[..1]));
            searched
                && (line.contains(" USING INDEX ")
                    || line.contains(" USING PRIMARY KEY ")
                    || line.contains(" USING COVERING INDEX "))
        });
        assert!(seek, "{what} does not seek {table} by an index:\n  {shown}");
    }
}

/// Fills the file with skewed data (a long conversation, a short one, many
/// conversations in one scope) and runs `ANALYZE`, so that the planner decides with
/// statistics like those of a real database.
fn seed_and_analyze(conn: &rusqlite::Connection) {
    conn.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO conversations SELECT randomblob(16), 'busy', 't', 'user', i, i, 0,
             i % 10 = 0, i % 7 = 0, '{}', 1 FROM n;
         INSERT INTO conversations VALUES
             (x'00000000000000000000000000000001', 'long', 't', 'user', 1, 1, 20000, 0, 0, '{}', 1),
             (x'00000000000000000000000000000002', 'short', 't', 'user', 1, 1, 3, 0, 0, '{}', 1);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO messages SELECT x'00000000000000000000000000000001', i, randomblob(16),
             'user', 'hello', NULL, NULL, '{}', i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3)
         INSERT INTO messages SELECT x'00000000000000000000000000000002', i, randomblob(16),
             'user', 'hello', NULL, NULL, '{}', i FROM n;
         ANALYZE;",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reads_use_indexes_and_scan_no_table() {
    let path = fresh_path();
    SqliteStore::open(&path).await.unwrap().close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_all_plans(&conn);
    // And again once the planner has statistics of skewed data.
    seed_and_analyze(&conn);
    assert_all_plans(&conn);
}

fn assert_all_plans(conn: &rusqlite::Connection) {
    assert_seeks(conn, "get", sql::GET_CONVERSATION, &["conversations"]);
    assert_seeks(conn, "exists", sql::CONVERSATION_EXISTS, &["conversations"]);
    assert_seeks(
        conn,
        "idempotent retry lookup",
        sql::MESSAGE_BY_ID,
        &["messages"],
    );
    for (what, statement) in [
        ("window", sql::recent_messages(20)),
        ("window rows", sql::recent_messages_rows(20)),
        ("message page (newest)", sql::messages(true, 51)),
        ("message page rows (newest)", sql::messages_rows(true, 51)),
        ("message page (oldest)", sql::messages(false, 51)),
        ("message page rows (oldest)", sql::messages_rows(false, 51)),
    ] {
        assert_seeks(conn, what, &statement, &["messages", "conversations"]);
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
                    for statement in [
                        sql::list_conversations(
                            archived,
                            pinned_first,
                            after_cursor,
                            title_filter,
                            51,
                        ),
                        sql::list_conversations_rows(
                            archived,
                            pinned_first,
                            after_cursor,
                            title_filter,
                            51,
                        ),
                    ] {
                        assert_seeks(conn, &what, &statement, &["conversations"]);
                    }
                }
            }
        }
    }
}
