//! The desired table: a validated config and the policy flags in, a [`Table`] out. Pure.

use ipnet::IpNet;

use super::shard::{self, Shard};
use super::{
    BaseChain, CHAIN_NAME, CHAIN_TRANSLATE, Chain, Dispatch, HOOK_POSTROUTING, Interface,
    MAP_DISPATCH_V4, MAP_DISPATCH_V6, MAP_SNAT_V4, MAP_SNAT_V6, Map, MapEntry,
    NAT_PROTO_RANDOM_FULLY, NAT_PROTO_SPECIFIED, NameSet, POLICY_ACCEPT, Rule, SET_BLOCKS_V4,
    SET_BLOCKS_V6, SET_EGRESS, SET_SRC_V4, SET_SRC_V6, Set, Stmt, TABLE_NAME, TO_PORTS_PROTOCOLS,
    Table, TableFlags, exemption_base,
};
use crate::addr::prefix::Family;
use crate::config::{Config, PolicyFlags, SnatTarget, values};

/// The per-family objects' names, IPv4's then IPv6's (see [`per_family`]).
const BLOCKS_SETS: [&str; 2] = [SET_BLOCKS_V4, SET_BLOCKS_V6];
const DISPATCH_MAPS: [&str; 2] = [MAP_DISPATCH_V4, MAP_DISPATCH_V6];
const SOURCE_SETS: [&str; 2] = [SET_SRC_V4, SET_SRC_V6];
const SNAT_MAPS: [&str; 2] = [MAP_SNAT_V4, MAP_SNAT_V6];

/// `family`'s name of a pair of per-family names.
fn per_family(family: Family, [v4, v6]: [&'static str; 2]) -> &'static str {
    match family {
        Family::V4 => v4,
        Family::V6 => v6,
    }
}

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
///     set sources-v4 { ... }                       # with sourceCIDRs (and -v6)
///     set egress-interfaces { type ifname; ... }   # with egressInterfaces
///     map snat-v4 { type ipv4_addr : ipv4_addr; flags interval; ... }  # with snatRules
///     chain postrouting {
///         type nat hook postrouting priority srcnat + 10; policy accept;  # --chain-priority
///         meta nfproto ipv6 return                 # without --enable-ipv6
///         ip saddr != @sources-v4 return           # with sourceCIDRs
///         oifname != @egress-interfaces return     # with egressInterfaces
///         fib daddr type local return
///         ip daddr @nonmasq-v4 return
///         ip6 daddr @nonmasq-v6 return             # with --enable-ipv6
///         meta l4proto tcp ... masquerade to :a-b  # with --to-ports
///         ... counter snat ip to ip saddr map @snat-v4  # with snatRules, per family
///         counter masquerade fully-random          # or, per family, snat to snatTo
///     }
/// }
/// ```
pub fn desired(config: &Config, flags: &PolicyFlags, table_flags: TableFlags) -> Table {
    let exemptions: Vec<(Family, Vec<Shard>)> = families(flags)
        .iter()
        .map(|&family| (family, exemption_shards(config, flags, family)))
        .collect();
    // The rules and dispatch maps first: they borrow the shards that the sets then take.
    let dispatch = dispatch(&exemptions);
    let mut rules = exemption_rules(config, flags, &exemptions);
    // The chains the base chain reaches first: they are created before the dispatch map's
    // elements that jump to them and the base chain (encode::create), so the kernel lists
    // them first. Past the cap the translation is a chain of its own, which the block
    // chains jump to as the base chain does.
    let mut chains = Vec::new();
    if dispatch.is_empty() {
        rules.extend(translation_rules(config, flags));
    } else {
        chains.push(Chain {
            name: CHAIN_TRANSLATE.into(),
            base: None,
            rules: translation_rules(config, flags),
        });
        rules.push(rule([Stmt::Jump {
            chain: CHAIN_TRANSLATE.into(),
        }]));
        chains.extend(dispatch.iter().flat_map(block_chains));
    }
    chains.push(Chain {
        name: CHAIN_NAME.into(),
        base: Some(nat_postrouting(flags)),
        rules,
    });
    Table {
        name: TABLE_NAME.into(),
        flags: table_flags,
        sets: sets(config, flags, exemptions),
        name_sets: name_sets(config),
        maps: maps(config, flags),
        dispatch,
        chains,
        foreign: Vec::new(),
    }
}

/// The dispatch map of each cut family: its blocks ([`Dispatch`]).
fn dispatch(exemptions: &[(Family, Vec<Shard>)]) -> Vec<Dispatch> {
    exemptions
        .iter()
        .filter(|(_, shards)| !is_whole(shards))
        .map(|(family, shards)| Dispatch {
            name: per_family(*family, DISPATCH_MAPS).into(),
            family: *family,
            blocks: shards.iter().map(|s| s.block).collect(),
        })
        .collect()
}

/// Whether a family's exemptions are one set (not cut).
fn is_whole(shards: &[Shard]) -> bool {
    matches!(shards, [one] if one.is_whole())
}

/// One chain per block of a dispatch map: `ip daddr @<block set> accept`, then `jump
/// translate`. A destination in the block is decided here, exempt or translated, and never
/// comes back to the base chain.
fn block_chains(map: &Dispatch) -> impl Iterator<Item = Chain> + '_ {
    map.blocks.iter().map(|block| {
        let name = map.chain(block);
        Chain {
            rules: vec![
                rule([
                    Stmt::DaddrInSet {
                        family: map.family,
                        set: name.clone(),
                    },
                    Stmt::Accept,
                ]),
                rule([Stmt::Jump {
                    chain: CHAIN_TRANSLATE.into(),
                }]),
            ],
            name,
            base: None,
        }
    })
}

/// The families the agent manages: IPv6 only with `--enable-ipv6`.
fn families(flags: &PolicyFlags) -> &'static [Family] {
    if flags.enable_ipv6 {
        &[Family::V4, Family::V6]
    } else {
        &[Family::V4]
    }
}

