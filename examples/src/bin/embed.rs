//! The library in-process, without HTTP: create, append, switch, the context window,
//! titles, and the message tree (edit, regenerate, versions, fork, delete), on the
//! SQLite store.
//!
//! ```sh
//! cargo run -p conversation-examples --bin embed [-- path/to/file.db]
//! ```
//!
//! With `OPENAI_API_KEY` set, titles and the regenerated answer are written by the
//! model; without, the heuristic title (from the first question) stays and the
//! example server's offline echo answers.

#![allow(clippy::print_stdout)] // An example program: printing is its output.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use conversation_core::{
    ArchivedFilter, ChatModel, ConversationQuery, Conversations, Message, NewConversation,
    NewMessage, ReplyRequest, RunEvent, Scope, TitleGenerator,
};
use conversation_examples::OfflineEchoModel;
use conversation_llm_openai::{OpenAiChatModel, OpenAiConfig, OpenAiTitleGenerator};
use conversation_store_sqlite::SqliteStore;
use futures::StreamExt as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("data/embed-example.db"));
    let store = Arc::new(SqliteStore::open(&path).await?);
    let mut builder = Conversations::builder(store);
    if std::env::var_os("OPENAI_API_KEY").is_some() {
        let config = OpenAiConfig::from_env()?;
        let titles: Arc<dyn TitleGenerator> = Arc::new(OpenAiTitleGenerator::new(config.clone())?);
        let model: Arc<dyn ChatModel> = Arc::new(OpenAiChatModel::new(config)?);
        builder = builder.title_generator(titles).chat_model(model);
    } else {
        let model: Arc<dyn ChatModel> = Arc::new(OfflineEchoModel::new(std::time::Duration::ZERO));
        builder = builder.chat_model(model);
    }
    let service = builder.build();
    println!("store: {}", path.display());

    // One scope per database connection of the host.
    let scope = Scope::new("warehouse-eu")?;
    let other_scope = Scope::new("billing")?;

    // Create and talk: the first question titles the conversation at once.
    let revenue = service.create(&scope, NewConversation::new()).await?;
    let asked = service
        .append_user(
            &scope,
            revenue.id,
            "What was revenue by region last quarter?",
        )
        .await?;
    println!(
        "created {} titled {:?}",
        revenue.id, asked.conversation.title
    );
    service
        .append_assistant(&scope, revenue.id, "EMEA 4.1M, AMER 6.3M, APAC 2.2M.")
        .await?;

    // The message tree. Edit the question: the new version is a sibling of the old
    // one and becomes the head; the first version and its answer stay.
    let first_question = &asked.messages[0];
    let edited = service
        .edit(
            &scope,
            revenue.id,
            first_question.id,
            NewMessage::user("What was revenue by country last quarter?"),
        )
        .await?;
    println!("edited: {}", versions(&edited.messages[0]));
    // Regenerate: the model answers the edited question (a run, events streamed).
    let mut run = service
        .reply(
            &scope,
            revenue.id,
            ReplyRequest::regenerate(edited.messages[0].id),
        )
        .await?;
    let mut answer = None;
    while let Some(record) = run.events.next().await {
        match record.event {
            RunEvent::Message { message, .. } => answer = Some(message),
            RunEvent::Finished { run, .. } => println!("run {} ended {:?}", run.id, run.status),
            _ => {}
        }
    }
    if let Some(answer) = &answer {
        println!("answer to the edit: {:?}", answer.content);
    }
    // Back to the first version: the head moves to the newest leaf under it.
    let switched = service
        .switch_branch(&scope, revenue.id, first_question.id)
        .await?;
    let path = service.context(&scope, revenue.id).await?;
    println!(
        "switched back: head {:?}, path {:?}",
        switched.head_id,
        path.iter().map(|m| m.content.as_str()).collect::<Vec<_>>()
    );
    // Fork a new chat from the first answer; then delete the edited branch.
    if let Some(first_answer) = path.last() {
        let fork = service.fork(&scope, revenue.id, first_answer.id).await?;
        println!("forked into {} ({} messages)", fork.id, fork.message_count);
        service.delete(&scope, fork.id).await?;
    }
    let trimmed = service
        .delete_message(&scope, revenue.id, edited.messages[0].id, None)
        .await?;
    println!(
        "deleted the edited version and its answer: {} messages left",
        trimmed.message_count
    );

    // A second conversation, long enough for the window to slide.
    let tuning = service.create(&scope, NewConversation::new()).await?;
    let turns: Vec<NewMessage> = (1..=15)
        .flat_map(|i| {
            [
                NewMessage::user(format!("Is index #{i} used by the nightly job?")),
                NewMessage::assistant(format!("Index #{i}: used {i} times last night.")),
            ]
        })
        .collect();
    service.append(&scope, tuning.id, turns).await?;

    // The sidebar: newest activity first, pinned first.
    service.set_pinned(&scope, revenue.id, true).await?;
    let sidebar = service
        .list(&scope, &ConversationQuery::new().pinned_first(true))
        .await?;
    println!("sidebar of {scope}:");
    for conversation in &sidebar.items {
        let pin = if conversation.pinned { "📌" } else { "  " };
        println!(
            "  {pin} {:<50} {} messages",
            conversation.title.as_deref().unwrap_or("New chat"),
            conversation.message_count
        );
    }

    // Switch: the conversation and its newest page of messages.
    let open = service.open(&scope, tuning.id).await?;
    println!(
        "switched to {:?}: {} messages, showing {} (older ones: {})",
        open.conversation.title,
        open.conversation.message_count,
        open.messages.items.len(),
        open.messages.has_more
    );

    // What the model would get: the last 20 messages, chronological.
    let context = service.context(&scope, tuning.id).await?;
    println!(
        "context window: {} messages, seq {}..={}",
        context.len(),
        context.first().map_or(0, |m| m.seq),
        context.last().map_or(0, |m| m.seq)
    );

    // Titles: the generator runs in the background after the first reply.
    service.wait_for_titles().await;
    let titled = service.get(&scope, revenue.id).await?;
    println!(
        "title of the first conversation: {:?} ({:?})",
        titled.title, titled.title_source
    );
    let renamed = service.rename(&scope, revenue.id, "Q3 revenue").await?;
    println!("renamed by the user: {:?} (final)", renamed.title);

    // Archive, and isolation between scopes.
    service.set_archived(&scope, tuning.id, true).await?;
    let archived = service
        .list(
            &scope,
            &ConversationQuery::new().archived(ArchivedFilter::Only),
        )
        .await?;
    println!("archived: {}", archived.items.len());
    let hidden = service.get(&other_scope, revenue.id).await;
    println!(
        "the same id from scope {other_scope}: {}",
        match hidden {
            Ok(_) => "visible (a bug!)".to_owned(),
            Err(error) => error.to_string(),
        }
    );

    // Clean up what this run created, so it can run again and again.
    service.delete(&scope, revenue.id).await?;
    service.delete(&scope, tuning.id).await?;
    // Pending titles are written, then the store is closed (its WAL checkpointed).
    service.shutdown().await;
    Ok(())
}

/// "< 2/2 >": which version of its question a message is.
fn versions(message: &Message) -> String {
    format!(
        "version {}/{} of {:?}",
        message.siblings.index + 1,
        message.siblings.count,
        message.content
    )
}
