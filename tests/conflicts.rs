//! Other components' NAT tables as the kernel holds them (made with `nft -f` in the test's
//! own namespaces): verdict maps are followed, hostile jump graphs are analysed in time and
//! correctly, and foreign sets are read within the element budget. Needs root.

use std::time::{Duration, Instant};

use nma_testkit::{Topology, root_or_skip, run, slack};

fn conflicts(e: &serde_json::Value) -> &Vec<serde_json::Value> {
    e["conflicts"].as_array().expect("conflicts")
}

#[test]
fn a_verdict_map_that_jumps_to_a_masquerade_is_reported() {
    root_or_skip!();
    let t = Topology::new("vmap");
    t.node.nft_file(
        "table ip vm {
           chain domasq { masquerade; }
           chain post {
             type nat hook postrouting priority srcnat; policy accept;
             ip daddr vmap { 10.0.0.0/8 : jump domasq }
           }
         }",
    );
    let cfg = t.config("c", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    t.apply(&cfg, &[]);
    // Our config exempts 10/8; the verdict map sends it to a masquerade first.
    let e = t.explain(&cfg, "10.20.0.5", &[]);
    assert_eq!(e["decision"], "none", "{e:#}");
    let yes: Vec<_> = conflicts(&e)
        .iter()
        .filter(|c| c["answer"] == "yes")
        .collect();
    assert_eq!(yes.len(), 1, "{e:#}");
    assert_eq!(yes[0]["table"], "vm");
    assert_eq!(yes[0]["chain"], "domasq (from post)");
    assert_eq!(yes[0]["verdict"], "masquerade");
    assert!(t.masqueraded("10.20.0.5"), "the datagram proves it");
    // Outside the map nothing translates first.
    let e = t.explain(&cfg, "192.168.0.5", &[]);
    assert!(conflicts(&e).iter().all(|c| c["answer"] == "no"), "{e:#}");
    // The text says it first.
    let text = run(t
        .agent()
        .args(["--explain", "10.20.0.5", "--config"])
        .arg(&cfg))
    .stdout;
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.starts_with("10.20.0.5: not translated\n  BUT ip vm chain domasq (from post)"),
        "{text}"
    );
    // The daemon counts it.
    let _agent = t.start(&cfg, &[]);
    assert!(
        nma_testkit::wait_until(Duration::from_secs(10) * slack(), || {
            t.metric("nft_masq_agent_conflicting_nat_rules") == 1.0
        }),
        "the gauge never counted the rule behind the verdict map"
    );
}

/// The hostile table of issue 17: `post` jumps 4 times to c1, each ci 4 times to c(i+1);
/// the last chain masquerades `tcp dport 1`, so every jump comes back and there are 4^depth
/// ways to it.
fn hostile(depth: usize) -> String {
    let mut s = String::from("table ip hostile {\n");
    for i in 0..=depth {
        let name = if i == 0 {
            "post".to_string()
        } else {
            format!("c{i}")
        };
        s += &format!("chain {name} {{\n");
        if i == 0 {
            s += "type nat hook postrouting priority srcnat; policy accept;\n";
        }
        if i < depth {
            s += &format!("jump c{}\n", i + 1).repeat(4);
        } else {
            s += "tcp dport 1 masquerade\n";
        }
        s += "}\n";
    }
    s + "}\n"
}

