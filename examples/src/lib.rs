//! # conversation-examples
//!
//! The pieces of the example server, as a library so that its tests and other
//! examples build the same thing: [`Settings`] (flags and environment),
//! [`App::build`] (store, model, service, router and web page composed) and
//! [`OfflineEchoModel`] (the model used without an API key).
//!
//! Run the server with `cargo run --release -p conversation-examples --bin server`.

mod app;
mod offline;
mod settings;

pub use app::{API_PREFIX, App, AppError, SCOPES_PATH, install_metrics, open_store};
pub use offline::OfflineEchoModel;
pub use settings::{Database, Settings, SettingsError};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
