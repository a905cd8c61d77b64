//! The `conversations` admin command: list, show, export, import, purge, back up and
//! count the conversations of the store the server uses (the same `DATABASE_URL`),
//! as a library so that tests and other programs call what the binary calls.
//!
//! ```sh
//! cargo run --release -p conversation-examples --bin conversations -- --help
//! cargo run --release -p conversation-examples --bin conversations -- \
//!     export --scope analytics-db > analytics-db.jsonl
//! ```
//!
//! Output is for people by default and JSON with `--json`; reports and progress go
//! to stderr when stdout carries the data (an export without `--output`). A progress
//! bar is drawn on stderr during an export, an import or a purge, only when stderr
//! is a terminal. Each failure has its own exit code: [`Exit`].

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use conversation_adapter_http::HttpLimits;
use conversation_core::{
    ArchivedFilter, Conversation, ConversationId, ConversationQuery, Conversations, Error,
    ExportSelection, ImportReport, MAX_PAGE_SIZE, Message, MessageQuery, RetentionPolicy, Scope,
};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::json;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use crate::{AppError, Database, OpenedStore, open_database};

/// What the command's exit status says. Scripts may rely on these numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// 0: done.
    Ok,
    /// 1: the store failed (a broken or foreign database file, a bug).
    Failure,
    /// 2: bad arguments: an unknown flag, an invalid scope or id, no policy to purge.
    Usage,
    /// 3: an import stored some conversations and refused others (the report says
    /// which lines and why).
    Partial,
    /// 4: not found: no such conversation in the scope, a scope with no
    /// conversations to export, no database file at the path.
    NotFound,
    /// 5: the input is not what it should be: an import file of which nothing could
    /// be imported (not an export, a wrong header, not JSON), or one that stopped in
    /// the middle (a line too long, text not UTF-8).
    Data,
    /// 6: a file could not be read or written (the import file, the export's
    /// `--output`, a backup target that exists already).
    Io,
    /// 7: the database is unavailable (unreachable, locked, closed): try again.
    Unavailable,
    /// 8: not possible with this store (a backup of PostgreSQL: use `pg_dump`; any
    /// command on `memory`).
    Unsupported,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::Partial => 3,
            Exit::NotFound => 4,
            Exit::Data => 5,
            Exit::Io => 6,
            Exit::Unavailable => 7,
            Exit::Unsupported => 8,
        }
    }
}

/// The exit statuses, as `--help` shows them.
const EXIT_CODES: &str = "\
Exit status:
  0  done
  1  the store failed (a broken or foreign database file)
  2  bad arguments (unknown flag, invalid scope or id, nothing to purge by)
  3  import: some conversations stored, others refused (see the report)
  4  not found (conversation, a scope with nothing to export, the database file)
  5  import: bad input (nothing importable, or it stopped at a bad line)
  6  a file could not be read or written (input, --output, backup target)
  7  the database is unavailable (unreachable, locked): try again
  8  not possible with this store (PostgreSQL backup: use pg_dump; memory)";

/// Administers the conversations of the store the server uses.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "conversations",
    about = "Administer the conversations of the example server's store: list, show, \
             export, import, purge, back up, count",
    version,
    after_help = EXIT_CODES
)]
pub struct AdminCli {
    /// The store, as the server's `--database-url`: a SQLite file path (or
    /// `sqlite://path`) or a `postgres://` URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "data/conversations.db",
        global = true
    )]
    pub database_url: String,

    /// The PostgreSQL schema holding the store's tables (default `public`).
    #[arg(long, env = "DATABASE_SCHEMA", global = true)]
    pub database_schema: Option<String>,

    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// List a scope's conversations, newest activity first.
    List(ListArgs),
    /// Show a conversation and the messages of its active branch.
    Show(ShowArgs),
    /// Export a scope (or one conversation) as JSON Lines.
    Export(ExportArgs),
    /// Import JSON Lines of an export, or a ChatGPT `conversations.json`, into a scope.
    Import(ImportArgs),
    /// Delete conversations by inactivity or archive age (pinned ones never, unless
    /// asked); `--dry-run` lists them and deletes nothing.
    Purge(PurgeArgs),
    /// Write an online, consistent copy of a SQLite store (the server may be running).
    /// Restore by starting the server on the copy.
    Backup(BackupArgs),
    /// Count conversations and messages, and the store's size.
    Stats(StatsArgs),
}

