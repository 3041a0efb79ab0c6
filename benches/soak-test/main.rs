//! Soak test (issue 10): the agent under everything at once, for minutes, with a verdict.
//!
//! In three network namespaces of its own (`nma-soak-<pid>-pod|node|remote`, the test kit's
//! topology: pod → node → remote; deleted at the end, on a panic too, and swept by the next
//! run when a run was killed), the release agent runs in the node namespace with a
//! large table (50,000 prefixes by default, ip-masq-agent's config format) and
//! `--table-owner off`, so that anyone can tamper with it. For the whole run, concurrently:
//!
//! - **config churn**: ConfigMap-style `..data` swaps between configs that differ only in
//!   prefixes far from the probe destinations, so the right translation never changes;
//! - **tamper storm**: `nft flush ruleset`, `nft delete table`, `nft delete rule` (the
//!   exemption or the masquerade, by the handle `nft -a list` shows just before: the agent's
//!   in-place and difference commits give its rules new handles), `nft insert rule` (an
//!   `accept` or a `masquerade` ahead of ours), each a separate `nft` process in the node
//!   namespace: bursts of one every 150 ms, faster than the commit budget allows, then single
//!   changes 10 s apart;
//! - **HTTP flood** on the agent's endpoint: request heads sent a line every 300 ms and
//!   never finished, heads larger than the endpoint accepts, connections that send nothing;
//!   meanwhile a prober asks `/healthz` every 250 ms, as a kubelet would;
//! - **probes**: the pod sends a UDP datagram every 20 ms to each of two remote
//!   destinations, one to be masqueraded and one not, each from a source port not used for
//!   the last 1000 s (a new conntrack flow, so each one sees the ruleset of its moment); the
//!   remote records the source address it arrived with.
//!
//! An observer in the node namespace subscribes to nf_tables notifications and timestamps
//! every transaction end (NEWGEN) with the committing process and whether it touched our
//! table: the agent's commits, and the tamperers' (each `nft` process is known by its pid).
//! A tamper action *took effect* when a transaction of its process touched the table; that is
//! what the verdicts count, never the tamperer's own exit status.
//!
//! Phases: *main* (the large table; cycles of a 10 s storm and 20 s of calm with one config
//! swap and one tamper action per 10 s), *budget* (a 1,000-prefix table, which the agent
//! could commit far faster than its budget allows, under a storm throughout: at 50,000
//! prefixes a commit takes long enough that the budget is hardly reached, so this is where
//! the budget check has teeth), *owner* (the agent restarted with `--table-owner on`, storm
//! and churn going on).
//!
//! What a passing run proves (any failure: a message saying which, and exit status 1; the
//! report has one verdict per concern, each with its figures):
//!
//! 1. **Translation.** Every probe that arrived with the wrong source address was in flight
//!    during a tamper window: sent before the first agent commit that followed the
//!    tamperer's transaction was seen, and arrived after the tamperer was started. No slack
//!    is needed: the translation happens between send and arrival, the tamperer's commit
//!    after its start, and the repair before its notification is read. So no probe sees a
//!    wrong translation beyond the kernel's own wait (inside the window: the repair cannot
//!    commit until the tamperer's socket is closed) and the agent's reaction; config swaps and
//!    the restart with another owner mode never cause one. One kind is reported on its own
//!    (and still fails the run, unless `--accept-new-set-gap` is given): a kernel whose
//!    interval sets are searched through an array built at the end of the transaction (6.18
//!    here) finds nothing in a set created by the transaction until then, so a whole-table
//!    replace of a large table masqueraded every destination until it finished. The agent
//!    updates its table in place to avoid it (docs/design.md, "In-place form"), and where it
//!    must create the sets (the table was missing after a flush, or is recreated for another
//!    owner flag at the restart) fills them a transaction before the rules that use them
//!    ("Creation form"). Probes to the exempt destination masqueraded during an agent commit
//!    (from its start, its logged duration before its notification; a commit of several
//!    transactions ends with its last) count as that, on two rows: commits that create the
//!    sets, and in-place or difference commits. Either fails the run when not 0.
//! 2. **Faults.** Every kind of tamper action took effect (a transaction of its process
//!    touched the table) at least once outside the owner phase; the report gives, per kind,
//!    the actions attempted and those that took effect, and why the others did not (table or
//!    rule absent when looked up, refused by the kernel, a transaction that left the table
//!    alone).
//! 3. **Repairs.** Every break is repaired (an agent commit follows it) within 10 s, and in
//!    the calm part of a cycle within 5 s, where the next config swap is 7 s away: an agent
//!    that does not repair (leaving it to config swaps and resyncs) fails here.
//! 4. **Budget.** No 10 s window holds the start of more agent commits than the budget
//!    allows (`BUDGET_COMMITS`, plus one per `BUDGET_SLOW_PERIOD` over the window, plus one
//!    for the work a wake-up does before its commit; a start is the notification's time less
//!    the duration the agent logged for that commit); every commit counts, config changes
//!    included, because the agent spends one budget for every commit. In the budget phase the
//!    budget must have been reached (else the check proved nothing), and once `BUDGET_COMMITS`
//!    commits were made in a window, the next ones are at least 0.7 s apart.
//! 5. **Memory.** After a warm-up (the first 20 % of the main phase, at least one storm and
//!    its calm) resident memory does
//!    not grow (glibc's mmap threshold pinned, see `spawn_agent`): its peak (VmHWM) rises by at
//!    most 4 MiB, and the lows of the last third of the samples do not exceed those of the
//!    first third by more (the highs are reported: a single high is a transient below VmHWM).
//! 6. **Descriptors.** The descriptors other than TCP connections do not change (±1), the TCP
//!    ones never exceed the endpoint's connection bound plus the listener, the threads do not
//!    change.
//! 7. **Endpoint.** Every `/healthz` is answered within 1 s; none fails three times in a row
//!    (a kubelet's failureThreshold) nor more than 1 % of the time; slow heads and silent
//!    connections are closed after the header timeout (+2 s); oversized heads are refused.
//! 8. **Owner on.** No transaction by anyone else touches the table.
//! 9. **Measurement.** At most 0.1 % of the probes are lost, the observer lost no
//!    notification, every agent commit it saw is in the agent's log, the agent did not exit.
//!
//! The HTTP flood holds fewer connections than the endpoint serves at once (16): with more
//! clients that keep their heads unfinished, `/healthz` waits in the accept queue for
//! seconds (`--flood 48` shows it); see docs/design.md, "Soak test".
//!
//! `benches/soak [--minutes N | --seconds N] [--prefixes N] [--flood N]
//! [--accept-new-set-gap]` (5 minutes by default, 90 s at least), or
//! `cargo bench --bench soak -- ...`; as root. On a failure the agents' logs are kept, and
//! with the failure (or `NMA_SOAK_TIMELINE=1`, which keeps the logs too) a timeline of every
//! event of the run.
//! `NMA_AGENT_BIN` runs another build of the agent (to see a broken one fail);
//! `NMA_SOAK_RUST_LOG` sets the agents' `RUST_LOG`.
//!
//! The program: `load.rs` (churn, tamper storm, HTTP flood), `observe.rs` (notifications,
//! probes, the health prober, samples of the agent), `facts.rs` (what the records mean: which
//! tamper action changed the table, breaks and repairs, commits, probes), `verdict.rs` (one
//! verdict per concern), `report.rs` (the printed report, the results file, the timeline).

