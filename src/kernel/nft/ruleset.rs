//! The other NAT tables: what the kernel holds at the postrouting hook outside our table,
//! as raw parts (chains, rules with their expressions, sets with their keys), for the
//! conflict analysis above this layer. The reading is in [`super::socket`]; this module is
//! the data, its assembly from dump messages and the choice of what to read. Pure.
//!
//! Others decide how large their tables are, so the reader is bounded: it reads only the
//! sets that rules reachable from a NAT postrouting chain look up ([`Reach`]), and at most a
//! budget of elements in all ([`SetBuilder::feed`] refuses what would exceed it). A set not
//! read is kept as [`Contents::Opaque`] with the reason, so lookups in it are "cannot tell",
//! never "no".

use std::collections::{HashMap, HashSet};

use super::decode::{self, ChainMsg, Element, RuleMsg, SetMsg};
use super::expr::{Expr, ImmData};
use super::uapi::*;
use crate::addr::prefix::Span;
use crate::kernel::netlink::{Malformed, Msg};
use crate::model::{BaseChain, HOOK_POSTROUTING};

/// The default of `--max-foreign-elements`: the set elements one read of the other NAT
/// tables keeps in all. Masquerade rules of CNIs look up a handful of pool prefixes, and
/// kube-proxy's postrouting path looks up nothing, so 20,000 (10,000 interval prefixes) is
/// far beyond what a real postrouting path references, and costs at most about 2 MiB
/// while it is read (docs/design.md, "Foreign tables").
pub const DEFAULT_MAX_FOREIGN_ELEMENTS: usize = 20_000;

/// One table that has a NAT base chain at the postrouting hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignTable {
    /// `NFPROTO_IPV4` (ip), `NFPROTO_IPV6` (ip6) or `NFPROTO_INET`.
    pub family: u8,
    /// Table name.
    pub name: String,
    /// The chains that matter: the NAT postrouting base chains and those they reach.
    pub chains: Vec<ChainMsg>,
    /// The rules of those chains, in dump order (evaluation order within a chain).
    pub rules: Vec<RuleMsg>,
    /// The sets those rules look up.
    pub sets: Vec<ForeignSet>,
}

/// The other NAT tables as read within the element budget.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForeignRead {
    /// Tables with a NAT postrouting chain (ours left out).
    pub tables: Vec<ForeignTable>,
    /// Tables whose referenced sets were not read because the budget ran out:
    /// (family name "ip"/"ip6"/"inet", table name). Their lookups evaluate as unknown.
    pub too_large: Vec<(&'static str, String)>,
    /// Set elements read in all.
    pub elements: usize,
}

/// What is said of a table whose sets were not read (a log line, an `--explain` note).
pub fn too_large_message(family: &str, table: &str, max_elements: usize) -> String {
    format!(
        "table {family} {table} is too large to analyse: the sets its NAT postrouting rules \
         look up hold more than --max-foreign-elements ({max_elements}) elements with the \
         other tables'; lookups in the sets not read count as cannot tell"
    )
}

/// Why a set was not read: the budget ran out.
pub fn not_read_reason(set: &str, table: &str, max_elements: usize) -> String {
    format!("set {set} of table {table} not read: more than {max_elements} elements")
}

/// `ip`, `ip6` or `inet` (`?` for anything else).
pub fn family_name(f: u8) -> &'static str {
    match f {
        NFPROTO_IPV4 => "ip",
        NFPROTO_IPV6 => "ip6",
        NFPROTO_INET => "inet",
        _ => "?",
    }
}

/// A verdict a rule or a verdict map gives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Verdict {
    /// `NF_ACCEPT`, `NFT_JUMP`, ...
    pub code: i32,
    /// The chain of a jump or goto.
    pub chain: Option<String>,
}

/// A set, reduced to what a lookup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignSet {
    /// Name (anonymous sets are `__set%d`, anonymous maps `__map%d`).
    pub name: String,
    /// Key length in bytes.
    pub key_len: usize,
    contents: Contents,
}

/// What a lookup can be evaluated against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// A set: its keys as sorted, disjoint spans of big-endian integers.
    Keys(Vec<Span>),
    /// A verdict map: its verdicts, and its keys as sorted, disjoint spans with the index of
    /// each one's verdict; `None` when the keys cannot be compared (concatenations).
    Verdicts {
        /// The verdicts (as read: each once, in the order first met).
        verdicts: Vec<Verdict>,
        /// The keys and their verdicts.
        keys: Option<Vec<(Span, u32)>>,
    },
    /// Nothing a lookup can be evaluated against, and why (a data map, concatenated keys,
    /// a set not read).
    Opaque(String),
}

