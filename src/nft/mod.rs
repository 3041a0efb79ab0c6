//! nf_tables over netlink, in pure Rust from the kernel UAPI headers.
//!
//! - [`encode`] and [`decode`] (with [`expr`] and [`attr`]) are pure and byte-tested;
//! - [`socket`] is the I/O: one command socket that sends batches, checks every ACK and reads
//!   tables back;
//! - [`replace_table`] and [`delete_table`] are the two operations the agent performs.

pub mod attr;
pub mod decode;
pub mod encode;
pub mod events;
pub mod expr;
pub mod socket;
mod sys;
pub mod uapi;

use std::fmt;

pub use encode::ReplaceForm;
pub use socket::NftSocket;

use crate::model::Table;

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
    Malformed(#[from] attr::Malformed),
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

/// What one replace sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitReport {
    /// Set elements sent (interval starts and ends).
    pub elements: usize,
    /// Messages in the batch.
    pub messages: usize,
    /// Batch size in bytes.
    pub bytes: usize,
    /// The form that committed.
    pub form: ReplaceForm,
}

/// Replaces the table atomically in one transaction, whether or not it exists.
///
/// The common form starts by adding the table, which the kernel treats as an update of an
/// existing one and refuses (EOPNOTSUPP) if that would change its owner or persist flag. In
/// that case the table exists with other flags, so the delete-first form is valid and used.
pub fn replace_table(sock: &mut NftSocket, table: &Table) -> Result<CommitReport, NftError> {
    let send = |sock: &mut NftSocket, form| {
        let batch = encode::replace(table, sock.next_seq(), form);
        sock.send_batch(&batch).map(|()| CommitReport {
            elements: batch.elements,
            messages: batch.msgs.len(),
            bytes: batch.bytes.len(),
            form,
        })
    };
    match send(sock, ReplaceForm::AddDeleteAdd) {
        Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => match sock.table_info(&table.name)? {
            Some(existing) if existing.flags != table.flags => send(sock, ReplaceForm::DeleteAdd),
            _ => Err(e),
        },
        other => other,
    }
}

/// Deletes the table. Returns false when it did not exist.
pub fn delete_table(sock: &mut NftSocket, name: &str) -> Result<bool, NftError> {
    let batch = encode::delete(name, sock.next_seq());
    match sock.send_batch(&batch) {
        Ok(()) => Ok(true),
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}
