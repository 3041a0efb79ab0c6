//! Creating the table's sets without a window of wrong policy: after `nft delete table` and
//! when a restart changes the owner flag, probes every millisecond find exempt destinations
//! never masqueraded (and, across the restart, the others always masqueraded); and every
//! full-form batch is a compare-and-commit, so something planted between the agent's read
//! and its batch is refused by the kernel and repaired. Needs root.
//!
//! On 6.18 a set created in the same transaction as the rules that look into it matches
//! nothing until the transaction ends, so a one-transaction creation masquerades exempt
//! destinations for as long as the kernel takes to finish it (hundreds of milliseconds at
//! 100,000 prefixes). Sizes: `NMA_CREATION_PREFIXES` (default 100,000 on the host, 20,000
//! in an emulated guest).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nft_masq_agent::config::{Config, PolicyFlags};
use nft_masq_agent::kernel::nft::{self, NftSocket, ReplaceForm};
use nft_masq_agent::model::{self, TableFlags};
use nma_testkit::configs::{ConfigText, spaced_24s};
use nma_testkit::{
    Agent, NODE4, Netns, POD4, Topology, emulated, heavy, kernel_at_least, root_or_skip, slack,
};

const TABLE: &str = "nft-masq-agent";
const HANDOVER: &str = "nft-masq-agent-handover";
/// Exempt (inside 10.0.0.0/8) and not exempt, both hosted by the remote.
const EXEMPT: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 5);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(11, 22, 33, 44);
const PROBE_PORT: u16 = 9_999;
const PROBE_EVERY: Duration = Duration::from_millis(1);

fn prefixes() -> usize {
    std::env::var("NMA_CREATION_PREFIXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if emulated() { 20_000 } else { 100_000 })
}

/// 10.0.0.0/8 and `n - 1` /24s from 20.0.0.0 (none of them holds [`OUTSIDE`]).
fn config(t: &Topology, n: usize) -> std::path::PathBuf {
    let mut list = vec!["10.0.0.0/8".parse().unwrap()];
    list.extend(spaced_24s(Ipv4Addr::new(20, 0, 0, 0), n - 1));
    t.config(
        "ip-masq-agent",
        &ConfigText::new().non_masquerade(&list).render(),
    )
}

/// Probes to [`EXEMPT`] and [`OUTSIDE`], one each every millisecond, each from a fresh source
/// port (a new conntrack flow, translated by the ruleset of its moment), and the source
/// address each arrived with.
#[derive(Default)]
struct Probes {
    /// (destination, when sent) by sequence number.
    sent: Vec<(Ipv4Addr, Instant)>,
    /// (sequence number, source seen by the remote).
    arrived: Vec<(u64, Ipv4Addr)>,
}

/// Sets its flags when dropped.
struct Stop<'a>(&'a AtomicBool, &'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        self.1.store(true, Ordering::SeqCst);
    }
}