impl ForeignSet {
    /// A set of these keys (sorted and merged here).
    pub fn keys(name: impl Into<String>, key_len: usize, mut spans: Vec<Span>) -> ForeignSet {
        spans.sort_unstable();
        let mut out: Vec<Span> = Vec::with_capacity(spans.len());
        for s in spans.into_iter().filter(|s| s.lo <= s.hi) {
            match out.last_mut() {
                Some(last) if s.lo <= last.hi.saturating_add(1) => last.hi = last.hi.max(s.hi),
                _ => out.push(s),
            }
        }
        ForeignSet {
            name: name.into(),
            key_len,
            contents: Contents::Keys(out),
        }
    }

    /// A verdict map: its verdicts, and its keys (sorted here) with the index of each
    /// one's verdict in `verdicts`; `None`: keys that cannot be compared. Keys that overlap
    /// (which the kernel refuses) or name no verdict are left out.
    pub fn verdict_map(
        name: impl Into<String>,
        key_len: usize,
        verdicts: Vec<Verdict>,
        keys: Option<Vec<(Span, u32)>>,
    ) -> ForeignSet {
        let keys = keys.map(|mut keys| {
            keys.retain(|(s, v)| s.lo <= s.hi && (*v as usize) < verdicts.len());
            keys.sort_unstable_by_key(|(s, _)| s.lo);
            keys.dedup_by(|later, kept| later.0.lo <= kept.0.hi);
            keys
        });
        ForeignSet {
            name: name.into(),
            key_len,
            contents: Contents::Verdicts { verdicts, keys },
        }
    }

    /// A set no lookup can be evaluated against, and why.
    pub fn opaque(name: impl Into<String>, key_len: usize, why: impl Into<String>) -> ForeignSet {
        ForeignSet {
            name: name.into(),
            key_len,
            contents: Contents::Opaque(why.into()),
        }
    }

    /// What a lookup can be evaluated against.
    pub fn contents(&self) -> &Contents {
        &self.contents
    }

    /// Whether `key` is in the set (or map); `None` when that cannot be told.
    pub fn contains(&self, key: u128) -> Option<bool> {
        match &self.contents {
            Contents::Keys(spans) => {
                let i = spans.partition_point(|s| s.hi < key);
                Some(spans.get(i).is_some_and(|s| s.lo <= key))
            }
            Contents::Verdicts { keys: Some(k), .. } => Some(find(k, key).is_some()),
            _ => None,
        }
    }

    /// For a verdict map with comparable keys: the verdict of `key` (`Some(None)`: no
    /// element matches). `None` when that cannot be told.
    pub fn verdict_of(&self, key: u128) -> Option<Option<&Verdict>> {
        match &self.contents {
            Contents::Verdicts {
                verdicts,
                keys: Some(k),
            } => Some(find(k, key).and_then(|i| verdicts.get(i as usize))),
            _ => None,
        }
    }

    /// Every verdict of a verdict map (none for anything else).
    pub fn verdicts(&self) -> &[Verdict] {
        match &self.contents {
            Contents::Verdicts { verdicts, .. } => verdicts,
            _ => &[],
        }
    }
}

fn find(keys: &[(Span, u32)], key: u128) -> Option<u32> {
    let i = keys.partition_point(|(s, _)| s.hi < key);
    keys.get(i).filter(|(s, _)| s.lo <= key).map(|(_, v)| *v)
}

/// Whether a chain is a NAT base chain at the postrouting hook.
pub fn is_nat_postrouting(base: &Option<BaseChain>) -> bool {
    base.as_ref()
        .is_some_and(|b| b.kind == "nat" && b.hook == HOOK_POSTROUTING)
}

/// Whether a family's chains see IPv4 or IPv6 packets at all.
pub fn relevant_family(family: u8) -> bool {
    matches!(family, NFPROTO_IPV4 | NFPROTO_IPV6 | NFPROTO_INET)
}

/// The tables (family, name) with a NAT postrouting chain, from a chain dump of every
/// family, leaving out `(NFPROTO_INET, ours)` and our handover table (which holds our own
/// policy while our table is recreated, and is gone after the commit).
pub fn nat_tables(chains: &[(u8, ChainMsg)], ours: &str) -> Vec<(u8, String)> {
    let mut out: Vec<(u8, String)> = Vec::new();
    let mut seen: HashSet<(u8, &str)> = HashSet::new();
    for (family, c) in chains {
        if relevant_family(*family)
            && is_nat_postrouting(&c.chain.base)
            && !(*family == NFPROTO_INET
                && (c.table == ours || c.table == super::encode::create::handover_name(ours)))
            && seen.insert((*family, c.table.as_str()))
        {
            out.push((*family, c.table.clone()));
        }
    }
    out
}