mod facts;
mod load;
mod observe;
mod report;
#[path = "../support/mod.rs"]
mod support;
mod verdict;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use nft_masq_agent::report::http::MAX_CONNECTIONS;
use nma_testkit::log::{Commit, parse_log};
use nma_testkit::{Agent, AgentBuilder, ConfigMap, NODE4, Netns, POD4, Topology, agent_bin, run};

use load::{FloodStats, Tamper};
use observe::{Arrived, Gen, HealthCheck, Sample, Sent};

/// The pod's address: what un-masqueraded probes arrive from.
const POD: Ipv4Addr = POD4;
/// The node's address towards the remote: what masqueraded probes arrive from.
const NODE: Ipv4Addr = NODE4;
/// Destinations hosted by the remote: "the internet" (outside every config's prefixes,
/// masqueraded) and an address inside 10.0.0.0/8, which every config exempts.
const DESTS: [(Ipv4Addr, &str); 2] = [
    (Ipv4Addr::new(11, 22, 33, 44), "masqueraded"),
    (Ipv4Addr::new(10, 20, 0, 5), "not masqueraded"),
];
/// What each destination must see.
const EXPECTED: [Ipv4Addr; 2] = [NODE, POD];
/// The agent's endpoint, on the node's address, asked from the remote namespace. Not on
/// the node's loopback: connections made inside the node namespace pass its postrouting
/// NAT hook, where the tamperer's `masquerade` (ahead of `fib daddr type local return`)
/// translates them and a deleted table then leaves them stranded for seconds (the NAT
/// hooks go with the last NAT chain); that would measure the tamperer, not the endpoint.
/// A connection that starts in another namespace is never translated on its way in.
const ENDPOINT: &str = "198.51.100.1:9983";
const ENDPOINT_PORT: u16 = 9983;
/// Namespaces are `nma-soak-<pid>-<role>`, the scratch directory `/tmp/nma-soak-<pid>`.
const PREFIX: &str = "nma-soak";
/// The table size of the budget phase.
const SMALL_TABLE: usize = 1_000;
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Where the run is; every worker reads it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Phase {
    Main = 0,
    Budget = 1,
    /// The agent is being replaced: no load but the probes and the flood.
    Switch = 2,
    Owner = 3,
    Stop = 4,
}

