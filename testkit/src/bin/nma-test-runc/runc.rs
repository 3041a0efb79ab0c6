//! runc with a private state directory, and whether it can run containers here at all.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::Opts;

/// runc with a private state directory (no other runc containers seen); every container it
/// created is killed and deleted on drop, and cgroups a crash left behind are removed.
pub struct Runc {
    /// runc's `--root`.
    pub state: PathBuf,
    /// What the containers' names (and so their cgroups) start with.
    pub id: String,
    /// The containers created, to kill and delete.
    pub containers: Mutex<Vec<String>>,
}

impl Runc {
    /// `runc --root STATE`.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(&self.state);
        c
    }

    /// `runc run --bundle BUNDLE NAME`, its output to `log`.
    pub fn run(&self, bundle: &Path, name: &str, log: &Path) -> Result<Child> {
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

/// The smallest container: the image's binary printing its version as root, only mount and
/// pid namespaces, no seccomp. If this fails, the machine cannot run containers (a skip); if
/// it works, every failure after it is a real one.
pub fn probe(o: &Opts, runc: &Runc) -> Result<bool> {
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

/// Waits up to `timeout` for `child`; None if it is still running then.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
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
