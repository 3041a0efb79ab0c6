//! Conntrack reconciliation benchmark: a throwaway network namespace holding N conntrack
//! entries (created through ctnetlink, UDP and TCP, as a busy node's table looks), of which
//! M are affected (UDP to one destination); measured:
//! - reconcile (dump + select + delete of the M), the one call the daemon makes;
//! - reconcile when nothing is affected (dump + select), for IPv4 and for both families;
//! - the dump alone, and the delete of M alone;
//! - for reference, `conntrack -L` (conntrack-tools) listing the same table, when installed;
//! - the process's peak resident memory during reconcile.
//!
//! Prints a markdown table (median, min-max over the runs); needs root.
//! `cargo bench --bench conntrack [-- --entries 100000 --affected 1000 --runs 7]`

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nft_masq_agent::addr::prefix::Family;
use nft_masq_agent::analysis::flows;
use nft_masq_agent::config::{self, Config, PolicyFlags};
use nft_masq_agent::kernel::conntrack::uapi::{IPPROTO_TCP, IPPROTO_UDP};
use nft_masq_agent::kernel::conntrack::{self, Conntrack, Flow, L4, Protocols, Tuple};
use nft_masq_agent::model::{self, Table, TableFlags};
use nma_testkit::Netns;
use support::{PREFIX, Stats, arg, record, record_value};

/// Entries live this long: far beyond the benchmark, so none expires during it.
const TIMEOUT_SECS: u32 = 3600;

const TARGET: Ipv4Addr = Ipv4Addr::new(11, 22, 33, 44);

