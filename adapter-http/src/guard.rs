//! The `Host` and `Origin` guard against DNS rebinding and cross-site writes.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use axum::response::IntoResponse as _;
use tower::Layer;
use tower_http::csrf::{Csrf, CsrfLayer, ProtectionError, ResponseForProtectionError};
use tower_http::validate_request::{ValidateRequest, ValidateRequestHeader};

use crate::problem::Problem;
use crate::telemetry;

/// The host names a server answers to: the defence against DNS rebinding.
///
/// A browser enforces the same-origin policy by *name*: a page of
/// `http://rebind.attacker.test:3000` may read everything that name answers. An
/// attacker who makes that name resolve to `127.0.0.1` turns any page the user visits
/// into a client of a server on the user's machine, unless the server refuses
/// requests whose `Host` it does not know. [`AllowedHosts::loopback`] (the default)
/// answers only to `localhost`, `*.localhost`, `127.0.0.1` and `[::1]`; a request
/// whose `Host` (or HTTP/2 `:authority`) names anything else, or nothing, is answered
/// `403 host_not_allowed`. The port is not compared: rebinding changes the name,
/// never the port.
///
/// The same guard refuses writes from other sites (`403 cross_origin_refused`): a
/// request with a method other than `GET`, `HEAD` or `OPTIONS` whose
/// `Sec-Fetch-Site` is not `same-origin` or `none`, or, from older browsers, whose
/// `Origin` names another host than `Host` (tower-http's
/// [`CsrfLayer`], the scheme of Go's `CrossOriginProtection`). Clients that are not
/// browsers send neither header and pass.
///
/// ```
/// use conversation_adapter_http::AllowedHosts;
///
/// let hosts = AllowedHosts::loopback()
///     .allow("chat.example.com")?
///     .allow("*.internal.example.com")?;
/// assert!(hosts.allows("localhost:3000"));
/// assert!(hosts.allows("chat.example.com"));
/// assert!(hosts.allows("eu.internal.example.com:8443"));
/// assert!(!hosts.allows("rebind.attacker.test:3000"));
/// assert!(!hosts.allows(""));
/// # Ok::<(), conversation_adapter_http::InvalidHostPattern>(())
/// ```
#[derive(Clone)]
pub struct AllowedHosts {
    any: bool,
    patterns: Vec<HostPattern>,
    csrf: CsrfLayer<CrossOriginRejection>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Exactly this name or address literal (lowercase; IPv6 in brackets).
    Exact(String),
    /// Any name ending in this suffix, which starts with a dot.
    Subdomains(String),
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Subdomains(suffix) => write!(f, "*{suffix}"),
        }
    }
}

impl fmt::Debug for AllowedHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let patterns: Vec<String> = self.patterns.iter().map(ToString::to_string).collect();
        f.debug_struct("AllowedHosts")
            .field("any", &self.any)
            .field("patterns", &patterns)
            .finish_non_exhaustive()
    }
}

impl Default for AllowedHosts {
    /// [`AllowedHosts::loopback`].
    fn default() -> Self {
        Self::loopback()
    }
}

/// A host pattern or origin that [`AllowedHosts`] cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a host name, `*.` pattern, IP address or origin: {reason}")]
pub struct InvalidHostPattern {
    value: String,
    reason: String,
}

