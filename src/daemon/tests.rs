//! The reconciler's decisions, without root: a fake kernel, a config held in memory, and a
//! clock that only moves when the test says so. The background worker runs synchronously,
//! when the test says so ([`Harness::run_worker`]), on the same fake kernel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::agent::OWNER_POLL;
use super::agent::{Agent, Outputs};
use super::next::Next;
use super::reconcile::{BACKOFF_MIN, BUDGET_COMMITS, BUDGET_WINDOW, FIGHT_CALM};
use super::worker::{self, Outcome, Worker};
use crate::config::PolicyFlags;
use crate::kernel::nft::compat::OwnerMode;
use crate::kernel::nft::events::{Detail, Drained, Event};
use crate::kernel::nft::uapi::{NFPROTO_INET, NFT_MSG_DELRULE};
use crate::model::{TABLE_NAME, Table, TableFlags};
use crate::report::counters::MasqCounters;
use crate::report::health::Health;
use crate::report::metrics::Metrics;
use crate::testing::fake::{
    self, FakeKernel, FakeSource, KernelVersion, LINUX_5_10, LINUX_6_1, LINUX_6_12,
};

/// The port id of "nft" run by someone else.
const OTHER: u32 = 777;

/// The worker's clock: the fake kernel's.
type Clock = Box<dyn Fn() -> Instant>;

struct Harness {
    agent: Agent<FakeKernel, FakeSource>,
    worker: Worker<FakeKernel, Clock>,
    kernel: FakeKernel,
    source: FakeSource,
    out: Outputs,
    now: Instant,
    /// What the agent said happens next, at start or at the last [`Harness::advance`].
    next: Option<Next>,
}

/// A worker on `kernel`, with its clock, and the queue that feeds it.
fn worker_on(kernel: &FakeKernel) -> (worker::Jobs, Worker<FakeKernel, Clock>) {
    let k = kernel.clone();
    worker::new(kernel.clone(), Box::new(move || k.tick()), 1000)
}

fn outputs() -> Outputs {
    let (health, _pings) = Health::new();
    Outputs {
        health: Arc::new(health),
        metrics: Arc::new(Metrics::new()),
        counters: Arc::new(MasqCounters::default()),
    }
}

impl Harness {
    fn new(version: KernelVersion, owner: OwnerMode, config: Option<&str>) -> Harness {
        Harness::with_kernel(FakeKernel::new(version), owner, config)
    }

    fn with_kernel(kernel: FakeKernel, owner: OwnerMode, config: Option<&str>) -> Harness {
        let flags = PolicyFlags::default();
        let source = FakeSource::new(config, &flags);
        let out = outputs();
        let now = Instant::now();
        let (jobs, worker) = worker_on(&kernel);
        let agent = Agent::new(
            kernel.clone(),
            source.clone(),
            flags,
            owner,
            out.clone(),
            jobs,
            now,
        );
        Harness {
            agent,
            worker,
            kernel,
            source,
            out,
            now,
            next: None,
        }
    }

    /// Starts the agent and lets the worker do what the start asked of it.
    fn start(mut self) -> Harness {
        let next = self.agent.start(self.now);
        self.record(next);
        self.run_worker();
        self
    }

    /// Runs every job waiting for the worker and hands the outcomes to the agent.
    fn run_worker(&mut self) {
        for outcome in self.worker.run_pending() {
            self.agent.worker_done(outcome, self.now);
        }
    }

    fn ready(&self) -> Result<(), String> {
        self.out.health.readiness()
    }

    /// Keeps what a call returned; `/readyz` says what it said.
    fn record(&mut self, next: Next) {
        let said = next.ready.clone().map_err(|why| why.to_string());
        assert_eq!(
            said,
            self.ready(),
            "/readyz publishes what the call returned"
        );
        self.next = Some(next);
    }

    /// When the agent said it next needs `tick`.
    fn next_wake(&self) -> Instant {
        self.next.as_ref().expect("the agent started").wake_at
    }

    /// Moves the clock on and lets the agent's timers fire.
    fn advance(&mut self, d: Duration) {
        self.now += d;
        let next = self.agent.tick(self.now);
        self.record(next);
    }

    /// Someone else deletes a rule of our table: the kernel changes and notifies.
    fn tamper(&mut self) {
        let mut t = self.kernel.table().expect("a table to tamper with");
        t.chains[0].rules.pop();
        let chain = t.chains[0].name.clone();
        let generation = self.kernel.foreign_commit(Some(t));
        self.agent.notifications(
            Drained {
                events: vec![
                    Event::Object {
                        kind: NFT_MSG_DELRULE,
                        family: NFPROTO_INET,
                        table: TABLE_NAME.into(),
                        port_id: OTHER,
                        detail: Detail::Rule { chain },
                    },
                    Event::Generation {
                        id: generation,
                        port_id: OTHER,
                        proc_name: Some("nft".into()),
                        pid: Some(42),
                    },
                ],
                lost: false,
                keys: 0,
            },
            self.now,
        );
    }

    fn live_is_desired(&self) -> bool {
        self.kernel
            .table()
            .is_some_and(|t| t.same_policy(self.agent.desired()))
    }

    fn metric(&self, series: &str) -> f64 {
        let text = self.out.metrics.render();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }
}

fn set_of(t: &Table) -> Vec<String> {
    t.sets[0].prefixes.iter().map(|p| p.to_string()).collect()
}

const CGNAT: &str = "nonMasqueradeCIDRs: [100.64.0.0/10]\n";

#[test]
fn start_commits_the_config_and_becomes_ready() {
    let h = Harness::new(LINUX_6_12, OwnerMode::Auto, Some(CGNAT)).start();
    assert_eq!(h.kernel.commits(), 1);
    let live = h.kernel.table().unwrap();
    assert_eq!(set_of(&live), ["100.64.0.0/10", "169.254.0.0/16"]);
    assert_eq!(h.ready(), Ok(()));
    assert_eq!(h.metric("nft_masq_agent_ready"), 1.0);
}

#[test]
fn bad_config_at_start_without_a_table_commits_the_defaults_not_ready_until_fixed() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Auto, Some("masqueradeCIDR: []\n")).start();
    let live = h.kernel.table().expect("the defaults are committed");
    assert!(set_of(&live).contains(&"10.0.0.0/8".to_string()));
    let why = h.ready().unwrap_err();
    assert!(why.contains("config file is invalid"), "{why}");
    assert_eq!(h.metric("nft_masq_agent_config_valid"), 0.0);

    h.source.write(Some(CGNAT));
    h.agent.config_changed("config file changed", h.now);
    assert_eq!(
        set_of(&h.kernel.table().unwrap()),
        ["100.64.0.0/10", "169.254.0.0/16"]
    );
    assert_eq!(h.ready(), Ok(()));
}

