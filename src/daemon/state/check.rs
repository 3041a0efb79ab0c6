//! The check state ([`Checks`]): when the live table is next read back and compared (the
//! periodic resync, or soon again after a read that failed), and whether the agent is blind
//! (reads keep failing: drift goes unseen), with the last error kept as the error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::daemon::error::chain;
use crate::daemon::reconcile::{BACKOFF_MAX, BACKOFF_MIN, LogLimit};
use crate::kernel::nft::NftError;
use crate::model::TABLE_NAME;

/// Consecutive failed checks after which the agent says it is blind (not ready).
pub const BLIND_AFTER: u32 = 2;

/// Full checks: when, and how the last ones went.
#[derive(Debug)]
pub struct Checks {
    /// The periodic resync: re-read the config, check the table.
    resync_at: Instant,
    /// Failed checks in a row.
    failures: u32,
    /// Set from the [`BLIND_AFTER`]th failure in a row, with the last error.
    blind: Option<Arc<NftError>>,
    /// When to try again after a failure.
    recheck_at: Option<Instant>,
    /// The read failures' warnings' rate limit.
    log: LogLimit,
}

impl Checks {
    /// The first resync one `interval` after `now`.
    pub fn new(now: Instant, interval: Duration) -> Checks {
        Checks {
            resync_at: now + interval,
            failures: 0,
            blind: None,
            recheck_at: None,
            log: LogLimit::default(),
        }
    }

    /// When the periodic resync is due.
    pub fn resync_at(&self) -> Instant {
        self.resync_at
    }

    /// When a failed check is tried again.
    pub fn recheck_at(&self) -> Option<Instant> {
        self.recheck_at
    }

    /// The config's resync interval changed: the next resync is one new interval from now.
    pub fn interval_changed(&mut self, now: Instant, interval: Duration) {
        self.resync_at = now + interval;
    }

    /// Whether the periodic resync is due at `now`; if so the next one is one `interval`
    /// later.
    pub fn resync_due(&mut self, now: Instant, interval: Duration) -> bool {
        let due = now >= self.resync_at;
        if due {
            self.resync_at = now + interval;
        }
        due
    }

    /// Whether a failed check is to be tried again at `now` (once).
    pub fn recheck_due(&mut self, now: Instant) -> bool {
        self.recheck_at.take_if(|t| *t <= now).is_some()
    }

    /// The last error, while the agent is blind.
    pub fn blind(&self) -> Option<Arc<NftError>> {
        self.blind.clone()
    }

    /// The table was read back.
    pub fn read(&mut self) {
        if self.blind.take().is_some() {
            tracing::info!("table inet {TABLE_NAME} can be read back again");
        }
        self.failures = 0;
    }

    /// A check that fails is tried again soon (1 s, doubling up to the resync `interval`);
    /// from the second failure in a row the agent says it is blind: it cannot see drift.
    pub fn failed(&mut self, e: NftError, now: Instant, interval: Duration) {
        self.failures = self.failures.saturating_add(1);
        if self.log.admit(now).is_some() {
            tracing::warn!("reading table inet {TABLE_NAME} back failed: {}", chain(&e));
        }
        if self.failures >= BLIND_AFTER {
            self.blind = Some(Arc::new(e));
        }
        let wait = BACKOFF_MIN * 2u32.saturating_pow(self.failures.min(16));
        self.recheck_at = Some(now + wait.min(interval).min(BACKOFF_MAX));
    }
}
