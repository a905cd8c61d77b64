//! Identifiers: UUIDv7, so they sort by creation time and index well.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(
            feature = "openapi",
            derive(utoipa::ToSchema),
            schema(value_type = String, format = "uuid")
        )]
        pub struct $name(Uuid);

        impl $name {
            /// A new time-ordered (UUIDv7) identifier.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID (any version), e.g. one read back from storage.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// The 16 bytes of the UUID, big-endian, as stored by the SQL backends.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = Error;

            /// Parses the hyphenated (or simple) text form; anything else is
            /// [`Error::InvalidInput`] naming the field.
            fn from_str(s: &str) -> Result<Self, Error> {
                Uuid::try_parse(s)
                    .map(Self)
                    .map_err(|_| Error::invalid($field, "not a UUID"))
            }
        }
    };
}

uuid_id!(
    /// Identifies a conversation. Unique across all scopes.
    ConversationId,
    "conversation id"
);

uuid_id!(
    /// Identifies a message within its conversation. Callers may supply their own
    /// (any UUID) to make retried appends idempotent.
    MessageId,
    "message id"
);

uuid_id!(
    /// Identifies an agent run (one turn of the model, with its tool calls) within
    /// its conversation.
    RunId,
    "run id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_v7_and_increase() {
        let a = ConversationId::new();
        let b = ConversationId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b, "UUIDv7 created later must sort later");
    }

    #[test]
    fn text_round_trip_and_bad_text() {
        let id = MessageId::new();
        let parsed: MessageId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
        let err = "not-a-uuid".parse::<MessageId>().unwrap_err();
        assert!(matches!(err, Error::InvalidInput { ref field, .. } if field == "message id"));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
    }
}