#[test]
fn a_config_that_cannot_be_read_keeps_the_last_good_table_and_is_not_ready() {
    // Issue 17, finding 5: unlike a config read and refused, one that cannot be read leaves
    // the agent unable to tell what is asked of it.
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Auto, Some(CGNAT)).start();
    *h.source.read_errno.borrow_mut() = Some(libc::ELOOP);
    h.agent.config_changed("config file changed", h.now);
    assert_eq!(h.kernel.commits(), 1);
    assert_eq!(set_of(&h.kernel.table().unwrap())[0], "100.64.0.0/10");
    let why = h.ready().unwrap_err();
    assert!(
        why.starts_with("cannot read the config (the last good one is in force): cannot read config file /fake/ip-masq-agent"),
        "{why}"
    );
    assert!(why.contains("(os error 40)"), "{why}");
    assert_eq!(h.metric("nft_masq_agent_config_valid"), 0.0);
    // Readable again (the same bytes): ready, nothing committed.
    *h.source.read_errno.borrow_mut() = None;
    h.agent.config_changed("config file changed", h.now);
    assert_eq!(h.ready(), Ok(()));
    assert_eq!(h.kernel.commits(), 1);
    assert_eq!(h.metric("nft_masq_agent_config_valid"), 1.0);
}

#[test]
fn a_config_that_turns_bad_keeps_the_last_good_table_and_readiness() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Auto, Some(CGNAT)).start();
    h.source
        .write(Some("nonMasqueradeCIDRs: [100.64.0.0/33]\n"));
    h.agent.config_changed("config file changed", h.now);
    assert_eq!(h.kernel.commits(), 1);
    assert_eq!(set_of(&h.kernel.table().unwrap())[0], "100.64.0.0/10");
    assert_eq!(h.ready(), Ok(()));
    assert_eq!(h.metric("nft_masq_agent_config_valid"), 0.0);
    assert_eq!(h.metric("nft_masq_agent_config_errors_total"), 1.0);
}

#[test]
fn a_failed_commit_is_retried_with_backoff_and_not_ready_until_it_succeeds() {
    let kernel = FakeKernel::new(LINUX_6_12);
    kernel.0.borrow_mut().fail_next = vec![libc::EPERM, libc::EPERM];
    let mut h = Harness::with_kernel(kernel, OwnerMode::Auto, Some(CGNAT)).start();
    assert_eq!(h.kernel.table(), None);
    let why = h.ready().unwrap_err();
    assert!(why.starts_with("commit failed"), "{why}");
    assert_eq!(h.next_wake(), h.now + BACKOFF_MIN);

    // Nothing happens before the backoff ends; a config reload does not jump the queue.
    h.advance(BACKOFF_MIN - Duration::from_millis(1));
    h.agent.config_changed("config file changed", h.now);
    assert!(h.ready().is_err());
    h.advance(Duration::from_millis(1));
    // The second attempt fails too: the wait doubles.
    assert!(h.ready().is_err());
    assert_eq!(h.next_wake(), h.now + 2 * BACKOFF_MIN);
    h.advance(2 * BACKOFF_MIN);
    assert_eq!(h.ready(), Ok(()));
    assert_eq!(h.kernel.commits(), 1);
    assert_eq!(h.metric("nft_masq_agent_commit_errors_total"), 2.0);
}

#[test]
fn a_foreign_change_is_repaired_at_once_and_readiness_follows() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    h.tamper();
    assert!(h.live_is_desired());
    assert_eq!(h.kernel.commits(), 2);
    assert_eq!(h.ready(), Ok(()));
    assert_eq!(h.metric("nft_masq_agent_drift_repairs_total"), 1.0);
}

#[test]
fn a_repair_storm_is_held_to_the_one_budget() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    // A tool deletes our rule every millisecond for three seconds.
    for _ in 0..3000 {
        h.now += Duration::from_millis(1);
        h.agent.tick(h.now);
        h.tamper();
    }
    let commits = h.kernel.commits();
    // The start-up commit counts against the same budget as the repairs.
    assert!(commits <= BUDGET_COMMITS + 3, "{commits} commits in 3 s");
    // Meanwhile the agent says it is not ready, who it is fighting, and the metric shows it.
    let why = h.ready().unwrap_err();
    assert!(why.starts_with("table contested"), "{why}");
    assert!(why.contains("nft (pid 42, netlink port 777)"), "{why}");
    assert_eq!(h.metric("nft_masq_agent_table_contested"), 1.0);
    // Once the storm ends, the deferred repair lands; after a calm the fight is over.
    h.advance(BUDGET_WINDOW);
    assert!(h.live_is_desired());
    h.advance(FIGHT_CALM);
    assert_eq!(h.ready(), Ok(()));
    assert_eq!(h.metric("nft_masq_agent_table_contested"), 0.0);
}

#[test]
fn full_check_repairs_go_through_the_budget_too() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    // Changes the agent only sees by reading the table: lost notifications every time.
    for _ in 0..200 {
        h.now += Duration::from_millis(1);
        let mut t = h.kernel.table().unwrap();
        t.chains[0].rules.pop();
        h.kernel.foreign_commit(Some(t));
        h.agent.notifications(
            Drained {
                events: vec![],
                lost: true,
                keys: 0,
            },
            h.now,
        );
    }
    assert!(
        h.kernel.commits() <= BUDGET_COMMITS,
        "{}",
        h.kernel.commits()
    );
    assert!(h.metric("nft_masq_agent_events_lost_total") >= 200.0);
}

#[test]
fn lost_notifications_check_and_repair_only_what_differs() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    let lost = || Drained {
        events: vec![],
        lost: true,
        keys: 0,
    };
    h.agent.notifications(lost(), h.now);
    assert_eq!(h.kernel.commits(), 1, "an unchanged table is left alone");
    h.kernel.foreign_commit(None);
    h.agent.notifications(lost(), h.now);
    assert_eq!(h.kernel.commits(), 2);
    assert!(h.live_is_desired());
}

