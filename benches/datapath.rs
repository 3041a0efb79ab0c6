//! Data-path benchmark: new connections per second through a node namespace, every packet a
//! new flow (a new conntrack entry and a NAT decision) to a destination that is masqueraded,
//! so ip-masq-agent's chain walks its whole list. Compared in the same run: the agent's
//! table, ip-masq-agent's chain (iptables nf_tables and legacy backends), and no NAT at all.
//!
//! A second section measures the agent's table with the scope keys against the same table
//! without them, all at 10,000 non-masquerade prefixes: `sourceCIDRs` (10,000 prefixes and
//! 64, the pod's among them), `egressInterfaces` (the egress interface and a wildcard, and a
//! 64-name list), `snatTo` (a secondary node address) and combinations. Its cases are
//! interleaved within each run, so a change in the machine's load falls on all of them.
//!
//! Topology per measurement (fresh namespaces, so conntrack starts empty):
//! pod (sender) -> node (rules under test, forwarding) -> remote (counts arrivals from the
//! expected source in a raw-priority nft rule, then drops them). Needs root.
//!
//! A third section measures `snatRules` (issue 21) at 10,000 non-masquerade prefixes: 1, 64
//! and 10,000 entries (the pod's /24 among them, its flows leaving with [`SNAT_ADDR`]) next to
//! none, and 10,000 entries that do not hold the pod (the lookup misses, the fallback
//! masquerades), interleaved like the scopes.
//!
//! A fourth section measures the exemptions cut into block sets (`--max-set-prefixes`) at
//! [`BLOCK_PREFIXES`] prefixes: one set, the default cut, and finer cuts, interleaved. Every
//! flow goes to a masqueraded destination.
//!
//! `cargo bench --bench datapath [-- --sizes 64,1000,10000 --runs 3 --packets 150000]`
//! runs every section; `--rules` only the first (agent, iptables, no NAT), `--scopes` only
//! the second, `--snat-rules` only the third, `--blocks` only the fourth.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use nft_masq_agent::config::{Config, Interface, PolicyFlags, SnatRule, SnatTarget, entries};
use nft_masq_agent::kernel::nft::{self, NftSocket};
use nft_masq_agent::model::{self, TableFlags};
use nma_testkit::{Netns, Topology};
use support::{PREFIX, arg, flag, ip_masq_agent_text, prefixes, record_value};

const DST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
const POD: &str = "10.244.1.2";
const NODE: &str = "198.51.100.1";
/// The secondary node address (on the node's egress interface) that `snatTo` names.
const SNAT_ADDR: &str = "198.51.100.3";
/// Non-masquerade prefixes in every case of the scopes section.
const SCOPE_PREFIXES: usize = 10_000;
/// The table size of the block-set section: the largest `--max-prefixes` allows by default.
const BLOCK_PREFIXES: usize = 150_000;
/// Distinct source ports: with every destination port this gives more distinct flows than
/// one measurement sends, so no packet reuses a conntrack entry.
const SOCKETS: usize = 16;

/// Fresh pod, node and remote namespaces (conntrack starts empty), IPv4 only, the remote
/// hosting [`DST`].
fn topology(tag: &str) -> Topology {
    Topology::builder(tag)
        .prefix(PREFIX)
        .ipv6(false)
        .dests4(&["203.0.113.5"])
        .build()
}

/// In the remote: count packets from `source`, drop everything before conntrack.
fn sink(remote: &Netns, source: &str) {
    let rules = format!(
        "table ip nma-sink {{\n chain pre {{\n  type filter hook prerouting priority raw; policy accept;\n  \
         iifname \"eth0\" ip saddr {source} udp dport 1-65535 counter drop\n  iifname \"eth0\" udp dport 1-65535 drop\n }}\n}}\n"
    );
    remote.nft_file(&rules);
}

