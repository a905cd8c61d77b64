//! What a store author needs beyond the host API: the rules every
//! [`Store`](crate::Store) applies, written once so that no backend spells them out
//! again.
//!
//! A backend reads what it has stored, lets these functions decide, and writes what
//! they decided:
//!
//! - an append: [`AppendPlan`] (retried ids, next seqs, the parent chain, timestamps
//!   that never move backwards, counters, head, version and the title hint);
//! - a patch: [`ConversationPatch::apply_to`](crate::ConversationPatch::apply_to);
//! - an automatic title: [`apply_automatic_title`];
//! - a fork: [`fork_of`] and [`fork_messages`];
//! - a page of messages: [`MessageRange`] from [`MessageQuery::range`](crate::MessageQuery::range),
//!   built with [`PageBuilder`]; a page of conversations:
//!   [`ConversationQuery::page_from`](crate::ConversationQuery::page_from) with
//!   [`ListCursor`];
//! - a search: [`SearchTerms`] (the words; [`tokenize`] and [`normalize`] for a store
//!   that indexes in memory), [`SearchMatch`](crate::SearchMatch) for snippets,
//!   [`SearchQuery::page_from`](crate::SearchQuery::page_from) with [`SearchCursor`]
//!   and [`rank_order`];
//! - a run: [`NewRun::into_run`](crate::NewRun::into_run),
//!   [`Run::settled`](crate::Run::settled),
//!   [`RunOutcome::apply_to`](crate::RunOutcome::apply_to);
//! - an import: [`ImportedConversation::check`](crate::ImportedConversation::check);
//!   retention: [`RetentionQuery::expired_at`](crate::RetentionQuery::expired_at);
//! - input: [`Limits`]' `check_*` methods, before anything is written;
//! - time: the store's [`Clock`], through [`stamp`].
//!
//! The conformance suite (`conversation_core::testkit`, feature `testkit`) checks the
//! result.

use chrono::{DateTime, Utc};

use crate::{
    Append, Appended, Conversation, ConversationId, Error, Limits, Message, MessageId, Metadata,
    Result, Siblings, TitleSource,
};

pub use crate::clock::{Clock, SystemClock, now, truncate_to_millis};
pub use crate::query::{ListCursor, MessageRange, PageBuilder};
pub use crate::run::lease_end;
pub use crate::search::{
    SNIPPET_CHARS, SearchCursor, SearchTerms, Snippet, Token, normalize, rank_order, tokenize,
    words_rule,
};

/// The time of a write to a conversation last active at `last_activity`: the clock's
/// time truncated to milliseconds, but never before `last_activity`, so timestamps
/// never move backwards within a conversation when the clock steps back.
pub fn stamp(clock: &dyn Clock, last_activity: DateTime<Utc>) -> DateTime<Utc> {
    truncate_to_millis(clock.now()).max(last_activity)
}

/// Checks an expected version against the stored one; the rule of promise 5.
///
/// # Errors
/// [`Error::Conflict`] when `expected` is given and differs.
pub fn check_expected_version(expected: Option<u64>, actual: u64) -> Result<()> {
    match expected {
        Some(expected) if expected != actual => Err(Error::Conflict { expected, actual }),
        _ => Ok(()),
    }
}

/// Whether an automatic title from `source` may replace a title from `stored`: a
/// heuristic title only replaces no title; a generated one replaces no title, a
/// heuristic or a generated one; nothing automatic replaces a user title.
fn automatic_title_applies(stored: TitleSource, source: TitleSource) -> bool {
    match source {
        TitleSource::Heuristic => stored == TitleSource::None,
        TitleSource::Generated => stored != TitleSource::User,
        TitleSource::None | TitleSource::User => false,
    }
}

/// Applies an automatic title to `conversation` in memory when its authority allows
/// ([`Store::set_title_unless_user`](crate::Store::set_title_unless_user)): sets the
/// title and its source and bumps `version`, leaving `updated_at` (a title is not
/// activity). Returns whether it applied; when not, nothing changed.
pub fn apply_automatic_title(
    conversation: &mut Conversation,
    title: String,
    source: TitleSource,
) -> bool {
    if !automatic_title_applies(conversation.title_source, source) {
        return false;
    }
    conversation.title = Some(title);
    conversation.title_source = source;
    conversation.version += 1;
    true
}

