//! Property tests of the prefix arithmetic against a reference model: a `BTreeSet` of the
//! addresses in a small universe.
//!
//! A universe is 1024 units of `2^shift` addresses from `base`: single addresses at the bottom
//! of IPv4 and IPv6, just below 255.255.255.255 and ffff:…:ffff, across an alignment boundary
//! in the middle of IPv6; or the whole address space in 1024 blocks (so `0.0.0.0/0`, `::/0`
//! and ranges ending at the top are as common as small ones). Every boundary the strategies
//! make is a unit boundary, so the model holds unit numbers and stays small.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

const UNITS: u128 = 1024;

#[derive(Debug, Clone, Copy)]
struct Universe {
    family: Family,
    base: u128,
    shift: u32,
}

impl Universe {
    fn bits(self) -> u8 {
        self.family.bits()
    }

    /// First address of unit `u`.
    fn addr(self, u: u128) -> u128 {
        self.base + (u << self.shift)
    }

    /// Last address of unit `u` (written so that the top unit does not overflow).
    fn last(self, u: u128) -> u128 {
        self.addr(u) + ((1u128 << self.shift) - 1)
    }

    fn span(self, a: u128, b: u128) -> Span {
        Span {
            lo: self.addr(a.min(b)),
            hi: self.last(a.max(b)),
        }
    }

    /// The units of a span, which must lie on unit boundaries.
    fn units(self, s: Span) -> impl Iterator<Item = u128> {
        let size = 1u128 << self.shift;
        assert!(
            s.lo >= self.base && s.hi <= self.last(UNITS - 1),
            "{s:?} outside"
        );
        assert_eq!((s.lo - self.base) % size, 0, "{s:?} starts inside a unit");
        assert_eq!(
            (s.hi - self.base) % size,
            size - 1,
            "{s:?} ends inside a unit"
        );
        ((s.lo - self.base) >> self.shift)..=((s.hi - self.base) >> self.shift)
    }

    fn model(self, set: &RangeSet) -> BTreeSet<u128> {
        set.spans().iter().flat_map(|s| self.units(*s)).collect()
    }
}

fn universes() -> impl Strategy<Value = Universe> {
    let u = |family, base, shift| {
        Just(Universe {
            family,
            base,
            shift,
        })
    };
    prop_oneof![
        u(Family::V4, 0, 0),
        u(Family::V4, u128::from(u32::MAX) + 1 - UNITS, 0),
        u(Family::V4, 0, 22),
        u(Family::V6, 0, 0),
        u(Family::V6, (1u128 << 64) - UNITS / 2, 0),
        u(Family::V6, u128::MAX - UNITS + 1, 0),
        u(Family::V6, 0, 118),
    ]
}

/// Spans as pairs of unit numbers (first, last, in either order).
type Pairs = Vec<(u128, u128)>;

/// Up to 8 spans as unit pairs; the model is the union of their units.
fn unit_spans() -> impl Strategy<Value = Pairs> {
    prop::collection::vec((0..UNITS, 0..UNITS), 0..8)
}

/// A universe with two span lists in it.
fn two_sets() -> impl Strategy<Value = (Universe, Pairs, Pairs)> {
    (universes(), unit_spans(), unit_spans())
}

fn build(u: Universe, pairs: &[(u128, u128)]) -> (RangeSet, BTreeSet<u128>) {
    let set = RangeSet::from_spans(pairs.iter().map(|&(a, b)| u.span(a, b)).collect());
    let model = pairs
        .iter()
        .flat_map(|&(a, b)| a.min(b)..=a.max(b))
        .collect();
    (set, model)
}

/// Sorted, disjoint, and not adjacent (adjacent spans would have been merged).
fn assert_normal(set: &RangeSet) {
    for s in set.spans() {
        assert!(s.lo <= s.hi, "{s:?}");
    }
    for w in set.spans().windows(2) {
        assert!(
            w[0].hi < w[1].lo && w[1].lo - w[0].hi > 1,
            "{:?} and {:?} overlap or touch",
            w[0],
            w[1]
        );
    }
}

