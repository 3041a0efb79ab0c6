//! The test topology: throwaway network namespaces and real datagrams.
//!
//! ```text
//!  pod ns                node ns (agent runs here)              remote ns
//!  10.244.1.2 ---veth--- 10.244.1.1   198.51.100.1 ---veth--- 198.51.100.2
//!  fd00:10:244:1::2      fd00:10:244:1::1  2001:db8:ffff::1     2001:db8:ffff::2
//!  (eth0)                (pod0)       (eth0)                    (eth0)
//!                                                               + every destination
//!                                                                 address on lo
//! ```
//!
//! The pod sends one UDP datagram per probe from a fresh source port (so every probe is a
//! new conntrack flow and sees the current ruleset); the remote records the source address
//! it arrives with. Masqueraded traffic arrives from the node's address, the rest from the
//! pod's. The remote has no route back to the pod and needs none: probes are one-way.
//! All traffic stays inside these namespaces; they are deleted on drop, also on panic.
//!
//! [`TopologyBuilder`] adds pods (pod `k`, counting from 0, is `10.244.(k+1).2` behind the
//! node's `pod<k>`), remotes (remote `k` from 1 is `192.0.(k+1).2` behind the node's
//! `eth<k>`, IPv4 only, hosting what [`Topology::host_on`] gives it and reached by routes
//! the test adds), leaves IPv6 out or hosts other destinations.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::agent::{Agent, AgentBuilder, agent_bin};
use crate::env::{run, slack};
use crate::http::{HTTP_PORT, Reply, series};
use crate::listing::without_counters;
use crate::netns::{Netns, sweep_stale};

/// Pod address, IPv4.
pub const POD4: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
/// Node's address towards the remote: what masqueraded traffic carries.
pub const NODE4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Pod address, IPv6.
pub const POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0x1, 0, 0, 0, 2);
/// Node's IPv6 address towards the remote.
pub const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

/// Destinations hosted by the remote namespace.
pub const DESTS4: &[&str] = &[
    "10.11.0.5",   // inside 10/8: a VPN range for masqueradeCIDRs
    "10.20.0.5",   // inside 10/8
    "172.16.0.5",  // RFC 1918
    "192.168.0.5", // RFC 1918
    "169.254.0.5", // link-local
    "100.64.0.5",  // reserved (shared address space)
    "198.18.0.5",  // reserved (benchmarking)
    "203.0.113.5", // reserved (TEST-NET-3)
    "240.0.0.5",   // reserved (class E): the top of the address space
    "11.22.33.44", // not reserved: "the internet", inside our namespaces
];
/// IPv6 destinations hosted by the remote namespace.
pub const DESTS6: &[&str] = &["fd00:11::5", "2001:db8:5::5"];

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// What a [`Topology`] holds and how its namespaces are named.
#[derive(Debug, Clone)]
pub struct TopologyBuilder {
    tag: String,
    prefix: Option<String>,
    id: Option<String>,
    ipv6: bool,
    dests4: Vec<String>,
    dests6: Vec<String>,
    pods: usize,
    remotes: usize,
}

impl TopologyBuilder {
    /// Names `nma-<pid>-<n>-<tag>-<role>` (the tests'); every destination of [`DESTS4`] and
    /// [`DESTS6`]; IPv6; one pod, one remote.
    pub fn new(tag: &str) -> TopologyBuilder {
        TopologyBuilder {
            tag: tag.to_string(),
            prefix: None,
            id: None,
            ipv6: true,
            dests4: DESTS4.iter().map(ToString::to_string).collect(),
            dests6: DESTS6.iter().map(ToString::to_string).collect(),
            pods: 1,
            remotes: 1,
        }
    }

    /// Names `<prefix>-<pid>-<tag>-<role>` (`<prefix>-<pid>-<role>` with an empty tag), after
    /// removing what runs of that prefix left when they died ([`sweep_stale`]): for programs
    /// that may be killed (benchmarks, the soak test, the runtime test).
    pub fn prefix(mut self, prefix: &str) -> TopologyBuilder {
        self.prefix = Some(prefix.to_string());
        self
    }

