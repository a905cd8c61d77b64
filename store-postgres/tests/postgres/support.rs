//! The server, the skip rule, and stores in throwaway schemas.

use std::io::Write as _;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use conversation_core::{
    Append, Appended, Clock, Conversation, ConversationId, ConversationPatch, ConversationQuery,
    ExpiredConversation, ImportOutcome, ImportedConversation, Message, MessageId, MessagePage,
    MessageQuery, MessageView, NewConversation, NewRun, Page, RecentQuery, Result, RetentionQuery,
    Run, RunId, RunOutcome, Scope, SearchHit, SearchQuery, Store, TitleOutcome, TitleSource,
};
use conversation_store_postgres::{
    PgConnectOptions, PgPoolOptions, PostgresOptions, PostgresStore,
};
use sqlx::{AssertSqlSafe, Connection as _, Executor as _, PgConnection};

/// The server the tests use unless `TEST_DATABASE_URL` names another.
pub(crate) const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Prefix of every schema a test creates.
pub(crate) const TEST_SCHEMA_PREFIX: &str = "conv_test_";

/// Schemas of a killed run older than this are dropped at start.
const STALE_AFTER: Duration = Duration::from_secs(3600);

static PROBE: OnceLock<Probe> = OnceLock::new();

enum Probe {
    Ready(String),
    Unreachable { url: String, reason: String },
}

/// Whether `REQUIRE_POSTGRES=1` (CI): a test that cannot reach or make a server fails.
pub(crate) fn required() -> bool {
    std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// The URL of the reachable test server.
///
/// When the server cannot be reached: with `REQUIRE_POSTGRES=1` this panics, failing
/// the calling test; otherwise it prints one line saying the tests are skipped (to
/// the real stderr, past the test harness's capture) and ends the process with
/// success, before any test has checked anything. A server that answers but refuses
/// (no such database, bad credentials) always fails: that is a broken setup, not a
/// missing server.
pub(crate) fn url() -> &'static str {
    let probe = PROBE.get_or_init(|| {
        std::thread::spawn(probe)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    match probe {
        Probe::Ready(url) => url,
        Probe::Unreachable { url, reason } => {
            if required() {
                panic!(
                    "REQUIRE_POSTGRES=1 but no PostgreSQL server is reachable at {url}: {reason}"
                );
            }
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(
                stderr,
                "SKIPPED: conversation-store-postgres integration tests: no PostgreSQL server reachable at {url} ({reason}); \
                 set TEST_DATABASE_URL to reach one, or REQUIRE_POSTGRES=1 to make this a failure"
            );
            let _ = stderr.flush();
            std::process::exit(0)
        }
    }
}

/// Where a URL points, without its password.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

fn probe() -> Probe {
    let url = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let options = PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("TEST_DATABASE_URL is not a PostgreSQL URL: {e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let connected =
            tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&options))
                .await;
        let mut conn = match connected {
            Err(_) => {
                return Probe::Unreachable {
                    url: describe(&options),
                    reason: "no answer within 5 s".into(),
                };
            }
            Ok(Err(sqlx::Error::Io(err))) => {
                return Probe::Unreachable {
                    url: describe(&options),
                    reason: err.to_string(),
                };
            }
            Ok(Err(err)) => panic!(
                "the PostgreSQL server at {} answered but refused the test connection: {err}",
                describe(&options)
            ),
            Ok(Ok(conn)) => conn,
        };
        drop_stale_schemas(&mut conn).await;
        let _ = conn.close().await;
        Probe::Ready(url)
    })
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Drops `conv_test_<seconds>_…` schemas older than [`STALE_AFTER`].
async fn drop_stale_schemas(conn: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(TEST_SCHEMA_PREFIX)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let cutoff = unix_seconds().saturating_sub(STALE_AFTER.as_secs());
    for name in names {
        let created = name[TEST_SCHEMA_PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|s| s.parse::<u64>().ok());
        if created.is_some_and(|at| at < cutoff) {
            conn.execute(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
            )))
            .await
            .unwrap();
        }
    }
}

