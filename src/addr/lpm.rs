//! Longest-prefix match, flattened: prefixes that each carry a value, some inside others,
//! into sorted, disjoint spans that each carry the value of the longest prefix holding
//! them. Pure.
//!
//! An nftables interval map cannot hold overlapping intervals (the kernel and nft refuse
//! them: "conflicting intervals"), so a map that should answer "the entry of the most
//! specific prefix" is written as the flattened form: a /16 with a /24 inside becomes the
//! part of the /16 below the /24, the /24, and the part above it. Prefixes either nest or
//! are disjoint, so one sweep in address order with a stack of the prefixes still open
//! does it; adjacent pieces with the same value are joined, so the map holds no more
//! intervals than needed.

use super::prefix::Span;

/// Flattens `prefixes` (spans of prefixes of one family, each with its value) into sorted,
/// disjoint, non-adjacent-when-equal spans, each with the value of the longest prefix that
/// holds it. Of two equal prefixes the first given wins. Spans that are not prefixes (that
/// overlap without nesting) are not expected; they are cut where the later one starts.
pub fn flatten<T: Copy + Eq>(prefixes: &[(Span, T)]) -> Vec<(Span, T)> {
    let mut order: Vec<usize> = (0..prefixes.len()).collect();
    // Outer before inner at the same start; equal spans keep their given order (stable).
    order.sort_by_key(|&i| (prefixes[i].0.lo, std::cmp::Reverse(prefixes[i].0.hi)));
    let mut out: Vec<(Span, T)> = Vec::with_capacity(prefixes.len() * 2);
    // The prefixes holding the cursor, innermost last.
    let mut open: Vec<(Span, T)> = Vec::new();
    // The first address not yet emitted; `None` once the top of the key space is emitted.
    let mut cursor: Option<u128> = Some(0);
    for i in order {
        let (span, value) = prefixes[i];
        if open.last().is_some_and(|(s, _)| *s == span) {
            continue; // an equal prefix given later: the first one wins
        }
        close_before(&mut open, &mut cursor, &mut out, span.lo);
        if let (Some((_, v)), Some(c)) = (open.last(), cursor) {
            if c < span.lo {
                emit(
                    &mut out,
                    Span {
                        lo: c,
                        hi: span.lo - 1,
                    },
                    *v,
                );
            }
        }
        cursor = Some(span.lo);
        open.push((span, value));
    }
    close_before(&mut open, &mut cursor, &mut out, u128::MAX);
    if let (Some((s, v)), Some(c)) = (open.pop(), cursor) {
        // Only a prefix reaching u128::MAX is left (close_before stops short of it).
        emit(&mut out, Span { lo: c, hi: s.hi }, v);
    }
    out
}

/// Emits and closes every open prefix that ends before `lo`, innermost first: each covers
/// from the cursor to its end (its inner prefixes are already emitted).
fn close_before<T: Copy + Eq>(
    open: &mut Vec<(Span, T)>,
    cursor: &mut Option<u128>,
    out: &mut Vec<(Span, T)>,
    lo: u128,
) {
    while let Some(&(s, v)) = open.last() {
        if s.hi >= lo {
            break;
        }
        open.pop();
        if let Some(c) = *cursor {
            if c <= s.hi {
                emit(out, Span { lo: c, hi: s.hi }, v);
            }
        }
        *cursor = s.hi.checked_add(1);
    }
}

/// Appends a piece, joining it to the previous one when they touch and carry the same value.
fn emit<T: Copy + Eq>(out: &mut Vec<(Span, T)>, span: Span, value: T) {
    if let Some((last, v)) = out.last_mut() {
        if *v == value && last.hi.checked_add(1) == Some(span.lo) {
            last.hi = span.hi;
            return;
        }
    }
    out.push((span, value));
}

/// The value of the longest prefix holding `addr`, by a scan of all of them: the
/// specification [`flatten`] is tested against.
pub fn longest_match<T: Copy>(prefixes: &[(Span, T)], addr: u128) -> Option<T> {
    let mut best: Option<(u128, T)> = None;
    for &(s, v) in prefixes {
        let size = s.hi - s.lo;
        if s.lo <= addr && addr <= s.hi && best.is_none_or(|(b, _)| size < b) {
            best = Some((size, v));
        }
    }
    best.map(|(_, v)| v)
}

