//! What the soak watches: every nf_tables transaction (with its committer), the probe
//! datagrams on both ends, `/healthz` as a kubelet asks it, and samples of the agent's
//! memory, descriptors and threads. Records only; the verdicts judge.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nft_masq_agent::kernel::netlink::uapi::NFNLGRP_NFTABLES;
use nft_masq_agent::kernel::netlink::{NetlinkSocket, messages};
use nft_masq_agent::kernel::nft::events::{Event, classify};
use nft_masq_agent::model::TABLE_NAME;

/// The agent's handover table (`nft-masq-agent-handover`).
const HANDOVER: &str = "nft-masq-agent-handover";

use crate::{Ctx, DESTS, ENDPOINT, ENDPOINT_PORT, POD, Phase};

const PROBE_PORT: u16 = 5000;
pub const PROBE_EVERY: Duration = Duration::from_millis(20);
const HEALTH_EVERY: Duration = Duration::from_millis(250);
/// A `/healthz` slower than this fails the endpoint verdict; the prober takes a snapshot of
/// the endpoint when it waits this long.
pub const HEALTH_LIMIT: Duration = Duration::from_secs(1);

/// One transaction end seen by the observer.
#[derive(Clone, Copy, Debug)]
pub struct Gen {
    /// When its notification was read.
    pub at: Instant,
    /// The committing process, as the kernel reports it.
    pub pid: Option<u32>,
    /// Whether the transaction touched our table.
    pub ours: bool,
}

