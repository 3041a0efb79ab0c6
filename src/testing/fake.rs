//! In-memory stand-ins for the kernel and the config files, for the daemon's unit tests and
//! for any test that drives an [`Agent`](crate::daemon::agent::Agent) without root.
//! Both are handles to shared state, so a test keeps one copy to look at (and meddle with)
//! what the agent owns. The fake kernel serves both seams: the loop's ([`Kernel`]) and the
//! background worker's ([`WorkerKernel`]), with a clock of its own for the worker's budget.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::addr::prefix::Family;
use crate::config::{ConfigError, Loaded, PolicyFlags, Source, Update};
use crate::daemon::seam::{Holder, Kernel, WorkerKernel};
use crate::kernel::conntrack::{ConntrackError, Flow, Protocols, Report};
use crate::kernel::nft::encode;
use crate::kernel::nft::live::{Known, Step};
use crate::kernel::nft::ruleset::{ForeignRead, ForeignTable};
use crate::kernel::nft::uapi::NFT_MSG_NEWTABLE;
use crate::kernel::nft::{CommitReport, NftError, ReplaceForm};
use crate::model::{Table, TableFlags};

/// How a kernel version answers table flags it does not know.
#[derive(Debug, Clone, Copy)]
pub struct KernelVersion {
    /// Table flags it accepts.
    pub flags: u32,
    /// Its errno for an unknown flag (EINVAL before 5.12, EOPNOTSUPP after).
    pub refusal: i32,
}

/// Linux 5.10: no owner flag; unknown flags are EINVAL.
pub const LINUX_5_10: KernelVersion = KernelVersion {
    flags: 0,
    refusal: libc::EINVAL,
};
/// Linux 6.1: owner, no persist.
pub const LINUX_6_1: KernelVersion = KernelVersion {
    flags: TableFlags::OWNER,
    refusal: libc::EOPNOTSUPP,
};
/// Linux 6.12: owner and persist.
pub const LINUX_6_12: KernelVersion = KernelVersion {
    flags: TableFlags::OWNER | TableFlags::PERSIST,
    refusal: libc::EOPNOTSUPP,
};

/// What the fake kernel holds and has seen.
#[derive(Debug)]
pub struct KernelState {
    /// The version it behaves like.
    pub version: KernelVersion,
    /// Our table, if it exists.
    pub table: Option<Table>,
    /// The ruleset generation.
    pub generation: u32,
    /// Every table committed, in order.
    pub commits: Vec<Table>,
    /// Replaces that will fail, with these errnos, before anything else is checked.
    pub fail_next: Vec<i32>,
    /// Whether the agent is in the notification group.
    pub listening: bool,
    /// Reads fail with this errno.
    pub read_fails: Option<i32>,
    /// The port id of a socket that owns the table (refusing everyone else's commits).
    pub owned_by: Option<u32>,
    /// Other components' NAT tables.
    pub nat_tables: Vec<ForeignTable>,
    /// Tables a read leaves out as too large (family, name).
    pub too_large: Vec<(&'static str, String)>,
    /// Reads of the other NAT tables so far.
    pub nat_reads: usize,
    /// The worker's clock.
    pub clock: Instant,
    /// How far the worker's clock moves each time it is read: each look at the budget is a
    /// step of the analysis taking this long.
    pub clock_step: Duration,
    /// Someone else commits this right after the agent's next commit (while the agent is
    /// still out of the notification group, so only the generation tells).
    pub race_next: Option<Option<Table>>,
    /// Someone else commits right before the agent's next commit reads the table, as when a
    /// tamperer cuts short the first attempt of a creation: the generations around the
    /// commit do not add up, but its last attempt proves the table (known afterwards).
    pub race_before_next: bool,
    /// Reads of the table so far (full checks).
    pub reads: usize,
    /// The conntrack table: reconciliations delete from it.
    pub flows: Vec<Flow>,
    /// Conntrack reconciliations fail with this errno.
    pub conntrack_fails: Option<i32>,
    /// Each reconciliation: the families and protocols asked for, and the flows deleted.
    pub reconciliations: Vec<(Vec<Family>, Protocols, Vec<Flow>)>,
    /// The live table as the agent's socket would know it (its last commit or what it
    /// learned, followed through the notifications it was given): a replace while it holds
    /// at the current generation sends only the difference, as the real socket does.
    pub known: Option<Known>,
    /// What each of the agent's commits sent, in order (also the ones that sent nothing).
    pub reports: Vec<CommitReport>,
    /// Tables the agent learned at start.
    pub learned: usize,
}

/// A kernel in memory.
#[derive(Debug, Clone)]
pub struct FakeKernel(pub Rc<RefCell<KernelState>>);

/// The port id of the agent's fake command socket.
pub const PORT: u32 = 4000;

impl FakeKernel {
    /// A kernel of `version` with no table.
    pub fn new(version: KernelVersion) -> FakeKernel {
        FakeKernel(Rc::new(RefCell::new(KernelState {
            version,
            table: None,
            generation: 1,
            commits: Vec::new(),
            fail_next: Vec::new(),
            listening: true,
            read_fails: None,
            race_next: None,
            race_before_next: false,
            reads: 0,
            owned_by: None,
            nat_tables: Vec::new(),
            too_large: Vec::new(),
            nat_reads: 0,
            clock: Instant::now(),
            clock_step: Duration::ZERO,
            flows: Vec::new(),
            conntrack_fails: None,
            reconciliations: Vec::new(),
            known: None,
            reports: Vec::new(),
            learned: 0,
        })))
    }

