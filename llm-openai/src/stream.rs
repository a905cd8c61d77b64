//! A streamed reply: SSE events in, [`ReplyEvent`]s out, tool-call deltas assembled.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use conversation_core::{FinishReason, ReplyEvent, ReplyStream, ToolCall, Usage};
use eventsource_stream::{EventStreamError, Eventsource as _};
use futures::{Stream, StreamExt as _};
use tokio::time::Instant;

use crate::error::error_parts;
use crate::http::Http;
use crate::text::{TextDecoder, WireText, storable_name};
use crate::wire::{Chunk, finish_reason, parse_arguments};
use crate::{OpenAiError, TimeoutPhase};

/// A tool call being assembled from its deltas.
#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    /// WTF-8 (see [`WireText`]): decoded once whole, so that a surrogate pair split
    /// across deltas is joined.
    arguments: Vec<u8>,
}

/// What the assembler made of one SSE event.
#[derive(Debug, PartialEq)]
pub(crate) enum Progress {
    /// Events to pass on; more will come.
    More(Vec<ReplyEvent>),
    /// The last events: the reply is complete.
    Done(Vec<ReplyEvent>),
}

/// Turns the events of one streamed chat completion into [`ReplyEvent`]s.
///
/// Text deltas pass through at once (made storable: see [`crate::text`]). Tool calls
/// are assembled by their `index` and passed on whole, in index order, when the
/// reply completes, followed by exactly one [`ReplyEvent::Finished`]. The reply
/// completes at `data: [DONE]`, or at the end of the body when the model already gave
/// a finish reason (servers that omit `[DONE]`); anything else is an error.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    content: TextDecoder,
    calls: BTreeMap<u32, PartialCall>,
    last_index: Option<u32>,
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
}

impl Assembler {
    /// Handles one SSE event (`event` is its type, `message` when unnamed).
    pub(crate) fn on_event(&mut self, event: &str, data: &str) -> Result<Progress, OpenAiError> {
        let data = data.trim();
        if data == "[DONE]" {
            return self.complete().map(Progress::Done);
        }
        let stream_error = |value: &serde_json::Value| {
            let (code, message) = error_parts(value)
                .unwrap_or_else(|| (None, "the server sent an error event".to_owned()));
            OpenAiError::Stream { code, message }
        };
        if event == "error" {
            let value: serde_json::Value =
                serde_json::from_str(data).map_err(|error| OpenAiError::Decode {
                    message: format!("an error event is not JSON: {error}"),
                })?;
            return Err(stream_error(&value));
        }
        // Straight into the chunk, never through `serde_json::Value`: its strings
        // are read as WTF-8, which keeps a surrogate half for joining.
        let chunk: Chunk = serde_json::from_str(data).map_err(|error| OpenAiError::Decode {
            message: format!("a stream chunk is not a chat completion chunk: {error}"),
        })?;
        if let Some(error) = chunk.error.filter(|error| !error.is_null()) {
            return Err(stream_error(&serde_json::json!({ "error": error })));
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.into());
        }
        let mut events = Vec::new();
        // Only the first choice is read: requests never ask for more than one.
        for choice in chunk.choices.into_iter().flatten() {
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(delta) = choice.delta {
                if let Some(wire) = delta.content {
                    let mut text = String::new();
                    self.content.push(&wire.0, &mut text);
                    if !text.is_empty() {
                        events.push(ReplyEvent::Delta { text });
                    }
                }
                for call in delta.tool_calls.into_iter().flatten() {
                    self.add_call_delta(call);
                }
            }
            if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
                self.finish_reason = Some(finish_reason(&reason));
            }
        }
        Ok(Progress::More(events))
    }

    /// The body ended without `[DONE]`.
    pub(crate) fn on_end(&mut self) -> Result<Vec<ReplyEvent>, OpenAiError> {
        self.complete()
    }

    fn add_call_delta(&mut self, delta: crate::wire::ToolCallDelta) {
        // Servers that leave out `index` send each call whole, or its first delta
        // with an id: a new id starts a new call, anything else continues the last.
        let index = delta.index.unwrap_or_else(|| {
            let starts_new = delta.id.as_deref().is_some_and(|id| {
                self.last_index
                    .and_then(|last| self.calls.get(&last))
                    .is_none_or(|call| call.id != id)
            });
            match (self.last_index, starts_new) {
                (Some(last), true) => last + 1,
                (Some(last), false) => last,
                (None, _) => 0,
            }
        });
        self.last_index = Some(index);
        let call = self.calls.entry(index).or_default();
        if let Some(id) = delta.id.filter(|id| !id.is_empty())
            && call.id.is_empty()
        {
            call.id = id;
        }
        if let Some(function) = delta.function {
            if let Some(name) = function.name.filter(|name| !name.is_empty())
                && call.name.is_empty()
            {
                call.name = name;
            }
            if let Some(arguments) = function.arguments {
                call.arguments.extend_from_slice(&arguments.0);
            }
        }
    }

    fn complete(&mut self) -> Result<Vec<ReplyEvent>, OpenAiError> {
        let reason = self.finish_reason.take().ok_or(OpenAiError::Truncated)?;
        let mut events = Vec::with_capacity(self.calls.len() + 2);
        let mut rest = String::new();
        self.content.finish(&mut rest);
        if !rest.is_empty() {
            events.push(ReplyEvent::Delta { text: rest });
        }
        for (index, call) in std::mem::take(&mut self.calls) {
            if call.name.is_empty() {
                return Err(OpenAiError::Decode {
                    message: format!("tool call {index} has no function name"),
                });
            }
            let id = if call.id.is_empty() {
                format!("call_{index}")
            } else {
                storable_name(&call.id)
            };
            let arguments = WireText(call.arguments).into_text();
            events.push(ReplyEvent::ToolCall {
                call: ToolCall {
                    id,
                    name: storable_name(&call.name),
                    arguments: parse_arguments(&arguments),
                },
            });
        }
        events.push(ReplyEvent::Finished {
            reason,
            usage: self.usage,
        });
        Ok(events)
    }
}