/// Prefixes of the set: aligned, sorted, disjoint, exactly the model's addresses, and the
/// fewest (no two are the halves of one larger aligned prefix); `prefix_count` agrees.
fn assert_prefixes(u: Universe, set: &RangeSet, model: &BTreeSet<u128>) {
    let prefixes = set.to_prefixes(u.bits());
    assert_eq!(set.prefix_count(u.bits()), prefixes.len());
    let mut covered = BTreeSet::new();
    for p in &prefixes {
        assert_eq!(Family::of(p), u.family);
        assert_eq!(p.trunc(), *p, "{p} is not aligned");
        covered.extend(u.units(Span::of(p)));
    }
    assert_eq!(&covered, model, "the prefixes cover other addresses");
    for w in prefixes.windows(2) {
        let (a, b) = (Span::of(&w[0]), Span::of(&w[1]));
        assert!(
            a.hi < b.lo,
            "{} and {} are not sorted and disjoint",
            w[0],
            w[1]
        );
        if w[0].prefix_len() == w[1].prefix_len() && w[0].prefix_len() > 0 {
            assert_ne!(
                w[0].supernet(),
                w[1].supernet(),
                "{} and {} make one prefix",
                w[0],
                w[1]
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn from_spans_is_the_union((u, a, _) in two_sets()) {
        let (set, model) = build(u, &a);
        assert_normal(&set);
        prop_assert_eq!(u.model(&set), model.clone());
        assert_prefixes(u, &set, &model);
    }

    #[test]
    fn from_nets_agrees_with_from_spans(
        u in universes(),
        nets in prop::collection::vec((0..UNITS, 0u8..=10), 0..8),
    ) {
        // Aligned in the address space, not only in the universe: a universe that starts
        // off an alignment boundary keeps only the prefixes that fit in it.
        let nets: Vec<IpNet> = nets
            .iter()
            .map(|&(at, host)| {
                let size_bits = u.shift + u32::from(host);
                let lo = if size_bits == 128 { 0 } else { u.addr(at) >> size_bits << size_bits };
                make_net(lo, u.bits() - size_bits as u8, u.bits())
            })
            .filter(|n| {
                let s = Span::of(n);
                s.lo >= u.base && s.hi <= u.last(UNITS - 1)
            })
            .collect();
        let set = RangeSet::from_nets(&nets);
        assert_normal(&set);
        prop_assert_eq!(&set, &RangeSet::from_spans(nets.iter().map(Span::of).collect()));
        let model: BTreeSet<u128> = nets.iter().flat_map(|n| u.units(Span::of(n))).collect();
        prop_assert_eq!(u.model(&set), model.clone());
        assert_prefixes(u, &set, &model);
        // Prefixes back to a set give the same set.
        prop_assert_eq!(RangeSet::from_nets(&set.to_prefixes(u.bits())), set);
    }

    #[test]
    fn difference_is_set_difference((u, a, b) in two_sets()) {
        let (sa, ma) = build(u, &a);
        let (sb, mb) = build(u, &b);
        let d = sa.difference(&sb);
        assert_normal(&d);
        let want: BTreeSet<u128> = ma.difference(&mb).copied().collect();
        prop_assert_eq!(u.model(&d), want.clone());
        assert_prefixes(u, &d, &want);
        prop_assert!(sa.difference(&sa).is_empty());
        prop_assert_eq!(sa.difference(&RangeSet::default()), sa);
    }

    #[test]
    fn intersects_is_a_common_address(
        (u, a, _) in two_sets(),
        x in 0..UNITS,
        y in 0..UNITS,
    ) {
        let (set, model) = build(u, &a);
        let want = (x.min(y)..=x.max(y)).any(|v| model.contains(&v));
        prop_assert_eq!(set.intersects(u.span(x, y)), want);
    }

    #[test]
    fn ranges_ending_at_the_top_of_the_address_space(
        family in prop_oneof![Just(Family::V4), Just(Family::V6)],
        from_top in 0u128..4096,
        // A length of 0 puts lo at 0: the whole space.
        whole in any::<bool>(),
    ) {
        let max = family.max();
        let lo = if whole { 0 } else { max - from_top };
        let set = RangeSet::from_spans(vec![Span { lo, hi: max }]);
        let prefixes = set.to_prefixes(family.bits());
        prop_assert_eq!(set.prefix_count(family.bits()), prefixes.len());
        prop_assert_eq!(Span::of(&prefixes[0]).lo, lo);
        prop_assert_eq!(Span::of(prefixes.last().unwrap()).hi, max);
        for w in prefixes.windows(2) {
            prop_assert_eq!(Span::of(&w[0]).hi + 1, Span::of(&w[1]).lo);
        }
        // The top address alone, removed and put back.
        let top = RangeSet::from_spans(vec![Span { lo: max, hi: max }]);
        let rest = set.difference(&top);
        let top_span = Span { lo: max, hi: max };
        prop_assert!(!rest.intersects(top_span));
        let mut spans = rest.spans().to_vec();
        spans.push(Span { lo: max, hi: max });
        prop_assert_eq!(RangeSet::from_spans(spans), set);
    }
}
