//! Other components' NAT rules that run before ours, and whether they translate a packet
//! first. Pure: the tables come in as read ([`crate::nft::ruleset`]), a packet as far as it
//! is known ([`Probe`]), findings go out.
//!
//! NAT chains at the postrouting hook run in priority order for a connection's first
//! packet, and the first that sets up a binding wins; ours runs at `srcnat + 10`. So a rule
//! of another table at a lower (or equal) priority that masquerades or SNATs a destination
//! our config exempts overrides that decision (kubenet's `! -d 10.0.0.0/8 -j MASQUERADE`, a
//! CNI's `ipMasq`, an old ip-masq-agent chain). Each such rule is evaluated on the packet
//! with a small emulation of the kernel's register machine: the matches we can decide
//! (addresses, family, output interface name, address type, sets) are decided; the rest
//! (a packet mark, an input interface, ports...) leave the answer open, and are named.
//! Rules that depend only on a packet mark (kube-proxy's `KUBE-POSTROUTING`) are expected
//! on every node: they are *conditional*, not conflicts.

use std::net::IpAddr;

use serde::Serialize;

use crate::model::CHAIN_PRIORITY;
use crate::nft::decode::RuleMsg;
use crate::nft::expr::{Expr, ImmData};
use crate::nft::ruleset::{ForeignTable, is_nat_postrouting};
use crate::nft::uapi::*;
use crate::prefix::Family;

/// A packet, as far as the question says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Source address, if known.
    pub src: Option<IpAddr>,
    /// Destination address.
    pub dst: IpAddr,
    /// Output interface name, if known.
    pub oif: Option<String>,
    /// Whether the destination is an address of this node, if known.
    pub dst_local: Option<bool>,
}

impl Probe {
    fn family(&self) -> Family {
        Family::of_addr(&self.dst)
    }
}

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

fn family_name(f: u8) -> &'static str {
    match f {
        NFPROTO_IPV4 => "ip",
        NFPROTO_IPV6 => "ip6",
        NFPROTO_INET => "inet",
        _ => "?",
    }
}

