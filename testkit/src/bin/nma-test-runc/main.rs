//! The runtime test: the built image under a real OCI runtime, runc, with the runtime spec
//! containerd's CRI plugin would give the DaemonSet's container. `deploy/test-runc` installs
//! what it needs, renders the manifests with kustomize, fetches the seccomp profiles from
//! Debian's packages and runs this:
//!
//! ```text
//! nma-test-runc --repo DIR --rootfs DIR --image-config FILE --work DIR --id nma-runc-PID
//!     --manifest shipped=FILE --manifest run-as-root=FILE --manifest no-net-admin=FILE
//!     --seccomp-profile FILE --containerd-seccomp FILE --seccomp-sources "DOCKER; CONTAINERD"
//! ```
//!
//! For each case:
//! 1. deploy/oci-spec turns the rendered DaemonSet into config.json: nothing about the
//!    container is written twice, so a manifest change is tested by construction;
//! 2. the test kit's pod/node/remote namespaces (`nma-runc-*`) stand for a node: the
//!    container joins the node namespace by its path (/run/netns/...), as hostNetwork does,
//!    and the ConfigMap volume is a directory in kubelet's `..data` layout, bind-mounted
//!    read-only;
//! 3. runc runs it; the test reads /proc/PID/status (capabilities, NoNewPrivs, seccomp) and
//!    mountinfo of the container's process, checks the probes, UDP datagrams through the node
//!    (masqueraded or not), times ConfigMap swaps (from the `..data` rename to the end of the
//!    agent's transaction, seen as an nf_tables notification), runs --dump through `runc exec`
//!    (kubectl exec's path: the container's own process spec), sends SIGTERM (`runc kill`)
//!    and checks exit 0 with the table left in force.
//!
//! Cases: the DaemonSet as shipped and the run-as-root component under containerd's rules;
//! run-as-root under Docker Engine's rules; and three that must fail loudly without a half
//! state: NET_ADMIN not added (the kernel refuses the exec), the shipped DaemonSet under Docker
//! Engine's rules (non-root gets an empty permitted set) and an image whose builder dropped the
//! binary's security.capability attribute (kaniko): in both the agent explains and exits 1.
//!
//! Where runc cannot run containers at all (e.g. inside an unprivileged container), it says
//! so and exits 0 with SKIPPED; NMA_REQUIRE_RUNC=1 makes that a failure. Touches nothing
//! outside its namespaces, cgroups below runc's own (`<id>-*`) and its work directory.

mod inspect;
mod seccomp;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nma_testkit::events::Generations;
use nma_testkit::http::{http_get, split_url};
use nma_testkit::{ConfigMap, NODE4, POD4, Topology};
use serde_json::Value;

/// Config A of the ConfigMap, and config B that the swaps alternate with.
const CONFIG_A: &str = "nonMasqueradeCIDRs: [10.0.0.0/8]\n";
const CONFIG_B: &str =
    "nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\nmasqueradeCIDRs: [10.20.0.0/16]\n";

fn say(what: &str) {
    println!("\n--- runc: {what}");
}

