//! The HTTP side: one reqwest client, the endpoint URLs, retries within a time
//! budget, and error bodies.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use conversation_core::{Error, ModelErrorKind};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Client, Response, StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::error::{error_parts, excerpt, is_quota_code, redact, remove_urls};
use crate::tls;
use crate::{OpenAiConfig, OpenAiError, TimeoutPhase};

/// The most of an error body read: enough for any JSON error, bounded against a
/// server that sends megabytes of HTML.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The most of a non-streamed answer read (a title is a few hundred bytes).
const MAX_ANSWER_BODY: usize = 1024 * 1024;

/// The most of a model list read: gateways that list hundreds of models with their
/// descriptions send a few MiB.
const MAX_MODELS_BODY: usize = 8 * 1024 * 1024;

/// How much of a server's error message is kept.
const MAX_ERROR_MESSAGE_CHARS: usize = 500;

/// How long the model list may take: it is a small, cheap request.
pub(crate) const MODELS_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed attempt: the error, and how long the server asked to wait.
pub(crate) struct Failure {
    pub(crate) error: OpenAiError,
    pub(crate) retry_after: Option<Duration>,
}

impl Failure {
    /// The core error, carrying the server's wait.
    pub(crate) fn into_error(self) -> Error {
        self.error.into_core(self.retry_after)
    }
}

