//! TLS to PostgreSQL (the crate's default feature, `tls-rustls-ring`), against a
//! throwaway cluster of this test's own on 127.0.0.1: the shared server on 5432 speaks
//! no TLS and is left alone.
//!
//! The cluster is made with PostgreSQL's server programs (`initdb`, `pg_ctl`; by
//! default the newest under `/usr/lib/postgresql/*/bin`, or `PG_BINDIR`), as the
//! current user or, when that is root (which PostgreSQL refuses to run as), as the
//! `postgres` user through `runuser`. It accepts TLS connections only, with a
//! certificate for 127.0.0.1 that a certificate authority made by the test issued.
//! Without those programs the test prints `SKIPPED` and passes, unless
//! `REQUIRE_POSTGRES=1`, which makes that a failure; once they are there, any failure
//! to start the cluster fails the test.

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use conversation_core::{Error, NewConversation, Scope, Store};
use conversation_store_postgres::{PostgresOptions, PostgresStore};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::support;

/// A certificate authority made by the test: its PEM, and the issuer to sign with.
fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Who runs the server programs: the current user, or `postgres` when that is root.
struct ServerUser {
    /// `Some((uid, gid))` of `postgres` when the programs run through `runuser`.
    switch_to: Option<(u32, u32)>,
}

impl ServerUser {
    fn find() -> Result<Self, String> {
        if id(&["-u"])? != 0 {
            return Ok(Self { switch_to: None });
        }
        let uid = id(&["-u", "postgres"]).map_err(|e| format!("no postgres user: {e}"))?;
        let gid = id(&["-g", "postgres"])?;
        Ok(Self {
            switch_to: Some((uid, gid)),
        })
    }

    fn command(&self, program: &Path) -> Command {
        match self.switch_to {
            None => Command::new(program),
            Some(_) => {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(program);
                command
            }
        }
    }

    /// Gives `path` to the server's user (a no-op when that is the current user).
    fn own(&self, path: &Path) {
        if let Some((uid, gid)) = self.switch_to {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }
}

fn id(args: &[&str]) -> Result<u32, String> {
    let output = Command::new("id")
        .args(args)
        .output()
        .map_err(|e| format!("id: {e}"))?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| format!("id {args:?}: {}", String::from_utf8_lossy(&output.stderr)))
}

/// The directory of `initdb` and `pg_ctl`.
fn server_bindir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("/usr/lib/postgresql: {e}"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .ok_or("no version under /usr/lib/postgresql")?;
    Ok(PathBuf::from(format!("/usr/lib/postgresql/{newest}/bin")))
}

/// A running throwaway cluster that accepts TLS connections only; stopped and removed
/// when dropped.
struct TlsCluster {
    user: ServerUser,
    pg_ctl: PathBuf,
    data: PathBuf,
    port: u16,
    /// The PEM of the CA that issued the server's certificate.
    ca_file: PathBuf,
    dir: TempDir,
}

impl TlsCluster {
    /// Starts one, or says why this machine cannot.
    fn start() -> Result<Self, String> {
        let bindir = server_bindir()?;
        let (initdb, pg_ctl) = (bindir.join("initdb"), bindir.join("pg_ctl"));
        if !initdb.is_file() || !pg_ctl.is_file() {
            return Err(format!("no initdb and pg_ctl in {}", bindir.display()));
        }
        let user = ServerUser::find()?;

        // Past this point the machine has what it takes: a failure is a failure.
        let dir = tempfile::Builder::new()
            .prefix("conv-pg-tls-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        user.own(dir.path());
        let data = dir.path().join("data");
        run(user
            .command(&initdb)
            .args(["--auth=trust", "--no-sync", "--username=postgres", "-D"])
            .arg(&data));

        let ca = certificate_authority("conversation test CA");
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        for (name, contents) in [
            ("server.crt", cert.pem()),
            ("server.key", key.serialize_pem()),
        ] {
            let path = data.join(name);
            std::fs::write(&path, contents).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            user.own(&path);
        }

        // A port that was free a moment ago; the cluster takes it at once.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        append(
            &data.join("postgresql.conf"),
            &format!(
                "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                 ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
                 fsync = off\nmax_connections = 20\n",
                dir.path().display()
            ),
        );
        // TCP only with TLS: a plaintext connection matches no line and is refused.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();

        let cluster = Self {
            user,
            pg_ctl,
            data,
            port,
            ca_file,
            dir,
        };
        let log = cluster.dir.path().join("server.log");
        let started = cluster
            .user
            .command(&cluster.pg_ctl)
            .args(["start", "--wait", "--timeout=20", "-D"])
            .arg(&cluster.data)
            .arg("-l")
            .arg(&log)
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "pg_ctl start failed: {}\n{}",
            describe(&started),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Ok(cluster)
    }

    /// A URL for database `postgres` with `sslmode` and `params`.
    fn url(&self, sslmode: &str, params: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode={sslmode}{params}",
            self.port
        )
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = self
            .user
            .command(&self.pg_ctl)
            .args(["stop", "--mode=immediate", "--wait", "-D"])
            .arg(&self.data)
            .output();
    }
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        describe(&output)
    );
}

fn describe(output: &Output) -> String {
    format!(
        "{}: {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn options() -> PostgresOptions {
    PostgresOptions::new().acquire_timeout(Duration::from_secs(10))
}

/// `sslmode=verify-full` with the test's CA as `sslrootcert`: the store connects over
/// TLS (the server says so) and works. A plaintext connection is refused by the
/// server; a certificate from another CA is refused by the client, as a permanent
/// error.
#[tokio::test]
async fn a_store_connects_over_verified_tls_and_nothing_else_gets_in() {
    let cluster = match TlsCluster::start() {
        Ok(cluster) => cluster,
        Err(reason) if support::required() => {
            panic!("REQUIRE_POSTGRES=1 but no throwaway PostgreSQL cluster can be made: {reason}")
        }
        Err(reason) => {
            // To the real stderr, past the test harness's capture.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: tls::a_store_connects_over_verified_tls_and_nothing_else_gets_in: \
                 {reason}; set PG_BINDIR to PostgreSQL's server programs, or \
                 REQUIRE_POSTGRES=1 to make this a failure"
            );
            return;
        }
    };

    let verified = cluster.url(
        "verify-full",
        &format!("&sslrootcert={}", cluster.ca_file.display()),
    );
    let store = PostgresStore::connect_with(&verified, options())
        .await
        .unwrap();
    let scope = Scope::new("tls").unwrap();
    let created = store
        .create_conversation(&scope, NewConversation::new().with_title("over TLS"))
        .await
        .unwrap();
    let read = store.get_conversation(&scope, created.id).await.unwrap();
    assert_eq!(read.title.as_deref(), Some("over TLS"));
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(encrypted);

    let plaintext = PostgresStore::connect_with(&cluster.url("disable", ""), options())
        .await
        .unwrap_err();
    assert!(
        matches!(&plaintext, Error::Backend { message, .. } if message.contains("no encryption")),
        "{plaintext:?}"
    );

    let other_ca = cluster.dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, certificate_authority("another CA").pem()).unwrap();
    let untrusted = PostgresStore::connect_with(
        &cluster.url(
            "verify-full",
            &format!("&sslrootcert={}", other_ca.display()),
        ),
        options(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&untrusted, Error::Backend { message, .. } if message.contains("certificate")),
        "{untrusted:?}"
    );
    assert!(!untrusted.is_transient());
}
