//! Prometheus metrics of the daemon (prometheus-client, OpenMetrics text exposition).

use std::fmt;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Why the agent committed its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The first commit after start.
    Startup,
    /// The config changed (file watch or SIGHUP).
    Config,
    /// Someone else changed the table (nftables event).
    Drift,
    /// The periodic full check found a difference (or events were lost).
    Resync,
    /// A failed commit was retried.
    Retry,
}

impl Reason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::Config => "config",
            Reason::Drift => "drift",
            Reason::Resync => "resync",
            Reason::Retry => "retry",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Labels = Vec<(String, String)>;

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

/// Every metric the agent exports. Cloning shares the underlying values.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    commits: Family<Labels, Counter>,
    commit_errors: Counter,
    commit_duration: Histogram,
    drift_repairs: Counter,
    config_errors: Counter,
    config_last_good: Gauge<f64, AtomicU64>,
    config_valid: Gauge,
    prefixes: Family<Labels, Gauge>,
    elements: Gauge,
    masq_packets: Counter,
    masq_bytes: Counter,
    owner: Family<Labels, Gauge>,
    events_lost: Counter,
    ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `nft_masq_agent_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("nft_masq_agent");
        let m = Metrics {
            registry: Registry::default(),
            commits: Family::default(),
            commit_errors: Counter::default(),
            // 100 µs to 2.5 s: a 64-prefix commit is well under a millisecond, a
            // 100,000-prefix one a few hundred.
            commit_duration: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ]),
            drift_repairs: Counter::default(),
            config_errors: Counter::default(),
            config_last_good: Gauge::default(),
            config_valid: Gauge::default(),
            prefixes: Family::default(),
            elements: Gauge::default(),
            masq_packets: Counter::default(),
            masq_bytes: Counter::default(),
            owner: Family::default(),
            events_lost: Counter::default(),
            ready: Gauge::default(),
        };
        registry.register(
            "commits",
            "Table commits, by reason (startup, config, drift, resync, retry)",
            m.commits.clone(),
        );
        registry.register(
            "commit_errors",
            "Commits the kernel refused (the previous table stayed in force)",
            m.commit_errors.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "Time to encode, send and acknowledge one table replace",
            m.commit_duration.clone(),
        );
        registry.register(
            "drift_repairs",
            "Changes by others to the agent's table that the agent undid",
            m.drift_repairs.clone(),
        );
        registry.register(
            "config_errors",
            "Config loads that failed validation (the last good config stayed in force)",
            m.config_errors.clone(),
        );
        registry.register(
            "config_last_good_load_timestamp_seconds",
            "Unix time of the last successful config load",
            m.config_last_good.clone(),
        );
        registry.register(
            "config_valid",
            "1 if the config file as it is now is valid, 0 if the last load failed",
            m.config_valid.clone(),
        );
        registry.register(
            "prefixes",
            "Non-masquerade prefixes in force, by family",
            m.prefixes.clone(),
        );
        registry.register(
            "set_elements",
            "Interval set elements in the committed table",
            m.elements.clone(),
        );
        registry.register(
            "masqueraded_packets",
            "Packets (new connections) masqueraded, from the masquerade rules' counters",
            m.masq_packets.clone(),
        );
        registry.register(
            "masqueraded_bytes",
            "Bytes of the first packets of masqueraded connections, from the rules' counters",
            m.masq_bytes.clone(),
        );
        registry.register(
            "table_owner",
            "1 for the table ownership mode in force (off, owner, owner-persist)",
            m.owner.clone(),
        );
        registry.register(
            "events_lost",
            "Times nftables notifications were lost (ENOBUFS) and a full check was done",
            m.events_lost.clone(),
        );
        registry.register(
            "ready",
            "1 when the committed table matches the last good config",
            m.ready.clone(),
        );
        let build: Family<Labels, Gauge> = Family::default();
        build
            .get_or_create(&label("version", env!("CARGO_PKG_VERSION")))
            .set(1);
        registry.register("build_info", "Build information", build);
        Metrics { registry, ..m }
    }

    /// A commit succeeded.
    pub fn committed(&self, reason: Reason, seconds: f64, v4: usize, v6: usize, elements: usize) {
        self.commits
            .get_or_create(&label("reason", reason.as_str()))
            .inc();
        self.commit_duration.observe(seconds);
        self.prefixes
            .get_or_create(&label("family", "ipv4"))
            .set(v4 as i64);
        self.prefixes
            .get_or_create(&label("family", "ipv6"))
            .set(v6 as i64);
        self.elements.set(elements as i64);
        if reason == Reason::Drift {
            self.drift_repairs.inc();
        }
    }

    /// A commit failed.
    pub fn commit_failed(&self) {
        self.commit_errors.inc();
    }

    /// A drift found by a full check (not by an event) was repaired.
    pub fn repaired_by_check(&self) {
        self.drift_repairs.inc();
    }

    /// A config load succeeded (`true`, at `unix_time`) or failed.
    pub fn config_loaded(&self, ok: bool, unix_time: f64) {
        if ok {
            self.config_last_good.set(unix_time);
            self.config_valid.set(1);
        } else {
            self.config_errors.inc();
            self.config_valid.set(0);
        }
    }

    /// Sets the ownership mode in force.
    pub fn owner_mode(&self, mode: &str) {
        for m in ["off", "owner", "owner-persist"] {
            self.owner
                .get_or_create(&label("mode", m))
                .set(i64::from(m == mode));
        }
    }

    /// Notifications were lost.
    pub fn events_lost(&self) {
        self.events_lost.inc();
    }

    /// Sets readiness.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Raises the masquerade totals to the given values (they only grow).
    pub fn masqueraded(&self, packets: u64, bytes: u64) {
        let p = self.masq_packets.get();
        if packets > p {
            self.masq_packets.inc_by(packets - p);
        }
        let b = self.masq_bytes.get();
        if bytes > b {
            self.masq_bytes.inc_by(bytes - b);
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::new();
        m.committed(Reason::Startup, 0.0004, 4, 0, 8);
        m.committed(Reason::Drift, 0.0003, 4, 0, 8);
        m.config_loaded(false, 0.0);
        m.owner_mode("owner-persist");
        m.masqueraded(10, 600);
        m.masqueraded(7, 500); // never goes down
        let text = m.render();
        for line in [
            "nft_masq_agent_commits_total{reason=\"startup\"} 1",
            "nft_masq_agent_commits_total{reason=\"drift\"} 1",
            "nft_masq_agent_drift_repairs_total 1",
            "nft_masq_agent_config_errors_total 1",
            "nft_masq_agent_prefixes{family=\"ipv4\"} 4",
            "nft_masq_agent_table_owner{mode=\"owner-persist\"} 1",
            "nft_masq_agent_table_owner{mode=\"off\"} 0",
            "nft_masq_agent_masqueraded_packets_total 10",
            "nft_masq_agent_masqueraded_bytes_total 600",
            "nft_masq_agent_commit_duration_seconds_count 2",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
