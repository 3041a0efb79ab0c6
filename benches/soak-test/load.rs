//! The load: config churn (ConfigMap swaps of the large table), the tamper storm and the
//! HTTP flood. Each records what it did in the shared context; nothing here judges.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use nft_masq_agent::model::TABLE_NAME;
use nft_masq_agent::report::http::MAX_HEADER_BYTES;
use nma_testkit::configs::{ConfigText, spaced_24s};
use nma_testkit::listing::handle_of;

use crate::observe::read_status;
use crate::{Ctx, ENDPOINT, Phase, SMALL_TABLE};

/// A cycle of the main phase: a storm, then calm steps with one swap and one tamper each.
pub const STORM: Duration = Duration::from_secs(10);
pub const STORM_TAMPER_EVERY: Duration = Duration::from_millis(150);
const STORM_SWAP_EVERY: Duration = Duration::from_secs(1);
pub const CALM_STEP: Duration = Duration::from_secs(10);
pub const CALM_STEPS: u32 = 2;
/// Into a calm step: after the swap's commit (seconds at 50,000 prefixes on a busy machine).
const CALM_TAMPER_AT: Duration = Duration::from_secs(3);

/// The tamper actions, in the order the storm cycles through them.
pub const KINDS: [&str; 6] = [
    "flush ruleset",
    "delete table",
    "delete rule: the exemption",
    "insert rule: accept",
    "delete rule: the masquerade",
    "insert rule: masquerade",
];
/// The kinds that delete one of the agent's rules by its handle.
const DELETE_EXEMPTION: usize = 2;
const DELETE_MASQUERADE: usize = 4;

/// One tamper action: an `nft` process in the node namespace (or none, when the rule it was
/// to delete was not there).
#[derive(Clone, Debug)]
pub struct Tamper {
    /// Index into [`KINDS`].
    pub kind: usize,
    pub phase: Phase,
    /// In the calm part of a main-phase cycle (one action per 10 s).
    pub calm: bool,
    /// When its `nft` process was started (after the handle was read, for a deletion).
    pub spawned: Instant,
    pub exited: Instant,
    /// The `nft` process; `None` when the action found no target and ran nothing.
    pub pid: Option<u32>,
    /// nft's exit status was 0.
    pub ok: bool,
    /// nft's complaint when it failed, or why nothing was run.
    pub error: Option<String>,
    /// The handle a rule deletion named.
    pub handle: Option<u64>,
}

/// The config: 10.0.0.0/8 (which holds the exempt destination) and about `n` /24 prefixes
/// from 20.0.0.0 on, 512 addresses apart (so nothing merges), far from both destinations.
/// Versions differ in which sixteenth of the candidates they leave out, so that every swap
/// changes the table (with the same translation for both destinations).
pub fn config_text(n: usize, version: u64) -> String {
    let candidates = spaced_24s(Ipv4Addr::new(20, 0, 0, 0), n + n / 15);
    let exempt: IpNet = "10.0.0.0/8".parse().expect("prefix");
    let list: Vec<IpNet> = std::iter::once(exempt)
        .chain(
            candidates
                .into_iter()
                .enumerate()
                .filter(|(i, _)| *i as u64 % 16 != version % 16)
                .map(|(_, p)| p),
        )
        .collect();
    ConfigText::new().non_masquerade(&list).render()
}

/// A small deterministic jitter source (xorshift), so runs differ only by timing.
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// `d` ± 25 %.
    fn around(&mut self, d: Duration) -> Duration {
        let f = 0.75 + (self.next() % 1000) as f64 / 2000.0;
        d.mul_f64(f)
    }
}

/// Where in a main-phase cycle `since` falls: `None` in the storm, else the calm step's
/// number (unique over the run) and the time into it.
fn calm_step(since: Duration) -> Option<(u64, Duration)> {
    let cycle = STORM + CALM_STEP * CALM_STEPS;
    let n = since.as_nanos() / cycle.as_nanos();
    let pos = since - cycle * n as u32;
    if pos < STORM {
        return None;
    }
    let into = pos - STORM;
    let s = (into.as_nanos() / CALM_STEP.as_nanos()) as u32;
    Some((
        n as u64 * u64::from(CALM_STEPS) + u64::from(s),
        into - CALM_STEP * s,
    ))
}

