//! Where each set element of a table comes from, as `#` comments for `--dry-run` and
//! `--dump`. Pure.
//!
//! The set difference that keeps the data path one lookup also hides the operator's own
//! entries: `nonMasqueradeCIDRs: [10.40.0.0/14]` with `masqueradeCIDRs: [10.41.0.0/24]`
//! becomes nine prefixes and neither configured one. Each element is tied back to the
//! entries that cover it, and to the carve-out next to it when one split it there, so the
//! table can be checked against the config by eye. The elements come from the table given,
//! so `--dump` annotates what the kernel holds (an element no entry covers says so).

use std::collections::{BTreeSet, HashMap};

use ipnet::IpNet;

use super::{
    Family, MAP_SNAT_V4, MAP_SNAT_V6, Map, NameSet, SET_EGRESS, SET_SRC_V4, SET_SRC_V6, Table,
};
use crate::addr::prefix::Span;
use crate::config::{Config, Entry, Interface, Origin};

/// Labels shown per element (the rest are counted).
const MAX_LABELS: usize = 3;

/// A comment for each element of each set, by set name, in element order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// Set name -> one comment per element (empty: no comment).
    pub elements: HashMap<String, Vec<String>>,
}

impl Annotations {
    /// The comment for element `i` of set `set`, if any.
    pub fn of(&self, set: &str, i: usize) -> Option<&str> {
        self.elements
            .get(set)
            .and_then(|v| v.get(i))
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// A configured range and how to name it.
struct Source {
    span: Span,
    label: String,
}

fn sources(config: &Config, key: &str, list: &[Entry<IpNet>], family: Family) -> Vec<Source> {
    list.iter()
        .filter(|e| Family::of(&e.value) == family)
        .map(|e| Source {
            span: Span::of(&e.value),
            label: format!("{} {}", config.label(key, e.origin), e.value),
        })
        .collect()
}

/// Annotations for every set of `table` that the agent writes.
pub fn annotate(table: &Table, config: &Config) -> Annotations {
    let mut out = Annotations::default();
    // The config's covers and cuts per family, built once, and swept once across the
    // family's sets: a family cut into block sets would otherwise label and sort every
    // config entry once per block.
    let exemptions = [Family::V4, Family::V6].map(|f| {
        table
            .sets
            .iter()
            .any(|s| s.family == f && super::is_exemption_set(&s.name))
            .then(|| exempt_sources(f, config))
    });
    let mut sweeps = exemptions
        .each_ref()
        .map(|e| e.as_ref().map(|(cover, cuts)| Sweep::new(cover, cuts)));
    for set in &table.sets {
        let notes = match set.name.as_str() {
            name if super::is_exemption_set(name) => {
                match sweeps[usize::from(set.family == Family::V6)].as_mut() {
                    Some(sweep) => sweep.notes(&set.prefixes),
                    None => continue,
                }
            }
            SET_SRC_V4 | SET_SRC_V6 => covered(
                &set.prefixes,
                &sources(config, "sourceCIDRs", &config.source_cidrs, set.family),
                &[],
            ),
            _ => continue,
        };
        out.elements.insert(set.name.clone(), notes);
    }
    for set in &table.name_sets {
        if set.name == SET_EGRESS {
            out.elements.insert(set.name.clone(), names(set, config));
        }
    }
    for map in &table.maps {
        if map.name == MAP_SNAT_V4 || map.name == MAP_SNAT_V6 {
            out.elements
                .insert(map.name.clone(), snat_rules(map, config));
        }
    }
    out
}

/// A `snatRules` map: the entry whose prefix gives each interval its address (the one of
/// its first address, and of its last when another entry's prefix holds it), and whether
/// the config still gives that address.
fn snat_rules(map: &Map, config: &Config) -> Vec<String> {
    let addr = |v: u128| match map.family {
        Family::V4 => std::net::IpAddr::from(std::net::Ipv4Addr::from(v as u32)),
        Family::V6 => std::net::IpAddr::from(std::net::Ipv6Addr::from(v)),
    };
    map.entries
        .iter()
        .map(|e| {
            let mut labels: Vec<String> = Vec::new();
            for a in [e.span.lo, e.span.hi] {
                if let Some((net, to, origin)) = config.snat_rule_for(addr(a)) {
                    let mut l = format!("{} {net}", config.label("snatRules", origin));
                    if to != e.to {
                        l.push_str(&format!(" (the config says {to})"));
                    }
                    if !labels.contains(&l) {
                        labels.push(l);
                    }
                }
            }
            if labels.is_empty() {
                "not from the config".into()
            } else {
                labels.join("; ")
            }
        })
        .collect()
}

/// What annotates a non-masquerade set of `family`: `nonMasqueradeCIDRs` and link-local
/// cover, `masqueradeCIDRs` cut.
fn exempt_sources(family: Family, config: &Config) -> (Vec<Source>, Vec<Source>) {
    let mut cover = sources(
        config,
        "nonMasqueradeCIDRs",
        &config.non_masquerade_cidrs,
        family,
    );
    if let Some(ll) = config.link_local_exempt(family) {
        let key = match family {
            Family::V4 => "masqLinkLocal",
            Family::V6 => "masqLinkLocalIPv6",
        };
        cover.push(Source {
            span: Span::of(&ll),
            label: format!("link-local {ll} ({key}: false)"),
        });
    }
    let cuts = sources(config, "masqueradeCIDRs", &config.masquerade_cidrs, family);
    (cover, cuts)
}

/// For each element (sorted, disjoint), the covering sources, and the cuts right next to
/// it. A sweep over both lists, sorted: O((elements + sources) log sources).
fn covered(elements: &[IpNet], cover: &[Source], cuts: &[Source]) -> Vec<String> {
    Sweep::new(cover, cuts).notes(elements)
}

/// The sweep of [`covered`], kept between the block sets of a family: they come in address
/// order, so one sweep labels them all, as it would one set (sorting the sources again for
/// each block made annotating 50 blocks cost 50 sorts of the whole config).
struct Sweep<'s> {
    cover: &'s [Source],
    cuts: &'s [Source],
    by_lo: Vec<usize>,
    cut_spans: Vec<(Span, usize)>,
    /// Active sources: lo at or below the element's end, keyed by (hi, index) to evict
    /// those that end before the element starts.
    active: BTreeSet<(u128, usize)>,
    next: usize,
    /// Where the last element ended: an element before it starts the sweep over.
    last: Option<u128>,
}

impl<'s> Sweep<'s> {
    fn new(cover: &'s [Source], cuts: &'s [Source]) -> Sweep<'s> {
        let mut by_lo: Vec<usize> = (0..cover.len()).collect();
        by_lo.sort_by_key(|&i| cover[i].span.lo);
        let mut cut_spans: Vec<(Span, usize)> =
            cuts.iter().enumerate().map(|(i, c)| (c.span, i)).collect();
        cut_spans.sort();
        Sweep {
            cover,
            cuts,
            by_lo,
            cut_spans,
            active: BTreeSet::new(),
            next: 0,
            last: None,
        }
    }