/// `list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// The scope (a database connection, tenant, user…).
    #[arg(long, value_parser = parse_scope)]
    pub scope: Scope,
    /// Which conversations by archive state.
    #[arg(long, value_enum, default_value_t = Archived::Exclude)]
    pub archived: Archived,
    /// Pinned conversations first.
    #[arg(long)]
    pub pinned_first: bool,
    /// Most conversations listed; 0 for all.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// Archive states to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Archived {
    /// Not archived ones (the sidebar).
    Exclude,
    /// Both.
    Include,
    /// Archived ones only.
    Only,
}

impl From<Archived> for ArchivedFilter {
    fn from(archived: Archived) -> Self {
        match archived {
            Archived::Exclude => ArchivedFilter::Exclude,
            Archived::Include => ArchivedFilter::Include,
            Archived::Only => ArchivedFilter::Only,
        }
    }
}

/// `show`.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The scope.
    #[arg(long, value_parser = parse_scope)]
    pub scope: Scope,
    /// The conversation's id.
    pub id: ConversationId,
}

/// `export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The scope.
    #[arg(long, value_parser = parse_scope)]
    pub scope: Scope,
    /// Only this conversation.
    #[arg(long)]
    pub conversation: Option<ConversationId>,
    /// Write here instead of stdout (written whole, then renamed into place: an
    /// export that fails leaves no partial file).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The scope to import into.
    #[arg(long, value_parser = parse_scope)]
    pub scope: Scope,
    /// The file: JSON Lines of an export, or with `--chatgpt` the
    /// `conversations.json` of a ChatGPT data export; `-` for stdin.
    pub file: PathBuf,
    /// The file is a ChatGPT `conversations.json`.
    #[arg(long)]
    pub chatgpt: bool,
}

/// `purge`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("policy").required(true).multiple(true).args(["inactive_days", "archived_days"])))]
pub struct PurgeArgs {
    /// Only this scope (default: every scope).
    #[arg(long, value_parser = parse_scope)]
    pub scope: Option<Scope>,
    /// Delete conversations with no activity for this many days.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub inactive_days: Option<u32>,
    /// Delete conversations archived this many days ago.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub archived_days: Option<u32>,
    /// Pinned conversations too (by default they are never deleted).
    #[arg(long)]
    pub include_pinned: bool,
    /// List what would be deleted, and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The copy to write: a new file (an existing one is never overwritten).
    pub target: PathBuf,
}

/// `stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// Also count this scope's conversations (all, pinned, archived) and messages.
    #[arg(long, value_parser = parse_scope)]
    pub scope: Option<Scope>,
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    Scope::new(text).map_err(|e| e.to_string())
}

/// Why a command failed; [`AdminError::exit`] says with which status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] AppError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] Error),
    /// No SQLite file at the path.
    #[error(
        "no database at {0} (--database-url or DATABASE_URL); the server creates it on its \
         first start, and `import` creates it"
    )]
    NoDatabase(PathBuf),
    /// Nothing found.
    #[error("{0}")]
    NotFound(String),
    /// Bad input data.
    #[error("{0}")]
    Data(String),
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    File {
        /// `cannot read` or `cannot write`.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not possible with this store.
    #[error("{0}")]
    Unsupported(String),
}

impl AdminError {
    /// The exit status for this failure.
    pub fn exit(&self) -> Exit {
        match self {
            AdminError::Open(AppError::ReadOnly { .. }) => Exit::Io,
            AdminError::Open(AppError::Store { source, .. }) => store_exit(source),
            AdminError::Open(_) => Exit::Failure,
            AdminError::Store(error) => store_exit(error),
            AdminError::NoDatabase(_) | AdminError::NotFound(_) => Exit::NotFound,
            AdminError::Data(_) => Exit::Data,
            AdminError::File { .. } => Exit::Io,
            AdminError::Unsupported(_) => Exit::Unsupported,
        }
    }

    fn read(path: &Path, source: std::io::Error) -> Self {
        AdminError::File {
            what: "cannot read",
            path: path.display().to_string(),
            source,
        }
    }

