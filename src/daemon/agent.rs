//! The reconciler: what the agent does when something happens. Synchronous, and generic over
//! the [`Kernel`] and the config [`Source`], so that every decision is unit-tested without
//! root or files (`daemon/tests.rs`); the event loop turns wake-ups into calls here.
//!
//! Every event only queues work (`Pending`); `Agent::work` then does it in one place, in a
//! fixed order and a bounded number of steps: commit (through the one budget of [`Commits`]) before
//! check, a check that finds a difference queues a commit, a commit that others raced queues
//! a check. Nothing recurses, and nothing commits around the budget.
//!
//! What others decide the size of (the conflict analysis of their NAT tables, the conntrack
//! reconciliation over the node's flows) is handed to the background worker as jobs
//! ([`Jobs`]); the agent applies the outcomes it sends back ([`Agent::worker_done`]) and
//! never waits for it.
//!
//! Own commits are recognised by the netlink port id of the command socket, never by PID.
//! During its own commit the agent leaves the notification group, so the kernel does not
//! build one notification per element; generation ids read around the commit tell whether
//! anyone else committed meanwhile, in which case a full check follows.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::error::chain;
use super::findings::Findings;
use super::next::{Condition, Next};
use super::reader::{Read, Reader};
use super::reconcile::FightWatch;
use super::seam::{Holder, Kernel};
use super::state::check::Checks;
use super::state::commit::{Commits, Why};
use super::state::config::{Fallback, Wanted};
use super::state::flows::Flows;
use super::state::owner::Owner;
use super::worker::{Analysis, Jobs, Outcome};
use crate::config::{Config, ConfigError, PolicyFlags, Source, Update};
use crate::daemon::drift::{Change, Verdict};
use crate::kernel::conntrack::Protocols;
use crate::kernel::nft::NftError;
use crate::kernel::nft::compat::OwnerMode;
use crate::kernel::nft::events::Drained;
use crate::model::{TABLE_NAME, Table, TableFlags};
use crate::report::counters::MasqCounters;
use crate::report::health::Health;
use crate::report::metrics::{Metrics, Reason};

pub use super::state::owner::OWNER_POLL;

// The commit path (replace, flags stepped down, failures, an owner's refusal).
mod commit_path;

/// Where the agent reports: readiness, metrics, counters.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Readiness and liveness.
    pub health: Arc<Health>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Masquerade totals across commits.
    pub counters: Arc<MasqCounters>,
}

/// Work queued by events, done by [`Agent::work`].
#[derive(Debug, Default)]
struct Pending {
    /// Re-read the config, and why.
    reload: Option<&'static str>,
    /// Commit the desired table, and why.
    commit: Option<(Reason, Why)>,
    /// Read the live table back and compare.
    check: Option<Reason>,
}

impl Pending {
    fn any(&self) -> bool {
        self.reload.is_some() || self.commit.is_some() || self.check.is_some()
    }
}

/// The most work one event can cause before the loop looks at other events again.
const MAX_STEPS: usize = 6;

