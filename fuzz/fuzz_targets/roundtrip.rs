//! Encode -> decode round trips, from structured input.
//!
//! The first byte picks the mode:
//! - even: the rest is read with `arbitrary` into a config, policy flags and table flags
//!   (lists beyond `cidrLimit`, any prefixes, any port ranges), extra sets and chains with
//!   arbitrary statements, a statement list and an expression list (the library's own types,
//!   drawn by its `fuzzing` feature as the wire carries them). Checked: the desired
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
use nft_masq_agent::kernel::netlink::{Attrs, Writer};
use nft_masq_agent::kernel::nft::decode;
use nft_masq_agent::kernel::nft::expr::Expr;
use nft_masq_agent::kernel::nft::stmt::{KNOWN_NAT_FLAGS, lower, raise};
use nft_masq_agent::model::{self, Chain, Family, Interface, Set, Stmt, TABLE_NAME, TableFlags};
use nma_fuzz::{
    assert_canonical_sets, assert_exempts, assert_raise_consistent, assert_round_trip,
    representable,
};

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
    sets: Vec<Set>,
    chains: Vec<Chain>,
    stmts: Vec<Stmt>,
    /// NAT flags added to the masquerades and SNATs of `stmts`: those the agent never writes
    /// must not be read back as ours.
    foreign_nat_flags: u32,
    exprs: Vec<Expr>,
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
        ..PolicyFlags::default()
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
        snat_rules: Vec::new(),
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
        if set_names.insert(s.name.clone()) {
            table.sets.push(s.clone());
        }
    }
    let mut chain_names: HashSet<String> = table.chains.iter().map(|c| c.name.clone()).collect();
    for c in input.chains.iter().take(4) {
        if chain_names.insert(c.name.clone()) {
            table.chains.push(c.clone());
        }
    }
    assert!(representable(&table));
    let _ = table.to_string();
    assert_round_trip(&table, input.seq);

    statements(&input.stmts, input.foreign_nat_flags);
    expressions(&input.exprs);
}

/// `raise(lower(x)) == x`, in memory and through the wire, with and without set ids.
fn statements(list: &[Stmt], foreign_flags: u32) {
    let stmts: Vec<Stmt> = list.iter().take(64).cloned().collect();
    let exprs = lower(&stmts, &|_| None);
    assert_eq!(raise(&exprs), stmts);
    for ids in [false, true] {
        let exprs = lower(&stmts, &|_| ids.then_some(1));
        let back = wire(&exprs);
        assert_eq!(raise(&back), stmts, "through the wire (set ids: {ids})");
    }
    // A masquerade or SNAT with a flag the agent never writes is not read back as ours.
    let foreign = foreign_flags & !KNOWN_NAT_FLAGS;
    if foreign == 0 {
        return;
    }
    for s in &stmts {
        let mut s = s.clone();
        if let Stmt::Masquerade { flags, .. } | Stmt::Snat { flags, .. } = &mut s {
            *flags |= foreign;
            let raised = raise(&lower(&[s.clone()], &|_| None));
            assert!(
                raised.iter().all(|s| matches!(s, Stmt::Unknown(_))),
                "{s:?} read back as {raised:?}"
            );
        }
    }
}

/// Every expression survives encode -> decode; `raise` reads any list only as `lower` writes.
fn expressions(list: &[Expr]) {
    let exprs: Vec<Expr> = list.iter().take(64).cloned().collect();
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
        snat_rules: Vec::new(),
        masq_link_local: true,
        masq_link_local_ipv6: true,
        resync_interval: Duration::from_secs(60),
    };
    let want = model::desired(&config, &flags, t.flags);
    assert_canonical_sets(&want);
    assert_exempts(&config, &want);
    assert_round_trip(&want, 12);
}
