//! What the router holds: the service, the optional model, the authorizer and limits.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use conversation_core::Conversations;

use crate::{OpenAccess, ScopeAuthorizer};

/// HTTP-level limits. The data limits (title, content, metadata, batch sizes) are
/// core's [`Limits`](conversation_core::Limits), enforced by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpLimits {
    /// Largest request body in bytes; a larger one is `413 payload_too_large`.
    /// Default 4 MiB: room for a message of core's default 1 MiB content limit even
    /// when JSON escaping swells it.
    pub max_body_bytes: usize,
    /// How long any request except `reply` may take before it is answered
    /// `503 timeout`. Default 30 s.
    pub request_timeout: Duration,
    /// How long `reply` may take to *start* streaming (store the user's message, read
    /// the window, get the model's stream) before it is answered `503 timeout`. The
    /// stream itself is not cut by any timeout; the model backend bounds it. Default
    /// 120 s.
    pub reply_start_timeout: Duration,
    /// Interval of SSE keep-alive comments while the model is silent. Default 15 s.
    pub keep_alive: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            reply_start_timeout: Duration::from_secs(120),
            keep_alive: Duration::from_secs(15),
        }
    }
}

impl HttpLimits {
    /// Sets [`HttpLimits::max_body_bytes`].
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Sets [`HttpLimits::request_timeout`].
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`HttpLimits::reply_start_timeout`].
    pub fn with_reply_start_timeout(mut self, timeout: Duration) -> Self {
        self.reply_start_timeout = timeout;
        self
    }

    /// Sets [`HttpLimits::keep_alive`].
    pub fn with_keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }
}

/// Everything the router needs: the [`Conversations`] service (which holds the store,
/// the title generator, the optional chat model for `reply` and the context policy),
/// the [`ScopeAuthorizer`] and the [`HttpLimits`].
///
/// Cheap to clone.
///
/// ```
/// # use std::sync::Arc;
/// # use conversation_core::{Conversations, Store};
/// # use conversation_adapter_http::{ApiState, HttpLimits};
/// # fn demo(store: Arc<dyn Store>) {
/// let state = ApiState::new(Conversations::new(store))
///     .with_limits(HttpLimits::default().with_max_body_bytes(1 << 20));
/// # }
/// ```
#[derive(Clone)]
pub struct ApiState {
    pub(crate) service: Conversations,
    pub(crate) authorizer: Arc<dyn ScopeAuthorizer>,
    pub(crate) limits: HttpLimits,
}

impl fmt::Debug for ApiState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiState")
            .field("service", &self.service)
            .field("authorizer", &self.authorizer)
            .field("limits", &self.limits)
            .finish()
    }
}

impl ApiState {
    /// State over `service`, with open access for every scope ([`OpenAccess`]) and
    /// default limits. `reply` answers `501` unless the service was built with a chat
    /// model ([`ConversationsBuilder::chat_model`](conversation_core::ConversationsBuilder::chat_model)).
    pub fn new(service: Conversations) -> Self {
        Self {
            service,
            authorizer: Arc::new(OpenAccess),
            limits: HttpLimits::default(),
        }
    }

    /// Lets `authorizer` decide who may use which scope.
    pub fn with_authorizer(mut self, authorizer: Arc<dyn ScopeAuthorizer>) -> Self {
        self.authorizer = authorizer;
        self
    }

    /// Sets the HTTP limits.
    pub fn with_limits(mut self, limits: HttpLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The service.
    pub fn service(&self) -> &Conversations {
        &self.service
    }

    /// The HTTP limits.
    pub fn limits(&self) -> &HttpLimits {
        &self.limits
    }
}
