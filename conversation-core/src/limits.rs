//! Size limits and the input rules every store enforces the same way.

use serde_json::Value;

use crate::{
    ConversationPatch, Error, MAX_RECENT_MESSAGES, NewConversation, NewMessage, Result, Role,
    TitleSource,
};

/// Size limits checked in core before anything reaches storage.
///
/// Every store holds a `Limits` (the default unless the host sets one) and calls
/// its `check_*` methods first, so what one store refuses every store refuses, with
/// the same [`Error::InvalidInput`] naming the same field. Besides sizes, the checks
/// refuse the NUL character (U+0000) in every text and JSON string, because
/// PostgreSQL's `text` and `jsonb` cannot hold it and behaviour must not depend on
/// the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest title, in characters (Unicode scalar values). Default 200.
    pub max_title_chars: usize,
    /// Longest message content, in bytes of UTF-8. Default 1 MiB.
    pub max_content_bytes: usize,
    /// Largest metadata object, in bytes of compact JSON. Default 16 KiB.
    pub max_metadata_bytes: usize,
    /// Most messages in one append. Default 256.
    pub max_batch_messages: usize,
    /// Most tool calls on one assistant message. Default 128.
    pub max_tool_calls: usize,
    /// Most bytes of messages in one page ([`Message::page_weight`](crate::Message::page_weight)):
    /// a page stops early, with `has_more`, rather than exceed it, though it always
    /// holds at least one message. Default 4 MiB, so a page of 200 large messages
    /// cannot hold hundreds of MiB.
    pub max_page_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_title_chars: 200,
            max_content_bytes: 1024 * 1024,
            max_metadata_bytes: 16 * 1024,
            max_batch_messages: 256,
            max_tool_calls: 128,
            max_page_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Longest tool-call id or function name, in bytes.
const MAX_TOOL_NAME_BYTES: usize = 256;

impl Limits {
    /// Checks a title typed by the user. It is stored exactly as given or refused:
    /// empty or blank, longer than `max_title_chars`, or holding a control character.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] with field `title`.
    pub fn check_user_title(&self, title: &str) -> Result<()> {
        if title.trim().is_empty() {
            return Err(Error::invalid("title", "must not be empty"));
        }
        self.check_title_text(title)
    }

    /// Checks the arguments of
    /// [`Store::set_title_unless_user`](crate::Store::set_title_unless_user): `source`
    /// is heuristic or generated, and the title (which
    /// [`sanitize_title`](crate::sanitize_title) has already cleaned) passes the rules
    /// of a user title.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `source` or `title`.
    pub fn check_automatic_title(&self, title: &str, source: TitleSource) -> Result<()> {
        if !matches!(source, TitleSource::Heuristic | TitleSource::Generated) {
            return Err(Error::invalid(
                "source",
                "an automatic title is heuristic or generated",
            ));
        }
        self.check_user_title(title)
    }

    /// Checks an append: its messages ([`Limits::check_messages`]) and its title
    /// hint, which must pass as an automatic title.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `messages…` or `titleHint`.
    pub fn check_append(&self, append: &crate::Append) -> Result<()> {
        self.check_messages(&append.messages)?;
        if let Some(hint) = &append.title_hint {
            self.check_user_title(hint).map_err(|error| match error {
                Error::InvalidInput { reason, .. } => Error::invalid("titleHint", reason),
                other => other,
            })?;
        }
        Ok(())
    }

    /// Checks the count of [`Store::recent_messages`](crate::Store::recent_messages).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `n` above [`MAX_RECENT_MESSAGES`].
    pub fn check_recent(&self, query: &crate::RecentQuery) -> Result<()> {
        if query.n > MAX_RECENT_MESSAGES {
            return Err(Error::invalid(
                "n",
                format!("more than {MAX_RECENT_MESSAGES} messages"),
            ));
        }
        Ok(())
    }

    fn check_title_text(&self, title: &str) -> Result<()> {
        if title.chars().count() > self.max_title_chars {
            return Err(Error::invalid(
                "title",
                format!("longer than {} characters", self.max_title_chars),
            ));
        }
        if title.chars().any(char::is_control) {
            return Err(Error::invalid("title", "contains a control character"));
        }
        Ok(())
    }

