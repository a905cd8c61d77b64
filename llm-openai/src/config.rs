//! Where the endpoint is, who the caller is, how long to wait and how often to retry.

use std::fmt;
use std::time::Duration;

use crate::OpenAiError;

/// Settings of an OpenAI-compatible chat-completions endpoint.
///
/// Built with [`OpenAiConfig::openai`], [`OpenAiConfig::local`] or
/// [`OpenAiConfig::from_env`], then adjusted with the `with_*` methods. Every field
/// has a default chosen for an interactive chat application; the associated
/// `DEFAULT_*` constants say what they are and why.
///
/// The API key (and every extra header value) is a secret: `Debug` prints
/// `[redacted]` in its place, it is sent as a header marked sensitive, and it is
/// never logged.
#[derive(Clone)]
pub struct OpenAiConfig {
    pub(crate) base_url: String,
    pub(crate) api_key: Option<String>,
    pub(crate) model: String,
    pub(crate) extra_headers: Vec<(String, String)>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) stream_idle_timeout: Duration,
    pub(crate) stream_total_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) retry_after_max: Duration,
    pub(crate) stream_usage: bool,
}

impl OpenAiConfig {
    /// The public OpenAI API.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.openai.com/v1";

    /// The model [`OpenAiConfig::from_env`] uses when `OPENAI_MODEL` is unset: small,
    /// cheap and fast, which suits titles; hosts set their own for replies.
    pub const DEFAULT_MODEL: &'static str = "gpt-4o-mini";

    /// 10 s to establish a TCP (and TLS) connection. A healthy endpoint connects in
    /// milliseconds; a connection that takes longer is better retried than awaited.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// 60 s for a whole non-streamed answer (a title), and for a streamed reply the
    /// wait until the response headers arrive. Long prompts on a slow model can take
    /// tens of seconds before the first byte; a minute covers that without letting a
    /// dead server hold a request for ever.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

    /// 120 s of silence allowed between two chunks of a streamed reply. A total
    /// timeout would cut long but healthy replies, so streams are bounded by idleness
    /// instead; two minutes leaves room for reasoning models that think before they
    /// write.
    pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

    /// 15 min for a whole streamed reply: a backstop against a server that trickles
    /// bytes for ever, far above any real reply.
    pub const DEFAULT_STREAM_TOTAL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

    /// 2 retries (3 attempts), as OpenAI's own SDKs do: enough to ride out a blip,
    /// few enough that a user waiting on a reply hears about an outage quickly.
    pub const DEFAULT_MAX_RETRIES: u32 = 2;

