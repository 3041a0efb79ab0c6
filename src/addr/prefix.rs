//! Address prefixes and interval arithmetic on them: merge, difference, and back to
//! prefixes. A leaf: config validation, the model, the encoder and the decoder all use it,
//! and it uses none of them.
//!
//! Addresses of one family are handled as integers in a `u128` (IPv4 uses the low 32 bits),
//! with inclusive bounds so that a range ending at the top of the address space
//! (`240.0.0.0/4`, `0.0.0.0/0`, `::/0`) is representable without overflow: the "one past the
//! end" value the kernel's interval encoding wants is computed only where it exists
//! (see `nft::encode`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// The highest address of the family, as an integer.
    pub fn max(self) -> u128 {
        match self {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        }
    }

    /// The family of a prefix.
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// The family of an address.
    pub fn of_addr(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    /// First address.
    pub lo: u128,
    /// Last address (inclusive).
    pub hi: u128,
}

impl Span {
    /// The addresses covered by a prefix.
    pub fn of(net: &IpNet) -> Span {
        match net {
            IpNet::V4(n) => Span {
                lo: u128::from(u32::from(n.network())),
                hi: u128::from(u32::from(n.broadcast())),
            },
            IpNet::V6(n) => Span {
                lo: u128::from(n.network()),
                hi: u128::from(n.broadcast()),
            },
        }
    }
}

/// A sorted set of disjoint, non-adjacent spans of one address family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    spans: Vec<Span>,
}

impl RangeSet {
    /// Builds the union of the given prefixes (all of one family).
    pub fn from_nets<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> RangeSet {
        Self::from_spans(nets.into_iter().map(Span::of).collect())
    }

    /// Builds the union of arbitrary spans: sorts, then merges overlapping and adjacent ones.
    pub fn from_spans(mut spans: Vec<Span>) -> RangeSet {
        spans.sort_unstable();
        let mut out: Vec<Span> = Vec::with_capacity(spans.len());
        for s in spans {
            match out.last_mut() {
                // Adjacent spans merge too: `last.hi + 1 == s.lo`, written without overflow.
                Some(last) if s.lo <= last.hi || s.lo - last.hi == 1 => {
                    last.hi = last.hi.max(s.hi);
                }
                _ => out.push(s),
            }
        }
        RangeSet { spans: out }
    }

    /// The spans, sorted.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// True when no address is in the set.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Whether any address of `span` is in the set.
    pub fn intersects(&self, span: Span) -> bool {
        // First stored span that ends at or after span.lo.
        let i = self.spans.partition_point(|s| s.hi < span.lo);
        self.spans.get(i).is_some_and(|s| s.lo <= span.hi)
    }

    /// The addresses in `self` and not in `other`. Linear in the sizes of both sets.
    pub fn difference(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::with_capacity(self.spans.len());
        let mut j = 0;
        for &s in &self.spans {
            let mut lo = s.lo;
            let mut done = false;
            // Skip subtrahends entirely below this span.
            while j < other.spans.len() && other.spans[j].hi < lo {
                j += 1;
            }
            let mut k = j;
            while k < other.spans.len() && other.spans[k].lo <= s.hi {
                let cut = other.spans[k];
                if cut.lo > lo {
                    out.push(Span { lo, hi: cut.lo - 1 });
                }
                if cut.hi >= s.hi {
                    done = true;
                    break;
                }
                lo = cut.hi + 1;
                k += 1;
            }
            if !done {
                out.push(Span { lo, hi: s.hi });
            }
        }
        RangeSet { spans: out }
    }

    /// How many prefixes [`RangeSet::to_prefixes`] would make, without making them.
    pub fn prefix_count(&self, bits: u8) -> usize {
        self.spans.iter().map(|s| span_prefix_count(*s, bits)).sum()
    }

