//! Live-agent benchmark: how fast the running daemon reacts, and what it costs at rest.
//! Everything runs in a throwaway network namespace; needs root. Prints numbers.
//!
//! - config: a ConfigMap-style `..data` swap until the new table is committed;
//! - tamper: `nft flush ruleset`, `nft delete table`, `nft delete rule` until the repair is
//!   committed, next to the kernel's own wait (a commit issued right after the same change,
//!   without an agent), with the owner flag off; with it on, whether the table is touched;
//! - start: process start until the first commit;
//! - idle: CPU time and wake-ups (context switches) of the idle daemon over a period;
//! - memory: resident set size with 64 and with 100,000 prefixes;
//! - scale: at 50,000 and 150,000 prefixes, an element deleted, a rule deleted, the set
//!   flushed and the table deleted, each until repaired, beyond the kernel's own wait;
//! - restart: a new process with the config already in force at 10,000 and 100,000
//!   prefixes: what it sends (nothing) and process start -> ready;
//! - once: whole-process `--once` at 10,000 prefixes against a table equal to the config,
//!   as `nft -f` left it, alternating with `nft -f` of the same ruleset (spawn to exit,
//!   wall time), and the ratio pair by pair.
//!
//! Times are taken from outside the agent: from the kernel's nftables notifications
//! (NEWGEN, the end of each transaction) received by this process.
//!
//! `cargo bench --bench live [-- --runs 21 --idle-seconds 60 --sections config,tamper,start,idle,memory,scale,restart,once]`
//! (`--scale-prefixes 50000,150000 --restart-prefixes 10000,100000 --scale-runs 5
//! --once-prefixes 10000`;
//! `--scale-max-set-prefixes N` runs the scale section with the exemptions cut at N instead of
//! the default, 1000000 keeping one set: the layout before block sets, for comparison)

mod support;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nft_masq_agent::config::PolicyFlags;
use nft_masq_agent::kernel::nft::events::{Event, EventSocket};
use nft_masq_agent::kernel::nft::{self, NftSocket};
use nft_masq_agent::model::{self, TABLE_NAME};
use nma_testkit::configs::ConfigText;
use nma_testkit::listing::handle_of;
use nma_testkit::{Agent, AgentBuilder, ConfigMap, Netns, agent_bin};
use support::{PREFIX, Stats, arg, record, record_value};

/// A listener for transaction ends (NEWGEN), timestamped on receipt.
struct Gens {
    sock: EventSocket,
    /// Received but not yet consumed, with their arrival time.
    queue: std::collections::VecDeque<(Instant, Event)>,
}

impl Gens {
    fn new() -> Gens {
        Gens {
            sock: EventSocket::open().expect("event socket"),
            queue: Default::default(),
        }
    }

    /// Drops everything received so far.
    fn clear(&mut self) {
        let _ = self.sock.drain();
        self.queue.clear();
    }