/// A schema name no other test uses. Asks for the server first, so that no schema
/// guard exists unless the server does.
pub(crate) fn fresh_schema_name() -> String {
    url();
    // The last 12 hex digits of a UUIDv7 are random.
    let random = uuid::Uuid::now_v7().simple().to_string();
    format!("{TEST_SCHEMA_PREFIX}{}_{}", unix_seconds(), &random[20..])
}

/// A new connection to the test server, outside any store.
pub(crate) async fn admin() -> PgConnection {
    PgConnection::connect(url()).await.unwrap()
}

/// Connect options whose `application_name` is the schema, so the test can find
/// (and end) every connection working in it.
pub(crate) fn connect_options(schema: &str) -> PgConnectOptions {
    PgConnectOptions::from_str(url())
        .unwrap()
        .application_name(schema)
}

/// Ends every connection working in `schema`, then drops it. Runs on a thread of its
/// own with its own runtime, so it works from `Drop` in any runtime flavour.
pub(crate) fn drop_schema(schema: &str) {
    cleanup(
        "drop a test schema",
        vec![
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = '{schema}' AND pid <> pg_backend_pid()"
            ),
            format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"),
        ],
    );
}

/// Runs cleanup statements on a connection of their own, from a thread of its own
/// with its own runtime, so it works from `Drop` in any runtime flavour. A failure
/// fails the test, unless the test is failing already.
pub(crate) fn cleanup(what: &str, statements: Vec<String>) {
    // Never probe (and so never panic) here: this runs in destructors.
    let Some(Probe::Ready(url)) = PROBE.get() else {
        return;
    };
    let url = url.clone();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut conn = PgConnection::connect(&url).await?;
            for statement in statements {
                conn.execute(AssertSqlSafe(statement)).await?;
            }
            conn.close().await
        })
    })
    .join();
    let failure = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(err)) => err.to_string(),
        Err(_) => "the cleanup thread panicked".to_owned(),
    };
    if std::thread::panicking() {
        let _ = writeln!(std::io::stderr(), "could not {what}: {failure}");
    } else {
        panic!("could not {what}: {failure}");
    }
}

/// A [`PostgresStore`] in a fresh schema of its own, dropped with the store.
#[derive(Debug)]
pub(crate) struct TestStore {
    store: PostgresStore,
    schema: SchemaGuard,
}

impl TestStore {
    /// A store with a small pool (tests run in parallel; the server's
    /// `max_connections` is finite).
    pub(crate) async fn new() -> Self {
        Self::with_pool(PgPoolOptions::new().max_connections(4)).await
    }

    /// A store with a small pool whose options are `options` (their schema is
    /// replaced by a fresh one).
    pub(crate) async fn with_options(options: PostgresOptions) -> Self {
        Self::build(PgPoolOptions::new().max_connections(4), options).await
    }

    /// A store reading the time from `clock`.
    pub(crate) async fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::with_options(PostgresOptions::new().clock(clock)).await
    }

    /// A store on a pool built from `pool`.
    pub(crate) async fn with_pool(pool: PgPoolOptions) -> Self {
        Self::build(pool, PostgresOptions::new()).await
    }

    async fn build(pool: PgPoolOptions, options: PostgresOptions) -> Self {
        let schema = fresh_schema_name();
        let pool = pool
            .connect_with(connect_options(&schema))
            .await
            .expect("connect the test pool");
        // From here on, the guard drops the schema whatever happens.
        let guard = SchemaGuard(schema);
        let store = PostgresStore::from_pool_with(pool, options.schema(&guard.0))
            .await
            .expect("migrate a fresh schema");
        Self {
            store,
            schema: guard,
        }
    }

    /// A handle on the store (sharing its pool) for spawned tasks; the schema lives
    /// as long as this `TestStore`.
    pub(crate) fn handle(&self) -> PostgresStore {
        self.store.clone()
    }

    /// Runs `statements` on the store's pool, one after the other.
    pub(crate) async fn execute_all(&self, statements: impl IntoIterator<Item = String>) {
        for statement in statements {
            self.store
                .pool()
                .execute(AssertSqlSafe(statement))
                .await
                .unwrap();
        }
    }

    /// [`assert_tree_columns`] for conversation `id` of this store.
    pub(crate) async fn assert_tree_columns(&self, id: ConversationId) {
        assert_tree_columns(&self.store, id).await;
    }

    /// The schema's name, quoted for SQL.
    pub(crate) fn quoted_schema(&self) -> String {
        format!("\"{}\"", self.schema.0)
    }

    /// The schema's name, also the `application_name` of the store's connections.
    pub(crate) fn schema_name(&self) -> &str {
        &self.schema.0
    }
}

