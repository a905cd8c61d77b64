//! Agent runs (promise 13): one live run per conversation, leases read the same by
//! every instance, and an end that applies once.

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::backend::truncate_to_millis;
use crate::testkit::ManualClock;
use crate::{
    Clock, Entity, ImportOutcome, ImportedConversation, NewRun, Run, RunFailure, RunId, RunOutcome,
    RunStatus, Usage,
};

const LEASE: Duration = Duration::from_secs(30);

#[track_caller]
fn assert_run_not_found<T: Debug>(result: Result<T>, what: &str) {
    match result {
        Err(Error::NotFound {
            entity: Entity::Run,
        }) => {}
        other => panic!("{what}: expected NotFound(run), got {other:?}"),
    }
}

#[track_caller]
fn assert_run_in_progress<T: Debug>(result: Result<T>, live: RunId) {
    match result {
        Err(Error::RunInProgress { run_id }) => assert_eq!(run_id, live, "names the live run"),
        other => panic!("expected RunInProgress({live}), got {other:?}"),
    }
}

fn usage(prompt: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
    }
}

fn outcome(status: RunStatus, steps: u32, used: Usage) -> RunOutcome {
    let mut outcome = RunOutcome::new(status);
    outcome.steps = steps;
    outcome.usage = used;
    outcome
}

fn lease(millis: i64) -> TimeDelta {
    TimeDelta::milliseconds(millis)
}

fn now(clock: &ManualClock) -> DateTime<Utc> {
    truncate_to_millis(clock.now())
}

/// The run as a reader sees it once its lease `until` has passed.
#[track_caller]
fn assert_abandoned(read: &Run, started: &Run) {
    assert_eq!(read.status, RunStatus::Failed, "{read:?}");
    assert_eq!(
        read.finished_at,
        Some(started.lease_until),
        "ends at its lease"
    );
    let error = read.error.as_ref().expect("an abandoned run says why");
    assert_eq!(error.code, RunFailure::ABANDONED);
    assert!(!error.message.is_empty());
    assert_eq!(
        Run {
            status: RunStatus::Running,
            finished_at: None,
            error: None,
            ..read.clone()
        },
        *started,
        "nothing else of it changes"
    );
}

/// The conversation as it must read after runs started or ended: `chat` with this
/// `active_run_id` and `usage`, nothing else changed (not `version`, not
/// `updated_at`).
async fn assert_runs_left_the_rest<S: Store>(
    store: &S,
    scope: &Scope,
    chat: &Conversation,
    active: Option<RunId>,
    used: Usage,
) {
    let read = store.get_conversation(scope, chat.id).await.unwrap();
    assert_eq!(
        read,
        Conversation {
            active_run_id: active,
            usage: used,
            ..chat.clone()
        }
    );
}

/// Promise 13: a start stores a running run, leased from the clock's time, and makes
/// it the conversation's `active_run_id`; it changes neither `version` nor
/// `updated_at`, and lists show it.
pub async fn start_run_marks_the_conversation<S: Store>(store: Arc<S>, clock: Arc<ManualClock>) {
    let scope = fresh_scope("run-start");
    let chat = chat_with_messages(&*store, &scope, 2).await;
    clock.advance(TimeDelta::seconds(5));
    let new = NewRun::new(LEASE);
    let run = store.start_run(&scope, chat.id, new.clone()).await.unwrap();
    let at = now(&clock);
    let expected = Run {
        id: new.id,
        conversation_id: chat.id,
        status: RunStatus::Running,
        started_at: at,
        finished_at: None,
        lease_until: at + lease(30_000),
        cancel_requested: false,
        steps: 0,
        usage: Usage::default(),
        error: None,
        pending_tool_calls: Vec::new(),
    };
    assert_eq!(run, expected);
    assert_eq!(
        store.get_run(&scope, chat.id, run.id).await.unwrap(),
        expected
    );
    assert_runs_left_the_rest(&*store, &scope, &chat, Some(run.id), Usage::default()).await;
    let listed = store
        .list_conversations(&scope, &ConversationQuery::new())
        .await
        .unwrap();
    assert_eq!(listed.items[0].active_run_id, Some(run.id));
}

