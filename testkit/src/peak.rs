//! The peak resident memory of a short-lived process (`--explain`, `--once`), exact.
//!
//! Polling `/proc/PID/status` for `VmHWM` cannot measure a process that lives a few
//! milliseconds: the last sample may come before the process grew (a test read 992 KiB for an
//! agent that peaked at 10 MiB), and once it exits its memory map is gone. The kernel keeps
//! the peak in the child's resource usage, which `wait4` returns with its exit status.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` (stdout and stderr discarded) to its end; its peak resident set in KiB (the
/// kernel's `ru_maxrss` of that one child: `ip netns exec` execs the program, so it is the
/// program's), its exit status and how long it ran.
pub fn run_peak_kib(mut cmd: Command) -> (u64, ExitStatus, Duration) {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: `wait4` writes only into the two locals passed by pointer; the child is ours
    // and not waited for anywhere else (`child` is never asked for its status: reaping it
    // here is the point).
    #[allow(unsafe_code)]
    let (rc, usage) = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let rc = libc::wait4(pid, &mut status, 0, &mut usage);
        (rc, usage)
    };
    assert_eq!(rc, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    let took = start.elapsed();
    (
        u64::try_from(usage.ru_maxrss).unwrap_or(0),
        ExitStatus::from_raw(status),
        took,
    )
}