#[test]
fn own_commits_and_other_tables_cause_no_repair() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    let g = h.kernel.0.borrow().generation;
    let ev = |table: &str, port_id, id| {
        vec![
            Event::Object {
                kind: NFT_MSG_DELRULE,
                family: NFPROTO_INET,
                table: table.into(),
                port_id,
                detail: Detail::None,
            },
            Event::Generation {
                id,
                port_id,
                proc_name: None,
                pid: None,
            },
        ]
    };
    let mut events = ev(TABLE_NAME, fake::PORT, g + 1);
    events.extend(ev("kube-proxy", OTHER, g + 2));
    h.agent.notifications(
        Drained {
            events,
            lost: false,
            keys: 0,
        },
        h.now,
    );
    assert_eq!(h.kernel.commits(), 1);
}

#[test]
fn a_changed_file_is_picked_up_by_the_periodic_resync() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    h.source.write(Some(
        "nonMasqueradeCIDRs: [10.0.0.0/8]\nresyncInterval: 5s\n",
    ));
    h.advance(Duration::from_secs(59));
    assert_eq!(h.kernel.commits(), 1);
    h.advance(Duration::from_secs(1));
    assert_eq!(set_of(&h.kernel.table().unwrap())[0], "10.0.0.0/8");
    // The new interval is in force from now.
    assert_eq!(h.next_wake(), h.now + Duration::from_secs(5));
}

#[test]
fn table_flags_step_down_as_each_kernel_refuses_them() {
    let none = TableFlags(0);
    let owner = TableFlags(TableFlags::OWNER);
    let both = TableFlags(TableFlags::OWNER | TableFlags::PERSIST);
    for (version, mode, want, label) in [
        (LINUX_6_12, OwnerMode::Auto, both, "owner-persist"),
        (LINUX_6_1, OwnerMode::Auto, none, "off"),
        (LINUX_5_10, OwnerMode::Auto, none, "off"),
        (LINUX_6_12, OwnerMode::On, both, "owner-persist"),
        (LINUX_6_1, OwnerMode::On, owner, "owner"),
        (LINUX_5_10, OwnerMode::On, none, "off"),
        (LINUX_5_10, OwnerMode::Off, none, "off"),
    ] {
        let h = Harness::new(version, mode, Some(CGNAT)).start();
        let live = h
            .kernel
            .table()
            .unwrap_or_else(|| panic!("{mode:?}: no table"));
        assert_eq!(live.flags, want, "{mode:?} on {version:?}");
        assert_eq!(h.ready(), Ok(()), "{mode:?} on {version:?}");
        let series = format!("nft_masq_agent_table_owner{{mode=\"{label}\"}}");
        assert_eq!(h.metric(&series), 1.0, "{mode:?} on {version:?}");
        // Later commits use the flags learnt, with no new refusal.
        assert_eq!(h.kernel.commits(), 1);
    }
}

#[test]
fn a_commit_raced_by_another_committer_is_checked_and_repaired() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    // Someone deletes our table right after our next commit, while we are out of the
    // notification group: only the generation ids tell.
    h.kernel.0.borrow_mut().race_next = Some(None);
    h.source
        .write(Some("nonMasqueradeCIDRs: [100.64.0.0/11]\n"));
    h.agent.config_changed("config file changed", h.now);
    assert_eq!(
        h.kernel.commits(),
        3,
        "start-up, config, then the repair after the check"
    );
    assert!(h.live_is_desired());
    assert_eq!(set_of(&h.kernel.table().unwrap())[0], "100.64.0.0/11");
    assert_eq!(h.ready(), Ok(()));
}

#[test]
fn a_commit_whose_last_attempt_proves_the_table_is_not_checked_again() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    // Someone commits before our next commit reads the table: the generations around it do
    // not add up, but the socket knows the table at the generation the commit made.
    h.kernel.0.borrow_mut().race_before_next = true;
    let reads = h.kernel.0.borrow().reads;
    h.source
        .write(Some("nonMasqueradeCIDRs: [100.64.0.0/11]\n"));
    h.agent.config_changed("config file changed", h.now);
    assert_eq!(h.kernel.commits(), 2, "start-up, config; no repair");
    assert_eq!(h.kernel.0.borrow().reads, reads, "no full check");
    assert!(h.live_is_desired());
    assert_eq!(h.ready(), Ok(()));
}

#[test]
fn bad_config_at_start_with_a_table_keeps_it_exactly_until_fixed() {
    // Agent A committed 100.64.0.0/10 and exited; the ConfigMap then got a typo.
    let good = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    let before = good.kernel.table().unwrap();
    let mut h = Harness::with_kernel(
        good.kernel.clone(),
        OwnerMode::Off,
        Some("masqueradeCIDR: []\n"),
    )
    .start();
    assert_eq!(h.kernel.commits(), 1, "agent B commits nothing");
    assert_eq!(h.kernel.table(), Some(before.clone()));
    let why = h.ready().unwrap_err();
    assert!(why.contains("table found at start is kept"), "{why}");
    assert_eq!(
        h.metric("nft_masq_agent_policy_source{source=\"adopted\"}"),
        1.0
    );
    assert_eq!(h.metric("nft_masq_agent_config_valid"), 0.0);
    // The adopted table is defended like a committed one.
    h.tamper();
    assert_eq!(h.kernel.table().unwrap().chains, before.chains);
    // Once the file validates, it is committed and the agent is ready.
    h.source.write(Some("nonMasqueradeCIDRs: [10.0.0.0/8]\n"));
    h.agent.config_changed("config file changed", h.now);
    assert_eq!(set_of(&h.kernel.table().unwrap())[0], "10.0.0.0/8");
    assert_eq!(h.ready(), Ok(()));
    assert_eq!(
        h.metric("nft_masq_agent_policy_source{source=\"config\"}"),
        1.0
    );
}

#[test]
fn an_explicit_config_path_that_does_not_exist_is_the_missing_source() {
    let explicit = |text: Option<&str>| {
        let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, text);
        h.agent = h.agent.with_explicit_config(true);
        h.start()
    };
    let source =
        |h: &Harness, s: &str| h.metric(&format!("nft_masq_agent_policy_source{{source=\"{s}\"}}"));
    // No file at the path given: the defaults, but said to be missing, not chosen.
    let mut h = explicit(None);
    assert!(h.live_is_desired());
    assert_eq!((source(&h, "missing"), source(&h, "config")), (1.0, 0.0));
    // The file appears: the config.
    h.source.write(Some("nonMasqueradeCIDRs: [10.0.0.0/8]\n"));
    h.agent.config_changed("config file changed", h.now);
    assert_eq!((source(&h, "missing"), source(&h, "config")), (0.0, 1.0));
    // It goes again: missing again.
    h.source.write(None);
    h.agent.config_changed("config file changed", h.now);
    assert_eq!((source(&h, "missing"), source(&h, "config")), (1.0, 0.0));
    // The default path missing stays the config's defaults, as with ip-masq-agent.
    let h = Harness::new(LINUX_6_12, OwnerMode::Off, None).start();
    assert_eq!((source(&h, "missing"), source(&h, "config")), (0.0, 1.0));
}

