//! `snatRules` (issue 21) with real datagrams: each group of pods leaves the node with the
//! address of the entry whose prefix holds it most specifically, a source in no entry with
//! the fallback; a changed entry moves a running UDP flow to the new address; a bad entry is
//! refused naming file, key, index and value, and the table in force stays. Needs root;
//! every namespace is the test's own (see nma_testkit).
//!
//! The pods: pod 0 is 10.244.1.2 (and 10.244.1.200, added here), pod 1 10.244.2.2, pod 2
//! 10.244.3.2; the remote records the source each datagram arrives with.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use nma_testkit::topology::probe_between;
use nma_testkit::{NODE4, NODE6, Netns, Topology, root_or_skip, slack, wait_until, write_atomic};

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Two entries and a prefix nested in the first: 10.244.0.0/23 holds pod 0's addresses,
/// its /25 only 10.244.1.2; pod 1 has an entry of its own (IPv4 and IPv6); pod 2 none.
const RULES: &str = "snatRules:\n\
    - sourceCIDRs: [10.244.0.0/23]\n  snatTo: [192.0.2.20]\n\
    - sourceCIDRs: [10.244.2.0/24, 'fd00:10:244:2::/64']\n  snatTo: [192.0.2.21, '2001:db8::21']\n\
    - sourceCIDRs: [10.244.1.0/25]\n  snatTo: [192.0.2.22]\n\
    resyncInterval: 1s\n";

/// The source address a datagram from `src` in `pod` to `dst` arrives with.
fn seen(t: &Topology, pod: &Netns, src: &str, dst: &str) -> IpAddr {
    probe_between(pod, &t.remote, addr(src), addr(dst))
        .unwrap_or_else(|| panic!("nothing from {src} to {dst} arrived"))
        .ip()
}

