//! Where stores read the time.

use std::fmt::Debug;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// The source of a store's timestamps. Stores read it through this trait so that a
/// test (or a host replaying data) can set the time; the store, not the clock, keeps
/// timestamps from moving backwards within a conversation.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current time. Stores truncate it to milliseconds.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock: [`Utc::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The current UTC time truncated to whole milliseconds, the precision every store
/// keeps, so that a value written and read back compares equal.
pub fn now() -> DateTime<Utc> {
    truncate_to_millis(Utc::now())
}

/// Truncates a timestamp to whole milliseconds.
pub fn truncate_to_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    // Truncation fails only for dates beyond year 262,000; keep those as they are.
    at.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(at)
}