impl Phase {
    fn from(v: u8) -> Phase {
        match v {
            0 => Phase::Main,
            1 => Phase::Budget,
            2 => Phase::Switch,
            3 => Phase::Owner,
            _ => Phase::Stop,
        }
    }
}

/// The command line.
struct Opts {
    total: Duration,
    /// Tolerate exempt probes masqueraded during the agent's own commits (for measuring
    /// older builds or other agents; reported either way).
    accept_new_set_gap: bool,
    prefixes: usize,
    flood: usize,
}

fn opts() -> Result<Opts, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let known = ["--minutes", "--seconds", "--prefixes", "--flood"];
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if known.contains(&a.as_str()) {
            i += 2;
        } else if a == "--bench" || a == "--accept-new-set-gap" {
            // cargo bench passes --bench to every benchmark program.
            i += 1;
        } else {
            return Err(format!(
                "unknown argument {a:?}; usage: soak [--minutes N | --seconds N] [--prefixes N] [--flood N] [--accept-new-set-gap]"
            ));
        }
    }
    let num = |name: &str| -> Result<Option<f64>, String> {
        support::arg(name)
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| format!("{name}: not a number: {v:?}"))
            })
            .transpose()
    };
    let secs = match (num("--minutes")?, num("--seconds")?) {
        (Some(_), Some(_)) => return Err("give --minutes or --seconds, not both".into()),
        (Some(m), None) => m * 60.0,
        (None, Some(s)) => s,
        (None, None) => 300.0,
    };
    if secs.is_nan() || secs < 90.0 {
        return Err("the soak needs at least 90 seconds (--seconds 90)".into());
    }
    let prefixes = num("--prefixes")?.unwrap_or(50_000.0) as usize;
    if prefixes < SMALL_TABLE {
        return Err(format!("--prefixes: at least {SMALL_TABLE}"));
    }
    let flood = num("--flood")?.unwrap_or((MAX_CONNECTIONS - 4) as f64) as usize;
    Ok(Opts {
        total: Duration::from_secs_f64(secs),
        accept_new_set_gap: support::flag("--accept-new-set-gap"),
        prefixes,
        flood,
    })
}

