//! What the server is told by flags and environment variables.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use conversation_adapter_http::{AllowedHosts, HttpLimits, InvalidHostPattern, ServeConfig};
use conversation_core::{RetentionPolicy, RunLimits, Scope};

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

    /// The sample shop database the agent's SQL tools read (`list_tables`,
    /// `describe_table`, `run_query`), created at first start: by default
    /// `sample.db` next to the SQLite conversations file (`data/sample.db` for other
    /// stores). `off` gives the model no tools.
    #[arg(long, env = "SAMPLE_DB")]
    pub sample_db: Option<String>,

    /// Pause between the words of the offline echo reply, in milliseconds.
    #[arg(long, env = "OFFLINE_ECHO_DELAY_MS", default_value_t = 15)]
    pub offline_echo_delay_ms: u64,

    /// More host names the server answers to, comma-separated (`chat.example.com`,
    /// `*.example.com`, an IP address, or `*` for any name behind a proxy that checks
    /// `Host`). `localhost`, `*.localhost`, `127.0.0.1`, `[::1]` and the bound address
    /// are always allowed. Required when `--bind` is `0.0.0.0` or `::`.
    #[arg(long, env = "ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Origins whose pages may write through the API (`https://app.example.com`),
    /// comma-separated, for a page served from another origin than this server.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Seconds a client has to send a request's headers (and how long an idle
    /// HTTP/1.1 connection stays open).
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value_t = 10)]
    pub header_read_timeout: u64,

    /// Seconds a connection may stay open with no request in flight.
    #[arg(long, env = "IDLE_TIMEOUT", default_value_t = 60)]
    pub idle_timeout: u64,

    /// Most connections open at once; more wait until one closes. Default 1024, or
    /// less when the open-file limit (`ulimit -n`) is lower.
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Seconds a graceful stop waits for requests in flight before closing them.
    #[arg(long, env = "SHUTDOWN_DEADLINE", default_value_t = 10)]
    pub shutdown_deadline: u64,

    /// Seconds a server vouches for a run it is running before renewing (every third
    /// of it). With PostgreSQL and several servers this bounds how long a stop asked
    /// through another server takes to reach the run (a third of it), and how long
    /// a crashed server's run stays `running` (all of it).
    #[arg(long, env = "RUN_LEASE", default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub run_lease: u64,

    /// Most replies streaming at once, in all and per scope (`429` beyond).
    #[arg(long, env = "MAX_REPLIES", default_value_t = 32)]
    pub max_replies: usize,

    /// Most replies streaming at once in one scope.
    #[arg(long, env = "MAX_REPLIES_PER_SCOPE", default_value_t = 4)]
    pub max_replies_per_scope: usize,

    /// Delete conversations with no activity for this many days (pinned ones never),
    /// in a background pass soon after start and then every `--retention-interval`.
    #[arg(long, env = "RETENTION_INACTIVE_DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub retention_inactive_days: Option<u32>,

    /// Delete conversations archived this many days ago (pinned ones never), in the
    /// same background pass.
    #[arg(long, env = "RETENTION_ARCHIVED_DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub retention_archived_days: Option<u32>,

    /// Seconds between two retention passes.
    #[arg(long, env = "RETENTION_INTERVAL", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_interval: u64,

    /// The scopes (database connections) the web page offers, comma-separated, first
    /// the default. The page adds the ones its user typed, kept in that browser.
    /// Served at `GET /api/v1/scopes`; `--scopes ''` offers none.
    #[arg(
        long,
        env = "SCOPES",
        value_delimiter = ',',
        default_value = "analytics-db,billing-db"
    )]
    pub scopes: Vec<String>,
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

