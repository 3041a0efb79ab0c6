//! The ruleset as a plain value: what the agent wants in the kernel, and what it reads back.
//!
//! [`desired`] turns a validated [`Config`] and the [`PolicyFlags`] into a [`Table`] with no
//! I/O at all. The same types describe a table decoded from the kernel (`nft::decode`), so
//! "is the live table what we want?" is a comparison of two values ([`Table::same_policy`]),
//! and both render to `nft list` syntax with one [`fmt::Display`] implementation (`render`).

pub mod ranges;
mod render;

use std::fmt;

use ipnet::IpNet;

use crate::config::{Config, LINK_LOCAL_V4, LINK_LOCAL_V6, PolicyFlags};
use ranges::RangeSet;

/// The one table the agent owns, in the `inet` family.
pub const TABLE_NAME: &str = "nft-masq-agent";
/// The set of IPv4 destinations not to masquerade.
pub const SET_V4: &str = "nonmasq-v4";
/// The set of IPv6 destinations not to masquerade (only with `--enable-ipv6`).
pub const SET_V6: &str = "nonmasq-v6";
/// The base chain.
pub const CHAIN_NAME: &str = "postrouting";
/// `srcnat` (100) + 10: after iptables' nat POSTROUTING chains, so that kube-proxy's and a
/// CNI's explicit SNAT rules take effect first and our masquerade is the catch-all, like
/// ip-masq-agent's jump appended at the end of POSTROUTING. See docs/design.md.
pub const CHAIN_PRIORITY: i32 = 110;

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

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// Address length in bytes.
    pub fn addr_len(self) -> usize {
        usize::from(self.bits() / 8)
    }

    /// The family of a prefix.
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

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
    /// Named sets, in order.
    pub sets: Vec<Set>,
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
    /// `return`.
    Return,
    /// Something the agent does not write; the text says what it is.
    Unknown(String),
}

impl Table {
    /// The same table with counter values zeroed: the part that is policy.
    pub fn policy(&self) -> Table {
        let mut t = self.clone();
        for chain in &mut t.chains {
            for rule in &mut chain.rules {
                for stmt in &mut rule.stmts {
                    if let Stmt::Counter { packets, bytes } = stmt {
                        *packets = 0;
                        *bytes = 0;
                    }
                }
            }
        }
        t
    }

