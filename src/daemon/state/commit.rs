//! The commit state ([`Commits`]): what is live ([`Live`]: the table last committed or
//! adopted, the notifications followed since, a foreign change not yet repaired), the one
//! budget every commit spends from, the backoff after a failure, the commit put off until
//! later ([`Deferred`]), and the last failure (kept as the error).
//!
//! Every commit carries why it is made ([`Why`]) next to the metric's [`Reason`]; the text
//! of both is made only for the log line.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::daemon::drift::{Change, Tracker, Verdict};
use crate::daemon::error::chain;
use crate::daemon::reconcile::{BUDGET_WINDOW, Backoff, Budget, LogLimit};
use crate::kernel::nft::events::Drained;
use crate::kernel::nft::live::Step;
use crate::kernel::nft::{CommitReport, NftError};
use crate::model::{Family, SetDiff, TABLE_NAME, Table};
use crate::report::metrics::{Metrics, Reason};

/// Why a commit is made, for its log line (the metric's label is its [`Reason`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// The first commit after start.
    StartUp,
    /// A re-read of the config brought another table; why it was re-read.
    Reload(&'static str),
    /// Someone else changed the table.
    Foreign(Change),
    /// A full check found the live table missing (`true`) or different.
    FullCheck {
        /// The table was missing, rather than different.
        missing: bool,
    },
    /// A failed commit is tried again.
    Retry,
    /// The socket that owned the table let go of it.
    Released,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::StartUp => f.write_str("start-up"),
            Why::Reload(why) => f.write_str(why),
            Why::Foreign(change) => write!(f, "{change}"),
            Why::FullCheck { missing: true } => f.write_str("full check: live table missing"),
            Why::FullCheck { missing: false } => f.write_str("full check: live table different"),
            Why::Retry => f.write_str("retry"),
            Why::Released => f.write_str("the table was released"),
        }
    }
}

/// A commit put off until `at`: after a failure (backoff) or beyond the budget.
#[derive(Debug, Clone)]
pub struct Deferred {
    /// When it may run.
    pub at: Instant,
    /// The metric's reason.
    pub reason: Reason,
    /// Why, for the log.
    pub why: Why,
}

/// What the agent knows of the live table: what it last committed (or adopted), and what
/// the notifications since say others did to it.
///
/// The exact model of the live table (each notified element and rule change applied to the
/// last commit) is kept by the kernel side (`kernel::nft::live::Known`, in the command
/// socket), fed with the steps the tracker derives here ([`Live::take_steps`]); a repair
/// commits the wanted table, which the socket sends as the inverse of what others changed.
#[derive(Debug)]
pub struct Live {
    /// The table last committed (or adopted): what should be live. Shared with the
    /// worker's jobs.
    table: Option<Arc<Table>>,
    /// Follows the notification stream between our own commits.
    tracker: Tracker,
    /// A foreign change not yet repaired.
    foreign: Option<Change>,
    /// The table found at start, until the first commit: what that commit changes.
    found: Option<Arc<Table>>,
    /// The drift warnings' rate limit.
    log: LogLimit,
}

impl Live {
    /// Nothing known yet; our own commits carry `port_id`.
    pub fn new(port_id: u32) -> Live {
        Live {
            table: None,
            tracker: Tracker::new(port_id),
            foreign: None,
            found: None,
            log: LogLimit::default(),
        }
    }

    /// The table last committed or adopted.
    pub fn table(&self) -> Option<&Arc<Table>> {
        self.table.as_ref()
    }

    /// A foreign change not yet repaired.
    pub fn foreign(&self) -> Option<&Change> {
        self.foreign.as_ref()
    }

    /// Digests notifications: nothing, a repair, or a full check.
    pub fn observe(&mut self, drained: Drained) -> Verdict {
        self.tracker.observe(drained)
    }

    /// The steps of the live-table model seen since the last call (see [`Tracker::take_steps`]).
    pub fn take_steps(&mut self) -> Vec<Step> {
        self.tracker.take_steps()
    }

    /// What was live before the next commit: the table last committed or adopted, or
    /// before the first commit the one found at start (a previous agent's).
    pub fn before(&self) -> Option<&Table> {
        self.table.as_deref().or(self.found.as_deref())
    }

