//! The store conformance suite against `MemoryStore`, directly and as `Arc<dyn Store>`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is how a test fails

use std::sync::Arc;

use conversation_core::{Clock, Store};
use conversation_store_memory::MemoryStore;

mod direct {
    use super::*;
    conversation_core::store_conformance_tests!(|clock: Arc<dyn Clock>| async move {
        MemoryStore::new().with_clock(clock)
    });
}

mod dyn_store {
    use super::*;
    conversation_core::store_conformance_tests!(|clock: Arc<dyn Clock>| async move {
        Arc::new(MemoryStore::new().with_clock(clock)) as Arc<dyn Store>
    });
}
