//! The reconciler: what the agent does when something happens. Synchronous, and generic over
//! the [`Kernel`] and the config [`Source`], so that every decision is unit-tested without
//! root or files (`daemon/tests.rs`); the event loop turns wake-ups into calls here.
//!
//! Every event only queues work ([`Pending`]); [`Agent::work`] then does it in one place, in a
//! fixed order and a bounded number of steps: commit (through the one [`Budget`]) before
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
use std::time::{Duration, Instant, SystemTime};

use super::error::chain;
use super::findings::Findings;
use super::reconcile::{
    BACKOFF_MAX, BACKOFF_MIN, Backoff, Budget, Condition, FightWatch, LogLimit, readiness,
};
use super::seam::{Holder, Kernel};
use super::worker::{Analysis, Jobs, Outcome, Reconciled};
use crate::config::{Config, PolicyFlags, Source, Update};
use crate::daemon::drift::{Change, Tracker, Verdict};
use crate::kernel::conntrack::Protocols;
use crate::kernel::nft::compat::{self, OwnerMode};
use crate::kernel::nft::events::Drained;
use crate::kernel::nft::uapi::NFT_MSG_NEWTABLE;
use crate::kernel::nft::{CommitReport, NftError};
use crate::model::{self, Family, SetDiff, TABLE_NAME, Table, TableFlags};
use crate::report::counters::MasqCounters;
use crate::report::health::Health;
use crate::report::jsonlog::error_with_problems;
use crate::report::metrics::{Metrics, PolicySource, Reason};

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
    reload: Option<String>,
    /// Commit the desired table, and why.
    commit: Option<(Reason, String)>,
    /// Read the live table back and compare.
    check: Option<Reason>,
}

/// A commit put off until `at`: after a failure (backoff) or beyond the budget.
#[derive(Debug, Clone)]
struct Deferred {
    at: Instant,
    reason: Reason,
    why: String,
}

/// The most work one event can cause before the loop looks at other events again.
const MAX_STEPS: usize = 6;

/// Consecutive failed checks after which the agent says it is blind (not ready).
const BLIND_AFTER: u32 = 2;

/// How often the agent looks whether another socket still owns the table. The kernel sends
/// no notification when an owning socket closes (measured on 6.18, with and without the
/// persist flag), so a cheap GETTABLE poll is the only prompt way to take over.
pub const OWNER_POLL: Duration = Duration::from_millis(100);

/// `--conntrack-reconcile`'s name for `p`.
fn protocols_label(p: Protocols) -> &'static str {
    match p {
        Protocols::Connectionless => "UDP, UDP-Lite, ICMP, ICMPv6",
        Protocols::All => "UDP, UDP-Lite, ICMP, ICMPv6, TCP, SCTP, DCCP",
    }
}

