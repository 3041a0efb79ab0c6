//! Pure encoding: a [`Table`] into one nf_tables batch, and the small read requests.
//!
//! This file holds the commit forms ([`ReplaceForm`]), the test of whether the in-place one
//! fits, and the full forms' batch ([`replace`]). The messages are written by what they
//! encode: `batch.rs` (BEGIN, END, the ACK, one-message batches, read requests), `table.rs`,
//! `set.rs` (sets and their interval elements), `chain.rs` (chains and rules); the difference
//! form has its own file, `delta.rs`.
//!
//! The replace batch is `BEGIN, NEWTABLE, DELTABLE, NEWTABLE, sets, elements, chain, rules,
//! END`. Adding the table first makes the delete valid whether or not it exists, so one
//! transaction replaces the table atomically on every kernel (DESTROYTABLE would need 6.3).
//!
//! When the kernel already holds our table with exactly the desired sets and chains, the
//! in-place form is used instead: `BEGIN, NEWTABLE, per set NEWSET + flush + elements, per
//! chain NEWCHAIN + flush + rules, END`. Kernels from 6.18 search an interval set through an
//! array built when the transaction ends, after the new rules are live: a set *created* by the
//! transaction matches nothing until then, so replacing the whole table would translate every
//! flow (exempt destinations too) during the commit of a large table. An existing set keeps
//! answering with its old elements until the new ones are in place.
//!
//! Right after the agent's own commit, with nobody committing since, [`delta`] sends only
//! the intervals that went and came (see [`ReplaceForm::Delta`]).
//!
//! Where the sets must be created (our table missing, or not updatable in place), [`create`]
//! gives the batches of several transactions, so that no rule ever looks into a set its own
//! transaction is filling ([`ReplaceForm::Create`], [`ReplaceForm::Handover`]). Every batch
//! the agent sends carries the ruleset generation it was computed from ([`replace_at`]).
//! The one-transaction replace ([`replace`] with [`ReplaceForm::AddDeleteAdd`]) remains for a
//! table another live process owns, whose refusal the daemon needs to see.
//!
//! Only the last message asks for an ACK. The kernel reports every failing message of a batch
//! whether or not it asked, so a successful batch of any size is answered by exactly one
//! ACK, and the answers can never overflow the receive buffer (an ACK for each of the 300
//! messages of a 500,000-prefix batch did, making a successful commit look failed).

mod batch;
mod chain;
pub mod create;
mod delta;
pub mod reshape;
mod set;
mod table;

pub use batch::{Batch, BatchMsg, request, single, single_with_flags};
pub use delta::{delta, delta_known};
pub use set::{element_count, interval_elements, span_elements};
pub use table::delete;

use super::uapi::*;
use crate::model::Table;
use batch::BatchWriter;
use chain::chain_messages;
use set::{new_sets, set_specs, verdict_elements};

// What the byte tests (tests.rs, unchanged by the split into files) name from here.
#[cfg(test)]
use {
    crate::addr::prefix::{Family, Span},
    crate::model::Set,
    delta::{interval_diff, intervals},
    set::key_bytes,
};

/// How the replace batch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceForm {
    /// `NEWTABLE, DELTABLE, NEWTABLE ...`: works whether or not the table exists, as long as
    /// an existing table has the same owner/persist flags as the new one.
    AddDeleteAdd,
    /// `DELTABLE, NEWTABLE ...`: for an existing table whose flags differ (the kernel refuses
    /// to change the owner or persist flag of a table in place).
    DeleteAdd,
    /// `NEWTABLE`, then each set created if missing, flushed and refilled, and each chain
    /// created if missing, flushed and refilled: for a live table whose sets and chains are
    /// exactly the desired ones ([`fits_in_place`]), so nothing else is left behind. Its sets
    /// keep matching their old elements until the transaction ends.
    InPlace,
    /// `NEWTABLE`, then only what changed since the agent's previous commit: the intervals
    /// of each set that went (DELSETELEM) and came (NEWSETELEM), and a changed chain flushed
    /// and refilled ([`delta`]). Only when the kernel's generation shows that nothing else
    /// committed since that previous commit, so the live table is known exactly.
    Delta,
    /// Right after the agent's own commit, as [`ReplaceForm::Delta`], when sets and chains
    /// come or go (a block of the exemptions halved or joined, a family cut into blocks or
    /// back): what is new added, then the switch, then what is gone unhooked and removed,
    /// four transactions ([`reshape`]).
    Reshape,
    /// Our table was missing: its sets created and filled in one transaction, its chains and
    /// rules added in a second, so no rule looks into a set still being filled
    /// ([`create::steps`]).
    Create,
    /// Our table existed but could not be updated in place (other flags, something planted):
    /// the new policy put in force in a handover table first, then our table recreated (sets,
    /// then chains) and the handover table deleted, so the old or the new policy holds at
    /// every instant ([`create::steps`]).
    Handover,
}

impl ReplaceForm {
    /// The form's name in logs: `replace`, `delete-first`, `in-place`, `difference`,
    /// `reshape`, `create`, `handover`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplaceForm::AddDeleteAdd => "replace",
            ReplaceForm::DeleteAdd => "delete-first",
            ReplaceForm::InPlace => "in-place",
            ReplaceForm::Delta => "difference",
            ReplaceForm::Reshape => "reshape",
            ReplaceForm::Create => "create",
            ReplaceForm::Handover => "handover",
        }
    }
}

