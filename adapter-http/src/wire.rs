//! Request and response bodies of the routes that are not core types.

use axum::http::StatusCode;
use conversation_core::{
    Append, Appended, BulkAction, BulkResult, Conversation, ConversationId, Message, MessageId,
    Metadata, NewMessage, Page, Parent, Run, RunEvent, SearchHit, TitleOutcome, ToolCall,
    ToolDefinition,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{
    ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};

use crate::extract::from_json;
use crate::problem::ApiError;

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

/// One page of a search (`GET /{scope}/search`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchResults {
    /// The conversations found, best match first (ties: newest activity first), each
    /// with up to 3 matches.
    pub items: Vec<SearchHit>,
    /// Pass as `cursor`, with the same `q` and `archived`, to read the next page;
    /// `null` on the last page.
    pub next_cursor: Option<String>,
}

impl From<Page<SearchHit>> for SearchResults {
    fn from(page: Page<SearchHit>) -> Self {
        Self {
            items: page.items,
            next_cursor: page.next_cursor,
        }
    }
}

/// The body of `POST /{scope}/conversations/bulk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkRequest {
    /// What to do to each: `archive`, `unarchive`, `pin`, `unpin` or `delete`.
    pub action: BulkAction,
    /// The conversations, 1 to 100 of them
    /// ([`MAX_BULK_IDS`](conversation_core::MAX_BULK_IDS)); each is acted on by
    /// itself, in the order given.
    #[schema(min_items = 1, max_items = 100)]
    pub ids: Vec<ConversationId>,
}

/// The result of `POST /{scope}/conversations/bulk`: one item per id sent, in the
/// order sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkResults {
    /// For each id, its `status`: `ok` (done), `not_found` (no such conversation in
    /// this scope, also one of another scope: nothing touched), `conflict` or
    /// `run_in_progress` (it changed meanwhile or runs a reply: untouched), or
    /// `unavailable` or `backend` when the store failed on that one (the others are
    /// still done).
    pub items: Vec<BulkResult>,
}

/// ChatGPT's data export `conversations.json`, as `POST /{scope}/import` reads it
/// (documentation of the request body; what is kept of each conversation is listed
/// in [`conversation_core::chatgpt`]).
pub(crate) struct ChatGptExport;

impl utoipa::PartialSchema for ChatGptExport {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .description(Some(
                "ChatGPT's `conversations.json`: an array of conversations, each with `id` (or \
                 `conversation_id`), `title`, `create_time`, `update_time`, `is_archived`, a \
                 `mapping` of message nodes (`message`, `parent`, `children`) and \
                 `current_node`. Text parts, roles, times, the branch shown and the model are \
                 kept; attachments, citations and feedback are not.",
            ))
            .items(
                ObjectBuilder::new()
                    .property("mapping", ObjectBuilder::new().schema_type(Type::Object))
                    .property(
                        "current_node",
                        ObjectBuilder::new()
                            .schema_type(SchemaType::from_iter([Type::String, Type::Null])),
                    ),
            )
            .into()
    }
}

impl ToSchema for ChatGptExport {}

/// The body of `POST /{scope}/conversations/{id}/messages`: one message, or a
/// non-empty array of messages stored atomically in the order given, each a
/// [`NewMessage`]. The message (or the first of the array) may carry `parentId`:
/// absent, it follows the head; `null`, it starts a new root (a new version of the
/// first message); a message id, it follows that message (a new branch when it has
/// children already). Later messages of an array follow the one before them.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    /// Where the first message attaches.
    pub parent: Parent,
    /// The messages, in order.
    pub messages: Vec<NewMessage>,
}

impl AppendRequest {
    /// The name of the schema of one message with its optional `parentId`.
    pub const MESSAGE_SCHEMA: &'static str = "NewMessageWithParent";