/// The packets counted by the rules of a listing whose text contains `needle`, summed.
fn packets(listing: &str, needle: &str) -> u64 {
    listing
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| {
            l.split("packets ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn three_pods(tag: &str) -> Topology {
    let t = Topology::builder(tag).pods(3).build();
    t.pod.ip("addr add 10.244.1.200/24 dev eth0");
    t
}

#[test]
fn each_source_leaves_with_the_address_of_its_longest_prefix() {
    root_or_skip!();
    let t = three_pods("snatrules");
    let cfg = t.config("ip-masq-agent", RULES);
    let agent = t.start(&cfg, &["--enable-ipv6"]);
    let (pod1, pod2) = (&t.more_pods[0], &t.more_pods[1]);
    let out = "11.22.33.44";
    let cases = [
        (&t.pod, "10.244.1.2", "192.0.2.22", "the nested /25"),
        (&t.pod, "10.244.1.200", "192.0.2.20", "the /23 around it"),
        (pod1, "10.244.2.2", "192.0.2.21", "its own entry"),
        (
            pod2,
            "10.244.3.2",
            &NODE4.to_string(),
            "no entry: masquerade",
        ),
    ];
    for (pod, src, want, what) in cases {
        assert_eq!(
            seen(&t, pod, src, out),
            addr(want),
            "{src} ({what})\n{}",
            agent.log()
        );
    }
    // The exemptions stay as they are: snatRules choose the address, never whether.
    assert_eq!(
        seen(&t, pod1, "10.244.2.2", "10.20.0.5"),
        addr("10.244.2.2")
    );
    // IPv6: pod 1's prefix has an address; pod 0's has none, so it is masqueraded.
    assert_eq!(
        seen(&t, pod1, "fd00:10:244:2::2", "2001:db8:5::5"),
        addr("2001:db8::21")
    );
    assert_eq!(
        seen(&t, &t.pod, "fd00:10:244:1::2", "2001:db8:5::5"),
        IpAddr::from(NODE6)
    );
    // What nft shows: the maps, and the rule with the lookup.
    let listing = t.listing().unwrap();
    assert!(
        listing.contains("snat ip to ip saddr map @snat-v4"),
        "{listing}"
    );
    assert!(listing.contains("10.244.1.0/25 : 192.0.2.22"), "{listing}");
    // The table read back is the one committed: the resync checks (every second) find no
    // difference to repair.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(agent.commit_count(), 1, "{}", agent.log());
    // The map rule counts what it translated, not the flow it passes on: pod 0's two
    // sources and pod 1 (3 flows) there, pod 2 once, in the fallback.
    let live = t.nft_table().unwrap();
    assert_eq!(
        packets(&live, "snat ip to ip saddr map @snat-v4"),
        3,
        "{live}"
    );
    assert_eq!(packets(&live, "meta nfproto ipv4 counter"), 4, "{live}");
    assert_eq!(
        t.metric("nft_masq_agent_snat_rule_intervals{family=\"ipv4\"}"),
        4.0,
        "the /23 cut around the /25, and the /24"
    );
}

#[test]
fn dump_and_dry_run_annotate_the_map_and_explain_names_the_entry() {
    root_or_skip!();
    let t = three_pods("snatrules-dump");
    let cfg = t.config("ip-masq-agent", RULES);
    let out = t.apply(&cfg, &["--enable-ipv6"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = t
        .agent()
        .args(["--dump", "--enable-ipv6", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        text.contains("10.244.1.0/25 : 192.0.2.22,\t# snatRules[2] 10.244.1.0/25"),
        "{text}\n{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(
        text.contains("10.244.0.0/24 : 192.0.2.20,\t# snatRules[0] 10.244.0.0/23"),
        "{text}"
    );
    // The kit asks from the pod's address, 10.244.1.2.
    let e = t.explain(&cfg, "11.22.33.44", &["--enable-ipv6"]);
    assert_eq!(e["snat_to"], "192.0.2.22", "{e}");
    let by = e["because"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["key"] == "snatRules")
        .unwrap_or_else(|| panic!("{e}"));
    assert_eq!(by["index"], 2, "{e}");
    assert_eq!(by["value"], "10.244.1.0/25 -> 192.0.2.22", "{e}");
    assert!(
        by["file"].as_str().unwrap().ends_with("ip-masq-agent"),
        "{e}"
    );
}

/// A UDP flow with a fixed source port: every datagram belongs to one conntrack entry.
struct Stream {
    tx: UdpSocket,
    rx: UdpSocket,
    dst: SocketAddr,
    n: u32,
}

impl Stream {
    fn new(t: &Topology, pod: &Netns, src: &str, sport: u16, dst: &str, dport: u16) -> Stream {
        let dst = SocketAddr::new(addr(dst), dport);
        let rx = t
            .remote
            .enter(|| UdpSocket::bind(("0.0.0.0", dport)))
            .unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let tx = pod.enter(|| UdpSocket::bind((addr(src), sport))).unwrap();
        Stream { tx, rx, dst, n: 0 }
    }

    /// Sends a datagram; the source address it arrived with.
    fn send(&mut self) -> IpAddr {
        let mut buf = [0u8; 64];
        for _ in 0..10 {
            self.n += 1;
            let token = format!("nma-snatrules-{}", self.n);
            self.tx.send_to(token.as_bytes(), self.dst).unwrap();
            while let Ok((len, from)) = self.rx.recv_from(&mut buf) {
                if &buf[..len] == token.as_bytes() {
                    return from.ip();
                }
            }
        }
        panic!("no datagram to {} arrived", self.dst)
    }
}

#[test]
fn a_changed_entry_moves_a_running_udp_flow_to_its_new_address() {
    root_or_skip!();
    let t = three_pods("snatrules-move");
    let cfg = t.config("ip-masq-agent", RULES);
    let agent = t.start(&cfg, &["--enable-ipv6", "--metrics-address", "off"]);
    let pod1 = &t.more_pods[0];
    let mut moved = Stream::new(&t, pod1, "10.244.2.2", 43101, "11.22.33.44", 6201);
    let mut kept = Stream::new(&t, &t.pod, "10.244.1.2", 43102, "11.22.33.44", 6202);
    assert_eq!(moved.send(), addr("192.0.2.21"));
    assert_eq!(kept.send(), addr("192.0.2.22"));

    write_atomic(&cfg, &RULES.replace("192.0.2.21,", "192.0.2.23,"));
    let limit = Duration::from_secs(3) * slack();
    let took = wait_until(limit, || {
        std::thread::sleep(Duration::from_millis(50));
        moved.send() == addr("192.0.2.23")
    });
    assert!(took, "the open flow kept its old address:\n{}", agent.log());
    assert!(
        agent.wait_log("conntrack: 1 of", Duration::from_secs(2)),
        "one flow reset, the other left:\n{}",
        agent.log()
    );
    // The flow whose entry did not change keeps its address (and its entry).
    assert_eq!(kept.send(), addr("192.0.2.22"));
    assert_eq!(agent.commit_count(), 2, "{}", agent.log());
}

#[test]
fn a_bad_entry_is_refused_by_file_key_index_and_value_and_the_table_stays() {
    root_or_skip!();
    let t = three_pods("snatrules-bad");
    let cfg = t.config("ip-masq-agent", RULES);
    let agent = t.start(&cfg, &["--enable-ipv6", "--metrics-address", "off"]);
    let before = t.listing().unwrap();
    write_atomic(
        &cfg,
        &RULES
            .replace("[192.0.2.20]", "['192.0.2.20-192.0.2.29']")
            .replace("[192.0.2.22]", "[127.0.0.1]"),
    );
    let file = cfg.display().to_string();
    for want in [
        format!(
            "{file}: snatRules[0].snatTo[0] = \"192.0.2.20-192.0.2.29\": an address range is \
             not supported in snatRules"
        ),
        format!("{file}: snatRules[2].snatTo[0] = \"127.0.0.1\": 127.0.0.1 is a loopback address"),
    ] {
        assert!(
            agent.wait_log(&want, Duration::from_secs(5)),
            "{want}\n{}",
            agent.log()
        );
    }
    assert_eq!(t.listing().unwrap(), before, "the table in force stays");
    assert_eq!(
        seen(&t, &t.pod, "10.244.1.2", "11.22.33.44"),
        addr("192.0.2.22")
    );
}

#[test]
fn a_map_element_someone_changes_is_put_back() {
    root_or_skip!();
    let t = three_pods("snatrules-tamper");
    let cfg = t.config("ip-masq-agent", RULES);
    // An owned table refuses others' changes: off, so that the change lands.
    let agent = t.start(
        &cfg,
        &[
            "--enable-ipv6",
            "--metrics-address",
            "off",
            "--table-owner",
            "off",
        ],
    );
    let before = t.listing().unwrap();
    // Pod 1's interval now leaves with another address, as far as the kernel goes.
    t.node.nft_file(
        "delete element inet nft-masq-agent snat-v4 { 10.244.2.0/24 }\n\
         add element inet nft-masq-agent snat-v4 { 10.244.2.0/24 : 192.0.2.99 }\n",
    );
    assert!(
        agent
            .wait_commits(2, Duration::from_secs(5) * slack())
            .is_some(),
        "no repair:\n{}",
        agent.log()
    );
    assert!(
        wait_until(Duration::from_secs(2) * slack(), || t.listing().unwrap()
            == before),
        "{}\n{}",
        t.listing().unwrap(),
        agent.log()
    );
    assert_eq!(
        seen(&t, &t.more_pods[0], "10.244.2.2", "11.22.33.44"),
        addr("192.0.2.21")
    );
}
