//! Conntrack reconciliation against the running kernel, with real datagrams: the dump shows
//! what the `conntrack` CLI shows, deletes hit exactly the selected entries (zone and id
//! respected, protocols filtered), and the next datagram of a deleted flow is translated by
//! the rules in force. Needs root; every namespace is the test's own (see nma_testkit), and
//! every conntrack socket is opened inside one of them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use nft_masq_agent::addr::prefix::Family;
use nft_masq_agent::config::{self, Config, PolicyFlags};
use nft_masq_agent::kernel::conntrack::uapi::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
};
use nft_masq_agent::kernel::conntrack::{self, Conntrack, Flow, L4, Protocols, Tuple};
use nft_masq_agent::kernel::nft::{self, NftSocket};
use nft_masq_agent::model::{self, TableFlags};
use nma_testkit::{NODE4, Netns, POD4, POD6, Topology, root_or_skip};

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Commits the agent's table in the node namespace with the default policy plus `extra`
/// non-masquerade ranges. A NAT table is also what makes the kernel track connections in
/// that namespace at all.
fn commit(t: &Topology, extra_non_masq: &[&str]) {
    let flags = PolicyFlags::default();
    let mut cfg = Config::defaults(&flags);
    let mut nets: Vec<_> = cfg.non_masquerade_cidrs.iter().map(|e| e.value).collect();
    nets.extend(
        extra_non_masq
            .iter()
            .map(|s| s.parse::<ipnet::IpNet>().unwrap()),
    );
    cfg.non_masquerade_cidrs = config::entries(nets);
    let table = model::desired(&cfg, &flags, TableFlags::default());
    t.node.enter(|| {
        let mut sock = NftSocket::open().unwrap();
        nft::replace_table(&mut sock, &table).unwrap();
    });
}

/// A UDP flow with a fixed source port, as a VPN tunnel, a DNS client or syslog keeps one:
/// every datagram belongs to the same conntrack entry.
struct Stream {
    tx: UdpSocket,
    rx: UdpSocket,
    dst: SocketAddr,
    n: u32,
}

impl Stream {
    fn new(t: &Topology, src: IpAddr, sport: u16, dst: &str, dport: u16) -> Stream {
        let dst = SocketAddr::new(addr(dst), dport);
        let any: IpAddr = match dst.ip() {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        let rx = t.remote.enter(|| UdpSocket::bind((any, dport))).unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let tx = t.pod.enter(|| UdpSocket::bind((src, sport))).unwrap();
        Stream { tx, rx, dst, n: 0 }
    }

    /// Sends a datagram and returns the source address and port it arrived with.
    fn send(&mut self) -> SocketAddr {
        let mut buf = [0u8; 64];
        // Resent a few times: the first can be lost to neighbour discovery.
        for _ in 0..10 {
            self.n += 1;
            let token = format!("nma-ct-{}", self.n);
            self.tx.send_to(token.as_bytes(), self.dst).unwrap();
            while let Ok((len, from)) = self.rx.recv_from(&mut buf) {
                if &buf[..len] == token.as_bytes() {
                    return from;
                }
            }
        }
        panic!("no datagram to {} arrived", self.dst)
    }
}

fn dump(ns: &Netns, family: Family) -> Vec<Flow> {
    ns.enter(|| {
        let mut conn = Conntrack::open().unwrap();
        let mut flows = Vec::new();
        let stats = conn.dump(family, |f| flows.push(*f)).unwrap();
        assert_eq!(stats.undecodable, 0);
        assert_eq!(stats.flows, flows.len() as u64);
        flows
    })
}

/// The one flow with this original source port and destination.
fn flow_of<'a>(flows: &'a [Flow], sport: u16, dst: &str) -> Option<&'a Flow> {
    let dst = addr(dst);
    let hits: Vec<&Flow> = flows
        .iter()
        .filter(|f| {
            f.original.dst == dst && matches!(f.original.l4, L4::Ports { src, .. } if src == sport)
        })
        .collect();
    assert!(hits.len() <= 1, "{hits:#?}");
    hits.first().copied()
}