type SseStream = Pin<
    Box<
        dyn Stream<Item = Result<eventsource_stream::Event, EventStreamError<reqwest::Error>>>
            + Send,
    >,
>;

struct State {
    events: SseStream,
    assembler: Assembler,
    queue: VecDeque<conversation_core::Result<ReplyEvent>>,
    done: bool,
    idle: Duration,
    deadline: Instant,
    http: Arc<Http>,
}

/// The reply stream of a successful streamed response. Ends after
/// [`ReplyEvent::Finished`], or after one `Err` item.
pub(crate) fn reply_stream(
    response: reqwest::Response,
    http: Arc<Http>,
    started: Instant,
) -> ReplyStream {
    let state = State {
        events: Box::pin(response.bytes_stream().eventsource()),
        assembler: Assembler::default(),
        queue: VecDeque::new(),
        done: false,
        idle: http.config.stream_idle_timeout,
        deadline: started + http.config.stream_total_timeout,
        http,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(item) = state.queue.pop_front() {
                return Some((item, state));
            }
            if state.done {
                return None;
            }
            let idle_deadline = Instant::now() + state.idle;
            let (wait_until, phase) = if idle_deadline < state.deadline {
                (idle_deadline, TimeoutPhase::Idle)
            } else {
                (state.deadline, TimeoutPhase::Total)
            };
            let next = tokio::time::timeout_at(wait_until, state.events.next()).await;
            let step = match next {
                Err(_elapsed) => Err(OpenAiError::Timeout { phase }),
                Ok(None) => state.assembler.on_end().map(Progress::Done),
                Ok(Some(Ok(event))) => state.assembler.on_event(&event.event, &event.data),
                Ok(Some(Err(EventStreamError::Transport(error)))) => Err(OpenAiError::Connection {
                    source: Box::new(error.without_url()),
                }),
                Ok(Some(Err(error))) => Err(OpenAiError::Decode {
                    message: format!("the event stream is malformed: {error}"),
                }),
            };
            match step {
                Ok(Progress::More(events)) => state.queue.extend(events.into_iter().map(Ok)),
                Ok(Progress::Done(events)) => {
                    state.queue.extend(events.into_iter().map(Ok));
                    state.done = true;
                }
                Err(error) => {
                    let error = state.http.redact_error(error);
                    tracing::warn!(%error, "the model's reply stream failed");
                    state.queue.push_back(Err(error.into()));
                    state.done = true;
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn more(assembler: &mut Assembler, chunk: serde_json::Value) -> Vec<ReplyEvent> {
        match assembler.on_event("message", &chunk.to_string()).unwrap() {
            Progress::More(events) => events,
            Progress::Done(_) => panic!("finished early"),
        }
    }

    #[test]
    fn deltas_interleaved_by_index_are_assembled() {
        let mut a = Assembler::default();
        let first = more(
            &mut a,
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi", "tool_calls": [
                {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{\"x\""}},
                {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": ""}}
            ]}}]}),
        );
        assert_eq!(first, vec![ReplyEvent::Delta { text: "Hi".into() }]);
        more(
            &mut a,
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 1, "function": {"arguments": "not json"}},
                {"index": 0, "function": {"arguments": ": 1}"}}
            ]}, "finish_reason": "tool_calls"}]}),
        );
        more(
            &mut a,
            json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}),
        );
        let Progress::Done(events) = a.on_event("message", "[DONE]").unwrap() else {
            panic!("not done");
        };
        assert_eq!(
            events,
            vec![
                ReplyEvent::ToolCall {
                    call: ToolCall {
                        id: "call_a".into(),
                        name: "f".into(),
                        arguments: json!({"x": 1})
                    }
                },
                ReplyEvent::ToolCall {
                    call: ToolCall {
                        id: "call_b".into(),
                        name: "g".into(),
                        arguments: json!("not json")
                    }
                },
                ReplyEvent::Finished {
                    reason: FinishReason::ToolCalls,
                    usage: Some(Usage {
                        prompt_tokens: 3,
                        completion_tokens: 4,
                        total_tokens: 7
                    })
                },
            ]
        );
    }

    #[test]
    fn calls_without_index_or_id_still_assemble() {
        let mut a = Assembler::default();
        more(
            &mut a,
            json!({"choices": [{"delta": {"tool_calls": [
                {"function": {"name": "f", "arguments": "{}"}},
                {"id": "x2", "function": {"name": "g", "arguments": "{\"a\":"}}
            ]}}]}),
        );
        more(
            &mut a,
            json!({"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "2}"}}]}, "finish_reason": "stop"}]}),
        );
        let events = a.on_end().unwrap();
        let calls: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                ReplyEvent::ToolCall { call } => Some((call.id.as_str(), call.arguments.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(calls, vec![("call_0", json!({})), ("x2", json!({"a": 2}))]);
        assert!(matches!(
            events.last(),
            Some(ReplyEvent::Finished {
                reason: FinishReason::Stop,
                usage: None
            })
        ));
    }

    #[test]
    fn errors_and_early_ends_are_not_replies() {
        let mut a = Assembler::default();
        more(&mut a, json!({"choices": [{"delta": {"content": "Par"}}]}));
        let error = a
            .on_event(
                "message",
                r#"{"error": {"message": "overloaded", "type": "server_error"}}"#,
            )
            .unwrap_err();
        assert!(
            matches!(&error, OpenAiError::Stream { code: Some(c), message } if c == "server_error" && message == "overloaded"),
            "{error:?}"
        );
        let named = Assembler::default()
            .on_event("error", r#"{"message": "boom"}"#)
            .unwrap_err();
        assert!(matches!(named, OpenAiError::Stream { .. }), "{named:?}");

        let mut cut = Assembler::default();
        more(
            &mut cut,
            json!({"choices": [{"delta": {"content": "Par"}}]}),
        );
        assert!(matches!(cut.on_end(), Err(OpenAiError::Truncated)));
        let mut no_reason = Assembler::default();
        assert!(matches!(
            no_reason.on_event("message", "[DONE]"),
            Err(OpenAiError::Truncated)
        ));
        let garbage = Assembler::default().on_event("message", "<html>");
        assert!(matches!(garbage, Err(OpenAiError::Decode { .. })));
        let mut nameless = Assembler::default();
        more(
            &mut nameless,
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}, "finish_reason": "tool_calls"}]}),
        );
        assert!(matches!(
            nameless.on_event("message", "[DONE]"),
            Err(OpenAiError::Decode { .. })
        ));
    }
}
