//! The TLS backend of the HTTP client, as the crate's features chose it, and the extra
//! root certificates a host trusts.
//!
//! reqwest is built with `rustls-no-provider` for both rustls features: with it,
//! reqwest has no crypto provider of its own, so the client gets a rustls
//! configuration built here with the provider the feature names. That keeps aws-lc-rs
//! (and its C build) out of hosts that chose *ring*, and installs nothing
//! process-wide.

use reqwest::ClientBuilder;

use crate::OpenAiError;

/// Parses every PEM `CERTIFICATE` of the configured root certificates into DER.
#[cfg(any(
    feature = "tls-rustls-ring",
    feature = "tls-rustls-aws-lc-rs",
    feature = "tls-native-tls"
))]
fn parse_roots(
    pems: &[Vec<u8>],
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, OpenAiError> {
    use rustls_pki_types::pem::PemObject as _;

    let mut roots = Vec::new();
    for (index, pem) in pems.iter().enumerate() {
        let number = index + 1;
        let before = roots.len();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            roots.push(cert.map_err(|error| {
                OpenAiError::Config(format!(
                    "root certificate {number} is not valid PEM: {error}"
                ))
            })?);
        }
        if roots.len() == before {
            return Err(OpenAiError::Config(format!(
                "root certificate {number} holds no PEM CERTIFICATE block"
            )));
        }
    }
    Ok(roots)
}

/// Sets the client's TLS backend: the platform's TLS library when `tls-native-tls` is
/// enabled (the explicit choice wins over the default `tls-rustls-ring`), with the
/// platform's root certificates plus the configured ones.
#[cfg(feature = "tls-native-tls")]
pub(crate) fn configure(
    builder: ClientBuilder,
    root_certificates: &[Vec<u8>],
) -> Result<ClientBuilder, OpenAiError> {
    let roots = parse_roots(root_certificates)?
        .iter()
        .map(|der| reqwest::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| OpenAiError::Config(format!("a root certificate: {error}")))?;
    Ok(builder.tls_backend_native().tls_certs_merge(roots))
}

/// Sets the client's TLS backend: rustls with the crypto provider of
/// `crypto_provider`, the platform's root certificates plus the configured ones.
#[cfg(all(
    not(feature = "tls-native-tls"),
    any(feature = "tls-rustls-ring", feature = "tls-rustls-aws-lc-rs")
))]
pub(crate) fn configure(
    builder: ClientBuilder,
    root_certificates: &[Vec<u8>],
) -> Result<ClientBuilder, OpenAiError> {
    use std::sync::Arc;

    let roots = parse_roots(root_certificates)?;
    let provider = crypto_provider();
    let tls_error = |error: rustls::Error| OpenAiError::Config(format!("TLS: {error}"));
    // What reqwest's own rustls backend does: the platform verifier (the system's
    // roots, as the OS validates them) with the extra roots added.
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider.clone())
            .map_err(tls_error)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // The client speaks HTTP/1.1 only (reqwest is built without `http2`).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(builder.tls_backend_preconfigured(config))
}

/// The crypto provider rustls uses: the process-wide default when the host installed
/// one (`CryptoProvider::install_default`), else aws-lc-rs with
/// `tls-rustls-aws-lc-rs` (the explicit choice wins over the default), else *ring*.
#[cfg(all(
    not(feature = "tls-native-tls"),
    any(feature = "tls-rustls-ring", feature = "tls-rustls-aws-lc-rs")
))]
fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    if let Some(installed) = rustls::crypto::CryptoProvider::get_default() {
        return installed.clone();
    }
    #[cfg(feature = "tls-rustls-aws-lc-rs")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(not(feature = "tls-rustls-aws-lc-rs"))]
    let provider = rustls::crypto::ring::default_provider();
    std::sync::Arc::new(provider)
}

/// Without a TLS feature the client speaks plain HTTP only: an `https` base URL or a
/// root certificate is a configuration error, reported when the client is built.
#[cfg(not(any(
    feature = "tls-rustls-ring",
    feature = "tls-rustls-aws-lc-rs",
    feature = "tls-native-tls"
)))]
pub(crate) fn configure(
    builder: ClientBuilder,
    root_certificates: &[Vec<u8>],
) -> Result<ClientBuilder, OpenAiError> {
    if root_certificates.is_empty() {
        Ok(builder)
    } else {
        Err(OpenAiError::Config(NO_TLS.to_owned()))
    }
}

/// Whether the crate was built with a TLS backend.
pub(crate) const ENABLED: bool = cfg!(any(
    feature = "tls-rustls-ring",
    feature = "tls-rustls-aws-lc-rs",
    feature = "tls-native-tls"
));

/// The error text for HTTPS asked of a build without TLS.
pub(crate) const NO_TLS: &str = "conversation-llm-openai was built without a TLS feature \
     (tls-rustls-ring, tls-rustls-aws-lc-rs or tls-native-tls), so it speaks plain HTTP only";