    /// The set as the fewest prefixes that cover it exactly, in address order.
    /// `bits` is the address width: 32 for IPv4, 128 for IPv6.
    pub fn to_prefixes(&self, bits: u8) -> Vec<IpNet> {
        let mut out = Vec::with_capacity(self.spans.len());
        for s in &self.spans {
            span_to_prefixes(*s, bits, &mut out);
        }
        out
    }
}

/// How many prefixes [`span_to_prefixes`] makes of `span`.
pub fn span_prefix_count(span: Span, bits: u8) -> usize {
    let mut n = 0;
    walk_prefixes(span, bits, |_, _| n += 1);
    n
}

/// Splits one span into the fewest aligned prefixes.
pub fn span_to_prefixes(span: Span, bits: u8, out: &mut Vec<IpNet>) {
    walk_prefixes(span, bits, |lo, len| out.push(make_net(lo, len, bits)));
}

/// Calls `each(first address, prefix length)` for the fewest aligned prefixes of `span`.
fn walk_prefixes(span: Span, bits: u8, mut each: impl FnMut(u128, u8)) {
    let mut lo = span.lo;
    loop {
        // The largest block aligned at `lo`...
        let align = if lo == 0 {
            u32::from(bits)
        } else {
            lo.trailing_zeros().min(u32::from(bits))
        };
        // ...that does not run past `hi`: size 2^k with lo + 2^k - 1 <= hi.
        let room = span.hi - lo; // number of addresses after lo, minus one
        let fit = if room == u128::MAX {
            128
        } else {
            127 - (room + 1).leading_zeros()
        };
        let k = align.min(fit);
        each(lo, bits - k as u8);
        let last = if k == 128 {
            u128::MAX
        } else {
            lo + ((1u128 << k) - 1)
        };
        if last >= span.hi {
            break;
        }
        lo = last + 1;
    }
}

/// Builds a prefix from an address integer, a prefix length and the family width.
pub fn make_net(addr: u128, len: u8, bits: u8) -> IpNet {
    if bits == 32 {
        let a = Ipv4Addr::from(addr as u32);
        IpNet::V4(Ipv4Net::new(a, len).unwrap_or_else(|_| unreachable!("len <= 32")))
    } else {
        let a = Ipv6Addr::from(addr);
        IpNet::V6(Ipv6Net::new(a, len).unwrap_or_else(|_| unreachable!("len <= 128")))
    }
}

