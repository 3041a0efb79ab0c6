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

mod case;
mod inspect;
mod runc;
mod seccomp;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use case::{Case, Want, run_case};
use runc::{Runc, probe};

/// A section of the output.
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
pub struct Opts {
    /// The checkout (for deploy/oci-spec).
    pub repo: PathBuf,
    /// The image's root filesystem.
    pub rootfs: PathBuf,
    /// The image's OCI config JSON.
    pub image_config: PathBuf,
    /// Scratch space: bundles, logs, ConfigMap volumes, runc's state.
    pub work: PathBuf,
    /// What names, namespaces and cgroups start with (`nma-runc-PID`).
    pub id: String,
    /// The rendered manifests by name (shipped, run-as-root, no-net-admin).
    pub manifests: HashMap<String, PathBuf>,
    /// Docker's default seccomp profile (RuntimeDefault).
    pub seccomp_profile: PathBuf,
    /// containerd's contrib/seccomp/seccomp_default.go.
    pub containerd_seccomp: PathBuf,
    /// Where the two came from: `DOCKER; CONTAINERD` package versions.
    pub seccomp_sources: String,
    /// ConfigMap swaps timed in the main case (NMA_RUNC_SWAPS, 5).
    pub swaps: usize,
    /// A swap slower than this fails (NMA_RUNC_SWAP_LIMIT_MS, 5000). Usual: ~7 ms. But the
    /// container gets the CPU weight of its 10m request (cpu.shares 10 against 1024 for a full
    /// CPU), so with every CPU busy (other builds on the machine) swaps took a median of
    /// ~100 ms and up to 0.7 s.
    pub swap_limit: Duration,
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