/// The reconciler's state.
#[derive(Debug)]
pub struct Agent<K: Kernel, S: Source> {
    kernel: K,
    source: S,
    flags: PolicyFlags,
    owner: OwnerMode,
    out: Outputs,
    config: Config,
    /// The last config error, logged once until it changes.
    config_error: Option<String>,
    /// Set while the config cannot be read at all (not while it is read and refused): the
    /// agent cannot tell what the operator asks for, so it is not ready.
    config_unreadable: Option<String>,
    /// Set until a config validates: why the table in force is not the operator's.
    no_good_config: Option<String>,
    table_flags: TableFlags,
    desired: Table,
    /// The table last committed (or adopted): what should be live. Shared with the
    /// worker's jobs.
    in_force: Option<Arc<Table>>,
    drift: Tracker,
    /// A foreign change not yet repaired.
    drift_pending: Option<String>,
    commit_error: Option<String>,
    budget: Budget,
    backoff: Backoff,
    pending: Pending,
    deferred: Option<Deferred>,
    resync_at: Instant,
    /// Where the table in force comes from.
    policy_source: PolicySource,
    /// Failed checks in a row, and when to try again.
    check_failures: u32,
    check_error: Option<String>,
    recheck_at: Option<Instant>,
    /// Another socket owns the table: its port id, and when to look again.
    held_by: Option<u32>,
    owner_poll_at: Option<Instant>,
    fights: FightWatch,
    drift_log: LogLimit,
    check_log: LogLimit,
    /// The latest time the agent was told, for readiness that depends on it.
    now: Instant,
    /// The background worker's queue: conflict analyses and conntrack reconciliations.
    jobs: Jobs,
    /// The analyses' findings as last reported.
    findings: Findings,
    /// Which conntrack entries a decision change deletes; `None`: none (`off`).
    conntrack: Option<Protocols>,
    /// The table found at start (a previous agent's), until the first commit replaces it:
    /// what the flows opened before this start were decided by.
    found_at_start: Option<Table>,
    /// ip-masq-agent's iptables chain to take over after the next commit of a valid config
    /// (`--take-over-iptables-chain`; see [`super::takeover`]).
    takeover: Option<String>,
    /// The config paths were given explicitly (`--config`): none of them existing is a
    /// mistake to show (the `missing` policy source), not ip-masq-agent's defaults on purpose.
    explicit_config: bool,
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
        owner: OwnerMode,
        out: Outputs,
        jobs: Jobs,
        now: Instant,
    ) -> Agent<K, S> {
        let config = Config::defaults(&flags);
        let table_flags = owner.initial_flags();
        let desired = model::desired(&config, &flags, table_flags);
        let drift = Tracker::new(kernel.port_id());
        Agent {
            kernel,
            source,
            flags,
            owner,
            out,
            resync_at: now + config.resync_interval,
            config,
            config_error: None,
            config_unreadable: None,
            no_good_config: None,
            table_flags,
            desired,
            in_force: None,
            drift,
            drift_pending: None,
            commit_error: None,
            budget: Budget::default(),
            backoff: Backoff::default(),
            pending: Pending::default(),
            deferred: None,
            policy_source: PolicySource::Config,
            check_failures: 0,
            check_error: None,
            recheck_at: None,
            held_by: None,
            owner_poll_at: None,
            fights: FightWatch::default(),
            drift_log: LogLimit::default(),
            check_log: LogLimit::default(),
            now,
            jobs,
            findings: Findings::default(),
            conntrack: Some(Protocols::Connectionless),
            found_at_start: None,
            takeover: None,
            explicit_config: false,
        }
    }

    /// Sets which conntrack entries a change of decision deletes (`None`: none).
    pub fn with_conntrack(mut self, protocols: Option<Protocols>) -> Agent<K, S> {
        self.conntrack = protocols;
        self
    }

    /// Sets ip-masq-agent's iptables chain to take over once a valid config's table is in
    /// force (`None`: leave iptables alone).
    pub fn with_takeover(mut self, chain: Option<String>) -> Agent<K, S> {
        self.takeover = chain;
        self
    }

    /// Says whether the config paths were given explicitly (`--config`).
    pub fn with_explicit_config(mut self, explicit: bool) -> Agent<K, S> {
        self.explicit_config = explicit;
        self
    }

    /// Where a valid config's table comes from: a config read from no file is the
    /// defaults, missing when the paths were given explicitly.
    fn source_of(&self, config: &Config) -> PolicySource {
        if self.explicit_config && config.files.is_empty() {
            PolicySource::Missing
        } else {
            PolicySource::Config
        }
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The table the agent keeps in force.
    pub fn desired(&self) -> &Table {
        &self.desired
    }

    /// When the agent next needs [`Agent::tick`]: the resync, a deferred commit, a re-check,
    /// a look at who owns the table.
    pub fn next_wake(&self) -> Instant {
        [
            self.deferred.as_ref().map(|d| d.at),
            self.recheck_at,
            self.owner_poll_at,
        ]
        .into_iter()
        .flatten()
        .fold(self.resync_at, Instant::min)
    }

    /// Whether the periodic resync is due at `now`.
    pub fn resync_due(&self, now: Instant) -> bool {
        now >= self.resync_at
    }

    /// Whether work is left over (the step bound was reached); the loop calls
    /// [`Agent::tick`] again at once, after looking at other events.
    pub fn has_work(&self) -> bool {
        self.pending.reload.is_some()
            || self.pending.commit.is_some()
            || self.pending.check.is_some()
    }

    /// Loads the config and commits the first table. With an invalid config, a table that
    /// already exists (a previous agent's) is kept exactly as it is; only where there is none
    /// are the defaults committed, so a node never goes without masquerading.
    pub fn start(&mut self, now: Instant) {
        self.now = now;
        tracing::info!(
            port_id = self.kernel.port_id(),
            config = %self.source.describe(),
            owner = ?self.owner,
            "nft-masq-agent {} starting",
            env!("CARGO_PKG_VERSION")
        );
        // Validating the config and building its table, or reading back the table to adopt,
        // take seconds near the prefix cap: busy for all of it, so /healthz stays alive.
        let health = self.out.health.clone();
        let busy = health.busy("starting");
        match self.source.load() {
            Ok(loaded) => {
                for note in &loaded.notes {
                    tracing::info!("{note}");
                }
                self.out.metrics.config_loaded(true, unix_now());
                self.policy_source = self.source_of(&loaded.config);
                self.set_config(loaded.config, now);
                self.desired = model::desired(&self.config, &self.flags, self.table_flags);
                self.pending.commit = Some((Reason::Startup, "start-up".into()));
                self.remember_table_found();
            }
            Err(e) => self.start_without_config(&chain(&e)),
        }
        if let Some(note) =
            crate::kernel::nft::legacy::note(&crate::kernel::nft::legacy::legacy_nat_tables())
        {
            tracing::warn!("{note}");
        }
        drop(busy);
        self.work(now);
        // Whether or not the first commit succeeded: what else translates before us.
        self.analyse();
    }

    /// With conntrack reconciliation on, reads the table a previous agent left: flows opened
    /// under it are reconciled against the first commit (a ConfigMap changed while no
    /// agent ran). Without a table there is nothing to compare with: flows that predate
    /// every agent were decided by whatever ran before, which nothing here can know.
    fn remember_table_found(&mut self) {
        if self.conntrack.is_none() {
            return;
        }
        match self.kernel.read(TABLE_NAME) {
            Ok(found) => self.found_at_start = found,
            Err(e) => tracing::debug!("reading the table found at start failed: {}", chain(&e)),
        }
    }

    /// Start-up with an invalid config: adopt the live table, or commit the defaults.
    fn start_without_config(&mut self, error: &str) {
        self.out.metrics.config_loaded(false, 0.0);
        self.config_error = Some(error.to_string());
        match self.kernel.read(TABLE_NAME) {
            Ok(Some(live)) => {
                error_with_problems(
                    error,
                    &format!(
                        "; KEEPING TABLE inet {TABLE_NAME} AS IT IS ({} prefixes, adopted from \
                         before this start) until the file is fixed",
                        live.prefix_count()
                    ),
                );
                self.no_good_config = Some(
                    "the config file is invalid: the table found at start is kept as it is \
                     until the file is fixed"
                        .into(),
                );
                self.policy_source = PolicySource::Adopted;
                self.desired = live.clone();
                self.in_force = Some(Arc::new(live));
            }
            other => {
                if let Err(e) = other {
                    tracing::warn!("reading table inet {TABLE_NAME} failed: {}", chain(&e));
                }
                // ip-masq-agent installs nothing for a whole resync period in this case; a
                // node without masquerade rules loses egress, so we run the defaults, say
                // so loudly, and stay not ready (a rollout with a broken ConfigMap stalls).
                error_with_problems(
                    error,
                    "; STARTING WITH THE DEFAULT CONFIG until the file is fixed",
                );
                self.no_good_config = Some(
                    "the config file is invalid: the defaults are in force until it is fixed"
                        .into(),
                );
                self.policy_source = PolicySource::Defaults;
                self.desired = model::desired(&self.config, &self.flags, self.table_flags);
                self.pending.commit = Some((Reason::Startup, "start-up".into()));
            }
        }
    }

    /// The config may have changed (a file event, SIGHUP).
    pub fn config_changed(&mut self, why: &str, now: Instant) {
        self.now = now;
        self.pending.reload = Some(why.into());
        self.work(now);
    }

    /// Notifications arrived.
    pub fn notifications(&mut self, drained: Drained, now: Instant) {
        self.now = now;
        if drained.lost {
            self.out.metrics.events_lost();
        }
        if self.held_by.is_some() && touches_our_table(&drained) {
            // The owner may have let go: look now rather than at the next poll.
            self.owner_poll_at = Some(now);
        }
        match self.drift.observe(drained) {
            Verdict::Nothing => {}
            Verdict::Repair(change) => self.foreign_change(change, now),
            Verdict::Check(why) => {
                tracing::warn!("{why}; doing a full check of table inet {TABLE_NAME}");
                self.pending.check = Some(Reason::Resync);
            }
        }
        self.tick(now);
    }

    /// Someone else changed our table: repair, and notice a fight.
    fn foreign_change(&mut self, change: Change, now: Instant) {
        self.fights.repaired(now, change.by.to_string());
        if let Some(suppressed) = self.drift_log.admit(now) {
            let more = if suppressed > 0 {
                format!(" ({suppressed} more such changes since the last warning)")
            } else {
                String::new()
            };
            tracing::warn!("table inet {TABLE_NAME} changed under us: {change}; repairing{more}");
        }
        let what = change.to_string();
        self.pending.commit = Some((Reason::Drift, what.clone()));
        self.drift_pending = Some(what);
    }

    /// Reading notifications failed: they may be lost.
    pub fn notifications_failed(&mut self, err: &NftError, now: Instant) {
        tracing::warn!(
            "reading nftables events failed: {}; doing a full check",
            chain(err)
        );
        self.pending.check = Some(Reason::Resync);
        self.tick(now);
    }

    /// Timers: a deferred commit whose time came, a re-check, a look at the table's owner,
    /// the periodic resync; then the work they queued.
    pub fn tick(&mut self, now: Instant) {
        self.now = now;
        if self.deferred.as_ref().is_some_and(|d| d.at <= now) {
            if let Some(d) = self.deferred.take() {
                self.pending.commit = Some((d.reason, d.why));
            }
        }
        if self.recheck_at.is_some_and(|t| t <= now) {
            self.recheck_at = None;
            self.pending.check = Some(Reason::Resync);
        }
        if self.owner_poll_at.is_some_and(|t| t <= now) {
            self.owner_poll_at = None;
            self.look_at_owner(now);
        }
        if now >= self.resync_at {
            self.resync_at = now + self.config.resync_interval;
            self.pending.reload = Some("periodic resync".into());
            self.pending.check = Some(Reason::Resync);
        }
        self.work(now);
    }

    /// While another socket owns the table: commit as soon as it does not.
    fn look_at_owner(&mut self, now: Instant) {
        let Some(port) = self.held_by else {
            return;
        };
        match self.kernel.holder(TABLE_NAME) {
            Ok(Holder::Owned(p)) if p == port => self.owner_poll_at = Some(now + OWNER_POLL),
            Ok(holder) => {
                tracing::info!(
                    "table inet {TABLE_NAME} is no longer owned by netlink port {port} \
                     ({holder:?}): committing"
                );
                self.held_by = None;
                self.pending.commit = Some((Reason::Retry, "the table was released".into()));
            }
            Err(e) => {
                tracing::debug!("looking at the table's owner failed: {}", chain(&e));
                self.owner_poll_at = Some(now + OWNER_POLL);
            }
        }
    }

    /// Does the queued work: reload, commit, check, in that order, at most [`MAX_STEPS`]
    /// steps; then publishes readiness.
    fn work(&mut self, now: Instant) {
        for _ in 0..MAX_STEPS {
            if let Some(why) = self.pending.reload.take() {
                self.reload(&why, now);
            } else if let Some((reason, why)) = self.pending.commit.take() {
                self.commit_within_budget(reason, why, now);
            } else if let Some(reason) = self.pending.check.take() {
                self.check(reason, now);
            } else {
                break;
            }
        }
        self.publish();
    }

    fn set_config(&mut self, config: Config, now: Instant) {
        if config.resync_interval != self.config.resync_interval {
            self.resync_at = now + config.resync_interval;
        }
        self.config = config;
        self.no_good_config = None;
    }

    fn reload(&mut self, why: &str, now: Instant) {
        // Busy until the new table is built too, not only while reading: building and
        // comparing 100,000 prefixes took long enough for a probe to find the loop silent.
        let health = self.out.health.clone();
        let _busy = health.busy("reading the config");
        match self.source.reload() {
            Update::Unchanged => tracing::debug!("{why}: config unchanged"),
            Update::Failed(e) => {
                self.out.metrics.config_loaded(false, 0.0);
                // The cause is part of the text, so a change of cause is logged too.
                let text = chain(&e);
                self.config_unreadable = e.is_unreadable().then(|| text.clone());
                if self.config_error.as_deref() != Some(&text) {
                    let ready = if e.is_unreadable() {
                        "; not ready until it can be read"
                    } else {
                        ""
                    };
                    error_with_problems(
                        &text,
                        &format!(
                            "; keeping the last good config ({} prefixes in force){ready}",
                            self.desired.prefix_count()
                        ),
                    );
                    self.config_error = Some(text);
                }
            }
            Update::Loaded(loaded) => {
                self.config_unreadable = None;
                self.out.metrics.config_loaded(true, unix_now());
                if self.config_error.take().is_some() {
                    tracing::info!("config {} is valid again", self.source.describe());
                }
                if loaded.config != self.config {
                    for note in &loaded.notes {
                        tracing::info!("{note}");
                    }
                }
                self.policy_source = self.source_of(&loaded.config);
                self.set_config(loaded.config, now);
                self.config_loaded(why);
            }
        }
    }

    /// A valid config is in: commit if it asks for another table.
    fn config_loaded(&mut self, why: &str) {
        let desired = model::desired(&self.config, &self.flags, self.table_flags);
        // A failed first commit is retried by its own timer, with backoff; a reload only
        // commits early when there is something new to commit.
        let retry_pending = self.in_force.is_none() && self.deferred.is_some();
        if !desired.same_policy(&self.desired) || (self.in_force.is_none() && !retry_pending) {
            self.desired = desired;
            self.deferred = None;
            self.pending.commit = Some((Reason::Config, why.into()));
        } else {
            tracing::debug!("{why}: desired table unchanged");
        }
    }

    /// Commits now if the budget allows, else defers the commit to when it does.
    fn commit_within_budget(&mut self, reason: Reason, why: String, now: Instant) {
        match self.budget.admit(now) {
            Ok(()) => {
                self.budget.spend(now);
                self.commit(reason, &why, now);
            }
            Err(at) => {
                // Someone keeps changing the table (another agent?): do not spin with it.
                if self.deferred.is_none() {
                    tracing::warn!(
                        "{} commits in {:?}; the next ({why}) waits until {:?} from now (is \
                         another agent or tool managing table inet {TABLE_NAME}?)",
                        self.budget.spent(),
                        super::reconcile::BUDGET_WINDOW,
                        at.saturating_duration_since(now),
                    );
                }
                self.defer(at, reason, why);
            }
        }
    }

    fn defer(&mut self, at: Instant, reason: Reason, why: String) {
        match &mut self.deferred {
            // Keep the earlier time: one deferred commit carries everything.
            Some(d) => d.at = d.at.min(at),
            None => self.deferred = Some(Deferred { at, reason, why }),
        }
    }

    /// Replaces the table with `self.desired`, stepping down table flags the kernel refuses.
    fn commit(&mut self, reason: Reason, why: &str, now: Instant) {
        let health = self.out.health.clone();
        let _busy = health.busy("committing");
        let start = Instant::now();
        if let Err(e) = self.kernel.listen(false) {
            tracing::warn!("{e}");
        }
        let gen_before = self.kernel.generation().ok();
        // Read just before the replace resets them; added to the base only if it commits.
        let counters = self.kernel.counters(TABLE_NAME).ok().flatten();
        let result = self.replace_stepping_down();
        let gen_after = self.kernel.generation().ok();
        if let Err(e) = self.kernel.listen(true) {
            tracing::warn!("{e}");
        }
        let gen_now = self.kernel.generation().ok();
        self.drift.committed(gen_now);
        let elapsed = start.elapsed();
        match result {
            Ok(report) => {
                // A difference that left the rules alone left their counters running too.
                if let Some(c) = counters.filter(|_| report.counters_reset) {
                    self.out.counters.fold(c);
                }
                if report.messages == 0 {
                    // The live table was already the desired one (the agent's own last
                    // commit, untouched since): no transaction, so neither a commit in the
                    // log and metrics nor one spent from the budget.
                    self.budget.refund();
                    self.already_in_force(reason, why);
                } else {
                    self.committed(reason, why, &report, elapsed);
                }
                // Anyone else committing between our generation reads did so while we were
                // not subscribed: look at the table instead of trusting the events. A commit
                // with nothing to change sends nothing and makes no generation.
                let ours = if report.messages == 0 { 0 } else { 1 };
                let clean = matches!((gen_before, gen_after, gen_now),
                    (Some(a), Some(b), Some(c)) if b == a.wrapping_add(ours) && c == b);
                if !clean {
                    tracing::debug!(
                        ?gen_before,
                        ?gen_after,
                        ?gen_now,
                        "commits by others around ours"
                    );
                    self.pending.check = Some(Reason::Resync);
                }
                let valid = self.no_good_config.is_none();
                super::takeover::after_commit(&mut self.kernel, &mut self.takeover, valid);
            }
            Err(e) => self.commit_failed(reason, why, &e, now),
        }
    }

    /// One replace; on a refusal of the table flags, the next flags [`compat`] allows.
    fn replace_stepping_down(&mut self) -> Result<CommitReport, NftError> {
        loop {
            let result = self.kernel.replace(&self.desired);
            let Err(e) = &result else {
                return result;
            };
            let Some(step) = compat::step_down(self.owner, self.table_flags, e) else {
                return result;
            };
            let next = if step.next.0 == 0 {
                "no ownership".to_string()
            } else {
                step.next.to_string()
            };
            tracing::warn!(
                "the kernel refused table flags {} ({}); using {next} (--table-owner={:?})",
                step.refused,
                step.missing,
                self.owner,
            );
            if step.ownership_lost {
                tracing::error!(
                    "--table-owner=on but this kernel has no table owner flag: running without \
                     ownership"
                );
            }
            self.table_flags = step.next;
            self.desired.flags = step.next;
        }
    }

    /// Bookkeeping for a commit that found nothing to send.
    fn already_in_force(&mut self, reason: Reason, why: &str) {
        tracing::info!(
            reason = reason.as_str(),
            "table inet {TABLE_NAME} is already as wanted ({why}): nothing to commit"
        );
        self.in_force = Some(Arc::new(self.desired.clone()));
        self.commit_error = None;
        self.drift_pending = None;
        self.backoff.succeeded();
    }

    fn committed(&mut self, reason: Reason, why: &str, report: &CommitReport, elapsed: Duration) {
        let v4: usize = self
            .desired
            .sets
            .iter()
            .filter(|s| s.family == Family::V4)
            .map(|s| s.prefixes.len())
            .sum();
        let v6 = self.desired.prefix_count() - v4;
        let diff = SetDiff::between(self.in_force.as_deref(), &self.desired);
        let metrics = &self.out.metrics;
        metrics.committed(reason, elapsed.as_secs_f64(), v4, v6, report.elements);
        metrics.owner_mode(compat::owner_label(self.table_flags));
        tracing::info!(
            reason = reason.as_str(),
            prefixes = v4 + v6,
            elements = report.elements,
            sent = report.sent,
            form = report.form.as_str(),
            added = diff.added.len(),
            removed = diff.removed.len(),
            duration_ms = format!("{:.3}", elapsed.as_secs_f64() * 1e3),
            "committed table inet {TABLE_NAME} ({why}): {diff}"
        );
        let after = Arc::new(self.desired.clone());
        let before = self.in_force.replace(after.clone());
        self.commit_error = None;
        self.drift_pending = None;
        self.backoff.succeeded();
        let before = before.or_else(|| self.found_at_start.take().map(Arc::new));
        let changed = before.as_ref().is_none_or(|b| !b.same_policy(&after));
        if let (Some(protocols), Some(before)) = (self.conntrack, before) {
            // Off the loop: the dump walks the node's whole conntrack table. A commit that
            // comes before it runs merges into the same job (see `worker::Flows`).
            self.jobs.reconcile(before, after, protocols);
        }
        if changed {
            self.analyse();
        }
    }

    /// Applies what the background worker sends back: a pass's findings, a reconciliation's
    /// report. Neither touches the table nor readiness.
    pub fn worker_done(&mut self, outcome: Outcome, now: Instant) {
        self.now = now;
        match outcome {
            Outcome::Analysed(a) => self.findings.analysed(&a, now, &self.out.metrics),
            Outcome::Superseded => {
                tracing::debug!("conflict analysis stopped for a newer one");
                self.findings.superseded(&self.out.metrics);
            }
            Outcome::AnalysisFailed(e) => {
                tracing::debug!("reading the other NAT tables failed: {e}");
            }
            Outcome::Reconciled(r) => self.flows_reconciled(r),
        }
    }

    /// A conntrack reconciliation ran: the conntrack entries of the flows a change of
    /// decision affects were deleted, so their next packet is decided by the new rules. A
    /// failure is logged and counted; the commit stands.
    fn flows_reconciled(&mut self, r: Reconciled) {
        let metrics = &self.out.metrics;
        let elapsed = r.duration;
        let protocols = r.protocols;
        if r.dropped > 0 {
            tracing::warn!(
                "conntrack: {} tables in force for a moment between two reconciliations were not \
                 compared (commits kept coming while one ran); flows opened under them only \
                 may keep their old translation",
                r.dropped
            );
        }
        match r.result {
            Ok(r) => {
                let ok = r.failed == 0;
                metrics.conntrack_reconciled(ok, r.deleted, elapsed.as_secs_f64());
                let duration_ms = format!("{:.1}", elapsed.as_secs_f64() * 1e3);
                tracing::info!(
                    examined = r.examined,
                    deleted = r.deleted,
                    already_gone = r.already_gone,
                    failed = r.failed,
                    deferred = r.deferred,
                    duration_ms,
                    "conntrack: {} of {} entries deleted ({}): the flows whose translation \
                     the change affects start over under the new rules",
                    r.deleted,
                    r.examined,
                    protocols_label(protocols),
                );
                if !ok || r.deferred > 0 {
                    tracing::warn!(
                        "conntrack: {} entries could not be deleted ({:?} by errno) and {} were \
                         left for the next change; those flows keep their old translation",
                        r.failed,
                        r.errors,
                        r.deferred
                    );
                }
            }
            Err(e) => {
                metrics.conntrack_reconciled(false, 0, elapsed.as_secs_f64());
                tracing::warn!(
                    "conntrack reconciliation failed: {e}; flows opened before the change keep \
                     their old translation (the table is committed)"
                );
            }
        }
    }

    fn commit_failed(&mut self, reason: Reason, why: &str, e: &NftError, now: Instant) {
        self.out.metrics.commit_failed();
        if let Some(port) = self.held_by_other(e) {
            if self.held_by != Some(port) {
                tracing::warn!(
                    "table inet {TABLE_NAME} is owned by another netlink socket (port {port}, \
                     another agent?); taking it over as soon as it lets go"
                );
            }
            self.held_by = Some(port);
            self.owner_poll_at = Some(now + OWNER_POLL);
            self.commit_error = None;
            return;
        }
        let wait = self.backoff.failed();
        tracing::error!(
            reason = reason.as_str(),
            "committing table inet {TABLE_NAME} failed ({why}): {}; retrying in {wait:?}",
            chain(e)
        );
        self.commit_error = Some(chain(e));
        self.deferred = Some(Deferred {
            at: now + wait,
            reason,
            why: "retry".into(),
        });
    }

    /// The port id of the socket that owns the table, when that is why `e` refused our
    /// commit (EPERM on our NEWTABLE, while we do have the privilege).
    fn held_by_other(&mut self, e: &NftError) -> Option<u32> {
        let NftError::Rejected {
            kind: Some(NFT_MSG_NEWTABLE),
            errno: libc::EPERM,
            ..
        } = e
        else {
            return None;
        };
        match self.kernel.holder(TABLE_NAME) {
            Ok(Holder::Owned(port)) if port != self.kernel.port_id() => Some(port),
            _ => None,
        }
    }

    /// Reads the live table and queues a commit if it is not the desired one.
    fn check(&mut self, reason: Reason, now: Instant) {
        let health = self.out.health.clone();
        let _busy = health.busy("checking the table");
        let live = self.kernel.read(TABLE_NAME);
        drop(_busy);
        match live {
            Ok(live) => {
                self.check_ok();
                self.analyse();
                if live.as_ref().is_some_and(|l| l.same_policy(&self.desired)) {
                    return;
                }
                let what = if live.is_none() {
                    "missing"
                } else {
                    "different"
                };
                if self.in_force.is_some() {
                    self.out.metrics.repaired_by_check();
                }
                self.pending.commit = Some((reason, format!("full check: live table {what}")));
            }
            Err(e) => self.check_failed(&e, now),
        }
    }

    fn check_ok(&mut self) {
        if self.check_error.take().is_some() {
            tracing::info!("table inet {TABLE_NAME} can be read back again");
        }
        self.check_failures = 0;
    }

    /// A check that fails is tried again soon (1 s, doubling up to the resync interval);
    /// from the second failure in a row the agent says it is blind: it cannot see drift.
    fn check_failed(&mut self, e: &NftError, now: Instant) {
        self.out.metrics.check_failed();
        self.check_failures = self.check_failures.saturating_add(1);
        let text = chain(e);
        if self.check_log.admit(now).is_some() {
            tracing::warn!("reading table inet {TABLE_NAME} back failed: {text}");
        }
        if self.check_failures >= BLIND_AFTER {
            self.check_error = Some(text);
        }
        let wait = BACKOFF_MIN * 2u32.saturating_pow(self.check_failures.min(16));
        self.recheck_at = Some(now + wait.min(self.config.resync_interval).min(BACKOFF_MAX));
    }

    /// Asks the worker which other components' NAT rules run before ours and would
    /// translate destinations our table exempts (warned about when they change, counted in
    /// a gauge). Rules for marked packets only (kube-proxy's) are expected and not counted.
    /// The generation lets the worker skip a question it answered for the same ruleset.
    fn analyse(&mut self) {
        self.jobs.analyse(Analysis {
            probes: sample_probes(&self.desired, &self.config),
            generation: self.kernel.generation().ok(),
        });
    }

    /// Publishes readiness to the probe and the metric.
    fn publish(&self) {
        let contested = self.fights.fight(self.now);
        let condition = Condition {
            no_good_config: self.no_good_config.clone(),
            config_unreadable: self.config_unreadable.clone(),
            commit_failed: self.commit_error.clone(),
            drift: self.drift_pending.clone(),
            contested: contested.clone(),
            held_by_other: self.held_by.map(|p| format!("netlink port {p}")),
            blind: self.check_error.clone(),
            nothing_in_force: self.in_force.is_none(),
        };
        let r = readiness(&condition);
        let metrics = &self.out.metrics;
        metrics.set_ready(r.is_ok());
        metrics.set_contested(contested.is_some());
        metrics.policy_source(self.policy_source);
        self.out.health.set_readiness(r);
    }
}

/// Whether any notification concerns our table.
fn touches_our_table(d: &Drained) -> bool {
    use crate::kernel::nft::events::Event;
    d.lost
        || d.events
            .iter()
            .any(|e| matches!(e, Event::Object { table, .. } if table == TABLE_NAME))
}

/// The packets to ask other NAT rules about: the first address of each exempt prefix of our
/// table (at most [`MAX_SAMPLES`] per family), from a source in scope.
fn sample_probes(table: &Table, config: &Config) -> Vec<crate::analysis::Packet> {
    let mut out = Vec::new();
    for set in table
        .sets
        .iter()
        .filter(|s| s.name == crate::model::SET_V4 || s.name == crate::model::SET_V6)
    {
        let src = crate::config::values(&config.source_cidrs)
            .find(|n| Family::of(n) == set.family)
            .map(|n| n.network());
        for p in set.prefixes.iter().take(MAX_SAMPLES) {
            out.push(crate::analysis::Packet {
                src,
                dst: p.network(),
                oif: None,
                dst_local: Some(false),
            });
        }
    }
    out
}

/// Exempt prefixes sampled per family: enough for any real config, bounded for a huge one.
const MAX_SAMPLES: usize = 256;