/// The value a flattened list gives `addr` (binary search).
pub fn lookup<T: Copy>(flat: &[(Span, T)], addr: u128) -> Option<T> {
    let i = flat.partition_point(|(s, _)| s.hi < addr);
    flat.get(i).filter(|(s, _)| s.lo <= addr).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;
    use proptest::prelude::*;

    fn p(s: &str, v: u32) -> (Span, u32) {
        (Span::of(&s.parse::<IpNet>().unwrap()), v)
    }

    fn show(flat: &[(Span, u32)]) -> Vec<(String, u32)> {
        flat.iter()
            .map(|(s, v)| {
                let a = |x: u128| std::net::Ipv4Addr::from(x as u32).to_string();
                (format!("{}-{}", a(s.lo), a(s.hi)), *v)
            })
            .collect()
    }

    #[test]
    fn a_nested_prefix_cuts_its_container_in_three() {
        let flat = flatten(&[p("10.0.0.0/16", 1), p("10.0.5.0/24", 2)]);
        assert_eq!(
            show(&flat),
            [
                ("10.0.0.0-10.0.4.255".to_string(), 1),
                ("10.0.5.0-10.0.5.255".to_string(), 2),
                ("10.0.6.0-10.0.255.255".to_string(), 1),
            ]
        );
    }

    #[test]
    fn inner_prefixes_at_either_edge_and_equal_values_join() {
        let flat = flatten(&[
            p("10.0.0.0/16", 1),
            p("10.0.0.0/24", 2),
            p("10.0.255.0/24", 2),
            p("10.0.7.0/24", 1), // same value as its container: no cut
            p("10.1.0.0/16", 3),
        ]);
        assert_eq!(
            show(&flat),
            [
                ("10.0.0.0-10.0.0.255".to_string(), 2),
                ("10.0.1.0-10.0.254.255".to_string(), 1),
                ("10.0.255.0-10.0.255.255".to_string(), 2),
                ("10.1.0.0-10.1.255.255".to_string(), 3),
            ]
        );
    }

    #[test]
    fn the_first_of_two_equal_prefixes_wins_and_the_top_of_the_space_is_reached() {
        let all = (
            Span {
                lo: 0,
                hi: u128::MAX,
            },
            7,
        );
        let top = (
            Span {
                lo: u128::MAX,
                hi: u128::MAX,
            },
            8,
        );
        assert_eq!(flatten(&[all, (all.0, 9)]), [all]);
        assert_eq!(
            flatten(&[all, top]),
            [
                (
                    Span {
                        lo: 0,
                        hi: u128::MAX - 1
                    },
                    7
                ),
                top
            ]
        );
        assert!(flatten::<u32>(&[]).is_empty());
    }

    /// Prefixes of a small key space (8 bits), so that nesting is frequent.
    fn prefixes() -> impl Strategy<Value = Vec<(Span, u8)>> {
        prop::collection::vec((0u128..256, 0u32..=8, 0u8..4), 0..12).prop_map(|v| {
            v.into_iter()
                .map(|(addr, len, value)| {
                    let size = 1u128 << (8 - len);
                    let lo = addr & !(size - 1);
                    (
                        Span {
                            lo,
                            hi: lo + size - 1,
                        },
                        value,
                    )
                })
                .collect()
        })
    }

    proptest! {
        /// Every address gets the value of its longest containing prefix (the first of
        /// equal ones), and the pieces are sorted, disjoint, and joined where equal.
        #[test]
        fn every_address_maps_to_its_longest_prefix(list in prefixes()) {
            let flat = flatten(&list);
            for w in flat.windows(2) {
                prop_assert!(w[0].0.hi < w[1].0.lo);
                prop_assert!(!(w[0].0.hi + 1 == w[1].0.lo && w[0].1 == w[1].1));
            }
            // First of equal prefixes: dedupe before the reference scan.
            let mut firsts: Vec<(Span, u8)> = Vec::new();
            for (s, v) in &list {
                if !firsts.iter().any(|(f, _)| f == s) {
                    firsts.push((*s, *v));
                }
            }
            for addr in 0u128..256 {
                prop_assert_eq!(lookup(&flat, addr), longest_match(&firsts, addr), "{}", addr);
            }
        }
    }
}
