//! Health and readiness: what the reconcile loop reports and the HTTP endpoint answers.
//!
//! A small shared state with no knowledge of either side, so neither depends on the other:
//! the loop sets readiness and marks what long operation it is in; the endpoint reads them
//! and pings the loop. Alive means the loop answers a ping, or is visibly busy with one
//! bounded operation (a large commit, a full check) for less than [`BUSY_LIMIT`]: a probe
//! must not fail, nor wait, because the agent is doing its job.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

/// How long the loop may be busy with one operation before it counts as stuck. Far above
/// any bounded operation (a 500,000-prefix commit takes about 2 s), well below what would
/// let a truly stuck agent keep a node's policy unattended.
pub const BUSY_LIMIT: Duration = Duration::from_secs(30);

/// A ping: the loop answers by sending `()` back.
pub type Ping = oneshot::Sender<()>;

/// The loop's end of the ping channel.
pub type Pings = mpsc::Receiver<Ping>;

/// Shared health state.
#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    reason: Mutex<String>,
    busy: Mutex<Option<(Instant, &'static str)>>,
    ping: mpsc::Sender<Ping>,
}

/// Marks the loop busy until dropped.
#[derive(Debug)]
pub struct Busy<'a>(&'a Health);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.0.busy.lock() {
            *b = None;
        }
    }
}

impl Health {
    /// A new state, not ready ("starting"), and the receiving end of its pings.
    pub fn new() -> (Health, Pings) {
        let (ping, pings) = mpsc::channel(8);
        let h = Health {
            ready: AtomicBool::new(false),
            reason: Mutex::new("starting".into()),
            busy: Mutex::new(None),
            ping,
        };
        (h, pings)
    }

    /// Sets readiness: `Ok` when ready, else the reason.
    pub fn set_readiness(&self, readiness: Result<(), String>) {
        let (ready, reason) = match readiness {
            Ok(()) => (true, String::new()),
            Err(why) => (false, why),
        };
        if let Ok(mut r) = self.reason.lock() {
            *r = reason;
        }
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.ready.load(Ordering::SeqCst) {
            return Ok(());
        }
        Err(self.reason.lock().map(|s| s.clone()).unwrap_or_default())
    }

    /// Marks the loop busy with `what` until the returned guard is dropped.
    pub fn busy(&self, what: &'static str) -> Busy<'_> {
        if let Ok(mut b) = self.busy.lock() {
            *b = Some((Instant::now(), what));
        }
        Busy(self)
    }

    /// What the loop is busy with, and for how long.
    pub fn busy_with(&self) -> Option<(&'static str, Duration)> {
        let b = self.busy.lock().ok()?;
        b.map(|(since, what)| (what, since.elapsed()))
    }

    /// Whether the loop is alive: it answers a ping within `wait`, or it is busy with one
    /// operation for less than [`BUSY_LIMIT`]. `Ok` carries a note for the probe's body.
    pub async fn liveness(&self, wait: Duration) -> Result<String, String> {
        // A loop visibly busy cannot answer a ping before it is done: say so at once instead
        // of after `wait`, so a probe never waits for a commit.
        if let Some(answer) = self.busy_answer() {
            return answer;
        }
        let (tx, rx) = oneshot::channel();
        if self.ping.try_send(tx).is_ok()
            && matches!(tokio::time::timeout(wait, rx).await, Ok(Ok(())))
        {
            return Ok("ok".into());
        }
        // It may have become busy since.
        self.busy_answer()
            .unwrap_or_else(|| Err("reconcile loop not responding".into()))
    }

    /// The answer while the loop is busy: alive for less than [`BUSY_LIMIT`], else stuck.
    fn busy_answer(&self) -> Option<Result<String, String>> {
        let (what, d) = self.busy_with()?;
        Some(if d < BUSY_LIMIT {
            Ok(format!("ok (busy {what} for {d:.1?})"))
        } else {
            Err(format!("reconcile loop busy {what} for {d:.1?}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_carries_its_reason() {
        let (h, _pings) = Health::new();
        assert_eq!(h.readiness(), Err("starting".into()));
        h.set_readiness(Ok(()));
        assert_eq!(h.readiness(), Ok(()));
        h.set_readiness(Err("commit failed".into()));
        assert_eq!(h.readiness(), Err("commit failed".into()));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn alive_when_answering_or_busy_dead_when_silent() {
        let (h, mut pings) = Health::new();
        // Nobody answers and nothing is marked busy: not alive.
        assert!(h.liveness(Duration::from_millis(10)).await.is_err());
        {
            let _b = h.busy("committing");
            // Answered at once: the ping wait is not spent on a loop known to be busy.
            let start = std::time::Instant::now();
            let note = h.liveness(Duration::from_secs(10)).await.unwrap();
            assert!(note.starts_with("ok (busy committing"), "{note}");
            assert!(start.elapsed() < Duration::from_secs(1));
        }
        assert_eq!(h.busy_with(), None);
        // An answering loop.
        let answer = tokio::spawn(async move {
            while let Some(p) = pings.recv().await {
                let _ = p.send(());
            }
        });
        assert_eq!(h.liveness(Duration::from_secs(1)).await, Ok("ok".into()));
        answer.abort();
    }
}