impl Probes {
    /// Probes sent while `during` runs (and for 300 ms after, so late commits are covered).
    fn during(t: &Topology, during: impl FnOnce()) -> Probes {
        let stop_tx = AtomicBool::new(false);
        let stop_rx = AtomicBool::new(false);
        let ready = AtomicBool::new(false);
        std::thread::scope(|s| {
            // Stops both threads however this closure ends: on a panic, the scope waits for
            // them before passing it on.
            let _stop = Stop(&stop_tx, &stop_rx);
            let rx = s.spawn(|| {
                t.remote.enter_current_thread();
                let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PROBE_PORT)).expect("bind");
                // Room for seconds of probes: a receiver starved by a busy (emulated) CPU
                // must not lose them.
                let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(&sock, 16 << 20);
                sock.set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                ready.store(true, Ordering::SeqCst);
                let mut got = Vec::new();
                let mut buf = [0u8; 16];
                while !stop_rx.load(Ordering::SeqCst) {
                    if let Ok((8, SocketAddr::V4(from))) = sock.recv_from(&mut buf) {
                        got.push((u64::from_be_bytes(buf[..8].try_into().unwrap()), *from.ip()));
                    }
                }
                got
            });
            while !ready.load(Ordering::SeqCst) && !rx.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let tx = s.spawn(|| {
                t.pod.enter_current_thread();
                let mut sent = Vec::new();
                // Each destination its own 25,000 ports: 25 s before a port (and its
                // conntrack entry, kept 30 s) comes back.
                let mut port = [10_000u16, 35_000];
                let mut next = Instant::now();
                while !stop_tx.load(Ordering::SeqCst) && port[1] < 60_000 {
                    for (d, dst) in [EXEMPT, OUTSIDE].into_iter().enumerate() {
                        port[d] += 1;
                        let Ok(sock) = UdpSocket::bind((POD4, port[d])) else {
                            continue;
                        };
                        let seq = sent.len() as u64;
                        let _ = sock.send_to(&seq.to_be_bytes(), (dst, PROBE_PORT));
                        sent.push((dst, Instant::now()));
                    }
                    next += PROBE_EVERY;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
                sent
            });
            // Probes before the change too.
            std::thread::sleep(Duration::from_millis(100));
            during();
            std::thread::sleep(Duration::from_millis(300));
            stop_tx.store(true, Ordering::SeqCst);
            let sent = tx.join().unwrap();
            std::thread::sleep(Duration::from_millis(200));
            stop_rx.store(true, Ordering::SeqCst);
            Probes {
                sent,
                arrived: rx.join().unwrap(),
            }
        })
    }

    /// Probes to `dst` that arrived from `src`, with how many were sent to it and arrived.
    fn count(&self, dst: Ipv4Addr, src: Ipv4Addr) -> (usize, usize, usize) {
        let to = |seq: u64| self.sent.get(seq as usize).is_some_and(|(d, _)| *d == dst);
        let sent = self.sent.iter().filter(|(d, _)| *d == dst).count();
        let arrived: Vec<_> = self.arrived.iter().filter(|(q, _)| to(*q)).collect();
        let wrong = arrived.iter().filter(|(_, s)| *s == src).count();
        (wrong, sent, arrived.len())
    }

    /// When the probes to `dst` that arrived from `src` were sent, in milliseconds after
    /// `since` (negative: before it): where a window of wrong policy lies.
    fn wrong_at(&self, dst: Ipv4Addr, src: Ipv4Addr, since: Instant) -> Vec<String> {
        self.arrived
            .iter()
            .filter(|(_, s)| *s == src)
            .filter_map(|(q, _)| self.sent.get(*q as usize))
            .filter(|(d, _)| *d == dst)
            .map(|(_, at)| {
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                match at.checked_duration_since(since) {
                    Some(d) => format!("{:.1}", ms(d)),
                    None => format!("-{:.1}", ms(since - *at)),
                }
            })
            .collect()
    }

    /// Probes to `dst` sent between `from` and `to`.
    fn sent_between(&self, dst: Ipv4Addr, from: Instant, to: Instant) -> usize {
        self.sent
            .iter()
            .filter(|(d, at)| *d == dst && *at >= from && *at <= to)
            .count()
    }
}

fn tables(t: &Topology) -> String {
    t.node.nft(&["list", "tables"])
}

/// The agent's commits, for failure messages.
fn commits(agent: &Agent) -> String {
    agent
        .commits()
        .iter()
        .map(|c| format!("{:?} {:.1} ms", c.form, c.duration_ms))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn a_deleted_table_is_recreated_without_masquerading_exempt_destinations() {
    root_or_skip!();
    let _heavy = heavy();
    let n = prefixes();
    let t = Topology::builder("create-deleted").ipv6(false).build();
    let cfg = config(&t, n);
    let agent = t
        .agent_builder()
        .config(&cfg)
        .args(["--table-owner", "off"])
        .spawn();
    assert!(
        agent.wait_commits(1, Duration::from_secs(60)).is_some(),
        "{}",
        agent.log()
    );
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);

    let (mut deleted, mut back) = (Instant::now(), Instant::now());
    let probes = Probes::during(&t, || {
        deleted = Instant::now();
        t.node.nft(&["delete", "table", "inet", TABLE]);
        assert!(
            agent
                .wait_commits(2, Duration::from_secs(30) * slack())
                .is_some(),
            "not recreated:\n{}",
            agent.log()
        );
        back = Instant::now();
    });
    let recreated = agent.commits()[1].clone();
    let (wrong, sent, arrived) = probes.count(EXEMPT, NODE4);
    let window = probes.sent_between(EXEMPT, deleted, back);
    eprintln!(
        "{n} prefixes: recreated by a {:?} commit of {:.1} ms; exempt probes: {sent} sent \
         ({window} while the table was missing or being created), {arrived} arrived, {wrong} \
         masqueraded",
        recreated.form, recreated.duration_ms
    );
    assert_eq!(
        wrong,
        0,
        "exempt probes masqueraded during the re-creation, sent at {:?} ms after the deletion \
         (recreated at {:.1} ms); commits: {}",
        probes.wrong_at(EXEMPT, NODE4, deleted),
        (back - deleted).as_secs_f64() * 1e3,
        commits(&agent)
    );
    // The probes covered the re-creation, and arrived (a lost probe proves nothing).
    assert!(window >= 10, "only {window} probes during the re-creation");
    assert!(arrived * 10 >= sent * 9, "{arrived} of {sent} arrived");
    assert_eq!(recreated.form.as_deref(), Some("create"));
    let listed = tables(&t);
    assert!(
        listed.contains(&format!("table inet {TABLE}\n")),
        "{listed}"
    );
    assert!(!listed.contains(HANDOVER), "{listed}");
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);
}

