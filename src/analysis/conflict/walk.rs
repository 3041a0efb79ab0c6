//! The walk of one foreign table: from its NAT postrouting chains through jumps, gotos and
//! verdict maps, linear in the size of the table whatever its shape.
//!
//! Three steps, each visiting every chain and rule once:
//! 1. [`Table::new`] indexes the rules by chain and walks the jump graph depth first from
//!    the base chains (iteratively: no recursion, so no stack to overflow), numbering rules
//!    in the order a packet first meets them and noting the jumps that close a loop.
//! 2. [`Table::pass`] summarises each chain once per mark assumption, callees before
//!    callers (depth-first post-order): whether a packet that enters it leaves the base
//!    chain there (never, surely, or under named unknowns), the translating rules it meets
//!    and the chains it calls, each with the unknowns of the way there *from the chain's
//!    entry*. A summary depends on the chain and the mark assumption only, so a chain jumped
//!    to from a thousand places is evaluated once.
//! 3. It then carries the unknowns of the way in from each base chain forward, callers
//!    before callees (reverse post-order), joining the ways into a chain: a rule reached
//!    surely on one way is reached surely. A finding's answer is the unknowns of its way.
//!
//! A jump that closes a loop (the kernel refuses them; a decoder may see anything), or to a
//! chain that was not read, is "cannot tell" with the reason named; never a hang.

use std::collections::{BinaryHeap, HashMap, HashSet};

use super::emulate::{self, Act, Env};
use super::finding::{Answer, Finding, Stopper, Why, describe, extend, join};
use crate::analysis::Packet;
use crate::kernel::nft::decode::RuleMsg;
use crate::kernel::nft::expr::{Expr, ImmData};
use crate::kernel::nft::ruleset::{ForeignSet, ForeignTable, family_name, is_nat_postrouting};
use crate::kernel::nft::uapi::*;

/// A foreign table indexed for walks.
pub(super) struct Table<'a> {
    table: &'a ForeignTable,
    names: Vec<&'a str>,
    ids: HashMap<&'a str, usize>,
    /// The indices (in `table.rules`) of each chain's rules, in order.
    rules: Vec<Vec<usize>>,
    sets: HashMap<&'a str, &'a ForeignSet>,
    /// The base chains walked (NAT postrouting, at any priority) and their priorities.
    pub bases: Vec<(usize, i32)>,
    /// Chains in depth-first post-order (callees before callers).
    post: Vec<usize>,
    /// Each chain's position in `post`; `None`: not reached from a base chain.
    rank: Vec<Option<usize>>,
    /// Each rule's position in the order a packet first meets it.
    seq: Vec<u32>,
    /// Jumps (from, to) that close a loop.
    back: HashSet<(usize, usize)>,
}

/// When a chain ends the base chain for the packet.
#[derive(Debug, Clone)]
enum Exit {
    /// Never: the packet comes back to the caller.
    Never,
    /// Always.
    Always,
    /// Under these unknown conditions.
    When(Why),
}

/// What a chain meets, from its entry.
enum Event {
    /// A translating rule (index in `table.rules`), what it does, and under which unknowns.
    Found(usize, String, Why),
    /// A call (jump or goto) of a chain, under which unknowns.
    Call(usize, Why),
}

/// One chain under one mark assumption.
struct Summary {
    exit: Exit,
    events: Vec<Event>,
}

/// What a rule does to the rest of its chain.
enum Kind {
    /// The packet goes on to the next rule.
    Next,
    /// It ends the chain: back to the chain that jumped here.
    Return,
    /// It ends the base chain (a translation, accept, drop).
    Terminal,
}

