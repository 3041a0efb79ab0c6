//! The live daemon in network namespaces: config changes through a ConfigMap-style volume,
//! bad configs, self-repair after tampering, table ownership, signals and metrics. Real
//! datagrams decide every behavioural check. Needs root.

use std::time::Duration;

use nix::sys::signal::Signal;
use nma_testkit::{ConfigMap, Topology, kernel_at_least, root_or_skip, run, wait_until};

const T: Duration = Duration::from_secs(5);

fn wait_masq(t: &Topology, dst: &str, want: bool) {
    assert!(
        wait_until(T, || t.masqueraded(dst) == want),
        "{dst}: expected masqueraded={want} within {T:?}"
    );
}

#[test]
fn configmap_swap_and_bad_updates() {
    root_or_skip!();
    let t = Topology::new("cmswap");
    let mut cm = ConfigMap::new(t.dir.join("config"), "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    let mut agent = t.start(&cm.path(), &["--table-owner", "off"]);
    t.expect(&["192.168.0.5", "11.22.33.44"], &["10.20.0.5"]);

    // A ConfigMap update: the VPN range inside 10/8 becomes masqueraded.
    cm.update("nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [10.20.0.0/16]\n");
    wait_masq(&t, "10.20.0.5", true);
    t.expect(&["192.168.0.5"], &["10.11.0.5"]);

    // An invalid update changes nothing and the agent lives on, saying what is wrong.
    cm.update("nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDR: [10.11.0.0/16]\n");
    assert!(
        agent.wait_log("masqueradeCIDR = [\"10.11.0.0/16\"]: unknown key", T),
        "{}",
        agent.log()
    );
    assert!(agent.log().contains(&cm.path().display().to_string()));
    t.expect(&["10.20.0.5", "192.168.0.5"], &["10.11.0.5"]);
    assert!(wait_until(T, || t
        .metric("nft_masq_agent_config_errors_total")
        >= 1.0));
    assert_eq!(t.metric("nft_masq_agent_config_valid"), 0.0);
    assert_eq!(
        t.get("/readyz").status,
        200,
        "the last good config is in force, so still ready"
    );

    // The next good version is applied as soon as it appears.
    cm.update("nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\n");
    wait_masq(&t, "192.168.0.5", false);
    t.expect(&["11.22.33.44"], &["10.20.0.5", "10.11.0.5"]);
    assert!(agent.running(), "agent must still run");
}

#[test]
fn deleted_config_brings_back_the_defaults() {
    root_or_skip!();
    let t = Topology::new("cmdel");
    let cfg = t.config("ip-masq-agent", "nonMasqueradeCIDRs: [11.0.0.0/8]\n");
    let _agent = t.start(&cfg, &[]);
    t.expect(&["10.20.0.5"], &["11.22.33.44"]);
    std::fs::remove_file(&cfg).unwrap();
    wait_masq(&t, "10.20.0.5", false);
    t.expect(&["11.22.33.44"], &["192.168.0.5"]);
    // A plain in-place rewrite is seen too.
    std::fs::write(&cfg, "nonMasqueradeCIDRs: [192.168.0.0/16]\n").unwrap();
    wait_masq(&t, "10.20.0.5", true);
}

#[test]
fn config_directory_created_after_start_is_picked_up() {
    root_or_skip!();
    let t = Topology::new("cmlate");
    let dir = t.dir.join("not-yet/config");
    let agent = t.start(&dir.join("ip-masq-agent"), &[]);
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ip-masq-agent"),
        "nonMasqueradeCIDRs: [11.0.0.0/8]\n",
    )
    .unwrap();
    wait_masq(&t, "11.22.33.44", false);
    t.expect(&["10.20.0.5"], &[]);
    // The commit's log line comes after the kernel applied it, so a probe can see the new
    // table before the line is written (it did in a slow guest): count after it.
    assert!(agent.wait_log("+11.0.0.0/8", T), "{}", agent.log());
    // SIGHUP re-reads the file too (here: nothing changed, nothing committed).
    let before = agent.commit_count();
    agent.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(agent.commit_count(), before);
}

#[test]
fn bad_config_at_start_means_defaults_and_a_loud_error() {
    root_or_skip!();
    let t = Topology::new("badstart");
    let cfg = t.config("ip-masq-agent", "nonMasqueradeCIDRs: [11.0.0.0/88]\n");
    let agent = t.start(&cfg, &[]);
    assert!(
        agent.log().contains("STARTING WITH THE DEFAULT CONFIG"),
        "{}",
        agent.log()
    );
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);
    // Egress works with the defaults, but the agent is not ready: no good config yet.
    let r = t.get("/readyz");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("config file is invalid"), "{}", r.body);
    std::fs::write(&cfg, "nonMasqueradeCIDRs: [11.0.0.0/8]\n").unwrap();
    wait_masq(&t, "11.22.33.44", false);
    assert!(wait_until(T, || t.get("/readyz").status == 200));
}

