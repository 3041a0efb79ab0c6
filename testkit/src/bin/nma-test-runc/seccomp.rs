//! The seccomp profile standing for RuntimeDefault: Docker's `profiles/seccomp/default.json`,
//! checked against containerd's own default (Go code, `contrib/seccomp/seccomp_default.go`):
//! every syscall Docker's allows unconditionally, containerd's allows too, so what runs under
//! it runs under RuntimeDefault.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Whether a JSON value counts as set (Python's truthiness, as the profile format is read).
fn set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Docker's unconditional allow list: the longest rule that allows without arguments,
/// includes or excludes.
fn docker_allow_list(profile: &Value) -> Result<BTreeSet<String>> {
    let rules = profile["syscalls"]
        .as_array()
        .context("Docker's profile has no syscalls list")?;
    let unconditional = |r: &&Value| {
        r["action"] == "SCMP_ACT_ALLOW"
            && !set(&r["args"])
            && ["includes", "excludes"]
                .iter()
                .all(|k| r[*k].as_object().is_none_or(|o| !o.values().any(set)))
    };
    let longest = rules
        .iter()
        .filter(unconditional)
        .max_by_key(|r| r["names"].as_array().map_or(0, Vec::len))
        .context("Docker's profile has no unconditional allow rule")?;
    Ok(longest["names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(String::from))
        .collect())
}

/// containerd's DefaultProfile: the first `Names: []string{...}` list is its unconditional
/// allow list.
fn containerd_allow_list(go: &str) -> BTreeSet<String> {
    let Some(start) = go.find("Names: []string{") else {
        return BTreeSet::new();
    };
    let body = &go[start + "Names: []string{".len()..];
    let body = &body[..body.find('}').unwrap_or(body.len())];
    body.split('"')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(String::from)
        .collect()
}

/// Compares the two lists, prints what differs, and fails when Docker's allows a syscall
/// containerd's does not.
pub fn check(profile: &Value, containerd_go: &str, containerd_from: &str) -> Result<()> {
    let docker = docker_allow_list(profile)?;
    let containerd = containerd_allow_list(containerd_go);
    if containerd.len() < 100 {
        bail!("could not read containerd's allow list from contrib/seccomp/seccomp_default.go");
    }
    println!(
        "default action {}; unconditional allow list: Docker {} syscalls, containerd's \
         RuntimeDefault ({containerd_from}) {}",
        profile["defaultAction"].as_str().unwrap_or("?"),
        docker.len(),
        containerd.len()
    );
    let only = |a: &BTreeSet<String>, b: &BTreeSet<String>| {
        let d: Vec<&str> = a.difference(b).map(String::as_str).collect();
        if d.is_empty() {
            "none".to_string()
        } else {
            format!("{d:?}")
        }
    };
    println!(
        "  only in containerd's: {}; only in Docker's: {}",
        only(&containerd, &docker),
        only(&docker, &containerd)
    );
    if !docker.is_subset(&containerd) {
        bail!(
            "Docker's profile allows syscalls containerd's does not: it no longer stands for \
             RuntimeDefault"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_are_read_and_compared() {
        let profile: Value = serde_json::from_str(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["read", "write", "bpf"], "action": "SCMP_ACT_ALLOW",
                 "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "excludes": {}, "args": []}
            ]}"#,
        )
        .unwrap();
        let docker = docker_allow_list(&profile).unwrap();
        assert_eq!(docker.into_iter().collect::<Vec<_>>(), ["read", "write"]);
        let go = "s := &specs.LinuxSeccomp{\n\tSyscalls: []specs.LinuxSyscall{{\n\
                  \t\tNames: []string{\n\t\t\t\"accept\",\n\t\t\t\"read\",\n\t\t\t\"write\",\n\
                  \t\t},\n\t\tAction: specs.ActAllow,\n\t}, {\n\t\tNames: []string{\"bpf\"},";
        let c = containerd_allow_list(go);
        assert_eq!(
            c.into_iter().collect::<Vec<_>>(),
            ["accept", "read", "write"]
        );
    }
}
