//! Where the endpoint is, who the caller is, how long to wait and how often to retry.

use std::fmt;
use std::time::Duration;

use reqwest::Url;

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
/// never logged. So are the user name and password of the base URL and the values of
/// its query string (`?api_key=…`): `Debug` and `Display` print the URL with those
/// replaced by `[redacted]` (only Azure's `api-version` is shown), and errors never
/// carry the URL. Log the configuration with `Display` (`%config`), never
/// [`Self::base_url`].
///
/// The model may be left unset (an empty name): the first model the server lists
/// (`GET {base}/models`) is then used, see
/// [`OpenAiChatModel::check`](crate::OpenAiChatModel::check).
#[derive(Clone)]
pub struct OpenAiConfig {
    pub(crate) base_url: String,
    pub(crate) api_key: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) extra_headers: Vec<(String, String)>,
    pub(crate) root_certificates: Vec<Vec<u8>>,
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

    /// The model [`OpenAiConfig::from_env`] uses for the public OpenAI API when
    /// `OPENAI_MODEL` is unset: small, cheap and fast, which suits titles; hosts set
    /// their own for replies. Other servers get no default: their first listed model
    /// is used.
    pub const DEFAULT_MODEL: &'static str = "gpt-4o-mini";

    /// 10 s to establish a TCP (and TLS) connection. A healthy endpoint connects in
    /// milliseconds; a connection that takes longer is better retried than awaited.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// 45 s for one attempt at a whole non-streamed answer (a title), and for a
    /// streamed reply the wait until the response headers arrive. Long prompts on a
    /// slow model can take tens of seconds before the first byte; 45 s covers that
    /// without letting a dead server hold a request for ever, and lets two whole
    /// attempts and their backoff fit a 120 s start deadline
    /// ([`ChatRequest::start_deadline`](conversation_core::ChatRequest::start_deadline)),
    /// the third being cut to the time left.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(45);

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
    /// [`OpenAiError::RateLimited`] with the server's value). A wait that would end
    /// after the request's start deadline is not waited at all: the request fails at
    /// once, carrying the server's value.
    pub const DEFAULT_RETRY_AFTER_MAX: Duration = Duration::from_secs(20);

    /// A configuration for `base_url` (ending in `/v1` for most servers) and `model`,
    /// with no API key and every other setting at its default. An empty `model`
    /// leaves it unset: the server's first listed model is used.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: non_empty(model.into()),
            extra_headers: Vec::new(),
            root_certificates: Vec::new(),
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
    /// [`Self::DEFAULT_BASE_URL`]) and `OPENAI_MODEL`. Empty variables count as unset.
    ///
    /// Without `OPENAI_MODEL` the model is [`Self::DEFAULT_MODEL`] for the public
    /// OpenAI API, and left unset for any other server (a local Ollama, vLLM or
    /// llama.cpp server serves the models it has, rarely `gpt-4o-mini`): the first
    /// model that server lists is used, chosen by
    /// [`OpenAiChatModel::check`](crate::OpenAiChatModel::check) or by the first
    /// request.
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
        let public_api = base_url.trim_end_matches('/') == Self::DEFAULT_BASE_URL;
        let model = var("OPENAI_MODEL")
            .or_else(|| public_api.then(|| Self::DEFAULT_MODEL.to_owned()))
            .unwrap_or_default();
        let mut config = Self::new(base_url, model);
        match var("OPENAI_API_KEY") {
            Some(key) => config.api_key = Some(key),
            None if public_api => {
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
    /// An empty name leaves it unset: the server's first listed model is used.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = non_empty(model.into());
        self
    }

    /// Adds a header to every request, e.g. `api-key` for Azure,
    /// `OpenAI-Organization`, or a gateway's own. Its value is treated as a secret.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.into(), value.into()));
        self
    }

    /// Trusts the certificates of `pem` (one or more PEM `CERTIFICATE` blocks) as
    /// roots, in addition to the platform's: for an endpoint whose certificate a
    /// private CA issued (a company gateway, a self-hosted vLLM behind TLS). Call it
    /// again to add more.
    ///
    /// The PEM is read when the client is built:
    /// [`OpenAiChatModel::new`](crate::OpenAiChatModel::new) and
    /// [`OpenAiTitleGenerator::new`](crate::OpenAiTitleGenerator::new) fail with
    /// [`OpenAiError::Config`] if it holds no certificate or a malformed one, or if the
    /// crate was built without a TLS feature.
    ///
    /// ```no_run
    /// # use conversation_llm_openai::{OpenAiChatModel, OpenAiConfig};
    /// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let ca = std::fs::read("/etc/company/ca.pem")?;
    /// let config = OpenAiConfig::local("https://llm.internal.example/v1", "llama3.2")
    ///     .with_root_certificate(ca);
    /// let model = OpenAiChatModel::new(config)?;
    /// # let _ = model;
    /// # Ok(()) }
    /// ```
    pub fn with_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates.push(pem.into());
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

    /// The base URL as given. It may hold secrets (a password, an `?api_key=`
    /// query): log the configuration's `Display` instead, which redacts them.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The model name; `None` when unset (the server's first listed model is used).
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Whether an API key is set.
    pub fn has_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    /// The secrets to keep out of error messages and logs: the key, extra header
    /// values, and the base URL's user name, password and query values.
    pub(crate) fn secrets(&self) -> Vec<String> {
        // Each in the form the URL spells it (what a server would echo) and decoded.
        let url_secrets = Url::parse(self.base_url.trim())
            .map(|url| {
                let mut secrets = vec![url.username().to_owned()];
                secrets.extend(url.password().map(ToOwned::to_owned));
                secrets.extend(url.query().into_iter().flat_map(|query| {
                    query
                        .split('&')
                        .filter_map(|pair| pair.split_once('='))
                        .filter(|(name, _)| !is_public_query(name))
                        .map(|(_, value)| value.to_owned())
                        .collect::<Vec<_>>()
                }));
                let decoded: Vec<String> =
                    secrets.iter().filter_map(|s| percent_decoded(s)).collect();
                secrets.extend(decoded);
                secrets
            })
            .unwrap_or_default();
        let mut secrets: Vec<String> = self
            .api_key
            .iter()
            .cloned()
            .chain(self.extra_headers.iter().map(|(_, value)| value.clone()))
            .chain(url_secrets)
            .filter(|secret| secret.len() >= 4)
            .collect();
        // The longest first, so that a secret inside another is not half-replaced.
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        secrets
    }
}

