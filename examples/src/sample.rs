//! The database the example agent talks about, and the tools it uses on it: what
//! makes the example server the database-chat agent its first host is.
//!
//! At first start the server creates `./data/sample.db` (next to the conversations
//! file): a small shop with customers, products, orders and their items, a few
//! thousand rows, made the same way every time. The agent has three tools:
//!
//! | tool | does |
//! |---|---|
//! | `list_tables` | the tables and their row counts |
//! | `describe_table` `{table}` | a table's columns and indexes |
//! | `run_query` `{sql}` | one read-only SQL statement; at most [`SampleTools::MAX_ROWS`] rows, [`SampleTools::QUERY_TIME_LIMIT`] of time; the result as a Markdown table |
//!
//! Queries run on a connection opened read-only with `PRAGMA query_only`, so no
//! statement can change the file; a query that runs too long is interrupted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conversation_core::{Scope, ToolCall, ToolDefinition, ToolOutput, Toolbox};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, params};
use serde_json::json;

/// Why the sample database could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// Its folder or a temporary file could not be made, or the file could not be
    /// moved into place.
    #[error("cannot make the sample database {path}: {source}")]
    Io {
        /// The sample database's path.
        path: PathBuf,
        /// Why, as the system said it.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused to create, fill or open it.
    #[error("the sample database {path}: {source}")]
    Sqlite {
        /// The sample database's path.
        path: PathBuf,
        /// Why, as SQLite said it.
        #[source]
        source: rusqlite::Error,
    },
}

/// The sample database's tools, as a [`Toolbox`].
#[derive(Debug, Clone)]
pub struct SampleTools {
    path: PathBuf,
}

impl SampleTools {
    /// The most rows `run_query` returns.
    pub const MAX_ROWS: usize = 50;
    /// How long `run_query` may run.
    pub const QUERY_TIME_LIMIT: Duration = Duration::from_secs(2);
    /// The longest cell shown.
    const MAX_CELL_CHARS: usize = 80;

    /// Opens the sample database at `path`, creating and filling it first if the
    /// file does not exist.
    ///
    /// # Errors
    /// [`SampleError`] when it cannot be created or opened.
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<Self, SampleError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| SampleError::Io {
            path: path.clone(),
            source,
        };
        let sqlite = |source| SampleError::Sqlite {
            path: path.clone(),
            source,
        };
        if !path.exists() {
            let folder = match path.parent() {
                Some(folder) if !folder.as_os_str().is_empty() => folder,
                _ => Path::new("."),
            };
            std::fs::create_dir_all(folder).map_err(io)?;
            // Built in a temporary file of its own and renamed into place, so that a
            // half-made database is never taken for a whole one, and two servers
            // starting at once on one folder each make a whole one (the last rename
            // wins; both files are the same shop).
            let building = tempfile::Builder::new()
                .prefix(".sample.db.")
                .tempfile_in(folder)
                .map_err(io)?;
            let conn = Connection::open(building.path()).map_err(sqlite)?;
            fill(&conn).map_err(sqlite)?;
            conn.close().map_err(|(_, source)| sqlite(source))?;
            building.persist(&path).map_err(|e| io(e.error))?;
        }
        Self::read_only(&path).map_err(sqlite)?;
        Ok(Self { path })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_only(path: &Path) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "query_only", "ON")?;
        Ok(conn)
    }

    /// Runs one tool call, blocking (the caller puts it on a blocking thread).
    fn call_blocking(&self, call: &ToolCall) -> ToolOutput {
        let conn = match Self::read_only(&self.path) {
            Ok(conn) => conn,
            Err(error) => {
                return ToolOutput::error(format!("the database is unavailable: {error}"));
            }
        };
        let text_argument = |name: &str| {
            call.arguments
                .get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                // A model that sent its arguments as one JSON string.
                .or_else(|| {
                    call.arguments
                        .as_str()
                        .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
                        .and_then(|v| v.get(name).and_then(|s| s.as_str()).map(str::to_owned))
                })
        };
        match call.name.as_str() {
            "list_tables" => list_tables(&conn),
            "describe_table" => match text_argument("table") {
                Some(table) => describe_table(&conn, &table),
                None => ToolOutput::error("describe_table needs {\"table\": \"<name>\"}"),
            },
            "run_query" => match text_argument("sql") {
                Some(sql) => run_query(&conn, &sql),
                None => ToolOutput::error("run_query needs {\"sql\": \"<one SELECT statement>\"}"),
            },
            other => ToolOutput::error(format!("there is no tool named {other}")),
        }
    }
}

