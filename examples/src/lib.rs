//! # conversation-examples
//!
//! The pieces of the example server, as a library so that its tests and other
//! examples build the same thing: [`Settings`] (flags and environment),
//! [`App::build`] (store, model, tools, service, router and web page composed),
//! [`SampleTools`] (the sample shop database and the agent's SQL tools on it),
//! [`OfflineEchoModel`] (the model used without an API key, which can drive the
//! tool loop with `/sql` questions), [`RetentionTask`] (retention in the background)
//! and [`admin`] (the `conversations` admin command).
//!
//! Run the server with `cargo run --release -p conversation-examples --bin server`,
//! the admin command with `… --bin conversations -- --help`.

pub mod admin;
mod app;
mod offline;
mod retention;
mod sample;
mod settings;

pub use app::{
    API_PREFIX, App, AppError, OpenedStore, SCOPES_PATH, check_model, install_metrics,
    open_database, open_store,
};
pub use offline::{OfflineAnswer, OfflineEchoModel};
pub use retention::RetentionTask;
pub use sample::{SampleError, SampleTools};
pub use settings::{Database, Settings, SettingsError};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