impl From<OpenAiError> for Failure {
    fn from(error: OpenAiError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

/// The connection to one endpoint, shared by the chat model and the title generator.
pub(crate) struct Http {
    client: Client,
    endpoint: Url,
    models: Url,
    pub(crate) config: OpenAiConfig,
    secrets: Vec<String>,
    /// The configured model, or the one chosen from the server's list.
    model: OnceLock<String>,
    /// Whether streamed requests ask for usage; turned off for good when the server
    /// refuses `stream_options`.
    stream_usage: AtomicBool,
}

impl Http {
    pub(crate) fn new(config: OpenAiConfig) -> Result<Self, OpenAiError> {
        let chat = endpoint(&config.base_url, &["chat", "completions"])?;
        let models = endpoint(&config.base_url, &["models"])?;
        let mut headers = HeaderMap::new();
        if let Some(key) = &config.api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                OpenAiError::Config("the API key is not a valid header value".to_owned())
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        for (name, value) in &config.extra_headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| OpenAiError::Config(format!("{name:?} is not a valid header name")))?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                OpenAiError::Config(format!("the value of header {name:?} is not valid"))
            })?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        if chat.scheme() == "https" && !tls::ENABLED {
            return Err(OpenAiError::Config(tls::NO_TLS.to_owned()));
        }
        let client = tls::configure(Client::builder(), &config.root_certificates)?
            .connect_timeout(config.connect_timeout)
            .default_headers(headers)
            .user_agent(concat!(
                "conversation-llm-openai/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|error| {
                OpenAiError::Config(format!(
                    "cannot build the HTTP client: {}",
                    error.without_url()
                ))
            })?;
        let model = OnceLock::new();
        if let Some(name) = &config.model {
            let _ = model.set(name.clone());
        }
        Ok(Self {
            client,
            endpoint: chat,
            models,
            secrets: config.secrets(),
            stream_usage: AtomicBool::new(config.stream_usage),
            model,
            config,
        })
    }

    /// The model to ask: the configured one, else the first the server lists (asked
    /// once, within the time left before `deadline`).
    pub(crate) async fn model(&self, deadline: Option<Instant>) -> Result<&str, Error> {
        if let Some(model) = self.model.get() {
            return Ok(model);
        }
        let (limit, phase) =
            attempt_limit(MODELS_TIMEOUT, deadline, Instant::now()).map_err(Failure::into_error)?;
        let listed = self
            .list_models(self.models.clone(), limit, phase)
            .await
            .map_err(Failure::into_error)?;
        self.choose_model(&listed).ok_or_else(no_model_listed)
    }

    /// The configured or chosen model, if any yet.
    pub(crate) fn known_model(&self) -> Option<&str> {
        self.model.get().map(String::as_str)
    }

    /// Chooses the first of `listed` when no model is set yet; the model in use.
    pub(crate) fn choose_model(&self, listed: &[String]) -> Option<&str> {
        if self.model.get().is_none()
            && let Some(first) = listed.first()
        {
            let chosen = self.model.get_or_init(|| first.clone());
            info!(
                model = %chosen,
                listed = listed.len(),
                "no model configured: using the first one the server lists"
            );
        }
        self.known_model()
    }

    /// Whether streamed requests ask for token usage.
    pub(crate) fn stream_usage(&self) -> bool {
        self.stream_usage.load(Ordering::Relaxed)
    }

    /// Stops asking for token usage: the server refused `stream_options`.
    pub(crate) fn refuse_stream_usage(&self) {
        if self.stream_usage.swap(false, Ordering::Relaxed) {
            warn!(
                "the server refuses stream_options: asking again without it, and from now on \
                 (token usage will not be reported)"
            );
        }
    }

    /// Sends a non-streamed request and returns the successful answer's body,
    /// retrying as configured within `deadline`. Each attempt, body included, is
    /// bounded by the request timeout.
    pub(crate) async fn complete<B: Serialize + Sync>(
        &self,
        body: &B,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, Failure> {
        self.with_retries(deadline, || {
            let request = self.client.post(self.endpoint.clone()).json(body);
            self.fetch(request, MAX_ANSWER_BODY, "the answer")
        })
        .await
    }

    /// Sends a streamed request and returns the response once a successful status
    /// and headers arrived, retrying as configured within `deadline`. Each attempt
    /// waits at most the request timeout for the headers; the body is the caller's
    /// to read.
    pub(crate) async fn open_stream<B: Serialize + Sync>(
        &self,
        body: &B,
        deadline: Option<Instant>,
    ) -> Result<Response, Failure> {
        self.with_retries(deadline, || async move {
            let response = self
                .client
                .post(self.endpoint.clone())
                .json(body)
                .send()
                .await
                .map_err(|error| self.transport_error(error))?;
            if response.status().is_success() {
                Ok(response)
            } else {
                Err(self.status_failure(response).await)
            }
        })
        .await
    }

    /// `GET {base}/models`, once (no retry), within `limit`: the model names listed.
    pub(crate) async fn list_models(
        &self,
        url: Url,
        limit: Duration,
        phase: TimeoutPhase,
    ) -> Result<Vec<String>, Failure> {
        let attempt = async {
            let request = self.client.get(url);
            let bytes = self
                .fetch(request, MAX_MODELS_BODY, "the model list")
                .await?;
            model_names(&bytes).map_err(Failure::from)
        };
        tokio::time::timeout(limit, attempt)
            .await
            .unwrap_or_else(|_elapsed| Err(OpenAiError::Timeout { phase }.into()))
    }

    /// Sends `request` and reads its successful answer whole: at most `limit`
    /// bytes, or a `Decode` error naming `what` was too large.
    async fn fetch(
        &self,
        request: reqwest::RequestBuilder,
        limit: usize,
        what: &str,
    ) -> Result<Vec<u8>, Failure> {
        let response = request
            .send()
            .await
            .map_err(|error| self.transport_error(error))?;
        if !response.status().is_success() {
            return Err(self.status_failure(response).await);
        }
        let (bytes, complete) = read_bounded(response, limit)
            .await
            .map_err(|error| self.transport_error(error))?;
        if !complete {
            return Err(OpenAiError::Decode {
                message: format!("{what} is larger than {limit} bytes"),
            }
            .into());
        }
        Ok(bytes)
    }

    /// `{base}/models`.
    pub(crate) fn models_url(&self) -> Url {
        self.models.clone()
    }

    /// `{base}/v1/models`, when the base URL does not already end in `/v1`: where the
    /// models are when the base URL lacks its `/v1`.
    pub(crate) fn v1_models_url(&self) -> Option<Url> {
        let base = Url::parse(self.config.base_url.trim()).ok()?;
        let last = base.path_segments()?.rfind(|segment| !segment.is_empty());
        if last == Some("v1") {
            return None;
        }
        endpoint(&self.config.base_url, &["v1", "models"]).ok()
    }

    /// Runs `attempt` until it succeeds, fails for good, the retries run out or the
    /// start `deadline` leaves no room: see [`attempt_limit`] and
    /// [`Self::may_retry`].
    async fn with_retries<T, F, Fut>(
        &self,
        deadline: Option<Instant>,
        mut attempt: F,
    ) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let max_retries = self.config.max_retries;
        let mut retries = 0;
        loop {
            let (limit, phase) =
                attempt_limit(self.config.request_timeout, deadline, Instant::now())?;
            let failure = match tokio::time::timeout(limit, attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(failure)) => failure,
                Err(_elapsed) => OpenAiError::Timeout { phase }.into(),
            };
            if !failure.error.is_retryable() || retries >= max_retries {
                debug!(error = %failure.error, retries, "model request failed");
                return Err(failure);
            }
            let delay = self.retry_delay(retries, failure.retry_after);
            if !may_retry(deadline, Instant::now(), delay, failure.retry_after) {
                debug!(
                    error = %failure.error,
                    retries,
                    "model request failed; no retry fits before the start deadline"
                );
                return Err(failure);
            }
            retries += 1;
            warn!(
                error = %failure.error,
                retry = retries,
                max_retries,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "model request failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// The wait before retry number `retries + 1`: the server's `Retry-After` up to
    /// the cap, else capped exponential backoff with jitter (half to all of it).
    fn retry_delay(&self, retries: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.config.retry_after_max);
        }
        let factor = 1u32.checked_shl(retries).unwrap_or(u32::MAX);
        let nominal = self
            .config
            .backoff_base
            .saturating_mul(factor)
            .min(self.config.backoff_max);
        nominal.mul_f64(rand::random_range(0.5..=1.0))
    }

    /// The error for a transport failure, with the request's URL removed.
    pub(crate) fn transport_error(&self, error: reqwest::Error) -> Failure {
        let error = error.without_url();
        let error = if error.is_timeout() {
            OpenAiError::Timeout {
                phase: if error.is_connect() {
                    TimeoutPhase::Connect
                } else {
                    TimeoutPhase::Response
                },
            }
        } else if error.is_builder() {
            OpenAiError::Config(self.redact(&error.to_string()))
        } else if error.is_decode() {
            OpenAiError::Decode {
                message: self.redact(&error.to_string()),
            }
        } else {
            OpenAiError::Connection {
                source: Box::new(error),
            }
        };
        error.into()
    }

    /// The error for a non-success response, from its status, headers and body.
    async fn status_failure(&self, response: Response) -> Failure {
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = read_bounded(response, MAX_ERROR_BODY)
            .await
            .map(|(bytes, _)| bytes)
            .unwrap_or_default();
        let (code, message) = match serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .as_ref()
            .and_then(error_parts)
        {
            Some((code, message)) => (code, message),
            None => (None, non_json_message(status, &body)),
        };
        let message = excerpt(&self.redact(&message), MAX_ERROR_MESSAGE_CHARS);
        let error = if status == StatusCode::TOO_MANY_REQUESTS && !is_quota_code(code.as_deref()) {
            OpenAiError::RateLimited {
                retry_after,
                message,
            }
        } else {
            OpenAiError::Api {
                status: status.as_u16(),
                code,
                message,
            }
        };
        Failure { error, retry_after }
    }

    /// `text` (something the server sent) with the configured secrets and any URL
    /// removed.
    pub(crate) fn redact(&self, text: &str) -> String {
        // URLs first: a redacted secret inside one would hide where it ends.
        redact(&remove_urls(text), &self.secrets)
    }

    /// `error` with the server's message in it redacted, for errors read from a
    /// successful response (an error event, an error inside a 200).
    pub(crate) fn redact_error(&self, error: OpenAiError) -> OpenAiError {
        match error {
            OpenAiError::Stream { code, message } => OpenAiError::Stream {
                code,
                message: self.redact(&message),
            },
            OpenAiError::Api {
                status,
                code,
                message,
            } => OpenAiError::Api {
                status,
                code,
                message: self.redact(&message),
            },
            other => other,
        }
    }
}

