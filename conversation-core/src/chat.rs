//! The chat model trait: a streamed reply to a context of messages.

use std::fmt::Debug;

use async_trait::async_trait;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::{Error, Message, Metadata, NewMessage, Result, ToolCall};

/// A tool the model may call, in the OpenAI function-calling shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolDefinition {
    /// The function's name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: serde_json::Value,
}

/// What the model is asked to continue.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ChatRequest {
    /// The context, chronological (usually the conversation's window, often after a
    /// system message of the host's).
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<ToolDefinition>,
    /// When the reply must have started: every attempt, retry and wait of
    /// [`ChatModel::stream_reply`] fits before it, and a provider asking to wait past
    /// it fails at once with [`ModelErrorKind::Timeout`](crate::ModelErrorKind::Timeout)
    /// or [`ModelErrorKind::RateLimited`](crate::ModelErrorKind::RateLimited) carrying
    /// its `retry_after`. `None`: the model's own timeouts only.
    pub start_deadline: Option<tokio::time::Instant>,
}

impl ChatRequest {
    /// A request to continue `messages` with no tools and no deadline.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }

    /// Offers tools to the model.
    pub fn with_tools(mut self, tools: Vec<ToolDefinition>) -> Self {
        self.tools = tools;
        self
    }

    /// Sets [`ChatRequest::start_deadline`].
    pub fn with_start_deadline(mut self, deadline: tokio::time::Instant) -> Self {
        self.start_deadline = Some(deadline);
        self
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end.
    Stop,
    /// The output token limit was reached; the text is cut short.
    Length,
    /// The model wants tool results before it goes on.
    ToolCalls,
    /// The provider's content filter stopped it.
    ContentFilter,
    /// A reason this library does not know, as the provider named it.
    Other(String),
}

impl FinishReason {
    /// The provider's name for it.
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::Other(other) => other,
        }
    }
}

/// Token counts reported by the provider (or summed over many calls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    /// Tokens of the context.
    pub prompt_tokens: u64,
    /// Tokens of the reply.
    pub completion_tokens: u64,
    /// Both.
    pub total_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
    }
}

/// One event of a streamed reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
#[non_exhaustive]
pub enum ReplyEvent {
    /// More text.
    Delta {
        /// The text to add.
        text: String,
    },
    /// A complete tool call (deltas are assembled by the model backend).
    ToolCall {
        /// The call.
        call: ToolCall,
    },
    /// The reply is complete. Every successful stream ends with exactly one.
    Finished {
        /// Why the model stopped.
        reason: FinishReason,
        /// Token counts, when the provider reports them.
        usage: Option<Usage>,
    },
}

/// The stream a [`ChatModel`] returns.
pub type ReplyStream = BoxStream<'static, Result<ReplyEvent>>;

/// A chat model that streams its reply.
///
/// A stream that fails part way yields an `Err` item; a stream that ends without a
/// [`ReplyEvent::Finished`] was cut off. Either way the reply is incomplete and must
/// not be stored as if it were whole; [`ReplyCollector`] enforces that.
///
/// Dropping the future or the stream cancels the request upstream at once, retries
/// included: nothing of a reply outlives the one who asked for it. Provider failures
/// are [`Error::Model`](crate::Error::Model) with a
/// [`ModelErrorKind`](crate::ModelErrorKind).
#[async_trait]
pub trait ChatModel: Send + Sync + Debug + 'static {
    /// Starts a streamed reply to `request`. Errors before the first event (refused
    /// request, rate limit after retries) come back here; later ones in the stream.
    async fn stream_reply(&self, request: ChatRequest) -> Result<ReplyStream>;
}

#[async_trait]
impl<T: ChatModel + ?Sized> ChatModel for std::sync::Arc<T> {
    async fn stream_reply(&self, request: ChatRequest) -> Result<ReplyStream> {
        (**self).stream_reply(request).await
    }
}

/// A complete reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// All text deltas, joined.
    pub content: String,
    /// The tool calls, in the order they came.
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped.
    pub finish_reason: FinishReason,
    /// Token counts, when reported.
    pub usage: Option<Usage>,
}

impl Reply {
    /// The assistant message to store: content, tool calls, and metadata
    /// `finishReason` (and `usage` when known).
    pub fn into_message(self) -> NewMessage {
        let mut metadata = Metadata::new();
        metadata.insert(
            "finishReason".to_owned(),
            self.finish_reason.as_str().into(),
        );
        if let Some(usage) = self.usage
            && let Ok(value) = serde_json::to_value(usage)
        {
            metadata.insert("usage".to_owned(), value);
        }
        NewMessage::assistant(self.content)
            .with_tool_calls(self.tool_calls)
            .with_metadata(metadata)
    }
}

