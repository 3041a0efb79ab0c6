//! The two operations the agent performs on the kernel: replace its table, and delete it,
//! over the command socket. A replace is one batch, or for the forms that must create sets a
//! short sequence of them (`create.rs`).

use super::create;
use super::encode::{self, ReplaceForm, reshape};
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
    /// Transactions committed, each one ruleset generation: 0 when nothing was sent, 1 for
    /// the one-batch forms, more when sets were created before the rules that use them
    /// ([`ReplaceForm::Create`], [`ReplaceForm::Handover`]).
    pub transactions: u32,
}

impl CommitReport {
    /// The report of a commit that found the table as wanted and sent nothing (no
    /// transaction: one that changes nothing makes no new generation and would look like
    /// someone else's). `elements`: what the table holds.
    pub fn nothing_sent(elements: usize) -> Self {
        CommitReport {
            elements,
            sent: 0,
            messages: 0,
            bytes: 0,
            form: ReplaceForm::Delta,
            counters_reset: false,
            transactions: 0,
        }
    }
}

/// Brings the table to `table`, whether or not it exists, with either the old or the new
/// policy in force at every instant.
///
/// Cheapest first:
/// - When the live table is known at the kernel's current generation (this socket's
///   previous commit, or the table a new process read at start, followed through the
///   notified changes of others' transactions since: see [`NftSocket::follow`]), only the
///   difference is sent ([`ReplaceForm::Delta`]), as a compare-and-commit on that
///   generation. A repair then sends the inverse of what someone else changed.
/// - When the live table has exactly the desired sets and chains, it is updated in place
///   (sets and chains flushed and refilled), so its sets never stop matching during the
///   transaction (see [`ReplaceForm::InPlace`]).
/// - When the table is missing, its sets are created and filled first and its rules added in
///   a second transaction ([`ReplaceForm::Create`]); when it exists but cannot be updated in
///   place (other owner/persist flags, something planted), through a handover table
///   ([`ReplaceForm::Handover`]).
///
/// Every batch is valid only at the ruleset generation it was computed from; a commit by
/// anyone in between makes the kernel refuse it, and the table is read again: a refused
/// difference is computed again from the fresh read ([`DIFFERENCE_READS`]), a refused full
/// form chosen again ([`create::ATTEMPTS`]).
pub fn replace_table(sock: &mut NftSocket, table: &Table) -> Result<CommitReport, NftError> {
    replace_table_with(sock, table, &mut || {})
}

/// [`replace_table`] with a seam for tests: `between` runs after each read of the live
/// table that a full form or a difference is chosen from, before the first batch sent from
/// it (a test changes the ruleset there to see the batch refused and the change repaired).
/// The agent always calls [`replace_table`].
#[doc(hidden)]
pub fn replace_table_with(
    sock: &mut NftSocket,
    table: &Table,
    between: &mut dyn FnMut(),
) -> Result<CommitReport, NftError> {
    let before = sock.generation();
    // The live table as known (our previous commit, or what a new process found, followed
    // through others' notified changes), if the model is at the ruleset's generation.
    // Taken, not copied: this commit records its own below.
    let followed = sock
        .take_known()
        .filter(|k| before.as_ref().is_ok_and(|now| *now == k.generation()));
    let report = match followed {
        Some(known) => commit(sock, table, Some(known), true, between),
        None => {
            let read = read_timed(sock, &table.name, "no model at the current generation");
            commit(sock, table, read, false, between)
        }
    };
    // Remembered only when the generations prove that the live table is `table`: the
    // batches that made it were each conditioned on the generation the one before made (the
    // first on the generation its model or read was at), and the ruleset is still at the
    // one they made. Someone may have committed before that read, not after. Anything else
    // (an unconditioned last attempt, someone committed since, a read failed) means reading
    // the table next time.
    let remembered = match (&report, sock.generation()) {
        (Ok((_, Some(proven))), Ok(after)) if after == *proven => Some(after),
        _ => None,
    };
    sock.set_known(remembered.map(|g| Known::new(g, table.clone())));
    report.map(|(r, _)| r)
}