impl Database {
    /// The store a `DATABASE_URL` names: a `postgres://` (or `postgresql://`) URL,
    /// `memory`, or else a SQLite file path, with or without `sqlite://`.
    pub fn from_url(url: &str) -> Self {
        let url = url.trim();
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
}

impl Settings {
    /// The address to listen on.
    pub fn address(&self) -> SocketAddr {
        self.bind
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], self.port)))
    }

    /// The store to open.
    pub fn database(&self) -> Database {
        Database::from_url(&self.database_url)
    }

    /// The retention policy of `--retention-inactive-days` and
    /// `--retention-archived-days`, or `None` when neither is set (nothing expires).
    pub fn retention_policy(&self) -> Option<RetentionPolicy> {
        let mut policy = RetentionPolicy::new();
        if let Some(days) = self.retention_inactive_days {
            policy = policy.inactive_days(days);
        }
        if let Some(days) = self.retention_archived_days {
            policy = policy.archived_days(days);
        }
        (!policy.is_empty()).then_some(policy)
    }

    /// The pause between two retention passes.
    pub fn retention_interval(&self) -> Duration {
        Duration::from_secs(self.retention_interval)
    }

    /// Where the sample database is, or `None` when the tools are turned off
    /// (`--sample-db off`).
    pub fn sample_db(&self) -> Option<PathBuf> {
        match self.sample_db.as_deref().map(str::trim) {
            Some("off") => None,
            Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
            _ => Some(match self.database() {
                Database::Sqlite(file) => file.with_file_name("sample.db"),
                Database::Postgres(_) | Database::Memory => PathBuf::from("data/sample.db"),
            }),
        }
    }

    /// The offline echo's pause between words.
    pub fn offline_echo_delay(&self) -> Duration {
        Duration::from_millis(self.offline_echo_delay_ms)
    }

    /// The host names to answer to: the loopback names, the bound address and
    /// `--allowed-hosts`, with the pages of `--allowed-origins` allowed to write.
    ///
    /// # Errors
    /// [`SettingsError`] for a malformed name or origin, or for a bind to every
    /// address (`0.0.0.0`, `::`) without `--allowed-hosts`: no name would be known,
    /// and the DNS rebinding defence would refuse every request but `localhost`'s.
    pub fn allowed_hosts(&self) -> Result<AllowedHosts, SettingsError> {
        let address = self.address().ip();
        if address.is_unspecified() && self.allowed_hosts.is_empty() {
            return Err(SettingsError::HostsRequired { address });
        }
        let mut hosts = AllowedHosts::loopback().allow_address(address);
        for name in self
            .allowed_hosts
            .iter()
            .filter(|name| !name.trim().is_empty())
        {
            hosts = hosts.allow(name)?;
        }
        for origin in self.allowed_origins.iter().filter(|o| !o.trim().is_empty()) {
            hosts = hosts.trust_origin(origin.trim())?;
        }
        Ok(hosts)
    }

    /// The scopes of [`Settings::scopes`], checked, blanks left out, each once.
    ///
    /// # Errors
    /// [`SettingsError::Scope`] for a name no scope may have (empty after trimming is
    /// left out; too long, control characters).
    pub fn known_scopes(&self) -> Result<Vec<Scope>, SettingsError> {
        let mut scopes: Vec<Scope> = Vec::new();
        for name in self.scopes.iter().map(|name| name.trim()) {
            if name.is_empty() {
                continue;
            }
            let scope = Scope::new(name).map_err(|source| SettingsError::Scope {
                name: name.to_owned(),
                source,
            })?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        Ok(scopes)
    }

    /// How to serve connections: timeouts, the connection cap, the shutdown deadline.
    pub fn serve_config(&self) -> ServeConfig {
        let mut config = ServeConfig::default()
            .with_header_read_timeout(Duration::from_secs(self.header_read_timeout))
            .with_idle_timeout(Duration::from_secs(self.idle_timeout))
            .with_shutdown_deadline(Duration::from_secs(self.shutdown_deadline));
        if let Some(connections) = self.max_connections {
            config = config.with_max_connections(connections);
        }
        config
    }

    /// The bounds of runs: the lease of `--run-lease`, the rest default.
    pub fn run_limits(&self) -> RunLimits {
        let mut limits = RunLimits::default();
        limits.lease = Duration::from_secs(self.run_lease);
        limits
    }

    /// The HTTP limits of the API: the reply bounds, the rest default.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits::default()
            .with_max_concurrent_replies(self.max_replies)
            .with_max_concurrent_replies_per_scope(self.max_replies_per_scope)
    }
}