    /// Waits for the next NEWGEN of a transaction that touched our table; returns when it
    /// arrived and the committing port id.
    fn next(&mut self, timeout: Duration) -> Option<(Instant, u32)> {
        let end = Instant::now() + timeout;
        let mut touched = false;
        loop {
            while let Some((at, ev)) = self.queue.pop_front() {
                match ev {
                    Event::Object { table, .. } if table == TABLE_NAME => touched = true,
                    Event::Generation { port_id, .. } if touched => return Some((at, port_id)),
                    _ => {}
                }
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut fds = [nix::poll::PollFd::new(
                self.sock.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let _ = nix::poll::poll(&mut fds, ms);
            let now = Instant::now();
            // A large commit's element notifications can overflow the buffer (ENOBUFS); a
            // transaction end lost with them shows as a timeout, never as a wrong time.
            let drained = self.sock.drain().expect("drain");
            self.queue
                .extend(drained.events.into_iter().map(|e| (now, e)));
        }
    }
}

/// The daemon from `bin` in this (the benchmark's) namespace, its log discarded (warnings
/// only: the figures are taken from the kernel's notifications).
fn spawn_from(bin: &Path, config: &Path, args: &[&str]) -> Agent {
    AgentBuilder::new(bin, None)
        .config(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .spawn()
}

fn spawn_agent(config: &Path, args: &[&str]) -> Agent {
    spawn_from(&agent_bin(), config, args)
}

fn nft(args: &[&str]) {
    let st = Command::new("nft").args(args).status().expect("nft");
    assert!(st.success(), "nft {args:?} failed");
}

fn rule_handle() -> String {
    let out = Command::new("nft")
        .args(["-a", "list", "chain", "inet", TABLE_NAME, "postrouting"])
        .output()
        .expect("nft");
    handle_of(&String::from_utf8_lossy(&out.stdout), "@nonmasq-")
        .expect("rule handle")
        .to_string()
}

fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The binary whose memory is measured: the static (musl) build the image ships when
/// `benches/run` built it, else the one cargo built for this benchmark. Their allocators
/// differ (glibc's per-thread arenas hold on to more), and the DaemonSet's limit is about the
/// image.
fn shipped_bin() -> PathBuf {
    let musl = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/x86_64-unknown-linux-musl/release/nft-masq-agent");
    if musl.exists() { musl } else { agent_bin() }
}

/// Resident memory at rest for a few table sizes, and the peak at `--max-prefixes`' default
/// with the largest keys (IPv6): start-up commit, a ConfigMap swap to another table of that
/// size, full checks every second (each reads the whole table back) and a repair. The peak
/// must stay within 75 % of the DaemonSet's 64 MiB limit.
fn memory(dir: &Path, gens: &mut Gens) -> anyhow::Result<()> {
    use nft_masq_agent::config::DEFAULT_MAX_PREFIXES;
    let bin = shipped_bin();
    let which = if bin == agent_bin() {
        "glibc"
    } else {
        "static musl"
    };
    let spawn = |config: &Path, args: &[&str]| spawn_from(&bin, config, args);
    let mib = |kib: u64| kib as f64 / 1024.0;
    for n in [64usize, 10_000, 100_000] {
        let p = dir.join(format!("mem-{n}"));
        std::fs::write(&p, config_text(n))?;
        gens.clear();
        let agent = spawn(&p, &["--table-owner", "off"]);
        gens.next(Duration::from_secs(30)).expect("startup commit");
        std::thread::sleep(Duration::from_millis(300));
        let pid = agent.pid();
        let rss = proc_field(pid, "status", "VmRSS:");
        let hwm = proc_field(pid, "status", "VmHWM:");
        println!(
            "| resident memory, {n} prefixes ({which}) | {:.1} MiB (peak {:.1} MiB) | | |",
            mib(rss),
            mib(hwm)
        );
        record_value(&format!("rss.{n}"), mib(rss));
    }

    // At the cap: IPv6 /64s (16-byte keys, the largest elements), link-local ranges
    // included in the count, so the table holds exactly DEFAULT_MAX_PREFIXES prefixes.
    let cap = DEFAULT_MAX_PREFIXES;
    let text = |shift: u128| {
        let base = u128::from(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0));
        let nets: Vec<String> = (0..(cap as u128 - 2))
            .map(|i| {
                format!(
                    "{}/64",
                    std::net::Ipv6Addr::from(base + (((i + shift) * 2) << 64))
                )
            })
            .collect();
        ConfigText::new()
            .resync("1s")
            .non_masquerade(&nets)
            .render()
    };
    let mut cm = ConfigMap::new(dir.join("mem-cap"), &text(0));
    gens.clear();
    let agent = spawn(&cm.path(), &["--table-owner", "off", "--enable-ipv6"]);
    let pid = agent.pid();
    gens.next(Duration::from_secs(60)).expect("startup commit");
    // A new table: its sets, then its rules, in two transactions.
    gens.next(Duration::from_secs(60))
        .expect("startup commit's rules");
    cm.update(&text(1));
    gens.next(Duration::from_secs(60)).expect("config commit");
    std::thread::sleep(Duration::from_secs(3)); // full checks, once a second
    nft(&["delete", "table", "inet", TABLE_NAME]);
    gens.clear();
    gens.next(Duration::from_secs(60)).expect("repair commit");
    std::thread::sleep(Duration::from_secs(2));
    let rss = proc_field(pid, "status", "VmRSS:");
    let hwm = proc_field(pid, "status", "VmHWM:");
    println!(
        "| memory at the --max-prefixes default ({cap} IPv6 prefixes; start, swap, checks each second, repair; {which}) | peak {:.1} MiB (resident after {:.1} MiB) | at most 48 MiB (75 % of the 64 MiB limit) | |",
        mib(hwm),
        mib(rss)
    );
    record_value("rss.cap_peak", mib(hwm));
    Ok(())
}

/// utime + stime of a process, in clock ticks, and context switches of all its threads.
fn cpu_and_switches(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let mut switches = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let tid = t.file_name().to_string_lossy().to_string();
            switches += proc_field(
                pid,
                &format!("task/{tid}/status"),
                "voluntary_ctxt_switches:",
            ) + proc_field(
                pid,
                &format!("task/{tid}/status"),
                "nonvoluntary_ctxt_switches:",
            );
        }
    }
    (ticks, switches)
}

/// The set the scale section's tamper children change (see [`tampered_set`]).
static TAMPER_SET: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The set the tamper child changes: `NMA_TAMPER_SET`, set by the scale section to the
/// block set holding 30.0.0.0/32 (the table may be cut into block sets).
fn tampered_set() -> String {
    std::env::var("NMA_TAMPER_SET").unwrap_or_else(|_| model::SET_V4.into())
}

/// The name of the set of the agent's table for `config` (at `flags`) that holds `prefix`.
fn set_holding(config: &str, flags: &PolicyFlags, prefix: &str) -> String {
    let parsed = nft_masq_agent::config::parse(config.as_bytes(), Path::new("/bench"), flags)
        .expect("bench config");
    let table = model::desired(&parsed.config, flags, Default::default());
    table
        .sets
        .iter()
        .find(|s| s.prefixes.iter().any(|p| p.to_string() == prefix))
        .expect("a set holds it")
        .name
        .clone()
}

fn config_text(prefixes: usize) -> String {
    ConfigText::new()
        .non_masquerade(&support::prefixes(prefixes))
        .render()
}

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes, unlike `Instant`.
fn mono_ns() -> u128 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    ts.tv_sec() as u128 * 1_000_000_000 + ts.tv_nsec() as u128
}

