//! `snatRules` in `--explain`: whether the entry of the longest prefix holding `--source`
//! chooses the address, and which (named by file and index, with its prefix and address);
//! without `--source`, a note that the answer depends on it; and the address a SNAT decision
//! leaves with, the entry's else `snatTo`'s. Pure, like the rest of the decision.

use std::net::IpAddr;

use super::{Because, Reasons};
use crate::addr::prefix::Family;
use crate::analysis::Packet;
use crate::config::{Config, Origin};

/// `snatRules`: whether the entry of the longest prefix holding the source chooses the
/// address (and which, as a reason); without `--source`, a note that it depends on it.
pub(super) fn snat_rule(config: &Config, family: Family, q: &Packet, r: &mut Reasons<'_>) -> bool {
    if config.snat_rule_prefixes(family).is_empty() {
        return false;
    }
    let Some(src) = q.src else {
        r.notes.push(
            "snatRules choose the address by source: give --source to know which entry, if \
             any, applies (this answer is for a source no entry holds)"
                .into(),
        );
        return false;
    };
    let Some((net, to, origin)) = config.snat_rule_for(src) else {
        r.no_entry(
            "snatRules",
            &config.snat_rules,
            src.to_string(),
            "the source leaves with the fallback (snatTo, else masquerade)",
        );
        return false;
    };
    let (file, index) = match origin {
        Origin::File { index, .. } => (
            config.file_of(origin).map(|p| p.display().to_string()),
            Some(index),
        ),
        _ => (None, None),
    };
    r.because.push(Because {
        file,
        key: "snatRules".into(),
        index,
        value: format!("{net} -> {to}"),
        no_entry: false,
        why: format!(
            "the longest prefix of snatRules holding {src}: translated to {to} instead of the \
             fallback"
        ),
    });
    true
}

/// The address a packet the config SNATs leaves with, as text: that of the `snatRules` entry
/// holding `src` when it is of the destination's `family`, else `snatTo`'s.
pub(super) fn snat_address(config: &Config, family: Family, src: Option<IpAddr>) -> Option<String> {
    match src.and_then(|src| config.snat_rule_for(src)) {
        Some((_, to, _)) if Family::of_addr(&to) == family => Some(to.to_string()),
        _ => config.snat_for(family).map(|t| t.to_string()),
    }
}

/// `--explain DEST --source S` with `snatRules`: the entry of the longest prefix holding the
/// source is named (file, index, prefix) with its address.
#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::analysis::Packet;
    use crate::analysis::explain::{Decision, Explanation, TableState, explain};
    use crate::config::{Config, PolicyFlags};

    fn v6() -> PolicyFlags {
        PolicyFlags {
            enable_ipv6: true,
            ..PolicyFlags::default()
        }
    }

    fn config(text: &str) -> Config {
        crate::config::parse_str(text, Path::new("/etc/config/ip-masq-agent"), &v6())
            .unwrap()
            .config
    }

    const RULES: &str = "snatTo: [198.51.100.10]\nsnatRules:\n\
        - sourceCIDRs: [10.244.0.0/16]\n  snatTo: [192.0.2.20]\n\
        - sourceCIDRs: [10.244.5.0/24]\n  snatTo: [192.0.2.21]\n";

    fn ask(src: Option<&str>, dst: &str) -> Explanation {
        let q = Packet {
            dst_local: Some(false),
            src: src.map(|s| s.parse().unwrap()),
            ..Packet::to(dst.parse().unwrap())
        };
        explain(
            &config(RULES),
            &v6(),
            &q,
            (TableState::InForce, None),
            Vec::new(),
            Vec::new(),
        )
    }

    #[test]
    fn the_entry_of_the_longest_prefix_is_named_with_its_address() {
        let e = ask(Some("10.244.5.7"), "203.0.113.9");
        assert_eq!(e.decision, Decision::Snat);
        assert_eq!(e.snat_to.as_deref(), Some("192.0.2.21"));
        let b = e.because.last().unwrap();
        assert_eq!(
            (b.key.as_str(), b.index, b.value.as_str()),
            ("snatRules", Some(1), "10.244.5.0/24 -> 192.0.2.21")
        );
        assert_eq!(
            ask(Some("10.244.6.7"), "203.0.113.9").snat_to.as_deref(),
            Some("192.0.2.20")
        );
    }

    #[test]
    fn a_source_in_no_entry_gets_the_fallback_and_an_exempt_destination_nothing() {
        let e = ask(Some("10.99.0.1"), "203.0.113.9");
        assert_eq!(e.snat_to.as_deref(), Some("198.51.100.10"));
        assert!(e.because.iter().any(|b| b.key == "snatRules" && b.no_entry));
        assert_eq!(ask(Some("10.244.5.7"), "10.1.2.3").decision, Decision::None);
        let e = ask(None, "203.0.113.9");
        assert_eq!(e.snat_to.as_deref(), Some("198.51.100.10"));
        assert!(
            e.notes.iter().any(|n| n.contains("give --source")),
            "{:?}",
            e.notes
        );
    }
}
