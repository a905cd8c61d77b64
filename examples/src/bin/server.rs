//! The example chat server: the sidebar web page at `/`, the API under
//! `/api/v1/connections`, conversations in `./data/conversations.db` by default.
//!
//! ```sh
//! cargo run --release -p conversation-examples --bin server -- --help
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)] // A program: it says where it listens.

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
    serve(
        listener,
        app.router.clone(),
        settings.serve_config(),
        shutdown_signal(),
    )
    .await;
    if let Some(retention) = retention {
        retention.stop().await;
    }
    info!("stopping: finishing titles and closing the store");
    app.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