    fn write(path: &Path, source: std::io::Error) -> Self {
        AdminError::File {
            what: "cannot write",
            path: path.display().to_string(),
            source,
        }
    }
}

/// `error` and its causes, each once: `a: b: c`.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let said = next.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = next.source();
    }
    text
}

fn store_exit(error: &Error) -> Exit {
    match error {
        Error::NotFound { .. } => Exit::NotFound,
        Error::InvalidInput { field, .. } if field == "path" => Exit::Io,
        Error::InvalidInput { field, .. } if field == "databaseUrl" => Exit::Unsupported,
        Error::InvalidInput { .. } => Exit::Usage,
        error if error.is_transient() => Exit::Unavailable,
        _ => Exit::Failure,
    }
}

/// Runs `cli`, writing its output to `out` (stdout) and its reports and progress to
/// stderr; the store is closed (its WAL checkpointed) before it returns. The status
/// is [`Exit::Ok`] or, for an import that refused some conversations,
/// [`Exit::Partial`].
///
/// # Errors
/// [`AdminError`] for each failure, [`AdminError::exit`] its status.
pub async fn run(cli: AdminCli, out: &mut (dyn Write + Send)) -> Result<Exit, AdminError> {
    let database = Database::from_url(&cli.database_url);
    let creates = matches!(cli.command, Command::Import(_));
    match &database {
        Database::Memory => {
            return Err(AdminError::Unsupported(
                "DATABASE_URL is `memory`: a store in memory lives only inside the server \
                 process; point --database-url at the SQLite file or PostgreSQL server"
                    .to_owned(),
            ));
        }
        Database::Sqlite(path) if !creates && !path.is_file() => {
            return Err(AdminError::NoDatabase(path.clone()));
        }
        _ => {}
    }
    let opened = open_database(database, cli.database_schema.as_deref()).await?;
    let service = Conversations::builder(opened.store()).build();
    let admin = Admin {
        service: service.clone(),
        opened,
        json: cli.json,
    };
    let result = admin.run(cli.command, out).await;
    service.shutdown().await;
    result
}

/// One command's context.
struct Admin {
    service: Conversations,
    opened: OpenedStore,
    json: bool,
}

impl Admin {
    async fn run(
        &self,
        command: Command,
        out: &mut (dyn Write + Send),
    ) -> Result<Exit, AdminError> {
        let stdout = |e| AdminError::write(Path::new("stdout"), e);
        match command {
            Command::List(args) => self.list(args, out).await,
            Command::Show(args) => self.show(args, out).await,
            Command::Export(args) => self.export(args, out).await,
            Command::Import(args) => self.import(args, out).await,
            Command::Purge(args) => self.purge(args, out).await,
            Command::Backup(args) => self.backup(args, out).await,
            Command::Stats(args) => self.stats(args, out).await,
        }
        .and_then(|exit| out.flush().map(|()| exit).map_err(stdout))
    }

