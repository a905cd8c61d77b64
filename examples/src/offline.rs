//! The model used when no API key is configured: a clearly labelled echo.

use std::time::Duration;

use async_trait::async_trait;
use conversation_core::{
    ChatModel, ChatRequest, FinishReason, ReplyEvent, ReplyStream, Result, Role, Usage,
};
use futures::StreamExt as _;

/// A [`ChatModel`] that needs no network: it streams back the last user message,
/// labelled as an offline echo, a few words at a time, so the whole stack (streaming,
/// storing, titles, the web page) can be tried without an API key.
#[derive(Debug, Clone)]
pub struct OfflineEchoModel {
    delay: Duration,
}

impl OfflineEchoModel {
    /// The label every reply starts with.
    pub const LABEL: &'static str =
        "[offline echo: no OPENAI_API_KEY is set, so no model is called]";

    /// An echo that pauses `delay` between chunks, to look like a streamed reply.
    pub fn new(delay: Duration) -> Self {
        Self { delay }
    }

    /// The whole reply to a request.
    pub fn reply_text(request: &ChatRequest) -> String {
        let asked = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str());
        format!("{} You said: {asked}", Self::LABEL)
    }
}

impl Default for OfflineEchoModel {
    fn default() -> Self {
        Self::new(Duration::from_millis(15))
    }
}

#[async_trait]
impl ChatModel for OfflineEchoModel {
    async fn stream_reply(&self, request: ChatRequest) -> Result<ReplyStream> {
        let text = Self::reply_text(&request);
        let prompt_tokens: u64 = request
            .messages
            .iter()
            .map(|m| m.content.len().div_ceil(4) as u64)
            .sum();
        let completion_tokens = text.len().div_ceil(4) as u64;
        // Chunks keep their trailing whitespace so that joined they are the text.
        let chunks: Vec<String> = text
            .split_inclusive(char::is_whitespace)
            .map(str::to_owned)
            .collect();
        let delay = self.delay;
        let deltas = futures::stream::iter(chunks).then(move |text| async move {
            tokio::time::sleep(delay).await;
            Ok(ReplyEvent::Delta { text })
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

    #[tokio::test]
    async fn echoes_the_last_user_message_with_its_label() {
        let id = ConversationId::new();
        let at = conversation_core::now();
        let request = ChatRequest::new(vec![
            NewMessage::user("first").into_message(id, 1, at),
            NewMessage::assistant("ok").into_message(id, 2, at),
            NewMessage::user("<script>alert(1)</script> and more").into_message(id, 3, at),
        ]);
        let model = OfflineEchoModel::new(Duration::ZERO);
        let reply = collect_reply(model.stream_reply(request).await.unwrap())
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
    }
}
