//! The server composed: store, model, service, API router and web page.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use conversation_adapter_http::{ApiState, router};
use conversation_core::{ChatModel, Conversations, Store, TitleGenerator};
use conversation_llm_openai::{OpenAiChatModel, OpenAiConfig, OpenAiError};
use conversation_store_memory::MemoryStore;
use conversation_store_postgres::{PostgresOptions, PostgresStore};
use conversation_store_sqlite::SqliteStore;
use tracing::info;

use crate::{Database, OfflineEchoModel, Settings};

/// Where the API is mounted; the web page calls it there.
pub const API_PREFIX: &str = "/api/v1/connections";

/// The sidebar web page, built into the binary: no build step to run it.
const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const APP_CSS: &str = include_str!("../web/app.css");
const FAVICON_SVG: &str = include_str!("../web/favicon.svg");

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
    /// The OpenAI settings are unusable.
    #[error("cannot use the OpenAI settings: {0}")]
    Model(#[from] OpenAiError),
}

/// Opens the store `settings` name.
///
/// # Errors
/// [`AppError::Store`] when it cannot be opened (unreachable server, a file that is
/// not a SQLite database…).
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, AppError> {
    let database = settings.database();
    let what = match &database {
        Database::Sqlite(path) => path.display().to_string(),
        Database::Postgres(_) => "the PostgreSQL server of DATABASE_URL".to_owned(),
        Database::Memory => "memory".to_owned(),
    };
    let opened: conversation_core::Result<Arc<dyn Store>> = match database {
        Database::Sqlite(path) => SqliteStore::open(&path)
            .await
            .map(|store| Arc::new(store) as Arc<dyn Store>),
        Database::Postgres(url) => {
            let mut options = PostgresOptions::new();
            if let Some(schema) = &settings.database_schema {
                options = options.schema(schema.clone());
            }
            PostgresStore::connect_with(&url, options)
                .await
                .map(|store| Arc::new(store) as Arc<dyn Store>)
        }
        Database::Memory => Ok(Arc::new(MemoryStore::new())),
    };
    let store = opened.map_err(|source| AppError::Store {
        what: what.clone(),
        source,
    })?;
    info!(store = %what, "store open");
    Ok(store)
}

/// The composed server.
#[derive(Debug, Clone)]
pub struct App {
    /// The HTTP routes: the page at `/`, the API under [`API_PREFIX`].
    pub router: Router,
    /// The conversation service behind the API (and the store behind it).
    pub service: Conversations,
}

impl App {
    /// Opens the store and chooses the model: with `OPENAI_API_KEY` (or an
    /// `OPENAI_BASE_URL` of a server that needs no key), replies and titles come from
    /// that endpoint; without, replies are the [`OfflineEchoModel`] and titles are
    /// heuristic, and one log line says so.
    ///
    /// # Errors
    /// [`AppError`] when the store cannot be opened or the OpenAI settings are unusable.
    pub async fn build(settings: &Settings) -> Result<Self, AppError> {
        let mut builder = Conversations::builder(open_store(settings).await?);
        let model: Arc<dyn ChatModel> = match OpenAiConfig::from_env() {
            Ok(config) => {
                info!(
                    base_url = config.base_url(),
                    model = config.model(),
                    "replies and titles from an OpenAI-compatible endpoint"
                );
                let model = OpenAiChatModel::new(config)?;
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
        let api = router(ApiState::new(service.clone()));
        let router = Router::new()
            .route(
                "/",
                get(|| page_asset("text/html; charset=utf-8", INDEX_HTML)),
            )
            .route(
                "/app.js",
                get(|| page_asset("text/javascript; charset=utf-8", APP_JS)),
            )
            .route(
                "/app.css",
                get(|| page_asset("text/css; charset=utf-8", APP_CSS)),
            )
            .route(
                "/favicon.svg",
                get(|| page_asset("image/svg+xml", FAVICON_SVG)),
            )
            .route(
                "/openapi.json",
                get(|| async { Redirect::temporary(&format!("{API_PREFIX}/openapi.json")) }),
            )
            .nest(API_PREFIX, api);
        Ok(Self { router, service })
    }

    /// Lets background title generation finish, then closes the store (for SQLite,
    /// checkpointing its WAL).
    pub async fn shutdown(&self) {
        self.service.shutdown().await;
    }
}

async fn page_asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
        ],
        body,
    )
}
