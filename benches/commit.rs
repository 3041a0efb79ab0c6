//! Commit benchmark: the agent's commit of a table with N prefixes, measured inside a
//! throwaway network namespace: every prefix changed (the difference is the whole table),
//! one CIDR changed (a typical ConfigMap edit), and the in-place form the agent uses when
//! someone else committed since its previous commit; side by side in the same run with
//! - the agent with a notification listener subscribed throughout (what a naive daemon pays),
//! - the agent's daemon procedure with its listener open (it leaves the group meanwhile),
//! - `nft -f` of the identical ruleset (the agent's `--dry-run` text),
//! - ip-masq-agent's per-sync chain text applied with `iptables-restore --noflush`, with the
//!   nf_tables backend and the legacy backend.
//!
//! Then the cost of reading a config of N entries (parse and validate, no kernel).
//!
//! Prints markdown tables (median, min-max over the runs); needs root.
//! `cargo bench --bench commit [-- --sizes 64,1000,10000,100000 --runs 9 --cpu --read-sizes 10000,150000]`
//! `--read-sizes` adds the full read of the live table at those sizes.
//! `--cpu` adds the CPU time the agent's commits took on the committing thread (the kernel
//! applies the batch inside `sendmsg`, so that is most of the kernel's work too): a figure that
//! waiting for a CPU on a busy machine does not inflate.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nft_masq_agent::config::{self, Config, PolicyFlags};
use nft_masq_agent::kernel::nft::events::EventSocket;
use nft_masq_agent::kernel::nft::{self, NftSocket, encode};
use nft_masq_agent::model::{self, TableFlags};
use nma_testkit::Netns;
use support::{PREFIX, Stats, arg, flag, ip_masq_agent_text, prefixes, record};

