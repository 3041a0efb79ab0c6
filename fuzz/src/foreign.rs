//! Foreign NAT tables from fuzz bytes, for the `conflict` target: a small program read with
//! `arbitrary`'s [`Unstructured`], one byte at a time, that builds the library's own types
//! ([`ForeignTable`], [`RuleMsg`], [`Expr`], [`ForeignSet`]) directly. [`Prog`] writes such
//! programs, for the seeds.
//!
//! The program: a probe (family, destination, source, output interface, locality), then
//! operations until the bytes run out: a new table, chain, rule, set, or an expression
//! appended to the last rule. Chains, sets and jump targets are named by index, and an
//! index may name nothing (a jump to a chain that does not exist, a lookup of a missing
//! set), so loops, dangling jumps and any nesting are all reachable.

use arbitrary::Unstructured;
use nft_masq_agent::addr::prefix::Span;
use nft_masq_agent::analysis::Packet;
use nft_masq_agent::kernel::nft::decode::{ChainMsg, RuleMsg};
use nft_masq_agent::kernel::nft::expr::{Expr, ImmData};
use nft_masq_agent::kernel::nft::ruleset::{ForeignSet, ForeignTable, Verdict};
use nft_masq_agent::kernel::nft::uapi::*;
use nft_masq_agent::model::{BaseChain, Chain, HOOK_POSTROUTING};

/// Operation codes (the byte modulo [`OPS`]).
pub const OP_TABLE: u8 = 0;
/// A chain: kind (regular, NAT postrouting, filter), priority byte.
pub const OP_CHAIN: u8 = 1;
/// A rule in the chain of this index.
pub const OP_RULE: u8 = 2;
/// An expression for the last rule.
pub const OP_EXPR: u8 = 3;
/// A set of the last table.
pub const OP_SET: u8 = 4;
const OPS: u8 = 5;

/// Expression kinds (the byte after [`OP_EXPR`], modulo [`EXPRS`]).
pub mod x {
    /// `payload load LEN @ network header + OFFSET => reg 1`: offset, len.
    pub const DADDR: u8 = 0;
    /// `payload load 2 @ transport header + 2 => reg 1`.
    pub const PORT: u8 = 1;
    /// `meta load KEY => reg 1`: key selector.
    pub const META: u8 = 2;
    /// `cmp OP reg 1 DATA`: op, len, data.
    pub const CMP: u8 = 3;
    /// `bitwise reg 1 = (reg 1 & MASK) ^ XOR`: 4 + 4 bytes.
    pub const BITWISE: u8 = 4;
    /// `lookup reg 1 set sN`: set index, inverted, dreg (none, verdict, data).
    pub const LOOKUP: u8 = 5;
    /// `jump cN`: chain index.
    pub const JUMP: u8 = 6;
    /// `goto cN`: chain index.
    pub const GOTO: u8 = 7;
    /// A verdict without a chain: selector (accept, drop, return, continue, break, 99).
    pub const VERDICT: u8 = 8;
    /// `masquerade`.
    pub const MASQ: u8 = 9;
    /// `snat to reg 1` or `snat`: whether a register holds the address.
    pub const SNAT: u8 = 10;
    /// An x_tables target or match: target, name selector, info length, info.
    pub const COMPAT: u8 = 11;
    /// `counter`.
    pub const COUNTER: u8 = 12;
    /// `fib`: flags, result.
    pub const FIB: u8 = 13;
    /// `immediate reg 1 VALUE`: len, bytes.
    pub const VALUE: u8 = 14;
    /// An expression the analysis does not know.
    pub const OTHER: u8 = 15;
    pub(super) const EXPRS: u8 = 16;
}

/// Set kinds (the byte after [`OP_SET`], modulo 3).
pub mod s {
    /// Keys: key length, count, then per key 4 bytes (start) and a width exponent.
    pub const KEYS: u8 = 0;
    /// A verdict map: key length, verdict count, per verdict a selector (accept, drop,
    /// return, continue, break, jump, goto, 99) and a chain index; whether the keys can be
    /// compared; key count, per key 4 + 1 bytes and a verdict index.
    pub const VMAP: u8 = 1;
    /// A set that was not read: key length.
    pub const OPAQUE: u8 = 2;
}

/// The fuzz bytes, read one at a time; zeros once they run out.
struct Reader<'a>(Unstructured<'a>);

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        self.0.arbitrary::<u8>().unwrap_or(0)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

fn chain_name(i: u8) -> String {
    format!("c{i}")
}

fn set_name(i: u8) -> String {
    format!("s{i}")
}

fn verdict(sel: u8, chain: u8) -> Verdict {
    let (code, chain) = match sel % 8 {
        0 => (NF_ACCEPT, None),
        1 => (NF_DROP, None),
        2 => (NFT_RETURN, None),
        3 => (NFT_CONTINUE, None),
        4 => (NFT_BREAK, None),
        5 => (NFT_JUMP, Some(chain_name(chain))),
        6 => (NFT_GOTO, Some(chain_name(chain))),
        _ => (99, None),
    };
    Verdict { code, chain }
}

