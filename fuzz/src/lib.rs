//! What the fuzz targets share: the flags a config input selects, the encode -> decode round
//! trip with its assertions, the invariants of a decoded or desired table, and foreign NAT
//! tables built from bytes ([`foreign`]).
//!
//! The targets themselves are in `fuzz_targets/`; the seed corpora in `seeds/` are written by
//! `examples/seeds.rs` (see DEVELOPERS.md, "Fuzzing").

use std::collections::HashSet;

pub mod foreign;

use ipnet::IpNet;
use nft_masq_agent::addr::prefix::{RangeSet, Span};
use nft_masq_agent::config::priority::ChainPriority;
use nft_masq_agent::config::{Config, DEFAULT_MAX_PREFIXES, PolicyFlags, values};
use nft_masq_agent::kernel::netlink::messages;
use nft_masq_agent::kernel::nft::decode;
use nft_masq_agent::kernel::nft::encode::{self, ReplaceForm};
use nft_masq_agent::kernel::nft::events::{self, Event};
use nft_masq_agent::kernel::nft::expr::Expr;
use nft_masq_agent::kernel::nft::stmt::{lower, raise};
use nft_masq_agent::model::shard::DEFAULT_MAX_SET_PREFIXES;
use nft_masq_agent::model::{
    Family, Interface, SET_BLOCKS_V4, SET_BLOCKS_V6, SET_SRC_V4, SET_SRC_V6, SET_V4, SET_V6, Set,
    Stmt, Table, is_exemption_set,
};

/// The `--to-ports` value a flags byte may select (ip-masq-agent's documented example).
pub const TO_PORTS: &str = "1024-29999,32768-65535";

/// The policy flags selected by one input byte: bit 0 `--enable-ipv6`, bit 1
/// `--nomasq-all-reserved-ranges`, bit 2 `--random-fully=false`, bit 3 `--to-ports`, bits
/// 4-5 `--max-prefixes` (the default, 1, 64 or 4096: small caps make the cap reachable),
/// bits 6-7 `--chain-priority` (the default, the lowest and highest the agent accepts, or
/// `srcnat - 10`: the encoder and decoder see negative and large values). With
/// `--max-prefixes 64` the exemptions are cut into block sets of at most 2 prefixes
/// (`--max-set-prefixes`), so block sets, their chains and dispatch maps are drawn too.
pub fn policy_flags(b: u8) -> PolicyFlags {
    PolicyFlags {
        enable_ipv6: b & 1 != 0,
        nomasq_all_reserved_ranges: b & 2 != 0,
        random_fully: b & 4 == 0,
        to_ports: (b & 8 != 0).then(|| TO_PORTS.parse().expect("a valid --to-ports")),
        max_set_prefixes: if (b >> 4) & 3 == 2 {
            2
        } else {
            DEFAULT_MAX_SET_PREFIXES
        },
        max_prefixes: match (b >> 4) & 3 {
            0 => DEFAULT_MAX_PREFIXES,
            1 => 1,
            2 => 64,
            _ => 4096,
        },
        chain_priority: match b >> 6 {
            0 => ChainPriority::DEFAULT,
            1 => ChainPriority::MIN,
            2 => ChainPriority::MAX,
            _ => ChainPriority(90),
        },
    }
}

/// The flags byte that selects `flags` (the inverse of [`policy_flags`] for the flags it can
/// express), for writing seeds.
pub fn flags_byte(ipv6: bool, reserved: bool, to_ports: bool) -> u8 {
    u8::from(ipv6) | u8::from(reserved) << 1 | u8::from(to_ports) << 3
}

/// Asserts that the prefixes of every set are sorted, disjoint, of the set's family and the
/// fewest that cover their addresses (what both `model::desired` and the decoder produce).
pub fn assert_canonical_sets(t: &Table) {
    for set in &t.sets {
        let bits = set.family.bits();
        for p in &set.prefixes {
            assert_eq!(
                Family::of(p),
                set.family,
                "set {}: {p} of another family",
                set.name
            );
            assert_eq!(p.trunc(), *p, "set {}: {p} has host bits", set.name);
        }
        for w in set.prefixes.windows(2) {
            assert!(
                Span::of(&w[0]).hi < Span::of(&w[1]).lo,
                "set {}: {} and {} are not sorted and disjoint",
                set.name,
                w[0],
                w[1]
            );
        }
        let merged = RangeSet::from_nets(&set.prefixes);
        assert_eq!(
            merged.prefix_count(bits),
            merged.to_prefixes(bits).len(),
            "prefix_count disagrees with to_prefixes"
        );
    }
}

