//! The server composed: store, model, service, API router and web page.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::{Json, Router};
use conversation_adapter_http::{ApiState, harden, measure_routes, probes, router};
use conversation_core::{ChatModel, Conversations, Store, TitleGenerator};
use conversation_llm_openai::{ModelCheck, OpenAiChatModel, OpenAiConfig, OpenAiError};
use conversation_store_memory::MemoryStore;
#[cfg(feature = "postgres")]
use conversation_store_postgres::{PostgresOptions, PostgresStore};
use conversation_store_sqlite::SqliteStore;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::{info, warn};

use crate::{Database, OfflineEchoModel, SampleError, SampleTools, Settings, SettingsError};

/// Where the API is mounted; the web page calls it there.
pub const API_PREFIX: &str = "/api/v1/connections";

/// Where the page reads the scopes the server knows (`--scopes`).
pub const SCOPES_PATH: &str = "/api/v1/scopes";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The sidebar web page, built into the binary: no build step to run it. The
/// third-party files under `vendor/` are copied from npm packages pinned by
/// `web/vendor/package-lock.json` (`npm ci && npm run vendor` there), licences
/// included and served.
const PAGE_ASSETS: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    ("/app.js", JS, include_str!("../web/app.js")),
    ("/markdown.js", JS, include_str!("../web/markdown.js")),
    ("/app.css", CSS, include_str!("../web/app.css")),
    (
        "/favicon.svg",
        "image/svg+xml",
        include_str!("../web/favicon.svg"),
    ),
    (
        "/vendor/marked.umd.js",
        JS,
        include_str!("../web/vendor/marked.umd.js"),
    ),
    (
        "/vendor/purify.min.js",
        JS,
        include_str!("../web/vendor/purify.min.js"),
    ),
    (
        "/vendor/highlight.min.js",
        JS,
        include_str!("../web/vendor/highlight.min.js"),
    ),
    (
        "/vendor/highlight-github.min.css",
        CSS,
        include_str!("../web/vendor/highlight-github.min.css"),
    ),
    (
        "/vendor/highlight-github-dark.min.css",
        CSS,
        include_str!("../web/vendor/highlight-github-dark.min.css"),
    ),
    (
        "/vendor/LICENSE.marked.txt",
        TEXT,
        include_str!("../web/vendor/LICENSE.marked.txt"),
    ),
    (
        "/vendor/LICENSE.dompurify.txt",
        TEXT,
        include_str!("../web/vendor/LICENSE.dompurify.txt"),
    ),
    (
        "/vendor/LICENSE.highlightjs.txt",
        TEXT,
        include_str!("../web/vendor/LICENSE.highlightjs.txt"),
    ),
];

/// The page loads only its own script and style, and talks only to this server.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The store could not be opened.
    #[error("cannot open the store at {what}: {source}")]
    Store {
        /// The store, described without secrets.
        what: String,
        /// Why.
        #[source]
        source: conversation_core::Error,
    },
    /// The SQLite file, or its folder, cannot be written: every change would fail.
    #[error(
        "cannot write {path} ({reason}): the server would lose every change, so it does not \
         start; make the file and its folder writable, or choose another --database-url"
    )]
    ReadOnly {
        /// The file or folder.
        path: String,
        /// Why, as the system said it.
        reason: std::io::Error,
    },
    /// The sample database could not be made or opened.
    #[error(transparent)]
    Sample(#[from] SampleError),
    /// The OpenAI settings are unusable.
    #[error("cannot use the OpenAI settings: {0}")]
    Model(#[from] OpenAiError),
    /// Flags or variables that cannot be used.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The metrics recorder could not be installed.
    #[error("cannot record metrics: {0}")]
    Metrics(#[from] BuildError),
}

/// Checks that the SQLite file at `path`, its journal files and its folder can be
/// written. SQLite itself would open a file it cannot write read-only, and every
/// write would fail later; this refuses to start instead. Nothing is changed: files
/// are opened for writing without truncation, and a probe file in the folder is
/// removed at once.
fn check_writable(path: &Path) -> Result<(), AppError> {
    let read_only = |path: &Path, reason| AppError::ReadOnly {
        path: path.display().to_string(),
        reason,
    };
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        if file.exists() {
            OpenOptions::new()
                .write(true)
                .open(file)
                .map_err(|reason| read_only(file, reason))?;
        }
    }
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    if folder.is_dir() {
        let probe = folder.join(format!(".write-check-{}", std::process::id()));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|reason| read_only(folder, reason))?;
        std::fs::remove_file(&probe).map_err(|reason| read_only(folder, reason))?;
    }
    Ok(())
}