fn main() -> ExitCode {
    let started = Instant::now();
    match run() {
        Ok(true) => {
            say(&format!(
                "runc checks passed in {} ms",
                started.elapsed().as_millis()
            ));
            ExitCode::SUCCESS
        }
        Ok(false) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("test-runc: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line.
struct Opts {
    repo: PathBuf,
    rootfs: PathBuf,
    image_config: PathBuf,
    work: PathBuf,
    id: String,
    manifests: HashMap<String, PathBuf>,
    seccomp_profile: PathBuf,
    containerd_seccomp: PathBuf,
    seccomp_sources: String,
    /// ConfigMap swaps timed in the main case (NMA_RUNC_SWAPS, 5).
    swaps: usize,
    /// A swap slower than this fails (NMA_RUNC_SWAP_LIMIT_MS, 5000). Usual: ~7 ms. But the
    /// container gets the CPU weight of its 10m request (cpu.shares 10 against 1024 for a full
    /// CPU), so with every CPU busy (other builds on the machine) swaps took a median of
    /// ~100 ms and up to 0.7 s.
    swap_limit: Duration,
}

fn opts() -> Result<Opts> {
    let mut values: HashMap<String, Vec<String>> = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let key = flag
            .strip_prefix("--")
            .with_context(|| format!("unexpected argument {flag}"))?;
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        values.entry(key.to_string()).or_default().push(value);
    }
    let one = |k: &str| -> Result<String> {
        values
            .get(k)
            .and_then(|v| v.last().cloned())
            .with_context(|| format!("--{k} is missing"))
    };
    let mut manifests = HashMap::new();
    for m in values.get("manifest").into_iter().flatten() {
        let (name, path) = m
            .split_once('=')
            .with_context(|| format!("--manifest {m}: NAME=FILE"))?;
        manifests.insert(name.to_string(), PathBuf::from(path));
    }
    let env_number = |k: &str, default: u64| -> Result<u64> {
        std::env::var(k).map_or(Ok(default), |v| {
            v.parse().with_context(|| format!("{k}={v}: not a number"))
        })
    };
    Ok(Opts {
        repo: one("repo")?.into(),
        rootfs: one("rootfs")?.into(),
        image_config: one("image-config")?.into(),
        work: one("work")?.into(),
        id: one("id")?,
        manifests,
        seccomp_profile: one("seccomp-profile")?.into(),
        containerd_seccomp: one("containerd-seccomp")?.into(),
        seccomp_sources: one("seccomp-sources")?,
        swaps: env_number("NMA_RUNC_SWAPS", 5)? as usize,
        swap_limit: Duration::from_millis(env_number("NMA_RUNC_SWAP_LIMIT_MS", 5000)?),
    })
}

/// runc with a private state directory (no other runc containers seen); every container it
/// created is killed and deleted on drop, and cgroups a crash left behind are removed.
struct Runc {
    state: PathBuf,
    id: String,
    containers: Mutex<Vec<String>>,
}

impl Runc {
    fn cmd(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(&self.state);
        c
    }

    /// `runc run --bundle BUNDLE NAME`, its output to `log`.
    fn run(&self, bundle: &Path, name: &str, log: &Path) -> Result<Child> {
        self.containers.lock().unwrap().push(name.to_string());
        let out = std::fs::File::create(log)?;
        Ok(self
            .cmd()
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(name)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?)
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        for c in self.containers.lock().unwrap().iter() {
            let _ = self.cmd().args(["kill", c, "KILL"]).output();
            let _ = self.cmd().args(["delete", "--force", c]).output();
        }
        // runc removes a container's cgroups on delete; anything a crash left behind goes.
        remove_cgroups(Path::new("/sys/fs/cgroup"), &format!("{}-", self.id), 6);
    }
}

/// Removes the directories named `<prefix>*` up to `depth` below `dir` (deepest first).
fn remove_cgroups(dir: &Path, prefix: &str, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if e.file_name().to_string_lossy().starts_with(prefix) {
            remove_tree_of_dirs(&p);
        } else if depth > 1 {
            remove_cgroups(&p, prefix, depth - 1);
        }
    }
}

fn remove_tree_of_dirs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree_of_dirs(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// What a case must show.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
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

struct Case<'a> {
    name: &'a str,
    manifest: &'a str,
    engine: &'a str,
    want: Want,
    uid: u32,
    swaps: usize,
    rootfs: &'a Path,
}

/// Returns false when runc cannot run containers here (skipped).
fn run() -> Result<bool> {
    let o = opts()?;
    std::fs::create_dir_all(&o.work)?;
    let runc = Runc {
        state: o.work.join("state"),
        id: o.id.clone(),
        containers: Mutex::new(Vec::new()),
    };

    say("seccomp profile for RuntimeDefault");
    let profile: Value = serde_json::from_slice(&std::fs::read(&o.seccomp_profile)?)
        .context("Docker's seccomp profile")?;
    let (docker_from, containerd_from) = o
        .seccomp_sources
        .split_once("; ")
        .unwrap_or((&o.seccomp_sources, "?"));
    println!("Docker's profiles/seccomp/default.json from {docker_from}");
    seccomp::check(
        &profile,
        &std::fs::read_to_string(&o.containerd_seccomp)?,
        containerd_from,
    )?;

    say("probe: can runc run containers here?");
    if !probe(&o, &runc)? {
        return Ok(false);
    }

    let manifest = |n: &str| -> Result<&Path> {
        o.manifests
            .get(n)
            .map(PathBuf::as_path)
            .with_context(|| format!("--manifest {n}=FILE is missing"))
    };
    for (name, m, engine, want, uid, swaps) in [
        ("shipped", "shipped", "containerd", Want::Ok, 65532, o.swaps),
        ("root", "run-as-root", "containerd", Want::Ok, 0, 3),
        ("docker-root", "run-as-root", "docker", Want::Ok, 0, 0),
        (
            "no-net-admin",
            "no-net-admin",
            "containerd",
            Want::Refused,
            65532,
            0,
        ),
        (
            "docker-shipped",
            "shipped",
            "docker",
            Want::Explained,
            65532,
            0,
        ),
    ] {
        manifest(m)?;
        run_case(
            &o,
            &runc,
            &Case {
                name,
                manifest: m,
                engine,
                want,
                uid,
                swaps,
                rootfs: &o.rootfs,
            },
        )?;
    }
    // An image builder that drops extended attributes (kaniko; Docker's builder before
    // BuildKit): the same root filesystem with the binary copied without its
    // security.capability.
    let bare = o.work.join("rootfs-no-xattr");
    std::fs::create_dir_all(&bare)?;
    let bin = bare.join("nft-masq-agent");
    std::fs::copy(o.rootfs.join("nft-masq-agent"), &bin)?;
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let getcap = Command::new("getcap").arg(&bin).output()?;
    ensure!(
        getcap.stdout.is_empty(),
        "the copy kept its capability: {}",
        String::from_utf8_lossy(&getcap.stdout)
    );
    run_case(
        &o,
        &runc,
        &Case {
            name: "lost-xattr",
            manifest: "shipped",
            engine: "containerd",
            want: Want::Explained,
            uid: 65532,
            swaps: 0,
            rootfs: &bare,
        },
    )?;
    Ok(true)
}

/// The smallest container: the image's binary printing its version as root, only mount and
/// pid namespaces, no seccomp. If this fails, the machine cannot run containers (a skip); if
/// it works, every failure after it is a real one.
fn probe(o: &Opts, runc: &Runc) -> Result<bool> {
    let bundle = o.work.join("probe");
    std::fs::create_dir_all(&bundle)?;
    let caps = ["CAP_NET_ADMIN"];
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": o.rootfs, "readonly": true},
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["/nft-masq-agent", "--version"],
            "cwd": "/",
            "env": ["PATH=/"],
            "capabilities": {"bounding": caps, "permitted": caps, "effective": caps},
        },
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]},
    });
    std::fs::write(bundle.join("config.json"), spec.to_string())?;
    let name = format!("{}-probe", o.id);
    runc.containers.lock().unwrap().push(name.clone());
    let out = runc
        .cmd()
        .arg("run")
        .arg("--bundle")
        .arg(&bundle)
        .arg(&name)
        .stdin(Stdio::null())
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let version = Command::new("runc").arg("--version").output()?;
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let first = version.lines().next().unwrap_or("runc");
    if !out.status.success() {
        eprintln!(
            "test-runc: {} cannot run a container here:\n  {}",
            first,
            text.trim()
        );
        if std::env::var_os("NMA_REQUIRE_RUNC").is_some_and(|v| !v.is_empty()) {
            bail!("NMA_REQUIRE_RUNC is set");
        }
        println!(
            "test-runc: SKIPPED: the runc runs did not happen on this machine \
             (NMA_REQUIRE_RUNC=1 makes this fail)"
        );
        return Ok(false);
    }
    let libseccomp = version
        .lines()
        .find(|l| l.to_lowercase().contains("libseccomp"))
        .unwrap_or("");
    println!("{first}, {libseccomp}: {}", text.trim());
    Ok(true)
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

