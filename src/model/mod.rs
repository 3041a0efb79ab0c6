//! The ruleset as a plain value: what the agent wants in the kernel, and what it reads back.
//!
//! [`desired`] turns a validated config and the policy flags into a [`Table`] with no
//! I/O at all. The same types describe a table decoded from the kernel (`nft::decode`), so
//! "is the live table what we want?" is a comparison of two values ([`Table::same_policy`]),
//! and both render to `nft list` syntax with one [`fmt::Display`] implementation (`render`).

pub mod annotate;
mod desired;
mod render;
pub mod shard;

use std::fmt;

use std::net::IpAddr;

use ipnet::IpNet;

pub use crate::addr::ifname::Interface;
pub use crate::addr::prefix::Family;
use crate::addr::prefix::Span;
pub use annotate::{Annotations, annotate};
pub use desired::{desired, non_masquerade_prefixes};

/// The one table the agent owns, in the `inet` family.
pub const TABLE_NAME: &str = "nft-masq-agent";
/// The set of IPv4 destinations not to masquerade.
pub const SET_V4: &str = "nonmasq-v4";
/// The set of IPv6 destinations not to masquerade (only with `--enable-ipv6`).
pub const SET_V6: &str = "nonmasq-v6";
/// Whether `name` is one of the agent's exemption sets: [`SET_V4`], [`SET_V6`], or one of
/// the block sets they are cut into past `--max-set-prefixes` ([`shard`]).
pub fn is_exemption_set(name: &str) -> bool {
    [SET_V4, SET_V6].iter().any(|base| {
        name.strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
    })
}

/// The interval verdict map that sends an IPv4 destination to the chain of its block's
/// exemption set, when the family is cut into blocks ([`shard`], [`Dispatch`]).
pub const MAP_DISPATCH_V4: &str = "nonmasq-dispatch-v4";
/// The IPv6 block dispatch map.
pub const MAP_DISPATCH_V6: &str = "nonmasq-dispatch-v6";
/// The interval set of the IPv4 blocks (those of [`MAP_DISPATCH_V4`]): a destination in a
/// block that the map did not dispatch leaves untranslated. Kernels from 6.4 (and 6.1's
/// stable series) deactivate a verdict map's elements as soon as a transaction deletes the
/// map, while the base chain that looks into it runs on until that transaction ends: a
/// `delete table` would otherwise send exempt destinations on to the translation.
pub const SET_BLOCKS_V4: &str = "nonmasq-blocks-v4";
/// The interval set of the IPv6 blocks.
pub const SET_BLOCKS_V6: &str = "nonmasq-blocks-v6";
/// The chain of the translation rules when a family is cut into blocks: the base chain and
/// every block chain jump to it (the base chain holds them itself otherwise).
pub const CHAIN_TRANSLATE: &str = "translate";

/// The set of IPv4 sources considered for translation (`sourceCIDRs`).
pub const SET_SRC_V4: &str = "sources-v4";
/// The set of IPv6 sources considered for translation.
pub const SET_SRC_V6: &str = "sources-v6";
/// The set of egress interface names translated on (`egressInterfaces`).
pub const SET_EGRESS: &str = "egress-interfaces";
/// The interval map of IPv4 sources to their `snatRules` address.
pub const MAP_SNAT_V4: &str = "snat-v4";
/// The interval map of IPv6 sources to their `snatRules` address.
pub const MAP_SNAT_V6: &str = "snat-v6";
/// The base chain.
pub const CHAIN_NAME: &str = "postrouting";

/// `NF_NAT_RANGE_PROTO_SPECIFIED`: the masquerade carries a port range.
pub const NAT_PROTO_SPECIFIED: u32 = 0x02;
/// `NF_NAT_RANGE_PROTO_RANDOM`.
pub const NAT_PROTO_RANDOM: u32 = 0x04;
/// `NF_NAT_RANGE_PERSISTENT`.
pub const NAT_PERSISTENT: u32 = 0x08;
/// `NF_NAT_RANGE_PROTO_RANDOM_FULLY`: nft's `fully-random`, iptables' `--random-fully`.
pub const NAT_PROTO_RANDOM_FULLY: u32 = 0x10;

