//! Every integration test of `conversation-store-postgres`, in one binary, against a
//! real PostgreSQL server: `TEST_DATABASE_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`.
//!
//! Each test works in a schema of its own (`conv_test_<unix seconds>_<random>`),
//! dropped when the test's store is dropped; schemas of that form older than an hour
//! (left by a killed run) are dropped when the binary first connects.
//!
//! Without a reachable server the binary prints one line saying so and exits with
//! success before running anything: every test here needs the server. With
//! `REQUIRE_POSTGRES=1` (CI) an unreachable server fails every test instead.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is how a test fails

#[path = "postgres/support.rs"]
mod support;

use std::sync::Arc;

use conversation_core::{Clock, Store};

/// The conformance suite on the concrete type.
mod direct {
    use super::*;
    conversation_core::store_conformance_tests!(|clock: Arc<dyn Clock>| async move {
        support::TestStore::with_clock(clock).await
    });
}

/// The conformance suite through the trait object hosts hold.
mod dyn_store {
    use super::*;
    conversation_core::store_conformance_tests!(|clock: Arc<dyn Clock>| async move {
        Arc::new(support::TestStore::with_clock(clock).await) as Arc<dyn Store>
    });
}

#[path = "postgres/failures.rs"]
mod failures;
#[path = "postgres/multi_process.rs"]
mod multi_process;
#[path = "postgres/plans.rs"]
mod plans;
#[path = "postgres/schema.rs"]
mod schema;
#[cfg(any(
    feature = "tls-rustls-ring",
    feature = "tls-rustls-ring-native-roots",
    feature = "tls-rustls-aws-lc-rs",
    feature = "tls-native-tls"
))]
#[path = "postgres/tls.rs"]
mod tls;
#[path = "postgres/tree.rs"]
mod tree;