    /// Checks a metadata object: size and no NUL in any key or string.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] with field `field`.
    pub fn check_metadata(&self, field: &str, metadata: &crate::Metadata) -> Result<()> {
        let size = serde_json::to_vec(metadata)
            .map_err(|e| Error::invalid(field, format!("not serialisable: {e}")))?
            .len();
        if size > self.max_metadata_bytes {
            return Err(Error::invalid(
                field,
                format!(
                    "{size} bytes of JSON, more than {}",
                    self.max_metadata_bytes
                ),
            ));
        }
        for (key, value) in metadata {
            if key.contains('\0') || json_has_nul(value) {
                return Err(Error::invalid(field, "contains a NUL character"));
            }
        }
        Ok(())
    }

    /// Checks a conversation to create.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `title` or `metadata`.
    pub fn check_new_conversation(&self, new: &NewConversation) -> Result<()> {
        if let Some(title) = &new.title {
            self.check_user_title(title)?;
        }
        self.check_metadata("metadata", &new.metadata)
    }

    /// Checks a patch.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `title` or `metadata`.
    pub fn check_patch(&self, patch: &ConversationPatch) -> Result<()> {
        if let Some(title) = &patch.title {
            self.check_user_title(title)?;
        }
        if let Some(metadata) = &patch.metadata {
            self.check_metadata("metadata", metadata)?;
        }
        Ok(())
    }