/// The observer: every NEWGEN in the node namespace, with its committer and whether the
/// transaction touched our table, timestamped on receipt. Its own socket with a 64 MiB
/// buffer: a commit of the large table notifies 100,000 elements at once. The agent's own
/// netlink code is used only to read messages; what they mean comes from the kernel's
/// attributes (the table each object names, the pid NEWGEN names).
pub fn notifications(ctx: &Ctx) {
    ctx.node().enter_current_thread();
    let sock = NetlinkSocket::open_netfilter().expect("netlink socket");
    let _ = sock.grow_recv_buffer(64 << 20);
    sock.set_membership(NFNLGRP_NFTABLES, true)
        .expect("join the nftables group");
    sock.set_recv_timeout(Duration::from_millis(100))
        .expect("timeout");
    ctx.subscribed.store(true, Ordering::SeqCst);
    let mut buf = vec![0u8; 1 << 20];
    let mut touched = false;
    let mut batch = Vec::new();
    while !ctx.stopping() {
        match sock.recv(&mut buf, false) {
            Ok((n, truncated)) => {
                let at = Instant::now();
                if truncated {
                    ctx.lost_notifications.fetch_add(1, Ordering::Relaxed);
                }
                for m in messages(&buf[..n]) {
                    match m.ok().as_ref().and_then(classify) {
                        // The handover table counts as ours: a commit that goes through
                        // it is one logged commit of several transactions.
                        Some(Event::Object { table, .. }) => {
                            touched |= table == TABLE_NAME || table == HANDOVER
                        }
                        Some(Event::Generation { pid, .. }) => {
                            batch.push(Gen {
                                at,
                                pid,
                                ours: touched,
                            });
                            touched = false;
                        }
                        None => {}
                    }
                }
                if !batch.is_empty() {
                    ctx.gens.lock().unwrap().append(&mut batch);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                ctx.lost_notifications.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("reading notifications: {e}"),
        }
    }
}

/// A probe as the pod sent it.
#[derive(Clone, Copy)]
pub struct Sent {
    pub seq: u64,
    /// Index into [`DESTS`].
    pub dst: usize,
    pub at: Instant,
    pub ok: bool,
}

/// A probe as the remote received it.
#[derive(Clone, Copy)]
pub struct Arrived {
    pub seq: u64,
    pub src: Ipv4Addr,
    pub at: Instant,
}

/// The pod's side of the probes: one datagram to each destination every 20 ms, each from
/// a fresh socket on a source port not used for 1000 s (conntrack forgets unreplied UDP
/// after 30 s), so every probe is a new flow translated by the ruleset of its moment.
pub fn send_probes(ctx: &Ctx) -> Vec<Sent> {
    ctx.topo.pod.enter_current_thread();
    let mut sent = Vec::new();
    let mut port = [10_000u16; 2];
    let mut seq = 0u64;
    let mut next = Instant::now();
    while !ctx.stop_probes.load(Ordering::SeqCst) {
        for (d, (dst, _)) in DESTS.iter().enumerate() {
            let sock = loop {
                port[d] = if port[d] >= 59_999 {
                    10_000
                } else {
                    port[d] + 1
                };
                if let Ok(s) = UdpSocket::bind((POD, port[d])) {
                    break s;
                }
            };
            let mut payload = [0u8; 9];
            payload[..8].copy_from_slice(&seq.to_be_bytes());
            payload[8] = d as u8;
            let at = Instant::now();
            let ok = sock.send_to(&payload, (*dst, PROBE_PORT)).is_ok();
            sent.push(Sent {
                seq,
                dst: d,
                at,
                ok,
            });
            seq += 1;
        }
        next += PROBE_EVERY;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    sent
}

/// The remote's side: which source each probe arrived from.
pub fn receive_probes(ctx: &Ctx) -> Vec<Arrived> {
    ctx.topo.remote.enter_current_thread();
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PROBE_PORT)).expect("bind receiver");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    ctx.rx_ready.store(true, Ordering::SeqCst);
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !ctx.stop_rx.load(Ordering::SeqCst) {
        if let Ok((n, SocketAddr::V4(from))) = sock.recv_from(&mut buf)
            && n == 9
        {
            got.push(Arrived {
                seq: u64::from_be_bytes(buf[..8].try_into().expect("8 bytes")),
                src: *from.ip(),
                at: Instant::now(),
            });
        }
    }
    got
}

/// One `/healthz` as the prober asked it.
#[derive(Clone, Copy)]
pub struct HealthCheck {
    pub at: Instant,
    pub latency: Duration,
    /// HTTP status, 0 when there was no answer.
    pub status: u16,
    /// Where it failed, when it did: "connect", "send", "answer".
    pub failed_at: &'static str,
    pub phase: Phase,
}

/// Reads one HTTP answer to EOF; its status, 0 if none.
pub fn read_status(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        if buf.len() > 1 << 20 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf[..buf.len().min(32)]).to_string();
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// `/healthz` every 250 ms, as a kubelet would: a new connection, one request, the time
/// until the whole answer is in.
pub fn health_prober(ctx: &Ctx) -> Vec<HealthCheck> {
    ctx.topo.remote.enter_current_thread();
    let mut out = Vec::new();
    let mut next = Instant::now();
    while !ctx.stopping() {
        let phase = ctx.phase();
        let at = Instant::now();
        let (status, failed_at) = ask_healthz(ctx);
        out.push(HealthCheck {
            at,
            latency: at.elapsed(),
            status,
            failed_at,
            phase,
        });
        next += HEALTH_EVERY;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    out
}

/// One `/healthz`: the status and, without one, where it failed. Past [`HEALTH_LIMIT`] the
/// endpoint is looked at while it keeps the prober waiting (for the timeline), then the
/// prober waits up to 10 s.
fn ask_healthz(ctx: &Ctx) -> (u16, &'static str) {
    let addr: SocketAddr = ENDPOINT.parse().expect("address");
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(10)) else {
        return (0, "connect");
    };
    let _ = s.set_nodelay(true);
    if s.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: 198.51.100.1\r\nUser-Agent: kube-probe/1.34\r\nConnection: close\r\n\r\n",
    )
    .is_err()
    {
        return (0, "send");
    }
    let _ = s.set_read_timeout(Some(HEALTH_LIMIT));
    let mut first = [0u8; 1];
    let mut got = s.peek(&mut first).map(|n| n > 0).unwrap_or(false);
    if !got {
        let pid = ctx.agent_pid.load(Ordering::SeqCst);
        let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
        ctx.diag
            .lock()
            .unwrap()
            .push((Instant::now(), endpoint_snapshot(pid, port)));
        let _ = s.set_read_timeout(Some(Duration::from_secs(9)));
        got = s.peek(&mut first).map(|n| n > 0).unwrap_or(false);
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    match if got { read_status(&mut s) } else { 0 } {
        0 => (0, "answer"),
        st => (st, ""),
    }
}

/// The agent's footprint at one moment.
#[derive(Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub phase: Phase,
    pub rss_kib: u64,
    /// Peak resident set so far (VmHWM).
    pub hwm_kib: u64,
    pub fds: usize,
    pub tcp_fds: usize,
    /// Sockets in no table at the time (see [`fds`]).
    pub racing_fds: usize,
    /// Server-side connections of the endpoint, and its accept queue.
    pub conns: usize,
    pub queued: usize,
    pub threads: usize,
}

/// A sample of the agent `pid`.
pub fn sample(pid: u32, phase: Phase) -> Sample {
    let (fds, tcp_fds, racing_fds) = fds(pid);
    let (conns, queued) = endpoint_sockets(pid);
    Sample {
        at: Instant::now(),
        phase,
        rss_kib: proc_kib(pid, "VmRSS:"),
        hwm_kib: proc_kib(pid, "VmHWM:"),
        fds,
        tcp_fds,
        racing_fds,
        conns,
        queued,
        threads: std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0),
    }
}