    /// Names `<id>-<role>` exactly, and the scratch directory `/tmp/<id>`.
    pub fn id(mut self, id: &str) -> TopologyBuilder {
        self.id = Some(id.to_string());
        self
    }

    /// Whether the pod, node and remote get IPv6 addresses and routes (default: yes).
    pub fn ipv6(mut self, on: bool) -> TopologyBuilder {
        self.ipv6 = on;
        self
    }

    /// The IPv4 destinations the remote hosts (default: [`DESTS4`]).
    pub fn dests4(mut self, dests: &[&str]) -> TopologyBuilder {
        self.dests4 = dests.iter().map(ToString::to_string).collect();
        self
    }

    /// The IPv6 destinations the remote hosts (default: [`DESTS6`]; none without IPv6).
    pub fn dests6(mut self, dests: &[&str]) -> TopologyBuilder {
        self.dests6 = dests.iter().map(ToString::to_string).collect();
        self
    }

    /// How many pods (default 1).
    pub fn pods(mut self, n: usize) -> TopologyBuilder {
        self.pods = n.max(1);
        self
    }

    /// How many remotes (default 1).
    pub fn remotes(mut self, n: usize) -> TopologyBuilder {
        self.remotes = n.max(1);
        self
    }

    /// The name every namespace and the scratch directory start with.
    fn resolve_id(&self) -> String {
        let pid = std::process::id();
        match (&self.id, &self.prefix) {
            (Some(id), _) => id.clone(),
            (None, Some(prefix)) => {
                sweep_stale(prefix);
                if self.tag.is_empty() {
                    format!("{prefix}-{pid}")
                } else {
                    format!("{prefix}-{pid}-{}", self.tag)
                }
            }
            (None, None) => {
                let n = COUNTER.fetch_add(1, Ordering::Relaxed);
                format!("nma-{pid}-{n}-{}", self.tag)
            }
        }
    }

    /// Creates the namespaces, links, addresses and routes.
    pub fn build(self) -> Topology {
        let id = self.resolve_id();
        let role = |name: &str, k: usize| match k {
            0 => format!("{id}-{name}"),
            k => format!("{id}-{name}{}", k + 1),
        };
        let t = Topology {
            pod: Netns::new(role("pod", 0)),
            node: Netns::new(role("node", 0)),
            remote: Netns::new(role("remote", 0)),
            more_pods: (1..self.pods).map(|k| Netns::new(role("pod", k))).collect(),
            more_remotes: (1..self.remotes)
                .map(|k| Netns::new(role("remote", k)))
                .collect(),
            dir: std::env::temp_dir().join(&id),
            keep_dir: false,
        };
        let _ = std::fs::remove_dir_all(&t.dir);
        std::fs::create_dir_all(&t.dir).expect("scratch dir");
        if self.ipv6 {
            // Link-local addresses must be usable at once: until duplicate address detection
            // ends (1-2 s) a router cannot resolve neighbours for forwarded IPv6 packets.
            for ns in t.namespaces() {
                ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
                ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
            }
        }
        for (k, pod) in t.pods().enumerate() {
            wire_pod(pod, &t.node, k, self.ipv6);
        }
        for (k, remote) in t.remotes().enumerate() {
            wire_remote(&t.node, remote, k, self.ipv6);
            // The remote accepts sources it has no route back to (the un-masqueraded pod).
            for key in ["all", "default", "eth0"] {
                remote.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0");
            }
        }
        for d in &self.dests4 {
            t.host(d);
        }
        if self.ipv6 {
            for d in &self.dests6 {
                t.host(d);
            }
        }
        t.node.sysctl("net.ipv4.ip_forward", "1");
        if self.ipv6 {
            t.node.sysctl("net.ipv6.conf.all.forwarding", "1");
        }
        t
    }
}