#[async_trait]
impl Toolbox for SampleTools {
    fn tools(&self) -> Vec<ToolDefinition> {
        vec![
            ToolDefinition {
                name: "list_tables".into(),
                description: "Lists the tables of the shop database with their row counts.".into(),
                parameters: json!({"type": "object", "properties": {}}),
            },
            ToolDefinition {
                name: "describe_table".into(),
                description: "Describes a table: its columns with their types, and its indexes."
                    .into(),
                parameters: json!({
                    "type": "object",
                    "properties": {"table": {"type": "string", "description": "The table's name."}},
                    "required": ["table"],
                }),
            },
            ToolDefinition {
                name: "run_query".into(),
                description: format!(
                    "Runs one read-only SQLite query on the shop database and returns at most {} \
                     rows as a table. It cannot change anything.",
                    Self::MAX_ROWS
                ),
                parameters: json!({
                    "type": "object",
                    "properties": {"sql": {"type": "string", "description": "One SELECT statement."}},
                    "required": ["sql"],
                }),
            },
        ]
    }

    async fn call(&self, _scope: &Scope, call: &ToolCall) -> ToolOutput {
        let tools = self.clone();
        let call = call.clone();
        tokio::task::spawn_blocking(move || tools.call_blocking(&call))
            .await
            .unwrap_or_else(|error| ToolOutput::error(format!("the tool failed: {error}")))
    }
}

fn list_tables(conn: &Connection) -> ToolOutput {
    match table_counts(conn) {
        Ok(counts) => {
            let mut text = String::from("| table | rows |\n|---|--:|\n");
            for (name, count) in counts {
                let _ = writeln!(text, "| {name} | {count} |");
            }
            ToolOutput::ok(text)
        }
        Err(error) => ToolOutput::error(error.to_string()),
    }
}

fn table_counts(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema \
             WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    names
        .into_iter()
        .map(|name| {
            // A name read from the schema, quoted as an identifier.
            let quoted = name.replace('"', "\"\"");
            let count =
                conn.query_row(&format!("SELECT count(*) FROM \"{quoted}\""), [], |row| {
                    row.get(0)
                })?;
            Ok((name, count))
        })
        .collect()
}

fn describe_table(conn: &Connection, table: &str) -> ToolOutput {
    match describe(conn, table) {
        Ok(Some(text)) => ToolOutput::ok(text),
        Ok(None) => ToolOutput::error(format!("there is no table named {table}; try list_tables")),
        Err(error) => ToolOutput::error(error.to_string()),
    }
}

