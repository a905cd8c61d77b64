//! The context window: which recent messages the model gets.

use std::fmt::Debug;
use std::sync::Arc;

use crate::{Error, MAX_RECENT_MESSAGES, Message, Result, Role};

/// Counts the tokens a message costs in a model's context.
pub trait TokenCounter: Send + Sync + Debug + 'static {
    /// The tokens `message` costs, overhead included.
    fn count(&self, message: &Message) -> usize;
}

/// A tokenizer-free estimate: one token per 4 bytes of content and tool-call JSON,
/// rounded up, plus 4 tokens of per-message overhead. Close enough for English and
/// SQL with OpenAI's tokenizers; hosts that need exact budgets plug in their own.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApproxTokenCounter;

impl TokenCounter for ApproxTokenCounter {
    fn count(&self, message: &Message) -> usize {
        let tool_bytes: usize = message
            .tool_calls
            .iter()
            .map(|call| call.id.len() + call.name.len() + call.arguments.to_string().len())
            .sum();
        4 + (message.content.len() + tool_bytes).div_ceil(4)
    }
}

/// How the context window is chosen.
///
/// The window is the longest run of the newest messages that fits both limits and
/// does not start with a tool result (whose assistant call would be cut off, which
/// providers reject). Because it is a suffix, a tool call is never separated from the
/// results that follow it. The newest turn is always included whole, even when it
/// alone exceeds a limit (an assistant's tool call with its results, or one message
/// over the token budget): a window without the latest message is useless.
///
/// A window is always a sequence OpenAI-compatible servers accept
/// ([`ContextPolicy::window`]): a tool call that was never answered (the user asked
/// something else instead of sending its result) is left out of its assistant
/// message, and the message too when nothing else is left of it; a tool result that
/// answers no call of the assistant message just before it is left out. Stored
/// messages are never changed: this shapes only what the model is sent. (The other
/// choice, a synthetic "not run" result, would put words in the tool's mouth.)
#[derive(Debug, Clone)]
pub struct ContextPolicy {
    max_messages: usize,
    token_budget: Option<usize>,
    counter: Arc<dyn TokenCounter>,
}

impl Default for ContextPolicy {
    fn default() -> Self {
        Self {
            max_messages: Self::DEFAULT_MAX_MESSAGES,
            token_budget: None,
            counter: Arc::new(ApproxTokenCounter),
        }
    }
}

impl ContextPolicy {
    /// Messages in a window unless configured otherwise.
    pub const DEFAULT_MAX_MESSAGES: usize = 20;

    /// A window of at most `max_messages` messages and no token budget.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for 0 or more than
    /// [`MAX_RECENT_MESSAGES`](crate::MAX_RECENT_MESSAGES).
    pub fn new(max_messages: usize) -> Result<Self> {
        if max_messages == 0 || max_messages > MAX_RECENT_MESSAGES {
            return Err(Error::invalid(
                "maxMessages",
                format!("must be between 1 and {MAX_RECENT_MESSAGES}"),
            ));
        }
        Ok(Self {
            max_messages,
            ..Self::default()
        })
    }

    /// Also limits the window to `budget` tokens as counted by `counter`.
    pub fn with_token_budget(mut self, budget: usize, counter: Arc<dyn TokenCounter>) -> Self {
        self.token_budget = Some(budget);
        self.counter = counter;
        self
    }

    /// The message limit.
    pub fn max_messages(&self) -> usize {
        self.max_messages
    }

    /// The token budget, if any.
    pub fn token_budget(&self) -> Option<usize> {
        self.token_budget
    }

    /// The window of `recent` ([`Self::select`]) made acceptable to providers: tool
    /// calls never answered are left out, and so are tool results that answer no
    /// call just before them. `None` as for [`Self::select`].
    pub fn window(&self, recent: &[Message]) -> Option<Vec<Message>> {
        self.select(recent).map(pair_tool_calls)
    }

    /// Chooses the window from `recent`, the conversation's newest messages in
    /// chronological order (at least [`Self::max_messages`] of them when the
    /// conversation has that many).
    ///
    /// Returns `None` when `recent` is not enough to decide: it holds only tool
    /// results whose assistant call lies further back; read more messages and call
    /// again.
    pub fn select<'a>(&self, recent: &'a [Message]) -> Option<&'a [Message]> {
        let n = recent.len();
        let mut start = n.saturating_sub(self.max_messages);
        if let Some(budget) = self.token_budget {
            let mut used = 0usize;
            let mut first = n;
            while first > start {
                let cost = self.counter.count(&recent[first - 1]);
                if used + cost > budget {
                    break;
                }
                used += cost;
                first -= 1;
            }
            start = first;
        }
        while start < n && recent[start].role == Role::Tool {
            start += 1;
        }
        if start < n || n == 0 {
            return Some(&recent[start..]);
        }
        // Nothing fits: send the newest turn whole, from its first non-tool message.
        recent
            .iter()
            .rposition(|m| m.role != Role::Tool)
            .map(|turn| &recent[turn..])
    }
}