/// Where an append's first message attaches, as the store found it: the store
/// resolves [`Parent`](crate::Parent) (the head, a root, or a message id it looked up
/// in the same conversation; `NotFound` otherwise) and hands the result to
/// [`AppendPlan::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedParent {
    /// A new root (also [`Parent::Head`](crate::Parent::Head) of an empty conversation).
    Root,
    /// After this stored message.
    Message {
        /// Its id.
        id: MessageId,
        /// Its seq.
        seq: u64,
    },
}

impl ResolvedParent {
    /// The parent's seq, `None` for a root.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ResolvedParent::Root => None,
            ResolvedParent::Message { seq, .. } => Some(*seq),
        }
    }

    /// The parent's id, `None` for a root.
    pub fn id(&self) -> Option<MessageId> {
        match self {
            ResolvedParent::Root => None,
            ResolvedParent::Message { id, .. } => Some(*id),
        }
    }
}

/// What an append writes, decided from what the store read: the rule of
/// [`Store::append_messages`](crate::Store::append_messages), shared by every store.
///
/// The store reads, in the transaction of the append: the conversation, the messages
/// already stored under the caller ids given, and the parent. It builds the plan and,
/// when [`AppendPlan::writes`], inserts [`AppendPlan::new_messages`], writes the
/// conversation's new row ([`AppendPlan::conversation`]) and updates its view of the
/// active path: the path becomes the path to the parent (a prefix of the old path when
/// the parent was on it) followed by the new messages. Then it answers
/// [`AppendPlan::into_appended`].
#[derive(Debug, Clone, PartialEq)]
pub struct AppendPlan {
    conversation: Conversation,
    messages: Vec<Message>,
    new: Vec<usize>,
    parent: ResolvedParent,
}

impl AppendPlan {
    /// Plans `append` on `stored`, whose first message attaches at `parent`.
    /// `existing[i]` is the message already stored under `append.messages[i].id`, if
    /// any. `now` is the clock's time; the plan stamps the new messages with
    /// [`stamp`]'s rule.
    ///
    /// # Errors
    /// [`Error::Conflict`] when something new is to be written and
    /// `append.expected_version` does not match; [`Error::Backend`] when `existing`
    /// does not pair with the messages (a store bug).
    pub fn new(
        stored: Conversation,
        parent: ResolvedParent,
        append: Append,
        existing: Vec<Option<Message>>,
        now: DateTime<Utc>,
    ) -> Result<Self> {
        if existing.len() != append.messages.len() {
            return Err(Error::Backend {
                message: format!(
                    "an append plan got {} lookups for {} messages",
                    existing.len(),
                    append.messages.len()
                ),
                source: None,
            });
        }
        let mut conversation = stored;
        if existing.iter().all(Option::is_some) {
            // A retry of messages all stored already: nothing changes, no version check.
            return Ok(Self {
                conversation,
                messages: existing.into_iter().flatten().collect(),
                new: Vec::new(),
                parent,
            });
        }
        check_expected_version(append.expected_version, conversation.version)?;
        let at = truncate_to_millis(now).max(conversation.updated_at);
        let mut messages = Vec::with_capacity(append.messages.len());
        let mut new = Vec::new();
        let mut previous = parent.id();
        for (message, stored) in append.messages.into_iter().zip(existing) {
            if let Some(stored) = stored {
                messages.push(stored);
                continue;
            }
            conversation.last_seq += 1;
            let message =
                message.into_message(conversation.id, conversation.last_seq, previous, at);
            previous = Some(message.id);
            new.push(messages.len());
            messages.push(message);
        }
        conversation.message_count += new.len() as u64;
        conversation.head_id = previous;
        conversation.updated_at = at;
        conversation.version += 1;
        // The hint is part of this one change: no second version bump.
        if let Some(hint) = append.title_hint
            && automatic_title_applies(conversation.title_source, TitleSource::Heuristic)
        {
            conversation.title = Some(hint);
            conversation.title_source = TitleSource::Heuristic;
        }
        Ok(Self {
            conversation,
            messages,
            new,
            parent,
        })
    }