/// [`read_known`], with a debug line saying why and how long it took.
fn read_timed(sock: &mut NftSocket, name: &str, why: &str) -> Option<Known> {
    let t0 = std::time::Instant::now();
    let read = read_known(sock, name);
    tracing::debug!(
        found = read.is_some(),
        "{why}: read the table in {:.1?}",
        t0.elapsed()
    );
    read
}

/// How many differences a commit tries in all while the kernel refuses them because
/// someone committed after the generation they were computed at (each after the first from
/// a fresh read of the table), before the full form. A full form sends every element (the in-place form refills every set); under a tamper
/// storm that was one batch of 100,000 elements at 50,000 prefixes for a difference of a
/// few, and the kernel once took 8 s to apply it. A read costs about 25 ms at 50,000
/// prefixes (block sets).
pub const DIFFERENCE_READS: usize = 3;

/// The live table read whole at one generation, when the model of it was lost (someone
/// committed around our last commit, notifications were lost, a new process found a table
/// it could not learn): a repair or a change then sends the difference to what is live
/// (the inverse of a rule someone inserted, a few elements) instead of a full form that
/// sends every element again (about 500 ms at 50,000 prefixes under a tamper storm, against
/// a read of about 25 ms).
///
/// One attempt: a commit by anyone during the read gives up (the full form reads again
/// anyway). Not taken, because a difference would leave it in place: a table with anything
/// the model cannot express, and a handover table left by a commit that failed half-way
/// (only the full forms delete it).
fn read_known(sock: &mut NftSocket, name: &str) -> Option<Known> {
    if !matches!(
        sock.skeleton(&encode::create::handover_name(name)),
        Ok(None)
    ) {
        return None;
    }
    match sock.read_table_at_tries(name, 1) {
        Ok(Some((generation, live))) if live.foreign.is_empty() => {
            Some(Known::new(generation, live))
        }
        Ok(_) => None,
        Err(e) => {
            tracing::debug!("reading table inet {name} for a difference: {e}");
            None
        }
    }
}

/// The commit in its cheapest form, and the generation its batches prove (see
/// [`create::Proven`]). A reshape (the set list changed) only from our own commit
/// (`followed`), never from a table read: what a read shows in the shape of ours (an empty
/// chain someone planted) is not ours to carry through the phases; the full forms remove it.
///
/// A difference the kernel refuses because someone committed after its generation is
/// computed again from a fresh read, up to [`DIFFERENCE_READS`] times, before the full form.
fn commit(
    sock: &mut NftSocket,
    table: &Table,
    mut known: Option<Known>,
    mut followed: bool,
    between: &mut dyn FnMut(),
) -> Result<(CommitReport, create::Proven), NftError> {
    for attempt in 1..=DIFFERENCE_READS {
        let Some(k) = known.take() else { break };
        match difference(sock, table, &k, followed, between)? {
            Difference::Done(done) => return Ok(done),
            Difference::Refused if attempt < DIFFERENCE_READS => {
                known = read_timed(sock, &table.name, "the difference was refused");
                followed = false;
            }
            Difference::Refused | Difference::Full => break,
        }
    }
    create::full(sock, table, between)
}

/// What [`difference`] came to.
enum Difference {
    /// Committed (or nothing to commit, or a reshape and whatever followed it).
    Done((CommitReport, create::Proven)),
    /// Refused: someone committed after the generation the difference was computed at.
    Refused,
    /// A difference cannot do it (the set list changed outside a reshape, a difference as
    /// large as the table, a batch refused for another reason): the full form.
    Full,
}