/// The chains reachable from a table's NAT postrouting chains (at any priority: one after
/// ours still translates what ours leaves alone), and the sets their rules look up.
/// Incremental, so the reader can resume it when a verdict map it read turns out to jump
/// further: every chain and set is visited once.
pub struct Reach<'a> {
    rules: HashMap<&'a str, Vec<&'a RuleMsg>>,
    seen: HashSet<&'a str>,
    queue: Vec<&'a str>,
    looked_up: HashSet<&'a str>,
}

impl<'a> Reach<'a> {
    /// Starts from the NAT postrouting base chains of `chains`.
    pub fn new(chains: &'a [ChainMsg], rules: &'a [RuleMsg]) -> Reach<'a> {
        let mut by_chain: HashMap<&'a str, Vec<&'a RuleMsg>> = HashMap::new();
        for c in chains {
            by_chain.entry(c.chain.name.as_str()).or_default();
        }
        for r in rules {
            by_chain.entry(r.chain.as_str()).or_default().push(r);
        }
        let mut reach = Reach {
            rules: by_chain,
            seen: HashSet::new(),
            queue: Vec::new(),
            looked_up: HashSet::new(),
        };
        for c in chains.iter().filter(|c| is_nat_postrouting(&c.chain.base)) {
            reach.add(&c.chain.name);
        }
        reach
    }

    fn add(&mut self, chain: &str) {
        if let Some((&name, _)) = self.rules.get_key_value(chain) {
            if self.seen.insert(name) {
                self.queue.push(name);
            }
        }
    }

    /// Walks the chains queued; returns the sets their rules look up that no earlier call
    /// returned.
    pub fn next_sets(&mut self) -> Vec<&'a str> {
        let mut out = Vec::new();
        while let Some(chain) = self.queue.pop() {
            let rules = self.rules.get(chain).cloned().unwrap_or_default();
            for r in rules {
                for e in &r.exprs {
                    match e {
                        Expr::Immediate {
                            data: ImmData::Verdict(NFT_JUMP | NFT_GOTO, Some(to)),
                            ..
                        } => self.add(to),
                        Expr::Lookup { set, .. } if self.looked_up.insert(set.as_str()) => {
                            out.push(set.as_str());
                        }
                        _ => {}
                    }
                }
            }
        }
        out
    }

    /// A verdict map was read: the chains it jumps to are reachable too.
    pub fn read(&mut self, set: &ForeignSet) {
        for v in set.verdicts() {
            if let (NFT_JUMP | NFT_GOTO, Some(to)) = (v.code, &v.chain) {
                self.add(to);
            }
        }
    }

    /// Whether `chain` was reached.
    pub fn reached(&self, chain: &str) -> bool {
        self.seen.contains(chain)
    }

    /// The chains reached.
    pub fn finish(self) -> HashSet<String> {
        self.seen.into_iter().map(str::to_string).collect()
    }
}

/// Keeps of a table only the chains reached (see [`Reach::finish`]) and their rules.
pub fn keep_reached(
    chains: &mut Vec<ChainMsg>,
    rules: &mut Vec<RuleMsg>,
    reached: &HashSet<String>,
) {
    chains.retain(|c| reached.contains(&c.chain.name));
    rules.retain(|r| reached.contains(&r.chain));
}

/// A foreign set being read: elements are kept compactly (key, flags, the index of their
/// verdict) and turned into a [`ForeignSet`] at the end.
pub struct SetBuilder {
    msg: SetMsg,
    elements: Vec<(Element, u32)>,
    verdicts: Vec<Verdict>,
    index: HashMap<Verdict, u32>,
    /// The map holds data that are not verdicts (or objects).
    data: bool,
}

/// An element without a verdict.
const NO_VERDICT: u32 = u32::MAX;

impl SetBuilder {
    /// Starts reading the set of this NEWSET message.
    pub fn new(msg: SetMsg) -> SetBuilder {
        SetBuilder {
            msg,
            elements: Vec::new(),
            verdicts: Vec::new(),
            index: HashMap::new(),
            data: false,
        }
    }

    /// The set's name.
    pub fn name(&self) -> &str {
        &self.msg.name
    }

