//! The real binary in network namespaces, with real datagrams: which destinations are
//! masqueraded, for each kind of configuration; plus the CLI modes against the kernel.
//! Needs root (see `nma_testkit::root_or_skip`).

use nma_testkit::{DESTS4, Topology, root_or_skip, run};

/// Destinations of `DESTS4` other than the ones listed.
fn others(listed: &[&str]) -> Vec<&'static str> {
    DESTS4
        .iter()
        .copied()
        .filter(|d| !listed.contains(d))
        .collect()
}

#[test]
fn defaults_masquerade_everything_but_rfc1918_and_link_local() {
    root_or_skip!();
    let t = Topology::new("defaults");
    // Before the agent runs, nothing is masqueraded.
    t.expect(&[], &["11.22.33.44"]);
    t.apply(&t.dir.join("absent"), &[]);
    let keep = [
        "10.11.0.5",
        "10.20.0.5",
        "172.16.0.5",
        "192.168.0.5",
        "169.254.0.5",
    ];
    t.expect(&others(&keep), &keep);
}

#[test]
fn custom_list_replaces_the_defaults() {
    root_or_skip!();
    let t = Topology::new("custom");
    let cfg = t.config(
        "c",
        "nonMasqueradeCIDRs:\n  - 11.0.0.0/8\n  - 100.64.0.0/10\n",
    );
    t.apply(&cfg, &[]);
    let keep = ["11.22.33.44", "100.64.0.5", "169.254.0.5"];
    t.expect(&others(&keep), &keep);
}

#[test]
fn masquerade_cidrs_are_masqueraded_inside_a_non_masquerade_range() {
    root_or_skip!();
    let t = Topology::new("masqcidr");
    let cfg = t.config("c", "masqueradeCIDRs: [10.11.0.0/24]\n");
    t.apply(&cfg, &[]);
    t.expect(
        &["10.11.0.5", "11.22.33.44"],
        &["10.20.0.5", "172.16.0.5", "192.168.0.5", "169.254.0.5"],
    );
}

#[test]
fn masq_link_local_masquerades_169_254() {
    root_or_skip!();
    let t = Topology::new("linklocal");
    let cfg = t.config("c", "masqLinkLocal: true\n");
    t.apply(&cfg, &[]);
    t.expect(&["169.254.0.5"], &["10.20.0.5"]);
}

#[test]
fn all_reserved_ranges_including_class_e_at_the_top() {
    root_or_skip!();
    let t = Topology::new("reserved");
    t.apply(&t.dir.join("absent"), &["--nomasq-all-reserved-ranges"]);
    let masq = ["11.22.33.44"];
    t.expect(&masq, &others(&masq));
}

#[test]
fn everything_exempt_with_0_0_0_0_slash_0() {
    root_or_skip!();
    let t = Topology::new("zero");
    let cfg = t.config("c", "nonMasqueradeCIDRs: ['0.0.0.0/0']\n");
    t.apply(&cfg, &[]);
    t.expect(&[], DESTS4);
    // And the reverse: an empty list masquerades everything but link-local.
    let cfg = t.config("d", "nonMasqueradeCIDRs: []\n");
    t.apply(&cfg, &[]);
    t.expect(&others(&["169.254.0.5"]), &["169.254.0.5"]);
}

#[test]
fn ipv6_is_managed_only_with_enable_ipv6() {
    root_or_skip!();
    let t = Topology::new("ipv6");
    t.apply(&t.dir.join("absent"), &[]);
    // Without --enable-ipv6 IPv6 is left alone: not masqueraded.
    t.expect(&["11.22.33.44"], &["2001:db8:5::5", "fd00:11::5"]);
    let cfg = t.config("c", "nonMasqueradeCIDRs: [10.0.0.0/8, 'fd00::/8']\n");
    t.apply(&cfg, &["--enable-ipv6"]);
    t.expect(
        &["2001:db8:5::5", "192.168.0.5"],
        &["fd00:11::5", "10.20.0.5"],
    );
    let all = t.config("d", "nonMasqueradeCIDRs: ['::/0']\n");
    t.apply(&all, &["--enable-ipv6"]);
    t.expect(&["10.20.0.5"], &["2001:db8:5::5", "fd00:11::5"]);
}