    /// Parses a body: takes `parentId` off the first message, refuses it on later
    /// ones, and reads the rest as [`NewMessage`]s.
    pub(crate) fn parse(body: serde_json::Value) -> Result<Self, ApiError> {
        let (mut items, one) = match body {
            serde_json::Value::Array(items) => (items, false),
            object @ serde_json::Value::Object(_) => (vec![object], true),
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "the body must be a message object or an array of them",
                ));
            }
        };
        let mut parent = Parent::Head;
        for (i, item) in items.iter_mut().enumerate() {
            let Some(raw) = item.as_object_mut().and_then(|o| o.remove("parentId")) else {
                continue;
            };
            let field = if one {
                "parentId".to_owned()
            } else {
                format!("[{i}].parentId")
            };
            if i > 0 {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "only the first message of a batch takes a parentId; the others follow it",
                )
                .with_field(field));
            }
            parent = match raw {
                serde_json::Value::Null => Parent::Root,
                value => {
                    Parent::Message(from_json::<MessageId>(value).map_err(|e| e.with_field(field))?)
                }
            };
        }
        let messages = if one {
            vec![from_json(items.swap_remove(0))?]
        } else {
            from_json(serde_json::Value::Array(items))?
        };
        Ok(Self { parent, messages })
    }

    /// The append this request asks for.
    pub(crate) fn into_append(self) -> Append {
        Append::new(self.messages).parent(self.parent)
    }

    /// [`NewMessage`]'s schema with the optional `parentId`.
    fn message_schema() -> RefOr<Schema> {
        use utoipa::PartialSchema as _;
        let mut schema = NewMessage::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.properties.insert(
                "parentId".to_owned(),
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                    .format(Some(SchemaFormat::Custom("uuid".to_owned())))
                    .description(Some(
                        "Where the message attaches: absent, after the head; `null`, as a new \
                         root; an id, after that message of the conversation (404 when it is \
                         not one). Only on the first message of an array.",
                    ))
                    .into(),
            );
        }
        schema
    }
}

impl utoipa::PartialSchema for AppendRequest {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "One message, or a non-empty array of messages stored atomically in the \
                 order given (at most 256 by default).",
            ))
            .item(Ref::from_schema_name(Self::MESSAGE_SCHEMA))
            .item(
                ArrayBuilder::new()
                    .items(Ref::from_schema_name(Self::MESSAGE_SCHEMA))
                    .min_items(Some(1)),
            )
            .into()
    }
}

impl ToSchema for AppendRequest {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Self::MESSAGE_SCHEMA.to_owned(), Self::message_schema()));
        NewMessage::schemas(schemas);
    }
}

/// The body of `POST /{scope}/conversations/{id}/fork`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForkRequest {
    /// The last message to copy: the new conversation holds the path from the root to
    /// it.
    pub message_id: MessageId,
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

/// One stored message with its conversation: the data of the SSE event `message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    /// The conversation after the message was stored.
    pub conversation: Conversation,
    /// The stored message.
    pub message: Message,
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

/// The body of `POST /{scope}/conversations/{id}/reply`: what to answer, and the
/// tools the model may call.
///
/// | `content` | `parentId` | does |
/// |---|---|---|
/// | given | absent | asks a new question after the head |
/// | given | an id, or `null` | edits: the question becomes a new version of the one under that parent (`null`: of the first question) |
/// | absent | a user message's id | regenerates: answers that question again, as a new version of its answer |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplyRequest {
    /// A caller-chosen id for the user's message: a retried request stores it once.
    #[serde(default)]
    pub id: Option<MessageId>,
    /// The user's message; absent to regenerate the answer to `parentId`.
    #[serde(default)]
    pub content: Option<String>,
    /// With `content`: the parent of the new question (absent: the head; `null`: a new
    /// root). Without: the user message to answer again.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<MessageId>, nullable)]
    pub parent_id: Option<Option<MessageId>>,
    /// The host's own data for the user's message.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    /// Tools the model may call; its calls arrive as `toolCall` events and are stored
    /// on the assistant message. Running them is the client's business.
    #[serde(default)]
    pub tools: Vec<ToolDefinition>,
}

/// Deserialises a field that is present (possibly `null`) as `Some`, so that absent
/// and `null` differ.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl ReplyRequest {
    /// A new question with `content` and nothing else.
    pub fn new(content: impl Into<String>) -> Self {
        Self {
            id: None,
            content: Some(content.into()),
            parent_id: None,
            metadata: Metadata::new(),
            tools: Vec::new(),
        }
    }

    /// Regenerates the answer to the user message `question`.
    pub fn regenerate(question: MessageId) -> Self {
        Self {
            content: None,
            parent_id: Some(Some(question)),
            ..Self::new("")
        }
    }

    /// The service's request.
    pub(crate) fn into_request(self) -> conversation_core::ReplyRequest {
        let parent = match self.parent_id {
            None => Parent::Head,
            Some(None) => Parent::Root,
            Some(Some(id)) => Parent::Message(id),
        };
        let request = match self.content {
            Some(content) => {
                let mut message = NewMessage::user(content).with_metadata(self.metadata);
                message.id = self.id;
                conversation_core::ReplyRequest::edit(parent, message)
            }
            None => match parent {
                Parent::Message(question) => conversation_core::ReplyRequest::regenerate(question),
                Parent::Head | Parent::Root => conversation_core::ReplyRequest::default(),
            },
        };
        request.with_tools(self.tools)
    }
}

