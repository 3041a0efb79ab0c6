//! The two operations the agent performs on the kernel: replace its table atomically, and
//! delete it. Each is one batch, sent over the command socket.

use super::encode::{self, ReplaceForm};
use super::error::NftError;
use super::live::Known;
use super::socket::NftSocket;
use crate::model::Table;

/// What one replace sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitReport {
    /// Set elements the table holds after the commit (interval starts and ends).
    pub elements: usize,
    /// Set elements this commit sent: all of them, or for a difference the added and
    /// deleted ones.
    pub sent: usize,
    /// Messages in the batch.
    pub messages: usize,
    /// Batch size in bytes.
    pub bytes: usize,
    /// The form that committed.
    pub form: ReplaceForm,
    /// Whether the table's rules were created anew, so their counters start from zero
    /// (every form but a difference that left the rules alone).
    pub counters_reset: bool,
}

/// Replaces the table atomically in one transaction, whether or not it exists.
///
/// Three forms, cheapest first:
/// - When the live table is known at the kernel's current generation (this socket's
///   previous commit, or the table a new process read at start, followed through the
///   notified changes of others' transactions since: see [`NftSocket::follow`]), only the
///   difference is sent ([`ReplaceForm::Delta`]), as a compare-and-commit on that
///   generation. A repair then sends the inverse of what someone else changed.
/// - When the live table has exactly the desired sets and chains, it is updated in place
///   (sets and chains flushed and refilled), so its sets never stop matching during the
///   transaction (see [`ReplaceForm::InPlace`]).
/// - Otherwise, or if the kernel refuses either of those (the table changed meanwhile), the
///   table is replaced: the common form starts by adding the table, which the kernel treats
///   as an update of an existing one and refuses (EOPNOTSUPP) if that would change its
///   owner or persist flag. In that case the table exists with other flags, so the
///   delete-first form is valid and used.
pub fn replace_table(sock: &mut NftSocket, table: &Table) -> Result<CommitReport, NftError> {
    let before = sock.generation();
    // The live table as known (our previous commit, or what a new process found, followed
    // through others' notified changes), if the model is at the ruleset's generation.
    // Taken, not copied: this commit records its own below.
    let known = sock
        .take_known()
        .filter(|k| before.as_ref().is_ok_and(|now| *now == k.generation()));
    let report = commit(sock, table, known.as_ref());
    // Remembered only when the generations prove that the live table is `table`: a batch
    // that changed something makes exactly one generation (so `before + 1` and nothing
    // else), a difference with nothing in it is not sent and makes none. Anything else
    // (someone committed around ours, a read failed) means reading the table next time.
    let after = sock.generation();
    let remembered = match (&report, before, after) {
        (Ok(r), Ok(b), Ok(a)) if r.messages == 0 && a == b => Some(a),
        (Ok(r), Ok(b), Ok(a)) if r.messages > 0 && a == b.wrapping_add(1) => Some(a),
        _ => None,
    };
    sock.set_known(remembered.map(|g| Known::new(g, table.clone())));
    report
}

fn commit(
    sock: &mut NftSocket,
    table: &Table,
    known: Option<&Known>,
) -> Result<CommitReport, NftError> {
    if let Some(known) = known {
        if let Some(batch) = encode::delta_known(known, table, sock.next_seq()) {
            let old = known.table();
            let rules_changed = old.chains != table.chains
                || table
                    .chains
                    .iter()
                    .any(|c| known.edits().chain_dirty(&c.name));
            if batch.elements == 0 && !rules_changed {
                // Nothing to change: not sent, since a transaction that changes nothing
                // makes no new generation and would look like someone else's.
                return Ok(CommitReport {
                    elements: encode::element_count(table),
                    sent: 0,
                    messages: 0,
                    bytes: 0,
                    form: ReplaceForm::Delta,
                    counters_reset: false,
                });
            }
            // A difference larger than the table itself (most prefixes changed) costs the
            // kernel more than flushing and refilling: deleting elements one by one is
            // slower than the flush. Measured at 10,000 prefixes, every one changed: 80 ms
            // as a difference, 70 ms in place. A set someone flushed is refilled faster in
            // place too: 50,000 prefixes, 247 ms in place against 298 ms as a difference.
            let total = encode::element_count(table);
            if batch.elements >= total {
                return full(sock, table);
            }
            match sock.send_batch(&batch) {
                // Refused: someone committed since the generation was read (ERESTART), or
                // the table is not what we left after all; a full form below.
                Err(NftError::Rejected { .. }) => {}
                other => {
                    return other.map(|()| CommitReport {
                        elements: total,
                        sent: batch.elements,
                        messages: batch.msgs.len(),
                        bytes: batch.bytes.len(),
                        form: ReplaceForm::Delta,
                        counters_reset: rules_changed,
                    });
                }
            }
        }
    }
    full(sock, table)
}

/// The full forms: in place when the live table's skeleton fits, else the replace.
fn full(sock: &mut NftSocket, table: &Table) -> Result<CommitReport, NftError> {
    let send = |sock: &mut NftSocket, form| {
        let batch = encode::replace(table, sock.next_seq(), form);
        sock.send_batch(&batch).map(|()| CommitReport {
            elements: batch.elements,
            sent: batch.elements,
            messages: batch.msgs.len(),
            bytes: batch.bytes.len(),
            form,
            counters_reset: true,
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