/// Opens the store `settings` name.
///
/// # Errors
/// [`AppError::Store`] when it cannot be opened (unreachable server, a file that is
/// not a SQLite database…).
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, AppError> {
    open_database(settings.database(), settings.database_schema.as_deref())
        .await
        .map(|opened| opened.store())
}

/// An open store, as its own type: for what only one kind of store does (a SQLite
/// store's online backup and statistics).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum OpenedStore {
    /// A SQLite file.
    Sqlite(Arc<SqliteStore>),
    /// A PostgreSQL server.
    #[cfg(feature = "postgres")]
    Postgres(Arc<PostgresStore>),
    /// The in-memory store.
    Memory(Arc<MemoryStore>),
}

impl OpenedStore {
    /// The store as the service takes it.
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            OpenedStore::Sqlite(store) => store.clone(),
            #[cfg(feature = "postgres")]
            OpenedStore::Postgres(store) => store.clone(),
            OpenedStore::Memory(store) => store.clone(),
        }
    }
}

/// Opens `database` (in PostgreSQL, in `schema`, default `public`): the one way the
/// server and the admin command open a store. A SQLite file that cannot be written
/// is refused ([`AppError::ReadOnly`]).
///
/// # Errors
/// [`AppError::Store`] when it cannot be opened (unreachable server, a file that is
/// not a SQLite database…).
pub async fn open_database(
    database: Database,
    schema: Option<&str>,
) -> Result<OpenedStore, AppError> {
    let what = match &database {
        Database::Sqlite(path) => path.display().to_string(),
        Database::Postgres(_) => "the PostgreSQL server of DATABASE_URL".to_owned(),
        Database::Memory => "memory".to_owned(),
    };
    if let Database::Sqlite(path) = &database {
        check_writable(path)?;
    }
    #[cfg(not(feature = "postgres"))]
    let _ = schema;
    let opened: conversation_core::Result<OpenedStore> = match database {
        Database::Sqlite(path) => SqliteStore::open(&path)
            .await
            .map(|store| OpenedStore::Sqlite(Arc::new(store))),
        #[cfg(feature = "postgres")]
        Database::Postgres(url) => {
            let mut options = PostgresOptions::new();
            if let Some(schema) = schema {
                options = options.schema(schema.to_owned());
            }
            PostgresStore::connect_with(&url, options)
                .await
                .map(|store| OpenedStore::Postgres(Arc::new(store)))
        }
        #[cfg(not(feature = "postgres"))]
        Database::Postgres(_) => Err(conversation_core::Error::invalid(
            "databaseUrl",
            "this server was built without PostgreSQL (the `postgres` feature)",
        )),
        Database::Memory => Ok(OpenedStore::Memory(Arc::new(MemoryStore::new()))),
    };
    let store = opened.map_err(|source| AppError::Store {
        what: what.clone(),
        source,
    })?;
    info!(store = %what, "store open");
    Ok(store)
}

