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

/// Where the table in force comes from, for the `policy_source` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// A valid config file (or its absence: ip-masq-agent's defaults on purpose).
    Config,
    /// The defaults, because the config was invalid at start and there was no table.
    Defaults,
    /// The table found at start, kept because the config was invalid.
    Adopted,
    /// ip-masq-agent's defaults, because no path given explicitly with `--config` exists
    /// (a typo or a volume not mounted, rather than defaults on purpose).
    Missing,
}

impl PolicySource {
    const ALL: [PolicySource; 4] = [
        PolicySource::Config,
        PolicySource::Defaults,
        PolicySource::Adopted,
        PolicySource::Missing,
    ];

    fn as_str(self) -> &'static str {
        match self {
            PolicySource::Config => "config",
            PolicySource::Defaults => "defaults",
            PolicySource::Adopted => "adopted",
            PolicySource::Missing => "missing",
        }
    }
}

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    commits: Family<Labels, Counter>,
    commit_errors: Counter,
    commit_duration: Histogram,
    drift_repairs: Counter,
    check_errors: Counter,
    config_errors: Counter,
    config_last_good: Gauge<f64, AtomicU64>,
    config_valid: Gauge,
    policy_source: Family<Labels, Gauge>,
    prefixes: Family<Labels, Gauge>,
    snat_rules: Family<Labels, Gauge>,
    elements: Gauge,
    masq_packets: Counter,
    masq_bytes: Counter,
    owner: Family<Labels, Gauge>,
    contested: Gauge,
    conflicts: Gauge,
    too_large: Gauge,
    analysis_incomplete: Family<Labels, Counter>,
    analysis_duration: Gauge<f64, AtomicU64>,
    events_lost: Counter,
    ready: Gauge,
    ct_runs: Counter,
    ct_errors: Counter,
    ct_deleted: Counter,
    ct_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// Help texts, as Prometheus shows them.
const HELP_COMMITS: &str = "Table commits, by reason (startup, config, drift, resync, retry)";
const HELP_COMMIT_ERRORS: &str = "Commits the kernel refused (the previous table stayed in force)";
const HELP_COMMIT_DURATION: &str = "Time to encode, send and acknowledge one table replace";
const HELP_DRIFT_REPAIRS: &str = "Changes by others to the agent's table that the agent undid";
const HELP_CHECK_ERRORS: &str = "Full checks that could not read the table back";
const HELP_CONFIG_ERRORS: &str =
    "Config loads that failed validation (the last good config stayed in force)";
const HELP_CONFIG_LAST_GOOD: &str = "Unix time of the last successful config load";
const HELP_CONFIG_VALID: &str =
    "1 if the config file as it is now is valid, 0 if the last load failed";
const HELP_POLICY_SOURCE: &str = "1 for where the table in force comes from: config, defaults (invalid config at start, no table), adopted (invalid config at start, table kept) or missing (no --config path given explicitly exists: the defaults)";
const HELP_PREFIXES: &str = "Non-masquerade prefixes in force, by family";
const HELP_SNAT_RULES: &str = "snatRules intervals in force, by family: the source ranges of the map that gives each its SNAT address (a prefix nested in another cuts it in up to three)";
const HELP_ELEMENTS: &str = "Interval set elements in the committed table";
const HELP_MASQ_PACKETS: &str =
    "Packets (new connections) masqueraded, from the masquerade rules' counters";
const HELP_MASQ_BYTES: &str =
    "Bytes of the first packets of masqueraded connections, from the rules' counters";
const HELP_OWNER: &str = "1 for the table ownership mode in force (off, owner, owner-persist)";
const HELP_CONFLICTS: &str = "NAT rules of other components that translate before ours and would override a non-masquerade decision (rules for marked packets only, such as kube-proxy's, are not counted)";
const HELP_TOO_LARGE: &str = "Other NAT tables not analysed for conflicts because their sets hold more elements than --max-foreign-elements allows";
const HELP_ANALYSIS_INCOMPLETE: &str = "Conflict analysis passes that did not complete: cut off by the time budget (reason budget: their findings are a lower bound) or stopped for a newer config or ruleset (reason superseded)";
const HELP_ANALYSIS_DURATION: &str =
    "Duration of the last conflict analysis pass (reading the other NAT tables included)";
