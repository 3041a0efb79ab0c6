//! Config reads apart from the loop. Reading, parsing and validating the config takes as long
//! as the operator's file is large (about 90 ms at 50,000 prefixes, several hundred at the
//! prefix cap), and while the loop did it inline, a foreign change to our table waited for
//! the read and the commit of the new config before anything repaired it: under the soak's
//! storm, a rule inserted just after a ConfigMap swap stayed 150-300 ms instead of a few.
//!
//! The loop asks for a read ([`Reader::request`]) and goes on; a thread of its own reads
//! with its own [`Source`] and sends the [`Read`] back, which the loop hands to the agent
//! ([`Agent::config_read`](super::agent::Agent::config_read)). Requests that queue up while
//! a read runs become one read of the newest files, so a burst of swaps costs one read
//! after the current one, and results arrive in the order the files were read. Building the
//! table from the config stays on the loop (it depends on the table flags in use), as does
//! everything that touches the kernel.
//!
//! Memory: a read's transient (the file, its YAML tree, the validated entries) and a commit
//! that sends every element (the batch, a table read back) must not add up. So a commit that
//! may send or read the whole table holds the reads ([`Reader::hold`]): it waits for a read
//! in progress to end (bounded by the config's size cap), and no read starts until it is
//! done. Small commits (a repair of a followed table) never wait. At 140,000 prefixes, a
//! ConfigMap swap and a `delete table` 30 ms later peaked at 61.7 MB without the hold and
//! 56.1 MB with it (glibc, mmap threshold pinned as the soak does; 51.9 MB when the loop
//! read inline: the new config now waits beside the old one while the repair runs).

use std::sync::{Arc, Condvar, Mutex, mpsc};

use tokio::sync::mpsc::UnboundedSender;

use crate::config::{Source, Update};

/// A read done by the reader thread: why it was asked for, and what it found.
#[derive(Debug)]
pub struct Read {
    /// The reason given with the request (the newest one when requests were merged).
    pub why: &'static str,
    /// What the read found.
    pub update: Update,
}

/// The loop's handle on the reader thread.
#[derive(Debug)]
pub struct Reader {
    requests: mpsc::Sender<&'static str>,
    gate: Arc<Gate>,
}

/// Reads and the loop's large commits, kept from running at once: each side takes a
/// [`Turn`] when the other has none, and gives it back when the turn is dropped, on a panic
/// too (a read that panicked in a build that unwinds must not hold the loop forever).
#[derive(Debug, Default)]
struct Gate {
    /// Who has the turn, if anyone.
    taken: Mutex<Option<Side>>,
    changed: Condvar,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The reader thread, reading.
    Read,
    /// The loop, in a large commit.
    Commit,
}

/// One side's turn at the gate; the other side waits until it is dropped.
#[derive(Debug)]
pub struct Turn(Arc<Gate>);

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Side>> {
        // A panic elsewhere while holding it leaves a plain value: still usable.
        self.taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until the other side has no turn (a side never waits for itself: the loop and
    /// the reader each take one turn at a time), then takes it for `side`.
    fn take(gate: &Arc<Gate>, side: Side) -> Turn {
        let mut taken = gate.lock();
        while taken.is_some_and(|s| s != side) {
            taken = gate
                .changed
                .wait(taken)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *taken = Some(side);
        Turn(gate.clone())
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        *self.0.lock() = None;
        self.0.changed.notify_all();
    }
}

impl Reader {
    /// Starts the reader thread with `source`; reads come back on `done`. The thread ends
    /// when the handle is dropped or `done` is closed; nothing joins it.
    pub fn spawn<S: Source + Send + 'static>(
        mut source: S,
        done: UnboundedSender<Read>,
    ) -> std::io::Result<Reader> {
        let (requests, asked) = mpsc::channel::<&'static str>();
        let gate = Arc::new(Gate::default());
        let g = gate.clone();
        std::thread::Builder::new()
            .name("nma-config".into())
            .spawn(move || {
                while let Ok(mut why) = asked.recv() {
                    let turn = Gate::take(&g, Side::Read);
                    // Requests made while the last read ran (or waited): one read of the
                    // newest files answers them all.
                    while let Ok(newer) = asked.try_recv() {
                        why = newer;
                    }
                    let update = source.reload();
                    drop(turn);
                    if done.send(Read { why, update }).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Reader { requests, gate })
    }

    /// Waits for a read in progress to end, and keeps reads from starting until the
    /// [`Turn`] is dropped. For commits that may send or read the whole table.
    pub fn hold(&self) -> Turn {
        Gate::take(&self.gate, Side::Commit)
    }

    /// Asks for a read; `false` when the thread is gone (it only ends when its results are
    /// no longer received, or on a panic).
    pub fn request(&self, why: &'static str) -> bool {
        self.requests.send(why).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc::UnboundedReceiver;

    use super::*;
    use crate::config::{ConfigSource, PolicyFlags};

    /// A reader on a config file of its own in a scratch directory named after `test`.
    fn reader_on(test: &str) -> (Reader, UnboundedReceiver<Read>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("nma-reader-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ip-masq-agent");
        std::fs::write(&path, "nonMasqueradeCIDRs: [10.0.0.0/8]\n").unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = Reader::spawn(ConfigSource::new(&path, PolicyFlags::default()), tx).unwrap();
        (reader, rx, path)
    }

    #[test]
    fn a_read_comes_back_with_what_the_file_says_and_requests_made_meanwhile_merge() {
        let (reader, mut rx, path) = reader_on("read");

        assert!(reader.request("first"));
        let read = recv(&mut rx);
        assert_eq!(read.why, "first");
        let Update::Loaded(loaded) = read.update else {
            panic!("not loaded: {:?}", read.update)
        };
        assert_eq!(loaded.config.non_masquerade_cidrs.len(), 1);

        // Unchanged bytes: nothing to validate.
        assert!(reader.request("again"));
        assert!(matches!(recv(&mut rx).update, Update::Unchanged));

        // An invalid file: the error names the file.
        std::fs::write(&path, "nonMasqueradeCIDRs: [10.0.0.0/33]\n").unwrap();
        assert!(reader.request("broken"));
        match recv(&mut rx).update {
            Update::Failed(e) => assert!(e.to_string().contains("ip-masq-agent"), "{e}"),
            other => panic!("not failed: {other:?}"),
        }
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn no_read_runs_while_a_large_commit_holds_the_reads() {
        let (reader, mut rx, path) = reader_on("hold");

        let hold = reader.hold();
        assert!(reader.request("held"));
        std::thread::sleep(Duration::from_millis(100));
        assert!(rx.try_recv().is_err(), "a read ran while held");
        drop(hold);
        assert_eq!(recv(&mut rx).why, "held");

        // Once a read is done, holding does not wait.
        let t0 = std::time::Instant::now();
        drop(reader.hold());
        assert!(t0.elapsed() < Duration::from_secs(1));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    fn recv(rx: &mut UnboundedReceiver<Read>) -> Read {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(read) = rx.try_recv() {
                return read;
            }
            assert!(std::time::Instant::now() < deadline, "no read came back");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
