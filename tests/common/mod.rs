//! Test topology: throwaway network namespaces and real datagrams.
//!
//! ```text
//!  pod ns                node ns (agent runs here)              remote ns
//!  10.244.1.2 ---veth--- 10.244.1.1   198.51.100.1 ---veth--- 198.51.100.2
//!  fd00:10:244:1::2      fd00:10:244:1::1  2001:db8:ffff::1     2001:db8:ffff::2
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
//! The same harness runs in the QEMU guests of `vm-tests/`, so it only needs `ip` (iproute2)
//! and, for the observer checks, `nft`.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// Whether root tests should run; they need CAP_SYS_ADMIN and CAP_NET_ADMIN.
/// Without root they fail, unless `NMA_SKIP_ROOT_TESTS=1` asks to skip them.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("NMA_SKIP_ROOT_TESTS").is_some() {
        eprintln!("skipped: needs root (NMA_SKIP_ROOT_TESTS is set)");
        return false;
    }
    panic!(
        "this test creates network namespaces and needs root; set NMA_SKIP_ROOT_TESTS=1 to skip"
    );
}

/// The agent binary under test: `NMA_AGENT_BIN` (used in the VM guests), else Cargo's.
pub fn agent_bin() -> PathBuf {
    std::env::var_os("NMA_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nft-masq-agent")))
}

/// Whether the tests run in an emulated guest: the VM suite under TCG (`vm-tests/init`
/// sets `NMA_GUEST_ACCEL`), one virtual CPU at about a sixth of the host's speed.
pub fn emulated() -> bool {
    std::env::var("NMA_GUEST_ACCEL").is_ok_and(|a| a == "tcg")
}

/// How many times longer than on the host a reaction may take: 1 on the host, 3 in an
/// emulated guest. Only the hardening tests' timing claims and the start-up wait use it;
/// the claims themselves are the host's figures (docs/design.md, "Tests").
pub fn slack() -> u32 {
    if emulated() { 3 } else { 1 }
}

