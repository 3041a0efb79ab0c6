//! The daemon: keeps the policy in force until stopped.
//!
//! - [`agent`]: the reconciler, what to do when something happens (sync, generic over the
//!   kernel and the config source, unit-tested without root in `tests.rs`);
//! - [`seam`]: what the agent and the worker ask of the kernel, as traits ([`Kernel`],
//!   [`WorkerKernel`]), with their netlink implementations;
//! - [`drift`]: what nftables notifications mean for our table (pure);
//! - [`reconcile`]: its pure rules (commit budget, backoff, readiness);
//! - [`takeover`]: `--take-over-iptables-chain` after the first commit of a valid config;
//! - [`worker`]: the background worker, which runs what others decide the size of (the
//!   conflict analysis of their NAT tables, the conntrack reconciliation) apart from the
//!   loop, with sockets of its own;
//! - [`findings`]: what the agent keeps of the analyses and how it reports them;
//! - [`event_loop`]: the wake-ups (signals, config watch, nftables notifications, timers,
//!   pings, the worker's outcomes) turned into calls on the agent;
//! - [`watch`]: the config directories' inotify watch, turned into hints;
//! - [`reader`]: the thread that reads the config after start, apart from the loop;
//! - this module: wiring the real sockets, watch and HTTP endpoint together.

pub mod agent;
pub mod drift;
pub mod error;
pub mod event_loop;
pub mod findings;
pub mod next;
pub mod reader;
pub mod reconcile;
pub mod seam;
pub mod state;
pub mod takeover;
pub mod watch;
pub mod worker;

pub use seam::{Holder, Kernel, Netlink, WorkerKernel, WorkerNetlink};

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::{ConfigSource, PolicyFlags};
use crate::daemon::watch::ConfigWatch;
use crate::kernel::conntrack::Protocols;
use crate::kernel::nft::NftSocket;
use crate::kernel::nft::compat::OwnerMode;
use crate::kernel::nft::events::EventSocket;
use crate::kernel::nft::socket::Progress;
use crate::report::counters::MasqCounters;
use crate::report::health::Health;
use crate::report::http::{self, Endpoints};
use crate::report::metrics::Metrics;
use agent::{Agent, Outputs};
pub use error::RunError;
use error::setup;

/// Daemon settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The config files or directories, merged in order.
    pub config: Vec<PathBuf>,
    /// Policy flags.
    pub flags: PolicyFlags,
    /// Table ownership.
    pub owner: OwnerMode,
    /// Which conntrack entries a change of decision deletes; `None`: none.
    pub conntrack: Option<Protocols>,
    /// Where to serve /healthz, /readyz and /metrics; `None` to not serve.
    pub listen: Option<SocketAddr>,
    /// Quiet time after a config event before reading the file.
    pub debounce: Duration,
    /// ip-masq-agent's iptables chain to take over after the first commit
    /// (`--take-over-iptables-chain`); `None`: leave iptables alone.
    pub take_over_chain: Option<String>,
    /// The most set elements of other NAT tables read per conflict analysis
    /// (`--max-foreign-elements`).
    pub max_foreign_elements: usize,
    /// `config` was given on the command line, not the default: none of it existing is
    /// reported (the `missing` policy source).
    pub explicit_config: bool,
}

/// Runs the daemon until SIGTERM or SIGINT. The table stays in force on exit.
pub fn run(opts: Options) -> Result<(), RunError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(setup("cannot start the async runtime"))?;
    rt.block_on(run_async(opts))
}

async fn run_async(opts: Options) -> Result<(), RunError> {
    let (health, pings) = Health::new();
    let out = Outputs {
        health: Arc::new(health),
        metrics: Arc::new(Metrics::new()),
        counters: Arc::new(MasqCounters::default()),
    };
    if let Some(addr) = opts.listen {
        let ep = Endpoints {
            health: out.health.clone(),
            metrics: out.metrics.clone(),
            counters: out.counters.clone(),
        };
        http::spawn(addr, ep).map_err(setup(format!("cannot listen on {addr}")))?;
        tracing::info!("serving /healthz, /readyz and /metrics on http://{addr}");
    }

    let mut sock = NftSocket::open().map_err(RunError::Netlink)?;
    let health = out.health.clone();
    sock.on_progress(Progress(Arc::new(move || health.progress())));
    let events = EventSocket::open().map_err(RunError::Netlink)?;
    let kernel = Netlink::new(sock, events.membership());
    let events = events
        .into_async()
        .map_err(setup("registering the event socket"))?;
    let hint = Arc::new(Notify::new());
    let watch = ConfigWatch::new(&opts.config, hint.clone())?;
    let source = ConfigSource::with_paths(opts.config.clone(), opts.flags.clone());
    // The reader thread's own source reads again what start read once: its first read
    // after start parses even unchanged bytes, and finds the same table.
    let (read, reads) = tokio::sync::mpsc::unbounded_channel();
    let reader = reader::Reader::spawn(source.clone(), read)
        .map_err(setup("cannot start the config reader thread"))?;
    // The worker gets sockets of its own and a thread nobody joins: SIGTERM ends the
    // process whatever the worker is waiting for.
    let (jobs, worker) = worker::new(
        WorkerNetlink::new(),
        Instant::now,
        opts.max_foreign_elements,
    );
    let (done, results) = tokio::sync::mpsc::unbounded_channel();
    worker
        .spawn(done)
        .map_err(setup("cannot start the background worker thread"))?;
    let agent = Agent::new(
        kernel,
        source,
        opts.flags,
        opts.owner,
        out,
        jobs,
        Instant::now(),
    )
    .with_conntrack(opts.conntrack)
    .with_takeover(opts.take_over_chain)
    .with_explicit_config(opts.explicit_config)
    .with_reader(reader);
    event_loop::run(
        agent,
        event_loop::Wakers {
            events,
            watch,
            hint,
            pings,
            results,
            reads,
            debounce: opts.debounce,
        },
    )
    .await
}