fn flow(protocol: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Flow {
    let (src, dst): (IpAddr, IpAddr) = (src.into(), dst.into());
    Flow {
        family: Family::V4,
        protocol,
        original: Tuple {
            src,
            dst,
            l4: L4::Ports {
                src: sport,
                dst: dport,
            },
        },
        reply: Tuple {
            src: dst,
            dst: src,
            l4: L4::Ports {
                src: dport,
                dst: sport,
            },
        },
        status: 0,
        id: None,
        zone: None,
        mark: None,
        timeout: None,
    }
}

/// `n` unaffected entries: pods 10.244.x.y talking to 4,096 destinations in 198.18/15, one
/// in five TCP.
fn background(n: usize) -> Vec<Flow> {
    (0..n as u32)
        .map(|i| {
            let proto = if i % 5 == 0 { IPPROTO_TCP } else { IPPROTO_UDP };
            let src = Ipv4Addr::from(0x0af4_0000 + i / 1000);
            let dst = Ipv4Addr::from(0xc612_0000 + i % 4096);
            flow(proto, src, 20000 + (i % 1000) as u16, dst, 53)
        })
        .collect()
}

/// `n` affected entries: UDP from one pod's many ports to [`TARGET`].
fn affected(n: usize) -> Vec<Flow> {
    (0..n as u32)
        .map(|i| {
            let src = Ipv4Addr::from(0x0af5_0000 + i / 10_000);
            flow(IPPROTO_UDP, src, 10000 + (i % 10_000) as u16, TARGET, 4500)
        })
        .collect()
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time this process has used (user + system), from `/proc/self/stat` (clock ticks of
/// 10 ms): the benchmark's cost apart from waiting for a CPU on a busy machine.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses: utime and stime are the
    // 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Resets the peak (`VmHWM`) to the current resident size (`clear_refs` value 5, Linux 4.0+).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The table before and after a config change adding TARGET's /24 to `prefixes` /24s of
/// non-masquerade ranges.
fn tables(prefixes: usize) -> (Table, Table) {
    let flags = PolicyFlags::default();
    let table = |extra: Option<&str>| {
        let mut nets = support::prefixes(prefixes);
        nets.extend(extra.map(|s| s.parse::<ipnet::IpNet>().expect("prefix")));
        let mut cfg = Config::defaults(&flags);
        cfg.non_masquerade_cidrs = config::entries(nets);
        model::desired(&cfg, &flags, TableFlags::default())
    };
    (table(None), table(Some("11.22.33.0/24")))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let entries: usize = arg("--entries").map_or(Ok(100_000), |s| s.parse())?;
    let n_affected: usize = arg("--affected").map_or(Ok(1000), |s| s.parse())?;
    let runs: usize = arg("--runs").map_or(Ok(7), |s| s.parse())?;
    anyhow::ensure!(n_affected <= entries, "--affected exceeds --entries");
    let ns = Netns::unique(PREFIX, "conntrack");
    // The whole (single-threaded) benchmark runs in the namespace: its conntrack table is
    // the only one touched.
    ns.enter_current_thread();
    let mut conn = Conntrack::open()?;

    let t0 = Instant::now();
    let created = conn.create(&background(entries - n_affected), TIMEOUT_SECS)?;
    let create_time = t0.elapsed();
    let hit = affected(n_affected);
    // The daemon's selection: the old and the new table evaluated on every flow, with
    // 10,000 non-masquerade prefixes; the change makes TARGET's /24 non-masquerade.
    let (old, new) = tables(10_000);
    let change = flows::Change::new(&old, &new);
    let is_affected = |f: &Flow| change.affects(f);

    let (mut full, mut none, mut dual, mut dump, mut delete) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut rss_before, mut peak) = (0, 0);
    let mut full_cpu = Vec::new();
    for _ in 0..runs {
        conn.create(&hit, TIMEOUT_SECS)?;
        reset_peak();
        rss_before = rss_before.max(rss_kib().0);
        let (t0, c0) = (Instant::now(), cpu_time());
        let r = conntrack::reconcile(&mut conn, &[Family::V4], Protocols::Connectionless, |f| {
            is_affected(f)
        })?;
        full.push(t0.elapsed());
        full_cpu.push(cpu_time().saturating_sub(c0));
        peak = peak.max(rss_kib().1);
        anyhow::ensure!(
            r.examined == entries as u64 && r.deleted == n_affected as u64 && r.failed == 0,
            "unexpected report {r:?}"
        );
    }
    conn.create(&hit, TIMEOUT_SECS)?;
    for _ in 0..runs {
        let t0 = Instant::now();
        let r = conntrack::reconcile(&mut conn, &[Family::V4], Protocols::Connectionless, |_| {
            false
        })?;
        none.push(t0.elapsed());
        anyhow::ensure!(r.examined == entries as u64 && r.deleted == 0, "{r:?}");

        let t0 = Instant::now();
        let both = [Family::V4, Family::V6];
        let r = conntrack::reconcile(&mut conn, &both, Protocols::Connectionless, |_| false)?;
        dual.push(t0.elapsed());
        anyhow::ensure!(r.examined == entries as u64 && r.deleted == 0, "{r:?}");

        let t0 = Instant::now();
        let mut n = 0u64;
        conn.dump(Family::V4, |_| n += 1)?;
        dump.push(t0.elapsed());
        anyhow::ensure!(n == entries as u64, "dumped {n}");
    }
    // The CLI lists the same table: the kernel's share of a dump, as another tool sees it.
    let mut cli = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let ok = Command::new("conntrack")
            .args(["-L", "-f", "ipv4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            cli.clear();
            break;
        }
        cli.push(t0.elapsed());
    }
    for run in 0..runs {
        if run > 0 {
            conn.create(&hit, TIMEOUT_SECS)?;
        }
        let t0 = Instant::now();
        let r = conn.delete(&hit)?;
        delete.push(t0.elapsed());
        anyhow::ensure!(r.deleted == n_affected as u64, "{r:?}");
    }

    let full_cpu = Stats::of(full_cpu);
    let (full, none, dual, dump, delete) = (
        Stats::of(full),
        Stats::of(none),
        Stats::of(dual),
        Stats::of(dump),
        Stats::of(delete),
    );
    let cli = (!cli.is_empty()).then(|| Stats::of(cli));
    let rate = |d: Duration, n: usize| n as f64 / d.as_secs_f64();
    println!(
        "### Conntrack reconciliation: {entries} entries, {n_affected} affected ({runs} runs; median (min-max))\n"
    );
    println!("| operation | time | |");
    println!("|---|---:|---|");
    println!(
        "| reconcile: dump {entries} + select + delete {n_affected} | {} | the daemon's call (old and new 10,000-prefix tables evaluated per flow); CPU {:.0} ms (user + system, median) |",
        full.ms(),
        full_cpu.median.as_secs_f64() * 1e3
    );
    println!(
        "| reconcile, nothing affected (dump + select) | {} | |",
        none.ms()
    );
    println!(
        "| reconcile, nothing affected, IPv4 and IPv6 (one dump) | {} | |",
        dual.ms()
    );
    println!(
        "| dump alone | {} | {:.0} entries/s |",
        dump.ms(),
        rate(dump.median, entries)
    );
    println!(
        "| `conntrack -L -f ipv4` > /dev/null, same table (reference) | {} | conntrack-tools |",
        cli.map_or("n/a".into(), |s| s.ms())
    );
    println!(
        "| delete {n_affected} alone | {} | {:.0} entries/s, {} per datagram |",
        delete.ms(),
        rate(delete.median, n_affected),
        conn.per_datagram()
    );
    println!(
        "| setup: create {created} entries (ctnetlink, once) | {:.2} ms | {:.0} entries/s |",
        create_time.as_secs_f64() * 1e3,
        rate(create_time, created as usize)
    );
    println!(
        "| peak resident memory during reconcile | {} | {} before |",
        mib(peak),
        mib(rss_before)
    );
    println!();
    record(&format!("conntrack.reconcile.{entries}"), full.median);
    record(
        &format!("conntrack.reconcile_cpu.{entries}"),
        full_cpu.median,
    );
    record(&format!("conntrack.reconcile_none.{entries}"), none.median);
    record(&format!("conntrack.reconcile_dual.{entries}"), dual.median);
    record(&format!("conntrack.dump.{entries}"), dump.median);
    record(&format!("conntrack.delete.{n_affected}"), delete.median);
    record_value("conntrack.rss_peak", peak as f64 / 1024.0);
    drop(conn);
    drop(ns);
    Ok(())
}