/// Every translating rule of the NAT postrouting chains that run before ours and see the
/// packet's family, with its answer for the packet, in evaluation order.
///
/// A pod's packet carries no mark, so the packet is first walked unmarked; then with an
/// unknown mark, to find the rules only a marked packet reaches (kube-proxy marks the service
/// traffic it wants masqueraded): those are reported as conditional.
pub fn analyze(tables: &[ForeignTable], probe: &Probe) -> Vec<Finding> {
    let mut out = pass(tables, probe, Some(0));
    for f in pass(tables, probe, None) {
        let applies = |a: &Answer| matches!(a, Answer::Yes | Answer::CannotTell(_));
        let known = out
            .iter()
            .any(|g| g.table == f.table && g.handle == f.handle && applies(&g.answer));
        if let (false, Answer::Yes | Answer::CannotTell(_)) = (known, &f.answer) {
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
    out
}

// STAND-IN (issue 17, helper B's branch): helper A delivers the real, memoised
// `analyze_until` that checks `stop` during the walk. This one checks it once, before
// walking; the lead drops it at merge.
/// [`analyze`], unless `stop` says to give up: `None` when stopped.
pub fn analyze_until(
    tables: &[ForeignTable],
    probe: &Probe,
    stop: &dyn Fn() -> bool,
) -> Option<Vec<Finding>> {
    if stop() {
        return None;
    }
    Some(analyze(tables, probe))
}

/// One walk of every base chain with the packet's mark known (or not).
fn pass(tables: &[ForeignTable], probe: &Probe, mark: Option<u32>) -> Vec<Finding> {
    let mut bases: Vec<(&ForeignTable, &str, i32)> = Vec::new();
    for t in tables {
        let sees = match t.family {
            NFPROTO_INET => true,
            NFPROTO_IPV4 => probe.family() == Family::V4,
            NFPROTO_IPV6 => probe.family() == Family::V6,
            _ => false,
        };
        for c in t
            .chains
            .iter()
            .filter(|c| is_nat_postrouting(&c.chain.base))
        {
            let prio = c.chain.base.as_ref().map_or(0, |b| b.priority);
            if sees && prio <= CHAIN_PRIORITY {
                bases.push((t, &c.chain.name, prio));
            }
        }
    }
    bases.sort_by_key(|(_, _, p)| *p);
    let mut out = Vec::new();
    for (table, chain, prio) in bases {
        let mut walk = Walk {
            table,
            probe,
            mark,
            base: chain,
            priority: prio,
            out: &mut out,
        };
        // How the packet leaves the base chain does not matter here: what it met does.
        let _ = walk.chain(chain, &[], 0);
    }
    out
}

/// What a rule does with the packet it sees.
enum Kind {
    /// It goes on to the next rule.
    Next,
    /// It ends the current chain: back to the chain that jumped here.
    Return,
    /// It ends the base chain (a translation, accept, drop).
    Terminal,
}

/// When a chain ends the base chain for the packet.
enum Exit {
    /// Never: the packet comes back to the caller.
    Never,
    /// Always.
    Always,
    /// Under these unknown conditions.
    When(Vec<String>),
}

struct Walk<'a> {
    table: &'a ForeignTable,
    probe: &'a Probe,
    /// The packet's mark, when this walk assumes one.
    mark: Option<u32>,
    base: &'a str,
    priority: i32,
    out: &'a mut Vec<Finding>,
}

/// How deep jumps may nest (the kernel's own limit is 16).
const MAX_JUMPS: usize = 16;

impl Walk<'_> {
    /// Walks `chain` with the unknowns the way there depends on; when the packet leaves
    /// the base chain through it.
    fn chain(&mut self, chain: &str, path: &[String], depth: usize) -> Exit {
        if depth > MAX_JUMPS {
            return Exit::Never;
        }
        let rules: Vec<&RuleMsg> = self
            .table
            .rules
            .iter()
            .filter(|r| r.chain == chain)
            .collect();
        // Conditions under which an earlier rule took the packet away from later ones, and
        // those under which it left the base chain.
        let mut gated: Vec<String> = Vec::new();
        let mut left: Vec<String> = Vec::new();
        for rule in rules {
            let mut full = path.to_vec();
            extend(&mut full, &gated);
            let (kind, when) = self.rule(rule, &full, depth);
            match kind {
                Kind::Next => {}
                Kind::Terminal if when.is_empty() => {
                    return if gated.is_empty() {
                        Exit::Always
                    } else {
                        Exit::When(gated)
                    };
                }
                Kind::Return if when.is_empty() => break,
                Kind::Terminal => {
                    extend(&mut left, &when);
                    extend(&mut gated, &when);
                }
                Kind::Return => extend(&mut gated, &when),
            }
        }
        if left.is_empty() {
            Exit::Never
        } else {
            Exit::When(left)
        }
    }

    /// What the rule does, and under which unknown conditions (none: surely, if reached).
    fn rule(&mut self, rule: &RuleMsg, path: &[String], depth: usize) -> (Kind, Vec<String>) {
        let mut regs = Regs::default();
        let mut unknown: Vec<String> = Vec::new();
        for e in &rule.exprs {
            match step(e, &mut regs, self.probe, self.mark, self.table) {
                Step::Next => {}
                Step::Fails => return (Kind::Next, Vec::new()),
                Step::Unknown(what) => extend(&mut unknown, &[what]),
                Step::Verdict(code, target) => {
                    return self.verdict(code, target, path, unknown, depth);
                }
                Step::Translates(how) => {
                    // Anything after the translation (a counter) does not change the answer.
                    self.found(rule, how, path, &unknown);
                    return (Kind::Terminal, unknown);
                }
            }
        }
        (Kind::Next, Vec::new())
    }

    fn verdict(
        &mut self,
        code: i32,
        target: Option<String>,
        path: &[String],
        unknown: Vec<String>,
        depth: usize,
    ) -> (Kind, Vec<String>) {
        match (code, target) {
            (NFT_JUMP | NFT_GOTO, Some(chain)) => {
                let mut inner = path.to_vec();
                extend(&mut inner, &unknown);
                let exit = self.chain(&chain, &inner, depth + 1);
                match (exit, code) {
                    (Exit::Always, _) => (Kind::Terminal, unknown),
                    (Exit::When(w), _) => {
                        let mut all = unknown;
                        extend(&mut all, &w);
                        (Kind::Terminal, all)
                    }
                    // Back from a goto: the chain that did the goto ends too.
                    (Exit::Never, NFT_GOTO) => (Kind::Return, unknown),
                    (Exit::Never, _) => (Kind::Next, Vec::new()),
                }
            }
            (NFT_CONTINUE, _) => (Kind::Next, Vec::new()),
            (NFT_RETURN, _) => (Kind::Return, unknown),
            _ => (Kind::Terminal, unknown),
        }
    }

    fn found(&mut self, rule: &RuleMsg, how: String, path: &[String], unknown: &[String]) {
        let mut depends: Vec<String> = path.to_vec();
        for u in unknown {
            if !depends.contains(u) {
                depends.push(u.clone());
            }
        }
        let answer = if depends.is_empty() {
            Answer::Yes
        } else {
            Answer::CannotTell(depends)
        };
        let f = self.finding(rule, how, answer);
        self.out.push(f);
    }

    /// A finding about `rule` of the chain being walked.
    fn finding(&self, rule: &RuleMsg, verdict: String, answer: Answer) -> Finding {
        Finding {
            family: family_name(self.table.family),
            table: self.table.name.clone(),
            chain: self.base_and(rule),
            priority: self.priority,
            handle: rule.handle,
            rule: describe(rule),
            verdict,
            answer,
        }
    }

    fn base_and(&self, rule: &RuleMsg) -> String {
        if rule.chain == self.base {
            rule.chain.clone()
        } else {
            format!("{} (from {})", rule.chain, self.base)
        }
    }

    /// Records rules that translate but whose matches failed: they are "no" for this packet.
    fn no(&mut self, rule: &RuleMsg, how: String) {
        let f = self.finding(rule, how, Answer::No);
        self.out.push(f);
    }
}

