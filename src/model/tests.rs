use std::path::Path;

use super::*;
use crate::config::Config;
use crate::config::{self, PolicyFlags};

fn config(text: &str, flags: &PolicyFlags) -> Config {
    config::parse_str(text, Path::new("/test"), flags)
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

fn strs(v: &[IpNet]) -> Vec<String> {
    v.iter().map(|n| n.to_string()).collect()
}

/// Compares a rendering with `tests/snapshots/<name>.nft`. The snapshot files are also fed
/// to `nft -c -f` by the root tests, so they are known to be valid nft syntax.
/// `UPDATE_SNAPSHOTS=1 cargo test` rewrites them after an intended change.
fn snapshot(name: &str, table: &Table) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/snapshots/{name}.nft"));
    let got = table.to_string();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_SNAPSHOTS=1 creates it)", path.display()));
    assert_eq!(got, want, "rendering of {name} changed");
}

#[test]
fn defaults_exempt_rfc1918_and_link_local() {
    let f = PolicyFlags::default();
    let t = desired(&Config::defaults(&f), &f, TableFlags::default());
    assert_eq!(t.name, "nft-masq-agent");
    assert_eq!(t.sets.len(), 1, "no IPv6 set without --enable-ipv6");
    assert_eq!(
        strs(&t.sets[0].prefixes),
        [
            "10.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.168.0.0/16"
        ]
    );
    snapshot("defaults", &t);
}

#[test]
fn masq_link_local_removes_it_from_the_set() {
    let f = PolicyFlags::default();
    let t = desired(
        &config("masqLinkLocal: true", &f),
        &f,
        TableFlags::default(),
    );
    assert!(!strs(&t.sets[0].prefixes).contains(&"169.254.0.0/16".to_string()));
}

#[test]
fn masquerade_cidrs_are_carved_out() {
    let f = PolicyFlags::default();
    let c = config(
        "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [10.11.0.0/24]\nmasqLinkLocal: true",
        &f,
    );
    let t = desired(&c, &f, TableFlags::default());
    let p = &t.sets[0].prefixes;
    let inside = |a: &str| {
        p.iter()
            .any(|n| n.contains(&a.parse::<std::net::IpAddr>().unwrap()))
    };
    assert!(!inside("10.11.0.5"));
    assert!(inside("10.11.1.0"));
    assert!(inside("10.10.255.255"));
    assert!(inside("10.0.0.1"));
    assert_eq!(p.len(), 16);
    snapshot("masquerade-cidrs", &t);
}

#[test]
fn reserved_ranges_include_class_e_at_the_top() {
    let f = PolicyFlags {
        nomasq_all_reserved_ranges: true,
        ..PolicyFlags::default()
    };
    let t = desired(&Config::defaults(&f), &f, TableFlags::default());
    assert_eq!(
        t.sets[0].prefixes.last().unwrap().to_string(),
        "240.0.0.0/4"
    );
    assert_eq!(t.prefix_count(), 12);
    snapshot("reserved-ranges", &t);
}

#[test]
fn ipv6_and_to_ports() {
    let f = PolicyFlags {
        enable_ipv6: true,
        to_ports: Some("1024-29999,32768-65535".parse().unwrap()),
        ..PolicyFlags::default()
    };
    let c = config("nonMasqueradeCIDRs: [10.0.0.0/8, 'fd00::/8', '::/0']", &f);
    let t = desired(&c, &f, TableFlags::default());
    assert_eq!(
        strs(&t.sets[1].prefixes),
        ["::/0"],
        "fe80::/10 merges into ::/0"
    );
    let rules = &t.chains[0].rules;
    // fib, v4 set, v6 set, 3 protocols x 2 ranges, catch-all.
    assert_eq!(rules.len(), 3 + 6 + 1);
    // The first range is drawn with probability 28976/61744; the second takes the rest.
    assert_eq!(
        rules[3].stmts[1],
        Stmt::NumgenBelow {
            modulus: 61744,
            below: 28976
        }
    );
    assert!(
        !rules[4]
            .stmts
            .iter()
            .any(|s| matches!(s, Stmt::NumgenBelow { .. }))
    );
    snapshot("ipv6-to-ports", &t);
}

