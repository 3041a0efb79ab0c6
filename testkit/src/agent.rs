//! The agent as a process: started with arguments (in a namespace), signalled, measured, its
//! JSON log read line by line.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::env::wait_until;
use crate::log::{Commit, LogLine, LogReader};
use crate::netns::Netns;

/// The agent binary under test: `NMA_AGENT_BIN` (the VM guests, another build), else the
/// `nft-masq-agent` Cargo built next to the running test or benchmark program (tests and
/// benchmarks run from `target/PROFILE/deps/`, the binary is `target/PROFILE/`; Cargo builds
/// a package's binaries before its tests and benchmarks).
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NMA_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("path of the running program");
    exe.parent()
        .into_iter()
        .flat_map(|deps| [Some(deps), deps.parent()])
        .flatten()
        .map(|dir| dir.join("nft-masq-agent"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no nft-masq-agent beside {} or its parent: build it, or set NMA_AGENT_BIN",
                exe.display()
            )
        })
}

/// How to start an agent: binary, namespace, arguments, environment, where its log goes.
/// Defaults: [`agent_bin`], the caller's namespace, `RUST_LOG=info`, `--log-format json`,
/// stdout discarded, stderr (the log) to a file.
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    bin: PathBuf,
    netns: Option<String>,
    args: Vec<OsString>,
    env: Vec<(String, Option<String>)>,
    log: Option<PathBuf>,
    append: bool,
    json: bool,
}

impl AgentBuilder {
    /// An agent from `bin`, logging to `log` (None: the log is discarded).
    pub fn new(bin: impl Into<PathBuf>, log: Option<PathBuf>) -> AgentBuilder {
        AgentBuilder {
            bin: bin.into(),
            netns: None,
            args: Vec::new(),
            env: vec![("RUST_LOG".into(), Some("info".into()))],
            log,
            append: false,
            json: true,
        }
    }

    /// Runs it in `ns` (through `ip netns exec`, which execs it: the child is the agent).
    pub fn netns(mut self, ns: &Netns) -> AgentBuilder {
        self.netns = Some(ns.name.clone());
        self
    }

    /// One more argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> AgentBuilder {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// More arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> AgentBuilder {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// `--config path`.
    pub fn config(self, path: &Path) -> AgentBuilder {
        self.arg("--config").arg(path)
    }

    /// Sets an environment variable (`RUST_LOG` is `info` unless set here).
    pub fn env(mut self, key: &str, value: impl Into<String>) -> AgentBuilder {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Removes an environment variable from the agent's environment (`RUST_LOG`, so that
    /// klog's `--v` decides the level).
    pub fn env_remove(mut self, key: &str) -> AgentBuilder {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), None));
        self
    }

    /// Appends to the log file rather than truncating it (one log across restarts).
    pub fn append_log(mut self) -> AgentBuilder {
        self.append = true;
        self
    }

    /// Leaves `--log-format` to the arguments (the agent's default is text): for a test of
    /// the text format itself. Log lines then have no level or fields, and no commits.
    pub fn text_log(mut self) -> AgentBuilder {
        self.json = false;
        self
    }

    /// Starts it.
    pub fn spawn(self) -> Agent {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        if self.json {
            cmd.args(["--log-format", "json"]);
        }
        cmd.args(&self.args);
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        // Truncated, or appended to (one log across an agent's restarts).
        let stderr = match &self.log {
            Some(path) => Stdio::from(
                File::options()
                    .create(true)
                    .write(true)
                    .append(self.append)
                    .truncate(!self.append)
                    .open(path)
                    .unwrap_or_else(|e| panic!("log file {}: {e}", path.display())),
            ),
            None => Stdio::null(),
        };
        // With an appended log, what an earlier agent wrote is not this one's.
        let reader = match &self.log {
            Some(path) if self.append => LogReader::from_end(path),
            _ => LogReader::default(),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Agent {
            child,
            log: self.log,
            reader: Mutex::new(reader),
        }
    }
}

/// A running agent; killed (SIGKILL) on drop.
pub struct Agent {
    child: Child,
    log: Option<PathBuf>,
    reader: Mutex<LogReader>,
}

impl Agent {
    /// The log file, if the log is kept.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Runs `f` on the log read so far.
    fn read<T>(&self, f: impl FnOnce(&LogReader) -> T) -> T {
        let mut r = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &self.log {
            r.update(path);
        }
        f(&r)
    }

    /// The log so far, every line as the text format shows it ([`LogLine::render`]).
    pub fn log(&self) -> String {
        self.read(|r| r.text().to_string())
    }

    /// The log so far, line by line.
    pub fn lines(&self) -> Vec<LogLine> {
        self.read(|r| r.lines().to_vec())
    }

    /// Whether the log contains `needle` (in a message, a field or the level).
    pub fn has(&self, needle: &str) -> bool {
        self.read(|r| r.text().contains(needle))
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.has(needle))
    }

    /// How many times `needle` occurs in the log so far.
    pub fn count(&self, needle: &str) -> usize {
        self.read(|r| r.text().matches(needle).count())
    }

    /// Waits until the log holds `needle` `n` times; how long that took.
    pub fn wait_count(&self, needle: &str, n: usize, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        wait_until(timeout, || self.count(needle) >= n).then(|| start.elapsed())
    }

    /// The commits logged so far, in order.
    pub fn commits(&self) -> Vec<Commit> {
        self.read(|r| r.lines().iter().filter_map(LogLine::commit).collect())
    }

    /// How many commits were logged so far.
    pub fn commit_count(&self) -> usize {
        self.read(|r| r.lines().iter().filter(|l| l.commit().is_some()).count())
    }

    /// Waits until `n` commits in all have been logged; how long that took. A commit's line
    /// is written after the kernel applied it: a probe can see a commit before its line.
    pub fn wait_commits(&self, n: usize, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        wait_until(timeout, || self.commit_count() >= n).then(|| start.elapsed())
    }

    /// Waits until the agent's policy is in force: its first commit logged, or the table it
    /// found already the wanted one (a restart with the config unchanged commits nothing;
    /// on kernels before 6.9 a table another agent left has no owner flag to change either).
    /// How long that took.
    pub fn wait_in_force(&self, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        wait_until(timeout, || {
            self.commit_count() >= 1 || self.has("already as wanted")
        })
        .then(|| start.elapsed())
    }

    /// The commit count once no commit line has come for 300 ms. A commit's log line is
    /// written after the kernel applied it, so a listing or a probe can see the commit before
    /// its line (it did in a slow guest).
    pub fn settled_commits(&self) -> usize {
        let mut last = self.commit_count();
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.commit_count();
            if now == last {
                return now;
            }
            last = now;
        }
    }

    /// The process id (the agent's own: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/PID/status` value in KiB (`VmRSS`, `VmHWM`), if the process is there.
    pub fn status_kib(&self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Resident memory in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS")
    }

    /// Peak resident memory in KiB (`VmHWM`).
    pub fn peak_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM")
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait for the agent")
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)
            .expect("kill");
    }

    /// SIGTERM, as a rolling update does, and the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
