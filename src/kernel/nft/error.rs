//! The error type of the nf_tables layer. A leaf: every other module of [`crate::kernel::nft`] uses
//! it, it uses none of them.

use std::fmt;

use crate::kernel::netlink::Malformed;

/// Errors of the netlink layer.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// A system call on the socket failed.
    #[error("{op} on the nf_tables netlink socket failed")]
    Io {
        /// The operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a batch; the whole transaction was rolled back.
    #[error("{}", Rejected { what, attr, kernel_msg, errno: *errno, failed: *failed })]
    Rejected {
        /// The message it refused (`NEWSET nonmasq-v4`, ...).
        what: String,
        /// Its nf_tables message type, when it was one of the batch's messages.
        kind: Option<u16>,
        /// The attribute it pointed at, from the extended ACK.
        attr: Option<String>,
        /// The kernel's own text, from the extended ACK.
        kernel_msg: Option<String>,
        /// The errno.
        errno: i32,
        /// How many messages of the batch failed in all.
        failed: usize,
    },
    /// A read request failed.
    #[error("the kernel answered {request} with: {}", std::io::Error::from_raw_os_error(*errno))]
    Kernel {
        /// The request.
        request: &'static str,
        /// The errno.
        errno: i32,
    },
    /// Not every message of a batch was acknowledged.
    #[error("the kernel acknowledged {got} of {expected} messages of the batch")]
    MissingAck {
        /// Messages sent.
        expected: usize,
        /// ACKs received.
        got: usize,
    },
    /// The ruleset kept changing while a table was read.
    #[error("the ruleset changed while it was being read (tried several times)")]
    Interrupted,
    /// A message from the kernel did not parse.
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

impl NftError {
    /// The errno of a kernel refusal, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftError::Rejected { errno, .. } | NftError::Kernel { errno, .. } => Some(*errno),
            NftError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

struct Rejected<'a> {
    what: &'a str,
    attr: &'a Option<String>,
    kernel_msg: &'a Option<String>,
    errno: i32,
    failed: usize,
}

impl fmt::Display for Rejected<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the kernel rejected {}", self.what)?;
        if let Some(a) = self.attr {
            write!(f, " at attribute {a}")?;
        }
        write!(f, ": {}", std::io::Error::from_raw_os_error(self.errno))?;
        if let Some(m) = self.kernel_msg {
            write!(f, " ({m})")?;
        }
        match self.errno {
            libc::EPERM => f.write_str(
                "; the agent needs CAP_NET_ADMIN in this network namespace, and an owned table \
                 can only be changed by the process that owns it",
            )?,
            libc::EOPNOTSUPP => {
                f.write_str("; this kernel may not support a requested feature (table flags?)")?
            }
            _ => {}
        }
        if self.failed > 1 {
            write!(f, " ({} messages failed; the first is shown)", self.failed)?;
        }
        f.write_str("; the transaction was rolled back, nothing changed")
    }
}