impl Deref for TestStore {
    type Target = PostgresStore;

    fn deref(&self) -> &PostgresStore {
        &self.store
    }
}

/// Drops a schema (ending the connections working in it) when dropped.
#[derive(Debug)]
pub(crate) struct SchemaGuard(pub(crate) String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        drop_schema(&self.0);
    }
}

#[async_trait]
impl Store for TestStore {
    async fn create_conversation(
        &self,
        scope: &Scope,
        new: NewConversation,
    ) -> Result<Conversation> {
        self.store.create_conversation(scope, new).await
    }
    async fn get_conversation(&self, scope: &Scope, id: ConversationId) -> Result<Conversation> {
        self.store.get_conversation(scope, id).await
    }
    async fn list_conversations(
        &self,
        scope: &Scope,
        query: &ConversationQuery,
    ) -> Result<Page<Conversation>> {
        self.store.list_conversations(scope, query).await
    }
    async fn update_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        patch: ConversationPatch,
    ) -> Result<Conversation> {
        self.store.update_conversation(scope, id, patch).await
    }
    async fn delete_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        expected_version: Option<u64>,
    ) -> Result<()> {
        self.store
            .delete_conversation(scope, id, expected_version)
            .await
    }
    async fn append_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        append: Append,
    ) -> Result<Appended> {
        self.store.append_messages(scope, id, append).await
    }
    async fn get_message(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Result<Message> {
        self.store.get_message(scope, id, message).await
    }
    async fn list_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &MessageQuery,
    ) -> Result<MessagePage> {
        self.store.list_messages(scope, id, query).await
    }
    async fn recent_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &RecentQuery,
    ) -> Result<Vec<Message>> {
        self.store.recent_messages(scope, id, query).await
    }
    async fn delete_message(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
        expected_version: Option<u64>,
    ) -> Result<Conversation> {
        self.store
            .delete_message(scope, id, message, expected_version)
            .await
    }
    async fn fork_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Result<Conversation> {
        self.store.fork_conversation(scope, id, message).await
    }
    async fn set_title_unless_user(
        &self,
        scope: &Scope,
        id: ConversationId,
        title: String,
        source: TitleSource,
    ) -> Result<TitleOutcome> {
        self.store
            .set_title_unless_user(scope, id, title, source)
            .await
    }
    async fn start_run(&self, scope: &Scope, id: ConversationId, run: NewRun) -> Result<Run> {
        self.store.start_run(scope, id, run).await
    }
    async fn renew_run(
        &self,
        scope: &Scope,
        id: ConversationId,
        run: RunId,
        lease: Duration,
    ) -> Result<Run> {
        self.store.renew_run(scope, id, run, lease).await
    }
    async fn cancel_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run> {
        self.store.cancel_run(scope, id, run).await
    }
    async fn finish_run(
        &self,
        scope: &Scope,
        id: ConversationId,
        run: RunId,
        outcome: RunOutcome,
    ) -> Result<Run> {
        self.store.finish_run(scope, id, run, outcome).await
    }
    async fn get_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run> {
        self.store.get_run(scope, id, run).await
    }
    async fn search(&self, scope: &Scope, query: &SearchQuery) -> Result<Page<SearchHit>> {
        self.store.search(scope, query).await
    }
    async fn import_conversation(
        &self,
        scope: &Scope,
        conversation: ImportedConversation,
    ) -> Result<ImportOutcome> {
        self.store.import_conversation(scope, conversation).await
    }
    async fn list_expired(&self, query: &RetentionQuery) -> Result<Vec<ExpiredConversation>> {
        self.store.list_expired(query).await
    }
    async fn health(&self) -> Result<()> {
        self.store.health().await
    }
    async fn close(&self) {
        self.store.close().await
    }
}

