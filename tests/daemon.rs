//! The live daemon in network namespaces: config changes through a ConfigMap-style volume,
//! bad configs, self-repair after tampering, table ownership, signals and metrics. Real
//! datagrams decide every behavioural check. Needs root.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Agent, Topology, require_root, run, wait_until};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(5);

/// A config directory laid out as kubelet writes a ConfigMap volume:
/// `ip-masq-agent -> ..data/ip-masq-agent`, `..data -> ..<timestamp>`.
struct ConfigMapDir {
    dir: PathBuf,
    generation: u32,
}

impl ConfigMapDir {
    fn new(dir: PathBuf, text: &str) -> ConfigMapDir {
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = ConfigMapDir { dir, generation: 0 };
        c.update(text);
        std::os::unix::fs::symlink("..data/ip-masq-agent", c.dir.join("ip-masq-agent")).unwrap();
        c
    }

    fn path(&self) -> PathBuf {
        self.dir.join("ip-masq-agent")
    }

    /// kubelet's atomic writer: new timestamped dir, `..data_tmp` symlink, rename over
    /// `..data`, remove the old dir.
    fn update(&mut self, text: &str) {
        self.generation += 1;
        let ts = format!("..2026_11_25_12_00_00.{:04}", self.generation);
        let new = self.dir.join(&ts);
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("ip-masq-agent"), text).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&ts, &tmp).unwrap();
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