    fn notes(&mut self, elements: &[IpNet]) -> Vec<String> {
        let (cover, cuts) = (self.cover, self.cuts);
        let mut out = Vec::with_capacity(elements.len());
        for el in elements {
            let span = Span::of(el);
            if self.last.is_some_and(|hi| span.lo <= hi) {
                // Out of order (a table read back that someone reordered): start over.
                self.active.clear();
                self.next = 0;
            }
            self.last = Some(span.hi);
            while self.next < self.by_lo.len() && cover[self.by_lo[self.next]].span.lo <= span.hi {
                let i = self.by_lo[self.next];
                self.active.insert((cover[i].span.hi, i));
                self.next += 1;
            }
            while self.active.first().is_some_and(|(hi, _)| *hi < span.lo) {
                self.active.pop_first();
            }
            let mut labels: Vec<&str> = self
                .active
                .iter()
                .take(MAX_LABELS)
                .map(|(_, i)| cover[*i].label.as_str())
                .collect();
            let more = self.active.len().saturating_sub(MAX_LABELS);
            let mut note = if labels.is_empty() {
                "not from the config".to_string()
            } else {
                labels.sort_unstable();
                let mut s = labels.join("; ");
                if more > 0 {
                    s.push_str(&format!("; and {more} more"));
                }
                s
            };
            for (_, i) in adjacent_cuts(&self.cut_spans, span) {
                note.push_str(&format!("; cut by {}", cuts[i].label));
            }
            out.push(note);
        }
        out
    }
}

/// The cuts that end right before or start right after `span`: the holes that split it
/// from its neighbours.
fn adjacent_cuts(cuts: &[(Span, usize)], span: Span) -> Vec<(Span, usize)> {
    let mut out = Vec::new();
    if span.lo > 0 {
        let before = span.lo - 1;
        let i = cuts.partition_point(|(c, _)| c.lo <= before);
        if let Some((c, idx)) = i.checked_sub(1).map(|j| cuts[j]) {
            if c.hi == before {
                out.push((c, idx));
            }
        }
    }
    if let Some(after) = span.hi.checked_add(1) {
        let i = cuts.partition_point(|(c, _)| c.lo < after);
        if let Some(&(c, idx)) = cuts.get(i) {
            if c.lo == after {
                out.push((c, idx));
            }
        }
    }
    out.truncate(MAX_LABELS);
    out
}