    /// Someone else commits `table` (or deletes it with `None`): the generation moves on.
    pub fn foreign_commit(&self, table: Option<Table>) -> u32 {
        let mut s = self.0.borrow_mut();
        s.table = table;
        s.generation += 1;
        s.generation
    }

    /// The number of commits the agent made.
    pub fn commits(&self) -> usize {
        self.0.borrow().commits.len()
    }

    /// The live table.
    pub fn table(&self) -> Option<Table> {
        self.0.borrow().table.clone()
    }

    /// Reads the worker's clock, which moves on by `clock_step`.
    pub fn tick(&self) -> Instant {
        let mut s = self.0.borrow_mut();
        let step = s.clock_step;
        s.clock += step;
        s.clock
    }
}

fn rejected(errno: i32) -> NftError {
    NftError::Rejected {
        what: "NEWTABLE inet nft-masq-agent".into(),
        kind: Some(NFT_MSG_NEWTABLE),
        attr: None,
        kernel_msg: None,
        errno,
        failed: 1,
    }
}

impl Kernel for FakeKernel {
    fn port_id(&self) -> u32 {
        PORT
    }

    fn replace(&mut self, table: &Table) -> Result<CommitReport, NftError> {
        let mut s = self.0.borrow_mut();
        if !s.fail_next.is_empty() {
            let errno = s.fail_next.remove(0);
            return Err(rejected(errno));
        }
        if s.owned_by.is_some_and(|p| p != PORT) {
            return Err(rejected(libc::EPERM));
        }
        if table.flags.0 & !s.version.flags != 0 {
            return Err(rejected(s.version.refusal));
        }
        if std::mem::take(&mut s.race_before_next) {
            s.generation += 1;
        }
        // As the real socket does: with the live table known at the current generation (its
        // own last commit, or the table learned at start, followed through notifications),
        // only the difference is sent; none at all when there is none.
        let generation = s.generation;
        let known = s.known.take().filter(|k| k.generation() == generation);
        let delta = known.as_ref().and_then(|k| {
            let batch = encode::delta_known(k, table, 1)?;
            let rules = k.rules_change(table);
            Some((batch.elements, rules))
        });
        let report = match delta {
            Some((0, false)) => {
                let r = CommitReport::nothing_sent(table.prefix_count() * 2);
                s.known = known;
                s.reports.push(r);
                return Ok(r);
            }
            Some((sent, rules)) => CommitReport {
                elements: table.prefix_count() * 2,
                sent,
                messages: 1,
                bytes: 0,
                form: ReplaceForm::Delta,
                counters_reset: rules,
                transactions: 1,
            },
            None => CommitReport {
                elements: table.prefix_count() * 2,
                sent: table.prefix_count() * 2,
                messages: 1,
                bytes: 0,
                form: ReplaceForm::AddDeleteAdd,
                counters_reset: true,
                transactions: 1,
            },
        };
        s.table = Some(table.clone());
        s.commits.push(table.clone());
        s.generation += 1;
        s.known = Some(Known::new(s.generation, table.clone()));
        if let Some(foreign) = s.race_next.take() {
            s.table = foreign;
            s.generation += 1;
        }
        s.reports.push(report);
        Ok(report)
    }

    fn learn(&mut self, name: &str) -> Result<Option<Table>, NftError> {
        if let Some(k) = &self.0.borrow().known {
            return Ok(Some(k.table().clone()));
        }
        let found = self.read(name)?;
        let mut s = self.0.borrow_mut();
        s.learned += 1;
        s.known = found.clone().map(|t| Known::new(s.generation, t));
        Ok(found)
    }

    fn follow(&mut self, steps: &[Step]) {
        Known::follow_all(&mut self.0.borrow_mut().known, steps);
    }

    fn known_generation(&self) -> Option<u32> {
        self.0.borrow().known.as_ref().map(Known::generation)
    }

