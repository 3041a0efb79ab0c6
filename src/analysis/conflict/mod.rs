//! Other components' NAT rules at the postrouting hook, and whether they translate a packet
//! in place of our decision. Pure: the tables come in as read
//! ([`crate::kernel::nft::ruleset`]), a packet as far as it is known ([`Packet`]), findings
//! go out.
//!
//! NAT chains at the postrouting hook run in priority order for a connection's first
//! packet, and the first that sets up a binding wins; a chain that returns (or accepts)
//! sets up none, and the next one runs. So a rule of another table that masquerades or
//! SNATs a destination our config exempts overrides that decision *whatever its priority*:
//! before ours it translates first, after ours our `return` does not stop it (kubenet's
//! `! -d 10.0.0.0/8 -j MASQUERADE`, a CNI's `ipMasq`, an old ip-masq-agent chain). A
//! destination we translate is overridden only by a rule that runs before ours
//! (`--chain-priority`; [`crate::analysis::explain::Runs`]). Each rule is evaluated on the packet
//! with a small emulation of the kernel's register machine (`emulate.rs`): the matches we
//! can decide (addresses, family, output interface name, address type, sets, verdict maps)
//! are decided; the rest (a packet mark, an input interface, ports...) leave the answer
//! open, and are named. Rules that depend only on a packet mark (kube-proxy's
//! `KUBE-POSTROUTING`) are expected on every node: they are *conditional*, not conflicts.
//!
//! Others decide the size and shape of their tables, so the walk through their chains
//! (`walk.rs`) is linear in the size of the tables: each chain is summarised once per mark
//! assumption, whatever the number of jumps to it, and a loop or a chain not read is
//! "cannot tell", never a hang. [`analyze_until`] can be cut off between any two rules.
//! What both speak (an answer and the unknowns it depends on, a finding) is `finding.rs`.

mod emulate;
mod finding;
mod walk;

use std::collections::HashSet;

pub use finding::{Answer, Finding};
use finding::{MARK, Stopper};

use super::Packet;
use crate::addr::prefix::Family;
use crate::kernel::nft::decode::RuleMsg;
use crate::kernel::nft::expr::Expr;
use crate::kernel::nft::ruleset::ForeignTable;
use crate::kernel::nft::uapi::*;

/// Whether a table of `family` sees the packet.
fn sees(family: u8, probe: &Packet) -> bool {
    match family {
        NFPROTO_INET => true,
        NFPROTO_IPV4 => probe.family() == Family::V4,
        NFPROTO_IPV6 => probe.family() == Family::V6,
        _ => false,
    }
}

/// Every translating rule of the NAT postrouting chains (at any priority) that see the
/// packet's family, with its answer for the packet, in evaluation order (by priority).
///
/// A pod's packet carries no mark, so the packet is first walked unmarked; then with an
/// unknown mark, to find the rules only a marked packet reaches (kube-proxy marks the service
/// traffic it wants masqueraded): those are reported as conditional.
pub fn analyze(tables: &[ForeignTable], probe: &Packet) -> Vec<Finding> {
    analyze_until(tables, probe, &|| false).unwrap_or_default()
}

/// [`analyze`], asking `stop` every so often (every few hundred rules) whether to go on:
/// `None` when it said to stop, so a pass can be cut off by a deadline or superseded.
pub fn analyze_until(
    tables: &[ForeignTable],
    probe: &Packet,
    stop: &dyn Fn() -> bool,
) -> Option<Vec<Finding>> {
    let mut stopper = Stopper::new(stop);
    let mut unmarked: Vec<(i32, Vec<Finding>)> = Vec::new();
    let mut any_mark: Vec<(i32, Vec<Finding>)> = Vec::new();
    for t in tables.iter().filter(|t| sees(t.family, probe)) {
        let index = walk::Table::new(t, &mut stopper)?;
        unmarked.extend(index.pass(probe, Some(0), &mut stopper)?);
        any_mark.extend(index.pass(probe, None, &mut stopper)?);
    }
    // Base chains run in priority order, whatever their table (a stable sort keeps the
    // kernel's order among equals).
    unmarked.sort_by_key(|(p, _)| *p);
    any_mark.sort_by_key(|(p, _)| *p);
    let mut out: Vec<Finding> = unmarked.into_iter().flat_map(|(_, f)| f).collect();
    let known: HashSet<(&str, String, u64)> = out
        .iter()
        .map(|f| (f.family, f.table.clone(), f.handle))
        .collect();
    for f in any_mark.into_iter().flat_map(|(_, f)| f) {
        if known.contains(&(f.family, f.table.clone(), f.handle)) {
            continue;
        }
        if let Answer::Yes | Answer::CannotTell(_) = &f.answer {
            let depends = match &f.answer {
                Answer::CannotTell(w) => w.clone(),
                _ => vec![MARK.into()],
            };
            out.push(Finding {
                answer: Answer::Conditional(depends),
                ..f
            });
        }
    }
    Some(out)
}

/// The rules of `findings` that override a non-masquerade decision (answer yes, or cannot
/// tell), as opposed to conditional ones and ones that do not apply. Their priority does
/// not matter: our `return` stops no later chain.
pub fn conflicts(findings: &[Finding]) -> impl Iterator<Item = &Finding> {
    findings
        .iter()
        .filter(|f| matches!(f.answer, Answer::Yes | Answer::CannotTell(_)))
}

/// [`analyze`], and every other translating rule a NAT postrouting chain reaches, whatever
/// the packet: "no" for this packet, so `--explain` can list them.
pub fn analyze_all(tables: &[ForeignTable], probe: &Packet) -> Vec<Finding> {
    let mut found = analyze(tables, probe);
    let listed: HashSet<(&str, String, u64)> = found
        .iter()
        .map(|f| (f.family, f.table.clone(), f.handle))
        .collect();
    let never = || false;
    let mut stopper = Stopper::new(&never);
    for t in tables.iter().filter(|t| sees(t.family, probe)) {
        let Some(index) = walk::Table::new(t, &mut stopper) else {
            continue;
        };
        let Some(prio) = index.bases.iter().map(|(_, p)| *p).min() else {
            continue;
        };
        let family = crate::kernel::nft::ruleset::family_name(t.family);
        for (i, r) in t.rules.iter().enumerate() {
            let Some(how) = translation(r) else {
                continue;
            };
            if index.reached(i) && !listed.contains(&(family, t.name.clone(), r.handle)) {
                found.push(index.finding(i, &r.chain, prio, how, Answer::No));
            }
        }
    }
    found
}

/// What a rule would do if it translated: `masquerade`, `snat ...`; `None` if it never
/// translates.
fn translation(r: &RuleMsg) -> Option<String> {
    r.exprs.iter().find_map(|e| match e {
        Expr::Masq { .. } => Some("masquerade".to_string()),
        Expr::Nat { kind, .. } if *kind == NFT_NAT_SNAT => Some("snat".to_string()),
        Expr::Compat {
            target: true,
            name,
            info,
            ..
        } => match name.as_str() {
            "MASQUERADE" => Some("masquerade".to_string()),
            "SNAT" => Some(emulate::snat_target(info)),
            _ => None,
        },
        _ => None,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