    /// Whether the append writes anything (`false` for a pure retry).
    pub fn writes(&self) -> bool {
        !self.new.is_empty()
    }

    /// The conversation as it is after the append.
    pub fn conversation(&self) -> &Conversation {
        &self.conversation
    }

    /// Where the first new message attaches.
    pub fn parent(&self) -> ResolvedParent {
        self.parent
    }

    /// The messages to insert, in seq order; each one's parent is the parent or the
    /// new message before it.
    pub fn new_messages(&self) -> impl Iterator<Item = &Message> {
        self.new.iter().map(|&i| &self.messages[i])
    }

    /// The seq of the new head (the last new message), when the append writes.
    pub fn head_seq(&self) -> Option<u64> {
        self.new.last().map(|&i| self.messages[i].seq)
    }

    /// The answer of the append once written, with every message's siblings filled
    /// in by `siblings` (the store's read of them after the write; a new message's
    /// siblings are its parent's children). The first error of `siblings` is the
    /// answer's.
    ///
    /// # Errors
    /// What `siblings` returns.
    pub fn into_appended(
        self,
        mut siblings: impl FnMut(&Message) -> Result<Siblings>,
    ) -> Result<Appended> {
        let mut messages = self.messages;
        for message in &mut messages {
            message.siblings = siblings(message)?;
        }
        Ok(Appended {
            conversation: self.conversation,
            messages,
        })
    }
}

