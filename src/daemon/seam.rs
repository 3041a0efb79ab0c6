//! The seams between the daemon and the kernel, as traits: [`Kernel`], everything the
//! reconcile loop asks of nf_tables (its own table: commit, read back, generation), and
//! [`WorkerKernel`], what the background worker asks (other components' NAT tables, the
//! conntrack table: work whose size others decide, kept off the loop). [`Netlink`] and
//! [`WorkerNetlink`] implement them with real sockets, each its own; the daemon's unit tests
//! implement them in memory, so its decisions are tested without root.

use crate::addr::prefix::Family;
use crate::kernel::conntrack::{self, Conntrack, ConntrackError, Flow, Protocols, Report};
use crate::kernel::nft::commit::{self, CommitReport};
use crate::kernel::nft::error::NftError;
use crate::kernel::nft::events::Membership;
use crate::kernel::nft::live::Step;
use crate::kernel::nft::ruleset::ForeignRead;
use crate::kernel::nft::socket::NftSocket;
use crate::kernel::nft::takeover::{self, Done, Outcome, TakeoverError};
use crate::model::{Table, TableFlags};

/// Who holds a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// The table does not exist.
    Absent,
    /// It exists and no socket owns it.
    Free,
    /// The socket with this port id owns it (`NFT_TABLE_F_OWNER`).
    Owned(u32),
}

/// What the daemon needs from nf_tables.
pub trait Kernel {
    /// The netlink port id our commits carry: notifications with it are our own.
    fn port_id(&self) -> u32;

    /// Replaces `table` (by its name, in the inet family) in one transaction.
    fn replace(&mut self, table: &Table) -> Result<CommitReport, NftError>;

    /// Learns the live table `name` at start, so that the first commit of a new process
    /// sends only the difference to it (nothing when it is already the wanted one): read
    /// without any commit interrupting it, decoded; `None` when it does not exist or does
    /// not decode as ours.
    fn learn(&mut self, name: &str) -> Result<Option<Table>, NftError>;

    /// Follows others' transactions, as the notification group reported them, so the live
    /// table stays known and a repair sends only the inverse of their change.
    fn follow(&mut self, steps: &[Step]);

    /// The generation at which the live table is known exactly (our last commit proved it,
    /// or a read no commit interrupted), if it is.
    fn known_generation(&self) -> Option<u32>;

    /// Reads table `name` back, decoded; `None` when it does not exist. Commits by others
    /// during the read do not make it fail: the caller listens to notifications, which
    /// report any change to the table made meanwhile.
    fn read(&mut self, name: &str) -> Result<Option<Table>, NftError>;

    /// The packet and byte counters of the masquerade rules of table `name`, if it exists.
    fn counters(&mut self, name: &str) -> Result<Option<(u64, u64)>, NftError>;

    /// The ruleset generation: it changes with every committed transaction.
    fn generation(&mut self) -> Result<u32, NftError>;

    /// Joins (`true`) or leaves the notification group. Left during our own commits.
    fn listen(&mut self, on: bool) -> Result<(), NftError>;

    /// Who holds table `name`, without reading its contents.
    fn holder(&mut self, name: &str) -> Result<Holder, NftError>;

    /// Removes ip-masq-agent's iptables-nft chain `chain` and the jumps to it, unless it
    /// holds rules ip-masq-agent would not have written ([`takeover::take_over`]). The
    /// default, for kernels without iptables (the daemon's test kernel), finds nothing.
    fn take_over(&mut self, chain: &str) -> Result<Outcome, TakeoverError> {
        Ok(Outcome {
            chain: chain.to_string(),
            result: Done::Absent,
            legacy: Vec::new(),
        })
    }
}

/// What the background worker needs from the kernel: reads and deletions whose size other
/// components decide (their NAT tables, the node's conntrack table), so they never run on
/// the loop that keeps the table in force.
pub trait WorkerKernel {
    /// The other tables with NAT chains at the postrouting hook (`ours` left out), reading
    /// at most `max_elements` set elements in all.
    fn nat_tables(&mut self, ours: &str, max_elements: usize) -> Result<ForeignRead, NftError>;