/// The tampering process: like `nft`, a separate process that commits one change over its
/// own socket and exits (closing the socket is part of what the kernel makes a repairer
/// wait for). Prints the monotonic time at which its commit was acknowledged.
fn tamper_child(kind: &str, handle: Option<u64>) -> anyhow::Result<()> {
    use nft_masq_agent::kernel::nft::encode;
    use nft_masq_agent::kernel::nft::uapi::*;
    let mut sock = NftSocket::open()?;
    let batch = match kind {
        // nft flush ruleset: DELTABLE without a name, in every family.
        "flush" => encode::single(
            NFT_MSG_DELTABLE,
            NFPROTO_UNSPEC,
            sock.next_seq(),
            kind.into(),
            |_| {},
        ),
        "table" => encode::delete(TABLE_NAME, sock.next_seq()),
        // nft flush set: DELSETELEM without elements.
        "setflush" => encode::single(
            NFT_MSG_DELSETELEM,
            NFPROTO_INET,
            sock.next_seq(),
            kind.into(),
            |w| {
                w.put_str(NFTA_SET_ELEM_LIST_TABLE, TABLE_NAME);
                w.put_str(NFTA_SET_ELEM_LIST_SET, &tampered_set());
            },
        ),
        // nft delete element … { 30.0.0.0 }: the interval's start and end.
        "element" => encode::single(
            NFT_MSG_DELSETELEM,
            NFPROTO_INET,
            sock.next_seq(),
            kind.into(),
            |w| {
                w.put_str(NFTA_SET_ELEM_LIST_TABLE, TABLE_NAME);
                w.put_str(NFTA_SET_ELEM_LIST_SET, &tampered_set());
                let list = w.begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS);
                for (key, end) in [([30u8, 0, 0, 0], false), ([30, 0, 0, 1], true)] {
                    let e = w.begin_nest(NFTA_LIST_ELEM);
                    let k = w.begin_nest(NFTA_SET_ELEM_KEY);
                    w.put(NFTA_DATA_VALUE, &key);
                    w.end_nest(k);
                    if end {
                        w.put_u32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
                    }
                    w.end_nest(e);
                }
                w.end_nest(list);
            },
        ),
        _ => encode::single(
            NFT_MSG_DELRULE,
            NFPROTO_INET,
            sock.next_seq(),
            kind.into(),
            |w| {
                w.put_str(NFTA_RULE_TABLE, TABLE_NAME);
                w.put_str(NFTA_RULE_CHAIN, "postrouting");
                w.put_u64(NFTA_RULE_HANDLE, handle.expect("rule handle"));
            },
        ),
    };
    sock.send_batch(&batch)?;
    let acked = mono_ns();
    // Closing a netfilter socket right after a commit that deleted objects makes the kernel
    // finish that commit's deferred destruction (an RCU grace period) under the commit
    // mutex: every other commit, a repair included, waits for this close.
    drop(sock);
    println!("{acked} {}", mono_ns());
    Ok(())
}