#[test]
fn three_port_ranges_are_chosen_in_proportion_to_size() {
    let f = PolicyFlags {
        to_ports: Some("1000-1999,5000-5499,9000-9499".parse().unwrap()),
        ..PolicyFlags::default()
    };
    let t = desired(&Config::defaults(&f), &f, TableFlags::default());
    let tcp: Vec<&Rule> = t.chains[0]
        .rules
        .iter()
        .filter(|r| r.stmts.first() == Some(&Stmt::L4proto(6)))
        .collect();
    assert_eq!(tcp.len(), 3);
    let prob = |r: &Rule| match r.stmts.get(1) {
        Some(Stmt::NumgenBelow { modulus, below }) => f64::from(*below) / f64::from(*modulus),
        _ => 1.0,
    };
    // P(range 1) = 1000/2000, P(range 2) = (1 - 1/2) * 500/1000, P(range 3) = the rest.
    let p1 = prob(tcp[0]);
    let p2 = (1.0 - p1) * prob(tcp[1]);
    let p3 = (1.0 - p1) * (1.0 - prob(tcp[1])) * prob(tcp[2]);
    assert!((p1 - 0.5).abs() < 1e-9 && (p2 - 0.25).abs() < 1e-9 && (p3 - 0.25).abs() < 1e-9);
}

#[test]
fn everything_masqueraded_and_nothing_masqueraded() {
    let f = PolicyFlags {
        random_fully: false,
        ..PolicyFlags::default()
    };
    let none = desired(
        &config("nonMasqueradeCIDRs: ['0.0.0.0/0']", &f),
        &f,
        TableFlags::default(),
    );
    assert_eq!(strs(&none.sets[0].prefixes), ["0.0.0.0/0"]);
    snapshot("nothing-masqueraded", &none);
    let all = desired(
        &config("nonMasqueradeCIDRs: []\nmasqLinkLocal: true", &f),
        &f,
        TableFlags::default(),
    );
    assert!(all.sets[0].prefixes.is_empty());
    snapshot("everything-masqueraded", &all);
}

#[test]
fn table_flags_render_as_a_comment() {
    let f = PolicyFlags::default();
    let t = desired(
        &Config::defaults(&f),
        &f,
        TableFlags(TableFlags::OWNER | TableFlags::PERSIST),
    );
    assert!(t.to_string().contains("\t# flags owner,persist\n"));
}

#[test]
fn same_policy_ignores_counters_only() {
    let f = PolicyFlags::default();
    let a = desired(&Config::defaults(&f), &f, TableFlags::default());
    let mut b = a.clone();
    for r in &mut b.chains[0].rules {
        for s in &mut r.stmts {
            if let Stmt::Counter { packets, bytes } = s {
                *packets = 7;
                *bytes = 420;
            }
        }
    }
    assert!(a.same_policy(&b));
    assert_eq!(b.masquerade_counters(), (7, 420));
    b.sets[0].prefixes.pop();
    assert!(!a.same_policy(&b));
    let mut c = a.clone();
    c.foreign.push("a stray set".into());
    assert!(!a.same_policy(&c));
    let mut d = a.clone();
    d.flags = TableFlags(TableFlags::OWNER);
    assert!(!a.same_policy(&d));
    let mut e = a.clone();
    e.chains[0].rules[0].stmts.pop();
    assert!(!a.same_policy(&e));
}

#[test]
fn set_diff_lists_changes() {
    let f = PolicyFlags::default();
    let a = desired(&Config::defaults(&f), &f, TableFlags::default());
    let b = desired(
        &config("nonMasqueradeCIDRs: [10.0.0.0/8, 100.64.0.0/10]", &f),
        &f,
        TableFlags::default(),
    );
    let d = SetDiff::between(Some(&a), &b);
    assert_eq!(strs(&d.added), ["100.64.0.0/10"]);
    assert_eq!(strs(&d.removed), ["172.16.0.0/12", "192.168.0.0/16"]);
    assert_eq!(
        d.to_string(),
        "+100.64.0.0/10 -172.16.0.0/12 -192.168.0.0/16"
    );
    assert_eq!(SetDiff::between(None, &a).added.len(), 4);
}