/// How long the next attempt may take, and which wait that is: the request
/// timeout, cut to the time left before the start deadline. No attempt starts at or
/// after the deadline.
fn attempt_limit(
    timeout: Duration,
    deadline: Option<Instant>,
    now: Instant,
) -> Result<(Duration, TimeoutPhase), Failure> {
    let Some(deadline) = deadline else {
        return Ok((timeout, TimeoutPhase::Response));
    };
    let left = deadline.saturating_duration_since(now);
    if left.is_zero() {
        Err(OpenAiError::Timeout {
            phase: TimeoutPhase::StartDeadline,
        }
        .into())
    } else if left < timeout {
        Ok((left, TimeoutPhase::StartDeadline))
    } else {
        Ok((timeout, TimeoutPhase::Response))
    }
}

/// Whether a retry after `delay` fits before the start deadline: the wait must end
/// before it, and so must the wait the server asked for (`retry_after`, uncapped: a
/// retry sooner than the server said would be refused again).
fn may_retry(
    deadline: Option<Instant>,
    now: Instant,
    delay: Duration,
    retry_after: Option<Duration>,
) -> bool {
    let Some(deadline) = deadline else {
        return true;
    };
    let wait = retry_after.map_or(delay, |asked| asked.max(delay));
    now + wait < deadline
}