    async fn list(&self, args: ListArgs, out: &mut (dyn Write + Send)) -> Result<Exit, AdminError> {
        let page_size = match args.limit {
            0 => MAX_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let mut query = ConversationQuery::new()
            .archived(args.archived.into())
            .pinned_first(args.pinned_first)
            .limit(page_size as u32);
        let mut listed = Vec::new();
        let mut more = false;
        loop {
            let page = self.service.list(&args.scope, &query).await?;
            listed.extend(page.items);
            match page.next_cursor {
                Some(cursor) if args.limit == 0 || listed.len() < args.limit => {
                    query = query.cursor(cursor);
                }
                Some(_) => {
                    more = true;
                    break;
                }
                None => break,
            }
        }
        if args.limit != 0 && listed.len() > args.limit {
            listed.truncate(args.limit);
            more = true;
        }
        let w = |e| AdminError::write(Path::new("stdout"), e);
        if self.json {
            serde_json::to_writer(&mut *out, &json!({ "items": listed, "more": more }))
                .map_err(|e| w(e.into()))?;
            writeln!(out).map_err(w)?;
            return Ok(Exit::Ok);
        }
        if listed.is_empty() {
            eprintln_note(&format!(
                "no conversations in scope {:?} (archived: {:?})",
                args.scope.as_str(),
                args.archived
            ));
            return Ok(Exit::Ok);
        }
        writeln!(
            out,
            "{:<36}  {:<16}  {:>5}  {:<5}  TITLE",
            "ID", "ACTIVE (UTC)", "MSGS", "FLAGS"
        )
        .map_err(w)?;
        for c in &listed {
            let flags = format!(
                "{}{}",
                if c.pinned { "P" } else { "-" },
                if c.archived { "A" } else { "-" }
            );
            writeln!(
                out,
                "{:<36}  {:<16}  {:>5}  {:<5}  {}",
                c.id.to_string(),
                minutes(c.updated_at),
                c.message_count,
                flags,
                one_line(c.title.as_deref().unwrap_or("(untitled)"), 80)
            )
            .map_err(w)?;
        }
        if more {
            writeln!(out, "… more: --limit 0 lists all").map_err(w)?;
        }
        Ok(Exit::Ok)
    }

    async fn show(&self, args: ShowArgs, out: &mut (dyn Write + Send)) -> Result<Exit, AdminError> {
        let conversation = self
            .service
            .get(&args.scope, args.id)
            .await
            .map_err(|e| not_found(e, &args.scope, args.id))?;
        let messages = self.path(&args.scope, args.id).await?;
        let w = |e| AdminError::write(Path::new("stdout"), e);
        if self.json {
            serde_json::to_writer(
                &mut *out,
                &json!({ "conversation": conversation, "messages": messages }),
            )
            .map_err(|e| w(e.into()))?;
            writeln!(out).map_err(w)?;
            return Ok(Exit::Ok);
        }
        let c = &conversation;
        let mut text = String::new();
        let _ = writeln!(
            text,
            "{}\n  id        {}\n  scope     {}\n  created   {}\n  active    {}\n  \
             messages  {} ({} on the active branch)\n  pinned    {}\n  archived  {}\n  \
             metadata  {}\n",
            c.title.as_deref().unwrap_or("(untitled)"),
            c.id,
            c.scope,
            seconds(c.created_at),
            seconds(c.updated_at),
            c.message_count,
            messages.len(),
            yes_no(c.pinned),
            c.archived_at.map_or_else(
                || yes_no(c.archived).to_owned(),
                |at| format!("since {}", seconds(at))
            ),
            serde_json::Value::Object(c.metadata.clone())
        );
        for m in &messages {
            let _ = writeln!(
                text,
                "#{} {} · {}",
                m.seq,
                serde_json::to_value(m.role)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                seconds(m.created_at)
            );
            for call in &m.tool_calls {
                let _ = writeln!(text, "  → {}({})", call.name, call.arguments);
            }
            for line in m.content.lines() {
                let _ = writeln!(text, "  {line}");
            }
        }
        out.write_all(text.as_bytes()).map_err(w)?;
        Ok(Exit::Ok)
    }

    /// The messages of the active branch, root to head, page by page.
    async fn path(&self, scope: &Scope, id: ConversationId) -> Result<Vec<Message>, AdminError> {
        let mut messages: Vec<Message> = Vec::new();
        loop {
            let after = messages.last().map_or(0, |m| m.seq);
            let page = self
                .service
                .messages(
                    scope,
                    id,
                    &MessageQuery::after(after).limit(MAX_PAGE_SIZE as u32),
                )
                .await?;
            let more = page.has_more && !page.items.is_empty();
            messages.extend(page.items);
            if !more {
                return Ok(messages);
            }
        }
    }

    async fn export(
        &self,
        args: ExportArgs,
        out: &mut (dyn Write + Send),
    ) -> Result<Exit, AdminError> {
        let selection = match args.conversation {
            Some(id) => {
                self.service
                    .get(&args.scope, id)
                    .await
                    .map_err(|e| not_found(e, &args.scope, id))?;
                ExportSelection::Conversation(id)
            }
            None => {
                let first = self
                    .service
                    .list(
                        &args.scope,
                        &ConversationQuery::new()
                            .archived(ArchivedFilter::Include)
                            .limit(1),
                    )
                    .await?;
                if first.items.is_empty() {
                    return Err(AdminError::NotFound(format!(
                        "scope {:?} holds no conversations: nothing to export (a scope exists \
                         only through its conversations; check --scope)",
                        args.scope.as_str()
                    )));
                }
                ExportSelection::Scope
            }
        };
        let started = Instant::now();
        let progress = spinner("exporting");
        let mut counts = ExportCounts::default();
        let mut lines = self.service.export(&args.scope, selection);
        let written = match &args.output {
            None => {
                let w = |e| AdminError::write(Path::new("stdout"), e);
                let mut sink = std::io::BufWriter::with_capacity(256 * 1024, &mut *out);
                while let Some(line) = lines.next().await {
                    let line = line?;
                    counts.add(&line, &progress);
                    sink.write_all(line.as_bytes()).map_err(w)?;
                }
                sink.flush().map_err(w)
            }
            Some(path) => {
                let partial = partial_path(path);
                let file =
                    std::fs::File::create(&partial).map_err(|e| AdminError::write(&partial, e))?;
                let mut sink = std::io::BufWriter::with_capacity(256 * 1024, file);
                let copied: Result<(), AdminError> = async {
                    while let Some(line) = lines.next().await {
                        let line = line?;
                        counts.add(&line, &progress);
                        sink.write_all(line.as_bytes())
                            .map_err(|e| AdminError::write(&partial, e))?;
                    }
                    let file = sink
                        .into_inner()
                        .map_err(|e| AdminError::write(&partial, e.into_error()))?;
                    file.sync_all()
                        .map_err(|e| AdminError::write(&partial, e))?;
                    std::fs::rename(&partial, path).map_err(|e| AdminError::write(path, e))
                }
                .await;
                if copied.is_err() {
                    let _ = std::fs::remove_file(&partial);
                }
                copied
            }
        };
        progress.finish_and_clear();
        written?;
        let seconds = started.elapsed().as_secs_f64();
        let summary = json!({
            "scope": args.scope,
            "conversations": counts.conversations,
            "messages": counts.messages,
            "bytes": counts.bytes,
            "seconds": seconds,
            "output": args.output.as_ref().map(|p| p.display().to_string()),
        });
        let human = format!(
            "exported {} conversations, {} messages ({}) of scope {} in {:.1} s",
            counts.conversations,
            counts.messages,
            human_bytes(counts.bytes),
            args.scope,
            seconds
        );
        match &args.output {
            // The data is on stdout: the summary goes to stderr.
            None => report_to_stderr(self.json, &summary, &human),
            Some(_) => self.print(out, &summary, &human)?,
        }
        Ok(Exit::Ok)
    }

    async fn import(
        &self,
        args: ImportArgs,
        out: &mut (dyn Write + Send),
    ) -> Result<Exit, AdminError> {
        let started = Instant::now();
        let stdin = args.file.as_os_str() == "-";
        let report = if args.chatgpt {
            let bytes = if stdin {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes).map(|_| bytes)
            } else {
                tokio::fs::read(&args.file).await
            }
            .map_err(|e| AdminError::read(&args.file, e))?;
            let progress = spinner("importing the ChatGPT export");
            let report = self.service.import_chatgpt(&args.scope, bytes).await;
            progress.finish_and_clear();
            report.map_err(|e| match e {
                Error::InvalidInput { reason, .. } => AdminError::Data(format!(
                    "{} is not a ChatGPT conversations.json: {reason}",
                    args.file.display()
                )),
                other => other.into(),
            })?
        } else {
            let (reader, size): (Box<dyn tokio::io::AsyncRead + Send + Unpin>, Option<u64>) =
                if stdin {
                    (Box::new(tokio::io::stdin()), None)
                } else {
                    let file = tokio::fs::File::open(&args.file)
                        .await
                        .map_err(|e| AdminError::read(&args.file, e))?;
                    let size = file.metadata().await.ok().map(|m| m.len());
                    (Box::new(file), size)
                };
            let progress = match size {
                Some(size) => bar(size, "importing"),
                None => spinner("importing"),
            };
            let limit = HttpLimits::default().max_import_line_bytes;
            let counter = progress.clone();
            let lines =
                FramedRead::new(reader, LinesCodec::new_with_max_length(limit)).map(move |line| {
                    match line {
                        Ok(line) => {
                            counter.inc(line.len() as u64 + 1);
                            Ok(line)
                        }
                        Err(LinesCodecError::MaxLineLengthExceeded) => {
                            Err(std::io::Error::other(format!(
                                "longer than {} (the import's line limit)",
                                human_bytes(limit as u64)
                            )))
                        }
                        Err(LinesCodecError::Io(e)) => Err(e),
                    }
                });
            let report = self.service.import(&args.scope, lines).await;
            progress.finish_and_clear();
            report.map_err(|e| match e {
                Error::InvalidInput { reason, .. } => AdminError::Data(format!(
                    "the import of {} stopped: {reason}; the conversations before that line \
                     are imported (importing the file again skips them)",
                    args.file.display()
                )),
                other => other.into(),
            })?
        };
        let exit = import_exit(&report);
        let seconds = started.elapsed().as_secs_f64();
        if self.json {
            let mut value =
                serde_json::to_value(&report).map_err(|e| AdminError::Data(e.to_string()))?;
            if let Some(object) = value.as_object_mut() {
                object.insert("scope".to_owned(), json!(args.scope));
                object.insert("seconds".to_owned(), json!(seconds));
            }
            self.print(out, &value, "")?;
        } else {
            self.print(out, &json!(null), &import_text(&args, &report, seconds))?;
        }
        if exit == Exit::Data {
            return Err(AdminError::Data(if report.refused.is_empty() {
                format!("{} holds nothing to import", args.file.display())
            } else {
                format!(
                    "nothing of {} could be imported (see the report above)",
                    args.file.display()
                )
            }));
        }
        Ok(exit)
    }