/// How long each phase lasts: the owner and budget phases are short, the rest is the main one.
struct Lengths {
    main: Duration,
    budget: Duration,
    owner: Duration,
}

impl Lengths {
    fn of(total: Duration) -> Lengths {
        let owner = (total / 10).clamp(Duration::from_secs(10), Duration::from_secs(60));
        let budget = (total / 6).clamp(Duration::from_secs(30), Duration::from_secs(60));
        Lengths {
            main: total.saturating_sub(owner + budget),
            budget,
            owner,
        }
    }
}

/// Everything the worker threads share.
struct Ctx {
    topo: Topology,
    cm: Mutex<ConfigMap>,
    prefixes: usize,
    phase: AtomicU8,
    main_start: OnceLock<Instant>,
    stop: AtomicBool,
    stop_probes: AtomicBool,
    stop_rx: AtomicBool,
    /// The observer has joined the notification group.
    subscribed: AtomicBool,
    /// The remote listens for probes.
    rx_ready: AtomicBool,
    gens: Mutex<Vec<Gen>>,
    lost_notifications: AtomicU64,
    tampers: Mutex<Vec<Tamper>>,
    swaps: Mutex<Vec<(Instant, Phase)>>,
    flood: [FloodStats; 3],
    /// The running agent, for the prober's snapshot when /healthz is slow.
    agent_pid: AtomicU32,
    /// What the endpoint looked like when /healthz was slow (for the timeline).
    diag: Mutex<Vec<(Instant, String)>>,
}

impl Ctx {
    fn phase(&self) -> Phase {
        Phase::from(self.phase.load(Ordering::SeqCst))
    }
    fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::SeqCst);
    }
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    fn node(&self) -> &Netns {
        &self.topo.node
    }
}

/// Stops every worker thread when dropped.
struct StopOnDrop<'a>(&'a Ctx);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        for flag in [&self.0.stop, &self.0.stop_probes, &self.0.stop_rx] {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

/// The agent restarted with `--table-owner on`.
#[derive(Clone, Copy)]
struct Owner {
    pid: u32,
    /// Index (in [`Run::gens`]) of its first commit, if it made one.
    first: Option<usize>,
    /// How long its phase ran.
    len: Duration,
}

/// Everything a run recorded, once every worker has stopped: what the verdicts judge.
struct Run {
    agent_pid: u32,
    agent_died: Option<String>,
    owner: Option<Owner>,
    main_start: Instant,
    /// The wall clock at `main_start`, to line the timeline up with the agent's log.
    main_wall: SystemTime,
    budget_start: Instant,
    switch_at: Instant,
    /// When the workers were stopped: the end of a window that never closed.
    end: Instant,
    gens: Vec<Gen>,
    lost_notifications: u64,
    tampers: Vec<Tamper>,
    swaps: Vec<(Instant, Phase)>,
    sent: Vec<Sent>,
    arrived: Vec<Arrived>,
    health: Vec<HealthCheck>,
    samples: Vec<Sample>,
    flood: [load::FloodCounts; 3],
    diag: Vec<(Instant, String)>,
    /// The commits each agent logged (the first agent's, the owner-on agent's), in order.
    logged: [Vec<Commit>; 2],
}

fn main() -> ExitCode {
    let o = match opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("soak: needs root (network namespaces); run benches/soak");
        return ExitCode::from(2);
    }
    let lens = Lengths::of(o.total);
    let dests: Vec<String> = DESTS.iter().map(|(d, _)| d.to_string()).collect();
    let topo = Topology::builder("")
        .prefix(PREFIX)
        .ipv6(false)
        .dests4(&dests.iter().map(String::as_str).collect::<Vec<_>>())
        .build();
    keep_conntrack_on(&topo.node);
    let cm = ConfigMap::new(topo.dir.join("config"), &load::config_text(o.prefixes, 0));
    let ctx = Ctx {
        topo,
        cm: Mutex::new(cm),
        prefixes: o.prefixes,
        phase: AtomicU8::new(Phase::Main as u8),
        main_start: OnceLock::new(),
        stop: AtomicBool::new(false),
        stop_probes: AtomicBool::new(false),
        stop_rx: AtomicBool::new(false),
        subscribed: AtomicBool::new(false),
        rx_ready: AtomicBool::new(false),
        gens: Mutex::new(Vec::new()),
        lost_notifications: AtomicU64::new(0),
        tampers: Mutex::new(Vec::new()),
        swaps: Mutex::new(Vec::new()),
        flood: Default::default(),
        agent_pid: AtomicU32::new(0),
        diag: Mutex::new(Vec::new()),
    };
    // One log per agent, outside the scratch directory: kept when the run fails.
    let log =
        |n: u32| std::env::temp_dir().join(format!("{PREFIX}-{}.agent{n}.log", std::process::id()));
    let logs = [log(1), log(2)];
    for l in &logs {
        let _ = std::fs::remove_file(l);
    }
    eprintln!(
        "soak: {:.0} s main phase ({} prefixes), {:.0} s budget phase, {:.0} s owner phase; {} flood connections",
        lens.main.as_secs_f64(),
        o.prefixes,
        lens.budget.as_secs_f64(),
        lens.owner.as_secs_f64(),
        o.flood
    );
    let run = std::thread::scope(|s| drive(s, &ctx, &o, &lens, &logs));
    let (report, failures) = match run {
        Ok(run) => {
            let j = verdict::judge(&run, &o);
            let failures: Vec<String> =
                j.verdicts.iter().flat_map(|v| v.failures.clone()).collect();
            if !failures.is_empty() || std::env::var_os("NMA_SOAK_TIMELINE").is_some() {
                let path =
                    std::env::temp_dir().join(format!("{PREFIX}-{}.timeline", std::process::id()));
                report::write_timeline(&run, &j, &path);
                eprintln!("soak: the timeline of the run is {}", path.display());
            }
            report::record(&o, &j);
            (report::render(&run, &o, &j), failures)
        }
        Err(e) => (String::new(), vec![e]),
    };
    report::conclude(&report, &failures, &logs)
}

