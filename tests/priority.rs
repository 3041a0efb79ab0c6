//! `--chain-priority` with real packets: the first NAT chain that sets up a binding decides.
//! An iptables-nft `MASQUERADE` at nat POSTROUTING (srcnat) for the same destination as our
//! `snatTo`: at the default (srcnat + 10) it binds first and the far end sees the node's
//! address; at srcnat - 10 ours binds first and it sees the `snatTo` address. An exemption
//! of ours does not stop that later chain. `--explain` says the same each time. iptables-nft
//! is only the fixture: the agent never runs it. Needs root and the iptables package; also
//! runs in the QEMU guests of `vm-tests/`.

use std::net::IpAddr;

use nma_testkit::{NODE4, POD4, Topology, installed, root_or_skip};

/// The destination both translate.
const DST: &str = "11.22.33.44";
/// Our `snatTo` address, a second address on the node's egress interface.
const SNAT: &str = "198.51.100.50";

/// The source the far end saw for one datagram from the pod to `DST`.
fn seen(t: &Topology) -> IpAddr {
    t.probe(DST.parse().unwrap())
        .unwrap_or_else(|| panic!("probe to {DST} never arrived"))
        .ip()
}

#[test]
fn an_earlier_chain_makes_our_snat_win_and_an_exemption_never_does() {
    root_or_skip!();
    if !installed("iptables-nft") {
        println!("not applicable: iptables-nft is not installed");
        return;
    }
    let t = Topology::new("priority");
    t.node.ip(&format!("addr add {SNAT}/24 dev eth0"));
    t.node.restore(
        "iptables-nft-restore",
        &[],
        &format!(
            "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -d {DST}/32 -j MASQUERADE\nCOMMIT\n"
        ),
    );
    let snat = t.config("snat", &format!("snatTo: [{SNAT}]\n"));
    let node: IpAddr = NODE4.into();
    let ours: IpAddr = SNAT.parse().unwrap();

    // The default, srcnat + 10: iptables' chain at srcnat binds first.
    t.apply(&snat, &[]);
    assert!(
        t.nft_table().unwrap().contains("priority srcnat + 10;"),
        "{:?}",
        t.nft_table()
    );
    assert_eq!(seen(&t), node, "iptables' masquerade wins at the default");
    let e = t.explain(&snat, DST, &[]);
    assert_eq!(e["decision"], "snat", "{e:#}");
    assert_eq!(e["chain_priority"], "srcnat + 10", "{e:#}");
    assert_eq!(e["overridden_by"]["verdict"], "masquerade", "{e:#}");
    assert_eq!(e["overridden_by"]["runs"], "before", "{e:#}");

    // srcnat - 10, over the table committed above: ours binds first.
    let earlier = ["--chain-priority", "srcnat - 10"];
    t.apply(&snat, &earlier);
    assert!(
        t.nft_table().unwrap().contains("priority srcnat - 10;"),
        "{:?}",
        t.nft_table()
    );
    assert_eq!(seen(&t), ours, "our snatTo wins when our chain runs first");
    let e = t.explain(&snat, DST, &earlier);
    assert_eq!(e["chain_priority"], "srcnat - 10", "{e:#}");
    assert!(e["overridden_by"].is_null(), "{e:#}");
    let rule = e["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["verdict"] == "masquerade")
        .unwrap_or_else(|| panic!("iptables' rule listed: {e:#}"));
    assert_eq!(
        (&rule["answer"], &rule["runs"]),
        (&"yes".into(), &"after".into())
    );

    // An exemption is a `return`: it sets up no binding, so the later chain still
    // masquerades, however early ours runs.
    let exempt = t.config("exempt", &format!("nonMasqueradeCIDRs: [{DST}/32]\n"));
    t.apply(&exempt, &earlier);
    assert_eq!(seen(&t), node, "our exemption does not stop a later chain");
    let e = t.explain(&exempt, DST, &earlier);
    assert_eq!(e["decision"], "none", "{e:#}");
    assert_eq!(e["overridden_by"]["runs"], "after", "{e:#}");
    // Without the iptables rule, the exemption holds (the probe itself is sound).
    t.node.restore(
        "iptables-nft-restore",
        &[],
        "*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n",
    );
    assert_eq!(seen(&t), IpAddr::from(POD4));
}