#[test]
fn a_restart_that_changes_the_owner_flag_keeps_the_policy_in_force_throughout() {
    root_or_skip!();
    if !kernel_at_least(5, 12) {
        eprintln!("kernel before 5.12: no owner flag, nothing changes at the restart");
        return;
    }
    let _heavy = heavy();
    let n = prefixes();
    let t = Topology::builder("create-owner").ipv6(false).build();
    let cfg = config(&t, n);
    let first = t
        .agent_builder()
        .config(&cfg)
        .args(["--table-owner", "off"])
        .spawn();
    assert!(
        first.wait_commits(1, Duration::from_secs(60)).is_some(),
        "{}",
        first.log()
    );
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);

    let mut second = None;
    let probes = Probes::during(&t, || {
        // The table stays in force when the agent exits; the next one wants it owned.
        first.stop();
        let a = t
            .agent_builder()
            .config(&cfg)
            .args(["--table-owner", "on"])
            .spawn();
        assert!(
            a.wait_commits(1, Duration::from_secs(60) * slack())
                .is_some(),
            "{}",
            a.log()
        );
        second = Some(a);
    });
    let second = second.unwrap();
    let switched = second.commits()[0].clone();
    let (exempt_wrong, exempt_sent, exempt_arrived) = probes.count(EXEMPT, NODE4);
    let (outside_wrong, outside_sent, outside_arrived) = probes.count(OUTSIDE, POD4);
    eprintln!(
        "{n} prefixes: owner flag switched by a {:?} commit of {:.1} ms; exempt: {exempt_sent} \
         sent, {exempt_arrived} arrived, {exempt_wrong} masqueraded; not exempt: \
         {outside_sent} sent, {outside_arrived} arrived, {outside_wrong} not masqueraded",
        switched.form, switched.duration_ms
    );
    assert_eq!(
        (exempt_wrong, outside_wrong),
        (0, 0),
        "wrong policy during the switch; commits: {}",
        commits(&second)
    );
    assert!(exempt_arrived * 10 >= exempt_sent * 9);
    assert!(outside_arrived * 10 >= outside_sent * 9);
    assert_eq!(switched.form.as_deref(), Some("handover"));
    let owner = if kernel_at_least(6, 9) {
        "owner-persist"
    } else {
        "owner"
    };
    assert_eq!(
        t.metric(&format!("nft_masq_agent_table_owner{{mode=\"{owner}\"}}")),
        1.0
    );
    let listed = tables(&t);
    assert!(!listed.contains(HANDOVER), "{listed}");
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);
}

fn ns(tag: &str) -> Netns {
    Netns::new(format!("nma-{}-creation-{tag}", std::process::id()))
}

fn small_table(n: u32) -> model::Table {
    let f = PolicyFlags::default();
    let mut c = Config::defaults(&f);
    let nets = nma_testkit::configs::spaced_24s(std::net::Ipv4Addr::new(11, 0, 0, 0), n as usize);
    c.non_masquerade_cidrs = nft_masq_agent::config::entries(nets);
    model::desired(&c, &f, TableFlags::default())
}

