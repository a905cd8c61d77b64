//! Agent runs as the store keeps them: one turn of the model, its tool calls and
//! their results, with a status every server instance can read.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{millis_format, millis_format_option};
use crate::{ConversationId, RunId, ToolCall, Usage};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum RunStatus {
    /// The model is answering or tools are running.
    Running,
    /// The model finished its answer.
    Completed,
    /// The model asked for tools the host does not run: the client runs them, appends
    /// their results and continues.
    RequiresAction,
    /// Stopped on request; what the model had said is stored, marked `cancelled`.
    Cancelled,
    /// Stopped by an error; what the model had said is stored, marked `error`.
    Failed,
}

impl RunStatus {
    /// The snake_case name used in storage and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::RequiresAction => "requires_action",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Failed => "failed",
        }
    }

    /// Parses [`RunStatus::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "requires_action" => RunStatus::RequiresAction,
            "cancelled" => RunStatus::Cancelled,
            "failed" => RunStatus::Failed,
            _ => return None,
        })
    }

    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        self != RunStatus::Running
    }
}

/// Why a run failed, for a person and a program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunFailure {
    /// A stable code: an [`Error::code`](crate::Error::code) (e.g.
    /// `upstream_rate_limited`), `step_limit` or `abandoned`.
    pub code: String,
    /// What happened, safe to show (no URL, key or internal detail).
    pub message: String,
    /// Seconds the model provider asked to wait before trying again, when it said
    /// (a rate limit longer than the run's budget ends the run at once with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

impl RunFailure {
    /// The code of a run whose runner stopped renewing its lease (its process died).
    pub const ABANDONED: &'static str = "abandoned";
    /// The code of a run that reached its step limit with tool calls still pending.
    pub const STEP_LIMIT: &'static str = "step_limit";

    /// A failure with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retry_after_secs: None,
        }
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Run {
    /// Its id.
    pub id: RunId,
    /// The conversation it answers in.
    pub conversation_id: ConversationId,
    /// Where it stands.
    pub status: RunStatus,
    /// When it started (UTC, milliseconds).
    #[serde(with = "millis_format")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub started_at: DateTime<Utc>,
    /// When it ended, once it has.
    #[serde(with = "millis_format_option", default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub finished_at: Option<DateTime<Utc>>,
    /// While running: until when its runner vouches for it. A running run whose lease
    /// has passed is read as failed with [`RunFailure::ABANDONED`].
    #[serde(with = "millis_format")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub lease_until: DateTime<Utc>,
    /// Whether a stop was asked for (the runner stops at once when it is in the same
    /// process, else at its next lease renewal).
    pub cancel_requested: bool,
    /// Model calls made so far.
    pub steps: u32,
    /// Tokens used, summed over its model calls (recorded when it ends).
    pub usage: Usage,
    /// Why it failed, when it did.
    #[serde(default)]
    pub error: Option<RunFailure>,
    /// The tool calls the client must answer, when it requires action.
    #[serde(default)]
    pub pending_tool_calls: Vec<ToolCall>,
}

impl Run {
    /// The run as a reader must see it at `now`: a running run whose lease has passed
    /// is failed with [`RunFailure::ABANDONED`], finished at its lease's end. Stores
    /// apply it to every run they return.
    pub fn settled(mut self, now: DateTime<Utc>) -> Self {
        if self.status == RunStatus::Running && self.lease_until < now {
            self.status = RunStatus::Failed;
            self.finished_at = Some(self.lease_until);
            self.error = Some(RunFailure::new(
                RunFailure::ABANDONED,
                "the server running it stopped before it finished",
            ));
        }
        self
    }

    /// Whether it runs at `now` (running, lease not passed).
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.status == RunStatus::Running && self.lease_until >= now
    }
}

/// A run to start: [`Store::start_run`](crate::Store::start_run).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NewRun {
    /// Its id, chosen by the caller.
    pub id: RunId,
    /// How long its runner vouches for it before it must renew.
    pub lease: Duration,
}

impl NewRun {
    /// A run with a new id and `lease`.
    pub fn new(lease: Duration) -> Self {
        Self {
            id: RunId::new(),
            lease,
        }
    }

    /// The stored run this starts at `now` in `conversation`.
    pub fn into_run(self, conversation: ConversationId, now: DateTime<Utc>) -> Run {
        Run {
            id: self.id,
            conversation_id: conversation,
            status: RunStatus::Running,
            started_at: now,
            finished_at: None,
            lease_until: lease_end(now, self.lease),
            cancel_requested: false,
            steps: 0,
            usage: Usage::default(),
            error: None,
            pending_tool_calls: Vec::new(),
        }
    }
}

/// When a lease of `lease` taken at `now` ends (saturating): the `lease_until` a store
/// writes on start and renewal.
pub fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(lease)
        .ok()
        .and_then(|lease| now.checked_add_signed(lease))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// How a run ended: [`Store::finish_run`](crate::Store::finish_run).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunOutcome {
    /// A terminal status.
    pub status: RunStatus,
    /// Model calls made.
    pub steps: u32,
    /// Tokens used; added to the conversation's totals.
    pub usage: Usage,
    /// Why it failed.
    pub error: Option<RunFailure>,
    /// The calls the client must answer (for [`RunStatus::RequiresAction`]).
    pub pending_tool_calls: Vec<ToolCall>,
}

impl RunOutcome {
    /// An outcome with `status` and nothing else.
    pub fn new(status: RunStatus) -> Self {
        Self {
            status,
            steps: 0,
            usage: Usage::default(),
            error: None,
            pending_tool_calls: Vec::new(),
        }
    }

    /// The run as it ends at `now`: the rule of
    /// [`Store::finish_run`](crate::Store::finish_run) every store shares. A run that
    /// ended already stays as it was (`false`), and so does a run whose lease has
    /// passed: it ended then, abandoned, and is [`Run::settled`] here (readers may
    /// have seen it failed already; a late outcome must not revive it, nor add its
    /// usage). Else it takes this outcome (`true`).
    pub fn apply_to(self, run: &mut Run, now: DateTime<Utc>) -> bool {
        *run = run.clone().settled(now);
        if run.status.is_terminal() {
            return false;
        }
        run.status = if self.status.is_terminal() {
            self.status
        } else {
            RunStatus::Failed
        };
        run.finished_at = Some(now.max(run.started_at));
        run.steps = self.steps;
        run.usage = self.usage;
        run.error = self.error;
        run.pending_tool_calls = self.pending_tool_calls;
        true
    }
}
