//! `snatRules` in the desired table: one interval map per family, the longest prefix
//! flattened, the map's rules after the exemptions and before the fallback.

use std::path::Path;

use super::*;
use crate::config::{self, Config, PolicyFlags};

fn v6() -> PolicyFlags {
    PolicyFlags {
        enable_ipv6: true,
        ..PolicyFlags::default()
    }
}

fn config(text: &str, flags: &PolicyFlags) -> Config {
    config::parse_str(text, Path::new("/test"), flags)
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

const RULES: &str = "snatTo: [198.51.100.10]\n\
    snatRules:\n\
    - sourceCIDRs: [10.244.0.0/16]\n  snatTo: [192.0.2.20]\n\
    - sourceCIDRs: [10.244.5.0/24, 'fd00:5::/64']\n  snatTo: [192.0.2.21, '2001:db8::21']\n";

#[test]
fn one_map_per_family_with_nested_prefixes_flattened() {
    let t = desired(&config(RULES, &v6()), &v6(), TableFlags::default());
    let maps: Vec<(&str, Vec<String>)> = t
        .maps
        .iter()
        .map(|m| {
            let els = m
                .entries
                .iter()
                .map(|e| format!("{:x}-{:x} {}", e.span.lo, e.span.hi, e.to))
                .collect();
            (m.name.as_str(), els)
        })
        .collect();
    assert_eq!(
        maps,
        [
            (
                MAP_SNAT_V4,
                vec![
                    "af40000-af404ff 192.0.2.20".to_string(),
                    "af40500-af405ff 192.0.2.21".into(),
                    "af40600-af4ffff 192.0.2.20".into(),
                ]
            ),
            (
                MAP_SNAT_V6,
                vec![
                    "fd000005000000000000000000000000-fd00000500000000ffffffffffffffff \
                     2001:db8::21"
                        .to_string()
                ]
            ),
        ]
    );
}

#[test]
fn the_map_rule_comes_after_the_exemptions_and_before_the_fallback() {
    let t = desired(&config(RULES, &v6()), &v6(), TableFlags::default());
    let rules: Vec<String> = t.chains[0].rules.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        rules,
        [
            "fib daddr type local return",
            "ip daddr @nonmasq-v4 return",
            "ip6 daddr @nonmasq-v6 return",
            "meta nfproto ipv4 counter packets 0 bytes 0 snat ip to ip saddr map @snat-v4 \
             fully-random",
            "meta nfproto ipv4 counter packets 0 bytes 0 snat ip to 198.51.100.10 fully-random",
            "meta nfproto ipv6 counter packets 0 bytes 0 snat ip6 to ip6 saddr map @snat-v6 \
             fully-random",
            "meta nfproto ipv6 counter packets 0 bytes 0 masquerade fully-random",
        ]
    );
    // Without snatRules the table is exactly today's.
    let plain = desired(
        &config("snatTo: [198.51.100.10]\n", &v6()),
        &v6(),
        TableFlags::default(),
    );
    assert!(plain.maps.is_empty());
    assert!(!plain.to_string().contains("map"));
}

#[test]
fn to_ports_gives_the_map_its_port_rules_and_the_rendering_is_kept() {
    let f = PolicyFlags {
        to_ports: Some("1024-65535".parse().unwrap()),
        ..v6()
    };
    let t = desired(&config(RULES, &f), &f, TableFlags::default());
    let text = t.render(Some(&annotate(&t, &config(RULES, &f))));
    assert!(
        text.contains(
            "meta nfproto ipv4 meta l4proto udp counter packets 0 bytes 0 snat ip to ip saddr \
             map @snat-v4:1024-65535 fully-random"
        ),
        "{text}"
    );
    assert!(
        text.contains("10.244.0.0-10.244.4.255 : 192.0.2.20,\t# snatRules[0] 10.244.0.0/16"),
        "{text}"
    );
    assert!(
        text.contains("10.244.5.0/24 : 192.0.2.21,\t# snatRules[1] 10.244.5.0/24"),
        "{text}"
    );
    // The snapshot (without comments) is also fed to `nft -c -f` by the root tests.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/snat-rules.nft");
    let got = t.to_string();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got, want,
        "rendering changed (UPDATE_SNAPSHOTS=1 rewrites it)"
    );
}

#[test]
fn same_policy_ignores_the_map_rules_counters_but_not_an_address() {
    let c = config(RULES, &v6());
    let a = desired(&c, &v6(), TableFlags::default());
    let mut b = a.clone();
    for s in b.chains[0].rules.iter_mut().flat_map(|r| &mut r.stmts) {
        if let Stmt::SnatMap { packets, bytes, .. } = s {
            (*packets, *bytes) = (7, 700);
        }
    }
    assert!(a.same_policy(&b));
    assert_eq!(
        b.masquerade_counters(),
        (14, 1400),
        "both families' map rules count"
    );
    b.maps[0].entries[1].to = "192.0.2.99".parse().unwrap();
    assert!(!a.same_policy(&b));
}

#[test]
fn the_commit_line_names_the_map_intervals_that_changed() {
    let a = desired(&config(RULES, &v6()), &v6(), TableFlags::default());
    let b = desired(
        &config(&RULES.replace("192.0.2.21,", "192.0.2.23,"), &v6()),
        &v6(),
        TableFlags::default(),
    );
    let d = SetDiff::between(Some(&a), &b);
    assert_eq!(
        d.to_string(),
        "-snat-v4 10.244.5.0/24 : 192.0.2.21 +snat-v4 10.244.5.0/24 : 192.0.2.23"
    );
    assert_eq!(
        SetDiff::between(Some(&a), &a).to_string(),
        "no prefix changes"
    );
}
