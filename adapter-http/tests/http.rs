//! Integration tests of the HTTP adapter, in one binary: the router is driven with
//! `tower::ServiceExt::oneshot`, and over real loopback HTTP where streaming or
//! concurrency needs it.

// Test helpers too may unwrap: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "http/support.rs"]
mod support;

#[path = "http/bad_input.rs"]
mod bad_input;
#[path = "http/bounds.rs"]
mod bounds;
#[path = "http/concurrency.rs"]
mod concurrency;
#[path = "http/guard.rs"]
mod guard;
#[path = "http/hygiene.rs"]
mod hygiene;
#[path = "http/isolation.rs"]
mod isolation;
#[path = "http/lifecycle.rs"]
mod lifecycle;
#[path = "http/openapi.rs"]
mod openapi;
#[path = "http/reply.rs"]
mod reply;
#[path = "http/routes.rs"]
mod routes;
#[path = "http/search.rs"]
mod search;
#[path = "http/serving.rs"]
mod serving;
#[path = "http/tree.rs"]
mod tree;
