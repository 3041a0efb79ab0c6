//! `snatRules` across the config: parsing, the limits, the merge across files, and the
//! longest-prefix answers the model builds on. The refusals of one file's entries are tested
//! beside their validator, `validate/snat_rules.rs`.

use std::path::{Path, PathBuf};

use super::*;
use crate::config::{merge, validate};

fn v6() -> PolicyFlags {
    PolicyFlags {
        enable_ipv6: true,
        ..PolicyFlags::default()
    }
}

fn load(text: &str, flags: &PolicyFlags) -> Config {
    parse_str(text, Path::new("/cfg"), flags)
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

/// The whole error text: the file and every problem.
fn error(text: &str, flags: &PolicyFlags) -> String {
    match parse_str(text, Path::new("/cfg"), flags) {
        Ok(l) => panic!("expected errors, got {:?}", l.config.snat_rules),
        Err(e) => e.to_string(),
    }
}

const TWO: &str = "snatRules:\n\
    - sourceCIDRs: [10.244.5.0/24]\n  snatTo: [192.0.2.20]\n\
    - sourceCIDRs: [10.244.6.0/24, 'fd00:6::/64']\n  snatTo: [192.0.2.21, '2001:db8::21']\n";

#[test]
fn entries_parse_with_their_origins_and_absent_means_none() {
    let c = load(TWO, &v6());
    assert_eq!(c.snat_rules.len(), 2);
    assert_eq!(c.snat_rules[1].origin, Origin::File { file: 0, index: 1 });
    let r = &c.snat_rules[1].value;
    assert_eq!(r.source_cidrs.len(), 2);
    assert_eq!(r.target(Family::V6).unwrap().to_string(), "2001:db8::21");
    assert!(load("snatTo: [192.0.2.1]\n", &v6()).snat_rules.is_empty());
}

#[test]
fn the_longest_prefix_chooses_and_nested_prefixes_flatten() {
    let c = load(
        "snatRules:\n\
         - sourceCIDRs: [10.244.0.0/16]\n  snatTo: [192.0.2.20]\n\
         - sourceCIDRs: [10.244.5.0/24]\n  snatTo: [192.0.2.21]\n",
        &v6(),
    );
    let src = |s: &str| {
        c.snat_rule_for(s.parse().unwrap())
            .map(|(n, to, o)| (n.to_string(), to.to_string(), o))
    };
    assert_eq!(
        src("10.244.5.9"),
        Some((
            "10.244.5.0/24".into(),
            "192.0.2.21".into(),
            Origin::File { file: 0, index: 1 }
        ))
    );
    assert_eq!(src("10.244.6.9").unwrap().1, "192.0.2.20");
    assert_eq!(src("10.245.0.1"), None);
    assert_eq!(
        c.snat_map(Family::V4).len(),
        3,
        "the /16 cut in two around the /24"
    );
    assert!(c.snat_map(Family::V6).is_empty());
}

#[test]
fn the_source_prefixes_count_against_cidr_limit_and_max_prefixes() {
    let e = error(
        "cidrLimit: 2\nsnatRules:\n- sourceCIDRs: [10.1.0.0/16, 10.2.0.0/16]\n  \
         snatTo: [192.0.2.1]\n- sourceCIDRs: [10.3.0.0/16]\n  snatTo: [192.0.2.2]\n",
        &v6(),
    );
    assert!(
        e.contains("snatRules = (3 entries): more entries than cidrLimit (2)"),
        "{e}"
    );
    let flags = PolicyFlags {
        max_prefixes: 5, // the 3 default exempt ranges + link-local = 4
        ..v6()
    };
    let e = error(
        "nonMasqueradeCIDRs: [10.0.0.0/8]\nsnatRules:\n- sourceCIDRs: [10.1.0.0/16]\n  \
         snatTo: [192.0.2.1]\n- sourceCIDRs: [10.1.5.0/24]\n  snatTo: [192.0.2.2]\n",
        &flags,
    );
    // 10.0.0.0/8 and 169.254.0.0/16, fe80::/10, and the /16 cut in three by the /24.
    assert!(e.contains("(6 prefixes)"), "{e}");
}

fn parsed(text: &str) -> validate::Parsed {
    validate::parse_file_str(text, Path::new("/x"), &v6()).unwrap()
}

#[test]
fn files_concatenate_and_the_same_prefix_with_two_addresses_names_both_files() {
    let a = PathBuf::from("/etc/config/ip-masq-agent");
    let b = PathBuf::from("/etc/config/ip-masq-agent-tenants");
    let files = vec![
        (a.clone(), parsed(TWO)),
        (
            b.clone(),
            parsed(
                "snatRules:\n- sourceCIDRs: [10.244.7.0/24, 10.244.5.0/24]\n  \
                 snatTo: [192.0.2.20]\n",
            ),
        ),
    ];
    let c = merge::merge(files, &v6()).unwrap().config;
    assert_eq!(
        c.snat_rules.len(),
        3,
        "concatenated; the same address twice is fine"
    );
    assert_eq!(c.snat_rules[2].origin, Origin::File { file: 1, index: 0 });

    let files = vec![
        (a, parsed(TWO)),
        (
            b,
            parsed(
                "snatRules:\n- sourceCIDRs: [10.244.7.0/24, 10.244.6.0/24]\n  \
                 snatTo: [192.0.2.99, '2001:db8::21']\n",
            ),
        ),
    ];
    let e = merge::merge(files, &v6()).unwrap_err().to_string();
    assert_eq!(
        e,
        "invalid config (merged from /etc/config/ip-masq-agent, \
         /etc/config/ip-masq-agent-tenants): 1 problem\n  merged: snatRules[0].sourceCIDRs[1] \
         of /etc/config/ip-masq-agent-tenants = 10.244.6.0/24: snatTo 192.0.2.99 here, but \
         snatRules[1].sourceCIDRs[0] of /etc/config/ip-masq-agent gives the same prefix snatTo \
         192.0.2.21: a source prefix leaves with one address; set it in one file, or to the same \
         address"
    );
}

#[test]
fn an_entry_outside_source_cidrs_is_noted() {
    let l = parse_str(
        "sourceCIDRs: [10.244.0.0/16]\nsnatRules:\n- sourceCIDRs: [10.245.0.0/24, \
         10.244.5.0/24]\n  snatTo: [192.0.2.20]\n",
        Path::new("/cfg"),
        &v6(),
    )
    .unwrap();
    assert_eq!(
        l.notes,
        [
            "snatRules[0] 10.245.0.0/24 is outside every sourceCIDRs entry, so it changes nothing \
          (those sources are not translated)"
        ]
    );
}