    /// Checks a batch of messages to append: not empty, at most `max_batch_messages`,
    /// no caller id twice, and each message by [`Limits::check_message`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `messages` or `messages[i].<field>`.
    pub fn check_messages(&self, messages: &[NewMessage]) -> Result<()> {
        if messages.is_empty() {
            return Err(Error::invalid("messages", "must hold at least one message"));
        }
        if messages.len() > self.max_batch_messages {
            return Err(Error::invalid(
                "messages",
                format!(
                    "{} messages, more than {} in one append",
                    messages.len(),
                    self.max_batch_messages
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, message) in messages.iter().enumerate() {
            self.check_message(&format!("messages[{i}]"), message)?;
            if let Some(id) = message.id
                && !seen.insert(id)
            {
                return Err(Error::invalid(
                    format!("messages[{i}].id"),
                    "the same id appears twice in one append",
                ));
            }
        }
        Ok(())
    }

    /// Checks one message; `field` prefixes the field names in errors.
    ///
    /// Rules: content at most `max_content_bytes` and without NUL; tool calls only on
    /// assistant messages, at most `max_tool_calls`, each with a non-empty id and name
    /// of at most 256 bytes and arguments of at most `max_content_bytes` of JSON;
    /// `tool_call_id` present on, and only on, tool messages.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `<field>.<part>`.
    pub fn check_message(&self, field: &str, message: &NewMessage) -> Result<()> {
        if message.content.len() > self.max_content_bytes {
            return Err(Error::invalid(
                format!("{field}.content"),
                format!(
                    "{} bytes, more than {}",
                    message.content.len(),
                    self.max_content_bytes
                ),
            ));
        }
        if message.content.contains('\0') {
            return Err(Error::invalid(
                format!("{field}.content"),
                "contains a NUL character",
            ));
        }
        if matches!(message.role, Role::User | Role::System) && message.content.trim().is_empty() {
            return Err(Error::invalid(
                format!("{field}.content"),
                format!("a {} message must have text", message.role.as_str()),
            ));
        }
        match (message.role, &message.tool_call_id) {
            (Role::Tool, None) => {
                return Err(Error::invalid(
                    format!("{field}.toolCallId"),
                    "a tool message must name the tool call it answers",
                ));
            }
            (Role::Tool, Some(id)) => check_tool_name(&format!("{field}.toolCallId"), id)?,
            (_, Some(_)) => {
                return Err(Error::invalid(
                    format!("{field}.toolCallId"),
                    "only tool messages answer a tool call",
                ));
            }
            (_, None) => {}
        }
        if !message.tool_calls.is_empty() && message.role != Role::Assistant {
            return Err(Error::invalid(
                format!("{field}.toolCalls"),
                "only assistant messages carry tool calls",
            ));
        }
        if message.tool_calls.len() > self.max_tool_calls {
            return Err(Error::invalid(
                format!("{field}.toolCalls"),
                format!("more than {} tool calls", self.max_tool_calls),
            ));
        }
        for (j, call) in message.tool_calls.iter().enumerate() {
            let prefix = format!("{field}.toolCalls[{j}]");
            check_tool_name(&format!("{prefix}.id"), &call.id)?;
            check_tool_name(&format!("{prefix}.name"), &call.name)?;
            let size = serde_json::to_vec(&call.arguments)
                .map_err(|e| Error::invalid(format!("{prefix}.arguments"), e.to_string()))?
                .len();
            if size > self.max_content_bytes {
                return Err(Error::invalid(
                    format!("{prefix}.arguments"),
                    format!("{size} bytes of JSON, more than {}", self.max_content_bytes),
                ));
            }
            if json_has_nul(&call.arguments) {
                return Err(Error::invalid(
                    format!("{prefix}.arguments"),
                    "contains a NUL character",
                ));
            }
        }
        self.check_metadata(&format!("{field}.metadata"), &message.metadata)
    }
}

fn check_tool_name(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_TOOL_NAME_BYTES {
        return Err(Error::invalid(
            field,
            format!("longer than {MAX_TOOL_NAME_BYTES} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "contains a control character"));
    }
    Ok(())
}

fn json_has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(json_has_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || json_has_nul(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MessageId, ToolCall};
    use serde_json::json;

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidInput { field, .. } => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn user_titles_are_checked_not_altered() {
        let limits = Limits::default();
        assert!(limits.check_user_title("  Spaces kept  ").is_ok());
        assert!(limits.check_user_title("<script>alert(1)</script>").is_ok());
        assert_eq!(field_of(limits.check_user_title("").unwrap_err()), "title");
        assert_eq!(
            field_of(limits.check_user_title("   ").unwrap_err()),
            "title"
        );
        assert_eq!(
            field_of(limits.check_user_title("a\nb").unwrap_err()),
            "title"
        );
        assert!(limits.check_user_title(&"é".repeat(200)).is_ok());
        assert!(limits.check_user_title(&"é".repeat(201)).is_err());
    }

    #[test]
    fn message_rules_name_the_field() {
        let limits = Limits {
            max_content_bytes: 10,
            ..Limits::default()
        };
        let cases: Vec<(NewMessage, &str)> = vec![
            (NewMessage::user("x".repeat(11)), "messages[0].content"),
            (NewMessage::user("a\0b"), "messages[0].content"),
            (NewMessage::new(Role::Tool, "r"), "messages[0].toolCallId"),
            (
                {
                    let mut m = NewMessage::user("u");
                    m.tool_call_id = Some("c".into());
                    m
                },
                "messages[0].toolCallId",
            ),
            (
                NewMessage::user("u").with_tool_calls(vec![ToolCall {
                    id: "c".into(),
                    name: "f".into(),
                    arguments: json!({}),
                }]),
                "messages[0].toolCalls",
            ),
            (
                NewMessage::assistant("").with_tool_calls(vec![ToolCall {
                    id: String::new(),
                    name: "f".into(),
                    arguments: json!({}),
                }]),
                "messages[0].toolCalls[0].id",
            ),
            (
                NewMessage::assistant("").with_tool_calls(vec![ToolCall {
                    id: "c".into(),
                    name: "f".into(),
                    arguments: json!({"sql": "select 1 from a_long_table"}),
                }]),
                "messages[0].toolCalls[0].arguments",
            ),
            (
                NewMessage::user("u")
                    .with_metadata(json!({"k": "a\u{0}b"}).as_object().cloned().unwrap()),
                "messages[0].metadata",
            ),
        ];
        for (message, field) in cases {
            let err = limits
                .check_messages(std::slice::from_ref(&message))
                .unwrap_err();
            assert_eq!(field_of(err), field, "{message:?}");
        }
    }

    #[test]
    fn batches_are_bounded_and_ids_unique() {
        let limits = Limits {
            max_batch_messages: 2,
            ..Limits::default()
        };
        assert_eq!(
            field_of(limits.check_messages(&[]).unwrap_err()),
            "messages"
        );
        let three = vec![NewMessage::user("a"); 3];
        assert_eq!(
            field_of(limits.check_messages(&three).unwrap_err()),
            "messages"
        );
        let id = MessageId::new();
        let twice = vec![
            NewMessage::user("a").with_id(id),
            NewMessage::user("b").with_id(id),
        ];
        assert_eq!(
            field_of(limits.check_messages(&twice).unwrap_err()),
            "messages[1].id"
        );
        assert!(
            limits
                .check_messages(&[NewMessage::tool("call_1", "ok")])
                .is_ok()
        );
    }

    #[test]
    fn metadata_size_is_bounded() {
        let limits = Limits {
            max_metadata_bytes: 16,
            ..Limits::default()
        };
        let small = json!({"a": 1}).as_object().cloned().unwrap();
        let big = json!({"a": "0123456789abcdef"})
            .as_object()
            .cloned()
            .unwrap();
        assert!(limits.check_metadata("metadata", &small).is_ok());
        assert_eq!(
            field_of(limits.check_metadata("metadata", &big).unwrap_err()),
            "metadata"
        );
    }
}