#[test]
fn source_and_interface_scopes_come_before_any_decision() {
    let f = PolicyFlags {
        enable_ipv6: true,
        ..PolicyFlags::default()
    };
    let t = desired(
        &config(
            "sourceCIDRs: [10.244.0.0/16, 10.244.5.0/24]\negressInterfaces: [eth0, 'eth*', ens5]\n",
            &f,
        ),
        &f,
        TableFlags::default(),
    );
    let src4 = t.sets.iter().find(|s| s.name == SET_SRC_V4).unwrap();
    assert_eq!(strs(&src4.prefixes), ["10.244.0.0/16"], "merged");
    let src6 = t.sets.iter().find(|s| s.name == SET_SRC_V6).unwrap();
    assert!(src6.prefixes.is_empty(), "no IPv6 source is considered");
    let names: Vec<String> = t.name_sets[0].names.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        names,
        ["ens5", "eth*"],
        "eth0 is inside eth*; sorted by key"
    );
    let rules: Vec<String> = t.chains[0].rules.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        rules[..4],
        [
            "ip saddr != @sources-v4 return",
            "ip6 saddr != @sources-v6 return",
            "oifname != @egress-interfaces return",
            "fib daddr type local return"
        ]
    );
    snapshot("scopes", &t);
}

#[test]
fn snat_to_replaces_masquerade_per_family() {
    let f = PolicyFlags {
        enable_ipv6: true,
        to_ports: Some("1024-29999,32768-65535".parse().unwrap()),
        ..PolicyFlags::default()
    };
    let t = desired(
        &config("snatTo: ['198.51.100.10-198.51.100.20']\n", &f),
        &f,
        TableFlags::default(),
    );
    let rules: Vec<String> = t.chains[0].rules.iter().map(|r| r.to_string()).collect();
    let last = rules.len() - 1;
    assert_eq!(
        rules[last - 7],
        "meta nfproto ipv4 counter packets 0 bytes 0 snat ip to 198.51.100.10-198.51.100.20 \
         fully-random"
    );
    // IPv6 has no snatTo entry: it is masqueraded, with the same port ranges.
    assert_eq!(
        rules[last],
        "meta nfproto ipv6 counter packets 0 bytes 0 masquerade fully-random"
    );
    assert!(
        rules
            .iter()
            .any(|r| r.contains("snat ip to 198.51.100.10-198.51.100.20:1024-29999 fully-random"))
    );
    assert!(
        !rules
            .iter()
            .any(|r| r.contains("ip6") && r.contains("snat"))
    );
    snapshot("snat", &t);
}

#[test]
fn the_chain_priority_is_the_flags_and_shown_as_nft_writes_it() {
    let text = |prio: &str| {
        let f = PolicyFlags {
            chain_priority: prio.parse().unwrap(),
            ..PolicyFlags::default()
        };
        desired(&Config::defaults(&f), &f, TableFlags::default()).to_string()
    };
    let line = "type nat hook postrouting priority";
    assert!(text("srcnat + 10").contains(&format!("{line} srcnat + 10;")));
    assert!(text("srcnat - 10").contains(&format!("{line} srcnat - 10;")));
    assert!(text("100").contains(&format!("{line} srcnat;")));
}

