//! Model output made into text every store accepts.
//!
//! Two things in what servers send would otherwise fail a whole reply:
//!
//! - **NUL** (U+0000): JSON may carry it (`\u0000`), but PostgreSQL's `text` and
//!   `jsonb` cannot hold it, so core refuses it in every message. It is replaced by
//!   U+FFFD (the replacement character) in content, tool-call arguments (strings and
//!   keys) and everywhere else a reply's text goes.
//! - **UTF-16 surrogate escapes split across chunks**: a server that escapes
//!   non-ASCII characters (`ensure_ascii`) may send an emoji as `"\ud83d"` at the end
//!   of one chunk and `"\ude00"` at the start of the next. serde_json refuses such a
//!   lone surrogate in a `String`, so text is read as bytes ([`WireText`], WTF-8,
//!   which keeps it), and [`TextDecoder`] joins the halves into the real character;
//!   a half that never finds its pair becomes U+FFFD.
//!
//! Hand-written: no well-kept crate decodes WTF-8 incrementally across chunks.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::Value;

/// What replaces a character no store accepts, or a broken one.
pub(crate) const REPLACEMENT: char = '\u{FFFD}';

/// A JSON string as sent, in WTF-8: UTF-8, except that a lone UTF-16 surrogate
/// escape is kept as its three-byte encoding instead of failing the parse.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct WireText(pub(crate) Vec<u8>);

impl WireText {
    /// The whole text, surrogate pairs joined and lone halves replaced.
    pub(crate) fn into_text(self) -> String {
        let mut decoder = TextDecoder::default();
        let mut text = String::with_capacity(self.0.len());
        decoder.push(&self.0, &mut text);
        decoder.finish(&mut text);
        text
    }
}

impl<'de> Deserialize<'de> for WireText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WireTextVisitor;

        impl Visitor<'_> for WireTextVisitor {
            type Value = WireText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<WireText, E> {
                Ok(WireText(text.as_bytes().to_vec()))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<WireText, E> {
                Ok(WireText(text.into_bytes()))
            }

            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<WireText, E> {
                Ok(WireText(bytes.to_vec()))
            }

            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<WireText, E> {
                Ok(WireText(bytes))
            }
        }

        // serde_json reads a string asked for as bytes without validating its
        // surrogate escapes, and gives it as WTF-8.
        deserializer.deserialize_byte_buf(WireTextVisitor)
    }
}

/// Decodes WTF-8 pieces of one text (the deltas of a reply) into clean text,
/// holding a high surrogate that ends one piece until the next shows its pair.
#[derive(Debug, Default)]
pub(crate) struct TextDecoder {
    pending_high: Option<u16>,
}

impl TextDecoder {
    /// Appends the text of `bytes` to `out`.
    pub(crate) fn push(&mut self, bytes: &[u8], out: &mut String) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let (valid, after) = match std::str::from_utf8(rest) {
                Ok(text) => (text, &[][..]),
                Err(error) => {
                    let (valid, after) = rest.split_at(error.valid_up_to());
                    (std::str::from_utf8(valid).unwrap_or_default(), after)
                }
            };
            self.text(valid, out);
            rest = match after {
                [] => after,
                // A surrogate as WTF-8 encodes it: ED A0..=BF 80..=BF.
                [0xED, b1 @ 0xA0..=0xBF, b2 @ 0x80..=0xBF, tail @ ..] => {
                    let unit = 0xD000 | (u16::from(b1 & 0x3F) << 6) | u16::from(b2 & 0x3F);
                    self.surrogate(unit, out);
                    tail
                }
                _ => {
                    self.flush(out);
                    out.push(REPLACEMENT);
                    let bad = std::str::from_utf8(after)
                        .err()
                        .and_then(|error| error.error_len())
                        .unwrap_or(after.len());
                    &after[bad..]
                }
            };
        }
    }

    /// Ends the text: a high surrogate still waiting for its pair is replaced.
    pub(crate) fn finish(&mut self, out: &mut String) {
        self.flush(out);
    }

    fn text(&mut self, text: &str, out: &mut String) {
        if text.is_empty() {
            return;
        }
        self.flush(out);
        out.extend(text.chars().map(storable));
    }

    fn surrogate(&mut self, unit: u16, out: &mut String) {
        if (0xD800..=0xDBFF).contains(&unit) {
            self.flush(out);
            self.pending_high = Some(unit);
        } else if let Some(high) = self.pending_high.take() {
            let code = 0x1_0000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(unit) - 0xDC00);
            out.push(char::from_u32(code).unwrap_or(REPLACEMENT));
        } else {
            out.push(REPLACEMENT);
        }
    }

    fn flush(&mut self, out: &mut String) {
        if self.pending_high.take().is_some() {
            out.push(REPLACEMENT);
        }
    }
}

