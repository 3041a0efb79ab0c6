//! The full forms (everything but the difference), each batch a compare-and-commit: the
//! ruleset generation is read before the live table's skeleton, every batch carries it (or
//! the one the previous batch of the commit made), and a commit by anyone after the read
//! makes the kernel refuse the batch (ERESTART). Then the table is read again and the form
//! chosen again, at most [`ATTEMPTS`] times.
//!
//! The forms and their order are decided by [`encode::create::steps`]: in place when the
//! live table fits; otherwise sets first and rules in a later transaction (our table
//! missing), through a handover table when our table exists and cannot be updated in place.
//! This file sends them and cleans up after a failure.

use super::commit::CommitReport;
use super::encode::create::{self, Live, Step};
use super::encode::{self, ReplaceForm};
use super::error::NftError;
use super::socket::NftSocket;
use crate::model::Table;

/// How many times a full commit reads the live table and chooses its form, when the kernel
/// refuses a batch because someone committed after the read.
pub const ATTEMPTS: usize = 3;

/// Whether the kernel refused a batch because the ruleset moved on since the generation it
/// carries.
pub fn stale(e: &NftError) -> bool {
    matches!(
        e,
        NftError::Rejected {
            errno: libc::ERESTART,
            ..
        }
    )
}

/// The generation a successful transaction makes from `g` (the kernel skips 0, which in a
/// batch means "no check").
pub(super) fn next_generation(g: u32) -> u32 {
    match g.wrapping_add(1) {
        0 => 1,
        n => n,
    }
}