    async fn purge(
        &self,
        args: PurgeArgs,
        out: &mut (dyn Write + Send),
    ) -> Result<Exit, AdminError> {
        let mut policy = RetentionPolicy::new().include_pinned(args.include_pinned);
        if let Some(days) = args.inactive_days {
            policy = policy.inactive_days(days);
        }
        if let Some(days) = args.archived_days {
            policy = policy.archived_days(days);
        }
        let progress = spinner(if args.dry_run {
            "finding expired conversations"
        } else {
            "purging"
        });
        let report = self
            .service
            .purge(args.scope.as_ref(), &policy, args.dry_run)
            .await;
        progress.finish_and_clear();
        let report = report?;
        let expired: Vec<_> = report
            .expired
            .iter()
            .map(|e| {
                json!({
                    "scope": e.scope,
                    "id": e.id,
                    "title": e.title,
                    "since": e.at,
                    "pinned": e.pinned,
                })
            })
            .collect();
        let verb = if args.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let mut human = String::new();
        for e in &report.expired {
            let _ = writeln!(
                human,
                "{verb} {}  {:<20}  since {}  {}",
                e.id,
                one_line(e.scope.as_str(), 20),
                minutes(e.at),
                one_line(e.title.as_deref().unwrap_or("(untitled)"), 60)
            );
        }
        let count = report.expired.len();
        let _ = write!(
            human,
            "{} {verb} {count} conversation{}",
            if args.dry_run { "dry run:" } else { "purge:" },
            if count == 1 { "" } else { "s" },
        );
        self.print(
            out,
            &json!({ "dryRun": args.dry_run, "count": expired.len(), "expired": expired }),
            &human,
        )?;
        Ok(Exit::Ok)
    }