/// Runs the tamper child; returns the monotonic times of its commit's acknowledgement and
/// of the end of its socket close.
fn tamper(kind: &str, handle: Option<u64>) -> (u128, u128) {
    let mut c = Command::new(std::env::current_exe().expect("exe"));
    c.args(["--tamper-child", kind]);
    if let Some(set) = TAMPER_SET.lock().unwrap().as_deref() {
        c.env("NMA_TAMPER_SET", set);
    }
    if let Some(h) = handle {
        c.arg(h.to_string());
    }
    let out = c.output().expect("tamper child");
    assert!(
        out.status.success(),
        "tamper child: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<u128>().expect("child time"));
    (it.next().expect("ack time"), it.next().expect("close time"))
}

/// Waits for the next NEWGEN touching our table and returns the monotonic time of receipt.
fn next_ns(gens: &mut Gens) -> u128 {
    let (at, _) = gens.next(Duration::from_secs(5)).expect("transaction seen");
    mono_ns() - at.elapsed().as_nanos()
}

/// One markdown row: what, median, min, max (ms).
fn row(what: &str, s: &Stats) {
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    println!(
        "| {what} | {} | {} | {} |",
        ms(s.median),
        ms(s.min),
        ms(s.max)
    );
}

const TAMPER_KINDS: [(&str, &str); 3] = [
    ("flush", "flush ruleset"),
    ("table", "delete table"),
    ("rule", "delete rule"),
];

fn tamper_section(gens: &mut Gens, cfg: &Path, runs: usize) -> anyhow::Result<()> {
    let handle = || rule_handle().parse::<u64>().ok();
    let ms = |ns: u128| Duration::from_nanos(ns as u64);
    let mut sock = NftSocket::open()?;
    for (kind, name) in TAMPER_KINDS {
        let mut reaction = Vec::new();
        let mut wait = Vec::new();
        let mut beyond = Vec::new();
        let mut agent = None;
        for i in 0..runs {
            // A fresh agent every 15 changes: its repair budget (20 per 10 s) must not
            // shape the figure.
            if i % 15 == 0 {
                drop(agent.take());
                let _ = nft::delete_table(&mut sock, TABLE_NAME);
                gens.clear();
                agent = Some(spawn_agent(cfg, &["--table-owner", "off"]));
                gens.next(Duration::from_secs(5)).expect("startup commit");
            }
            std::thread::sleep(Duration::from_millis(30));
            gens.clear();
            let h = if kind == "rule" { handle() } else { None };
            // Listen while the tamperer runs: the repair is timestamped when it happens.
            let ((acked, closed), seen, repaired) = std::thread::scope(|s| {
                let child = s.spawn(|| tamper(kind, h));
                let seen = next_ns(gens); // the tamper itself
                let mut repaired = next_ns(gens); // the repair
                if kind != "rule" {
                    // The table is gone: its repair creates the sets, then (a second
                    // transaction) the rules that use them; repaired at the second.
                    repaired = next_ns(gens);
                }
                (child.join().expect("child"), seen, repaired)
            });
            // The change happened no later than its acknowledgement or its notification.
            let changed = acked.min(seen);
            reaction.push(ms(repaired.saturating_sub(changed)));
            wait.push(ms(closed.saturating_sub(changed)));
            beyond.push(ms(repaired.saturating_sub(closed.max(changed))));
        }
        drop(agent);
        let _ = nft::delete_table(&mut sock, TABLE_NAME);
        let (r, w, b) = (Stats::of(reaction), Stats::of(wait), Stats::of(beyond));
        row(&format!("`{name}` → table repaired (owner off)"), &r);
        row(
            "… of which the kernel's own wait (the tamperer's socket close)",
            &w,
        );
        row("… beyond that wait", &b);
        record(&format!("tamper.{kind}.reaction"), r.median);
        record(&format!("tamper.{kind}.beyond.median"), b.median);
        record(&format!("tamper.{kind}.beyond.max"), b.max);
    }

    gens.clear();
    let _agent = spawn_agent(cfg, &["--table-owner", "on"]);
    gens.next(Duration::from_secs(5)).expect("startup commit");
    std::thread::sleep(Duration::from_millis(50));
    let before = Command::new("nft")
        .args(["list", "table", "inet", TABLE_NAME])
        .output()?
        .stdout;
    gens.clear();
    nft(&["flush", "ruleset"]);
    let refused = !Command::new("nft")
        .args(["delete", "table", "inet", TABLE_NAME])
        .stderr(Stdio::null())
        .status()?
        .success();
    let touched = gens.next(Duration::from_millis(500)).is_some();
    let after = Command::new("nft")
        .args(["list", "table", "inet", TABLE_NAME])
        .output()?
        .stdout;
    let untouched = !touched && before == after && refused;
    println!(
        "| `flush ruleset`, `delete table` (owner on) | {} | | |",
        if untouched {
            "table untouched, delete refused: no outage, nothing to repair"
        } else {
            "TABLE CHANGED"
        }
    );
    record_value("tamper.owner.untouched", f64::from(u8::from(untouched)));
    Ok(())
}

/// Repairs of a large table (issue 19): each foreign change at each size, the agent's
/// reaction beyond the kernel's own wait (the tamperer's socket close), as in the tamper
/// section; and a restart with the config in force: elements sent and transactions made
/// (none expected), process start -> ready (the "already as wanted" line).
fn scale_section(
    gens: &mut Gens,
    dir: &Path,
    sizes: &[usize],
    runs: usize,
    max_set_prefixes: usize,
) -> anyhow::Result<()> {
    let ms = |ns: u128| Duration::from_nanos(ns as u64);
    let mut sock = NftSocket::open()?;
    for &n in sizes {
        let cfg = dir.join(format!("scale-{n}"));
        // n prefixes in all (30.0.0.0, the one deleted, first), 10.20.0.0/16 among them: within
        // --max-prefixes (150,000) at its default.
        let text = nma_testkit::configs::hosts_config(n - 1, &["10.20.0.0/16"]);
        std::fs::write(&cfg, &text)?;
        let flags = PolicyFlags {
            max_prefixes: 200_000,
            max_set_prefixes,
            ..PolicyFlags::default()
        };
        // The changes go to the set holding the first host: a full block.
        *TAMPER_SET.lock().unwrap() = Some(set_holding(&text, &flags, "30.0.0.0/32"));
        for (kind, name) in [
            ("element", "element deleted"),
            ("rule", "rule deleted"),
            ("setflush", "set flushed"),
            ("table", "table deleted"),
        ] {
            let _ = nft::delete_table(&mut sock, TABLE_NAME);
            gens.clear();
            let log = dir.join(format!("scale-{n}-{kind}.log"));
            let _ = std::fs::remove_file(&log);
            // --max-prefixes raised: 150,000 is its default, and the figure is at the cap.
            let agent = AgentBuilder::new(agent_bin(), Some(log))
                .config(&cfg)
                .args(["--table-owner", "off", "--max-prefixes", "200000"])
                .args(["--max-set-prefixes", &max_set_prefixes.to_string()])
                .args(["--metrics-address", "off"])
                .spawn();
            gens.next(Duration::from_secs(120)).expect("startup commit");
            let mut beyond = Vec::new();
            let mut wait = Vec::new();
            let mut lost = 0;
            for _ in 0..runs {
                // Apart from each other: the repair budget (20 per 10 s) must not shape it.
                std::thread::sleep(Duration::from_millis(600));
                gens.clear();
                let h = if kind == "rule" {
                    rule_handle().parse::<u64>().ok()
                } else {
                    None
                };
                let ((acked, closed), seen, repaired) = std::thread::scope(|s| {
                    let child = s.spawn(|| tamper(kind, h));
                    let seen = gens.next(Duration::from_secs(60));
                    let mut repaired = gens.next(Duration::from_secs(60));
                    if kind == "table" {
                        // Its repair creates the sets, then (a second transaction) the
                        // rules that use them: repaired at the second.
                        repaired = gens.next(Duration::from_secs(60));
                    }
                    (child.join().expect("child"), seen, repaired)
                });
                let (Some((seen, _)), Some((repaired, _))) = (seen, repaired) else {
                    lost += 1;
                    continue;
                };
                let at = |i: Instant| mono_ns() - i.elapsed().as_nanos();
                let changed = acked.min(at(seen));
                wait.push(ms(closed.saturating_sub(changed)));
                beyond.push(ms(at(repaired).saturating_sub(closed.max(changed))));
            }
            // The agent's own account of each repair: its commit path, most of it the
            // kernel applying the batch.
            let commits = agent.commits();
            let repair_ms: Vec<Duration> = commits
                .iter()
                .skip(1)
                .map(|c| Duration::from_secs_f64(c.duration_ms / 1e3))
                .collect();
            let sent: Vec<u64> = commits.iter().skip(1).filter_map(|c| c.sent).collect();
            let form = commits
                .last()
                .and_then(|c| c.form.clone())
                .unwrap_or_default();
            drop(agent);
            if beyond.is_empty() {
                println!("| {n} prefixes: {name} → repaired | notifications lost | | |");
                continue;
            }
            let (b, w) = (Stats::of(beyond), Stats::of(wait));
            let note = if lost > 0 {
                format!(" ({lost} runs lost)")
            } else {
                String::new()
            };
            row(
                &format!("{n} prefixes: {name} → repaired, beyond the kernel's wait{note}"),
                &b,
            );
            row("… the kernel's own wait (the tamperer's socket close)", &w);
            if !repair_ms.is_empty() {
                row(
                    &format!(
                        "… of which the repair's commit, as the agent logs it ({form}, {} elements sent)",
                        sent.first().copied().unwrap_or(0)
                    ),
                    &Stats::of(repair_ms),
                );
            }
            record(&format!("scale.{n}.{kind}.beyond.median"), b.median);
            record(&format!("scale.{n}.{kind}.beyond.max"), b.max);
        }
    }
    let _ = nft::delete_table(&mut sock, TABLE_NAME);
    *TAMPER_SET.lock().unwrap() = None;
    Ok(())
}

/// A restart with the config already in force, at each size: the elements its first
/// commit sent and the transactions it made (both 0 expected: it reads the table and finds
/// it wanted), and process start -> "already as wanted" logged (ready).
fn restart_section(
    gens: &mut Gens,
    dir: &Path,
    sizes: &[usize],
    runs: usize,
) -> anyhow::Result<()> {
    let mut sock = NftSocket::open()?;
    for &n in sizes {
        let cfg = dir.join(format!("restart-{n}"));
        std::fs::write(&cfg, nma_testkit::configs::hosts_config(n, &[]))?;
        let _ = nft::delete_table(&mut sock, TABLE_NAME);
        gens.clear();
        let first = spawn_agent(&cfg, &["--table-owner", "off"]);
        // A new table: its sets, then its rules (two transactions); stopped before the
        // second, it would leave a table without chains for the restart to complete.
        gens.next(Duration::from_secs(120)).expect("startup commit");
        gens.next(Duration::from_secs(120))
            .expect("startup commit's rules");
        drop(first);
        let log = dir.join(format!("restart-{n}.log"));
        let mut ready = Vec::new();
        let mut transactions = 0;
        let mut sent = 0;
        for _ in 0..runs {
            let _ = std::fs::remove_file(&log);
            gens.clear();
            let t0 = Instant::now();
            let agent = AgentBuilder::new(agent_bin(), Some(log.clone()))
                .config(&cfg)
                .args(["--table-owner", "off", "--metrics-address", "off"])
                .spawn();
            let mut seen = false;
            while t0.elapsed() < Duration::from_secs(120) {
                // Nothing to commit, or (an older build) the first commit.
                if agent.has("already as wanted") || agent.commit_count() > 0 {
                    seen = true;
                    break;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            ready.push(t0.elapsed());
            assert!(seen, "not ready:\n{}", agent.log());
            sent += agent.commits().iter().filter_map(|c| c.sent).sum::<u64>();
            if gens.next(Duration::from_millis(200)).is_some() {
                transactions += 1;
            }
            drop(agent);
        }
        let s = Stats::of(ready);
        row(
            &format!(
                "restart, config in force, {n} prefixes: process start → ready \
                 ({sent} elements sent, {transactions} transactions in {runs} restarts)"
            ),
            &s,
        );
        record(&format!("restart.{n}.ready"), s.median);
        record_value(&format!("restart.{n}.sent"), sent as f64);
        record_value(
            &format!("restart.{n}.transactions"),
            f64::from(transactions),
        );
    }
    let _ = nft::delete_table(&mut sock, TABLE_NAME);
    Ok(())
}

/// Whole-process `--once` with `n` prefixes against a table equal to the config, as
/// `nft -f` left it, and `nft -f` of the same ruleset, alternating: `runs` pairs after one
/// of each not counted, each timed from spawn to exit. The ruleset is the agent's own
/// `--dry-run`, loaded as a replace (the table declared, deleted and declared again: what
/// an operator's `nft -f` of a whole table does), so each pair starts from the same table;
/// the agent then finds it equal and sends nothing (counted from the ruleset generation).
fn once_section(dir: &Path, n: usize, runs: usize) -> anyhow::Result<()> {
    let cfg = dir.join(format!("once-{n}"));
    std::fs::write(&cfg, nma_testkit::configs::hosts_config(n, &[]))?;
    let owner = ["--table-owner", "off"];
    let dry = Command::new(agent_bin())
        .arg("--dry-run")
        .args(owner)
        .arg("--config")
        .arg(&cfg)
        .output()?;
    anyhow::ensure!(
        dry.status.success(),
        "--dry-run: {}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let rules = dir.join(format!("once-{n}.nft"));
    let mut text = format!("table inet {TABLE_NAME}\ndelete table inet {TABLE_NAME}\n");
    text.push_str(&String::from_utf8_lossy(&dry.stdout));
    std::fs::write(&rules, text)?;
    let timed = |cmd: &mut Command| -> Duration {
        let t0 = Instant::now();
        let out = cmd.stdout(Stdio::null()).output().expect("spawn");
        let t = t0.elapsed();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    };
    let agent = || {
        let mut c = Command::new(agent_bin());
        c.arg("--once").args(owner).arg("--config").arg(&cfg);
        c
    };
    let nft_f = || {
        let mut c = Command::new("nft");
        c.arg("-f").arg(&rules);
        c
    };
    timed(&mut nft_f());
    timed(&mut agent());
    let mut sock = NftSocket::open()?;
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut sent = 0;
    for _ in 0..runs {
        let b = timed(&mut nft_f());
        let before = sock.generation()?;
        let a = timed(&mut agent());
        sent += usize::from(sock.generation()? != before);
        ratios.push(a.as_secs_f64() / b.as_secs_f64());
        ours.push(a);
        theirs.push(b);
    }
    let (a, b) = (Stats::of(ours), Stats::of(theirs));
    row(
        &format!(
            "whole-process `--once`, {n} prefixes, table equal to the config as `nft -f` left \
             it ({sent} of {runs} runs committed)"
        ),
        &a,
    );
    row(&format!("`nft -f` of the same ruleset, {n} prefixes"), &b);
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    println!(
        "| `--once` / `nft -f`, pair by pair | {ratio:.2} | {:.2} | {:.2} |",
        ratios[0],
        ratios[ratios.len() - 1]
    );
    record(&format!("once.{n}.agent"), a.median);
    record(&format!("once.{n}.nft"), b.median);
    record_value(&format!("once.{n}.ratio"), ratio);
    record_value(&format!("once.{n}.committed"), sent as f64);
    let _ = nft::delete_table(&mut sock, TABLE_NAME);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if let Some(kind) = arg("--tamper-child") {
        let handle = std::env::args()
            .skip_while(|a| a != "--tamper-child")
            .nth(2);
        return tamper_child(&kind, handle.and_then(|h| h.parse().ok()));
    }
    let runs: usize = arg("--runs").map_or(Ok(21), |s| s.parse())?;
    let idle_secs: u64 = arg("--idle-seconds").map_or(Ok(60), |s| s.parse())?;
    let sections = arg("--sections")
        .unwrap_or_else(|| "config,tamper,start,idle,memory,scale,restart,once".into());
    let want = |s: &str| sections.split(',').any(|x| x == s);
    let ns = Netns::unique(PREFIX, "live");
    ns.enter_current_thread();
    let dir = std::env::temp_dir().join(format!("nma-bench-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut cm = ConfigMap::new(dir.join("config"), "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    let cfg = cm.path();
    let mut gens = Gens::new();
    println!("### Live agent: reaction and footprint ({runs} runs per figure)\n");
    println!("Times are taken outside the agent, from the kernel's nftables notifications.\n");
    println!("| figure | median | min | max |");
    println!("|---|---:|---:|---:|");

    if want("config") {
        gens.clear();
        let _agent = spawn_agent(&cfg, &["--table-owner", "off"]);
        gens.next(Duration::from_secs(5)).expect("startup commit");
        let mut t = Vec::new();
        for i in 0..runs as u32 {
            std::thread::sleep(Duration::from_millis(50));
            gens.clear();
            let text = if i % 2 == 0 {
                "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [10.11.0.0/24]\n"
            } else {
                "nonMasqueradeCIDRs: [10.0.0.0/8]\n"
            };
            let t0 = cm.update(text);
            let (t1, _) = gens.next(Duration::from_secs(5)).expect("config commit");
            t.push(t1 - t0);
        }
        let s = Stats::of(t);
        row("ConfigMap `..data` swap → new table committed", &s);
        record("config.reaction", s.median);
    }

    if want("tamper") {
        tamper_section(&mut gens, &cfg, runs)?;
    }

    if want("start") {
        let mut t = Vec::new();
        for _ in 0..runs {
            gens.clear();
            let t0 = Instant::now();
            let agent = spawn_agent(&cfg, &["--table-owner", "off", "--metrics-address", "off"]);
            let (t1, _) = gens.next(Duration::from_secs(5)).expect("startup commit");
            t.push(t1 - t0);
            drop(agent);
        }
        let s = Stats::of(t);
        row("process start → first commit", &s);
        record("start", s.median);
    }

    if want("idle") {
        gens.clear();
        let agent = spawn_agent(&cfg, &["--table-owner", "off"]);
        gens.next(Duration::from_secs(5)).expect("startup commit");
        std::thread::sleep(Duration::from_millis(500));
        let pid = agent.pid();
        let (c0, s0) = cpu_and_switches(pid);
        std::thread::sleep(Duration::from_secs(idle_secs));
        let (c1, s1) = cpu_and_switches(pid);
        let tick = 1000 / 100; // USER_HZ is 100 on Linux
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0);
        println!(
            "| idle daemon over {idle_secs} s (resyncInterval 60s) | CPU {} ms, {} wake-ups (context switches, {threads} threads) | | |",
            (c1 - c0) * tick,
            s1 - s0
        );
        record_value("idle.cpu_ms", ((c1 - c0) * tick) as f64);
        record_value("idle.switches", (s1 - s0) as f64);
    }

    if want("memory") {
        memory(&dir, &mut gens)?;
    }

    let sizes = |key: &str, default: &str| -> Vec<usize> {
        arg(key)
            .unwrap_or_else(|| default.into())
            .split(',')
            .filter_map(|v| v.parse().ok())
            .collect()
    };
    if want("scale") {
        let runs = arg("--scale-runs").map_or(Ok(5), |s| s.parse())?;
        scale_section(
            &mut gens,
            &dir,
            &sizes("--scale-prefixes", "50000,150000"),
            runs,
            arg("--scale-max-set-prefixes").map_or(
                Ok(nft_masq_agent::model::shard::DEFAULT_MAX_SET_PREFIXES),
                |s| s.parse(),
            )?,
        )?;
    }
    if want("restart") {
        let runs = arg("--scale-runs").map_or(Ok(5), |s| s.parse())?;
        restart_section(
            &mut gens,
            &dir,
            &sizes("--restart-prefixes", "10000,100000"),
            runs,
        )?;
    }
    if want("once") {
        for n in sizes("--once-prefixes", "10000") {
            once_section(&dir, n, runs)?;
        }
    }
    println!();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
