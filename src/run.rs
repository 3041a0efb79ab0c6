//! The daemon: one reconcile loop woken by hints.
//!
//! Hints come from the config directory watch (inotify), from nftables notifications about
//! our table, from SIGHUP, and from the periodic full check every `resyncInterval`. Each is
//! only a reason to look: the loop re-reads the config and recomputes the desired table, and
//! it commits only when the desired table changed or the live one differs from it. A bad
//! config never replaces a good one; a failed commit leaves the previous table in force and is
//! retried with backoff.
//!
//! Own commits are recognised by the netlink port id of the command socket, never by PID.
//! During its own commit the agent leaves the notification group, so the kernel does not
//! build one notification per element; generation ids read around the commit tell whether
//! anyone else committed meanwhile, in which case a full check follows.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::config::{self, Config, PolicyFlags};
use crate::drift::{Tracker, Verdict};
use crate::metrics::{Metrics, Reason};
use crate::model::{self, Family, SetDiff, TABLE_NAME, Table, TableFlags};
use crate::nft::events::{Drained, EventSocket};
use crate::nft::uapi;
use crate::nft::{self, NftError, NftSocket};
use crate::watch::ConfigWatch;

/// Whether and how the agent claims its table with the kernel's owner flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerMode {
    /// Owner + persist where the kernel has persist (6.9+), otherwise no ownership: the
    /// table is protected where that is safe and survives a crash everywhere.
    Auto,
    /// Owner, with persist where available. Without persist (5.12-6.8) the table is removed
    /// by the kernel when the agent exits or crashes.
    On,
    /// No ownership: others can change the table and the agent repairs it.
    Off,
}

impl std::str::FromStr for OwnerMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(OwnerMode::Auto),
            "on" => Ok(OwnerMode::On),
            "off" => Ok(OwnerMode::Off),
            _ => Err(format!("{s:?} is not one of auto, on, off")),
        }
    }
}

/// Daemon settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The config file.
    pub config: PathBuf,
    /// Policy flags.
    pub flags: PolicyFlags,
    /// Table ownership.
    pub owner: OwnerMode,
    /// Where to serve /healthz, /readyz and /metrics; `None` to not serve.
    pub listen: Option<SocketAddr>,
    /// Quiet time after a config event before reading the file.
    pub debounce: Duration,
}

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The netlink sockets could not be opened.
    #[error("cannot open the nf_tables netlink sockets")]
    Netlink(#[source] NftError),
    /// The config directory cannot be watched.
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
    /// The runtime, a signal handler or the HTTP listener could not be set up.
    #[error("{what}")]
    Setup {
        /// What failed.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// State shared with the HTTP endpoint.
#[derive(Debug)]
pub struct Shared {
    /// The metrics.
    pub metrics: Metrics,
    ready: AtomicBool,
    not_ready_reason: Mutex<String>,
    ping: mpsc::Sender<oneshot::Sender<()>>,
    counters: Mutex<Counters>,
}

/// Masquerade counters: the kernel's rule counters restart at zero with every commit, so
/// what they held is added to `base` just before each commit.
#[derive(Debug, Default)]
struct Counters {
    sock: Option<NftSocket>,
    base: (u64, u64),
}

fn masq_counters(sock: &mut NftSocket) -> Result<Option<(u64, u64)>, NftError> {
    Ok(sock
        .read_rules(TABLE_NAME)?
        .map(|t| t.masquerade_counters()))
}

impl Shared {
    /// Asks the reconcile loop to answer within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.ping.send(tx).await.is_err() {
            return false;
        }
        matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())))
    }

    /// Ok when the committed table matches the last good config.
    pub fn readiness(&self) -> Result<(), String> {
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(self
                .not_ready_reason
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default())
        }
    }

    fn set_ready(&self, ready: bool, reason: &str) {
        self.ready.store(ready, Ordering::SeqCst);
        self.metrics.set_ready(ready);
        if let Ok(mut r) = self.not_ready_reason.lock() {
            *r = reason.to_string();
        }
    }

    /// Reads the masquerade rules' counters into the metrics.
    pub fn refresh_counters(&self) {
        let Ok(mut c) = self.counters.lock() else {
            return;
        };
        if c.sock.is_none() {
            c.sock = NftSocket::open().ok();
        }
        let base = c.base;
        if let Some(sock) = c.sock.as_mut() {
            match masq_counters(sock) {
                Ok(Some((p, b))) => self.metrics.masqueraded(base.0 + p, base.1 + b),
                Ok(None) => {}
                Err(e) => tracing::debug!("reading the masquerade counters failed: {e}"),
            }
        }
    }

    /// Adds what the rules counted before a successful commit reset them to the base.
    fn fold_counters(&self, before: Option<(u64, u64)>) {
        if let (Ok(mut c), Some((p, b))) = (self.counters.lock(), before) {
            c.base.0 += p;
            c.base.1 += b;
            self.metrics.masqueraded(c.base.0, c.base.1);
        }
    }
}

