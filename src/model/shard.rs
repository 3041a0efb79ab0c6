//! Cutting a large exemption set into sets of bounded size, each covering an aligned block
//! of the address space. Pure.
//!
//! Why: the kernel dumps a set's elements in replies of at most 32 KiB, and for each reply
//! it walks the set from its first element to where the previous reply stopped. Reading a
//! set of `n` elements therefore costs about `n²/2` steps of that walk (docs/design.md,
//! "Full read"). Sets of at most `cap` prefixes make the read of a table cost at most
//! `cap` steps per element: linear in the table size.
//!
//! The cut is a function of the prefixes alone, so it is stable: a block is halved only
//! while it holds more than `cap` prefixes, and a change of a few prefixes moves elements
//! only in the block that holds them (unless the block crosses the cap, and then it is
//! halved or joined with its twin).

use ipnet::IpNet;

use crate::addr::prefix::{Family, Span, make_net};

/// The default of `--max-set-prefixes`: the most prefixes one exemption set holds before
/// the family is cut into blocks. Below it the table has one set per family, as it always
/// had. At this size a block set is read in well under a millisecond and a flushed block is
/// refilled in about 3 ms (1,025 elements; 6-8 ms at 1,024 prefixes per block, above the
/// 5 ms repair goal), while the packet finds its block through one verdict map whatever
/// their number (docs/design.md, "Block sets", "Why 512"; BENCHMARKS.md).
pub const DEFAULT_MAX_SET_PREFIXES: usize = 512;

/// The fewest prefixes `--max-set-prefixes` accepts: below it the sets and chains would be
/// many (one of each per block) for no gain in repair time.
pub const MIN_MAX_SET_PREFIXES: usize = 256;

/// One set's worth of prefixes: those inside `block`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The aligned block of addresses the shard covers (`0.0.0.0/0` or `::/0`: the whole
    /// family, the table is not cut).
    pub block: IpNet,
    /// The prefixes inside it, sorted.
    pub prefixes: Vec<IpNet>,
}

impl Shard {
    /// Whether this shard is the whole family: the set keeps its plain name and the rule
    /// needs no block match.
    pub fn is_whole(&self) -> bool {
        self.block.prefix_len() == 0
    }

    /// The set name for this shard: `base` for the whole family, else `base-<block>`, the
    /// block written as nft identifiers allow (letters, digits, `/ - _ .`): an IPv4 block
    /// dotted (`nonmasq-v4-10.128.0.0/9`), an IPv6 block as the hex digits of its fixed
    /// part (`nonmasq-v6-fd00/8`).
    pub fn set_name(&self, base: &str) -> String {
        if self.is_whole() {
            return base.to_string();
        }
        block_name(base, &self.block)
    }
}

/// `base-<block>`, the block written as nft identifiers allow ([`Shard::set_name`]): the name
/// of a block's exemption set and of its chain.
pub fn block_name(base: &str, block: &IpNet) -> String {
    match block {
        IpNet::V4(n) => format!("{base}-{}/{}", n.network(), n.prefix_len()),
        IpNet::V6(n) => {
            let len = n.prefix_len();
            let nibbles = usize::from(len).div_ceil(4).max(1);
            let hex = format!("{:032x}", u128::from(n.network()));
            format!("{base}-{}/{len}", &hex[..nibbles])
        }
    }
}

/// The family's exemption prefixes (sorted, disjoint) cut into shards of at most `cap`
/// prefixes each, in address order; one whole-family shard when they fit (also when
/// there are none). A prefix is never cut: a block holding more than one prefix holds
/// none as wide as itself, so each lies in one half.
pub fn shards(family: Family, prefixes: &[IpNet], cap: usize) -> Vec<Shard> {
    let cap = cap.max(1);
    let whole = make_net(0, 0, family.bits());
    if prefixes.len() <= cap {
        return vec![Shard {
            block: whole,
            prefixes: prefixes.to_vec(),
        }];
    }
    let mut out = Vec::new();
    split(family, 0, 0, prefixes, cap, &mut out);
    out
}

