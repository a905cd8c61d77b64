//! Request and response bodies of the routes that are not core types.

use conversation_core::{
    Appended, Conversation, Message, MessageId, Metadata, NewMessage, Page, TitleOutcome, ToolCall,
    ToolDefinition,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One page of a scope's conversations (`GET /{scope}/conversations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationList {
    /// The conversations, newest activity first (pinned first when asked).
    pub items: Vec<Conversation>,
    /// Pass as `cursor` to read the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl From<Page<Conversation>> for ConversationList {
    fn from(page: Page<Conversation>) -> Self {
        Self {
            items: page.items,
            next_cursor: page.next_cursor,
        }
    }
}

/// The body of `POST /{scope}/conversations/{id}/messages`: one message, or an array
/// of messages stored atomically in the order given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum AppendRequest {
    /// One message.
    One(NewMessage),
    /// A batch: all stored or none.
    Batch(Vec<NewMessage>),
}

impl AppendRequest {
    /// The messages to append, in order.
    pub fn into_messages(self) -> Vec<NewMessage> {
        match self {
            AppendRequest::One(message) => vec![message],
            AppendRequest::Batch(messages) => messages,
        }
    }
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppendResult {
    /// The conversation after the append.
    pub conversation: Conversation,
    /// One stored message per message sent, in the order sent. A message whose `id`
    /// was already stored is the stored one, unchanged (a retried POST stores
    /// nothing twice).
    pub messages: Vec<Message>,
}

impl From<Appended> for AppendResult {
    fn from(appended: Appended) -> Self {
        Self {
            conversation: appended.conversation,
            messages: appended.messages,
        }
    }
}

/// One stored message with its conversation: the data of the SSE events `message`
/// (the user's message) and `done` (the assistant's reply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    /// The conversation after the message was stored.
    pub conversation: Conversation,
    /// The stored message.
    pub message: Message,
}

impl StoredMessage {
    /// The first message of an append, with the conversation.
    pub(crate) fn from_appended(appended: Appended) -> Option<Self> {
        let message = appended.messages.into_iter().next()?;
        Some(Self {
            conversation: appended.conversation,
            message,
        })
    }
}

/// The data of the SSE event `delta`: more text of the reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplyDelta {
    /// The text to add.
    pub text: String,
}

/// The result of `POST /{scope}/conversations/{id}/title`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TitleResult {
    /// The conversation as it is now.
    pub conversation: Conversation,
    /// Whether the generated title was stored; `false` when the user had set one,
    /// which is final.
    pub applied: bool,
}

impl From<TitleOutcome> for TitleResult {
    fn from(outcome: TitleOutcome) -> Self {
        Self {
            conversation: outcome.conversation,
            applied: outcome.applied,
        }
    }
}

/// The context window the model would get now (`GET /{scope}/conversations/{id}/context`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextWindow {
    /// The messages of the window, chronological.
    pub items: Vec<Message>,
}

/// The body of `POST /{scope}/conversations/{id}/reply`: the user's message and the
/// tools the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplyRequest {
    /// A caller-chosen id for the user's message: a retried request stores it once.
    #[serde(default)]
    pub id: Option<MessageId>,
    /// The user's message.
    pub content: String,
    /// The host's own data for the user's message.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    /// Tools the model may call; its calls arrive as `toolCall` events and are stored
    /// on the assistant message. Running them is the client's business.
    #[serde(default)]
    pub tools: Vec<ToolDefinition>,
}

impl ReplyRequest {
    /// A request with `content` and nothing else.
    pub fn new(content: impl Into<String>) -> Self {
        Self {
            id: None,
            content: content.into(),
            metadata: Metadata::new(),
            tools: Vec::new(),
        }
    }

    /// The user's message to store and the tools.
    pub(crate) fn into_parts(self) -> (NewMessage, Vec<ToolDefinition>) {
        let mut message = NewMessage::user(self.content).with_metadata(self.metadata);
        message.id = self.id;
        (message, self.tools)
    }
}

/// Documentation only: the events of the `reply` stream (`text/event-stream`), by
/// SSE event name. Each event's `data` is one JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", content = "data", rename_all = "camelCase")]
pub enum ReplyStreamEvent {
    /// First: the user's message as stored, with the conversation (which carries the
    /// heuristic title when this was the first message).
    Message(StoredMessage),
    /// More text of the reply.
    Delta(ReplyDelta),
    /// A complete tool call of the reply.
    ToolCall(ToolCall),
    /// Last on success: the assistant's reply as stored, with the conversation.
    Done(StoredMessage),
    /// Last on failure: nothing of the reply was stored (the user's message stays).
    Error(crate::Problem),
}