#[test]
fn to_ports_restricts_the_masqueraded_source_port() {
    root_or_skip!();
    let t = Topology::new("toports");
    t.apply(&t.dir.join("absent"), &["--to-ports", "30000-30009,31000"]);
    for _ in 0..20 {
        let from = t
            .probe("11.22.33.44".parse().unwrap())
            .expect("probe arrived");
        assert_eq!(from.ip().to_string(), "198.51.100.1");
        let p = from.port();
        assert!(
            (30000..=30009).contains(&p) || p == 31000,
            "source port {p}"
        );
    }
}

#[test]
fn invalid_config_leaves_the_table_exactly_as_it_was() {
    root_or_skip!();
    let t = Topology::new("invalid");
    let good = t.config("good", "masqueradeCIDRs: [10.11.0.0/24]\n");
    t.apply(&good, &[]);
    let before = t.nft_table().expect("table exists");
    let bad = t.config(
        "bad",
        "nonMasqueradeCIDRs: [10.0.0.1/8]\nmasqLinkLocl: true\n",
    );
    let out = t
        .agent()
        .arg("--once")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: nonMasqueradeCIDRs[0] = \"10.0.0.1/8\"",
            bad.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("masqLinkLocl = true: unknown key; did you mean masqLinkLocal?"),
        "{err}"
    );
    assert_eq!(t.nft_table().expect("table still exists"), before);
    t.expect(&["10.11.0.5"], &["10.20.0.5"]);
}

#[test]
fn dump_matches_dry_run_and_nft_accepts_it() {
    root_or_skip!();
    let t = Topology::new("dump");
    let cfg = t.config(
        "c",
        "nonMasqueradeCIDRs: [10.0.0.0/8, 'fd00::/8', 240.0.0.0/4]\n",
    );
    let args = ["--enable-ipv6", "--to-ports", "1024-29999,32768-65535"];
    t.apply(&cfg, &args);
    let dry = run(t
        .agent()
        .arg("--dry-run")
        .arg("--config")
        .arg(&cfg)
        .args(args))
    .stdout;
    // With the same config, --dump annotates the elements it read from the kernel the way
    // --dry-run annotates the ones it would write.
    let dump = run(t.agent().arg("--dump").arg("--config").arg(&cfg).args(args)).stdout;
    assert_eq!(
        String::from_utf8_lossy(&dump),
        String::from_utf8_lossy(&dry)
    );
    assert!(String::from_utf8_lossy(&dump).contains("\t# nonMasqueradeCIDRs[0] 10.0.0.0/8\n"));
    // After traffic the dump shows the counters.
    t.expect(&["11.22.33.44"], &[]);
    let dump = String::from_utf8(run(t.agent().arg("--dump")).stdout).unwrap();
    assert!(dump.contains("counter packets 1 bytes"), "{dump}");
    // Without the config's flags the elements it does not explain say so.
    assert!(dump.contains("fd00::/8,\t# not from the config"), "{dump}");
    // nft parses it back (check mode: nothing is committed).
    let out = t.node.nft_stdin(&["-c", "-f", "-"], &dump);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // nft, as an independent observer, sees the same set contents.
    let json: serde_json::Value = serde_json::from_str(&t.node.nft(&[
        "-j",
        "list",
        "set",
        "inet",
        "nft-masq-agent",
        "nonmasq-v4",
    ]))
    .unwrap();
    let elems = json["nftables"][1]["set"]["elem"].to_string();
    for p in [
        r#""addr":"10.0.0.0","len":8"#,
        r#""addr":"169.254.0.0","len":16"#,
        r#""addr":"240.0.0.0","len":4"#,
    ] {
        assert!(elems.contains(p), "{p} missing from {elems}");
    }
}

