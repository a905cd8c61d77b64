//! Bounds on the expensive work requests start: heavy reads and reply streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use conversation_core::Scope;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::HttpLimits;
use crate::problem::ApiError;
use crate::telemetry;

/// The semaphores behind [`HttpLimits`]' concurrency bounds, shared by every clone of
/// one [`ApiState`](crate::ApiState).
#[derive(Debug)]
pub(crate) struct Admission {
    heavy_reads: Arc<Semaphore>,
    heavy_read_wait: Duration,
    replies: Arc<Semaphore>,
    replies_per_scope: usize,
    replying_scopes: Mutex<HashMap<Scope, usize>>,
}

impl Admission {
    pub(crate) fn new(limits: &HttpLimits) -> Self {
        Self {
            heavy_reads: Arc::new(Semaphore::new(limits.max_concurrent_heavy_reads)),
            heavy_read_wait: limits.heavy_read_wait,
            replies: Arc::new(Semaphore::new(limits.max_concurrent_replies)),
            replies_per_scope: limits.max_concurrent_replies_per_scope,
            replying_scopes: Mutex::new(HashMap::new()),
        }
    }

    /// A turn for a heavy read (a message page, a context window): waits up to
    /// [`HttpLimits::heavy_read_wait`] for one, then refuses with `503 busy`.
    pub(crate) async fn heavy_read(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        let waited = tokio::time::timeout(
            self.heavy_read_wait,
            self.heavy_reads.clone().acquire_owned(),
        )
        .await;
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                telemetry::heavy_read_refused();
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the server is reading as many large pages as it allows at once; retry later",
                ))
            }
        }
    }

    /// A slot for one reply stream in `scope`, or `429 too_many_replies` at once when
    /// the server or the scope has as many open as allowed. The slot is held until
    /// the stream ends or is dropped.
    pub(crate) fn reply(self: &Arc<Self>, scope: &Scope) -> Result<ReplySlot, ApiError> {
        let Ok(permit) = self.replies.clone().try_acquire_owned() else {
            telemetry::reply_refused("total");
            return Err(too_many_replies(
                "the server is streaming as many replies as it allows at once; retry later",
            ));
        };
        {
            let mut scopes = self
                .replying_scopes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let open = scopes.entry(scope.clone()).or_insert(0);
            if *open >= self.replies_per_scope {
                telemetry::reply_refused("scope");
                return Err(too_many_replies(
                    "this scope has as many replies streaming as allowed at once; retry later",
                ));
            }
            *open += 1;
        }
        telemetry::replies_active(1.0);
        Ok(ReplySlot {
            _permit: permit,
            admission: Arc::clone(self),
            scope: scope.clone(),
        })
    }
}

fn too_many_replies(detail: &str) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_replies", detail)
}

/// One open reply stream, counted against the bounds until dropped.
#[derive(Debug)]
pub(crate) struct ReplySlot {
    _permit: OwnedSemaphorePermit,
    admission: Arc<Admission>,
    scope: Scope,
}

impl Drop for ReplySlot {
    fn drop(&mut self) {
        telemetry::replies_active(-1.0);
        let mut scopes = self
            .admission
            .replying_scopes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = scopes.get_mut(&self.scope) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                scopes.remove(&self.scope);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(total: usize, per_scope: usize) -> Arc<Admission> {
        let limits = HttpLimits::default()
            .with_max_concurrent_replies(total)
            .with_max_concurrent_replies_per_scope(per_scope);
        Arc::new(Admission::new(&limits))
    }

    #[test]
    fn replies_are_bounded_per_scope_and_in_total_and_slots_come_back() {
        let admission = admission(3, 2);
        let a = Scope::new("a").unwrap();
        let b = Scope::new("b").unwrap();
        let first = admission.reply(&a).unwrap();
        let _second = admission.reply(&a).unwrap();
        let refused = admission.reply(&a).unwrap_err();
        assert_eq!(refused.problem.code, "too_many_replies");
        assert_eq!(refused.problem.status, 429);
        let _third = admission.reply(&b).unwrap();
        assert!(admission.reply(&b).is_err(), "the total is 3");
        drop(first);
        let _again = admission.reply(&a).unwrap();
        drop(_again);
        drop(_second);
        assert!(
            !admission.replying_scopes.lock().unwrap().contains_key(&a),
            "an idle scope is forgotten"
        );
    }

    #[tokio::test]
    async fn a_heavy_read_waits_briefly_then_is_refused() {
        let limits = HttpLimits::default()
            .with_max_concurrent_heavy_reads(1)
            .with_heavy_read_wait(Duration::from_millis(50));
        let admission = Admission::new(&limits);
        let held = admission.heavy_read().await.unwrap();
        let refused = admission.heavy_read().await.unwrap_err();
        assert_eq!(refused.problem.code, "busy");
        drop(held);
        let _turn = admission.heavy_read().await.unwrap();
    }
}
