//! The test kit's topology for shell scripts (`scripts/demo`):
//!
//! ```text
//! nma-testkit topology up ID [--ipv4-only] [--dest ADDR]...
//!     pod, node and remote namespaces ID-pod, ID-node, ID-remote, wired as the tests'
//!     (nma_testkit::topology), left in place; the remote hosts the --dest addresses
//!     (default: every destination of the tests)
//! nma-testkit topology down ID
//!     deletes the namespaces ID-* and the processes in them
//! nma-testkit probe ID DEST
//!     one UDP datagram from the pod to DEST: prints the source address the remote saw;
//!     exit status 1 when nothing arrived within a second
//! ```
//!
//! Everything stays inside the namespaces it creates; IDs must start with `nma-`.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::{Context, Result, bail, ensure};
use nma_testkit::{Topology, netns};

const USAGE: &str = "usage: nma-testkit topology up ID [--ipv4-only] [--dest ADDR]... | \
                     topology down ID | probe ID DEST";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nma-testkit: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<ExitCode> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["topology", "up", id, rest @ ..] => up(checked(id)?, rest),
        ["topology", "down", id] => {
            down(checked(id)?);
            Ok(ExitCode::SUCCESS)
        }
        ["probe", id, dest] => probe(checked(id)?, dest),
        ["-h" | "--help"] => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!("{USAGE}"),
    }
}

/// IDs name the namespaces: only `nma-` ones, so that `down` never deletes another's.
fn checked(id: &str) -> Result<&str> {
    ensure!(
        id.starts_with("nma-")
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "the ID must start with nma- and hold only letters, digits, - and _: {id:?}"
    );
    Ok(id)
}

fn up(id: &str, rest: &[&str]) -> Result<ExitCode> {
    let mut builder = Topology::builder("").id(id);
    let mut dests = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match *a {
            "--ipv4-only" => builder = builder.ipv6(false),
            "--dest" => {
                let d = it.next().context("--dest needs an address")?;
                d.parse::<IpAddr>()
                    .with_context(|| format!("--dest {d}: not an address"))?;
                dests.push(*d);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if !dests.is_empty() {
        let (v6, v4): (Vec<&str>, Vec<&str>) = dests.iter().partition(|d| d.contains(':'));
        builder = builder.dests4(&v4).dests6(&v6);
    }
    let mut t = builder.build();
    t.keep();
    Ok(ExitCode::SUCCESS)
}

fn down(id: &str) {
    let prefix = format!("{id}-");
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(&prefix) {
                netns::delete(&name);
            }
        }
    }
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(id));
}

fn probe(id: &str, dest: &str) -> Result<ExitCode> {
    let dst: IpAddr = dest
        .parse()
        .with_context(|| format!("{dest}: not an address"))?;
    let t = Topology::attach(id);
    Ok(match t.probe(dst) {
        Some(from) => {
            println!("{}", from.ip());
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    })
}
