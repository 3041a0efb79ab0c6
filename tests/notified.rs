//! The live table followed through notifications (issue 19), against the kernel this runs
//! on: a foreign change to a large table is repaired by sending back only what was changed,
//! timed from the notifications (the tamperer's transaction, then ours); a new process
//! starts from the table it finds, sending nothing when it is already the wanted one.
//!
//! Every test runs the real binary in network namespaces it creates. Needs root.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nft_masq_agent::config::PolicyFlags;
use nft_masq_agent::model::{self, TableFlags};
use nma_testkit::configs::hosts_config;
use nma_testkit::events::Generations;
use nma_testkit::{Agent, Topology, heavy, root_or_skip, run, wait_until};

/// Generous bound for what is not the claim (start-up on a loaded machine).
fn patience() -> Duration {
    Duration::from_secs(60) * nma_testkit::slack()
}

/// The table size: 50,000 prefixes on the host, fewer in an emulated guest (the VM suite),
/// where a 50,000-prefix commit takes minutes.
fn size() -> usize {
    if nma_testkit::env::emulated() {
        5_000
    } else {
        50_000
    }
}

const FLAGS: &[&str] = &["--table-owner", "off"];

/// Spawns the daemon with `config` (its first commit is not waited for: a restart that
/// finds its table in force makes none).
fn spawn(t: &Topology, config: &std::path::Path) -> Agent {
    t.agent_builder().config(config).args(FLAGS).spawn()
}

/// The agent's table for `text` at `flags`, as the library computes it, and the name of its
/// set that holds `prefix` (the exemptions may be cut into block sets).
fn set_holding(text: &str, flags: &PolicyFlags, prefix: &str) -> (model::Table, String) {
    let parsed =
        nft_masq_agent::config::parse(text.as_bytes(), std::path::Path::new("/test"), flags)
            .unwrap();
    let table = model::desired(&parsed.config, flags, TableFlags::default());
    let name = table
        .sets
        .iter()
        .find(|s| s.prefixes.iter().any(|p| p.to_string() == prefix))
        .unwrap_or_else(|| panic!("no set holds {prefix}"))
        .name
        .clone();
    (table, name)
}