/// The exemption sets of one family: one set of its non-masquerade prefixes, or, past
/// `--max-set-prefixes`, one set per address block ([`shard`]).
fn exemption_shards(config: &Config, flags: &PolicyFlags, family: Family) -> Vec<Shard> {
    shard::shards(
        family,
        &non_masquerade_prefixes(config, family),
        flags.max_set_prefixes,
    )
}

/// The exemption sets of each managed family, and one set of the sources considered per
/// managed family when `sourceCIDRs` is set.
fn sets(config: &Config, flags: &PolicyFlags, exemptions: Vec<(Family, Vec<Shard>)>) -> Vec<Set> {
    let mut sets: Vec<Set> = Vec::new();
    for (family, shards) in exemptions {
        let blocks: Vec<IpNet> = match is_whole(&shards) {
            true => Vec::new(),
            false => shards.iter().map(|s| s.block).collect(),
        };
        for shard in shards {
            sets.push(Set {
                name: shard.set_name(exemption_base(family)),
                family,
                prefixes: shard.prefixes,
            });
        }
        if !blocks.is_empty() {
            sets.push(Set {
                name: per_family(family, BLOCKS_SETS).into(),
                family,
                prefixes: blocks,
            });
        }
    }
    for &family in families(flags) {
        if let Some(sources) = config.source_ranges(family) {
            sets.push(Set {
                name: per_family(family, SOURCE_SETS).into(),
                family,
                prefixes: sources.to_prefixes(family.bits()),
            });
        }
    }
    sets
}

/// One interval map per managed family that `snatRules` gives prefixes: the source spans,
/// longest prefix first, flattened into disjoint intervals (an interval map cannot hold
/// overlapping ones).
fn maps(config: &Config, flags: &PolicyFlags) -> Vec<Map> {
    families(flags)
        .iter()
        .filter(|&&family| !config.snat_rule_prefixes(family).is_empty())
        .map(|&family| Map {
            name: per_family(family, SNAT_MAPS).into(),
            family,
            entries: config
                .snat_map(family)
                .into_iter()
                .map(|(span, to)| MapEntry { span, to })
                .collect(),
        })
        .collect()
}

/// The egress interface names, when `egressInterfaces` is set: none contained in another
/// (the kernel refuses overlapping intervals; `eth*` already holds `eth0`), sorted by key.
fn name_sets(config: &Config) -> Vec<NameSet> {
    if config.egress_interfaces.is_empty() {
        return Vec::new();
    }
    let mut names: Vec<&Interface> = values(&config.egress_interfaces).collect();
    names.sort_by_key(|n| (n.span().lo, std::cmp::Reverse(n.span().hi)));
    let mut kept: Vec<Interface> = Vec::with_capacity(names.len());
    for n in names {
        let covered = kept.last().is_some_and(|k| n.span().hi <= k.span().hi);
        if !covered {
            kept.push(n.clone());
        }
    }
    vec![NameSet {
        name: SET_EGRESS.into(),
        names: kept,
    }]
}

/// Our base chain, at `--chain-priority` (`srcnat + 10` by default; docs/design.md).
fn nat_postrouting(flags: &PolicyFlags) -> BaseChain {
    BaseChain {
        kind: "nat".into(),
        hook: HOOK_POSTROUTING,
        priority: flags.chain_priority.0,
        policy: POLICY_ACCEPT,
    }
}

