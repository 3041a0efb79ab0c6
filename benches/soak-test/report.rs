//! What the soak prints (a Markdown section for BENCHMARKS.md: the figures of every
//! verdict, the tamper actions per kind, each verdict's result), the numbers it records for
//! `benches/run`, and the timeline of a run.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::facts::Effect;
use crate::load::{CALM_STEP, CALM_STEPS, KINDS, STORM, STORM_TAMPER_EVERY};
use crate::observe::PROBE_EVERY;
use crate::support::record_value;
use crate::verdict::Judgement;
use crate::{DESTS, EXPECTED, Opts, Run, SMALL_TABLE, ms};

/// The report: a heading, the phases, the figures, the tamper kinds, the verdicts.
pub fn render(run: &Run, o: &Opts, j: &Judgement) -> String {
    let mut r = String::new();
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
        (run.budget_start - run.main_start).as_secs_f64(),
        STORM.as_secs_f64(),
        ms(STORM_TAMPER_EVERY),
        (CALM_STEP * CALM_STEPS).as_secs_f64(),
        CALM_STEP.as_secs_f64(),
        (run.switch_at - run.budget_start).as_secs_f64(),
        run.owner.map_or(0.0, |o| o.len.as_secs_f64()),
        o.flood,
        ms(PROBE_EVERY),
    );
    let _ = writeln!(r, "| figure | value |\n|---|---|");
    for v in &j.verdicts {
        for (figure, value) in &v.figures {
            let _ = writeln!(r, "| {figure} | {value} |");
        }
    }
    let _ = writeln!(
        r,
        "\nTamper actions per kind, outside the owner phase (calm: one action per 10 s with the \
         table whole). An action took effect when a transaction of its `nft` process touched the \
         table, as the kernel's notifications showed; the others found no target (the rule to \
         delete was not in the chain, or the chain was gone, when listed just before), were \
         refused by the kernel, or committed without touching the table.\n"
    );
    let _ = writeln!(
        r,
        "| tamper kind | attempted | took effect | calm: attempted / took effect | \
         no effect: no target / refused / table untouched | owner on: attempted / took effect | \
         change seen → repair seen, budget free: median / max (breaks) |\n\
         |---|---:|---:|---|---|---|---|"
    );
    for (name, k) in KINDS.iter().zip(&j.kinds) {
        let _ = writeln!(
            r,
            "| `{name}` | {} | {} ({:.0} %) | {} / {} | {} / {} / {} | {} / {} | {} / {} ({}) |",
            k.attempted,
            k.effective,
            k.effective as f64 * 100.0 / k.attempted.max(1) as f64,
            k.calm_attempted,
            k.calm_effective,
            k.no_target,
            k.refused,
            k.untouched,
            k.owner_attempted,
            k.owner_effective,
            ms(k.repair_median),
            ms(k.repair_max),
            k.repair_breaks
        );
    }
    let _ = writeln!(r, "\n| verdict | result |\n|---|---|");
    for v in &j.verdicts {
        let _ = writeln!(
            r,
            "| {} | {} |",
            v.concern,
            if v.passed() { "pass" } else { "**FAILED**" }
        );
    }
    let _ = writeln!(r);
    r
}

/// Appends every verdict's numbers to the results file (`soak.KEY value`).
pub fn record(o: &Opts, j: &Judgement) {
    let rec = |k: &str, v: f64| record_value(&format!("soak.{k}"), v);
    rec("minutes", o.total.as_secs_f64() / 60.0);
    rec("prefixes", o.prefixes as f64);
    for v in &j.verdicts {
        for (k, x) in &v.records {
            rec(k, *x);
        }
    }
}

/// Prints the report and the verdict; keeps the agents' logs on a failure, or when a
/// timeline was asked for (it is read against them). The exit status.
pub fn conclude(report: &str, failures: &[String], logs: &[PathBuf; 2]) -> ExitCode {
    print!("{report}");
    record_value("soak.pass", f64::from(u8::from(failures.is_empty())));
    if failures.is_empty() {
        if std::env::var_os("NMA_SOAK_TIMELINE").is_some() {
            eprintln!(
                "soak: the agents' logs are {} and {}",
                logs[0].display(),
                logs[1].display()
            );
        } else {
            for l in logs {
                let _ = std::fs::remove_file(l);
            }
        }
        println!("**Verdict: pass.**\n");
        return ExitCode::SUCCESS;
    }
    println!("**Verdict: FAILED.**\n");
    for f in failures {
        println!("- {f}");
    }
    println!();
    eprintln!(
        "soak: FAILED; the agents' logs are {} and {}",
        logs[0].display(),
        logs[1].display()
    );
    ExitCode::FAILURE
}

/// Every event of the run, one per line, in time order: seconds since the main phase
/// started, the wall clock (UTC, as in the agent's log), what happened.
pub fn write_timeline(run: &Run, j: &Judgement, path: &Path) {
    let mut ev: Vec<(Instant, String)> = Vec::new();
    for g in &run.gens {
        let who = if run.is_agent(g) {
            "AGENT COMMIT".to_string()
        } else {
            format!("transaction by pid {:?}", g.pid)
        };
        ev.push((
            g.at,
            format!("{who}{}", if g.ours { "" } else { " (not our table)" }),
        ));
    }
    tampers(run, j, &mut ev);
    for (at, phase) in &run.swaps {
        ev.push((*at, format!("config swap ({phase:?})")));
    }
    probes(run, &mut ev);
    ev.extend(run.diag.iter().cloned());
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
        let _ = writeln!(
            out,
            "{rel:10.3}  {:02}:{:02}:{:06.3}  {what}",
            (day / 3600.0) as u32,
            ((day % 3600.0) / 60.0) as u32,
            day % 60.0
        );
    }
    let _ = std::fs::write(path, out);
}

/// Tamper actions: start (with the handle a deletion named), exit, and what it did.
fn tampers(run: &Run, j: &Judgement, ev: &mut Vec<(Instant, String)>) {
    for (t, e) in run.tampers.iter().zip(&j.effects) {
        let pid = t.pid.map_or("none".to_string(), |p| p.to_string());
        let effect = match e {
            Effect::Changed(_) => "took effect",
            Effect::Untouched => "table untouched",
            Effect::Refused => "refused",
            Effect::NoTarget => "no target",
        };
        ev.push((
            t.spawned,
            format!(
                "tamper start: {}{} (pid {pid}, {:?}{})",
                KINDS[t.kind],
                t.handle.map_or(String::new(), |h| format!(" handle {h}")),
                t.phase,
                if t.calm { ", calm" } else { "" }
            ),
        ));
        ev.push((
            t.exited,
            format!(
                "tamper exit: {} (pid {pid}) {}; {effect}{}",
                KINDS[t.kind],
                if t.ok { "ok" } else { "failed" },
                t.error.as_ref().map_or(String::new(), |e| format!(": {e}"))
            ),
        ));
    }
}

/// Probes that arrived with the wrong source, or never.
fn probes(run: &Run, ev: &mut Vec<(Instant, String)>) {
    let arrived: HashMap<u64, _> = run.arrived.iter().map(|a| (a.seq, a)).collect();
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
}