    /// Deletes the conntrack entries of `protocols` in `families` that `affected` selects
    /// (ctnetlink, in the same network namespace).
    fn reconcile_flows(
        &mut self,
        families: &[Family],
        protocols: Protocols,
        affected: &dyn Fn(&Flow) -> bool,
    ) -> Result<Report, ConntrackError>;
}

/// The kernel through netlink: the command socket and the notification group membership of
/// the event socket (which the event loop polls).
#[derive(Debug)]
pub struct Netlink {
    sock: NftSocket,
    membership: Membership,
}

impl Netlink {
    /// Wraps an open command socket and the membership handle of the event socket.
    pub fn new(sock: NftSocket, membership: Membership) -> Netlink {
        Netlink { sock, membership }
    }
}

impl Kernel for Netlink {
    fn port_id(&self) -> u32 {
        self.sock.port_id()
    }

    fn replace(&mut self, table: &Table) -> Result<CommitReport, NftError> {
        commit::replace_table(&mut self.sock, table)
    }

    fn learn(&mut self, name: &str) -> Result<Option<Table>, NftError> {
        self.sock.learn(name)
    }

    fn follow(&mut self, steps: &[Step]) {
        self.sock.follow(steps);
    }

    fn known_generation(&self) -> Option<u32> {
        self.sock.known_generation()
    }

    fn read(&mut self, name: &str) -> Result<Option<Table>, NftError> {
        // The daemon is in the notification group whenever it reads: a change to our table
        // during the read is seen as a notification and repaired, so the read need not
        // wait for a quiet ruleset (which a busy node, or a tamper storm, never has).
        self.sock.read_table_unsettled(name)
    }

    fn counters(&mut self, name: &str) -> Result<Option<(u64, u64)>, NftError> {
        Ok(self.sock.read_rules(name)?.map(|t| t.masquerade_counters()))
    }

    fn generation(&mut self) -> Result<u32, NftError> {
        self.sock.generation()
    }

    fn listen(&mut self, on: bool) -> Result<(), NftError> {
        self.membership.subscribe(on)
    }

    fn holder(&mut self, name: &str) -> Result<Holder, NftError> {
        Ok(match self.sock.table_info(name)? {
            None => Holder::Absent,
            Some(t) => match t.owner {
                Some(port) if t.flags.has(TableFlags::OWNER) => Holder::Owned(port),
                _ => Holder::Free,
            },
        })
    }

    fn take_over(&mut self, chain: &str) -> Result<Outcome, TakeoverError> {
        takeover::take_over(&mut self.sock, chain)
    }
}

/// The worker's kernel through netlink: sockets of its own, opened on first use and
/// reopened after an error, so a read or a dump left half-way never touches the loop's
/// sockets (nor its notification group).
#[derive(Debug, Default)]
pub struct WorkerNetlink {
    /// The nf_tables socket for reading other tables.
    sock: Option<NftSocket>,
    /// The ctnetlink socket (most agents' policy never changes: often never opened).
    conntrack: Option<Conntrack>,
}

impl WorkerNetlink {
    /// No socket open yet.
    pub fn new() -> WorkerNetlink {
        WorkerNetlink::default()
    }
}

impl WorkerKernel for WorkerNetlink {
    fn nat_tables(&mut self, ours: &str, max_elements: usize) -> Result<ForeignRead, NftError> {
        let sock = match &mut self.sock {
            Some(s) => s,
            None => self.sock.insert(NftSocket::open()?),
        };
        let result = sock.read_nat_tables(ours, max_elements);
        if result.is_err() {
            // A socket in an unknown state (a dump read half-way): the next call opens anew.
            self.sock = None;
        }
        result
    }

    fn reconcile_flows(
        &mut self,
        families: &[Family],
        protocols: Protocols,
        affected: &dyn Fn(&Flow) -> bool,
    ) -> Result<Report, ConntrackError> {
        let conn = match &mut self.conntrack {
            Some(c) => c,
            None => self.conntrack.insert(Conntrack::open()?),
        };
        let result = conntrack::reconcile(conn, families, protocols, affected);
        if result.is_err() {
            // A socket in an unknown state (a half-read dump): the next call opens anew.
            self.conntrack = None;
        }
        result
    }
}