/// Runs the phases with every worker going; what was recorded, or why the run could not be
/// made (the agent never committed).
fn drive<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    ctx: &'s Ctx,
    o: &'s Opts,
    lens: &Lengths,
    logs: &[PathBuf; 2],
) -> Result<Run, String> {
    // Whatever ends this scope (a panic included) stops the workers first, so the scope
    // can join them and the namespaces are deleted.
    let _stop = StopOnDrop(ctx);
    let observer = s.spawn(|| observe::notifications(ctx));
    let receiver = s.spawn(|| observe::receive_probes(ctx));
    let mut agent = first_agent(ctx, &logs[0])?;
    let agent_pid = agent.pid();
    let sender = s.spawn(|| observe::send_probes(ctx));
    let prober = s.spawn(|| observe::health_prober(ctx));
    // Neighbour resolution on the way out must not count as loss or lateness.
    std::thread::sleep(Duration::from_secs(1));
    let floods: Vec<_> = (0..o.flood)
        .map(|i| s.spawn(move || load::flood(ctx, i % 3)))
        .collect();
    let main_start = Instant::now();
    let main_wall = SystemTime::now();
    ctx.main_start
        .set(main_start)
        .expect("main phase starts once");
    let conductor = s.spawn(|| load::conduct(ctx));

    let budget_start = main_start + lens.main;
    let switch_at = budget_start + lens.budget;
    let (samples, agent_died) = sample_until(ctx, &mut agent, budget_start, switch_at);
    let mut owner = None;
    let mut owner_agent = None;
    if agent_died.is_none() {
        let (a2, o2) = switch_owner(ctx, agent, &logs[1], lens.owner);
        owner = Some(o2);
        owner_agent = Some(a2);
    }
    ctx.set_phase(Phase::Stop);
    ctx.stop_probes.store(true, Ordering::SeqCst);
    // No more swaps or tampers from here (the conductor idles in `Stop`). The agent's last
    // commit (for a swap made just before) must land while the observer still listens, or
    // its log holds a commit the observer never saw: wait for a second without one.
    settle(ctx, owner.as_ref().map_or(agent_pid, |o| o.pid));
    ctx.stop.store(true, Ordering::SeqCst);
    // The last probe is out before the agent goes.
    let sent = sender.join().expect("sender");
    drop(owner_agent);
    // Late datagrams: give them a second.
    std::thread::sleep(Duration::from_secs(1));
    ctx.stop_rx.store(true, Ordering::SeqCst);
    let arrived = receiver.join().expect("receiver");
    let health = prober.join().expect("prober");
    conductor.join().expect("conductor");
    for f in floods {
        f.join().expect("flood");
    }
    observer.join().expect("observer");
    let end = Instant::now();
    Ok(Run {
        agent_pid,
        agent_died,
        owner,
        main_start,
        main_wall,
        budget_start,
        switch_at,
        end,
        gens: std::mem::take(&mut *ctx.gens.lock().unwrap()),
        lost_notifications: ctx.lost_notifications.load(Ordering::SeqCst),
        tampers: std::mem::take(&mut *ctx.tampers.lock().unwrap()),
        swaps: std::mem::take(&mut *ctx.swaps.lock().unwrap()),
        sent,
        arrived,
        health,
        samples,
        flood: ctx.flood.each_ref().map(FloodStats::counts),
        diag: std::mem::take(&mut *ctx.diag.lock().unwrap()),
        logged: [logged_commits(&logs[0]), logged_commits(&logs[1])],
    })
}