/// Why the loop woke up.
enum Wake {
    Exit(&'static str),
    Reload(&'static str),
    ConfigEvent,
    Events(Result<Drained, NftError>),
    Resync,
    Ping(oneshot::Sender<()>),
    Retry,
}

const MAX_REPAIRS: usize = 20;
const REPAIR_WINDOW: Duration = Duration::from_secs(10);
const MAX_DEBOUNCE: Duration = Duration::from_millis(100);

struct Agent {
    opts: Options,
    sock: NftSocket,
    events: AsyncFd<EventSocket>,
    watch: ConfigWatch,
    hint: Arc<Notify>,
    shared: Arc<Shared>,
    config: Config,
    last_config_error: Option<String>,
    /// Hash of the config bytes last parsed (None: the file was absent), to skip parsing an
    /// unchanged file on every resync.
    last_source: Option<u64>,
    /// Whether any config file (or its absence) has validated since start. Until then the
    /// defaults are in force because of an error, and the agent reports not ready.
    have_good_config: bool,
    table_flags: TableFlags,
    desired: Table,
    /// The table last committed successfully (what should be live).
    in_force: Option<Table>,
    drift: Tracker,
    repairs: VecDeque<Instant>,
    retry_at: Option<Instant>,
    retry_reason: Reason,
    backoff: Duration,
}

fn source_hash(bytes: &Option<Vec<u8>>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn owner_flags(mode: OwnerMode) -> TableFlags {
    match mode {
        OwnerMode::Off => TableFlags(0),
        OwnerMode::Auto | OwnerMode::On => TableFlags(TableFlags::OWNER | TableFlags::PERSIST),
    }
}

fn owner_label(flags: TableFlags) -> &'static str {
    if flags.has(TableFlags::PERSIST) {
        "owner-persist"
    } else if flags.has(TableFlags::OWNER) {
        "owner"
    } else {
        "off"
    }
}

/// Runs the daemon until SIGTERM or SIGINT. The table stays in force on exit.
pub fn run(opts: Options) -> Result<(), RunError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| RunError::Setup {
            what: "cannot start the async runtime".into(),
            source,
        })?;
    rt.block_on(run_async(opts))
}

