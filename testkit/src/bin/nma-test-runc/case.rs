//! One case: a rendered manifest under an engine's rules, in a node of the test kit, and
//! what it must show.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nma_testkit::events::Generations;
use nma_testkit::http::{http_get, split_url};
use nma_testkit::{ConfigMap, NODE4, POD4, Topology};
use serde_json::Value;

use crate::runc::{Runc, wait_timeout};
use crate::{Opts, inspect, say};

/// Config A of the ConfigMap, and config B that the swaps alternate with.
const CONFIG_A: &str = "nonMasqueradeCIDRs: [10.0.0.0/8]\n";
const CONFIG_B: &str =
    "nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\nmasqueradeCIDRs: [10.20.0.0/16]\n";

/// What a case must show.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Runs, commits, answers, follows swaps, exits 0 on SIGTERM.
    Ok,
    /// runc cannot exec the binary.
    Refused,
    /// The agent exits 1 naming the cause.
    Explained,
}

impl Want {
    fn as_str(self) -> &'static str {
        match self {
            Want::Ok => "ok",
            Want::Refused => "refused",
            Want::Explained => "explained",
        }
    }
}

/// One runc run of the image.
pub struct Case<'a> {
    /// Names the container, its namespaces and files.
    pub name: &'a str,
    /// Which rendered manifest (`--manifest NAME=FILE`).
    pub manifest: &'a str,
    /// `containerd` or `docker`: whose rules shape the capabilities.
    pub engine: &'a str,
    /// What it must show.
    pub want: Want,
    /// The UID the container's process must run as.
    pub uid: u32,
    /// ConfigMap swaps to time (0: none).
    pub swaps: usize,
    /// The image's root filesystem.
    pub rootfs: &'a Path,
}

