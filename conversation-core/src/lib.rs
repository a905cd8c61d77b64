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
//!   `conversation-store-postgres`.
//! - [`TitleGenerator`] (with [`HeuristicTitles`] and [`sanitize_title`]) and
//!   [`ChatModel`] for the model side; `conversation-llm-openai` implements both.
//! - [`ContextPolicy`]: the window of recent messages a model gets.
//! - [`Conversations`]: the service composing all of them, which a host calls.
//! - [`Error`]: the one error type, with [`Error::is_transient`].
//!
//! The crate has no storage, HTTP or LLM client of its own; it emits `tracing`
//! events and never installs a subscriber.

mod chat;
mod error;
mod ids;
mod limits;
mod model;
mod query;
mod scope;
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
pub use error::{BoxError, Entity, Error, Result};
pub use ids::{ConversationId, MessageId};
pub use limits::Limits;
pub use model::{
    Conversation, ConversationPatch, Message, Metadata, NewConversation, NewMessage, Role,
    TitleSource, ToolCall, now, truncate_to_millis,
};
pub use query::{
    ArchivedFilter, ConversationQuery, DEFAULT_PAGE_SIZE, ListCursor, MAX_PAGE_SIZE,
    MAX_RECENT_MESSAGES, MAX_TITLE_FILTER_CHARS, MessagePage, MessageQuery, MessageRange, Page,
};
pub use scope::Scope;
pub use service::{
    Conversations, ConversationsBuilder, OpenConversation, ReplyProgress, StreamingReply,
};
pub use store::{Appended, Store, TitleOutcome, automatic_title_applies, check_expected_version};
pub use title::{AUTOMATIC_TITLE_MAX_CHARS, HeuristicTitles, TitleGenerator, sanitize_title};
pub use window::{ApproxTokenCounter, ContextPolicy, TokenCounter};