async fn run_async(opts: Options) -> Result<(), RunError> {
    let setup = |what: &str| {
        let what = what.to_string();
        move |source| RunError::Setup { what, source }
    };
    let mut term = signal(SignalKind::terminate()).map_err(setup("SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(setup("SIGINT handler"))?;
    let mut hup = signal(SignalKind::hangup()).map_err(setup("SIGHUP handler"))?;

    let (ping_tx, mut ping_rx) = mpsc::channel(8);
    let shared = Arc::new(Shared {
        metrics: Metrics::new(),
        ready: AtomicBool::new(false),
        not_ready_reason: Mutex::new("starting".into()),
        ping: ping_tx,
        counters: Mutex::new(Counters::default()),
    });
    if let Some(addr) = opts.listen {
        // Bound here, before anything else, so a bad address fails at start-up.
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(setup(&format!("cannot listen on {addr}")))?;
        tracing::info!("serving /healthz, /readyz and /metrics on http://{addr}");
        tokio::spawn(crate::http::serve(listener, shared.clone()));
    }

    let sock = NftSocket::open().map_err(RunError::Netlink)?;
    let events = EventSocket::open().map_err(RunError::Netlink)?;
    let events = events
        .into_async()
        .map_err(setup("registering the event socket"))?;
    let hint = Arc::new(Notify::new());
    let watch = ConfigWatch::new(&opts.config, hint.clone())?;

    let source = config::read(&opts.config);
    let source_hash = source.as_ref().ok().map(source_hash);
    let (config, have_good_config, last_config_error) =
        match source.and_then(|b| config::parse(b.as_deref(), &opts.config, &opts.flags)) {
            Ok(loaded) => {
                for note in &loaded.notes {
                    tracing::info!("{note}");
                }
                shared.metrics.config_loaded(true, unix_now());
                (loaded.config, true, None)
            }
            Err(e) => {
                // ip-masq-agent installs nothing for a whole resync period in this case; a
                // node without masquerade rules loses egress, so we run the defaults, say so
                // loudly, and stay not ready (a rollout with a broken ConfigMap stalls).
                tracing::error!("{e}; STARTING WITH THE DEFAULT CONFIG until the file is fixed");
                shared.metrics.config_loaded(false, 0.0);
                (Config::defaults(&opts.flags), false, Some(e.to_string()))
            }
        };
    let table_flags = owner_flags(opts.owner);
    let desired = model::desired(&config, &opts.flags, table_flags);
    tracing::info!(
        port_id = sock.port_id(),
        config = %opts.config.display(),
        owner = ?opts.owner,
        "nft-masq-agent {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let sock_port = sock.port_id();
    let mut agent = Agent {
        opts,
        sock,
        events,
        watch,
        hint,
        shared,
        config,
        last_config_error,
        last_source: source_hash,
        have_good_config,
        table_flags,
        desired,
        in_force: None,
        drift: Tracker::new(sock_port),
        repairs: VecDeque::new(),
        retry_at: None,
        retry_reason: Reason::Retry,
        backoff: Duration::from_millis(500),
    };
    agent.commit(Reason::Startup, "start-up");

    let period = agent.config.resync_interval;
    let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        let retry_at = agent.retry_at;
        let wake = tokio::select! {
            _ = term.recv() => Wake::Exit("SIGTERM"),
            _ = int.recv() => Wake::Exit("SIGINT"),
            _ = hup.recv() => Wake::Reload("SIGHUP"),
            _ = agent.hint.notified() => Wake::ConfigEvent,
            guard = agent.events.readable_mut() => match guard {
                Ok(mut g) => {
                    let drained = g.get_inner_mut().drain();
                    // We read until EWOULDBLOCK, so readiness is really gone.
                    g.clear_ready();
                    Wake::Events(drained)
                }
                Err(e) => Wake::Events(Err(NftError::Io { op: "poll (events)", source: e })),
            },
            _ = resync.tick() => Wake::Resync,
            Some(reply) = ping_rx.recv() => Wake::Ping(reply),
            _ = async move {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            } => Wake::Retry,
        };
        match wake {
            Wake::Exit(sig) => {
                tracing::info!(
                    "{sig}: exiting; table inet {TABLE_NAME} stays in force (use --cleanup to \
                     remove it)"
                );
                return Ok(());
            }
            Wake::Reload(why) => agent.reload(why),
            Wake::ConfigEvent => {
                agent.debounce().await;
                if let Err(e) = agent.watch.ensure() {
                    tracing::warn!("{e}");
                }
                agent.reload("config file changed");
            }
            Wake::Events(Ok(drained)) => agent.on_events(drained),
            Wake::Events(Err(e)) => {
                tracing::warn!("reading nftables events failed: {e}; doing a full check");
                agent.check(Reason::Resync);
            }
            Wake::Resync => {
                agent.reload("periodic resync");
                agent.check(Reason::Resync);
            }
            Wake::Ping(reply) => {
                let _ = reply.send(());
            }
            Wake::Retry => {
                agent.retry_at = None;
                let reason = agent.retry_reason;
                agent.commit(reason, "retry");
            }
        }
        let period = agent.config.resync_interval;
        if resync.period() != period {
            resync = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
    }
}

impl Agent {
    /// Waits until config events stop for `debounce` (at most `MAX_DEBOUNCE` in all), so a
    /// burst (a ConfigMap swap is several renames and deletes) causes one reload.
    async fn debounce(&self) {
        let end = tokio::time::Instant::now() + MAX_DEBOUNCE;
        loop {
            let quiet = tokio::time::Instant::now() + self.opts.debounce;
            tokio::select! {
                _ = self.hint.notified() => {
                    if tokio::time::Instant::now() >= end {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(quiet.min(end)) => return,
            }
        }
    }

    fn reload(&mut self, why: &str) {
        let loaded = match config::read(&self.opts.config) {
            Ok(bytes) => {
                let hash = source_hash(&bytes);
                if self.last_source == Some(hash) {
                    tracing::debug!("{why}: config file unchanged");
                    return;
                }
                self.last_source = Some(hash);
                config::parse(bytes.as_deref(), &self.opts.config, &self.opts.flags)
            }
            Err(e) => {
                self.last_source = None;
                Err(e)
            }
        };
        match loaded {
            Ok(loaded) => {
                self.shared.metrics.config_loaded(true, unix_now());
                if self.last_config_error.take().is_some() {
                    tracing::info!("config file {} is valid again", self.opts.config.display());
                }
                if loaded.config != self.config {
                    for note in &loaded.notes {
                        tracing::info!("{note}");
                    }
                    self.config = loaded.config;
                }
                let first_good = !self.have_good_config;
                self.have_good_config = true;
                let desired = model::desired(&self.config, &self.opts.flags, self.table_flags);
                // A failed commit is retried by its own timer, with backoff; a reload only
                // commits early when there is something new to commit.
                let retry_pending = self.in_force.is_none() && self.retry_at.is_some();
                if !desired.same_policy(&self.desired)
                    || (self.in_force.is_none() && !retry_pending)
                {
                    self.desired = desired;
                    self.retry_at = None;
                    self.commit(Reason::Config, why);
                } else {
                    tracing::debug!("{why}: desired table unchanged");
                    if first_good && self.in_force.is_some() {
                        self.shared.set_ready(true, "");
                    }
                }
            }
            Err(e) => {
                self.shared.metrics.config_loaded(false, 0.0);
                let text = e.to_string();
                if self.last_config_error.as_deref() != Some(&text) {
                    tracing::error!(
                        "{text}; keeping the last good config ({} prefixes in force)",
                        self.desired.prefix_count()
                    );
                    self.last_config_error = Some(text);
                } else {
                    tracing::debug!("{why}: config file still invalid");
                }
            }
        }
    }

    /// Replaces the table with `self.desired`.
    fn commit(&mut self, reason: Reason, why: &str) {
        let start = Instant::now();
        let events = self.events.get_ref();
        if let Err(e) = events.subscribe(false) {
            tracing::warn!("{e}");
        }
        let gen_before = self.sock.generation().ok();
        // Read just before the replace resets them; added to the base only if it commits.
        let counters = masq_counters(&mut self.sock).ok().flatten();
        let t_prep = start.elapsed();
        let mut result = nft::replace_table(&mut self.sock, &self.desired);
        let t_commit = start.elapsed();
        // Table flags the kernel does not support: step down as the mode allows. Kernels
        // before 5.12 answer unknown table flags with EINVAL, later ones with EOPNOTSUPP.
        while let Err(NftError::Rejected {
            kind: Some(uapi::NFT_MSG_NEWTABLE),
            errno: libc::EOPNOTSUPP | libc::EINVAL,
            ..
        }) = &result
        {
            let next = match (self.opts.owner, self.table_flags.0) {
                (_, 0) => break,
                (OwnerMode::On, f) if f & TableFlags::PERSIST != 0 => TableFlags(TableFlags::OWNER),
                _ => TableFlags(0),
            };
            tracing::warn!(
                "the kernel refused table flags {} ({}); using {} (--table-owner={:?})",
                self.table_flags,
                if self.table_flags.has(TableFlags::PERSIST) {
                    "persist needs Linux 6.9+"
                } else {
                    "owner needs Linux 5.12+"
                },
                if next.0 == 0 {
                    "no ownership".to_string()
                } else {
                    next.to_string()
                },
                self.opts.owner,
            );
            if self.opts.owner == OwnerMode::On && next.0 == 0 {
                tracing::error!(
                    "--table-owner=on but this kernel has no table owner flag: running without \
                     ownership"
                );
            }
            self.table_flags = next;
            self.desired.flags = next;
            result = nft::replace_table(&mut self.sock, &self.desired);
        }
        let gen_after = self.sock.generation().ok();
        if let Err(e) = events.subscribe(true) {
            tracing::warn!("{e}");
        }
        let gen_now = self.sock.generation().ok();
        let elapsed = start.elapsed();
        tracing::debug!(?t_prep, ?t_commit, ?elapsed, "commit phases");
        match result {
            Ok(report) => {
                self.shared.fold_counters(counters);
                let v4 = self
                    .desired
                    .sets
                    .iter()
                    .filter(|s| s.family == Family::V4)
                    .map(|s| s.prefixes.len())
                    .sum();
                let v6 = self.desired.prefix_count() - v4;
                let diff = SetDiff::between(self.in_force.as_ref(), &self.desired);
                self.shared.metrics.committed(
                    reason,
                    elapsed.as_secs_f64(),
                    v4,
                    v6,
                    report.elements,
                );
                self.shared
                    .metrics
                    .owner_mode(owner_label(self.table_flags));
                tracing::info!(
                    reason = reason.as_str(),
                    prefixes = v4 + v6,
                    elements = report.elements,
                    added = diff.added.len(),
                    removed = diff.removed.len(),
                    duration_ms = format!("{:.3}", elapsed.as_secs_f64() * 1e3),
                    "committed table inet {TABLE_NAME} ({why}): {diff}"
                );
                self.in_force = Some(self.desired.clone());
                if self.have_good_config {
                    self.shared.set_ready(true, "");
                } else {
                    self.shared.set_ready(
                        false,
                        "the config file is invalid: the defaults are in force until it is fixed",
                    );
                }
                self.backoff = Duration::from_millis(500);
                // Anyone else committing between our generation reads happened while we
                // were not subscribed: look at the table instead of trusting the events.
                let clean = matches!((gen_before, gen_after, gen_now),
                    (Some(a), Some(b), Some(c)) if b == a.wrapping_add(1) && c == b);
                self.drift.committed(gen_now);
                if !clean {
                    tracing::debug!(
                        ?gen_before,
                        ?gen_after,
                        ?gen_now,
                        "commits by others around ours"
                    );
                    self.check(Reason::Resync);
                }
            }
            Err(e) => {
                self.shared.metrics.commit_failed();
                self.shared.set_ready(false, &format!("commit failed: {e}"));
                self.drift.committed(gen_now);
                tracing::error!(
                    reason = reason.as_str(),
                    "committing table inet {TABLE_NAME} failed ({why}): {e}; retrying in {:?}",
                    self.backoff
                );
                self.retry_at = Some(Instant::now() + self.backoff);
                self.retry_reason = reason;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
            }
        }
    }

    /// Reads the live table and re-commits if it is not the desired one.
    fn check(&mut self, reason: Reason) {
        match self.sock.read_table(TABLE_NAME) {
            Ok(Some(live)) if live.same_policy(&self.desired) => {}
            Ok(live) => {
                let what = if live.is_none() {
                    "missing"
                } else {
                    "different"
                };
                if self.in_force.is_some() {
                    self.shared.metrics.repaired_by_check();
                }
                self.commit(reason, &format!("full check: live table {what}"));
            }
            Err(e) => tracing::warn!("reading table inet {TABLE_NAME} back failed: {e}"),
        }
    }

    fn on_events(&mut self, drained: Drained) {
        if drained.lost {
            self.shared.metrics.events_lost();
        }
        let repair = match self.drift.observe(drained) {
            Verdict::Nothing => None,
            Verdict::Repair(what) => Some(what),
            Verdict::Check(why) => {
                tracing::warn!("{why}; doing a full check of table inet {TABLE_NAME}");
                self.check(Reason::Resync);
                None
            }
        };
        if let Some(what) = repair {
            self.shared
                .set_ready(false, &format!("table changed: {what}"));
            let now = Instant::now();
            while self
                .repairs
                .front()
                .is_some_and(|t| now - *t > REPAIR_WINDOW)
            {
                self.repairs.pop_front();
            }
            if self.repairs.len() >= MAX_REPAIRS {
                // Someone keeps changing the table (another agent?): do not spin with it.
                tracing::warn!(
                    "table inet {TABLE_NAME} changed again ({what}); {} repairs in {:?}, \
                     waiting a second before the next (is another agent or tool managing it?)",
                    self.repairs.len(),
                    REPAIR_WINDOW
                );
                if self.retry_at.is_none() {
                    self.retry_at = Some(now + Duration::from_secs(1));
                    self.retry_reason = Reason::Drift;
                }
                return;
            }
            self.repairs.push_back(now);
            tracing::warn!("table inet {TABLE_NAME} changed under us: {what}; repairing");
            self.commit(Reason::Drift, &what);
        }
    }
}
