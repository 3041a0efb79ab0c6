//! `--explain DEST --source S` with `snatRules`: the entry of the longest prefix holding
//! the source is named (file, index, prefix) with its address.

use std::path::Path;

use super::*;

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