    fn read(&mut self, _name: &str) -> Result<Option<Table>, NftError> {
        self.0.borrow_mut().reads += 1;
        let s = self.0.borrow();
        match s.read_fails {
            Some(errno) => Err(NftError::Kernel {
                request: "GETRULE",
                errno,
            }),
            None => Ok(s.table.clone()),
        }
    }

    fn counters(&mut self, _name: &str) -> Result<Option<(u64, u64)>, NftError> {
        Ok(self
            .0
            .borrow()
            .table
            .as_ref()
            .map(|t| t.masquerade_counters()))
    }

    fn generation(&mut self) -> Result<u32, NftError> {
        Ok(self.0.borrow().generation)
    }

    fn listen(&mut self, on: bool) -> Result<(), NftError> {
        self.0.borrow_mut().listening = on;
        Ok(())
    }

    fn holder(&mut self, _name: &str) -> Result<Holder, NftError> {
        let s = self.0.borrow();
        Ok(match (&s.table, s.owned_by) {
            (None, _) => Holder::Absent,
            (Some(_), Some(port)) => Holder::Owned(port),
            (Some(_), None) => Holder::Free,
        })
    }
}

impl WorkerKernel for FakeKernel {
    fn nat_tables(&mut self, _ours: &str, _max: usize) -> Result<ForeignRead, NftError> {
        let mut s = self.0.borrow_mut();
        s.nat_reads += 1;
        Ok(ForeignRead {
            tables: s.nat_tables.clone(),
            too_large: s.too_large.clone(),
            elements: 0,
        })
    }

    fn reconcile_flows(
        &mut self,
        families: &[Family],
        protocols: Protocols,
        affected: &dyn Fn(&Flow) -> bool,
    ) -> Result<Report, ConntrackError> {
        let mut s = self.0.borrow_mut();
        if let Some(errno) = s.conntrack_fails {
            return Err(ConntrackError::Kernel {
                request: "IPCTNL_MSG_CT_GET",
                source: std::io::Error::from_raw_os_error(errno),
            });
        }
        let examined = s.flows.len() as u64;
        let (gone, kept): (Vec<Flow>, Vec<Flow>) = s.flows.iter().partition(|f| {
            families.contains(&f.family) && protocols.includes(f.protocol) && affected(f)
        });
        s.flows = kept;
        let deleted = gone.len() as u64;
        s.reconciliations.push((families.to_vec(), protocols, gone));
        Ok(Report {
            examined,
            matched: deleted,
            deleted,
            ..Report::default()
        })
    }
}

/// The config file's contents, or `None` for no file.
#[derive(Debug, Clone)]
pub struct FakeSource {
    /// The file's text.
    pub text: Rc<RefCell<Option<String>>>,
    /// While set, reading fails with this errno (the file cannot be read).
    pub read_errno: Rc<RefCell<Option<i32>>>,
    flags: PolicyFlags,
    last: Option<Option<String>>,
}

impl FakeSource {
    /// A config file holding `text`.
    pub fn new(text: Option<&str>, flags: &PolicyFlags) -> FakeSource {
        FakeSource {
            text: Rc::new(RefCell::new(text.map(str::to_string))),
            read_errno: Rc::new(RefCell::new(None)),
            flags: flags.clone(),
            last: None,
        }
    }

    /// Rewrites the file.
    pub fn write(&self, text: Option<&str>) {
        *self.text.borrow_mut() = text.map(str::to_string);
    }

    fn validate(&self, text: &Option<String>) -> Result<Loaded, ConfigError> {
        match text {
            None => Ok(Loaded {
                config: crate::config::Config::defaults(&self.flags),
                notes: Vec::new(),
            }),
            Some(t) => crate::config::parse_str(t, "/fake/ip-masq-agent".as_ref(), &self.flags),
        }
    }
}

impl Source for FakeSource {
    fn load(&mut self) -> Result<Loaded, ConfigError> {
        let text = self.text.borrow().clone();
        self.last = Some(text.clone());
        self.validate(&text)
    }

    fn reload(&mut self) -> Update {
        if let Some(errno) = *self.read_errno.borrow() {
            self.last = None;
            return Update::Failed(ConfigError::Read {
                path: "/fake/ip-masq-agent".into(),
                source: std::io::Error::from_raw_os_error(errno),
            });
        }
        let text = self.text.borrow().clone();
        if self.last.as_ref() == Some(&text) {
            return Update::Unchanged;
        }
        self.last = Some(text.clone());
        match self.validate(&text) {
            Ok(l) => Update::Loaded(l),
            Err(e) => Update::Failed(e),
        }
    }

    fn describe(&self) -> String {
        "/fake/ip-masq-agent".into()
    }
}