/// Pod `k`: its `eth0` to the node's `pod<k>`, 10.244.(k+1).0/24 (and fd00:10:244:(k+1)::/64),
/// the node the pod's default route.
fn wire_pod(pod: &Netns, node: &Netns, k: usize, ipv6: bool) {
    // Links are created inside the namespaces, so no name ever appears on the host.
    pod.ip(&format!(
        "link add eth0 type veth peer name pod{k} netns {}",
        node.name
    ));
    pod.ip("link set eth0 up");
    node.ip(&format!("link set pod{k} up"));
    let net = k + 1;
    pod.ip(&format!("addr add 10.244.{net}.2/24 dev eth0"));
    node.ip(&format!("addr add 10.244.{net}.1/24 dev pod{k}"));
    pod.ip(&format!("route add default via 10.244.{net}.1"));
    if ipv6 {
        pod.ip(&format!(
            "addr add fd00:10:244:{net:x}::2/64 dev eth0 nodad"
        ));
        node.ip(&format!(
            "addr add fd00:10:244:{net:x}::1/64 dev pod{k} nodad"
        ));
        pod.ip(&format!("-6 route add default via fd00:10:244:{net:x}::1"));
    }
}

/// Remote `k`: the node's `eth<k>` to its `eth0`. Remote 0 is 198.51.100.2/24 (and
/// 2001:db8:ffff::2/64) and the node's default route; remote k from 1 is 192.0.(k+1).2/24.
fn wire_remote(node: &Netns, remote: &Netns, k: usize, ipv6: bool) {
    node.ip(&format!(
        "link add eth{k} type veth peer name eth0 netns {}",
        remote.name
    ));
    node.ip(&format!("link set eth{k} up"));
    remote.ip("link set eth0 up");
    let net = if k == 0 {
        "198.51.100".to_string()
    } else {
        format!("192.0.{}", k + 1)
    };
    node.ip(&format!("addr add {net}.1/24 dev eth{k}"));
    remote.ip(&format!("addr add {net}.2/24 dev eth0"));
    if k == 0 {
        node.ip(&format!("route add default via {net}.2"));
        if ipv6 {
            node.ip("addr add 2001:db8:ffff::1/64 dev eth0 nodad");
            remote.ip("addr add 2001:db8:ffff::2/64 dev eth0 nodad");
            node.ip("-6 route add default via 2001:db8:ffff::2");
        }
    }
}

/// Pod, node and remote namespaces wired as in the module docs, and a scratch directory.
pub struct Topology {
    /// The pod.
    pub pod: Netns,
    /// The node: the agent runs here.
    pub node: Netns,
    /// The far end: hosts every destination, records sources.
    pub remote: Netns,
    /// Pods 1 and on ([`TopologyBuilder::pods`]).
    pub more_pods: Vec<Netns>,
    /// Remotes 1 and on ([`TopologyBuilder::remotes`]).
    pub more_remotes: Vec<Netns>,
    /// A scratch directory for config files and logs, removed on drop.
    pub dir: PathBuf,
    keep_dir: bool,
}

impl Topology {
    /// The tests' topology ([`TopologyBuilder::new`]); `tag` makes names readable in
    /// `ip netns list`.
    pub fn new(tag: &str) -> Topology {
        TopologyBuilder::new(tag).build()
    }

    /// A topology of other options.
    pub fn builder(tag: &str) -> TopologyBuilder {
        TopologyBuilder::new(tag)
    }

    /// The topology `<id>-pod`, `-node`, `-remote` made earlier (by `nma-testkit topology
    /// up`), left in place on drop; extra pods and remotes are not looked for.
    pub fn attach(id: &str) -> Topology {
        Topology {
            pod: Netns::attach(format!("{id}-pod")),
            node: Netns::attach(format!("{id}-node")),
            remote: Netns::attach(format!("{id}-remote")),
            more_pods: Vec::new(),
            more_remotes: Vec::new(),
            dir: std::env::temp_dir().join(id),
            keep_dir: true,
        }
    }