    async fn backup(
        &self,
        args: BackupArgs,
        out: &mut (dyn Write + Send),
    ) -> Result<Exit, AdminError> {
        let OpenedStore::Sqlite(store) = &self.opened else {
            return Err(AdminError::Unsupported(unsupported_backup(&self.opened)));
        };
        if let Some(folder) = args.target.parent().filter(|f| !f.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|e| AdminError::write(folder, e))?;
        }
        let started = Instant::now();
        let progress = spinner("copying");
        let copied = store.backup_to(&args.target).await;
        progress.finish_and_clear();
        copied?;
        let bytes = std::fs::metadata(&args.target).map_or(0, |m| m.len());
        let seconds = started.elapsed().as_secs_f64();
        self.print(
            out,
            &json!({ "path": args.target.display().to_string(), "bytes": bytes, "seconds": seconds }),
            &format!(
                "backed up to {} ({}) in {:.1} s; restore by starting the server with \
                 --database-url {}",
                args.target.display(),
                human_bytes(bytes),
                seconds,
                args.target.display()
            ),
        )?;
        Ok(Exit::Ok)
    }

    async fn stats(
        &self,
        args: StatsArgs,
        out: &mut (dyn Write + Send),
    ) -> Result<Exit, AdminError> {
        let mut value = serde_json::Map::new();
        let mut human = String::new();
        match &self.opened {
            OpenedStore::Sqlite(store) => {
                let stats = store.stats().await?;
                value.insert(
                    "store".to_owned(),
                    json!({
                        "kind": "sqlite",
                        "conversations": stats.conversations,
                        "messages": stats.messages,
                        "runs": stats.runs,
                        "databaseBytes": stats.database_bytes,
                        "walBytes": stats.wal_bytes,
                        "searchIndexBytes": stats.search_index_bytes,
                    }),
                );
                let _ = writeln!(
                    human,
                    "store (SQLite, every scope)\n  conversations  {}\n  messages       {}\n  \
                     runs           {}\n  database       {}\n  search index   {}\n  WAL            {}",
                    stats.conversations,
                    stats.messages,
                    stats.runs,
                    human_bytes(stats.database_bytes),
                    human_bytes(stats.search_index_bytes),
                    human_bytes(stats.wal_bytes)
                );
            }
            _ if args.scope.is_some() => {}
            other => {
                return Err(AdminError::Unsupported(format!(
                    "{}: statistics of the whole store are the SQLite store's; give --scope to \
                     count one scope (or ask PostgreSQL: pg_stat_user_tables)",
                    store_kind(other)
                )));
            }
        }
        if let Some(scope) = &args.scope {
            let counts = self.scope_counts(scope).await?;
            let _ = writeln!(
                human,
                "scope {scope}\n  conversations  {} ({} pinned, {} archived)\n  messages       {}\n  \
                 oldest         {}\n  newest         {}",
                counts.conversations,
                counts.pinned,
                counts.archived,
                counts.messages,
                counts.oldest.map_or_else(|| "-".to_owned(), minutes),
                counts.newest.map_or_else(|| "-".to_owned(), minutes),
            );
            value.insert(
                "scope".to_owned(),
                serde_json::to_value(&counts).map_err(|e| AdminError::Data(e.to_string()))?,
            );
        }
        self.print(out, &serde_json::Value::Object(value), human.trim_end())?;
        Ok(Exit::Ok)
    }

    /// Counts a scope by reading its list, page by page.
    async fn scope_counts(&self, scope: &Scope) -> Result<ScopeCounts, AdminError> {
        let mut counts = ScopeCounts {
            scope: scope.clone(),
            conversations: 0,
            pinned: 0,
            archived: 0,
            messages: 0,
            oldest: None,
            newest: None,
        };
        let mut query = ConversationQuery::new()
            .archived(ArchivedFilter::Include)
            .limit(MAX_PAGE_SIZE as u32);
        loop {
            let page = self.service.list(scope, &query).await?;
            for c in &page.items {
                counts.add(c);
            }
            match page.next_cursor {
                Some(cursor) => query = query.cursor(cursor),
                None => return Ok(counts),
            }
        }
    }

    /// Prints `value` with `--json`, else `human` (when not empty).
    fn print(
        &self,
        out: &mut (dyn Write + Send),
        value: &serde_json::Value,
        human: &str,
    ) -> Result<(), AdminError> {
        let w = |e| AdminError::write(Path::new("stdout"), e);
        if self.json {
            serde_json::to_writer(&mut *out, value).map_err(|e| w(e.into()))?;
            writeln!(out).map_err(w)
        } else if human.is_empty() {
            Ok(())
        } else {
            writeln!(out, "{}", human.trim_end()).map_err(w)
        }
    }
}