/// Runs a command and panics with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `ip` with `args`; panics on failure.
pub fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// A network namespace, deleted on drop together with any process still in it.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with `lo` up.
    pub fn new(name: String) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it creates stay there.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            })
            .join()
            .expect("thread in namespace panicked")
        })
    }

    /// Runs `f` on a new thread that has entered this namespace and returns at once; the
    /// thread's sockets stay in the namespace (for load generators that run alongside a test).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            })
            .expect("spawn thread")
    }

    /// `GET path` from `127.0.0.1:port` inside this namespace: [`http_get_here`] on a thread
    /// that entered it.
    pub fn http_get(&self, port: u16, path: &str, timeout: Duration) -> std::io::Result<Reply> {
        self.enter(|| http_get_here(port, path, timeout))
    }

    /// Writes a sysctl of this namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.enter(|| std::fs::write(&path, value))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }

    /// A command that runs inside this namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `nft` in this namespace and returns stdout; panics on failure.
    pub fn nft(&self, args: &[&str]) -> String {
        let out = run(self.cmd("nft").args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `nft -f -` with `script` on stdin.
    pub fn nft_stdin(&self, args: &[&str], script: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd("nft")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write to nft");
        child.wait_with_output().expect("wait nft")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// An HTTP reply from the agent's endpoint.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code (0 if the reply had none).
    pub status: u16,
    /// Body.
    pub body: String,
    /// From connecting to the end of the reply.
    pub took: Duration,
}

/// `GET path` from `127.0.0.1:port` in the calling thread's namespace (HTTP/1.0: the server
/// closes), each socket operation bounded by `timeout`; the reply and how long it took.
pub fn http_get_here(port: u16, path: &str, timeout: Duration) -> std::io::Result<Reply> {
    let start = Instant::now();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok(Reply { status, body, took })
}

/// The agent's default HTTP port (`--metrics-address 127.0.0.1:9983`).
pub const HTTP_PORT: u16 = 9983;

/// The value of one series (`name{labels} value`) in a metrics text; 0 if absent.
pub fn series(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// The sum of every series of a metric family (`name{…} value` for each label set).
pub fn family_sum(metrics: &str, name: &str) -> f64 {
    let prefix = format!("{name}{{");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// The depth of a hostile jump graph (each chain jumping 4 times to the next) this kernel
/// can itself load: `depth` from 6.12 on, at most 8 before. 5.10 and 6.1 validate a new
/// rule's jumps by walking every path (4^depth): loading the depth-15 graph locked a CPU up
/// in both for over 400 s (soft lockup in `nft`), while 6.12 and 6.18 load it at once. The
/// agent's own walk is what the tests measure, and it is proved at full depth on the host
/// and on 6.12; older kernels get the deepest graph they load in a moment.
pub fn kernel_walkable_depth(depth: usize) -> usize {
    if kernel_at_least(6, 12) {
        depth
    } else {
        depth.min(8)
    }
}

/// Whether the running kernel is at least `major.minor`.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let a: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let b: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (a, b) >= (major, minor)
}

/// Replaces `path` with `text` atomically (a file beside it, renamed over it), as a
/// ConfigMap update does: the agent never reads a half-written file.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("nma-tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config into place");
}

/// `counter packets N bytes M` becomes `counter`: listings compare across commits.
pub fn strip_counters(line: &str) -> String {
    const C: &str = "counter packets ";
    match line.find(C) {
        None => line.to_string(),
        Some(i) => {
            let tail = line[i + C.len()..].splitn(4, ' ').nth(3).unwrap_or("");
            format!("{}counter {tail}", &line[..i])
        }
    }
}

/// Pod, node and remote namespaces wired as in the module docs.
pub struct Topology {
    /// The pod.
    pub pod: Netns,
    /// The node: the agent runs here.
    pub node: Netns,
    /// The far end: hosts every destination, records sources.
    pub remote: Netns,
    /// A scratch directory for config files, removed on drop.
    pub dir: PathBuf,
}

impl Topology {
    /// Builds the topology; `tag` makes names readable in `ip netns list`.
    pub fn new(tag: &str) -> Topology {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("nma-{}-{n}-{tag}", std::process::id());
        let t = Topology {
            pod: Netns::new(format!("{id}-pod")),
            node: Netns::new(format!("{id}-node")),
            remote: Netns::new(format!("{id}-remote")),
            dir: std::env::temp_dir().join(&id),
        };
        let _ = std::fs::remove_dir_all(&t.dir);
        std::fs::create_dir_all(&t.dir).expect("scratch dir");
        // Link-local addresses must be usable at once: until duplicate address detection
        // ends (1-2 s) a router cannot resolve neighbours for forwarded IPv6 packets.
        for ns in [&t.pod, &t.node, &t.remote] {
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
        }
        let (pod, node, remote) = (&t.pod.name, &t.node.name, &t.remote.name);
        // Links are created inside the namespaces, so no name ever appears on the host.
        ip(&[
            "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "pod0", "netns", node,
        ]);
        ip(&[
            "-n", node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
            remote,
        ]);
        for (ns, dev) in [
            (pod, "eth0"),
            (node, "pod0"),
            (node, "eth0"),
            (remote, "eth0"),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&["-n", pod, "addr", "add", "10.244.1.2/24", "dev", "eth0"]);
        ip(&[
            "-n",
            pod,
            "addr",
            "add",
            "fd00:10:244:1::2/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        ip(&["-n", pod, "route", "add", "default", "via", "10.244.1.1"]);
        ip(&[
            "-n",
            pod,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:10:244:1::1",
        ]);
        ip(&["-n", node, "addr", "add", "10.244.1.1/24", "dev", "pod0"]);
        ip(&[
            "-n",
            node,
            "addr",
            "add",
            "fd00:10:244:1::1/64",
            "dev",
            "pod0",
            "nodad",
        ]);
        ip(&["-n", node, "addr", "add", "198.51.100.1/24", "dev", "eth0"]);
        ip(&[
            "-n",
            node,
            "addr",
            "add",
            "2001:db8:ffff::1/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        ip(&["-n", node, "route", "add", "default", "via", "198.51.100.2"]);
        ip(&[
            "-n",
            node,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:ffff::2",
        ]);
        ip(&[
            "-n",
            remote,
            "addr",
            "add",
            "198.51.100.2/24",
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            remote,
            "addr",
            "add",
            "2001:db8:ffff::2/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        for d in DESTS4 {
            ip(&["-n", remote, "addr", "add", &format!("{d}/32"), "dev", "lo"]);
        }
        for d in DESTS6 {
            ip(&[
                "-n",
                remote,
                "addr",
                "add",
                &format!("{d}/128"),
                "dev",
                "lo",
            ]);
        }
        t.node.sysctl("net.ipv4.ip_forward", "1");
        t.node.sysctl("net.ipv6.conf.all.forwarding", "1");
        // The remote accepts sources it has no route back to (the un-masqueraded pod).
        for key in ["all", "default", "eth0"] {
            t.remote
                .sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0");
        }
        t
    }

    /// Writes a config file in the scratch directory and returns its path.
    pub fn config(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).expect("write config");
        p
    }

    /// The agent command, run in the node namespace.
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

    /// Sends one UDP datagram from the pod to `dst` and returns the source the remote saw,
    /// or `None` if nothing arrived within a second.
    pub fn probe(&self, dst: IpAddr) -> Option<SocketAddr> {
        let any: IpAddr = match dst {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        self.probe_from(any, dst)
    }

    /// Like [`Topology::probe`], from the pod's address `src` (one it holds).
    pub fn probe_from(&self, src: IpAddr, dst: IpAddr) -> Option<SocketAddr> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (n % 20000) as u16;
        let any: IpAddr = match dst {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let rx = self
            .remote
            .enter(|| UdpSocket::bind((any, port)))
            .expect("bind receiver");
        // A fresh socket, hence a fresh source port and a new conntrack flow.
        let tx = self
            .pod
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
        self.nft_table()
            .map(|s| s.lines().map(strip_counters).collect::<Vec<_>>().join("\n"))
    }

    /// Makes the remote host one more destination address (IPv4).
    pub fn host(&self, addr: &str) {
        ip(&[
            "-n",
            &self.remote.name,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "lo",
        ]);
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

    /// Spawns the daemon with `--config config args…` and waits (5 s) for its first commit.
    pub fn start(&self, config: &Path, args: &[&str]) -> Agent {
        let mut full = vec!["--config", config.to_str().expect("UTF-8 path")];
        full.extend_from_slice(args);
        let a = self.spawn_agent(&full);
        assert!(
            a.wait_log(
                "committed table inet nft-masq-agent",
                Duration::from_secs(5) * slack()
            ),
            "agent did not commit:\n{}",
            a.log()
        );
        a
    }

    /// Spawns the daemon in the node namespace.
    pub fn spawn_agent(&self, args: &[&str]) -> Agent {
        let log = self.dir.join(format!(
            "agent-{}.log",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::create(&log).expect("log file");
        let child = self
            .agent()
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn agent");
        Agent { child, log }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running agent; killed on drop.
pub struct Agent {
    /// The process (`ip netns exec` execs the agent, so this is the agent itself).
    pub child: Child,
    /// Its stderr.
    pub log: PathBuf,
}

impl Agent {
    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// How many times `needle` occurs in the log so far.
    pub fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// The process id (the agent's own: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB (`VmRSS` of /proc/PID/status), if the process is there.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)
            .expect("kill");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 5 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