const HELP_CONTESTED: &str =
    "1 while another committer keeps changing the table (repairs cannot win: find it)";
const HELP_EVENTS_LOST: &str =
    "Times nftables notifications were lost (ENOBUFS) and a full check was done";
const HELP_READY: &str = "1 when the committed table matches the last good config";
const HELP_CT_RUNS: &str =
    "Conntrack reconciliations after commits that changed a translation decision";
const HELP_CT_ERRORS: &str = "Conntrack reconciliations that failed, or left entries the kernel would not delete (those flows keep their old translation)";
const HELP_CT_DELETED: &str =
    "Conntrack entries deleted because the policy change affected their flow";
const HELP_CT_DURATION: &str = "Time of one conntrack reconciliation (dump, select, delete)";

/// Registers `metric` and hands it back (its clones share the value).
fn register<M: prometheus_client::registry::Metric + Clone>(
    r: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    r.register(name, help, metric.clone());
    metric
}

/// Registers a new metric of the type the field wants.
fn reg<M: prometheus_client::registry::Metric + Clone + Default>(
    r: &mut Registry,
    name: &str,
    help: &str,
) -> M {
    register(r, name, help, M::default())
}

impl Metrics {
    /// Registers every metric under the `nft_masq_agent_` prefix.
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("nft_masq_agent");
        let build: Family<Labels, Gauge> = reg(&mut r, "build_info", "Build information");
        build
            .get_or_create(&label("version", env!("CARGO_PKG_VERSION")))
            .set(1);
        // 100 µs to 2.5 s: a 64-prefix commit is well under a millisecond, a 100,000-prefix
        // one a few hundred.
        let buckets = [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5,
        ];
        Metrics {
            commits: reg(&mut r, "commits", HELP_COMMITS),
            commit_errors: reg(&mut r, "commit_errors", HELP_COMMIT_ERRORS),
            commit_duration: register(
                &mut r,
                "commit_duration_seconds",
                HELP_COMMIT_DURATION,
                Histogram::new(buckets),
            ),
            drift_repairs: reg(&mut r, "drift_repairs", HELP_DRIFT_REPAIRS),
            check_errors: reg(&mut r, "check_errors", HELP_CHECK_ERRORS),
            config_errors: reg(&mut r, "config_errors", HELP_CONFIG_ERRORS),
            config_last_good: reg(
                &mut r,
                "config_last_good_load_timestamp_seconds",
                HELP_CONFIG_LAST_GOOD,
            ),
            config_valid: reg(&mut r, "config_valid", HELP_CONFIG_VALID),
            policy_source: reg(&mut r, "policy_source", HELP_POLICY_SOURCE),
            prefixes: reg(&mut r, "prefixes", HELP_PREFIXES),
            snat_rules: reg(&mut r, "snat_rule_intervals", HELP_SNAT_RULES),
            elements: reg(&mut r, "set_elements", HELP_ELEMENTS),
            masq_packets: reg(&mut r, "masqueraded_packets", HELP_MASQ_PACKETS),
            masq_bytes: reg(&mut r, "masqueraded_bytes", HELP_MASQ_BYTES),
            owner: reg(&mut r, "table_owner", HELP_OWNER),
            contested: reg(&mut r, "table_contested", HELP_CONTESTED),
            conflicts: reg(&mut r, "conflicting_nat_rules", HELP_CONFLICTS),
            too_large: reg(&mut r, "foreign_tables_too_large", HELP_TOO_LARGE),
            analysis_incomplete: {
                let f: Family<Labels, Counter> =
                    reg(&mut r, "analysis_incomplete", HELP_ANALYSIS_INCOMPLETE);
                // Both series from the start, so a rate() sees the first one.
                for reason in ["budget", "superseded"] {
                    drop(f.get_or_create(&label("reason", reason)));
                }
                f
            },
            analysis_duration: reg(&mut r, "analysis_duration_seconds", HELP_ANALYSIS_DURATION),
            events_lost: reg(&mut r, "events_lost", HELP_EVENTS_LOST),
            ready: reg(&mut r, "ready", HELP_READY),
            ct_runs: reg(&mut r, "conntrack_reconciliations", HELP_CT_RUNS),
            ct_errors: reg(&mut r, "conntrack_reconcile_errors", HELP_CT_ERRORS),
            ct_deleted: reg(&mut r, "conntrack_entries_deleted", HELP_CT_DELETED),
            // 1 ms to 10 s: the dump walks the node's whole conntrack table (about 1 s
            // for 100,000 entries on a busy 2-core machine).
            ct_duration: register(
                &mut r,
                "conntrack_reconcile_duration_seconds",
                HELP_CT_DURATION,
                Histogram::new([
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            ),
            registry: r,
        }
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

    /// The `snatRules` map intervals of the table just committed, by family.
    pub fn snat_rule_intervals(&self, v4: usize, v6: usize) {
        for (family, n) in [("ipv4", v4), ("ipv6", v6)] {
            self.snat_rules
                .get_or_create(&label("family", family))
                .set(n as i64);
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

    /// A full check could not read the table.
    pub fn check_failed(&self) {
        self.check_errors.inc();
    }

    /// Sets where the table in force comes from.
    pub fn policy_source(&self, source: PolicySource) {
        for s in PolicySource::ALL {
            self.policy_source
                .get_or_create(&label("source", s.as_str()))
                .set(i64::from(s == source));
        }
    }

    /// Sets whether another committer keeps changing the table.
    pub fn set_contested(&self, contested: bool) {
        self.contested.set(i64::from(contested));
    }

    /// Sets how many other NAT rules override our non-masquerade decisions.
    pub fn set_conflicts(&self, n: usize) {
        self.conflicts.set(n as i64);
    }

    /// A conflict analysis pass ended after `seconds`, `too_large` tables left out; `cut_off`
    /// when the time budget ended it early.
    pub fn analysed(&self, seconds: f64, too_large: usize, cut_off: bool) {
        self.analysis_duration.set(seconds);
        self.too_large.set(too_large as i64);
        if cut_off {
            self.analysis_incomplete
                .get_or_create(&label("reason", "budget"))
                .inc();
        }
    }

    /// A conflict analysis pass was stopped for a newer one.
    pub fn analysis_superseded(&self) {
        self.analysis_incomplete
            .get_or_create(&label("reason", "superseded"))
            .inc();
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

    /// A conntrack reconciliation ran: `deleted` entries in `seconds`; `ok` unless it failed
    /// or the kernel refused some deletions.
    pub fn conntrack_reconciled(&self, ok: bool, deleted: u64, seconds: f64) {
        self.ct_runs.inc();
        if !ok {
            self.ct_errors.inc();
        }
        self.ct_deleted.inc_by(deleted);
        self.ct_duration.observe(seconds);
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
        m.analysed(0.25, 2, true);
        m.analysis_superseded();
        m.snat_rule_intervals(3, 1);
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
            "nft_masq_agent_foreign_tables_too_large 2",
            "nft_masq_agent_analysis_incomplete_total{reason=\"budget\"} 1",
            "nft_masq_agent_analysis_incomplete_total{reason=\"superseded\"} 1",
            "nft_masq_agent_analysis_duration_seconds 0.25",
            "nft_masq_agent_snat_rule_intervals{family=\"ipv4\"} 3",
            "nft_masq_agent_snat_rule_intervals{family=\"ipv6\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
