//! Shared helpers of the benchmark programs: a throwaway network namespace entered by the
//! whole (single-threaded) benchmark, prefix generators and summary statistics.
#![allow(dead_code)] // Each benchmark uses a different part.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};

/// A network namespace that is deleted on drop.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// Creates `nma-bench-<pid>-<tag>`, after removing namespaces left by benchmark runs
    /// that died without cleaning up (their pid no longer exists).
    pub fn new(tag: &str) -> Netns {
        Netns::with_prefix("nma-bench", tag)
    }

    /// Creates `<prefix>-<pid>-<tag>`, after removing `<prefix>-<pid>-*` namespaces whose
    /// process is gone.
    pub fn with_prefix(prefix: &str, tag: &str) -> Netns {
        sweep_stale(prefix);
        let name = format!("{prefix}-{}-{tag}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success());
        assert!(
            matches!(ok, Ok(true)),
            "ip netns add {name} failed (root needed)"
        );
        Netns { name }
    }

    /// Moves the calling thread into the namespace. Benchmarks are single-threaded, so the
    /// agent's sockets and everything spawned from here live in it.
    pub fn enter(&self) {
        let f = File::open(format!("/run/netns/{}", self.name)).expect("netns file");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    }

    /// Runs `f` on a thread inside the namespace (the caller stays where it is); sockets
    /// created there belong to the namespace.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(&path).expect("netns file");
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("thread in namespace")
        })
    }

    /// A command run in the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

/// Deletes `<prefix>-<pid>-*` namespaces whose process is gone.
pub fn sweep_stale(prefix: &str) {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// `n` distinct IPv4 /24 prefixes, never adjacent (so nothing merges), starting at 11.0.0.0.
pub fn prefixes(n: usize) -> Vec<IpNet> {
    (0..n as u32)
        .map(|i| {
            let a = Ipv4Addr::from(0x0b00_0000u32 + i * 512);
            IpNet::V4(Ipv4Net::new(a, 24).expect("valid /24"))
        })
        .collect()
}

/// Median, min and max of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Median.
    pub median: Duration,
    /// Minimum.
    pub min: Duration,
    /// Maximum.
    pub max: Duration,
}

impl Stats {
    /// Summarises a non-empty sample.
    pub fn of(mut v: Vec<Duration>) -> Stats {
        v.sort();
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2
        };
        Stats {
            median,
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    /// `median (min-max)` in milliseconds.
    pub fn ms(&self) -> String {
        format!(
            "{:.2} ms ({:.2}-{:.2})",
            self.median.as_secs_f64() * 1e3,
            self.min.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3
        )
    }
}

/// The value after `--name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Whether `--name` (a flag without a value) is on the command line.
pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// Appends `key value` to the file named by `NMA_BENCH_RESULTS`, for `benches/run`'s
/// summary of targets. Durations are recorded in milliseconds.
pub fn record(key: &str, d: Duration) {
    record_value(key, d.as_secs_f64() * 1e3);
}

/// Appends `key value` (a plain number) to the results file.
pub fn record_value(key: &str, v: f64) {
    if let Some(path) = std::env::var_os("NMA_BENCH_RESULTS") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{key} {v}");
        }
    }
}

/// ip-masq-agent's `iptables-restore` text for one sync (cmd/ip-masq-agent:
/// syncMasqRules): its chain, link-local first, then every CIDR, then the masquerade.
pub fn ip_masq_agent_text(cidrs: &[IpNet]) -> String {
    const NONMASQ: &str =
        r#"-m comment --comment "ip-masq-agent: local traffic is not subject to MASQUERADE""#;
    const MASQ: &str = r#"-m comment --comment "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)""#;
    let link_local = nft_masq_agent::config::LINK_LOCAL_V4;
    let mut s = String::with_capacity(cidrs.len() * 110 + 300);
    s.push_str("*nat\n:IP-MASQ-AGENT - [0:0]\n");
    s.push_str(&format!(
        "-A IP-MASQ-AGENT {NONMASQ} -d {link_local} -j RETURN\n"
    ));
    for c in cidrs {
        s.push_str(&format!("-A IP-MASQ-AGENT {NONMASQ} -d {c} -j RETURN\n"));
    }
    s.push_str(&format!(
        "-A IP-MASQ-AGENT {MASQ} -j MASQUERADE --random-fully\nCOMMIT\n"
    ));
    s
}
