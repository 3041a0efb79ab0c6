//! The desired table: a validated config and the policy flags in, a [`Table`] out. Pure.

use ipnet::IpNet;

use super::{
    BaseChain, CHAIN_NAME, CHAIN_PRIORITY, Chain, HOOK_POSTROUTING, NAT_PROTO_RANDOM_FULLY,
    NAT_PROTO_SPECIFIED, POLICY_ACCEPT, Rule, SET_V4, SET_V6, Set, Stmt, TABLE_NAME,
    TO_PORTS_PROTOCOLS, Table, TableFlags,
};
use crate::config::{Config, PolicyFlags};
use crate::prefix::Family;

/// The non-masquerade prefixes of one family: `nonMasqueradeCIDRs` and link-local merged,
/// minus the `masqueradeCIDRs` carve-outs, as the fewest prefixes.
pub fn non_masquerade_prefixes(config: &Config, family: Family) -> Vec<IpNet> {
    config
        .non_masquerade_ranges(family)
        .to_prefixes(family.bits())
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
    Table {
        name: TABLE_NAME.into(),
        flags: table_flags,
        sets: sets(config, flags),
        chains: vec![Chain {
            name: CHAIN_NAME.into(),
            base: Some(nat_postrouting()),
            rules: rules(flags),
        }],
        foreign: Vec::new(),
    }
}

/// The families the agent manages: IPv6 only with `--enable-ipv6`.
fn families(flags: &PolicyFlags) -> &'static [Family] {
    if flags.enable_ipv6 {
        &[Family::V4, Family::V6]
    } else {
        &[Family::V4]
    }
}

fn set_name(family: Family) -> &'static str {
    match family {
        Family::V4 => SET_V4,
        Family::V6 => SET_V6,
    }
}

/// One interval set of non-masquerade prefixes per managed family.
fn sets(config: &Config, flags: &PolicyFlags) -> Vec<Set> {
    families(flags)
        .iter()
        .map(|&family| Set {
            name: set_name(family).into(),
            family,
            prefixes: non_masquerade_prefixes(config, family),
        })
        .collect()
}

fn nat_postrouting() -> BaseChain {
    BaseChain {
        kind: "nat".into(),
        hook: HOOK_POSTROUTING,
        priority: CHAIN_PRIORITY,
        policy: POLICY_ACCEPT,
    }
}

/// The rules in evaluation order: what to leave alone, then what to masquerade.
fn rules(flags: &PolicyFlags) -> Vec<Rule> {
    let mut rules = Vec::new();
    if !flags.enable_ipv6 {
        // IPv6 is not ours to touch: leave it to whatever else runs on the node.
        rules.push(rule([Stmt::Nfproto(Family::V6), Stmt::Return]));
    }
    // Like ip-masq-agent's `-m addrtype ! --dst-type LOCAL`: never masquerade to ourselves.
    rules.push(rule([Stmt::FibDaddrLocal, Stmt::Return]));
    for &family in families(flags) {
        rules.push(rule([
            Stmt::DaddrInSet {
                family,
                set: set_name(family).into(),
            },
            Stmt::Return,
        ]));
    }
    rules.extend(to_ports_rules(flags));
    rules.push(rule([counter(), masquerade(flags, None)]));
    rules
}

fn rule<const N: usize>(stmts: [Stmt; N]) -> Rule {
    Rule {
        stmts: stmts.into(),
    }
}

fn counter() -> Stmt {
    Stmt::Counter {
        packets: 0,
        bytes: 0,
    }
}

fn masquerade(flags: &PolicyFlags, ports: Option<(u16, u16)>) -> Stmt {
    let random = if flags.random_fully {
        NAT_PROTO_RANDOM_FULLY
    } else {
        0
    };
    let specified = if ports.is_some() {
        NAT_PROTO_SPECIFIED
    } else {
        0
    };
    Stmt::Masquerade {
        flags: random | specified,
        ports,
    }
}

/// `--to-ports`, ip-masq-agent's scheme: per protocol, range i is chosen with probability
/// size_i / (sizes of ranges i..n), so each range is chosen in proportion to its size; the
/// last range needs no draw.
fn to_ports_rules(flags: &PolicyFlags) -> Vec<Rule> {
    let Some(to_ports) = &flags.to_ports else {
        return Vec::new();
    };
    let mut rules = Vec::new();
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
            stmts.push(masquerade(flags, Some((r.first, r.last))));
            rules.push(Rule { stmts });
        }
    }
    rules
}