/// Promise 13: a start while a run is live (up to the last millisecond of its lease)
/// is `RunInProgress` naming it and writes nothing; a start again with the id of a
/// stored run (a retry) returns that run as stored and writes nothing.
pub async fn start_run_while_one_is_live_is_refused<S: Store>(
    store: Arc<S>,
    clock: Arc<ManualClock>,
) {
    let scope = fresh_scope("run-busy");
    let chat = chat_with_messages(&*store, &scope, 1).await;
    let new = NewRun::new(LEASE);
    let first = store.start_run(&scope, chat.id, new.clone()).await.unwrap();
    let running = store.get_conversation(&scope, chat.id).await.unwrap();

    // The last instant of the lease, sub-millisecond digits aside, is still in it.
    clock.set(first.lease_until + TimeDelta::microseconds(999));
    let second = NewRun::new(LEASE);
    assert_run_in_progress(
        store.start_run(&scope, chat.id, second.clone()).await,
        first.id,
    );
    assert_run_not_found(
        store.get_run(&scope, chat.id, second.id).await,
        "a refused start",
    );
    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        running
    );
    assert_eq!(
        store.get_run(&scope, chat.id, first.id).await.unwrap(),
        first
    );

    // A retried start is answered from storage, live or ended.
    assert_eq!(
        store.start_run(&scope, chat.id, new.clone()).await.unwrap(),
        first
    );
    clock.advance(lease(-10_000));
    let finished = store
        .finish_run(
            &scope,
            chat.id,
            first.id,
            outcome(RunStatus::Completed, 1, usage(3, 4)),
        )
        .await
        .unwrap();
    let after = store.get_conversation(&scope, chat.id).await.unwrap();
    assert_eq!(
        store.start_run(&scope, chat.id, new).await.unwrap(),
        finished,
        "a retried start never restarts an ended run"
    );
    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        after
    );
    assert_eq!(after.active_run_id, None);
    assert_eq!(after.usage, usage(3, 4));
}

/// Promise 13 under concurrency: of 8 starts at once, exactly one wins and the others
/// are `RunInProgress` naming it, round after round.
pub async fn concurrent_run_starts_one_wins<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("run-race");
    let chat = chat_with_messages(&*store, &scope, 1).await;
    for round in 0..5 {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let store = Arc::clone(&store);
            let scope = scope.clone();
            let new = NewRun::new(Duration::from_secs(600));
            tasks.push(tokio::spawn(async move {
                (new.id, store.start_run(&scope, chat.id, new).await)
            }));
        }
        let mut winners = Vec::new();
        let mut refused = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (id, Ok(run)) => {
                    assert_eq!(run.id, id);
                    winners.push(run);
                }
                (id, Err(Error::RunInProgress { run_id })) => refused.push((id, run_id)),
                (_, Err(other)) => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let winner = &winners[0];
        for (id, named) in refused {
            assert_eq!(named, winner.id, "round {round}: names the winner");
            assert_run_not_found(store.get_run(&scope, chat.id, id).await, "a loser");
        }
        let conversation = store.get_conversation(&scope, chat.id).await.unwrap();
        assert_eq!(conversation.active_run_id, Some(winner.id));
        assert_eq!(conversation.version, chat.version, "round {round}");
        store
            .finish_run(
                &scope,
                chat.id,
                winner.id,
                outcome(RunStatus::Completed, 1, usage(1, 1)),
            )
            .await
            .unwrap();
    }
    let conversation = store.get_conversation(&scope, chat.id).await.unwrap();
    assert_eq!(conversation.usage, usage(5, 5), "one usage per round");
    assert_eq!(conversation.active_run_id, None);
}