#[test]
fn failing_checks_are_retried_soon_and_make_the_agent_not_ready() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    h.kernel.0.borrow_mut().read_fails = Some(libc::EIO);
    h.advance(Duration::from_secs(60)); // the periodic full check
    assert_eq!(h.ready(), Ok(()), "one failure is not blindness yet");
    assert!(h.next_wake() <= h.now + Duration::from_secs(1));
    h.advance(Duration::from_secs(1));
    let why = h.ready().unwrap_err();
    assert!(why.starts_with("cannot read the table back"), "{why}");
    assert_eq!(h.metric("nft_masq_agent_check_errors_total"), 2.0);
    // Reading works again (and the table was deleted meanwhile): repaired, ready.
    h.kernel.0.borrow_mut().read_fails = None;
    h.kernel.foreign_commit(None);
    h.advance(Duration::from_secs(2));
    assert!(h.live_is_desired());
    assert_eq!(h.ready(), Ok(()));
}

#[test]
fn a_table_owned_by_another_socket_is_taken_over_when_released() {
    let kernel = FakeKernel::new(LINUX_6_12);
    let other = Harness::with_kernel(kernel.clone(), OwnerMode::On, Some(CGNAT)).start();
    kernel.0.borrow_mut().owned_by = Some(999);
    let mut h = Harness::with_kernel(
        kernel,
        OwnerMode::On,
        Some("nonMasqueradeCIDRs: [10.0.0.0/8]\n"),
    )
    .start();
    drop(other);
    let why = h.ready().unwrap_err();
    assert!(
        why.contains("owned by another process (netlink port 999)"),
        "{why}"
    );
    assert_eq!(h.next_wake(), h.now + OWNER_POLL);
    h.advance(OWNER_POLL);
    assert_eq!(set_of(&h.kernel.table().unwrap())[0], "100.64.0.0/10");
    // The owner exits: the kernel says nothing, the next look finds the table free.
    h.kernel.0.borrow_mut().owned_by = None;
    h.advance(OWNER_POLL);
    assert_eq!(set_of(&h.kernel.table().unwrap())[0], "10.0.0.0/8");
    assert_eq!(h.ready(), Ok(()));
}

/// kubenet's rule as a native nft rule: `ip daddr != 10.0.0.0/8 masquerade`, priority srcnat.
fn kubenet() -> crate::kernel::nft::ruleset::ForeignTable {
    use crate::kernel::nft::decode::{ChainMsg, RuleMsg};
    use crate::kernel::nft::expr::Expr;
    use crate::kernel::nft::uapi::*;
    use crate::model::{BaseChain, Chain, HOOK_POSTROUTING};
    crate::kernel::nft::ruleset::ForeignTable {
        family: NFPROTO_IPV4,
        name: "nat".into(),
        chains: vec![ChainMsg {
            table: "nat".into(),
            chain: Chain {
                name: "POSTROUTING".into(),
                base: Some(BaseChain {
                    kind: "nat".into(),
                    hook: HOOK_POSTROUTING,
                    priority: 100,
                    policy: 1,
                }),
                rules: Vec::new(),
            },
        }],
        rules: vec![RuleMsg {
            table: "nat".into(),
            chain: "POSTROUTING".into(),
            handle: 2,
            exprs: vec![
                Expr::Payload {
                    base: NFT_PAYLOAD_NETWORK_HEADER,
                    offset: 16,
                    len: 1,
                    dreg: 1,
                },
                Expr::Cmp {
                    sreg: 1,
                    op: NFT_CMP_NEQ,
                    data: vec![10],
                },
                Expr::Masq {
                    flags: 0,
                    reg_min: None,
                    reg_max: None,
                },
            ],
        }],
        sets: Vec::new(),
    }
}

#[test]
fn other_nat_rules_that_override_exempt_ranges_are_counted() {
    let kernel = FakeKernel::new(LINUX_6_12);
    kernel.0.borrow_mut().nat_tables = vec![kubenet()];
    // Only 10/8 exempt (link-local masqueraded): kubenet's rule never masquerades it.
    let mut h = Harness::with_kernel(
        kernel,
        OwnerMode::Off,
        Some("nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: true\n"),
    )
    .start();
    assert_eq!(h.metric("nft_masq_agent_conflicting_nat_rules"), 0.0);
    // 192.168/16 exempt too: kubenet's rule masquerades it first.
    h.source.write(Some(
        "nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\nmasqLinkLocal: true\n",
    ));
    h.advance(Duration::from_secs(60));
    h.run_worker();
    assert_eq!(h.metric("nft_masq_agent_conflicting_nat_rules"), 1.0);
    // The rule goes away: seen at the next full check.
    h.kernel.0.borrow_mut().nat_tables.clear();
    h.kernel.foreign_commit(h.kernel.table());
    h.advance(Duration::from_secs(60));
    h.run_worker();
    assert_eq!(h.metric("nft_masq_agent_conflicting_nat_rules"), 0.0);
}

/// A UDP flow from `src` to `dst`, as conntrack would list it.
fn udp_flow(src: &str, dst: &str) -> crate::kernel::conntrack::Flow {
    use crate::kernel::conntrack::{Flow, L4, Tuple};
    let (src, dst): (std::net::IpAddr, std::net::IpAddr) =
        (src.parse().unwrap(), dst.parse().unwrap());
    let l4 = L4::Ports {
        src: 40000,
        dst: 4789,
    };
    Flow {
        family: crate::addr::prefix::Family::of_addr(&src),
        protocol: 17,
        original: Tuple { src, dst, l4 },
        reply: Tuple {
            src: dst,
            dst: src,
            l4,
        },
        status: 0,
        id: None,
        zone: None,
        mark: None,
        timeout: None,
    }
}

fn flows_left(h: &Harness) -> Vec<String> {
    h.kernel
        .0
        .borrow()
        .flows
        .iter()
        .map(|f| f.original.dst.to_string())
        .collect()
}

const VPN: &str = "nonMasqueradeCIDRs: [100.64.0.0/10, 203.0.113.0/24]\n";

