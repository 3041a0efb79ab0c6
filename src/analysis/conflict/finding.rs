//! The vocabulary of the conflict analysis, shared by the walk and the emulator: a rule's
//! [`Answer`] for the packet and the unknowns it depends on ([`Why`]), a [`Finding`], and the
//! cut-off callback ([`Stopper`]).

use serde::Serialize;

use crate::kernel::nft::decode::RuleMsg;
use crate::kernel::nft::expr::Expr;

/// Whether a rule translates the packet first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// It does: our decision for this packet is overridden.
    Yes,
    /// It does not.
    No,
    /// It depends on what could not be evaluated, named.
    CannotTell(Vec<String>),
    /// It depends only on a packet mark: the component marks the packets it means (kube-proxy
    /// does so for service traffic); expected, not a conflict.
    Conditional(Vec<String>),
}

/// A translating rule of another table, and what it does to the packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `ip`, `ip6` or `inet`.
    pub family: &'static str,
    /// Table.
    pub table: String,
    /// The chain the rule is in.
    pub chain: String,
    /// The base chain's priority (it runs before ours at lower priority).
    pub priority: i32,
    /// The rule's handle.
    pub handle: u64,
    /// The rule, described.
    pub rule: String,
    /// What it would do: `masquerade` or `snat`.
    pub verdict: String,
    /// Whether it translates this packet first.
    pub answer: Answer,
}

/// Unknowns a result depends on, each once, at most [`MAX_WHY`]; empty: none (surely).
pub(super) type Why = Vec<String>;

/// The most unknowns a result names: beyond it, "more unknowns". Keeps joining the ways
/// into a chain cheap whatever the table.
pub(super) const MAX_WHY: usize = 8;

/// What stands for the unknowns beyond [`MAX_WHY`].
pub(super) const MORE: &str = "more unknowns";

/// Adds the conditions of `more` not already in `to`.
pub(super) fn extend(to: &mut Why, more: &[String]) {
    for m in more {
        if to.contains(m) {
            continue;
        }
        if to.len() + 1 < MAX_WHY {
            to.push(m.clone());
        } else {
            if to.last().map(String::as_str) != Some(MORE) {
                to.push(MORE.into());
            }
            break;
        }
    }
}

/// Joins a second way to the same place: surely reached if either is sure, else under
/// the unknowns of both.
pub(super) fn join(to: &mut Why, other: Why) {
    if to.is_empty() {
        return;
    }
    if other.is_empty() {
        to.clear();
    } else {
        extend(to, &other);
    }
}

/// What a packet mark dependency is called (kube-proxy's marked service traffic).
pub(super) const MARK: &str = "packet mark";

/// Calls the caller's `stop` every so often: often enough to cut a pass short within a
/// fraction of a millisecond, rarely enough to cost nothing.
pub(super) struct Stopper<'s> {
    stop: &'s dyn Fn() -> bool,
    ticks: u32,
}

impl<'s> Stopper<'s> {
    /// Asks `stop` at the first unit of work, then once per 256.
    pub(super) fn new(stop: &'s dyn Fn() -> bool) -> Stopper<'s> {
        Stopper { stop, ticks: 0 }
    }

    /// One unit of work (a rule evaluated, a chain visited); `None`: stop now. The first
    /// unit asks too, so a pass already over its budget (or superseded) before this probe
    /// stops at once, whatever the size of the tables.
    pub(super) fn tick(&mut self) -> Option<()> {
        let ask = self.ticks % 256 == 0;
        self.ticks = self.ticks.wrapping_add(1);
        if ask && (self.stop)() {
            return None;
        }
        Some(())
    }
}

/// The rule as expressions, for people (nft's own rendering would need its parser).
pub(super) fn describe(rule: &RuleMsg) -> String {
    let parts: Vec<String> = rule
        .exprs
        .iter()
        .filter(|e| !matches!(e, Expr::Counter { .. }))
        .map(Expr::describe)
        .collect();
    parts.join("; ")
}