impl InvalidHostPattern {
    fn new(value: &str, reason: impl Into<String>) -> Self {
        Self {
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

impl AllowedHosts {
    /// `localhost`, any `*.localhost`, `127.0.0.1` and `[::1]`: the names that always
    /// mean this machine.
    pub fn loopback() -> Self {
        Self {
            any: false,
            patterns: vec![
                HostPattern::Exact("localhost".to_owned()),
                HostPattern::Subdomains(".localhost".to_owned()),
                HostPattern::Exact("127.0.0.1".to_owned()),
                HostPattern::Exact("[::1]".to_owned()),
            ],
            csrf: CsrfLayer::new().with_rejection_response(CrossOriginRejection),
        }
    }

    /// Every host name, for a server behind a proxy that checks `Host` itself.
    ///
    /// **This turns the DNS rebinding defence off**; writes from other sites are
    /// still refused.
    pub fn any() -> Self {
        Self {
            any: true,
            ..Self::loopback()
        }
    }

    /// Also answers to `pattern`: a host name (`chat.example.com`), every name under a
    /// domain (`*.example.com`, which does not match `example.com` itself), an IPv4
    /// address or an IPv6 address (with or without brackets). `*` alone is
    /// [`AllowedHosts::any`]. Names are compared ignoring ASCII case and a trailing dot.
    ///
    /// # Errors
    /// [`InvalidHostPattern`] for anything else (a port, a path, a bare `*.`).
    pub fn allow(mut self, pattern: &str) -> Result<Self, InvalidHostPattern> {
        let pattern = pattern.trim();
        if pattern == "*" {
            self.any = true;
            return Ok(self);
        }
        let parsed = if let Some(domain) = pattern.strip_prefix("*.") {
            let name = normalize_name(domain)
                .ok_or_else(|| InvalidHostPattern::new(pattern, "not a domain after `*.`"))?;
            HostPattern::Subdomains(format!(".{name}"))
        } else if let Ok(ip) = pattern
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            HostPattern::Exact(address_literal(ip))
        } else {
            HostPattern::Exact(normalize_name(pattern).ok_or_else(|| {
                InvalidHostPattern::new(pattern, "names are letters, digits, `-` and `.`")
            })?)
        };
        if !self.patterns.contains(&parsed) {
            self.patterns.push(parsed);
        }
        Ok(self)
    }

    /// Also answers to the address the server is bound to, so that clients may use it
    /// as the host name. An unspecified address (`0.0.0.0`, `::`) names no host and
    /// adds nothing.
    pub fn allow_address(mut self, address: IpAddr) -> Self {
        if !address.is_unspecified() {
            let exact = HostPattern::Exact(address_literal(address));
            if !self.patterns.contains(&exact) {
                self.patterns.push(exact);
            }
        }
        self
    }

    /// Also accepts writes from pages of `origin` (`https://app.example.com`, scheme,
    /// host and port exactly as the browser sends them in `Origin`), for a page served
    /// from another origin than this API.
    ///
    /// # Errors
    /// [`InvalidHostPattern`] when `origin` is not an `http` or `https` origin.
    pub fn trust_origin(mut self, origin: &str) -> Result<Self, InvalidHostPattern> {
        self.csrf = self
            .csrf
            .add_trusted_origin(origin)
            .map_err(|error| InvalidHostPattern::new(origin, error.to_string()))?;
        Ok(self)
    }

    /// Whether every host name is accepted ([`AllowedHosts::any`]).
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Whether a request whose `Host` header is `host` (with or without a port) is
    /// answered.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        host_of_authority(host).is_some_and(|name| self.patterns.iter().any(|p| p.matches(&name)))
    }

    /// The layer that enforces these hosts (and refuses cross-site writes) on every
    /// request of the service it wraps. [`router`](crate::router) applies it to its own
    /// routes; a host applies it to its whole app, as [`harden`](crate::harden) does.
    pub fn layer(&self) -> HostGuardLayer {
        HostGuardLayer {
            check: HostCheck(Arc::new(self.clone())),
        }
    }

    /// Why `request` is refused, if it is: its host names are checked here; the
    /// `Origin` check is the [`CsrfLayer`]'s.
    fn refusal<B>(&self, request: &Request<B>) -> Option<&'static str> {
        if self.any {
            return None;
        }
        let mut hosts = request.headers().get_all(header::HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Some("more than one Host header");
        }
        let host = host.map(|value| value.to_str().unwrap_or_default());
        let authority = request.uri().authority().map(|a| a.as_str());
        match (authority, host) {
            (None, None) => Some("no Host header"),
            (authority, host) => {
                let allowed = |name: Option<&str>| name.is_none_or(|name| self.allows(name));
                if allowed(authority) && allowed(host) {
                    None
                } else {
                    Some("a host name this server does not answer to")
                }
            }
        }
    }
}

/// The name part of a `Host` value or URI authority, normalised; `None` when it is not
/// a well-formed host.
fn host_of_authority(authority: &str) -> Option<String> {
    let authority = authority.trim();
    if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        return inside
            .parse::<IpAddr>()
            .ok()
            .filter(IpAddr::is_ipv6)
            .map(address_literal);
    }
    let name = match authority.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return None,
        None => authority,
    };
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(address_literal(ip));
    }
    normalize_name(name)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// A DNS name in lowercase without its trailing dot, or `None` when it holds anything