/// The error of a request that needs a model when none is configured and the server
/// lists none.
fn no_model_listed() -> Error {
    Error::model(
        ModelErrorKind::NotFound,
        "no model is configured and the provider lists none. Set the model name \
         (OPENAI_MODEL).",
    )
}

/// The names in a model list: `{"data": [{"id": …}, …]}` (OpenAI, Ollama, vLLM,
/// llama.cpp, LiteLLM).
fn model_names(body: &[u8]) -> Result<Vec<String>, OpenAiError> {
    #[derive(Deserialize)]
    struct List {
        data: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        id: String,
    }
    let list: List = serde_json::from_slice(body).map_err(|error| OpenAiError::Decode {
        message: format!("the model list is not {{\"data\": [{{\"id\": …}}]}}: {error}"),
    })?;
    Ok(list.data.into_iter().map(|entry| entry.id).collect())
}

fn non_json_message(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no error message")
            .to_owned()
    } else {
        format!("non-JSON error body: {}", excerpt(&text, 200))
    }
}

/// `{base}/<segments…>`, keeping any query string of the base URL. Errors never echo
/// the URL: it may hold a password or a key.
fn endpoint(base_url: &str, segments: &[&str]) -> Result<Url, OpenAiError> {
    let mut url = Url::parse(base_url.trim()).map_err(|error| {
        OpenAiError::Config(format!(
            "the base URL is not a URL ({error}); it looks like http://localhost:11434/v1"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(OpenAiError::Config(
            "the base URL is not http or https; it looks like http://localhost:11434/v1".to_owned(),
        ));
    }
    if url
        .path()
        .trim_end_matches('/')
        .ends_with("/chat/completions")
    {
        return Err(OpenAiError::Config(
            "the base URL ends in /chat/completions: give the API's base (e.g. \
             https://api.openai.com/v1), the client appends /chat/completions itself"
                .to_owned(),
        ));
    }
    url.path_segments_mut()
        .map_err(|()| OpenAiError::Config("the base URL cannot have a path".to_owned()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// The server's requested wait: `retry-after-ms` (OpenAI's, milliseconds), else
/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = text(RETRY_AFTER.as_str())?;
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// Reads at most `limit` bytes of the body; `true` when the whole body fit.
async fn read_bounded(
    mut response: Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit.saturating_sub(body.len());
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_keeps_the_base_path_and_query() {
        let url = |base: &str| endpoint(base, &["chat", "completions"]).map(|u| u.to_string());
        assert_eq!(
            url("https://api.openai.com/v1").unwrap(),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            url("http://localhost:11434/v1/").unwrap(),
            "http://localhost:11434/v1/chat/completions"
        );
        assert_eq!(
            url("https://res.openai.azure.com/openai/deployments/gpt4o?api-version=2024-10-21")
                .unwrap(),
            "https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
        );
        assert!(matches!(url("localhost:8000"), Err(OpenAiError::Config(_))));
        assert!(matches!(url("not a url"), Err(OpenAiError::Config(_))));
    }

    #[test]
    fn attempts_fit_the_start_deadline() {
        let now = Instant::now();
        let timeout = Duration::from_secs(45);
        let limit = |deadline| attempt_limit(timeout, deadline, now).map_err(|f| f.error);
        assert!(matches!(limit(None), Ok((t, TimeoutPhase::Response)) if t == timeout));
        let far = Some(now + Duration::from_secs(120));
        assert!(matches!(limit(far), Ok((t, TimeoutPhase::Response)) if t == timeout));
        let near = Some(now + Duration::from_secs(10));
        assert!(
            matches!(limit(near), Ok((t, TimeoutPhase::StartDeadline)) if t == Duration::from_secs(10))
        );
        for passed in [now, now - Duration::from_secs(1)] {
            assert!(matches!(
                limit(Some(passed)),
                Err(OpenAiError::Timeout {
                    phase: TimeoutPhase::StartDeadline
                })
            ));
        }

        let deadline = Some(now + Duration::from_secs(10));
        let second = Duration::from_secs(1);
        assert!(may_retry(None, now, second * 100, Some(second * 100)));
        assert!(may_retry(deadline, now, second, None));
        assert!(!may_retry(deadline, now, second * 10, None));
        // The server's wait counts in full, even when the wait itself is capped.
        assert!(!may_retry(deadline, now, second * 5, Some(second * 30)));
        assert!(may_retry(deadline, now, second * 5, Some(second * 5)));
    }

    #[test]
    fn the_default_timeouts_fit_two_attempts_in_two_minutes() {
        let worst_backoff = OpenAiConfig::DEFAULT_BACKOFF_BASE;
        let two_attempts = OpenAiConfig::DEFAULT_REQUEST_TIMEOUT * 2 + worst_backoff;
        assert!(two_attempts < Duration::from_secs(120), "{two_attempts:?}");
    }

    #[test]
    fn retry_after_reads_milliseconds_seconds_and_dates() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_str(value).unwrap());
            }
            map
        };
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "250"), ("retry-after", "9")])),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(&headers(&[(
                "retry-after",
                "Wed, 21 Oct 2015 07:28:00 GMT"
            )])),
            Some(Duration::ZERO)
        );
        let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(30)).to_rfc2822();
        let wait = retry_after(&headers(&[("retry-after", &soon)])).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-1")])), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let config = OpenAiConfig::local("http://127.0.0.1:9/v1", "m")
            .with_backoff(Duration::from_millis(100), Duration::from_millis(350))
            .with_retry_after_max(Duration::from_secs(1));
        let http = Http::new(config).unwrap();
        for _ in 0..50 {
            let first = http.retry_delay(0, None);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let second = http.retry_delay(1, None);
            assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
            let capped = http.retry_delay(40, None);
            assert!(capped >= Duration::from_millis(175) && capped <= Duration::from_millis(350));
        }
        assert_eq!(
            http.retry_delay(0, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
        assert_eq!(
            http.retry_delay(0, Some(Duration::from_secs(90))),
            Duration::from_secs(1)
        );
    }
}
