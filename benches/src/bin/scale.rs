//! `scale`: runs the scale workload against one store and prints the table.
//!
//! ```text
//! cargo run --release -p conversation-benches --bin scale -- \
//!     [--store sqlite|memory|postgres] [--quick] [--json FILE] [--dir DIR]
//!     [--postgres-url URL] [--sections ABCDEFG] [--seed-url URL]
//! ```

// A command-line tool: its table goes to stdout, its progress to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use conversation_benches::workload::{Config, run};
use conversation_benches::{Error, Result, StoreKind, report};

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

const USAGE: &str = "usage: scale [--store sqlite|memory|postgres] [--quick] [--json FILE] \
[--dir DIR] [--postgres-url URL] [--sections ABCDEFG] [--seed-url URL]

  --store         the store to measure (default sqlite)
  --quick         smaller counts, no 1,000,000-message conversation, no 100,000-conversation scope
  --json FILE     also write the report as JSON to FILE
  --dir DIR       put the SQLite file and the fsync probe in a new folder inside DIR
                  (default: the system's temporary folder)
  --postgres-url  the server for --store postgres (default $TEST_DATABASE_URL, else
                  postgres://postgres@127.0.0.1:5432/test); a schema of its own is
                  created and dropped
  --sections      run only these sections (letters A to G), e.g. to profile
  --seed-url      the seed stack's API (benches/seed, e.g.
                  http://127.0.0.1:8090/api/v1/connections): section E compares with it";

struct Args {
    config: Config,
    json: Option<PathBuf>,
}

fn parse() -> Result<Option<Args>> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut args = std::env::args().skip(1);
    let mut store = StoreKind::Sqlite;
    let mut quick = false;
    let mut json = None;
    let mut dir = None;
    let mut sections = "ABCDEFG".to_owned();
    let mut seed_url = None;
    let mut postgres_url =
        std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| Error::harness(format!("{name} needs a value\n{USAGE}")))
        };
        match arg.as_str() {
            "--store" => store = value("--store")?.parse()?,
            "--quick" => quick = true,
            "--json" => json = Some(PathBuf::from(value("--json")?)),
            "--dir" => dir = Some(PathBuf::from(value("--dir")?)),
            "--postgres-url" => postgres_url = value("--postgres-url")?,
            "--sections" => sections = value("--sections")?.to_ascii_uppercase(),
            "--seed-url" => seed_url = Some(value("--seed-url")?),
            "-h" | "--help" => return Ok(None),
            other => {
                return Err(Error::harness(format!(
                    "unknown argument {other:?}\n{USAGE}"
                )));
            }
        }
    }
    Ok(Some(Args {
        config: Config {
            store,
            quick,
            dir,
            postgres_url,
            command,
            sections,
            seed_url,
        },
        json,
    }))
}

fn main() -> ExitCode {
    match main_result() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("scale: {err}");
            ExitCode::FAILURE
        }
    }
}

fn main_result() -> Result<()> {
    let Some(args) = parse()? else {
        println!("{USAGE}");
        return Ok(());
    };
    if cfg!(debug_assertions) {
        eprintln!("scale: a debug build; figures mean little without --release");
    }
    eprintln!(
        "scale: measuring the {} store{}…",
        args.config.store,
        if args.config.quick { " (--quick)" } else { "" }
    );
    let report = run(&args.config)?;
    print!("{}", report::render(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("scale: wrote {}", path.display());
    }
    Ok(())
}
