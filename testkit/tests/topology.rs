//! The kit's topology against the kernel: what it wires carries datagrams, its options do what
//! they say, and its namespaces go when it is dropped, also on a panic. Needs root.

use std::net::IpAddr;
use std::path::Path;

use nma_testkit::events::Generations;
use nma_testkit::topology::probe_between;
use nma_testkit::{POD4, Topology, ip, root_or_skip};

fn exists(ns: &str) -> bool {
    Path::new(&format!("/run/netns/{ns}")).exists()
}

#[test]
fn pods_and_remotes_are_wired_and_carry_datagrams() {
    root_or_skip!();
    let t = Topology::builder("kit")
        .ipv6(false)
        .dests4(&["11.22.33.44"])
        .pods(2)
        .remotes(2)
        .build();
    assert_eq!(t.namespaces().count(), 5);
    // No NAT table: every datagram keeps its source.
    let dst: IpAddr = "11.22.33.44".parse().unwrap();
    assert_eq!(t.probe(dst).map(|a| a.ip()), Some(IpAddr::from(POD4)));
    let pod2 = &t.more_pods[0];
    let from = probe_between(pod2, &t.remote, "0.0.0.0".parse().unwrap(), dst);
    assert_eq!(from.map(|a| a.ip().to_string()), Some("10.244.2.2".into()));
    // Remote 2 behind the node's eth1, reached through a route of the test's.
    t.host_on(1, "203.0.113.9");
    ip(&[
        "-n",
        &t.node.name,
        "route",
        "add",
        "203.0.113.9/32",
        "via",
        "192.0.2.2",
    ]);
    let from = probe_between(
        &t.pod,
        &t.more_remotes[0],
        "0.0.0.0".parse().unwrap(),
        "203.0.113.9".parse().unwrap(),
    );
    assert_eq!(from.map(|a| a.ip()), Some(IpAddr::from(POD4)));
    // Without IPv6 the pod has no IPv6 address.
    let addrs = t
        .pod
        .cmd("ip")
        .args(["-6", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&addrs.stdout).contains("fd00:10:244"),
        "{}",
        String::from_utf8_lossy(&addrs.stdout)
    );
}

#[test]
fn namespaces_and_scratch_go_on_drop_and_on_panic() {
    root_or_skip!();
    let t = Topology::new("kitdrop");
    let names: Vec<String> = t.namespaces().map(|n| n.name.clone()).collect();
    let dir = t.dir.clone();
    assert!(names.iter().all(|n| exists(n)) && dir.exists());
    drop(t);
    assert!(!names.iter().any(|n| exists(n)), "{names:?}");
    assert!(!dir.exists());

    let names = std::thread::spawn(|| {
        let t = Topology::new("kitpanic");
        let names: Vec<String> = t.namespaces().map(|n| n.name.clone()).collect();
        std::panic::panic_any(names);
    })
    .join()
    .expect_err("the thread panicked")
    .downcast::<Vec<String>>()
    .expect("the names");
    assert!(!names.iter().any(|n| exists(n)), "{names:?}");
}

#[test]
fn the_end_of_each_transaction_is_seen_in_its_namespace_only() {
    root_or_skip!();
    let a = nma_testkit::Netns::new(format!("nma-{}-kit-gens-a", std::process::id()));
    let b = nma_testkit::Netns::new(format!("nma-{}-kit-gens-b", std::process::id()));
    let gens = a.enter(Generations::open).expect("subscribe");
    let timeout = std::time::Duration::from_millis(500);
    b.nft(&["add", "table", "ip", "elsewhere"]);
    assert!(
        gens.next(timeout).is_none(),
        "a commit in another namespace"
    );
    a.nft(&["add", "table", "ip", "here"]);
    assert!(gens.next(timeout).is_some(), "no NEWGEN for the commit");
    gens.clear();
    assert!(gens.next(std::time::Duration::from_millis(100)).is_none());
}