/// `text` with its `%XX` escapes decoded, read as a query value by the URL parser
/// this crate already has.
fn percent_decoded(text: &str) -> Option<String> {
    let url = Url::parse(&format!("http://host/?v={text}")).ok()?;
    let (_, value) = url.query_pairs().next()?;
    Some(value.into_owned())
}

fn non_empty(model: String) -> Option<String> {
    let model = model.trim();
    (!model.is_empty()).then(|| model.to_owned())
}

/// Query parameters known to hold no secret, shown as they are.
fn is_public_query(name: &str) -> bool {
    name == "api-version"
}

/// `url` with its user name, password and query values (but Azure's
/// `api-version`) replaced by `[redacted]`, and no fragment; a text that is not a URL
/// is not shown at all.
pub(crate) fn redacted_url(url: &str) -> String {
    let Ok(url) = Url::parse(url.trim()) else {
        return "[not a URL]".to_owned();
    };
    let userinfo = if url.username().is_empty() && url.password().is_none() {
        ""
    } else {
        "[redacted]@"
    };
    let host = url.host_str().unwrap_or_default();
    let port = url
        .port()
        .map(|port| format!(":{port}"))
        .unwrap_or_default();
    let mut text = format!("{}://{userinfo}{host}{port}{}", url.scheme(), url.path());
    let query: Vec<String> = url
        .query_pairs()
        .map(|(name, value)| {
            if is_public_query(&name) {
                format!("{name}={value}")
            } else {
                format!("{name}=[redacted]")
            }
        })
        .collect();
    if !query.is_empty() {
        text.push('?');
        text.push_str(&query.join("&"));
    }
    text
}

/// One line for logs: the redacted base URL, the model and whether a key is set.
impl fmt::Display for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", redacted_url(&self.base_url))?;
        match &self.model {
            Some(model) => write!(f, ", model {model}")?,
            None => f.write_str(", model: the first the server lists")?,
        }
        f.write_str(if self.api_key.is_some() {
            ", API key set"
        } else {
            ", no API key"
        })
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
            .field("base_url", &redacted_url(&self.base_url))
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("model", &self.model)
            .field("extra_headers", &headers)
            .field("root_certificates", &self.root_certificates.len())
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
        assert_eq!(config.model(), Some(OpenAiConfig::DEFAULT_MODEL));
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
        assert_eq!(config.model(), Some("llama3.2"));
        assert!(!config.has_api_key());
    }

    #[test]
    fn env_leaves_the_model_to_a_local_server() {
        let local =
            OpenAiConfig::from_vars(vars(&[("OPENAI_BASE_URL", "http://localhost:11434/v1")]))
                .unwrap();
        assert_eq!(local.model(), None);
        let openai = OpenAiConfig::from_vars(vars(&[
            ("OPENAI_BASE_URL", "https://api.openai.com/v1/"),
            ("OPENAI_API_KEY", "sk-env"),
        ]))
        .unwrap();
        assert_eq!(openai.model(), Some(OpenAiConfig::DEFAULT_MODEL));
        assert_eq!(OpenAiConfig::local("http://h/v1", "  ").model(), None);
    }

    #[test]
    fn urls_are_shown_without_their_secrets() {
        assert_eq!(
            redacted_url(
                "http://bob:hunter2@10.0.0.5:8000/v1?api_key=abc&api-version=2024-10-21#x"
            ),
            "http://[redacted]@10.0.0.5:8000/v1?api_key=[redacted]&api-version=2024-10-21"
        );
        assert_eq!(
            redacted_url("https://api.openai.com/v1"),
            "https://api.openai.com/v1"
        );
        assert_eq!(redacted_url("not a url with pass:word"), "[not a URL]");
        let config = OpenAiConfig::local("http://bob:hunt%3Fer2@h/v1?key=s%2Fecret1", "m");
        let secrets = config.secrets();
        for secret in ["hunt%3Fer2", "hunt?er2", "s%2Fecret1", "s/ecret1"] {
            assert!(
                secrets.iter().any(|s| s == secret),
                "{secret} not in {secrets:?}"
            );
        }
        let printed = format!("{config:?} {config}");
        assert!(
            !printed.contains("hunt") && !printed.contains("ecret1"),
            "{printed}"
        );
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
