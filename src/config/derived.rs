//! What the config asks for, per family, as the model and the analyses need it: the exempt
//! and carved ranges, the sources considered, the SNAT targets and the `snatRules` map. Pure.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Config, Origin, SnatTarget, values};
use crate::addr::prefix::{Family, RangeSet, Span};

impl Config {
    /// The destinations of `family` exempt from masquerading before the `masqueradeCIDRs`
    /// carve-outs: `nonMasqueradeCIDRs` plus link-local, merged.
    pub fn exempt_ranges(&self, family: Family) -> RangeSet {
        let link_local = self.link_local_exempt(family);
        RangeSet::from_nets(
            values(&self.non_masquerade_cidrs)
                .filter(|n| Family::of(n) == family)
                .chain(link_local.as_ref()),
        )
    }

    /// The `masqueradeCIDRs` of `family`, merged: carved out of the exempt ranges.
    pub fn carved_ranges(&self, family: Family) -> RangeSet {
        RangeSet::from_nets(values(&self.masquerade_cidrs).filter(|n| Family::of(n) == family))
    }

    /// The destinations of `family` not to masquerade: exempt minus carved.
    pub fn non_masquerade_ranges(&self, family: Family) -> RangeSet {
        self.exempt_ranges(family)
            .difference(&self.carved_ranges(family))
    }

    /// The sources of `family` considered for translation, merged; `None` when every source
    /// is (no `sourceCIDRs`).
    pub fn source_ranges(&self, family: Family) -> Option<RangeSet> {
        (!self.source_cidrs.is_empty()).then(|| {
            RangeSet::from_nets(values(&self.source_cidrs).filter(|n| Family::of(n) == family))
        })
    }

    /// The SNAT target of `family`, if one is configured.
    pub fn snat_for(&self, family: Family) -> Option<SnatTarget> {
        values(&self.snat_to)
            .find(|t| t.family() == family)
            .copied()
    }

    /// The `snatRules` source prefixes of `family`, each with its address and the entry
    /// it comes from, in config order (nested prefixes included: see
    /// [`Config::snat_map`]).
    pub fn snat_rule_prefixes(&self, family: Family) -> Vec<(IpNet, IpAddr, Origin)> {
        let mut out = Vec::new();
        for e in &self.snat_rules {
            let Some(t) = e.value.target(family) else {
                continue;
            };
            for net in e
                .value
                .source_cidrs
                .iter()
                .filter(|n| Family::of(n) == family)
            {
                out.push((*net, t.first, e.origin));
            }
        }
        out
    }

    /// The `snatRules` of `family` flattened for an interval map: sorted, disjoint spans
    /// of sources, each with the address of the longest prefix holding it
    /// ([`crate::addr::lpm::flatten`]).
    pub fn snat_map(&self, family: Family) -> Vec<(Span, IpAddr)> {
        let list: Vec<(Span, IpAddr)> = self
            .snat_rule_prefixes(family)
            .iter()
            .map(|(net, to, _)| (Span::of(net), *to))
            .collect();
        crate::addr::lpm::flatten(&list)
    }

    /// The `snatRules` entry whose prefix holds `source` most specifically: the prefix and
    /// where it comes from, for `--explain`.
    pub fn snat_rule_for(&self, source: IpAddr) -> Option<(IpNet, IpAddr, Origin)> {
        let family = Family::of_addr(&source);
        self.snat_rule_prefixes(family)
            .into_iter()
            .filter(|(net, _, _)| net.contains(&source))
            // The first of equal prefixes, as the map has it.
            .min_by_key(|(net, _, _)| std::cmp::Reverse(net.prefix_len()))
    }
}