/// The commit as a difference from `known`, the live table at its generation.
fn difference(
    sock: &mut NftSocket,
    table: &Table,
    known: &Known,
    followed: bool,
    between: &mut dyn FnMut(),
) -> Result<Difference, NftError> {
    let delta = encode::delta_known(known, table, sock.next_seq());
    if delta.is_none()
        && followed
        && known.edits().is_empty()
        && let Some(plan) = reshape::reshape(known.table(), table)
    {
        let mut before = Partial::default();
        return match send_reshape(sock, table, &plan, known.generation(), &mut before) {
            Ok(report) => {
                let proven = create::advance(known.generation(), report.transactions);
                Ok(Difference::Done((report, Some(proven))))
            }
            // Refused: someone committed in between. What the phases sent is unreachable
            // or the new policy; the full form below reads the table and replaces it.
            Err(e @ NftError::Rejected { .. }) => {
                tracing::debug!(
                    "reshape refused after {} transactions: {e}",
                    before.transactions
                );
                create::full(sock, table, between)
                    .map(|(r, proven)| Difference::Done((before.add_to(r), proven)))
            }
            Err(e) => Err(e),
        };
    }
    let Some(batch) = delta else {
        return Ok(Difference::Full);
    };
    let rules_changed = known.rules_change(table);
    let total = encode::element_count(table);
    if batch.elements == 0 && !rules_changed {
        let report = CommitReport::nothing_sent(total);
        return Ok(Difference::Done((report, Some(known.generation()))));
    }
    // A difference larger than the table itself (most prefixes changed) costs the kernel
    // more than flushing and refilling: deleting elements one by one is slower than the
    // flush. Measured at 10,000 prefixes, every one changed: 80 ms as a difference, 70 ms
    // in place. A set someone flushed is refilled faster in place too: 50,000 prefixes,
    // 247 ms in place against 298 ms as a difference.
    if batch.elements >= total {
        tracing::debug!(
            "a difference of {} elements, the table has {total}: a full form",
            batch.elements
        );
        return Ok(Difference::Full);
    }
    if !followed {
        // The seam's "after a read, before the batch chosen from it".
        between();
    }
    match sock.send_batch(&batch) {
        Err(e @ NftError::Rejected { .. }) => {
            tracing::debug!("the difference was refused: {e}");
            // Someone committed since the generation (ERESTART): computed again from a
            // fresh read. Refused for another reason, the table is not what the model says
            // after all: the full form.
            Ok(if create::stale(&e) {
                Difference::Refused
            } else {
                Difference::Full
            })
        }
        other => {
            let report = CommitReport {
                elements: total,
                sent: batch.elements,
                messages: batch.msgs.len(),
                bytes: batch.bytes.len(),
                form: ReplaceForm::Delta,
                counters_reset: rules_changed,
                transactions: 1,
            };
            let proven = create::advance(known.generation(), 1);
            other.map(|()| Difference::Done((report, Some(proven))))
        }
    }
}

/// What the transactions of a reshape cut short committed: the full form that follows
/// reports them too (the daemon accounts for the ruleset's generations by the count).
#[derive(Debug, Default)]
struct Partial {
    sent: usize,
    messages: usize,
    bytes: usize,
    transactions: u32,
}

impl Partial {
    fn add_to(&self, mut r: CommitReport) -> CommitReport {
        r.sent += self.sent;
        r.messages += self.messages;
        r.bytes += self.bytes;
        r.transactions += self.transactions;
        r
    }
}

/// Sends the phases of `plan`, each valid only at the generation the one before made
/// (starting at `generation`, the model's); what committed is counted in `done`.
fn send_reshape(
    sock: &mut NftSocket,
    table: &Table,
    plan: &reshape::Reshape<'_>,
    mut generation: u32,
    done: &mut Partial,
) -> Result<CommitReport, NftError> {
    for phase in 0..reshape::PHASES {
        let Some(batch) = plan.batch(phase, sock.next_seq(), Some(generation)) else {
            continue;
        };
        sock.send_batch(&batch)?;
        done.sent += batch.elements;
        done.messages += batch.msgs.len();
        done.bytes += batch.bytes.len();
        done.transactions += 1;
        generation = create::next_generation(generation);
    }
    Ok(CommitReport {
        elements: encode::element_count(table),
        sent: done.sent,
        messages: done.messages,
        bytes: done.bytes,
        form: ReplaceForm::Reshape,
        counters_reset: plan.rules_change(),
        transactions: done.transactions,
    })
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
