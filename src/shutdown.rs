//! `Shutdown`: the stop signal every long-running loop waits on (the
//! server's threads, the store writer, the agent's poll loop).

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A stop signal every loop can wait on.
#[derive(Default)]
pub struct Shutdown {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Shutdown {
    /// Asks every loop to stop.
    pub fn trigger(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Whether a stop was asked for.
    pub fn is_triggered(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `d`; returns true when a stop was asked for.
    pub fn wait(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}
