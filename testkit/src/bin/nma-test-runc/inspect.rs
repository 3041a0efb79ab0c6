//! What the kernel shows of the container's process: `/proc/PID/status`, its mounts, its
//! cgroup's settings.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The `/proc/PID/status` lines the runtime test shows, whitespace collapsed.
pub fn status_lines(pid: u32) -> Result<Vec<String>> {
    const KEYS: [&str; 11] = [
        "Uid",
        "Gid",
        "Groups",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
        "Seccomp_filters",
    ];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .filter(|l| l.split_once(':').is_some_and(|(k, _)| KEYS.contains(&k)))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect())
}

/// One `/proc/PID/status` field's value, whitespace collapsed (`Uid` -> `65532 65532 ...`).
pub fn field(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A mount as mountinfo shows it.
struct Mount {
    options: Vec<String>,
    fstype: String,
    root: String,
}

/// The container's root, volume, /proc and /sys as its mountinfo shows them, against the
/// spec's read-only root, masked and read-only paths (those this kernel has): prints them,
/// fails naming each difference.
pub fn check_mounts(pid: u32, spec: &Value) -> Result<()> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .with_context(|| format!("/proc/{pid}/mountinfo"))?;
    let mut rows: HashMap<String, Mount> = HashMap::new();
    for line in info.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.len() < 6 || dash + 1 >= f.len() {
            continue;
        }
        // A later mount at the same point hides the earlier one.
        rows.insert(
            f[4].to_string(),
            Mount {
                options: f[5].split(',').map(String::from).collect(),
                fstype: f[dash + 1].to_string(),
                root: f[3].to_string(),
            },
        );
    }
    let ro = |p: &str| {
        rows.get(p)
            .is_some_and(|m| m.options.iter().any(|o| o == "ro"))
    };
    let mut problems = Vec::new();
    let mut want = |path: &str, ok: bool, what: &str| {
        if !ok {
            problems.push(format!("{path}: {what}"));
        }
    };
    let root_ro = spec["root"]["readonly"].as_bool().unwrap_or(false);
    want("/", ro("/") == root_ro, "root read-only as the spec says");
    let hierarchies: Vec<&String> = rows
        .keys()
        .filter(|p| p.starts_with("/sys/fs/cgroup/"))
        .collect();
    let mounts = spec["mounts"].as_array().context("spec without mounts")?;
    for m in mounts {
        let p = m["destination"].as_str().unwrap_or_default();
        want(p, rows.contains_key(p), "not mounted");
        let is_ro = m["options"]
            .as_array()
            .is_some_and(|o| o.iter().any(|x| x == "ro"));
        if !is_ro {
            continue;
        }
        if m["type"] == "cgroup" && !hierarchies.is_empty() {
            // cgroup v1: runc mounts a tmpfs there and binds each hierarchy read-only into it.
            for h in &hierarchies {
                want(h, ro(h), "writable");
            }
        } else {
            want(p, ro(p), "writable");
        }
    }
    let rw = |p: &str| if ro(p) { "ro" } else { "rw" };
    let mut shown = vec![format!("/ {}", rw("/"))];
    for m in mounts {
        let p = m["destination"].as_str().unwrap_or_default();
        if m["type"] == "bind" || p == "/proc" || p == "/sys" {
            shown.push(format!("{p} {}", rw(p)));
        }
    }
    shown.push(if hierarchies.is_empty() {
        format!("/sys/fs/cgroup {}", rw("/sys/fs/cgroup"))
    } else {
        format!(
            "/sys/fs/cgroup ({} v1 hierarchies, all ro)",
            hierarchies.len()
        )
    });
    let (mut masked, mut absent, mut readonly) = (Vec::new(), Vec::new(), Vec::new());
    for p in paths(&spec["linux"]["maskedPaths"]) {
        if !Path::new(p).exists() {
            absent.push(p);
            continue;
        }
        let Some(m) = rows.get(p) else {
            want(p, false, "not masked");
            continue;
        };
        if Path::new(p).is_dir() {
            // A directory: an empty read-only tmpfs over it.
            want(
                p,
                ro(p) && m.fstype == "tmpfs",
                "not masked by a read-only tmpfs",
            );
            masked.push(format!("{p} (empty tmpfs, ro)"));
        } else {
            // A file: the container's /dev/null bound over it.
            want(p, m.root == "/null", "not masked by /dev/null");
            masked.push(format!("{p} (/dev/null)"));
        }
    }
    for p in paths(&spec["linux"]["readonlyPaths"]) {
        if !Path::new(p).exists() {
            absent.push(p);
            continue;
        }
        want(p, ro(p), "not read-only");
        readonly.push(p);
    }
    println!("    mounts: {}", shown.join(", "));
    println!(
        "    masked: {}; read-only: {}",
        masked.join(", "),
        readonly.join(", ")
    );
    println!(
        "    (not on this kernel, so nothing to mask: {})",
        absent.join(", ")
    );
    if !problems.is_empty() {
        bail!("mounts: {}", problems.join("; "));
    }
    Ok(())
}

fn paths(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

/// A setting of the container's cgroup: `v1` in the `controller` hierarchy on cgroup v1,
/// `v2` in the unified hierarchy.
pub fn cgroup_value(pid: u32, controller: &str, v1: &str, v2: &str) -> Result<String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let mut unified = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == controller) {
            let file = format!("/sys/fs/cgroup/{controllers}{path}/{v1}");
            return Ok(std::fs::read_to_string(&file)
                .with_context(|| file.clone())?
                .trim()
                .to_string());
        }
        if id == "0" && controllers.is_empty() {
            unified = Some(path.to_string());
        }
    }
    let path = unified.context("the process is in no cgroup of that controller")?;
    let file = format!("/sys/fs/cgroup{path}/{v2}");
    Ok(std::fs::read_to_string(&file)
        .with_context(|| file.clone())?
        .trim()
        .to_string())
}