/// Past `--max-set-prefixes` a family's exemptions are cut into sets by address block, each
/// behind a rule that matches its block first; within the cap the table is as it always
/// was. The snapshot is also checked by `nft -c -f`: the block set names are valid nft.
#[test]
fn exemptions_past_the_cap_are_cut_into_block_sets() {
    let f = PolicyFlags {
        enable_ipv6: true,
        max_set_prefixes: 2,
        ..PolicyFlags::default()
    };
    let c = config(
        "nonMasqueradeCIDRs: [10.0.0.0/16, 10.64.0.0/16, 10.200.0.0/16, 172.16.0.0/12, \
         fd00::/16, fd80::/16, 2001:db8::/32]\nmasqLinkLocal: true\nmasqLinkLocalIPv6: true\n",
        &f,
    );
    let t = desired(&c, &f, TableFlags::default());
    let all_sets: Vec<&str> = t.sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        all_sets,
        [
            "nonmasq-v4-10.0.0.0/9",
            "nonmasq-v4-10.128.0.0/9",
            "nonmasq-v4-128.0.0.0/1",
            SET_BLOCKS_V4,
            "nonmasq-v6-0/1",
            "nonmasq-v6-8/1",
            SET_BLOCKS_V6,
        ]
    );
    let names: Vec<&str> = all_sets
        .iter()
        .copied()
        .filter(|n| is_exemption_set(n))
        .collect();
    assert_eq!(names.len(), 5);
    // Every prefix kept, once.
    let all: Vec<IpNet> = t
        .sets
        .iter()
        .filter(|s| is_exemption_set(&s.name))
        .flat_map(|s| s.prefixes.clone())
        .collect();
    assert_eq!(all.len(), 7);
    // The plain set of a family's blocks holds what its map dispatches.
    assert_eq!(
        strs(&t.sets[3].prefixes),
        ["10.0.0.0/9", "10.128.0.0/9", "128.0.0.0/1"]
    );
    // One dispatch map per family, its blocks those of the sets, each jumping to a chain
    // of the set's name that accepts what the set holds.
    let maps: Vec<(&str, Vec<String>)> = t
        .dispatch
        .iter()
        .map(|d| {
            (
                d.name.as_str(),
                d.blocks.iter().map(|b| d.chain(b)).collect(),
            )
        })
        .collect();
    assert_eq!(
        maps,
        [
            (
                MAP_DISPATCH_V4,
                names[..3].iter().map(|n| n.to_string()).collect()
            ),
            (
                MAP_DISPATCH_V6,
                names[3..].iter().map(|n| n.to_string()).collect()
            ),
        ]
    );
    // The translation's chain, the block chains, the base chain.
    let chains: Vec<String> = t.chains.iter().map(|c| c.name.clone()).collect();
    assert_eq!(chains[0], CHAIN_TRANSLATE);
    assert_eq!(chains[1..6], names[..]);
    assert_eq!(chains[6], CHAIN_NAME);
    assert_eq!(
        t.chains[1].to_string(),
        "\tchain nonmasq-v4-10.0.0.0/9 {\n\t\tip daddr @nonmasq-v4-10.0.0.0/9 accept\n\t\tjump translate\n\t}\n"
    );
    let translate: Vec<String> = t.chains[0].rules.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        translate,
        ["counter packets 0 bytes 0 masquerade fully-random"]
    );
    // The base chain looks up each family's map once, whatever the number of blocks; a
    // destination in a block the map did not dispatch (the map going away) is left alone.
    let base: Vec<String> = t.chains[6].rules.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        base[base.len() - 5..],
        [
            "ip daddr vmap @nonmasq-dispatch-v4",
            "ip daddr @nonmasq-blocks-v4 return",
            "ip6 daddr vmap @nonmasq-dispatch-v6",
            "ip6 daddr @nonmasq-blocks-v6 return",
            "jump translate",
        ]
    );
    assert!(
        base.contains(&"ip daddr vmap @nonmasq-dispatch-v4".to_string()),
        "{base:?}"
    );
    assert!(
        base.contains(&"ip6 daddr vmap @nonmasq-dispatch-v6".to_string()),
        "{base:?}"
    );
    assert!(!base.iter().any(|r| r.contains("@nonmasq-v")), "{base:?}");
    snapshot("sharded", &t);

    // Within the cap: one set per family under its plain name, no map, one chain.
    let f = PolicyFlags {
        max_set_prefixes: 7,
        ..f
    };
    let t = desired(&c, &f, TableFlags::default());
    let names: Vec<&str> = t.sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, [SET_V4, SET_V6]);
    assert!(t.dispatch.is_empty());
    assert_eq!(t.chains.len(), 1);
}
