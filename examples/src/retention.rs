//! The server's retention task: [`Conversations::purge`] in the background.

use std::time::Duration;

use conversation_core::{Conversations, RetentionPolicy};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{debug, error, info, warn};

/// A background task applying a [`RetentionPolicy`] to every scope: a first pass at
/// once (the task does not delay start-up), then one every `interval`. Each pass
/// logs how many it deleted (each one at `debug`); a failed pass is logged and the next one tries again.
/// [`RetentionTask::stop`] ends it, a pass in progress included (what it deleted
/// stays deleted: each deletion is its own transaction).
#[derive(Debug)]
pub struct RetentionTask {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RetentionTask {
    /// Starts the task on the current Tokio runtime.
    pub fn spawn(service: Conversations, policy: RetentionPolicy, interval: Duration) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        info!(
            inactive_days = policy.inactive_for.map(|d| d.as_secs() / 86_400),
            archived_days = policy.archived_for.map(|d| d.as_secs() / 86_400),
            every_secs = interval.as_secs(),
            "retention on: conversations past the policy are deleted in the background (pinned ones never)"
        );
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(interval);
            every.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = every.tick() => {}
                }
                tokio::select! {
                    _ = &mut stopped => {
                        info!("retention pass stopped by shutdown");
                        return;
                    }
                    pass = service.purge(None, &policy, false) => match pass {
                        Ok(report) if report.expired.is_empty() => {
                            info!("retention pass: nothing to delete");
                        }
                        Ok(report) => {
                            for expired in &report.expired {
                                debug!(
                                    scope = %expired.scope,
                                    conversation = %expired.id,
                                    since = %expired.at,
                                    "retention deleted a conversation"
                                );
                            }
                            info!(deleted = report.expired.len(), "retention pass");
                        }
                        Err(failure) if failure.is_transient() => {
                            warn!(error = %failure, "retention pass failed; the next one tries again");
                        }
                        Err(failure) => {
                            error!(error = %failure, "retention pass failed; the next one tries again");
                        }
                    }
                }
            }
        });
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Stops the task and waits for it to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(failure) = (&mut self.task).await {
            error!(error = %failure, "the retention task ended abnormally");
        }
    }
}

impl Drop for RetentionTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}
