//! Issue 17: other components' rules can never stall, blind or kill the agent. Each test
//! builds another component's NAT table in the node namespace (a hostile jump graph, a huge
//! set, thousands of masquerade rules) and runs the real binary next to it: the loop that
//! keeps our table in force must go on answering /healthz, committing config changes,
//! repairing and exiting on SIGTERM, whatever the analysis of the other table costs; its
//! memory must stay within the budget of its own limits; its log must stay readable.
//! Timing claims are measured and printed (`--nocapture` shows them). `NMA_AGENT_BIN` runs
//! them against another build. Needs root.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nft_masq_agent::kernel::nft::{self, NftSocket};
use nft_masq_agent::model::{
    self, BaseChain, Chain, Family, HOOK_POSTROUTING, Rule, Set, Stmt, Table,
};
use nix::sys::signal::Signal;
use nma_testkit::configs::spaced_hosts;
use nma_testkit::http::{assert_quick, probe};
use nma_testkit::{Agent, ConfigMap, Reply, Topology, heavy, root_or_skip, run, wait_until};

/// The bound the issue sets for the loop's reactions (three times that in an emulated
/// guest, see [`nma_testkit::slack`]).
fn second() -> Duration {
    Duration::from_secs(1) * nma_testkit::slack()
}

/// Generous bound for what is not the claim (start-up on a loaded machine, loading a
/// fixture), and how long a failing test waits to measure what it reports.
/// `NMA_PATIENCE_SECS` sets it, to measure how long an older build really takes.
fn patience() -> Duration {
    let secs = std::env::var("NMA_PATIENCE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs) * nma_testkit::slack()
}

/// Where the agent serves its endpoint: the node's address, asked from the remote
/// namespace. A connection begun inside the node namespace crosses its NAT postrouting
/// hook, where the kernel itself walks the hostile graph for the first packet (all 4^12
/// paths: 0.8 s per connection at depth 12), which would time the kernel, not the agent.
const ENDPOINT: &str = "198.51.100.1:9983";

/// The agent's flags for these tests.
const FLAGS: &[&str] = &["--table-owner", "off", "--metrics-address", ENDPOINT];

/// `GET path` on the agent's endpoint from the remote namespace, bounded by 5 s (a failure
/// to connect or read is a reply of status 0).
fn get(t: &Topology, path: &str) -> Reply {
    t.remote.enter(|| ask(path))
}

/// `GET path` on [`ENDPOINT`] from the calling thread's namespace.
fn ask(path: &str) -> Reply {
    let endpoint: SocketAddr = ENDPOINT.parse().expect("address");
    probe(endpoint, path, Duration::from_secs(5))
}

/// One metric series (0 if absent).
fn metric(t: &Topology, series: &str) -> f64 {
    let r = get(t, "/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    nma_testkit::series(&r.body, series)
}

/// Asks `/healthz` every 50 ms from the remote namespace until told to stop; each ask
/// bounded by 5 s, so a stalled agent shows as a slow or failed reply, not a hung test.
struct Prober {
    done: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Reply>>,
}

impl Prober {
    fn start(t: &Topology) -> Prober {
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let thread = t.remote.spawn(move || {
            let mut replies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                replies.push(ask("/healthz"));
                std::thread::sleep(Duration::from_millis(50));
            }
            replies
        });
        Prober { done, thread }
    }

    fn stop(self) -> Vec<Reply> {
        self.done.store(true, Ordering::Relaxed);
        self.thread.join().expect("prober")
    }
}

/// `table ip hostile`: a NAT postrouting chain at priority srcnat jumping 4 times to `c1`,
/// each `ci` 4 times to `c(i+1)`, down to `c<depth>`, whose one rule masquerades an address
/// no probe asks about: 4^depth paths through 4 × depth + 1 rules, and the walk never stops
/// early. The kernel checks it at once; an analysis that walks every path never ends.
fn hostile_dag(depth: usize) -> String {
    let mut s = String::from(
        "table ip hostile {\n chain postrouting {\n  type nat hook postrouting priority srcnat; \
         policy accept;\n",
    );
    let jumps = |s: &mut String, to: usize| {
        for _ in 0..4 {
            s.push_str(&format!("  jump c{to}\n"));
        }
    };
    jumps(&mut s, 1);
    s.push_str(" }\n");
    for i in 1..depth {
        s.push_str(&format!(" chain c{i} {{\n"));
        jumps(&mut s, i + 1);
        s.push_str(" }\n");
    }
    s.push_str(&format!(
        " chain c{depth} {{\n  ip daddr 192.0.2.1 masquerade\n }}\n}}\n"
    ));
    s
}

/// Waits until our table is listed as `good` again, returning how long that took.
fn time_to_repair(t: &Topology, good: &str, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    wait_until(timeout, || t.listing().as_deref() == Some(good)).then(|| start.elapsed())
}

/// Flushes our chain and measures the repair.
fn flush_and_time_repair(t: &Topology, good: &str) -> Option<Duration> {
    run(t
        .node
        .cmd("nft")
        .args(["flush", "chain", "inet", "nft-masq-agent", "postrouting"]));
    time_to_repair(t, good, patience())
}

/// Sends SIGTERM and measures the exit.
fn time_to_exit(agent: &mut Agent, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit(timeout)?;
    assert!(status.success(), "exit status {status}");
    Some(start.elapsed())
}

const BEFORE: &str = "nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n";
const AFTER: &str = "nonMasqueradeCIDRs: [10.0.0.0/8, 198.18.0.0/15]\n";

/// Finding 1: with a hostile jump graph of `depth` levels next to our table, the loop
/// answers `/healthz` (every 50 ms) with 200 throughout, commits a ConfigMap swap and
/// repairs a flushed chain within a second each, and exits on SIGTERM within a second.
/// Failed before the analysis left the loop: one pass walked the graph on the loop thread
/// for minutes, /healthz answered 503 and nothing else happened until it ended.
fn hostile_dag_never_stalls_the_loop(depth: usize) {
    root_or_skip!();
    let depth = nma_testkit::env::kernel_walkable_depth(depth);
    let _heavy = heavy();
    let t = Topology::new(&format!("dag{depth}"));
    t.node.nft_file(&hostile_dag(depth));
    let mut cm = ConfigMap::new(t.dir.join("config"), BEFORE);
    let mut agent = t.start(&cm.path(), FLAGS);
    let prober = Prober::start(&t);
    // The analysis of the hostile table starts right after the first commit: probe for a
    // while before anything else, so that the probes span the analysis.
    std::thread::sleep(Duration::from_secs(2));

    let commits = agent.commit_count();
    cm.update(AFTER);
    let config = agent.wait_commits(commits + 1, patience());
    let good = t.listing().unwrap_or_default();
    let repair = flush_and_time_repair(&t, &good);
    std::thread::sleep(Duration::from_secs(1));
    let replies = prober.stop();
    let exit = time_to_exit(&mut agent, patience());
    let log = agent.log();
    eprintln!(
        "hostile graph, depth {depth}: config change committed after {config:?}, flushed chain \
         repaired after {repair:?}, exit after SIGTERM {exit:?}; /healthz {} probes, worst {:?}, \
         {} not 200",
        replies.len(),
        replies.iter().map(|r| r.took).max().unwrap_or_default(),
        replies.iter().filter(|r| r.status != 200).count(),
    );
    assert!(
        config.is_some_and(|d| d < second()),
        "config change committed after {config:?}:\n{log}"
    );
    assert!(good.contains("198.18.0.0/15"), "{good}\n{log}");
    assert!(
        repair.is_some_and(|d| d < second()),
        "repair after {repair:?}:\n{log}"
    );
    assert!(
        exit.is_some_and(|d| d < second()),
        "exit after SIGTERM took {exit:?}:\n{log}"
    );
    assert!(
        replies.len() >= 20,
        "too few probes to tell: {}",
        replies.len()
    );
    assert_quick(&replies, second(), "/healthz", &log);
}

/// The depth 12: 49 rules, 16.7 million paths.
#[test]
fn hostile_jump_graph_of_depth_12_never_stalls_the_loop() {
    hostile_dag_never_stalls_the_loop(12);
}

/// The deepest graph the kernel accepts: 15 jumps below the base chain, 16 chains on each
/// path (one more and it refuses the rule with EMLINK, its jump stack being 16 deep).
#[test]
fn hostile_jump_graph_as_deep_as_the_kernel_allows_never_stalls_the_loop() {
    hostile_dag_never_stalls_the_loop(15);
}

/// Commits `table inet bulk` in the node namespace: a NAT postrouting chain at priority
/// srcnat whose one rule is `meta l4proto tcp masquerade` (a conflict the analysis reports
/// once it has read the table: the sign that it has), and a set of `n` elements no rule
/// uses (kube-proxy's table holds its service maps next to its `nat-postrouting` chain).
/// Committed through the agent's own encoder: one batch, 2.6 s, where `nft -f` of 500,000
/// elements takes 6 s and 384 MB (and one `add element` per 50,000 a minute, each reading
/// the set back first).
fn bulk_table(t: &Topology, n: usize) {
    let table = Table {
        name: "bulk".into(),
        flags: Default::default(),
        sets: vec![Set {
            name: "big".into(),
            family: Family::V4,
            prefixes: spaced_hosts(Ipv4Addr::new(30, 0, 0, 0), n),
        }],
        name_sets: Vec::new(),
        maps: Vec::new(),
        dispatch: Vec::new(),
        chains: vec![Chain {
            name: "postrouting".into(),
            base: Some(BaseChain {
                kind: "nat".into(),
                hook: HOOK_POSTROUTING,
                priority: 100,
                policy: model::POLICY_ACCEPT,
            }),
            rules: vec![Rule {
                stmts: vec![
                    Stmt::L4proto(6),
                    Stmt::Masquerade {
                        flags: 0,
                        ports: None,
                    },
                ],
            }],
        }],
        foreign: Vec::new(),
    };
    t.node
        .enter(|| {
            let mut sock = NftSocket::open()?;
            nft::replace_table(&mut sock, &table)
        })
        .expect("commit table inet bulk");
}

/// The agent's documented peak at the prefix cap (docs/design.md, "Limits": 35.5-42.9 MiB,
/// at most 67 % of the DaemonSet's 64 MiB limit). Whatever other tables hold, the agent
/// must fit in what its own largest table needs, else a node with a big kube-proxy table
/// gets it OOM-killed.
const PEAK_BUDGET_KIB: u64 = 43 * 1024;

/// Finding 2: a foreign table with a NAT postrouting chain and a set of 500,000 elements no
/// rule uses. The agent's peak memory stays within the budget documented for its own
/// limits (it read every element, 77.6 MB at 520,000: past the DaemonSet's 64 MiB), and a
/// flushed chain of ours is repaired within a second while the agent looks at that table
/// (the read of every element took 9 s at 400,000, on the loop: the repair waited 14 s).
/// Needs the bounded foreign read (helper A's part of issue 17) for its memory claim.
#[test]
fn a_huge_foreign_set_costs_no_memory_and_no_repair_time() {
    root_or_skip!();
    let _heavy = heavy();
    let t = Topology::new("bulk");
    // In an emulated guest 150,000 elements: loading and reading cost time there, and the
    // memory claim is about what is read, not how fast.
    let n = if nma_testkit::emulated() {
        150_000
    } else {
        500_000
    };
    let loading = Instant::now();
    bulk_table(&t, n);
    eprintln!(
        "finding 2: table inet bulk with {n} elements committed in {:?}",
        loading.elapsed()
    );
    // A full check every second: the other tables are looked at again and again.
    let cfg = t.config("ip-masq-agent", "resyncInterval: 1s\n");
    let agent = t.start(&cfg, FLAGS);
    let good = t.listing().unwrap_or_default();
    // The analysis of table bulk begins right after the first commit: repairs while it runs.
    let mut repairs = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        repairs.push(flush_and_time_repair(&t, &good));
    }
    // The analysis has looked at table bulk once its rule is counted; then a few more checks.
    let started = Instant::now();
    let analysed = wait_until(patience(), || {
        metric(&t, "nft_masq_agent_conflicting_nat_rules") == 1.0
    });
    let analysis = started.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let peak = agent.peak_kib().expect("VmHWM");
    let log = agent.log();
    eprintln!(
        "finding 2: {n} foreign elements: repairs after {repairs:?}; conflict reported {:?} \
         after the last repair; peak memory {:.1} MiB (budget {} MiB)",
        analysed.then_some(analysis),
        peak as f64 / 1024.0,
        PEAK_BUDGET_KIB / 1024
    );
    assert!(analysed, "table bulk was never analysed:\n{log}");
    for r in &repairs {
        assert!(
            r.is_some_and(|d| d < second()),
            "repair after {r:?} (all: {repairs:?}):\n{log}"
        );
    }
    assert!(
        peak <= PEAK_BUDGET_KIB,
        "peak memory {peak} KiB over the budget of {PEAK_BUDGET_KIB} KiB:\n{log}"
    );
}