/// Waits up to `timeout` for `child`; None if it is still running then.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() > end {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_case(o: &Opts, runc: &Runc, case: &Case) -> Result<()> {
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
    let mut cm = ConfigMap::new(o.work.join(format!("{name}-configmap")), CONFIG_A);
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
    let log = o.work.join(format!("{name}.log"));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    if case.want != Want::Ok {
        let mut child = runc.run(&bundle, &cname, &log)?;
        let rc = match wait_timeout(&mut child, Duration::from_secs(20))? {
            Some(s) => s.code().unwrap_or(128),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                124
            }
        };
        let table = table_present(&t);
        let text = log_text();
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
        match case.want {
            Want::Refused => ensure!(
                text.contains("exec /nft-masq-agent: operation not permitted"),
                "{name}: runc should report the refused exec"
            ),
            _ => {
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
            }
        }
        return Ok(());
    }

    let mut child = runc.run(&bundle, &cname, &log)?;
    let t0 = Instant::now();
    let probes: Value = serde_json::from_slice(&std::fs::read(bundle.join("probes.json"))?)?;
    let url = |k: &str| -> Result<(std::net::SocketAddr, String)> {
        let u = probes[k].as_str().with_context(|| format!("no {k}"))?;
        split_url(u).with_context(|| format!("{k} {u}: not http://ADDRESS:PORT/PATH"))
    };
    let (ready_at, ready_path) = url("readinessProbe")?;
    let mut ready = false;
    for _ in 0..200 {
        let r = t
            .node
            .enter(|| http_get(ready_at, &ready_path, Duration::from_secs(1)));
        if r.is_ok_and(|r| r.status == 200) {
            ready = true;
            break;
        }
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !ready {
        eprint!("{}", indented(&log_text()));
        bail!("{name}: not ready");
    }
    println!("  ready {} ms after runc run", t0.elapsed().as_millis());
    let state = runc.cmd().args(["state", &cname]).output()?;
    let state: Value = serde_json::from_slice(&state.stdout).context("runc state")?;
    let pid = state["pid"].as_u64().context("runc state: no pid")? as u32;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    println!(
        "  container process {pid} ({}), /proc/{pid}/status:",
        exe.display()
    );
    for l in inspect::status_lines(pid)? {
        println!("    {l}");
    }
    let uid = case.uid;
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
    let spec: Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
    inspect::check_mounts(pid, &spec).with_context(|| format!("{name}: mounts"))?;
    let limit = inspect::cgroup_value(pid, "memory", "memory.limit_in_bytes", "memory.max")?;
    // The CPU weight from requests.cpu: under contention it decides how soon the agent runs.
    println!(
        "    cgroup memory limit {limit} bytes, cpu weight {} (requests.cpu; 1024 = one full \
         CPU's share); oom_score_adj {}",
        inspect::cgroup_value(pid, "cpu", "cpu.shares", "cpu.weight")?,
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))?.trim()
    );
    ensure!(
        Some(limit.as_str())
            == spec["linux"]["resources"]["memory"]["limit"]
                .as_u64()
                .map(|l| l.to_string())
                .as_deref(),
        "{name}: memory limit"
    );

    for k in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let (at, path) = url(k)?;
        let r = t.node.enter(|| http_get(at, &path, Duration::from_secs(2)));
        let (code, body) = r.map_or((0, String::new()), |r| (r.status, r.body));
        let head: String = body
            .chars()
            .take(80)
            .collect::<String>()
            .trim_end()
            .to_string();
        println!(
            "  probe {} (from the node's network namespace): {code:03} {head}",
            probes[k].as_str().unwrap_or_default()
        );
        ensure!(code == 200, "{name}: {} answered {code:03}", probes[k]);
    }
    let set = |t: &Topology| {
        t.node
            .cmd("nft")
            .args(["list", "set", "inet", "nft-masq-agent", "nonmasq-v4"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    ensure!(
        set(&t).contains("10.0.0.0/8"),
        "{name}: table not committed"
    );
    println!("  table inet nft-masq-agent committed (config A: nonMasqueradeCIDRs [10.0.0.0/8]):");
    udp(&t, "11.22.33.44", true)?;
    udp(&t, "10.20.0.5", false)?;

    if case.swaps > 0 {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!(
            "  ConfigMap ..data swaps (A <-> B; B adds 192.168.0.0/16 and masquerades \
             10.20.0.0/16; load average {} on {} CPUs):",
            load.join(" "),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        swaps(&t, &mut cm, case.swaps, o.swap_limit, set)
            .with_context(|| format!("{name}: ConfigMap swap"))?;
        let last_b = case.swaps % 2 == 1;
        println!(
            "  after the swaps (config {}):",
            if last_b { "B" } else { "A" }
        );
        udp(&t, "10.20.0.5", last_b)?;
    }

    // kubectl exec: the container's process spec with other args (the CRI plugin's exec).
    let mut process = spec["process"].clone();
    process["args"] = serde_json::json!(["/nft-masq-agent", "--dump"]);
    let exec_spec = o.work.join(format!("{name}-exec.json"));
    std::fs::write(&exec_spec, process.to_string())?;
    let dump = runc
        .cmd()
        .arg("exec")
        .arg("--process")
        .arg(&exec_spec)
        .arg(&cname)
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
        "  runc exec {cname} /nft-masq-agent --dump (user {uid}, the container's capabilities \
         and seccomp):"
    );
    for l in text.lines().take(12) {
        println!("    {l}");
    }
    ensure!(
        text.contains("ip daddr @nonmasq-v4 return"),
        "{name}: --dump printed no table"
    );

    let kill = runc.cmd().args(["kill", &cname, "TERM"]).status()?;
    ensure!(kill.success(), "{name}: runc kill failed");
    let rc = child.wait()?.code().unwrap_or(128);
    println!("  runc kill {cname} TERM: exit status {rc}");
    if rc != 0 {
        eprint!("{}", indented(&log_text()));
        bail!("{name}: SIGTERM exit status {rc}");
    }
    ensure!(table_present(&t), "{name}: table gone after SIGTERM");
    println!("  after exit the table stays in force:");
    udp(&t, "11.22.33.44", true)?;
    println!("  agent log:");
    print!("{}", indented(&log_text()));
    Ok(())
}

/// Swaps the ConfigMap `n` times between A and B, timing each from the `..data` rename to the
/// agent's commit (the end of the next nf_tables transaction in the node namespace: only the
/// agent commits there), and checks with nft that the committed set is the new config's.
fn swaps(
    t: &Topology,
    cm: &mut ConfigMap,
    n: usize,
    limit: Duration,
    set: impl Fn(&Topology) -> String,
) -> Result<()> {
    let gens = t.node.enter(Generations::open)?;
    let mut times = Vec::new();
    for i in 0..n {
        let (text, label) = if i % 2 == 0 {
            (CONFIG_B, "A->B")
        } else {
            (CONFIG_A, "B->A")
        };
        gens.clear();
        let t0 = cm.update(text);
        let Some(at) = gens.next(limit) else {
            bail!("swap {}: no commit within {} ms", i + 1, limit.as_millis());
        };
        let ms = (at - t0).as_secs_f64() * 1e3;
        let live = set(t);
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
