//! A clock the conformance cases set by hand.

use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};

use crate::Clock;

/// A [`Clock`] that stands still until a test moves it, forwards or backwards.
///
/// The suite hands one to a store factory as `Arc<dyn Clock>` and keeps its own
/// `Arc<ManualClock>` to move the time between calls: that is how it checks that
/// timestamps are the clock's time truncated to milliseconds, and that they never
/// move backwards within a conversation when the clock steps back (promise 12 of
/// [`Store`](crate::Store)).
///
/// ```
/// use std::sync::Arc;
/// use chrono::{TimeDelta, Utc};
/// use conversation_core::Clock;
/// use conversation_core::testkit::ManualClock;
///
/// let clock = Arc::new(ManualClock::new(Utc::now()));
/// let for_the_store: Arc<dyn Clock> = clock.clone();
/// let start = for_the_store.now();
/// clock.advance(TimeDelta::milliseconds(-5));
/// assert_eq!(for_the_store.now(), start - TimeDelta::milliseconds(5));
/// ```
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock showing `start`, sub-millisecond digits included.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// Sets the time, earlier or later than it was.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.lock() = at;
    }

    /// Moves the time by `by`; a negative `by` steps it back.
    pub fn advance(&self, by: TimeDelta) {
        let mut now = self.lock();
        *now += by;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // The guarded value is a plain timestamp: a panic elsewhere cannot leave it torn.
        self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for ManualClock {
    /// A clock showing the system's current time.
    fn default() -> Self {
        Self::new(Utc::now())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}
