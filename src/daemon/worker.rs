//! The background worker: the conflict analysis (other components' NAT tables walked with
//! probes of our exempt ranges) and the conntrack reconciliation (the node's whole conntrack
//! table dumped and filtered), apart from the loop that keeps our table in force. Other
//! components decide how long these take (a hostile jump graph, a kube-proxy table with a
//! large set, a million flows), so the loop never runs them and never waits for them.
//!
//! The loop hands work over through [`Jobs`] without blocking: a job waits in a queue of at
//! most one analysis and one reconciliation, where a newer job replaces (analysis) or merges
//! with (reconciliation) the one waiting. The worker ([`Worker`]) takes jobs one at a time,
//! reconciliation first (it decides how open flows are translated; the analysis only
//! informs), runs them with its own sockets ([`WorkerKernel`]) and answers with an
//! [`Outcome`] the loop applies (metrics, log lines). In production the worker is a thread
//! ([`Worker::spawn`]) that nothing ever joins: a worker stuck in the kernel cannot hold up
//! the loop nor the exit on SIGTERM. The daemon's unit tests run the same worker
//! synchronously ([`Worker::take`], [`Worker::run`]) with a fake kernel and clock.
//!
//! An analysis pass has a time budget ([`ANALYSIS_BUDGET`]) and stops early when a newer
//! config asks about other exempt ranges: a pass cut off by the budget reports what it
//! found so far and says so; a superseded pass reports nothing, the newer job runs next. A
//! newer ruleset generation alone queues the next pass without stopping the current one.
//!
//! Conntrack jobs coalesce without losing flows: see [`Flows`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::seam::WorkerKernel;
use crate::addr::prefix::Family;
use crate::analysis::Packet;
use crate::analysis::conflict::{self, Finding};
use crate::analysis::flows;
use crate::kernel::conntrack::{Protocols, Report};
use crate::model::{TABLE_NAME, Table};

/// The most the walk of one analysis pass may take before it is cut off (the read before
/// it is bounded by the elements it may read, `--max-foreign-elements`). Far above a real
/// node's pass (milliseconds: a few hundred probes through a few hundred rules), low enough
/// that a pathological foreign table costs at most this much CPU per full check.
pub const ANALYSIS_BUDGET: Duration = Duration::from_secs(2);

/// The most tables a waiting reconciliation compares flows with (see [`Flows`]). Only
/// reached when commits keep coming while a reconciliation runs (the commit budget allows
/// 20 in 10 s); each table is the whole policy, up to `--max-prefixes` prefixes.
pub const MAX_COMPARED_TABLES: usize = 8;

/// The worker thread's nice value: on a node short of CPU (a one-CPU VM) the loop, at the
/// process's own priority, gets about nine tenths of the time when both want it.
pub const WORKER_NICE: i32 = 10;

/// An analysis: which packets to ask the other NAT tables about, as of which ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// One packet per exempt prefix sampled (the config decides these).
    pub probes: Vec<Packet>,
    /// The ruleset generation when the job was made (`None`: unknown).
    pub generation: Option<u32>,
}

impl Analysis {
    /// Whether this pass answers `other` too: the same question of the same ruleset.
    fn answers(&self, other: &Analysis) -> bool {
        self.probes == other.probes
            && self.generation.is_some()
            && self.generation == other.generation
    }
}