/// `c`, or U+FFFD for NUL.
fn storable(c: char) -> char {
    if c == '\0' { REPLACEMENT } else { c }
}

/// `text` with NUL replaced.
pub(crate) fn storable_text(text: &str) -> String {
    text.chars().map(storable).collect()
}

/// A tool call's id or name with control characters (which core refuses there)
/// replaced.
pub(crate) fn storable_name(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { REPLACEMENT } else { c })
        .collect()
}

/// Replaces NUL in every string and key of `value` (arguments that escaped it as
/// `\u0000` inside their own JSON).
pub(crate) fn make_storable(value: &mut Value) {
    match value {
        Value::String(text) if text.contains('\0') => *text = storable_text(text),
        Value::Array(items) => items.iter_mut().for_each(make_storable),
        Value::Object(map) if map.keys().any(|key| key.contains('\0')) => {
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                make_storable(&mut item);
                map.insert(storable_text(&key), item);
            }
        }
        Value::Object(map) => map.values_mut().for_each(make_storable),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wire(json: &str) -> WireText {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn lone_surrogates_are_read_and_joined_across_pieces() {
        let (high, low) = (wire(r#""a \ud83d""#), wire(r#""\ude00 b""#));
        let mut decoder = TextDecoder::default();
        let mut first = String::new();
        decoder.push(&high.0, &mut first);
        assert_eq!(first, "a ", "the half is held back");
        let mut second = String::new();
        decoder.push(&low.0, &mut second);
        decoder.finish(&mut second);
        assert_eq!(second, "\u{1F600} b");
    }

    #[test]
    fn halves_without_a_pair_become_replacement_characters() {
        assert_eq!(wire(r#""x\ud83dy""#).into_text(), "x\u{FFFD}y");
        assert_eq!(wire(r#""\ude00x""#).into_text(), "\u{FFFD}x");
        assert_eq!(
            wire(r#""\ud83d\ud83d\ude00""#).into_text(),
            "\u{FFFD}\u{1F600}"
        );
        assert_eq!(wire(r#""end \ud83d""#).into_text(), "end \u{FFFD}");
        // A pair inside one string is the character, as serde_json reads it.
        assert_eq!(wire(r#""\ud83d\ude00 é""#).into_text(), "\u{1F600} é");
        let mut decoder = TextDecoder::default();
        let mut out = String::new();
        decoder.push(&wire(r#""\ud83d""#).0, &mut out);
        decoder.push(b"plain", &mut out);
        assert_eq!(out, "\u{FFFD}plain");
        let mut broken = String::new();
        TextDecoder::default().push(b"a\xFFb", &mut broken);
        assert_eq!(broken, "a\u{FFFD}b");
    }

    #[test]
    fn nul_is_replaced_everywhere() {
        assert_eq!(wire(r#""a\u0000b""#).into_text(), "a\u{FFFD}b");
        let mut value = json!({"q": "x\u{0}y", "k\u{0}": ["\u{0}"], "n": 1});
        make_storable(&mut value);
        assert_eq!(
            value,
            json!({"q": "x\u{FFFD}y", "k\u{FFFD}": ["\u{FFFD}"], "n": 1})
        );
        assert_eq!(storable_name("run\u{0}sql\n"), "run\u{FFFD}sql\u{FFFD}");
    }
}
