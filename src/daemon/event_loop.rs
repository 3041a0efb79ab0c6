//! The event loop: every wake-up becomes one call on the [`Agent`], which returns what
//! happens next ([`Next`](super::next::Next)): the loop sleeps until its `wake_at`, and
//! re-arms the config watch when a timer wakes it at or after its `resync_at`. Timing
//! (debounce, sleeping) lives here; decisions live in the agent.
//!
//! Nothing here waits inline: the debounce of config events is a deadline among the other
//! wake-ups, and the config is read by the reader thread ([`super::reader`]), so
//! nftables notifications are handled (a foreign change repaired) during both.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::agent::Agent;
use super::error::{RunError, setup};
use super::reader::Read;
use super::seam::Kernel;
use super::worker::Outcome;
use crate::config::Source;
use crate::daemon::watch::ConfigWatch;
use crate::kernel::nft::NftError;
use crate::kernel::nft::events::{AsyncEventSocket, Drained};
use crate::model::TABLE_NAME;
use crate::report::health::Pings;

/// The longest a burst of config events can postpone the reload.
const MAX_DEBOUNCE: Duration = Duration::from_millis(100);

/// What wakes the loop, besides signals and the agent's own timer.
pub struct Wakers {
    /// The nftables notification socket.
    pub events: AsyncEventSocket,
    /// The config directory watch.
    pub watch: ConfigWatch,
    /// Notified by the watch on every relevant file event.
    pub hint: Arc<Notify>,
    /// Liveness pings from the HTTP endpoint.
    pub pings: Pings,
    /// What the background worker finished.
    pub results: UnboundedReceiver<Outcome>,
    /// The config reads the reader thread finished.
    pub reads: UnboundedReceiver<Read>,
    /// Quiet time after a config event before reading the file.
    pub debounce: Duration,
}

/// Why the loop woke up.
enum Wake {
    Exit(&'static str),
    Reload(&'static str),
    ConfigEvent,
    /// The debounce after config events is over: read the config.
    Settled,
    Read(Option<Read>),
    Events(Result<Drained, NftError>),
    Timer,
    Ping(crate::report::health::Ping),
    Worker(Option<Outcome>),
}

/// Runs until SIGTERM or SIGINT.
pub async fn run<K: Kernel, S: Source>(
    mut agent: Agent<K, S>,
    mut w: Wakers,
) -> Result<(), RunError> {
    let sig = |kind, name: &str| signal(kind).map_err(setup(format!("{name} handler")));
    let mut term = sig(SignalKind::terminate(), "SIGTERM")?;
    let mut int = sig(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = sig(SignalKind::hangup(), "SIGHUP")?;

    let mut next = agent.start(std::time::Instant::now());
    let mut worker_alive = true;
    let mut reader_alive = true;
    let mut debounce = Debounce::default();
    loop {
        // Left-over work runs at once (`wake_at` is then the call's `now`), after the other
        // wake-ups had their turn.
        let wake_at: Instant = next.wake_at.into();
        let settle_at = debounce.until;
        let wake = tokio::select! {
            _ = term.recv() => Wake::Exit("SIGTERM"),
            _ = int.recv() => Wake::Exit("SIGINT"),
            _ = hup.recv() => Wake::Reload("SIGHUP"),
            _ = w.hint.notified() => Wake::ConfigEvent,
            _ = sleep_until_some(settle_at) => Wake::Settled,
            read = w.reads.recv(), if reader_alive => Wake::Read(read),
            drained = w.events.next() => Wake::Events(drained),
            _ = tokio::time::sleep_until(wake_at) => Wake::Timer,
            Some(reply) = w.pings.recv() => Wake::Ping(reply),
            outcome = w.results.recv(), if worker_alive => Wake::Worker(outcome),
        };
        let now = std::time::Instant::now;
        match wake {
            Wake::Exit(sig) => {
                tracing::info!(
                    "{sig}: exiting; table inet {TABLE_NAME} stays in force (use --cleanup to \
                     remove it)"
                );
                return Ok(());
            }
            Wake::Reload(why) => next = agent.config_changed(why, now()),
            Wake::ConfigEvent => debounce.event(Instant::now(), w.debounce),
            Wake::Settled => {
                debounce.settle();
                if let Err(e) = w.watch.ensure() {
                    tracing::warn!("{e}");
                }
                next = agent.config_changed("config file changed", now());
            }
            Wake::Read(Some(read)) => next = agent.config_read(read, now()),
            Wake::Read(None) => {
                // The agent notices the thread is gone at its next request and reads inline.
                reader_alive = false;
            }
            Wake::Events(Ok(drained)) => next = agent.notifications(drained, now()),
            Wake::Events(Err(e)) => next = agent.notifications_failed(&e, now()),
            Wake::Timer => {
                let now = now();
                if now >= next.resync_at {
                    // A watch the kernel dropped unnoticed is back within one period.
                    if let Err(e) = w.watch.rearm() {
                        tracing::warn!("{e}");
                    }
                }
                next = agent.tick(now);
            }
            Wake::Ping(reply) => {
                let _ = reply.send(());
            }
            // The worker's outcomes touch neither the table nor readiness: `next` stands.
            Wake::Worker(Some(outcome)) => agent.worker_done(outcome, now()),
            Wake::Worker(None) => {
                // Only a panic ends it early (a release build aborts instead): the table is
                // still kept in force, only the analyses and reconciliations stop.
                tracing::error!(
                    "the background worker ended: other NAT rules are no longer analysed and \
                     conntrack is no longer reconciled after changes"
                );
                worker_alive = false;
            }
        }
    }
}

/// The quiet time after config events: a burst (a ConfigMap swap is several renames and
/// deletes) causes one read, when events stop for the debounce time, and at most
/// [`MAX_DEBOUNCE`] after the burst's first event.
#[derive(Debug, Default)]
struct Debounce {
    /// When to read, if events are waiting.
    until: Option<Instant>,
    /// The latest the read may come, from the burst's first event.
    end: Option<Instant>,
}

impl Debounce {
    /// The read is made: the next event starts a new burst.
    fn settle(&mut self) {
        *self = Debounce::default();
    }

    fn event(&mut self, now: Instant, quiet: Duration) {
        let end = *self.end.get_or_insert(now + MAX_DEBOUNCE);
        self.until = Some((now + quiet).min(end));
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_config_events_reads_once_quiet_or_at_the_bound() {
        let t0 = Instant::now();
        let quiet = Duration::from_millis(5);
        let mut d = Debounce::default();
        d.event(t0, quiet);
        assert_eq!(d.until, Some(t0 + quiet));
        // Events keep coming: the read moves on, never past the bound.
        for ms in (4..200).step_by(4) {
            d.event(t0 + Duration::from_millis(ms), quiet);
        }
        assert_eq!(d.until, Some(t0 + MAX_DEBOUNCE));
        // After a read, a new burst has a new bound.
        d.settle();
        let t1 = t0 + Duration::from_secs(1);
        d.event(t1, quiet);
        assert_eq!(d.until, Some(t1 + quiet));
        assert_eq!(d.end, Some(t1 + MAX_DEBOUNCE));
    }
}
