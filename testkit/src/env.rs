//! Where the tests run: root or not, host or emulated guest, which kernel; running commands.

use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Whether root tests should run; they need CAP_SYS_ADMIN and CAP_NET_ADMIN. Without root
/// they fail, unless `NMA_SKIP_ROOT_TESTS=1` asks to skip them (then this says so and returns
/// false). [`root_or_skip!`](crate::root_or_skip) is the usual way to call it.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("NMA_SKIP_ROOT_TESTS").is_some() {
        eprintln!("skipped: needs root (NMA_SKIP_ROOT_TESTS is set)");
        return false;
    }
    panic!(
        "this test creates network namespaces and needs root; set NMA_SKIP_ROOT_TESTS=1 to skip"
    );
}

/// Whether the tests run in an emulated guest: the VM suite under TCG (`vm-tests/init`
/// sets `NMA_GUEST_ACCEL`), one virtual CPU at about a sixth of the host's speed.
pub fn emulated() -> bool {
    std::env::var("NMA_GUEST_ACCEL").is_ok_and(|a| a == "tcg")
}

/// How many times longer than on the host a reaction may take: 1 on the host, 3 in an
/// emulated guest. Only timing claims and start-up waits use it; the claims themselves are
/// the host's figures (docs/design.md, "Tests").
pub fn slack() -> u32 {
    if emulated() { 3 } else { 1 }
}

/// Whether the running kernel is at least `major.minor`.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    release_at_least(&release, major, minor)
}

/// The depth of a hostile jump graph (each chain jumping 4 times to the next) this kernel
/// can itself load: `depth` from 6.12 on, at most 8 before. 5.10 and 6.1 validate a new
/// rule's jumps by walking every path (4^depth): loading the depth-15 graph locked a CPU up
/// in both for over 400 s (soft lockup in `nft`), while 6.12 and 6.18 load it at once. The
/// agent's own walk is what the tests measure, and it is proved at full depth on the host
/// and on 6.12; older kernels get the deepest graph they load in a moment.
pub fn kernel_walkable_depth(depth: usize) -> usize {
    if kernel_at_least(6, 12) {
        depth
    } else {
        depth.min(8)
    }
}

/// Whether a kernel release string (`6.12.5-amd64`) is at least `major.minor`.
fn release_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let a: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let b: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (a, b) >= (major, minor)
}

/// Polls `f` every 5 ms until it is true or `timeout` passes; whether it became true.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Tests of one program that load the CPU for seconds (half a million prefixes, storms,
/// floods) hold this while they run, so that none skews another's timing on a small machine.
pub fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a command and panics with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `ip` with `args`; panics on failure.
pub fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// Whether `program --version` runs and succeeds (the program is installed).
pub fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(release_at_least("6.12.5-amd64\n", 6, 9));
        assert!(release_at_least("6.9.0", 6, 9));
        assert!(!release_at_least("5.10.0-32-cloud-amd64", 5, 12));
        assert!(release_at_least("5.12", 5, 12));
        assert!(!release_at_least("", 3, 13));
    }
}