impl<'a> Table<'a> {
    /// Indexes `table` and walks its jump graph from the base chains.
    pub fn new(table: &'a ForeignTable, stop: &mut Stopper<'_>) -> Option<Table<'a>> {
        let mut t = Table {
            table,
            names: Vec::new(),
            ids: HashMap::new(),
            rules: Vec::new(),
            sets: HashMap::new(),
            bases: Vec::new(),
            post: Vec::new(),
            rank: Vec::new(),
            seq: vec![u32::MAX; table.rules.len()],
            back: HashSet::new(),
        };
        let mut is_base = HashSet::new();
        for c in &table.chains {
            let id = t.id(&c.chain.name);
            if is_nat_postrouting(&c.chain.base) && is_base.insert(id) {
                let prio = c.chain.base.as_ref().map_or(0, |b| b.priority);
                t.bases.push((id, prio));
            }
        }
        for (i, r) in table.rules.iter().enumerate() {
            let id = t.id(&r.chain);
            t.rules[id].push(i);
        }
        for s in &table.sets {
            t.sets.entry(s.name.as_str()).or_insert(s);
        }
        t.rank = vec![None; t.names.len()];
        t.dfs(stop)?;
        Some(t)
    }

    fn id(&mut self, name: &'a str) -> usize {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        self.names.push(name);
        self.rules.push(Vec::new());
        self.ids.insert(name, self.names.len() - 1);
        self.names.len() - 1
    }

    /// Every chain a rule may call: its jumps and gotos, and those of the verdict maps it
    /// looks up.
    fn targets(&self, rule: &'a RuleMsg) -> Vec<usize> {
        let mut out = Vec::new();
        let mut add = |name: &str| {
            if let Some(id) = self.ids.get(name) {
                if !out.contains(id) {
                    out.push(*id);
                }
            }
        };
        for e in &rule.exprs {
            match e {
                Expr::Immediate {
                    data: ImmData::Verdict(NFT_JUMP | NFT_GOTO, Some(to)),
                    ..
                } => add(to),
                Expr::Lookup {
                    set,
                    dreg: Some(NFT_REG_VERDICT),
                    ..
                } => {
                    for v in self
                        .sets
                        .get(set.as_str())
                        .map_or(&[][..], |s| s.verdicts())
                    {
                        if let (NFT_JUMP | NFT_GOTO, Some(to)) = (v.code, &v.chain) {
                            add(to);
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Depth first from each base chain, without recursion: post-order, the order rules are
    /// first met, and the jumps that close loops.
    fn dfs(&mut self, stop: &mut Stopper<'_>) -> Option<()> {
        /// A chain being walked: the next rule, and the calls of the current one left.
        struct Frame {
            chain: usize,
            rule: usize,
            calls: Vec<usize>,
        }
        const NEW: u8 = 0;
        const OPEN: u8 = 1;
        const DONE: u8 = 2;
        let mut state = vec![NEW; self.names.len()];
        let mut met = 0u32;
        for b in self.bases.iter().map(|(b, _)| *b).collect::<Vec<_>>() {
            if state[b] != NEW {
                continue;
            }
            state[b] = OPEN;
            let mut stack = vec![Frame {
                chain: b,
                rule: 0,
                calls: Vec::new(),
            }];
            while let Some(f) = stack.last_mut() {
                if let Some(to) = f.calls.pop() {
                    let from = f.chain;
                    match state[to] {
                        NEW => {
                            state[to] = OPEN;
                            stack.push(Frame {
                                chain: to,
                                rule: 0,
                                calls: Vec::new(),
                            });
                        }
                        OPEN => {
                            self.back.insert((from, to));
                        }
                        _ => {}
                    }
                } else if let Some(&r) = self.rules[f.chain].get(f.rule) {
                    stop.tick()?;
                    f.rule += 1;
                    self.seq[r] = met;
                    met += 1;
                    let mut calls = self.targets(&self.table.rules[r]);
                    // Popped from the end: the first call first.
                    calls.reverse();
                    f.calls = calls;
                } else {
                    let c = f.chain;
                    state[c] = DONE;
                    self.rank[c] = Some(self.post.len());
                    self.post.push(c);
                    stack.pop();
                }
            }
        }
        Some(())
    }

    /// Whether a rule is reached from a base chain (whatever the packet).
    pub fn reached(&self, rule: usize) -> bool {
        self.seq.get(rule).is_some_and(|s| *s != u32::MAX)
    }

    /// The findings of every base chain for the packet with this mark assumption: each
    /// base's priority and its findings in the order the packet meets them. `None` when
    /// `stop` said so.
    pub fn pass(
        &self,
        probe: &Packet,
        mark: Option<u32>,
        stop: &mut Stopper<'_>,
    ) -> Option<Vec<(i32, Vec<Finding>)>> {
        let env = Env {
            probe,
            mark,
            sets: &self.sets,
        };
        let mut sums: Vec<Option<Summary>> = (0..self.names.len()).map(|_| None).collect();
        for &c in &self.post {
            let s = self.summarise(c, &sums, &env, stop)?;
            sums[c] = Some(s);
        }
        let mut out = Vec::new();
        for &(b, prio) in &self.bases {
            out.push((prio, self.forward(b, prio, &sums, stop)?));
        }
        Some(out)
    }

    /// A chain's summary; its callees' are in `sums` (but those that close a loop).
    fn summarise(
        &self,
        c: usize,
        sums: &[Option<Summary>],
        env: &Env<'a>,
        stop: &mut Stopper<'_>,
    ) -> Option<Summary> {
        // Conditions under which an earlier rule took the packet away from later ones, and
        // those under which it left the base chain.
        let mut gated = Why::new();
        let mut left = Why::new();
        let mut events = Vec::new();
        for &r in &self.rules[c] {
            stop.tick()?;
            let rule = &self.table.rules[r];
            for (act, why) in emulate::evaluate(rule, env) {
                let mut full = gated.clone();
                extend(&mut full, &why);
                let (kind, when) = match act {
                    Act::Translates(how) => {
                        events.push(Event::Found(r, how, full));
                        (Kind::Terminal, why)
                    }
                    Act::UnknownVerdict => (Kind::Terminal, why),
                    Act::Verdict(code @ (NFT_JUMP | NFT_GOTO), Some(to)) => {
                        let exit = self.call(c, to, sums, full, &mut events);
                        match (exit, code) {
                            (Exit::Always, _) => (Kind::Terminal, why),
                            (Exit::When(w), _) => {
                                let mut all = why;
                                extend(&mut all, &w);
                                (Kind::Terminal, all)
                            }
                            // Back from a goto: the chain that did the goto ends too.
                            (Exit::Never, NFT_GOTO) => (Kind::Return, why),
                            (Exit::Never, _) => (Kind::Next, Why::new()),
                        }
                    }
                    Act::Verdict(NFT_CONTINUE | NFT_BREAK, _) => (Kind::Next, Why::new()),
                    Act::Verdict(NFT_RETURN, _) => (Kind::Return, why),
                    Act::Verdict(..) => (Kind::Terminal, why),
                };
                match kind {
                    Kind::Next => {}
                    Kind::Terminal if when.is_empty() => {
                        let exit = if gated.is_empty() {
                            Exit::Always
                        } else {
                            Exit::When(gated)
                        };
                        return Some(Summary { exit, events });
                    }
                    Kind::Return if when.is_empty() => {
                        return Some(Summary {
                            exit: exit_of(left),
                            events,
                        });
                    }
                    Kind::Terminal => {
                        extend(&mut left, &when);
                        extend(&mut gated, &when);
                    }
                    Kind::Return => extend(&mut gated, &when),
                }
            }
        }
        Some(Summary {
            exit: exit_of(left),
            events,
        })
    }

    /// A call of chain `to` from chain `from` under `why`: recorded, and how it ends.
    fn call(
        &self,
        from: usize,
        to: &str,
        sums: &[Option<Summary>],
        why: Why,
        events: &mut Vec<Event>,
    ) -> Exit {
        let Some(&id) = self.ids.get(to) else {
            return Exit::When(vec![format!("chain {to}, which was not read")]);
        };
        if self.back.contains(&(from, id)) {
            return Exit::When(vec![format!("a loop of jumps through chain {to}")]);
        }
        match &sums[id] {
            Some(s) => {
                events.push(Event::Call(id, why));
                s.exit.clone()
            }
            // Not summarised: a jump the depth-first walk did not see (it follows every
            // jump, so only a table it was not built from); say so rather than guess.
            None => Exit::When(vec![format!("chain {to}, which was not walked")]),
        }
    }

    /// The ways in from base chain `b`, callers before callees: the findings, merged per
    /// rule, in the order the packet meets them.
    fn forward(
        &self,
        b: usize,
        prio: i32,
        sums: &[Option<Summary>],
        stop: &mut Stopper<'_>,
    ) -> Option<Vec<Finding>> {
        let mut entry: HashMap<usize, Why> = HashMap::new();
        let mut queue: BinaryHeap<(usize, usize)> = BinaryHeap::new();
        // Every base chain is a root of the depth-first walk, so it has a rank.
        let Some(rank) = self.rank[b] else {
            return Some(Vec::new());
        };
        entry.insert(b, Why::new());
        queue.push((rank, b));
        let mut found: HashMap<usize, (&str, Why)> = HashMap::new();
        while let Some((_, c)) = queue.pop() {
            stop.tick()?;
            let into = entry.get(&c).cloned().unwrap_or_default();
            for e in sums[c].as_ref().map_or(&[][..], |s| &s.events) {
                // The way here: the way into this chain, then the way from its entry.
                let (Event::Found(_, _, why) | Event::Call(_, why)) = e;
                let mut way = into.clone();
                extend(&mut way, why);
                match e {
                    Event::Found(r, how, _) => match found.get_mut(r) {
                        Some((_, w)) => join(w, way),
                        None => {
                            found.insert(*r, (how.as_str(), way));
                        }
                    },
                    Event::Call(d, _) => match entry.get_mut(d) {
                        Some(w) => join(w, way),
                        None => {
                            entry.insert(*d, way);
                            if let Some(rank) = self.rank[*d] {
                                queue.push((rank, *d));
                            }
                        }
                    },
                }
            }
        }
        let mut found: Vec<(usize, (&str, Why))> = found.into_iter().collect();
        found.sort_by_key(|(r, _)| self.seq[*r]);
        Some(
            found
                .into_iter()
                .map(|(r, (how, why))| {
                    self.finding(r, self.names[b], prio, how.to_string(), answer(why))
                })
                .collect(),
        )
    }

    /// A finding about rule `r` (index in the table's rules) met from base chain `base`.
    pub fn finding(&self, r: usize, base: &str, prio: i32, how: String, answer: Answer) -> Finding {
        let rule = &self.table.rules[r];
        Finding {
            family: family_name(self.table.family),
            table: self.table.name.clone(),
            chain: if rule.chain == base {
                rule.chain.clone()
            } else {
                format!("{} (from {base})", rule.chain)
            },
            priority: prio,
            handle: rule.handle,
            rule: describe(rule),
            verdict: how,
            answer,
        }
    }
}

fn exit_of(left: Why) -> Exit {
    if left.is_empty() {
        Exit::Never
    } else {
        Exit::When(left)
    }
}

fn answer(why: Why) -> Answer {
    if why.is_empty() {
        Answer::Yes
    } else {
        Answer::CannotTell(why)
    }
}