/// A conntrack reconciliation: the flows decided by any of `before` whose outcome under
/// `after` differs are deleted, so their next packet is decided by `after`.
///
/// Why a list. Flows are decided by the table in force when their first packet passed. The
/// loop submits one job per commit (the table before it, the table after it); while a job
/// waits or runs, further commits merge into the waiting job, which then holds every table
/// that was in force since the last reconciliation began, and the latest. Comparing only
/// the first with the latest would lose the flows opened under a table in between: with
/// exempt → masqueraded → exempt, a flow opened while masqueraded looks unaffected (exempt
/// both times) and would keep the node's address for ever. Comparing with each table in
/// turn deletes every flow whose table decided otherwise than the latest one does (and,
/// rarely, a flow whose own table agrees with the latest while another in the list does not:
/// it is re-evaluated to the same result). A flow that a reconciliation left alone had the
/// same outcome under every listed table, in particular under that job's `after`, which is
/// the first table of the next job; a flow opened (or re-opened after a delete) while a
/// reconciliation ran was decided by that job's `after` or a later table, all in the next
/// job. So nothing is lost.
///
/// At most [`MAX_COMPARED_TABLES`] tables are kept: past that the oldest table in between is
/// dropped (the first stays: it decided most of the flows), and the outcome says how many.
#[derive(Debug, Clone)]
pub struct Flows {
    /// Every table in force since the last reconciliation began, oldest first (none with
    /// the policy of `after`: they decide nothing differently).
    pub before: Vec<Arc<Table>>,
    /// The table in force now.
    pub after: Arc<Table>,
    /// Which entries may be deleted.
    pub protocols: Protocols,
    /// Tables dropped beyond [`MAX_COMPARED_TABLES`].
    pub dropped: usize,
}

impl Flows {
    /// The job for one commit; `None` when it changes no decision.
    fn new(before: Arc<Table>, after: Arc<Table>, protocols: Protocols) -> Option<Flows> {
        let mut job = Flows {
            before: Vec::new(),
            after: after.clone(),
            protocols,
            dropped: 0,
        };
        job.then(before, after, protocols);
        (!job.before.is_empty()).then_some(job)
    }

    /// A later commit from `before` (this job's `after`) to `after`.
    fn then(&mut self, before: Arc<Table>, after: Arc<Table>, protocols: Protocols) {
        if !self.before.iter().any(|t| t.same_policy(&before)) {
            self.before.push(before);
        }
        self.before.retain(|t| !t.same_policy(&after));
        if self.before.len() > MAX_COMPARED_TABLES {
            self.before.remove(1);
            self.dropped += 1;
        }
        self.after = after;
        self.protocols = protocols;
    }
}

/// A job the worker takes.
#[derive(Debug, Clone)]
pub enum Job {
    /// A conflict analysis.
    Analysis(Analysis),
    /// A conntrack reconciliation.
    Flows(Flows),
}

/// What an analysis pass found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysed {
    /// Other NAT rules that override a non-masquerade decision, each once, in the order
    /// found.
    pub findings: Vec<Finding>,
    /// Probes analysed and probes asked: fewer analysed when the budget cut the pass off.
    pub probes: (usize, usize),
    /// Tables not analysed because their sets hold too many elements (family, name).
    pub too_large: Vec<(&'static str, String)>,
    /// Tables read.
    pub tables: usize,
    /// Set elements read.
    pub elements: usize,
    /// The pass's duration, reading included.
    pub duration: Duration,
}

impl Analysed {
    /// Whether the budget cut the pass off: its findings are only a lower bound.
    pub fn cut_off(&self) -> bool {
        self.probes.0 < self.probes.1
    }
}

/// What a conntrack reconciliation did.
#[derive(Debug, Clone)]
pub struct Reconciled {
    /// Which entries it could delete.
    pub protocols: Protocols,
    /// The kernel's report, or the error (with its causes).
    pub result: Result<Report, String>,
    /// Its duration.
    pub duration: Duration,
    /// Tables in between it could not compare with ([`MAX_COMPARED_TABLES`]).
    pub dropped: usize,
}

/// A job's result, for the loop to apply.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// An analysis pass ended (complete, or cut off by the budget).
    Analysed(Analysed),
    /// An analysis pass was stopped for a newer one.
    Superseded,
    /// Reading the other tables failed (with the error's causes).
    AnalysisFailed(String),
    /// A conntrack reconciliation ran.
    Reconciled(Reconciled),
}

/// What the worker is doing.
#[derive(Debug)]
enum Running {
    Analysis(Analysis),
    Flows,
}