/// IP protocol numbers of the transports `--to-ports` applies to, in ip-masq-agent's order.
pub const TO_PORTS_PROTOCOLS: [u8; 3] = [6, 17, 132];

/// Table flags (`NFT_TABLE_F_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TableFlags(pub u32);

impl TableFlags {
    /// `NFT_TABLE_F_DORMANT`.
    pub const DORMANT: u32 = 0x1;
    /// `NFT_TABLE_F_OWNER` (kernel 5.12+): only the creating socket may change the table.
    pub const OWNER: u32 = 0x2;
    /// `NFT_TABLE_F_PERSIST` (kernel 6.9+): an owned table outlives its owner.
    pub const PERSIST: u32 = 0x4;

    /// Whether `flag` is set.
    pub fn has(self, flag: u32) -> bool {
        self.0 & flag != 0
    }
}

/// A table: the unit the agent replaces atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Table name.
    pub name: String,
    /// Table flags.
    pub flags: TableFlags,
    /// Named address sets, in order.
    pub sets: Vec<Set>,
    /// Named interface-name sets, in order.
    pub name_sets: Vec<NameSet>,
    /// Named interval maps of source addresses to SNAT addresses (`snatRules`), in order.
    pub maps: Vec<Map>,
    /// Named interval verdict maps of address blocks to their exemption chains (a family
    /// cut into blocks: [`shard`]), in order.
    pub dispatch: Vec<Dispatch>,
    /// Chains, in order.
    pub chains: Vec<Chain>,
    /// Objects read back from the kernel that the model cannot express (a set of another
    /// type, say), described for people. Always empty in a desired table, so any entry
    /// makes the live table differ from the desired one.
    pub foreign: Vec<String>,
}

/// A named interval set of address prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// Set name.
    pub name: String,
    /// Key type.
    pub family: Family,
    /// Sorted, disjoint prefixes.
    pub prefixes: Vec<IpNet>,
}

/// A named interval map from source addresses to the address they leave with
/// (`snatRules`, longest prefix flattened: [`crate::addr::lpm`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Map {
    /// Map name.
    pub name: String,
    /// Key and data type.
    pub family: Family,
    /// Sorted, disjoint source spans, each with its address.
    pub entries: Vec<MapEntry>,
}

/// One interval of a [`Map`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEntry {
    /// The sources.
    pub span: Span,
    /// The address they leave with.
    pub to: IpAddr,
}

/// A named interval verdict map that sends a destination to the chain of the block holding
/// it: `map nonmasq-dispatch-v4 { type ipv4_addr : verdict; flags interval; elements = {
/// 10.128.0.0/9 : jump nonmasq-v4-10.128.0.0/9, ... } }`. Each block's chain is named like
/// its exemption set ([`Dispatch::chain`]) and holds one rule, `ip daddr @<set> accept`; so
/// the jump target is a function of the block, and the map is its list of blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// Map name.
    pub name: String,
    /// Key type.
    pub family: Family,
    /// Sorted, disjoint, aligned blocks.
    pub blocks: Vec<IpNet>,
}

impl Dispatch {
    /// The exemption set name of the map's family ([`SET_V4`], [`SET_V6`]).
    pub fn exemptions(&self) -> &'static str {
        exemption_base(self.family)
    }

    /// The chain (and set) of `block`: `nonmasq-v4-10.128.0.0/9`.
    pub fn chain(&self, block: &IpNet) -> String {
        shard::block_name(self.exemptions(), block)
    }
}

/// The exemption set name of `family` before any cut: [`SET_V4`] or [`SET_V6`].
pub fn exemption_base(family: Family) -> &'static str {
    match family {
        Family::V4 => SET_V4,
        Family::V6 => SET_V6,
    }
}

/// A named interval set of interface names (nft's `ifname` type), for `oifname` matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameSet {
    /// Set name.
    pub name: String,
    /// Names and prefix wildcards, none contained in another, sorted by key.
    pub names: Vec<Interface>,
}

