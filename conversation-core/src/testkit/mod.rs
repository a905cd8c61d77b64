//! The store conformance suite: the contract every [`Store`](crate::Store) passes.
//!
//! A backend — ours or a third party's — proves it keeps the promises listed on
//! [`Store`](crate::Store) by invoking [`store_conformance_tests!`](crate::store_conformance_tests)
//! in its tests with an async factory: given the [`Clock`](crate::Clock) to read the
//! time from, it returns a fresh, empty store that uses that clock for every
//! timestamp it writes. The macro expands to one `#[tokio::test]` per contract case
//! (so a failure names the promise that broke) plus `model_equivalence`, a
//! property-based test that drives random operation sequences (conversations,
//! message trees, branch switches, deletions, forks, metadata merges, searches,
//! retention queries, runs, reads) against the store and a plain reference model
//! and compares every read.
//!
//! Run it twice: once on the concrete type, and once through `Arc<dyn Store>`, which
//! proves the store works behind the trait object hosts hold:
//!
//! ```ignore
//! // tests/store.rs of a backend; needs dev-dependencies `tokio` (features `macros`,
//! // `rt-multi-thread`) and `conversation-core` with feature `testkit`.
//! use std::sync::Arc;
//! use conversation_core::{Clock, Store};
//! use my_backend::MyStore;
//!
//! mod direct {
//!     use super::*;
//!     conversation_core::store_conformance_tests!(|clock: Arc<dyn Clock>| async move {
//!         MyStore::new().with_clock(clock)
//!     });
//! }
//!
//! mod dyn_store {
//!     use super::*;
//!     conversation_core::store_conformance_tests!(|clock: Arc<dyn Clock>| async move {
//!         Arc::new(MyStore::new().with_clock(clock)) as Arc<dyn Store>
//!     });
//! }
//! ```
//!
//! Most cases get [`SystemClock`](crate::SystemClock); the cases about time, branch
//! switching, message deletion, run leases and retention get a [`ManualClock`] and
//! move it, forwards and backwards, between calls, and so does the property test. A
//! store that reads the time anywhere else (the database server's `now()`,
//! `Utc::now()`) fails them.
//!
//! Every case works in scopes of its own and needs an empty store only for the
//! listing cases and the retention cases that read every scope (those date their
//! conversations in the early 1990s); each gets a fresh store from the factory. The
//! stores must use the default [`Limits`](crate::Limits), because the validation,
//! metadata and page-size cases test them. The property test runs 32 sequences of up
//! to 60 operations unless `PROPTEST_CASES` says otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cases;
mod clock;
mod intercept;
mod model;

pub use cases::*;
pub use clock::ManualClock;
pub use intercept::{Call, Intercepted, Interceptor};
pub use model::check_against_model;

/// Expands to one `#[tokio::test]` per conformance case, plus the reference-model
/// property test, for the store built by `$factory`: an expression callable with an
/// `Arc<dyn Clock>` that returns a future of a fresh store reading its time from that
/// clock, e.g. `|clock: Arc<dyn Clock>| async move { MemoryStore::new().with_clock(clock) }`.
/// See the [module docs](crate::testkit).
// Exported at the crate root, where docs.rs would not mark it with its feature.
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@system_clock $factory;
            create_and_get_round_trip,
            get_unknown_is_not_found,
            isolation_on_every_method,
            append_assigns_seq_and_moves_counters,
            seq_is_gap_free_under_concurrent_appenders,
            concurrent_batches_stay_contiguous,
            batch_is_atomic,
            idempotent_retry_writes_nothing,
            append_version_conflict,
            update_changes_fields_and_version,
            update_version_conflict,
            user_title_is_never_overwritten,
            automatic_title_authority,
            delete_removes_messages,
            list_newest_activity_first,
            list_paginates_without_repeats,
            list_pages_never_repeat_under_writes,
            list_pinned_first,
            list_archived_filter,
            list_limit_default_and_cap,
            list_bad_cursor_and_limit,
            list_title_filter,
            message_pages,
            recent_messages_window,
            validation_refuses_every_limit,
            content_round_trips_exactly,
            timestamps_are_utc_milliseconds,
            append_follows_the_head,
            append_at_a_message_opens_a_branch,
            append_at_root_adds_a_root_sibling,
            siblings_are_ordered_by_seq,
            sibling_ids_are_windowed,
            delete_message_removes_its_subtree,
            delete_message_moves_the_head,
            delete_message_never_reuses_seqs,
            deleting_the_only_root_empties_the_conversation,
            fork_copies_the_path,
            recent_messages_ending_at_a_leaf,
            get_message_round_trip,
            tree_links_never_cross_conversations,
            concurrent_tree_writes_keep_the_tree_whole,
            delete_racing_an_append_under_it,
            title_hint_titles_with_the_append,
            pages_stop_at_max_page_bytes,
            validation_of_tree_inputs,
            concurrent_run_starts_one_wins,
            runs_are_keyed_by_conversation_and_scope,
            deleting_a_conversation_deletes_its_runs,
            search_finds_what_the_words_say,
            search_needs_every_word_in_one_row,
            search_folds_case_and_diacritics,
            search_follows_every_write,
            search_never_crosses_scopes,
            search_archived_filter,
            search_pages_cover_every_hit_once,
            search_hits_carry_snippets,
            search_text_is_never_syntax,
            search_bad_cursor,
            import_round_trips_exactly,
            import_never_overwrites,
            import_refuses_what_check_refuses,
            import_then_writes_continue,
            delete_at_a_version,
            metadata_patch_merges,
            concurrent_metadata_patches_lose_nothing,
            metadata_merge_over_the_limit_changes_nothing,
            list_metadata_filter,
            list_metadata_filter_refusals,
        );
        $crate::store_conformance_tests!(@manual_clock $factory;
            switch_moves_the_head_to_the_newest_leaf,
            delete_message_is_a_versioned_change,
            timestamps_follow_the_clock_and_never_go_back,
            start_run_marks_the_conversation,
            start_run_while_one_is_live_is_refused,
            renew_and_cancel_a_running_run,
            finish_run_applies_once,
            abandoned_run_reads_failed,
            retention_by_inactivity,
            retention_by_archive_age,
        );

        #[test]
        fn model_equivalence() {
            $crate::testkit::check_against_model($factory);
        }
    };
    (@system_clock $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let clock: ::std::sync::Arc<dyn $crate::Clock> =
                    ::std::sync::Arc::new($crate::SystemClock);
                let store = ::std::sync::Arc::new(($factory)(clock).await);
                $crate::testkit::$case(store).await;
            }
        )*
    };
    (@manual_clock $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let clock = ::std::sync::Arc::new($crate::testkit::ManualClock::default());
                let shared: ::std::sync::Arc<dyn $crate::Clock> = clock.clone();
                let store = ::std::sync::Arc::new(($factory)(shared).await);
                $crate::testkit::$case(store, clock).await;
            }
        )*
    };
}
