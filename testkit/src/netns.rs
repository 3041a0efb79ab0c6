//! A throwaway network namespace.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::env::{ip, run};
use crate::http::{Reply, http_get_here};

/// A network namespace under /run/netns, deleted on drop (also when a test panics) together
/// with every process still in it, unless told to [`Netns::keep`] it.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
    /// Whether drop leaves it in place (a namespace this value only attached to).
    keep: bool,
}

impl Netns {
    /// Creates the namespace `name` (after deleting one of that name) with `lo` up.
    pub fn new(name: impl Into<String>) -> Netns {
        let name = name.into();
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns { name, keep: false };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Creates `<prefix>-<pid>-<tag>`, after removing the `<prefix>-<pid>-*` namespaces of
    /// runs that died without cleaning up ([`sweep_stale`]).
    pub fn unique(prefix: &str, tag: &str) -> Netns {
        sweep_stale(prefix);
        Netns::new(format!("{prefix}-{}-{tag}", std::process::id()))
    }

    /// An existing namespace, left in place on drop.
    pub fn attach(name: impl Into<String>) -> Netns {
        let name = name.into();
        assert!(
            std::path::Path::new(&format!("/run/netns/{name}")).exists(),
            "no network namespace {name}"
        );
        Netns { name, keep: true }
    }

    /// Leaves the namespace in place when this value is dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Its path under /run/netns (what `setns` and a container spec take).
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it creates stay there.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                join(&path);
                f()
            })
            .join()
            .expect("thread in namespace panicked")
        })
    }

    /// Runs `f` on a new thread that has entered this namespace and returns at once; the
    /// thread's sockets stay in the namespace (for load generators that run alongside a test).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.path();
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                join(&path);
                f()
            })
            .expect("spawn thread")
    }

    /// Moves the calling thread into the namespace for good: sockets it opens and processes
    /// it spawns from then on belong there (for single-threaded benchmark programs).
    pub fn enter_current_thread(&self) {
        join(&self.path());
    }

    /// `GET path` from `127.0.0.1:port` inside this namespace: [`http_get_here`] on a thread
    /// that entered it.
    pub fn http_get(&self, port: u16, path: &str, timeout: Duration) -> std::io::Result<Reply> {
        self.enter(|| http_get_here(port, path, timeout))
    }

    /// Runs `ip -n NAME ARGS` (`args` split at whitespace: `"addr add 10.0.0.1/24 dev eth0"`);
    /// panics on failure.
    pub fn ip(&self, args: &str) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend(args.split_whitespace());
        ip(&all);
    }

    /// Writes a sysctl of this namespace (`net.ipv4.ip_forward`).
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.enter(|| std::fs::write(&path, value))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }

    /// A command that runs inside this namespace.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `program args` in this namespace with `input` on its stdin; its output.
    pub fn run_with_stdin(&self, program: &str, args: &[&str], input: &str) -> Output {
        let mut child = self
            .cmd(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("write to {program}: {e}"));
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait for {program}: {e}"))
    }

    /// Like [`Netns::run_with_stdin`], and panics with the input and stderr when it fails
    /// (`iptables-nft-restore`, `nft -f -` of a fixture).
    pub fn restore(&self, program: &str, args: &[&str], input: &str) {
        let out = self.run_with_stdin(program, args, input);
        assert!(
            out.status.success(),
            "{program} {args:?} in {}: {}\n{input}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `nft` in this namespace and returns stdout; panics on failure.
    pub fn nft(&self, args: &[&str]) -> String {
        let out = run(self.cmd("nft").args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `nft ARGS` with `script` on stdin; its output, whatever the status.
    pub fn nft_stdin(&self, args: &[&str], script: &str) -> Output {
        self.run_with_stdin("nft", args, script)
    }

    /// Loads `script` with `nft -f -`; panics with nft's message when it is refused.
    pub fn nft_file(&self, script: &str) {
        let out = self.nft_stdin(&["-f", "-"], script);
        assert!(
            out.status.success(),
            "nft -f failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The handle `nft -a list chain FAMILY TABLE CHAIN` shows on the first rule whose line
    /// contains `needle`; panics when there is none.
    pub fn rule_handle(&self, family: &str, table: &str, chain: &str, needle: &str) -> u64 {
        let rules = self.nft(&["-a", "list", "chain", family, table, chain]);
        crate::listing::handle_of(&rules, needle)
            .unwrap_or_else(|| panic!("no rule with {needle:?} in:\n{rules}"))
    }

    /// Deletes the first rule of `FAMILY TABLE CHAIN` whose line contains `needle` (a
    /// tamperer's `nft delete rule ... handle N`); its handle.
    pub fn delete_rule(&self, family: &str, table: &str, chain: &str, needle: &str) -> u64 {
        let h = self.rule_handle(family, table, chain, needle);
        self.nft(&[
            "delete",
            "rule",
            family,
            table,
            chain,
            "handle",
            &h.to_string(),
        ]);
        h
    }

    /// Kills every process in the namespace but this one (which may have entered it).
    pub fn kill_all(&self) {
        kill_processes_in(&self.name);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep {
            delete(&self.name);
        }
    }
}

/// Deletes the namespace `name`, after killing the processes in it (never this one).
pub fn delete(name: &str) {
    kill_processes_in(name);
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

fn kill_processes_in(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return;
    };
    let me = std::process::id();
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        // A benchmark that entered the namespace on its main thread is listed too.
        if let Ok(pid) = pid.parse::<u32>()
            && pid != me
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Moves the calling thread into the namespace at `path`.
fn join(path: &str) {
    let fd = File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

/// Deletes `<prefix>-<pid>-*` namespaces (and `/tmp/<prefix>-<pid>*` scratch directories)
/// whose process is gone: what runs killed before their cleanup left behind.
pub fn sweep_stale(prefix: &str) {
    let dead = |name: &str| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if dead(&name) {
                delete(&name);
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if dead(&name) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}
