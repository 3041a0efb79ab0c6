//! The agent on a node that already carries kubelet's, kube-proxy's and kubenet's
//! iptables-nft rules: its masquerade for a `masqueradeCIDRs` range takes effect next to
//! them, and their tables are never touched, through start, reload and cleanup. iptables
//! is only the fixture and an observer here; the agent never runs it. Needs root, and
//! `iptables-nft-restore`/`iptables-nft-save` (the iptables package). Also runs in the
//! QEMU guests of `vm-tests/`.

use std::time::Duration;

use nix::sys::signal::Signal;
use nma_testkit::listing::iptables_save_stable;
use nma_testkit::{Topology, root_or_skip, run, wait_until};

const T: Duration = Duration::from_secs(5);

/// What kubelet (KUBE-FIREWALL, KUBE-POSTROUTING with its mark-based masquerade),
/// kube-proxy (KUBE-SERVICES, KUBE-MARK-MASQ) and kubenet (SNAT for everything outside
/// 10.0.0.0/8) write into a node's namespace, in `iptables-save` form.
const NODE_RULES: &str = "\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
-A INPUT -j KUBE-FIREWALL
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A POSTROUTING ! -d 10.0.0.0/8 -m comment --comment \"kubenet: SNAT for outbound traffic from cluster\" -m addrtype ! --dst-type LOCAL -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully
-A KUBE-SERVICES ! -s 10.244.0.0/16 -d 10.96.0.1/32 -p tcp -m comment --comment \"default/kubernetes:https cluster IP\" -m tcp --dport 443 -j KUBE-MARK-MASQ
COMMIT
";

/// The foreign state, as iptables and nft see it, without what our own probes and the clock
/// change: `iptables-nft-save`'s `#` lines carry a timestamp and its chain lines end in
/// packet counters (`:POSTROUTING ACCEPT [4:180]`), and `nft --stateless` leaves out rule
/// counters. Everything else must stay byte for byte.
fn foreign_state(t: &Topology) -> String {
    let save = run(&mut t.node.cmd("iptables-nft-save")).stdout;
    let save = iptables_save_stable(&String::from_utf8_lossy(&save));
    let nat = t.node.nft(&["--stateless", "list", "table", "ip", "nat"]);
    let filter = t
        .node
        .nft(&["--stateless", "list", "table", "ip", "filter"]);
    format!("{save}\n{nat}\n{filter}")
}

#[test]
fn agent_next_to_kubelet_kube_proxy_and_kubenet_rules() {
    root_or_skip!();
    let t = Topology::new("nodelike");
    t.node.restore("iptables-nft-restore", &[], NODE_RULES);
    let before = foreign_state(&t);
    assert!(before.contains("kubenet: SNAT"), "{before}");

    // kubenet alone: everything outside 10/8 is masqueraded, nothing inside it.
    t.expect(&["11.22.33.44"], &["10.11.0.5", "10.20.0.5"]);

    let cfg_dir = t.dir.join("config");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let cfg = cfg_dir.join("ip-masq-agent");
    std::fs::write(&cfg, "masqueradeCIDRs: [10.11.0.0/24]\n").unwrap();
    let mut agent = t.start(&cfg, &[]);
    // 10.11.0.5 is inside 10/8, where kubenet's rule does not masquerade: the agent does.
    t.expect(&["10.11.0.5", "11.22.33.44"], &["10.20.0.5"]);
    assert_eq!(
        foreign_state(&t),
        before,
        "the agent changed foreign tables"
    );

    // A reload (written to a new file and renamed over the old, as editors and kubelet
    // do): the VPN range moves.
    let tmp = cfg_dir.join(".ip-masq-agent.new");
    std::fs::write(&tmp, "masqueradeCIDRs: [10.20.0.0/24]\n").unwrap();
    std::fs::rename(&tmp, &cfg).unwrap();
    assert!(
        wait_until(T, || t.masqueraded("10.20.0.5")),
        "reload not applied:\n{}",
        agent.log()
    );
    t.expect(&["10.20.0.5", "11.22.33.44"], &["10.11.0.5"]);
    assert_eq!(
        foreign_state(&t),
        before,
        "the reload changed foreign tables"
    );

    agent.signal(Signal::SIGTERM);
    assert!(agent.wait().success(), "{}", agent.log());
    run(t.agent().arg("--cleanup"));
    assert!(t.nft_table().is_none());
    assert_eq!(foreign_state(&t), before, "cleanup changed foreign tables");
    // Back to kubenet alone.
    t.expect(&["11.22.33.44"], &["10.11.0.5", "10.20.0.5"]);
}
