//! The agent's HTTP endpoint: plain `GET`s and the Prometheus text it serves.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The agent's default HTTP port (`--metrics-address 127.0.0.1:9983`).
pub const HTTP_PORT: u16 = 9983;

/// An HTTP reply from the agent's endpoint.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code (0 if the reply had none, or there was no reply).
    pub status: u16,
    /// Body (for a failed request: `error: ...`).
    pub body: String,
    /// From connecting to the end of the reply.
    pub took: Duration,
}

impl Reply {
    /// A request that failed after `took`: status 0, the error as the body.
    pub fn failed(e: &std::io::Error, took: Duration) -> Reply {
        Reply {
            status: 0,
            body: format!("error: {e}"),
            took,
        }
    }
}

/// `GET path` from `127.0.0.1:port` in the calling thread's namespace (HTTP/1.0: the server
/// closes), each socket operation bounded by `timeout`; the reply and how long it took.
pub fn http_get_here(port: u16, path: &str, timeout: Duration) -> std::io::Result<Reply> {
    http_get(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), path, timeout)
}

/// `GET path` from `addr` in the calling thread's namespace, as [`http_get_here`].
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<Reply> {
    let start = Instant::now();
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

/// [`http_get`] that never fails: a request that could not be made is a [`Reply::failed`]
/// (status 0) that took what it took; for probes counting slow or failed replies.
pub fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Reply {
    let start = Instant::now();
    http_get(addr, path, timeout).unwrap_or_else(|e| Reply::failed(&e, start.elapsed()))
}

/// A URL `http://HOST:PORT/PATH` (a Kubernetes probe's, as deploy/oci-spec writes them) as
/// the address and the path.
pub fn split_url(url: &str) -> Option<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Some((host.parse().ok()?, path.to_string()))
}

/// Asserts every reply is a 200 that came within `bound`; returns the slowest time.
/// `what` names the probes, `log` is the agent's log, both for the failure message.
pub fn assert_quick(replies: &[Reply], bound: Duration, what: &str, log: &str) -> Duration {
    let worst = replies.iter().map(|r| r.took).max().unwrap_or_default();
    let bad: Vec<String> = replies
        .iter()
        .filter(|r| r.status != 200 || r.took >= bound)
        .map(|r| format!("{} in {:?}: {}", r.status, r.took, r.body.trim()))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} probes failed or took {bound:?} or more (worst {worst:?}):\n{}\nlog:\n{}",
        bad.len(),
        replies.len(),
        bad.join("\n"),
        log
    );
    worst
}

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

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# HELP nft_masq_agent_commits_total Commits.
nft_masq_agent_commits_total{reason=\"startup\"} 1
nft_masq_agent_commits_total{reason=\"drift\"} 6
nft_masq_agent_config_valid 1
";

    #[test]
    fn series_and_families_are_read_from_the_text() {
        assert_eq!(
            series(METRICS, "nft_masq_agent_commits_total{reason=\"drift\"}"),
            6.0
        );
        assert_eq!(series(METRICS, "nft_masq_agent_config_valid"), 1.0);
        assert_eq!(series(METRICS, "nft_masq_agent_absent"), 0.0);
        assert_eq!(family_sum(METRICS, "nft_masq_agent_commits_total"), 7.0);
    }

    #[test]
    fn probe_urls_split_into_address_and_path() {
        let (addr, path) = split_url("http://198.51.100.1:9983/readyz").unwrap();
        assert_eq!(addr.to_string(), "198.51.100.1:9983");
        assert_eq!(path, "/readyz");
        assert_eq!(split_url("http://127.0.0.1:9983").unwrap().1, "/");
        assert!(split_url("https://x/").is_none());
    }
}