/// Issue 17, finding 7: `snatTo` addresses no packet may leave with are refused by
/// `--dry-run` and `--once`, naming the file, the entry, its value and the kind of address;
/// the table in force stays as it was.
#[test]
fn snat_to_addresses_no_packet_may_leave_with_are_refused() {
    root_or_skip!();
    let t = Topology::new("snatbad");
    let good = t.config("good", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    t.apply(&good, &["--enable-ipv6"]);
    let before = t.nft_table().expect("table exists");
    for (value, kind) in [
        ("127.0.0.1", "is a loopback address (127.0.0.0/8)"),
        ("::1", "is a loopback address (::1/128)"),
        ("fe80::1", "is a link-local address (fe80::/10)"),
        ("169.254.1.1", "is a link-local address (169.254.0.0/16)"),
        ("::ffff:192.0.2.10", "is an IPv4-mapped IPv6 address"),
        (
            "0.0.0.1-255.255.255.254",
            "the range contains loopback (127.0.0.0/8), link-local (169.254.0.0/16) and \
             multicast (224.0.0.0/4) addresses",
        ),
        ("224.0.0.1", "is a multicast address (224.0.0.0/4)"),
        ("0.0.0.0", "is the unspecified address"),
        ("::", "is the unspecified address"),
        ("255.255.255.255", "is the broadcast address"),
    ] {
        let cfg = t.config(
            "bad",
            &format!("nonMasqueradeCIDRs: [10.0.0.0/8]\nsnatTo: ['{value}']\n"),
        );
        for mode in ["--dry-run", "--once"] {
            let out = t
                .agent()
                .args([mode, "--enable-ipv6", "--config"])
                .arg(&cfg)
                .output()
                .unwrap();
            assert!(!out.status.success(), "{mode} accepted snatTo {value}");
            let err = String::from_utf8_lossy(&out.stderr);
            let entry = format!("{}: snatTo[0] = \"{value}\": ", cfg.display());
            assert!(err.contains(&entry), "{mode} {value}: {err}");
            assert!(err.contains(kind), "{mode} {value}: {err}");
            assert!(
                err.contains("no packet may leave the node with"),
                "{mode} {value}: {err}"
            );
        }
        assert_eq!(t.nft_table().as_deref(), Some(before.as_str()));
    }
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);
}

#[test]
fn dump_without_table_fails_clearly() {
    root_or_skip!();
    let t = Topology::new("notable");
    let out = t.agent().arg("--dump").output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("table inet nft-masq-agent does not exist")
    );
}

#[test]
fn cleanup_removes_only_our_table_and_replace_leaves_others_alone() {
    root_or_skip!();
    let t = Topology::new("cleanup");
    let foreign = "table ip other {\n\tchain postrouting {\n\t\ttype nat hook postrouting \
                   priority srcnat; policy accept;\n\t\tip daddr 192.0.2.0/24 counter masquerade\n\t}\n}\n";
    let out = t.node.nft_stdin(&["-f", "-"], foreign);
    assert!(out.status.success());
    let before = t.node.nft(&["list", "table", "ip", "other"]);
    t.apply(&t.dir.join("absent"), &[]);
    let cfg = t.config("c", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    t.apply(&cfg, &[]);
    // The second apply replaced the first entirely.
    let table = t.nft_table().unwrap();
    assert!(!table.contains("192.168.0.0/16"), "{table}");
    run(t.agent().arg("--cleanup"));
    assert!(t.nft_table().is_none());
    run(t.agent().arg("--cleanup")); // idempotent
    assert_eq!(t.node.nft(&["list", "table", "ip", "other"]), before);
    t.expect(&[], &["11.22.33.44"]);
}

#[test]
fn dry_run_needs_no_privileges() {
    root_or_skip!();
    // setpriv drops to nobody with no capabilities at all.
    let out = run(std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(nma_testkit::agent_bin())
        .args(["--dry-run", "--config", "/nonexistent"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ip daddr @nonmasq-v4 return"));
}

#[test]
fn snapshots_are_valid_nft_syntax() {
    root_or_skip!();
    let t = Topology::new("snap");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let out = t.node.nft_stdin(&["-c", "-f", "-"], &text);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
    }
    assert!(n >= 5);
}