#[test]
fn a_decision_change_deletes_the_affected_flows_after_the_commit() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Auto, Some(CGNAT)).start();
    h.kernel.0.borrow_mut().flows = vec![
        udp_flow("10.244.1.2", "203.0.113.9"),
        udp_flow("10.244.1.2", "198.51.100.9"),
    ];
    // The start-up commit found no table: nothing to compare with, nothing reconciled.
    assert!(h.kernel.0.borrow().reconciliations.is_empty());

    h.source.write(Some(VPN));
    h.agent.config_changed("config file changed", h.now);
    assert_eq!(h.kernel.commits(), 2);
    // Off the loop: nothing deleted until the worker runs.
    assert_eq!(flows_left(&h), ["203.0.113.9", "198.51.100.9"]);
    h.run_worker();
    assert_eq!(flows_left(&h), ["198.51.100.9"]);
    let (families, protocols, _) = h.kernel.0.borrow().reconciliations[0].clone();
    assert_eq!(families, [crate::addr::prefix::Family::V4]);
    assert_eq!(
        protocols,
        crate::kernel::conntrack::Protocols::Connectionless
    );
    assert_eq!(
        h.metric("nft_masq_agent_conntrack_reconciliations_total"),
        1.0
    );
    assert_eq!(
        h.metric("nft_masq_agent_conntrack_entries_deleted_total"),
        1.0
    );

    // A repair restores the same table: no decision changed, conntrack is left alone.
    h.tamper();
    h.run_worker();
    assert_eq!(h.kernel.commits(), 3);
    assert_eq!(h.kernel.0.borrow().reconciliations.len(), 1);
}

#[test]
fn a_failed_reconciliation_is_counted_and_the_commit_stands() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Auto, Some(CGNAT)).start();
    {
        let mut k = h.kernel.0.borrow_mut();
        k.flows = vec![udp_flow("10.244.1.2", "203.0.113.9")];
        k.conntrack_fails = Some(libc::EPERM);
    }
    h.source.write(Some(VPN));
    h.agent.config_changed("config file changed", h.now);
    h.run_worker();
    assert!(set_of(&h.kernel.table().unwrap()).contains(&"203.0.113.0/24".to_string()));
    assert_eq!(h.ready(), Ok(()));
    assert_eq!(
        h.metric("nft_masq_agent_conntrack_reconcile_errors_total"),
        1.0
    );
    assert_eq!(
        h.metric("nft_masq_agent_commits_total{reason=\"config\"}"),
        1.0
    );
    assert_eq!(flows_left(&h), ["203.0.113.9"]);
}

#[test]
fn conntrack_off_leaves_every_flow() {
    let flags = PolicyFlags::default();
    let kernel = FakeKernel::new(LINUX_6_12);
    let source = FakeSource::new(Some(CGNAT), &flags);
    let out = outputs();
    let now = Instant::now();
    let (jobs, mut worker) = worker_on(&kernel);
    let mut agent = Agent::new(
        kernel.clone(),
        source.clone(),
        flags,
        OwnerMode::Auto,
        out,
        jobs,
        now,
    )
    .with_conntrack(None);
    agent.start(now);
    kernel.0.borrow_mut().flows = vec![udp_flow("10.244.1.2", "203.0.113.9")];
    source.write(Some(VPN));
    agent.config_changed("config file changed", now);
    for outcome in worker.run_pending() {
        agent.worker_done(outcome, now);
    }
    assert_eq!(kernel.commits(), 2);
    assert!(kernel.0.borrow().reconciliations.is_empty());
    assert_eq!(kernel.0.borrow().flows.len(), 1);
}

#[test]
fn a_table_left_by_a_previous_agent_is_what_the_first_commit_is_compared_with() {
    // The previous agent committed CGNAT; the ConfigMap changed while no agent ran.
    let first = Harness::new(LINUX_6_12, OwnerMode::Auto, Some(CGNAT)).start();
    let kernel = first.kernel.clone();
    kernel.0.borrow_mut().flows = vec![
        udp_flow("10.244.1.2", "203.0.113.9"),
        udp_flow("10.244.1.2", "100.64.0.9"),
    ];
    let h = Harness::with_kernel(kernel, OwnerMode::Auto, Some(VPN)).start();
    assert_eq!(flows_left(&h), ["100.64.0.9"]);
}

#[test]
fn a_change_undone_before_its_commit_sends_nothing_and_spends_no_budget() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    let other = "nonMasqueradeCIDRs: [100.64.0.0/11]\n";
    // Config changes back and forth until the budget makes one wait.
    let mut texts = [other, CGNAT].into_iter().cycle();
    let mut live_text = CGNAT;
    loop {
        let before = h.kernel.commits();
        let text = texts.next().unwrap();
        h.source.write(Some(text));
        h.agent.config_changed("config file changed", h.now);
        h.now += Duration::from_millis(1);
        if h.kernel.commits() == before {
            break;
        }
        live_text = text;
    }
    let commits = h.kernel.commits();
    let config_commits = h.metric("nft_masq_agent_commits_total{reason=\"config\"}");
    // Undone before the waiting commit runs: the table is already right.
    h.source.write(Some(live_text));
    h.agent.config_changed("config file changed", h.now);
    h.advance(BUDGET_WINDOW);
    assert_eq!(h.kernel.commits(), commits, "nothing was sent");
    assert_eq!(
        h.metric("nft_masq_agent_commits_total{reason=\"config\"}"),
        config_commits,
        "no commit counted"
    );
    assert!(h.live_is_desired());
    assert_eq!(h.ready(), Ok(()));
}

/// Only 10/8 exempt (link-local masqueraded): kubenet's rule never masquerades it.
const ONLY_10: &str = "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: true\n";
/// 192.168/16 exempt too: kubenet's rule masquerades it first.
const WITH_192: &str = "nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\nmasqLinkLocal: true\n";

fn with_kubenet() -> FakeKernel {
    let kernel = FakeKernel::new(LINUX_6_12);
    kernel.0.borrow_mut().nat_tables = vec![kubenet()];
    kernel
}

