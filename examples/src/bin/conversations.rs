//! The admin command: list, show, export, import, purge, back up and count the
//! conversations of the example server's store. The logic is
//! [`conversation_examples::admin`]; `--help` lists the subcommands and exit codes.
//!
//! ```sh
//! cargo run --release -p conversation-examples --bin conversations -- \
//!     export --scope analytics-db > analytics-db.jsonl
//! ```

#![allow(clippy::print_stderr)] // A program: its errors are its output.

use std::process::ExitCode;

use clap::Parser as _;
use conversation_examples::admin::{AdminCli, describe, run};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    // Quiet by default: the output is the command's; RUST_LOG=info shows the store's log.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = AdminCli::parse();
    let mut stdout = std::io::stdout();
    match run(cli, &mut stdout).await {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            ExitCode::from(error.exit().code())
        }
    }
}