/// Adds the conditions of `more` not already in `to`.
fn extend(to: &mut Vec<String>, more: &[String]) {
    for m in more {
        if !to.contains(m) {
            to.push(m.clone());
        }
    }
}

/// What a packet mark dependency is called (kube-proxy's marked service traffic).
const MARK: &str = "packet mark";

/// The rule as expressions, for people (nft's own rendering would need its parser).
fn describe(rule: &RuleMsg) -> String {
    let parts: Vec<String> = rule
        .exprs
        .iter()
        .filter(|e| !matches!(e, Expr::Counter { .. }))
        .map(Expr::describe)
        .collect();
    parts.join("; ")
}

/// Registers: each known value, or unknown for this reason.
#[derive(Default)]
struct Regs {
    values: std::collections::HashMap<u32, Result<Vec<u8>, String>>,
}

impl Regs {
    fn set(&mut self, reg: u32, v: Result<Vec<u8>, String>) {
        self.values.insert(reg, v);
    }

    fn get(&self, reg: u32) -> Result<&[u8], String> {
        match self.values.get(&reg) {
            Some(Ok(v)) => Ok(v),
            Some(Err(why)) => Err(why.clone()),
            None => Err("a register nothing loaded".into()),
        }
    }
}

enum Step {
    Next,
    Fails,
    Unknown(String),
    Verdict(i32, Option<String>),
    Translates(String),
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn nfproto(f: Family) -> u8 {
    match f {
        Family::V4 => NFPROTO_IPV4,
        Family::V6 => NFPROTO_IPV6,
    }
}

/// The network header bytes at `offset..offset+len` we know: the addresses.
fn header(probe: &Probe, offset: u32, len: u32) -> Result<Vec<u8>, String> {
    let (saddr, daddr) = match probe.family() {
        Family::V4 => (12, 16),
        Family::V6 => (8, 24),
    };
    let field = |start: u32, addr: Option<IpAddr>, name: &str| -> Result<Vec<u8>, String> {
        let bytes = addr_bytes(addr.ok_or_else(|| format!("the {name}"))?);
        let from = (offset - start) as usize;
        bytes
            .get(from..from + len as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("network header bytes {offset}+{len}"))
    };
    let alen = probe.family().addr_len() as u32;
    if offset >= saddr && offset + len <= saddr + alen {
        field(saddr, probe.src, "source address")
    } else if offset >= daddr && offset + len <= daddr + alen {
        field(daddr, Some(probe.dst), "destination address")
    } else {
        Err(format!("network header bytes {offset}+{len}"))
    }
}

fn meta(key: u32, probe: &Probe, mark: Option<u32>) -> Result<Vec<u8>, String> {
    match key {
        NFT_META_NFPROTO => Ok(vec![nfproto(probe.family())]),
        NFT_META_OIFNAME => {
            let name = probe.oif.as_ref().ok_or("the output interface")?;
            let mut buf = name.as_bytes().to_vec();
            buf.resize(IFNAMSIZ as usize, 0);
            Ok(buf)
        }
        NFT_META_MARK => mark
            .map(|m| m.to_ne_bytes().to_vec())
            .ok_or_else(|| MARK.into()),
        NFT_META_IIFNAME => Err("the input interface".into()),
        NFT_META_L4PROTO => Err("the transport protocol".into()),
        other => Err(format!("meta key {other}")),
    }
}

fn compare(op: u32, have: &[u8], want: &[u8]) -> Option<bool> {
    // cmp compares bytes (memcmp), as the kernel does.
    let ord = have.get(..want.len())?.cmp(want);
    Some(match op {
        NFT_CMP_EQ => ord.is_eq(),
        NFT_CMP_NEQ => ord.is_ne(),
        NFT_CMP_LT => ord.is_lt(),
        NFT_CMP_LTE => ord.is_le(),
        NFT_CMP_GT => ord.is_gt(),
        NFT_CMP_GTE => ord.is_ge(),
        _ => return None,
    })
}

fn to_u128(b: &[u8]) -> u128 {
    b.iter().fold(0u128, |a, x| (a << 8) | u128::from(*x))
}

/// `RTN_LOCAL` or `RTN_UNICAST` for the destination, if we know whether it is local.
fn dst_type(probe: &Probe) -> Result<u32, String> {
    match probe.dst_local {
        Some(true) => Ok(RTN_LOCAL),
        Some(false) => Ok(1),
        None => Err("whether the destination is local".into()),
    }
}

/// x_tables `addrtype` (revision 1): `struct { u16 source; u16 dest; u32 flags; }`, host
/// order; a type is `1 << (RTN_* - 1)`; flag 2 inverts the destination test.
fn addrtype(info: &[u8], probe: &Probe) -> Step {
    let (Some(src), Some(dst), Some(flags)) = (
        info.get(0..2).map(|b| u16::from_ne_bytes([b[0], b[1]])),
        info.get(2..4).map(|b| u16::from_ne_bytes([b[0], b[1]])),
        info.get(4..8)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
    ) else {
        return Step::Unknown("an addrtype match".into());
    };
    if src != 0 || flags & !0x2 != 0 {
        return Step::Unknown("an addrtype match on the source or interfaces".into());
    }
    if dst == 0 {
        return Step::Next;
    }
    match dst_type(probe) {
        Ok(t) => {
            let is = dst & (1 << (t - 1)) != 0;
            if is != (flags & 0x2 != 0) {
                Step::Next
            } else {
                Step::Fails
            }
        }
        Err(why) => Step::Unknown(why),
    }
}

/// x_tables `mark` (revision 1): `struct { u32 mark, mask; u8 invert; }`, host order.
fn mark_match(info: &[u8], mark: Option<u32>) -> Step {
    let word = |i: usize| {
        info.get(i..i + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (Some(want), Some(mask), Some(invert)) = (word(0), word(4), info.get(8)) else {
        return Step::Unknown("an x_tables mark match".into());
    };
    let Some(m) = mark else {
        return Step::Unknown(MARK.into());
    };
    if ((m & mask) == want) != (*invert != 0) {
        Step::Next
    } else {
        Step::Fails
    }
}

/// The address an x_tables SNAT target (revision 0, `nf_nat_ipv4_multi_range_compat`)
/// translates to, for the report.
fn snat_target(info: &[u8]) -> String {
    match info.get(8..12) {
        Some(b) => format!(
            "snat to {}",
            std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3])
        ),
        None => "snat".into(),
    }
}

/// One expression: how the rule goes on.
fn step(e: &Expr, regs: &mut Regs, probe: &Probe, mark: Option<u32>, table: &ForeignTable) -> Step {
    match e {
        Expr::Meta { key, dreg } => regs.set(*dreg, meta(*key, probe, mark)),
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            let v = if *base == NFT_PAYLOAD_NETWORK_HEADER {
                header(probe, *offset, *len)
            } else {
                Err("transport header fields (ports)".into())
            };
            regs.set(*dreg, v);
        }
        Expr::Bitwise {
            sreg,
            dreg,
            mask,
            xor,
            ..
        } => {
            let v = regs.get(*sreg).map(|v| {
                v.iter()
                    .zip(mask.iter().zip(xor))
                    .map(|(b, (m, x))| (b & m) ^ x)
                    .collect()
            });
            regs.set(*dreg, v);
        }
        Expr::Cmp { sreg, op, data } => return cmp(regs, *sreg, *op, data),
        Expr::Lookup {
            set, sreg, flags, ..
        } => return lookup(regs, *sreg, set, *flags, table),
        Expr::Fib {
            flags,
            result,
            dreg,
        } => {
            let v = if *flags & NFTA_FIB_F_DADDR != 0 && *result == NFT_FIB_RESULT_ADDRTYPE {
                dst_type(probe).map(|t| t.to_ne_bytes().to_vec())
            } else {
                Err("a route lookup (fib)".into())
            };
            regs.set(*dreg, v);
        }
        Expr::Immediate {
            dreg,
            data: ImmData::Value(v),
        } => regs.set(*dreg, Ok(v.clone())),
        Expr::Immediate {
            data: ImmData::Verdict(code, chain),
            ..
        } => return Step::Verdict(*code, chain.clone()),
        Expr::Masq { .. } => return Step::Translates("masquerade".into()),
        Expr::Nat {
            kind, reg_addr_min, ..
        } if *kind == NFT_NAT_SNAT => return snat(regs, *reg_addr_min),
        Expr::Compat {
            target, name, info, ..
        } => {
            if let Some(step) = compat(*target, name, info, probe, mark) {
                return step;
            }
        }
        Expr::Counter { .. } => {}
        other => return Step::Unknown(format!("{} expression", other.name())),
    }
    Step::Next
}

