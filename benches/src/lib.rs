//! # conversation-benches
//!
//! The scale harness of the conversation stores and its parts. The `scale` binary
//! runs the workload of [`workload`] against one store and prints a table and a JSON
//! report ([`report`]); for SQLite every operation is held against a raw baseline
//! ([`sqlite::RawSqlite`]) measured in the same run on the same file. The criterion
//! micro-benches (`cargo bench -p conversation-benches`) reuse the seeding and the
//! baseline.
//!
//! ```sh
//! cargo run --release -p conversation-benches --bin scale -- --store sqlite --quick
//! ```
//!
//! `BENCHMARKS.md` at the root of the workspace holds the figures of a full run and
//! explains each column. The library never prints; the binary does.

pub mod body;
mod error;
mod http;
pub mod probe;
pub mod report;
mod search;
pub mod sqlite;
pub mod stats;
mod target;
mod tree;
pub mod workload;

pub use error::{Error, Result};
pub use target::StoreKind;