/// The ends of transactions (NEWGENs) in the node namespace, each timed as it arrives by a
/// thread that does nothing else.
struct Watch {
    times: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(t: &Topology) -> Watch {
        let gens = t.node.enter(Generations::open).unwrap();
        let times = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tt, st) = (times.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Some(at) = gens.next(Duration::from_millis(20)) {
                    tt.lock().unwrap().push(at);
                }
            }
        });
        Watch {
            times,
            stop,
            thread: Some(thread),
        }
    }

    fn clear(&self) {
        self.times.lock().unwrap().clear();
    }

    /// The first `n` transactions' ends since the last clear, waiting for them.
    fn first(&self, n: usize) -> Option<Vec<Instant>> {
        wait_until(patience(), || self.times.lock().unwrap().len() >= n)
            .then(|| self.times.lock().unwrap()[..n].to_vec())
    }

    fn count(&self) -> usize {
        self.times.lock().unwrap().len()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A repair, timed from the tamperer's transaction to ours.
struct Timed {
    /// The tamperer's NEWGEN to ours.
    repair: Duration,
    /// Elements the repair sent.
    sent: u64,
    /// The commit's form.
    form: String,
}

/// Runs `nft args` in the node namespace and times the agent's repair.
fn tamper_and_time(t: &Topology, agent: &Agent, watch: &Watch, args: &[&str]) -> Timed {
    let commits = agent.settled_commits();
    watch.clear();
    run(t.node.cmd("nft").args(args));
    let ends = watch
        .first(2)
        .unwrap_or_else(|| panic!("no repair after nft {args:?}:\n{}", agent.log()));
    assert!(
        agent.wait_commits(commits + 1, patience()).is_some(),
        "{}",
        agent.log()
    );
    let c = agent.commits().pop().unwrap();
    Timed {
        repair: ends[1] - ends[0],
        sent: c.sent.unwrap_or(u64::MAX),
        form: c.form.unwrap_or_default(),
    }
}

#[test]
fn each_foreign_change_is_repaired_by_sending_back_what_was_changed() {
    root_or_skip!();
    let _heavy = heavy();
    let n = size();
    let t = Topology::new("notified");
    let text = hosts_config(n, &["10.20.0.0/16"]);
    let cfg = t.config("ip-masq-agent", &text);
    // Past --max-set-prefixes the exemptions are cut into block sets: the changes below
    // go to the set that holds the first host, a full block.
    let (want, set) = set_holding(&text, &PolicyFlags::default(), "30.0.0.0/32");
    let block = want
        .sets
        .iter()
        .find(|s| s.name == set)
        .unwrap()
        .prefixes
        .len();
    let agent = spawn(&t, &cfg);
    assert!(
        agent.wait_commits(1, patience()).is_some(),
        "{}",
        agent.log()
    );
    let good = t.listing().unwrap();
    let watch = Watch::start(&t);
    let repaired = |what: &str| {
        assert!(
            wait_until(patience(), || t.listing().as_deref() == Some(good.as_str())),
            "not repaired after {what}:\n{}",
            agent.log()
        );
    };

    let element = tamper_and_time(
        &t,
        &agent,
        &watch,
        &[
            "delete",
            "element",
            "inet",
            "nft-masq-agent",
            &set,
            "{ 30.0.0.0 }",
        ],
    );
    repaired("element delete");
    t.host("30.0.0.0");
    t.expect(&["11.22.33.44"], &["10.20.0.5", "30.0.0.0"]);
    assert_eq!(
        (element.form.as_str(), element.sent),
        ("difference", 2),
        "the deleted interval alone is sent back"
    );

    let rule = tamper_and_time(
        &t,
        &agent,
        &watch,
        &["flush", "chain", "inet", "nft-masq-agent", "postrouting"],
    );
    repaired("rule delete");
    assert_eq!(
        (rule.form.as_str(), rule.sent),
        ("difference", 0),
        "rules only"
    );

    let flush = tamper_and_time(
        &t,
        &agent,
        &watch,
        &["flush", "set", "inet", "nft-masq-agent", &set],
    );
    repaired("set flush");
    // The flushed set's elements come back, and no other set's.
    assert!(
        (2 * block as u64..=2 * block as u64 + 1).contains(&flush.sent),
        "{} {} for a set of {block} prefixes",
        flush.form,
        flush.sent
    );

    let table = tamper_and_time(
        &t,
        &agent,
        &watch,
        &["delete", "table", "inet", "nft-masq-agent"],
    );
    repaired("table delete");
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);

    println!(
        "repair at {n} prefixes, tamperer's transaction -> ours: element deleted {:.1} ms, \
         chain flushed {:.1} ms, set flushed {:.1} ms ({}, {} elements sent), table deleted \
         {:.1} ms ({})",
        element.repair.as_secs_f64() * 1e3,
        rule.repair.as_secs_f64() * 1e3,
        flush.repair.as_secs_f64() * 1e3,
        flush.form,
        flush.sent,
        table.repair.as_secs_f64() * 1e3,
        table.form,
    );
}

