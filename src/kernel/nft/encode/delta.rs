//! The difference form ([`super::ReplaceForm::Delta`]): after the agent's own commit, with
//! nobody committing since, only the intervals that went and came and the chains that
//! changed, in a batch valid only at the generation that proves the live table.

use std::collections::HashMap;

use super::batch::{Batch, BatchWriter};
use super::chain::chain_messages;
use super::set::{Boundary, Elem, SetSpec, element_messages, set_spec_named, set_specs};
use crate::kernel::nft::live::{Edits, Known};
use crate::kernel::nft::uapi::*;
use crate::model::{Chain, Table};

/// Interval elements, ascending.
type Elements<E> = Vec<E>;

/// The elements of a set cut into whole intervals: the leading end element alone, then each
/// start with its end (a span reaching the top of the key space has none). Intervals are
/// what the delta deletes and adds, never single boundaries: with whole intervals every
/// state the kernel passes through while the batch applies is a valid interval set, which
/// its overlap checks (6.2 and later: a start after a start, an end next to an end) want.
/// A map's interval is its start (with the data) and its end: a changed address is that
/// interval gone and come back with the new data.
pub(super) fn intervals<E: Boundary>(elements: &[E]) -> Vec<&[E]> {
    let mut out = Vec::with_capacity(elements.len() / 2 + 1);
    let mut i = 0;
    while i < elements.len() {
        let len = if !elements[i].is_end() && elements.get(i + 1).is_some_and(|e| e.is_end()) {
            2
        } else {
            1
        };
        out.push(&elements[i..i + len]);
        i += len;
    }
    out
}

