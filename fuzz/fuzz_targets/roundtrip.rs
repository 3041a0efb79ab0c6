//! Encode -> decode round trips, from structured input.
//!
//! The first byte picks the mode:
//! - even: the rest is read with `arbitrary` into a config, policy flags and table flags
//!   (lists beyond `cidrLimit`, any prefixes, any port ranges), extra sets and chains with
//!   arbitrary statements, a statement list and an expression list. Checked: the desired
//!   table is canonical and exempts what the config says; `decode(encode(table)) == table`
//!   with the extras added, in both replace forms; `raise(lower(stmts)) == stmts`, also
//!   through the wire bytes and with batch-local set ids; a masquerade with a flag we do not
//!   write is never read back as ours; every expression survives encode -> decode, and
//!   `raise` reads any expression list only as `lower` writes it.
//! - odd: the rest is a batch or a dump (seeds: the encoder's own batches). The table it
//!   holds, if the agent could have written it, must come back unchanged; and a config made
//!   of its prefixes must give a desired table that round-trips.
#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use libfuzzer_sys::fuzz_target;
use nft_masq_agent::config::{Config, PolicyFlags, SnatTarget, entries};
use nft_masq_agent::model::{
    self, BaseChain, Chain, Family, Interface, NAT_PERSISTENT, NAT_PROTO_RANDOM,
    NAT_PROTO_RANDOM_FULLY, NAT_PROTO_SPECIFIED, Rule, Set, Stmt, TABLE_NAME, TableFlags,
};
use nft_masq_agent::kernel::netlink::{Attrs, Writer};
use nft_masq_agent::kernel::nft::decode;
use nft_masq_agent::kernel::nft::expr::{Expr, ImmData};
use nft_masq_agent::kernel::nft::stmt::{lower, raise};
use nft_masq_agent::addr::prefix::RangeSet;
use nma_fuzz::{
    assert_canonical_sets, assert_exempts, assert_raise_consistent, assert_round_trip,
    representable,
};

/// The NAT flags the agent writes (and so reads back as its own).
const KNOWN_NAT_FLAGS: u32 =
    NAT_PROTO_SPECIFIED | NAT_PROTO_RANDOM | NAT_PERSISTENT | NAT_PROTO_RANDOM_FULLY;
/// At most this many entries per list: keeps one input's table small enough to stay fast.
const MAX_LIST: usize = 64;

#[derive(Arbitrary, Debug)]
struct Net {
    v6: bool,
    addr: u128,
    len: u8,
}

impl Net {
    fn net(&self) -> IpNet {
        if self.v6 {
            IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(self.addr), self.len % 129)
                    .expect("len <= 128")
                    .trunc(),
            )
        } else {
            IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(self.addr as u32), self.len % 33)
                    .expect("len <= 32")
                    .trunc(),
            )
        }
    }
}

#[derive(Arbitrary, Debug)]
enum AStmt {
    Nfproto(bool),
    L4proto(u8),
    Fib,
    DaddrInSet {
        v6: bool,
        set: String,
    },
    SaddrNotInSet {
        v6: bool,
        set: String,
    },
    OifnameNotInSet {
        set: String,
    },
    Numgen {
        modulus: u32,
        below: u32,
    },
    Counter {
        packets: u64,
        bytes: u64,
    },
    Masquerade {
        flags: u32,
        ports: Option<(u16, u16)>,
    },
    Snat {
        v6: bool,
        first: u128,
        last: u128,
        flags: u32,
        ports: Option<(u16, u16)>,
    },
    Return,
}

/// An address of the family, from any integer (IPv4 uses the low 32 bits).
fn addr(v6: bool, a: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::from(a as u32))
    }
}

fn family(v6: bool) -> Family {
    if v6 { Family::V6 } else { Family::V4 }
}

/// A name as the wire carries it: no NUL (names are NUL-terminated), short.
fn name(s: &str) -> String {
    s.chars().filter(|&c| c != '\0').take(32).collect()
}