#[test]
fn an_analysis_superseded_by_a_newer_config_stops_and_the_newer_one_reports() {
    let mut h = Harness::with_kernel(with_kubenet(), OwnerMode::Off, Some(ONLY_10));
    h.agent.start(h.now);
    // The worker takes the start-up analysis (10/8 only: no conflict)...
    let running = h.worker.take().expect("the start-up analysis");
    // ...and meanwhile 192.168/16 becomes exempt: a newer question.
    h.source.write(Some(WITH_192));
    h.agent.config_changed("config file changed", h.now);
    let outcome = h.worker.run(running).expect("an outcome");
    assert!(matches!(outcome, Outcome::Superseded), "{outcome:?}");
    h.agent.worker_done(outcome, h.now);
    assert_eq!(h.metric("nft_masq_agent_conflicting_nat_rules"), 0.0);
    // The newest question runs next and its answer is the one reported.
    h.run_worker();
    assert_eq!(h.metric("nft_masq_agent_conflicting_nat_rules"), 1.0);
    assert_eq!(
        h.metric("nft_masq_agent_analysis_incomplete_total{reason=\"superseded\"}"),
        1.0
    );
    assert_eq!(
        h.metric("nft_masq_agent_analysis_incomplete_total{reason=\"budget\"}"),
        0.0
    );
}

#[test]
fn commits_are_made_while_an_analysis_runs() {
    let mut h = Harness::with_kernel(with_kubenet(), OwnerMode::Off, Some(WITH_192));
    h.agent.start(h.now);
    let running = h.worker.take().expect("the start-up analysis");
    // The analysis has not ended: a repair and a config change are committed all the same.
    h.tamper();
    assert_eq!(h.kernel.commits(), 2);
    assert!(h.live_is_desired());
    assert_eq!(h.ready(), Ok(()));
    h.source.write(Some(CGNAT));
    h.agent.config_changed("config file changed", h.now);
    assert_eq!(h.kernel.commits(), 3);
    assert_eq!(set_of(&h.kernel.table().unwrap())[0], "100.64.0.0/10");
    assert_eq!(h.ready(), Ok(()));
    // The pass in progress asked about the old config: stopped; the new one reports.
    let outcome = h.worker.run(running).expect("an outcome");
    assert!(matches!(outcome, Outcome::Superseded), "{outcome:?}");
    h.run_worker();
    // CGNAT's 100.64/10 and link-local: kubenet's rule masquerades both.
    assert_eq!(h.metric("nft_masq_agent_conflicting_nat_rules"), 1.0);
}

#[test]
fn a_repair_does_not_stop_the_analysis_in_progress() {
    let mut h = Harness::with_kernel(with_kubenet(), OwnerMode::Off, Some(WITH_192));
    h.agent.start(h.now);
    let running = h.worker.take().expect("the start-up analysis");
    h.tamper();
    assert_eq!(h.kernel.commits(), 2);
    // The same table was restored: the question is the same, the pass goes on.
    let outcome = h.worker.run(running).expect("an outcome");
    assert!(matches!(outcome, Outcome::Analysed(_)), "{outcome:?}");
    h.agent.worker_done(outcome, h.now);
    assert_eq!(h.metric("nft_masq_agent_conflicting_nat_rules"), 1.0);
    assert!(h.worker.take().is_none());
}

#[test]
fn a_pass_over_budget_is_cut_off_and_counted_and_the_same_question_is_not_asked_again() {
    let kernel = with_kubenet();
    // Each step of the walk takes longer than the whole budget.
    kernel.0.borrow_mut().clock_step = worker::ANALYSIS_BUDGET + Duration::from_millis(1);
    let mut h = Harness::with_kernel(kernel, OwnerMode::Off, Some(WITH_192)).start();
    assert_eq!(
        h.metric("nft_masq_agent_analysis_incomplete_total{reason=\"budget\"}"),
        1.0
    );
    assert!(h.metric("nft_masq_agent_analysis_duration_seconds") > 2.0);
    // Nothing analysed: the conflict is not known yet.
    assert_eq!(h.metric("nft_masq_agent_conflicting_nat_rules"), 0.0);
    // A full check with the ruleset unchanged asks the same question: not asked again.
    let reads = h.kernel.0.borrow().nat_reads;
    h.advance(Duration::from_secs(60));
    h.run_worker();
    assert_eq!(h.kernel.0.borrow().nat_reads, reads);
    // The ruleset changes and the read is fast again: the next check's pass completes.
    h.kernel.0.borrow_mut().clock_step = Duration::ZERO;
    h.kernel.foreign_commit(h.kernel.table());
    h.advance(Duration::from_secs(60));
    h.run_worker();
    assert_eq!(h.kernel.0.borrow().nat_reads, reads + 1);
    assert_eq!(h.metric("nft_masq_agent_conflicting_nat_rules"), 1.0);
    assert_eq!(
        h.metric("nft_masq_agent_analysis_incomplete_total{reason=\"budget\"}"),
        1.0
    );
}

#[test]
fn tables_too_large_to_analyse_are_counted() {
    let kernel = with_kubenet();
    kernel.0.borrow_mut().too_large = vec![("ip", "kube-proxy".into())];
    let mut h = Harness::with_kernel(kernel, OwnerMode::Off, Some(WITH_192)).start();
    assert_eq!(h.metric("nft_masq_agent_foreign_tables_too_large"), 1.0);
    h.kernel.0.borrow_mut().too_large.clear();
    h.kernel.foreign_commit(h.kernel.table());
    h.advance(Duration::from_secs(60));
    h.run_worker();
    assert_eq!(h.metric("nft_masq_agent_foreign_tables_too_large"), 0.0);
}

/// 198.51.100.0/24 exempt instead of 203.0.113.0/24.
const THIRD: &str = "nonMasqueradeCIDRs: [100.64.0.0/10, 198.51.100.0/24]\n";

/// Flows to destinations each table decides differently (CGNAT, VPN, THIRD):
/// 198.51.100.9 masq, masq, exempt; 203.0.113.9 masq, exempt, masq; 100.64.0.9 exempt
/// throughout; 192.0.2.9 masqueraded throughout.
fn four_flows() -> Vec<crate::kernel::conntrack::Flow> {
    ["198.51.100.9", "203.0.113.9", "100.64.0.9", "192.0.2.9"]
        .into_iter()
        .map(|d| udp_flow("10.244.1.2", d))
        .collect()
}

#[test]
fn coalesced_reconciliations_compare_with_every_table_in_between() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Auto, Some(CGNAT)).start();
    h.kernel.0.borrow_mut().flows = four_flows();
    // Two commits before the worker gets to the first reconciliation.
    h.source.write(Some(VPN));
    h.agent.config_changed("config file changed", h.now);
    h.source.write(Some(THIRD));
    h.agent.config_changed("config file changed", h.now);
    assert_eq!(h.kernel.commits(), 3);
    h.run_worker();
    // One dump for both commits. 198.51.100.9 was masqueraded under CGNAT and is exempt
    // now; 203.0.113.9 may have been opened while VPN exempted it (so not masqueraded) and
    // is masqueraded now: comparing CGNAT with THIRD alone would keep it.
    assert_eq!(h.kernel.0.borrow().reconciliations.len(), 1);
    assert_eq!(flows_left(&h), ["100.64.0.9", "192.0.2.9"]);
}