#[test]
fn tampering_is_repaired_and_other_tables_are_untouched() {
    root_or_skip!();
    let t = Topology::new("tamper");
    let foreign = "table ip other {\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 192.0.2.1 }\n\t}\n\n\
                   \tchain c {\n\t\ttype filter hook output priority 0; policy accept;\n\t\tip daddr @s counter\n\t}\n}\n";
    assert!(t.node.nft_stdin(&["-f", "-"], foreign).status.success());
    let other_before = t.node.nft(&["list", "table", "ip", "other"]);
    let agent = t.start(&t.dir.join("absent"), &["--table-owner", "off"]);
    let good = t.listing().unwrap();
    let repaired = |what: &str| {
        assert!(
            wait_until(T, || t.listing().as_deref() == Some(good.as_str())),
            "not repaired after {what}:\n{}\nlog:\n{}",
            t.listing().unwrap_or_default(),
            agent.log()
        );
    };

    // Delete one rule: the non-masquerade lookup.
    t.node
        .delete_rule("inet", "nft-masq-agent", "postrouting", "@nonmasq-v4");
    repaired("rule delete");
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);

    // Add a rule that would masquerade a non-masquerade destination.
    t.node.nft(&[
        "insert",
        "rule",
        "inet",
        "nft-masq-agent",
        "postrouting",
        "ip",
        "daddr",
        "10.20.0.5",
        "masquerade",
    ]);
    repaired("rule add");
    t.expect(&[], &["10.20.0.5"]);

    // Add an element that would exempt a destination.
    t.node.nft(&[
        "add",
        "element",
        "inet",
        "nft-masq-agent",
        "nonmasq-v4",
        "{ 11.22.33.0/24 }",
    ]);
    repaired("element add");
    t.expect(&["11.22.33.44"], &[]);

    // Change the chain's policy.
    t.node.nft(&[
        "add",
        "chain",
        "inet",
        "nft-masq-agent",
        "postrouting",
        "{ policy drop; }",
    ]);
    repaired("policy change");

    // Delete the whole table.
    t.node.nft(&["delete", "table", "inet", "nft-masq-agent"]);
    repaired("table delete");
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);

    // Changes to other tables cause no work.
    let commits = agent.settled_commits();
    t.node.nft(&["add", "table", "ip", "unrelated"]);
    t.node.nft(&["delete", "table", "ip", "unrelated"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(agent.commit_count(), commits, "{}", agent.log());
    assert_eq!(t.node.nft(&["list", "table", "ip", "other"]), other_before);

    // Flush everything (this removes `other` too: that is the flusher's doing).
    t.node.nft(&["flush", "ruleset"]);
    repaired("flush ruleset");
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);

    assert!(
        wait_until(T, || t.metric("nft_masq_agent_drift_repairs_total") >= 6.0),
        "{}",
        t.get("/metrics").body
    );
    assert!(t.metric("nft_masq_agent_commits_total{reason=\"drift\"}") >= 6.0);
    // Every probe above that was masqueraded went through the counted rule.
    assert!(t.metric("nft_masq_agent_masqueraded_packets_total") >= 1.0);
    let r = t.get("/healthz");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
}

#[test]
fn sigterm_exits_0_and_leaves_the_table() {
    root_or_skip!();
    let t = Topology::new("sigterm");
    let mut agent = t.start(&t.dir.join("absent"), &[]);
    agent.signal(Signal::SIGTERM);
    let status = agent.wait();
    assert!(status.success(), "{status}");
    assert!(agent.log().contains("stays in force"));
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);
    // With `auto` the table is owned only where it also persists, so it always survives.
    assert!(t.nft_table().is_some());
}

#[test]
fn table_owner_auto_picks_the_mode_for_this_kernel() {
    root_or_skip!();
    let t = Topology::new("ownerauto");
    let _agent = t.start(&t.dir.join("absent"), &["--table-owner", "auto"]);
    let want = if kernel_at_least(6, 9) {
        "owner-persist"
    } else {
        "off"
    };
    assert_eq!(
        t.metric(&format!("nft_masq_agent_table_owner{{mode=\"{want}\"}}")),
        1.0
    );
    let dump = String::from_utf8(run(t.agent().arg("--dump")).stdout).unwrap();
    if want == "owner-persist" {
        assert!(dump.contains("# flags owner,persist"), "{dump}");
    } else {
        assert!(!dump.contains("# flags"), "{dump}");
    }
}

#[test]
fn owned_table_survives_flush_and_kill_and_is_adopted() {
    root_or_skip!();
    if !kernel_at_least(6, 9) {
        eprintln!("kernel before 6.9: no persist flag; ownership persistence not applicable");
        return;
    }
    let t = Topology::new("owner");
    let agent = t.start(&t.dir.join("absent"), &["--table-owner", "on"]);
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);
    // Nobody else can change it: flush skips it, delete is refused.
    let before = t.nft_table().unwrap();
    t.node.nft(&["flush", "ruleset"]);
    assert_eq!(
        t.nft_table().as_deref(),
        Some(before.as_str()),
        "flush must skip an owned table"
    );
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);
    let del = t
        .node
        .cmd("nft")
        .args(["delete", "table", "inet", "nft-masq-agent"])
        .output()
        .unwrap();
    assert!(!del.status.success(), "deleting an owned table must fail");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!agent.log().contains("changed under us"), "{}", agent.log());

    // kill -9: the table outlives its owner.
    agent.signal(Signal::SIGKILL);
    drop(agent);
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);
    assert!(t.nft_table().is_some());

    // The next agent adopts it, with a different config.
    let cfg = t.config("c", "nonMasqueradeCIDRs: [10.0.0.0/8, 11.0.0.0/8]\n");
    let agent2 = t.start(&cfg, &["--table-owner", "on"]);
    assert!(!agent2.log().contains("ERROR"), "{}", agent2.log());
    t.expect(&["192.168.0.5"], &["11.22.33.44", "10.20.0.5"]);
    let del = t
        .node
        .cmd("nft")
        .args(["delete", "table", "inet", "nft-masq-agent"])
        .output()
        .unwrap();
    assert!(!del.status.success(), "the adopted table is owned again");
    // --cleanup cannot remove a table another live process owns: it says so.
    let out = t.agent().arg("--cleanup").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"));
}