/// The base chain's rules up to the translation: what to leave alone.
fn exemption_rules(
    config: &Config,
    flags: &PolicyFlags,
    exemptions: &[(Family, Vec<Shard>)],
) -> Vec<Rule> {
    let mut rules = Vec::new();
    if !flags.enable_ipv6 {
        // IPv6 is not ours to touch: leave it to whatever else runs on the node.
        rules.push(rule([Stmt::Nfproto(Family::V6), Stmt::Return]));
    }
    rules.extend(scope_rules(config, flags));
    // Like ip-masq-agent's `-m addrtype ! --dst-type LOCAL`: never masquerade to ourselves.
    rules.push(rule([Stmt::FibDaddrLocal, Stmt::Return]));
    for (family, shards) in exemptions {
        let family = *family;
        // A cut family: one lookup finds the block's chain, which looks in the block's set
        // only (docs/design.md, "Block sets").
        rules.push(if is_whole(shards) {
            rule([
                Stmt::DaddrInSet {
                    family,
                    set: exemption_base(family).into(),
                },
                Stmt::Return,
            ])
        } else {
            rule([Stmt::DaddrVmap {
                family,
                map: per_family(family, DISPATCH_MAPS).into(),
            }])
        });
        if !is_whole(shards) {
            // Reached only when the map dispatched nothing: a destination inside a block
            // here means the map is going away (docs/design.md, "Block sets").
            rules.push(rule([
                Stmt::DaddrInSet {
                    family,
                    set: per_family(family, BLOCKS_SETS).into(),
                },
                Stmt::Return,
            ]));
        }
    }
    rules
}

/// `sourceCIDRs` and `egressInterfaces`: packets outside the scope leave the chain
/// untouched. One set lookup each, whatever the list sizes.
fn scope_rules(config: &Config, flags: &PolicyFlags) -> Vec<Rule> {
    let mut rules = Vec::new();
    if !config.source_cidrs.is_empty() {
        for &family in families(flags) {
            rules.push(rule([
                Stmt::SaddrNotInSet {
                    family,
                    set: per_family(family, SOURCE_SETS).into(),
                },
                Stmt::Return,
            ]));
        }
    }
    if !config.egress_interfaces.is_empty() {
        rules.push(rule([
            Stmt::OifnameNotInSet {
                set: SET_EGRESS.into(),
            },
            Stmt::Return,
        ]));
    }
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

/// How a translated packet gets its source: the node's address, a `snatTo` target, or the
/// `snatRules` map of its family.
#[derive(Clone, Copy)]
enum Translation {
    Masquerade,
    Snat(SnatTarget),
    Map(Family),
}

impl Translation {
    fn stmt(self, flags: &PolicyFlags, ports: Option<(u16, u16)>) -> Stmt {
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
        let flags = random | specified;
        match self {
            Translation::Masquerade => Stmt::Masquerade { flags, ports },
            Translation::Snat(t) => Stmt::Snat {
                family: t.family(),
                first: t.first,
                last: t.last,
                flags,
                ports,
            },
            Translation::Map(family) => Stmt::SnatMap {
                family,
                map: per_family(family, SNAT_MAPS).into(),
                packets: 0,
                bytes: 0,
                flags,
                ports,
            },
        }
    }
}

/// The translating rules. Without `snatTo` and `snatRules` one set serves both families
/// (masquerade needs no family); with either, each managed family gets its own, prefixed
/// with `meta nfproto`: first the `snatRules` map's (a source it does not hold goes on),
/// then the fallback, `snatTo` or masquerade.
fn translation_rules(config: &Config, flags: &PolicyFlags) -> Vec<Rule> {
    if config.snat_to.is_empty() && config.snat_rules.is_empty() {
        return translate(flags, Translation::Masquerade, &[]);
    }
    let mut rules = Vec::new();
    for &family in families(flags) {
        let prefix = [Stmt::Nfproto(family)];
        if !config.snat_rule_prefixes(family).is_empty() {
            rules.extend(translate(flags, Translation::Map(family), &prefix));
        }
        let how = config
            .snat_for(family)
            .map_or(Translation::Masquerade, Translation::Snat);
        rules.extend(translate(flags, how, &prefix));
    }
    rules
}

/// `--to-ports` rules (ip-masq-agent's scheme: per protocol, range i is chosen with
/// probability size_i / (sizes of ranges i..n), so each range is chosen in proportion to its
/// size; the last range needs no draw), then the catch-all, each starting with `prefix`.
fn translate(flags: &PolicyFlags, how: Translation, prefix: &[Stmt]) -> Vec<Rule> {
    let mut rules = Vec::new();
    if let Some(to_ports) = &flags.to_ports {
        for proto in TO_PORTS_PROTOCOLS {
            let mut remaining = to_ports.size();
            for r in to_ports.ranges() {
                let mut stmts = prefix.to_vec();
                stmts.push(Stmt::L4proto(proto));
                if r.size() != remaining {
                    stmts.push(Stmt::NumgenBelow {
                        modulus: remaining,
                        below: r.size(),
                    });
                }
                remaining -= r.size();
                if !matches!(how, Translation::Map(_)) {
                    stmts.push(counter());
                }
                stmts.push(how.stmt(flags, Some((r.first, r.last))));
                rules.push(Rule { stmts });
            }
        }
    }
    let mut stmts = prefix.to_vec();
    // The map's statement carries its own counter, after its lookup.
    if !matches!(how, Translation::Map(_)) {
        stmts.push(counter());
    }
    stmts.push(how.stmt(flags, None));
    rules.push(Rule { stmts });
    rules
}