/// The intervals of `old` that are not in `new` and those of `new` not in `old`, as
/// elements in ascending order. Both lists are sorted, so one merge walk finds them.
pub(super) fn interval_diff<E: Boundary>(old: &[E], new: &[E]) -> (Elements<E>, Elements<E>) {
    let (a, b) = (intervals(old), intervals(new));
    let (mut gone, mut came) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            // Intervals are ordered by their first element (key, then end before start:
            // the leading end element at 0 sorts before a start at 0).
            (Some(x), Some(y)) if (x[0].key(), !x[0].is_end()) < (y[0].key(), !y[0].is_end()) => {
                gone.extend_from_slice(x);
                i += 1;
            }
            (Some(_), Some(y)) | (None, Some(y)) => {
                came.extend_from_slice(y);
                j += 1;
            }
            (Some(x), None) => {
                gone.extend_from_slice(x);
                i += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    (gone, came)
}

/// The batch that turns the live table `old` (the agent's previous commit, known to be
/// unchanged since: the ruleset is still at `generation`) into `table`, sending only what
/// changed, and valid only at that generation; `None` when the two differ in anything but
/// set elements and rules (then a full form is needed).
///
/// A config change of a few CIDRs on a 10,000-prefix table becomes a batch of a few
/// elements instead of 20,000: the kernel's work, which is per element, shrinks with it.
pub fn delta(old: &Table, table: &Table, seq: u32, generation: u32) -> Option<Batch> {
    delta_over(old, &Edits::default(), generation, table, seq)
}

/// The batch that turns the live table as the agent knows it (`known`: its own commit and
/// what others did to it since, from the notifications) into `table`, valid only at the
/// generation the model reached: a repair sends the inverse of someone else's change, a
/// config change only what it changes. `None` as for [`delta`], and when the model
/// contradicts itself.
pub fn delta_known(known: &Known, table: &Table, seq: u32) -> Option<Batch> {
    delta_over(known.table(), known.edits(), known.generation(), table, seq)
}

fn delta_over(
    old: &Table,
    edits: &Edits,
    generation: u32,
    table: &Table,
    seq: u32,
) -> Option<Batch> {
    if old == table {
        return inverse(old, edits, generation, seq);
    }
    let (old_specs, specs) = (set_specs(old), set_specs(table));
    // The sets and chains of both, by name: the kernel lists them in the order they were
    // created, which a reshape leaves different from the model's.
    let old_sets: HashMap<&str, &SetSpec<'_>> = old_specs.iter().map(|s| (s.name, s)).collect();
    let was: Vec<&SetSpec<'_>> = specs
        .iter()
        .filter_map(|b| old_sets.get(b.name).copied())
        .collect();
    let old_chains: HashMap<&str, &Chain> =
        old.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    let chains: Vec<&Chain> = table
        .chains
        .iter()
        .filter_map(|b| old_chains.get(b.name.as_str()).copied())
        .collect();
    // Anything the model cannot express (a foreign set in our table) is not in the specs:
    // only a full form removes it.
    let same_shape = old.name == table.name
        && old.foreign.is_empty()
        && old.flags == table.flags
        && old_specs.len() == specs.len()
        && was.len() == specs.len()
        && was
            .iter()
            .zip(&specs)
            .all(|(a, b)| a.key_type == b.key_type && a.key_len == b.key_len && a.data == b.data)
        && old.chains.len() == table.chains.len()
        && chains.len() == table.chains.len()
        && chains
            .iter()
            .zip(&table.chains)
            .all(|(a, b)| a.base == b.base);
    if !same_shape {
        return None;
    }
    let name = table.name.as_str();
    // Only at the generation that proves the live table is `old` as edited: a commit by
    // someone else between our learning it and this batch makes the kernel refuse the
    // batch, instead of the difference leaving their change in place.
    let mut bw = BatchWriter::at_generation(seq, 4096, Some(generation));
    bw.table(NFT_MSG_NEWTABLE, name, Some(table.flags.0));
    let mut elements = 0;
    for (was, set) in was.into_iter().zip(&specs) {
        let live = live_elements(edits, was)?;
        let (gone, came): (Vec<Elem>, Vec<Elem>) = interval_diff(&live, &set.elements);
        // Deletions first: the intervals added may reuse their boundaries.
        element_messages(&mut bw, NFT_MSG_DELSETELEM, name, set, &gone);
        element_messages(&mut bw, NFT_MSG_NEWSETELEM, name, set, &came);
        elements += gone.len() + came.len();
    }
    for (was, chain) in chains.into_iter().zip(&table.chains) {
        if was.rules != chain.rules || edits.chain_dirty(&chain.name) {
            // Rules are few: a changed chain is flushed and refilled. Sets by name only:
            // they exist, none is created by this batch.
            chain_messages(&mut bw, name, chain, &|_| None, true);
        }
    }
    Some(bw.finish(elements))
}

/// A repair: the wanted table is the one the model starts from, so the difference is the
/// inverse of what others did: the elements they added deleted, those they deleted added
/// back, the chains they touched refilled. Only the sets they touched are encoded, so the
/// cost is that of their change, not of the table (a rule deleted at 150,000 prefixes
/// encodes no element at all).
fn inverse(table: &Table, edits: &Edits, generation: u32, seq: u32) -> Option<Batch> {
    let name = table.name.as_str();
    let mut bw = BatchWriter::at_generation(seq, 4096, Some(generation));
    bw.table(NFT_MSG_NEWTABLE, name, Some(table.flags.0));
    let mut elements = 0;
    for set in edits.sets() {
        // A set that is not ours (or not one the model encodes): the full form.
        let spec = set_spec_named(table, set)?;
        let (deleted, added) = edits.net(set, &pairs(&spec.elements))?;
        // What they deleted comes back with its data (a dispatch map's jump); what they
        // added goes by key.
        let (deleted, added) = (spec.with_data(deleted), with_no_data(added));
        // Deletions first: what is added back may reuse their boundaries.
        element_messages(&mut bw, NFT_MSG_DELSETELEM, name, &spec, &added);
        element_messages(&mut bw, NFT_MSG_NEWSETELEM, name, &spec, &deleted);
        elements += deleted.len() + added.len();
    }
    for chain in &table.chains {
        if edits.chain_dirty(&chain.name) {
            chain_messages(&mut bw, name, chain, &|_| None, true);
        }
    }
    Some(bw.finish(elements))
}

/// A set's elements as the model records them: `(key, is_end)`.
fn pairs(elements: &[Elem]) -> Vec<(u128, bool)> {
    elements.iter().map(|&(k, end, _)| (k, end)).collect()
}

fn with_no_data(elements: Vec<(u128, bool)>) -> Vec<Elem> {
    elements.into_iter().map(|(k, end)| (k, end, 0)).collect()
}

/// The live elements of `was` (a set of the table the model starts from) with what others
/// did to it applied; `None` when the model cannot say: a change that contradicts it, or
/// elements of a map changed (the model follows keys, not the addresses they map to).
fn live_elements<'a>(edits: &Edits, was: &'a SetSpec<'_>) -> Option<std::borrow::Cow<'a, [Elem]>> {
    if !edits.touches(was.name) {
        return Some(std::borrow::Cow::Borrowed(&was.elements));
    }
    // A dispatch map's data follows from its keys (each block jumps to its own chain); an
    // address map's does not.
    if was.data.is_some() && was.verdicts.is_none() {
        return None;
    }
    let base = pairs(&was.elements);
    let live = edits.live_elements(was.name, &base)?.into_owned();
    Some(std::borrow::Cow::Owned(was.with_data(live)))
}