/// An address as an integer in the family's width.
pub fn addr_to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn prefixes(set: &RangeSet, bits: u8) -> Vec<String> {
        set.to_prefixes(bits)
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn merges_overlaps_duplicates_and_siblings() {
        let n = nets(&[
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.0.0.0/8",
            "192.168.0.0/17",
            "192.168.128.0/17",
        ]);
        let set = RangeSet::from_nets(&n);
        assert_eq!(prefixes(&set, 32), ["10.0.0.0/8", "192.168.0.0/16"]);
    }

    #[test]
    fn adjacent_unaligned_ranges_stay_separate_prefixes() {
        let set = RangeSet::from_nets(&nets(&["10.0.1.0/24", "10.0.2.0/24"]));
        assert_eq!(set.spans().len(), 1, "adjacent spans merge");
        assert_eq!(prefixes(&set, 32), ["10.0.1.0/24", "10.0.2.0/24"]);
    }

    #[test]
    fn difference_carves_a_hole() {
        let a = RangeSet::from_nets(&nets(&["10.0.0.0/8"]));
        let b = RangeSet::from_nets(&nets(&["10.11.0.0/24"]));
        assert_eq!(
            prefixes(&a.difference(&b), 32),
            [
                "10.0.0.0/13",
                "10.8.0.0/15",
                "10.10.0.0/16",
                "10.11.1.0/24",
                "10.11.2.0/23",
                "10.11.4.0/22",
                "10.11.8.0/21",
                "10.11.16.0/20",
                "10.11.32.0/19",
                "10.11.64.0/18",
                "10.11.128.0/17",
                "10.12.0.0/14",
                "10.16.0.0/12",
                "10.32.0.0/11",
                "10.64.0.0/10",
                "10.128.0.0/9",
            ]
        );
    }

    #[test]
    fn difference_edge_cases() {
        let a = RangeSet::from_nets(&nets(&["10.0.0.0/8", "192.168.0.0/16"]));
        // Removing a superset removes everything it covers.
        let all = RangeSet::from_nets(&nets(&["0.0.0.0/0"]));
        assert!(a.difference(&all).is_empty());
        // Removing something disjoint changes nothing.
        let other = RangeSet::from_nets(&nets(&["172.16.0.0/12"]));
        assert_eq!(a.difference(&other), a);
        // Cuts at both ends of a span.
        let ends = RangeSet::from_nets(&nets(&["10.0.0.0/9", "10.192.0.0/10"]));
        assert_eq!(
            prefixes(&a.difference(&ends), 32),
            ["10.128.0.0/10", "192.168.0.0/16"]
        );
        // One cut spanning two spans.
        let span_two = RangeSet::from_spans(vec![Span {
            lo: Span::of(&"10.255.0.0/16".parse().unwrap()).lo,
            hi: Span::of(&"192.168.0.0/17".parse().unwrap()).hi,
        }]);
        assert_eq!(
            prefixes(&a.difference(&span_two), 32),
            [
                "10.0.0.0/9",
                "10.128.0.0/10",
                "10.192.0.0/11",
                "10.224.0.0/12",
                "10.240.0.0/13",
                "10.248.0.0/14",
                "10.252.0.0/15",
                "10.254.0.0/16",
                "192.168.128.0/17"
            ]
        );
    }

    #[test]
    fn top_of_address_space() {
        let v4 = RangeSet::from_nets(&nets(&["240.0.0.0/4", "0.0.0.0/0"]));
        assert_eq!(prefixes(&v4, 32), ["0.0.0.0/0"]);
        let class_e = RangeSet::from_nets(&nets(&["240.0.0.0/4"]));
        assert_eq!(prefixes(&class_e, 32), ["240.0.0.0/4"]);
        let v6 = RangeSet::from_nets(&nets(&["::/0"]));
        assert_eq!(prefixes(&v6, 128), ["::/0"]);
        let top6 = RangeSet::from_nets(&nets(&["ff00::/8"]));
        assert_eq!(prefixes(&top6, 128), ["ff00::/8"]);
        // Carving the top out of everything leaves the bottom, and the reverse.
        let all6 = RangeSet::from_nets(&nets(&["::/0"]));
        let top = RangeSet::from_nets(&nets(&["8000::/1"]));
        assert_eq!(prefixes(&all6.difference(&top), 128), ["::/1"]);
        let bottom = RangeSet::from_nets(&nets(&["::/1"]));
        assert_eq!(prefixes(&all6.difference(&bottom), 128), ["8000::/1"]);
        let host = RangeSet::from_nets(&nets(&["255.255.255.255/32"]));
        assert_eq!(
            prefixes(
                &RangeSet::from_nets(&nets(&["0.0.0.0/0"])).difference(&host),
                32
            )
            .len(),
            32
        );
    }

    #[test]
    fn intersects_uses_inclusive_bounds() {
        let set = RangeSet::from_nets(&nets(&["10.0.0.0/8", "192.168.0.0/16"]));
        let span = |s: &str| Span::of(&s.parse().unwrap());
        assert!(set.intersects(span("10.11.0.0/24")));
        assert!(set.intersects(span("0.0.0.0/0")));
        assert!(set.intersects(span("10.255.255.255/32")));
        assert!(!set.intersects(span("11.0.0.0/8")));
        assert!(!set.intersects(span("192.169.0.0/16")));
    }

    #[test]
    fn prefixes_of_arbitrary_span() {
        let mut out = Vec::new();
        span_to_prefixes(Span { lo: 1, hi: 6 }, 32, &mut out);
        let got: Vec<String> = out.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            got,
            ["0.0.0.1/32", "0.0.0.2/31", "0.0.0.4/31", "0.0.0.6/32"]
        );
    }
}