/// Keeps only tool calls answered by the tool results right after their assistant
/// message, and only tool results answering those calls.
fn pair_tool_calls(messages: &[Message]) -> Vec<Message> {
    let mut out = Vec::with_capacity(messages.len());
    let mut i = 0;
    while i < messages.len() {
        let message = &messages[i];
        match message.role {
            Role::Assistant if !message.tool_calls.is_empty() => {
                let results_end = messages[i + 1..]
                    .iter()
                    .position(|m| m.role != Role::Tool)
                    .map_or(messages.len(), |n| i + 1 + n);
                let results = &messages[i + 1..results_end];
                let mut assistant = message.clone();
                assistant.tool_calls.retain(|call| {
                    results
                        .iter()
                        .any(|r| r.tool_call_id.as_deref() == Some(call.id.as_str()))
                });
                let mut answered = std::collections::HashSet::new();
                let kept_results: Vec<Message> = results
                    .iter()
                    .filter(|r| {
                        r.tool_call_id.as_deref().is_some_and(|id| {
                            assistant.tool_calls.iter().any(|c| c.id == id)
                                && answered.insert(id.to_owned())
                        })
                    })
                    .cloned()
                    .collect();
                if !assistant.tool_calls.is_empty() || !assistant.content.is_empty() {
                    out.push(assistant);
                    out.extend(kept_results);
                }
                i = results_end;
            }
            // A tool result that does not follow an assistant's call answers nothing.
            Role::Tool => i += 1,
            _ => {
                out.push(message.clone());
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConversationId, NewMessage, ToolCall};

    fn conversation(roles: &str) -> Vec<Message> {
        let id = ConversationId::new();
        let at = crate::backend::now();
        roles
            .chars()
            .enumerate()
            .map(|(i, r)| {
                let new = match r {
                    'u' => NewMessage::user(format!("u{i}")),
                    'a' => NewMessage::assistant(format!("a{i}")),
                    'c' => NewMessage::assistant("").with_tool_calls(vec![ToolCall {
                        id: format!("call{i}"),
                        name: "run_sql".into(),
                        arguments: serde_json::json!({}),
                    }]),
                    't' => NewMessage::tool("call", format!("t{i}")),
                    's' => NewMessage::system("sys"),
                    _ => unreachable!(),
                };
                new.into_message(id, i as u64 + 1, None, at)
            })
            .collect()
    }

    fn roles(window: &[Message]) -> String {
        window
            .iter()
            .map(|m| match (m.role, m.tool_calls.is_empty()) {
                (Role::User, _) => 'u',
                (Role::Assistant, true) => 'a',
                (Role::Assistant, false) => 'c',
                (Role::Tool, _) => 't',
                (Role::System, _) => 's',
            })
            .collect()
    }

    #[test]
    fn default_is_twenty_newest_in_order() {
        let messages = conversation(&"ua".repeat(30));
        let window = ContextPolicy::default().select(&messages).unwrap();
        assert_eq!(window.len(), 20);
        assert_eq!(window[0].seq, 41);
        assert_eq!(window[19].seq, 60);
    }

    #[test]
    fn never_starts_on_an_orphan_tool_result() {
        let messages = conversation("uacttta");
        let policy = ContextPolicy::new(4).unwrap();
        assert_eq!(
            roles(policy.select(&messages).unwrap()),
            "a",
            "ttta must drop ttt"
        );
        let policy = ContextPolicy::new(5).unwrap();
        assert_eq!(roles(policy.select(&messages).unwrap()), "cttta");
    }

    #[test]
    fn the_newest_turn_is_kept_whole() {
        let messages = conversation("uactttt");
        let policy = ContextPolicy::new(2).unwrap();
        assert_eq!(roles(policy.select(&messages).unwrap()), "ctttt");
        assert_eq!(policy.select(&messages[3..]), None, "call not in sight");
    }

    #[test]
    fn token_budget_limits_and_never_splits() {
        let messages = conversation("uacta");
        // Each message costs 4 + ceil(len/4) = 5 tokens; the tool call costs more.
        let counter = Arc::new(ApproxTokenCounter);
        let policy = ContextPolicy::default().with_token_budget(10, counter.clone());
        assert_eq!(roles(policy.select(&messages).unwrap()), "a");
        let policy = ContextPolicy::default().with_token_budget(1, counter);
        assert_eq!(roles(policy.select(&messages).unwrap()), "a", "newest kept");
    }

    #[test]
    fn unanswered_calls_and_orphan_results_are_left_out() {
        let mut messages = conversation("uc");
        // The call was never answered: the user asked again instead.
        messages.extend(conversation("u"));
        let window = ContextPolicy::default().window(&messages).unwrap();
        assert_eq!(
            roles(&window),
            "uu",
            "an empty assistant message with only an unanswered call goes"
        );

        let mut answered = conversation("uct");
        answered[2].tool_call_id = Some(answered[1].tool_calls[0].id.clone());
        let mut half = answered[1].clone();
        half.content = "Two tools:".into();
        half.tool_calls.push(ToolCall {
            id: "never".into(),
            name: "run_sql".into(),
            arguments: serde_json::json!({}),
        });
        answered[1] = half;
        answered.extend(conversation("ta"));
        let window = ContextPolicy::default().window(&answered).unwrap();
        assert_eq!(
            roles(&window),
            "ucta",
            "the stray result goes, the answered call stays"
        );
        assert_eq!(window[1].tool_calls.len(), 1);
        assert_eq!(window[1].content, "Two tools:");
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(ContextPolicy::new(0).is_err());
        assert!(ContextPolicy::new(MAX_RECENT_MESSAGES + 1).is_err());
        assert_eq!(ContextPolicy::default().max_messages(), 20);
    }
}