fn nft_cmd(args: &str) {
    let out = std::process::Command::new("nft")
        .args(args.split_whitespace())
        .output()
        .expect("run nft");
    assert!(
        out.status.success(),
        "nft {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replaces the table with the `nft` commands `cmds` run after the first read of the live
/// table, between it and the batch chosen from it; asserts that the batch was refused and
/// the table read once more.
fn replace_with_commit_after_first_read(
    sock: &mut NftSocket,
    table: &model::Table,
    cmds: &[&str],
) -> nft::CommitReport {
    let mut reads = 0;
    let report = nft::replace_table_with(sock, table, &mut || {
        reads += 1;
        if reads == 1 {
            cmds.iter().for_each(|c| nft_cmd(c));
        }
    })
    .unwrap();
    assert_eq!(reads, 2, "the first batch was not refused");
    report
}

/// A chain planted after the agent read the table's skeleton (which fitted the in-place
/// form) and before its batch: the in-place batch, stamped with the generation read before
/// the skeleton, is refused; the table is read again, the planted chain seen, and the table
/// recreated without it. (An in-place batch without the generation would have committed
/// and left the chain there: a flush touches only the chains it names.)
#[test]
fn something_planted_between_read_and_batch_is_refused_and_repaired() {
    root_or_skip!();
    ns("planted").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        let table = small_table(500);
        let report = nft::replace_table(&mut sock, &table).unwrap();
        assert_eq!((report.form, report.transactions), (ReplaceForm::Create, 2));
        // Someone else's commit, larger than the table (its set flushed, an element
        // added): the agent's next commit reads the table, and a difference would send more
        // than the table holds, so it is replaced in a full form.
        nft_cmd("flush set inet nft-masq-agent nonmasq-v4");
        nft_cmd("add element inet nft-masq-agent nonmasq-v4 { 203.0.113.0/24 }");
        let report = replace_with_commit_after_first_read(
            &mut sock,
            &table,
            &[
                "add chain inet nft-masq-agent planted",
                "add rule inet nft-masq-agent planted counter accept",
            ],
        );
        assert_eq!(report.form, ReplaceForm::Handover);
        let live = sock.read_table(TABLE).unwrap().unwrap();
        assert!(!live.chains.iter().any(|c| c.name == "planted"), "{live}");
        assert_eq!(live.sets, table.sets);
        assert!(live.same_policy(&table));
        assert!(sock.table_info(HANDOVER).unwrap().is_none());

        // Someone committing after every read (a tamper storm): the conditioned attempts are
        // refused, the last is sent without the generation (else a storm would keep the table
        // unrepaired for ever) and, being self-contained, flushes what they added.
        nft_cmd("flush set inet nft-masq-agent nonmasq-v4");
        nft_cmd("add element inet nft-masq-agent nonmasq-v4 { 203.0.113.0/24 }");
        let mut reads = 0;
        let report = nft::replace_table_with(&mut sock, &table, &mut || {
            reads += 1;
            nft_cmd(&format!(
                "add element inet nft-masq-agent nonmasq-v4 {{ 198.18.{}.0/24 }}",
                reads * 2
            ));
        })
        .unwrap();
        assert_eq!(reads, nft::ATTEMPTS);
        assert_eq!(report.form, ReplaceForm::InPlace);
        assert_eq!(sock.read_table(TABLE).unwrap().unwrap().sets, table.sets);
        assert!(sock.table_info(HANDOVER).unwrap().is_none());
    });
}

/// A difference refused because someone committed after the read it was computed from is
/// computed again from a fresh read and sent as a difference: the repair of a few elements
/// stays a few elements. (Before, the refusal fell through to the full form, which refills
/// every set in place: under a tamper storm one batch of every element, for a difference
/// of two.)
#[test]
fn a_refused_difference_is_computed_again_from_a_fresh_read() {
    root_or_skip!();
    ns("refused-diff").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        let table = small_table(500);
        nft::replace_table(&mut sock, &table).unwrap();
        // Someone else's commit: the model is not at the kernel's generation any more
        // (nothing follows notifications here), so the next commit reads the table.
        nft_cmd("delete element inet nft-masq-agent nonmasq-v4 { 11.0.0.0/24 }");
        // Between the read and the difference's batch: the batch is refused.
        let report = replace_with_commit_after_first_read(
            &mut sock,
            &table,
            &["delete element inet nft-masq-agent nonmasq-v4 { 11.0.2.0/24 }"],
        );
        assert_eq!(report.form, ReplaceForm::Delta, "{report:?}");
        // Both deleted prefixes put back: two intervals, their start and end each.
        assert_eq!((report.sent, report.transactions), (4, 1), "{report:?}");
        assert_eq!(sock.read_table(TABLE).unwrap().unwrap(), table);
        assert_eq!(sock.known_generation(), Some(sock.generation().unwrap()));
    });
}

