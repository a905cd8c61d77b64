//! The store conformance suite: the contract every [`Store`](crate::Store) passes.
//!
//! A backend — ours or a third party's — proves it keeps the promises listed on
//! [`Store`](crate::Store) by invoking [`store_conformance_tests!`](crate::store_conformance_tests)
//! in its tests with an async factory that returns a fresh, empty store. The macro
//! expands to one `#[tokio::test]` per contract case (so a failure names the promise
//! that broke) plus `model_equivalence`, a property-based test that drives random
//! operation sequences against the store and a plain reference model and compares
//! every read.
//!
//! Run it twice: once on the concrete type, and once through `Arc<dyn Store>`, which
//! proves the store works behind the trait object hosts hold:
//!
//! ```ignore
//! // tests/store.rs of a backend; needs dev-dependencies `tokio` (features `macros`,
//! // `rt-multi-thread`) and `conversation-core` with feature `testkit`.
//! use std::sync::Arc;
//! use conversation_core::Store;
//! use my_backend::MyStore;
//!
//! mod direct {
//!     use super::*;
//!     conversation_core::store_conformance_tests!(|| async { MyStore::new() });
//! }
//!
//! mod dyn_store {
//!     use super::*;
//!     conversation_core::store_conformance_tests!(|| async { Arc::new(MyStore::new()) as Arc<dyn Store> });
//! }
//! ```
//!
//! Every case works in scopes of its own and needs an empty store only for the
//! listing cases; each gets a fresh store from the factory. The stores must use the
//! default [`Limits`](crate::Limits), because the validation cases test them.
//! The property test runs 32 cases unless `PROPTEST_CASES` says otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cases;
mod model;

pub use cases::*;
pub use model::check_against_model;

/// Expands to one `#[tokio::test]` per conformance case, plus the reference-model
/// property test, for the store built by `$factory` (an expression callable with no
/// arguments that returns a future of a fresh store). See the [module docs](crate::testkit).
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@cases $factory;
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
            timestamps_are_utc_milliseconds
        );

        #[test]
        fn model_equivalence() {
            $crate::testkit::check_against_model(|| async { ($factory)().await });
        }
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = ::std::sync::Arc::new(($factory)().await);
                $crate::testkit::$case(store).await;
            }
        )*
    };
}
