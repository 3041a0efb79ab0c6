//! The facts of a run, derived once from what was recorded and shared by the verdicts: what
//! each tamper action did to the table, the breaks and their repairs, the agents' commits
//! placed at their start, and each probe's translation against those windows.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nft_masq_agent::daemon::reconcile::BUDGET_WINDOW;

use crate::observe::Gen;
use crate::{DESTS, EXPECTED, NODE, POD, Run};

/// What a tamper action did to the table, as the observer saw it (never as nft said).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A transaction of its process touched the table: index of its end in [`Run::gens`].
    Changed(usize),
    /// Its process committed, or nft succeeded, and the table was left alone (a flush of a
    /// ruleset without our table).
    Untouched,
    /// It ran, failed, and committed nothing (the kernel refused: the table, the chain or the
    /// handle was gone).
    Refused,
    /// It had nothing to act on (the rule to delete was not in the chain) and ran nothing.
    NoTarget,
}

/// A tamper action that changed the table, and what followed.
pub struct Break {
    /// Index into [`Run::tampers`].
    pub tamper: usize,
    /// When its transaction was seen.
    pub seen: Instant,
    /// The first agent commit seen after it.
    pub repaired: Option<Instant>,
    /// Agent commits seen in the budget window before the break (the budget then).
    pub spent: usize,
}

/// An agent commit: the window from its start (its notification less the duration it
/// logged) to its notification, and whether its form creates the sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwnCommit {
    pub start: Instant,
    pub seen: Instant,
    pub creates_sets: bool,
}

/// The probes' fate.
#[derive(Default)]
pub struct Probes {
    pub sent: usize,
    pub lost: usize,
    pub send_errors: usize,
    /// Arrived with the wrong source, by destination.
    pub wrong: usize,
    pub wrong_by_dst: [usize; 2],
    /// Wrong outside every tamper window and every agent commit: described.
    pub outside: Vec<String>,
    /// Exempt probes masqueraded during an agent commit that creates the sets.
    pub in_create: usize,
    /// Exempt probes masqueraded during the agent's in-place or difference commits, and the
    /// longest time one was sent before the commit's notification.
    pub in_commit: usize,
    pub in_commit_lead: Duration,
    /// From neither the pod nor the node.
    pub strange: usize,
    /// Sent → arrived, per arrived probe.
    pub in_flight: Vec<Duration>,
}

/// Everything the verdicts share.
pub struct Facts {
    /// Per tamper action, in [`Run::tampers`] order.
    pub effects: Vec<Effect>,
    /// Sorted by the tamperer's start.
    pub breaks: Vec<Break>,
    /// The first agent's commits, each placed at its start when the log matches (else at
    /// its notification), sorted.
    pub starts: Vec<Instant>,
    /// Agents whose log does not list the commits the observer saw.
    pub log_mismatch: Vec<String>,
    pub probes: Probes,
}

impl Facts {
    /// Derives the facts of `run`.
    pub fn of(run: &Run) -> Facts {
        let effects = effects(run);
        let breaks = breaks(run, &effects);
        let (own, log_mismatch) = own_commits(run);
        let commits_seen = run.commits_of(run.agent_pid);
        // The budget admits a commit when it starts; its notification comes a commit's
        // duration later (up to seconds for a small table on a starved machine). The agent
        // logs each commit's duration: counted back from the notification, the start.
        let mut starts: Vec<Instant> = if run.logged[0].len() == commits_seen.len() {
            commits_seen
                .iter()
                .zip(&run.logged[0])
                .map(|(&at, c)| at - Duration::from_secs_f64(c.duration_ms / 1e3))
                .collect()
        } else {
            commits_seen
        };
        starts.sort();
        let probes = probes(run, &breaks, &own);
        Facts {
            effects,
            breaks,
            starts,
            log_mismatch,
            probes,
        }
    }
}

impl Run {
    /// The gens of commits `pid` made to our table.
    pub fn commits_of(&self, pid: u32) -> Vec<Instant> {
        self.commit_ends(pid)
            .into_iter()
            .map(|i| self.gens[i].at)
            .collect()
    }

    /// The transactions that end each commit `pid` made to our table (indexes into
    /// [`Run::gens`]). A commit that creates the sets is several transactions (the sets,
    /// then the rules; through the handover table, five); the agent logs how many, and its
    /// transactions are grouped by that. When the counts do not add up, every transaction
    /// is returned (and the log reported as not matching).
    pub fn commit_ends(&self, pid: u32) -> Vec<usize> {
        let gens: Vec<usize> = (0..self.gens.len())
            .filter(|&i| self.gens[i].pid == Some(pid) && self.gens[i].ours)
            .collect();
        let logged = if pid == self.agent_pid {
            &self.logged[0]
        } else {
            &self.logged[1]
        };
        let sizes: Vec<usize> = logged
            .iter()
            .map(|c| c.transactions.unwrap_or(1) as usize)
            .collect();
        if sizes.iter().sum::<usize>() != gens.len() {
            return gens;
        }
        let mut ends = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for n in sizes {
            at += n;
            if n > 0 {
                ends.push(gens[at - 1]);
            }
        }
        ends
    }

    /// Whether a transaction was one of the agents'.
    pub fn is_agent(&self, g: &Gen) -> bool {
        g.pid.is_some() && (g.pid == Some(self.agent_pid) || g.pid == self.owner.map(|o| o.pid))
    }

    /// Seconds since the main phase began.
    pub fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.main_start).as_secs_f64()
    }
}