/// The probe and tables a program builds. Bounded: at most 4 tables, 64 chains, 512 rules
/// and 32 expressions a rule, 64 keys a set, so one input stays small.
pub fn build(data: &[u8]) -> (Packet, Vec<ForeignTable>) {
    let mut r = Reader(Unstructured::new(data));
    let v6 = r.byte() & 1 == 1;
    let addr = |r: &mut Reader<'_>| -> std::net::IpAddr {
        if v6 {
            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(r.bytes(16)).unwrap_or_default()).into()
        } else {
            std::net::Ipv4Addr::from(r.u32()).into()
        }
    };
    let dst = addr(&mut r);
    let src = (r.byte() & 1 == 1).then(|| addr(&mut r));
    let oif = match r.byte() % 3 {
        0 => None,
        1 => Some("eth0".to_string()),
        _ => Some("eth1".to_string()),
    };
    let dst_local = [None, Some(false), Some(true)][usize::from(r.byte() % 3)];
    let probe = Packet {
        src,
        dst,
        oif,
        dst_local,
    };
    let mut tables: Vec<ForeignTable> = Vec::new();
    while !r.0.is_empty() {
        let op = r.byte() % OPS;
        if op == OP_TABLE || tables.is_empty() {
            if tables.len() == 4 {
                break;
            }
            let family = [NFPROTO_IPV4, NFPROTO_IPV6, NFPROTO_INET, 7][usize::from(r.byte() % 4)];
            tables.push(ForeignTable {
                family,
                name: format!("t{}", tables.len()),
                chains: Vec::new(),
                rules: Vec::new(),
                sets: Vec::new(),
            });
            if op == OP_TABLE {
                continue;
            }
        }
        let t = tables.last_mut().expect("a table");
        match op {
            OP_CHAIN if t.chains.len() < 64 => {
                let kind = r.byte() % 3;
                let priority = i32::from(r.byte() as i8) * 4;
                let base = (kind > 0).then(|| BaseChain {
                    kind: if kind == 1 { "nat" } else { "filter" }.into(),
                    hook: HOOK_POSTROUTING,
                    priority,
                    policy: 1,
                });
                t.chains.push(ChainMsg {
                    table: t.name.clone(),
                    chain: Chain {
                        name: chain_name(t.chains.len() as u8),
                        base,
                        rules: Vec::new(),
                    },
                });
            }
            OP_RULE if t.rules.len() < 512 => {
                let chain = r.byte();
                t.rules.push(RuleMsg {
                    table: t.name.clone(),
                    chain: chain_name(chain % (t.chains.len() as u8).saturating_add(2)),
                    handle: t.rules.len() as u64 + 1,
                    exprs: Vec::new(),
                });
            }
            OP_EXPR => {
                let e = expr(&mut r);
                if let Some(rule) = t.rules.last_mut().filter(|r| r.exprs.len() < 32) {
                    rule.exprs.push(e);
                }
            }
            OP_SET => {
                let set = set(&mut r, t.sets.len() as u8);
                t.sets.push(set);
            }
            _ => {}
        }
    }
    (probe, tables)
}

fn expr(r: &mut Reader<'_>) -> Expr {
    match r.byte() % x::EXPRS {
        x::DADDR => Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset: u32::from(r.byte()),
            len: u32::from(r.byte() % 17),
            dreg: 1,
        },
        x::PORT => Expr::Payload {
            base: NFT_PAYLOAD_TRANSPORT_HEADER,
            offset: 2,
            len: 2,
            dreg: 1,
        },
        x::META => Expr::Meta {
            key: [
                NFT_META_NFPROTO,
                NFT_META_OIFNAME,
                NFT_META_MARK,
                NFT_META_IIFNAME,
                NFT_META_L4PROTO,
                99,
            ][usize::from(r.byte() % 6)],
            dreg: 1,
        },
        x::CMP => {
            let op = u32::from(r.byte() % 7);
            let len = usize::from(r.byte() % 17);
            Expr::Cmp {
                sreg: 1,
                op,
                data: r.bytes(len),
            }
        }
        x::BITWISE => Expr::Bitwise {
            sreg: 1,
            dreg: 1,
            len: 4,
            mask: r.bytes(4),
            xor: r.bytes(4),
        },
        x::LOOKUP => {
            let set = set_name(r.byte() % 8);
            let flags = u32::from(r.byte() & 1);
            let dreg = [None, Some(NFT_REG_VERDICT), Some(1)][usize::from(r.byte() % 3)];
            Expr::Lookup {
                set,
                sreg: 1,
                dreg,
                set_id: None,
                flags,
            }
        }
        kind @ (x::JUMP | x::GOTO) => Expr::Immediate {
            dreg: 0,
            data: ImmData::Verdict(
                if kind == x::JUMP { NFT_JUMP } else { NFT_GOTO },
                Some(chain_name(r.byte() % 66)),
            ),
        },
        x::VERDICT => {
            let code = [NF_ACCEPT, NF_DROP, NFT_RETURN, NFT_CONTINUE, NFT_BREAK, 99]
                [usize::from(r.byte() % 6)];
            Expr::Immediate {
                dreg: 0,
                data: ImmData::Verdict(code, None),
            }
        }
        x::MASQ => Expr::Masq {
            flags: 0,
            reg_min: None,
            reg_max: None,
        },
        x::SNAT => Expr::Nat {
            kind: NFT_NAT_SNAT,
            family: u32::from(NFPROTO_IPV4),
            reg_addr_min: (r.byte() & 1 == 1).then_some(1),
            reg_addr_max: None,
            reg_proto_min: None,
            reg_proto_max: None,
            flags: 0,
        },
        x::COMPAT => {
            let target = r.byte() & 1 == 1;
            let name = [
                "MASQUERADE",
                "SNAT",
                "RETURN",
                "ACCEPT",
                "MARK",
                "comment",
                "addrtype",
                "mark",
                "other",
            ][usize::from(r.byte() % 9)];
            let len = usize::from(r.byte() % 16);
            Expr::Compat {
                target,
                name: name.into(),
                rev: 1,
                info: r.bytes(len),
            }
        }
        x::COUNTER => Expr::Counter {
            packets: 0,
            bytes: 0,
        },
        x::FIB => Expr::Fib {
            flags: u32::from(r.byte()),
            result: u32::from(r.byte() % 4),
            dreg: 1,
        },
        x::VALUE => {
            let len = usize::from(r.byte() % 17);
            Expr::Immediate {
                dreg: 1,
                data: ImmData::Value(r.bytes(len)),
            }
        }
        _ => Expr::Other { name: "log".into() },
    }
}