/// Config churn and the tamper storm, on one schedule, until the run stops.
pub fn conduct(ctx: &Ctx) {
    let mut jitter = Jitter(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    let mut version = 1u64;
    // The storm and the calm each cycle through every kind on their own: on one counter the
    // calm's two actions per cycle fell on the same two kinds run after run (a storm is 66 or
    // 67 actions), and the other kinds were never tried with the table whole.
    let mut kind = 0usize;
    let mut calm_kind = 0usize;
    let mut next_tamper = Instant::now();
    let mut next_swap = Instant::now() + STORM_SWAP_EVERY;
    let mut swapped_step = None;
    let mut tampered_step = None;
    let main_start = *ctx.main_start.get().expect("main phase started");
    let mut do_swap = |phase: Phase| {
        let n = if phase == Phase::Main {
            ctx.prefixes
        } else {
            SMALL_TABLE
        };
        let text = config_text(n, version);
        let at = ctx.cm.lock().unwrap().update(&text);
        ctx.swaps.lock().unwrap().push((at, phase));
        version += 1;
    };
    while !ctx.stopping() {
        let phase = ctx.phase();
        if matches!(phase, Phase::Switch | Phase::Stop) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let now = Instant::now();
        let calm = (phase == Phase::Main)
            .then(|| calm_step(now - main_start))
            .flatten();
        match calm {
            None => {
                if now >= next_tamper {
                    tamper(ctx, kind % KINDS.len(), phase, false);
                    kind += 1;
                    next_tamper = (next_tamper + STORM_TAMPER_EVERY).max(Instant::now());
                }
                if now >= next_swap {
                    do_swap(phase);
                    next_swap = now + jitter.around(STORM_SWAP_EVERY);
                }
            }
            Some((step, into)) => {
                if swapped_step != Some(step) {
                    do_swap(phase);
                    swapped_step = Some(step);
                }
                if into >= CALM_TAMPER_AT && tampered_step != Some(step) {
                    tamper(ctx, calm_kind % KINDS.len(), phase, true);
                    calm_kind += 1;
                    tampered_step = Some(step);
                }
                next_tamper = now;
                next_swap = now + STORM_SWAP_EVERY;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The chain and handle of one of the agent's rules as the table is now, read at the moment
/// of use: the agent's in-place and difference commits give its rules new handles. The
/// exemption is the rule of `postrouting` that looks up `@nonmasq-v4` (or
/// `@nonmasq-dispatch-v4`); the masquerade is the last `masquerade` of `postrouting` (a
/// tamperer's `insert rule ... masquerade` goes before it) or, past `--max-set-prefixes`
/// (block sets), of `translate`. `Err` says why there is none.
fn rule_handle(ctx: &Ctx, kind: usize) -> Result<(&'static str, u64), String> {
    let chains: &[&'static str] = if kind == DELETE_EXEMPTION {
        &["postrouting"]
    } else {
        &["postrouting", "translate"]
    };
    for &chain in chains {
        let out = ctx
            .node()
            .cmd("nft")
            .args(["-a", "list", "chain", "inet", TABLE_NAME, chain])
            .output()
            .map_err(|e| format!("nft list: {e}"))?;
        if !out.status.success() {
            if chain == "postrouting" {
                return Err("no chain to list (table missing)".into());
            }
            continue;
        }
        let listing = String::from_utf8_lossy(&out.stdout);
        let found = if kind == DELETE_EXEMPTION {
            // The set lookup, or past --max-set-prefixes the block map lookup.
            handle_of(&listing, "@nonmasq-")
        } else {
            listing
                .lines()
                .filter(|l| l.contains("masquerade"))
                .filter_map(|l| handle_of(l, "masquerade"))
                .next_back()
        };
        if let Some(h) = found {
            return Ok((chain, h));
        }
    }
    Err("the rule was not in the chain".into())
}

/// Runs one tamper action as its own `nft` process in the node namespace, and records it.
fn tamper(ctx: &Ctx, kind: usize, phase: Phase, calm: bool) {
    let t = format!("inet {TABLE_NAME}");
    let chain = format!("{t} postrouting");
    let handle = match kind {
        DELETE_EXEMPTION | DELETE_MASQUERADE => match rule_handle(ctx, kind) {
            Ok(found) => Some(found),
            Err(why) => {
                let now = Instant::now();
                ctx.tampers.lock().unwrap().push(Tamper {
                    kind,
                    phase,
                    calm,
                    spawned: now,
                    exited: now,
                    pid: None,
                    ok: false,
                    error: Some(why),
                    handle: None,
                });
                return;
            }
        },
        _ => None,
    };
    let args = match (kind, handle) {
        (0, _) => "flush ruleset".to_string(),
        (1, _) => format!("delete table {t}"),
        (3, _) => format!("insert rule {chain} accept"),
        (5, _) => format!("insert rule {chain} masquerade"),
        (_, Some((of, h))) => format!("delete rule {t} {of} handle {h}"),
        (_, None) => unreachable!("a deletion has its handle"),
    };
    let spawned = Instant::now();
    // `ip netns exec` execs nft: the child's pid is the one the kernel names in NEWGEN.
    let child = ctx
        .node()
        .cmd("nft")
        .args(args.split(' '))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nft");
    let pid = child.id();
    let out = child.wait_with_output();
    let exited = Instant::now();
    let ok = out.as_ref().is_ok_and(|o| o.status.success());
    let error = match &out {
        Ok(o) if !ok => String::from_utf8_lossy(&o.stderr)
            .lines()
            .next()
            .map(str::to_string),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    };
    ctx.tampers.lock().unwrap().push(Tamper {
        kind,
        phase,
        calm,
        spawned,
        exited,
        pid: Some(pid),
        ok,
        error,
        handle: handle.map(|(_, h)| h),
    });
}

/// Counters of one kind of flood connection, shared by its clients.
#[derive(Default)]
pub struct FloodStats {
    connections: AtomicU64,
    connect_errors: AtomicU64,
    /// Longest time the server kept one connection open, in ms.
    held_max_ms: AtomicU64,
    status_431: AtomicU64,
    status_408: AtomicU64,
    status_other: AtomicU64,
    status_2xx: AtomicU64,
    no_reply: AtomicU64,
}

/// [`FloodStats`] read once the flood stopped.
#[derive(Clone, Copy, Debug, Default)]
pub struct FloodCounts {
    pub connections: u64,
    pub connect_errors: u64,
    pub held_max: Duration,
    pub status_431: u64,
    pub status_408: u64,
    pub status_other: u64,
    pub status_2xx: u64,
    pub no_reply: u64,
}

impl FloodStats {
    /// The counts so far.
    pub fn counts(&self) -> FloodCounts {
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        FloodCounts {
            connections: get(&self.connections),
            connect_errors: get(&self.connect_errors),
            held_max: Duration::from_millis(get(&self.held_max_ms)),
            status_431: get(&self.status_431),
            status_408: get(&self.status_408),
            status_other: get(&self.status_other),
            status_2xx: get(&self.status_2xx),
            no_reply: get(&self.no_reply),
        }
    }
}

/// One flooding client, forever reconnecting: kind 0 sends its request head a header line
/// every 300 ms and never finishes it; kind 1 sends a head larger than the endpoint accepts;
/// kind 2 connects and sends nothing.
pub fn flood(ctx: &Ctx, kind: usize) {
    ctx.topo.remote.enter_current_thread();
    let addr: SocketAddr = ENDPOINT.parse().expect("address");
    let stats = &ctx.flood[kind];
    let big = {
        let mut h = b"GET /metrics HTTP/1.1\r\nHost: 198.51.100.1\r\nX-Soak: ".to_vec();
        h.resize(h.len() + MAX_HEADER_BYTES + 4096, b'a');
        h.extend_from_slice(b"\r\n\r\n");
        h
    };
    while !ctx.stopping() {
        let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => s,
            Err(_) => {
                // The agent is restarting (owner phase): do not spin.
                stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let status = if kind == 1 {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(&big);
            let status = read_status(&mut s);
            // Refused at once: without a pause this client alone would take a core
            // (thousands of connections a second) and measure the machine, not the agent.
            std::thread::sleep(Duration::from_millis(50));
            status
        } else {
            hold(ctx, &mut s, kind == 0)
        };
        let counter = match status {
            0 => &stats.no_reply,
            200..=299 => &stats.status_2xx,
            408 => &stats.status_408,
            431 => &stats.status_431,
            _ => &stats.status_other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Keeps a connection open until the endpoint closes it, sending a header line every 300 ms
/// if `slow_head` (after the first line of a request), nothing otherwise; records how long
/// the endpoint held it. The status it answered with, 0 if none.
fn hold(ctx: &Ctx, s: &mut TcpStream, slow_head: bool) -> u16 {
    let stats = &ctx.flood[if slow_head { 0 } else { 2 }];
    let t0 = Instant::now();
    let mut status = 0;
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    if slow_head {
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 198.51.100.1\r\n");
    }
    let mut buf = [0u8; 512];
    let mut n_lines = 0u32;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if status == 0 {
                    status = String::from_utf8_lossy(&buf[..n.min(12)])
                        .strip_prefix("HTTP/1.1 ")
                        .and_then(|c| c.get(..3))
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if ctx.stopping() {
                    break;
                }
                if slow_head {
                    n_lines += 1;
                    let line = format!("X-Soak-{n_lines}: slow\r\n");
                    if s.write_all(line.as_bytes()).is_err() {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    if !ctx.stopping() {
        let held = t0.elapsed().as_millis() as u64;
        stats.held_max_ms.fetch_max(held, Ordering::Relaxed);
    }
    status
}