/// `cmp`: the rule goes on, stops, or cannot be told.
fn cmp(regs: &Regs, sreg: u32, op: u32, data: &[u8]) -> Step {
    match regs.get(sreg) {
        Ok(v) => match compare(op, v, data) {
            Some(true) => Step::Next,
            Some(false) => Step::Fails,
            None => Step::Unknown(format!("a comparison (op {op})")),
        },
        Err(why) => Step::Unknown(why),
    }
}

/// `lookup` in one of the table's sets (inverted with `!=`).
fn lookup(regs: &Regs, sreg: u32, set: &str, flags: u32, table: &ForeignTable) -> Step {
    let found = table.sets.iter().find(|s| s.name == set);
    match (
        regs.get(sreg),
        found.and_then(|s| s.spans.as_ref().map(|sp| (s, sp))),
    ) {
        (Ok(v), Some((s, spans))) => {
            let key = to_u128(v.get(..s.key_len).unwrap_or(v));
            let member = spans.iter().any(|sp| sp.lo <= key && key <= sp.hi);
            if member != (flags & NFT_LOOKUP_F_INV != 0) {
                Step::Next
            } else {
                Step::Fails
            }
        }
        (Err(why), _) => Step::Unknown(why),
        (_, None) => Step::Unknown(format!("a lookup in set {set}")),
    }
}