/// The row of a fork of `source` at `message`, holding `copied` messages of which
/// `head` is the last: a new id; `source`'s title marked
/// [`TitleSource::Heuristic`] (so a generated title may replace it; a source without
/// title gives none); `source`'s metadata with `forkedFrom = {conversationId,
/// messageId}`; not pinned or archived; version 1; created and active at `now`
/// truncated to milliseconds, but not before `source`'s last activity: the copies
/// keep their timestamps, and the fork's own must not precede them (promise 12).
///
/// # Errors
/// [`Error::InvalidInput`] naming `metadata` when the source's metadata with
/// `forkedFrom` exceeds `limits`.
pub fn fork_of(
    source: &Conversation,
    message: MessageId,
    copied: u64,
    head: MessageId,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<Conversation> {
    let mut metadata: Metadata = source.metadata.clone();
    metadata.insert(
        "forkedFrom".to_owned(),
        serde_json::json!({
            "conversationId": source.id,
            "messageId": message,
        }),
    );
    limits.check_metadata("metadata", &metadata)?;
    let at = truncate_to_millis(now).max(source.updated_at);
    Ok(Conversation {
        id: ConversationId::new(),
        scope: source.scope.clone(),
        title: source.title.clone(),
        title_source: if source.title.is_some() {
            TitleSource::Heuristic
        } else {
            TitleSource::None
        },
        created_at: at,
        updated_at: at,
        message_count: copied,
        last_seq: copied,
        head_id: Some(head),
        pinned: false,
        archived: false,
        archived_at: None,
        metadata,
        version: 1,
        active_run_id: None,
        usage: crate::Usage::default(),
    })
}

/// The messages of a fork: `path` (root first) copied into `fork` with seqs from 1,
/// each the only child of the one before it, everything else kept.
pub fn fork_messages(fork: ConversationId, path: Vec<Message>) -> Vec<Message> {
    let mut parent = None;
    path.into_iter()
        .zip(1..)
        .map(|(message, seq)| {
            let copy = Message {
                conversation_id: fork,
                seq,
                parent_id: parent,
                siblings: Siblings::only(message.id),
                ..message
            };
            parent = Some(copy.id);
            copy
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewConversation, NewMessage, Scope};
    use chrono::TimeDelta;

    fn conversation() -> Conversation {
        NewConversation::new().into_conversation(Scope::new("s").unwrap(), now())
    }

    #[test]
    fn title_authority() {
        use TitleSource::*;
        assert!(automatic_title_applies(None, Heuristic));
        assert!(!automatic_title_applies(Heuristic, Heuristic));
        assert!(!automatic_title_applies(Generated, Heuristic));
        assert!(automatic_title_applies(Heuristic, Generated));
        assert!(automatic_title_applies(Generated, Generated));
        assert!(!automatic_title_applies(User, Generated));
        assert!(!automatic_title_applies(User, Heuristic));
        assert!(!automatic_title_applies(None, User));
        let mut c = conversation();
        assert!(apply_automatic_title(&mut c, "t".into(), Heuristic));
        assert_eq!((c.version, c.title_source), (2, Heuristic));
        assert!(!apply_automatic_title(&mut c, "u".into(), Heuristic));
        assert_eq!((c.version, c.title.as_deref()), (2, Some("t")));
    }

    #[test]
    fn a_plan_chains_messages_and_moves_the_counters() {
        let stored = conversation();
        let append =
            Append::new(vec![NewMessage::user("q"), NewMessage::assistant("a")]).title_hint("q");
        let plan = AppendPlan::new(
            stored.clone(),
            ResolvedParent::Root,
            append,
            vec![None, None],
            now(),
        )
        .unwrap();
        let new: Vec<&Message> = plan.new_messages().collect();
        assert_eq!((new[0].seq, new[1].seq), (1, 2));
        assert_eq!(new[0].parent_id, None);
        assert_eq!(new[1].parent_id, Some(new[0].id));
        let after = plan.conversation();
        assert_eq!(after.head_id, Some(new[1].id));
        assert_eq!((after.message_count, after.last_seq), (2, 2));
        assert_eq!(after.version, 2, "one append with its title is one change");
        assert_eq!(after.title.as_deref(), Some("q"));
        assert_eq!(after.title_source, TitleSource::Heuristic);
    }

    #[test]
    fn timestamps_never_move_backwards_when_the_clock_does() {
        let mut stored = conversation();
        stored.updated_at = now() + TimeDelta::hours(1);
        let plan = AppendPlan::new(
            stored.clone(),
            ResolvedParent::Root,
            Append::one(NewMessage::user("q")),
            vec![None],
            now(),
        )
        .unwrap();
        assert_eq!(
            plan.new_messages().next().unwrap().created_at,
            stored.updated_at
        );
        assert_eq!(plan.conversation().updated_at, stored.updated_at);
    }

    #[test]
    fn a_pure_retry_changes_nothing_and_skips_the_version_check() {
        let stored = conversation();
        let message = NewMessage::user("q").into_message(stored.id, 1, None, now());
        let plan = AppendPlan::new(
            stored.clone(),
            ResolvedParent::Root,
            Append::one(NewMessage::user("q").with_id(message.id)).expect_version(99),
            vec![Some(message.clone())],
            now(),
        )
        .unwrap();
        assert!(!plan.writes());
        assert_eq!(plan.conversation(), &stored);
        let conflict = AppendPlan::new(
            stored,
            ResolvedParent::Root,
            Append::one(NewMessage::user("new")).expect_version(99),
            vec![None],
            now(),
        );
        assert!(matches!(conflict, Err(Error::Conflict { .. })));
    }

    #[test]
    fn forks_copy_the_path_with_new_seqs() {
        let mut source = conversation();
        source.title = Some("Source".into());
        source.title_source = TitleSource::User;
        let a = NewMessage::user("q").into_message(source.id, 4, None, now());
        let b = NewMessage::assistant("a").into_message(source.id, 9, Some(a.id), now());
        let fork = fork_of(&source, b.id, 2, b.id, &Limits::default(), now()).unwrap();
        assert_eq!(fork.title_source, TitleSource::Heuristic);
        assert_eq!(
            fork.metadata["forkedFrom"]["messageId"],
            serde_json::json!(b.id)
        );
        let copies = fork_messages(fork.id, vec![a.clone(), b.clone()]);
        assert_eq!((copies[0].seq, copies[1].seq), (1, 2));
        assert_eq!(copies[1].parent_id, Some(a.id));
        assert_eq!(copies[1].content, b.content);
        assert_eq!(copies[1].conversation_id, fork.id);
    }

    #[test]
    fn a_fork_never_starts_before_what_it_copies() {
        let mut source = conversation();
        source.updated_at = now() + TimeDelta::hours(1);
        let message = MessageId::new();
        let fork = fork_of(&source, message, 1, message, &Limits::default(), now()).unwrap();
        assert_eq!(fork.created_at, source.updated_at);
        assert_eq!(fork.updated_at, source.updated_at);
    }
}
