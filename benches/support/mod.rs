//! Shared helpers of the benchmark programs: prefix generators, summary statistics, the
//! command line and the results file. Namespaces, the agent process and config files come
//! from the test kit (`nma_testkit`).
#![allow(dead_code)] // Each benchmark uses a different part.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::IpNet;

/// Namespaces of the benchmarks are `nma-bench-<pid>-<tag>`.
pub const PREFIX: &str = "nma-bench";

/// `n` distinct IPv4 /24 prefixes, never adjacent (so nothing merges), starting at 11.0.0.0.
pub fn prefixes(n: usize) -> Vec<IpNet> {
    nma_testkit::configs::spaced_24s(Ipv4Addr::new(11, 0, 0, 0), n)
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