/// A handover that failed half-way (its table left behind, here made by hand) is finished
/// by the next commit: the leftover handover table is deleted.
#[test]
fn a_leftover_handover_table_is_deleted_by_the_next_commit() {
    root_or_skip!();
    ns("leftover").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        let table = small_table(100);
        nft::replace_table(&mut sock, &table).unwrap();
        nft_cmd("add table inet nft-masq-agent-handover");
        nft_cmd("add element inet nft-masq-agent nonmasq-v4 { 203.0.113.0/24 }");
        let report = nft::replace_table(&mut sock, &table).unwrap();
        assert_eq!(
            (report.form, report.transactions),
            (ReplaceForm::InPlace, 2)
        );
        assert!(sock.table_info(HANDOVER).unwrap().is_none());
        assert_eq!(sock.read_table(TABLE).unwrap().unwrap().sets, table.sets);
    });
}

/// A restart with `--table-owner auto` on 6.9+ (owner and persist): the table the previous
/// process left (persistent, its owner gone) is adopted in place, not handed over.
#[test]
fn an_orphaned_persistent_table_is_adopted_in_place() {
    root_or_skip!();
    if !kernel_at_least(6, 9) {
        eprintln!("kernel before 6.9: no persist flag");
        return;
    }
    ns("orphan").enter(|| {
        let mut table = small_table(100);
        table.flags = TableFlags(TableFlags::OWNER | TableFlags::PERSIST);
        let mut first = NftSocket::open().unwrap();
        nft::replace_table(&mut first, &table).unwrap();
        drop(first);
        let mut second = NftSocket::open().unwrap();
        // The kernel lets go of the owner when it releases the closed socket, which can
        // come a little after the close on a busy machine.
        let orphaned = nma_testkit::wait_until(Duration::from_secs(5), || {
            second
                .table_info(TABLE)
                .unwrap()
                .is_some_and(|t| t.owner.is_none())
        });
        assert!(orphaned, "the closed socket still owns the table");
        let report = nft::replace_table(&mut second, &table).unwrap();
        let info = second.table_info(TABLE).unwrap().unwrap();
        assert_eq!(info.owner, Some(second.port_id()));
        assert_eq!(report.form, ReplaceForm::InPlace);
    });
}

/// A table with our sets and no chain (what a creation cut short after its first
/// transaction leaves, or our chains deleted by someone) translates nothing. Its sets read
/// back as wanted, so the chains alone are added: one transaction, no element sent.
#[test]
fn a_table_without_its_chains_gets_them_and_no_element() {
    root_or_skip!();
    ns("unchained").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        let table = small_table(100);
        nft::replace_table(&mut sock, &table).unwrap();
        delete_chains(&table, |_| true);
        let report = nft::replace_table(&mut sock, &table).unwrap();
        assert_eq!(
            (report.form, report.transactions, report.sent),
            (ReplaceForm::Create, 1, 0),
            "{report:?}"
        );
        let live = sock.read_table(TABLE).unwrap().unwrap();
        assert_eq!(live.sets, table.sets);
        assert!(live.same_policy(&table), "{live}");
    });
}

/// The same with a table cut into blocks (its block chains and dispatch map kept, its base
/// chain deleted): the base chain alone comes back.
#[test]
fn a_cut_table_without_its_base_chain_gets_it_and_no_element() {
    root_or_skip!();
    ns("unchained-cut").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        let table = small_table(3_000);
        assert!(!table.dispatch.is_empty(), "a cut table");
        nft::replace_table(&mut sock, &table).unwrap();
        delete_chains(&table, |c| c.base.is_some());
        let report = nft::replace_table(&mut sock, &table).unwrap();
        assert_eq!(
            (report.form, report.transactions, report.sent),
            (ReplaceForm::Create, 1, 0),
            "{report:?}"
        );
        let live = sock.read_table(TABLE).unwrap().unwrap();
        assert!(live.same_policy(&table), "{live}");
    });
}