/// The reconciler: the kernel and the config source it works on, where it reports, and its
/// states (see [`super::state`]).
#[derive(Debug)]
pub struct Agent<K: Kernel, S: Source> {
    kernel: K,
    source: S,
    owner_mode: OwnerMode,
    /// The table flags in use (stepped down when the kernel refuses some).
    table_flags: TableFlags,
    out: Outputs,
    /// The config followed and the table it asks for.
    wanted: Wanted,
    /// What is live, and committing it.
    commits: Commits,
    /// Reading the table back.
    checks: Checks,
    /// Another socket owning the table.
    owner: Owner,
    /// Conntrack reconciliation.
    flows: Flows,
    fights: FightWatch,
    pending: Pending,
    /// The background worker's queue: conflict analyses and conntrack reconciliations.
    jobs: Jobs,
    /// The analyses' findings as last reported.
    findings: Findings,
    /// ip-masq-agent's iptables chain to take over after the next commit of a valid config
    /// (`--take-over-iptables-chain`; see [`super::takeover`]).
    takeover: Option<String>,
    /// The thread that reads the config apart from the loop ([`super::reader`]); `None`:
    /// reads run inline, with the agent's own source (the unit tests, and a reader thread
    /// that died).
    reader: Option<Reader>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl<K: Kernel, S: Source> Agent<K, S> {
    /// An agent that has done nothing yet; [`Agent::start`] loads the config and commits.
    /// `jobs` is the queue of the background worker that serves it.
    pub fn new(
        kernel: K,
        source: S,
        flags: PolicyFlags,
        owner_mode: OwnerMode,
        out: Outputs,
        jobs: Jobs,
        now: Instant,
    ) -> Agent<K, S> {
        let table_flags = owner_mode.initial_flags();
        let wanted = Wanted::new(flags, table_flags);
        let checks = Checks::new(now, wanted.config().resync_interval);
        let commits = Commits::new(kernel.port_id());
        Agent {
            kernel,
            source,
            owner_mode,
            table_flags,
            out,
            wanted,
            commits,
            checks,
            owner: Owner::default(),
            flows: Flows::new(Some(Protocols::Connectionless)),
            fights: FightWatch::default(),
            pending: Pending::default(),
            jobs,
            findings: Findings::default(),
            takeover: None,
            reader: None,
        }
    }

    /// Sets which conntrack entries a change of decision deletes (`None`: none).
    pub fn with_conntrack(mut self, protocols: Option<Protocols>) -> Agent<K, S> {
        self.flows = Flows::new(protocols);
        self
    }

    /// Sets ip-masq-agent's iptables chain to take over once a valid config's table is in
    /// force (`None`: leave iptables alone).
    pub fn with_takeover(mut self, chain: Option<String>) -> Agent<K, S> {
        self.takeover = chain;
        self
    }

    /// Reads the config on `reader`'s thread after start, not in the loop (the daemon's
    /// setting; see [`super::reader`]). The start's read stays inline: nothing is in force
    /// to keep before it.
    pub fn with_reader(mut self, reader: Reader) -> Agent<K, S> {
        self.reader = Some(reader);
        self
    }

    /// Says whether the config paths were given explicitly (`--config`).
    pub fn with_explicit_config(mut self, explicit: bool) -> Agent<K, S> {
        self.wanted.set_explicit(explicit);
        self
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        self.wanted.config()
    }

    /// The table the agent keeps in force.
    pub fn desired(&self) -> &Table {
        self.wanted.table()
    }

    /// Loads the config and commits the first table. With an invalid config, a table that
    /// already exists (a previous agent's) is kept exactly as it is; only where there is none
    /// are the defaults committed, so a node never goes without masquerading.
    pub fn start(&mut self, now: Instant) -> Next {
        tracing::info!(
            port_id = self.kernel.port_id(),
            config = %self.source.describe(),
            owner = ?self.owner_mode,
            "nft-masq-agent {} starting",
            env!("CARGO_PKG_VERSION")
        );
        // Validating the config and building its table, or reading back the table to adopt,
        // take seconds near the prefix cap: busy for all of it, so /healthz stays alive.
        let health = self.out.health.clone();
        let busy = health.busy("starting");
        match self.source.load() {
            Ok(loaded) => {
                self.out.metrics.config_loaded(true, unix_now());
                if self.wanted.started(loaded) {
                    self.checks
                        .interval_changed(now, self.wanted.config().resync_interval);
                }
                self.wanted.set_table(self.wanted.build(self.table_flags));
                self.pending.commit = Some((Reason::Startup, Why::StartUp));
                self.remember_table_found();
            }
            Err(e) => self.start_without_config(e),
        }
        if let Some(note) =
            crate::kernel::nft::legacy::note(&crate::kernel::nft::legacy::legacy_nat_tables())
        {
            tracing::warn!("{note}");
        }
        drop(busy);
        let next = self.work(now);
        // Whether or not the first commit succeeded: what else translates before us.
        self.analyse();
        next
    }

    /// Learns the table a previous agent left, so the first commit sends only the
    /// difference to it (nothing when the config is unchanged) and its log line says what
    /// changed on the node. With conntrack reconciliation on, flows opened under it are
    /// reconciled against the first commit (a ConfigMap changed while no agent ran).
    /// Without a table there is nothing to compare with: flows that predate every agent
    /// were decided by whatever ran before, which nothing here can know.
    fn remember_table_found(&mut self) {
        match self.kernel.learn(TABLE_NAME) {
            Ok(found) => {
                self.commits.found_at_start(found.clone().map(Arc::new));
                if self.flows.on() {
                    self.flows.found_at_start(found);
                }
            }
            Err(e) => {
                // A busy node (a commit every second) can keep interrupting a strict read
                // of a large table: the first commit is then a full one, and flows are
                // compared with a read that does not insist on a quiet ruleset.
                tracing::debug!("reading the table found at start failed: {}", chain(&e));
                if self.flows.on() {
                    match self.kernel.read(TABLE_NAME) {
                        Ok(found) => self.flows.found_at_start(found),
                        Err(e) => tracing::debug!("reading it again failed: {}", chain(&e)),
                    }
                }
            }
        }
    }

    /// Start-up with an invalid config: adopt the live table, or commit the defaults.
    fn start_without_config(&mut self, e: ConfigError) {
        self.out.metrics.config_loaded(false, 0.0);
        let found = self.kernel.read(TABLE_NAME).unwrap_or_else(|e| {
            tracing::warn!("reading table inet {TABLE_NAME} failed: {}", chain(&e));
            None
        });
        match self.wanted.invalid_at_start(e, found, self.table_flags) {
            Fallback::Adopted => self.commits.adopted(Arc::new(self.wanted.table().clone())),
            Fallback::Defaults => self.pending.commit = Some((Reason::Startup, Why::StartUp)),
        }
    }

    /// The config may have changed (a file event, SIGHUP).
    pub fn config_changed(&mut self, why: &'static str, now: Instant) -> Next {
        self.pending.reload = Some(why);
        self.work(now)
    }

    /// Notifications arrived.
    pub fn notifications(&mut self, drained: Drained, now: Instant) -> Next {
        if drained.lost {
            self.out.metrics.events_lost();
        }
        if super::state::owner::touches_our_table(&drained) {
            self.owner.touched(now);
        }
        let verdict = self.commits.live_mut().observe(drained);
        // The live table follows every transaction, ours untouched or not: a repair is then
        // the inverse of the change, and a config change after kube-proxy's commits is
        // still a difference.
        let steps = self.commits.live_mut().take_steps();
        if !steps.is_empty() {
            self.kernel.follow(&steps);
        }
        match verdict {
            Verdict::Nothing => {}
            Verdict::Repair(change) => self.foreign_change(change, now),
            Verdict::Check(why) => {
                tracing::warn!("{why}; doing a full check of table inet {TABLE_NAME}");
                self.pending.check = Some(Reason::Resync);
            }
        }
        self.tick(now)
    }

    /// Someone else changed our table: repair, and notice a fight.
    fn foreign_change(&mut self, change: Change, now: Instant) {
        self.fights.repaired(now, change.by.clone());
        self.commits.live_mut().changed(change.clone(), now);
        self.pending.commit = Some((Reason::Drift, Why::Foreign(change)));
    }

    /// Reading notifications failed: they may be lost.
    pub fn notifications_failed(&mut self, err: &NftError, now: Instant) -> Next {
        tracing::warn!(
            "reading nftables events failed: {}; doing a full check",
            chain(err)
        );
        self.pending.check = Some(Reason::Resync);
        self.tick(now)
    }

    /// Timers: a deferred commit whose time came, a re-check, a look at the table's owner,
    /// the periodic resync; then the work they queued.
    pub fn tick(&mut self, now: Instant) -> Next {
        if let Some(d) = self.commits.due(now) {
            self.pending.commit = Some((d.reason, d.why));
        }
        if self.checks.recheck_due(now) {
            self.pending.check = Some(Reason::Resync);
        }
        if let Some(port) = self.owner.due(now) {
            self.look_at_owner(port, now);
        }
        if self
            .checks
            .resync_due(now, self.wanted.config().resync_interval)
        {
            self.pending.reload = Some("periodic resync");
            self.pending.check = Some(Reason::Resync);
        }
        self.work(now)
    }

    /// While socket `port` owns the table: commit as soon as it does not.
    fn look_at_owner(&mut self, port: u32, now: Instant) {
        match self.kernel.holder(TABLE_NAME) {
            Ok(Holder::Owned(p)) if p == port => self.owner.still_held(now),
            Ok(holder) => {
                self.owner.released(&holder);
                self.pending.commit = Some((Reason::Retry, Why::Released));
            }
            Err(e) => {
                tracing::debug!("looking at the table's owner failed: {}", chain(&e));
                self.owner.still_held(now);
            }
        }
    }

    /// Does the queued work: reload, commit, check, in that order, at most [`MAX_STEPS`]
    /// steps; then publishes readiness and says what happens next.
    fn work(&mut self, now: Instant) -> Next {
        for _ in 0..MAX_STEPS {
            if let Some(why) = self.pending.reload.take() {
                if !self.read_apart(why) {
                    self.reload(why, now);
                }
            } else if let Some((reason, why)) = self.pending.commit.take() {
                if self.commits.admit(now, reason, &why) {
                    self.commit(reason, why, now);
                }
            } else if let Some(reason) = self.pending.check.take() {
                self.check(reason, now);
            } else {
                break;
            }
        }
        self.next(now)
    }

    /// Hands the read to the reader thread, if there is one: its result comes back through
    /// [`Agent::config_read`], and meanwhile the loop repairs and commits as usual. `false`
    /// when the read must run inline (no reader, or its thread is gone).
    fn read_apart(&mut self, why: &'static str) -> bool {
        let Some(reader) = &self.reader else {
            return false;
        };
        if reader.request(why) {
            return true;
        }
        tracing::error!("the config reader thread ended: config reads now run in the loop");
        self.reader = None;
        false
    }

    /// Reads the config inline, with the agent's own source.
    fn reload(&mut self, why: &'static str, now: Instant) {
        let update = {
            let health = self.out.health.clone();
            let _busy = health.busy("reading the config");
            self.source.reload()
        };
        self.apply_read(why, update, now);
    }

    /// The reader thread read the config ([`super::reader`]): the new config, if valid, is
    /// committed like one read inline.
    pub fn config_read(&mut self, read: Read, now: Instant) -> Next {
        self.apply_read(read.why, read.update, now);
        self.work(now)
    }

    fn apply_read(&mut self, why: &'static str, update: Update, now: Instant) {
        // Busy while the new table is built and compared: at 100,000 prefixes that took
        // long enough for a probe to find the loop silent.
        let health = self.out.health.clone();
        let _busy = health.busy("building the table");
        match update {
            Update::Unchanged => tracing::debug!("{why}: config unchanged"),
            Update::Failed(e) => {
                self.out.metrics.config_loaded(false, 0.0);
                self.wanted.failed(e);
            }
            Update::Loaded(loaded) => {
                self.out.metrics.config_loaded(true, unix_now());
                let source = self.source.describe();
                if self.wanted.reloaded(loaded, &source) {
                    self.checks
                        .interval_changed(now, self.wanted.config().resync_interval);
                }
                self.config_loaded(why);
            }
        }
    }

    /// A valid config is in: commit if it asks for another table.
    fn config_loaded(&mut self, why: &'static str) {
        let desired = self.wanted.build(self.table_flags);
        // A failed first commit is retried by its own timer, with backoff; a reload only
        // commits early when there is something new to commit.
        let first = self.commits.live().table().is_none();
        let retry_pending = self.commits.first_retry_pending();
        if !desired.same_policy(self.wanted.table()) || (first && !retry_pending) {
            self.wanted.set_table(desired);
            self.commits.drop_deferred();
            self.pending.commit = Some((Reason::Config, Why::Reload(why)));
        } else {
            tracing::debug!("{why}: desired table unchanged");
        }
    }

    /// Applies what the background worker sends back: a pass's findings, a reconciliation's
    /// report. Neither touches the table nor readiness, so nothing next changes.
    pub fn worker_done(&mut self, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Analysed(a) => self.findings.analysed(&a, now, &self.out.metrics),
            Outcome::Superseded => {
                tracing::debug!("conflict analysis stopped for a newer one");
                self.findings.superseded(&self.out.metrics);
            }
            Outcome::AnalysisFailed(e) => {
                tracing::debug!("reading the other NAT tables failed: {e}");
            }
            Outcome::Reconciled(r) => Flows::reconciled(r, &self.out.metrics),
        }
    }