/// GET a path of the agent's HTTP endpoint (127.0.0.1:9983 in the node namespace).
fn http_get(t: &Topology, path: &str) -> (u16, String) {
    let text = t.node.enter(|| {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9983").expect("connect to agent");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// The value of one metric line (`name{labels} value`).
fn metric(t: &Topology, series: &str) -> f64 {
    let (status, body) = http_get(t, "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn wait_masq(t: &Topology, dst: &str, want: bool) {
    assert!(
        wait_until(T, || t.masqueraded(dst) == want),
        "{dst}: expected masqueraded={want} within {T:?}"
    );
}

fn start(t: &Topology, config: &Path, args: &[&str]) -> Agent {
    let mut full = vec!["--config", config.to_str().unwrap()];
    full.extend_from_slice(args);
    let a = t.spawn_agent(&full);
    assert!(
        a.wait_log("committed table inet nft-masq-agent", T),
        "agent did not commit:\n{}",
        a.log()
    );
    a
}

/// `counter packets N bytes M` becomes `counter`.
fn strip_counters(line: &str) -> String {
    const C: &str = "counter packets ";
    match line.find(C) {
        None => line.to_string(),
        Some(i) => {
            // After the marker: N, "bytes", M, and the rest of the rule.
            let tail = line[i + C.len()..].splitn(4, ' ').nth(3).unwrap_or("");
            format!("{}counter {tail}", &line[..i])
        }
    }
}

/// `nft list table` of the agent's table with counter values blanked.
fn listing(t: &Topology) -> Option<String> {
    t.nft_table()
        .map(|s| s.lines().map(strip_counters).collect::<Vec<_>>().join("\n"))
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let a: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let b: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (a, b) >= (major, minor)
}

#[test]
fn configmap_swap_and_bad_updates() {
    if !require_root() {
        return;
    }
    let t = Topology::new("cmswap");
    let mut cm = ConfigMapDir::new(t.dir.join("config"), "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    let agent = start(&t, &cm.path(), &["--table-owner", "off"]);
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
    assert!(wait_until(T, || metric(
        &t,
        "nft_masq_agent_config_errors_total"
    ) >= 1.0));
    assert_eq!(metric(&t, "nft_masq_agent_config_valid"), 0.0);
    let (status, _) = http_get(&t, "/readyz");
    assert_eq!(
        status, 200,
        "the last good config is in force, so still ready"
    );

    // The next good version is applied as soon as it appears.
    cm.update("nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\n");
    wait_masq(&t, "192.168.0.5", false);
    t.expect(&["11.22.33.44"], &["10.20.0.5", "10.11.0.5"]);
    let mut agent = agent;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "agent must still run"
    );
}

#[test]
fn deleted_config_brings_back_the_defaults() {
    if !require_root() {
        return;
    }
    let t = Topology::new("cmdel");
    let cfg = t.config("ip-masq-agent", "nonMasqueradeCIDRs: [11.0.0.0/8]\n");
    let _agent = start(&t, &cfg, &[]);
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
    if !require_root() {
        return;
    }
    let t = Topology::new("cmlate");
    let dir = t.dir.join("not-yet/config");
    let agent = start(&t, &dir.join("ip-masq-agent"), &[]);
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
    let before = agent.count("committed table");
    agent.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(agent.count("committed table"), before);
}

#[test]
fn bad_config_at_start_means_defaults_and_a_loud_error() {
    if !require_root() {
        return;
    }
    let t = Topology::new("badstart");
    let cfg = t.config("ip-masq-agent", "nonMasqueradeCIDRs: [11.0.0.0/88]\n");
    let agent = start(&t, &cfg, &[]);
    assert!(
        agent.log().contains("STARTING WITH THE DEFAULT CONFIG"),
        "{}",
        agent.log()
    );
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);
    // Egress works with the defaults, but the agent is not ready: no good config yet.
    let (status, body) = http_get(&t, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("config file is invalid"), "{body}");
    std::fs::write(&cfg, "nonMasqueradeCIDRs: [11.0.0.0/8]\n").unwrap();
    wait_masq(&t, "11.22.33.44", false);
    assert!(wait_until(T, || http_get(&t, "/readyz").0 == 200));
}

/// The agent's commit count once no commit line has come for 300 ms. A commit's log line
/// is written after the kernel applied it, so a listing or a probe can see the commit before
/// its line (it did in a slow guest).
fn settled_commits(agent: &Agent) -> usize {
    let count = || agent.count("committed table");
    let mut last = count();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
}

#[test]
fn tampering_is_repaired_and_other_tables_are_untouched() {
    if !require_root() {
        return;
    }
    let t = Topology::new("tamper");
    let foreign = "table ip other {\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 192.0.2.1 }\n\t}\n\n\
                   \tchain c {\n\t\ttype filter hook output priority 0; policy accept;\n\t\tip daddr @s counter\n\t}\n}\n";
    assert!(t.node.nft_stdin(&["-f", "-"], foreign).status.success());
    let other_before = t.node.nft(&["list", "table", "ip", "other"]);
    let agent = start(&t, &t.dir.join("absent"), &["--table-owner", "off"]);
    let good = listing(&t).unwrap();
    let repaired = |what: &str| {
        assert!(
            wait_until(T, || listing(&t).as_deref() == Some(good.as_str())),
            "not repaired after {what}:\n{}\nlog:\n{}",
            listing(&t).unwrap_or_default(),
            agent.log()
        );
    };

    // Delete one rule: the non-masquerade lookup.
    let handles = t.node.nft(&[
        "-a",
        "list",
        "chain",
        "inet",
        "nft-masq-agent",
        "postrouting",
    ]);
    let h = handles
        .lines()
        .find(|l| l.contains("@nonmasq-v4"))
        .and_then(|l| l.rsplit("handle ").next())
        .unwrap()
        .trim()
        .to_string();
    t.node.nft(&[
        "delete",
        "rule",
        "inet",
        "nft-masq-agent",
        "postrouting",
        "handle",
        &h,
    ]);
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
    let commits = settled_commits(&agent);
    t.node.nft(&["add", "table", "ip", "unrelated"]);
    t.node.nft(&["delete", "table", "ip", "unrelated"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(agent.count("committed table"), commits, "{}", agent.log());
    assert_eq!(t.node.nft(&["list", "table", "ip", "other"]), other_before);

    // Flush everything (this removes `other` too: that is the flusher's doing).
    t.node.nft(&["flush", "ruleset"]);
    repaired("flush ruleset");
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);

    assert!(
        wait_until(T, || metric(&t, "nft_masq_agent_drift_repairs_total")
            >= 6.0),
        "{}",
        http_get(&t, "/metrics").1
    );
    assert!(metric(&t, "nft_masq_agent_commits_total{reason=\"drift\"}") >= 6.0);
    // Every probe above that was masqueraded went through the counted rule.
    assert!(metric(&t, "nft_masq_agent_masqueraded_packets_total") >= 1.0);
    let (status, body) = http_get(&t, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[test]
fn sigterm_exits_0_and_leaves_the_table() {
    if !require_root() {
        return;
    }
    let t = Topology::new("sigterm");
    let mut agent = start(&t, &t.dir.join("absent"), &[]);
    agent.signal(Signal::SIGTERM);
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(agent.log().contains("stays in force"));
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);
    // With `auto` the table is owned only where it also persists, so it always survives.
    assert!(t.nft_table().is_some());
}

#[test]
fn table_owner_auto_picks_the_mode_for_this_kernel() {
    if !require_root() {
        return;
    }
    let t = Topology::new("ownerauto");
    let _agent = start(&t, &t.dir.join("absent"), &["--table-owner", "auto"]);
    let want = if kernel_at_least(6, 9) {
        "owner-persist"
    } else {
        "off"
    };
    assert_eq!(
        metric(
            &t,
            &format!("nft_masq_agent_table_owner{{mode=\"{want}\"}}")
        ),
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
    if !require_root() {
        return;
    }
    if !kernel_at_least(6, 9) {
        eprintln!("kernel before 6.9: no persist flag; ownership persistence not applicable");
        return;
    }
    let t = Topology::new("owner");
    let mut agent = start(&t, &t.dir.join("absent"), &["--table-owner", "on"]);
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
    let _ = agent.child.wait();
    t.expect(&["11.22.33.44"], &["10.20.0.5"]);
    assert!(t.nft_table().is_some());

    // The next agent adopts it, with a different config.
    let cfg = t.config("c", "nonMasqueradeCIDRs: [10.0.0.0/8, 11.0.0.0/8]\n");
    let agent2 = start(&t, &cfg, &["--table-owner", "on"]);
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
