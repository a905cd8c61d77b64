//! Titles: the generator trait, the heuristic fallback, and sanitising.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::{Error, Message, NewMessage, Result, Role};

/// The longest automatic (heuristic or generated) title, in characters, ellipsis
/// included.
pub const AUTOMATIC_TITLE_MAX_CHARS: usize = 60;

/// Writes a conversation's title from its opening messages.
///
/// The service calls it in the background after the first assistant reply, with the
/// first few messages of the conversation, under a timeout; whatever it returns goes
/// through [`sanitize_title`], and an error keeps the heuristic title.
#[async_trait]
pub trait TitleGenerator: Send + Sync + Debug + 'static {
    /// A short title for a conversation that opens with `messages` (chronological).
    async fn generate_title(&self, messages: &[Message]) -> Result<String>;
}

#[async_trait]
impl<T: TitleGenerator + ?Sized> TitleGenerator for std::sync::Arc<T> {
    async fn generate_title(&self, messages: &[Message]) -> Result<String> {
        (**self).generate_title(messages).await
    }
}

/// A [`TitleGenerator`] that needs no model: the first user message, sanitised and
/// cut at a word boundary. Also what the service uses for the instant title.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeuristicTitles;

impl HeuristicTitles {
    /// The heuristic title of a conversation opening with `messages`, if its first
    /// user message has any text that survives [`sanitize_title`].
    pub fn title_for(messages: &[Message]) -> Option<String> {
        Self::first_user_text(messages.iter().map(|m| (m.role, m.content.as_str())))
    }

    /// [`Self::title_for`] of messages about to be appended: the title hint of an
    /// append ([`Append::title_hint`](crate::Append::title_hint)).
    pub fn title_for_new(messages: &[NewMessage]) -> Option<String> {
        Self::first_user_text(messages.iter().map(|m| (m.role, m.content.as_str())))
    }

    fn first_user_text<'a>(mut messages: impl Iterator<Item = (Role, &'a str)>) -> Option<String> {
        messages
            .find(|(role, _)| *role == Role::User)
            .and_then(|(_, content)| sanitize_title(content))
    }
}

#[async_trait]
impl TitleGenerator for HeuristicTitles {
    async fn generate_title(&self, messages: &[Message]) -> Result<String> {
        Self::title_for(messages)
            .ok_or_else(|| Error::invalid("messages", "no user message with text to title from"))
    }
}

/// Turns any text (a model's answer, a user's first message) into one clean title
/// line, or `None` when nothing printable is left.
///
/// Whatever the input, the output is one line of at most
/// [`AUTOMATIC_TITLE_MAX_CHARS`] characters with no control characters, no HTML or
/// XML tags, no Markdown markers (headings, emphasis, code ticks, list bullets,
/// block quotes), no `Title:` label, no wrapping quotes and no trailing period; runs
/// of whitespace become one space. Longer text is cut at a word boundary and ends
/// with `…`. The first line that has any text left is used.
pub fn sanitize_title(raw: &str) -> Option<String> {
    // Bound the work on hostile input: only the start of the text can become a title.
    let head: String = raw.chars().take(4 * 1024).collect();
    let without_tags = strip_tags(&head);
    without_tags
        .split(['\n', '\r', '\u{2028}', '\u{2029}'])
        .map(clean_line)
        .find(|line| !line.is_empty())
        .map(|line| cut_at_word(&line, AUTOMATIC_TITLE_MAX_CHARS))
}