/// `table ip crowd`: a NAT postrouting chain at priority srcnat with `n` rules
/// `tcp dport N masquerade`.
fn crowd(n: usize) -> String {
    let mut s = String::from(
        "table ip crowd {\n chain postrouting {\n  type nat hook postrouting priority srcnat; \
         policy accept;\n",
    );
    for p in 1..=n {
        s.push_str(&format!("  tcp dport {p} masquerade\n"));
    }
    s.push_str(" }\n}\n");
    s
}

/// Warnings of the log that report other NAT rules translating before ours.
fn conflict_lines(agent: &Agent) -> usize {
    agent
        .lines()
        .iter()
        .filter(|l| l.level == "WARN" && l.message.contains("before ours"))
        .count()
}

/// Finding 6: thousands of foreign masquerade rules (each overrides every exempt range
/// for its port) are reported in a handful of log lines, at start and after each change,
/// and counted in the gauge. Failed before: one warning per rule at start (3,003 lines) and
/// again after every change (12,009 after three toggles).
#[test]
fn thousands_of_foreign_masquerade_rules_make_a_handful_of_log_lines() {
    root_or_skip!();
    let _heavy = heavy();
    let t = Topology::new("crowd");
    let n = if nma_testkit::emulated() {
        1_000
    } else {
        3_000
    };
    t.node.nft_file(&crowd(n));
    // A full check every second: each sees the toggled rule.
    let cfg = t.config("ip-masq-agent", "resyncInterval: 1s\n");
    let agent = t.start(&cfg, FLAGS);
    let gauge = |want: usize| {
        wait_until(patience(), || {
            metric(&t, "nft_masq_agent_conflicting_nat_rules") == want as f64
        })
    };
    assert!(
        gauge(n),
        "gauge {} instead of {n}:\n{}",
        metric(&t, "nft_masq_agent_conflicting_nat_rules"),
        agent.log()
    );
    let at_start = conflict_lines(&agent);
    // Three toggles of one rule: deleted, then added back, each seen by the gauge.
    let handle = |t: &Topology| -> String {
        let rules = t
            .node
            .nft(&["-a", "list", "chain", "ip", "crowd", "postrouting"]);
        rules
            .lines()
            .find(|l| l.contains("dport 7 masquerade"))
            .and_then(|l| l.rsplit("handle ").next())
            .unwrap_or_else(|| panic!("no rule for port 7:\n{rules}"))
            .trim()
            .to_string()
    };
    for _ in 0..3 {
        let h = handle(&t);
        run(t
            .node
            .cmd("nft")
            .args(["delete", "rule", "ip", "crowd", "postrouting", "handle", &h]));
        assert!(gauge(n - 1), "gauge never said {}:\n{}", n - 1, agent.log());
        run(t.node.cmd("nft").args([
            "add",
            "rule",
            "ip",
            "crowd",
            "postrouting",
            "tcp",
            "dport",
            "7",
            "masquerade",
        ]));
        assert!(gauge(n), "gauge never said {n} again:\n{}", agent.log());
    }
    let log = agent.log();
    let total = conflict_lines(&agent);
    eprintln!(
        "finding 6: {n} foreign masquerade rules: {at_start} conflict lines at start, {total} \
         after three toggles; log {} bytes",
        log.len()
    );
    assert!(
        (1..=2).contains(&at_start),
        "{at_start} conflict lines at start:\n{}",
        log.lines().take(40).collect::<Vec<_>>().join("\n")
    );
    assert!(
        total <= 10,
        "{total} conflict lines after three toggles:\n{}",
        log.lines().take(40).collect::<Vec<_>>().join("\n")
    );
    assert!(log.len() < 64 * 1024, "log of {} bytes", log.len());
}
