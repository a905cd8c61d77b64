//! Extractors whose every rejection is a problem document.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use conversation_core::{ConversationId, MAX_PAGE_SIZE, MessageId, Scope};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::AppState;
use crate::problem::{ApiError, Problem};

/// The scope of the path, validated and accepted by the host's authorizer.
#[derive(Debug)]
pub(crate) struct ScopeAccess(pub(crate) Scope);

fn path_param(params: &RawPathParams, name: &str) -> Option<String> {
    params
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// The raw text of path parameter `name`.
pub(crate) async fn raw_path_param(
    parts: &mut Parts,
    state: &AppState,
    name: &str,
) -> Result<String, ApiError> {
    let params = raw_params(parts, state).await?;
    path_param(&params, name).ok_or_else(|| ApiError::parameter(name, "missing"))
}

async fn raw_params(parts: &mut Parts, state: &AppState) -> Result<RawPathParams, ApiError> {
    RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|rejection| ApiError::parameter("path", rejection.body_text()))
}

impl FromRequestParts<AppState> for ScopeAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let params = raw_params(parts, state).await?;
        let raw =
            path_param(&params, "scope").ok_or_else(|| ApiError::parameter("scope", "missing"))?;
        // The router strips its mount point: the scope is the first segment, still
        // percent-encoded. A `%` not followed by two hex digits is a mistake, not a
        // literal `%` (which is sent as `%25`).
        let encoded = parts
            .uri
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        if has_malformed_escape(encoded) {
            return Err(ApiError::parameter(
                "scope",
                "invalid scope: a `%` that does not start a percent-escape (send `%25` for `%`)",
            ));
        }
        let scope = Scope::new(raw).map_err(|error| match error {
            conversation_core::Error::InvalidInput { reason, .. } => {
                ApiError::parameter("scope", format!("invalid scope: {reason}"))
            }
            other => other.into(),
        })?;
        state
            .api
            .authorizer
            .authorize(parts, &scope)
            .await
            .map_err(ApiError::from)?;
        Ok(Self(scope))
    }
}

/// Whether `text` holds a `%` not followed by two hexadecimal digits.
fn has_malformed_escape(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(at, &byte)| {
        byte == b'%'
            && !(bytes.get(at + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(at + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// The request's `X-Request-Id` (set by [`harden`](crate::harden)), for the problem
/// documents a route sends after its response head (a reply's `error` event).
#[derive(Debug)]
pub(crate) struct RequestIdHeader(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestIdHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .headers
                .get(crate::problem::REQUEST_ID)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
        ))
    }
}

/// The conversation id of the path.
#[derive(Debug)]
pub(crate) struct ConversationParam(pub(crate) ConversationId);

impl FromRequestParts<AppState> for ConversationParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let params = raw_params(parts, state).await?;
        let raw = path_param(&params, "id").ok_or_else(|| ApiError::parameter("id", "missing"))?;
        raw.parse()
            .map(Self)
            .map_err(|_| ApiError::parameter("id", "not a UUID"))
    }
}

/// The message id of the path (`{message}`).
#[derive(Debug)]
pub(crate) struct MessageParam(pub(crate) MessageId);

impl FromRequestParts<AppState> for MessageParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let params = raw_params(parts, state).await?;
        let raw = path_param(&params, "message")
            .ok_or_else(|| ApiError::parameter("message", "missing"))?;
        raw.parse()
            .map(Self)
            .map_err(|_| ApiError::parameter("message", "not a UUID"))
    }
}

/// A JSON body: `application/json` or `application/*+json`, within the size limit,
/// syntactically valid JSON of any shape.
#[derive(Debug)]
pub(crate) struct JsonValue(pub(crate) Value);

/// A JSON object body deserialised into `T`, with the path of an offending field
/// reported.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

/// The media type of the request's `Content-Type` without its parameters,
/// lowercased (`application/json`), if it has one.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|essence| {
        essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"))
    })
}