#[test]
fn a_new_process_commits_only_the_difference_to_the_table_it_finds() {
    root_or_skip!();
    let _heavy = heavy();
    let n = size() / 5;
    let t = Topology::new("restart");
    let cfg = t.config("ip-masq-agent", &hosts_config(n, &["10.20.0.0/16"]));
    let first = spawn(&t, &cfg);
    assert!(
        first.wait_commits(1, patience()).is_some(),
        "{}",
        first.log()
    );
    assert!(first.stop().success());
    let good = t.listing().unwrap();
    let watch = Watch::start(&t);

    // The same config: the table is read, nothing is sent, the generation does not move.
    let again = spawn(&t, &cfg);
    assert!(
        again.wait_log("already as wanted", patience()),
        "{}",
        again.log()
    );
    assert!(
        wait_until(patience(), || t.get("/readyz").status == 200),
        "{}",
        again.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(watch.count(), 0, "no transaction at all:\n{}", again.log());
    assert_eq!(t.listing().as_deref(), Some(good.as_str()));
    assert!(again.stop().success());

    // One CIDR added while no agent ran: two elements sent, logged against the live table.
    std::fs::write(&cfg, hosts_config(n, &["10.20.0.0/16", "10.11.0.0/16"])).unwrap();
    let changed = spawn(&t, &cfg);
    assert!(
        changed.wait_commits(1, patience()).is_some(),
        "{}",
        changed.log()
    );
    let c = changed.commits().pop().unwrap();
    assert_eq!(
        (c.form.as_deref(), c.sent, c.added, c.removed),
        (Some("difference"), Some(2), Some(1), Some(0)),
        "{}",
        c.message
    );
    assert!(c.message.contains("10.11.0.0/16"), "{}", c.message);
    t.expect(&["11.22.33.44"], &["10.20.0.5", "10.11.0.5"]);
}

#[test]
fn once_with_the_config_in_force_makes_no_transaction() {
    root_or_skip!();
    let _heavy = heavy();
    let t = Topology::new("onceagain");
    let cfg = t.config(
        "ip-masq-agent",
        &hosts_config(size() / 5, &["10.20.0.0/16"]),
    );
    let once = || {
        let out = run(t
            .agent()
            .args(["--once", "--table-owner", "off", "--config"])
            .arg(&cfg));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    once();
    let good = t.listing().unwrap();
    let watch = Watch::start(&t);
    let log = once();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(watch.count(), 0, "no transaction:\n{log}");
    assert!(
        log.contains("sent=0") || log.contains("\"sent\":0"),
        "{log}"
    );
    assert_eq!(t.listing().as_deref(), Some(good.as_str()));
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);
}

/// Past `--max-set-prefixes` the exemptions are cut into sets by address block (so the
/// full read stays linear): each block's destinations are left alone and the others
/// masqueraded; a flushed block set is refilled alone, by difference; a config back under
/// the cap returns to one set, the policy in force throughout.
#[test]
fn a_table_cut_into_block_sets_keeps_the_policy_and_repairs_one_block() {
    root_or_skip!();
    let _heavy = heavy();
    let n = 5_000;
    let t = Topology::new("blocks");
    let text = hosts_config(n, &["10.20.0.0/16"]);
    let cfg = t.config("ip-masq-agent", &text);
    let agent = t
        .agent_builder()
        .config(&cfg)
        .args(FLAGS)
        .args(["--max-set-prefixes", "1024"])
        .spawn();
    assert!(
        agent.wait_commits(1, patience()).is_some(),
        "{}",
        agent.log()
    );
    // The same cut, computed by the library from the same config.
    let flags = PolicyFlags {
        max_set_prefixes: 1024,
        ..PolicyFlags::default()
    };
    let (want, first_set) = set_holding(&text, &flags, "30.0.0.0/32");
    let good = t.listing().unwrap();
    let sets: Vec<&str> = good
        .lines()
        .filter_map(|l| l.trim().strip_prefix("set "))
        .filter_map(|l| l.strip_suffix(" {"))
        .collect();
    // The block sets, then the set of the blocks themselves.
    let (blocks, plain) = sets.split_at(sets.len() - 1);
    assert_eq!(plain, ["nonmasq-blocks-v4"], "{good}");
    assert!(blocks.len() >= 5, "{good}");
    assert!(
        blocks.iter().all(|b| b.starts_with("nonmasq-v4-")),
        "{good}"
    );
    let names: Vec<&str> = want.sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(sets, names);
    // Each block's chain, and the translation's.
    for block in blocks {
        assert!(good.contains(&format!("chain {block} {{")), "{good}");
    }
    assert!(good.contains("chain translate {"), "{good}");

    let last = Ipv4Addr::from(u32::from(Ipv4Addr::new(30, 0, 0, 0)) + 2 * (n as u32 - 1));
    let (first, last) = ("30.0.0.0".to_string(), last.to_string());
    for a in ["30.0.0.1", first.as_str(), last.as_str()] {
        t.host(a);
    }
    t.expect(
        &["11.22.33.44", "30.0.0.1"],
        &["10.20.0.5", first.as_str(), last.as_str()],
    );

    // Flush the block set holding the first host: only that block is sent back.
    let set = want.sets.iter().find(|s| s.name == first_set).unwrap();
    let watch = Watch::start(&t);
    let flush = tamper_and_time(
        &t,
        &agent,
        &watch,
        &["flush", "set", "inet", "nft-masq-agent", &set.name],
    );
    assert!(
        wait_until(patience(), || t.listing().as_deref() == Some(good.as_str())),
        "not repaired:\n{}",
        agent.log()
    );
    // Each prefix is a start and an end element; a set that does not start at 0 also
    // holds the end element that closes the gap below its first interval.
    let elements = 2 * set.prefixes.len() as u64;
    assert_eq!(flush.form, "difference");
    assert!(
        (elements..=elements + 1).contains(&flush.sent),
        "the flushed block alone is sent back: {} elements for {} prefixes",
        flush.sent,
        set.prefixes.len()
    );
    t.expect(&["30.0.0.1"], &[first.as_str(), last.as_str()]);

    // Flush the map that sends each destination to its block's chain: its jumps alone come
    // back (one start and one end per block, and the leading end), by difference.
    assert!(good.contains("map nonmasq-dispatch-v4 {"), "{good}");
    let map = tamper_and_time(
        &t,
        &agent,
        &watch,
        &[
            "flush",
            "map",
            "inet",
            "nft-masq-agent",
            "nonmasq-dispatch-v4",
        ],
    );
    assert!(
        wait_until(patience(), || t.listing().as_deref() == Some(good.as_str())),
        "not repaired:\n{}",
        agent.log()
    );
    assert_eq!(map.form, "difference", "{}", agent.log());
    assert!(
        map.sent <= 2 * blocks.len() as u64 + 1,
        "the map alone is sent back: {} elements for {} blocks",
        map.sent,
        blocks.len()
    );
    t.expect(&["30.0.0.1"], &[first.as_str(), last.as_str()]);
    drop(watch);

    // Back under the cap: one set again, the policy kept.
    std::fs::write(&cfg, hosts_config(500, &["10.20.0.0/16"])).unwrap();
    assert!(
        wait_until(patience(), || t
            .listing()
            .is_some_and(|l| l.contains("set nonmasq-v4 {"))),
        "{}",
        agent.log()
    );
    let one = t.listing().unwrap();
    assert!(!one.contains("nonmasq-v4-"), "{one}");
    assert!(!one.contains("vmap"), "{one}");
    // Sent as a reshape: the plain set added, the base chain switched to it, the blocks
    // removed, with no full replacement of the table.
    let reshaped = agent.commits().last().cloned().unwrap();
    assert_eq!(reshaped.form.as_deref(), Some("reshape"), "{}", agent.log());
    t.expect(
        &["11.22.33.44", last.as_str()],
        &["10.20.0.5", first.as_str()],
    );
    println!(
        "block sets: {} sets for {n} prefixes; a flushed block ({} prefixes) repaired in \
         {:.1} ms ({} elements sent)",
        blocks.len(),
        set.prefixes.len(),
        flush.repair.as_secs_f64() * 1e3,
        flush.sent
    );
}

/// The fail-safe behind the block map: when the map dispatches nothing (a kernel
/// deactivating its elements while a transaction deletes the table, or its elements
/// deleted with no agent to repair them), a destination inside a block leaves untranslated,
/// exempt or not, and no exempt destination is ever masqueraded; one outside every block is
/// still translated.
#[test]
fn without_its_map_a_cut_table_masquerades_no_exempt_destination() {
    root_or_skip!();
    let _heavy = heavy();
    let n = 5_000;
    let t = Topology::new("nomap");
    let cfg = t.config("ip-masq-agent", &hosts_config(n, &["10.20.0.0/16"]));
    let agent = t.agent_builder().config(&cfg).args(FLAGS).spawn();
    assert!(
        agent.wait_commits(1, patience()).is_some(),
        "{}",
        agent.log()
    );
    // 64.0.0.1 lies in no block (the blocks here: 0.0.0.0/4, 30.0.0.0/21 and its
    // neighbours, 128.0.0.0/1 for link-local); 11.22.33.44 lies in 0.0.0.0/4, not exempt.
    for a in ["30.0.0.0", "30.0.0.1", "64.0.0.1"] {
        t.host(a);
    }
    t.expect(
        &["11.22.33.44", "30.0.0.1", "64.0.0.1"],
        &["10.20.0.5", "30.0.0.0"],
    );
    // No agent from here on (the table stays: --table-owner off).
    drop(agent);
    t.node.nft(&[
        "flush",
        "map",
        "inet",
        "nft-masq-agent",
        "nonmasq-dispatch-v4",
    ]);
    assert!(
        !t.listing().unwrap().contains(" : jump "),
        "the map still dispatches"
    );
    // 11.22.33.44 and 30.0.0.1 are in blocks but not exempt: untranslated too, for as long
    // as the map is empty (the price of never masquerading the exempt 30.0.0.0).
    t.expect(
        &["64.0.0.1"],
        &["10.20.0.5", "30.0.0.0", "30.0.0.1", "11.22.33.44"],
    );
}

/// Reading a config takes as long as the file is large (about 300 ms at 140,000 prefixes
/// here). The daemon reads it apart from the loop (`daemon/reader.rs`): a rule someone
/// inserts into our table while the read runs is repaired at once, by a commit of its own,
/// before the new config is committed. While the loop read the file itself, the repair came
/// only with the new config's commit, after the read.
#[test]
fn a_foreign_change_during_a_config_read_is_repaired_before_the_read_ends() {
    root_or_skip!();
    let _heavy = heavy();
    // In an emulated guest (a sixth of the host's speed) a smaller file reads as long.
    let n = if nma_testkit::env::emulated() {
        30_000
    } else {
        140_000
    };
    let t = Topology::new("readapart");
    let mut cm = nma_testkit::ConfigMap::new(t.dir.join("config"), &hosts_config(n, &[]));
    let agent = spawn(&t, &cm.path());
    assert!(
        agent.wait_commits(1, patience()).is_some(),
        "{}",
        agent.log()
    );
    let commits = agent.settled_commits();

    // The new config (one more exempt range), then a foreign rule while it is read.
    let swapped = cm.update(&hosts_config(n, &["10.30.0.0/16"]));
    std::thread::sleep(Duration::from_millis(30));
    let inserted_at = Instant::now();
    run(t.node.cmd("nft").args([
        "insert",
        "rule",
        "inet",
        "nft-masq-agent",
        "postrouting",
        "accept",
    ]));
    let inserted = inserted_at.elapsed();
    assert!(
        agent.wait_commits(commits + 2, patience()).is_some(),
        "a repair and the new config's commit:\n{}",
        agent.log()
    );
    let read_ms = swapped.elapsed().as_secs_f64() * 1e3;
    let new: Vec<_> = agent.commits().into_iter().skip(commits).collect();
    let reasons: Vec<_> = new
        .iter()
        .map(|c| c.reason.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        reasons[..2],
        ["drift", "config"],
        "the inserted rule is repaired by itself, before the config that was being read \
         (nft took {inserted:?}; swap to both commits {read_ms:.0} ms):\n{}",
        agent.log()
    );
    assert_eq!(new[0].sent, Some(0), "the repair sends no element");
    // The policy of the new config, and no accept of ours left in front of it.
    t.host("10.30.0.5");
    t.expect(&["11.22.33.44"], &["10.30.0.5"]);
    let listing = t.listing().unwrap();
    assert!(
        !listing.contains("\t\taccept\n"),
        "the foreign accept is gone:\n{listing}"
    );
    println!(
        "config read apart at {n} prefixes: rule inserted {:.0} ms after the swap, repaired \
         in a commit of its own; both commits {read_ms:.0} ms after the swap",
        (inserted_at - swapped).as_secs_f64() * 1e3,
    );
}