/// The jobs waiting, and what is running.
#[derive(Debug, Default)]
struct Queue {
    flows: Option<Flows>,
    analysis: Option<Analysis>,
    running: Option<Running>,
    /// The last analysis that reported (complete or cut off): the same job again would only
    /// repeat it.
    answered: Option<Analysis>,
    /// The loop is gone: the worker ends.
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// The analysis running is superseded: stop it. Read without the lock at every step
    /// of a walk; set and cleared under it.
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A worker that panicked mid-job leaves a queue still consistent: every change is
        // one assignment.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The loop's end of the queue: hands jobs over, never waits for the worker (the lock is
/// held only to swap a job in, never while a job runs). Dropping it ends the worker.
#[derive(Debug)]
pub struct Jobs(Arc<Shared>);

impl Jobs {
    /// Asks for an analysis. The newest job wins: it replaces a waiting one, and a running
    /// pass that asks about other exempt ranges (another config) is stopped; a job that the
    /// running pass, or the last one, answers (same ranges, same ruleset generation) is
    /// dropped. A newer generation alone does not stop a pass (its read is done, and a node
    /// where something commits every second would never see a pass end): it runs next.
    pub fn analyse(&self, job: Analysis) {
        let mut q = self.0.lock();
        let stopping = self.0.stop.load(Ordering::SeqCst);
        if let Some(Running::Analysis(running)) = &q.running {
            if !stopping && running.answers(&job) {
                q.analysis = None;
                return;
            }
            if running.probes != job.probes {
                self.0.stop.store(true, Ordering::SeqCst);
            }
        } else if q.answered.as_ref().is_some_and(|a| a.answers(&job)) {
            q.analysis = None;
            return;
        }
        q.analysis = Some(job);
        self.0.wake.notify_one();
    }

    /// Asks for the flows of a commit from `before` to `after` to be reconciled; merges with
    /// a waiting reconciliation (see [`Flows`]).
    pub fn reconcile(&self, before: Arc<Table>, after: Arc<Table>, protocols: Protocols) {
        let mut q = self.0.lock();
        match &mut q.flows {
            Some(waiting) => waiting.then(before, after, protocols),
            None => q.flows = Flows::new(before, after, protocols),
        }
        if q.flows.as_ref().is_some_and(|f| f.before.is_empty()) {
            q.flows = None;
        }
        if q.flows.is_some() {
            self.0.wake.notify_one();
        }
    }

    /// Whether a job waits or runs (for tests and the log).
    pub fn busy(&self) -> bool {
        let q = self.0.lock();
        q.running.is_some() || q.flows.is_some() || q.analysis.is_some()
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake.notify_all();
    }
}

/// The worker: runs jobs with its own kernel access, and a clock (`C`) for the budget.
pub struct Worker<W: WorkerKernel, C: Fn() -> Instant> {
    shared: Arc<Shared>,
    kernel: W,
    clock: C,
    budget: Duration,
    max_elements: usize,
}

impl<W: WorkerKernel, C: Fn() -> Instant> std::fmt::Debug for Worker<W, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("budget", &self.budget)
            .field("max_elements", &self.max_elements)
            .finish_non_exhaustive()
    }
}

/// A queue and the worker that serves it: `kernel` for the reads and deletions, `clock`
/// for the budget, at most `max_elements` foreign set elements read per pass.
pub fn new<W: WorkerKernel, C: Fn() -> Instant>(
    kernel: W,
    clock: C,
    max_elements: usize,
) -> (Jobs, Worker<W, C>) {
    let shared = Arc::new(Shared::default());
    let worker = Worker {
        shared: shared.clone(),
        kernel,
        clock,
        budget: ANALYSIS_BUDGET,
        max_elements,
    };
    (Jobs(shared), worker)
}

impl<W: WorkerKernel, C: Fn() -> Instant> Worker<W, C> {
    /// The same worker with another time budget per analysis pass.
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// Takes the next job, a reconciliation first, and marks it running; `None` when none
    /// waits.
    pub fn take(&mut self) -> Option<Job> {
        let mut q = self.shared.lock();
        Self::take_from(&mut q, &self.shared.stop)
    }

    fn take_from(q: &mut Queue, stop: &AtomicBool) -> Option<Job> {
        if let Some(f) = q.flows.take() {
            q.running = Some(Running::Flows);
            return Some(Job::Flows(f));
        }
        let a = q.analysis.take()?;
        stop.store(false, Ordering::SeqCst);
        q.running = Some(Running::Analysis(a.clone()));
        Some(Job::Analysis(a))
    }