    /// Our own commit was made (or tried); `generation` is read after it, back in the
    /// notification group: older notifications are stale.
    pub fn committed(&mut self, generation: Option<u32>) {
        self.tracker.committed(generation);
    }

    /// Someone else changed the table: warned about (rate-limited) until repaired.
    pub fn changed(&mut self, change: Change, now: Instant) {
        if let Some(suppressed) = self.log.admit(now) {
            let more = if suppressed > 0 {
                format!(" ({suppressed} more such changes since the last warning)")
            } else {
                String::new()
            };
            tracing::warn!("table inet {TABLE_NAME} changed under us: {change}; repairing{more}");
        }
        self.foreign = Some(change);
    }
}

/// Committing: what is live, the budget, the backoff, the commit put off, the last failure.
#[derive(Debug)]
pub struct Commits {
    live: Live,
    budget: Budget,
    backoff: Backoff,
    deferred: Option<Deferred>,
    /// The last commit failed, with its error (cleared by a success, or when another socket
    /// owning the table is why).
    failure: Option<Arc<NftError>>,
}

impl Commits {
    /// Nothing committed yet; our own commits carry `port_id`.
    pub fn new(port_id: u32) -> Commits {
        Commits {
            live: Live::new(port_id),
            budget: Budget::default(),
            backoff: Backoff::default(),
            deferred: None,
            failure: None,
        }
    }

    /// What is live.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// What is live, to tell it what happened.
    pub fn live_mut(&mut self) -> &mut Live {
        &mut self.live
    }

    /// The table found at start (a previous agent's), which the first commit changes.
    pub fn found_at_start(&mut self, table: Option<Arc<Table>>) {
        self.live.found = table;
    }

    /// The table found at start is kept as it is: it is what is live.
    pub fn adopted(&mut self, table: Arc<Table>) {
        self.live.table = Some(table);
    }

    /// The last failure, while no commit has succeeded since.
    pub fn failure(&self) -> Option<Arc<NftError>> {
        self.failure.clone()
    }

    /// When the commit put off may run.
    pub fn deferred_at(&self) -> Option<Instant> {
        self.deferred.as_ref().map(|d| d.at)
    }

    /// The commit put off, once its time has come.
    pub fn due(&mut self, now: Instant) -> Option<Deferred> {
        self.deferred.take_if(|d| d.at <= now)
    }

    /// Whether the first commit failed and its retry waits for its own timer, with backoff.
    pub fn first_retry_pending(&self) -> bool {
        self.live.table.is_none() && self.deferred.is_some()
    }

    /// Forgets the commit put off: a newer one carries everything.
    pub fn drop_deferred(&mut self) {
        self.deferred = None;
    }

    /// `true` when a commit may run at `now` (it is then spent from the budget); else it is
    /// put off until the budget allows.
    pub fn admit(&mut self, now: Instant, reason: Reason, why: &Why) -> bool {
        match self.budget.admit(now) {
            Ok(()) => {
                self.budget.spend(now);
                true
            }
            Err(at) => {
                // Someone keeps changing the table (another agent?): do not spin with it.
                if self.deferred.is_none() {
                    tracing::warn!(
                        "{} commits in {:?}; the next ({why}) waits until {:?} from now (is \
                         another agent or tool managing table inet {TABLE_NAME}?)",
                        self.budget.spent(),
                        BUDGET_WINDOW,
                        at.saturating_duration_since(now),
                    );
                }
                match &mut self.deferred {
                    // Keep the earlier time: one deferred commit carries everything.
                    Some(d) => d.at = d.at.min(at),
                    None => {
                        self.deferred = Some(Deferred {
                            at,
                            reason,
                            why: why.clone(),
                        });
                    }
                }
                false
            }
        }
    }

    /// The commit found the table already as wanted and sent nothing: neither a commit in
    /// the log and metrics nor one spent from the budget.
    pub fn already(&mut self, table: Arc<Table>, reason: Reason, why: &Why) {
        tracing::info!(
            reason = reason.as_str(),
            "table inet {TABLE_NAME} is already as wanted ({why}): nothing to commit"
        );
        self.budget.refund();
        self.in_force(table);
    }

    /// `table` is live now; returns the table that was.
    pub fn in_force(&mut self, table: Arc<Table>) -> Option<Arc<Table>> {
        self.failure = None;
        self.live.foreign = None;
        self.live.found = None;
        self.backoff.succeeded();
        self.live.table.replace(table)
    }

