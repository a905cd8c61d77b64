//! The model used when no API key is configured: a clearly labelled echo.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conversation_core::{
    ChatModel, ChatRequest, FinishReason, Limits, ReplyEvent, ReplyStream, Result, Role, Usage,
};
use futures::StreamExt as _;

/// Most deltas one echo is streamed in: a long prompt is echoed a few thousand bytes
/// at a time, not word by word.
const MAX_CHUNKS: usize = 200;

/// Ends an echo that was cut to fit the content limit.
const CUT: &str = " … [echo cut to fit the content limit]";

/// A [`ChatModel`] that needs no network: it streams back the last user message,
/// labelled as an offline echo, a few words at a time, so the whole stack (streaming,
/// storing, titles, the web page) can be tried without an API key.
///
/// The echo always fits the store's content limit (a question of the largest allowed
/// size is answered, cut short), and it is streamed from one copy of the text in at
/// most 200 deltas, whatever the length of the question.
#[derive(Debug, Clone)]
pub struct OfflineEchoModel {
    delay: Duration,
    max_bytes: usize,
}

impl OfflineEchoModel {
    /// The label every reply starts with.
    pub const LABEL: &'static str =
        "[offline echo: no OPENAI_API_KEY is set, so no model is called]";

    /// An echo that pauses `delay` between chunks, to look like a streamed reply, and
    /// fits core's default content limit ([`Limits::max_content_bytes`]).
    pub fn new(delay: Duration) -> Self {
        Self {
            delay,
            max_bytes: Limits::default().max_content_bytes,
        }
    }

    /// Fits the echo in `bytes` of UTF-8 (the store's
    /// [`Limits::max_content_bytes`] when it is not the default).
    pub fn with_max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// The whole reply to a request.
    pub fn reply_text(&self, request: &ChatRequest) -> String {
        let asked = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str());
        self.echo(asked)
    }

    /// The label and `asked`, cut at a character boundary (with [`CUT`] said) when
    /// the whole would exceed the limit.
    fn echo(&self, asked: &str) -> String {
        let head = format!("{} You said: ", Self::LABEL);
        if head.len() + asked.len() <= self.max_bytes {
            return head + asked;
        }
        let (mut room, cut) = match self.max_bytes.checked_sub(head.len() + CUT.len()) {
            Some(room) => (room, CUT),
            // A limit too small for the label and the notice: as much as fits.
            None => (self.max_bytes.saturating_sub(head.len()), ""),
        };
        while !asked.is_char_boundary(room) {
            room -= 1;
        }
        let mut text = String::with_capacity(head.len() + room + cut.len());
        text.push_str(&head);
        text.push_str(&asked[..room]);
        text.push_str(cut);
        text
    }
}

impl Default for OfflineEchoModel {
    fn default() -> Self {
        Self::new(Duration::from_millis(15))
    }
}

/// Where the chunk of `text` that starts at `start` ends: after the first whitespace
/// at least `min` bytes on, so that joined the chunks are the text.
fn chunk_end(text: &str, start: usize, min: usize) -> usize {
    let mut from = (start + min).min(text.len());
    while !text.is_char_boundary(from) {
        from += 1;
    }
    match text[from..].char_indices().find(|(_, c)| c.is_whitespace()) {
        Some((at, space)) => from + at + space.len_utf8(),
        None => text.len(),
    }
}