/// What each tamper action did: the first transaction its process ended after it started.
fn effects(run: &Run) -> Vec<Effect> {
    let mut by_pid: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, g) in run.gens.iter().enumerate() {
        if let Some(p) = g.pid {
            by_pid.entry(p).or_default().push(i);
        }
    }
    run.tampers
        .iter()
        .map(|t| {
            let Some(pid) = t.pid else {
                return Effect::NoTarget;
            };
            let gen_of = by_pid
                .get(&pid)
                .and_then(|v| v.iter().find(|&&i| run.gens[i].at >= t.spawned));
            match gen_of {
                Some(&i) if run.gens[i].ours => Effect::Changed(i),
                Some(_) => Effect::Untouched,
                None if t.ok => Effect::Untouched,
                None => Effect::Refused,
            }
        })
        .collect()
}

/// The breaks (tamper actions that changed the table) and the agent commit after each.
fn breaks(run: &Run, effects: &[Effect]) -> Vec<Break> {
    // A repair is seen when the agent's commit ends (its last transaction, when it has
    // several), and each commit counts once against the budget.
    let mut agent_idx: Vec<usize> = std::iter::once(run.agent_pid)
        .chain(run.owner.map(|o| o.pid))
        .flat_map(|pid| run.commit_ends(pid))
        .collect();
    agent_idx.sort();
    let mut breaks: Vec<Break> = effects
        .iter()
        .enumerate()
        .filter_map(|(ti, e)| match e {
            Effect::Changed(gi) => Some((ti, *gi)),
            _ => None,
        })
        .map(|(ti, gi)| {
            let seen = run.gens[gi].at;
            let next = agent_idx.partition_point(|&a| a <= gi);
            Break {
                tamper: ti,
                seen,
                repaired: agent_idx.get(next).map(|&a| run.gens[a].at),
                spent: agent_idx[..next]
                    .iter()
                    .filter(|&&a| seen.duration_since(run.gens[a].at) <= BUDGET_WINDOW)
                    .count(),
            }
        })
        .collect();
    breaks.sort_by_key(|b| run.tampers[b.tamper].spawned);
    breaks
}

/// Both agents' commits as windows (on kernels whose new interval sets are not searchable
/// until the end of the transaction, packets then see the new rules with an empty set), and
/// the agents whose log does not match what the observer saw.
fn own_commits(run: &Run) -> (Vec<OwnCommit>, Vec<String>) {
    let mut own = Vec::new();
    let mut mismatch = Vec::new();
    let owner_pid = run.owner.map(|o| o.pid);
    for (pid, logged) in [
        (Some(run.agent_pid), &run.logged[0]),
        (owner_pid, &run.logged[1]),
    ] {
        let Some(pid) = pid else { continue };
        let seen = run.commits_of(pid);
        if seen.len() != logged.len() {
            mismatch.push(format!(
                "agent {pid}: {} commits seen, {} logged: the log does not match",
                seen.len(),
                logged.len()
            ));
            continue;
        }
        own.extend(seen.iter().zip(logged).map(|(&at, c)| OwnCommit {
            start: at - Duration::from_secs_f64(c.duration_ms / 1e3) - Duration::from_millis(5),
            seen: at,
            creates_sets: c.creates_sets(),
        }));
    }
    own.sort();
    (own, mismatch)
}

/// Each probe's fate. A wrong one must have been in flight during a window: sent before
/// the repair was seen, arrived after the tamperer started. Windows sorted by start, with
/// the latest end so far, answer that with one binary search per probe.
fn probes(run: &Run, breaks: &[Break], own: &[OwnCommit]) -> Probes {
    let arrived: HashMap<u64, _> = run.arrived.iter().map(|a| (a.seq, *a)).collect();
    let mut latest_end = Vec::with_capacity(breaks.len());
    let mut m: Option<Instant> = None;
    for b in breaks {
        let e = b.repaired.unwrap_or(run.end);
        m = Some(m.map_or(e, |x| x.max(e)));
        latest_end.push(m.expect("set"));
    }
    let mut p = Probes {
        sent: run.sent.len(),
        send_errors: run.sent.iter().filter(|p| !p.ok).count(),
        ..Probes::default()
    };
    for s in &run.sent {
        let Some(a) = arrived.get(&s.seq) else {
            p.lost += 1;
            continue;
        };
        p.in_flight.push(a.at - s.at);
        if a.src == EXPECTED[s.dst] {
            continue;
        }
        if a.src != NODE && a.src != POD {
            p.strange += 1;
        }
        p.wrong += 1;
        p.wrong_by_dst[s.dst] += 1;
        let n = breaks.partition_point(|b| run.tampers[b.tamper].spawned < a.at);
        if n > 0 && latest_end[n - 1] > s.at {
            continue;
        }
        // Only the direction an empty set gives: an exempt destination masqueraded.
        let k = own.partition_point(|w| w.start < a.at);
        if k > 0 && own[k - 1].seen > s.at && s.dst == 1 && a.src == NODE {
            if own[k - 1].creates_sets {
                p.in_create += 1;
            } else {
                p.in_commit += 1;
                p.in_commit_lead = p.in_commit_lead.max(own[k - 1].seen - s.at);
            }
            continue;
        }
        p.outside.push(format!(
            "to {} ({}) sent at {:.3} s arrived from {}",
            DESTS[s.dst].0,
            DESTS[s.dst].1,
            run.secs(s.at),
            a.src
        ));
    }
    p
}
