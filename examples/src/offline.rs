//! The model used when no API key is configured: a clearly labelled echo, which
//! also drives the tool loop for `/sql` questions.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conversation_core::{
    ChatModel, ChatRequest, FinishReason, Limits, Message, ReplyEvent, ReplyStream, Result, Role,
    ToolCall, Usage,
};
use futures::StreamExt as _;
use serde_json::json;

/// Most deltas one echo is streamed in: a long prompt is echoed a few thousand bytes
/// at a time, not word by word.
const MAX_CHUNKS: usize = 200;

/// Ends an echo that was cut to fit the content limit.
const CUT: &str = " … [echo cut to fit the content limit]";

/// Longest part of a tool result quoted in a summary, in characters.
const MAX_QUOTE_CHARS: usize = 300;

/// A [`ChatModel`] that needs no network: it streams back the last user message,
/// labelled as an offline echo, a few words at a time, so the whole stack (streaming,
/// storing, titles, the web page) can be tried without an API key.
///
/// It also drives the tool loop, so that tool calls can be seen offline: a question
/// starting with `/sql ` (when the request offers the
/// [`run_query`](Self::QUERY_TOOL) tool) is answered with a call of that tool with
/// the rest of the question as its `sql`; once the context ends with the tool's
/// result, the answer is a short summary of it (how many rows, the columns, the first
/// row; or the error). See [`Self::answer`].
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

    /// What starts a question the model answers with a query.
    pub const SQL_COMMAND: &'static str = "/sql ";

    /// The tool a `/sql` question calls (the sample database's query tool).
    pub const QUERY_TOOL: &'static str = "run_query";

    /// The whole answer to a request:
    ///
    /// - the context ends with a tool result: a summary of it;
    /// - the last question starts with [`Self::SQL_COMMAND`] and the request offers
    ///   [`Self::QUERY_TOOL`]: a call of it, `{"sql": <the rest, trimmed>}`, whose id
    ///   is made from the question's id;
    /// - such a question when the tool is not offered: a text saying so;
    /// - anything else: the echo of the last question.
    pub fn answer(&self, request: &ChatRequest) -> OfflineAnswer {
        if let Some(result) = request.messages.last().filter(|m| m.role == Role::Tool) {
            return OfflineAnswer::Text(format!("{} {}", Self::LABEL, summarize(result)));
        }
        let Some(question) = request.messages.iter().rev().find(|m| m.role == Role::User) else {
            return OfflineAnswer::Text(self.echo(""));
        };
        let Some(sql) = question.content.strip_prefix(Self::SQL_COMMAND) else {
            return OfflineAnswer::Text(self.echo(&question.content));
        };
        if !request
            .tools
            .iter()
            .any(|tool| tool.name == Self::QUERY_TOOL)
        {
            return OfflineAnswer::Text(format!(
                "{} /sql runs its query with the {} tool, and this server offers no such \
                 tool (the example server offers it unless started with --sample-db off).",
                Self::LABEL,
                Self::QUERY_TOOL
            ));
        }
        OfflineAnswer::ToolCall(ToolCall {
            id: format!("call_{}", question.id),
            name: Self::QUERY_TOOL.to_owned(),
            arguments: json!({ "sql": sql.trim() }),
        })
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

/// What [`OfflineEchoModel::answer`] answers.
#[derive(Debug, Clone, PartialEq)]
pub enum OfflineAnswer {
    /// Text, streamed a few words at a time.
    Text(String),
    /// A tool call (the reply finishes with `tool_calls`).
    ToolCall(ToolCall),
}

/// A short summary of a tool result: for a result table (a Markdown table followed
/// by a line such as `3 rows`), how many rows, the columns and the first row; for an
/// error, the error; otherwise the start of the text.
fn summarize(result: &Message) -> String {
    let failed = result
        .metadata
        .get("isError")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    if failed {
        return format!("The query failed: {}", quote(&result.content));
    }
    let mut lines = result.content.lines();
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|cell| cell.trim().to_owned())
            .collect()
    };
    let header = lines.next().filter(|line| line.starts_with('|'));
    let separator = lines.next().filter(|line| line.starts_with("|-"));
    let (Some(header), Some(_)) = (header, separator) else {
        return format!("The tool answered: {}", quote(&result.content));
    };
    let columns = cells(header);
    let rows: Vec<&str> = lines.clone().take_while(|l| l.starts_with('|')).collect();
    let count = lines
        .rfind(|line| !line.trim().is_empty() && !line.starts_with('|'))
        .map_or_else(
            || format!("{} rows", rows.len()),
            |line| line.trim().to_owned(),
        );
    let mut summary = format!(
        "The query returned {count}; columns: {}.",
        columns.join(", ")
    );
    if let Some(first) = rows.first() {
        let values: Vec<String> = columns
            .iter()
            .zip(cells(first))
            .map(|(column, value)| format!("{column} = {value}"))
            .collect();
        summary.push_str(&format!(" First row: {}.", quote(&values.join(", "))));
    }
    summary
}

