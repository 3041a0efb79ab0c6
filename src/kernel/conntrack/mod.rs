//! Conntrack reconciliation: delete the conntrack entries of flows a policy change affects,
//! so that their next packet is evaluated by the NAT rules in force (issue 12).
//!
//! NAT is decided on a flow's first packet and kept in its conntrack entry; a UDP flow that
//! keeps sending keeps its old translation for ever. Deleting the entry makes the next
//! packet a new flow. Which flows a change affects is the caller's decision (a predicate);
//! this module is the kernel-facing engine: ctnetlink over the shared netfilter netlink
//! foundation ([`crate::kernel::netlink`]), no `conntrack` binary, no C.
//!
//! - [`msg`] (pure): [`Flow`] decoded from a dump, the dump, delete and create requests;
//! - [`socket`] (I/O): [`Conntrack`], streamed dumps and batched deletes;
//! - [`reconcile`]: dump, select (protocol filter, then the predicate), delete, with a
//!   [`Report`].

pub mod error;
pub mod msg;
pub mod socket;
pub mod uapi;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use error::ConntrackError;
pub use msg::{Flow, L4, Tuple};
pub use socket::{Conntrack, DeleteReport, DumpStats};

use crate::addr::prefix::Family;
use uapi::*;

/// The most entries one [`reconcile`] call deletes. Bounds the call's time (deletes ran at
/// 75,000-130,000 entries/s on a busy 2-core machine: some 1.5-2.5 s at the bound, on top
/// of the dump) and memory (the selected flows are held between dump and delete, about 120
/// bytes each: 24 MB at the bound); matches beyond it are reported as [`Report::deferred`]
/// for a later call.
pub const MAX_DELETIONS: usize = 200_000;

/// How often a dump is tried when the kernel reports it interrupted.
pub const DUMP_ATTEMPTS: usize = 3;

/// Which layer 4 protocols reconciliation may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// UDP, UDP-Lite, ICMP and ICMPv6: re-evaluating such a flow costs nothing (its next
    /// datagram simply starts a new entry under the current rules).
    Connectionless,
    /// Also TCP, SCTP and DCCP. An open connection whose translation changes breaks (the
    /// peer sees a new source mid-stream), which is what the operator asks for with this.
    All,
}

impl Protocols {
    /// Whether `protocol` (an IANA number) is included. Protocols outside both lists (GRE,
    /// ESP, ...) are never touched.
    pub fn includes(self, protocol: u8) -> bool {
        match protocol {
            IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_ICMP | IPPROTO_ICMPV6 => true,
            IPPROTO_TCP | IPPROTO_SCTP | IPPROTO_DCCP => self == Protocols::All,
            _ => false,
        }
    }
}

/// What one [`reconcile`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Entries the dumps returned (of the requested families, every zone).
    pub examined: u64,
    /// Entries of an included protocol that the predicate selected.
    pub matched: u64,
    /// Entries deleted.
    pub deleted: u64,
    /// Selected entries that were gone by the time of the delete (expired, or replaced by a
    /// new entry with the same tuple and another id): nothing left to do.
    pub already_gone: u64,
    /// Selected entries the kernel did not delete (see `errors`).
    pub failed: u64,
    /// Failures by errno (ENOBUFS: the answer was lost, the outcome is unknown).
    pub errors: BTreeMap<i32, u64>,
    /// Selected entries beyond [`MAX_DELETIONS`], left for a later call.
    pub deferred: u64,
    /// Entries the dump returned that did not decode; never deleted.
    pub undecodable: u64,
    /// Wall time of the call.
    pub duration: Duration,
}

/// Dumps the conntrack entries of `families`, selects those of `protocols` for which
/// `affected` is true, and deletes them (at most [`MAX_DELETIONS`]).
///
/// The predicate sees each entry as the kernel reported it; `affected` is typically "the
/// original destination lies in a range whose decision changed". Both families are read in
/// one dump (the kernel walks its whole table for any dump). The dump is read to its end
/// before the first delete, so the table does not change under it by our hand; one the
/// kernel reports interrupted is repeated, up to [`DUMP_ATTEMPTS`] times, with a fresh
/// selection. Errors are failures of the whole call (socket, dump); individual entries the
/// kernel would not delete are counted in the report.
pub fn reconcile(
    conn: &mut Conntrack,
    families: &[Family],
    protocols: Protocols,
    affected: impl Fn(&Flow) -> bool,
) -> Result<Report, ConntrackError> {
    let start = Instant::now();
    let mut report = Report::default();
    let both = families.contains(&Family::V4) && families.contains(&Family::V6);
    let Some(&first) = families.first() else {
        return Ok(report);
    };
    let mut selected: Vec<Flow> = Vec::new();
    let mut attempt = 1;
    loop {
        selected.clear();
        let (mut matched, mut deferred) = (0u64, 0u64);
        let mut select = |flow: &Flow| {
            if !protocols.includes(flow.protocol) || !affected(flow) {
                return;
            }
            matched += 1;
            if selected.len() < MAX_DELETIONS {
                selected.push(*flow);
            } else {
                deferred += 1;
            }
        };
        // One dump serves both families: the kernel walks its whole table either way.
        let dumped = if both {
            conn.dump_all(&mut select)
        } else {
            conn.dump(first, &mut select)
        };
        match dumped {
            Ok(stats) => {
                report.examined = stats.flows;
                report.undecodable = stats.undecodable;
                report.matched = matched;
                report.deferred = deferred;
                break;
            }
            Err(ConntrackError::Interrupted { request, .. }) => {
                if attempt == DUMP_ATTEMPTS {
                    return Err(ConntrackError::Interrupted {
                        request,
                        attempts: attempt,
                    });
                }
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
    let deleted = conn.delete(&selected)?;
    report.deleted = deleted.deleted;
    report.already_gone = deleted.already_gone;
    report.failed = deleted.failed;
    report.errors = deleted.errors;
    report.duration = start.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connectionless_is_udp_udplite_icmp_icmpv6_and_all_adds_tcp_sctp_dccp() {
        for p in [17, 136, 1, 58] {
            assert!(Protocols::Connectionless.includes(p), "{p}");
            assert!(Protocols::All.includes(p), "{p}");
        }
        for p in [6, 132, 33] {
            assert!(!Protocols::Connectionless.includes(p), "{p}");
            assert!(Protocols::All.includes(p), "{p}");
        }
        // GRE, ESP, AH, IPIP, and anything unknown: never touched.
        for p in [47, 50, 51, 4, 0, 255] {
            assert!(!Protocols::Connectionless.includes(p), "{p}");
            assert!(!Protocols::All.includes(p), "{p}");
        }
    }
}