#[test]
fn a_hostile_jump_graph_is_analysed_in_time_and_correctly() {
    root_or_skip!();
    let t = Topology::new("dag");
    let cfg = t.config("c", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    // 12 as in the issue (49 rules; today's main needs about a minute per pass in the
    // daemon); 15, the deepest the kernel accepts (16 chains on the way: it refuses more).
    for depth in [12, 15].map(nma_testkit::env::kernel_walkable_depth) {
        let _ = t
            .node
            .cmd("nft")
            .args(["delete", "table", "ip", "hostile"])
            .output();
        t.node.nft_file(&hostile(depth));
        let start = Instant::now();
        let e = t.explain(&cfg, "10.20.0.5", &[]);
        let took = start.elapsed();
        eprintln!("depth {depth}: --explain took {took:?}");
        assert!(
            took < Duration::from_secs(5) * slack(),
            "depth {depth}: {took:?}"
        );
        // One finding: the masquerade at the bottom, which depends on the ports.
        let c = conflicts(&e);
        assert_eq!(c.len(), 1, "depth {depth}: {e:#}");
        assert_eq!(c[0]["chain"], format!("c{depth} (from post)"));
        assert_eq!(
            c[0]["answer"]["cannot_tell"],
            serde_json::json!(["the transport protocol", "transport header fields (ports)"]),
            "{e:#}"
        );
    }
}

/// An nft script for `set big` of table `ip big` with `n` non-adjacent /32 ranges (2n
/// kernel elements), `flags interval`, in chunks nft takes quickly.
fn big_set(n: u32) -> String {
    let mut s = String::from("add set ip big big { type ipv4_addr; flags interval; }\n");
    for chunk in (0..n).collect::<Vec<_>>().chunks(50_000) {
        s += "add element ip big big { ";
        let parts: Vec<String> = chunk
            .iter()
            .map(|i| {
                let a = 0x1e00_0000u32 + 2 * i;
                std::net::Ipv4Addr::from(a).to_string()
            })
            .collect();
        s += &parts.join(", ");
        s += " }\n";
    }
    s
}

#[test]
fn foreign_sets_are_read_within_the_element_budget() {
    root_or_skip!();
    let t = Topology::new("budget");
    let cfg = t.config("c", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    // 250,000 ranges (500,000 kernel elements) that no postrouting rule looks up; 200,000
    // elements in an emulated guest (nft takes 365 MB and seconds to load the 500,000), ten
    // times the default budget, and large enough that reading it whole (about 14 MiB) stands
    // well clear of the guests' constant offset (below).
    let ranges = if nma_testkit::emulated() {
        100_000
    } else {
        250_000
    };
    t.node.nft_file(
        "table ip big {
           chain post {
             type nat hook postrouting priority srcnat; policy accept;
             ip daddr 192.168.0.0/16 masquerade
           }
         }",
    );
    let explain_peak = |what: &str| {
        let mut cmd = t.agent();
        cmd.args(["--explain", "10.20.0.5", "--config"]).arg(&cfg);
        let (kib, status, took) = nma_testkit::peak::run_peak_kib(cmd);
        eprintln!("--explain {what}: peak {kib} KiB, {took:?}");
        assert!(status.success());
        kib
    };
    const BOUND_KIB: u64 = 6 * 1024;
    let base = explain_peak("with the set empty");
    let load = Instant::now();
    t.node.nft_file(&big_set(ranges));
    eprintln!("loading {} elements took {:?}", 2 * ranges, load.elapsed());
    // Reading the whole set costs 34 MiB more for --explain at 500,000 elements (77.6 MB in
    // the daemon at 520,000), 7 MiB more at 100,000 (so about 14 at 200,000). The budget's
    // 20,000 elements would cost 1.6 MiB. The bound allows 6 MiB: the guests measure an
    // offset of +3.1 to +4.2 MiB even for the set nobody looks up (6.1 twice; 5.10 +3.2 and
    // +4.2 at 100,000 elements; the host +0.01 MiB at 500,000), constant, not growing with
    // the set, and well below what reading it whole costs.
    let kib = explain_peak("with an unread set");
    assert!(
        kib < base + BOUND_KIB,
        "peak {kib} KiB, {base} without the set"
    );
    let e = t.explain(&cfg, "192.168.0.5", &[]);
    assert_eq!(conflicts(&e)[0]["answer"], "yes", "{e:#}");
    // Looked up by a postrouting rule: past the budget it is not read, the table is said to
    // be too large, and the answer is "cannot tell", not "no".
    t.node
        .nft_file("add rule ip big post ip daddr != @big masquerade");
    let kib = explain_peak("with a set past the budget");
    assert!(
        kib < base + BOUND_KIB,
        "peak {kib} KiB, {base} without the set"
    );
    let e = t.explain(&cfg, "10.20.0.5", &[]);
    let unread = conflicts(&e)
        .iter()
        .find(|c| c["answer"] != "no")
        .expect("the rule that looks up the set");
    assert_eq!(
        unread["answer"]["cannot_tell"],
        serde_json::json!(["set big of table big not read: more than 20000 elements"]),
        "{e:#}"
    );
    let notes = e["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n
            .as_str()
            .unwrap()
            .starts_with("table ip big is too large to analyse")),
        "{e:#}"
    );
    // Within a budget that holds it, the set is read and the answer exact: 10.20.0.5 is
    // not in @big, so the second rule masquerades it.
    let e = t.explain(&cfg, "10.20.0.5", &["--max-foreign-elements", "600000"]);
    let yes: Vec<_> = conflicts(&e)
        .iter()
        .filter(|c| c["answer"] == "yes")
        .collect();
    assert_eq!(yes.len(), 1, "{e:#}");
    assert!(
        e["notes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| !n.as_str().unwrap().contains("too large"))
    );
}
