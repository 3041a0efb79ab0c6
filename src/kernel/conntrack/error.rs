//! The error type of the conntrack layer: failures of a whole operation (the socket, a dump
//! the kernel refused). A single flow the kernel would not delete is not an error of the
//! operation; it is counted in the report, by errno.

use std::io;

use crate::kernel::netlink::Malformed;

/// Errors of [`crate::kernel::conntrack`].
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// A system call on the socket failed.
    #[error("{op} on the conntrack netlink socket failed")]
    Io {
        /// The operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused a request.
    #[error("the kernel refused {request}{}", hint(request, source.raw_os_error()))]
    Kernel {
        /// The request (`the IPv4 conntrack dump`, ...).
        request: &'static str,
        /// The errno, as an OS error.
        #[source]
        source: io::Error,
    },
    /// The dump was interrupted every time it was tried (the kernel flagged it inconsistent,
    /// or the socket overflowed).
    #[error("the {request} was interrupted {attempts} times in a row")]
    Interrupted {
        /// The dump.
        request: &'static str,
        /// How often it was tried.
        attempts: usize,
    },
    /// Requests went unanswered although the kernel answers inside `sendmsg`.
    #[error("the kernel answered {answered} of {sent} {request} requests")]
    MissingAck {
        /// The kind of request.
        request: &'static str,
        /// Requests sent in the datagram.
        sent: usize,
        /// Answers received.
        answered: usize,
    },
    /// A reply from the kernel did not parse as netlink.
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

impl ConntrackError {
    /// A refusal of `request` with `errno`.
    pub(crate) fn kernel(request: &'static str, errno: i32) -> ConntrackError {
        ConntrackError::Kernel {
            request,
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// The errno behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            ConntrackError::Io { source, .. } | ConntrackError::Kernel { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}

/// What an errno most likely means for a conntrack request.
fn hint(request: &str, errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EPERM) => " (conntrack needs CAP_NET_ADMIN in the socket's network namespace)",
        // nfnetlink answers EINVAL for a subsystem that is not registered.
        Some(libc::EINVAL | libc::EOPNOTSUPP) if request.contains("dump") => {
            " (is ctnetlink, the kernel's nf_conntrack_netlink, available?)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_errors_carry_errno_as_cause_and_a_hint() {
        let e = ConntrackError::kernel("the IPv4 conntrack dump", libc::EPERM);
        assert_eq!(e.errno(), Some(libc::EPERM));
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        let cause = std::error::Error::source(&e).expect("cause").to_string();
        assert!(cause.contains("not permitted"), "{cause}");
        let e = ConntrackError::kernel("the IPv6 conntrack dump", libc::EINVAL);
        assert!(e.to_string().contains("nf_conntrack_netlink"), "{e}");
    }
}