#[test]
fn commits_during_a_reconciliation_are_reconciled_from_its_table_on() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Auto, Some(CGNAT)).start();
    h.kernel.0.borrow_mut().flows = four_flows();
    h.source.write(Some(VPN));
    h.agent.config_changed("config file changed", h.now);
    // The worker takes CGNAT → VPN; THIRD is committed while it runs.
    let running = h.worker.take().expect("a reconciliation");
    h.source.write(Some(THIRD));
    h.agent.config_changed("config file changed", h.now);
    let outcome = h.worker.run(running).expect("a report");
    h.agent.worker_done(outcome, h.now);
    // CGNAT → VPN: only 203.0.113.9 changed.
    assert_eq!(flows_left(&h), ["198.51.100.9", "100.64.0.9", "192.0.2.9"]);
    // Its next packet came while VPN was still in force: a new flow, exempt.
    h.kernel
        .0
        .borrow_mut()
        .flows
        .push(udp_flow("10.244.1.2", "203.0.113.9"));
    // VPN → THIRD: 198.51.100.9 is exempt now, 203.0.113.9 masqueraded again.
    h.run_worker();
    assert_eq!(h.kernel.0.borrow().reconciliations.len(), 2);
    assert_eq!(flows_left(&h), ["100.64.0.9", "192.0.2.9"]);
}

/// The notifications of someone else's transaction at `generation`: `events`, then NEWGEN.
fn foreign(events: Vec<Event>, generation: u32) -> Drained {
    let mut events = events;
    events.push(Event::Generation {
        id: generation,
        port_id: OTHER,
        proc_name: Some("nft".into()),
        pid: Some(42),
    });
    Drained {
        events,
        lost: false,
        keys: 0,
    }
}

fn elements_event(kind: u16, set: &str, keys: Vec<(u128, bool)>, port_id: u32) -> Event {
    Event::Object {
        kind,
        family: NFPROTO_INET,
        table: TABLE_NAME.into(),
        port_id,
        detail: Detail::Elements {
            set: set.into(),
            keys,
        },
    }
}

/// Someone deletes the first prefix of the first set (its start and end elements).
fn delete_first_prefix(h: &mut Harness) -> u32 {
    use crate::kernel::nft::encode::interval_elements;
    use crate::kernel::nft::uapi::NFT_MSG_DELSETELEM;
    let mut t = h.kernel.table().unwrap();
    let set = t.sets[0].clone();
    let all = interval_elements(&set);
    // The first whole interval: a start and the end after it (past a leading end at 0).
    let i = all.iter().position(|e| !e.1).unwrap();
    let gone = all[i..i + 2].to_vec();
    t.sets[0].prefixes.remove(0);
    let generation = h.kernel.foreign_commit(Some(t));
    let ev = elements_event(NFT_MSG_DELSETELEM, &set.name, gone, OTHER);
    h.agent.notifications(foreign(vec![ev], generation), h.now);
    generation
}

#[test]
fn a_deleted_element_is_repaired_by_sending_it_back_alone() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    let before = h.kernel.commits();
    let generation = delete_first_prefix(&mut h);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.kernel.commits(), before + 1, "repaired");
    let r = *h.kernel.0.borrow().reports.last().unwrap();
    assert_eq!(r.form, crate::kernel::nft::ReplaceForm::Delta);
    assert_eq!(r.sent, 2, "the interval's start and end, nothing else");
    assert!(!r.counters_reset, "the rules were left alone");
    assert_eq!(h.kernel.0.borrow().generation, generation + 1);
    assert!(h.live_is_desired());
}

#[test]
fn a_deleted_rule_is_repaired_by_refilling_its_chain_only() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    h.tamper();
    h.advance(Duration::from_millis(1));
    let r = *h.kernel.0.borrow().reports.last().unwrap();
    assert_eq!(r.form, crate::kernel::nft::ReplaceForm::Delta);
    assert_eq!(r.sent, 0, "no element is sent for a rule");
    assert!(r.counters_reset, "the chain was refilled");
    assert!(h.live_is_desired());
}

#[test]
fn other_tables_transactions_keep_the_live_table_known() {
    // kube-proxy commits every second: the table stays known, so a config change after
    // its commits is still only the difference.
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    for _ in 0..3 {
        let g = h.kernel.foreign_commit(h.kernel.table());
        let ev = Event::Object {
            kind: crate::kernel::nft::uapi::NFT_MSG_NEWSETELEM,
            family: NFPROTO_INET,
            table: "kube-proxy".into(),
            port_id: OTHER,
            detail: Detail::None,
        };
        h.agent.notifications(foreign(vec![ev], g), h.now);
    }
    h.source
        .write(Some("nonMasqueradeCIDRs: [100.64.0.0/10, 192.0.2.0/24]\n"));
    h.agent.config_changed("test", h.now);
    let r = *h.kernel.0.borrow().reports.last().unwrap();
    assert_eq!(
        (r.form, r.sent),
        (crate::kernel::nft::ReplaceForm::Delta, 2)
    );
}

#[test]
fn lost_notifications_or_a_change_the_model_cannot_follow_mean_a_full_commit() {
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    // Lost: the next repair cannot trust the model.
    let g = h.kernel.foreign_commit(h.kernel.table());
    h.agent.notifications(
        Drained {
            events: vec![],
            lost: true,
            keys: 0,
        },
        h.now,
    );
    h.agent.notifications(foreign(vec![], g), h.now);
    delete_first_prefix(&mut h);
    h.advance(Duration::from_millis(1));
    let r = *h.kernel.0.borrow().reports.last().unwrap();
    assert_ne!(r.form, crate::kernel::nft::ReplaceForm::Delta, "{r:?}");
    assert!(h.live_is_desired());
    // A set deleted (not followed): a full commit too.
    let g = h.kernel.foreign_commit(None);
    let ev = Event::Object {
        kind: crate::kernel::nft::uapi::NFT_MSG_DELTABLE,
        family: NFPROTO_INET,
        table: TABLE_NAME.into(),
        port_id: OTHER,
        detail: Detail::None,
    };
    h.advance(Duration::from_secs(1));
    h.agent.notifications(foreign(vec![ev], g), h.now);
    h.advance(Duration::from_millis(1));
    let r = *h.kernel.0.borrow().reports.last().unwrap();
    assert_ne!(r.form, crate::kernel::nft::ReplaceForm::Delta, "{r:?}");
    assert!(h.live_is_desired());
}

