//! The isolation key of every conversation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The isolation key: a database connection, a tenant, a user, a project.
///
/// Every store call takes a `&Scope`, and nothing of one scope is ever visible or
/// writable through another. A `Scope` is validated when built, so holding one means
/// it is valid: non-empty, at most [`Scope::MAX_BYTES`] bytes of UTF-8, and free of
/// control characters. It is compared byte for byte (`"A"` and `"a"` are two scopes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(
        value_type = String,
        example = "connection-42",
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]+$"
    )
)]
pub struct Scope(String);

impl Scope {
    /// The longest scope accepted, in bytes.
    pub const MAX_BYTES: usize = 256;

    /// Validates and wraps a scope key.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] with field `scope` when the key is empty, longer than
    /// [`Scope::MAX_BYTES`] bytes or contains a control character.
    pub fn new(key: impl Into<String>) -> Result<Self, Error> {
        let key = key.into();
        if key.is_empty() {
            return Err(Error::invalid("scope", "must not be empty"));
        }
        if key.len() > Self::MAX_BYTES {
            return Err(Error::invalid(
                "scope",
                format!("longer than {} bytes", Self::MAX_BYTES),
            ));
        }
        if key.chars().any(char::is_control) {
            return Err(Error::invalid("scope", "contains a control character"));
        }
        Ok(Self(key))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Scope {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for Scope {
    type Error = Error;

    fn try_from(value: String) -> Result<Self, Error> {
        Self::new(value)
    }
}

impl TryFrom<&str> for Scope {
    type Error = Error;

    fn try_from(value: &str) -> Result<Self, Error> {
        Self::new(value)
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> Self {
        scope.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys_up_to_the_limit() {
        assert_eq!(Scope::new("db:prod-eu").unwrap().as_str(), "db:prod-eu");
        assert!(Scope::new("é".repeat(128)).is_ok(), "256 bytes is allowed");
        assert!(Scope::new("connection with spaces / and ünïcode").is_ok());
    }

    #[test]
    fn refuses_empty_long_and_control_characters() {
        for bad in [
            String::new(),
            "x".repeat(257),
            "a\nb".to_owned(),
            "nul\0".to_owned(),
            "\u{7f}".to_owned(),
        ] {
            let err = Scope::new(bad.clone()).unwrap_err();
            assert!(
                matches!(err, Error::InvalidInput { ref field, .. } if field == "scope"),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<Scope>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<Scope>("\"\"").is_err());
    }
}
