//! The example chat server: the sidebar web page at `/`, the API under
//! `/api/v1/connections`, conversations in `./data/conversations.db` by default.
//!
//! ```sh
//! cargo run --release -p conversation-examples --bin server -- --help
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)] // A program: it says where it listens.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use conversation_adapter_http::serve;
use conversation_examples::{App, RetentionTask, Settings, install_metrics};
use tokio::net::TcpListener;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal, plain lines for a file or a log collector.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let settings = Settings::parse();
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> Result<(), String> {
    let metrics = install_metrics().map_err(|e| e.to_string())?;
    let app = App::build(&settings, metrics)
        .await
        .map_err(|e| e.to_string())?;
    let address = settings.address();
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    let stop = shutdown_signal();
    // One line on stdout, for people and for the tests that start this binary.
    println!("listening on http://{local}");
    info!(%local, "listening");
    if !local.ip().is_loopback() {
        warn!(
            %local,
            "listening beyond loopback with open access: anyone who can reach this address \
             can read and write every scope; serve one person only, or put an authenticating \
             proxy (or a ScopeAuthorizer of your own) in front"
        );
    }
    let retention = settings.retention_policy().map(|policy| {
        RetentionTask::spawn(app.service.clone(), policy, settings.retention_interval())
    });
    serve(listener, app.router.clone(), settings.serve_config(), stop).await;
    if let Some(retention) = retention {
        retention.stop().await;
    }
    info!("stopping: finishing titles and closing the store");
    app.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM. The handlers are installed here, at once, not when the future
/// is first polled: a SIGTERM sent as soon as the server says where it listens must
/// stop it gracefully, not kill it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| {
            let installed = signal(kind);
            async move {
                match installed {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(error) => {
                        error!(%error, "cannot listen for {name}");
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let interrupt = listen(SignalKind::interrupt(), "Ctrl-C");
        let terminate = listen(SignalKind::terminate(), "SIGTERM");
        async move {
            tokio::select! {
                () = interrupt => {}
                () = terminate => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}
