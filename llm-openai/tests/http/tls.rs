//! HTTPS on 127.0.0.1: the client on the TLS backend this build chose (by default
//! rustls with *ring*) against the fake server behind TLS, presenting a certificate
//! that a certificate authority made by the test issued.

use super::*;

#[path = "tls_ca.rs"]
mod tls_ca;
use tls_ca::{TestCa, TlsListener};

/// A fake server answering with `script`, behind TLS with a certificate `ca` issued.
async fn serve_tls(script: Vec<Reply>, ca: &TestCa) -> FakeOpenAi {
    let listener = TlsListener::bind(ca.server_config(&["127.0.0.1", "localhost"])).await;
    let server = FakeOpenAi::serve_on(listener, "https").unwrap();
    server.push_all(script);
    server
}

/// An error's message followed by those of its sources.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}

#[tokio::test]
async fn a_title_and_a_streamed_reply_over_https_trusting_a_private_root() {
    let ca = TestCa::new("conversation test CA");
    let server = serve_tls(
        vec![
            Reply::completion("Largest tables", "stop"),
            Reply::text("Hello"),
        ],
        &ca,
    )
    .await;
    assert!(server.base_url().starts_with("https://127.0.0.1:"));
    let config = config(&server.base_url()).with_root_certificate(ca.pem());

    let titles = OpenAiTitleGenerator::new(config.clone()).unwrap();
    assert_eq!(
        titles.generate_title(&opening()).await.unwrap(),
        "Largest tables"
    );
    let model = OpenAiChatModel::new(config).unwrap();
    let reply = collect_reply(model.stream_reply(request()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(reply.content, "Hello");

    assert_eq!(server.requests(), 2);
    let seen = server.seen();
    assert_eq!(seen[1].uri, "/v1/chat/completions");
    assert_eq!(
        seen[1].header("authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_authority_is_refused_before_any_request() {
    let ca = TestCa::new("conversation test CA");
    let server = serve_tls(vec![Reply::text("Hello")], &ca).await;
    let other = TestCa::new("another CA");
    for config in [
        // The platform's roots only.
        config(&server.base_url()),
        // A private root, but not the one that issued the server's certificate.
        config(&server.base_url()).with_root_certificate(other.pem()),
    ] {
        let model = OpenAiChatModel::new(config.with_max_retries(0)).unwrap();
        let error = refused(&model).await;
        assert!(
            matches!(cause(&error), OpenAiError::Connection { .. }),
            "{error:?}"
        );
        let chain = chain(cause(&error));
        assert!(chain.contains("certificate"), "{chain}");
    }
    assert_eq!(server.requests(), 0);
}

#[tokio::test]
async fn a_root_certificate_that_is_not_one_is_refused_up_front() {
    let ca = TestCa::new("conversation test CA");
    let truncated = ca.pem()[..ca.pem().len() / 2].to_owned();
    for pem in [
        String::new(),
        "not a certificate".to_owned(),
        truncated,
        // A key is PEM, but not a certificate.
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"
            .to_owned(),
    ] {
        let config = config("https://127.0.0.1:1/v1")
            .with_root_certificate(ca.pem())
            .with_root_certificate(pem.clone());
        let error = OpenAiChatModel::new(config).unwrap_err();
        let OpenAiError::Config(message) = &error else {
            panic!("{pem:?}: {error:?}");
        };
        assert!(message.contains("root certificate 2"), "{pem:?}: {message}");
        assert!(matches!(Error::from(error), Error::InvalidInput { .. }));
    }
}
