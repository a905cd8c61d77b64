//! What the server is told by flags and environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// The example server's settings. Every flag can also be given by the environment
/// variable named in `--help`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "server",
    about = "A chat server with a conversation sidebar",
    version
)]
pub struct Settings {
    /// Address to listen on (`PORT` alone sets the port on 127.0.0.1).
    #[arg(long, env = "BIND")]
    pub bind: Option<SocketAddr>,

    /// Port on 127.0.0.1, when `--bind` is not given.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Where conversations live: a SQLite file path (or `sqlite://path`), a
    /// `postgres://` URL, or `memory` for nothing kept.
    #[arg(long, env = "DATABASE_URL", default_value = "data/conversations.db")]
    pub database_url: String,

    /// The PostgreSQL schema holding the store's tables (default `public`), so that
    /// several deployments, or tests, can share one database.
    #[arg(long, env = "DATABASE_SCHEMA")]
    pub database_schema: Option<String>,

    /// Pause between the words of the offline echo reply, in milliseconds.
    #[arg(long, env = "OFFLINE_ECHO_DELAY_MS", default_value_t = 15)]
    pub offline_echo_delay_ms: u64,
}

/// Which store [`Settings::database_url`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server.
    Postgres(String),
    /// The in-memory store: nothing survives a restart.
    Memory,
}

impl Settings {
    /// The address to listen on.
    pub fn address(&self) -> SocketAddr {
        self.bind
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], self.port)))
    }

    /// The store to open.
    pub fn database(&self) -> Database {
        let url = self.database_url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Database::Postgres(url.to_owned())
        } else if url == "memory" {
            Database::Memory
        } else {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(url);
            Database::Sqlite(PathBuf::from(path))
        }
    }

    /// The offline echo's pause between words.
    pub fn offline_echo_delay(&self) -> Duration {
        Duration::from_millis(self.offline_echo_delay_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Settings {
        Settings::try_parse_from(std::iter::once("server").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn database_urls() {
        let cases = [
            ("data/x.db", Database::Sqlite("data/x.db".into())),
            ("sqlite://data/x.db", Database::Sqlite("data/x.db".into())),
            ("sqlite:/tmp/x.db", Database::Sqlite("/tmp/x.db".into())),
            (
                "postgres://postgres@127.0.0.1/test",
                Database::Postgres("postgres://postgres@127.0.0.1/test".into()),
            ),
            ("memory", Database::Memory),
        ];
        for (url, expected) in cases {
            assert_eq!(
                parse(&["--database-url", url]).database(),
                expected,
                "{url}"
            );
        }
    }

    #[test]
    fn bind_wins_over_port() {
        assert_eq!(
            parse(&["--port", "8081"]).address().to_string(),
            "127.0.0.1:8081"
        );
        assert_eq!(
            parse(&["--port", "8081", "--bind", "0.0.0.0:9000"])
                .address()
                .to_string(),
            "0.0.0.0:9000"
        );
    }
}