/// `text`, cut to [`MAX_QUOTE_CHARS`] characters with an ellipsis.
fn quote(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_QUOTE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
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
        let answer = self.answer(&request);
        let prompt_tokens: u64 = request
            .messages
            .iter()
            .map(|m| m.content.len().div_ceil(4) as u64)
            .sum();
        drop(request);
        let delay = self.delay;
        let finished = |reason, completion_tokens| {
            futures::stream::once(async move {
                Ok(ReplyEvent::Finished {
                    reason,
                    usage: Some(Usage {
                        prompt_tokens,
                        completion_tokens,
                        total_tokens: prompt_tokens + completion_tokens,
                    }),
                })
            })
        };
        let text = match answer {
            OfflineAnswer::Text(text) => text,
            OfflineAnswer::ToolCall(call) => {
                let completion_tokens = call.arguments.to_string().len().div_ceil(4) as u64;
                let call = futures::stream::once(async move {
                    tokio::time::sleep(delay).await;
                    Ok(ReplyEvent::ToolCall { call })
                });
                return Ok(call
                    .chain(finished(FinishReason::ToolCalls, completion_tokens))
                    .boxed());
            }
        };
        let text: Arc<str> = text.into();
        let completion_tokens = text.len().div_ceil(4) as u64;
        let min_chunk = text.len().div_ceil(MAX_CHUNKS).max(1);
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
        Ok(deltas
            .chain(finished(FinishReason::Stop, completion_tokens))
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SampleTools;
    use conversation_core::{ConversationId, NewMessage, Toolbox as _, collect_reply};

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
        let OfflineAnswer::Text(reply) = small.answer(&request(&"é".repeat(100))) else {
            panic!("an echo is text");
        };
        assert!(reply.len() <= 201 && reply.ends_with(CUT), "{reply}");
    }

    /// A context of `messages` (user, assistant, tool… in that order, each the
    /// previous one's child).
    fn context(messages: Vec<NewMessage>) -> Vec<Message> {
        let id = ConversationId::new();
        let at = conversation_core::backend::now();
        let mut parent = None;
        let mut stored = Vec::new();
        for (seq, message) in (1..).zip(messages) {
            let message = message.into_message(id, seq, parent, at);
            parent = Some(message.id);
            stored.push(message);
        }
        stored
    }

    #[tokio::test]
    async fn a_sql_question_calls_the_query_tool_and_the_result_is_summarised() {
        let dir = tempfile::tempdir().unwrap();
        let tools = SampleTools::open_or_create(dir.path().join("sample.db")).unwrap();
        let model = OfflineEchoModel::new(Duration::ZERO);
        let sql = "select name, price from products order by price desc limit 3";
        let question = context(vec![NewMessage::user(format!("/sql  {sql} "))]);
        let asked = ChatRequest::new(question.clone()).with_tools(tools.tools());

        // Step 1: the tool call, streamed as a whole call that finishes the reply.
        let reply = collect_reply(model.stream_reply(asked.clone()).await.unwrap())
            .await
            .unwrap();
        assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
        assert_eq!(reply.content, "");
        let [call] = reply.tool_calls.as_slice() else {
            panic!("one call: {reply:?}");
        };
        assert_eq!(call.name, "run_query");
        assert_eq!(call.arguments, json!({ "sql": sql }));
        assert_eq!(call.id, format!("call_{}", question[0].id));
        assert!(reply.usage.unwrap().total_tokens > 0);

        // Step 2: the real tool's result, summarised.
        let scope = conversation_core::Scope::new("offline").unwrap();
        let output = tools.call(&scope, call).await;
        assert!(!output.is_error, "{}", output.content);
        let done = context(vec![
            NewMessage::user(format!("/sql {sql}")),
            NewMessage::assistant("").with_tool_calls(vec![call.clone()]),
            NewMessage::tool(&call.id, &output.content),
        ]);
        let OfflineAnswer::Text(summary) = model.answer(&ChatRequest::new(done.clone())) else {
            panic!("a summary is text");
        };
        assert!(summary.starts_with(OfflineEchoModel::LABEL), "{summary}");
        assert!(
            summary.contains("The query returned 3 rows; columns: name, price. First row: name = "),
            "{summary}"
        );
        let first_row = output.content.lines().nth(2).unwrap();
        let first_name = first_row
            .trim_matches('|')
            .split('|')
            .next()
            .unwrap()
            .trim();
        assert!(
            summary.contains(&format!("name = {first_name}, price = ")),
            "{summary}"
        );
        let streamed = collect_reply(
            model
                .stream_reply(ChatRequest::new(done).with_tools(tools.tools()))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(
            (streamed.content, streamed.finish_reason),
            (summary, FinishReason::Stop)
        );

        // A failed query: the error, said.
        let failed = tools
            .call(
                &scope,
                &ToolCall {
                    arguments: json!({"sql": "select nope"}),
                    ..call.clone()
                },
            )
            .await;
        assert!(failed.is_error);
        let mut metadata = conversation_core::Metadata::new();
        metadata.insert("isError".to_owned(), true.into());
        let broken = context(vec![
            NewMessage::user("/sql select nope"),
            NewMessage::assistant("").with_tool_calls(vec![call.clone()]),
            NewMessage::tool(&call.id, &failed.content).with_metadata(metadata),
        ]);
        let OfflineAnswer::Text(said) = model.answer(&ChatRequest::new(broken)) else {
            panic!("text");
        };
        assert!(
            said.contains("The query failed: the query failed: no such column: nope"),
            "{said}"
        );

        // No rows, and a result that is not a table.
        let empty = tools
            .call(
                &scope,
                &ToolCall {
                    arguments: json!({"sql": "select id from orders where 0"}),
                    ..call.clone()
                },
            )
            .await;
        let none = context(vec![
            NewMessage::user("/sql …"),
            NewMessage::assistant("").with_tool_calls(vec![call.clone()]),
            NewMessage::tool(&call.id, &empty.content),
        ]);
        let OfflineAnswer::Text(said) = model.answer(&ChatRequest::new(none)) else {
            panic!("text");
        };
        assert!(
            said.ends_with("The query returned 0 rows; columns: id."),
            "{said}"
        );
        let prose = context(vec![
            NewMessage::user("hi"),
            NewMessage::assistant("").with_tool_calls(vec![call.clone()]),
            NewMessage::tool(&call.id, "just words"),
        ]);
        let OfflineAnswer::Text(said) = model.answer(&ChatRequest::new(prose)) else {
            panic!("text");
        };
        assert!(said.ends_with("The tool answered: just words"), "{said}");
    }

    #[test]
    fn a_sql_question_without_the_tool_or_the_command_is_answered_in_text() {
        let model = OfflineEchoModel::new(Duration::ZERO);
        let asked = ChatRequest::new(context(vec![NewMessage::user("/sql select 1")]));
        let OfflineAnswer::Text(text) = model.answer(&asked) else {
            panic!("no tool offered: text");
        };
        assert!(text.contains("offers no such tool"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let tools = SampleTools::open_or_create(dir.path().join("sample.db")).unwrap();
        for question in ["/sqlselect 1", " /sql select 1", "tell me about /sql "] {
            let asked = ChatRequest::new(context(vec![NewMessage::user(question)]))
                .with_tools(tools.tools());
            assert_eq!(
                model.answer(&asked),
                OfflineAnswer::Text(format!("{} You said: {question}", OfflineEchoModel::LABEL)),
            );
        }
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