/// The table's columns and indexes as text; `None` when there is no such table.
fn describe(conn: &Connection, table: &str) -> rusqlite::Result<Option<String>> {
    let exists: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        params![table],
        |row| row.get(0),
    )?;
    if exists == 0 {
        return Ok(None);
    }
    let mut text = format!("Table `{table}`\n\n| column | type | key |\n|---|---|---|\n");
    let columns = conn
        .prepare("SELECT name, type, pk FROM pragma_table_info(?1)")?
        .query_map(params![table], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (name, kind, pk) in columns {
        let key = if pk > 0 { "primary" } else { "" };
        let _ = writeln!(text, "| {name} | {kind} | {key} |");
    }
    let indexes = conn
        .prepare("SELECT name FROM pragma_index_list(?1) ORDER BY name")?
        .query_map(params![table], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if !indexes.is_empty() {
        let _ = write!(text, "\nIndexes: {}", indexes.join(", "));
    }
    Ok(Some(text))
}

fn run_query(conn: &Connection, sql: &str) -> ToolOutput {
    let deadline = Instant::now() + SampleTools::QUERY_TIME_LIMIT;
    // SQLite calls this every 1,000 virtual-machine steps; `true` interrupts. The
    // connection is this call's own, so the handler goes with it.
    if let Err(error) = conn.progress_handler(1000, Some(move || Instant::now() > deadline)) {
        return ToolOutput::error(format!("the query cannot be time-limited: {error}"));
    }
    match query_table(conn, sql) {
        Ok(text) => ToolOutput::ok(text),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::OperationInterrupted =>
        {
            ToolOutput::error(format!(
                "the query ran longer than {} s and was stopped",
                SampleTools::QUERY_TIME_LIMIT.as_secs()
            ))
        }
        Err(error) => ToolOutput::error(format!("the query failed: {error}")),
    }
}

fn query_table(conn: &Connection, sql: &str) -> rusqlite::Result<String> {
    let sql = sql.trim().trim_end_matches(';');
    let mut statement = conn.prepare(sql)?;
    if !statement.readonly() {
        return Err(rusqlite::Error::InvalidQuery);
    }
    let names: Vec<String> = statement
        .column_names()
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    let mut rows = statement.query([])?;
    let mut text = String::new();
    let _ = writeln!(text, "| {} |", names.join(" | "));
    let _ = writeln!(text, "|{}", "---|".repeat(names.len().max(1)));
    let mut count = 0;
    let mut more = false;
    while let Some(row) = rows.next()? {
        if count == SampleTools::MAX_ROWS {
            more = true;
            break;
        }
        let cells: Vec<String> = (0..names.len()).map(|i| cell(row.get_ref(i))).collect();
        let _ = writeln!(text, "| {} |", cells.join(" | "));
        count += 1;
    }
    let _ = write!(
        text,
        "\n{count} row{}{}",
        if count == 1 { "" } else { "s" },
        if more {
            format!(" (the first {}; more were left out)", SampleTools::MAX_ROWS)
        } else {
            String::new()
        }
    );
    Ok(text)
}

fn cell(value: rusqlite::Result<ValueRef<'_>>) -> String {
    let text = match value {
        Ok(ValueRef::Null) => "NULL".to_owned(),
        Ok(ValueRef::Integer(i)) => i.to_string(),
        Ok(ValueRef::Real(f)) => format!("{f:.2}"),
        Ok(ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
        Ok(ValueRef::Blob(b)) => format!("<{} bytes>", b.len()),
        Err(error) => format!("<{error}>"),
    };
    let text = text.replace(['|', '\n', '\r'], " ");
    if text.chars().count() > SampleTools::MAX_CELL_CHARS {
        let cut: String = text.chars().take(SampleTools::MAX_CELL_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Creates the shop's tables and fills them, the same rows every time.
fn fill(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "PRAGMA journal_mode = DELETE;
         BEGIN;
         CREATE TABLE customers (
             id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT NOT NULL,
             signed_up TEXT NOT NULL);
         CREATE TABLE products (
             id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL,
             price REAL NOT NULL);
         CREATE TABLE orders (
             id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers (id),
             ordered_at TEXT NOT NULL, status TEXT NOT NULL);
         CREATE TABLE order_items (
             order_id INTEGER NOT NULL REFERENCES orders (id),
             product_id INTEGER NOT NULL REFERENCES products (id),
             quantity INTEGER NOT NULL, unit_price REAL NOT NULL,
             PRIMARY KEY (order_id, product_id));
         CREATE INDEX orders_by_customer ON orders (customer_id);
         CREATE INDEX orders_by_date ON orders (ordered_at);",
    )?;
    // A small linear congruential generator: the same shop on every machine.
    let mut seed: u64 = 0x5eed_1234;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    const FIRST: [&str; 12] = [
        "Ada", "Ben", "Chloé", "Dmitri", "Elif", "Farid", "Grace", "Hiro", "Ines", "Jonas",
        "Kemal", "Lena",
    ];
    const LAST: [&str; 10] = [
        "Lovelace", "Okafor", "Martin", "Ivanov", "Yılmaz", "Haddad", "Hopper", "Tanaka", "Sousa",
        "Berg",
    ];
    const COUNTRIES: [&str; 8] = ["FR", "DE", "US", "JP", "BR", "TR", "SE", "NG"];
    const CATEGORIES: [(&str, &[&str]); 4] = [
        (
            "books",
            &[
                "SQL Basics",
                "Query Tuning",
                "Data Modeling",
                "Rust in Action",
            ],
        ),
        (
            "hardware",
            &["Keyboard", "Monitor", "USB-C Hub", "Laptop Stand"],
        ),
        (
            "coffee",
            &["Espresso Beans", "Filter Blend", "Decaf", "Cold Brew"],
        ),
        (
            "software",
            &["IDE License", "Backup Plan", "VPN Year", "Font Pack"],
        ),
    ];
    const STATUSES: [&str; 4] = ["delivered", "delivered", "shipped", "cancelled"];
    {
        let mut insert = conn.prepare(
            "INSERT INTO customers (id, name, country, signed_up) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for id in 1..=400 {
            let name = format!(
                "{} {}",
                FIRST[next(FIRST.len() as u64) as usize],
                LAST[next(LAST.len() as u64) as usize]
            );
            let day = 1 + next(28);
            let month = 1 + next(12);
            insert.execute(params![
                id,
                name,
                COUNTRIES[next(COUNTRIES.len() as u64) as usize],
                format!("2025-{month:02}-{day:02}")
            ])?;
        }
        let mut insert = conn
            .prepare("INSERT INTO products (id, name, category, price) VALUES (?1, ?2, ?3, ?4)")?;
        let mut id = 0;
        for (category, names) in CATEGORIES {
            for name in names {
                id += 1;
                // Whole cents, from 5.00 to 99.99.
                let cents = 500 + next(9500);
                insert.execute(params![id, name, category, cents as f64 / 100.0])?;
            }
        }
        let mut order = conn.prepare(
            "INSERT INTO orders (id, customer_id, ordered_at, status) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut item = conn.prepare(
            "INSERT OR IGNORE INTO order_items (order_id, product_id, quantity, unit_price) \
             SELECT ?1, id, ?3, price FROM products WHERE id = ?2",
        )?;
        for id in 1..=2500 {
            let day = 1 + next(28);
            let month = 1 + next(11);
            order.execute(params![
                id,
                1 + next(400) as i64,
                format!(
                    "2026-{month:02}-{day:02}T{:02}:{:02}:00Z",
                    next(24),
                    next(60)
                ),
                STATUSES[next(STATUSES.len() as u64) as usize]
            ])?;
            for _ in 0..(1 + next(3)) {
                item.execute(params![id, 1 + next(16) as i64, 1 + next(4) as i64])?;
            }
        }
    }
    conn.execute_batch("COMMIT; ANALYZE;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> (tempfile::TempDir, SampleTools) {
        let dir = tempfile::tempdir().unwrap();
        let tools = SampleTools::open_or_create(dir.path().join("sample.db")).unwrap();
        (dir, tools)
    }

    fn call(name: &str, arguments: serde_json::Value) -> ToolCall {
        ToolCall {
            id: "c".into(),
            name: name.into(),
            arguments,
        }
    }

    #[test]
    fn the_shop_is_made_the_same_way_every_time() {
        let (_a, first) = tools();
        let (_b, second) = tools();
        let sql = json!({"sql": "SELECT count(*), sum(quantity * unit_price) FROM order_items"});
        let one = first.call_blocking(&call("run_query", sql.clone()));
        let two = second.call_blocking(&call("run_query", sql));
        assert!(!one.is_error, "{}", one.content);
        assert_eq!(one, two);
        let tables = first.call_blocking(&call("list_tables", json!({})));
        assert!(
            tables.content.contains("| orders | 2500 |"),
            "{}",
            tables.content
        );
        let described = first.call_blocking(&call("describe_table", json!({"table": "orders"})));
        assert!(
            described.content.contains("customer_id"),
            "{}",
            described.content
        );
    }

    #[test]
    fn queries_are_read_only_capped_and_explain_their_errors() {
        let (dir, tools) = tools();
        let copy = dir.path().join("copy.db");
        let vacuum = format!("VACUUM INTO '{}'", copy.display());
        for sql in [
            "DELETE FROM orders",
            "DROP TABLE orders",
            "UPDATE products SET price = 0",
            "SELECT 1; DELETE FROM orders",
            "SELECT * FROM nope",
            "",
            vacuum.as_str(),
        ] {
            let output = tools.call_blocking(&call("run_query", json!({"sql": sql})));
            assert!(output.is_error, "{sql}: {}", output.content);
        }
        assert!(!copy.exists(), "VACUUM INTO wrote a file");
        let untouched = tools.call_blocking(&call("list_tables", json!({})));
        assert!(
            untouched.content.contains("| orders | 2500 |"),
            "{}",
            untouched.content
        );
        let top = tools.call_blocking(&call(
            "run_query",
            json!({"sql": "select name, price from products order by price desc limit 3;"}),
        ));
        assert!(!top.is_error, "{}", top.content);
        assert!(
            top.content.starts_with("| name | price |\n|---|---|\n"),
            "{}",
            top.content
        );
        assert!(top.content.ends_with("\n3 rows"), "{}", top.content);
        for (name, arguments) in [
            ("run_query", json!({})),
            ("run_query", json!({"sql": 42})),
            ("describe_table", json!({})),
            ("drop_everything", json!({})),
        ] {
            let output = tools.call_blocking(&call(name, arguments));
            assert!(output.is_error, "{name}: {}", output.content);
        }
        let count = tools.call_blocking(&call(
            "run_query",
            json!({"sql": "SELECT count(*) FROM orders"}),
        ));
        assert!(count.content.contains("| 2500 |"), "{}", count.content);
        let many = tools.call_blocking(&call("run_query", json!({"sql": "SELECT * FROM orders"})));
        assert!(
            many.content.contains("more were left out"),
            "{}",
            many.content
        );
        let slow = tools.call_blocking(&call(
            "run_query",
            json!({"sql": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"}),
        ));
        assert!(
            slow.is_error && slow.content.contains("stopped"),
            "{}",
            slow.content
        );
        let unknown = tools.call_blocking(&call("describe_table", json!({"table": "x'; --"})));
        assert!(unknown.is_error);
    }
}