/// Whether the node namespace holds our table.
fn table_present(t: &Topology) -> bool {
    t.node
        .cmd("nft")
        .args(["list", "tables"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("inet nft-masq-agent"))
}

/// One datagram from the pod to `dest`; `masq`: the remote must see the node's address,
/// else the pod's.
fn udp(t: &Topology, dest: &str, masq: bool) -> Result<()> {
    let dst: IpAddr = dest.parse()?;
    let from = t.probe(dst).map(|a| a.ip());
    println!(
        "    datagram pod {POD4} -> {dest:<11} arrived from {}",
        from.map_or("nothing".to_string(), |a| a.to_string())
    );
    if masq {
        ensure!(
            from == Some(NODE4.into()),
            "{dest} should be masqueraded to the node's address"
        );
    } else {
        ensure!(
            from == Some(POD4.into()),
            "{dest} should keep the pod's address"
        );
    }
    Ok(())
}

/// Indents every line of `text` by four spaces.
fn indented(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// A case's node, volume, bundle and log.
struct Run<'a> {
    case: &'a Case<'a>,
    /// The container's name (also its cgroup's and its namespaces' prefix).
    cname: String,
    t: Topology,
    cm: ConfigMap,
    bundle: PathBuf,
    log: PathBuf,
}

impl Run<'_> {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Our set as `nft` lists it in the node namespace (empty when absent).
    fn set(&self) -> String {
        self.t
            .node
            .cmd("nft")
            .args(["list", "set", "inet", "nft-masq-agent", "nonmasq-v4"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// Runs one case: a node of the test kit, the ConfigMap volume, the OCI spec from the
/// rendered manifest, then runc, and what the case must show.
pub fn run_case(o: &Opts, runc: &Runc, case: &Case) -> Result<()> {
    let name = case.name;
    say(&format!(
        "case {name}: {} under {}'s rules, expecting: {}",
        case.manifest,
        case.engine,
        case.want.as_str()
    ));
    let cname = format!("{}-{name}", o.id);
    let t = Topology::builder(name)
        .id(&cname)
        .ipv6(false)
        .dests4(&["11.22.33.44", "10.20.0.5"])
        .build();
    let cm = ConfigMap::new(o.work.join(format!("{name}-configmap")), CONFIG_A);
    let bundle = o.work.join(name);
    let status = Command::new("/usr/bin/python3")
        .arg(o.repo.join("deploy/oci-spec"))
        .arg("--manifest")
        .arg(&o.manifests[case.manifest])
        .arg("--image-config")
        .arg(&o.image_config)
        .arg("--rootfs")
        .arg(case.rootfs)
        .args(["--netns", &t.node.path(), "--pod-ip", &NODE4.to_string()])
        .arg("--volume")
        .arg(format!("config={}", cm.dir().display()))
        .arg("--state")
        .arg(o.work.join(format!("{name}-files")))
        .arg("--seccomp-profile")
        .arg(&o.seccomp_profile)
        .args(["--cgroups-path", &cname, "--engine", case.engine])
        .arg("--bundle")
        .arg(&bundle)
        .status()?;
    ensure!(status.success(), "{name}: deploy/oci-spec failed");
    let mut run = Run {
        case,
        log: o.work.join(format!("{name}.log")),
        cname,
        t,
        cm,
        bundle,
    };
    match case.want {
        Want::Ok => running(o, runc, &mut run),
        want => failing(runc, &run, want),
    }
}

/// A case that must fail at once, leaving no table: runc refuses the exec, or the agent
/// exits 1 explaining why.
fn failing(runc: &Runc, run: &Run, want: Want) -> Result<()> {
    let name = run.case.name;
    let mut child = runc.run(&run.bundle, &run.cname, &run.log)?;
    let rc = match wait_timeout(&mut child, Duration::from_secs(20))? {
        Some(s) => s.code().unwrap_or(128),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            124
        }
    };
    let table = table_present(&run.t);
    let text = run.log_text();
    println!(
        "  exit status {rc}, table {}; output:",
        if table { "present" } else { "absent" }
    );
    print!("{}", indented(&text));
    ensure!(
        rc != 0 && rc != 124,
        "{name}: should have failed at once (exit {rc})"
    );
    ensure!(!table, "{name}: a table was created");
    if want == Want::Refused {
        ensure!(
            text.contains("exec /nft-masq-agent: operation not permitted"),
            "{name}: runc should report the refused exec"
        );
        return Ok(());
    }
    ensure!(
        rc == 1
            && text
                .lines()
                .any(|l| l.starts_with("nft-masq-agent: error: ")),
        "{name}: the agent itself should have exited 1 with an error"
    );
    for s in [
        "CAP_NET_ADMIN is not effective",
        "security.capability",
        "extended attributes",
        "deploy/components/run-as-root",
        "nothing was changed",
    ] {
        ensure!(text.contains(s), "{name}: the error does not say \"{s}\"");
    }
    Ok(())
}

/// A case that must run: ready, the process as the spec says, probes, datagrams, swaps,
/// `--dump` through `runc exec`, exit 0 on SIGTERM with the table left in force.
fn running(o: &Opts, runc: &Runc, run: &mut Run) -> Result<()> {
    let name = run.case.name;
    let mut child = runc.run(&run.bundle, &run.cname, &run.log)?;
    let probes: Value = serde_json::from_slice(&std::fs::read(run.bundle.join("probes.json"))?)?;
    wait_ready(run, &probes, &mut child)?;
    let state = runc.cmd().args(["state", &run.cname]).output()?;
    let state: Value = serde_json::from_slice(&state.stdout).context("runc state")?;
    let pid = state["pid"].as_u64().context("runc state: no pid")? as u32;
    let spec: Value = serde_json::from_slice(&std::fs::read(run.bundle.join("config.json"))?)?;
    check_process(run, pid, &spec)?;
    for k in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let (at, path) = probe_url(&probes, k)?;
        let r = run
            .t
            .node
            .enter(|| http_get(at, &path, Duration::from_secs(2)));
        let (code, body) = r.map_or((0, String::new()), |r| (r.status, r.body));
        let head: String = body.chars().take(80).collect();
        println!(
            "  probe {} (from the node's network namespace): {code:03} {}",
            probes[k].as_str().unwrap_or_default(),
            head.trim_end()
        );
        ensure!(code == 200, "{name}: {} answered {code:03}", probes[k]);
    }
    ensure!(
        run.set().contains("10.0.0.0/8"),
        "{name}: table not committed"
    );
    println!("  table inet nft-masq-agent committed (config A: nonMasqueradeCIDRs [10.0.0.0/8]):");
    udp(&run.t, "11.22.33.44", true)?;
    udp(&run.t, "10.20.0.5", false)?;
    if run.case.swaps > 0 {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!(
            "  ConfigMap ..data swaps (A <-> B; B adds 192.168.0.0/16 and masquerades \
             10.20.0.0/16; load average {} on {} CPUs):",
            load.join(" "),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        swaps(run, o.swap_limit).with_context(|| format!("{name}: ConfigMap swap"))?;
        let last_b = run.case.swaps % 2 == 1;
        println!(
            "  after the swaps (config {}):",
            if last_b { "B" } else { "A" }
        );
        udp(&run.t, "10.20.0.5", last_b)?;
    }
    dump_through_exec(o, runc, run, &spec)?;
    let kill = runc.cmd().args(["kill", &run.cname, "TERM"]).status()?;
    ensure!(kill.success(), "{name}: runc kill failed");
    let rc = child.wait()?.code().unwrap_or(128);
    println!("  runc kill {} TERM: exit status {rc}", run.cname);
    if rc != 0 {
        eprint!("{}", indented(&run.log_text()));
        bail!("{name}: SIGTERM exit status {rc}");
    }
    ensure!(table_present(&run.t), "{name}: table gone after SIGTERM");
    println!("  after exit the table stays in force:");
    udp(&run.t, "11.22.33.44", true)?;
    println!("  agent log:");
    print!("{}", indented(&run.log_text()));
    Ok(())
}

/// A probe's URL from probes.json (deploy/oci-spec writes them as kubelet would send them).
fn probe_url(probes: &Value, k: &str) -> Result<(SocketAddr, String)> {
    let u = probes[k].as_str().with_context(|| format!("no {k}"))?;
    split_url(u).with_context(|| format!("{k} {u}: not http://ADDRESS:PORT/PATH"))
}

/// Asks the readiness probe every 50 ms (10 s at most) until it answers 200.
fn wait_ready(run: &Run, probes: &Value, child: &mut Child) -> Result<()> {
    let t0 = Instant::now();
    let (at, path) = probe_url(probes, "readinessProbe")?;
    for _ in 0..200 {
        let r = run
            .t
            .node
            .enter(|| http_get(at, &path, Duration::from_secs(1)));
        if r.is_ok_and(|r| r.status == 200) {
            println!("  ready {} ms after runc run", t0.elapsed().as_millis());
            return Ok(());
        }
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprint!("{}", indented(&run.log_text()));
    bail!("{}: not ready", run.case.name)
}

/// The container's process as the kernel shows it: user, exactly CAP_NET_ADMIN in the
/// permitted, effective and bounding sets and nothing inheritable or ambient, no_new_privs,
/// seccomp filter mode, the mounts of the spec, the memory limit of the manifest.
fn check_process(run: &Run, pid: u32, spec: &Value) -> Result<()> {
    let (name, uid) = (run.case.name, run.case.uid);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    println!(
        "  container process {pid} ({}), /proc/{pid}/status:",
        exe.display()
    );
    for l in inspect::status_lines(pid)? {
        println!("    {l}");
    }
    ensure!(
        inspect::field(pid, "Uid") == format!("{uid} {uid} {uid} {uid}"),
        "{name}: not UID {uid}"
    );
    for f in ["CapPrm", "CapEff", "CapBnd"] {
        ensure!(
            inspect::field(pid, f) == "0000000000001000",
            "{name}: {f} is not exactly CAP_NET_ADMIN"
        );
    }
    for f in ["CapInh", "CapAmb"] {
        ensure!(
            inspect::field(pid, f) == "0000000000000000",
            "{name}: {f} is not empty"
        );
    }
    ensure!(
        inspect::field(pid, "NoNewPrivs") == "1",
        "{name}: no_new_privs is not set"
    );
    ensure!(
        inspect::field(pid, "Seccomp") == "2",
        "{name}: not in seccomp filter mode"
    );
    inspect::check_mounts(pid, spec).with_context(|| format!("{name}: mounts"))?;
    let limit = inspect::cgroup_value(pid, "memory", "memory.limit_in_bytes", "memory.max")?;
    // The CPU weight from requests.cpu: under contention it decides how soon the agent runs.
    println!(
        "    cgroup memory limit {limit} bytes, cpu weight {} (requests.cpu; 1024 = one full \
         CPU's share); oom_score_adj {}",
        inspect::cgroup_value(pid, "cpu", "cpu.shares", "cpu.weight")?,
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))?.trim()
    );
    let want = spec["linux"]["resources"]["memory"]["limit"].as_u64();
    ensure!(
        want.is_some_and(|w| w.to_string() == limit),
        "{name}: memory limit"
    );
    Ok(())
}

/// kubectl exec: the container's process spec with other args (the CRI plugin's exec),
/// `--dump`, which must print the table.
fn dump_through_exec(o: &Opts, runc: &Runc, run: &Run, spec: &Value) -> Result<()> {
    let name = run.case.name;
    let mut process = spec["process"].clone();
    process["args"] = serde_json::json!(["/nft-masq-agent", "--dump"]);
    let exec_spec = o.work.join(format!("{name}-exec.json"));
    std::fs::write(&exec_spec, process.to_string())?;
    let dump = runc
        .cmd()
        .arg("exec")
        .arg("--process")
        .arg(&exec_spec)
        .arg(&run.cname)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&dump.stdout),
        String::from_utf8_lossy(&dump.stderr)
    );
    if !dump.status.success() {
        eprintln!("{text}");
        bail!("{name}: --dump through runc exec");
    }
    println!(
        "  runc exec {} /nft-masq-agent --dump (user {}, the container's capabilities and \
         seccomp):",
        run.cname, run.case.uid
    );
    for l in text.lines().take(12) {
        println!("    {l}");
    }
    ensure!(
        text.contains("ip daddr @nonmasq-v4 return"),
        "{name}: --dump printed no table"
    );
    Ok(())
}