fn arrived(remote: &Netns) -> u64 {
    let out = remote
        .cmd("nft")
        .args(["list", "chain", "ip", "nma-sink", "pre"])
        .output()
        .expect("nft");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("packets ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    None,
    Agent,
    IptNft,
    IptLegacy,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::None => "no NAT rules",
            Mode::Agent => "agent (nft set lookup)",
            Mode::IptNft => "ip-masq-agent chain, iptables-nft",
            Mode::IptLegacy => "ip-masq-agent chain, iptables-legacy",
        }
    }
}

/// Commits the agent's table for `config` in the node, through the library as the agent does.
fn commit(node: &Netns, config: &Config, flags: &PolicyFlags) {
    let table = model::desired(config, flags, TableFlags::default());
    node.enter(|| {
        let mut sock = NftSocket::open().expect("socket");
        nft::replace_table(&mut sock, &table).expect("commit");
    });
}

fn install(mode: Mode, node: &Netns, n: usize) {
    let flags = PolicyFlags::default();
    let mut config = Config::defaults(&flags);
    config.non_masquerade_cidrs = entries(prefixes(n));
    match mode {
        Mode::None => {}
        Mode::Agent => commit(node, &config, &flags),
        Mode::IptNft | Mode::IptLegacy => {
            let prog = if mode == Mode::IptNft {
                "iptables-nft"
            } else {
                "iptables-legacy"
            };
            // The chain, plus the POSTROUTING jump ip-masq-agent ensures once.
            let text = ip_masq_agent_text(&prefixes(n)).replacen(
                ":IP-MASQ-AGENT - [0:0]\n",
                ":IP-MASQ-AGENT - [0:0]\n-A POSTROUTING -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT\n",
                1,
            );
            node.restore(&format!("{prog}-restore"), &["--noflush"], &text);
        }
    }
}

/// Sends `packets` datagrams, each a new flow, as fast as one thread can; returns
/// (sent, elapsed).
fn blast(pod: &Netns, packets: usize) -> (usize, Duration) {
    pod.enter(|| {
        let socks: Vec<UdpSocket> = (0..SOCKETS)
            .map(|_| UdpSocket::bind("0.0.0.0:0").expect("bind"))
            .collect();
        // Warm up neighbour entries on the way, outside the timing.
        socks[0]
            .send_to(b"w", SocketAddrV4::new(DST, 9))
            .expect("send");
        std::thread::sleep(Duration::from_millis(100));
        let payload = [0u8; 16];
        let t0 = Instant::now();
        let mut sent = 0;
        let mut port: u16 = 10;
        'outer: loop {
            for s in &socks {
                if sent == packets {
                    break 'outer;
                }
                if s.send_to(&payload, SocketAddrV4::new(DST, port)).is_ok() {
                    sent += 1;
                }
            }
            port = if port == u16::MAX { 10 } else { port + 1 };
        }
        (sent, t0.elapsed())
    })
}

/// Sends `packets` new flows from the pod and counts those that reach the remote from
/// `source`; returns (arriving flows per second, fraction of the sent ones lost).
fn measure(t: &Topology, source: &str, packets: usize) -> (f64, f64) {
    sink(&t.remote, source);
    let (sent, elapsed) = blast(&t.pod, packets);
    std::thread::sleep(Duration::from_millis(200));
    // The warm-up datagram arrives too.
    let got = arrived(&t.remote).saturating_sub(1);
    (
        got as f64 / elapsed.as_secs_f64(),
        (sent as f64 - got as f64) / sent as f64,
    )
}

fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "64,1000,10000".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let runs: usize = arg("--runs").map_or(Ok(3), |s| s.parse())?;
    let packets: usize = arg("--packets").map_or(Ok(150_000), |s| s.parse())?;
    anyhow::ensure!(
        runs > 0 && packets > 0,
        "--runs and --packets must be positive"
    );
    let chosen = [
        flag("--rules"),
        flag("--scopes"),
        flag("--snat-rules"),
        flag("--blocks"),
    ];
    let all = !chosen.iter().any(|&c| c);
    let [rules, scopes, snat_rules, blocks] = chosen.map(|c| c || all);
    if rules {
        rules_section(&sizes, runs, packets);
    }
    if scopes {
        scopes_section(runs, packets);
    }
    if snat_rules {
        snat_rules_section(runs, packets);
    }
    if blocks {
        blocks_section(runs, packets);
    }
    Ok(())
}

