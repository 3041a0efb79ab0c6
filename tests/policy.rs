//! The policy keys beyond ip-masq-agent, with real packets: `snatTo`, `sourceCIDRs`,
//! `egressInterfaces`, and several config files merged. Needs root; every namespace is the
//! test's own (see nma_testkit).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nma_testkit::{
    Agent, ConfigMap, NODE4, POD4, Topology, root_or_skip, wait_until, write_atomic,
};

/// Generous bound for things that are not about time (a loaded 2-core machine).
const T: Duration = Duration::from_secs(10);

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The source the remote saw for a datagram from the pod to `dst`.
fn seen(t: &Topology, dst: &str) -> SocketAddr {
    t.probe(addr(dst))
        .unwrap_or_else(|| panic!("probe to {dst} never arrived"))
}

fn start(t: &Topology, config: &Path, args: &[&str]) -> Agent {
    let agent = t
        .agent_builder()
        .config(config)
        .args(["--metrics-address", "off"])
        .args(args)
        .spawn();
    assert!(
        agent.wait_commits(1, T).is_some(),
        "agent did not commit:\n{}",
        agent.log()
    );
    agent
}

#[test]
fn snat_to_a_chosen_address_and_port_range() {
    root_or_skip!();
    let t = Topology::new("snat");
    // A secondary address on the node's egress interface: what traffic should leave with.
    t.node.ip("addr add 198.51.100.50/24 dev eth0");
    let cfg = t.config("c", "snatTo: [198.51.100.50]\n");
    t.apply(&cfg, &[]);
    let from = seen(&t, "11.22.33.44");
    assert_eq!(
        from.ip(),
        addr("198.51.100.50"),
        "SNAT to the chosen address"
    );
    // Non-masquerade decisions still hold.
    assert_eq!(seen(&t, "10.20.0.5").ip(), IpAddr::from(POD4));
    // With --to-ports the chosen port ranges apply to the SNAT too.
    t.apply(&cfg, &["--to-ports", "2000-2099"]);
    for _ in 0..5 {
        let from = seen(&t, "11.22.33.44");
        assert_eq!(from.ip(), addr("198.51.100.50"));
        assert!((2000..=2099).contains(&from.port()), "port {}", from.port());
    }
}

#[test]
fn snat_to_a_range_and_ipv6() {
    root_or_skip!();
    let t = Topology::new("snat6");
    for a in ["198.51.100.50/24", "198.51.100.51/24"] {
        t.node.ip(&format!("addr add {a} dev eth0"));
    }
    t.node.ip("addr add 2001:db8:ffff::50/64 dev eth0 nodad");
    let cfg = t.config(
        "c",
        "snatTo: ['198.51.100.50-198.51.100.51', '2001:db8:ffff::50']\n",
    );
    t.apply(&cfg, &["--enable-ipv6"]);
    let v4 = seen(&t, "11.22.33.44").ip();
    assert!(
        [addr("198.51.100.50"), addr("198.51.100.51")].contains(&v4),
        "{v4}"
    );
    assert_eq!(seen(&t, "2001:db8:5::5").ip(), addr("2001:db8:ffff::50"));
}

#[test]
fn only_sources_in_source_cidrs_are_translated() {
    root_or_skip!();
    let t = Topology::new("src");
    // A second source on the pod side, outside sourceCIDRs (like a load balancer's or the
    // host's own traffic through the bridge).
    t.pod.ip("addr add 10.244.1.3/24 dev eth0");
    let cfg = t.config("c", "sourceCIDRs: [10.244.1.2/32]\n");
    t.apply(&cfg, &[]);
    let inside = t.probe_from(POD4.into(), addr("11.22.33.44")).unwrap();
    assert_eq!(
        inside.ip(),
        IpAddr::from(NODE4),
        "a pod inside is translated"
    );
    let outside = t
        .probe_from(addr("10.244.1.3"), addr("11.22.33.44"))
        .unwrap();
    assert_eq!(
        outside.ip(),
        addr("10.244.1.3"),
        "a source outside is left alone"
    );
}

/// A second link from the node to the remote, `eth1`, and the route to `dst` through it.
fn second_link(t: &Topology, dst: &str) {
    t.node.ip(&format!(
        "link add eth1 type veth peer name eth1 netns {}",
        t.remote.name
    ));
    t.node.ip("addr add 192.0.2.1/24 dev eth1");
    t.remote.ip("addr add 192.0.2.2/24 dev eth1");
    t.node.ip("link set eth1 up");
    t.remote.ip("link set eth1 up");
    t.remote.sysctl("net.ipv4.conf.eth1.rp_filter", "0");
    t.node
        .ip(&format!("route add {dst}/32 via 192.0.2.2 dev eth1"));
}

