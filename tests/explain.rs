//! `--explain` against real packets: what it says is what a datagram shows. Needs root;
//! every namespace is the test's own (see nma_testkit).

use std::net::IpAddr;

use nma_testkit::{DESTS4, NODE4, POD4, Topology, root_or_skip, run};

/// What a datagram from the pod to `dst` arrives with: `masquerade`, `snat` or `none`.
fn observed(t: &Topology, dst: &str, snat: Option<IpAddr>) -> &'static str {
    let from = t
        .probe(dst.parse().unwrap())
        .unwrap_or_else(|| panic!("probe to {dst} never arrived"))
        .ip();
    if from == IpAddr::from(NODE4) {
        "masquerade"
    } else if Some(from) == snat {
        "snat"
    } else if from == IpAddr::from(POD4) {
        "none"
    } else {
        panic!("{dst}: arrived from {from}")
    }
}

#[test]
fn explain_agrees_with_packets_for_every_key_and_flag() {
    root_or_skip!();
    let t = Topology::new("explain");
    t.node.ip("addr add 198.51.100.77/24 dev eth0");
    let cases = [
        (
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [10.11.0.0/24]\n",
            &[][..],
        ),
        (
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: true\n",
            &[],
        ),
        ("{}\n", &["--nomasq-all-reserved-ranges"][..]),
        (
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nsnatTo: [198.51.100.77]\n",
            &[],
        ),
        ("sourceCIDRs: [10.244.1.2/32]\n", &[]),
        ("sourceCIDRs: [10.99.0.0/16]\n", &[]),
    ];
    let snat: Option<IpAddr> = Some("198.51.100.77".parse().unwrap());
    for (i, (text, args)) in cases.iter().enumerate() {
        let cfg = t.config(&format!("c{i}"), text);
        t.apply(&cfg, args);
        for dst in DESTS4 {
            let e = t.explain(&cfg, dst, args);
            let said = e["decision"].as_str().unwrap().to_string();
            assert_eq!(e["table"], "in_force", "{text}: {e}");
            let seen = observed(&t, dst, snat);
            assert_eq!(
                said, seen,
                "config {text:?} {args:?}, destination {dst}: {e:#}"
            );
            // Every decision names what made it.
            assert!(!e["because"].as_array().unwrap().is_empty(), "{e}");
        }
    }
    // A carve-out names both entries, file, key, index and value.
    let cfg = t.config(
        "carve",
        "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [10.11.0.0/24]\n",
    );
    let e = t.explain(&cfg, "10.11.0.5", &[]);
    let because = e["because"].as_array().unwrap();
    assert_eq!(because[0]["key"], "masqueradeCIDRs");
    assert_eq!(because[0]["index"], 0);
    assert_eq!(because[0]["value"], "10.11.0.0/24");
    assert_eq!(because[0]["file"], cfg.display().to_string());
    assert_eq!(because[1]["key"], "nonMasqueradeCIDRs");
}