/// The bytes of a body sent as JSON (not yet parsed).
async fn json_bytes(request: Request, state: &AppState) -> Result<Bytes, ApiError> {
    if !is_json_content_type(request.headers()) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON, sent with Content-Type: application/json",
        ));
    }
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE).into()
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "the request body could not be read",
                )
            }
        })
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {error}"),
        )
    })
}

impl FromRequest<AppState> for JsonValue {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        parse_json(&json_bytes(request, state).await?).map(Self)
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let JsonValue(value) = JsonValue::from_request(request, state).await?;
        if !value.is_object() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "the body must be a JSON object",
            ));
        }
        from_json(value).map(Self)
    }
}

/// The body of a `POST` that takes no data (`…/title`): nothing or `{}`, sent as
/// `application/json` like every other write. Requiring the JSON content type means a
/// cross-site HTML form (which can only send form and text types) can never trigger
/// the route.
#[derive(Debug)]
pub(crate) struct EmptyJsonBody;

impl FromRequest<AppState> for EmptyJsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = json_bytes(request, state).await?;
        if bytes.trim_ascii().is_empty()
            || parse_json(&bytes)?
                .as_object()
                .is_some_and(serde_json::Map::is_empty)
        {
            Ok(Self)
        } else {
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "this route takes no data: send `{}` or nothing, as application/json",
            ))
        }
    }
}

/// Deserialises `value` into `T`; a value of the wrong shape is `invalid_body` naming
/// the path of the offending field (e.g. `[1].id`, `pinned`).
pub(crate) fn from_json<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let problem = Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!(
                "the body does not have the documented shape: {}",
                error.inner()
            ),
        );
        ApiError::from(if path == "." {
            problem
        } else {
            problem.with_field(path)
        })
    })
}

/// A page size: a positive integer (at most `i64::MAX`); values above
/// [`MAX_PAGE_SIZE`] are lowered to it.
pub(crate) fn parse_limit(raw: Option<&str>) -> Result<Option<u32>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let value = parse_unsigned("limit", raw)?;
    if value == 0 {
        return Err(ApiError::parameter("limit", "must be at least 1"));
    }
    // `MAX_PAGE_SIZE` fits u32; the clamp keeps the cast lossless.
    Ok(Some(value.min(MAX_PAGE_SIZE as u64) as u32))
}

/// A message seq bound: a non-negative integer.
pub(crate) fn parse_seq(field: &str, raw: Option<&str>) -> Result<Option<u64>, ApiError> {
    raw.map(|raw| parse_unsigned(field, raw)).transpose()
}

/// A non-negative integer within the documented `int64` range.
fn parse_unsigned(field: &str, raw: &str) -> Result<u64, ApiError> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::parameter(
            field,
            format!("{raw:?} is not a non-negative integer"),
        ));
    }
    raw.parse::<i64>()
        .ok()
        .and_then(|value| u64::try_from(value).ok())
        .ok_or_else(|| ApiError::parameter(field, format!("{raw} is larger than {}", i64::MAX)))
}

/// `true` or `false`.
pub(crate) fn parse_bool(field: &str, raw: Option<&str>) -> Result<Option<bool>, ApiError> {
    match raw {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(ApiError::parameter(
            field,
            format!("{other:?} is neither true nor false"),
        )),
    }
}

/// The `If-Match` precondition of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IfMatch {
    /// `If-Match: *`: the conversation must exist.
    Any,
    /// The versions named by strong entity tags of ours (`"7"`). Other tags (weak,
    /// foreign) never match, so the list may be empty.
    Versions(Vec<u64>),
}

