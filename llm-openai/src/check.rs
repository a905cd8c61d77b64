//! [`ModelCheck`]: what the server said about the configured model at start.

use std::fmt;

/// How many listed names [`ModelCheck`]'s `Display` shows.
const SHOWN: usize = 10;

/// The outcome of [`OpenAiChatModel::check`](crate::OpenAiChatModel::check) when
/// the server answered with its model list. Its `Display` is one line for a log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelCheck {
    /// The server lists the configured model.
    Listed {
        /// The model.
        model: String,
    },
    /// No model was configured: the first one the server lists was chosen, and every
    /// request uses it.
    Chosen {
        /// The chosen model.
        model: String,
        /// Every model the server lists, in its order.
        listed: Vec<String>,
    },
    /// The server does not list the configured model: replies will likely fail with
    /// `NotFound` (some gateways serve more than they list).
    NotListed {
        /// The configured model.
        model: String,
        /// Every model the server lists, in its order.
        listed: Vec<String>,
    },
}

impl ModelCheck {
    /// The model requests will use.
    pub fn model(&self) -> &str {
        match self {
            ModelCheck::Listed { model }
            | ModelCheck::Chosen { model, .. }
            | ModelCheck::NotListed { model, .. } => model,
        }
    }

    /// Whether the model is one the server lists.
    pub fn is_listed(&self) -> bool {
        !matches!(self, ModelCheck::NotListed { .. })
    }
}

impl fmt::Display for ModelCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelCheck::Listed { model } => write!(f, "model {model:?} found on the server"),
            ModelCheck::Chosen { model, listed } => write!(
                f,
                "no model configured: using {model:?}, the first of the {} the server lists ({})",
                listed.len(),
                names(listed)
            ),
            ModelCheck::NotListed { model, listed } if listed.is_empty() => write!(
                f,
                "model {model:?} not found: the server lists no model; check the model name"
            ),
            ModelCheck::NotListed { model, listed } => write!(
                f,
                "model {model:?} not found among the {} the server lists ({}); check the model name",
                listed.len(),
                names(listed)
            ),
        }
    }
}

/// The first few names, and how many more.
fn names(listed: &[String]) -> String {
    let mut text = listed
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if listed.len() > SHOWN {
        text.push_str(&format!(", … and {} more", listed.len() - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_is_one_readable_line() {
        let many: Vec<String> = (1..=12).map(|i| format!("m{i}")).collect();
        let lines = [
            ModelCheck::Listed {
                model: "gpt-4o".into(),
            }
            .to_string(),
            ModelCheck::Chosen {
                model: "llama3.2".into(),
                listed: vec!["llama3.2".into(), "qwen".into()],
            }
            .to_string(),
            ModelCheck::NotListed {
                model: "gpt-5x".into(),
                listed: many,
            }
            .to_string(),
            ModelCheck::NotListed {
                model: "m".into(),
                listed: vec![],
            }
            .to_string(),
        ];
        assert_eq!(lines[0], "model \"gpt-4o\" found on the server");
        assert_eq!(
            lines[1],
            "no model configured: using \"llama3.2\", the first of the 2 the server lists (llama3.2, qwen)"
        );
        assert!(
            lines[2].contains("m10, … and 2 more); check the model name"),
            "{}",
            lines[2]
        );
        assert!(lines[3].contains("lists no model"), "{}", lines[3]);
        assert!(lines.iter().all(|line| !line.contains('\n')));
    }
}
