//! The other NAT tables: what the kernel holds at the postrouting hook outside our table,
//! as raw parts (chains, rules with their expressions, sets with their keys), for the
//! conflict analysis of `crate::conflict`. The reading is in [`super::socket`]; this module
//! is the data and its assembly from dump messages. Pure.

use super::decode::{self, ChainMsg, Element, RuleMsg, SetMsg};
use super::uapi::*;
use crate::model::{BaseChain, HOOK_POSTROUTING};
use crate::netlink::{Malformed, Msg};
use crate::prefix::Span;

/// One table that has a NAT base chain at the postrouting hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignTable {
    /// `NFPROTO_IPV4` (ip), `NFPROTO_IPV6` (ip6) or `NFPROTO_INET`.
    pub family: u8,
    /// Table name.
    pub name: String,
    /// Every chain of the table (base chains and the ones they jump to).
    pub chains: Vec<ChainMsg>,
    /// Every rule, in dump order (evaluation order within a chain).
    pub rules: Vec<RuleMsg>,
    /// The sets rules may look up.
    pub sets: Vec<ForeignSet>,
}

// STAND-IN (issue 17, helper B's branch): helper A delivers the bounded read and this
// type with it; the lead drops this copy at merge.
/// What a read of the other NAT tables found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForeignRead {
    /// The tables read whole.
    pub tables: Vec<ForeignTable>,
    /// Tables (family name, table name) whose sets were not read: too many elements.
    pub too_large: Vec<(&'static str, String)>,
    /// Set elements read in all.
    pub elements: usize,
}

/// A set, reduced to what a lookup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignSet {
    /// Name (anonymous sets are `__set%d`).
    pub name: String,
    /// Key length in bytes.
    pub key_len: usize,
    /// The keys, as spans of big-endian integers; `None` when the set is of a kind a lookup
    /// cannot be evaluated against (a map, concatenated keys).
    pub spans: Option<Vec<Span>>,
}

/// Whether a chain is a NAT base chain at the postrouting hook.
pub fn is_nat_postrouting(base: &Option<BaseChain>) -> bool {
    base.as_ref()
        .is_some_and(|b| b.kind == "nat" && b.hook == HOOK_POSTROUTING)
}

/// Whether a family's chains see IPv4 or IPv6 packets at all.
pub fn relevant_family(family: u8) -> bool {
    matches!(family, NFPROTO_IPV4 | NFPROTO_IPV6 | NFPROTO_INET)
}

/// The tables (family, name) with a NAT postrouting chain, from a chain dump of every
/// family, leaving out `(NFPROTO_INET, ours)`.
pub fn nat_tables(chains: &[(u8, ChainMsg)], ours: &str) -> Vec<(u8, String)> {
    let mut out: Vec<(u8, String)> = Vec::new();
    for (family, c) in chains {
        let key = (*family, c.table.clone());
        if relevant_family(*family)
            && is_nat_postrouting(&c.chain.base)
            && !(*family == NFPROTO_INET && c.table == ours)
            && !out.contains(&key)
        {
            out.push(key);
        }
    }
    out
}

/// A set from its NEWSET message and elements.
pub fn foreign_set(s: &SetMsg, elements: &[Element]) -> ForeignSet {
    let key_len = s.key_len as usize;
    let plain = s.flags & (NFT_SET_MAP | NFT_SET_CONCAT) == 0 && (1..=16).contains(&key_len);
    let spans = plain.then(|| {
        if s.flags & NFT_SET_INTERVAL != 0 {
            let max = if key_len == 16 {
                u128::MAX
            } else {
                (1u128 << (8 * key_len)) - 1
            };
            decode::interval_spans(elements, key_len, max)
        } else {
            elements
                .iter()
                .filter(|e| e.key_len() == key_len)
                .filter_map(|e| e.key())
                .map(|key| {
                    let k = key.iter().fold(0u128, |a, b| (a << 8) | u128::from(*b));
                    Span { lo: k, hi: k }
                })
                .collect()
        }
    });
    ForeignSet {
        name: s.name.clone(),
        key_len,
        spans,
    }
}

/// The family of a dump message (its nfgenmsg).
pub fn family_of(msg: &Msg<'_>) -> u8 {
    msg.family()
}

/// Decodes a chain of a dump of every family.
pub fn chain_of(msg: &Msg<'_>) -> Result<(u8, ChainMsg), Malformed> {
    Ok((msg.family(), decode::chain(msg)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Chain;

    fn chain(table: &str, base: Option<BaseChain>) -> ChainMsg {
        ChainMsg {
            table: table.into(),
            chain: Chain {
                name: "c".into(),
                base,
                rules: Vec::new(),
            },
        }
    }

    #[test]
    fn only_other_nat_postrouting_tables_are_kept() {
        let nat = Some(BaseChain {
            kind: "nat".into(),
            hook: HOOK_POSTROUTING,
            priority: 100,
            policy: 1,
        });
        let filter = Some(BaseChain {
            kind: "filter".into(),
            hook: 1,
            priority: 0,
            policy: 1,
        });
        let chains = vec![
            (NFPROTO_IPV4, chain("nat", nat.clone())),
            (NFPROTO_IPV4, chain("nat", None)),
            (NFPROTO_INET, chain("nft-masq-agent", nat.clone())),
            (NFPROTO_INET, chain("filter", filter)),
            (NFPROTO_IPV6, chain("nat", nat.clone())),
            (7, chain("bridge", nat)),
        ];
        assert_eq!(
            nat_tables(&chains, "nft-masq-agent"),
            [(NFPROTO_IPV4, "nat".into()), (NFPROTO_IPV6, "nat".into())]
        );
    }
}