    /// Whether two tables enforce the same policy: equal in everything but counter values
    /// (flags included). Compares in place: no copy of a 100,000-prefix set.
    pub fn same_policy(&self, other: &Table) -> bool {
        fn stmt_eq(a: &Stmt, b: &Stmt) -> bool {
            matches!((a, b), (Stmt::Counter { .. }, Stmt::Counter { .. })) || a == b
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
            && self.sets == other.sets
            && self.foreign == other.foreign
            && self.chains.len() == other.chains.len()
            && self
                .chains
                .iter()
                .zip(&other.chains)
                .all(|(a, b)| chain_eq(a, b))
    }

    /// A set by name.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// Total number of prefixes over all sets.
    pub fn prefix_count(&self) -> usize {
        self.sets.iter().map(|s| s.prefixes.len()).sum()
    }

    /// Sum of the packet and byte counters of the rules that masquerade.
    pub fn masquerade_counters(&self) -> (u64, u64) {
        let mut total = (0, 0);
        for rule in self.chains.iter().flat_map(|c| &c.rules) {
            if rule
                .stmts
                .iter()
                .any(|s| matches!(s, Stmt::Masquerade { .. }))
            {
                for s in &rule.stmts {
                    if let Stmt::Counter { packets, bytes } = s {
                        total.0 += packets;
                        total.1 += bytes;
                    }
                }
            }
        }
        total
    }
}

/// The non-masquerade prefixes of one family after merging and carving out
/// `masqueradeCIDRs`.
pub fn non_masquerade_prefixes(config: &Config, family: Family) -> Vec<IpNet> {
    let of_family = |n: &&IpNet| Family::of(n) == family;
    let link_local: Option<IpNet> = match family {
        Family::V4 if !config.masq_link_local => LINK_LOCAL_V4.parse().ok(),
        Family::V6 if !config.masq_link_local_ipv6 => LINK_LOCAL_V6.parse().ok(),
        _ => None,
    };
    let keep = RangeSet::from_nets(
        config
            .non_masquerade_cidrs
            .iter()
            .filter(of_family)
            .chain(link_local.as_ref()),
    );
    let carve = RangeSet::from_nets(config.masquerade_cidrs.iter().filter(of_family));
    keep.difference(&carve).to_prefixes(family.bits())
}

/// The table the agent wants in the kernel for this config: pure, no I/O.
///
/// ```text
/// table inet nft-masq-agent {
///     set nonmasq-v4 { type ipv4_addr; flags interval; elements = { ... } }
///     set nonmasq-v6 { ... }                       # with --enable-ipv6
///     chain postrouting {
///         type nat hook postrouting priority srcnat + 10; policy accept;
///         meta nfproto ipv6 return                 # without --enable-ipv6
///         fib daddr type local return
///         ip daddr @nonmasq-v4 return
///         ip6 daddr @nonmasq-v6 return             # with --enable-ipv6
///         meta l4proto tcp ... masquerade to :a-b  # with --to-ports
///         counter masquerade fully-random
///     }
/// }
/// ```
pub fn desired(config: &Config, flags: &PolicyFlags, table_flags: TableFlags) -> Table {
    let mut sets = vec![Set {
        name: SET_V4.into(),
        family: Family::V4,
        prefixes: non_masquerade_prefixes(config, Family::V4),
    }];
    if flags.enable_ipv6 {
        sets.push(Set {
            name: SET_V6.into(),
            family: Family::V6,
            prefixes: non_masquerade_prefixes(config, Family::V6),
        });
    }

    let rule = |stmts: Vec<Stmt>| Rule { stmts };
    let mut rules = Vec::new();
    if !flags.enable_ipv6 {
        // IPv6 is not ours to touch: leave it to whatever else runs on the node.
        rules.push(rule(vec![Stmt::Nfproto(Family::V6), Stmt::Return]));
    }
    // Like ip-masq-agent's `-m addrtype ! --dst-type LOCAL`: never masquerade to ourselves.
    rules.push(rule(vec![Stmt::FibDaddrLocal, Stmt::Return]));
    rules.push(rule(vec![
        Stmt::DaddrInSet {
            family: Family::V4,
            set: SET_V4.into(),
        },
        Stmt::Return,
    ]));
    if flags.enable_ipv6 {
        rules.push(rule(vec![
            Stmt::DaddrInSet {
                family: Family::V6,
                set: SET_V6.into(),
            },
            Stmt::Return,
        ]));
    }

    let nat_flags = if flags.random_fully {
        NAT_PROTO_RANDOM_FULLY
    } else {
        0
    };
    let counter = || Stmt::Counter {
        packets: 0,
        bytes: 0,
    };
    if let Some(to_ports) = &flags.to_ports {
        // ip-masq-agent's scheme: per protocol, range i is chosen with probability
        // size_i / (sizes of ranges i..n), so each range is chosen in proportion to its size;
        // the last range needs no draw.
        for proto in TO_PORTS_PROTOCOLS {
            let mut remaining = to_ports.size();
            for r in to_ports.ranges() {
                let mut stmts = vec![Stmt::L4proto(proto)];
                if r.size() != remaining {
                    stmts.push(Stmt::NumgenBelow {
                        modulus: remaining,
                        below: r.size(),
                    });
                }
                remaining -= r.size();
                stmts.push(counter());
                stmts.push(Stmt::Masquerade {
                    flags: nat_flags | NAT_PROTO_SPECIFIED,
                    ports: Some((r.first, r.last)),
                });
                rules.push(rule(stmts));
            }
        }
    }
    rules.push(rule(vec![
        counter(),
        Stmt::Masquerade {
            flags: nat_flags,
            ports: None,
        },
    ]));

    Table {
        name: TABLE_NAME.into(),
        flags: table_flags,
        sets,
        chains: vec![Chain {
            name: CHAIN_NAME.into(),
            base: Some(BaseChain {
                kind: "nat".into(),
                hook: HOOK_POSTROUTING,
                priority: CHAIN_PRIORITY,
                policy: POLICY_ACCEPT,
            }),
            rules,
        }],
        foreign: Vec::new(),
    }
}

/// What changed in the sets between two tables, for the commit log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetDiff {
    /// Prefixes in the new table only.
    pub added: Vec<IpNet>,
    /// Prefixes in the old table only.
    pub removed: Vec<IpNet>,
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
        SetDiff {
            added: new_set.difference(&old_set).copied().collect(),
            removed: old_set.difference(&new_set).copied().collect(),
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
        if parts.is_empty() {
            return f.write_str("no prefix changes");
        }
        f.write_str(&parts.join(" "))
    }
}

#[cfg(test)]
mod tests;
