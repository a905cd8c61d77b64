//! The HTTP side: one reqwest client, the endpoint URL, retries and error bodies.

use std::future::Future;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Client, Response, StatusCode, Url};
use serde::Serialize;
use tracing::{debug, warn};

use crate::error::{error_parts, excerpt, is_quota_code, redact};
use crate::{OpenAiConfig, OpenAiError, TimeoutPhase};

/// The most of an error body read: enough for any JSON error, bounded against a
/// server that sends megabytes of HTML.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The most of a non-streamed answer read (a title is a few hundred bytes).
const MAX_ANSWER_BODY: usize = 1024 * 1024;

/// How much of a server's error message is kept.
const MAX_ERROR_MESSAGE_CHARS: usize = 500;

/// A failed attempt: the error, and how long the server asked to wait.
struct Failure {
    error: OpenAiError,
    retry_after: Option<Duration>,
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
    pub(crate) config: OpenAiConfig,
    secrets: Vec<String>,
}

impl Http {
    pub(crate) fn new(config: OpenAiConfig) -> Result<Self, OpenAiError> {
        if config.model.trim().is_empty() {
            return Err(OpenAiError::Config("the model name is empty".to_owned()));
        }
        let endpoint = endpoint(&config.base_url)?;
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
        let client = Client::builder()
            .connect_timeout(config.connect_timeout)
            .default_headers(headers)
            .user_agent(concat!(
                "conversation-llm-openai/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|error| {
                OpenAiError::Config(format!("cannot build the HTTP client: {error}"))
            })?;
        Ok(Self {
            client,
            endpoint,
            secrets: config.secrets(),
            config,
        })
    }

    /// Sends a non-streamed request and returns the successful answer's body,
    /// retrying as configured. Each attempt is bounded by the request timeout.
    pub(crate) async fn complete<B: Serialize + Sync>(
        &self,
        body: &B,
    ) -> Result<Vec<u8>, OpenAiError> {
        self.with_retries(|| async move {
            let response = self
                .client
                .post(self.endpoint.clone())
                .timeout(self.config.request_timeout)
                .json(body)
                .send()
                .await
                .map_err(|error| self.transport_error(error))?;
            if !response.status().is_success() {
                return Err(self.status_failure(response).await);
            }
            let (bytes, complete) = read_bounded(response, MAX_ANSWER_BODY)
                .await
                .map_err(|error| self.transport_error(error))?;
            if !complete {
                return Err(OpenAiError::Decode {
                    message: format!("the answer is larger than {MAX_ANSWER_BODY} bytes"),
                }
                .into());
            }
            Ok(bytes)
        })
        .await
    }

    /// Sends a streamed request and returns the response once a successful status
    /// and headers arrived, retrying as configured. Each attempt waits at most the
    /// request timeout for the headers; the body is the caller's to read.
    pub(crate) async fn open_stream<B: Serialize + Sync>(
        &self,
        body: &B,
    ) -> Result<Response, OpenAiError> {
        self.with_retries(|| async move {
            let attempt = async {
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
            };
            tokio::time::timeout(self.config.request_timeout, attempt)
                .await
                .unwrap_or_else(|_elapsed| {
                    Err(OpenAiError::Timeout {
                        phase: TimeoutPhase::Response,
                    }
                    .into())
                })
        })
        .await
    }

    async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T, OpenAiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let max_retries = self.config.max_retries;
        let mut retries = 0;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Failure { error, retry_after }) => {
                    if !error.is_retryable() || retries >= max_retries {
                        debug!(%error, retries, "model request failed");
                        return Err(error);
                    }
                    let delay = self.retry_delay(retries, retry_after);
                    retries += 1;
                    warn!(
                        %error,
                        retry = retries,
                        max_retries,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "model request failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
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

    fn transport_error(&self, error: reqwest::Error) -> Failure {
        let error = if error.is_timeout() {
            OpenAiError::Timeout {
                phase: if error.is_connect() {
                    TimeoutPhase::Connect
                } else {
                    TimeoutPhase::Response
                },
            }
        } else if error.is_builder() {
            OpenAiError::Config(redact(&error.to_string(), &self.secrets))
        } else if error.is_decode() {
            OpenAiError::Decode {
                message: redact(&error.to_string(), &self.secrets),
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
        let message = excerpt(&redact(&message, &self.secrets), MAX_ERROR_MESSAGE_CHARS);
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

    /// `text` (something the server sent) with the configured secrets removed.
    pub(crate) fn redact(&self, text: &str) -> String {
        redact(text, &self.secrets)
    }
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

/// `…/v1` + `/chat/completions`, keeping any query string of the base URL.
fn endpoint(base_url: &str) -> Result<Url, OpenAiError> {
    let mut url = Url::parse(base_url.trim())
        .map_err(|error| OpenAiError::Config(format!("base URL {base_url:?}: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(OpenAiError::Config(format!(
            "base URL {base_url:?} is not http or https"
        )));
    }
    url.path_segments_mut()
        .map_err(|()| OpenAiError::Config(format!("base URL {base_url:?} cannot have a path")))?
        .pop_if_empty()
        .extend(["chat", "completions"]);
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
        let url = |base: &str| endpoint(base).map(|u| u.to_string());
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