    /// Leaves everything in place when this value is dropped.
    pub fn keep(&mut self) {
        self.keep_dir = true;
        self.pod.keep();
        self.node.keep();
        self.remote.keep();
        for ns in self.more_pods.iter_mut().chain(&mut self.more_remotes) {
            ns.keep();
        }
    }

    /// Every pod, the first first.
    pub fn pods(&self) -> impl Iterator<Item = &Netns> {
        std::iter::once(&self.pod).chain(&self.more_pods)
    }

    /// Every remote, the first first.
    pub fn remotes(&self) -> impl Iterator<Item = &Netns> {
        std::iter::once(&self.remote).chain(&self.more_remotes)
    }

    /// Every namespace.
    pub fn namespaces(&self) -> impl Iterator<Item = &Netns> {
        self.pods().chain([&self.node]).chain(self.remotes())
    }

    /// Writes a config file in the scratch directory and returns its path.
    pub fn config(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).expect("write config");
        p
    }

    /// The agent command, run in the node namespace (for one-shot modes: `--once`, `--dump`,
    /// `--explain`, `--cleanup`; their logs are text).
    pub fn agent(&self) -> Command {
        let mut c = self.node.cmd(agent_bin());
        c.env("RUST_LOG", "info");
        c
    }

    /// Runs `nft-masq-agent --once --config <config> <args>` and asserts it succeeded.
    pub fn apply(&self, config: &Path, args: &[&str]) -> Output {
        run(self
            .agent()
            .arg("--once")
            .arg("--config")
            .arg(config)
            .args(args))
    }

    /// `--explain DST --source <the pod> --output json --config CONFIG ARGS` in the node
    /// namespace: the answer (panics when the agent fails or prints no JSON).
    pub fn explain(&self, config: &Path, dst: &str, args: &[&str]) -> serde_json::Value {
        let out = run(self
            .agent()
            .args(["--explain", dst, "--source", &POD4.to_string()])
            .args(["--output", "json", "--config"])
            .arg(config)
            .args(args));
        serde_json::from_slice(&out.stdout).expect("--explain printed JSON")
    }

    /// The daemon in the node namespace, logging (JSON) to a new file of the scratch
    /// directory; add arguments and [`AgentBuilder::spawn`] it.
    pub fn agent_builder(&self) -> AgentBuilder {
        let log = self.dir.join(format!(
            "agent-{}.log",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        AgentBuilder::new(agent_bin(), Some(log)).netns(&self.node)
    }

    /// Spawns the daemon in the node namespace with `args`.
    pub fn spawn_agent(&self, args: &[&str]) -> Agent {
        self.agent_builder().args(args).spawn()
    }

    /// Spawns the daemon with `--config config args…` and waits (5 s) for its policy to be
    /// in force: its first commit, or the table it found already as wanted.
    pub fn start(&self, config: &Path, args: &[&str]) -> Agent {
        let a = self.agent_builder().config(config).args(args).spawn();
        assert!(
            a.wait_in_force(Duration::from_secs(5) * slack()).is_some(),
            "agent did not commit:\n{}",
            a.log()
        );
        a
    }

    /// Sends one UDP datagram from the pod to `dst` and returns the source the remote saw,
    /// or `None` if nothing arrived within a second.
    pub fn probe(&self, dst: IpAddr) -> Option<SocketAddr> {
        self.probe_from(unspecified(dst), dst)
    }

    /// Like [`Topology::probe`], from the pod's address `src` (one it holds).
    pub fn probe_from(&self, src: IpAddr, dst: IpAddr) -> Option<SocketAddr> {
        probe_between(&self.pod, &self.remote, src, dst)
    }

    /// Whether traffic from the pod to `dst` is masqueraded (arrives from the node).
    pub fn masqueraded(&self, dst: &str) -> bool {
        let dst: IpAddr = dst.parse().expect("address");
        let from = self
            .probe(dst)
            .unwrap_or_else(|| panic!("probe to {dst} never arrived"))
            .ip();
        let (pod, node): (IpAddr, IpAddr) = match dst {
            IpAddr::V4(_) => (POD4.into(), NODE4.into()),
            IpAddr::V6(_) => (POD6.into(), NODE6.into()),
        };
        if from == node {
            true
        } else if from == pod {
            false
        } else {
            panic!("probe to {dst} arrived from unexpected source {from}")
        }
    }

    /// Asserts, destination by destination, which are masqueraded.
    pub fn expect(&self, masq: &[&str], not_masq: &[&str]) {
        let mut wrong = Vec::new();
        for d in masq {
            if !self.masqueraded(d) {
                wrong.push(format!("{d}: expected masquerade, arrived from the pod"));
            }
        }
        for d in not_masq {
            if self.masqueraded(d) {
                wrong.push(format!(
                    "{d}: expected no masquerade, arrived from the node"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// The agent's table as `nft list` prints it, or None when absent.
    pub fn nft_table(&self) -> Option<String> {
        let out = self
            .node
            .cmd("nft")
            .args(["list", "table", "inet", "nft-masq-agent"])
            .output()
            .expect("nft");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// [`Topology::nft_table`] with counter values blanked.
    pub fn listing(&self) -> Option<String> {
        self.nft_table().map(|s| without_counters(&s))
    }

    /// Makes the remote host one more destination address (a /32 or a /128 on its `lo`).
    pub fn host(&self, addr: &str) {
        host_in(&self.remote, addr);
    }

    /// Makes remote `k` (0 is [`Topology::remote`]) host a destination address.
    pub fn host_on(&self, k: usize, addr: &str) {
        host_in(self.remotes().nth(k).expect("no such remote"), addr);
    }

    /// `GET path` on the agent's endpoint at `port` in the node namespace (5 s bound);
    /// panics if it cannot connect or read.
    pub fn get_at(&self, port: u16, path: &str) -> Reply {
        self.node
            .http_get(port, path, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("GET {path} on port {port}: {e}"))
    }

    /// `GET path` on the agent's default endpoint.
    pub fn get(&self, path: &str) -> Reply {
        self.get_at(HTTP_PORT, path)
    }

    /// One metric series of the agent at `port` (0 if absent).
    pub fn metric_at(&self, port: u16, name: &str) -> f64 {
        let r = self.get_at(port, "/metrics");
        assert_eq!(r.status, 200, "{}", r.body);
        series(&r.body, name)
    }

    /// One metric series of the agent at the default port (0 if absent).
    pub fn metric(&self, name: &str) -> f64 {
        self.metric_at(HTTP_PORT, name)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn host_in(ns: &Netns, addr: &str) {
    let len = if addr.contains(':') { 128 } else { 32 };
    ns.ip(&format!("addr add {addr}/{len} dev lo"));
}

fn unspecified(dst: IpAddr) -> IpAddr {
    match dst {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// One datagram from `src` in `from` (a fresh socket, so a fresh source port and a new
/// conntrack flow) to `dst` on a port `to` listens on; the source it arrived with, or `None`
/// if nothing arrived within a second.
pub fn probe_between(from: &Netns, to: &Netns, src: IpAddr, dst: IpAddr) -> Option<SocketAddr> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let port = 20000 + (n % 20000) as u16;
    let rx = to
        .enter(|| UdpSocket::bind((unspecified(dst), port)))
        .expect("bind receiver");
    let tx = from
        .enter(|| UdpSocket::bind((src, 0)))
        .expect("bind sender");
    let token = format!("nma-probe-{}-{n}", std::process::id());
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 128];
    // Resend a few times: the first datagram can be lost to neighbour discovery.
    for _ in 0..5 {
        tx.send_to(token.as_bytes(), (dst, port))
            .expect("send probe");
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        while let Ok((len, from)) = rx.recv_from(&mut buf) {
            if &buf[..len] == token.as_bytes() {
                return Some(from);
            }
        }
        if Instant::now() > deadline {
            break;
        }
    }
    None
}