#[test]
fn only_listed_egress_interfaces_translate_even_ones_created_later() {
    root_or_skip!();
    let t = Topology::new("oif");
    let cfg = t.config("c", "egressInterfaces: ['eth1']\n");
    // The agent starts before eth1 exists: names are matched, not indexes.
    let _agent = start(&t, &cfg, &["--table-owner", "off"]);
    assert_eq!(
        seen(&t, "11.22.33.44").ip(),
        IpAddr::from(POD4),
        "eth0 is not listed: untranslated"
    );
    second_link(&t, "11.22.33.44");
    assert_eq!(
        seen(&t, "11.22.33.44").ip(),
        addr("192.0.2.1"),
        "through eth1, created after the start: masqueraded to eth1's address"
    );
    assert_eq!(seen(&t, "100.64.0.5").ip(), IpAddr::from(POD4));
    // A wildcard covers both.
    std::fs::write(&cfg, "egressInterfaces: ['eth*']\n").unwrap();
    assert!(wait_until(T, || seen(&t, "100.64.0.5").ip() == IpAddr::from(NODE4)));
    assert_eq!(seen(&t, "11.22.33.44").ip(), addr("192.0.2.1"));
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_directory_of_config_files_is_merged_and_followed() {
    root_or_skip!();
    let t = Topology::new("merge");
    let dir = t.dir.join("config");
    std::fs::create_dir_all(&dir).unwrap();
    // ip-masq-agent-v2's layout: the user's file and the provider's.
    write(&dir, "ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    write(
        &dir,
        "ip-masq-agent-reconciled",
        "nonMasqueradeCIDRs: [100.64.0.0/10]\n",
    );
    write(&dir, "other-key", "nonMasqueradeCIDRs: [11.0.0.0/8]\n"); // not ip-masq*: ignored
    let agent = start(&t, &dir, &["--table-owner", "off"]);
    t.expect(
        &["11.22.33.44", "192.168.0.5"],
        &["10.20.0.5", "100.64.0.5"],
    );

    // A third file appears: the union changes within the usual reload time.
    let start = Instant::now();
    write(
        &dir,
        "ip-masq-agent-extra",
        "nonMasqueradeCIDRs: [192.168.0.0/16]\n",
    );
    assert!(wait_until(T, || !t.masqueraded("192.168.0.5")));
    eprintln!("third file live after {:?}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // Conflicting snatTo: refused, naming both files; the last good table stays. The
    // provider's file gets its snatTo first (valid on its own, and committed), then the
    // user's file a different one. Each file is replaced at once (renamed into place), as
    // kubelet's `..data` swap does: a file rewritten in place can be read half-written,
    // which a slow guest did, committing an empty user file.
    write_atomic(
        &dir.join("ip-masq-agent-reconciled"),
        "nonMasqueradeCIDRs: [100.64.0.0/10]\nsnatTo: [198.51.100.61]\n",
    );
    assert!(
        wait_until(T, || t
            .nft_table()
            .is_some_and(|l| l.contains("198.51.100.61"))),
        "{}",
        agent.log()
    );
    let before = t.nft_table().unwrap();
    write_atomic(
        &dir.join("ip-masq-agent"),
        "nonMasqueradeCIDRs: [10.0.0.0/8]\nsnatTo: [198.51.100.60]\n",
    );
    assert!(
        agent.wait_log("snatTo is set to different values in", T),
        "{}",
        agent.log()
    );
    let log = agent.log();
    assert!(
        log.contains(&dir.join("ip-masq-agent").display().to_string()),
        "{log}"
    );
    assert!(
        log.contains(&dir.join("ip-masq-agent-reconciled").display().to_string()),
        "{log}"
    );
    assert_eq!(
        t.nft_table().unwrap(),
        before,
        "the last good merged table stays"
    );
    t.expect(&[], &["10.20.0.5", "100.64.0.5", "192.168.0.5"]);
    assert_eq!(
        t.probe("11.22.33.44".parse().unwrap()).map(|a| a.ip()),
        Some(addr("198.51.100.61")),
        "translated to the provider's snatTo, still in force"
    );
}

/// Issue 17, finding 5: the user's file of a config directory replaced by a symlink loop next
/// to the provider's file. The agent keeps the last good merged policy (10/8 still not
/// masqueraded), says it is not ready naming the file and the cause, and recovers when the
/// file is back.
#[test]
fn an_unreadable_file_in_a_config_directory_keeps_the_last_good_policy() {
    root_or_skip!();
    let t = Topology::new("dirloop");
    let dir = t.dir.join("config");
    std::fs::create_dir_all(&dir).unwrap();
    let user = write(&dir, "ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    write(
        &dir,
        "ip-masq-agent-reconciled",
        "nonMasqueradeCIDRs: [100.64.0.0/10]\n",
    );
    let agent = t.start(&dir, &["--table-owner", "off"]);
    t.expect(&["11.22.33.44"], &["10.20.0.5", "100.64.0.5"]);
    assert!(wait_until(T, || t.get("/readyz").status == 200));
    let good = t.listing().unwrap();

    // Replaced in one rename: the agent never sees the file missing.
    let tmp = dir.join("next");
    std::os::unix::fs::symlink(&user, &tmp).unwrap();
    std::fs::rename(&tmp, &user).unwrap();
    // ELOOP: "Too many levels of symbolic links" (glibc), "Symbolic link loop" (musl).
    assert!(
        agent.wait_log("(os error 40)", T),
        "the loop was not reported:\n{}",
        agent.log()
    );
    let log = agent.log();
    assert!(
        log.contains(&format!("cannot read config file {}", user.display())),
        "{log}"
    );
    assert!(log.contains("keeping the last good config"), "{log}");
    let r = t.get("/readyz");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains(&user.display().to_string()), "{}", r.body);
    assert!(r.body.contains("(os error 40)"), "{}", r.body);
    assert_eq!(t.metric("nft_masq_agent_config_valid"), 0.0);
    // By packets: the merged policy stays, 10/8 is still not masqueraded.
    t.expect(&["11.22.33.44"], &["10.20.0.5", "100.64.0.5"]);
    assert_eq!(t.listing().as_deref(), Some(good.as_str()));

    // The file is back: valid again, ready, the same policy.
    let fixed = write(&dir, "fixed", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    std::fs::rename(&fixed, &user).unwrap();
    assert!(agent.wait_log("is valid again", T), "{}", agent.log());
    assert!(wait_until(T, || t.get("/readyz").status == 200));
    assert_eq!(t.listing().as_deref(), Some(good.as_str()));
    t.expect(&["11.22.33.44"], &["10.20.0.5", "100.64.0.5"]);
}

/// kubelet's update of a ConfigMap volume that removes a key: after the `..data` rename the
/// key's link points at nothing until kubelet removes it. That state (held here for as long
/// as the agent needs to read it) is the new data without the key, not an unreadable file: no
/// error, ready throughout, the new policy committed.
#[test]
fn a_configmap_update_removing_a_key_is_no_read_error() {
    root_or_skip!();
    let t = Topology::new("cmkey");
    let mut cm = ConfigMap::with_files(
        t.dir.join("config"),
        &[
            ("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n"),
            ("ip-masq-extra", "nonMasqueradeCIDRs: [100.64.0.0/10]\n"),
        ],
    );
    let dir = cm.dir().to_path_buf();
    let agent = t.start(&dir, &["--table-owner", "off"]);
    t.expect(&["11.22.33.44"], &["10.20.0.5", "100.64.0.5"]);

    // The new version without ip-masq-extra; its link stays until the policy is committed.
    cm.publish(&[("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n")]);
    assert!(
        wait_until(T, || t.masqueraded("100.64.0.5")),
        "the new data was not committed:\n{}",
        agent.log()
    );
    assert!(
        std::fs::symlink_metadata(dir.join("ip-masq-extra")).is_ok(),
        "the link must still be there"
    );
    assert_eq!(t.get("/readyz").status, 200);
    // kubelet's last steps: the key's link and the old version removed.
    cm.finish();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(t.get("/readyz").status, 200);
    let log = agent.log();
    assert!(!log.contains("ERROR"), "{log}");
    assert_eq!(t.metric("nft_masq_agent_config_errors_total"), 0.0);
    t.expect(&["11.22.33.44", "100.64.0.5"], &["10.20.0.5"]);
}

#[test]
fn several_config_flags_are_merged() {
    root_or_skip!();
    let t = Topology::new("multi");
    let a = t.config("a", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    let b = t.config(
        "b",
        "nonMasqueradeCIDRs: [100.64.0.0/10]\nmasqLinkLocal: true\n",
    );
    let out = t
        .agent()
        .args(["--once", "--config"])
        .arg(&a)
        .arg("--config")
        .arg(&b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.expect(
        &["11.22.33.44", "169.254.0.5"],
        &["10.20.0.5", "100.64.0.5"],
    );
}
