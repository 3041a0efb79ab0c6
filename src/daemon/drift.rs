//! Deciding, from nftables notifications, whether the agent's table needs repair.
//!
//! Pure: the loop feeds what the event socket read and what its own commits did; this says
//! "repair now" (someone else changed our table), "check" (notifications may be missing:
//! ENOBUFS or a generation gap) or nothing; and, per transaction, the [`Step`] the model of
//! the live table follows (what it did to our table, if anything).

use crate::kernel::nft::events::{Detail, Drained, Event};
use crate::kernel::nft::live::{Edit, ElementChange, Step};
use crate::kernel::nft::uapi::{self, NFPROTO_INET};
use crate::model::TABLE_NAME;

/// Who committed a transaction, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committer {
    /// Process name (lossy: names are the committer's choice).
    pub proc_name: Option<String>,
    /// PID as the kernel sees it (the host PID in a pod).
    pub pid: Option<u32>,
    /// Netlink port id of the committing socket.
    pub port_id: u32,
}

impl std::fmt::Display for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pid {}, netlink port {})",
            self.proc_name.as_deref().unwrap_or("?"),
            self.pid.map_or("?".to_string(), |p| p.to_string()),
            self.port_id
        )
    }
}

/// A change someone else made to our table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What changed ("rule deleted, table deleted").
    pub what: String,
    /// Who changed it.
    pub by: Committer,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} by {}", self.what, self.by)
    }
}

/// What the loop should do after a batch of notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing concerns our table.
    Nothing,
    /// Another process changed our table: re-commit.
    Repair(Change),
    /// Notifications may have been lost: read the table back and compare.
    Check(&'static str),
}

/// Follows the notification stream between the agent's own commits.
#[derive(Debug, Clone)]
pub struct Tracker {
    our_port: u32,
    last_gen: Option<u32>,
    /// Kinds of foreign changes to our table since the last NEWGEN.
    pending: Vec<&'static str>,
    /// What the transaction in progress did to our table, for the live-table model.
    edit: Edit,
    /// Steps for the live-table model not yet taken ([`Tracker::take_steps`]).
    steps: Vec<Step>,
}

fn describe_change(kind: u16) -> &'static str {
    match kind {
        uapi::NFT_MSG_NEWTABLE => "table changed",
        uapi::NFT_MSG_DELTABLE | uapi::NFT_MSG_DESTROYTABLE => "table deleted",
        uapi::NFT_MSG_NEWCHAIN => "chain added or changed",
        uapi::NFT_MSG_DELCHAIN => "chain deleted",
        uapi::NFT_MSG_NEWRULE => "rule added",
        uapi::NFT_MSG_DELRULE => "rule deleted",
        uapi::NFT_MSG_NEWSET => "set added",
        uapi::NFT_MSG_DELSET => "set deleted",
        uapi::NFT_MSG_NEWSETELEM => "element added",
        uapi::NFT_MSG_DELSETELEM | uapi::NFT_MSG_DESTROYSETELEM => "element deleted",
        _ => "object changed",
    }
}

impl Tracker {
    /// A tracker for the command socket with port id `our_port`.
    pub fn new(our_port: u32) -> Tracker {
        Tracker {
            our_port,
            last_gen: None,
            pending: Vec::new(),
            edit: Edit::default(),
            steps: Vec::new(),
        }
    }

    /// Records the generation after one of our own commits (read with GETGEN while we were
    /// out of the group): notifications of older generations are then stale, since our
    /// commit replaced whatever they changed.
    pub fn committed(&mut self, generation: Option<u32>) {
        self.last_gen = generation;
        self.pending.clear();
        self.edit = Edit::default();
    }

    /// The steps the live-table model follows, one per transaction seen since the last
    /// call (and [`Step::Lost`] where notifications were lost).
    pub fn take_steps(&mut self) -> Vec<Step> {
        std::mem::take(&mut self.steps)
    }

    /// Records what one notification of a foreign transaction did to our table.
    fn record(&mut self, kind: u16, detail: Detail) {
        match detail {
            Detail::Elements { set, keys } => {
                let added = kind == uapi::NFT_MSG_NEWSETELEM;
                match self.edit.elements.last_mut() {
                    Some(last) if last.set == set && last.added == added => {
                        last.keys.extend(keys);
                    }
                    _ => self.edit.elements.push(ElementChange { set, added, keys }),
                }
            }
            Detail::Rule { chain } => {
                if !self.edit.chains.contains(&chain) {
                    self.edit.chains.push(chain);
                }
            }
            Detail::Undecodable => {
                self.edit.unknown = Some("a notification that did not decode");
            }
            Detail::None => self.edit.unknown = Some(describe_change(kind)),
        }
    }

    /// The last generation seen.
    #[cfg(test)]
    pub fn generation(&self) -> Option<u32> {
        self.last_gen
    }

