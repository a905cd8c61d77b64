//! ChatGPT's data export (`conversations.json`) read as conversations of this library.
//!
//! The file is a JSON array; each conversation has a `mapping` of nodes (`id`,
//! `message`, `parent`, `children`) forming a message tree, and a `current_node`: the
//! leaf of the branch shown. That maps onto the tree here one to one:
//!
//! | ChatGPT | here |
//! |---|---|
//! | `id` / `conversation_id` (a UUID) | the conversation's id |
//! | `title` | the title, as `generated` |
//! | `create_time`, `update_time` (seconds) | `created_at`, `updated_at` (milliseconds) |
//! | `is_archived` | `archived` (archived at `update_time`) |
//! | a node's `message.id` (a UUID) | the message's id |
//! | `parent` | `parentId`, skipping nodes left out (below) |
//! | `author.role` `user`, `assistant`, `system` | the same role |
//! | `author.role` `tool` (browsing, code output) | `assistant`, with `metadata.chatgpt.role = "tool"` and the tool's `name` |
//! | `content.parts` (text parts of `text` and `multimodal_text`), `content.text` (`code`, `execution_output`, `tether_quote`) | `content`, parts joined by a blank line |
//! | `create_time` of the message | `created_at` (the conversation's when absent) |
//! | `current_node` | `headId` (its nearest kept ancestor; when that one has children, the newest branch below it down to a leaf) |
//! | `default_model_slug`, a message's `metadata.model_slug` | `metadata.chatgpt.model` |
//!
//! Left out: the empty root node, messages with no text (hidden system prompts, image
//! or file parts alone — their count is kept in `metadata.chatgpt.droppedParts`),
//! attachments, citations, feedback and moderation results. Seqs follow creation
//! time, parents always first.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Conversation, ConversationId, Error, ImportedConversation, Message, MessageId, Metadata,
    Result, Role, Scope, Siblings, TitleSource, Usage,
};

#[derive(Debug, Deserialize)]
struct Export {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    create_time: Option<f64>,
    #[serde(default)]
    update_time: Option<f64>,
    #[serde(default)]
    mapping: HashMap<String, Node>,
    #[serde(default)]
    current_node: Option<String>,
    #[serde(default)]
    is_archived: Option<bool>,
    #[serde(default)]
    default_model_slug: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Node {
    #[serde(default)]
    message: Option<NodeMessage>,
    #[serde(default)]
    parent: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NodeMessage {
    #[serde(default)]
    id: Option<String>,
    author: Author,
    #[serde(default)]
    create_time: Option<f64>,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Author {
    role: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Content {
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    parts: Option<Vec<Value>>,
    #[serde(default)]
    text: Option<String>,
}

/// One conversation of the file: converted, or why not.
#[derive(Debug)]
pub(crate) struct Converted {
    /// Its position in the file's array, from 1.
    pub(crate) index: u64,
    pub(crate) result: Result<ImportedConversation>,
}

/// Reads `conversations.json` into conversations of `scope`, one result per
/// conversation of the file. The array is read element by element, each converted
/// before the next is parsed: a file is never held as one tree of JSON values (several
/// times its size).
///
/// # Errors
/// [`Error::InvalidInput`] naming `body` when the file is not a JSON array.
pub(crate) fn read(scope: &Scope, json: &[u8]) -> Result<Vec<Converted>> {
    let mut reader = serde_json::Deserializer::from_slice(json);
    let converted = serde::de::DeserializeSeed::deserialize(Conversions { scope }, &mut reader)
        .and_then(|converted| reader.end().map(|()| converted))
        .map_err(|e| Error::invalid("body", format!("not a ChatGPT conversations.json: {e}")))?;
    Ok(converted)
}

/// The visitor of the file's array: each element is parsed as a JSON value and
/// converted at once, so that a conversation that is not one is refused alone.
struct Conversions<'a> {
    scope: &'a Scope,
}

impl<'de> serde::de::DeserializeSeed<'de> for Conversions<'_> {
    type Value = Vec<Converted>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Conversions<'_> {
    type Value = Vec<Converted>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of conversations")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut items: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut converted = Vec::new();
        let mut index = 1;
        while let Some(item) = items.next_element::<Value>()? {
            converted.push(Converted {
                index,
                result: serde_json::from_value::<Export>(item)
                    .map_err(|e| Error::invalid("conversation", e.to_string()))
                    .and_then(|export| convert(self.scope, export)),
            });
            index += 1;
        }
        Ok(converted)
    }
}

fn seconds(value: Option<f64>) -> Option<DateTime<Utc>> {
    let millis = value.filter(|v| v.is_finite())? * 1000.0;
    DateTime::<Utc>::from_timestamp_millis(millis as i64)
}

/// A UUID from ChatGPT's id text, or one derived from it when it is not a UUID.
fn uuid_of(text: &str) -> uuid::Uuid {
    uuid::Uuid::try_parse(text).unwrap_or_else(|_| {
        let mut bytes = [0u8; 16];
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for (i, byte) in text.bytes().enumerate() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            bytes[i % 16] ^= (hash >> 24) as u8;
        }
        bytes[..8].copy_from_slice(&hash.to_be_bytes());
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    })
}

