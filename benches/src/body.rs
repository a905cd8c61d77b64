//! The messages of the workload: user and assistant turns alternating, bodies of
//! varied length (100 to 900 bytes, about 500 on average), deterministic so that every
//! store and the raw baseline write the same text.

use std::sync::OnceLock;

use conversation_core::{NewMessage, Role};

/// The shortest body, in bytes.
pub const MIN_BODY_BYTES: usize = 100;
/// The longest body, in bytes.
pub const MAX_BODY_BYTES: usize = 900;

const WORDS: &[&str] = &[
    "which",
    "tables",
    "grew",
    "fastest",
    "last",
    "quarter",
    "orders",
    "shipped",
    "late",
    "join",
    "customers",
    "on",
    "id",
    "where",
    "region",
    "is",
    "north",
    "group",
    "by",
    "month",
    "count",
    "rows",
    "index",
    "scan",
    "the",
    "query",
    "plan",
    "shows",
    "a",
    "sequential",
    "read",
    "of",
    "events",
    "partition",
    "vacuum",
    "analyze",
    "latency",
    "percentile",
    "and",
    "then",
    "sum",
    "revenue",
    "per",
    "product",
    "select",
    "from",
    "invoices",
    "limit",
    "50",
    "explain",
    "why",
    "this",
    "is",
    "slow",
    "add",
    "an",
    "composite",
    "key",
    "to",
    "avoid",
    "the",
    "sort",
];

/// About 16 KiB of ASCII words, built once; bodies are slices of it.
fn corpus() -> &'static str {
    static CORPUS: OnceLock<String> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut text = String::with_capacity(17_000);
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        while text.len() < 16_384 {
            state = mix(state);
            text.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
            text.push(if state.is_multiple_of(11) { '.' } else { ' ' });
        }
        text
    })
}

/// SplitMix64: a fixed, well-spread hash of `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The length of body `i`: uniform in [`MIN_BODY_BYTES`, `MAX_BODY_BYTES`].
pub fn body_len(i: u64) -> usize {
    let span = (MAX_BODY_BYTES - MIN_BODY_BYTES + 1) as u64;
    MIN_BODY_BYTES + (mix(i) % span) as usize
}

/// The text of message `i`.
pub fn body(i: u64) -> String {
    let text = corpus();
    let len = body_len(i);
    let room = (text.len() - len) as u64;
    let start = (mix(i ^ 0x5555_5555) % room) as usize;
    // The corpus is ASCII, so every index is a character boundary.
    text.get(start..start + len).unwrap_or_default().to_owned()
}

/// The role of message `i`: even is the user, odd the assistant.
pub fn role(i: u64) -> Role {
    if i.is_multiple_of(2) {
        Role::User
    } else {
        Role::Assistant
    }
}

/// Message `i` of a conversation, as a caller would append it.
pub fn message(i: u64) -> NewMessage {
    NewMessage::new(role(i), body(i))
}

/// Messages `first`, `first + 1`, … (`count` of them).
pub fn messages(first: u64, count: usize) -> Vec<NewMessage> {
    (first..first + count as u64).map(message).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_vary_and_average_about_500_bytes() {
        let n = 20_000u64;
        let total: usize = (0..n).map(|i| body(i).len()).sum();
        let mean = total as f64 / n as f64;
        assert!((480.0..520.0).contains(&mean), "mean {mean}");
        assert!((0..n).all(|i| (MIN_BODY_BYTES..=MAX_BODY_BYTES).contains(&body(i).len())));
        assert_ne!(body(1), body(2));
        assert_eq!(body(7), body(7));
    }

    #[test]
    fn roles_alternate() {
        assert_eq!(role(0), Role::User);
        assert_eq!(role(1), Role::Assistant);
        assert_eq!(message(2).role, Role::User);
    }
}
