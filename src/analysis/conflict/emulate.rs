//! One rule on the probe: a small emulation of the kernel's register machine. The matches
//! we can decide (addresses, family, output interface name, address type, packet mark when
//! assumed, sets and verdict maps) are decided; the rest (an input interface, ports...)
//! leave the answer open, and are named. Pure; the walk over chains is [`super::walk`].

use std::collections::HashMap;
use std::net::IpAddr;

use super::finding::{MARK, Why, extend};
use crate::addr::prefix::Family;
use crate::analysis::Packet;
use crate::kernel::nft::decode::RuleMsg;
use crate::kernel::nft::expr::{Expr, ImmData};
use crate::kernel::nft::ruleset::{Contents, ForeignSet};
use crate::kernel::nft::uapi::*;

/// What the rule is evaluated with.
pub(super) struct Env<'a> {
    /// The packet.
    pub probe: &'a Packet,
    /// The packet's mark, when the pass assumes one.
    pub mark: Option<u32>,
    /// The table's sets by name.
    pub sets: &'a HashMap<&'a str, &'a ForeignSet>,
}

/// What a rule may do to the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Act<'a> {
    /// A verdict: its code and, for a jump or goto, the chain.
    Verdict(i32, Option<&'a str>),
    /// A verdict nobody can tell (a lookup in a verdict map that was not read), and why.
    UnknownVerdict,
    /// A translation: `masquerade` or `snat ...`.
    Translates(String),
}

/// What the rule does, each possibility with the unknowns it depends on (none: surely, if
/// the rule is reached); empty when it does nothing to the packet (a match fails, or it
/// only counts). More than one possibility only for a verdict map looked up with a key we
/// do not know: each of its verdicts, all uncertain.
pub(super) fn evaluate<'a>(rule: &'a RuleMsg, env: &Env<'a>) -> Vec<(Act<'a>, Why)> {
    let mut regs = Regs::default();
    let mut unknown = Why::new();
    for e in &rule.exprs {
        match step(e, &mut regs, env) {
            Step::Next => {}
            Step::Fails => return Vec::new(),
            Step::Unknown(what) => extend(&mut unknown, &[what]),
            Step::Verdict(code, target) => return vec![(Act::Verdict(code, target), unknown)],
            Step::Branch(verdicts, why) => {
                extend(&mut unknown, &[why]);
                return verdicts
                    .into_iter()
                    .map(|(code, target)| (Act::Verdict(code, target), unknown.clone()))
                    .collect();
            }
            Step::UnknownVerdict(why) => {
                extend(&mut unknown, &[why]);
                return vec![(Act::UnknownVerdict, unknown)];
            }
            // Anything after the translation (a counter) does not change the answer.
            Step::Translates(how) => return vec![(Act::Translates(how), unknown)],
        }
    }
    Vec::new()
}