/// The text of a message and how many parts were left out.
fn text_of(content: Option<&Content>) -> (String, u64) {
    let Some(content) = content else {
        return (String::new(), 0);
    };
    let mut dropped = 0;
    let mut texts: Vec<String> = Vec::new();
    match content.content_type.as_deref() {
        Some("text" | "multimodal_text") | None => {
            for part in content.parts.iter().flatten() {
                match part {
                    Value::String(text) => texts.push(text.clone()),
                    _ => dropped += 1,
                }
            }
        }
        Some(_) => match &content.text {
            Some(text) => texts.push(text.clone()),
            None => dropped += 1,
        },
    }
    let text = texts
        .into_iter()
        .filter(|t| !t.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
        .replace('\0', "\u{FFFD}");
    (text, dropped)
}

fn convert(scope: &Scope, export: Export) -> Result<ImportedConversation> {
    let id_text = export
        .id
        .or(export.conversation_id)
        .ok_or_else(|| Error::invalid("id", "a conversation without id"))?;
    let id = ConversationId::from_uuid(uuid_of(&id_text));
    let created_at = seconds(export.create_time).unwrap_or_else(crate::backend::now);
    let model = export.default_model_slug;

    // The nodes that become messages, with their text; the others are skipped over.
    struct Kept {
        message: Message,
        at: DateTime<Utc>,
    }
    let mut kept: HashMap<String, Kept> = HashMap::new();
    let mut dropped_parts = 0;
    for (node_id, node) in &export.mapping {
        let Some(message) = &node.message else {
            continue;
        };
        let (content, dropped) = text_of(message.content.as_ref());
        dropped_parts += dropped;
        if content.trim().is_empty() {
            continue;
        }
        let mut metadata = Metadata::new();
        let mut chatgpt = serde_json::Map::new();
        let role = match message.author.role.as_str() {
            "user" => Role::User,
            "system" => Role::System,
            "assistant" => Role::Assistant,
            other => {
                chatgpt.insert("role".into(), json!(other));
                if let Some(name) = &message.author.name {
                    chatgpt.insert("name".into(), json!(name));
                }
                Role::Assistant
            }
        };
        if let Some(slug) = message
            .metadata
            .as_ref()
            .and_then(|m| m.get("model_slug"))
            .and_then(Value::as_str)
        {
            chatgpt.insert("model".into(), json!(slug));
        }
        if !chatgpt.is_empty() {
            metadata.insert("chatgpt".into(), Value::Object(chatgpt));
        }
        let message_id = MessageId::from_uuid(uuid_of(message.id.as_deref().unwrap_or(node_id)));
        kept.insert(
            node_id.clone(),
            Kept {
                at: seconds(message.create_time).unwrap_or(created_at),
                message: Message {
                    id: message_id,
                    conversation_id: id,
                    seq: 0,
                    parent_id: None,
                    siblings: Siblings::only(message_id),
                    role,
                    content,
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                    metadata,
                    created_at,
                },
            },
        );
    }
    // The nearest kept ancestor of a node (itself when kept).
    let nearest = |start: Option<&String>| -> Option<String> {
        let mut at = start.cloned();
        let mut steps = 0;
        while let Some(node) = at {
            if kept.contains_key(&node) {
                return Some(node);
            }
            steps += 1;
            if steps > export.mapping.len() {
                return None; // a cycle in a malformed file
            }
            at = export.mapping.get(&node).and_then(|n| n.parent.clone());
        }
        None
    };
    let parents: HashMap<String, Option<String>> = kept
        .keys()
        .map(|node| {
            let parent = export.mapping.get(node).and_then(|n| n.parent.as_ref());
            (node.clone(), nearest(parent))
        })
        .collect();
    let head_node = nearest(export.current_node.as_ref());
    // Seqs by creation time, a parent always before its children.
    let mut children: HashMap<Option<String>, Vec<String>> = HashMap::new();
    for (node, parent) in &parents {
        children
            .entry(parent.clone())
            .or_default()
            .push(node.clone());
    }
    let mut ready: BinaryHeap<Reverse<(DateTime<Utc>, String)>> = children
        .get(&None)
        .into_iter()
        .flatten()
        .map(|node| Reverse((kept[node].at, node.clone())))
        .collect();
    let mut messages = Vec::with_capacity(kept.len());
    // Each kept node's message id and seq, once placed.
    let mut placed: HashMap<String, (MessageId, u64)> = HashMap::new();
    let mut last_at = created_at;
    while let Some(Reverse((at, node))) = ready.pop() {
        let Some(entry) = kept.remove(&node) else {
            continue;
        };
        let mut message = entry.message;
        message.seq = messages.len() as u64 + 1;
        message.parent_id = parents
            .get(&node)
            .and_then(|p| p.as_ref())
            .and_then(|p| placed.get(p).map(|(id, _)| *id));
        message.created_at = at;
        last_at = last_at.max(at);
        placed.insert(node.clone(), (message.id, message.seq));
        messages.push(message);
        for child in children.get(&Some(node)).into_iter().flatten() {
            if let Some(entry) = kept.get(child) {
                ready.push(Reverse((entry.at, child.clone())));
            }
        }
    }
    // The head must be a leaf: when `current_node`'s own message was left out, its
    // nearest kept ancestor may have other children; the newest branch below it is
    // then shown, as ChatGPT shows the newest version.
    let mut head_node = head_node;
    while let Some(newest) = head_node
        .as_ref()
        .and_then(|node| children.get(&Some(node.clone())))
        .and_then(|below| {
            below
                .iter()
                .filter_map(|child| placed.get(child).map(|(_, seq)| (seq, child)))
                .max_by_key(|(seq, _)| **seq)
                .map(|(_, child)| child.clone())
        })
    {
        head_node = Some(newest);
    }
    let head_id = head_node
        .and_then(|node| placed.get(&node).map(|(id, _)| *id))
        .or_else(|| messages.last().map(|m| m.id));
    let updated_at = seconds(export.update_time)
        .unwrap_or(created_at)
        .max(last_at);
    let archived = export.is_archived.unwrap_or(false);
    let mut chatgpt = serde_json::Map::new();
    chatgpt.insert("id".into(), json!(id_text));
    if let Some(model) = model {
        chatgpt.insert("model".into(), json!(model));
    }
    if dropped_parts > 0 {
        chatgpt.insert("droppedParts".into(), json!(dropped_parts));
    }
    let mut metadata = Metadata::new();
    metadata.insert("chatgpt".into(), Value::Object(chatgpt));
    let title = export
        .title
        .map(|t| t.replace(|c: char| c.is_control(), " ").trim().to_owned())
        .filter(|t| !t.is_empty())
        .map(|t| t.chars().take(200).collect::<String>());
    Ok(ImportedConversation {
        conversation: Conversation {
            id,
            scope: scope.clone(),
            title_source: if title.is_some() {
                TitleSource::Generated
            } else {
                TitleSource::None
            },
            title,
            created_at,
            updated_at,
            message_count: messages.len() as u64,
            last_seq: messages.len() as u64,
            head_id,
            pinned: false,
            archived,
            archived_at: archived.then_some(updated_at),
            metadata,
            version: 1,
            active_run_id: None,
            usage: Usage::default(),
        },
        messages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    const ID: &str = "6f1c2a8e-4b7d-4a3e-9c51-0d2f3e4a5b6c";

    fn node(id: &str, parent: Option<&str>, message: Value) -> (String, Value) {
        (
            id.to_owned(),
            json!({"id": id, "message": message, "parent": parent, "children": []}),
        )
    }

    fn message(id: &str, role: &str, at: f64, content: Value) -> Value {
        json!({
            "id": id,
            "author": {"role": role, "name": null, "metadata": {}},
            "create_time": at,
            "update_time": null,
            "content": content,
            "status": "finished_successfully",
            "end_turn": true,
            "weight": 1.0,
            "metadata": {},
            "recipient": "all"
        })
    }

    fn text(text: &str) -> Value {
        json!({"content_type": "text", "parts": [text]})
    }

    /// One conversation as ChatGPT's export writes it: a hidden empty system
    /// message under the root, a question answered twice (a regenerate: two
    /// branches), a follow-up with an image and text, a code-interpreter result and
    /// the final answer, shown (`current_node`).
    fn conversation(current_node: &str) -> Value {
        let mut tool = message(
            "t1",
            "tool",
            1_700_000_050.0,
            json!({"content_type": "execution_output", "text": "42"}),
        );
        tool["author"]["name"] = json!("python");
        let mut last = message("a3", "assistant", 1_700_000_060.0, text("There are 42."));
        last["metadata"] = json!({"model_slug": "gpt-4o"});
        let mapping: serde_json::Map<String, Value> = [
            node("root", None, Value::Null),
            node(
                "sys",
                Some("root"),
                message("sys", "system", 1_700_000_000.0, text("")),
            ),
            node(
                "u1",
                Some("sys"),
                message("u1", "user", 1_700_000_010.0, text("How many orders per month?")),
            ),
            node(
                "a1",
                Some("u1"),
                message("a1", "assistant", 1_700_000_020.0, text("About 40.")),
            ),
            node(
                "a2",
                Some("u1"),
                message("a2", "assistant", 1_700_000_030.0, text("Let me count.")),
            ),
            node(
                "u2",
                Some("a2"),
                message(
                    "u2",
                    "user",
                    1_700_000_040.0,
                    json!({"content_type": "multimodal_text", "parts": [
                        {"content_type": "image_asset_pointer", "asset_pointer": "file-service://x"},
                        "And per week?"
                    ]}),
                ),
            ),
            node("t1", Some("u2"), tool),
            node("a3", Some("t1"), last),
            node(
                "a4",
                Some("t1"),
                message("a4", "assistant", 1_700_000_055.0, text("")),
            ),
        ]
        .into_iter()
        .collect();
        json!({
            "title": "Orders\nby month",
            "create_time": 1_700_000_000.123,
            "update_time": 1_700_000_070.5,
            "mapping": mapping,
            "moderation_results": [],
            "current_node": current_node,
            "plugin_ids": null,
            "conversation_id": ID,
            "conversation_template_id": null,
            "gizmo_id": null,
            "is_archived": false,
            "safe_urls": [],
            "default_model_slug": "gpt-4o",
            "id": ID
        })
    }

    fn scope() -> Scope {
        Scope::new("imported").unwrap()
    }

    fn read_one(conversation: Value) -> ImportedConversation {
        let file = serde_json::to_vec(&json!([conversation])).unwrap();
        let mut converted = read(&scope(), &file).unwrap();
        assert_eq!(converted.len(), 1);
        converted.remove(0).result.unwrap()
    }

    fn contents(imported: &ImportedConversation) -> Vec<(u64, &str, Role)> {
        imported
            .messages
            .iter()
            .map(|m| (m.seq, m.content.as_str(), m.role))
            .collect()
    }

    #[test]
    fn a_conversation_with_branches_becomes_a_tree_of_the_same_shape() {
        let imported = read_one(conversation("a3"));
        imported.check(&Limits::default()).unwrap();
        let c = &imported.conversation;
        assert_eq!(c.id.to_string(), ID);
        assert_eq!(c.title.as_deref(), Some("Orders by month"));
        assert_eq!(c.title_source, TitleSource::Generated);
        assert_eq!(c.created_at.timestamp_millis(), 1_700_000_000_123);
        assert_eq!(c.updated_at.timestamp_millis(), 1_700_000_070_500);
        assert_eq!(c.metadata["chatgpt"]["model"], "gpt-4o");
        assert_eq!(c.metadata["chatgpt"]["droppedParts"], 1);
        // The empty system message and the empty answer are left out; seqs follow
        // creation time.
        assert_eq!(
            contents(&imported),
            [
                (1, "How many orders per month?", Role::User),
                (2, "About 40.", Role::Assistant),
                (3, "Let me count.", Role::Assistant),
                (4, "And per week?", Role::User),
                (5, "42", Role::Assistant),
                (6, "There are 42.", Role::Assistant),
            ]
        );
        let m = &imported.messages;
        assert_eq!(m[0].parent_id, None);
        assert_eq!(m[1].parent_id, Some(m[0].id), "the first answer");
        assert_eq!(m[2].parent_id, Some(m[0].id), "the regenerated answer");
        assert_eq!(m[3].parent_id, Some(m[2].id));
        assert_eq!(m[4].metadata["chatgpt"]["role"], "tool");
        assert_eq!(m[4].metadata["chatgpt"]["name"], "python");
        assert_eq!(m[5].metadata["chatgpt"]["model"], "gpt-4o");
        assert_eq!(c.head_id, Some(m[5].id));
        assert_eq!((c.message_count, c.last_seq), (6, 6));
    }

    #[test]
    fn a_current_node_left_out_gives_the_newest_leaf_below_its_nearest_kept_ancestor() {
        // `a4`, the node shown, has no text; its parent `t1` is kept but is not a
        // leaf (it has `a3`): the head goes down to `a3`.
        let imported = read_one(conversation("a4"));
        imported.check(&Limits::default()).unwrap();
        assert_eq!(imported.conversation.head_id, Some(imported.messages[5].id));
        // `u1` shown (an interior node): the newest branch below it, down to a leaf.
        let imported = read_one(conversation("u1"));
        imported.check(&Limits::default()).unwrap();
        assert_eq!(imported.conversation.head_id, Some(imported.messages[5].id));
    }

    #[test]
    fn a_conversation_that_is_not_one_is_refused_alone_with_its_position() {
        let file = serde_json::to_vec(&json!([
            {"title": "broken", "mapping": 5},
            conversation("a3"),
            {"title": "no id", "mapping": {}},
        ]))
        .unwrap();
        let converted = read(&scope(), &file).unwrap();
        let outcomes: Vec<(u64, Option<String>)> = converted
            .iter()
            .map(|c| (c.index, c.result.as_ref().err().map(|e| e.to_string())))
            .collect();
        assert_eq!(outcomes.len(), 3);
        assert_eq!(outcomes[1], (2, None));
        assert!(matches!(
            &converted[0].result,
            Err(Error::InvalidInput { field, .. }) if field == "conversation"
        ));
        assert!(matches!(
            &converted[2].result,
            Err(Error::InvalidInput { field, .. }) if field == "id"
        ));
    }

    #[test]
    fn a_file_that_is_not_an_array_of_conversations_is_invalid_input_naming_the_body() {
        for file in [
            &b"{\"mapping\": {}}"[..],
            b"[",
            b"[] trailing",
            b"",
            b"\xff\xfe",
        ] {
            let error = read(&scope(), file).unwrap_err();
            assert!(
                matches!(&error, Error::InvalidInput { field, .. } if field == "body"),
                "{file:?}: {error:?}"
            );
        }
        assert!(read(&scope(), b" [ ] ").unwrap().is_empty());
    }
}