/// The data of the SSE event `done`: how the run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunFinished {
    /// The run as it ended: `completed`, `requires_action` (with `pendingToolCalls`),
    /// `cancelled` or `failed` (with `error`).
    pub run: Run,
    /// The conversation after it (its usage totals, no run in progress).
    pub conversation: Conversation,
}

/// One event of a run's stream (`text/event-stream`, from `POST …/reply` and
/// `GET …/runs/{run}/events`): the SSE event name says which, `data` is one JSON
/// document, and `id` is the event's position in the run (1, 2, 3…), for
/// `Last-Event-ID`.
///
/// | event | data | when |
/// |---|---|---|
/// | `run` | [`Run`] | first, at once: the run started |
/// | `message` | [`StoredMessage`] | a message stored by the run: the question (second event), an assistant message with tool calls, a tool result, the answer, or a stopped answer's partial text |
/// | `delta` | [`ReplyDelta`] | more text of the answer |
/// | `toolCall` | [`ToolCall`] | the model asks for a tool |
/// | `done` | [`RunFinished`] | last: how the run ended |
/// | `error` | [`Problem`](crate::Problem) | last, when the stream itself failed (the run may go on: read it again) |
///
/// The server builds every event it sends from this type, and its OpenAPI schema
/// (each event an object `{event, data, id}` whose `data` is JSON text of the schema
/// above) is derived from the same table.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ReplyStreamEvent {
    /// `run`: the run started.
    Run(Run),
    /// `message`: a stored message.
    Message(StoredMessage),
    /// `delta`: more text.
    Delta(ReplyDelta),
    /// `toolCall`: the model asks for a tool.
    ToolCall(ToolCall),
    /// `done`: the run ended.
    Done(RunFinished),
    /// `error`: the stream failed.
    Error(crate::Problem),
}

impl ReplyStreamEvent {
    /// The wire event of a run event; `None` for an event this version does not send.
    pub fn of(event: RunEvent) -> Option<Self> {
        Some(match event {
            RunEvent::Started { run } => ReplyStreamEvent::Run(run),
            RunEvent::Message {
                conversation,
                message,
            } => ReplyStreamEvent::Message(StoredMessage {
                conversation,
                message,
            }),
            RunEvent::Delta { text } => ReplyStreamEvent::Delta(ReplyDelta { text }),
            RunEvent::ToolCall { call } => ReplyStreamEvent::ToolCall(call),
            RunEvent::Finished { run, conversation } => {
                ReplyStreamEvent::Done(RunFinished { run, conversation })
            }
            _ => return None,
        })
    }

    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            ReplyStreamEvent::Run(_) => "run",
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
            ReplyStreamEvent::Run(run) => serde_json::to_string(run),
            ReplyStreamEvent::Message(stored) => serde_json::to_string(stored),
            ReplyStreamEvent::Delta(delta) => serde_json::to_string(delta),
            ReplyStreamEvent::ToolCall(call) => serde_json::to_string(call),
            ReplyStreamEvent::Done(finished) => serde_json::to_string(finished),
            ReplyStreamEvent::Error(problem) => serde_json::to_string(problem),
        }
    }

    /// Reads an event a client received: its SSE event name and `data`.
    ///
    /// # Errors
    /// A `serde_json` error for an unknown event name or `data` of the wrong shape.
    pub fn parse(event: &str, data: &str) -> serde_json::Result<Self> {
        Ok(match event {
            "run" => ReplyStreamEvent::Run(serde_json::from_str(data)?),
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
    fn variants() -> [(&'static str, &'static str, &'static str); 6] {
        [
            ("run", "Run", "First, at once: the run started."),
            (
                "message",
                "StoredMessage",
                "A message the run stored (the question first), with the conversation.",
            ),
            ("delta", "ReplyDelta", "More text of the answer."),
            ("toolCall", "ToolCall", "The model asks for a tool."),
            ("done", "RunFinished", "Last: how the run ended."),
            (
                "error",
                "Problem",
                "Last, when the stream itself failed; the run may go on.",
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
