//! # conversation-core
//!
//! The core of a library for multi-session AI-agent conversations: what a ChatGPT- or
//! Cursor-style sidebar needs (many conversations per *scope*, created, listed,
//! switched, renamed, pinned, archived, deleted and persisted, with LLM-written
//! titles and a sliding context window), as types and traits that any storage and
//! any model plug into.
//!
//! - The model: [`Scope`], [`Conversation`], [`Message`], [`NewConversation`],
//!   [`ConversationPatch`], [`NewMessage`], [`Role`], [`ToolCall`], [`TitleSource`].
//! - [`Store`]: the storage contract, with its promises listed on the trait and
//!   checked by the conformance suite (`store_conformance_tests!`, feature
//!   `testkit`). Backends: `conversation-store-memory`, `conversation-store-sqlite`,
//!   `conversation-store-postgres`. A store author also reads [`backend`]: the rules
//!   every store shares.
//! - [`TitleGenerator`] (with [`HeuristicTitles`] and [`sanitize_title`]) and
//!   [`ChatModel`] for the model side; `conversation-llm-openai` implements both.
//! - [`ContextPolicy`]: the window of recent messages a model gets.
//! - [`Conversations`]: the service composing all of them, which a host calls.
//! - [`Error`]: the one error type, with [`Error::is_transient`].
//!
//! The crate has no storage, HTTP or LLM client of its own; it emits `tracing`
//! events and never installs a subscriber.

// docs.rs builds with `--cfg docsrs` (see Cargo.toml): items behind a feature, such as
// `testkit`, are marked with the feature they need.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backend;
mod chat;
pub mod chatgpt;
mod clock;
mod error;
mod ids;
mod lifecycle;
mod limits;
mod model;
mod query;
mod run;
mod scope;
mod search;
mod service;
mod store;
mod title;
mod window;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use chat::{
    ChatModel, ChatRequest, FinishReason, Reply, ReplyCollector, ReplyEvent, ReplyStream,
    ToolDefinition, Usage, collect_reply,
};
pub use clock::{Clock, SystemClock};
pub use error::{BoxError, Entity, Error, ModelErrorKind, Result};
pub use ids::{ConversationId, MessageId, RunId};
pub use lifecycle::{
    EXPORT_FORMAT, EXPORT_VERSION, ExpiredConversation, Expiry, ExportLine, ExportedConversation,
    ExportedMessage, ImportOutcome, ImportedConversation, RetentionQuery,
};
pub use limits::Limits;
pub use model::{
    Conversation, ConversationPatch, Message, Metadata, NewConversation, NewMessage, Role,
    SIBLING_WINDOW, Siblings, TitleSource, ToolCall,
};
pub use query::{
    ArchivedFilter, ConversationQuery, DEFAULT_PAGE_SIZE, MAX_METADATA_FILTERS, MAX_PAGE_SIZE,
    MAX_RECENT_MESSAGES, MAX_TITLE_FILTER_CHARS, MessagePage, MessageQuery, MessageView, Page,
    RecentQuery,
};
pub use run::{NewRun, Run, RunFailure, RunOutcome, RunStatus};
pub use scope::Scope;
pub use search::{
    Highlight, MAX_MATCHES_PER_HIT, MAX_SEARCH_CHARS, MAX_SEARCH_WORDS, SearchHit, SearchMatch,
    SearchQuery,
};
pub use service::{
    BulkAction, BulkResult, Conversations, ConversationsBuilder, ExportSelection, ImportReport,
    ImportedItem, MAX_BULK_IDS, OpenConversation, PurgeReport, RefusedItem, ReplyRequest,
    RetentionPolicy, RunEvent, RunEventRecord, RunHandle, RunLimits, ToolOutput, Toolbox,
};
pub use store::{Append, Appended, Parent, Store, TitleOutcome};
pub use title::{AUTOMATIC_TITLE_MAX_CHARS, HeuristicTitles, TitleGenerator, sanitize_title};
pub use window::{ApproxTokenCounter, ContextPolicy, TokenCounter};