/// A key range: 4 bytes of start, then its width as a power of two (0 to 32).
fn span(r: &mut Reader<'_>) -> Span {
    let lo = u128::from(r.u32());
    let width = r.byte() % 33;
    Span {
        lo,
        hi: lo + (1u128 << width) - 1,
    }
}

fn set(r: &mut Reader<'_>, index: u8) -> ForeignSet {
    let name = set_name(index);
    let kind = r.byte() % 3;
    let key_len = usize::from(r.byte() % 18);
    match kind {
        s::KEYS => {
            let n = r.byte() % 65;
            let spans = (0..n).map(|_| span(r)).collect();
            ForeignSet::keys(name, key_len, spans)
        }
        s::VMAP => {
            let nv = r.byte() % 8;
            let verdicts: Vec<Verdict> = (0..nv)
                .map(|_| {
                    let sel = r.byte();
                    verdict(sel, r.byte() % 66)
                })
                .collect();
            let comparable = r.byte() & 1 == 1;
            let n = r.byte() % 65;
            let keys: Vec<(Span, u32)> = (0..n)
                .map(|_| {
                    let s = span(r);
                    (s, u32::from(r.byte()))
                })
                .collect();
            ForeignSet::verdict_map(name, key_len, verdicts, comparable.then_some(keys))
        }
        _ => ForeignSet::opaque(&name, key_len, format!("set {name} not read")),
    }
}

/// Writes programs for [`build`] (the seeds).
#[derive(Debug, Clone, Default)]
pub struct Prog(pub Vec<u8>);

impl Prog {
    /// A program whose probe is the IPv4 destination `dst`, from `src`, not local, no
    /// output interface given.
    pub fn v4(dst: [u8; 4], src: [u8; 4]) -> Prog {
        let mut p = vec![0];
        p.extend_from_slice(&dst);
        p.push(1);
        p.extend_from_slice(&src);
        p.extend_from_slice(&[0, 1]);
        Prog(p)
    }

    /// A table: 0 ip, 1 ip6, 2 inet.
    pub fn table(mut self, family: u8) -> Prog {
        self.0.extend_from_slice(&[OP_TABLE, family]);
        self
    }

    /// A regular chain (named by its index in the table, `cN`).
    pub fn chain(mut self) -> Prog {
        self.0.extend_from_slice(&[OP_CHAIN, 0, 0]);
        self
    }

    /// A NAT postrouting base chain at priority `4 * prio4`.
    pub fn base(mut self, prio4: i8) -> Prog {
        self.0.extend_from_slice(&[OP_CHAIN, 1, prio4 as u8]);
        self
    }

    /// A rule in chain `cN`.
    pub fn rule(mut self, chain: u8) -> Prog {
        self.0.extend_from_slice(&[OP_RULE, chain]);
        self
    }

    /// An expression: its kind and operand bytes (see [`x`]).
    pub fn expr(mut self, kind: u8, operands: &[u8]) -> Prog {
        self.0.extend_from_slice(&[OP_EXPR, kind]);
        self.0.extend_from_slice(operands);
        self
    }

    /// A set: its kind and the bytes that follow (see [`s`]).
    pub fn set(mut self, kind: u8, bytes: &[u8]) -> Prog {
        self.0.extend_from_slice(&[OP_SET, kind]);
        self.0.extend_from_slice(bytes);
        self
    }
}