/// Brings our table to `table` in the full forms. `between` runs after each read of the live
/// table and before the first batch chosen from it (a seam for tests that change the ruleset
/// there; a no-op otherwise).
///
/// With the report, the generation the last attempt's batches made when each was
/// conditioned on the one before (see [`Proven`]).
pub(super) fn full(
    sock: &mut NftSocket,
    table: &Table,
    between: &mut dyn FnMut(),
) -> Result<(CommitReport, Proven), NftError> {
    let handover = create::handover_of(table);
    // Every transaction committed counts, those of an attempt cut short too: the daemon
    // and the soak test account for the generations by this number.
    let mut sent = Sent::default();
    let mut attempt = 1;
    loop {
        // The last attempt is not conditioned on the generation: under a storm of commits
        // (a tamperer committing every few milliseconds) every conditioned batch is refused
        // and the table would never be repaired. Its forms are self-contained (each set and
        // chain they name is flushed and refilled), and the daemon, seeing generations it
        // cannot account for, follows it with a full check that catches anything planted
        // meanwhile.
        let conditioned = attempt < ATTEMPTS;
        match once(sock, table, &handover, between, &mut sent, conditioned) {
            Ok((form, proven)) => return Ok((report(table, form, &sent), proven)),
            Err(e) if stale(&e) && attempt < ATTEMPTS => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Sums of the batches a commit sent.
#[derive(Debug, Default)]
struct Sent {
    elements: usize,
    messages: usize,
    bytes: usize,
    transactions: u32,
}

/// The generation at which a commit's batches leave the table exactly as wanted, when every
/// one of them was a compare-and-commit on the generation the one before made (the first on
/// the generation its read was made at): no one else can have committed in between, so if
/// the ruleset is still at this generation, the live table is known without reading it.
/// `None` when a batch was not conditioned.
pub type Proven = Option<u32>;

/// The generation `n` transactions make from `g`.
pub(super) fn advance(g: u32, n: u32) -> u32 {
    (0..n).fold(g, |g, _| next_generation(g))
}

/// One read of the live tables and the steps chosen from it; the form that committed, and
/// the generation it proves.
fn once(
    sock: &mut NftSocket,
    table: &Table,
    handover: &Table,
    between: &mut dyn FnMut(),
    sent: &mut Sent,
    conditioned: bool,
) -> Result<(ReplaceForm, Proven), NftError> {
    // Read before the skeleton: a commit by anyone after this refuses our batches.
    let generation = sock.generation()?;
    let tx_before = sent.transactions;
    let proven =
        |sent: &Sent| conditioned.then(|| advance(generation, sent.transactions - tx_before));
    let live = sock.skeleton(&table.name);
    if let Ok(Some(l)) = &live
        && l.owner.is_some_and(|port| port != sock.port_id())
    {
        // Another live socket owns the table: the kernel refuses any change of it, and the
        // refusal is reported as before (the daemon tells an owner's refusal apart). No
        // handover, which would put our policy next to the owner's.
        between();
        let form = ReplaceForm::AddDeleteAdd;
        let at = conditioned.then_some(generation);
        let batch = encode::replace_at(table, sock.next_seq(), form, at);
        sock.send_batch(&batch)?;
        sent.add(&batch);
        return Ok((form, proven(sent)));
    }
    // A skeleton that cannot be read (a name that is not ours to decode) is a table that
    // cannot be updated in place.
    // A table with our sets and no base chain (a creation cut short after its first
    // transaction, or our base chains deleted) translates nothing. When its sets and other
    // chains are as wanted, the base chains alone complete it; otherwise the in-place form
    // refills it and adds them.
    let ours = match &live {
        Ok(None) => Live::Absent,
        Ok(Some(l)) if encode::unchained(table, l) => {
            if l.flags == table.flags && all_but_base_chains(sock, table, generation) {
                Live::Unchained
            } else {
                Live::Fits
            }
        }
        Ok(Some(l)) if encode::fits_in_place(table, l) => Live::Fits,
        _ => Live::Other,
    };
    let left = match sock.skeleton(&handover.name) {
        Ok(None) => Live::Absent,
        Ok(Some(l)) if encode::fits_in_place(handover, &l) => Live::Fits,
        _ => Live::Other,
    };
    between();
    let plan = create::steps(table, handover, ours, left);
    let t0 = std::time::Instant::now();
    tracing::debug!(
        ?ours,
        ?left,
        conditioned,
        "full form at generation {generation}: {} steps",
        plan.len()
    );
    let result = run(sock, table, &plan, generation, sent, conditioned);
    tracing::debug!(
        "full form sent in {:.1?}: {:?}",
        t0.elapsed(),
        result.as_ref().err()
    );
    match result {
        Ok(()) => Ok((create::form(ours), proven(sent))),
        // The in-place batch refused for another reason than a commit since the read (which
        // it would have been refused for first): the table is recreated, through the
        // handover. Nothing was committed, so the generation is still the one read.
        Err((e @ NftError::Rejected { .. }, 0)) if ours == Live::Fits && !stale(&e) => {
            let plan = create::steps(table, handover, Live::Other, left);
            run(sock, table, &plan, generation, sent, conditioned)
                .map(|()| (ReplaceForm::Handover, proven(sent)))
                .map_err(|(e, _)| e)
        }
        Err((e, _)) => Err(e),
    }
}

/// Whether our live table, read whole at `generation` (no commit since), is `table` without
/// its base chains: every set, map and element, and every other chain with its rules.
///
/// Read only when the skeleton showed a table with no base chain, which is what a creation
/// refused between its two transactions leaves (under a storm of commits, most creations of
/// a large table): the read is linear in the table (about 25 ms at 50,000 prefixes) where
/// the in-place form would send every element again (about 215 ms).
fn all_but_base_chains(sock: &mut NftSocket, table: &Table, generation: u32) -> bool {
    matches!(
        sock.read_table_at(&table.name),
        Ok(Some((at, live))) if at == generation && live.same_policy_in(table, |c| c.base.is_none())
    )
}

/// Sends the steps in order, each at the generation the previous one made. On failure,
/// returns the error and how many steps committed, after removing a handover table whose
/// policy is in force next to our table's old one (that old policy then holds alone again;
/// once our old table is gone, the handover is the only policy and stays until the next
/// commit replaces it).
fn run(
    sock: &mut NftSocket,
    table: &Table,
    plan: &[Step<'_>],
    mut generation: u32,
    sent: &mut Sent,
    conditioned: bool,
) -> Result<(), (NftError, usize)> {
    for (i, step) in plan.iter().enumerate() {
        let batch = step.batch(sock.next_seq(), conditioned.then_some(generation));
        let result = sock.send_batch(&batch);
        if let (Err(e), Step::Delete(name)) = (&result, step) {
            // Our table is complete: the handover table only repeats its policy, and
            // deleting it does not depend on anything read, so a refusal (someone committed
            // since our last batch) does not fail the commit; it is deleted regardless.
            tracing::debug!("deleting the handover table at generation {generation}: {e}");
            if remove_handover(sock, name) {
                sent.messages += 1;
                sent.transactions += 1;
            }
            return Ok(());
        }
        if let Err(e) = result {
            let done = &plan[..i];
            let handover_live = done.iter().any(|s| {
                matches!(s, Step::Chains(_) | Step::InPlace(_)) && s.table() != table.name
            });
            let ours_replaced = done
                .iter()
                .any(|s| matches!(s, Step::Sets { .. }) && s.table() == table.name);
            if handover_live && !ours_replaced {
                remove_handover(sock, &create::handover_name(&table.name));
            }
            return Err((e, i));
        }
        sent.add(&batch);
        generation = next_generation(generation);
    }
    Ok(())
}

/// Deletes the handover table, whatever committed meanwhile: it only ever holds one of our
/// own policies, so removing it can only leave our table's.
/// Returns whether it did.
fn remove_handover(sock: &mut NftSocket, name: &str) -> bool {
    let batch = encode::delete(name, sock.next_seq());
    match sock.send_batch(&batch) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("could not delete the handover table inet {name}: {e}");
            false
        }
    }
}

impl Sent {
    /// Counts a batch the kernel committed.
    fn add(&mut self, batch: &encode::Batch) {
        self.elements += batch.elements;
        self.messages += batch.msgs.len();
        self.bytes += batch.bytes.len();
        self.transactions += 1;
    }
}

fn report(table: &Table, form: ReplaceForm, sent: &Sent) -> CommitReport {
    CommitReport {
        elements: encode::element_count(table),
        sent: sent.elements,
        messages: sent.messages,
        bytes: sent.bytes,
        form,
        counters_reset: true,
        transactions: sent.transactions,
    }
}

#[cfg(test)]
mod tests {
    use super::next_generation;

    #[test]
    fn the_generation_after_the_last_skips_zero() {
        assert_eq!(next_generation(7), 8);
        assert_eq!(next_generation(u32::MAX), 1);
    }
}