/// Runs `program --noflush` with `text` on stdin; returns its wall time, or None if the
/// backend does not work here.
fn restore(program: &str, text: &str) -> Option<Duration> {
    let t0 = Instant::now();
    let mut child = Command::new(program)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(text.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    let t = t0.elapsed();
    if !out.status.success() {
        eprintln!("{program}: {}", String::from_utf8_lossy(&out.stderr).trim());
        return None;
    }
    Some(t)
}

/// The POSTROUTING jump ip-masq-agent ensures once (EnsureRule), outside the timing.
fn ensure_jump(program: &str) -> bool {
    let iptables = program.trim_end_matches("-restore");
    let ok = |args: &[&str]| {
        Command::new(iptables)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ok(&["-t", "nat", "-N", "IP-MASQ-AGENT"]);
    ok(&[
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-m",
        "addrtype",
        "!",
        "--dst-type",
        "LOCAL",
        "-j",
        "IP-MASQ-AGENT",
    ])
}

/// CPU time of the calling thread, user and system (the scheduler's nanosecond counter, the
/// first field of `/proc/thread-self/schedstat`).
fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

/// Someone else's commit, as far as the agent can tell: a table of another name created and
/// deleted (two transactions that change the generation, not our table).
fn touch_table(sock: &mut NftSocket) -> anyhow::Result<()> {
    use nft_masq_agent::kernel::nft::uapi::{
        NFPROTO_INET, NFT_MSG_DELTABLE, NFT_MSG_NEWTABLE, NFTA_TABLE_NAME,
    };
    for kind in [NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE] {
        let batch = encode::single(
            kind,
            NFPROTO_INET,
            sock.next_seq(),
            "other table".into(),
            |w| w.put_str(NFTA_TABLE_NAME, "nma-bench-other"),
        );
        sock.send_batch(&batch)?;
    }
    Ok(())
}

/// A ConfigMap's file with `n` entries in `nonMasqueradeCIDRs`, one per line, as operators
/// write them.
fn config_yaml(n: usize) -> String {
    let mut text = format!("cidrLimit: {n}\nnonMasqueradeCIDRs:\n");
    for p in prefixes(n) {
        text.push_str(&format!("  - {p}\n"));
    }
    text
}

/// What every config change costs before its commit: reading the file's bytes into a
/// validated policy (YAML parse, validation, merging). No kernel involved.
fn parse_table(sizes: &[usize], runs: usize, flags: &PolicyFlags) -> anyhow::Result<()> {
    println!(
        "### Config: parse and validate a file of N entries ({runs} runs; median (min-max))\n"
    );
    println!("| entries | bytes | parse and validate |");
    println!("|---:|---:|---:|");
    for &n in sizes {
        let text = config_yaml(n);
        let mut took = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t0 = Instant::now();
            let loaded = config::parse(text.as_bytes(), Path::new("ip-masq-agent"), flags)?;
            took.push(t0.elapsed());
            std::hint::black_box(loaded);
        }
        let s = Stats::of(took);
        println!("| {n} | {} | {} |", text.len(), s.ms());
        record(&format!("config.parse.{n}"), s.median);
    }
    println!();
    Ok(())
}

fn cell(s: Option<Stats>) -> String {
    s.map_or("n/a".into(), |s| s.ms())
}

/// The full read of the live table (what the start-up, a lost notification and every
/// `resyncInterval` cost): one read per size, wall and CPU of the reading thread, on an idle
/// ruleset, with the exemptions in one set (as before `--max-set-prefixes`) and cut into
/// block sets (the default). The kernel's set dump restarts its walk of the set for every
/// reply of 32 KiB, so one set costs time quadratic in its elements.
fn read_table(sock: &mut NftSocket, sizes: &str, flags: &PolicyFlags) -> anyhow::Result<()> {
    println!("### Full read of the live table (one read per size and layout; idle ruleset)\n");
    println!(
        "| prefixes | set elements | layout | sets | read, wall | read, CPU of the reading thread (mostly the kernel's dump) |"
    );
    println!("|---:|---:|---|---:|---:|---:|");
    for n in sizes.split(',').map(str::parse::<usize>) {
        let n = n?;
        for (layout, cap) in [
            ("one set", usize::MAX),
            ("block sets", flags.max_set_prefixes),
        ] {
            let flags = PolicyFlags {
                max_set_prefixes: cap,
                ..flags.clone()
            };
            let mut config = Config::defaults(&flags);
            config.non_masquerade_cidrs = config::entries(prefixes(n));
            let table = model::desired(&config, &flags, TableFlags::default());
            nft::replace_table(sock, &table)?;
            let (t0, c0) = (Instant::now(), thread_cpu());
            let read = sock.read_table(model::TABLE_NAME)?.expect("the table");
            let (wall, cpu) = (t0.elapsed(), thread_cpu().saturating_sub(c0));
            assert_eq!(read.sets, table.sets, "read back exactly");
            println!(
                "| {n} | {} | {layout} | {} | {:.0} ms | {:.0} ms |",
                nft::encode::element_count(&table),
                table.sets.len(),
                wall.as_secs_f64() * 1e3,
                cpu.as_secs_f64() * 1e3
            );
            let key = if cap == usize::MAX {
                "read.one-set"
            } else {
                "read"
            };
            record(&format!("{key}.{n}"), wall);
            nft::delete_table(sock, model::TABLE_NAME)?;
        }
    }
    println!();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "64,1000,10000,100000".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let runs: usize = arg("--runs").map_or(Ok(9), |s| s.parse())?;
    let cpu = flag("--cpu");
    let mut cpu_rows = Vec::new();
    let ns = Netns::unique(PREFIX, "commit");
    ns.enter_current_thread();
    let mut sock = NftSocket::open()?;
    let flags = PolicyFlags::default();
    let legacy_ok = ensure_jump("iptables-legacy-restore");
    let nft_ok = ensure_jump("iptables-nft-restore");

    println!(
        "### Commit: every prefix changed, one CIDR changed, and the full in-place form ({runs} runs; median (min-max))\n"
    );
    println!(
        "| prefixes | agent, every prefix changed | agent, one CIDR changed | agent, in place after another commit | agent, listener subscribed throughout | agent, daemon procedure (listener on) | `nft -f` same ruleset | ip-masq-agent chain, `iptables-nft-restore` | ip-masq-agent chain, `iptables-legacy-restore` | agent / `nft -f` |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        let mut config = Config::defaults(&flags);
        config.non_masquerade_cidrs = config::entries(prefixes(n));
        config.masq_link_local = true;
        let table = model::desired(&config, &flags, TableFlags::default());
        let path = std::env::temp_dir().join(format!("nma-bench-{}-{n}.nft", std::process::id()));
        std::fs::write(&path, table.to_string())?;
        let ipt_text = ip_masq_agent_text(&prefixes(n));

        // Two other tables of the same size: every prefix different (each /24 moved up by
        // 256 addresses), and one CIDR more. The agent alternates between them and `table`,
        // so each commit is a real change, never the empty difference.
        let moved: Vec<_> = prefixes(n)
            .iter()
            .map(|p| match p {
                ipnet::IpNet::V4(n) => ipnet::IpNet::V4(
                    ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(u32::from(n.network()) + 256), 24)
                        .expect("a /24"),
                ),
                ipnet::IpNet::V6(_) => unreachable!("prefixes() are IPv4"),
            })
            .collect();
        let with = |list: Vec<ipnet::IpNet>| {
            let mut c = config.clone();
            c.non_masquerade_cidrs = config::entries(list);
            model::desired(&c, &flags, TableFlags::default())
        };
        let other = with(moved);
        // The /24 just after the last prefix: inside the last address block (which holds
        // fewer than --max-set-prefixes at these sizes), so the change is a difference and
        // not a reshape, as most single edits of a large list are.
        let mut plus: Vec<ipnet::IpNet> = prefixes(n);
        let after_last = match plus.last() {
            Some(ipnet::IpNet::V4(last)) => {
                std::net::Ipv4Addr::from(u32::from(last.network()) + 256).to_string() + "/24"
            }
            _ => "203.0.113.0/24".to_string(),
        };
        plus.push(after_last.parse().unwrap());
        let one_more = with(plus);
        let pair = [&other, &table];

        // The agent alone (nft::replace_table), every prefix changed each time.
        nft::replace_table(&mut sock, &table)?;
        let mut plain = Vec::new();
        let (mut plain_cpu, mut encoding) = (Vec::new(), Vec::new());
        let mut batch_size = (0, 0);
        for r in 0..runs {
            let to = pair[r % 2];
            // Encoding alone (the in-place batch the agent sends for a change this large),
            // untimed in the commit figure.
            let t0 = Instant::now();
            let b = encode::replace(to, 1, nft::ReplaceForm::InPlace);
            encoding.push(t0.elapsed());
            batch_size = (b.bytes.len(), b.msgs.len());
            // The CPU clock is read outside the wall-clock interval.
            let c0 = thread_cpu();
            let t0 = Instant::now();
            let report = nft::replace_table(&mut sock, to)?;
            plain.push(t0.elapsed());
            plain_cpu.push(thread_cpu().saturating_sub(c0));
            // Every prefix changed: a difference larger than the table, so in place.
            anyhow::ensure!(report.form == nft::ReplaceForm::InPlace, "{report:?}");
        }
        if runs % 2 == 1 {
            nft::replace_table(&mut sock, &table)?;
        }
        // A config change of one CIDR, added and removed in turn.
        let mut one = Vec::new();
        for r in 0..runs {
            let to = if r % 2 == 0 { &one_more } else { &table };
            let t0 = Instant::now();
            let report = nft::replace_table(&mut sock, to)?;
            one.push(t0.elapsed());
            anyhow::ensure!(report.form == nft::ReplaceForm::Delta, "{report:?}");
        }
        if runs % 2 == 1 {
            nft::replace_table(&mut sock, &table)?;
        }
        // The full forms the agent falls back to when the table changed under it: in place
        // (flush and refill), after someone else's commit (a NEWTABLE of our table: no
        // change, only a new generation).
        let mut in_place = Vec::new();
        for r in 0..runs {
            touch_table(&mut sock)?;
            let t0 = Instant::now();
            let report = nft::replace_table(&mut sock, pair[r % 2])?;
            in_place.push(t0.elapsed());
            anyhow::ensure!(report.form == nft::ReplaceForm::InPlace, "{report:?}");
        }
        if runs % 2 == 1 {
            nft::replace_table(&mut sock, &table)?;
        }

        // With a listener subscribed throughout: the kernel builds a notification per element.
        let mut events = EventSocket::open()?;
        let mut naive = Vec::new();
        for r in 0..runs {
            let _ = events.drain();
            let t0 = Instant::now();
            nft::replace_table(&mut sock, pair[r % 2])?;
            naive.push(t0.elapsed());
        }
        // The daemon's procedure (src/run.rs): leave the group, read the generation, commit,
        // read it again, rejoin, read it once more.
        let mut daemon = Vec::new();
        for r in 0..runs {
            let _ = events.drain();
            let t0 = Instant::now();
            events.subscribe(false)?;
            let _ = sock.generation()?;
            // Starting with the table the loop above did not end on.
            nft::replace_table(&mut sock, pair[(r + runs) % 2])?;
            let _ = sock.generation()?;
            events.subscribe(true)?;
            let _ = sock.generation()?;
            daemon.push(t0.elapsed());
        }
        drop(events);

        let mut nft_t = Vec::new();
        for _ in 0..runs {
            // nft -f adds to an existing table: delete it first, outside the timing, so both
            // end in the same state.
            nft::delete_table(&mut sock, &table.name)?;
            let t0 = Instant::now();
            let st = Command::new("nft").arg("-f").arg(&path).status()?;
            nft_t.push(t0.elapsed());
            anyhow::ensure!(st.success(), "nft -f failed");
        }
        let _ = std::fs::remove_file(&path);

        let restore_runs = |program: &str, ok: bool| -> Option<Stats> {
            if !ok {
                return None;
            }
            restore(program, &ipt_text)?; // first sync creates the rules
            let v: Option<Vec<Duration>> = (0..runs).map(|_| restore(program, &ipt_text)).collect();
            v.map(Stats::of)
        };
        let ipt_nft = restore_runs("iptables-nft-restore", nft_ok);
        let ipt_legacy = restore_runs("iptables-legacy-restore", legacy_ok);

        let (p, nv, d, f) = (
            Stats::of(plain),
            Stats::of(naive),
            Stats::of(daemon),
            Stats::of(nft_t),
        );
        let ratio = p.median.as_secs_f64() / f.median.as_secs_f64();
        let (o, ip) = (Stats::of(one), Stats::of(in_place));
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {ratio:.2} |",
            p.ms(),
            o.ms(),
            ip.ms(),
            nv.ms(),
            d.ms(),
            f.ms(),
            cell(ipt_nft),
            cell(ipt_legacy)
        );
        record(&format!("commit.agent.{n}"), p.median);
        record(&format!("commit.agent_one.{n}"), o.median);
        record(&format!("commit.in_place.{n}"), ip.median);
        if cpu {
            let c = Stats::of(plain_cpu);
            record(&format!("commit.agent_cpu.{n}"), c.median);
            cpu_rows.push(format!(
                "| {n} | {} | {} | {} | {} bytes, {} messages |",
                p.ms(),
                c.ms(),
                Stats::of(encoding).ms(),
                batch_size.0,
                batch_size.1
            ));
        }
        record(&format!("commit.daemon.{n}"), d.median);
        record(&format!("commit.naive.{n}"), nv.median);
        record(&format!("commit.nft.{n}"), f.median);
        if let Some(s) = ipt_nft {
            record(&format!("commit.iptables-nft.{n}"), s.median);
        }
        if let Some(s) = ipt_legacy {
            record(&format!("commit.iptables-legacy.{n}"), s.median);
        }
    }
    nft::delete_table(&mut sock, model::TABLE_NAME)?;
    println!();
    if let Some(read) = arg("--read-sizes") {
        read_table(&mut sock, &read, &flags)?;
    }
    parse_table(&sizes, runs, &flags)?;
    if cpu {
        println!("### Commit: the agent's CPU time ({runs} runs; median (min-max))\n");
        println!(
            "| prefixes | agent, wall | agent, CPU of the committing thread (user + system) | of which encoding (wall) | batch |"
        );
        println!("|---:|---:|---:|---:|---:|");
        for row in cpu_rows {
            println!("{row}");
        }
        println!();
    }
    Ok(())
}