#[test]
fn explain_names_earlier_rules_of_other_components_and_packets_prove_it() {
    root_or_skip!();
    let t = Topology::new("explainc");
    // kubenet's non-masquerade rule and kube-proxy's mark-based one, with iptables-nft.
    for rule in [
        &[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "!",
            "-d",
            "10.0.0.0/8",
            "-m",
            "addrtype",
            "!",
            "--dst-type",
            "LOCAL",
            "-j",
            "MASQUERADE",
        ][..],
        &["-t", "nat", "-N", "KUBE-POSTROUTING"],
        &[
            "-t",
            "nat",
            "-I",
            "POSTROUTING",
            "1",
            "-j",
            "KUBE-POSTROUTING",
        ],
        &[
            "-t",
            "nat",
            "-A",
            "KUBE-POSTROUTING",
            "-m",
            "mark",
            "!",
            "--mark",
            "0x4000/0x4000",
            "-j",
            "RETURN",
        ],
        &[
            "-t",
            "nat",
            "-A",
            "KUBE-POSTROUTING",
            "-j",
            "MARK",
            "--xor-mark",
            "0x4000",
        ],
        &[
            "-t",
            "nat",
            "-A",
            "KUBE-POSTROUTING",
            "-j",
            "MASQUERADE",
            "--random-fully",
        ],
    ] {
        run(t.node.cmd("iptables-nft").args(rule));
    }
    let cfg = t.config("c", "nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\n");
    t.apply(&cfg, &[]);
    // 192.168.0.5 is exempt by our config, but kubenet's rule runs first and masquerades it.
    let e = t.explain(&cfg, "192.168.0.5", &[]);
    assert_eq!(e["decision"], "none", "{e:#}");
    let conflicts = e["conflicts"].as_array().unwrap();
    let first = conflicts
        .iter()
        .find(|c| c["answer"] == "yes")
        .unwrap_or_else(|| panic!("no overriding rule in {e:#}"));
    assert_eq!(first["family"], "ip");
    assert_eq!(first["table"], "nat");
    assert_eq!(first["chain"], "POSTROUTING");
    assert_eq!(first["verdict"], "masquerade");
    assert!(first["handle"].as_u64().is_some() && first["priority"] == 100);
    assert_eq!(
        observed(&t, "192.168.0.5", None),
        "masquerade",
        "the datagram proves it"
    );
    // Inside 10/8 kubenet's rule does not apply; kube-proxy's applies only to marked packets.
    let e = t.explain(&cfg, "10.20.0.5", &[]);
    let conflicts = e["conflicts"].as_array().unwrap();
    assert!(conflicts.iter().all(|c| c["answer"] != "yes"), "{e:#}");
    assert!(
        conflicts.iter().any(
            |c| c["chain"].as_str().unwrap().starts_with("KUBE-POSTROUTING")
                && c["answer"]["conditional"].is_array()
        ),
        "{e:#}"
    );
    assert_eq!(observed(&t, "10.20.0.5", None), "none");
    // The text form says it first.
    let text = run(t
        .agent()
        .args(["--explain", "192.168.0.5", "--config"])
        .arg(&cfg))
    .stdout;
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.starts_with("192.168.0.5: not translated\n  BUT ip nat chain POSTROUTING"),
        "{text}"
    );
}

#[test]
fn explain_without_privileges_answers_from_the_config() {
    root_or_skip!();
    let t = Topology::new("explainu");
    let cfg = t.config("c", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    std::fs::set_permissions(&t.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = run(t
        .node
        .cmd("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(nma_testkit::agent_bin())
        .args(["--explain", "11.22.33.44", "--output", "json", "--config"])
        .arg(&cfg));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["decision"], "masquerade");
    assert_eq!(e["table"], "not_read", "{e}");
}

/// Issue 17, finding 7: a source of the other family than the destination describes no
/// packet; `--explain` refuses it, in either direction, and still answers a source of the
/// destination's family.
#[test]
fn explain_refuses_a_source_of_the_other_family() {
    root_or_skip!();
    let t = Topology::new("explainf");
    let cfg = t.config("c", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    t.apply(&cfg, &["--enable-ipv6"]);
    for (dst, src, dst_family, src_family) in [
        ("10.0.0.1", "2001:db8::1", "IPv4", "IPv6"),
        ("2001:db8:5::5", "10.244.1.2", "IPv6", "IPv4"),
    ] {
        let out = t
            .agent()
            .args([
                "--explain",
                dst,
                "--source",
                src,
                "--enable-ipv6",
                "--config",
            ])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{dst} from {src} was answered");
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "--source {src} is an {src_family} address and --explain {dst} an {dst_family} \
                 one: a packet's source and destination are of one family"
            )),
            "{err}"
        );
    }
    let e = t.explain(&cfg, "10.0.0.1", &[]);
    assert_eq!(e["decision"], "none", "{e}");
}