/// Registers: each known value, or unknown for this reason.
#[derive(Default)]
struct Regs {
    values: HashMap<u32, Result<Vec<u8>, String>>,
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

/// How a rule goes on after one expression.
enum Step<'a> {
    Next,
    Fails,
    Unknown(String),
    Verdict(i32, Option<&'a str>),
    /// One of these verdicts or none, depending on this unknown.
    Branch(Vec<(i32, Option<&'a str>)>, String),
    UnknownVerdict(String),
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
fn header(probe: &Packet, offset: u32, len: u32) -> Result<Vec<u8>, String> {
    let (saddr, daddr) = match probe.family() {
        Family::V4 => (12u64, 16u64),
        Family::V6 => (8, 24),
    };
    // u64: offsets and lengths are others' numbers, and must not overflow.
    let (offset64, len64) = (u64::from(offset), u64::from(len));
    let field = |start: u64, addr: Option<IpAddr>, name: &str| -> Result<Vec<u8>, String> {
        let bytes = addr_bytes(addr.ok_or_else(|| format!("the {name}"))?);
        let from = (offset64 - start) as usize;
        bytes
            .get(from..from + len as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("network header bytes {offset}+{len}"))
    };
    let alen = probe.family().addr_len() as u64;
    if offset64 >= saddr && offset64 + len64 <= saddr + alen {
        field(saddr, probe.src, "source address")
    } else if offset64 >= daddr && offset64 + len64 <= daddr + alen {
        field(daddr, Some(probe.dst), "destination address")
    } else {
        Err(format!("network header bytes {offset}+{len}"))
    }
}

fn meta(key: u32, probe: &Packet, mark: Option<u32>) -> Result<Vec<u8>, String> {
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
fn dst_type(probe: &Packet) -> Result<u32, String> {
    match probe.dst_local {
        Some(true) => Ok(RTN_LOCAL),
        Some(false) => Ok(1),
        None => Err("whether the destination is local".into()),
    }
}

/// x_tables `addrtype` (revision 1): `struct { u16 source; u16 dest; u32 flags; }`, host
/// order; a type is `1 << RTN_*` (the kernel's `XT_ADDRTYPE_*`: LOCAL is 4); flag 2 inverts
/// the destination test.
fn addrtype<'a>(info: &[u8], probe: &Packet) -> Step<'a> {
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
            let is = dst & (1 << t) != 0;
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
fn mark_match<'a>(info: &[u8], mark: Option<u32>) -> Step<'a> {
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
pub(super) fn snat_target(info: &[u8]) -> String {
    match info.get(8..12) {
        Some(b) => format!(
            "snat to {}",
            std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3])
        ),
        None => "snat".into(),
    }
}

/// One expression: how the rule goes on.
fn step<'a>(e: &'a Expr, regs: &mut Regs, env: &Env<'a>) -> Step<'a> {
    let probe = env.probe;
    match e {
        Expr::Meta { key, dreg } => regs.set(*dreg, meta(*key, probe, env.mark)),
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
            set,
            sreg,
            dreg,
            flags,
            ..
        } => return lookup(regs, (*sreg, *dreg), set, *flags, env),
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
        } => return Step::Verdict(*code, chain.as_deref()),
        Expr::Masq { .. } => return Step::Translates("masquerade".into()),
        Expr::Nat {
            kind, reg_addr_min, ..
        } if *kind == NFT_NAT_SNAT => return snat(regs, *reg_addr_min),
        Expr::Compat {
            target, name, info, ..
        } => {
            if let Some(step) = compat(*target, name, info, probe, env.mark) {
                return step;
            }
        }
        Expr::Counter { .. } => {}
        other => return Step::Unknown(format!("{} expression", other.name())),
    }
    Step::Next
}

/// `cmp`: the rule goes on, stops, or cannot be told.
fn cmp<'a>(regs: &Regs, sreg: u32, op: u32, data: &[u8]) -> Step<'a> {
    match regs.get(sreg) {
        Ok(v) => match compare(op, v, data) {
            Some(true) => Step::Next,
            Some(false) => Step::Fails,
            None => Step::Unknown(format!("a comparison (op {op})")),
        },
        Err(why) => Step::Unknown(why),
    }
}

/// `lookup` in one of the table's sets (inverted with `!=`), a verdict map (`vmap`: the
/// destination register is the verdict's) or a data map (the data are not evaluated).
fn lookup<'a>(
    regs: &mut Regs,
    (sreg, dreg): (u32, Option<u32>),
    name: &str,
    flags: u32,
    env: &Env<'a>,
) -> Step<'a> {
    let set = env.sets.get(name).copied();
    let key = regs
        .get(sreg)
        .map(|v| to_u128(v.get(..set.map_or(0, |s| s.key_len)).unwrap_or(v)));
    let cannot = |set: Option<&ForeignSet>| match set.map(ForeignSet::contents) {
        Some(Contents::Opaque(why)) => why.clone(),
        _ => format!("a lookup in set {name}"),
    };
    match dreg {
        Some(NFT_REG_VERDICT) => {
            let Some(set) = set else {
                return Step::UnknownVerdict(cannot(None));
            };
            let all = || {
                set.verdicts()
                    .iter()
                    .map(|v| (v.code, v.chain.as_deref()))
                    .collect()
            };
            match (key, set.contents()) {
                (_, Contents::Opaque(why)) => Step::UnknownVerdict(why.clone()),
                (_, Contents::Keys(_)) => Step::UnknownVerdict(cannot(None)),
                (Err(why), _) => Step::Branch(all(), why),
                (Ok(k), _) => match set.verdict_of(k) {
                    Some(Some(v)) => Step::Verdict(v.code, v.chain.as_deref()),
                    Some(None) => Step::Fails,
                    None => Step::Branch(all(), format!("a lookup in map {name}")),
                },
            }
        }
        _ => {
            if let Some(d) = dreg {
                regs.set(d, Err(format!("the data of map {name}")));
            }
            let key = match key {
                Ok(k) => k,
                Err(why) => return Step::Unknown(why),
            };
            match set.and_then(|s| s.contains(key)) {
                Some(member) if member != (flags & NFT_LOOKUP_F_INV != 0) => Step::Next,
                Some(_) => Step::Fails,
                None => Step::Unknown(cannot(set)),
            }
        }
    }
}

/// A native `snat`, with its address when a register holds it.
fn snat<'a>(regs: &Regs, reg_addr_min: Option<u32>) -> Step<'a> {
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
fn compat<'a>(
    target: bool,
    name: &str,
    info: &[u8],
    probe: &Packet,
    mark: Option<u32>,
) -> Option<Step<'a>> {
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