/// Assembles stream events into a [`Reply`], refusing incomplete streams.
#[derive(Debug, Default)]
pub struct ReplyCollector {
    content: String,
    tool_calls: Vec<ToolCall>,
    finished: Option<(FinishReason, Option<Usage>)>,
}

impl ReplyCollector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one event.
    ///
    /// # Errors
    /// [`Error::Backend`] for an event after [`ReplyEvent::Finished`].
    pub fn push(&mut self, event: &ReplyEvent) -> Result<()> {
        if self.finished.is_some() {
            return Err(Error::Backend {
                message: "the model sent an event after finishing".to_owned(),
                source: None,
            });
        }
        match event {
            // Stores refuse NUL (PostgreSQL cannot hold it): it becomes U+FFFD here, so
            // whatever a model sends can be stored.
            ReplyEvent::Delta { text } if text.contains('\0') => {
                self.content.push_str(&text.replace('\0', "\u{FFFD}"));
            }
            ReplyEvent::Delta { text } => self.content.push_str(text),
            ReplyEvent::ToolCall { call } => self.tool_calls.push(call.clone()),
            ReplyEvent::Finished { reason, usage } => {
                self.finished = Some((reason.clone(), *usage));
            }
        }
        Ok(())
    }

    /// The text received so far, for a reply that will not finish.
    pub fn content(&self) -> &str {
        &self.content
    }

    /// What is left of a reply that will not finish (stopped, or failed mid-stream):
    /// an assistant message with the text received so far and metadata
    /// `finishReason` = `reason` (`"cancelled"`, `"error"`); tool calls are left out,
    /// since none can be answered. `None` when no text came.
    pub fn into_partial(self, reason: &str) -> Option<NewMessage> {
        if self.content.is_empty() {
            return None;
        }
        let mut metadata = Metadata::new();
        metadata.insert("finishReason".to_owned(), reason.into());
        Some(NewMessage::assistant(self.content).with_metadata(metadata))
    }

    /// The complete reply.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the stream ended without [`ReplyEvent::Finished`]:
    /// the reply was cut off, and retrying the request may succeed.
    pub fn finish(self) -> Result<Reply> {
        let Some((finish_reason, usage)) = self.finished else {
            return Err(Error::Unavailable {
                message: "the reply stream ended before the model finished".to_owned(),
                source: None,
            });
        };
        Ok(Reply {
            content: self.content,
            tool_calls: self.tool_calls,
            finish_reason,
            usage,
        })
    }
}

/// Reads a whole stream into a [`Reply`]; the first error, or an early end, fails.
///
/// # Errors
/// The stream's first error, or [`ReplyCollector::finish`]'s.
pub async fn collect_reply(mut stream: ReplyStream) -> Result<Reply> {
    let mut collector = ReplyCollector::new();
    while let Some(event) = stream.next().await {
        collector.push(&event?)?;
    }
    collector.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use serde_json::json;

    fn delta(text: &str) -> Result<ReplyEvent> {
        Ok(ReplyEvent::Delta { text: text.into() })
    }

    #[tokio::test]
    async fn a_finished_stream_collects() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "run_sql".into(),
            arguments: json!({"sql": "select 1"}),
        };
        let events = vec![
            delta("Let me "),
            delta("check."),
            Ok(ReplyEvent::ToolCall { call: call.clone() }),
            Ok(ReplyEvent::Finished {
                reason: FinishReason::ToolCalls,
                usage: Some(Usage {
                    prompt_tokens: 10,
                    completion_tokens: 5,
                    total_tokens: 15,
                }),
            }),
        ];
        let reply = collect_reply(stream::iter(events).boxed()).await.unwrap();
        assert_eq!(reply.content, "Let me check.");
        assert_eq!(reply.tool_calls, vec![call]);
        let message = reply.into_message();
        assert_eq!(message.metadata["finishReason"], json!("tool_calls"));
        assert_eq!(message.metadata["usage"]["totalTokens"], json!(15));
    }

    #[tokio::test]
    async fn cut_off_and_failing_streams_are_errors() {
        let cut = collect_reply(stream::iter(vec![delta("partial")]).boxed()).await;
        assert!(matches!(cut, Err(Error::Unavailable { .. })));
        let failing = vec![
            delta("partial"),
            Err(Error::unavailable("stream", "connection reset")),
        ];
        assert!(collect_reply(stream::iter(failing).boxed()).await.is_err());
        let after_finish = vec![
            Ok(ReplyEvent::Finished {
                reason: FinishReason::Stop,
                usage: None,
            }),
            delta("more"),
        ];
        assert!(
            collect_reply(stream::iter(after_finish).boxed())
                .await
                .is_err()
        );
    }
}