/// Whether the set's prefixes are the canonical form of their union (merged, then the fewest
/// aligned prefixes): true for `model::desired`'s sets.
pub fn is_minimal(prefixes: &[IpNet], family: Family) -> bool {
    RangeSet::from_nets(prefixes).to_prefixes(family.bits()) == prefixes
}

/// Whether `addr` (an integer of the set's family) is in one of the sorted prefixes.
pub fn contains(prefixes: &[IpNet], addr: u128) -> bool {
    let i = prefixes.partition_point(|p| Span::of(p).hi < addr);
    prefixes.get(i).is_some_and(|p| Span::of(p).lo <= addr)
}

/// Whether the encoder can write `t` and the decoder must give it back unchanged: what
/// `model::desired` makes, and what the decoder reads of a table the agent could have
/// written. Names must be unique (sets and rules are matched by name), without NUL (names
/// are NUL-terminated on the wire) and short (an attribute holds at most 64 KiB); no
/// statement may be `Unknown` (it has no wire form) and nothing may be foreign.
pub fn representable(t: &Table) -> bool {
    const MAX_NAME: usize = 1024;
    let name_ok = |s: &str| s.len() <= MAX_NAME && !s.contains('\0');
    let unique = |names: Vec<&str>| {
        let n = names.len();
        names.into_iter().collect::<HashSet<_>>().len() == n
    };
    // Address and name sets share one namespace: elements find their set by name.
    let set_names: Vec<&str> = t
        .sets
        .iter()
        .map(|s| s.name.as_str())
        .chain(t.name_sets.iter().map(|s| s.name.as_str()))
        .collect();
    name_ok(&t.name)
        && t.foreign.is_empty()
        && set_names.iter().all(|n| name_ok(n))
        && unique(set_names)
        && unique(t.chains.iter().map(|c| c.name.as_str()).collect())
        && t.chains.iter().all(|c| {
            name_ok(&c.name)
                && c.base.as_ref().is_none_or(|b| name_ok(&b.kind))
                && c.rules.len() <= 1024
                && c.rules.iter().all(|r| {
                    r.stmts.len() <= 256
                        && r.stmts.iter().all(|s| match s {
                            Stmt::Unknown(_) => false,
                            Stmt::DaddrInSet { set, .. }
                            | Stmt::SaddrNotInSet { set, .. }
                            | Stmt::OifnameNotInSet { set } => name_ok(set),
                            _ => true,
                        })
                })
        })
}

/// Encodes `t` in both replace forms, decodes each batch and asserts the table comes back
/// exactly (counters included), and that every object message of the batch is classified as
/// a notification of `t` (notifications have the layout of the requests).
pub fn assert_round_trip(t: &Table, seq: u32) {
    for form in [ReplaceForm::AddDeleteAdd, ReplaceForm::DeleteAdd] {
        let batch = encode::replace(t, seq, form);
        let back = decode::table_from_dump(&batch.bytes, &t.name)
            .unwrap_or_else(|e| panic!("our own batch does not decode: {e}\n{t}"))
            .unwrap_or_else(|| panic!("our own batch has no table {:?}", t.name));
        assert!(
            back.same_policy(t),
            "decode(encode(t)) is another policy\nsent:\n{t}\nread back:\n{back}"
        );
        assert_eq!(&back, t, "decode(encode(t)) differs");
        let mut objects = 0;
        for m in messages(&batch.bytes) {
            let m = m.expect("our own batch frames");
            match events::classify(&m) {
                Some(Event::Object { table, .. }) => {
                    assert_eq!(table, t.name);
                    objects += 1;
                }
                Some(other) => panic!("a batch message classified as {other:?}"),
                None => {}
            }
        }
        assert_eq!(
            objects,
            batch.msgs.len(),
            "every object message names its table"
        );
        let addrs: usize = t
            .sets
            .iter()
            .map(|s| encode::interval_elements(s).len())
            .sum();
        let names: usize = t
            .name_sets
            .iter()
            .map(|s| encode::span_elements(s.names.iter().map(Interface::span), u128::MAX).len())
            .sum();
        let jumps: usize = t
            .dispatch
            .iter()
            .map(|d| encode::span_elements(d.blocks.iter().map(Span::of), d.family.max()).len())
            .sum();
        assert_eq!(batch.elements, addrs + names + jumps, "elements sent");
    }
}

