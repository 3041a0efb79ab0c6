//! What the loop asks the background analyses ([`sample_probes`]), what it keeps of them
//! ([`super::worker`]) and how it reports them: one log line per change of the findings (a count and the first few, rate-limited
//! like the drift warnings), the gauges, one line per foreign table too large to analyse,
//! one line when passes start being cut off by the budget and one when they stop.
//!
//! 3,000 foreign masquerade rules once made 3,003 warnings at start and 12,009 after three
//! toggles (issue 17): one line per rule per change. Now a change is one line.

use std::time::Instant;

use super::reconcile::LogLimit;
use super::worker::Analysed;
use crate::analysis::Packet;
use crate::analysis::conflict::Finding;
use crate::config::{Config, values};
use crate::model::{Family, Table, is_exemption_set};
use crate::report::metrics::Metrics;

/// How many findings a log line names; the rest are counted.
pub const NAMED: usize = 5;

/// The longest rule description a log line carries (a rule can be hundreds of expressions).
const RULE_CHARS: usize = 160;

/// A finding's identity: family, table, rule handle.
type Key = (&'static str, String, u64);

fn key(f: &Finding) -> Key {
    (f.family, f.table.clone(), f.handle)
}

/// The analyses as the loop last reported them.
#[derive(Debug, Default)]
pub struct Findings {
    /// The findings the log last described; `None` before the first.
    logged: Option<Vec<Key>>,
    /// Changes of the findings not logged (held back by the rate limit).
    unlogged: usize,
    log: LogLimit,
    /// Tables too large to analyse, each logged once while it stays so.
    too_large: Vec<(&'static str, String)>,
    /// The last pass was cut off by the budget (said once until a pass completes).
    cut_off: bool,
}

impl Findings {
    /// Applies a pass's findings: gauges always, a log line when they changed (within the
    /// rate limit), too-large tables and cut-offs once.
    pub fn analysed(&mut self, a: &Analysed, now: Instant, metrics: &Metrics) {
        metrics.set_conflicts(a.findings.len());
        metrics.analysed(a.duration.as_secs_f64(), a.too_large.len(), a.cut_off());
        self.report_too_large(a);
        self.report_cut_off(a);
        let keys: Vec<Key> = a.findings.iter().map(key).collect();
        if self.logged.as_ref() == Some(&keys) {
            return;
        }
        if self.logged.is_none() && keys.is_empty() {
            // Nothing before, nothing now: nothing to say.
            self.logged = Some(keys);
            return;
        }
        if self.log.admit(now).is_none() {
            self.unlogged += 1;
            return;
        }
        let held = std::mem::take(&mut self.unlogged);
        let line = summary(&a.findings, a.cut_off(), held);
        if keys.is_empty() {
            tracing::info!("{line}");
        } else {
            tracing::warn!("{line}");
        }
        self.logged = Some(keys);
    }

    /// A pass was stopped for a newer one.
    pub fn superseded(&mut self, metrics: &Metrics) {
        metrics.analysis_superseded();
    }

    fn report_too_large(&mut self, a: &Analysed) {
        for (family, table) in &a.too_large {
            if !self
                .too_large
                .iter()
                .any(|(f, t)| f == family && t == table)
            {
                tracing::warn!(
                    "table {family} {table}: its sets hold more elements than \
                     --max-foreign-elements allows in one read ({} read in all); its NAT rules \
                     are not analysed for conflicts with ours (raise --max-foreign-elements \
                     to analyse them, at the cost of memory during each full check)",
                    a.elements
                );
            }
        }
        self.too_large.clone_from(&a.too_large);
    }

    fn report_cut_off(&mut self, a: &Analysed) {
        match (a.cut_off(), self.cut_off) {
            (true, false) => tracing::warn!(
                "the analysis of other NAT tables was cut off after {:.1?} ({} of {} exempt \
                 ranges checked, {} tables): conflicts beyond those found are not reported \
                 (said once until a pass completes)",
                a.duration,
                a.probes.0,
                a.probes.1,
                a.tables
            ),
            (false, true) => tracing::info!(
                "the analysis of other NAT tables completes again ({:.1?})",
                a.duration
            ),
            _ => {}
        }
        self.cut_off = a.cut_off();
    }
}

/// The log line for a set of findings: the count, the first [`NAMED`] and what to do.
pub fn summary(findings: &[Finding], cut_off: bool, held: usize) -> String {
    let incomplete = if cut_off {
        " (the analysis was cut off: there may be more)"
    } else {
        ""
    };
    let held = if held > 0 {
        format!(" ({held} earlier changes not logged)")
    } else {
        String::new()
    };
    if findings.is_empty() {
        return format!("no other NAT rule overrides our decisions any more{incomplete}{held}");
    }
    let named: Vec<String> = findings
        .iter()
        .take(NAMED)
        .map(|f| {
            let mut rule: String = f.rule.chars().take(RULE_CHARS).collect();
            if rule.len() < f.rule.len() {
                rule.push('…');
            }
            format!(
                "{} {} chain {} (priority {}, handle {}, {}): {rule}",
                f.family, f.table, f.chain, f.priority, f.handle, f.verdict
            )
        })
        .collect();
    let more = match findings.len().saturating_sub(NAMED) {
        0 => String::new(),
        n => format!("; and {n} more"),
    };
    let rules = if findings.len() == 1 {
        "NAT rule of another component translates before ours and overrides"
    } else {
        "NAT rules of other components translate before ours and override"
    };
    format!(
        "{} {rules} non-masquerade decisions{incomplete}: {}{more}; \
         find their owners (`nft-masq-agent --explain <destination>` shows which \
         destinations){held}",
        findings.len(),
        named.join("; "),
    )
}

/// The packets to ask other NAT rules about: the first address of each exempt prefix of our
/// table (at most [`MAX_SAMPLES`] per family), from a source in scope.
pub fn sample_probes(table: &Table, config: &Config) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut per_family = [0usize; 2];
    for set in table.sets.iter().filter(|s| is_exemption_set(&s.name)) {
        // The cap is per family, however many block sets the family is cut into.
        let taken = &mut per_family[usize::from(set.family == Family::V6)];
        let room = MAX_SAMPLES.saturating_sub(*taken);
        *taken += set.prefixes.len().min(room);
        let src = values(&config.source_cidrs)
            .find(|n| Family::of(n) == set.family)
            .map(|n| n.network());
        for p in set.prefixes.iter().take(room) {
            out.push(Packet {
                src,
                dst: p.network(),
                oif: None,
                dst_local: Some(false),
            });
        }
    }
    out
}

/// Exempt prefixes sampled per family: enough for any real config, bounded for a huge one.
pub const MAX_SAMPLES: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::conflict::Answer;

    fn finding(handle: u64) -> Finding {
        Finding {
            family: "ip",
            table: "hostile".into(),
            chain: "postrouting".into(),
            priority: 100,
            handle,
            rule: format!("tcp dport {handle}; masquerade"),
            verdict: "masquerade".into(),
            answer: Answer::Yes,
        }
    }

    #[test]
    fn one_line_names_the_first_few_and_counts_the_rest() {
        let all: Vec<Finding> = (1..=3000).map(finding).collect();
        let line = summary(&all, false, 0);
        assert!(
            line.starts_with("3000 NAT rules of other components translate before ours"),
            "{line}"
        );
        assert_eq!(line.matches("chain postrouting").count(), NAMED, "{line}");
        assert!(
            line.contains("handle 5, masquerade): tcp dport 5"),
            "{line}"
        );
        assert!(!line.contains("handle 6,"), "{line}");
        assert!(line.contains("; and 2995 more;"), "{line}");
        assert!(line.len() < 2000, "{} bytes", line.len());

        let one = summary(&all[..1], true, 2);
        assert!(
            one.starts_with("1 NAT rule of another component translates before ours and overrides"),
            "{one}"
        );
        assert!(one.contains("cut off"), "{one}");
        assert!(one.ends_with("(2 earlier changes not logged)"), "{one}");
        assert!(summary(&[], false, 0).starts_with("no other NAT rule"));
    }

    #[test]
    fn a_long_rule_is_shortened() {
        let mut f = finding(1);
        f.rule = "x".repeat(10_000);
        let line = summary(&[f], false, 0);
        assert!(line.len() < 600, "{}", line.len());
        assert!(line.contains("x…"));
    }
}