/// Waits until the agent `pid` has committed nothing for a second (at most 10 s).
fn settle(ctx: &Ctx, pid: u32) {
    const QUIET: Duration = Duration::from_secs(1);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let last = ctx
            .gens
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|g| g.pid == Some(pid))
            .map(|g| g.at);
        let since = last.map_or(start.elapsed(), |at| at.elapsed());
        if since >= QUIET && start.elapsed() >= QUIET {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The agent with `--table-owner off`, once the observer and the probes' receiver are
/// ready, after its start-up commit; why not, if it made none.
fn first_agent(ctx: &Ctx, log: &Path) -> Result<Agent, String> {
    while !(ctx.subscribed.load(Ordering::SeqCst) && ctx.rx_ready.load(Ordering::SeqCst)) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut agent = spawn_agent(ctx, "off", log);
    ctx.agent_pid.store(agent.pid(), Ordering::SeqCst);
    let end = Instant::now() + Duration::from_secs(120);
    let no_commit = || {
        format!(
            "the agent made no start-up commit (exited, or not within 120 s): see {}",
            log.display()
        )
    };
    if wait_commit(ctx, &mut agent, 0, Duration::from_secs(120)).is_none() {
        return Err(no_commit());
    }
    // The first transaction may be the sets alone (a table created from nothing fills its
    // sets before the rules that look into them come): the probes start once the agent has
    // logged its commit, which it does when every step has landed.
    while logged_commits(log).is_empty() {
        if !agent.running() || Instant::now() >= end {
            return Err(no_commit());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(agent)
}

/// The main and budget phases: a sample of the agent every second until `switch_at`; the
/// samples, and how the agent ended if it exited.
fn sample_until(
    ctx: &Ctx,
    agent: &mut Agent,
    budget_start: Instant,
    switch_at: Instant,
) -> (Vec<Sample>, Option<String>) {
    let mut samples = Vec::new();
    let mut next = Instant::now();
    while Instant::now() < switch_at {
        if Instant::now() >= budget_start && ctx.phase() == Phase::Main {
            ctx.set_phase(Phase::Budget);
        }
        samples.push(observe::sample(agent.pid(), ctx.phase()));
        if !agent.running() {
            return (samples, Some(agent.wait().to_string()));
        }
        next += SAMPLE_EVERY;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    (samples, None)
}

/// The owner phase: no tampering while the agent is replaced, and the last break repaired
/// first (a restart is not a repair); then the agent with `--table-owner on`, under the
/// storm and the churn for `len`.
fn switch_owner(ctx: &Ctx, agent: Agent, log: &Path, len: Duration) -> (Agent, Owner) {
    ctx.set_phase(Phase::Switch);
    let first_pid = agent.pid();
    let settle_end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < settle_end {
        let gens = ctx.gens.lock().unwrap();
        let last_foreign = gens
            .iter()
            .rposition(|g| g.ours && g.pid.is_some_and(|p| p != first_pid));
        let last_agent = gens
            .iter()
            .rposition(|g| g.ours && g.pid == Some(first_pid));
        drop(gens);
        if last_foreign.is_none_or(|f| last_agent.is_some_and(|a| a > f)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.stop();
    let from = ctx.gens.lock().unwrap().len();
    let mut a2 = spawn_agent(ctx, "on", log);
    ctx.agent_pid.store(a2.pid(), Ordering::SeqCst);
    let first = wait_commit(ctx, &mut a2, from, Duration::from_secs(60));
    ctx.set_phase(Phase::Owner);
    std::thread::sleep(len);
    let owner = Owner {
        pid: a2.pid(),
        first,
        len,
    };
    (a2, owner)
}

/// The agent in the node namespace, with the soak's endpoint and `--table-owner owner`.
fn spawn_agent(ctx: &Ctx, owner: &str, log: &Path) -> Agent {
    let config = ctx.cm.lock().unwrap().path();
    AgentBuilder::new(agent_bin(), Some(log.to_path_buf()))
        .netns(ctx.node())
        .append_log()
        .env(
            "RUST_LOG",
            std::env::var("NMA_SOAK_RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        // glibc raises its mmap threshold to the largest block freed so far, so after the
        // first multi-MiB batch is freed, later ones come from the heap and stay there: RSS
        // creeps for minutes (21 → 26 MiB in 4 minutes here) without a leak, which would
        // hide one. Pinned, big blocks go back at once, as with musl (the shipped static
        // binary's allocator), and RSS shows what is live.
        .env(
            "MALLOC_MMAP_THRESHOLD_",
            std::env::var("MALLOC_MMAP_THRESHOLD_").unwrap_or_else(|_| "131072".into()),
        )
        .config(&config)
        .args(["--table-owner", owner, "--metrics-address", ENDPOINT])
        .spawn()
}

/// Waits for the first commit by `agent` after the notification at index `from`; `None`
/// if the agent exits or the time runs out first.
fn wait_commit(ctx: &Ctx, agent: &mut Agent, from: usize, timeout: Duration) -> Option<usize> {
    let pid = agent.pid();
    let end = Instant::now() + timeout;
    while Instant::now() < end && agent.running() {
        if let Some(i) = ctx.gens.lock().unwrap()[from..]
            .iter()
            .position(|g| g.pid == Some(pid) && g.ours)
        {
            return Some(from + i);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// On a node, kube-proxy's and the node's own rules keep connection tracking on whatever
/// happens to our table. Here our table would be the namespace's only conntrack user: each
/// `flush ruleset` would switch tracking off, and connections begun meanwhile (the prober's)
/// would be picked up mid-stream once the table is back, as new flows, and masqueraded. An
/// iptables-legacy rule (out of reach of `nft flush ruleset`) that accepts what the policy
/// accepts anyway keeps it on.
fn keep_conntrack_on(node: &Netns) {
    run(node
        .cmd("iptables-legacy")
        .args(["-w", "-A", "INPUT", "-m", "conntrack"])
        .args(["--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]));
}

/// The commits an agent logged, in order.
fn logged_commits(log: &Path) -> Vec<Commit> {
    parse_log(&std::fs::read_to_string(log).unwrap_or_default())
        .iter()
        .filter_map(|l| l.commit())
        .collect()
}

/// A duration in whole milliseconds, for the report.
fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// The `p` quantile of `v` (sorted in place); zero for an empty sample.
fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}