/// but letters, digits, `-` and `.` (or is empty).
fn normalize_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    valid.then(|| name.to_ascii_lowercase())
}

/// An address as it stands in a `Host` header: IPv6 in brackets.
fn address_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{v6}]"),
        },
    }
}

/// The host check of [`HostGuardLayer`], as a tower-http request validator.
#[derive(Debug, Clone)]
pub struct HostCheck(Arc<AllowedHosts>);

impl<B> ValidateRequest<B> for HostCheck {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request<B>) -> Result<(), Response<Body>> {
        let Some(reason) = self.0.refusal(request) else {
            return Ok(());
        };
        let host = request
            .headers()
            .get(header::HOST)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        tracing::info!(
            ?host,
            reason,
            "refused a request for another host (DNS rebinding guard)"
        );
        telemetry::refused("host");
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            "this server does not answer to the host name of this request (a defence \
             against DNS rebinding); its operator can allow more names",
        )
        .with_field("Host")
        .into_response())
    }
}

/// The response to a cross-site write: `403 cross_origin_refused`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrossOriginRejection;

impl ResponseForProtectionError<Body> for CrossOriginRejection {
    fn response_for_protection_error(&mut self, error: ProtectionError) -> Response<Body> {
        tracing::info!(%error, "refused a cross-origin write");
        telemetry::refused("origin");
        Problem::new(
            StatusCode::FORBIDDEN,
            "cross_origin_refused",
            "a request that changes data was sent by a page of another site; it was refused",
        )
        .with_field("Origin")
        .into_response()
    }
}

/// The layer of [`AllowedHosts::layer`]: refuses requests for other hosts, then
/// cross-site writes, with `403` problem documents.
#[derive(Debug, Clone)]
pub struct HostGuardLayer {
    check: HostCheck,
}

impl<S> Layer<S> for HostGuardLayer {
    type Service = ValidateRequestHeader<Csrf<S, CrossOriginRejection>, HostCheck>;

    fn layer(&self, inner: S) -> Self::Service {
        ValidateRequestHeader::custom(self.check.0.csrf.layer(inner), self.check.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_with_any_port_and_nothing_else() {
        let hosts = AllowedHosts::loopback();
        for host in [
            "localhost",
            "LOCALHOST:3000",
            "localhost.",
            "app.localhost:8080",
            "127.0.0.1",
            "127.0.0.1:3000",
            "[::1]",
            "[::1]:3000",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
        for host in [
            "",
            ":3000",
            "rebind.attacker.test",
            "rebind.attacker.test:3000",
            "localhost.attacker.test",
            "attacker-localhost",
            ".localhost",
            "127.0.0.2",
            "0.0.0.0:3000",
            "[::2]:3000",
            "::1",
            "localhost:3000:1",
            "localhost:port",
            "local host",
            "localhost@attacker.test",
            "[::1]x",
        ] {
            assert!(!hosts.allows(host), "{host:?}");
        }
    }

    #[test]
    fn more_names_addresses_and_everything() {
        let hosts = AllowedHosts::loopback()
            .allow("Chat.Example.com.")
            .unwrap()
            .allow("*.corp.test")
            .unwrap()
            .allow("fe80::1")
            .unwrap()
            .allow_address("192.168.1.5".parse().unwrap())
            .allow_address("0.0.0.0".parse().unwrap());
        for host in [
            "chat.example.com",
            "a.corp.test:1",
            "a.b.corp.test",
            "[fe80::1]:80",
            "192.168.1.5:3000",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
        for host in ["corp.test", "example.com", "0.0.0.0", "192.168.1.6"] {
            assert!(!hosts.allows(host), "{host}");
        }
        for bad in [
            "",
            "*.",
            "a b",
            "example.com:80",
            "http://example.com",
            "*x.com",
        ] {
            assert!(AllowedHosts::loopback().allow(bad).is_err(), "{bad:?}");
        }
        let any = AllowedHosts::loopback().allow("*").unwrap();
        assert!(any.allows_any() && any.allows("whatever.test"));
        assert!(AllowedHosts::loopback().trust_origin("file:///x").is_err());
    }
}