/// Promise 13: a renewal extends the lease to its length from now and reports a
/// cancel asked for since; a cancel marks a running run and nothing else; neither
/// touches the conversation.
pub async fn renew_and_cancel_a_running_run<S: Store>(store: Arc<S>, clock: Arc<ManualClock>) {
    let scope = fresh_scope("run-renew");
    let chat = chat_with_messages(&*store, &scope, 1).await;
    let run = store
        .start_run(&scope, chat.id, NewRun::new(Duration::from_secs(10)))
        .await
        .unwrap();
    clock.advance(lease(4_321));
    let renewed = store
        .renew_run(&scope, chat.id, run.id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        renewed,
        Run {
            lease_until: now(&clock) + lease(20_000),
            ..run.clone()
        }
    );
    assert!(renewed.lease_until > run.lease_until);
    assert_eq!(
        store.get_run(&scope, chat.id, run.id).await.unwrap(),
        renewed
    );

    clock.advance(lease(1_000));
    let cancelled = store.cancel_run(&scope, chat.id, run.id).await.unwrap();
    assert_eq!(
        cancelled,
        Run {
            cancel_requested: true,
            ..renewed.clone()
        },
        "a cancel asks; the runner ends the run"
    );
    assert_eq!(
        store.cancel_run(&scope, chat.id, run.id).await.unwrap(),
        cancelled,
        "asking twice changes nothing"
    );
    // Past the first lease but within the renewed one: still live.
    clock.advance(lease(10_000));
    let told = store
        .renew_run(&scope, chat.id, run.id, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(told.cancel_requested, "the runner learns of the cancel");
    assert_eq!(told.status, RunStatus::Running);
    assert_eq!(told.lease_until, now(&clock) + lease(20_000));
    assert_run_in_progress(
        store.start_run(&scope, chat.id, NewRun::new(LEASE)).await,
        run.id,
    );
    assert_runs_left_the_rest(&*store, &scope, &chat, Some(run.id), Usage::default()).await;

    let ended = store
        .finish_run(
            &scope,
            chat.id,
            run.id,
            RunOutcome::new(RunStatus::Cancelled),
        )
        .await
        .unwrap();
    assert_eq!(ended.status, RunStatus::Cancelled);
    assert!(ended.cancel_requested);
}

/// Promise 13: a finish ends the run once, at the clock's time, with its outcome;
/// adds its usage to the conversation's totals (runs sum) and clears
/// `active_run_id`, leaving `version` and `updated_at`. A finish, renewal or cancel
/// of an ended run returns it unchanged and adds nothing.
pub async fn finish_run_applies_once<S: Store>(store: Arc<S>, clock: Arc<ManualClock>) {
    let scope = fresh_scope("run-finish");
    let chat = chat_with_messages(&*store, &scope, 1).await;
    let first = store
        .start_run(&scope, chat.id, NewRun::new(LEASE))
        .await
        .unwrap();
    clock.advance(lease(2_500));
    let finished = store
        .finish_run(
            &scope,
            chat.id,
            first.id,
            outcome(RunStatus::Completed, 2, usage(100, 20)),
        )
        .await
        .unwrap();
    assert_eq!(
        finished,
        Run {
            status: RunStatus::Completed,
            finished_at: Some(now(&clock)),
            steps: 2,
            usage: usage(100, 20),
            ..first.clone()
        }
    );
    assert_runs_left_the_rest(&*store, &scope, &chat, None, usage(100, 20)).await;

    clock.advance(lease(1_000));
    let mut again = outcome(RunStatus::Failed, 9, usage(5_000, 5_000));
    again.error = Some(RunFailure::new("backend", "late"));
    for (what, result) in [
        (
            "finish",
            store.finish_run(&scope, chat.id, first.id, again).await,
        ),
        (
            "renew",
            store
                .renew_run(&scope, chat.id, first.id, Duration::from_secs(60))
                .await,
        ),
        ("cancel", store.cancel_run(&scope, chat.id, first.id).await),
        ("get", store.get_run(&scope, chat.id, first.id).await),
    ] {
        assert_eq!(result.unwrap(), finished, "{what} of an ended run");
    }
    assert_runs_left_the_rest(&*store, &scope, &chat, None, usage(100, 20)).await;

    // A second run: its usage adds up; its tool calls and error are kept.
    let second = store
        .start_run(&scope, chat.id, NewRun::new(LEASE))
        .await
        .unwrap();
    let call = ToolCall {
        id: "call_7".into(),
        name: "run_sql".into(),
        arguments: json!({"sql": "SELECT 1"}),
    };
    let mut waiting = outcome(RunStatus::RequiresAction, 1, usage(7, 3));
    waiting.pending_tool_calls = vec![call.clone()];
    let asked = store
        .finish_run(&scope, chat.id, second.id, waiting)
        .await
        .unwrap();
    assert_eq!(asked.status, RunStatus::RequiresAction);
    assert_eq!(asked.pending_tool_calls, vec![call]);
    assert_runs_left_the_rest(&*store, &scope, &chat, None, usage(107, 23)).await;

    let third = store
        .start_run(&scope, chat.id, NewRun::new(LEASE))
        .await
        .unwrap();
    let limited = RunFailure {
        retry_after_secs: Some(30),
        ..RunFailure::new("upstream_rate_limited", "slow down")
    };
    let mut failed = outcome(RunStatus::Failed, 3, usage(1, 0));
    failed.error = Some(limited.clone());
    let failed = store
        .finish_run(&scope, chat.id, third.id, failed)
        .await
        .unwrap();
    assert_eq!(failed.error, Some(limited), "why it failed, all of it");
    assert_eq!(
        store.get_run(&scope, chat.id, third.id).await.unwrap(),
        failed
    );

    // An outcome that is not an end still ends the run (as failed).
    let fourth = store
        .start_run(&scope, chat.id, NewRun::new(LEASE))
        .await
        .unwrap();
    let odd = store
        .finish_run(
            &scope,
            chat.id,
            fourth.id,
            RunOutcome::new(RunStatus::Running),
        )
        .await
        .unwrap();
    assert_eq!(odd.status, RunStatus::Failed);
    assert_runs_left_the_rest(&*store, &scope, &chat, None, usage(108, 23)).await;
    for run in [&finished, &asked, &failed, &odd] {
        assert_eq!(
            &store.get_run(&scope, chat.id, run.id).await.unwrap(),
            run,
            "every run stays readable as it ended"
        );
    }
}

/// Promise 13: a run whose lease has passed reads as failed (`abandoned`), ended at
/// its lease's end; a new start takes its place. A start, finish, renewal or cancel
/// that finds it so ends it in storage: it adds no usage, clears `active_run_id`
/// when it names it, and stays failed when the clock steps back.
pub async fn abandoned_run_reads_failed<S: Store>(store: Arc<S>, clock: Arc<ManualClock>) {
    let scope = fresh_scope("run-abandoned");
    let chat = chat_with_messages(&*store, &scope, 1).await;
    let started = clock.now();
    let old = store
        .start_run(&scope, chat.id, NewRun::new(Duration::from_secs(10)))
        .await
        .unwrap();
    clock.set(old.lease_until + TimeDelta::microseconds(999));
    assert_eq!(
        store.get_run(&scope, chat.id, old.id).await.unwrap(),
        old,
        "live to the last millisecond of its lease"
    );
    clock.advance(lease(1));
    assert_abandoned(&store.get_run(&scope, chat.id, old.id).await.unwrap(), &old);

    // A new start takes its place; the old run stays as it was read.
    let new = store
        .start_run(&scope, chat.id, NewRun::new(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_runs_left_the_rest(&*store, &scope, &chat, Some(new.id), Usage::default()).await;
    let finished_late = store
        .finish_run(
            &scope,
            chat.id,
            old.id,
            outcome(RunStatus::Completed, 1, usage(50, 50)),
        )
        .await
        .unwrap();
    assert_abandoned(&finished_late, &old);
    assert_runs_left_the_rest(&*store, &scope, &chat, Some(new.id), Usage::default()).await;
    clock.set(started);
    assert_abandoned(&store.get_run(&scope, chat.id, old.id).await.unwrap(), &old);
    assert_eq!(
        store.get_run(&scope, chat.id, new.id).await.unwrap().status,
        RunStatus::Running
    );
    store
        .finish_run(
            &scope,
            chat.id,
            new.id,
            RunOutcome::new(RunStatus::Completed),
        )
        .await
        .unwrap();

    // A finish, renewal or cancel that finds the lease passed ends the run there.
    for what in ["finish", "renew", "cancel"] {
        let begun = clock.now();
        let run = store
            .start_run(&scope, chat.id, NewRun::new(Duration::from_secs(10)))
            .await
            .unwrap();
        clock.advance(lease(10_001));
        let answered = match what {
            "finish" => {
                let late = outcome(RunStatus::Completed, 1, usage(50, 50));
                store.finish_run(&scope, chat.id, run.id, late).await
            }
            "renew" => store.renew_run(&scope, chat.id, run.id, LEASE).await,
            _ => store.cancel_run(&scope, chat.id, run.id).await,
        }
        .unwrap();
        assert_abandoned(&answered, &run);
        assert_runs_left_the_rest(&*store, &scope, &chat, None, Usage::default()).await;
        clock.set(begun);
        assert_abandoned(&store.get_run(&scope, chat.id, run.id).await.unwrap(), &run);
        assert_eq!(
            store
                .get_conversation(&scope, chat.id)
                .await
                .unwrap()
                .active_run_id,
            None,
            "{what}"
        );
    }
}

/// Promises 1 and 13: a run is read and written only through its own conversation
/// in its own scope: through another conversation it is `NotFound` (a run), through
/// another scope the conversation is `NotFound`; nothing changes.
pub async fn runs_are_keyed_by_conversation_and_scope<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("run-keys");
    let elsewhere = fresh_scope("run-keys-elsewhere");
    let chat = chat_with_messages(&*store, &scope, 1).await;
    let sibling = chat_with_messages(&*store, &scope, 1).await;
    let foreign = chat_with_messages(&*store, &elsewhere, 1).await;
    let run = store
        .start_run(&scope, chat.id, NewRun::new(LEASE))
        .await
        .unwrap();
    let chat = store.get_conversation(&scope, chat.id).await.unwrap();

    for (scope, id, what) in [
        (&scope, sibling.id, "through another conversation"),
        (
            &elsewhere,
            foreign.id,
            "through another scope's conversation",
        ),
        (&scope, chat.id, "an unknown run"),
    ] {
        let run_id = if what == "an unknown run" {
            RunId::new()
        } else {
            run.id
        };
        assert_run_not_found(store.get_run(scope, id, run_id).await, what);
        assert_run_not_found(
            store.renew_run(scope, id, run_id, LEASE).await,
            &format!("renew {what}"),
        );
        assert_run_not_found(
            store.cancel_run(scope, id, run_id).await,
            &format!("cancel {what}"),
        );
        assert_run_not_found(
            store
                .finish_run(
                    scope,
                    id,
                    run_id,
                    outcome(RunStatus::Completed, 1, usage(9, 9)),
                )
                .await,
            &format!("finish {what}"),
        );
    }
    for (what, result) in [
        ("get", store.get_run(&elsewhere, chat.id, run.id).await),
        (
            "renew",
            store.renew_run(&elsewhere, chat.id, run.id, LEASE).await,
        ),
        (
            "cancel",
            store.cancel_run(&elsewhere, chat.id, run.id).await,
        ),
        (
            "finish",
            store
                .finish_run(
                    &elsewhere,
                    chat.id,
                    run.id,
                    RunOutcome::new(RunStatus::Completed),
                )
                .await,
        ),
        (
            "start",
            store
                .start_run(&elsewhere, chat.id, NewRun::new(LEASE))
                .await,
        ),
    ] {
        match result {
            Err(Error::NotFound {
                entity: Entity::Conversation,
            }) => {}
            other => panic!("{what} through another scope: {other:?}"),
        }
    }
    assert_not_found(
        store
            .start_run(&scope, ConversationId::new(), NewRun::new(LEASE))
            .await,
        "a start in no conversation",
    );
    assert_eq!(store.get_run(&scope, chat.id, run.id).await.unwrap(), run);
    assert_eq!(store.get_conversation(&scope, chat.id).await.unwrap(), chat);
    for other in [(&scope, sibling.id), (&elsewhere, foreign.id)] {
        let read = store.get_conversation(other.0, other.1).await.unwrap();
        assert_eq!((read.active_run_id, read.usage), (None, Usage::default()));
    }
}

/// Promises 7 and 13: deleting a conversation deletes its runs; a conversation
/// imported again under the same id has none of them.
pub async fn deleting_a_conversation_deletes_its_runs<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("run-delete");
    let chat = chat_with_messages(&*store, &scope, 2).await;
    let done = store
        .start_run(&scope, chat.id, NewRun::new(LEASE))
        .await
        .unwrap();
    store
        .finish_run(
            &scope,
            chat.id,
            done.id,
            RunOutcome::new(RunStatus::Completed),
        )
        .await
        .unwrap();
    let live = store
        .start_run(&scope, chat.id, NewRun::new(LEASE))
        .await
        .unwrap();
    let before = store.get_conversation(&scope, chat.id).await.unwrap();
    let messages = read_view(&*store, &scope, chat.id, MessageView::All).await;
    store
        .delete_conversation(&scope, chat.id, None)
        .await
        .unwrap();
    for run in [&done, &live] {
        assert_not_found(
            store.get_run(&scope, chat.id, run.id).await,
            "a run of a deleted conversation",
        );
    }

    let imported = ImportedConversation {
        conversation: Conversation {
            active_run_id: None,
            ..before
        },
        messages,
    };
    assert_eq!(
        store.import_conversation(&scope, imported).await.unwrap(),
        ImportOutcome::Imported
    );
    for run in [&done, &live] {
        assert_run_not_found(
            store.get_run(&scope, chat.id, run.id).await,
            "a run of the conversation before it was deleted",
        );
    }
    let again = store
        .start_run(&scope, chat.id, NewRun::new(LEASE))
        .await
        .unwrap();
    assert_eq!(again.status, RunStatus::Running, "no live run was left");
}