impl IfMatch {
    /// Parses every `If-Match` header of `headers`; `None` when there is none.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let mut seen = false;
        let mut any = false;
        let mut versions = Vec::new();
        for value in headers.get_all(header::IF_MATCH) {
            seen = true;
            let text = value.to_str().map_err(|_| bad_if_match())?;
            for tag in entity_tags(text)? {
                match tag {
                    EntityTag::Any => any = true,
                    // If-Match compares strongly: a weak tag never matches.
                    EntityTag::Weak => {}
                    EntityTag::Strong(opaque) => {
                        if let Ok(version) = opaque.parse::<u64>() {
                            versions.push(version);
                        }
                    }
                }
            }
        }
        Ok(match (seen, any) {
            (false, _) => None,
            (true, true) => Some(IfMatch::Any),
            (true, false) => Some(IfMatch::Versions(versions)),
        })
    }
}

fn bad_if_match() -> ApiError {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid_header",
        "If-Match must be * or a list of entity tags such as \"7\"",
    )
    .with_field("If-Match")
    .into()
}

/// One element of an `If-Match` list.
enum EntityTag<'a> {
    Any,
    Weak,
    Strong(&'a str),
}

/// The elements of an `If-Match` value (RFC 9110 §8.8.3): `*` or entity tags, separated
/// by commas and optional whitespace; commas may stand inside a tag's quotes.
fn entity_tags(text: &str) -> Result<Vec<EntityTag<'_>>, ApiError> {
    let mut tags = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Ok(tags);
        }
        if let Some(after) = rest.strip_prefix('*') {
            tags.push(EntityTag::Any);
            rest = after;
        } else {
            let (weak, quoted) = match rest.strip_prefix("W/") {
                Some(after) => (true, after),
                None => (false, rest),
            };
            let inner = quoted.strip_prefix('"').ok_or_else(bad_if_match)?;
            let end = inner.find('"').ok_or_else(bad_if_match)?;
            let opaque = &inner[..end];
            if !opaque
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
            {
                return Err(bad_if_match());
            }
            tags.push(if weak {
                EntityTag::Weak
            } else {
                EntityTag::Strong(opaque)
            });
            rest = &inner[end + 1..];
        }
        // Each element ends at a comma or the end of the value.
        let trimmed = rest.trim_start_matches([' ', '\t']);
        if !(trimmed.is_empty() || trimmed.starts_with(',')) {
            return Err(bad_if_match());
        }
        rest = trimmed;
    }
}

/// The `ETag` of a conversation at `version`.
pub(crate) fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn parse(values: &[&str]) -> Result<Option<IfMatch>, String> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
        }
        IfMatch::from_headers(&headers).map_err(|e| e.problem.code.clone())
    }

    #[test]
    fn malformed_percent_escapes() {
        for good in ["a", "a%20b", "%25", "%2F%2f", "100%25"] {
            assert!(!has_malformed_escape(good), "{good}");
        }
        for bad in ["%", "%ZZ", "a%2", "%G0", "50%", "%%41"] {
            assert!(has_malformed_escape(bad), "{bad}");
        }
    }

    #[test]
    fn if_match_lists_parse_as_rfc_9110_says() {
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(parse(&["*"]), Ok(Some(IfMatch::Any)));
        assert_eq!(parse(&["\"7\""]), Ok(Some(IfMatch::Versions(vec![7]))));
        assert_eq!(
            parse(&["\"7\" ,W/\"8\",\t\"9\"", "\"10\""]),
            Ok(Some(IfMatch::Versions(vec![7, 9, 10])))
        );
        // Commas may stand inside a tag; foreign and weak tags never match.
        assert_eq!(
            parse(&["\"a,b\", \"12\", W/\"13\", \"x\""]),
            Ok(Some(IfMatch::Versions(vec![12])))
        );
        assert_eq!(parse(&[""]), Ok(Some(IfMatch::Versions(vec![]))));
        for bad in ["7", "\"7", "\"7\" x", "W/7", "\"7\"\"8\"", "**x"] {
            assert_eq!(parse(&[bad]), Err("invalid_header".to_owned()), "{bad:?}");
        }
    }
}