    /// Digests one read of the event socket.
    pub fn observe(&mut self, drained: Drained) -> Verdict {
        let mut repair = None;
        let mut check = drained.lost.then_some("notifications were lost (ENOBUFS)");
        if drained.lost {
            self.steps.push(Step::Lost);
        }
        for ev in drained.events {
            match ev {
                Event::Object {
                    kind,
                    family,
                    table,
                    port_id,
                    detail,
                } => {
                    if table == TABLE_NAME && family == NFPROTO_INET && port_id != self.our_port {
                        let what = describe_change(kind);
                        if !self.pending.contains(&what) {
                            self.pending.push(what);
                        }
                        self.record(kind, detail);
                    }
                }
                Event::Generation {
                    id,
                    port_id,
                    proc_name,
                    pid,
                } => {
                    // Wrapping comparison: generation ids are u32 counters.
                    let stale = self
                        .last_gen
                        .is_some_and(|g| (id.wrapping_sub(g) as i32) <= 0);
                    let edit = std::mem::take(&mut self.edit);
                    if !stale {
                        if self.last_gen.is_some_and(|g| id != g.wrapping_add(1)) {
                            check = Some("a generation was skipped");
                        }
                        self.steps.push(Step::Generation {
                            from: self.last_gen,
                            to: id,
                            edit: (!edit.is_empty()).then_some(edit),
                        });
                        self.last_gen = Some(id);
                        if !self.pending.is_empty() && port_id != self.our_port {
                            repair = Some(Change {
                                what: self.pending.join(", "),
                                by: Committer {
                                    proc_name,
                                    pid,
                                    port_id,
                                },
                            });
                        }
                    }
                    self.pending.clear();
                }
            }
        }
        match (repair, check) {
            (Some(r), _) => Verdict::Repair(r),
            (None, Some(c)) => Verdict::Check(c),
            (None, None) => Verdict::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::nft::uapi::{
        NFPROTO_IPV4, NFT_MSG_DELRULE, NFT_MSG_DELTABLE, NFT_MSG_NEWRULE,
    };

    const US: u32 = 100;
    const NFT: u32 = 4242;

    fn obj(kind: u16, table: &str, port_id: u32) -> Event {
        Event::Object {
            kind,
            family: NFPROTO_INET,
            table: table.into(),
            port_id,
            detail: Detail::None,
        }
    }

    fn gen_ev(id: u32, port_id: u32) -> Event {
        Event::Generation {
            id,
            port_id,
            proc_name: Some("nft".into()),
            pid: Some(7),
        }
    }

    fn drained(events: Vec<Event>) -> Drained {
        Drained {
            events,
            lost: false,
            keys: 0,
        }
    }

    fn tracker() -> Tracker {
        let mut t = Tracker::new(US);
        t.committed(Some(10));
        t
    }

    #[test]
    fn a_foreign_change_to_our_table_is_repaired() {
        let mut t = tracker();
        let v = t.observe(drained(vec![
            obj(NFT_MSG_DELRULE, TABLE_NAME, NFT),
            gen_ev(11, NFT),
        ]));
        let Verdict::Repair(change) = v else {
            panic!("{v:?}")
        };
        assert_eq!(
            change.to_string(),
            "rule deleted by nft (pid 7, netlink port 4242)"
        );
        assert_eq!(t.generation(), Some(11));
    }

    #[test]
    fn the_repair_waits_for_the_end_of_the_transaction() {
        let mut t = tracker();
        assert_eq!(
            t.observe(drained(vec![obj(NFT_MSG_DELRULE, TABLE_NAME, NFT)])),
            Verdict::Nothing
        );
        let v = t.observe(drained(vec![
            obj(NFT_MSG_DELTABLE, TABLE_NAME, NFT),
            gen_ev(11, NFT),
        ]));
        let Verdict::Repair(change) = v else {
            panic!("{v:?}")
        };
        assert_eq!(change.what, "rule deleted, table deleted");
    }

    #[test]
    fn other_tables_families_and_our_own_commits_cause_no_work() {
        let mut t = tracker();
        let other_family = Event::Object {
            kind: NFT_MSG_NEWRULE,
            family: NFPROTO_IPV4,
            table: TABLE_NAME.into(),
            port_id: NFT,
            detail: Detail::None,
        };
        let v = t.observe(drained(vec![
            obj(NFT_MSG_NEWRULE, "kube-proxy", NFT),
            other_family,
            gen_ev(11, NFT),
            obj(NFT_MSG_NEWRULE, TABLE_NAME, US),
            gen_ev(12, US),
        ]));
        assert_eq!(v, Verdict::Nothing);
    }

    #[test]
    fn notifications_from_before_our_commit_are_stale() {
        let mut t = tracker();
        let v = t.observe(drained(vec![
            obj(NFT_MSG_DELRULE, TABLE_NAME, NFT),
            gen_ev(9, NFT),
        ]));
        assert_eq!(v, Verdict::Nothing);
        assert_eq!(t.generation(), Some(10));
    }

    #[test]
    fn a_gap_or_lost_notifications_ask_for_a_check() {
        let mut t = tracker();
        assert_eq!(
            t.observe(drained(vec![gen_ev(13, NFT)])),
            Verdict::Check("a generation was skipped")
        );
        assert_eq!(
            t.observe(Drained {
                events: vec![],
                lost: true,
                keys: 0,
            }),
            Verdict::Check("notifications were lost (ENOBUFS)")
        );
        assert_eq!(t.observe(drained(vec![gen_ev(14, NFT)])), Verdict::Nothing);
    }

    #[test]
    fn generation_ids_wrap() {
        let mut t = Tracker::new(US);
        t.committed(Some(u32::MAX));
        let v = t.observe(drained(vec![
            obj(NFT_MSG_DELRULE, TABLE_NAME, NFT),
            gen_ev(0, NFT),
        ]));
        assert!(matches!(v, Verdict::Repair(_)));
    }
}