fn proc_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Inodes of the sockets in a /proc/PID/net table (the process's namespace).
fn socket_inodes(pid: u32, table: &str) -> HashSet<String> {
    std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(9).map(str::to_string))
        .collect()
}

/// The endpoint's TCP sockets (local port of ENDPOINT): connections open on the server
/// side, and the listener's accept queue (connections the kernel completed that the
/// endpoint has not taken yet).
fn endpoint_sockets(pid: u32) -> (usize, usize) {
    let port = format!(":{ENDPOINT_PORT:04X}");
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let (mut open, mut queued) = (0, 0);
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 5 || !f[1].ends_with(&port) {
            continue;
        }
        match f[3] {
            // LISTEN: rx_queue is the accept queue.
            "0A" => {
                queued = f[4]
                    .split(':')
                    .nth(1)
                    .and_then(|q| usize::from_str_radix(q, 16).ok())
                    .unwrap_or(0)
            }
            // ESTABLISHED, CLOSE_WAIT: still held by the endpoint (or queued).
            "01" | "08" => open += 1,
            _ => {}
        }
    }
    (open, queued)
}

/// Open descriptors of `pid`: all of them, the endpoint's TCP connections (and listener),
/// and sockets that were in neither the TCP nor the netlink table (opened or closed while
/// /proc was being read: neither counted as TCP nor as a change of the agent's own
/// descriptors). The tables are read before and after the descriptors.
fn fds(pid: u32) -> (usize, usize, usize) {
    let mut netlink = socket_inodes(pid, "netlink");
    let mut tcp_inodes = socket_inodes(pid, "tcp");
    let mut links = Vec::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            links.push(std::fs::read_link(e.path()).ok());
        }
    }
    netlink.extend(socket_inodes(pid, "netlink"));
    tcp_inodes.extend(socket_inodes(pid, "tcp"));
    let (mut total, mut tcp, mut unknown) = (0, 0, 0);
    for target in links.into_iter().flatten() {
        total += 1;
        let t = target.to_string_lossy();
        if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
            if tcp_inodes.contains(inode) {
                tcp += 1;
            } else if !netlink.contains(inode) {
                unknown += 1;
            }
        }
    }
    (total, tcp, unknown)
}

/// The endpoint's sockets (state, queues) and the agent's threads (state, where they
/// sleep), and the prober's own socket: taken while /healthz keeps the prober waiting.
fn endpoint_snapshot(pid: u32, client_port: u16) -> String {
    let (conns, queued) = endpoint_sockets(pid);
    let mut states = BTreeMap::new();
    let port = format!(":{ENDPOINT_PORT:04X}");
    for l in std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))
        .unwrap_or_default()
        .lines()
        .skip(1)
    {
        let f: Vec<&str> = l.split_whitespace().collect();
        // TIME_WAIT and the like are the kernel's, not the endpoint's.
        if f.len() > 5 && f[1].ends_with(&port) && matches!(f[3], "01" | "03" | "08" | "0A") {
            let mine = f[2].ends_with(&format!(":{client_port:04X}"));
            *states
                .entry(format!(
                    "{}{} tx:rx {}",
                    if mine { "PROBE " } else { "" },
                    f[3],
                    f[4]
                ))
                .or_insert(0) += 1;
        }
    }
    format!(
        "SLOW /healthz: endpoint {conns} connections, {queued} queued; sockets {states:?}; \
         threads {:?}; prober's socket {:?}",
        threads(pid),
        own_socket(client_port)
    )
}

/// The agent's threads: name, state, where each sleeps.
fn threads(pid: u32) -> Vec<String> {
    let mut threads = Vec::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            let tid = t.file_name().to_string_lossy().to_string();
            let stat =
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap_or_default();
            let name = stat
                .split('(')
                .nth(1)
                .and_then(|r| r.split(')').next())
                .unwrap_or("?");
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or("?");
            let wchan = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan"))
                .unwrap_or_default();
            threads.push(format!("{name}:{state}:{wchan}"));
        }
    }
    threads
}

/// The prober's own socket, in the calling thread's namespace.
fn own_socket(client_port: u16) -> Vec<String> {
    std::fs::read_to_string("/proc/thread-self/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(&format!(":{client_port:04X}")))
        })
        .map(|l| l.split_whitespace().take(7).collect::<Vec<_>>().join(" "))
        .collect()
}