/// Installs the Prometheus recorder of the `metrics` facade (latencies as histograms)
/// and keeps it tidy from a background task; the handle renders `/metrics`. Call
/// once per process, inside the Tokio runtime.
///
/// # Errors
/// [`AppError::Metrics`] when a recorder is already installed.
pub fn install_metrics() -> Result<PrometheusHandle, AppError> {
    const SECONDS: &[f64] = &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Opens (creating at first start) the sample database at `path`, off the async
/// threads: filling it takes a moment.
async fn open_sample(path: std::path::PathBuf) -> Result<SampleTools, AppError> {
    let opening = path.clone();
    tokio::task::spawn_blocking(move || SampleTools::open_or_create(opening))
        .await
        .unwrap_or_else(|joined| {
            Err(SampleError::Io {
                path,
                source: std::io::Error::other(joined.to_string()),
            })
        })
        .map_err(AppError::from)
}

/// Checks `model`'s settings once (one `GET {base}/models`, at most
/// [`OpenAiChatModel::CHECK_TIMEOUT`]) and logs one line with `target`
/// `model_check`: at `info` when the model is listed, or none was configured and
/// the first listed one was chosen (what a local Ollama, vLLM or llama.cpp server
/// gets when `OPENAI_MODEL` is unset); at `warn` when the model is not listed, or
/// the check failed, with its code: `upstream_unauthorized` (the key),
/// `upstream_not_found` (the base URL; "probably lacks /v1" when the server
/// answers at `<base>/v1/models`), `upstream_unavailable` or `upstream_timeout`
/// (unreachable). Nothing secret is logged.
///
/// # Errors
/// The check's error, as logged.
pub async fn check_model(model: &OpenAiChatModel) -> conversation_core::Result<ModelCheck> {
    let outcome = model.check().await;
    match &outcome {
        Ok(check) if check.is_listed() => {
            info!(target: "model_check", model = check.model(), "{check}");
        }
        Ok(check) => warn!(target: "model_check", model = check.model(), "{check}"),
        Err(error) => warn!(
            target: "model_check",
            code = error.code(),
            "the model settings do not work, replies will fail: {error}"
        ),
    }
    outcome
}

/// The composed server.
#[derive(Debug, Clone)]
pub struct App {
    /// The HTTP routes: the page at `/`, the probes, `/metrics` and the API under
    /// [`API_PREFIX`], all behind the host guard.
    pub router: Router,
    /// The conversation service behind the API (and the store behind it).
    pub service: Conversations,
}

impl App {
    /// Opens the store, the sample database and chooses the model: with
    /// `OPENAI_API_KEY` (or an `OPENAI_BASE_URL` of a server that needs no key),
    /// replies and titles come from that endpoint, whose settings are checked once
    /// ([`check_model`]); without, replies are the [`OfflineEchoModel`] and titles
    /// are heuristic, and one log line says so. Unless `--sample-db off`, the
    /// service gets the [`SampleTools`] on the sample database (created at first
    /// start). Every route, the page included, is wrapped in [`harden`] with the
    /// settings' host names; `metrics` renders `/metrics`.
    ///
    /// # Errors
    /// [`AppError`] when the settings, the store, the sample database or the OpenAI
    /// settings are unusable. A model check that fails is logged, not an error:
    /// the server starts, and replies say what is wrong.
    pub async fn build(settings: &Settings, metrics: PrometheusHandle) -> Result<Self, AppError> {
        let hosts = settings.allowed_hosts()?;
        let mut builder =
            Conversations::builder(open_store(settings).await?).run_limits(settings.run_limits());
        if let Some(path) = settings.sample_db() {
            let tools = open_sample(path).await?;
            info!(
                path = %tools.path().display(),
                "sample database ready: the agent can list its tables, describe them and run \
                 read-only queries (`/sql <query>` shows it without a model)"
            );
            builder = builder.toolbox(Arc::new(tools));
        }
        let model: Arc<dyn ChatModel> = match OpenAiConfig::from_env() {
            Ok(config) => {
                info!(%config, "replies and titles from an OpenAI-compatible endpoint");
                let model = OpenAiChatModel::new(config)?;
                // The outcome is logged; a server whose model is not reachable yet
                // still starts, and each reply says what is wrong.
                let _ = check_model(&model).await;
                let titles: Arc<dyn TitleGenerator> = Arc::new(model.title_generator());
                builder = builder.title_generator(titles);
                Arc::new(model)
            }
            Err(OpenAiError::Config(reason)) => {
                info!(%reason, "offline mode: replies are a labelled echo and titles are heuristic; set OPENAI_API_KEY for a real model");
                Arc::new(OfflineEchoModel::new(settings.offline_echo_delay()))
            }
            Err(other) => return Err(other.into()),
        };
        let service = builder.chat_model(model).build();
        let api = router(
            ApiState::new(service.clone())
                .with_allowed_hosts(hosts.clone())
                .with_limits(settings.http_limits()),
        );
        let scopes: Vec<String> = settings
            .known_scopes()?
            .into_iter()
            .map(String::from)
            .collect();
        let mut site = Router::new();
        for &(path, content_type, body) in PAGE_ASSETS {
            site = site.route(path, get(move || page_asset(content_type, body)));
        }
        let site = site
            .route(
                SCOPES_PATH,
                get(move || {
                    let scopes = scopes.clone();
                    async move { Json(ScopeList { items: scopes }) }
                }),
            )
            .route(
                "/openapi.json",
                get(|| async { Redirect::temporary(&format!("{API_PREFIX}/openapi.json")) }),
            )
            .route(
                "/metrics",
                get(move || {
                    let text = metrics.render();
                    async move {
                        (
                            [(
                                header::CONTENT_TYPE,
                                HeaderValue::from_static(
                                    "text/plain; version=0.0.4; charset=utf-8",
                                ),
                            )],
                            text,
                        )
                    }
                }),
            )
            .merge(probes(service.clone()));
        let router = harden(measure_routes(site).nest(API_PREFIX, api), &hosts);
        Ok(Self { router, service })
    }

    /// Lets background title generation finish, then closes the store (for SQLite,
    /// checkpointing its WAL).
    pub async fn shutdown(&self) {
        self.service.shutdown().await;
    }
}

/// The body of `GET /api/v1/scopes`.
#[derive(Debug, serde::Serialize)]
struct ScopeList {
    /// The scopes of `--scopes`, the default first.
    items: Vec<String>,
}

async fn page_asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
        ],
        body,
    )
}