    /// Waits for the next job; `None` once the loop's end is dropped.
    fn wait(&mut self) -> Option<Job> {
        let mut q = self.shared.lock();
        loop {
            if q.closed {
                return None;
            }
            if let Some(job) = Self::take_from(&mut q, &self.shared.stop) {
                return Some(job);
            }
            q = self.shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Runs a job taken with [`Worker::take`]; `None` when there is nothing to report (a
    /// reconciliation whose tables decide alike).
    pub fn run(&mut self, job: Job) -> Option<Outcome> {
        match job {
            Job::Analysis(a) => Some(self.analyse(a)),
            Job::Flows(f) => {
                let outcome = self.reconcile(&f);
                self.shared.lock().running = None;
                outcome.map(Outcome::Reconciled)
            }
        }
    }

    /// Runs every job waiting, in order, until none is left (the tests' executor).
    pub fn run_pending(&mut self) -> Vec<Outcome> {
        let mut out = Vec::new();
        while let Some(job) = self.take() {
            out.extend(self.run(job));
        }
        out
    }

    fn analyse(&mut self, job: Analysis) -> Outcome {
        let start = (self.clock)();
        let result = if job.probes.is_empty() {
            // Nothing exempt, nothing to override: no need to read anything.
            Ok(Default::default())
        } else {
            self.kernel.nat_tables(TABLE_NAME, self.max_elements)
        };
        // The budget is the walk's: the read is bounded by the elements it may read, and a
        // read slowed by a busy kernel must not leave no time for what it read.
        let deadline = (self.clock)() + self.budget;
        let mut found: Vec<Finding> = Vec::new();
        // Each rule once, however many probes it overrides (thousands of rules: a set).
        let mut seen: HashSet<(&'static str, String, u64)> = HashSet::new();
        let mut done = 0;
        if let Ok(read) = &result {
            let clock = &self.clock;
            let stop_flag = &self.shared.stop;
            let stop = || stop_flag.load(Ordering::Relaxed) || clock() >= deadline;
            for probe in &job.probes {
                let Some(findings) = conflict::analyze_until(&read.tables, probe, &stop) else {
                    break;
                };
                for f in conflict::conflicts(&findings) {
                    if seen.insert((f.family, f.table.clone(), f.handle)) {
                        found.push(f.clone());
                    }
                }
                done += 1;
            }
        }
        let duration = (self.clock)().saturating_duration_since(start);
        let mut q = self.shared.lock();
        q.running = None;
        let superseded = self.shared.stop.swap(false, Ordering::SeqCst);
        match result {
            _ if superseded => Outcome::Superseded,
            Err(e) => Outcome::AnalysisFailed(super::error::chain(&e)),
            Ok(read) => {
                q.answered = Some(job.clone());
                Outcome::Analysed(Analysed {
                    findings: found,
                    probes: (done, job.probes.len()),
                    too_large: read.too_large,
                    tables: read.tables.len(),
                    elements: read.elements,
                    duration,
                })
            }
        }
    }

    fn reconcile(&mut self, job: &Flows) -> Option<Reconciled> {
        let changes: Vec<flows::Change<'_>> = job
            .before
            .iter()
            .map(|old| flows::Change::new(old, &job.after))
            .filter(flows::Change::any)
            .collect();
        if changes.is_empty() {
            return None;
        }
        let mut families: Vec<Family> = Vec::new();
        for f in changes.iter().flat_map(flows::Change::families) {
            if !families.contains(&f) {
                families.push(f);
            }
        }
        let start = (self.clock)();
        let result = self
            .kernel
            .reconcile_flows(&families, job.protocols, &|flow| {
                changes.iter().any(|c| c.affects(flow))
            })
            .map_err(|e| super::error::chain(&e));
        Some(Reconciled {
            protocols: job.protocols,
            result,
            duration: (self.clock)().saturating_duration_since(start),
            dropped: job.dropped,
        })
    }

    /// Runs the worker on a thread of its own until the loop's end of the queue is dropped,
    /// sending each outcome to `results`. The thread is never joined: a worker stuck in the
    /// kernel holds up neither the loop nor the process's exit.
    pub fn spawn(
        mut self,
        results: tokio::sync::mpsc::UnboundedSender<Outcome>,
    ) -> std::io::Result<()>
    where
        W: Send + 'static,
        C: Send + 'static,
    {
        std::thread::Builder::new()
            .name("nma-worker".into())
            .spawn(move || {
                // Lowering one's own priority needs no privilege; if it fails anyway the
                // worker runs at the loop's priority, as before.
                let tid = rustix::thread::gettid();
                if let Err(e) = rustix::process::setpriority_process(Some(tid), WORKER_NICE) {
                    tracing::debug!("cannot lower the worker's priority: {e}");
                }
                while let Some(job) = self.wait() {
                    if let Some(outcome) = self.run(job) {
                        if results.send(outcome).is_err() {
                            return;
                        }
                    }
                }
            })
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PolicyFlags, parse};
    use crate::kernel::conntrack::{ConntrackError, Flow};
    use crate::kernel::nft::NftError;
    use crate::kernel::nft::ruleset::ForeignRead;
    use crate::model::{self, TableFlags};
    use std::sync::mpsc;

    fn table(yaml: &str) -> Arc<Table> {
        let flags = PolicyFlags::default();
        let config = parse(yaml.as_bytes(), "/c".as_ref(), &flags)
            .expect("valid")
            .config;
        Arc::new(model::desired(&config, &flags, TableFlags::default()))
    }

    fn probe(dst: &str) -> Packet {
        Packet {
            src: None,
            dst: dst.parse().unwrap(),
            oif: None,
            dst_local: Some(false),
        }
    }

    #[test]
    fn a_waiting_reconciliation_keeps_every_table_in_between() {
        let (a, b, c) = (
            table("nonMasqueradeCIDRs: [10.0.0.0/8]\n"),
            table("nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n"),
            table("nonMasqueradeCIDRs: [10.0.0.0/8, 198.51.100.0/24]\n"),
        );
        let p = Protocols::Connectionless;
        let mut job = Flows::new(a.clone(), b.clone(), p).unwrap();
        job.then(b.clone(), c.clone(), p);
        assert_eq!(job.before.len(), 2);
        assert!(job.before[0].same_policy(&a) && job.before[1].same_policy(&b));
        // Back to the first: it decides nothing differently from the latest any more.
        job.then(c.clone(), a.clone(), p);
        assert_eq!(job.before.len(), 2);
        assert!(job.before[0].same_policy(&b) && job.before[1].same_policy(&c));
        // A commit that changes nothing makes no job.
        assert!(Flows::new(a.clone(), a.clone(), p).is_none());
    }

    #[test]
    fn the_tables_compared_are_bounded_keeping_the_first() {
        let p = Protocols::Connectionless;
        let t = |i: u32| table(&format!("nonMasqueradeCIDRs: [10.{i}.0.0/16]\n"));
        let first = t(0);
        let mut job = Flows::new(first.clone(), t(1), p).unwrap();
        // One table more with every commit: 1 + 10 in all.
        for i in 1..=10 {
            job.then(t(i), t(i + 1), p);
        }
        assert_eq!(job.before.len(), MAX_COMPARED_TABLES);
        assert!(job.before[0].same_policy(&first));
        assert!(job.before[MAX_COMPARED_TABLES - 1].same_policy(&t(10)));
        assert_eq!(job.dropped, 11 - MAX_COMPARED_TABLES);
    }

    /// A kernel with nothing to read, for the queue's rules.
    struct Empty;

    impl WorkerKernel for Empty {
        fn nat_tables(&mut self, _: &str, _: usize) -> Result<ForeignRead, NftError> {
            Ok(ForeignRead::default())
        }

        fn reconcile_flows(
            &mut self,
            _: &[Family],
            _: Protocols,
            _: &dyn Fn(&Flow) -> bool,
        ) -> Result<Report, ConntrackError> {
            Ok(Report::default())
        }
    }

    #[test]
    fn a_newer_generation_waits_for_the_pass_in_progress_a_newer_config_stops_it() {
        let (jobs, mut worker) = new(Empty, Instant::now, 1000);
        let ask = |dst: &str, g: u32| Analysis {
            probes: vec![probe(dst)],
            generation: Some(g),
        };
        jobs.analyse(ask("10.0.0.1", 1));
        let running = worker.take().unwrap();
        // The same question: answered by the pass in progress.
        jobs.analyse(ask("10.0.0.1", 1));
        assert!(jobs.0.lock().analysis.is_none());
        // Another generation: queued, the pass goes on and reports.
        jobs.analyse(ask("10.0.0.1", 2));
        assert!(matches!(worker.run(running), Some(Outcome::Analysed(_))));
        let next = worker.take().unwrap();
        assert!(matches!(&next, Job::Analysis(a) if a.generation == Some(2)));
        // Another config: the pass in progress is stopped.
        jobs.analyse(ask("192.168.0.1", 2));
        assert!(matches!(worker.run(next), Some(Outcome::Superseded)));
        assert!(matches!(
            worker.run_pending().as_slice(),
            [Outcome::Analysed(_)]
        ));
        // Asked again for the same config and generation: the last pass answered it.
        jobs.analyse(ask("192.168.0.1", 2));
        assert!(worker.take().is_none());
    }

    /// A kernel that blocks in every read until told to go on.
    struct Stuck(Mutex<mpsc::Receiver<()>>);

    impl WorkerKernel for Stuck {
        fn nat_tables(&mut self, _: &str, _: usize) -> Result<ForeignRead, NftError> {
            let _ = self.0.lock().unwrap().recv();
            Ok(ForeignRead::default())
        }

        fn reconcile_flows(
            &mut self,
            _: &[Family],
            _: Protocols,
            _: &dyn Fn(&Flow) -> bool,
        ) -> Result<Report, ConntrackError> {
            Ok(Report::default())
        }
    }

    /// The loop's side never waits for a worker stuck in the kernel: jobs keep being
    /// handed over (and coalesce), and the worker serves the newest once it comes back.
    #[test]
    fn a_stuck_worker_never_holds_up_the_loop() {
        let (go, gate) = mpsc::channel();
        let (jobs, worker) = new(Stuck(Mutex::new(gate)), Instant::now, 1000);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        worker.spawn(tx).unwrap();
        // Each job asks about another range (another config): each supersedes the last.
        let ask = |g: u32| Analysis {
            probes: vec![probe(&format!("10.0.{}.{}", g >> 8, g & 255))],
            generation: Some(g),
        };
        jobs.analyse(ask(1));
        // Wait until the worker is inside the read.
        let t0 = Instant::now();
        while jobs.0.lock().running.is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "the worker never started"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Built once: what is timed is the handing over, not parsing and building tables
        // (2,000 builds in a debug build took over 1 s on a loaded 2-core machine).
        let a = table("nonMasqueradeCIDRs: [10.0.0.0/8]\n");
        let b = table("nonMasqueradeCIDRs: [172.16.0.0/12]\n");
        let start = Instant::now();
        for g in 2..1000u32 {
            jobs.analyse(ask(g));
            jobs.reconcile(a.clone(), b.clone(), Protocols::Connectionless);
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        {
            let q = jobs.0.lock();
            assert_eq!(q.analysis.as_ref().unwrap().generation, Some(999));
            assert!(q.flows.is_some());
        }
        // Released: the superseded pass reports so, then the newest runs.
        go.send(()).unwrap();
        let first = rx.blocking_recv().unwrap();
        assert!(matches!(first, Outcome::Superseded), "{first:?}");
        let mut outcomes = vec![rx.blocking_recv().unwrap()];
        go.send(()).unwrap();
        outcomes.push(rx.blocking_recv().unwrap());
        assert!(
            outcomes.iter().any(|o| matches!(o, Outcome::Reconciled(_))),
            "{outcomes:?}"
        );
        assert!(
            outcomes.iter().any(|o| matches!(o, Outcome::Analysed(_))),
            "{outcomes:?}"
        );
        // Dropping the loop's end ends the worker: its sender goes.
        drop(jobs);
        assert!(rx.blocking_recv().is_none());
    }
}