    /// Another socket owning the table refused the commit: not a failure to retry, the
    /// owner's release is waited for.
    pub fn refused_by_owner(&mut self) {
        self.failure = None;
    }

    /// The commit failed: tried again after the backoff.
    pub fn failed(&mut self, e: NftError, reason: Reason, why: &Why, now: Instant) {
        let wait = self.backoff.failed();
        tracing::error!(
            reason = reason.as_str(),
            "committing table inet {TABLE_NAME} failed ({why}): {}; retrying in {wait:?}",
            chain(&e)
        );
        self.failure = Some(Arc::new(e));
        self.deferred = Some(Deferred {
            at: now + wait,
            reason,
            why: Why::Retry,
        });
    }
}

/// Whether anyone else committed around our commit, from the generations read before it,
/// after it, and after rejoining the notification group: we were not subscribed meanwhile,
/// so only the generations tell, and then the table must be looked at rather than the
/// events trusted. Each of our transactions makes one generation (`ours` of them: none for a
/// commit with nothing to change, more than one when sets are created before their rules).
pub fn raced(before: Option<u32>, after: Option<u32>, now: Option<u32>, ours: u32) -> bool {
    let clean = matches!((before, after, now),
        (Some(a), Some(b), Some(c)) if b == a.wrapping_add(ours) && c == b);
    if !clean {
        tracing::debug!(?before, ?after, ?now, "commits by others around ours");
    }
    !clean
}

/// The log line and metrics of a commit that sent something: `after` replaced `before`.
pub fn report_commit(
    (reason, why): (Reason, &Why),
    report: &CommitReport,
    elapsed: Duration,
    (before, after): (Option<&Table>, &Table),
    metrics: &Metrics,
) {
    let (v4, v6) = (
        after.prefix_count_of(Family::V4),
        after.prefix_count_of(Family::V6),
    );
    let diff = SetDiff::between(before, after);
    metrics.committed(reason, elapsed.as_secs_f64(), v4, v6, report.elements);
    let intervals = |f: Family| -> usize {
        after
            .maps
            .iter()
            .filter(|m| m.family == f)
            .map(|m| m.entries.len())
            .sum()
    };
    metrics.snat_rule_intervals(intervals(Family::V4), intervals(Family::V6));
    tracing::info!(
        reason = reason.as_str(),
        prefixes = v4 + v6,
        elements = report.elements,
        sent = report.sent,
        form = report.form.as_str(),
        transactions = report.transactions,
        added = diff.added.len(),
        removed = diff.removed.len(),
        duration_ms = format!("{:.3}", elapsed.as_secs_f64() * 1e3),
        "committed table inet {TABLE_NAME} ({why}): {diff}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_is_raced_unless_the_generations_are_ours_alone() {
        // Sent: one generation, ours.
        assert!(!raced(Some(7), Some(8), Some(8), 1));
        // Nothing sent: no generation.
        assert!(!raced(Some(7), Some(7), Some(7), 0));
        // Sets, then rules: two generations, both ours.
        assert!(!raced(Some(7), Some(9), Some(9), 2));
        // Someone committed before ours, or after it before we rejoined.
        assert!(raced(Some(7), Some(9), Some(9), 1));
        assert!(raced(Some(7), Some(8), Some(9), 1));
        assert!(raced(Some(7), Some(10), Some(10), 2));
        // Nothing sent and yet a generation: someone else's.
        assert!(raced(Some(7), Some(8), Some(8), 0));
        // A generation that could not be read tells nothing: look.
        assert!(raced(None, Some(8), Some(8), 1));
        assert!(raced(Some(u32::MAX), Some(0), Some(0), 0));
        assert!(!raced(Some(u32::MAX), Some(0), Some(0), 1));
    }

    #[test]
    fn why_reads_as_before() {
        assert_eq!(Why::StartUp.to_string(), "start-up");
        assert_eq!(Why::Reload("SIGHUP").to_string(), "SIGHUP");
        assert_eq!(
            Why::FullCheck { missing: true }.to_string(),
            "full check: live table missing"
        );
        assert_eq!(
            Why::FullCheck { missing: false }.to_string(),
            "full check: live table different"
        );
        assert_eq!(Why::Retry.to_string(), "retry");
        assert_eq!(Why::Released.to_string(), "the table was released");
    }
}