#[async_trait]
impl ChatModel for OfflineEchoModel {
    async fn stream_reply(&self, request: ChatRequest) -> Result<ReplyStream> {
        let text: Arc<str> = self.reply_text(&request).into();
        let prompt_tokens: u64 = request
            .messages
            .iter()
            .map(|m| m.content.len().div_ceil(4) as u64)
            .sum();
        drop(request);
        let completion_tokens = text.len().div_ceil(4) as u64;
        let min_chunk = text.len().div_ceil(MAX_CHUNKS).max(1);
        let delay = self.delay;
        let deltas = futures::stream::unfold(0, move |start| {
            let text = Arc::clone(&text);
            async move {
                if start >= text.len() {
                    return None;
                }
                let end = chunk_end(&text, start, min_chunk);
                tokio::time::sleep(delay).await;
                let delta = ReplyEvent::Delta {
                    text: text[start..end].to_owned(),
                };
                Some((Ok(delta), end))
            }
        });
        let finished = futures::stream::once(async move {
            Ok(ReplyEvent::Finished {
                reason: FinishReason::Stop,
                usage: Some(Usage {
                    prompt_tokens,
                    completion_tokens,
                    total_tokens: prompt_tokens + completion_tokens,
                }),
            })
        });
        Ok(deltas.chain(finished).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conversation_core::{ConversationId, NewMessage, collect_reply};

    fn request(question: &str) -> ChatRequest {
        let id = ConversationId::new();
        let at = conversation_core::backend::now();
        let first = NewMessage::user("first").into_message(id, 1, None, at);
        let answer = NewMessage::assistant("ok").into_message(id, 2, Some(first.id), at);
        let parent = Some(answer.id);
        ChatRequest::new(vec![
            first,
            answer,
            NewMessage::user(question).into_message(id, 3, parent, at),
        ])
    }

    async fn deltas(model: &OfflineEchoModel, question: &str) -> Vec<String> {
        let mut stream = model.stream_reply(request(question)).await.unwrap();
        let mut deltas = Vec::new();
        while let Some(event) = stream.next().await {
            if let ReplyEvent::Delta { text } = event.unwrap() {
                deltas.push(text);
            }
        }
        deltas
    }

    #[tokio::test]
    async fn echoes_the_last_user_message_with_its_label() {
        let model = OfflineEchoModel::new(Duration::ZERO);
        let reply = collect_reply(
            model
                .stream_reply(request("<script>alert(1)</script> and more"))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(
            reply.content,
            format!(
                "{} You said: <script>alert(1)</script> and more",
                OfflineEchoModel::LABEL
            )
        );
        assert_eq!(reply.finish_reason, FinishReason::Stop);
        // A short echo still streams word by word.
        let words = deltas(&model, "one two  three").await;
        assert!(
            words.ends_with(&["one ".into(), "two ".into(), " three".into()]),
            "{words:?}"
        );
    }

    #[tokio::test]
    async fn a_question_of_the_largest_size_is_echoed_cut_to_fit_in_few_deltas() {
        let limit = Limits::default().max_content_bytes;
        let model = OfflineEchoModel::new(Duration::ZERO);
        // One-letter words, and a multi-byte character across the cut.
        let question = format!("{}{}", "w ".repeat(limit / 2 - 100), "é".repeat(99));
        assert!(question.len() <= limit);
        let deltas = deltas(&model, &question).await;
        assert!(deltas.len() <= MAX_CHUNKS + 1, "{} deltas", deltas.len());
        let reply = deltas.concat();
        assert!(reply.len() <= limit, "{} bytes", reply.len());
        assert!(reply.starts_with(OfflineEchoModel::LABEL) && reply.ends_with(CUT));
        assert!(
            question.starts_with(
                reply
                    .strip_prefix(&format!("{} You said: ", OfflineEchoModel::LABEL))
                    .unwrap()
                    .strip_suffix(CUT)
                    .unwrap()
            )
        );
        // A smaller limit is kept too.
        let small = OfflineEchoModel::new(Duration::ZERO).with_max_bytes(201);
        let reply = small.reply_text(&request(&"é".repeat(100)));
        assert!(reply.len() <= 201 && reply.ends_with(CUT), "{reply}");
    }

    #[test]
    fn chunks_join_into_the_text() {
        for text in ["", "a", "a b", " a", "ab cd  ef\tgh\nij", "é é ééé  é"] {
            for min in [1, 2, 3, 7, 100] {
                let mut chunks = Vec::new();
                let mut start = 0;
                while start < text.len() {
                    let end = chunk_end(text, start, min);
                    assert!(end > start, "{text:?} {min}");
                    chunks.push(&text[start..end]);
                    start = end;
                }
                assert_eq!(chunks.concat(), text, "{text:?} {min}");
            }
        }
    }
}