/// A table with no chain whose sets are not as wanted (an element deleted too): adding the
/// chains would put a wrong policy in force, so the in-place form refills the sets with them.
#[test]
fn a_table_without_its_chains_and_with_a_set_changed_is_refilled() {
    root_or_skip!();
    ns("unchained-changed").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        let table = small_table(100);
        nft::replace_table(&mut sock, &table).unwrap();
        delete_chains(&table, |_| true);
        nft_cmd(&format!(
            "delete element inet {TABLE} nonmasq-v4 {{ 11.0.0.0/24 }}"
        ));
        let report = nft::replace_table(&mut sock, &table).unwrap();
        assert_eq!(
            (report.form, report.transactions),
            (ReplaceForm::InPlace, 1),
            "{report:?}"
        );
        assert!(report.sent > 0, "{report:?}");
        let live = sock.read_table(TABLE).unwrap().unwrap();
        assert_eq!(live.sets, table.sets);
        assert!(live.same_policy(&table), "{live}");
    });
}

/// A model of the live table lost (someone committed while the agent was not following,
/// as when its own commit raced theirs) is rebuilt by one read: the next commit sends the
/// difference to what is live. A rule someone inserted is removed with the chain refilled
/// and no element sent, and an element they deleted comes back alone, where the full form
/// sent every element again. A handover table left behind is still removed by a full form.
#[test]
fn a_table_changed_while_not_followed_gets_the_difference_from_one_read() {
    root_or_skip!();
    ns("unfollowed").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        let table = small_table(100);
        nft::replace_table(&mut sock, &table).unwrap();
        // Not followed: the socket is never told (the daemon would have been out of the
        // notification group), so its model is at a generation the ruleset has left.
        nft_cmd(&format!("insert rule inet {TABLE} postrouting accept"));
        nft_cmd(&format!(
            "delete element inet {TABLE} nonmasq-v4 {{ 11.0.0.0/24 }}"
        ));
        let generation = sock.generation().unwrap();
        assert_ne!(sock.known_generation(), Some(generation));
        let report = nft::replace_table(&mut sock, &table).unwrap();
        assert_eq!(
            (report.form, report.transactions, report.sent),
            (ReplaceForm::Delta, 1, 2),
            "{report:?}"
        );
        let live = sock.read_table(TABLE).unwrap().unwrap();
        assert_eq!(live, table, "{live}");
        assert_eq!(sock.known_generation(), Some(sock.generation().unwrap()));

        nft_cmd(&format!("add table inet {HANDOVER}"));
        nft_cmd(&format!("insert rule inet {TABLE} postrouting accept"));
        let report = nft::replace_table(&mut sock, &table).unwrap();
        assert_ne!(report.form, ReplaceForm::Delta, "{report:?}");
        assert!(sock.table_info(HANDOVER).unwrap().is_none());
        assert_eq!(sock.read_table(TABLE).unwrap().unwrap(), table);
    });
}

/// A creation whose first attempt someone cut short (a commit after its read refused its
/// batch) ends with the table known at the generation its last attempt made: every batch of
/// that attempt was conditioned on the one before, so nothing else can have committed in
/// between, and the daemon need not read the table again (a full read and, before, a refill
/// of every element after each creation under a tamper storm).
#[test]
fn a_creation_cut_short_by_a_commit_ends_known() {
    root_or_skip!();
    ns("proven").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        let table = small_table(1_000);
        let report = replace_with_commit_after_first_read(
            &mut sock,
            &table,
            &["add table inet nma-someone-else"],
        );
        assert_eq!(report.form, ReplaceForm::Create, "{report:?}");
        assert_eq!(sock.known_generation(), Some(sock.generation().unwrap()));
        assert_eq!(sock.read_table(TABLE).unwrap().unwrap(), table);
        // Known, so the next commit of the same table sends nothing.
        let again = nft::replace_table(&mut sock, &table).unwrap();
        assert_eq!((again.transactions, again.sent), (0, 0), "{again:?}");
    });
}

/// Flushes, then deletes, the chains of `table` that `which` picks, in reverse order of the
/// table's (a chain jumped to cannot go while a rule still jumps to it).
fn delete_chains(table: &model::Table, which: impl Fn(&model::Chain) -> bool) {
    for chain in table.chains.iter().rev().filter(|c| which(c)) {
        nft_cmd(&format!("flush chain inet {TABLE} {}", chain.name));
    }
    for chain in table.chains.iter().rev().filter(|c| which(c)) {
        nft_cmd(&format!("delete chain inet {TABLE} {}", chain.name));
    }
}
