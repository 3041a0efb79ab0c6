//! Health and readiness: what the reconcile loop reports and the HTTP endpoint answers.
//!
//! A small shared state with no knowledge of either side, so neither depends on the other:
//! the loop sets readiness and marks what long operation it is in; the endpoint reads them
//! and pings the loop. Alive means the loop answers a ping, or is visibly busy with one
//! bounded operation (a large commit, a full check) that made progress within
//! [`BUSY_LIMIT`], or visibly moved on while the ping waited (began or ended an operation):
//! a probe must not fail, nor wait, because the agent is doing its job.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

/// How long the loop may be busy with one operation, without progress, before it counts as
/// stuck. Far above any one step (a 500,000-prefix commit is one system call of a few
/// seconds; a read of that table is a stream of replies, each a progress mark, whose whole
/// can take a minute because the kernel's set dumps are quadratic), well below what would
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
    activity: Mutex<Activity>,
    ping: mpsc::Sender<Ping>,
}

/// What the loop is doing, as far as the endpoint can see.
#[derive(Debug)]
struct Activity {
    /// The operation it is busy with: since when, its last progress, what.
    busy: Option<(Instant, Instant, &'static str)>,
    /// When it last visibly moved: began or ended an operation, or made progress in one.
    moved: Instant,
}

/// Marks the loop busy until dropped.
#[derive(Debug)]
pub struct Busy<'a>(&'a Health);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Ok(mut a) = self.0.activity.lock() {
            a.busy = None;
            a.moved = Instant::now();
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
            activity: Mutex::new(Activity {
                busy: None,
                moved: Instant::now(),
            }),
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
        if let Ok(mut a) = self.activity.lock() {
            let now = Instant::now();
            a.busy = Some((now, now, what));
            a.moved = now;
        }
        Busy(self)
    }

    /// The busy operation made progress (a reply from the kernel arrived).
    pub fn progress(&self) {
        if let Ok(mut a) = self.activity.lock() {
            let now = Instant::now();
            if let Some((_, last, _)) = a.busy.as_mut() {
                *last = now;
            }
            a.moved = now;
        }
    }

    fn moved_since(&self, t: Instant) -> bool {
        self.activity.lock().is_ok_and(|a| a.moved >= t)
    }

    /// What the loop is busy with, for how long, and how long since its last progress.
    pub fn busy_with(&self) -> Option<(&'static str, Duration, Duration)> {
        let a = self.activity.lock().ok()?;
        a.busy
            .map(|(since, last, what)| (what, since.elapsed(), last.elapsed()))
    }

    /// Whether the loop is alive: it answers a ping within `wait`, or it is busy with one
    /// operation for less than [`BUSY_LIMIT`], or it moved on while the ping waited. `Ok`
    /// carries a note for the probe's body.
    pub async fn liveness(&self, wait: Duration) -> Result<String, String> {
        // A loop visibly busy cannot answer a ping before it is done: say so at once instead
        // of after `wait`, so a probe never waits for a commit.
        if let Some(answer) = self.busy_answer() {
            return answer;
        }
        let asked = Instant::now();
        let (tx, rx) = oneshot::channel();
        // Queued behind other probes' pings when the queue is full (they are answered
        // together), rather than failed at once: a full queue means probes came while the
        // loop worked, not that it is stuck.
        let answered = tokio::time::timeout(wait, async {
            self.ping.send(tx).await.is_ok() && rx.await.is_ok()
        })
        .await;
        if answered == Ok(true) {
            return Ok("ok".into());
        }
        // It may have become busy since; or it went through operations (a config read, then
        // a commit, each its own mark) and is between two of them now. The soak test saw that
        // as a 503 about once in ten minutes of back-to-back commits.
        if let Some(answer) = self.busy_answer() {
            return answer;
        }
        if self.moved_since(asked) {
            return Ok("ok (working)".into());
        }
        Err("reconcile loop not responding".into())
    }

    /// The answer while the loop is busy: alive while it made progress within
    /// [`BUSY_LIMIT`], else stuck.
    fn busy_answer(&self) -> Option<Result<String, String>> {
        let (what, d, idle) = self.busy_with()?;
        Some(if idle < BUSY_LIMIT {
            Ok(format!("ok (busy {what} for {d:.1?})"))
        } else {
            Err(format!(
                "reconcile loop busy {what} for {d:.1?}, no progress for {idle:.1?}"
            ))
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

    #[tokio::test(flavor = "current_thread")]
    async fn a_long_operation_is_alive_while_it_makes_progress() {
        let (h, _pings) = Health::new();
        let ago = |secs| {
            Instant::now()
                .checked_sub(Duration::from_secs(secs))
                .unwrap()
        };
        let _b = h.busy("checking the table");
        // Busy for 40 s, with a reply from the kernel a second ago: alive.
        h.activity.lock().unwrap().busy = Some((ago(40), ago(1), "checking the table"));
        let note = h.liveness(Duration::from_millis(10)).await.unwrap();
        assert!(
            note.starts_with("ok (busy checking the table for 40"),
            "{note}"
        );
        // No progress for longer than the limit: stuck.
        h.activity.lock().unwrap().busy = Some((ago(40), ago(35), "checking the table"));
        let why = h.liveness(Duration::from_millis(10)).await.unwrap_err();
        assert!(why.contains("no progress for 35"), "{why}");
        // Progress revives it.
        h.progress();
        assert!(h.liveness(Duration::from_millis(10)).await.is_ok());
    }

    /// The loop reads the config (one mark), works out the table unmarked, then commits
    /// (another mark): a ping that waited through that, and times out between the marks, is
    /// answered alive. Movement before the ping does not count.
    #[tokio::test(flavor = "current_thread")]
    async fn a_loop_that_moved_on_while_the_ping_waited_is_alive() {
        let (h, _pings) = Health::new();
        let h = std::sync::Arc::new(h);
        drop(h.busy("reading the config"));
        let why = h.liveness(Duration::from_millis(20)).await.unwrap_err();
        assert_eq!(why, "reconcile loop not responding");

        let loop_side = h.clone();
        let work = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(loop_side.busy("reading the config"));
            // Unmarked work until after the probe's wait; the commit mark comes later.
        });
        let note = h.liveness(Duration::from_millis(100)).await.unwrap();
        assert_eq!(note, "ok (working)");
        work.await.unwrap();
        // Nothing moved since: the next probe fails.
        assert!(h.liveness(Duration::from_millis(20)).await.is_err());
    }

    /// Probes that come while the loop works fill the ping queue; one more waits its turn
    /// and is answered with the others, instead of failing at once.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_ping_queue_waits_instead_of_failing() {
        let (h, mut pings) = Health::new();
        let mut queued = Vec::new();
        loop {
            let (tx, rx) = oneshot::channel();
            if h.ping.try_send(tx).is_err() {
                break;
            }
            queued.push(rx);
        }
        assert_eq!(queued.len(), 8);
        // The loop comes back to its pings after 50 ms of unmarked work.
        let answer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            while let Some(p) = pings.recv().await {
                let _ = p.send(());
            }
        });
        assert_eq!(h.liveness(Duration::from_secs(1)).await, Ok("ok".into()));
        for rx in queued {
            rx.await.unwrap();
        }
        answer.abort();
    }
}