/// Halves the block at `lo`/`len` while it holds more than `cap` prefixes.
fn split(family: Family, lo: u128, len: u8, prefixes: &[IpNet], cap: usize, out: &mut Vec<Shard>) {
    if prefixes.is_empty() {
        return;
    }
    // A block of one address cannot be halved; it holds at most one prefix anyway.
    if prefixes.len() <= cap || len >= family.bits() {
        out.push(Shard {
            block: make_net(lo, len, family.bits()),
            prefixes: prefixes.to_vec(),
        });
        return;
    }
    let half = 1u128 << (family.bits() - len - 1);
    let mid = lo + half;
    let at = prefixes.partition_point(|p| Span::of(p).lo < mid);
    split(family, lo, len + 1, &prefixes[..at], cap, out);
    split(family, mid, len + 1, &prefixes[at..], cap, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(n: usize, step: u32) -> Vec<IpNet> {
        (0..n as u32)
            .map(|i| format!("{}/32", std::net::Ipv4Addr::from(0x0a00_0000 + i * step)))
            .map(|s| s.parse().unwrap())
            .collect()
    }

    #[test]
    fn a_table_within_the_cap_is_one_whole_set_with_its_plain_name() {
        let p = v4(100, 2);
        let s = shards(Family::V4, &p, 100);
        assert_eq!(s.len(), 1);
        assert!(s[0].is_whole());
        assert_eq!(s[0].set_name("nonmasq-v4"), "nonmasq-v4");
        assert_eq!(s[0].prefixes, p);
        let none = shards(Family::V6, &[], 10);
        assert_eq!((none.len(), none[0].block.to_string()), (1, "::/0".into()));
    }

    #[test]
    fn blocks_are_named_as_nft_identifiers_allow() {
        let s = Shard {
            block: "10.128.0.0/9".parse().unwrap(),
            prefixes: vec![],
        };
        assert_eq!(s.set_name("nonmasq-v4"), "nonmasq-v4-10.128.0.0/9");
        let s = Shard {
            block: "fd00::/8".parse().unwrap(),
            prefixes: vec![],
        };
        assert_eq!(s.set_name("nonmasq-v6"), "nonmasq-v6-fd/8");
        let s = Shard {
            block: "8000::/1".parse().unwrap(),
            prefixes: vec![],
        };
        assert_eq!(s.set_name("nonmasq-v6"), "nonmasq-v6-8/1");
    }

    #[test]
    fn a_change_inside_one_block_leaves_the_other_blocks_as_they_were() {
        let p = v4(10_000, 256);
        let before = shards(Family::V4, &p, 3_000);
        let mut q = p.clone();
        q.remove(5);
        let after = shards(Family::V4, &q, 3_000);
        assert_eq!(before.len(), after.len());
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 1, "{before:?}");
    }

    fn arbitrary_v4() -> impl Strategy<Value = Vec<IpNet>> {
        proptest::collection::vec((any::<u32>(), 8u8..=32), 0..600).prop_map(|raw| {
            let nets: Vec<IpNet> = raw
                .into_iter()
                .map(|(a, len)| make_net(u128::from(a), len, 32))
                .collect();
            crate::addr::prefix::RangeSet::from_nets(&nets).to_prefixes(32)
        })
    }

    proptest! {
        /// The shards hold every prefix exactly once, in order, each inside its block, no
        /// shard beyond the cap, and the blocks do not overlap.
        #[test]
        fn shards_partition_the_prefixes(p in arbitrary_v4(), cap in 1usize..200) {
            let s = shards(Family::V4, &p, cap);
            let joined: Vec<IpNet> = s.iter().flat_map(|s| s.prefixes.clone()).collect();
            prop_assert_eq!(&joined, &p);
            for sh in &s {
                prop_assert!(sh.prefixes.len() <= cap);
                for n in &sh.prefixes {
                    prop_assert!(sh.block.contains(n), "{} outside {}", n, sh.block);
                }
            }
            for w in s.windows(2) {
                prop_assert!(Span::of(&w[0].block).hi < Span::of(&w[1].block).lo);
            }
            let names: std::collections::HashSet<String> =
                s.iter().map(|x| x.set_name("nonmasq-v4")).collect();
            prop_assert_eq!(names.len(), s.len());
        }
    }
}