    /// 500 ms before the first retry, doubling each time.
    pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);

    /// 8 s at most between two retries (before jitter), as OpenAI's SDKs do.
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(8);

    /// 20 s at most waited for a server's `Retry-After` / `retry-after-ms`. A person
    /// is waiting on the answer; a server asking for longer is waited on for 20 s and
    /// then tried again (and, when retries run out, reported as
    /// [`OpenAiError::RateLimited`] with the server's value).
    pub const DEFAULT_RETRY_AFTER_MAX: Duration = Duration::from_secs(20);

    /// A configuration for `base_url` (ending in `/v1` for most servers) and `model`,
    /// with no API key and every other setting at its default.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            extra_headers: Vec::new(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            stream_idle_timeout: Self::DEFAULT_STREAM_IDLE_TIMEOUT,
            stream_total_timeout: Self::DEFAULT_STREAM_TOTAL_TIMEOUT,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            backoff_base: Self::DEFAULT_BACKOFF_BASE,
            backoff_max: Self::DEFAULT_BACKOFF_MAX,
            retry_after_max: Self::DEFAULT_RETRY_AFTER_MAX,
            stream_usage: true,
        }
    }

    /// The public OpenAI API with `api_key` and `model`.
    pub fn openai(api_key: impl Into<String>, model: impl Into<String>) -> Self {
        Self::new(Self::DEFAULT_BASE_URL, model).with_api_key(api_key)
    }

    /// A local OpenAI-compatible server that needs no key, e.g. Ollama at
    /// `http://localhost:11434/v1`, vLLM at `http://localhost:8000/v1` or a llama.cpp
    /// server at `http://localhost:8080/v1`.
    pub fn local(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self::new(base_url, model)
    }

    /// Reads `OPENAI_API_KEY`, `OPENAI_BASE_URL` (default
    /// [`Self::DEFAULT_BASE_URL`]) and `OPENAI_MODEL` (default [`Self::DEFAULT_MODEL`]).
    /// Empty variables count as unset.
    ///
    /// # Errors
    /// [`OpenAiError::Config`] when the base URL is the public OpenAI API and no key
    /// is set (every request would fail with 401). Other servers may need no key.
    pub fn from_env() -> Result<Self, OpenAiError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, OpenAiError> {
        let var = |name: &str| {
            var(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let base_url = var("OPENAI_BASE_URL").unwrap_or_else(|| Self::DEFAULT_BASE_URL.to_owned());
        let model = var("OPENAI_MODEL").unwrap_or_else(|| Self::DEFAULT_MODEL.to_owned());
        let mut config = Self::new(base_url, model);
        match var("OPENAI_API_KEY") {
            Some(key) => config.api_key = Some(key),
            None if config.base_url.trim_end_matches('/') == Self::DEFAULT_BASE_URL => {
                return Err(OpenAiError::Config(
                    "OPENAI_API_KEY is not set, and the public OpenAI API needs it".to_owned(),
                ));
            }
            None => {}
        }
        Ok(config)
    }

    /// Sends `api_key` as `Authorization: Bearer …`.
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// Sends no `Authorization` header (local servers; Azure-style `api-key`
    /// headers go through [`Self::with_header`]).
    pub fn without_api_key(mut self) -> Self {
        self.api_key = None;
        self
    }

    /// The endpoint's base URL; `/chat/completions` is appended to its path, and a
    /// query string on it (such as Azure's `?api-version=…`) is kept.
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// The model name sent with every request (for Azure, the deployment's model).
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Adds a header to every request, e.g. `api-key` for Azure,
    /// `OpenAI-Organization`, or a gateway's own. Its value is treated as a secret.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.into(), value.into()));
        self
    }

    /// See [`Self::DEFAULT_CONNECT_TIMEOUT`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// See [`Self::DEFAULT_REQUEST_TIMEOUT`].
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// See [`Self::DEFAULT_STREAM_IDLE_TIMEOUT`].
    pub fn with_stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.stream_idle_timeout = timeout;
        self
    }

    /// See [`Self::DEFAULT_STREAM_TOTAL_TIMEOUT`].
    pub fn with_stream_total_timeout(mut self, timeout: Duration) -> Self {
        self.stream_total_timeout = timeout;
        self
    }

    /// How many times a failed request is tried again (0: never); see
    /// [`Self::DEFAULT_MAX_RETRIES`].
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The first retry delay and the cap of the doubling delays; see
    /// [`Self::DEFAULT_BACKOFF_BASE`] and [`Self::DEFAULT_BACKOFF_MAX`]. Each delay is
    /// drawn at random between half and all of its nominal value (jitter), so that
    /// many clients do not retry in step.
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// The longest wait honoured from a server's `Retry-After` / `retry-after-ms`;
    /// see [`Self::DEFAULT_RETRY_AFTER_MAX`].
    pub fn with_retry_after_max(mut self, max: Duration) -> Self {
        self.retry_after_max = max;
        self
    }

    /// Whether streamed requests ask for token usage
    /// (`stream_options.include_usage`, default on). Turn it off for a server that
    /// refuses the option.
    pub fn with_stream_usage(mut self, include_usage: bool) -> Self {
        self.stream_usage = include_usage;
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Whether an API key is set.
    pub fn has_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    /// The secrets to keep out of error messages: the key and extra header values.
    pub(crate) fn secrets(&self) -> Vec<String> {
        self.api_key
            .iter()
            .cloned()
            .chain(self.extra_headers.iter().map(|(_, value)| value.clone()))
            .filter(|secret| secret.len() >= 4)
            .collect()
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .extra_headers
            .iter()
            .map(|(name, _)| (name.as_str(), "[redacted]"))
            .collect();
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("model", &self.model)
            .field("extra_headers", &headers)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .field("stream_total_timeout", &self.stream_total_timeout)
            .field("max_retries", &self.max_retries)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field("retry_after_max", &self.retry_after_max)
            .field("stream_usage", &self.stream_usage)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn env_defaults_to_the_public_api_and_needs_a_key_there() {
        let config = OpenAiConfig::from_vars(vars(&[("OPENAI_API_KEY", "sk-env")])).unwrap();
        assert_eq!(config.base_url(), OpenAiConfig::DEFAULT_BASE_URL);
        assert_eq!(config.model(), OpenAiConfig::DEFAULT_MODEL);
        assert_eq!(config.api_key.as_deref(), Some("sk-env"));

        let missing = OpenAiConfig::from_vars(vars(&[("OPENAI_API_KEY", "  ")]));
        assert!(matches!(missing, Err(OpenAiError::Config(_))));
    }

    #[test]
    fn env_configures_a_local_server_without_a_key() {
        let config = OpenAiConfig::from_vars(vars(&[
            ("OPENAI_BASE_URL", "http://localhost:11434/v1"),
            ("OPENAI_MODEL", "llama3.2"),
        ]))
        .unwrap();
        assert_eq!(config.base_url(), "http://localhost:11434/v1");
        assert_eq!(config.model(), "llama3.2");
        assert!(!config.has_api_key());
    }

    #[test]
    fn debug_redacts_the_key_and_header_values() {
        let config = OpenAiConfig::openai("sk-very-secret", "gpt-4o")
            .with_header("api-key", "azure-secret-value");
        let printed = format!("{config:?}");
        assert!(!printed.contains("sk-very-secret"), "{printed}");
        assert!(!printed.contains("azure-secret-value"), "{printed}");
        assert!(printed.contains("api-key"), "{printed}");
        assert!(printed.contains("gpt-4o"), "{printed}");
    }
}