/// The hook a base chain is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// Chain type (`nat`).
    pub kind: String,
    /// Netfilter hook number (`NF_INET_POST_ROUTING` = 4).
    pub hook: u32,
    /// Priority.
    pub priority: i32,
    /// Policy verdict (`NF_ACCEPT` = 1, `NF_DROP` = 0).
    pub policy: u32,
}

/// `NF_INET_POST_ROUTING`.
pub const HOOK_POSTROUTING: u32 = 4;
/// `NF_ACCEPT`.
pub const POLICY_ACCEPT: u32 = 1;

/// A chain with its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// Hook, for a base chain.
    pub base: Option<BaseChain>,
    /// Rules in evaluation order.
    pub rules: Vec<Rule>,
}

/// A rule: statements evaluated left to right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The statements.
    pub stmts: Vec<Stmt>,
}

/// The statements the agent writes, at the level of `nft` syntax. Anything else read back
/// from the kernel becomes [`Stmt::Unknown`] and is shown, never dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    /// `meta nfproto ipv4|ipv6`.
    Nfproto(Family),
    /// `meta l4proto <proto>`.
    L4proto(u8),
    /// `fib daddr type local`.
    FibDaddrLocal,
    /// `ip daddr @set` / `ip6 daddr @set` (with the implicit `meta nfproto` of `inet`).
    DaddrInSet {
        /// Address family of the lookup.
        family: Family,
        /// Set name.
        set: String,
    },
    /// `ip saddr != @set` / `ip6 saddr != @set`: the source is not in the set.
    SaddrNotInSet {
        /// Address family of the lookup.
        family: Family,
        /// Set name.
        set: String,
    },
    /// `ip daddr vmap @map` / `ip6 daddr vmap @map`: the destination's block chain, when the
    /// map holds its block ([`Dispatch`]).
    DaddrVmap {
        /// Address family of the lookup.
        family: Family,
        /// Map name.
        map: String,
    },
    /// `oifname != @set`: the egress interface's name is not in the set.
    OifnameNotInSet {
        /// Set name.
        set: String,
    },
    /// `numgen random mod <modulus> < <below>`: true with probability below/modulus.
    NumgenBelow {
        /// Modulus.
        modulus: u32,
        /// Exclusive upper bound.
        below: u32,
    },
    /// `counter packets P bytes B`.
    Counter {
        /// Packets counted.
        packets: u64,
        /// Bytes counted.
        bytes: u64,
    },
    /// `masquerade [to :first-last] [flags]`.
    Masquerade {
        /// `NF_NAT_RANGE_*` flags.
        flags: u32,
        /// Source port range, when restricted.
        ports: Option<(u16, u16)>,
    },
    /// `snat ip|ip6 to <first>[-<last>][:<ports>] [flags]`.
    Snat {
        /// The family of the addresses.
        family: Family,
        /// First address of the range (the only one for a single address).
        first: IpAddr,
        /// Last address of the range.
        last: IpAddr,
        /// `NF_NAT_RANGE_*` flags.
        flags: u32,
        /// Source port range, when restricted.
        ports: Option<(u16, u16)>,
    },
    /// `counter packets P bytes B snat ip|ip6 to ip|ip6 saddr map @map[:ports] [flags]`:
    /// the source's address from an interval map. The counter is part of the statement
    /// because it sits after the map lookup (a source the map does not hold ends the rule
    /// there, uncounted, and goes on to the fallback); see docs/design.md.
    SnatMap {
        /// The family of the sources and addresses.
        family: Family,
        /// Map name.
        map: String,
        /// Packets counted (translated by this rule).
        packets: u64,
        /// Bytes counted.
        bytes: u64,
        /// `NF_NAT_RANGE_*` flags.
        flags: u32,
        /// Source port range, when restricted.
        ports: Option<(u16, u16)>,
    },
    /// `return`.
    Return,
    /// `accept`: in a block chain, the end of the base chain for this packet, untranslated
    /// (as `return` in the base chain).
    Accept,
    /// `jump <chain>`: the chain's rules, then back to the rule after this one.
    Jump {
        /// The chain.
        chain: String,
    },
    /// Something the agent does not write; the text says what it is.
    Unknown(String),
}