/// A native `snat`, with its address when a register holds it.
fn snat(regs: &Regs, reg_addr_min: Option<u32>) -> Step {
    let to = reg_addr_min
        .and_then(|r| regs.get(r).ok().map(<[u8]>::to_vec))
        .and_then(|b| match b.len() {
            4 => Some(IpAddr::from(<[u8; 4]>::try_from(b.as_slice()).ok()?)),
            16 => Some(IpAddr::from(<[u8; 16]>::try_from(b.as_slice()).ok()?)),
            _ => None,
        });
    Step::Translates(match to {
        Some(a) => format!("snat to {a}"),
        None => "snat".into(),
    })
}

/// An iptables-nft x_tables target or match; `None`: it changes nothing here (a comment,
/// MARK, LOG, CONNMARK...).
fn compat(target: bool, name: &str, info: &[u8], probe: &Probe, mark: Option<u32>) -> Option<Step> {
    match (target, name) {
        (true, "MASQUERADE") => Some(Step::Translates("masquerade".into())),
        (true, "SNAT") => Some(Step::Translates(snat_target(info))),
        (true, "RETURN") => Some(Step::Verdict(NFT_RETURN, None)),
        (true, "ACCEPT") => Some(Step::Verdict(NF_ACCEPT, None)),
        (true, _) | (false, "comment") => None,
        (false, "addrtype") => Some(addrtype(info, probe)),
        (false, "mark") => Some(mark_match(info, mark)),
        (false, other) => Some(Step::Unknown(format!("an x_tables {other} match"))),
    }
}