/// What the kernel holds of a table apart from its contents: enough to tell whether the
/// in-place form brings it to a desired table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skeleton {
    /// Owner and persist flags.
    pub flags: crate::model::TableFlags,
    /// The port id of the socket that owns the table, if one does.
    pub owner: Option<u32>,
    /// Every set of the table.
    pub sets: Vec<super::decode::SetMsg>,
    /// Every chain of the table (without rules).
    pub chains: Vec<crate::model::Chain>,
}

/// Whether the in-place form turns the live table `live` into exactly `table`: same flags,
/// the same sets with the key type, length and flags the replace form would create, the
/// same chains with the same hook, and nothing else (a set or chain the in-place form does
/// not name would survive it).
pub fn fits_in_place(table: &Table, live: &Skeleton) -> bool {
    let sets = set_specs(table);
    let same_sets = live.sets.len() == sets.len()
        && sets.iter().all(|want| {
            live.sets.iter().any(|s| {
                s.name == want.name
                    && s.flags == want.flags()
                    && s.key_type == want.key_type
                    && s.key_len as usize == want.key_len
                    && want.data.is_none_or(|(ty, len)| {
                        // A verdict's length is the kernel's `struct nft_verdict`, whatever
                        // the batch said: only its type is ours to compare.
                        s.data_type == ty && (ty == NFT_DATA_VERDICT || s.data_len as usize == len)
                    })
            })
        });
    let same_chains = live.chains.len() == table.chains.len()
        && table.chains.iter().all(|want| {
            live.chains
                .iter()
                .any(|c| c.name == want.name && c.base == want.base)
        });
    same_flags(table, live) && same_sets && same_chains
}

/// Whether the live table `live` has exactly the sets and flags of `table` and no base
/// chain (its block chains, if any, are `table`'s): it translates nothing, and the in-place
/// form (which creates missing chains) turns it into `table`. What a creation cut short
/// after its sets leaves, or a deletion of our chains.
pub fn unchained(table: &Table, live: &Skeleton) -> bool {
    fn blocks(chains: &[crate::model::Chain]) -> Vec<&str> {
        let mut names: Vec<&str> = chains
            .iter()
            .filter(|c| c.base.is_none())
            .map(|c| c.name.as_str())
            .collect();
        names.sort_unstable();
        names
    }
    live.chains.iter().all(|c| c.base.is_none())
        && blocks(&live.chains) == blocks(&table.chains)
        && fits_in_place(
            table,
            &Skeleton {
                flags: live.flags,
                owner: live.owner,
                sets: live.sets.clone(),
                chains: table.chains.clone(),
            },
        )
}

/// Whether the in-place form's NEWTABLE leaves the live table with `table`'s flags: the
/// same flags, or a persistent table whose owner has gone (the kernel then keeps only the
/// persist flag) that an owner-and-persist NEWTABLE claims again, as at each restart of an
/// agent that owns its table.
fn same_flags(table: &Table, live: &Skeleton) -> bool {
    use crate::model::TableFlags;
    let orphan = live.owner.is_none() && live.flags == TableFlags(TableFlags::PERSIST);
    live.flags == table.flags
        || (orphan && table.flags == TableFlags(TableFlags::OWNER | TableFlags::PERSIST))
}

/// Estimated batch size, to allocate once (also for the creation steps).
fn estimate(table: &Table) -> usize {
    let elems: usize = table
        .sets
        .iter()
        .map(|s| s.prefixes.len() * 2 * (12 + s.family.addr_len() + 8))
        .sum();
    4096 + elems + elems / 16
}

/// The batch that replaces `table` atomically, in `form` (one of the one-transaction forms:
/// [`ReplaceForm::AddDeleteAdd`], [`ReplaceForm::DeleteAdd`], [`ReplaceForm::InPlace`]).
/// Sequence numbers start at `seq`.
pub fn replace(table: &Table, seq: u32, form: ReplaceForm) -> Batch {
    replace_at(table, seq, form, None)
}

/// [`replace`], valid only at ruleset generation `generation` when given (a
/// compare-and-commit: the kernel refuses it with ERESTART once anyone has committed since).
pub fn replace_at(table: &Table, seq: u32, form: ReplaceForm, generation: Option<u32>) -> Batch {
    let mut bw = BatchWriter::at_generation(seq, estimate(table), generation);
    let name = table.name.as_str();
    let flags = Some(table.flags.0);
    let in_place = form == ReplaceForm::InPlace;
    if form == ReplaceForm::AddDeleteAdd {
        bw.table(NFT_MSG_NEWTABLE, name, flags);
    }
    if !in_place {
        bw.table(NFT_MSG_DELTABLE, name, None);
    }
    bw.table(NFT_MSG_NEWTABLE, name, flags);

    let specs = set_specs(table);
    let (mut elements, ids) = new_sets(&mut bw, name, &specs, in_place);
    let set_id = |set: &str| ids.get(set).copied();
    for chain in &table.chains {
        chain_messages(&mut bw, name, chain, &set_id, in_place);
    }
    elements += verdict_elements(&mut bw, name, &specs);
    bw.finish(elements)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_maps;
