//! The flows state ([`Flows`]): which conntrack entries a change of decision deletes, the
//! table found at start (what the flows opened before this start were decided by), and the
//! log and metrics of a reconciliation the worker ran.

use std::sync::Arc;

use crate::daemon::worker::Reconciled;
use crate::kernel::conntrack::Protocols;
use crate::model::Table;
use crate::report::metrics::Metrics;

/// `--conntrack-reconcile`'s name for `p`.
fn protocols_label(p: Protocols) -> &'static str {
    match p {
        Protocols::Connectionless => "UDP, UDP-Lite, ICMP, ICMPv6",
        Protocols::All => "UDP, UDP-Lite, ICMP, ICMPv6, TCP, SCTP, DCCP",
    }
}

/// Conntrack reconciliation: whether it is on, and what the first commit is compared with.
#[derive(Debug)]
pub struct Flows {
    /// Which conntrack entries a decision change deletes; `None`: none (`off`).
    protocols: Option<Protocols>,
    /// The table found at start (a previous agent's), until the first commit replaces it.
    found_at_start: Option<Table>,
}

impl Flows {
    /// Reconciliation deleting `protocols`' entries (`None`: off).
    pub fn new(protocols: Option<Protocols>) -> Flows {
        Flows {
            protocols,
            found_at_start: None,
        }
    }

    /// Whether conntrack is reconciled after a change.
    pub fn on(&self) -> bool {
        self.protocols.is_some()
    }

    /// The table a previous agent left, read at start.
    pub fn found_at_start(&mut self, table: Option<Table>) {
        self.found_at_start = table;
    }

    /// Which conntrack entries a change of decision deletes (`None`: none).
    pub fn protocols(&self) -> Option<Protocols> {
        self.protocols
    }

    /// The table a commit replaced: `before`, or for the first commit the table found at
    /// start, if any (taken: only the first commit is compared with it).
    pub fn replaced(&mut self, before: Option<Arc<Table>>) -> Option<Arc<Table>> {
        before.or_else(|| self.found_at_start.take().map(Arc::new))
    }

    /// A conntrack reconciliation ran: the conntrack entries of the flows a change of
    /// decision affects were deleted, so their next packet is decided by the new rules. A
    /// failure is logged and counted; the commit stands.
    pub fn reconciled(r: Reconciled, metrics: &Metrics) {
        let elapsed = r.duration;
        let protocols = r.protocols;
        if r.dropped > 0 {
            tracing::warn!(
                "conntrack: {} tables in force for a moment between two reconciliations were not \
                 compared (commits kept coming while one ran); flows opened under them only \
                 may keep their old translation",
                r.dropped
            );
        }
        match r.result {
            Ok(r) => {
                let ok = r.failed == 0;
                metrics.conntrack_reconciled(ok, r.deleted, elapsed.as_secs_f64());
                let duration_ms = format!("{:.1}", elapsed.as_secs_f64() * 1e3);
                tracing::info!(
                    examined = r.examined,
                    deleted = r.deleted,
                    already_gone = r.already_gone,
                    failed = r.failed,
                    deferred = r.deferred,
                    duration_ms,
                    "conntrack: {} of {} entries deleted ({}): the flows whose translation \
                     the change affects start over under the new rules",
                    r.deleted,
                    r.examined,
                    protocols_label(protocols),
                );
                if !ok || r.deferred > 0 {
                    tracing::warn!(
                        "conntrack: {} entries could not be deleted ({:?} by errno) and {} were \
                         left for the next change; those flows keep their old translation",
                        r.failed,
                        r.errors,
                        r.deferred
                    );
                }
            }
            Err(e) => {
                metrics.conntrack_reconciled(false, 0, elapsed.as_secs_f64());
                tracing::warn!(
                    "conntrack reconciliation failed: {e}; flows opened before the change keep \
                     their old translation (the table is committed)"
                );
            }
        }
    }
}