/// The rules of `findings` that override a non-masquerade decision (answer yes, or cannot
/// tell), as opposed to conditional ones and ones that do not apply.
pub fn conflicts(findings: &[Finding]) -> impl Iterator<Item = &Finding> {
    findings
        .iter()
        .filter(|f| matches!(f.answer, Answer::Yes | Answer::CannotTell(_)))
}

/// Records a translating rule whose matches failed, so `--explain` can list it as "no".
pub fn analyze_all(tables: &[ForeignTable], probe: &Probe) -> Vec<Finding> {
    let mut found = analyze(tables, probe);
    // Translating rules not reached or not matching: "no" for this packet.
    for t in tables {
        let sees = t.family == NFPROTO_INET
            || (t.family == NFPROTO_IPV4) == (probe.family() == Family::V4);
        if !sees {
            continue;
        }
        for r in &t.rules {
            let translates = r.exprs.iter().any(|e| {
                matches!(e, Expr::Masq { .. } | Expr::Nat { .. })
                    || matches!(e, Expr::Compat { target: true, name, .. } if name == "MASQUERADE" || name == "SNAT")
            });
            let listed = found
                .iter()
                .any(|f| f.table == t.name && f.handle == r.handle);
            if translates && !listed && reaches_postrouting(t, &r.chain) {
                let how = r
                    .exprs
                    .iter()
                    .find_map(|e| match e {
                        Expr::Masq { .. } => Some("masquerade".to_string()),
                        Expr::Compat {
                            target: true,
                            name,
                            info,
                            ..
                        } if name == "SNAT" => Some(snat_target(info)),
                        Expr::Compat { target: true, .. } => Some("masquerade".to_string()),
                        _ => None,
                    })
                    .unwrap_or_else(|| "snat".into());
                let prio = t
                    .chains
                    .iter()
                    .filter(|c| is_nat_postrouting(&c.chain.base))
                    .map(|c| c.chain.base.as_ref().map_or(0, |b| b.priority))
                    .min()
                    .unwrap_or(0);
                if prio <= CHAIN_PRIORITY {
                    let mut w = Walk {
                        table: t,
                        probe,
                        mark: Some(0),
                        base: &r.chain,
                        priority: prio,
                        out: &mut found,
                    };
                    w.no(r, how);
                }
            }
        }
    }
    found
}

