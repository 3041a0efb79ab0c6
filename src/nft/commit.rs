//! The two operations the agent performs on the kernel: replace its table atomically, and
//! delete it. Each is one batch, sent over the command socket.

use super::encode::{self, ReplaceForm};
use super::error::NftError;
use super::socket::NftSocket;
use crate::model::Table;

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
/// When the live table has exactly the desired sets and chains, it is updated in place
/// (sets and chains flushed and refilled), so its sets never stop matching during the
/// transaction (see [`ReplaceForm::InPlace`]). Otherwise, or if the kernel refuses that batch,
/// the table is replaced: the common form starts by adding the table, which the kernel treats
/// as an update of an existing one and refuses (EOPNOTSUPP) if that would change its owner
/// or persist flag. In that case the table exists with other flags, so the delete-first form
/// is valid and used.
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
    // A skeleton that cannot be read (a name that is not ours to decode, a dump
    // interrupted) only means the replace form, which needs no knowledge of the live table.
    let live = sock.skeleton(&table.name).ok().flatten();
    if live.is_some_and(|live| encode::fits_in_place(table, &live)) {
        match send(sock, ReplaceForm::InPlace) {
            // Refused (the table changed since the skeleton was read): the replace form.
            Err(NftError::Rejected { .. }) => {}
            other => return other,
        }
    }
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