    /// Reads the live table and queues a commit if it is not the desired one.
    fn check(&mut self, reason: Reason, now: Instant) {
        let health = self.out.health.clone();
        let busy = health.busy("checking the table");
        // The whole table decoded: no config read meanwhile (see `daemon/reader.rs`).
        let hold = self.reader.as_ref().map(Reader::hold);
        let live = self.kernel.read(TABLE_NAME);
        drop(hold);
        drop(busy);
        match live {
            Ok(live) => {
                self.checks.read();
                self.analyse();
                if live
                    .as_ref()
                    .is_some_and(|l| l.same_policy(self.wanted.table()))
                {
                    return;
                }
                if self.commits.live().table().is_some() {
                    self.out.metrics.repaired_by_check();
                }
                let missing = live.is_none();
                self.pending.commit = Some((reason, Why::FullCheck { missing }));
            }
            Err(e) => {
                self.out.metrics.check_failed();
                let interval = self.wanted.config().resync_interval;
                self.checks.failed(e, now, interval);
            }
        }
    }

    /// Asks the worker which other components' NAT rules run before ours and would
    /// translate destinations our table exempts (warned about when they change, counted in
    /// a gauge). Rules for marked packets only (kube-proxy's) are expected and not counted.
    /// The generation lets the worker skip a question it answered for the same ruleset.
    fn analyse(&mut self) {
        self.jobs.analyse(Analysis {
            probes: super::findings::sample_probes(self.wanted.table(), self.wanted.config()),
            generation: self.kernel.generation().ok(),
        });
    }

    /// What happens next, its readiness published to the probe and the metric.
    fn next(&self, now: Instant) -> Next {
        let resync_at = self.checks.resync_at();
        let wake_at = if self.pending.any() {
            // Work is left over (the step bound was reached).
            now
        } else {
            [
                self.commits.deferred_at(),
                self.checks.recheck_at(),
                self.owner.poll_at(),
            ]
            .into_iter()
            .flatten()
            .fold(resync_at, Instant::min)
        };
        let live = self.commits.live();
        let condition = Condition {
            no_good_config: self.wanted.fallback(),
            config_unreadable: self.wanted.unreadable(),
            held_by_other: self.owner.held_by(),
            commit_failed: self.commits.failure(),
            contested: self.fights.fight(now),
            blind: self.checks.blind(),
            drift: live.foreign().cloned(),
            nothing_in_force: live.table().is_none(),
        };
        let metrics = &self.out.metrics;
        metrics.set_contested(condition.contested.is_some());
        let ready = condition.readiness();
        metrics.set_ready(ready.is_ok());
        metrics.policy_source(self.wanted.source());
        self.out
            .health
            .set_readiness(ready.clone().map_err(|why| why.to_string()));
        Next {
            wake_at,
            resync_at,
            ready,
        }
    }
}
