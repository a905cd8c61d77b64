//! Request and response bodies of the routes that are not core types.

use conversation_core::{
    Appended, Conversation, Message, MessageId, Metadata, NewMessage, Page, TitleOutcome, ToolCall,
    ToolDefinition,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};

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

/// The body of `POST /{scope}/conversations/{id}/messages`: one message, or a
/// non-empty array of messages stored atomically in the order given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

impl utoipa::PartialSchema for AppendRequest {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "One message, or a non-empty array of messages stored atomically in the \
                 order given (at most 256 by default).",
            ))
            .item(Ref::from_schema_name(NewMessage::name()))
            .item(
                ArrayBuilder::new()
                    .items(Ref::from_schema_name(NewMessage::name()))
                    .min_items(Some(1)),
            )
            .into()
    }
}

impl ToSchema for AppendRequest {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        use utoipa::PartialSchema as _;
        schemas.push((NewMessage::name().into_owned(), NewMessage::schema()));
        NewMessage::schemas(schemas);
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

/// One event of the `reply` stream (`text/event-stream`): the SSE event name says
/// which, and the event's `data` is one JSON document.
///
/// | event | data | when |
/// |---|---|---|
/// | `message` | [`StoredMessage`] | first: the user's message as stored, with the conversation (carrying the heuristic title when this was the first message) |
/// | `delta` | [`ReplyDelta`] | more text of the reply |
/// | `toolCall` | [`ToolCall`] | a complete tool call of the reply |
/// | `done` | [`StoredMessage`] | last on success: the assistant's reply as stored, with the conversation |
/// | `error` | [`Problem`](crate::Problem) | last on failure: nothing of the reply was stored (the user's message stays) |
///
/// The server builds every event it sends from this type, and its OpenAPI schema
/// (each event an object `{event, data}` whose `data` is JSON text of the schema
/// above) is derived from the same table.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyStreamEvent {
    /// `message`: the stored user message.
    Message(StoredMessage),
    /// `delta`: more text.
    Delta(ReplyDelta),
    /// `toolCall`: a complete tool call.
    ToolCall(ToolCall),
    /// `done`: the stored assistant message.
    Done(StoredMessage),
    /// `error`: the reply failed; nothing of it was stored.
    Error(crate::Problem),
}

impl ReplyStreamEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            ReplyStreamEvent::Message(_) => "message",
            ReplyStreamEvent::Delta(_) => "delta",
            ReplyStreamEvent::ToolCall(_) => "toolCall",
            ReplyStreamEvent::Done(_) => "done",
            ReplyStreamEvent::Error(_) => "error",
        }
    }

    /// The SSE `data`: the event's JSON document.
    ///
    /// # Errors
    /// Serialisation errors of `serde_json` (none occur for these types).
    pub fn data(&self) -> serde_json::Result<String> {
        match self {
            ReplyStreamEvent::Message(stored) | ReplyStreamEvent::Done(stored) => {
                serde_json::to_string(stored)
            }
            ReplyStreamEvent::Delta(delta) => serde_json::to_string(delta),
            ReplyStreamEvent::ToolCall(call) => serde_json::to_string(call),
            ReplyStreamEvent::Error(problem) => serde_json::to_string(problem),
        }
    }

    /// Reads an event a client received: its SSE event name and `data`.
    ///
    /// # Errors
    /// A `serde_json` error for an unknown event name or `data` of the wrong shape.
    pub fn parse(event: &str, data: &str) -> serde_json::Result<Self> {
        Ok(match event {
            "message" => ReplyStreamEvent::Message(serde_json::from_str(data)?),
            "delta" => ReplyStreamEvent::Delta(serde_json::from_str(data)?),
            "toolCall" => ReplyStreamEvent::ToolCall(serde_json::from_str(data)?),
            "done" => ReplyStreamEvent::Done(serde_json::from_str(data)?),
            "error" => ReplyStreamEvent::Error(serde_json::from_str(data)?),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "unknown reply event {other:?}"
                )));
            }
        })
    }

    /// Each event name with the schema of its data and a description.
    fn variants() -> [(&'static str, &'static str, &'static str); 5] {
        [
            (
                "message",
                "StoredMessage",
                "First: the user's message as stored, with the conversation.",
            ),
            ("delta", "ReplyDelta", "More text of the reply."),
            ("toolCall", "ToolCall", "A complete tool call of the reply."),
            (
                "done",
                "StoredMessage",
                "Last on success: the assistant's reply as stored, with the conversation.",
            ),
            (
                "error",
                "Problem",
                "Last on failure: nothing of the reply was stored; the user's message stays.",
            ),
        ]
    }
}

impl utoipa::PartialSchema for ReplyStreamEvent {
    fn schema() -> RefOr<Schema> {
        let mut one_of = OneOfBuilder::new().description(Some(
            "One server-sent event of a reply: `event` names it and `data` is JSON text of the \
             schema given for that event. A stream is `message`, then `delta` and `toolCall` \
             events, then `done` or `error`; comments keep the connection alive.",
        ));
        for (name, schema, description) in Self::variants() {
            one_of = one_of.item(
                ObjectBuilder::new()
                    .description(Some(description))
                    .property(
                        "event",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some([name])),
                    )
                    .required("event")
                    .property(
                        "data",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .content_media_type("application/json")
                            .content_schema(Some(Ref::from_schema_name(schema))),
                    )
                    .required("data")
                    .property("id", ObjectBuilder::new().schema_type(Type::String))
                    .property(
                        "retry",
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .minimum(Some(0)),
                    ),
            );
        }
        one_of.into()
    }
}

impl ToSchema for ReplyStreamEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        use utoipa::PartialSchema as _;
        for (name, schema) in [
            (StoredMessage::name(), StoredMessage::schema()),
            (ReplyDelta::name(), ReplyDelta::schema()),
            (ToolCall::name(), ToolCall::schema()),
            (crate::Problem::name(), crate::Problem::schema()),
        ] {
            schemas.push((name.into_owned(), schema));
        }
        StoredMessage::schemas(schemas);
    }
}