/// The counts of one scope: `stats --scope`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ScopeCounts {
    scope: Scope,
    conversations: u64,
    pinned: u64,
    archived: u64,
    messages: u64,
    oldest: Option<DateTime<Utc>>,
    newest: Option<DateTime<Utc>>,
}

impl ScopeCounts {
    fn add(&mut self, c: &Conversation) {
        self.conversations += 1;
        self.pinned += u64::from(c.pinned);
        self.archived += u64::from(c.archived);
        self.messages += c.message_count;
        self.oldest = Some(self.oldest.map_or(c.updated_at, |at| at.min(c.updated_at)));
        self.newest = Some(self.newest.map_or(c.updated_at, |at| at.max(c.updated_at)));
    }
}

/// What an export has written so far.
#[derive(Debug, Default)]
struct ExportCounts {
    conversations: u64,
    messages: u64,
    bytes: u64,
}

impl ExportCounts {
    fn add(&mut self, line: &str, progress: &ProgressBar) {
        self.bytes += line.len() as u64;
        // The type tag is serialised first (`ExportLine` is internally tagged).
        if line.starts_with(r#"{"type":"conversation""#) {
            self.conversations += 1;
            progress.set_message(format!("{} conversations", self.conversations));
        } else if line.starts_with(r#"{"type":"message""#) {
            self.messages += 1;
        }
        progress.tick();
    }
}