/// Whether a chain of the table is (or is reached from) a NAT postrouting base chain.
fn reaches_postrouting(t: &ForeignTable, chain: &str) -> bool {
    let mut seen: Vec<&str> = t
        .chains
        .iter()
        .filter(|c| is_nat_postrouting(&c.chain.base))
        .map(|c| c.chain.name.as_str())
        .collect();
    let mut i = 0;
    while i < seen.len() {
        let from = seen[i];
        for r in t.rules.iter().filter(|r| r.chain == from) {
            for e in &r.exprs {
                if let Expr::Immediate {
                    data: ImmData::Verdict(NFT_JUMP | NFT_GOTO, Some(to)),
                    ..
                } = e
                {
                    if !seen.contains(&to.as_str()) && seen.len() < 64 {
                        seen.push(to);
                    }
                }
            }
        }
        i += 1;
    }
    seen.contains(&chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BaseChain, Chain, HOOK_POSTROUTING};
    use crate::nft::decode::ChainMsg;
    use crate::nft::ruleset::ForeignSet;

    fn base(name: &str, priority: i32) -> ChainMsg {
        ChainMsg {
            table: "nat".into(),
            chain: Chain {
                name: name.into(),
                base: Some(BaseChain {
                    kind: "nat".into(),
                    hook: HOOK_POSTROUTING,
                    priority,
                    policy: 1,
                }),
                rules: Vec::new(),
            },
        }
    }

    fn regular(name: &str) -> ChainMsg {
        ChainMsg {
            table: "nat".into(),
            chain: Chain {
                name: name.into(),
                base: None,
                rules: Vec::new(),
            },
        }
    }

    fn rule(chain: &str, handle: u64, exprs: Vec<Expr>) -> RuleMsg {
        RuleMsg {
            table: "nat".into(),
            chain: chain.into(),
            handle,
            exprs,
        }
    }

    fn cmp(op: u32, data: &[u8]) -> Expr {
        Expr::Cmp {
            sreg: 1,
            op,
            data: data.to_vec(),
        }
    }

    fn payload(offset: u32, len: u32) -> Expr {
        Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len,
            dreg: 1,
        }
    }

    fn target(name: &str) -> Expr {
        Expr::Compat {
            target: true,
            name: name.into(),
            rev: 0,
            info: Vec::new(),
        }
    }

    /// What iptables-nft 1.8.9 makes of kubenet's and kube-proxy's rules (read back from a
    /// kernel with `nft --debug=netlink`).
    fn kubelet_kubenet_kube_proxy() -> ForeignTable {
        // -m addrtype ! --dst-type LOCAL: dest = LOCAL (1 << 1), flags = invert dest (2).
        let mut addrtype = 0u16.to_ne_bytes().to_vec();
        addrtype.extend_from_slice(&2u16.to_ne_bytes());
        addrtype.extend_from_slice(&2u32.to_ne_bytes());
        ForeignTable {
            family: NFPROTO_IPV4,
            name: "nat".into(),
            chains: vec![base("POSTROUTING", 100), regular("KUBE-POSTROUTING")],
            rules: vec![
                // kubenet: ! -d 10.0.0.0/8 -m addrtype ! --dst-type LOCAL -j MASQUERADE
                rule(
                    "POSTROUTING",
                    2,
                    vec![
                        payload(16, 1),
                        cmp(NFT_CMP_NEQ, &[10]),
                        Expr::Compat {
                            target: false,
                            name: "addrtype".into(),
                            rev: 1,
                            info: addrtype,
                        },
                        Expr::Counter {
                            packets: 0,
                            bytes: 0,
                        },
                        target("MASQUERADE"),
                    ],
                ),
                rule(
                    "POSTROUTING",
                    4,
                    vec![Expr::Immediate {
                        dreg: 0,
                        data: ImmData::Verdict(NFT_JUMP, Some("KUBE-POSTROUTING".into())),
                    }],
                ),
                // kube-proxy: unmarked packets return; marked ones are masqueraded.
                rule(
                    "KUBE-POSTROUTING",
                    5,
                    vec![
                        Expr::Meta {
                            key: NFT_META_MARK,
                            dreg: 1,
                        },
                        Expr::Bitwise {
                            sreg: 1,
                            dreg: 1,
                            len: 4,
                            mask: 0x4000u32.to_ne_bytes().to_vec(),
                            xor: vec![0; 4],
                        },
                        cmp(NFT_CMP_NEQ, &0x4000u32.to_ne_bytes()),
                        Expr::Immediate {
                            dreg: 0,
                            data: ImmData::Verdict(NFT_RETURN, None),
                        },
                    ],
                ),
                rule("KUBE-POSTROUTING", 6, vec![target("MARK")]),
                rule("KUBE-POSTROUTING", 7, vec![target("MASQUERADE")]),
            ],
            sets: Vec::<ForeignSet>::new(),
        }
    }

    fn probe(dst: &str) -> Probe {
        Probe {
            src: Some("10.244.1.2".parse().unwrap()),
            dst: dst.parse().unwrap(),
            oif: None,
            dst_local: Some(false),
        }
    }

    fn answers(findings: &[Finding]) -> Vec<(u64, Answer)> {
        findings
            .iter()
            .map(|f| (f.handle, f.answer.clone()))
            .collect()
    }

    #[test]
    fn kubenet_masquerades_outside_10_8_and_kube_proxy_is_conditional() {
        let t = [kubelet_kubenet_kube_proxy()];
        // Outside 10/8 kubenet's rule takes the packet: nothing after it matters.
        let outside = analyze(&t, &probe("192.168.0.5"));
        assert_eq!(answers(&outside), [(2, Answer::Yes)]);
        assert_eq!(conflicts(&outside).count(), 1);
        // Inside, it does not; kube-proxy's rule translates only marked packets.
        let inside = analyze_all(&t, &probe("10.20.0.5"));
        assert_eq!(
            answers(&inside),
            [(7, Answer::Conditional(vec![MARK.into()])), (2, Answer::No)]
        );
        assert_eq!(inside[0].chain, "KUBE-POSTROUTING (from POSTROUTING)");
        assert_eq!(conflicts(&inside).count(), 0);
        // A local destination is excluded by the addrtype match.
        let mut local = probe("192.168.0.5");
        local.dst_local = Some(true);
        assert!(answers(&analyze_all(&t, &local)).contains(&(2, Answer::No)));
        // Unknown locality: cannot tell, and why.
        local.dst_local = None;
        let f = analyze(&t, &local);
        assert_eq!(
            f[0].answer,
            Answer::CannotTell(vec!["whether the destination is local".into()])
        );
    }

    #[test]
    fn a_return_in_a_jumped_chain_comes_back_to_the_caller() {
        // kube-proxy's jump first (as it inserts it), kubenet's rule after it.
        let mut t = kubelet_kubenet_kube_proxy();
        t.rules.swap(0, 1);
        let t = [t];
        let f = analyze(&t, &probe("192.168.0.5"));
        assert_eq!(
            answers(&f),
            [
                (2, Answer::Yes),
                (7, Answer::Conditional(vec![MARK.into()]))
            ],
            "unmarked packets return from KUBE-POSTROUTING and meet kubenet's rule"
        );
        assert_eq!(conflicts(&f).count(), 1);
    }

    #[test]
    fn chains_after_ours_and_other_families_are_left_out() {
        let mut t = kubelet_kubenet_kube_proxy();
        t.chains[0] = base("POSTROUTING", 200);
        assert!(analyze(&[t], &probe("192.168.0.5")).is_empty());
        let t = kubelet_kubenet_kube_proxy();
        assert!(
            analyze(&[t], &probe("2001:db8::5")).is_empty(),
            "an ip table"
        );
    }

    #[test]
    fn native_rules_with_sets_and_interfaces() {
        // inet cni: ip saddr 10.244.0.0/16 ip daddr != { 10.0.0.0/8 } oifname "eth0" masquerade
        let mut oif = b"eth0".to_vec();
        oif.resize(16, 0);
        let t = ForeignTable {
            family: NFPROTO_INET,
            name: "cni".into(),
            chains: vec![base("post", 100)],
            rules: vec![rule(
                "post",
                3,
                vec![
                    Expr::Meta {
                        key: NFT_META_NFPROTO,
                        dreg: 1,
                    },
                    cmp(NFT_CMP_EQ, &[NFPROTO_IPV4]),
                    payload(12, 2),
                    cmp(NFT_CMP_EQ, &[10, 244]),
                    payload(16, 4),
                    Expr::Lookup {
                        set: "__set0".into(),
                        sreg: 1,
                        set_id: None,
                        flags: NFT_LOOKUP_F_INV,
                    },
                    Expr::Meta {
                        key: NFT_META_OIFNAME,
                        dreg: 1,
                    },
                    cmp(NFT_CMP_EQ, &oif),
                    Expr::Masq {
                        flags: 0,
                        reg_min: None,
                        reg_max: None,
                    },
                ],
            )],
            sets: vec![ForeignSet {
                name: "__set0".into(),
                key_len: 4,
                spans: Some(vec![crate::prefix::Span {
                    lo: 0x0a00_0000,
                    hi: 0x0aff_ffff,
                }]),
            }],
        };
        let t = [t];
        let mut p = probe("192.168.0.5");
        assert_eq!(
            answers(&analyze(&t, &p)),
            [(3, Answer::CannotTell(vec!["the output interface".into()]))]
        );
        p.oif = Some("eth0".into());
        assert_eq!(answers(&analyze(&t, &p)), [(3, Answer::Yes)]);
        p.oif = Some("eth1".into());
        assert_eq!(answers(&analyze_all(&t, &p)), [(3, Answer::No)]);
        let inside = probe("10.1.2.3");
        assert_eq!(answers(&analyze_all(&t, &inside)), [(3, Answer::No)]);
        let mut outside_src = probe("192.168.0.5");
        outside_src.src = Some("10.245.0.1".parse().unwrap());
        assert_eq!(answers(&analyze_all(&t, &outside_src)), [(3, Answer::No)]);
    }
}
