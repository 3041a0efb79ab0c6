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
//!   exemption or the masquerade), `nft insert rule` (an `accept` or a `masquerade` ahead of
//!   ours), each a separate `nft` process in the node namespace: bursts of one every
//!   150 ms, faster than the commit budget allows, then single changes 10 s apart;
//! - **HTTP flood** on the agent's endpoint: request heads sent a line every 300 ms and
//!   never finished, heads larger than the endpoint accepts, connections that send nothing;
//!   meanwhile a prober asks `/healthz` every 250 ms, as a kubelet would;
//! - **probes**: the pod sends a UDP datagram every 20 ms to each of two remote
//!   destinations, one to be masqueraded and one not, each from a source port not used for
//!   the last 1000 s (a new conntrack flow, so each one sees the ruleset of its moment); the
//!   remote records the source address it arrived with.
//!
//! An observer in the node namespace subscribes to nf_tables notifications and timestamps
//! every transaction end (NEWGEN) with the committing process: the agent's commits, and the
//! tamperers' (each `nft` process is known by its pid).
//!
//! Phases: *main* (the large table; cycles of a 10 s storm and 20 s of calm with one config
//! swap and one tamper action per 10 s), *budget* (a 1,000-prefix table, which the agent
//! could commit far faster than its budget allows, under a storm throughout: at 50,000
//! prefixes a commit takes long enough that the budget is hardly reached, so this is where
//! the budget check has teeth), *owner* (the agent restarted with `--table-owner on`, storm
//! and churn going on).
//!
//! What a passing run proves (any failure: a message saying which, and exit status 1):
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
//!    updates its table in place to avoid it (docs/design.md, "In-place form"). Only probes
//!    to the exempt destination that were masqueraded during an agent commit (from its start,
//!    its logged duration before its notification) count as that, and only during in-place
//!    and difference commits: a commit that has to create the sets (the table was missing
//!    after a flush, or is recreated for another owner flag at the restart) cannot avoid the
//!    gap, and its probes are reported on their own row without failing the run.
//! 2. **Repairs.** Every break is repaired (an agent commit follows it) within 10 s, and in
//!    the calm part of a cycle within 5 s, where the next config swap is 7 s away: an agent
//!    that does not repair (leaving it to config swaps and resyncs) fails here.
//! 3. **Budget.** No 10 s window holds the start of more agent commits than the budget
//!    allows (`BUDGET_COMMITS`, plus one per `BUDGET_SLOW_PERIOD` over the window, plus one
//!    for the work a wake-up does before its commit; a start is the notification's time less
//!    the duration the agent logged for that commit); every commit counts, config changes
//!    included, because the agent spends one budget for every commit. In the budget phase the budget must have been
//!    reached (else the check proved nothing), and once `BUDGET_COMMITS` commits were made
//!    in a window, the next ones are at least 0.7 s apart.
//! 4. **Footprint.** After a warm-up (the first 20 % of the main phase) resident memory does
//!    not grow (glibc's mmap threshold pinned, see `Agent::spawn`): its peak (VmHWM) rises by at most 4 MiB, and neither the highs nor the lows
//!    of the last third of the samples exceed those of the first third by more. The
//!    descriptors other than TCP connections do not change (±1), the TCP ones never exceed
//!    the endpoint's connection bound plus the listener, the threads do not change.
//! 5. **Endpoint.** Every `/healthz` is answered within 1 s; none fails three times in a row
//!    (a kubelet's failureThreshold) nor more than 1 % of the time; slow heads and silent
//!    connections are closed after the header timeout (+2 s); oversized heads are refused.
//! 6. **Owner on.** No transaction by anyone else touches the table.
//! 7. **Measurement.** At most 0.1 % of the probes are lost, the observer lost no
//!    notification, and every kind of tamper action changed the table at least once.
//!
//! The HTTP flood holds fewer connections than the endpoint serves at once (16): with more
//! clients that keep their heads unfinished, `/healthz` waits in the accept queue for
//! seconds (`--flood 48` shows it); see docs/design.md, "Soak test".
//!
//! `benches/soak [--minutes N | --seconds N] [--prefixes N] [--flood N]
//! [--accept-new-set-gap]` (5 minutes by default, 90 s at least), or
//! `cargo bench --bench soak -- ...`; as root. On a failure the agents' logs are kept, and
//! with the failure (or `NMA_SOAK_TIMELINE=1`) a timeline of every event of the run.
//! `NMA_AGENT_BIN` runs another build of the agent (to see a broken one fail);
//! `NMA_SOAK_RUST_LOG` sets the agents' `RUST_LOG`.

mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nft_masq_agent::daemon::reconcile::{BUDGET_COMMITS, BUDGET_SLOW_PERIOD, BUDGET_WINDOW};
use nft_masq_agent::kernel::netlink::uapi::NFNLGRP_NFTABLES;
use nft_masq_agent::kernel::netlink::{NetlinkSocket, messages};
use nft_masq_agent::kernel::nft::events::{Event, classify};
use nft_masq_agent::model::TABLE_NAME;
use nft_masq_agent::report::http::{HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_HEADER_BYTES};
use nma_testkit::Netns;
use support::record_value;

/// The pod's address: what un-masqueraded probes arrive from.
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
/// The node's address towards the remote: what masqueraded probes arrive from.
const NODE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Destinations hosted by the remote: "the internet" (outside every config's prefixes,
/// masqueraded) and an address inside 10.0.0.0/8, which every config exempts.
const DESTS: [(Ipv4Addr, &str); 2] = [
    (Ipv4Addr::new(11, 22, 33, 44), "masqueraded"),
    (Ipv4Addr::new(10, 20, 0, 5), "not masqueraded"),
];
/// What each destination must see.
const EXPECTED: [Ipv4Addr; 2] = [NODE, POD];
const PROBE_PORT: u16 = 5000;
/// The agent's endpoint, on the node's address, asked from the remote namespace. Not on
/// the node's loopback: connections made inside the node namespace pass its postrouting
/// NAT hook, where the tamperer's `masquerade` (ahead of `fib daddr type local return`)
/// translates them and a deleted table then leaves them stranded for seconds (the NAT
/// hooks go with the last NAT chain); that would measure the tamperer, not the endpoint.
/// A connection that starts in another namespace is never translated on its way in.
const ENDPOINT: &str = "198.51.100.1:9983";
const ENDPOINT_PORT: u16 = 9983;

const PROBE_EVERY: Duration = Duration::from_millis(20);
const HEALTH_EVERY: Duration = Duration::from_millis(250);
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// A cycle of the main phase: a storm, then calm steps with one swap and one tamper each.
const STORM: Duration = Duration::from_secs(10);
const STORM_TAMPER_EVERY: Duration = Duration::from_millis(150);
const STORM_SWAP_EVERY: Duration = Duration::from_secs(1);
const CALM_STEP: Duration = Duration::from_secs(10);
const CALM_STEPS: u32 = 2;
/// Into a calm step: after the swap's commit (seconds at 50,000 prefixes on a busy machine).
const CALM_TAMPER_AT: Duration = Duration::from_secs(3);
/// A calm break must be repaired this soon after its tamperer exits. A healthy agent needs
/// one commit (about 1 s at 50,000 prefixes with a listener on 2 busy cores; 0.3 s idle)
/// plus the kernel's wait; the next config swap is 7 s away, so an agent that leaves
/// repairs to swaps misses this.
const CALM_REPAIR_LIMIT: Duration = Duration::from_secs(5);
/// Any break, in a storm too: the budget's slow pace is one commit per second, and the
/// agent may have to finish a commit and a full read-back first.
const REPAIR_LIMIT: Duration = Duration::from_secs(10);
/// Commits once the budget is spent are `BUDGET_SLOW_PERIOD` apart when admitted; seen
/// from outside, the difference of two small commits' durations can shorten that.
const PACE_TOLERANCE: Duration = Duration::from_millis(300);
const HEALTH_LIMIT: Duration = Duration::from_secs(1);
/// Resident memory after warm-up may not grow by more than this (see the footprint
/// verdict). A 50,000-prefix config is parsed (≈1 MiB of YAML), a table model built, a
/// ≈4 MiB batch encoded and the table read back, again and again; a leak of even a few
/// bytes per prefix and commit would pass this within the first minutes.
const RSS_GROWTH_LIMIT_MIB: f64 = 4.0;
const SMALL_TABLE: usize = 1_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Phase {
    Main = 0,
    Budget = 1,
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

struct Opts {
    total: Duration,
    /// Tolerate exempt probes masqueraded during the agent's own commits (a kernel
    /// behaviour, reported either way).
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
            // cargo bench passes it to every benchmark program.
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
        accept_new_set_gap: args.iter().any(|a| a == "--accept-new-set-gap"),
        prefixes,
        flood,
    })
}

/// Moves the calling thread into a namespace: sockets it opens and processes it spawns
/// belong there.
fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).expect("netns file");
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sysctl(ns: &str, key: &str, value: &str) {
    let ns = ns.to_string();
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_string();
    std::thread::spawn(move || {
        enter(&ns);
        std::fs::write(&path, value).unwrap_or_else(|e| panic!("{path}: {e}"));
    })
    .join()
    .expect("sysctl");
}

/// Pod, node and remote namespaces (deleted on drop, after killing whatever still runs in
/// them) and a scratch directory.
struct Topology {
    pod: Netns,
    node: Netns,
    remote: Netns,
    dir: PathBuf,
}

/// Namespaces are `nma-soak-<pid>-<role>`, the scratch directory `/tmp/nma-soak-<pid>`.
const PREFIX: &str = "nma-soak";

