//! Commit benchmark: one full replace of the agent's table with N prefixes, measured inside a
//! throwaway network namespace, side by side in the same run with
//! - the agent with a notification listener subscribed throughout (what a naive daemon pays),
//! - the agent's daemon procedure with its listener open (it leaves the group meanwhile),
//! - `nft -f` of the identical ruleset (the agent's `--dry-run` text),
//! - ip-masq-agent's per-sync chain text applied with `iptables-restore --noflush`, with the
//!   nf_tables backend and the legacy backend.
//!
//! Prints a markdown table (median, min-max over the runs); needs root.
//! `cargo bench --bench commit [-- --sizes 64,1000,10000,100000 --runs 9 --cpu]`
//! `--cpu` adds the CPU time the agent's commits took on the committing thread (the kernel
//! applies the batch inside `sendmsg`, so that is most of the kernel's work too): a figure that
//! waiting for a CPU on a busy machine does not inflate.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nft_masq_agent::config::{Config, PolicyFlags};
use nft_masq_agent::model::{self, TableFlags};
use nft_masq_agent::nft::events::EventSocket;
use nft_masq_agent::nft::{self, NftSocket, encode};
use support::{Netns, Stats, arg, flag, ip_masq_agent_text, prefixes, record};

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

fn cell(s: Option<Stats>) -> String {
    s.map_or("n/a".into(), |s| s.ms())
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
    let ns = Netns::new("commit");
    ns.enter();
    let mut sock = NftSocket::open()?;
    let flags = PolicyFlags::default();
    let legacy_ok = ensure_jump("iptables-legacy-restore");
    let nft_ok = ensure_jump("iptables-nft-restore");

    println!("### Commit: one full replace ({runs} runs; median (min-max))\n");
    println!(
        "| prefixes | agent | agent, listener subscribed throughout | agent, daemon procedure (listener on) | `nft -f` same ruleset | ip-masq-agent chain, `iptables-nft-restore` | ip-masq-agent chain, `iptables-legacy-restore` | agent / `nft -f` |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        let mut config = Config::defaults(&flags);
        config.non_masquerade_cidrs = nft_masq_agent::config::entries(prefixes(n));
        config.masq_link_local = true;
        let table = model::desired(&config, &flags, TableFlags::default());
        let path = std::env::temp_dir().join(format!("nma-bench-{}-{n}.nft", std::process::id()));
        std::fs::write(&path, table.to_string())?;
        let ipt_text = ip_masq_agent_text(&prefixes(n));

        // The agent alone: encode + send + every ACK, replacing an existing table.
        nft::replace_table(&mut sock, &table)?;
        let mut plain = Vec::new();
        let (mut plain_cpu, mut encoding) = (Vec::new(), Vec::new());
        let mut batch_size = (0, 0);
        for _ in 0..runs {
            // The CPU clock is read outside the wall-clock interval.
            let c0 = thread_cpu();
            let t0 = Instant::now();
            // As nft::replace_table chooses: in place when the live table has our sets and
            // chains (it does from the second commit on), which costs the skeleton read.
            let live = sock.skeleton(&table.name)?;
            let form = if live.is_some_and(|l| encode::fits_in_place(&table, &l)) {
                nft::ReplaceForm::InPlace
            } else {
                nft::ReplaceForm::AddDeleteAdd
            };
            let batch = encode::replace(&table, sock.next_seq(), form);
            let encoded = t0.elapsed();
            sock.send_batch(&batch)?;
            plain.push(t0.elapsed());
            plain_cpu.push(thread_cpu().saturating_sub(c0));
            encoding.push(encoded);
            batch_size = (batch.bytes.len(), batch.msgs.len());
        }

        // With a listener subscribed throughout: the kernel builds a notification per element.
        let mut events = EventSocket::open()?;
        let mut naive = Vec::new();
        for _ in 0..runs {
            let _ = events.drain();
            let t0 = Instant::now();
            nft::replace_table(&mut sock, &table)?;
            naive.push(t0.elapsed());
        }
        // The daemon's procedure (src/run.rs): leave the group, read the generation, commit,
        // read it again, rejoin, read it once more.
        let mut daemon = Vec::new();
        for _ in 0..runs {
            let _ = events.drain();
            let t0 = Instant::now();
            events.subscribe(false)?;
            let _ = sock.generation()?;
            nft::replace_table(&mut sock, &table)?;
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
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {ratio:.2} |",
            p.ms(),
            nv.ms(),
            d.ms(),
            f.ms(),
            cell(ipt_nft),
            cell(ipt_legacy)
        );
        record(&format!("commit.agent.{n}"), p.median);
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