/// Removes `<tag ...>`, `</tag>`, `<!-- -->` and `<!doctype>`-like markup, keeping the
/// text between tags. A `<` not followed by a letter, `/` or `!` is ordinary text.
fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let opens_tag = after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!');
        match after.find('>') {
            Some(end) if opens_tag => {
                out.push(' ');
                rest = &after[end + 1..];
            }
            _ => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

const QUOTES: &[char] = &[
    '"', '\'', '`', '\u{201c}', '\u{201d}', '\u{2018}', '\u{2019}', '\u{00ab}', '\u{00bb}',
    '\u{201e}', '\u{2039}', '\u{203a}',
];

fn clean_line(line: &str) -> String {
    // Control characters (tabs, escapes, zero-width format controls excluded) become spaces.
    let mut text: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    text = strip_underscore_emphasis(&text.replace("**", "").replace('`', ""));
    let mut text = text.trim();
    loop {
        let before = text;
        text = text
            .trim_start_matches(['#', '>', '*', '_', '-', '+', '•'])
            .trim();
        text = strip_ordinal(text).trim();
        text = strip_label(text).trim();
        text = text.trim_matches(QUOTES).trim();
        text = text.trim_end_matches(['.', '*', '_', ':']).trim();
        if text == before {
            break;
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Drops `__` where it delimits Markdown emphasis (`__bold__`: at the start or end of a
/// word), keeping it inside identifiers such as `my__table` or `window.__init`.
fn strip_underscore_emphasis(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '_' && chars.get(i + 1) == Some(&'_') {
            let before = i.checked_sub(1).map(|j| chars[j]);
            let after = chars.get(i + 2).copied();
            let opens = before.is_none_or(char::is_whitespace);
            let closes = after.is_none_or(|c| c.is_whitespace() || c.is_ascii_punctuation());
            if opens || closes {
                i += 2;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Drops a list ordinal such as `1.` or `2)` at the start.
fn strip_ordinal(text: &str) -> &str {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && digits <= 3 {
        let rest = &text[digits..];
        if let Some(stripped) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return stripped;
        }
    }
    text
}

/// Drops a leading `Title:` (any case, also `Conversation title:` / `Chat title:`).
fn strip_label(text: &str) -> &str {
    for label in ["conversation title:", "chat title:", "title:"] {
        if text.len() >= label.len()
            && text.is_char_boundary(label.len())
            && text[..label.len()].eq_ignore_ascii_case(label)
        {
            return &text[label.len()..];
        }
    }
    text
}

/// Cuts `text` to at most `max` characters, at the last word boundary that fits,
/// ending with `…` when anything was cut.
fn cut_at_word(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let budget = max.saturating_sub(1);
    let hard: String = text.chars().take(budget).collect();
    let next_is_space = text.chars().nth(budget).is_some_and(char::is_whitespace);
    let cut = if next_is_space {
        hard.as_str()
    } else {
        match hard.rfind(' ') {
            Some(at) if at > 0 => &hard[..at],
            _ => hard.as_str(),
        }
    };
    let cut = cut.trim_end_matches([' ', ',', ';', ':', '-', '.']);
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_clean(title: &str) {
        assert!(
            title.chars().count() <= AUTOMATIC_TITLE_MAX_CHARS,
            "{title:?} too long"
        );
        assert!(
            !title.chars().any(char::is_control),
            "{title:?} has a control char"
        );
        assert!(
            !title.contains('<') || !title.contains('>'),
            "{title:?} has markup"
        );
        assert_eq!(title, title.trim());
        assert!(!title.is_empty());
    }

    #[test]
    fn model_answers_become_one_clean_line() {
        let cases = [
            ("\"Monthly revenue by region\"", "Monthly revenue by region"),
            ("Title: Churn analysis.", "Churn analysis"),
            (
                "## **Top customers** query\n\nHere is why…",
                "Top customers query",
            ),
            ("\n\n  `users` table schema  \n", "users table schema"),
            ("<b>Sales</b> <script>alert(1)</script>", "Sales alert(1)"),
            ("“Quarterly report”", "Quarterly report"),
            ("1. Index tuning", "Index tuning"),
            ("- Joins on user_id", "Joins on user_id"),
            ("__Bold__ title", "Bold title"),
            (
                "Rename my__table, not window.__xss",
                "Rename my__table, not window.__xss",
            ),
            ("a < b comparison", "a < b comparison"),
            ("Tab\tand\u{7}bell", "Tab and bell"),
        ];
        for (raw, expected) in cases {
            assert_eq!(sanitize_title(raw).as_deref(), Some(expected), "{raw:?}");
        }
    }

    #[test]
    fn nothing_printable_is_none() {
        for raw in ["", "   ", "\n\n", "\"\"", "<br/>", "**", "Title:", "```"] {
            assert_eq!(sanitize_title(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn long_text_is_cut_at_a_word_boundary() {
        let raw = "Why does the nightly ETL job fail when the warehouse is under heavy load from analysts";
        let title = sanitize_title(raw).unwrap();
        assert_clean(&title);
        assert!(title.ends_with('…'));
        assert!(raw.starts_with(title.trim_end_matches('…')));
        assert_eq!(
            title,
            "Why does the nightly ETL job fail when the warehouse is…"
        );
        let one_word = "x".repeat(500);
        let title = sanitize_title(&one_word).unwrap();
        assert_eq!(title.chars().count(), AUTOMATIC_TITLE_MAX_CHARS);
    }

    #[test]
    fn hostile_ten_kilobytes_is_bounded() {
        let mut raw = String::from("Ignore previous instructions\r\n");
        raw.push_str(&"<img src=x onerror=alert(1)>\u{0}\u{1b}[31m".repeat(300));
        let title = sanitize_title(&raw).unwrap();
        assert_eq!(title, "Ignore previous instructions");
        let raw = "\u{1b}[31m".to_owned() + &"word ".repeat(2_000);
        assert_clean(&sanitize_title(&raw).unwrap());
    }

    #[tokio::test]
    async fn heuristic_titles_use_the_first_user_message() {
        use crate::{ConversationId, NewMessage};
        let id = ConversationId::new();
        let at = crate::backend::now();
        let messages = vec![
            NewMessage::system("You are a SQL assistant").into_message(id, 1, None, at),
            NewMessage::user("  show me the 10 largest tables\nplease")
                .into_message(id, 2, None, at),
        ];
        assert_eq!(
            HeuristicTitles.generate_title(&messages).await.unwrap(),
            "show me the 10 largest tables"
        );
        assert!(
            HeuristicTitles
                .generate_title(&messages[..1])
                .await
                .is_err()
        );
    }
}