impl Topology {
    fn new() -> Topology {
        sweep_scratch();
        let t = Topology {
            pod: Netns::unique(PREFIX, "pod"),
            node: Netns::unique(PREFIX, "node"),
            remote: Netns::unique(PREFIX, "remote"),
            dir: std::env::temp_dir().join(format!("{PREFIX}-{}", std::process::id())),
        };
        let _ = std::fs::remove_dir_all(&t.dir);
        std::fs::create_dir_all(&t.dir).expect("scratch dir");
        let (pod, node, remote) = (&t.pod.name, &t.node.name, &t.remote.name);
        for ns in [pod, node, remote] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Links are created inside the namespaces: no name ever appears on the host.
        ip(&[
            "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "pod0", "netns", node,
        ]);
        ip(&[
            "-n", node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
            remote,
        ]);
        for (ns, dev) in [
            (pod, "eth0"),
            (node, "pod0"),
            (node, "eth0"),
            (remote, "eth0"),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&["-n", pod, "addr", "add", "10.244.1.2/24", "dev", "eth0"]);
        ip(&["-n", pod, "route", "add", "default", "via", "10.244.1.1"]);
        ip(&["-n", node, "addr", "add", "10.244.1.1/24", "dev", "pod0"]);
        ip(&["-n", node, "addr", "add", "198.51.100.1/24", "dev", "eth0"]);
        ip(&["-n", node, "route", "add", "default", "via", "198.51.100.2"]);
        ip(&[
            "-n",
            remote,
            "addr",
            "add",
            "198.51.100.2/24",
            "dev",
            "eth0",
        ]);
        for (d, _) in DESTS {
            ip(&["-n", remote, "addr", "add", &format!("{d}/32"), "dev", "lo"]);
        }
        sysctl(node, "net.ipv4.ip_forward", "1");
        // The remote accepts sources it has no route back to (the un-masqueraded pod).
        for key in ["all", "default", "eth0"] {
            sysctl(remote, &format!("net.ipv4.conf.{key}.rp_filter"), "0");
        }
        // On a node, kube-proxy's and the node's own rules keep connection tracking on
        // whatever happens to our table. Here our table would be the namespace's only
        // conntrack user: each `flush ruleset` would switch tracking off, and connections
        // begun meanwhile (the prober's) would be picked up mid-stream once the table is
        // back, as new flows, and masqueraded. An iptables-legacy rule (out of reach of
        // `nft flush ruleset`) that accepts what the policy accepts anyway keeps it on.
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                node,
                "iptables-legacy",
                "-w",
                "-A",
                "INPUT",
            ])
            .args([
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ])
            .output()
            .expect("run iptables-legacy (scripts/setup installs it)");
        assert!(
            out.status.success(),
            "iptables-legacy in the node namespace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let me = std::process::id().to_string();
        for ns in [&self.pod, &self.node, &self.remote] {
            if let Ok(out) = Command::new("ip")
                .args(["netns", "pids", &ns.name])
                .output()
            {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    // Only processes this run started live there; never this process.
                    if pid != me
                        && let Ok(pid) = pid.parse::<i32>()
                    {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes scratch directories of soak runs whose process is gone.
fn sweep_scratch() {
    nma_testkit::netns::sweep_stale(PREFIX);
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|p| p.strip_prefix('-'))
            .and_then(|p| p.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The config: 10.0.0.0/8 (which holds the exempt destination) and about `n` /24 prefixes
/// from 20.0.0.0 on, 512 addresses apart (so nothing merges), far from both destinations.
/// Versions differ in which sixteenth of the candidates they leave out.
fn config_text(n: usize, version: u64) -> String {
    let candidates = n + n / 15;
    let mut s = String::with_capacity(candidates * 20 + 100);
    s.push_str(&format!(
        "cidrLimit: {}\nnonMasqueradeCIDRs:\n  - 10.0.0.0/8\n",
        candidates + 10
    ));
    for i in 0..candidates as u32 {
        if u64::from(i % 16) == version % 16 {
            continue;
        }
        let a = Ipv4Addr::from(0x1400_0000u32 + i * 512);
        s.push_str(&format!("  - {a}/24\n"));
    }
    s
}

/// kubelet's ConfigMap update: a new directory, a `..data_tmp` symlink renamed over `..data`.
fn swap(dir: &Path, n: u64, text: &str) {
    let ts = format!("..2026_11_30.{n:08}");
    std::fs::create_dir(dir.join(&ts)).expect("config dir");
    std::fs::write(dir.join(&ts).join("ip-masq-agent"), text).expect("config file");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&ts, &tmp).expect("symlink");
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::fs::rename(&tmp, dir.join("..data")).expect("rename");
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
}

fn agent_bin() -> PathBuf {
    // A different build (a deliberately broken one, to see that the soak fails) can be
    // tested without rebuilding this program.
    std::env::var_os("NMA_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nft-masq-agent")))
}

/// A running agent; killed on drop.
struct Agent {
    child: Child,
}

impl Agent {
    fn spawn(node: &str, config: &Path, owner: &str, log: &Path) -> Agent {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("agent log");
        // `ip netns exec` execs the agent: the child's pid is the agent's.
        let child = Command::new("ip")
            .args(["netns", "exec", node])
            .arg(agent_bin())
            .arg("--config")
            .arg(config)
            .args(["--table-owner", owner, "--metrics-address", ENDPOINT])
            .env(
                "RUST_LOG",
                std::env::var("NMA_SOAK_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            // glibc raises its mmap threshold to the largest block freed so far, so after
            // the first multi-MiB batch is freed, later ones come from the heap and stay
            // there: RSS creeps for minutes (21 → 26 MiB in 4 minutes here) without a
            // leak, which would hide one. Pinned, big blocks go back at once, as with musl
            // (the shipped static binary's allocator), and RSS shows what is live.
            .env(
                "MALLOC_MMAP_THRESHOLD_",
                std::env::var("MALLOC_MMAP_THRESHOLD_").unwrap_or_else(|_| "131072".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        Agent { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as a rolling update does: the agent exits and leaves its table in force.
    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One transaction end seen by the observer.
#[derive(Clone, Copy, Debug)]
struct Gen {
    at: Instant,
    /// The committing process, as the kernel reports it.
    pid: Option<u32>,
    /// Whether the transaction touched our table.
    ours: bool,
}

/// One tamper action: an `nft` process in the node namespace.
#[derive(Clone, Copy, Debug)]
struct Tamper {
    kind: usize,
    phase: Phase,
    calm: bool,
    spawned: Instant,
    exited: Instant,
    pid: u32,
    ok: bool,
}

const KINDS: [&str; 6] = [
    "flush ruleset",
    "delete table",
    "delete rule: the exemption",
    "insert rule: accept",
    "delete rule: the masquerade",
    "insert rule: masquerade",
];

#[derive(Clone, Copy)]
struct Sent {
    seq: u64,
    dst: usize,
    at: Instant,
    ok: bool,
}

#[derive(Clone, Copy)]
struct Arrived {
    seq: u64,
    src: Ipv4Addr,
    at: Instant,
}

#[derive(Clone, Copy)]
struct HealthCheck {
    at: Instant,
    latency: Duration,
    /// HTTP status, 0 when there was no answer.
    status: u16,
    /// Where it failed, when it did: "connect", "send", "answer".
    failed_at: &'static str,
    phase: Phase,
}

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    phase: Phase,
    rss_kib: u64,
    /// Peak resident set so far (VmHWM).
    hwm_kib: u64,
    fds: usize,
    tcp_fds: usize,
    /// Sockets in no table at the time (see `fds`).
    racing_fds: usize,
    /// Server-side connections of the endpoint, and its accept queue.
    conns: usize,
    queued: usize,
    threads: usize,
}

/// Counters of one kind of flood connection.
#[derive(Default)]
struct FloodStats {
    connections: AtomicU64,
    connect_errors: AtomicU64,
    /// Longest time the server kept one connection open, in ms.
    held_max_ms: AtomicU64,
    status_431: AtomicU64,
    status_408: AtomicU64,
    status_other: AtomicU64,
    status_2xx: AtomicU64,
    no_reply: AtomicU64,
}

/// Everything the threads share.
struct Ctx {
    topo: Topology,
    cm: PathBuf,
    prefixes: usize,
    phase: AtomicU8,
    main_start: Mutex<Option<Instant>>,
    stop: AtomicBool,
    stop_probes: AtomicBool,
    stop_rx: AtomicBool,
    subscribed: AtomicBool,
    gens: Mutex<Vec<Gen>>,
    lost_notifications: AtomicU64,
    tampers: Mutex<Vec<Tamper>>,
    swaps: Mutex<Vec<(Instant, Phase)>>,
    handles: Mutex<(u64, u64)>,
    flood: [FloodStats; 3],
    /// The running agent, for the prober's snapshot when /healthz is slow.
    agent_pid: std::sync::atomic::AtomicU32,
    /// What the endpoint looked like when /healthz was slow (for the timeline).
    diag: Mutex<Vec<(Instant, String)>>,
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
    fn node(&self) -> &str {
        &self.topo.node.name
    }
}

/// The observer: every NEWGEN in the node namespace, with its committer and whether the
/// transaction touched our table, timestamped on receipt. Its own socket with a 64 MiB
/// buffer: a commit of the large table notifies 100,000 elements at once.
fn observe(ctx: &Ctx) {
    enter(ctx.node());
    let sock = NetlinkSocket::open_netfilter().expect("netlink socket");
    let _ = sock.grow_recv_buffer(64 << 20);
    sock.set_membership(NFNLGRP_NFTABLES, true)
        .expect("join the nftables group");
    sock.set_recv_timeout(Duration::from_millis(100))
        .expect("timeout");
    ctx.subscribed.store(true, Ordering::SeqCst);
    let mut buf = vec![0u8; 1 << 20];
    let mut touched = false;
    let mut batch = Vec::new();
    while !ctx.stopping() {
        match sock.recv(&mut buf, false) {
            Ok((n, truncated)) => {
                let at = Instant::now();
                if truncated {
                    ctx.lost_notifications.fetch_add(1, Ordering::Relaxed);
                }
                for m in messages(&buf[..n]) {
                    match m.ok().as_ref().and_then(classify) {
                        Some(Event::Object { table, .. }) => touched |= table == TABLE_NAME,
                        Some(Event::Generation { pid, .. }) => {
                            batch.push(Gen {
                                at,
                                pid,
                                ours: touched,
                            });
                            touched = false;
                        }
                        None => {}
                    }
                }
                if !batch.is_empty() {
                    ctx.gens.lock().unwrap().append(&mut batch);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                ctx.lost_notifications.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("reading notifications: {e}"),
        }
    }
}

/// A small deterministic jitter source (xorshift), so runs differ only by timing.
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// `d` ± 25 %.
    fn around(&mut self, d: Duration) -> Duration {
        let f = 0.75 + (self.next() % 1000) as f64 / 2000.0;
        d.mul_f64(f)
    }
}

/// Where in a main-phase cycle `since` falls: `None` in the storm, else the calm step's
/// number (unique over the run) and the time into it.
fn calm_step(since: Duration) -> Option<(u64, Duration)> {
    let cycle = STORM + CALM_STEP * CALM_STEPS;
    let n = since.as_nanos() / cycle.as_nanos();
    let pos = since - cycle * n as u32;
    if pos < STORM {
        return None;
    }
    let into = pos - STORM;
    let s = (into.as_nanos() / CALM_STEP.as_nanos()) as u32;
    Some((
        n as u64 * u64::from(CALM_STEPS) + u64::from(s),
        into - CALM_STEP * s,
    ))
}

/// Config churn and the tamper storm, on one schedule.
fn conduct(ctx: &Ctx) {
    let mut jitter = Jitter(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    let mut version = 1u64;
    let mut kind = 0usize;
    let mut next_tamper = Instant::now();
    let mut next_swap = Instant::now() + STORM_SWAP_EVERY;
    let mut swapped_step = None;
    let mut tampered_step = None;
    let mut do_swap = |phase: Phase| {
        let n = if phase == Phase::Main {
            ctx.prefixes
        } else {
            SMALL_TABLE
        };
        swap(&ctx.cm, version, &config_text(n, version));
        ctx.swaps.lock().unwrap().push((Instant::now(), phase));
        version += 1;
    };
    while !ctx.stopping() {
        let phase = ctx.phase();
        if matches!(phase, Phase::Switch | Phase::Stop) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let now = Instant::now();
        let main_start = ctx.main_start.lock().unwrap().expect("main phase started");
        let calm = (phase == Phase::Main)
            .then(|| calm_step(now - main_start))
            .flatten();
        match calm {
            None => {
                if now >= next_tamper {
                    tamper(ctx, kind, phase, false);
                    kind += 1;
                    next_tamper = (next_tamper + STORM_TAMPER_EVERY).max(Instant::now());
                }
                if now >= next_swap {
                    do_swap(phase);
                    next_swap = now + jitter.around(STORM_SWAP_EVERY);
                }
            }
            Some((step, into)) => {
                if swapped_step != Some(step) {
                    do_swap(phase);
                    swapped_step = Some(step);
                }
                if into >= CALM_TAMPER_AT && tampered_step != Some(step) {
                    tamper(ctx, kind, phase, true);
                    kind += 1;
                    tampered_step = Some(step);
                }
                next_tamper = now;
                next_swap = now + STORM_SWAP_EVERY;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs one tamper action as its own `nft` process in the node namespace.
fn tamper(ctx: &Ctx, kind: usize, phase: Phase, calm: bool) {
    let kind = kind % KINDS.len();
    let (exemption, masquerade) = *ctx.handles.lock().unwrap();
    let t = format!("inet {TABLE_NAME}");
    let chain = format!("{t} postrouting");
    let args = match kind {
        0 => "flush ruleset".to_string(),
        1 => format!("delete table {t}"),
        2 => format!("delete rule {chain} handle {exemption}"),
        3 => format!("insert rule {chain} accept"),
        4 => format!("delete rule {chain} handle {masquerade}"),
        _ => format!("insert rule {chain} masquerade"),
    };
    let spawned = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", ctx.node(), "nft"])
        .args(args.split(' '))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nft");
    let pid = child.id();
    let ok = child.wait().map(|s| s.success()).unwrap_or(false);
    let exited = Instant::now();
    ctx.tampers.lock().unwrap().push(Tamper {
        kind,
        phase,
        calm,
        spawned,
        exited,
        pid,
        ok,
    });
}

/// The handles of the exemption rule and of the masquerade rule. The agent replaces the
/// whole table on every commit, and a new table numbers its objects from the start, so
/// they stay the same across repairs.
fn rule_handles(node: &str) -> (u64, u64) {
    let out = Command::new("ip")
        .args(["netns", "exec", node, "nft", "-a", "list", "chain", "inet"])
        .args([TABLE_NAME, "postrouting"])
        .output()
        .expect("nft list chain");
    let text = String::from_utf8_lossy(&out.stdout);
    let handle = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .and_then(|l| l.rsplit("# handle ").next())
            .and_then(|h| h.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no rule with {needle:?} in\n{text}"))
    };
    (handle("@nonmasq-v4"), handle("masquerade"))
}

/// The pod's side of the probes: one datagram to each destination every 20 ms, each from
/// a fresh socket on a source port not used for 1000 s (conntrack forgets unreplied UDP
/// after 30 s), so every probe is a new flow translated by the ruleset of its moment.
fn send_probes(ctx: &Ctx) -> Vec<Sent> {
    enter(&ctx.topo.pod.name);
    let mut sent = Vec::new();
    let mut port = [10_000u16; 2];
    let mut seq = 0u64;
    let mut next = Instant::now();
    while !ctx.stop_probes.load(Ordering::SeqCst) {
        for (d, (dst, _)) in DESTS.iter().enumerate() {
            let sock = loop {
                port[d] = if port[d] >= 59_999 {
                    10_000
                } else {
                    port[d] + 1
                };
                if let Ok(s) = UdpSocket::bind((POD, port[d])) {
                    break s;
                }
            };
            let mut payload = [0u8; 9];
            payload[..8].copy_from_slice(&seq.to_be_bytes());
            payload[8] = d as u8;
            let at = Instant::now();
            let ok = sock.send_to(&payload, (*dst, PROBE_PORT)).is_ok();
            sent.push(Sent {
                seq,
                dst: d,
                at,
                ok,
            });
            seq += 1;
        }
        next += PROBE_EVERY;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    sent
}

/// The remote's side: which source each probe arrived from.
fn receive_probes(ctx: &Ctx, ready: &AtomicBool) -> Vec<Arrived> {
    enter(&ctx.topo.remote.name);
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PROBE_PORT)).expect("bind receiver");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    ready.store(true, Ordering::SeqCst);
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !ctx.stop_rx.load(Ordering::SeqCst) {
        if let Ok((n, SocketAddr::V4(from))) = sock.recv_from(&mut buf)
            && n == 9
        {
            got.push(Arrived {
                seq: u64::from_be_bytes(buf[..8].try_into().expect("8 bytes")),
                src: *from.ip(),
                at: Instant::now(),
            });
        }
    }
    got
}

/// Reads one HTTP answer to EOF; its status, 0 if none.
fn read_status(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        if buf.len() > 1 << 20 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf[..buf.len().min(32)]).to_string();
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// `/healthz` every 250 ms, as a kubelet would: a new connection, one request, the time
/// until the whole answer is in.
fn health_prober(ctx: &Ctx) -> Vec<HealthCheck> {
    enter(&ctx.topo.remote.name);
    let addr: SocketAddr = ENDPOINT.parse().expect("address");
    let mut out = Vec::new();
    let mut next = Instant::now();
    while !ctx.stopping() {
        let phase = ctx.phase();
        let at = Instant::now();
        let (status, failed_at) = match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(mut s) => {
                let _ = s.set_nodelay(true);
                match s.write_all(
                    b"GET /healthz HTTP/1.1\r\nHost: 198.51.100.1\r\nUser-Agent: kube-probe/1.34\r\nConnection: close\r\n\r\n",
                ) {
                    Ok(()) => {
                        // Wait for the first byte of the answer; past the limit, look at
                        // the endpoint while it keeps us waiting, then wait up to 10 s.
                        let _ = s.set_read_timeout(Some(HEALTH_LIMIT));
                        let mut first = [0u8; 1];
                        let mut got = s.peek(&mut first).map(|n| n > 0).unwrap_or(false);
                        if !got {
                            let pid = ctx.agent_pid.load(Ordering::SeqCst);
                            let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
                            ctx.diag
                                .lock()
                                .unwrap()
                                .push((Instant::now(), endpoint_snapshot(pid, port)));
                            let _ = s.set_read_timeout(Some(Duration::from_secs(9)));
                            got = s.peek(&mut first).map(|n| n > 0).unwrap_or(false);
                        }
                        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                        match if got { read_status(&mut s) } else { 0 } {
                            0 => (0, "answer"),
                            st => (st, ""),
                        }
                    }
                    Err(_) => (0, "send"),
                }
            }
            Err(_) => (0, "connect"),
        };
        out.push(HealthCheck {
            at,
            latency: at.elapsed(),
            status,
            failed_at,
            phase,
        });
        next += HEALTH_EVERY;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    out
}

/// One flooding client, forever reconnecting: kind 0 sends its request head a header line
/// every 300 ms and never finishes it; kind 1 sends a head larger than the endpoint accepts;
/// kind 2 connects and sends nothing.
fn flood(ctx: &Ctx, kind: usize) {
    enter(&ctx.topo.remote.name);
    let addr: SocketAddr = ENDPOINT.parse().expect("address");
    let stats = &ctx.flood[kind];
    let big = {
        let mut h = b"GET /metrics HTTP/1.1\r\nHost: 198.51.100.1\r\nX-Soak: ".to_vec();
        h.resize(h.len() + MAX_HEADER_BYTES + 4096, b'a');
        h.extend_from_slice(b"\r\n\r\n");
        h
    };
    while !ctx.stopping() {
        let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => s,
            Err(_) => {
                // The agent is restarting (owner phase): do not spin.
                stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let t0 = Instant::now();
        let mut status = 0;
        match kind {
            1 => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.write_all(&big);
                status = read_status(&mut s);
                // Refused at once: without a pause this client alone would take a core
                // (thousands of connections a second) and measure the machine, not the agent.
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
                if kind == 0 {
                    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 198.51.100.1\r\n");
                }
                let mut buf = [0u8; 512];
                let mut n_lines = 0u32;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if status == 0 {
                                status = String::from_utf8_lossy(&buf[..n.min(12)])
                                    .strip_prefix("HTTP/1.1 ")
                                    .and_then(|c| c.get(..3))
                                    .and_then(|c| c.parse().ok())
                                    .unwrap_or(0);
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            if ctx.stopping() {
                                break;
                            }
                            if kind == 0 {
                                n_lines += 1;
                                let line = format!("X-Soak-{n_lines}: slow\r\n");
                                if s.write_all(line.as_bytes()).is_err() {
                                    break;
                                }
                            }
                        }
                        Err(_) => break,
                    }
                }
                if !ctx.stopping() {
                    let held = t0.elapsed().as_millis() as u64;
                    stats.held_max_ms.fetch_max(held, Ordering::Relaxed);
                }
            }
        }
        let counter = match status {
            0 => &stats.no_reply,
            200..=299 => &stats.status_2xx,
            408 => &stats.status_408,
            431 => &stats.status_431,
            _ => &stats.status_other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn proc_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Inodes of the sockets in a /proc/PID/net table (the process's namespace).
fn socket_inodes(pid: u32, table: &str) -> std::collections::HashSet<String> {
    std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(9).map(str::to_string))
        .collect()
}

/// The endpoint's TCP sockets (local port of ENDPOINT): connections open on the server
/// side, and the listener's accept queue (connections the kernel completed that the
/// endpoint has not taken yet).
fn endpoint_sockets(pid: u32) -> (usize, usize) {
    let port = format!(":{ENDPOINT_PORT:04X}");
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let (mut open, mut queued) = (0, 0);
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 5 || !f[1].ends_with(&port) {
            continue;
        }
        match f[3] {
            // LISTEN: rx_queue is the accept queue.
            "0A" => {
                queued = f[4]
                    .split(':')
                    .nth(1)
                    .and_then(|q| usize::from_str_radix(q, 16).ok())
                    .unwrap_or(0)
            }
            // ESTABLISHED, CLOSE_WAIT: still held by the endpoint (or queued).
            "01" | "08" => open += 1,
            _ => {}
        }
    }
    (open, queued)
}

/// Open descriptors of `pid`: all of them, the endpoint's TCP connections (and listener),
/// and sockets that were in neither the TCP nor the netlink table (opened or closed while
/// /proc was being read: neither counted as TCP nor as a change of the agent's own
/// descriptors). The tables are read before and after the descriptors.
fn fds(pid: u32) -> (usize, usize, usize) {
    let mut netlink = socket_inodes(pid, "netlink");
    let mut tcp_inodes = socket_inodes(pid, "tcp");
    let mut links = Vec::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            links.push(std::fs::read_link(e.path()).ok());
        }
    }
    netlink.extend(socket_inodes(pid, "netlink"));
    tcp_inodes.extend(socket_inodes(pid, "tcp"));
    let (mut total, mut tcp, mut unknown) = (0, 0, 0);
    for target in links.into_iter().flatten() {
        total += 1;
        let t = target.to_string_lossy();
        if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
            if tcp_inodes.contains(inode) {
                tcp += 1;
            } else if !netlink.contains(inode) {
                unknown += 1;
            }
        }
    }
    (total, tcp, unknown)
}

/// The endpoint's sockets (state, queues) and the agent's threads (state, where they
/// sleep), and the prober's own socket: taken while /healthz keeps the prober waiting.
fn endpoint_snapshot(pid: u32, client_port: u16) -> String {
    let (conns, queued) = endpoint_sockets(pid);
    let mut states = std::collections::BTreeMap::new();
    let port = format!(":{ENDPOINT_PORT:04X}");
    for l in std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))
        .unwrap_or_default()
        .lines()
        .skip(1)
    {
        let f: Vec<&str> = l.split_whitespace().collect();
        // TIME_WAIT and the like are the kernel's, not the endpoint's.
        if f.len() > 5 && f[1].ends_with(&port) && matches!(f[3], "01" | "03" | "08" | "0A") {
            let mine = f[2].ends_with(&format!(":{client_port:04X}"));
            *states
                .entry(format!(
                    "{}{} tx:rx {}",
                    if mine { "PROBE " } else { "" },
                    f[3],
                    f[4]
                ))
                .or_insert(0) += 1;
        }
    }
    let mut threads = Vec::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            let tid = t.file_name().to_string_lossy().to_string();
            let stat =
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap_or_default();
            let name = stat
                .split('(')
                .nth(1)
                .and_then(|r| r.split(')').next())
                .unwrap_or("?");
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or("?");
            let wchan = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan"))
                .unwrap_or_default();
            threads.push(format!("{name}:{state}:{wchan}"));
        }
    }
    // The prober's own socket, in the calling thread's namespace.
    let client: Vec<String> = std::fs::read_to_string("/proc/thread-self/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(&format!(":{client_port:04X}")))
        })
        .map(|l| l.split_whitespace().take(7).collect::<Vec<_>>().join(" "))
        .collect();
    format!(
        "SLOW /healthz: endpoint {conns} connections, {queued} queued; sockets {states:?}; \
         threads {threads:?}; prober's socket {client:?}"
    )
}

fn sample(pid: u32, phase: Phase) -> Sample {
    let (fds, tcp_fds, racing_fds) = fds(pid);
    let (conns, queued) = endpoint_sockets(pid);
    Sample {
        at: Instant::now(),
        phase,
        rss_kib: proc_kib(pid, "VmRSS:"),
        hwm_kib: proc_kib(pid, "VmHWM:"),
        fds,
        tcp_fds,
        racing_fds,
        conns,
        queued,
        threads: std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0),
    }
}

/// Waits for the first commit by `agent` after the notification at index `from`; `None`
/// if the agent exits or the time runs out first.
fn wait_commit(ctx: &Ctx, agent: &mut Agent, from: usize, timeout: Duration) -> Option<usize> {
    let pid = agent.pid();
    let end = Instant::now() + timeout;
    while Instant::now() < end && matches!(agent.child.try_wait(), Ok(None)) {
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

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
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
    // The phases: the owner phase and the budget phase are short; the rest is the main one.
    let owner_len = (o.total / 10).clamp(Duration::from_secs(10), Duration::from_secs(60));
    let budget_len = (o.total / 6).clamp(Duration::from_secs(30), Duration::from_secs(60));
    let main_len = o.total.saturating_sub(owner_len + budget_len);
    let topo = Topology::new();
    let cm = topo.dir.join("config");
    std::fs::create_dir_all(&cm).expect("config dir");
    swap(&cm, 0, &config_text(o.prefixes, 0));
    std::os::unix::fs::symlink("..data/ip-masq-agent", cm.join("ip-masq-agent")).expect("link");
    let ctx = Ctx {
        topo,
        cm,
        prefixes: o.prefixes,
        phase: AtomicU8::new(Phase::Main as u8),
        main_start: Mutex::new(None),
        stop: AtomicBool::new(false),
        stop_probes: AtomicBool::new(false),
        stop_rx: AtomicBool::new(false),
        subscribed: AtomicBool::new(false),
        gens: Mutex::new(Vec::new()),
        lost_notifications: AtomicU64::new(0),
        tampers: Mutex::new(Vec::new()),
        swaps: Mutex::new(Vec::new()),
        handles: Mutex::new((0, 0)),
        flood: Default::default(),
        agent_pid: Default::default(),
        diag: Mutex::new(Vec::new()),
    };
    let config = ctx.cm.join("ip-masq-agent");
    // One log per agent, outside the scratch directory: kept when the run fails.
    let log =
        |n: u32| std::env::temp_dir().join(format!("nma-soak-{}.agent{n}.log", std::process::id()));
    let (log1, log2) = (log(1), log(2));
    let _ = std::fs::remove_file(&log1);
    let _ = std::fs::remove_file(&log2);

    eprintln!(
        "soak: {:.0} s main phase ({} prefixes), {:.0} s budget phase, {:.0} s owner phase; {} flood connections",
        main_len.as_secs_f64(),
        o.prefixes,
        budget_len.as_secs_f64(),
        owner_len.as_secs_f64(),
        o.flood
    );
    let mut failures: Vec<String> = Vec::new();
    let rx_ready = AtomicBool::new(false);
    let run = std::thread::scope(|s| {
        let ctx = &ctx;
        // Whatever ends this scope (a panic included) stops the workers first, so the
        // scope can join them and the namespaces are deleted.
        let _stop = StopOnDrop(ctx);
        let observer = s.spawn(|| observe(ctx));
        let rx_ready = &rx_ready;
        let receiver = s.spawn(|| receive_probes(ctx, rx_ready));
        while !(ctx.subscribed.load(Ordering::SeqCst) && rx_ready.load(Ordering::SeqCst)) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut agent = Agent::spawn(ctx.node(), &config, "off", &log1);
        ctx.agent_pid.store(agent.pid(), Ordering::SeqCst);
        let agent_pids = [agent.pid()];
        let Some(_) = wait_commit(ctx, &mut agent, 0, Duration::from_secs(120)) else {
            return Err(format!(
                "the agent made no start-up commit (exited, or not within 120 s): see {}",
                log1.display()
            ));
        };
        *ctx.handles.lock().unwrap() = rule_handles(ctx.node());
        let sender = s.spawn(|| send_probes(ctx));
        let prober = s.spawn(|| health_prober(ctx));
        // Neighbour resolution on the way out must not count as loss or lateness.
        std::thread::sleep(Duration::from_secs(1));
        let floods: Vec<_> = (0..o.flood)
            .map(|i| s.spawn(move || flood(ctx, i % 3)))
            .collect();
        let main_start = Instant::now();
        let main_wall = std::time::SystemTime::now();
        *ctx.main_start.lock().unwrap() = Some(main_start);
        let conductor = s.spawn(|| conduct(ctx));

        let mut samples = Vec::new();
        let mut agent_died = None;
        let budget_start = main_start + main_len;
        let switch_at = budget_start + budget_len;
        let mut next = Instant::now();
        while Instant::now() < switch_at {
            let now = Instant::now();
            if now >= budget_start && ctx.phase() == Phase::Main {
                ctx.set_phase(Phase::Budget);
            }
            samples.push(sample(agent.pid(), ctx.phase()));
            if let Ok(Some(st)) = agent.child.try_wait() {
                agent_died = Some(st.to_string());
                break;
            }
            next += SAMPLE_EVERY;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }

        // Owner phase: no tampering while the agent is replaced, and the last break
        // repaired first (a restart is not a repair).
        let mut owner = None;
        let mut owner_agent = None;
        if agent_died.is_none() {
            ctx.set_phase(Phase::Switch);
            let settle_end = Instant::now() + Duration::from_secs(15);
            while Instant::now() < settle_end {
                let gens = ctx.gens.lock().unwrap();
                let last_foreign = gens
                    .iter()
                    .rposition(|g| g.ours && g.pid.is_some_and(|p| !agent_pids.contains(&p)));
                let last_agent = gens
                    .iter()
                    .rposition(|g| g.ours && g.pid.is_some_and(|p| agent_pids.contains(&p)));
                drop(gens);
                if last_foreign.is_none_or(|f| last_agent.is_some_and(|a| a > f)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            agent.stop();
            let from = ctx.gens.lock().unwrap().len();
            let mut a2 = Agent::spawn(ctx.node(), &config, "on", &log2);
            ctx.agent_pid.store(a2.pid(), Ordering::SeqCst);
            let first = wait_commit(ctx, &mut a2, from, Duration::from_secs(60));
            let started = Instant::now();
            ctx.set_phase(Phase::Owner);
            std::thread::sleep(owner_len);
            owner = Some((a2.pid(), first, started, owner_len));
            owner_agent = Some(a2);
        }
        ctx.set_phase(Phase::Stop);
        ctx.stop_probes.store(true, Ordering::SeqCst);
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
        Ok(Run {
            agent_pid: agent_pids[0],
            agent_died,
            owner,
            main_start,
            main_wall,
            budget_start,
            switch_at,
            sent,
            arrived,
            health,
            samples,
        })
    });
    let timeline = std::env::temp_dir().join(format!("nma-soak-{}.timeline", std::process::id()));
    let report = match run {
        Ok(run) => {
            let logged = [logged_commits(&log1), logged_commits(&log2)];
            let r = analyse(&ctx, &o, &run, &logged, &mut failures);
            if !failures.is_empty() || std::env::var_os("NMA_SOAK_TIMELINE").is_some() {
                write_timeline(&ctx, &run, &timeline);
                eprintln!("soak: the timeline of the run is {}", timeline.display());
            }
            r
        }
        Err(e) => {
            failures.push(e);
            String::new()
        }
    };
    print!("{report}");
    record_value("soak.pass", f64::from(u8::from(failures.is_empty())));
    if failures.is_empty() {
        let _ = std::fs::remove_file(&log1);
        let _ = std::fs::remove_file(&log2);
        println!("**Verdict: pass.**\n");
        ExitCode::SUCCESS
    } else {
        println!("**Verdict: FAILED.**\n");
        for f in &failures {
            println!("- {f}");
        }
        println!();
        eprintln!(
            "soak: FAILED; the agents' logs are {} and {}",
            log1.display(),
            log2.display()
        );
        ExitCode::FAILURE
    }
}

/// Every event of the run, one per line, in time order: seconds since the main phase
/// started, the wall clock (UTC, as in the agent's log), what happened.
fn write_timeline(ctx: &Ctx, run: &Run, path: &Path) {
    let mut ev: Vec<(Instant, String)> = Vec::new();
    let agents = [Some(run.agent_pid), run.owner.map(|(p, ..)| p)];
    for g in ctx.gens.lock().unwrap().iter() {
        let who = if agents.contains(&g.pid) {
            "AGENT COMMIT".to_string()
        } else {
            format!("transaction by pid {:?}", g.pid)
        };
        ev.push((
            g.at,
            format!("{who}{}", if g.ours { "" } else { " (not our table)" }),
        ));
    }
    for t in ctx.tampers.lock().unwrap().iter() {
        ev.push((
            t.spawned,
            format!(
                "tamper start: {} (pid {}, {:?}{})",
                KINDS[t.kind],
                t.pid,
                t.phase,
                if t.calm { ", calm" } else { "" }
            ),
        ));
        ev.push((
            t.exited,
            format!(
                "tamper exit: {} (pid {}) {}",
                KINDS[t.kind],
                t.pid,
                if t.ok { "ok" } else { "failed" }
            ),
        ));
    }
    for (at, phase) in ctx.swaps.lock().unwrap().iter() {
        ev.push((*at, format!("config swap ({phase:?})")));
    }
    let arrived: std::collections::HashMap<u64, &Arrived> =
        run.arrived.iter().map(|a| (a.seq, a)).collect();
    for p in &run.sent {
        match arrived.get(&p.seq) {
            Some(a) if a.src != EXPECTED[p.dst] => ev.push((
                p.at,
                format!(
                    "WRONG probe {} to {} from {} (arrived +{:.3} ms)",
                    p.seq,
                    DESTS[p.dst].0,
                    a.src,
                    (a.at - p.at).as_secs_f64() * 1e3
                ),
            )),
            Some(_) => {}
            None => ev.push((p.at, format!("LOST probe {} to {}", p.seq, DESTS[p.dst].0))),
        }
    }
    for (at, what) in ctx.diag.lock().unwrap().iter() {
        ev.push((*at, what.clone()));
    }
    for s in &run.samples {
        ev.push((
            s.at,
            format!(
                "sample: RSS {} KiB, {} fds ({} TCP), endpoint: {} connections, {} queued, {} threads",
                s.rss_kib, s.fds, s.tcp_fds, s.conns, s.queued, s.threads
            ),
        ));
    }
    for h in &run.health {
        if h.status != 200 || h.latency > Duration::from_millis(100) {
            ev.push((
                h.at,
                format!(
                    "healthz: {} {} after {:?}",
                    h.status, h.failed_at, h.latency
                ),
            ));
        }
    }
    ev.sort_by_key(|e| e.0);
    let mut out = String::new();
    for (at, what) in ev {
        let rel = if at >= run.main_start {
            (at - run.main_start).as_secs_f64()
        } else {
            -(run.main_start - at).as_secs_f64()
        };
        let wall = run.main_wall + at.saturating_duration_since(run.main_start)
            - run.main_start.saturating_duration_since(at);
        let day = wall
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64() % 86_400.0)
            .unwrap_or_default();
        out.push_str(&format!(
            "{rel:10.3}  {:02}:{:02}:{:06.3}  {what}\n",
            (day / 3600.0) as u32,
            ((day % 3600.0) / 60.0) as u32,
            day % 60.0
        ));
    }
    let _ = std::fs::write(path, out);
}

struct Run {
    agent_pid: u32,
    agent_died: Option<String>,
    /// The owner-on agent: pid, index of its first commit, when and how long its phase ran.
    owner: Option<(u32, Option<usize>, Instant, Duration)>,
    main_start: Instant,
    /// The wall clock at `main_start`, to line the timeline up with the agent's log.
    main_wall: std::time::SystemTime,
    budget_start: Instant,
    switch_at: Instant,
    sent: Vec<Sent>,
    arrived: Vec<Arrived>,
    health: Vec<HealthCheck>,
    samples: Vec<Sample>,
}

/// A tamper action whose transaction touched the table, and what followed.
struct Break {
    tamper: Tamper,
    /// When its transaction was seen.
    seen: Instant,
    /// The first agent commit seen after it.
    repaired: Option<Instant>,
    /// Agent commits seen in the window before the break (the budget then).
    spent: usize,
}

/// A commit as the agent logged it ("committed table ... form=... duration_ms=...").
struct Logged {
    /// How long it took: with the time its commit was seen, when it began.
    duration: Duration,
    /// Whether its form creates the sets anew (`replace`, `delete-first`: the table was
    /// missing or had to be recreated for another owner flag). Such a commit cannot avoid the
    /// kernel's new-set gap (docs/design.md, "In-place form"); the in-place and difference
    /// forms must never show it.
    creates_sets: bool,
}

/// The commits the agent logged, in order.
fn logged_commits(log: &Path) -> Vec<Logged> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("committed table inet"))
        .filter_map(|l| {
            let ms: f64 = l
                .split("duration_ms=\"")
                .nth(1)?
                .split('"')
                .next()?
                .parse()
                .ok()?;
            Some(Logged {
                duration: Duration::from_secs_f64(ms / 1e3),
                creates_sets: l.contains("form=\"replace\"") || l.contains("form=\"delete-first\""),
            })
        })
        .collect()
}

fn analyse(
    ctx: &Ctx,
    o: &Opts,
    run: &Run,
    logged: &[Vec<Logged>; 2],
    failures: &mut Vec<String>,
) -> String {
    use std::fmt::Write as _;
    let gens = ctx.gens.lock().unwrap().clone();
    let tampers = ctx.tampers.lock().unwrap().clone();
    let swaps = ctx.swaps.lock().unwrap().clone();
    let owner_pid = run.owner.map(|(p, ..)| p);
    let is_agent =
        |g: &Gen| g.pid == Some(run.agent_pid) || (g.pid.is_some() && g.pid == owner_pid);
    let secs = |t: Instant| t.saturating_duration_since(run.main_start).as_secs_f64();
    let mut r = String::new();

    if let Some(why) = &run.agent_died {
        failures.push(format!("the agent exited during the run: {why}"));
    }
    let lost_notes = ctx.lost_notifications.load(Ordering::Relaxed);
    if lost_notes > 0 {
        failures.push(format!(
            "the observer lost notifications {lost_notes} times: commit counts are not reliable"
        ));
    }

    // Breaks and their repairs.
    let agent_idx: Vec<usize> = (0..gens.len()).filter(|&i| is_agent(&gens[i])).collect();
    let by_pid: std::collections::HashMap<u32, usize> = gens
        .iter()
        .enumerate()
        .filter_map(|(i, g)| g.pid.map(|p| (p, i)))
        .collect();
    let mut breaks = Vec::new();
    let mut owner_touched = 0;
    for t in &tampers {
        let Some(&gi) = by_pid.get(&t.pid) else {
            continue;
        };
        if !gens[gi].ours {
            continue;
        }
        if t.phase == Phase::Owner {
            owner_touched += 1;
        }
        let next_agent = agent_idx.iter().find(|&&a| a > gi).map(|&a| gens[a].at);
        let seen = gens[gi].at;
        let spent = agent_idx
            .iter()
            .filter(|&&a| a < gi && seen.duration_since(gens[a].at) <= BUDGET_WINDOW)
            .count();
        breaks.push(Break {
            tamper: *t,
            seen,
            repaired: next_agent,
            spent,
        });
    }
    breaks.sort_by_key(|b| b.tamper.spawned);
    let end = Instant::now();
    let mut late = Vec::new();
    let mut window_max = Duration::ZERO;
    let mut reaction_free = Vec::new();
    let mut beyond_free = Vec::new();
    let mut reaction_all = Vec::new();
    let mut calm_repairs = Vec::new();
    for b in &breaks {
        let repaired = b.repaired.unwrap_or(end);
        window_max = window_max.max(repaired - b.tamper.spawned);
        let after_exit = repaired.saturating_duration_since(b.tamper.exited);
        reaction_all.push(repaired.saturating_duration_since(b.seen));
        // The budget was surely free: fewer commits in the window than it allows, with one
        // to spare for lag.
        if b.spent + 1 < BUDGET_COMMITS {
            reaction_free.push(repaired.saturating_duration_since(b.seen));
            beyond_free.push(after_exit);
        }
        let limit = if b.tamper.calm {
            calm_repairs.push(after_exit);
            CALM_REPAIR_LIMIT
        } else {
            REPAIR_LIMIT
        };
        if b.repaired.is_none() || after_exit > limit {
            late.push(format!(
                "{} at {:.1} s{}: {}",
                KINDS[b.tamper.kind],
                secs(b.tamper.spawned),
                if b.tamper.calm { " (calm)" } else { "" },
                match b.repaired {
                    Some(_) => format!("repaired {} after the tamperer exited", ms(after_exit)),
                    None => "never repaired".into(),
                }
            ));
        }
    }
    if !late.is_empty() {
        failures.push(format!(
            "{} breaks repaired late (limits: {} in calm, {} in a storm), e.g. {}",
            late.len(),
            ms(CALM_REPAIR_LIMIT),
            ms(REPAIR_LIMIT),
            late.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        ));
    }

    // Probes. A wrong one must have been in flight during a window: sent before the repair
    // was seen, arrived after the tamperer started. Windows sorted by start, with the
    // latest end so far, answer that with one binary search per probe.
    let mut arrived = std::collections::HashMap::with_capacity(run.arrived.len());
    let mut strange = 0;
    for a in &run.arrived {
        arrived.insert(a.seq, *a);
    }
    let mut latest_end = Vec::with_capacity(breaks.len());
    let mut m: Option<Instant> = None;
    for b in &breaks {
        let e = b.repaired.unwrap_or(end);
        m = Some(m.map_or(e, |x| x.max(e)));
        latest_end.push(m.expect("set"));
    }
    // The agent's own commits, from their start (the duration it logged, counted back
    // from the notification) to their notification: on kernels whose new interval sets
    // are not searchable until the end of the transaction, packets then see the new
    // rules with an empty set (see the module docs).
    let mut own: Vec<(Instant, Instant, bool)> = Vec::new();
    for (pid, logged) in [(Some(run.agent_pid), &logged[0]), (owner_pid, &logged[1])] {
        let Some(pid) = pid else { continue };
        let seen: Vec<Instant> = gens
            .iter()
            .filter(|g| g.pid == Some(pid) && g.ours)
            .map(|g| g.at)
            .collect();
        if seen.len() != logged.len() {
            failures.push(format!(
                "agent {pid}: {} commits seen, {} logged: the log does not match",
                seen.len(),
                logged.len()
            ));
            continue;
        }
        own.extend(seen.iter().zip(logged).map(|(&at, c)| {
            (
                at - c.duration - Duration::from_millis(5),
                at,
                c.creates_sets,
            )
        }));
    }
    own.sort();
    // Gaps during commits that create the sets (the table was missing, or recreated for
    // another owner flag): reported, not failed.
    let mut in_create = 0usize;
    let (mut lost, mut wrong, mut outside) = (0usize, 0usize, Vec::new());
    let mut in_commit = 0usize;
    let mut in_commit_lead = Duration::ZERO;
    let mut wrong_by_dst = [0usize; 2];
    let mut in_flight = Vec::new();
    for p in &run.sent {
        let Some(a) = arrived.get(&p.seq) else {
            lost += 1;
            continue;
        };
        in_flight.push(a.at - p.at);
        if a.src == EXPECTED[p.dst] {
            continue;
        }
        if a.src != NODE && a.src != POD {
            strange += 1;
        }
        wrong += 1;
        wrong_by_dst[p.dst] += 1;
        let n = breaks.partition_point(|b| b.tamper.spawned < a.at);
        if n > 0 && latest_end[n - 1] > p.at {
            continue;
        }
        // Only the direction an empty set gives: an exempt destination masqueraded.
        let k = own.partition_point(|w| w.0 < a.at);
        if k > 0 && own[k - 1].1 > p.at && p.dst == 1 && a.src == NODE {
            if own[k - 1].2 {
                in_create += 1;
                continue;
            }
            in_commit += 1;
            in_commit_lead = in_commit_lead.max(own[k - 1].1 - p.at);
            continue;
        }
        {
            outside.push(format!(
                "to {} ({}) sent at {:.3} s arrived from {}",
                DESTS[p.dst].0,
                DESTS[p.dst].1,
                secs(p.at),
                a.src
            ));
        }
    }
    let sent = run.sent.len();
    let send_errors = run.sent.iter().filter(|p| !p.ok).count();
    if !outside.is_empty() {
        failures.push(format!(
            "{} probes had the wrong translation outside every tamper window, e.g. {}",
            outside.len(),
            outside
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if in_commit > 0 && !o.accept_new_set_gap {
        failures.push(format!(
            "{in_commit} probes to the exempt destination were masqueraded during the agent's \
             own in-place or difference commits (up to {} before the commit's notification): \
             this kernel searches a new interval set only once the transaction is done \
             (--accept-new-set-gap tolerates it)",
            ms(in_commit_lead)
        ));
    }
    if strange > 0 {
        failures.push(format!(
            "{strange} probes arrived from neither the pod nor the node"
        ));
    }
    if lost * 1000 > sent {
        failures.push(format!("{lost} of {sent} probes lost (more than 0.1 %)"));
    }

    // Commits and the budget.
    let commits_of = |pid: u32| -> Vec<Instant> {
        gens.iter()
            .filter(|g| g.pid == Some(pid) && g.ours)
            .map(|g| g.at)
            .collect()
    };
    let main_commits = commits_of(run.agent_pid);
    // The budget admits a commit when it starts; its notification comes a commit's
    // duration later (up to seconds for a small table on a starved machine). The agent
    // logs each commit's duration: counted back from the notification, the start.
    let mut starts: Vec<Instant> = if logged[0].len() == main_commits.len() {
        main_commits
            .iter()
            .zip(&logged[0])
            .map(|(&at, c)| at - c.duration)
            .collect()
    } else {
        main_commits.clone()
    };
    starts.sort();
    let allowed = BUDGET_COMMITS
        + BUDGET_WINDOW
            .as_nanos()
            .div_ceil(BUDGET_SLOW_PERIOD.as_nanos()) as usize
        + 1;
    let max_in_window = |c: &[Instant]| -> (usize, Option<Instant>) {
        let mut best = (0, None);
        let mut lo = 0;
        for hi in 0..c.len() {
            while c[hi].duration_since(c[lo]) > BUDGET_WINDOW {
                lo += 1;
            }
            if hi - lo + 1 > best.0 {
                best = (hi - lo + 1, Some(c[hi]));
            }
        }
        best
    };
    let (most, most_at) = max_in_window(&starts);
    if most > allowed {
        failures.push(format!(
            "{most} agent commits within 10 s (ending at {:.1} s); the budget allows {allowed}",
            most_at.map_or(0.0, secs)
        ));
    }
    // The budget phase: once the window holds BUDGET_COMMITS commits, the next must wait
    // BUDGET_SLOW_PERIOD. Checked only where the whole window lies in the phase after the
    // large table is gone.
    let checked_from = run.budget_start + BUDGET_WINDOW + Duration::from_secs(3);
    let budget_commits: Vec<Instant> = starts
        .iter()
        .copied()
        .filter(|&t| t >= run.budget_start && t <= run.switch_at)
        .collect();
    let (budget_most, _) = max_in_window(&budget_commits);
    let mut paced = 0;
    let mut too_fast = Vec::new();
    for (j, &c) in starts.iter().enumerate() {
        if c < checked_from || c > run.switch_at || j == 0 {
            continue;
        }
        let in_window = starts[..j]
            .iter()
            .filter(|&&t| c.duration_since(t) + PACE_TOLERANCE <= BUDGET_WINDOW)
            .count();
        if in_window >= BUDGET_COMMITS {
            paced += 1;
            let gap = c - starts[j - 1];
            if gap + PACE_TOLERANCE < BUDGET_SLOW_PERIOD {
                too_fast.push(format!("{} at {:.1} s", ms(gap), secs(c)));
            }
        }
    }
    if budget_most < BUDGET_COMMITS {
        failures.push(format!(
            "the budget phase never reached the budget ({budget_most} commits in 10 s at most, \
             {BUDGET_COMMITS} needed): the storm was too slow to test it"
        ));
    }
    if !too_fast.is_empty() {
        failures.push(format!(
            "{} commits less than {} after the previous one although {BUDGET_COMMITS} were \
             spent in the window: {}",
            too_fast.len(),
            ms(BUDGET_SLOW_PERIOD - PACE_TOLERANCE),
            too_fast
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    // Tamper actions: every kind must have worked at some point, or the storm was weaker
    // than it claims.
    for (k, name) in KINDS.iter().enumerate() {
        let hits = breaks
            .iter()
            .filter(|b| b.tamper.kind == k && b.tamper.phase != Phase::Owner)
            .count();
        if hits == 0 {
            failures.push(format!("tamper action `{name}` never changed the table"));
        }
    }

    // Health.
    let checks: Vec<&HealthCheck> = run
        .health
        .iter()
        .filter(|h| matches!(h.phase, Phase::Main | Phase::Budget))
        .collect();
    let mut lat: Vec<Duration> = checks.iter().map(|h| h.latency).collect();
    let health_worst = lat.iter().max().copied().unwrap_or_default();
    let health_p99 = pct(&mut lat, 0.99);
    let health_median = pct(&mut lat, 0.5);
    let describe = |h: &HealthCheck| {
        if h.status == 0 {
            format!(
                "no answer ({}) after {} at {:.1} s",
                h.failed_at,
                ms(h.latency),
                secs(h.at)
            )
        } else {
            format!(
                "{} after {} at {:.1} s",
                h.status,
                ms(h.latency),
                secs(h.at)
            )
        }
    };
    let not_ok: Vec<String> = checks
        .iter()
        .filter(|h| h.status != 200)
        .map(|h| describe(h))
        .collect();
    let slow: Vec<String> = checks
        .iter()
        .filter(|h| h.latency >= HEALTH_LIMIT)
        .map(|h| describe(h))
        .collect();
    if !slow.is_empty() {
        failures.push(format!(
            "{} /healthz took {} or longer: {}",
            slow.len(),
            ms(HEALTH_LIMIT),
            slow.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    // A liveness probe restarts the pod after 3 failures in a row (failureThreshold in
    // deploy/base); a lone 503 (the loop not scheduled within the 250 ms the endpoint
    // waits for it, on 2 busy cores) is reported, not fatal, unless they add up.
    let in_a_row = checks.windows(3).any(|w| w.iter().all(|h| h.status != 200));
    if in_a_row || not_ok.len() * 100 > checks.len() {
        failures.push(format!(
            "{} of {} /healthz answers were not 200{}: {}",
            not_ok.len(),
            checks.len(),
            if in_a_row { ", 3 in a row" } else { "" },
            not_ok
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let f = |k: usize, c: fn(&FloodStats) -> &AtomicU64| c(&ctx.flood[k]).load(Ordering::Relaxed);
    let held_limit = HEADER_TIMEOUT + Duration::from_secs(2);
    for (k, what) in [(0, "slow heads"), (2, "silent connections")] {
        let held = Duration::from_millis(f(k, |s| &s.held_max_ms));
        if held > held_limit {
            failures.push(format!(
                "{what} were kept open {} (header timeout {})",
                ms(held),
                ms(HEADER_TIMEOUT)
            ));
        }
    }
    if f(1, |s| &s.status_2xx) > 0 {
        failures.push("an oversized request head was answered 2xx".into());
    }

    // Footprint after warm-up: the main phase minus its first 20 %.
    let warm = run.main_start + (run.budget_start - run.main_start) / 5;
    let steady: Vec<&Sample> = run
        .samples
        .iter()
        .filter(|s| s.at >= warm && s.phase == Phase::Main)
        .collect();
    let mib = |k: u64| k as f64 / 1024.0;
    if steady.is_empty() {
        failures.push("no footprint samples after warm-up (run too short?)".into());
    }
    let rss: Vec<f64> = steady.iter().map(|s| mib(s.rss_kib)).collect();
    let fd: Vec<usize> = steady.iter().map(|s| s.fds).collect();
    let other: Vec<usize> = steady
        .iter()
        .map(|s| s.fds - s.tcp_fds - s.racing_fds)
        .collect();
    let threads: Vec<usize> = steady.iter().map(|s| s.threads).collect();
    let first_last_min_max = |v: &[f64]| match (v.first(), v.last()) {
        (Some(&first), Some(&last)) => (
            first,
            last,
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ),
        _ => (0.0, 0.0, 0.0, 0.0),
    };
    let as_f = |v: &[usize]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let (rss_first, rss_last, rss_min, rss_max) = first_last_min_max(&rss);
    let (fd_first, fd_last, fd_min, fd_max) = first_last_min_max(&as_f(&fd));
    let (_, _, other_min, other_max) = first_last_min_max(&as_f(&other));
    let (_, _, thr_min, thr_max) = first_last_min_max(&as_f(&threads));
    let tcp_max = run.samples.iter().map(|s| s.tcp_fds).max().unwrap_or(0);
    // Memory: what one cycle of swaps, repairs and read-backs needs comes and goes (the
    // allocator returns some of it, not always at once), so RSS swings by the transient
    // working set of a large commit. Flat means its envelope does not grow: the peak
    // (VmHWM) stays where the warm-up put it, and neither the highs nor the lows of the
    // last third of the samples rise above those of the first third.
    let hwm_warm = mib(steady.first().map_or(0, |s| s.hwm_kib));
    let hwm_end = mib(steady.last().map_or(0, |s| s.hwm_kib));
    let third = rss.len() / 3;
    let (early, late_rss) = (&rss[..third], &rss[rss.len() - third..]);
    let (_, _, early_min, early_max) = first_last_min_max(early);
    let (_, _, late_min, late_max) = first_last_min_max(late_rss);
    if hwm_end - hwm_warm > RSS_GROWTH_LIMIT_MIB {
        failures.push(format!(
            "peak resident memory grew after warm-up from {hwm_warm:.1} to {hwm_end:.1} MiB \
             (limit: +{RSS_GROWTH_LIMIT_MIB} MiB)"
        ));
    }
    if third > 0
        && (late_max - early_max > RSS_GROWTH_LIMIT_MIB
            || late_min - early_min > RSS_GROWTH_LIMIT_MIB)
    {
        failures.push(format!(
            "resident memory crept up: first third of the run {early_min:.1}-{early_max:.1} MiB, \
             last third {late_min:.1}-{late_max:.1} MiB (limit: +{RSS_GROWTH_LIMIT_MIB} MiB)"
        ));
    }
    if other_max - other_min > 1.0 {
        failures.push(format!(
            "open descriptors other than TCP connections varied from {other_min} to {other_max}"
        ));
    }
    if tcp_max > MAX_CONNECTIONS + 1 {
        failures.push(format!(
            "{tcp_max} TCP descriptors open at once (bound: {MAX_CONNECTIONS} connections + the listener)"
        ));
    }
    if thr_max != thr_min {
        failures.push(format!(
            "the agent's threads varied from {thr_min} to {thr_max}"
        ));
    }

    // Owner on.
    let owner_tampers: Vec<&Tamper> = tampers.iter().filter(|t| t.phase == Phase::Owner).collect();
    let owner_refused = owner_tampers.iter().filter(|t| !t.ok).count();
    match run.owner {
        Some((_, None, ..)) => {
            failures.push("the agent with --table-owner on never committed".into())
        }
        Some((_, Some(_), ..)) => {
            if owner_touched > 0 {
                failures.push(format!(
                    "with --table-owner on, {owner_touched} tamper transactions touched the table"
                ));
            }
            if owner_tampers.is_empty() {
                failures.push("no tamper action ran with --table-owner on".into());
            }
        }
        None => {}
    }

    // The report.
    let main_len = run.budget_start - run.main_start;
    let phase_len = |p: Phase| tampers.iter().filter(|t| t.phase == p).count();
    let _ = writeln!(
        r,
        "### Soak: {:.1} minutes of everything at once ({} prefixes)\n",
        o.total.as_secs_f64() / 60.0,
        o.prefixes
    );
    let _ = writeln!(
        r,
        "Phases: {:.0} s with the large table (cycles of a {:.0} s tamper storm, one action every {}, \
         and {:.0} s of calm: one config swap and one action per {:.0} s), {:.0} s with a {SMALL_TABLE}-prefix \
         table under a storm (the budget), {:.0} s with `--table-owner on` under a storm. \
         Throughout: config swaps, {} HTTP flood connections, a probe to each destination every {}.\n",
        main_len.as_secs_f64(),
        STORM.as_secs_f64(),
        ms(STORM_TAMPER_EVERY),
        (CALM_STEP * CALM_STEPS).as_secs_f64(),
        CALM_STEP.as_secs_f64(),
        (run.switch_at - run.budget_start).as_secs_f64(),
        run.owner.map_or(0.0, |(.., d)| d.as_secs_f64()),
        o.flood,
        ms(PROBE_EVERY),
    );
    let _ = writeln!(r, "| figure | value |\n|---|---|");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(r, "| {k} | {v} |");
    };
    row(
        "probes sent / arrived / lost",
        format!(
            "{sent} / {} / {lost}{}",
            sent - lost,
            if send_errors > 0 {
                format!(" ({send_errors} send errors)")
            } else {
                String::new()
            }
        ),
    );
    row(
        "probes with the wrong translation (to the masqueraded / the exempt destination)",
        format!(
            "{wrong} ({} / {}); outside every tamper window: **{}**",
            wrong_by_dst[0],
            wrong_by_dst[1],
            outside.len() + in_commit
        ),
    );
    row(
        "exempt probes masqueraded while a commit created the table's sets (table missing, or recreated for another owner flag; the kernel's new-set gap, which those forms cannot avoid)",
        in_create.to_string(),
    );
    row(
        "… of those, exempt probes masqueraded during the agent's own in-place or difference commit (new set not yet searchable); longest lead",
        format!(
            "{in_commit}{}; {}",
            if in_commit > 0 && o.accept_new_set_gap {
                " (tolerated: --accept-new-set-gap)"
            } else {
                ""
            },
            ms(in_commit_lead)
        ),
    );
    row(
        "tamper actions (main / budget / owner phase); changed the table",
        format!(
            "{} ({} / {} / {}); {}",
            tampers.len(),
            phase_len(Phase::Main),
            phase_len(Phase::Budget),
            owner_tampers.len(),
            breaks.len()
        ),
    );
    row(
        "longest tamper window (tamperer started → repair seen)",
        ms(window_max),
    );
    let mut rf = reaction_free.clone();
    let mut bf = beyond_free.clone();
    row(
        "change seen → repair seen, budget free: median / p99 / max",
        format!(
            "{} / {} / {} ({} breaks)",
            ms(pct(&mut rf, 0.5)),
            ms(pct(&mut rf, 0.99)),
            ms(rf.last().copied().unwrap_or_default()),
            rf.len()
        ),
    );
    row(
        "… beyond the tamperer's exit (the kernel's own wait): median / max",
        format!(
            "{} / {}",
            ms(pct(&mut bf, 0.5)),
            ms(bf.last().copied().unwrap_or_default())
        ),
    );
    let mut ra = reaction_all.clone();
    row(
        "change seen → repair seen, all breaks (budget deferrals included): median / max",
        format!(
            "{} / {}",
            ms(pct(&mut ra, 0.5)),
            ms(ra.last().copied().unwrap_or_default())
        ),
    );
    row(
        "calm breaks: repaired after the tamperer's exit, max (limit)",
        format!(
            "{} ({}; {} breaks)",
            ms(calm_repairs.iter().max().copied().unwrap_or_default()),
            ms(CALM_REPAIR_LIMIT),
            calm_repairs.len()
        ),
    );
    row(
        "probe in flight (sent → arrived): median / max",
        format!(
            "{:.2} ms / {}",
            pct(&mut in_flight, 0.5).as_secs_f64() * 1e3,
            ms(in_flight.last().copied().unwrap_or_default())
        ),
    );
    row(
        "agent commits (main + budget phase / owner phase); config swaps",
        format!(
            "{} / {}; {}",
            main_commits.len(),
            owner_pid.map_or(0, |p| commits_of(p).len()),
            swaps.len()
        ),
    );
    row(
        "most agent commits starting in any 10 s (budget allows)",
        format!("{most} ({allowed}); in the budget phase: {budget_most}"),
    );
    row(
        "budget phase: commits made with the budget spent, all ≥ 0.7 s apart",
        format!(
            "{paced}, {}",
            if too_fast.is_empty() { "yes" } else { "NO" }
        ),
    );
    row(
        "/healthz during the flood: asked / not 200; median / p99 / worst",
        format!(
            "{} / {}{}; {} / {} / {}",
            checks.len(),
            not_ok.len(),
            if not_ok.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    not_ok
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            ms(health_median),
            ms(health_p99),
            ms(health_worst)
        ),
    );
    row(
        "flood: slow heads, oversized heads, silent (connections)",
        format!(
            "{}, {}, {}",
            f(0, |s| &s.connections),
            f(1, |s| &s.connections),
            f(2, |s| &s.connections)
        ),
    );
    row(
        "flood: longest a slow head / a silent connection was kept (header timeout)",
        format!(
            "{} / {} ({})",
            ms(Duration::from_millis(f(0, |s| &s.held_max_ms))),
            ms(Duration::from_millis(f(2, |s| &s.held_max_ms))),
            ms(HEADER_TIMEOUT)
        ),
    );
    row(
        "flood: oversized heads answered 431 / other / no answer",
        format!(
            "{} / {} / {}",
            f(1, |s| &s.status_431),
            f(1, |s| &s.status_other) + f(1, |s| &s.status_2xx) + f(1, |s| &s.status_408),
            f(1, |s| &s.no_reply)
        ),
    );
    row(
        "agent RSS after warm-up: first / last / min / max; peak (VmHWM) at warm-up → end",
        format!(
            "{rss_first:.1} / {rss_last:.1} / {rss_min:.1} / {rss_max:.1} MiB; {hwm_warm:.1} → {hwm_end:.1} MiB"
        ),
    );
    row(
        "agent open fds after warm-up: first / last / min / max (TCP at most; others min-max)",
        format!(
            "{fd_first} / {fd_last} / {fd_min} / {fd_max} ({tcp_max}; {other_min}-{other_max})"
        ),
    );
    row(
        "owner on: tamper actions refused (flush skips the table) / touching the table",
        format!(
            "{owner_refused} of {} / {owner_touched}",
            owner_tampers.len()
        ),
    );
    let _ = writeln!(r);

    let rec = |k: &str, v: f64| record_value(&format!("soak.{k}"), v);
    rec("minutes", o.total.as_secs_f64() / 60.0);
    rec("prefixes", o.prefixes as f64);
    rec("probes.sent", sent as f64);
    rec("probes.lost", lost as f64);
    rec("probes.wrong", wrong as f64);
    rec("probes.wrong_outside", outside.len() as f64);
    rec("probes.wrong_in_own_commit", in_commit as f64);
    rec("probes.wrong_in_creating_commit", in_create as f64);
    rec("tamper.actions", tampers.len() as f64);
    rec("tamper.breaks", breaks.len() as f64);
    rec("window.max_ms", window_max.as_secs_f64() * 1e3);
    rec("repair.median_ms", pct(&mut rf, 0.5).as_secs_f64() * 1e3);
    rec(
        "repair.beyond.median_ms",
        pct(&mut bf, 0.5).as_secs_f64() * 1e3,
    );
    rec("repair.late", late.len() as f64);
    rec("commits", main_commits.len() as f64);
    rec("commits.max10s", most as f64);
    rec("commits.allowed10s", allowed as f64);
    rec("healthz.p99_ms", health_p99.as_secs_f64() * 1e3);
    rec("healthz.max_ms", health_worst.as_secs_f64() * 1e3);
    rec("healthz.not_ok", not_ok.len() as f64);
    rec("rss.first_mib", rss_first);
    rec("rss.last_mib", rss_last);
    rec("rss.max_mib", rss_max);
    rec("rss.spread_mib", rss_max - rss_min);
    rec("rss.hwm_growth_mib", hwm_end - hwm_warm);
    rec("fds.first", fd_first);
    rec("fds.last", fd_last);
    rec("fds.max", fd_max);
    rec("fds.other_spread", other_max - other_min);
    r
}
