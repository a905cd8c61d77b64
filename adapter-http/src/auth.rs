//! The authorisation hook: who may use a scope is the host's decision.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use conversation_core::Scope;

use crate::problem::{ApiError, Problem};

/// Why a request was refused by a [`ScopeAuthorizer`]; each becomes a problem document.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denial {
    /// `401 unauthorized`: credentials are missing or invalid. `challenge`, when set, is
    /// sent as the `WWW-Authenticate` header (e.g. `Bearer realm="conversations"`).
    Unauthenticated {
        /// The `WWW-Authenticate` challenge, if any.
        challenge: Option<String>,
    },
    /// `403 forbidden`: the caller is known and may not use this scope.
    Forbidden,
    /// `404 not_found`: answer as if the scope held nothing, so that not even the
    /// existence of the scope leaks.
    NotFound,
}

impl Denial {
    /// `401` with a `WWW-Authenticate: <challenge>` header.
    pub fn unauthenticated(challenge: impl Into<String>) -> Self {
        Denial::Unauthenticated {
            challenge: Some(challenge.into()),
        }
    }
}

impl From<Denial> for ApiError {
    fn from(denial: Denial) -> Self {
        match denial {
            Denial::Unauthenticated { challenge } => ApiError {
                problem: Box::new(Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "credentials are missing or invalid",
                )),
                challenge: challenge.and_then(|c| HeaderValue::from_str(&c).ok()),
                retry_after: None,
            },
            Denial::Forbidden => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this caller may not use this scope",
            ),
            Denial::NotFound => {
                Problem::from_error(&conversation_core::Error::conversation_not_found()).into()
            }
        }
    }
}

/// Decides whether a request may use a scope. The host implements it; the router
/// calls it for every route under `/{scope}/…`, after the scope has been parsed and
/// before anything else of the request (ids, query, body) is read or any data is
/// touched.
///
/// The default, [`OpenAccess`], accepts every request: **without an authorizer of
/// your own, anyone who can reach the router can read and write every scope.**
///
/// # Example: a bearer token bound to one scope
///
/// ```
/// use std::collections::HashMap;
///
/// use axum::http::{header, request::Parts};
/// use conversation_adapter_http::{Denial, ScopeAuthorizer};
/// use conversation_core::Scope;
///
/// /// Each token opens exactly one scope.
/// #[derive(Debug)]
/// struct BearerPerScope {
///     scope_of_token: HashMap<String, String>,
/// }
///
/// #[async_trait::async_trait]
/// impl ScopeAuthorizer for BearerPerScope {
///     async fn authorize(&self, request: &Parts, scope: &Scope) -> Result<(), Denial> {
///         let token = request
///             .headers
///             .get(header::AUTHORIZATION)
///             .and_then(|value| value.to_str().ok())
///             .and_then(|value| value.strip_prefix("Bearer "))
///             .ok_or_else(|| Denial::unauthenticated(r#"Bearer realm="conversations""#))?;
///         match self.scope_of_token.get(token) {
///             // A valid token for another scope: answer as if there were nothing here.
///             Some(allowed) if allowed == scope.as_str() => Ok(()),
///             Some(_) => Err(Denial::NotFound),
///             None => Err(Denial::unauthenticated(r#"Bearer error="invalid_token""#)),
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait ScopeAuthorizer: Send + Sync + Debug + 'static {
    /// Accepts (`Ok`) or refuses the request `request` for `scope`.
    async fn authorize(&self, request: &Parts, scope: &Scope) -> Result<(), Denial>;
}

#[async_trait]
impl<T: ScopeAuthorizer + ?Sized> ScopeAuthorizer for Arc<T> {
    async fn authorize(&self, request: &Parts, scope: &Scope) -> Result<(), Denial> {
        (**self).authorize(request, scope).await
    }
}

/// The default authorizer: every request may use every scope.
///
/// Right for a single-user tool bound to localhost (the original host) or behind a
/// gateway that authorises already; wrong for anything reachable by people who must
/// not see each other's conversations.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAccess;

#[async_trait]
impl ScopeAuthorizer for OpenAccess {
    async fn authorize(&self, _request: &Parts, _scope: &Scope) -> Result<(), Denial> {
        Ok(())
    }
}