/// Partial when some conversations were refused and others stored (or found
/// present); a data error when nothing was.
fn import_exit(report: &ImportReport) -> Exit {
    let stored = report.imported.len() + report.skipped.len();
    match (stored, report.refused.len()) {
        (_, 0) if stored > 0 => Exit::Ok,
        (0, _) => Exit::Data,
        _ => Exit::Partial,
    }
}

fn import_text(args: &ImportArgs, report: &ImportReport, seconds: f64) -> String {
    let messages: u64 = report.imported.iter().map(|i| i.messages).sum();
    let mut text = format!(
        "import into {}: {} imported ({} messages), {} skipped (already there), {} refused, \
         in {:.1} s",
        args.scope,
        report.imported.len(),
        messages,
        report.skipped.len(),
        report.refused.len(),
        seconds
    );
    let line_word = if args.chatgpt { "conversation" } else { "line" };
    for renamed in report.imported.iter().filter(|i| i.renamed_from.is_some()) {
        if let Some(from) = renamed.renamed_from {
            let _ = write!(
                text,
                "\n  {line_word} {}: id {from} is another scope's; imported as {}",
                renamed.line, renamed.id
            );
        }
    }
    for refused in &report.refused {
        let _ = write!(
            text,
            "\n  refused {line_word} {}{}: {}: {}",
            refused.line,
            refused
                .id
                .map_or_else(String::new, |id| format!(" (conversation {id})")),
            refused.code,
            refused.message
        );
    }
    text
}

fn not_found(error: Error, scope: &Scope, id: ConversationId) -> AdminError {
    match error {
        Error::NotFound { .. } => AdminError::NotFound(format!(
            "no conversation {id} in scope {:?}",
            scope.as_str()
        )),
        other => other.into(),
    }
}

fn store_kind(opened: &OpenedStore) -> &'static str {
    match opened {
        OpenedStore::Sqlite(_) => "SQLite",
        #[cfg(feature = "postgres")]
        OpenedStore::Postgres(_) => "PostgreSQL",
        OpenedStore::Memory(_) => "memory",
    }
}

fn unsupported_backup(opened: &OpenedStore) -> String {
    match opened {
        #[cfg(feature = "postgres")]
        OpenedStore::Postgres(_) => {
            "backup copies a SQLite store; back up PostgreSQL with its own \
             tools: pg_dump --format=custom --schema=<DATABASE_SCHEMA, default public> \
             \"$DATABASE_URL\" > conversations.dump (restore with pg_restore)"
                .to_owned()
        }
        other => format!(
            "backup copies a SQLite store, not a {} one",
            store_kind(other)
        ),
    }
}

/// `path` with `.partial` added: where an export is written before it is renamed.
fn partial_path(path: &Path) -> PathBuf {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    PathBuf::from(partial)
}

fn report_to_stderr(json: bool, value: &serde_json::Value, human: &str) {
    if json {
        eprintln_note(&value.to_string());
    } else {
        eprintln_note(human);
    }
}

/// A line on stderr: notes and reports beside data on stdout.
fn eprintln_note(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}

/// A progress bar of `total` bytes on stderr, drawn only when stderr is a terminal.
fn bar(total: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), draw_target());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

/// A spinner with a counter on stderr, drawn only when stderr is a terminal.
fn spinner(message: &'static str) -> ProgressBar {
    let spinner = ProgressBar::with_draw_target(None, draw_target());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} {msg} ({elapsed})") {
        spinner.set_style(style);
    }
    spinner.set_prefix(message);
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

fn draw_target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

fn minutes(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M").to_string()
}

fn seconds(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn yes_no(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

/// `text` on one line, cut at `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