/// What the `conntrack` CLI (conntrack-tools, an independent observer; the agent never runs
/// it) lists for UDP in `ns`: one line per entry, `proto src dst sport dport src dst sport
/// dport id`. `None` when the CLI is not installed (the VM guests have no conntrack-tools).
fn cli_udp(ns: &Netns, family: &str) -> Option<Vec<String>> {
    let out = ns
        .cmd("conntrack")
        .args(["-L", "-f", family, "-p", "udp", "-o", "id"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let kv = |key: &str| -> Vec<&str> {
                line.split_whitespace()
                    .filter_map(|w| w.strip_prefix(key))
                    .collect()
            };
            let (src, dst, sport, dport) = (kv("src="), kv("dst="), kv("sport="), kv("dport="));
            format!(
                "udp {} {} {} {} {} {} {} {} {}",
                src[0],
                dst[0],
                sport[0],
                dport[0],
                src[1],
                dst[1],
                sport[1],
                dport[1],
                kv("id=")[0]
            )
        })
        .collect();
    lines.sort();
    Some(lines)
}

/// Our dump in the CLI's terms.
fn ours_udp(flows: &[Flow]) -> Vec<String> {
    let ports = |t: &Tuple| match t.l4 {
        L4::Ports { src, dst } => (src, dst),
        _ => panic!("UDP without ports"),
    };
    let mut lines: Vec<String> = flows
        .iter()
        .filter(|f| f.protocol == IPPROTO_UDP)
        .map(|f| {
            let (o, r) = (ports(&f.original), ports(&f.reply));
            format!(
                "udp {} {} {} {} {} {} {} {} {}",
                f.original.src,
                f.original.dst,
                o.0,
                o.1,
                f.reply.src,
                f.reply.dst,
                r.0,
                r.1,
                f.id.expect("kernel reports ids")
            )
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn dump_shows_real_flows_and_reconcile_deletes_exactly_the_selected_ones() {
    root_or_skip!();
    let t = Topology::new("ct-dump");
    commit(&t, &[]);
    let pod4: IpAddr = POD4.into();
    let mut a = Stream::new(&t, pod4, 41001, "11.22.33.44", 5001); // masqueraded
    let mut a2 = Stream::new(&t, pod4, 41005, "11.22.33.44", 5005); // masqueraded
    let mut b = Stream::new(&t, pod4, 41002, "203.0.113.5", 5002); // masqueraded
    let mut c = Stream::new(&t, pod4, 41003, "10.20.0.5", 5003); // not: inside 10/8
    let mut d = Stream::new(&t, POD6.into(), 41004, "2001:db8:5::5", 5004); // IPv6: left alone
    let seen_a = a.send();
    assert_eq!(seen_a.ip(), IpAddr::from(NODE4));
    a2.send();
    let seen_b = b.send();
    assert_eq!(c.send(), SocketAddr::new(pod4, 41003));
    assert_eq!(d.send(), SocketAddr::new(POD6.into(), 41004));

    let v4 = dump(&t.node, Family::V4);
    let fa = flow_of(&v4, 41001, "11.22.33.44").expect("flow A");
    assert_eq!(fa.family, Family::V4);
    assert_eq!(fa.protocol, IPPROTO_UDP);
    assert_eq!(fa.original.src, pod4);
    assert_eq!(
        fa.original.l4,
        L4::Ports {
            src: 41001,
            dst: 5001
        }
    );
    // The reply goes to the translated source: exactly what the remote saw.
    assert_eq!(fa.reply.src, addr("11.22.33.44"));
    assert_eq!(fa.reply.dst, seen_a.ip());
    assert_eq!(
        fa.reply.l4,
        L4::Ports {
            src: 5001,
            dst: seen_a.port()
        }
    );
    assert!(fa.is_src_nat(), "{fa}");
    assert_eq!(fa.translated_source(), Some(NODE4.into()));
    assert_eq!(fa.zone, None);
    let fb = *flow_of(&v4, 41002, "203.0.113.5").expect("flow B");
    assert_eq!(fb.reply.dst, seen_b.ip());
    let fc = *flow_of(&v4, 41003, "10.20.0.5").expect("flow C");
    assert!(!fc.is_src_nat(), "{fc}");
    assert_eq!(fc.reply.dst, pod4);
    let v6 = dump(&t.node, Family::V6);
    assert!(v6.iter().all(|f| f.family == Family::V6));
    let fd = *flow_of(&v6, 41004, "2001:db8:5::5").expect("flow D");
    assert!(!fd.is_src_nat());
    assert_eq!(fd.reply.dst, IpAddr::from(POD6));
    assert!(v4.iter().all(|f| f.original.src.is_ipv4()));

    // The independent observer sees the same entries, ids included.
    match (cli_udp(&t.node, "ipv4"), cli_udp(&t.node, "ipv6")) {
        (Some(cli4), Some(cli6)) => {
            assert_eq!(ours_udp(&v4), cli4);
            assert_eq!(ours_udp(&v6), cli6);
        }
        _ => eprintln!("conntrack CLI not available: comparison skipped"),
    }

    let target = addr("11.22.33.44");
    let report = t.node.enter(|| {
        let mut conn = Conntrack::open().unwrap();
        conntrack::reconcile(
            &mut conn,
            &[Family::V4, Family::V6],
            Protocols::Connectionless,
            |f| f.original.dst == target,
        )
        .unwrap()
    });
    assert_eq!(report.matched, 2, "{report:?}");
    assert_eq!(report.deleted, 2, "{report:?}");
    assert_eq!((report.already_gone, report.failed), (0, 0), "{report:?}");
    assert_eq!(report.examined, (v4.len() + v6.len()) as u64, "{report:?}");

    let after4 = dump(&t.node, Family::V4);
    assert!(
        after4.iter().all(|f| f.original.dst != target),
        "{after4:#?}"
    );
    // The others are untouched: the same entries, same ids.
    assert_eq!(flow_of(&after4, 41002, "203.0.113.5").unwrap().id, fb.id);
    assert_eq!(flow_of(&after4, 41003, "10.20.0.5").unwrap().id, fc.id);
    let after6 = dump(&t.node, Family::V6);
    assert_eq!(flow_of(&after6, 41004, "2001:db8:5::5").unwrap().id, fd.id);
}

#[test]
fn a_deleted_flow_is_translated_again_by_the_rules_in_force() {
    root_or_skip!();
    let t = Topology::new("ct-renat");
    commit(&t, &[]);
    let pod4: IpAddr = POD4.into();
    let mut moved = Stream::new(&t, pod4, 42001, "11.22.33.44", 6001);
    let mut kept = Stream::new(&t, pod4, 42002, "203.0.113.5", 6002);
    assert_eq!(moved.send().ip(), IpAddr::from(NODE4));
    let kept_seen = kept.send();
    assert_eq!(kept_seen.ip(), IpAddr::from(NODE4));
    let before = dump(&t.node, Family::V4);
    let old = *flow_of(&before, 42001, "11.22.33.44").unwrap();
    let kept_flow = *flow_of(&before, 42002, "203.0.113.5").unwrap();

    // 11.0.0.0/8 becomes a non-masquerade range.
    commit(&t, &["11.0.0.0/8"]);
    // The problem: the open flow keeps its old translation, datagram after datagram.
    for _ in 0..3 {
        assert_eq!(moved.send().ip(), IpAddr::from(NODE4));
    }

    let moved_range: ipnet::IpNet = "11.0.0.0/8".parse().unwrap();
    let report = t.node.enter(|| {
        let mut conn = Conntrack::open().unwrap();
        conntrack::reconcile(&mut conn, &[Family::V4], Protocols::Connectionless, |f| {
            moved_range.contains(&f.original.dst)
        })
        .unwrap()
    });
    assert_eq!((report.matched, report.deleted), (1, 1), "{report:?}");

    // The next datagram is a new flow, evaluated by the current rules: the pod's address.
    assert_eq!(moved.send(), SocketAddr::new(pod4, 42001));
    let after = dump(&t.node, Family::V4);
    let new = flow_of(&after, 42001, "11.22.33.44").unwrap();
    // A new entry (its id may well equal the old one's: the kernel reuses the memory).
    assert!(!new.is_src_nat(), "{new}");
    assert_ne!(new.reply, old.reply);
    // The flow whose decision did not change keeps its entry and its translation.
    assert_eq!(
        flow_of(&after, 42002, "203.0.113.5").unwrap().id,
        kept_flow.id
    );
    assert_eq!(kept.send(), kept_seen);
}

fn synthetic(family: Family, protocol: u8, src: &str, dst: &str, l4: L4, reply_l4: L4) -> Flow {
    Flow {
        family,
        protocol,
        original: Tuple {
            src: addr(src),
            dst: addr(dst),
            l4,
        },
        reply: Tuple {
            src: addr(dst),
            dst: addr(src),
            l4: reply_l4,
        },
        status: 0,
        id: None,
        zone: None,
        mark: None,
        timeout: None,
    }
}

fn ports(src: u16, dst: u16) -> L4 {
    L4::Ports { src, dst }
}

/// Entries made through ctnetlink itself in a namespace of their own: every protocol the
/// filter distinguishes, zones, and a tuple reused by a newer entry.
#[test]
fn zones_ids_and_protocols_are_respected() {
    root_or_skip!();
    let ns = Netns::new(format!("nma-{}-ct-synth", std::process::id()));
    let udp = synthetic(
        Family::V4,
        IPPROTO_UDP,
        "10.244.1.2",
        "11.22.33.44",
        ports(43001, 53),
        ports(53, 43001),
    );
    let udp_zone7 = Flow {
        zone: Some(7),
        mark: Some(0x2a),
        ..udp
    };
    let icmp = synthetic(
        Family::V4,
        IPPROTO_ICMP,
        "10.244.1.2",
        "11.22.33.44",
        L4::Icmp {
            id: 77,
            ty: 8,
            code: 0,
        },
        L4::Icmp {
            id: 77,
            ty: 0,
            code: 0,
        },
    );
    let tcp = synthetic(
        Family::V4,
        IPPROTO_TCP,
        "10.244.1.2",
        "11.22.33.44",
        ports(43002, 443),
        ports(443, 43002),
    );
    let gre = synthetic(
        Family::V4,
        47,
        "10.244.1.2",
        "11.22.33.44",
        ports(0, 0),
        ports(0, 0),
    );
    let udp6 = synthetic(
        Family::V6,
        IPPROTO_UDP,
        "fd00:10:244:1::2",
        "2001:db8:5::5",
        ports(43003, 53),
        ports(53, 43003),
    );
    let icmp6 = synthetic(
        Family::V6,
        IPPROTO_ICMPV6,
        "fd00:10:244:1::2",
        "2001:db8:5::5",
        L4::Icmp {
            id: 78,
            ty: 128,
            code: 0,
        },
        L4::Icmp {
            id: 78,
            ty: 129,
            code: 0,
        },
    );
    let all = [udp, udp_zone7, icmp, tcp, gre, udp6, icmp6];
    ns.enter(|| {
        let mut conn = Conntrack::open().unwrap();
        assert_eq!(conn.create(&all, 600).unwrap(), all.len() as u64);
        // A second create of the same entry is refused, never merged.
        assert_eq!(
            conn.create(&[udp], 600).unwrap_err().errno(),
            Some(libc::EEXIST)
        );
        let mut seen = Vec::new();
        for fam in [Family::V4, Family::V6] {
            conn.dump(fam, |f| seen.push(*f)).unwrap();
        }
        assert_eq!(seen.len(), all.len(), "{seen:#?}");
        for want in &all {
            let got = seen
                .iter()
                .find(|f| f.original == want.original && f.zone == want.zone)
                .unwrap_or_else(|| panic!("{want} not dumped: {seen:#?}"));
            assert_eq!((got.protocol, got.reply), (want.protocol, want.reply));
            assert_eq!(got.family, want.family);
            if want.mark.is_some() {
                assert_eq!(got.mark, want.mark);
            }
            assert!(got.id.is_some() && got.timeout.is_some_and(|t| t <= 600));
        }

        // Zone 7 only: its twin in the default zone stays.
        let r = conntrack::reconcile(&mut conn, &[Family::V4], Protocols::All, |f| {
            f.zone == Some(7)
        })
        .unwrap();
        assert_eq!((r.matched, r.deleted), (1, 1), "{r:?}");
        let left = |conn: &mut Conntrack| {
            let mut v = Vec::new();
            for fam in [Family::V4, Family::V6] {
                conn.dump(fam, |f| v.push(*f)).unwrap();
            }
            v
        };
        let now = left(&mut conn);
        assert!(
            now.iter()
                .any(|f| f.original == udp.original && f.zone.is_none())
        );
        assert!(!now.iter().any(|f| f.zone == Some(7)));

        // The flow ends and the pod opens it again (same original tuple, new entry, another
        // translation): a delete aimed at the old entry leaves the new one alone, although
        // the kernel may give the new entry the old id (it derives ids from the entry's
        // memory address and original tuple, and reuses the memory at once).
        let old = *now.iter().find(|f| f.original == udp.original).unwrap();
        assert_eq!(conn.delete(&[old]).unwrap().deleted, 1);
        let renewed = Flow {
            reply: Tuple {
                dst: addr("198.51.100.1"),
                ..udp.reply
            },
            ..udp
        };
        conn.create(&[renewed], 600).unwrap();
        let r = conn.delete(&[old]).unwrap();
        assert_eq!((r.deleted, r.already_gone, r.failed), (0, 1, 0), "{r:?}");
        let now = left(&mut conn);
        let new = now.iter().find(|f| f.original == udp.original).unwrap();
        assert_eq!(new.reply.dst, addr("198.51.100.1"));

        // Connectionless: UDP, ICMP, ICMPv6, both families; TCP and GRE stay.
        let r = conntrack::reconcile(
            &mut conn,
            &[Family::V4, Family::V6],
            Protocols::Connectionless,
            |_| true,
        )
        .unwrap();
        assert_eq!((r.examined, r.matched, r.deleted), (6, 4, 4), "{r:?}");
        let now = left(&mut conn);
        let mut protos: Vec<u8> = now.iter().map(|f| f.protocol).collect();
        protos.sort();
        assert_eq!(protos, [IPPROTO_TCP, 47]);
        // All: TCP too; GRE is never touched.
        let r = conntrack::reconcile(&mut conn, &[Family::V4], Protocols::All, |_| true).unwrap();
        assert_eq!((r.matched, r.deleted), (1, 1), "{r:?}");
        let now = left(&mut conn);
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].protocol, 47);
    });
}

/// Writes `tests/fixtures/conntrack-v4.bin` and `-v6.bin` for the decoder's unit tests: real
/// datagrams through the agent's NAT table (masqueraded, not, IPv6, ICMP from busybox ping
/// when present) with accounting and timestamps on (attributes the decoder must skip), plus
/// entries in zone 7 with a mark. Run when the fixtures need renewing:
/// `cargo test --test conntrack capture -- --ignored`.
#[test]
#[ignore]
fn capture_fixtures() {
    root_or_skip!();
    let t = Topology::new("ct-capture");
    t.node.sysctl("net.netfilter.nf_conntrack_acct", "1");
    t.node.sysctl("net.netfilter.nf_conntrack_timestamp", "1");
    commit(&t, &[]);
    let pod4: IpAddr = POD4.into();
    Stream::new(&t, pod4, 41001, "11.22.33.44", 5001).send();
    Stream::new(&t, pod4, 41003, "10.20.0.5", 5003).send();
    Stream::new(&t, POD6.into(), 41004, "2001:db8:5::5", 5004).send();
    for target in ["11.22.33.44", "2001:db8:5::5"] {
        let _ = t
            .pod
            .cmd("busybox")
            .args(["ping", "-c", "1", "-W", "1", target])
            .output();
    }
    let zoned = Flow {
        zone: Some(7),
        mark: Some(0x2a),
        ..synthetic(
            Family::V4,
            IPPROTO_TCP,
            "10.244.1.2",
            "192.0.2.7",
            ports(43002, 443),
            ports(443, 43002),
        )
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    t.node.enter(|| {
        let mut conn = Conntrack::open().unwrap();
        conn.create(&[zoned], 600).unwrap();
        for (fam, name) in [
            (Family::V4, "conntrack-v4.bin"),
            (Family::V6, "conntrack-v6.bin"),
        ] {
            let bytes = conn.dump_raw(fam).unwrap();
            std::fs::write(dir.join(name), &bytes).unwrap();
            eprintln!("wrote {} bytes to {name}", bytes.len());
        }
    });
}

/// Replaces the config file atomically (a rename, as a ConfigMap update does).
fn write_config(t: &Topology, text: &str) -> std::path::PathBuf {
    let path = t.dir.join("ip-masq-agent");
    nma_testkit::write_atomic(&path, text);
    path
}

/// Sends one datagram every 50 ms on `stream` until the remote sees `want` as the source
/// address; returns how long that took after the first send, or `None` after `limit`.
fn sees_within(stream: &mut Stream, want: IpAddr, limit: Duration) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() <= limit {
        if stream.send().ip() == want {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The daemon with `args`, its config at `text`, after its first commit.
fn agent_with(t: &Topology, text: &str, args: &[&str]) -> nma_testkit::Agent {
    let path = write_config(t, text);
    let agent = t
        .agent_builder()
        .config(&path)
        .args(["--metrics-address", "off"])
        .args(args)
        .spawn();
    assert!(
        agent.wait_commits(1, Duration::from_secs(10)).is_some(),
        "{}",
        agent.log()
    );
    agent
}

#[test]
fn the_daemon_moves_open_flows_to_the_new_decision_and_leaves_the_others() {
    root_or_skip!();
    let t = Topology::new("ct-daemon");
    let agent = agent_with(&t, "nonMasqueradeCIDRs: [10.0.0.0/8]\n", &[]);
    let (pod4, node4): (IpAddr, IpAddr) = (POD4.into(), nma_testkit::NODE4.into());
    let mut moved = Stream::new(&t, pod4, 43001, "11.22.33.44", 6101);
    let mut kept = Stream::new(&t, pod4, 43002, "203.0.113.5", 6102);
    assert_eq!(moved.send().ip(), node4);
    let kept_seen = kept.send();
    assert_eq!(kept_seen.ip(), node4);
    let kept_id = flow_of(&dump(&t.node, Family::V4), 43002, "203.0.113.5")
        .unwrap()
        .id;

    // The VPN range becomes non-masquerade: within a second the remote sees the pod.
    write_config(&t, "nonMasqueradeCIDRs: [10.0.0.0/8, 11.0.0.0/8]\n");
    let took = sees_within(&mut moved, pod4, Duration::from_secs(1));
    assert!(
        took.is_some(),
        "still masqueraded after 1 s:\n{}",
        agent.log()
    );
    eprintln!("non-masquerade reached the open flow after {took:?}");
    assert!(
        agent.wait_log("conntrack: 1 of", Duration::from_secs(2)),
        "{}",
        agent.log()
    );
    // The flow whose decision did not change keeps its entry and its translation.
    let after = dump(&t.node, Family::V4);
    assert_eq!(flow_of(&after, 43002, "203.0.113.5").unwrap().id, kept_id);
    assert_eq!(kept.send(), kept_seen);

    // And back: a masqueradeCIDRs carve-out makes it masqueraded again.
    write_config(
        &t,
        "nonMasqueradeCIDRs: [10.0.0.0/8, 11.0.0.0/8]\nmasqueradeCIDRs: [11.22.33.0/24]\n",
    );
    let took = sees_within(&mut moved, node4, Duration::from_secs(1));
    assert!(
        took.is_some(),
        "still not masqueraded after 1 s:\n{}",
        agent.log()
    );
    eprintln!("masquerade reached the open flow after {took:?}");
    assert_eq!(kept.send(), kept_seen);
    assert_eq!(
        flow_of(&dump(&t.node, Family::V4), 43002, "203.0.113.5")
            .unwrap()
            .id,
        kept_id
    );
}

#[test]
fn with_reconciliation_off_an_open_flow_keeps_its_old_translation() {
    root_or_skip!();
    let t = Topology::new("ct-off");
    let agent = agent_with(
        &t,
        "nonMasqueradeCIDRs: [10.0.0.0/8]\n",
        &["--conntrack-reconcile", "off"],
    );
    let (pod4, node4): (IpAddr, IpAddr) = (POD4.into(), nma_testkit::NODE4.into());
    let mut moved = Stream::new(&t, pod4, 43011, "11.22.33.44", 6111);
    assert_eq!(moved.send().ip(), node4);
    write_config(&t, "nonMasqueradeCIDRs: [10.0.0.0/8, 11.0.0.0/8]\n");
    assert!(
        agent.wait_log("config file changed", Duration::from_secs(5)),
        "{}",
        agent.log()
    );
    // The problem the reconciliation solves: the flow keeps the node's address.
    assert_eq!(
        sees_within(&mut moved, pod4, Duration::from_millis(1500)),
        None
    );
    // A new flow (another source port) to the same destination gets the new decision.
    let mut fresh = Stream::new(&t, pod4, 43012, "11.22.33.44", 6112);
    assert_eq!(fresh.send().ip(), pod4);
    assert!(!agent.log().contains("conntrack:"), "{}", agent.log());
}

/// A kube-proxy-like Service in a foreign table of the node namespace: UDP to
/// `service:port` is DNAT'ed to `endpoint` (same port) at prerouting (pods) and output (the
/// node itself).
fn service(t: &Topology, name: &str, service: &str, port: u16, endpoint: &str) {
    let rule = format!("ip daddr {service} udp dport {port} dnat to {endpoint}");
    let script = format!(
        "table ip {name} {{\n\
         \tchain pre {{ type nat hook prerouting priority -100; policy accept; {rule}; }}\n\
         \tchain out {{ type nat hook output priority -100; policy accept; {rule}; }}\n\
         }}\n"
    );
    t.node.nft_file(&script);
}

/// Issue 17, finding 4: a flow is judged where NAT is decided, at postrouting, by its
/// destination after DNAT. A flow through a Service whose endpoint's range becomes
/// non-masqueraded moves to the pod's source; a flow through a Service address in that
/// range, whose endpoint is elsewhere, keeps its entry and its translation.
#[test]
fn flows_through_a_service_are_judged_by_their_endpoint() {
    root_or_skip!();
    let t = Topology::new("ct-dnat");
    t.host("203.0.113.2");
    // The Service range 10.96.0.0/12 lies in 10/8 (never masqueraded); the endpoint of the
    // first Service is outside it, so postrouting masquerades the flow to it.
    service(&t, "svc-a", "10.96.0.10", 6201, "203.0.113.2");
    // A "Service" address in the range that will change, with its endpoint elsewhere.
    service(&t, "svc-b", "203.0.113.100", 6202, "11.22.33.44");
    let agent = agent_with(&t, "nonMasqueradeCIDRs: [10.0.0.0/8]\n", &[]);
    let (pod4, node4): (IpAddr, IpAddr) = (POD4.into(), nma_testkit::NODE4.into());
    let mut via_a = Stream::new(&t, pod4, 44001, "10.96.0.10", 6201);
    let mut via_b = Stream::new(&t, pod4, 44002, "203.0.113.100", 6202);
    assert_eq!(via_a.send().ip(), node4);
    let b_seen = via_b.send();
    assert_eq!(b_seen.ip(), node4);
    let before = dump(&t.node, Family::V4);
    let a = *flow_of(&before, 44001, "10.96.0.10").expect("flow through Service A");
    assert!(a.is_dst_nat() && a.is_src_nat(), "{a}");
    assert_eq!(a.reply.src, addr("203.0.113.2"), "{a}");
    let b_id = flow_of(&before, 44002, "203.0.113.100")
        .expect("flow through Service B")
        .id;

    write_config(&t, "nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n");
    // The far end sees the pod's address on the flow through Service A.
    let took = sees_within(&mut via_a, pod4, Duration::from_secs(2));
    assert!(
        took.is_some(),
        "the flow through the Service kept the node's source:\n{}",
        agent.log()
    );
    eprintln!("the endpoint's new decision reached the flow through the Service after {took:?}");
    assert!(
        agent.wait_log("conntrack: 1 of", Duration::from_secs(2)),
        "{}",
        agent.log()
    );
    // Service B's flow was left alone: the same entry (nothing was sent on it since), and
    // the same translation.
    let after = dump(&t.node, Family::V4);
    let b = flow_of(&after, 44002, "203.0.113.100").unwrap_or_else(|| {
        panic!(
            "the flow through Service B was reset although its endpoint's decision did not \
             change:\n{}",
            agent.log()
        )
    });
    assert_eq!(b.id, b_id);
    assert_eq!(via_b.send(), b_seen);
}
