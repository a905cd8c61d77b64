//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds the files at
//! compile time, and the compiler does not watch the folder by itself.

#![allow(clippy::print_stdout)]

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