/// An interface set: the `egressInterfaces` entries each name matches or comes from.
fn names(set: &NameSet, config: &Config) -> Vec<String> {
    set.names
        .iter()
        .map(|n| {
            let span = n.span();
            let from: Vec<String> = config
                .egress_interfaces
                .iter()
                .filter(|e| {
                    let s = e.value.span();
                    s.lo <= span.hi && span.lo <= s.hi
                })
                .take(MAX_LABELS)
                .map(|e| entry_label(config, "egressInterfaces", e.origin, &e.value))
                .collect();
            if from.is_empty() {
                "not from the config".into()
            } else {
                from.join("; ")
            }
        })
        .collect()
}

fn entry_label(config: &Config, key: &str, origin: Origin, value: &Interface) -> String {
    format!("{} {value}", config.label(key, origin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicyFlags;
    use crate::model::{SET_V4, TableFlags, desired};

    fn config(text: &str) -> Config {
        crate::config::parse_str(
            text,
            "/etc/config/ip-masq-agent".as_ref(),
            &PolicyFlags::default(),
        )
        .unwrap()
        .config
    }

    #[test]
    fn carved_pieces_name_their_entry_and_the_hole() {
        let c = config("nonMasqueradeCIDRs: [10.40.0.0/14]\nmasqueradeCIDRs: [10.41.0.0/24]\n");
        let t = desired(&c, &PolicyFlags::default(), TableFlags::default());
        let a = annotate(&t, &c);
        let set = &t.sets[0];
        let notes: Vec<(String, &str)> = set
            .prefixes
            .iter()
            .enumerate()
            .map(|(i, p)| (p.to_string(), a.of(SET_V4, i).unwrap()))
            .collect();
        assert_eq!(
            notes[0],
            (
                "10.40.0.0/16".into(),
                "nonMasqueradeCIDRs[0] 10.40.0.0/14; cut by masqueradeCIDRs[0] 10.41.0.0/24"
            )
        );
        assert_eq!(
            notes[1],
            (
                "10.41.1.0/24".into(),
                "nonMasqueradeCIDRs[0] 10.40.0.0/14; cut by masqueradeCIDRs[0] 10.41.0.0/24"
            )
        );
        assert_eq!(notes[2].1, "nonMasqueradeCIDRs[0] 10.40.0.0/14");
        let ll = set
            .prefixes
            .iter()
            .position(|p| p.to_string() == "169.254.0.0/16")
            .unwrap();
        assert_eq!(
            a.of(SET_V4, ll),
            Some("link-local 169.254.0.0/16 (masqLinkLocal: false)")
        );
        // The rendering carries them as comments nft ignores.
        let text = t.render(Some(&a));
        assert!(
            text.contains("\t\t\t10.41.1.0/24,\t# nonMasqueradeCIDRs[0] 10.40.0.0/14; cut by"),
            "{text}"
        );
    }

    #[test]
    fn defaults_and_foreign_elements_say_where_they_come_from() {
        let c = Config::defaults(&PolicyFlags::default());
        let mut t = desired(&c, &PolicyFlags::default(), TableFlags::default());
        // An element someone added (as --dump would read it: sets come back sorted).
        t.sets[0].prefixes.insert(0, "8.8.8.0/24".parse().unwrap());
        let a = annotate(&t, &c);
        assert_eq!(a.of(SET_V4, 0), Some("not from the config"));
        assert!(
            a.of(SET_V4, 1)
                .unwrap()
                .contains("(ip-masq-agent's default)")
        );
    }

    #[test]
    fn a_large_table_is_annotated_in_linear_time() {
        let mut text = String::from("cidrLimit: 100000\nnonMasqueradeCIDRs:\n");
        for i in 0..50_000u32 {
            let a = 0x0b00_0000 + i * 512;
            text.push_str(&format!(
                "  - {}.{}.{}.0/24\n",
                a >> 24,
                (a >> 16) & 255,
                (a >> 8) & 255
            ));
        }
        let c = config(&text);
        let t = desired(&c, &PolicyFlags::default(), TableFlags::default());
        let start = std::time::Instant::now();
        let a = annotate(&t, &c);
        // Past --max-set-prefixes: block sets, each annotated in full.
        assert!(t.sets.len() > 1);
        for set in t
            .sets
            .iter()
            .filter(|s| super::super::is_exemption_set(&s.name))
        {
            assert_eq!(a.elements[&set.name].len(), set.prefixes.len());
            assert!(!a.of(&set.name, 0).unwrap().contains("not from the config"));
        }
        // The blocks are in address order, as the list is: the second starts where the
        // first ends.
        let second = format!(
            "nonMasqueradeCIDRs[{}] {}",
            t.sets[0].prefixes.len(),
            t.sets[1].prefixes[0]
        );
        assert_eq!(a.of(&t.sets[1].name, 0), Some(second.as_str()));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
}