    /// Adds the elements of one NEWSETELEM message if at most `room` more fit; returns how
    /// many it added, or `None` (adding nothing more) when they do not fit.
    pub fn feed(&mut self, msg: &Msg<'_>, room: usize) -> Result<Option<usize>, Malformed> {
        let before = self.elements.len();
        for a in msg.attrs() {
            let a = a?;
            if a.ty != NFTA_SET_ELEM_LIST_ELEMENTS {
                continue;
            }
            for e in a.nested() {
                if self.elements.len() - before >= room {
                    return Ok(None);
                }
                let (mut key, mut flags, mut verdict): (&[u8], u32, u32) = (&[], 0, NO_VERDICT);
                for f in e?.nested() {
                    let f = f?;
                    match f.ty {
                        NFTA_SET_ELEM_KEY => {
                            for v in f.nested() {
                                let v = v?;
                                if v.ty == NFTA_DATA_VALUE {
                                    key = v.data;
                                }
                            }
                        }
                        NFTA_SET_ELEM_FLAGS => flags = f.u32()?,
                        NFTA_SET_ELEM_DATA => {
                            for d in f.nested() {
                                let d = d?;
                                match d.ty {
                                    NFTA_DATA_VERDICT => verdict = self.verdict(&d)?,
                                    _ => self.data = true,
                                }
                            }
                        }
                        _ => {}
                    }
                }
                self.elements.push((Element::new(key, flags), verdict));
            }
        }
        Ok(Some(self.elements.len() - before))
    }

    fn verdict(&mut self, nest: &crate::kernel::netlink::Attr<'_>) -> Result<u32, Malformed> {
        let ImmData::Verdict(code, chain) = super::expr::parse_verdict(nest)? else {
            return Ok(NO_VERDICT);
        };
        let v = Verdict { code, chain };
        if let Some(i) = self.index.get(&v) {
            return Ok(*i);
        }
        let i = self.verdicts.len() as u32;
        self.index.insert(v.clone(), i);
        self.verdicts.push(v);
        Ok(i)
    }

    /// The set as a lookup sees it.
    pub fn finish(self) -> ForeignSet {
        let s = self.msg;
        let key_len = s.key_len as usize;
        let comparable = s.flags & NFT_SET_CONCAT == 0 && (1..=16).contains(&key_len);
        if s.flags & NFT_SET_OBJECT != 0 || self.data {
            return ForeignSet::opaque(&s.name, key_len, format!("the data of map {}", s.name));
        }
        if s.flags & NFT_SET_MAP != 0 {
            let interval = s.flags & NFT_SET_INTERVAL != 0;
            let keys = comparable.then(|| spans(&self.elements, key_len, interval));
            return ForeignSet::verdict_map(&s.name, key_len, self.verdicts, keys);
        }
        if !comparable {
            return ForeignSet::opaque(
                &s.name,
                key_len,
                format!("a lookup in set {} (concatenated keys)", s.name),
            );
        }
        let keys = spans(&self.elements, key_len, s.flags & NFT_SET_INTERVAL != 0);
        ForeignSet::keys(&s.name, key_len, keys.into_iter().map(|(s, _)| s).collect())
    }
}

/// The keys of a set's elements as spans, each with the verdict of the element that starts
/// it. Intervals as [`decode::interval_spans`] reads them: sorted by key, an end before a
/// start at the same key, a start open to the top of the key space if no end follows.
fn spans(elements: &[(Element, u32)], key_len: usize, interval: bool) -> Vec<(Span, u32)> {
    let key = |e: &Element| -> Option<u128> {
        (e.key_len() == key_len).then(|| {
            e.key()
                .unwrap_or(&[])
                .iter()
                .fold(0u128, |a, b| (a << 8) | u128::from(*b))
        })
    };
    if !interval {
        return elements
            .iter()
            .filter_map(|(e, v)| key(e).map(|k| (Span { lo: k, hi: k }, *v)))
            .collect();
    }
    let max = if key_len >= 16 {
        u128::MAX
    } else {
        (1u128 << (8 * key_len)) - 1
    };
    let mut keys: Vec<(u128, bool, u32)> = elements
        .iter()
        .filter_map(|(e, v)| Some((key(e)?, e.flags & NFT_SET_ELEM_INTERVAL_END == 0, *v)))
        .collect();
    keys.sort_unstable_by_key(|(k, start, _)| (*k, *start));
    let mut out = Vec::new();
    let mut open: Option<(u128, u32)> = None;
    for (k, is_start, v) in keys {
        if is_start {
            if let Some((lo, ov)) = open {
                if k > lo {
                    out.push((Span { lo, hi: k - 1 }, ov));
                }
            }
            open = Some((k, v));
        } else if let Some((lo, ov)) = open.take() {
            if k > lo {
                out.push((Span { lo, hi: k - 1 }, ov));
            }
        }
    }
    if let Some((lo, v)) = open {
        out.push((Span { lo, hi: max }, v));
    }
    out
}

/// The family of a dump message (its nfgenmsg).
pub fn family_of(msg: &Msg<'_>) -> u8 {
    msg.family()
}

/// Decodes a chain of a dump of every family.
pub fn chain_of(msg: &Msg<'_>) -> Result<(u8, ChainMsg), Malformed> {
    Ok((msg.family(), decode::chain(msg)?))
}

#[cfg(test)]
mod tests;