impl AStmt {
    /// The statement; `known_flags` masks a masquerade's flags to those the agent writes.
    fn stmt(&self, known_flags: bool) -> Stmt {
        match self {
            AStmt::Nfproto(v6) => Stmt::Nfproto(family(*v6)),
            AStmt::L4proto(p) => Stmt::L4proto(*p),
            AStmt::Fib => Stmt::FibDaddrLocal,
            AStmt::DaddrInSet { v6, set } => Stmt::DaddrInSet {
                family: family(*v6),
                set: name(set),
            },
            AStmt::SaddrNotInSet { v6, set } => Stmt::SaddrNotInSet {
                family: family(*v6),
                set: name(set),
            },
            AStmt::OifnameNotInSet { set } => Stmt::OifnameNotInSet { set: name(set) },
            AStmt::Numgen { modulus, below } => Stmt::NumgenBelow {
                modulus: *modulus,
                below: *below,
            },
            AStmt::Counter { packets, bytes } => Stmt::Counter {
                packets: *packets,
                bytes: *bytes,
            },
            AStmt::Masquerade { flags, ports } => Stmt::Masquerade {
                flags: if known_flags {
                    flags & KNOWN_NAT_FLAGS
                } else {
                    *flags
                },
                ports: *ports,
            },
            AStmt::Snat {
                v6,
                first,
                last,
                flags,
                ports,
            } => Stmt::Snat {
                family: family(*v6),
                first: addr(*v6, *first.min(last)),
                last: addr(*v6, *first.max(last)),
                flags: if known_flags {
                    flags & KNOWN_NAT_FLAGS
                } else {
                    *flags
                },
                ports: *ports,
            },
            AStmt::Return => Stmt::Return,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum AImm {
    Verdict(i32, Option<String>),
    Value(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum AExpr {
    Meta {
        key: u32,
        dreg: u32,
    },
    Cmp {
        sreg: u32,
        op: u32,
        data: Vec<u8>,
    },
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Lookup {
        set: String,
        sreg: u32,
        dreg: Option<u32>,
        flags: u32,
    },
    Fib {
        flags: u32,
        result: u32,
        dreg: u32,
    },
    Immediate {
        dreg: u32,
        data: AImm,
    },
    Counter {
        packets: u64,
        bytes: u64,
    },
    Masq {
        flags: u32,
        reg_min: Option<u32>,
        reg_max: Option<u32>,
    },
    Nat {
        kind: u32,
        family: u32,
        regs: [Option<u32>; 4],
        flags: u32,
    },
    Bitwise {
        sreg: u32,
        dreg: u32,
        len: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Compat {
        target: bool,
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
    Numgen {
        dreg: u32,
        modulus: u32,
        kind: u32,
        offset: u32,
    },
    Byteorder {
        sreg: u32,
        dreg: u32,
        op: u32,
        len: u32,
        size: u32,
    },
    Other {
        name: String,
    },
}

/// The names `Expr::decode` parses itself: an `Other` by one of them is not an `Other`.
const MODELLED: [&str; 14] = [
    "meta",
    "cmp",
    "payload",
    "lookup",
    "fib",
    "immediate",
    "counter",
    "masq",
    "nat",
    "numgen",
    "byteorder",
    "bitwise",
    "match",
    "target",
];

impl AExpr {
    fn expr(&self) -> Expr {
        match self {
            AExpr::Meta { key, dreg } => Expr::Meta {
                key: *key,
                dreg: *dreg,
            },
            AExpr::Cmp { sreg, op, data } => Expr::Cmp {
                sreg: *sreg,
                op: *op,
                data: data.clone(),
            },
            AExpr::Payload {
                base,
                offset,
                len,
                dreg,
            } => Expr::Payload {
                base: *base,
                offset: *offset,
                len: *len,
                dreg: *dreg,
            },
            AExpr::Lookup {
                set,
                sreg,
                dreg,
                flags,
            } => Expr::Lookup {
                set: name(set),
                sreg: *sreg,
                dreg: *dreg,
                set_id: None,
                flags: *flags,
            },
            AExpr::Fib {
                flags,
                result,
                dreg,
            } => Expr::Fib {
                flags: *flags,
                result: *result,
                dreg: *dreg,
            },
            AExpr::Immediate { dreg, data } => Expr::Immediate {
                dreg: *dreg,
                data: match data {
                    AImm::Verdict(code, chain) => {
                        ImmData::Verdict(*code, chain.as_deref().map(name))
                    }
                    AImm::Value(v) => ImmData::Value(v.iter().copied().take(256).collect()),
                },
            },
            AExpr::Counter { packets, bytes } => Expr::Counter {
                packets: *packets,
                bytes: *bytes,
            },
            AExpr::Masq {
                flags,
                reg_min,
                reg_max,
            } => Expr::Masq {
                flags: *flags,
                reg_min: *reg_min,
                reg_max: *reg_max,
            },
            AExpr::Nat {
                kind,
                family,
                regs: [addr_min, addr_max, proto_min, proto_max],
                flags,
            } => Expr::Nat {
                kind: *kind,
                family: *family,
                reg_addr_min: *addr_min,
                // The kernel reports a missing last address as the first one's register,
                // and NF_NAT_RANGE_MAP_IPS with an address: the decoder folds both back.
                reg_addr_max: addr_max.filter(|r| Some(*r) != *addr_min),
                reg_proto_min: *proto_min,
                reg_proto_max: *proto_max,
                flags: if addr_min.is_some() {
                    flags & !1
                } else {
                    *flags
                },
            },
            AExpr::Bitwise {
                sreg,
                dreg,
                len,
                mask,
                xor,
            } => Expr::Bitwise {
                sreg: *sreg,
                dreg: *dreg,
                len: *len,
                mask: mask.iter().copied().take(256).collect(),
                xor: xor.iter().copied().take(256).collect(),
            },
            AExpr::Compat {
                target,
                name: n,
                rev,
                info,
            } => Expr::Compat {
                target: *target,
                name: name(n),
                rev: *rev,
                info: info.iter().copied().take(256).collect(),
            },
            AExpr::Numgen {
                dreg,
                modulus,
                kind,
                offset,
            } => Expr::Numgen {
                dreg: *dreg,
                modulus: *modulus,
                kind: *kind,
                offset: *offset,
            },
            AExpr::Byteorder {
                sreg,
                dreg,
                op,
                len,
                size,
            } => Expr::Byteorder {
                sreg: *sreg,
                dreg: *dreg,
                op: *op,
                len: *len,
                size: *size,
            },
            AExpr::Other { name: n } => {
                let mut n = name(n);
                if n.is_empty() || MODELLED.contains(&n.as_str()) {
                    n.insert(0, 'x');
                }
                Expr::Other { name: n }
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
struct ASet {
    name: String,
    v6: bool,
    nets: Vec<Net>,
    holes: Vec<Net>,
}

#[derive(Arbitrary, Debug)]
struct AChain {
    name: String,
    base: Option<(String, u32, i32, u32)>,
    rules: Vec<Vec<AStmt>>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    ipv6: bool,
    reserved: bool,
    random_fully: bool,
    to_ports: Vec<(u16, u16)>,
    non_masq: Vec<Net>,
    masq: Vec<Net>,
    sources: Vec<Net>,
    egress: Vec<String>,
    snat: Vec<(bool, u128, u128)>,
    masq_link_local: bool,
    masq_link_local_ipv6: bool,
    table_flags: u32,
    seq: u32,
    sets: Vec<ASet>,
    chains: Vec<AChain>,
    stmts: Vec<AStmt>,
    exprs: Vec<AExpr>,
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((m, rest)) if m & 1 == 1 => from_batch(rest),
        Some((_, rest)) => {
            if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(rest)) {
                structured(&input);
            }
        }
        None => {}
    }
});

fn nets(list: &[Net]) -> Vec<IpNet> {
    list.iter().take(MAX_LIST).map(Net::net).collect()
}

fn structured(input: &Input) {
    let ports = input
        .to_ports
        .iter()
        .take(4)
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join(",");
    let flags = PolicyFlags {
        nomasq_all_reserved_ranges: input.reserved,
        enable_ipv6: input.ipv6,
        random_fully: input.random_fully,
        to_ports: ports.parse().ok(),
        max_prefixes: usize::MAX,
    };
    // snatTo: at most one target per family, first <= last (what validation lets through).
    let mut snat: Vec<SnatTarget> = Vec::new();
    for &(v6, a, b) in input.snat.iter().take(2) {
        if snat.iter().all(|t| t.family() != family(v6)) {
            snat.push(SnatTarget {
                first: addr(v6, a.min(b)),
                last: addr(v6, a.max(b)),
            });
        }
    }
    let config = Config {
        files: Vec::new(),
        non_masquerade_cidrs: entries(nets(&input.non_masq)),
        masquerade_cidrs: entries(nets(&input.masq)),
        source_cidrs: entries(nets(&input.sources)),
        egress_interfaces: entries(
            input
                .egress
                .iter()
                .take(MAX_LIST)
                .filter_map(|s| s.parse::<Interface>().ok()),
        ),
        snat_to: entries(snat),
        masq_link_local: input.masq_link_local,
        masq_link_local_ipv6: input.masq_link_local_ipv6,
        resync_interval: Duration::from_secs(60),
    };
    let mut table = model::desired(&config, &flags, TableFlags(input.table_flags));
    assert_canonical_sets(&table);
    assert_exempts(&config, &table);
    let _ = table.to_string();
    assert_round_trip(&table, input.seq);

    // The same table with arbitrary sets and chains besides ours.
    let mut set_names: HashSet<String> = table
        .sets
        .iter()
        .map(|s| s.name.clone())
        .chain(table.name_sets.iter().map(|s| s.name.clone()))
        .collect();
    for s in input.sets.iter().take(4) {
        let n = name(&s.name);
        if !set_names.insert(n.clone()) {
            continue;
        }
        let family = family(s.v6);
        let of_family = |l: &[Net]| -> RangeSet {
            let v: Vec<IpNet> = nets(l)
                .into_iter()
                .filter(|n| Family::of(n) == family)
                .collect();
            RangeSet::from_nets(&v)
        };
        let prefixes = of_family(&s.nets)
            .difference(&of_family(&s.holes))
            .to_prefixes(family.bits());
        table.sets.push(Set {
            name: n,
            family,
            prefixes,
        });
    }
    let mut chain_names: HashSet<String> = table.chains.iter().map(|c| c.name.clone()).collect();
    for c in input.chains.iter().take(4) {
        let n = name(&c.name);
        if !chain_names.insert(n.clone()) {
            continue;
        }
        table.chains.push(Chain {
            name: n,
            base: c
                .base
                .as_ref()
                .map(|(kind, hook, priority, policy)| BaseChain {
                    kind: name(kind),
                    hook: *hook,
                    priority: *priority,
                    policy: *policy,
                }),
            rules: c
                .rules
                .iter()
                .take(16)
                .map(|r| Rule {
                    stmts: r.iter().take(16).map(|s| s.stmt(true)).collect(),
                })
                .collect(),
        });
    }
    assert!(representable(&table));
    let _ = table.to_string();
    assert_round_trip(&table, input.seq);

    statements(&input.stmts);
    expressions(&input.exprs);
}

/// `raise(lower(x)) == x`, in memory and through the wire, with and without set ids.
fn statements(list: &[AStmt]) {
    let stmts: Vec<Stmt> = list.iter().take(64).map(|s| s.stmt(true)).collect();
    let exprs = lower(&stmts, &|_| None);
    assert_eq!(raise(&exprs), stmts);
    for ids in [false, true] {
        let exprs = lower(&stmts, &|_| ids.then_some(1));
        let back = wire(&exprs);
        assert_eq!(raise(&back), stmts, "through the wire (set ids: {ids})");
    }
    // A masquerade or SNAT with a flag the agent never writes is not read back as ours.
    for s in list.iter().take(64) {
        if let AStmt::Masquerade { flags, .. } | AStmt::Snat { flags, .. } = s {
            if flags & !KNOWN_NAT_FLAGS != 0 {
                let raised = raise(&lower(&[s.stmt(false)], &|_| None));
                assert!(
                    raised.iter().all(|s| matches!(s, Stmt::Unknown(_))),
                    "{s:?} read back as {raised:?}"
                );
            }
        }
    }
}

/// Every expression survives encode -> decode; `raise` reads any list only as `lower` writes.
fn expressions(list: &[AExpr]) {
    let exprs: Vec<Expr> = list.iter().take(64).map(AExpr::expr).collect();
    assert_eq!(wire(&exprs), exprs);
    assert_raise_consistent(&exprs);
    for e in &exprs {
        let _ = e.describe();
    }
}

/// Expressions through the wire format and back; the kernel does not report set ids.
fn wire(exprs: &[Expr]) -> Vec<Expr> {
    let mut w = Writer::default();
    for e in exprs {
        e.encode(&mut w);
    }
    let bytes = w.into_bytes();
    Attrs::new(&bytes)
        .map(|a| Expr::decode(&a.expect("our own attributes frame")).expect("our own expression"))
        .map(|e| match e {
            Expr::Lookup {
                set,
                sreg,
                dreg,
                flags,
                ..
            } => Expr::Lookup {
                set,
                sreg,
                dreg,
                set_id: None,
                flags,
            },
            other => other,
        })
        .collect()
}

/// A batch or dump: its table round-trips when the agent could have written it, and a config
/// of its prefixes gives a desired table that round-trips and exempts what it should.
fn from_batch(bytes: &[u8]) {
    let Ok(Some(t)) = decode::table_from_dump(bytes, TABLE_NAME) else {
        return;
    };
    if representable(&t) {
        assert_round_trip(&t, 11);
    }
    let prefixes: Vec<IpNet> = t
        .sets
        .iter()
        .flat_map(|s| s.prefixes.iter().copied())
        .take(1024)
        .collect();
    let ipv6 = prefixes.iter().any(|p| Family::of(p) == Family::V6);
    let flags = PolicyFlags {
        enable_ipv6: ipv6,
        max_prefixes: usize::MAX,
        ..PolicyFlags::default()
    };
    let config = Config {
        files: Vec::new(),
        non_masquerade_cidrs: entries(prefixes),
        masquerade_cidrs: Vec::new(),
        source_cidrs: Vec::new(),
        egress_interfaces: entries(t.name_sets.iter().flat_map(|s| s.names.iter().cloned())),
        snat_to: Vec::new(),
        masq_link_local: true,
        masq_link_local_ipv6: true,
        resync_interval: Duration::from_secs(60),
    };
    let want = model::desired(&config, &flags, t.flags);
    assert_canonical_sets(&want);
    assert_exempts(&config, &want);
    assert_round_trip(&want, 12);
}