/// Asserts that the sets of a desired table mean what the config says: each address set is
/// minimal; the first and last address of every exempt range (`nonMasqueradeCIDRs` and
/// link-local) is in the destination set unless a `masqueradeCIDRs` entry covers it; no
/// `masqueradeCIDRs` address is; a source set holds exactly the merged `sourceCIDRs`.
pub fn assert_exempts(c: &Config, table: &Table) {
    for set in &table.sets {
        if set.name == SET_BLOCKS_V4 || set.name == SET_BLOCKS_V6 {
            // One prefix per block, adjacent ones too (each is its map's interval): checked
            // against the dispatch map below, not for minimality.
            continue;
        }
        assert!(
            is_minimal(&set.prefixes, set.family),
            "set {} not minimal",
            set.name
        );
        if set.name == SET_SRC_V4 || set.name == SET_SRC_V6 {
            let want = c
                .source_ranges(set.family)
                .map(|r| r.to_prefixes(set.family.bits()))
                .unwrap_or_default();
            assert_eq!(set.prefixes, want, "set {}", set.name);
            continue;
        }
        assert!(is_exemption_set(&set.name), "set {}", set.name);
    }
    // A family's exemptions may be cut into block sets: in address order, their union is
    // the family's exemption list.
    for family in [Family::V4, Family::V6] {
        let sets: Vec<&Set> = table
            .sets
            .iter()
            .filter(|s| s.family == family && is_exemption_set(&s.name))
            .collect();
        if sets.is_empty() {
            continue;
        }
        if let [one] = sets[..] {
            let base = if family == Family::V4 { SET_V4 } else { SET_V6 };
            assert_eq!(one.name, base, "a family within the cap keeps one set");
        }
        let prefixes: Vec<IpNet> = sets.iter().flat_map(|s| s.prefixes.clone()).collect();
        assert!(is_minimal(&prefixes, family), "exemptions not minimal");
        // Block sets are reached through the family's dispatch map: one block per set, in
        // order, each jumping to a chain of the set's name that accepts what the set holds.
        let maps: Vec<_> = table.dispatch.iter().filter(|d| d.family == family).collect();
        if sets.len() > 1 {
            let [map] = maps[..] else {
                panic!("{} dispatch maps for {} block sets", maps.len(), sets.len())
            };
            let targets: Vec<String> = map.blocks.iter().map(|b| map.chain(b)).collect();
            let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(targets, names, "dispatch targets");
            for set in &sets {
                let chain = table.chains.iter().find(|c| c.name == set.name);
                let rules: Vec<String> = chain
                    .map(|c| c.rules.iter().map(ToString::to_string).collect())
                    .unwrap_or_default();
                let proto = if family == Family::V4 { "ip" } else { "ip6" };
                assert_eq!(
                    rules,
                    [
                        format!("{proto} daddr @{} accept", set.name),
                        "jump translate".to_string()
                    ]
                );
            }
            // The blocks again, as a plain set: the base chain's fallback when the map
            // dispatched nothing.
            let blocks = if family == Family::V4 { SET_BLOCKS_V4 } else { SET_BLOCKS_V6 };
            let plain = table.sets.iter().find(|s| s.name == blocks);
            assert_eq!(plain.map(|s| &s.prefixes), Some(&map.blocks), "{blocks}");
        } else {
            assert!(maps.is_empty(), "a dispatch map for one set");
        }
        let carved = c.carved_ranges(family);
        let link_local = c.link_local_exempt(family);
        let exempt = values(&c.non_masquerade_cidrs).chain(link_local.as_ref());
        for n in exempt.filter(|n| Family::of(n) == family) {
            let s = Span::of(n);
            for a in [s.lo, s.hi] {
                let masqueraded = carved.intersects(Span { lo: a, hi: a });
                assert_eq!(contains(&prefixes, a), !masqueraded, "{n}: address {a:#x}");
            }
        }
        for n in values(&c.masquerade_cidrs).filter(|n| Family::of(n) == family) {
            let s = Span::of(n);
            for a in [s.lo, s.hi] {
                assert!(!contains(&prefixes, a), "carved {n} still exempt at {a:#x}");
            }
        }
    }
}

/// Asserts that `raise` read `exprs` only as `lower` writes: every statement it recognised
/// lowers to exactly the expressions it consumed, and each `Unknown` stands for one
/// expression. `exprs` must carry no batch-local set ids (the kernel never reports them).
pub fn assert_raise_consistent(exprs: &[Expr]) {
    let stmts = raise(exprs);
    let mut at = 0;
    for s in &stmts {
        match s {
            Stmt::Unknown(_) => at += 1,
            _ => {
                let want = lower(std::slice::from_ref(s), &|_| None);
                assert!(
                    exprs[at..].starts_with(&want),
                    "{s:?} raised from {:?}",
                    &exprs[at..]
                );
                at += want.len();
            }
        }
    }
    assert_eq!(
        at,
        exprs.len(),
        "raise consumed {at} of {} expressions",
        exprs.len()
    );
}
