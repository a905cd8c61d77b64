//! What the router holds: the service, the optional model, the authorizer and limits.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use conversation_core::Conversations;

use crate::admission::Admission;
use crate::{AllowedHosts, OpenAccess, ScopeAuthorizer};

/// HTTP-level limits. The data limits (title, content, metadata, batch sizes) are
/// core's [`Limits`](conversation_core::Limits), enforced by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpLimits {
    /// Largest request body in bytes, except an import's (below); a larger one is
    /// `413 payload_too_large`. Default 4 MiB: room for a message of core's default 1 MiB content limit even
    /// when JSON escaping swells it.
    pub max_body_bytes: usize,
    /// How long any request except `reply` and `import` may take before it is
    /// answered `503 timeout`; for an export, until its first conversation is read
    /// (the stream itself is not cut). Default 30 s.
    pub request_timeout: Duration,
    /// How long `reply` may take to *start* streaming (store the user's message, read
    /// the window, get the model's stream) before it is answered `503 timeout`. The
    /// stream itself is not cut by any timeout; the model backend bounds it. Default
    /// 120 s.
    pub reply_start_timeout: Duration,
    /// Interval of SSE keep-alive comments while the model is silent. Default 15 s.
    pub keep_alive: Duration,
    /// Most heavy reads (message pages, context windows) served at once: each may
    /// hold a page of core's `Limits::max_page_bytes` in memory. Default 8.
    pub max_concurrent_heavy_reads: usize,
    /// How long a heavy read waits for its turn before it is answered `503 busy`
    /// with `Retry-After`. Default 2 s.
    pub heavy_read_wait: Duration,
    /// Most reply streams open at once on this router; one more is answered
    /// `429 too_many_replies` with `Retry-After`. Default 32.
    pub max_concurrent_replies: usize,
    /// Most reply streams open at once in one scope; one more is answered
    /// `429 too_many_replies`. Default 4.
    pub max_concurrent_replies_per_scope: usize,
    /// Largest body of `POST /{scope}/import` as JSON Lines (`application/x-ndjson`),
    /// in bytes; it is read line by line as it arrives, never held whole. A larger
    /// body is `413 payload_too_large`: at once when its `Content-Length` says so,
    /// else when the limit is reached (the conversations read whole before that point
    /// stay imported). Default 256 MiB.
    pub max_import_bytes: usize,
    /// Longest line of such an import, in bytes: an import holds one line at a time
    /// (and the lines of one conversation until it is stored). A longer line is
    /// `413 payload_too_large`. Default 8 MiB: room for a message of core's default
    /// 1 MiB content limit even when JSON escaping swells it six times.
    pub max_import_line_bytes: usize,
    /// Largest body of `POST /{scope}/import` as ChatGPT's `conversations.json`
    /// (`application/json`): one JSON document, read whole before it is converted. A
    /// larger one is `413 payload_too_large`, before anything is stored. Default
    /// 64 MiB.
    pub max_chatgpt_import_bytes: usize,
    /// How long `POST /{scope}/import` may take, reading the body included, before it
    /// is answered `503 timeout` (the conversations stored by then stay). Default
    /// 10 minutes.
    pub import_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            reply_start_timeout: Duration::from_secs(120),
            keep_alive: Duration::from_secs(15),
            max_concurrent_heavy_reads: 8,
            heavy_read_wait: Duration::from_secs(2),
            max_concurrent_replies: 32,
            max_concurrent_replies_per_scope: 4,
            max_import_bytes: 256 * 1024 * 1024,
            max_import_line_bytes: 8 * 1024 * 1024,
            max_chatgpt_import_bytes: 64 * 1024 * 1024,
            import_timeout: Duration::from_secs(600),
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

    /// Sets [`HttpLimits::max_concurrent_heavy_reads`].
    pub fn with_max_concurrent_heavy_reads(mut self, reads: usize) -> Self {
        self.max_concurrent_heavy_reads = reads;
        self
    }

    /// Sets [`HttpLimits::heavy_read_wait`].
    pub fn with_heavy_read_wait(mut self, wait: Duration) -> Self {
        self.heavy_read_wait = wait;
        self
    }

    /// Sets [`HttpLimits::max_concurrent_replies`].
    pub fn with_max_concurrent_replies(mut self, replies: usize) -> Self {
        self.max_concurrent_replies = replies;
        self
    }

    /// Sets [`HttpLimits::max_concurrent_replies_per_scope`].
    pub fn with_max_concurrent_replies_per_scope(mut self, replies: usize) -> Self {
        self.max_concurrent_replies_per_scope = replies;
        self
    }

    /// Sets [`HttpLimits::max_import_bytes`].
    pub fn with_max_import_bytes(mut self, bytes: usize) -> Self {
        self.max_import_bytes = bytes;
        self
    }

    /// Sets [`HttpLimits::max_import_line_bytes`].
    pub fn with_max_import_line_bytes(mut self, bytes: usize) -> Self {
        self.max_import_line_bytes = bytes;
        self
    }

    /// Sets [`HttpLimits::max_chatgpt_import_bytes`].
    pub fn with_max_chatgpt_import_bytes(mut self, bytes: usize) -> Self {
        self.max_chatgpt_import_bytes = bytes;
        self
    }

    /// Sets [`HttpLimits::import_timeout`].
    pub fn with_import_timeout(mut self, timeout: Duration) -> Self {
        self.import_timeout = timeout;
        self
    }
}

/// Everything the router needs: the [`Conversations`] service (which holds the store,
/// the title generator, the optional chat model for `reply` and the context policy),
/// the [`ScopeAuthorizer`], the [`AllowedHosts`] and the [`HttpLimits`].
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
    pub(crate) allowed_hosts: AllowedHosts,
    pub(crate) admission: Arc<Admission>,
}

impl fmt::Debug for ApiState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiState")
            .field("service", &self.service)
            .field("authorizer", &self.authorizer)
            .field("limits", &self.limits)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

impl ApiState {
    /// State over `service`, with open access for every scope ([`OpenAccess`]), the
    /// loopback host names only ([`AllowedHosts::loopback`]) and default limits.
    /// `reply` answers `501` unless the service was built with a chat model
    /// ([`ConversationsBuilder::chat_model`](conversation_core::ConversationsBuilder::chat_model)).
    pub fn new(service: Conversations) -> Self {
        let limits = HttpLimits::default();
        Self {
            service,
            authorizer: Arc::new(OpenAccess),
            admission: Arc::new(Admission::new(&limits)),
            limits,
            allowed_hosts: AllowedHosts::loopback(),
        }
    }

    /// Lets `authorizer` decide who may use which scope.
    pub fn with_authorizer(mut self, authorizer: Arc<dyn ScopeAuthorizer>) -> Self {
        self.authorizer = authorizer;
        self
    }

    /// Sets the HTTP limits.
    pub fn with_limits(mut self, limits: HttpLimits) -> Self {
        self.admission = Arc::new(Admission::new(&limits));
        self.limits = limits;
        self
    }

    /// Sets the host names the router answers to (default: [`AllowedHosts::loopback`]).
    /// A router behind a proxy that checks `Host` itself may take
    /// [`AllowedHosts::any`].
    pub fn with_allowed_hosts(mut self, hosts: AllowedHosts) -> Self {
        self.allowed_hosts = hosts;
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

    /// The host names the router answers to.
    pub fn allowed_hosts(&self) -> &AllowedHosts {
        &self.allowed_hosts
    }
}