#[test]
fn our_own_echo_changes_nothing() {
    // Our own element notifications (were we in the group during our commit) are not
    // someone else's change: no repair, and the model is not edited by them.
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Off, Some(CGNAT)).start();
    let set = h.kernel.table().unwrap().sets[0].name.clone();
    let before = h.kernel.commits();
    let ev = elements_event(
        crate::kernel::nft::uapi::NFT_MSG_DELSETELEM,
        &set,
        vec![(1, false)],
        fake::PORT,
    );
    let g = h.kernel.0.borrow().generation;
    h.agent.notifications(
        Drained {
            events: vec![
                ev,
                Event::Generation {
                    id: g,
                    port_id: fake::PORT,
                    proc_name: None,
                    pid: None,
                },
            ],
            lost: false,
            keys: 0,
        },
        h.now,
    );
    h.advance(Duration::from_millis(1));
    assert_eq!(h.kernel.commits(), before);
    assert!(
        h.kernel
            .0
            .borrow()
            .known
            .as_ref()
            .unwrap()
            .edits()
            .is_empty()
    );
}

#[test]
fn a_restart_with_the_config_in_force_sends_nothing() {
    let kernel = FakeKernel::new(LINUX_6_12);
    let h = Harness::with_kernel(kernel.clone(), OwnerMode::Off, Some(CGNAT)).start();
    let g = kernel.0.borrow().generation;
    drop(h);
    // A new process: its socket knows nothing until it reads the table.
    kernel.0.borrow_mut().known = None;
    kernel.0.borrow_mut().learned = 0;
    let h = Harness::with_kernel(kernel.clone(), OwnerMode::Off, Some(CGNAT)).start();
    assert_eq!(kernel.0.borrow().learned, 1);
    assert_eq!(kernel.0.borrow().generation, g, "nothing was committed");
    assert_eq!(kernel.0.borrow().reports.last().unwrap().messages, 0);
    assert_eq!(h.ready(), Ok(()));
    drop(h);
    // A restart after a one-CIDR change sends that one interval.
    kernel.0.borrow_mut().known = None;
    let two = "nonMasqueradeCIDRs: [100.64.0.0/10, 192.0.2.0/24]\n";
    let _h = Harness::with_kernel(kernel.clone(), OwnerMode::Off, Some(two)).start();
    let r = *kernel.0.borrow().reports.last().unwrap();
    assert_eq!(
        (r.form, r.sent),
        (crate::kernel::nft::ReplaceForm::Delta, 2)
    );
}

#[test]
fn snat_rules_are_committed_published_and_a_bad_entry_keeps_them() {
    let rules = "snatRules:\n- sourceCIDRs: [10.244.0.0/23]\n  snatTo: [192.0.2.20]\n\
                 - sourceCIDRs: [10.244.1.0/25]\n  snatTo: [192.0.2.22]\n";
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Auto, Some(rules)).start();
    let live = h.kernel.table().unwrap();
    assert_eq!(live.maps.len(), 1);
    assert_eq!(h.ready(), Ok(()));
    assert_eq!(
        h.metric("nft_masq_agent_snat_rule_intervals{family=\"ipv4\"}"),
        3.0,
        "the /23 cut around the /25"
    );
    // An entry that changes address: a commit with the new map.
    h.source
        .write(Some(&rules.replace("192.0.2.22", "192.0.2.23")));
    h.agent.config_changed("config file changed", h.now);
    assert_eq!(h.kernel.commits(), 2);
    let to: Vec<String> = h.kernel.table().unwrap().maps[0]
        .entries
        .iter()
        .map(|e| e.to.to_string())
        .collect();
    assert_eq!(to, ["192.0.2.20", "192.0.2.23", "192.0.2.20"]);
    // A range in an entry is refused: nothing committed, the map stays.
    h.source.write(Some(
        &rules.replace("[192.0.2.22]", "['192.0.2.22-192.0.2.29']"),
    ));
    h.agent.config_changed("config file changed", h.now);
    assert_eq!(h.kernel.commits(), 2);
    assert_eq!(h.metric("nft_masq_agent_config_valid"), 0.0);
    assert_eq!(
        h.kernel.table().unwrap().maps[0].entries[1].to.to_string(),
        "192.0.2.23"
    );
}

/// The daemon reads the config on a thread of its own (`daemon/reader.rs`): while a read
/// runs, the loop still repairs, and the read's config is committed when it comes back.
#[test]
fn a_change_while_the_config_is_read_apart_is_repaired_before_the_read_ends() {
    let dir = std::env::temp_dir().join(format!("nma-agent-reader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ip-masq-agent");
    std::fs::write(&path, CGNAT).unwrap();
    let (done, mut reads) = tokio::sync::mpsc::unbounded_channel();
    let reader = super::reader::Reader::spawn(
        crate::config::ConfigSource::new(&path, PolicyFlags::default()),
        done,
    )
    .unwrap();
    let mut h = Harness::new(LINUX_6_12, OwnerMode::Auto, Some(CGNAT));
    h.agent = h.agent.with_reader(reader);
    let mut h = h.start();
    let started = h.kernel.commits();

    // The operator's change: the read is handed over, nothing is committed yet.
    std::fs::write(
        &path,
        "nonMasqueradeCIDRs: [100.64.0.0/10, 198.18.0.0/15]\n",
    )
    .unwrap();
    let next = h.agent.config_changed("config file changed", h.now);
    h.record(next);
    assert_eq!(h.kernel.commits(), started);

    // Someone deletes a rule while the file is read: repaired at once, to the old config.
    h.tamper();
    assert_eq!(h.kernel.commits(), started + 1, "repaired during the read");
    assert!(h.live_is_desired());
    assert!(!set_of(&h.kernel.table().unwrap()).contains(&"198.18.0.0/15".to_string()));

    // The read comes back: its config is committed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let read = loop {
        if let Ok(read) = reads.try_recv() {
            break read;
        }
        assert!(Instant::now() < deadline, "the read never came back");
        std::thread::sleep(Duration::from_millis(1));
    };
    let next = h.agent.config_read(read, h.now);
    h.record(next);
    assert_eq!(h.kernel.commits(), started + 2);
    assert!(set_of(&h.kernel.table().unwrap()).contains(&"198.18.0.0/15".to_string()));
    assert_eq!(h.ready(), Ok(()));
    let _ = std::fs::remove_dir_all(&dir);
}
