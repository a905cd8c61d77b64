//! A loopback server on the in-memory store with an echo "model", for trying the API
//! and for fuzzing it from its own OpenAPI document:
//!
//! ```text
//! cargo run -p conversation-adapter-http --example memory_server -- 127.0.0.1:8080
//! curl -s localhost:8080/api/v1/connections/openapi.json
//! ```

#![allow(clippy::print_stderr)] // a command-line example says where it listens

use std::sync::Arc;

use axum::Router;
use conversation_adapter_http::{ApiState, async_trait, router};
use conversation_core::{
    ChatModel, ChatRequest, Conversations, FinishReason, ReplyEvent, ReplyStream, Result, Role,
};
use conversation_store_memory::MemoryStore;
use futures::StreamExt as _;

/// Replies with the last user message, word by word.
#[derive(Debug)]
struct Echo;

#[async_trait]
impl ChatModel for Echo {
    async fn stream_reply(&self, request: ChatRequest) -> Result<ReplyStream> {
        let said = request
            .messages
            .iter()
            .rev()
            .find(|message| message.role == Role::User)
            .map(|message| message.content.clone())
            .unwrap_or_default();
        let mut events: Vec<Result<ReplyEvent>> = format!("You said: {said}")
            .split_inclusive(' ')
            .map(|word| {
                Ok(ReplyEvent::Delta {
                    text: word.to_owned(),
                })
            })
            .collect();
        events.push(Ok(ReplyEvent::Finished {
            reason: FinishReason::Stop,
            usage: None,
        }));
        Ok(futures::stream::iter(events).boxed())
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let service = Conversations::new(Arc::new(MemoryStore::new()));
    let state = ApiState::new(service).with_model(Arc::new(Echo));
    let app: Router = Router::new().nest("/api/v1/connections", router(state));
    let listener = tokio::net::TcpListener::bind(&address).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
