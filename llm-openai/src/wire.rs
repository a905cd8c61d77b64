//! The chat-completions wire format: request bodies and the parts of answers read.

use conversation_core::{FinishReason, Message, Role, ToolCall, ToolDefinition, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::text::{WireText, make_storable, storable_text};

/// A chat-completions request body.
#[derive(Debug, Serialize)]
pub(crate) struct ChatBody<'a> {
    pub(crate) model: &'a str,
    pub(crate) messages: Vec<WireMessage<'a>>,
    pub(crate) stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_tokens: Option<u32>,
}

#[derive(Debug, Serialize)]
pub(crate) struct StreamOptions {
    pub(crate) include_usage: bool,
}

/// One message in the OpenAI shape.
#[derive(Debug, Serialize)]
pub(crate) struct WireMessage<'a> {
    pub(crate) role: &'static str,
    /// `null` only on an assistant message that only calls tools.
    pub(crate) content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tool_calls: Vec<WireToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_call_id: Option<&'a str>,
}

impl<'a> WireMessage<'a> {
    pub(crate) fn text(role: Role, content: &'a str) -> Self {
        Self {
            role: role.as_str(),
            content: Some(content),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    pub(crate) fn from_message(message: &'a Message) -> Self {
        let tool_calls: Vec<WireToolCall<'a>> = if message.role == Role::Assistant {
            message.tool_calls.iter().map(WireToolCall::from).collect()
        } else {
            Vec::new()
        };
        let content = if message.content.is_empty() && !tool_calls.is_empty() {
            None
        } else {
            Some(message.content.as_str())
        };
        Self {
            role: message.role.as_str(),
            content,
            tool_calls,
            tool_call_id: if message.role == Role::Tool {
                message.tool_call_id.as_deref()
            } else {
                None
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Debug, Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    /// The arguments as JSON text, as the wire wants them.
    arguments: String,
}

impl<'a> From<&'a ToolCall> for WireToolCall<'a> {
    fn from(call: &'a ToolCall) -> Self {
        // Arguments a model produced unparsable are kept as a JSON string: send the
        // text itself back, not a quoted string.
        let arguments = match &call.arguments {
            Value::String(raw) => raw.clone(),
            other => other.to_string(),
        };
        Self {
            id: &call.id,
            kind: "function",
            function: WireFunctionCall {
                name: &call.name,
                arguments,
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: &'a ToolDefinition,
}

impl<'a> From<&'a ToolDefinition> for WireTool<'a> {
    fn from(tool: &'a ToolDefinition) -> Self {
        Self {
            kind: "function",
            function: tool,
        }
    }
}

/// Arguments text as a JSON value: `{}` when empty, the text as a JSON string when
/// it does not parse (kept, never dropped). NUL, which stores refuse, is replaced by
/// U+FFFD in the text and in every string and key it holds.
pub(crate) fn parse_arguments(raw: &str) -> Value {
    let raw = storable_text(raw);
    if raw.trim().is_empty() {
        return Value::Object(serde_json::Map::new());
    }
    let mut value = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
    make_storable(&mut value);
    value
}

pub(crate) fn finish_reason(raw: &str) -> FinishReason {
    match raw {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Token counts as the wire spells them.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Self {
        Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens,
        }
    }
}

/// A non-streamed answer.
#[derive(Debug, Deserialize)]
pub(crate) struct Completion {
    #[serde(default)]
    pub(crate) choices: Option<Vec<CompletionChoice>>,
    /// An error a server put inside a successful answer.
    #[serde(default)]
    pub(crate) error: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CompletionChoice {
    #[serde(default)]
    pub(crate) message: Option<CompletionMessage>,
    #[serde(default)]
    pub(crate) finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CompletionMessage {
    #[serde(default)]
    pub(crate) content: Option<WireText>,
}

/// One chunk of a streamed answer.
#[derive(Debug, Deserialize)]
pub(crate) struct Chunk {
    #[serde(default)]
    pub(crate) choices: Option<Vec<ChunkChoice>>,
    #[serde(default)]
    pub(crate) usage: Option<WireUsage>,
    /// An error event sent as an unnamed event (OpenAI's mid-stream errors).
    #[serde(default)]
    pub(crate) error: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChunkChoice {
    #[serde(default)]
    pub(crate) index: Option<u32>,
    #[serde(default)]
    pub(crate) delta: Option<Delta>,
    #[serde(default)]
    pub(crate) finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Delta {
    #[serde(default)]
    pub(crate) content: Option<WireText>,
    #[serde(default)]
    pub(crate) tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ToolCallDelta {
    #[serde(default)]
    pub(crate) index: Option<u32>,
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) function: Option<FunctionDelta>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct FunctionDelta {
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) arguments: Option<WireText>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use conversation_core::backend::now;
    use conversation_core::{ConversationId, NewMessage};
    use serde_json::json;

    #[test]
    fn messages_map_to_the_openai_shape() {
        let id = ConversationId::new();
        let call = ToolCall {
            id: "call_1".into(),
            name: "run_sql".into(),
            arguments: json!({"sql": "select 1"}),
        };
        let broken = ToolCall {
            id: "call_2".into(),
            name: "run_sql".into(),
            arguments: Value::String("{\"sql\": ".into()),
        };
        let messages = [
            NewMessage::assistant("").with_tool_calls(vec![call, broken]),
            NewMessage::tool("call_1", "1 row"),
            NewMessage::user("thanks"),
        ]
        .map(|m| m.into_message(id, 1, None, now()));
        let wire: Vec<Value> = messages
            .iter()
            .map(|m| serde_json::to_value(WireMessage::from_message(m)).unwrap())
            .collect();
        assert_eq!(
            wire[0],
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "run_sql", "arguments": "{\"sql\":\"select 1\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "run_sql", "arguments": "{\"sql\": "}}
            ]})
        );
        assert_eq!(
            wire[1],
            json!({"role": "tool", "content": "1 row", "tool_call_id": "call_1"})
        );
        assert_eq!(wire[2], json!({"role": "user", "content": "thanks"}));
    }

    #[test]
    fn arguments_parse_or_are_kept_as_text() {
        assert_eq!(parse_arguments(""), json!({}));
        assert_eq!(parse_arguments("{\"a\":1}"), json!({"a": 1}));
        assert_eq!(parse_arguments("{\"a\":"), json!("{\"a\":"));
        // NUL, raw or escaped inside the arguments' own JSON, is replaced.
        assert_eq!(
            parse_arguments("{\"a\":\"x\u{0}\"}"),
            json!({"a": "x\u{FFFD}"})
        );
        assert_eq!(
            parse_arguments(r#"{"a":"x\u0000"}"#),
            json!({"a": "x\u{FFFD}"})
        );
        assert_eq!(parse_arguments("{\"a\":\u{0}"), json!("{\"a\":\u{FFFD}"));
    }
}