impl Table {
    /// Whether two tables enforce the same policy: equal in everything but counter values
    /// (flags included) and the order of their sets and chains. Compares in place: no copy
    /// of a 100,000-prefix set.
    pub fn same_policy(&self, other: &Table) -> bool {
        self.same_policy_in(other, |_| true)
    }

    /// [`Table::same_policy`] over the chains `chains` picks in either table only: the others
    /// may differ or be missing (a table whose creation stopped before its base chains).
    pub fn same_policy_in(&self, other: &Table, chains: impl Fn(&Chain) -> bool) -> bool {
        fn stmt_eq(a: &Stmt, b: &Stmt) -> bool {
            match (a, b) {
                (Stmt::Counter { .. }, Stmt::Counter { .. }) => true,
                (
                    Stmt::SnatMap {
                        family,
                        map,
                        flags,
                        ports,
                        ..
                    },
                    Stmt::SnatMap {
                        family: f2,
                        map: m2,
                        flags: fl2,
                        ports: p2,
                        ..
                    },
                ) => family == f2 && map == m2 && flags == fl2 && ports == p2,
                _ => a == b,
            }
        }
        fn chain_eq(a: &Chain, b: &Chain) -> bool {
            a.name == b.name
                && a.base == b.base
                && a.rules.len() == b.rules.len()
                && a.rules.iter().zip(&b.rules).all(|(x, y)| {
                    x.stmts.len() == y.stmts.len()
                        && x.stmts.iter().zip(&y.stmts).all(|(s, t)| stmt_eq(s, t))
                })
        }
        self.name == other.name
            && self.flags == other.flags
            && same_by_name(&self.sets, &other.sets, |s| &s.name, |a, b| a == b)
            && same_by_name(
                &self.name_sets,
                &other.name_sets,
                |s| &s.name,
                |a, b| a == b,
            )
            && same_by_name(&self.maps, &other.maps, |m| &m.name, |a, b| a == b)
            && same_by_name(&self.dispatch, &other.dispatch, |m| &m.name, |a, b| a == b)
            && self.foreign == other.foreign
            && same_by_name(
                &self.chains.iter().filter(|c| chains(c)).collect::<Vec<_>>(),
                &other
                    .chains
                    .iter()
                    .filter(|c| chains(c))
                    .collect::<Vec<_>>(),
                |c| &c.name,
                |a, b| chain_eq(a, b),
            )
    }

    /// Total number of prefixes over all sets but the blocks sets (which repeat the
    /// blocks the exemptions are cut into, not prefixes of the config).
    pub fn prefix_count(&self) -> usize {
        self.config_sets().map(|s| s.prefixes.len()).sum()
    }

    /// The number of prefixes of `family`, as [`Table::prefix_count`] counts them.
    pub fn prefix_count_of(&self, family: Family) -> usize {
        self.config_sets()
            .filter(|s| s.family == family)
            .map(|s| s.prefixes.len())
            .sum()
    }

    /// The address sets whose prefixes come from the config: all but the blocks sets.
    fn config_sets(&self) -> impl Iterator<Item = &Set> {
        self.sets
            .iter()
            .filter(|s| s.name != SET_BLOCKS_V4 && s.name != SET_BLOCKS_V6)
    }

    /// Sum of the packet and byte counters of the rules that translate (masquerade or SNAT).
    pub fn masquerade_counters(&self) -> (u64, u64) {
        let mut total = (0, 0);
        for rule in self.chains.iter().flat_map(|c| &c.rules) {
            for s in &rule.stmts {
                if let Stmt::SnatMap { packets, bytes, .. } = s {
                    total.0 = packets.saturating_add(total.0);
                    total.1 = bytes.saturating_add(total.1);
                }
            }
            if rule
                .stmts
                .iter()
                .any(|s| matches!(s, Stmt::Masquerade { .. } | Stmt::Snat { .. }))
            {
                for s in &rule.stmts {
                    if let Stmt::Counter { packets, bytes } = s {
                        // Counters come from the kernel: never trust them not to overflow.
                        total.0 = packets.saturating_add(total.0);
                        total.1 = bytes.saturating_add(total.1);
                    }
                }
            }
        }
        total
    }
}