/// Every message of a conversation's active path, by pages of 200.
pub(crate) async fn all_messages<S: Store + ?Sized>(
    store: &S,
    scope: &Scope,
    id: ConversationId,
) -> Vec<Message> {
    every_message(store, scope, id, MessageView::Path).await
}

/// Every message of `view`, by pages of 200.
pub(crate) async fn every_message<S: Store + ?Sized>(
    store: &S,
    scope: &Scope,
    id: ConversationId,
    view: MessageView,
) -> Vec<Message> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |m: &Message| m.seq);
        let query = MessageQuery::after(after).limit(200).view(view);
        let page = store.list_messages(scope, id, &query).await.unwrap();
        all.extend(page.items);
        if !page.has_more {
            return all;
        }
    }
}

/// For seeding SQL that wrote `last_sibling = true` everywhere: the statements that
/// leave it only on the newest of each set of siblings of `conversation`.
pub(crate) fn last_siblings(s: &str, conversation: &str) -> [String; 2] {
    [
        format!(
            "UPDATE {s}.messages m SET last_sibling = false WHERE conversation_id = '{conversation}' \
             AND EXISTS (SELECT 1 FROM {s}.messages x WHERE x.conversation_id = m.conversation_id \
               AND x.parent_id = m.parent_id AND x.seq > m.seq)"
        ),
        format!(
            "UPDATE {s}.messages m SET last_sibling = false WHERE conversation_id = '{conversation}' \
             AND m.parent_id IS NULL AND EXISTS (SELECT 1 FROM {s}.messages x \
               WHERE x.conversation_id = m.conversation_id AND x.parent_id IS NULL AND x.seq > m.seq)"
        ),
    ]
}

/// Checks the columns the store keeps for the tree of conversation `id` against
/// the parent links: each message's `sibling_index`, `last_sibling`, `depth` and
/// `on_path` (the path being the head and its ancestors), and the conversation's
/// `head_seq` and `head_depth`. Reads cannot see every
/// one of them (a `last_sibling` left `false` only costs a look-up), so tests
/// look at the rows.
pub(crate) async fn assert_tree_columns(store: &PostgresStore, id: ConversationId) {
    let s = format!("\"{}\"", store.schema());
    let same_parent = "s.conversation_id = m.conversation_id \
                       AND s.parent_id IS NOT DISTINCT FROM m.parent_id";
    let wrong: Vec<(i64, bool, bool, bool, bool)> = sqlx::query_as(AssertSqlSafe(format!(
        "WITH RECURSIVE path AS ( \
           SELECT seq, parent_id FROM {s}.messages WHERE conversation_id = $1 \
             AND id = (SELECT head_id FROM {s}.conversations WHERE id = $1) \
           UNION ALL SELECT m.seq, m.parent_id FROM path JOIN {s}.messages m \
             ON m.conversation_id = $1 AND m.id = path.parent_id), \
         checked AS ( \
           SELECT m.seq, \
             m.sibling_index <> (SELECT count(*) FROM {s}.messages s \
               WHERE {same_parent} AND s.seq < m.seq) AS bad_index, \
             m.last_sibling = EXISTS (SELECT 1 FROM {s}.messages s \
               WHERE {same_parent} AND s.seq > m.seq) AS bad_last, \
             m.depth <> coalesce(p.depth, 0) + 1 AS bad_depth, \
             m.on_path <> (m.seq IN (SELECT seq FROM path)) AS bad_path \
           FROM {s}.messages m LEFT JOIN {s}.messages p \
             ON p.conversation_id = m.conversation_id AND p.id = m.parent_id \
           WHERE m.conversation_id = $1) \
         SELECT * FROM checked WHERE bad_index OR bad_last OR bad_depth OR bad_path"
    )))
    .bind(id.as_uuid())
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert!(
        wrong.is_empty(),
        "(seq, bad index, bad last sibling, bad depth, bad path): {wrong:?}"
    );
    let head_kept: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT (c.head_seq, c.head_depth) IS NOT DISTINCT FROM (h.seq, h.depth) \
         FROM {s}.conversations c LEFT JOIN {s}.messages h \
           ON h.conversation_id = c.id AND h.id = c.head_id \
         WHERE c.id = $1"
    )))
    .bind(id.as_uuid())
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(head_kept, "head_seq and head_depth are the head's");
}