/// Settings that cannot be used together or at all.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Bound to every address with no host name to answer to.
    #[error(
        "listening on {address} needs --allowed-hosts (ALLOWED_HOSTS): the host names \
         clients use to reach this server; without them every request but localhost's \
         would be refused (the DNS rebinding defence)"
    )]
    HostsRequired {
        /// The unspecified address.
        address: IpAddr,
    },
    /// A name in `--scopes` that no scope may have.
    #[error("--scopes: {name:?} is not a scope: {source}")]
    Scope {
        /// The name as given.
        name: String,
        /// Why.
        #[source]
        source: conversation_core::Error,
    },
    /// A malformed host name or origin.
    #[error("--allowed-hosts or --allowed-origins: {0}")]
    Host(#[from] InvalidHostPattern),
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
    fn the_sample_database_sits_next_to_the_conversations_or_is_turned_off() {
        let cases = [
            (vec![], Some("data/sample.db")),
            (
                vec!["--database-url", "/srv/chat/c.db"],
                Some("/srv/chat/sample.db"),
            ),
            (vec!["--database-url", "c.db"], Some("sample.db")),
            (vec!["--database-url", "memory"], Some("data/sample.db")),
            (vec!["--sample-db", "/tmp/shop.db"], Some("/tmp/shop.db")),
            (vec!["--sample-db", "off"], None),
        ];
        for (args, expected) in cases {
            assert_eq!(
                parse(&args).sample_db(),
                expected.map(PathBuf::from),
                "{args:?}"
            );
        }
    }

    #[test]
    fn allowed_hosts_add_to_loopback_and_the_bound_address() {
        let hosts = parse(&["--bind", "192.168.1.5:3000"])
            .allowed_hosts()
            .unwrap();
        assert!(hosts.allows("192.168.1.5:3000") && hosts.allows("localhost:3000"));
        assert!(!hosts.allows("chat.example.com"));
        let hosts = parse(&["--allowed-hosts", "chat.example.com, *.corp.test"])
            .allowed_hosts()
            .unwrap();
        assert!(hosts.allows("chat.example.com") && hosts.allows("a.corp.test"));
        let everywhere = parse(&["--bind", "0.0.0.0:3000"]).allowed_hosts();
        assert!(
            matches!(everywhere, Err(SettingsError::HostsRequired { .. })),
            "{everywhere:?}"
        );
        let named = parse(&["--bind", "[::]:3000", "--allowed-hosts", "chat.example.com"]);
        assert!(named.allowed_hosts().unwrap().allows("chat.example.com"));
        assert!(parse(&["--allowed-hosts", "a b"]).allowed_hosts().is_err());
        assert!(
            parse(&["--allowed-origins", "ftp://x"])
                .allowed_hosts()
                .is_err()
        );
    }

    #[test]
    fn retention_flags_make_a_policy_that_never_takes_pinned_ones() {
        assert_eq!(parse(&[]).retention_policy(), None);
        let policy = parse(&["--retention-inactive-days", "30"])
            .retention_policy()
            .unwrap();
        assert_eq!(policy, RetentionPolicy::new().inactive_days(30));
        assert!(!policy.include_pinned);
        let both = parse(&[
            "--retention-inactive-days",
            "90",
            "--retention-archived-days",
            "7",
        ]);
        assert_eq!(
            both.retention_policy(),
            Some(RetentionPolicy::new().inactive_days(90).archived_days(7))
        );
        assert_eq!(both.retention_interval(), Duration::from_secs(3600));
        for zero in ["--retention-inactive-days", "--retention-archived-days"] {
            let refused = Settings::try_parse_from(["server", zero, "0"]);
            assert!(refused.is_err(), "{zero} 0 would delete everything at once");
        }
    }

    #[test]
    fn scopes_are_checked_trimmed_and_listed_once() {
        let names = |settings: Settings| -> Vec<String> {
            settings
                .known_scopes()
                .unwrap()
                .into_iter()
                .map(String::from)
                .collect()
        };
        assert_eq!(names(parse(&[])), ["analytics-db", "billing-db"]);
        assert_eq!(
            names(parse(&["--scopes", " sales , ,sales,hr"])),
            ["sales", "hr"]
        );
        assert!(names(parse(&["--scopes", ""])).is_empty());
        let long = "x".repeat(300);
        assert!(matches!(
            parse(&["--scopes", &long]).known_scopes(),
            Err(SettingsError::Scope { .. })
        ));
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