/// The agent's table, ip-masq-agent's chain (both backends) and no NAT, at each size.
fn rules_section(sizes: &[usize], runs: usize, packets: usize) {
    println!(
        "### Data path: new flows per second to a masqueraded destination ({runs} runs of {packets} packets; median (min-max))\n"
    );
    println!("| rules | prefixes | flows/s arriving, translated | loss | vs. 64 prefixes |");
    println!("|---|---:|---:|---:|---:|");
    let mut baseline: Option<f64> = None;
    let mut cases: Vec<(Mode, usize)> = vec![(Mode::None, 0)];
    for mode in [Mode::Agent, Mode::IptNft, Mode::IptLegacy] {
        for &n in sizes {
            cases.push((mode, n));
        }
    }
    let mut first_rate: std::collections::HashMap<&str, f64> = Default::default();
    for (mode, n) in cases {
        let mut rates = Vec::new();
        let mut lost = 0.0;
        for i in 0..runs {
            let t = topology(&format!("dp{i}"));
            install(mode, &t.node, n);
            let (rate, loss) = measure(&t, if mode == Mode::None { POD } else { NODE }, packets);
            rates.push(rate);
            lost += loss / runs as f64;
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        let rel = match (mode, first_rate.get(mode.name())) {
            (Mode::None, _) => {
                baseline = Some(median);
                "—".to_string()
            }
            (_, Some(first)) => format!("{:.0} %", median / first * 100.0),
            (_, None) => {
                first_rate.insert(mode.name(), median);
                "100 %".to_string()
            }
        };
        println!(
            "| {} | {} | {:.0} ({:.0}-{:.0}) | {:.2} % | {rel} |",
            mode.name(),
            if mode == Mode::None {
                "-".into()
            } else {
                n.to_string()
            },
            median,
            rates[0],
            rates[rates.len() - 1],
            lost * 100.0
        );
        let key = match mode {
            Mode::None => "datapath.none".to_string(),
            Mode::Agent => format!("datapath.agent.{n}"),
            Mode::IptNft => format!("datapath.iptables-nft.{n}"),
            Mode::IptLegacy => format!("datapath.iptables-legacy.{n}"),
        };
        record_value(&key, median);
    }
    if let Some(b) = baseline {
        println!("\nNo NAT at all: {b:.0} flows/s (forwarding without conntrack).\n");
    }
}

/// One configuration of the scopes section.
struct ScopeCase {
    /// Suffix of its `datapath.scopes.` result key.
    key: &'static str,
    /// Row label.
    name: &'static str,
    /// `sourceCIDRs` prefixes (the pod's among them); 0: the key is not set.
    sources: usize,
    /// `egressInterfaces`; empty: the key is not set.
    egress: Vec<String>,
    /// `snatTo` [`SNAT_ADDR`].
    snat: bool,
}

fn scope_cases() -> Vec<ScopeCase> {
    let pair = || vec!["eth0".to_string(), "wg*".to_string()];
    // The egress interface, a wildcard and 62 other names.
    let many = || {
        let mut v = pair();
        v.extend((1..=62).map(|i| format!("ens{i}")));
        v
    };
    let case = |key, name, sources, egress, snat| ScopeCase {
        key,
        name,
        sources,
        egress,
        snat,
    };
    vec![
        case("none", "no scope", 0, vec![], false),
        case(
            "source.10000",
            "`sourceCIDRs`, 10,000 prefixes",
            10_000,
            vec![],
            false,
        ),
        case("source.64", "`sourceCIDRs`, 64 prefixes", 64, vec![], false),
        case(
            "egress",
            "`egressInterfaces: [eth0, wg*]`",
            0,
            pair(),
            false,
        ),
        case(
            "egress.64",
            "`egressInterfaces`, 64 names and wildcards",
            0,
            many(),
            false,
        ),
        case("snat", "`snatTo` a secondary node address", 0, vec![], true),
        case(
            "source-egress",
            "`sourceCIDRs` 10,000 + `egressInterfaces: [eth0, wg*]`",
            10_000,
            pair(),
            false,
        ),
        case(
            "all",
            "`sourceCIDRs` 10,000 + `egressInterfaces: [eth0, wg*]` + `snatTo`",
            10_000,
            pair(),
            true,
        ),
    ]
}

/// `n` distinct IPv4 /24 source prefixes, never adjacent, with the pod's (10.244.1.0/24) in
/// the middle of the set.
fn source_prefixes(n: usize) -> Vec<IpNet> {
    let pod = u32::from(Ipv4Addr::new(10, 244, 1, 0));
    let first = pod - (n as u32 / 2) * 512;
    (0..n as u32)
        .map(|i| {
            let a = Ipv4Addr::from(first + i * 512);
            IpNet::V4(Ipv4Net::new(a, 24).expect("valid /24"))
        })
        .collect()
}

fn scope_config(case: &ScopeCase, flags: &PolicyFlags) -> Config {
    let mut config = Config::defaults(flags);
    config.non_masquerade_cidrs = entries(prefixes(SCOPE_PREFIXES));
    if case.sources > 0 {
        config.source_cidrs = entries(source_prefixes(case.sources));
    }
    config.egress_interfaces = entries(
        case.egress
            .iter()
            .map(|n| n.parse::<Interface>().expect("interface name")),
    );
    if case.snat {
        let a = SNAT_ADDR.parse().expect("address");
        config.snat_to = entries([SnatTarget { first: a, last: a }]);
    }
    config
}

/// Before measuring: with the pod outside `sourceCIDRs`, or the egress interface not in
/// `egressInterfaces`, the flows leave the node untranslated, so the scope rules are in the
/// path the measured packets take.
fn controls(flags: &PolicyFlags) {
    let case = |key: &str| {
        scope_cases()
            .into_iter()
            .find(|c| c.key == key)
            .expect("case")
    };
    let pod: IpNet = "10.244.1.0/24".parse().expect("prefix");
    let mut outside = scope_config(&case("source.64"), flags);
    outside.source_cidrs.retain(|e| !e.value.contains(&pod));
    let mut elsewhere = scope_config(&case("none"), flags);
    elsewhere.egress_interfaces = entries(["wg*", "ens1"].map(|n| n.parse().expect("name")));
    for (what, config) in [
        ("pod outside sourceCIDRs", outside),
        ("eth0 not in egressInterfaces", elsewhere),
    ] {
        let t = topology("ctl");
        commit(&t.node, &config, flags);
        let (_, loss) = measure(&t, POD, 2000);
        assert!(
            loss < 0.01,
            "control {what}: {:.1} % of the flows did not arrive untranslated",
            loss * 100.0
        );
    }
}

/// The agent's table with each scope key against the same table without, at
/// [`SCOPE_PREFIXES`] non-masquerade prefixes. Each run measures every case in turn, each in
/// fresh namespaces.
fn scopes_section(runs: usize, packets: usize) {
    let flags = PolicyFlags::default();
    let cases = scope_cases();
    controls(&flags);
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut lost = vec![0.0; cases.len()];
    for i in 0..runs {
        for (c, case) in cases.iter().enumerate() {
            let t = topology(&format!("sc{i}"));
            if case.snat {
                // Same subnet as the primary address: a secondary one, never masquerade's pick.
                t.node.ip(&format!("addr add {SNAT_ADDR}/24 dev eth0"));
            }
            commit(&t.node, &scope_config(case, &flags), &flags);
            let (rate, loss) = measure(&t, if case.snat { SNAT_ADDR } else { NODE }, packets);
            rates[c].push(rate);
            lost[c] += loss / runs as f64;
        }
    }
    println!(
        "### Data path with scopes: new flows per second, agent's table at {SCOPE_PREFIXES} non-masquerade prefixes ({runs} runs of {packets} packets, cases interleaved; median (min-max))\n"
    );
    println!("| scope | flows/s arriving, translated | loss | vs. no scope |");
    println!("|---|---:|---:|---:|");
    let mut unscoped = None;
    let mut worst: Option<f64> = None;
    for ((case, mut r), lost) in cases.iter().zip(rates).zip(lost) {
        r.sort_by(f64::total_cmp);
        let median = r[r.len() / 2];
        let rel = match unscoped {
            None => {
                unscoped = Some(median);
                "1.00".to_string()
            }
            Some(u) => {
                let x = median / u;
                worst = Some(worst.map_or(x, |w: f64| w.min(x)));
                record_value(&format!("datapath.scopes.{}.ratio", case.key), x);
                format!("{x:.2}")
            }
        };
        println!(
            "| {} | {median:.0} ({:.0}-{:.0}) | {:.2} % | {rel} |",
            case.name,
            r[0],
            r[r.len() - 1],
            lost * 100.0
        );
        record_value(&format!("datapath.scopes.{}", case.key), median);
    }
    if let Some(w) = worst {
        record_value("datapath.scopes.worst.ratio", w);
        println!("\nLowest ratio of a scoped case to no scope: {w:.2}.\n");
    }
}

/// One configuration of the `snatRules` section: `entries` /24 entries (0: the key is not
/// set), the pod's among them when `holds_pod`.
struct RulesCase {
    key: &'static str,
    name: &'static str,
    entries: usize,
    holds_pod: bool,
}

fn rules_cases() -> Vec<RulesCase> {
    let case = |key, name, entries, holds_pod| RulesCase {
        key,
        name,
        entries,
        holds_pod,
    };
    vec![
        case("none", "no `snatRules` (masquerade)", 0, false),
        case("1", "1 entry", 1, true),
        case("64", "64 entries", 64, true),
        case("10000", "10,000 entries", 10_000, true),
        case(
            "10000.miss",
            "10,000 entries, the pod in none (lookup misses, masquerade)",
            10_000,
            false,
        ),
    ]
}

fn rules_config(case: &RulesCase, flags: &PolicyFlags) -> Config {
    let mut config = Config::defaults(flags);
    config.non_masquerade_cidrs = entries(prefixes(SCOPE_PREFIXES));
    let pod: IpNet = "10.244.1.0/24".parse().expect("prefix");
    let snat: std::net::IpAddr = SNAT_ADDR.parse().expect("address");
    let mut list = source_prefixes(case.entries.max(1));
    if case.entries == 1 {
        list = vec![pod];
    }
    if !case.holds_pod {
        // The pod's /24 moved out of every entry, next to them.
        list.retain(|p| *p != pod);
        list.push("10.244.2.0/24".parse().expect("prefix"));
    }
    config.snat_rules = entries(
        list.into_iter()
            .take(case.entries)
            .enumerate()
            .map(|(i, p)| {
                let to = if p == pod {
                    snat
                } else {
                    std::net::IpAddr::from(Ipv4Addr::new(192, 0, 2, 1 + (i % 250) as u8))
                };
                SnatRule {
                    source_cidrs: vec![p],
                    snat_to: vec![SnatTarget {
                        first: to,
                        last: to,
                    }],
                }
            }),
    );
    config
}

/// `snatRules` with 1, 64 and 10,000 entries against none, at [`SCOPE_PREFIXES`]
/// non-masquerade prefixes; each run measures every case in turn, in fresh namespaces.
fn snat_rules_section(runs: usize, packets: usize) {
    let flags = PolicyFlags::default();
    let cases = rules_cases();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut lost = vec![0.0; cases.len()];
    for i in 0..runs {
        for (c, case) in cases.iter().enumerate() {
            let t = topology(&format!("sr{i}"));
            t.node.ip(&format!("addr add {SNAT_ADDR}/24 dev eth0"));
            commit(&t.node, &rules_config(case, &flags), &flags);
            let from = if case.holds_pod { SNAT_ADDR } else { NODE };
            let (rate, loss) = measure(&t, from, packets);
            rates[c].push(rate);
            lost[c] += loss / runs as f64;
        }
    }
    println!(
        "### Data path with `snatRules`: new flows per second, agent's table at {SCOPE_PREFIXES} non-masquerade prefixes ({runs} runs of {packets} packets, cases interleaved; median (min-max))\n"
    );
    println!("| `snatRules` | flows/s arriving, translated | loss | vs. none |");
    println!("|---|---:|---:|---:|");
    let mut none = None;
    let mut worst: Option<f64> = None;
    for ((case, mut r), lost) in cases.iter().zip(rates).zip(lost) {
        r.sort_by(f64::total_cmp);
        let median = r[r.len() / 2];
        let rel = match none {
            None => {
                none = Some(median);
                "1.00".to_string()
            }
            Some(u) => {
                let x = median / u;
                worst = Some(worst.map_or(x, |w: f64| w.min(x)));
                record_value(&format!("datapath.snat-rules.{}.ratio", case.key), x);
                format!("{x:.2}")
            }
        };
        println!(
            "| {} | {median:.0} ({:.0}-{:.0}) | {:.2} % | {rel} |",
            case.name,
            r[0],
            r[r.len() - 1],
            lost * 100.0
        );
        record_value(&format!("datapath.snat-rules.{}", case.key), median);
    }
    if let Some(w) = worst {
        record_value("datapath.snat-rules.worst.ratio", w);
        println!("\nLowest ratio of a `snatRules` case to none: {w:.2}.\n");
    }
}

/// [`BLOCK_PREFIXES`] exemptions in one set, cut at the default `--max-set-prefixes`, and
/// cut finer; each run measures every case in turn, in fresh namespaces.
fn blocks_section(runs: usize, packets: usize) {
    let default = PolicyFlags::default().max_set_prefixes;
    // One set first (the reference), then the cuts from coarse to fine, the default among them.
    let mut caps = vec![16_384, 4_096, default, 256];
    caps.sort_unstable_by(|a, b| b.cmp(a));
    caps.dedup();
    caps.insert(0, usize::MAX);
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); caps.len()];
    let mut sets = vec![0; caps.len()];
    for i in 0..runs {
        for (c, &cap) in caps.iter().enumerate() {
            let t = topology(&format!("bl{i}"));
            let flags = PolicyFlags {
                max_set_prefixes: cap,
                ..PolicyFlags::default()
            };
            let mut config = Config::defaults(&flags);
            config.non_masquerade_cidrs = entries(prefixes(BLOCK_PREFIXES));
            sets[c] = model::desired(&config, &flags, TableFlags::default())
                .sets
                .iter()
                .filter(|s| model::is_exemption_set(&s.name))
                .count();
            commit(&t.node, &config, &flags);
            rates[c].push(measure(&t, NODE, packets).0);
        }
    }
    println!(
        "### Data path with the exemptions cut into block sets: new flows per second to a masqueraded destination, {BLOCK_PREFIXES} prefixes ({runs} runs of {packets} packets, cases interleaved; median (min-max))\n"
    );
    println!(
        "| `--max-set-prefixes` | sets (block chains) | flows/s arriving, masqueraded | vs. one set |"
    );
    println!("|---|---:|---:|---:|");
    let mut one = None;
    for ((cap, mut r), sets) in caps.iter().zip(rates).zip(sets) {
        r.sort_by(f64::total_cmp);
        let median = r[r.len() / 2];
        let base = *one.get_or_insert(median);
        let name = match *cap {
            usize::MAX => "one set (no cut)".to_string(),
            c if c == default => format!("{c} (default)"),
            c => c.to_string(),
        };
        println!(
            "| {name} | {sets} | {median:.0} ({:.0}-{:.0}) | {:.2} |",
            r[0],
            r[r.len() - 1],
            median / base
        );
        let key = if *cap == usize::MAX {
            "one".to_string()
        } else {
            cap.to_string()
        };
        record_value(&format!("datapath.blocks.{key}"), median);
        if *cap == default {
            record_value("datapath.blocks.default", median);
        }
    }
    println!();
}