/// Whether two lists of named objects hold the same objects, in any order. The kernel lists
/// sets and chains in the order they were created, and a reshape (`encode::reshape`) adds
/// the new ones after those that stay: the order of objects is no part of the policy.
fn same_by_name<T>(
    a: &[T],
    b: &[T],
    name: impl Fn(&T) -> &String,
    eq: impl Fn(&T, &T) -> bool,
) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Usually in the same order: compare in place, and look up by name only past the first
    // difference of order.
    let by_name: std::collections::HashMap<&String, &T> =
        if a.iter().zip(b).all(|(x, y)| name(x) == name(y)) {
            return a.iter().zip(b).all(|(x, y)| eq(x, y));
        } else {
            b.iter().map(|y| (name(y), y)).collect()
        };
    by_name.len() == b.len()
        && a.iter()
            .all(|x| by_name.get(name(x)).is_some_and(|y| eq(x, y)))
}

/// What changed in the sets between two tables, for the commit log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetDiff {
    /// Prefixes in the new table only.
    pub added: Vec<IpNet>,
    /// Prefixes in the old table only.
    pub removed: Vec<IpNet>,
    /// `snatRules` map intervals that came (`+`) or went (`-`), as `MAP SPAN : ADDRESS`.
    pub map_changes: Vec<String>,
}

impl SetDiff {
    /// Compares the prefixes of all sets of `old` (if any) and `new`.
    pub fn between(old: Option<&Table>, new: &Table) -> SetDiff {
        use std::collections::BTreeSet;
        let collect = |t: &Table| -> BTreeSet<IpNet> {
            t.sets
                .iter()
                .flat_map(|s| s.prefixes.iter().copied())
                .collect()
        };
        let new_set = collect(new);
        let old_set = old.map(collect).unwrap_or_default();
        let entries = |t: &Table| -> BTreeSet<(String, Span, IpAddr)> {
            t.maps
                .iter()
                .flat_map(|m| m.entries.iter().map(|e| (m.name.clone(), e.span, e.to)))
                .collect()
        };
        let (new_map, old_map) = (entries(new), old.map(entries).unwrap_or_default());
        let show = |sign: char, (name, span, to): &(String, Span, IpAddr)| {
            let family = Family::of_addr(to);
            let mut nets = Vec::new();
            crate::addr::prefix::span_to_prefixes(*span, family.bits(), &mut nets);
            let span = match nets.as_slice() {
                [one] => one.to_string(),
                _ => format!("{:x}-{:x}", span.lo, span.hi),
            };
            format!("{sign}{name} {span} : {to}")
        };
        let mut map_changes: Vec<String> =
            old_map.difference(&new_map).map(|e| show('-', e)).collect();
        map_changes.extend(new_map.difference(&old_map).map(|e| show('+', e)));
        SetDiff {
            added: new_set.difference(&old_set).copied().collect(),
            removed: old_set.difference(&new_set).copied().collect(),
            map_changes,
        }
    }
}

impl fmt::Display for SetDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        let mut parts = Vec::new();
        for (sign, v) in [('+', &self.added), ('-', &self.removed)] {
            parts.extend(v.iter().take(SHOWN).map(|n| format!("{sign}{n}")));
            if v.len() > SHOWN {
                parts.push(format!("({} more {sign})", v.len() - SHOWN));
            }
        }
        parts.extend(self.map_changes.iter().take(SHOWN).cloned());
        if self.map_changes.len() > SHOWN {
            parts.push(format!(
                "({} more map changes)",
                self.map_changes.len() - SHOWN
            ));
        }
        if parts.is_empty() {
            return f.write_str("no prefix changes");
        }
        f.write_str(&parts.join(" "))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_snat_rules;
