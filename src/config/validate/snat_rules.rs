//! `snatRules` in one file: each entry a mapping of `sourceCIDRs` and `snatTo`, every source
//! prefix's family with an address, no prefix in two entries, no address range; every
//! refusal names the key, entry index and value. Pure.
//!
//! The lists inside an entry are read by the validator's own `cidr_list` and `snat_targets`,
//! as the top-level keys are, so they refuse the same values. The merge across files and the
//! longest-prefix answers are the config's ([`crate::config::merge`],
//! [`crate::config::Config`]).

use ipnet::IpNet;

use super::{Validator, family_name, kind, untag};
use crate::addr::prefix::Family;
use crate::config::SnatRule;
use crate::config::yaml::Node as Value;

impl Validator<'_> {
    /// `snatRules`: a list of mappings with `sourceCIDRs` and `snatTo`, every prefix's family
    /// with an address, no prefix in two entries, no range (see docs/design.md).
    pub(super) fn snat_rules(&mut self, value: &Value) -> Option<Vec<SnatRule>> {
        let Value::Seq(items) = value else {
            self.problem(
                "snatRules",
                Some(value),
                format!(
                    "expected a list of entries (each with sourceCIDRs and snatTo), got {}",
                    kind(value)
                ),
            );
            return None;
        };
        let before = self.problems.len() + self.more_problems;
        let mut out = Vec::with_capacity(items.len());
        // Every prefix seen so far: (prefix, entry, index in its sourceCIDRs).
        let mut seen: std::collections::HashMap<IpNet, (usize, usize)> = Default::default();
        for (i, item) in items.iter().enumerate() {
            let at = format!("snatRules[{i}]");
            let Some(rule) = self.snat_rule(&at, untag(item)) else {
                continue;
            };
            for (j, net) in rule.source_cidrs.iter().enumerate() {
                if let Some((e, k)) = seen.get(net) {
                    self.problem(
                        format!("{at}.sourceCIDRs[{j}]"),
                        Some(&Value::Str(net.to_string())),
                        format!(
                            "also in snatRules[{e}].sourceCIDRs[{k}]: a source prefix may be in \
                             one entry only (a prefix inside another is fine: the longest wins)"
                        ),
                    );
                } else {
                    seen.insert(*net, (i, j));
                }
            }
            out.push(rule);
        }
        (self.problems.len() + self.more_problems == before).then_some(out)
    }

    /// One `snatRules` entry, named `at` in messages.
    fn snat_rule(&mut self, at: &str, item: &Value) -> Option<SnatRule> {
        let Value::Map(map) = item else {
            self.problem(
                at,
                Some(item),
                format!(
                    "expected a mapping with sourceCIDRs and snatTo, got {}",
                    kind(item)
                ),
            );
            return None;
        };
        let before = self.problems.len() + self.more_problems;
        let (mut sources, mut targets) = (None, None);
        for (k, v) in map {
            let (key, v) = match untag(k) {
                Value::Str(s) => (s.as_str(), untag(v)),
                other => {
                    self.problem(at, Some(other), "keys must be strings");
                    continue;
                }
            };
            let field = format!("{at}.{key}");
            match key {
                "sourceCIDRs" => sources = self.cidr_list(&field, v),
                "snatTo" => {
                    targets = self.snat_targets(&field, v);
                    for (n, t) in targets.iter().flatten().enumerate() {
                        if t.first != t.last {
                            self.problem(
                                format!("{field}[{n}]"),
                                Some(&Value::Str(t.to_string())),
                                "an address range is not supported in snatRules (each entry \
                                 leaves with one address per family; see docs/design.md): \
                                 write one address, or use the top-level snatTo for a range",
                            );
                        }
                    }
                }
                other => self.problem(
                    field.clone(),
                    Some(v),
                    format!(
                        "unknown key {other:?} in a snatRules entry; its keys: sourceCIDRs, snatTo"
                    ),
                ),
            }
        }
        let problems_now = self.problems.len() + self.more_problems;
        let (Some(sources), Some(targets)) = (sources, targets) else {
            if problems_now == before {
                self.problem(at, Some(item), "an entry needs both sourceCIDRs and snatTo");
            }
            return None;
        };
        if sources.is_empty() || targets.is_empty() {
            self.problem(
                at,
                Some(item),
                "an entry needs at least one prefix in sourceCIDRs and one address in snatTo",
            );
            return None;
        }
        let rule = SnatRule {
            source_cidrs: sources,
            snat_to: targets,
        };
        for (j, net) in rule.source_cidrs.iter().enumerate() {
            let family = Family::of(net);
            if rule.target(family).is_none() {
                self.problem(
                    format!("{at}.sourceCIDRs[{j}]"),
                    Some(&Value::Str(net.to_string())),
                    format!(
                        "an {} prefix, but {at}.snatTo has no {} address for it",
                        family_name(family),
                        family_name(family)
                    ),
                );
            }
        }
        (self.problems.len() + self.more_problems == problems_now).then_some(rule)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::PolicyFlags;
    use crate::config::validate::parse_file_str;

    fn v6() -> PolicyFlags {
        PolicyFlags {
            enable_ipv6: true,
            ..PolicyFlags::default()
        }
    }

    /// The whole error text: the file and every problem.
    fn error(text: &str, flags: &PolicyFlags) -> String {
        match parse_file_str(text, Path::new("/cfg"), flags) {
            Ok(p) => panic!("expected errors, got {:?}", p.config.snat_rules),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn each_refusal_names_file_key_index_and_value() {
        let e = error(
            "snatRules:\n\
             - sourceCIDRs: [10.244.5.0/24]\n  snatTo: [192.0.2.20]\n\
             - sourceCIDRs: [10.244.5.0/24]\n  snatTo: [192.0.2.21]\n\
             - sourceCIDRs: [10.244.7.0/24, 'fd00:7::/64']\n  snatTo: ['192.0.2.30-192.0.2.31']\n\
             - sourceCIDRs: [10.244.8.1/24]\n  snatTo: [192.0.2.8, 192.0.2.9, 127.0.0.1]\n\
             - sourceCIDRs: [10.244.9.0/24]\n  snatto: [192.0.2.40]\n\
             - sourceCIDRs: [10.244.10.0/24]\n\
             - 10.244.11.0/24\n",
            &v6(),
        );
        let want = [
            "invalid config file /cfg: 9 problems",
            "  /cfg: snatRules[1].sourceCIDRs[0] = \"10.244.5.0/24\": also in \
             snatRules[0].sourceCIDRs[0]: a source prefix may be in one entry only (a prefix \
             inside another is fine: the longest wins)",
            "  /cfg: snatRules[2].snatTo[0] = \"192.0.2.30-192.0.2.31\": an address range is not \
             supported in snatRules (each entry leaves with one address per family; see \
             docs/design.md): write one address, or use the top-level snatTo for a range",
            "  /cfg: snatRules[2].sourceCIDRs[1] = \"fd00:7::/64\": an IPv6 prefix, but \
             snatRules[2].snatTo has no IPv6 address for it",
            "  /cfg: snatRules[3].sourceCIDRs[0] = \"10.244.8.1/24\": host bits are set; the \
             network containing this address is 10.244.8.0/24",
            "  /cfg: snatRules[3].snatTo[1] = \"192.0.2.9\": a second IPv4 entry \
             (snatRules[3].snatTo[0] is one): at most one address or range per family",
            "  /cfg: snatRules[3].snatTo[2] = \"127.0.0.1\": 127.0.0.1 is a loopback address \
             (127.0.0.0/8): no packet may leave the node with it as its source",
            "  /cfg: snatRules[4].snatto = [\"192.0.2.40\"]: unknown key \"snatto\" in a snatRules \
             entry; its keys: sourceCIDRs, snatTo",
            "  /cfg: snatRules[5] = {mapping with 1 keys}: an entry needs both sourceCIDRs and \
             snatTo",
            "  /cfg: snatRules[6] = \"10.244.11.0/24\": expected a mapping with sourceCIDRs and \
             snatTo, got a string",
        ];
        assert_eq!(e.lines().collect::<Vec<_>>(), want, "{e}");
    }

    #[test]
    fn ipv6_needs_enable_ipv6_and_the_list_must_be_a_list() {
        let e = error(
            "snatRules:\n- sourceCIDRs: ['fd00:6::/64']\n  snatTo: ['2001:db8::21']\n",
            &PolicyFlags::default(),
        );
        assert!(
            e.contains(
                "snatRules[0].sourceCIDRs[0] = \"fd00:6::/64\": IPv6 CIDR, but IPv6 is not enabled"
            ),
            "{e}"
        );
        assert!(
            e.contains("snatRules[0].snatTo[0] = \"2001:db8::21\": IPv6 address"),
            "{e}"
        );
        let e = error("snatRules: {sourceCIDRs: [10.0.0.0/8]}\n", &v6());
        assert!(
            e.contains("snatRules = {mapping with 1 keys}: expected a list of entries"),
            "{e}"
        );
    }
}