/// Swaps the ConfigMap `n` times between A and B, timing each from the `..data` rename to the
/// agent's commit (the end of the next nf_tables transaction in the node namespace: only the
/// agent commits there), and checks with nft that the committed set is the new config's.
fn swaps(run: &mut Run, limit: Duration) -> Result<()> {
    let gens = run.t.node.enter(Generations::open)?;
    let mut times = Vec::new();
    let n = run.case.swaps;
    for i in 0..n {
        let (text, label) = if i % 2 == 0 {
            (CONFIG_B, "A->B")
        } else {
            (CONFIG_A, "B->A")
        };
        gens.clear();
        let t0 = run.cm.update(text);
        let Some(at) = gens.next(limit) else {
            bail!("swap {}: no commit within {} ms", i + 1, limit.as_millis());
        };
        let ms = (at - t0).as_secs_f64() * 1e3;
        let live = run.set();
        ensure!(
            live.contains("192.168.0.0/16") == text.contains("192.168.0.0/16"),
            "swap {}: committed, but the set is not the new config's:\n{live}",
            i + 1
        );
        times.push(ms);
        println!(
            "    swap {} ({label}): live {ms:.2} ms after the ..data rename",
            i + 1
        );
    }
    times.sort_by(f64::total_cmp);
    println!(
        "    {n} swaps: median {:.2} ms, min {:.2} ms, max {:.2} ms",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
    Ok(())
}
