//! Pure encoding: a [`Table`] into one nf_tables batch, and the small read requests.
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
//! Only the last message asks for an ACK. The kernel reports every failing message of a batch
//! whether or not it asked, so a successful batch of any size is answered by exactly one
//! ACK, and the answers can never overflow the receive buffer (an ACK for each of the 300
//! messages of a 500,000-prefix batch did, making a successful commit look failed).

use std::fmt;

use super::stmt::lower;
use super::uapi::*;
use crate::addr::prefix::{Family, Span};
use crate::kernel::netlink::Writer;
use crate::model::{Interface, NameSet, Set, Table};

/// Keep each element list well under the 64 KiB limit of a netlink attribute length.
const ELEMENTS_CHUNK_BYTES: usize = 60 * 1024;

/// One message of a batch, for matching ACKs and explaining errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMsg {
    /// Sequence number (ACKs carry it).
    pub seq: u32,
    /// Offset of the message in the batch bytes.
    pub offset: usize,
    /// Length of the message.
    pub len: usize,
    /// nf_tables message type (`NFT_MSG_*`).
    pub kind: u16,
    /// What the message does, for people.
    pub what: String,
}

/// A complete transaction, ready for one `sendmsg`.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The bytes, BEGIN to END.
    pub bytes: Vec<u8>,
    /// The nf_tables messages (all but BEGIN and END), in order; the last one asks for the
    /// ACK.
    pub msgs: Vec<BatchMsg>,
    /// Number of set elements sent (including interval end markers).
    pub elements: usize,
}

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
}

impl ReplaceForm {
    /// The form's name in logs: `replace`, `delete-first`, `in-place`, `difference`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplaceForm::AddDeleteAdd => "replace",
            ReplaceForm::DeleteAdd => "delete-first",
            ReplaceForm::InPlace => "in-place",
            ReplaceForm::Delta => "difference",
        }
    }
}

/// What the kernel holds of a table apart from its contents: enough to tell whether the
/// in-place form brings it to a desired table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skeleton {
    /// Owner and persist flags.
    pub flags: crate::model::TableFlags,
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
                    && s.flags == NFT_SET_INTERVAL
                    && s.key_type == want.key_type
                    && s.key_len as usize == want.key_len
            })
        });
    let same_chains = live.chains.len() == table.chains.len()
        && table.chains.iter().all(|want| {
            live.chains
                .iter()
                .any(|c| c.name == want.name && c.base == want.base)
        });
    live.flags == table.flags && same_sets && same_chains
}

struct BatchWriter {
    w: Writer,
    seq: u32,
    msgs: Vec<BatchMsg>,
}

impl BatchWriter {
    fn new(seq: u32, capacity: usize) -> BatchWriter {
        BatchWriter::at_generation(seq, capacity, None)
    }

    /// A batch the kernel applies only while the ruleset generation is `generation`
    /// (`NFNL_BATCH_GENID` on BEGIN; otherwise it refuses the whole batch with ERESTART):
    /// a compare-and-commit.
    fn at_generation(seq: u32, capacity: usize, generation: Option<u32>) -> BatchWriter {
        let mut w = Writer::with_capacity(capacity);
        let m = w.begin_msg(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            seq,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
        );
        if let Some(g) = generation {
            w.put(NFNL_BATCH_GENID, &g.to_be_bytes());
        }
        w.end_msg(m);
        BatchWriter {
            w,
            seq: seq.wrapping_add(1),
            msgs: Vec::new(),
        }
    }

    /// Starts an nf_tables message in the inet family.
    fn begin(&mut self, kind: u16, flags: u16) -> usize {
        self.begin_in(kind, flags, NFPROTO_INET)
    }

    /// Starts an nf_tables message in `family`.
    fn begin_in(&mut self, kind: u16, flags: u16, family: u8) -> usize {
        self.w
            .begin_msg(nft_type(kind), NLM_F_REQUEST | flags, self.seq, family, 0)
    }

    fn end(&mut self, start: usize, kind: u16, what: String) {
        self.w.end_msg(start);
        self.msgs.push(BatchMsg {
            seq: self.seq,
            offset: start,
            len: self.w.len() - start,
            kind,
            what,
        });
        self.seq = self.seq.wrapping_add(1);
    }

    fn finish(mut self, elements: usize) -> Batch {
        if let Some(last) = self.msgs.last() {
            self.w.add_msg_flags(last.offset, NLM_F_ACK);
        }
        let m = self.w.begin_msg(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            self.seq,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
        );
        self.w.end_msg(m);
        Batch {
            bytes: self.w.into_bytes(),
            msgs: self.msgs,
            elements,
        }
    }

    fn table(&mut self, kind: u16, name: &str, flags: Option<u32>) {
        let m = self.begin(
            kind,
            if kind == NFT_MSG_NEWTABLE {
                NLM_F_CREATE
            } else {
                0
            },
        );
        self.w.put_str(NFTA_TABLE_NAME, name);
        if let Some(f) = flags {
            self.w.put_u32(NFTA_TABLE_FLAGS, f);
        }
        self.end(m, kind, format!("{} inet {name}", msg_name(kind)));
    }
}

/// The big-endian key of `len` bytes for a key integer.
fn key_bytes(v: u128, len: usize) -> Vec<u8> {
    v.to_be_bytes()[16 - len..].to_vec()
}

/// The interval elements of a set: `(key, is_end)` in ascending order.
pub fn interval_elements(set: &Set) -> Vec<(u128, bool)> {
    span_elements(set.prefixes.iter().map(Span::of), set.family.max())
}

/// The interval elements of sorted, disjoint spans whose keys go up to `max`.
///
/// A span [first, last] becomes a start element `first` and an end element `last + 1`
/// flagged `NFT_SET_ELEM_INTERVAL_END`. A span ending at the top of the key space has no
/// `last + 1` and gets no end element (computing it would overflow: the bug the design
/// notes found in another implementation). Like nft, we lead with an end element at 0 when
/// the first span does not start at 0, which older kernels' interval code expects.
pub fn span_elements(spans: impl ExactSizeIterator<Item = Span>, max: u128) -> Vec<(u128, bool)> {
    let mut out = Vec::with_capacity(spans.len() * 2 + 1);
    for (i, span) in spans.enumerate() {
        if i == 0 && span.lo != 0 {
            out.push((0, true));
        }
        out.push((span.lo, false));
        if span.hi < max {
            out.push((span.hi + 1, true));
        }
    }
    out
}

/// What the encoder needs of a set: its name, key type and length, and its elements.
struct SetSpec<'a> {
    name: &'a str,
    key_type: u32,
    key_len: usize,
    elements: Vec<(u128, bool)>,
}

impl<'a> SetSpec<'a> {
    fn addrs(set: &'a Set) -> SetSpec<'a> {
        let key_type = match set.family {
            Family::V4 => NFT_TYPE_IPADDR,
            Family::V6 => NFT_TYPE_IP6ADDR,
        };
        SetSpec {
            name: &set.name,
            key_type,
            key_len: set.family.addr_len(),
            elements: interval_elements(set),
        }
    }

    fn names(set: &'a NameSet) -> SetSpec<'a> {
        SetSpec {
            name: &set.name,
            key_type: NFT_TYPE_IFNAME,
            key_len: IFNAMSIZ as usize,
            elements: span_elements(set.names.iter().map(Interface::span), u128::MAX),
        }
    }
}

/// The sets of `table` as the batch creates them: address sets, then interface-name sets.
fn set_specs(table: &Table) -> Vec<SetSpec<'_>> {
    table
        .sets
        .iter()
        .map(SetSpec::addrs)
        .chain(table.name_sets.iter().map(SetSpec::names))
        .collect()
}

/// NEWSET (an existing set with the same properties is left as it is), then, when `flush`,
/// a DELSETELEM without elements (the kernel's "flush set"), then the elements.
fn set_messages(
    bw: &mut BatchWriter,
    table: &str,
    set: &SetSpec<'_>,
    id: u32,
    flush: bool,
) -> usize {
    let m = bw.begin(NFT_MSG_NEWSET, NLM_F_CREATE);
    bw.w.put_str(NFTA_SET_TABLE, table);
    bw.w.put_str(NFTA_SET_NAME, set.name);
    bw.w.put_u32(NFTA_SET_FLAGS, NFT_SET_INTERVAL);
    bw.w.put_u32(NFTA_SET_KEY_TYPE, set.key_type);
    bw.w.put_u32(NFTA_SET_KEY_LEN, set.key_len as u32);
    bw.w.put_u32(NFTA_SET_ID, id);
    bw.end(m, NFT_MSG_NEWSET, format!("NEWSET {}", set.name));
    if flush {
        let m = bw.begin(NFT_MSG_DELSETELEM, 0);
        bw.w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
        bw.w.put_str(NFTA_SET_ELEM_LIST_SET, set.name);
        bw.end(
            m,
            NFT_MSG_DELSETELEM,
            format!("DELSETELEM {} (flush)", set.name),
        );
    }

    element_messages(bw, NFT_MSG_NEWSETELEM, table, set, &set.elements);
    set.elements.len()
}

/// `elems` of `set` in messages of `kind` (NEWSETELEM or DELSETELEM), each list well under
/// the attribute size limit.
fn element_messages(
    bw: &mut BatchWriter,
    kind: u16,
    table: &str,
    set: &SetSpec<'_>,
    elems: &[(u128, bool)],
) {
    let total = elems.len();
    let mut i = 0;
    while i < total {
        let first = i;
        let m = bw.begin(
            kind,
            if kind == NFT_MSG_NEWSETELEM {
                NLM_F_CREATE
            } else {
                0
            },
        );
        bw.w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
        bw.w.put_str(NFTA_SET_ELEM_LIST_SET, set.name);
        let list = bw.w.begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS);
        while i < total && bw.w.len() - list < ELEMENTS_CHUNK_BYTES {
            let (key, is_end) = elems[i];
            let e = bw.w.begin_nest(NFTA_LIST_ELEM);
            let k = bw.w.begin_nest(NFTA_SET_ELEM_KEY);
            bw.w.put(NFTA_DATA_VALUE, &key_bytes(key, set.key_len));
            bw.w.end_nest(k);
            if is_end {
                bw.w.put_u32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
            }
            bw.w.end_nest(e);
            i += 1;
        }
        bw.w.end_nest(list);
        bw.end(
            m,
            kind,
            format!(
                "{} {} (elements {first}-{} of {total})",
                msg_name(kind),
                set.name,
                i - 1
            ),
        );
    }
}

/// Estimated batch size, to allocate once.
fn estimate(table: &Table) -> usize {
    let elems: usize = table
        .sets
        .iter()
        .map(|s| s.prefixes.len() * 2 * (12 + s.family.addr_len() + 8))
        .sum();
    4096 + elems + elems / 16
}

/// The batch that replaces `table` atomically, in `form`. Sequence numbers start at `seq`.
pub fn replace(table: &Table, seq: u32, form: ReplaceForm) -> Batch {
    let mut bw = BatchWriter::new(seq, estimate(table));
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
    let mut elements = 0;
    for (i, set) in specs.iter().enumerate() {
        elements += set_messages(&mut bw, name, set, i as u32 + 1, in_place);
    }
    let set_id = |set: &str| {
        specs
            .iter()
            .position(|s| s.name == set)
            .map(|i| i as u32 + 1)
    };
    for chain in &table.chains {
        chain_messages(&mut bw, name, chain, &set_id, in_place);
    }
    bw.finish(elements)
}

/// NEWCHAIN (created, or its policy updated), then, when `flush`, DELRULE naming only the
/// chain (the kernel's "flush chain"), then its rules.
fn chain_messages(
    bw: &mut BatchWriter,
    table: &str,
    chain: &crate::model::Chain,
    set_id: &dyn Fn(&str) -> Option<u32>,
    flush: bool,
) {
    let m = bw.begin(NFT_MSG_NEWCHAIN, NLM_F_CREATE);
    bw.w.put_str(NFTA_CHAIN_TABLE, table);
    bw.w.put_str(NFTA_CHAIN_NAME, &chain.name);
    if let Some(base) = &chain.base {
        let h = bw.w.begin_nest(NFTA_CHAIN_HOOK);
        bw.w.put_u32(NFTA_HOOK_HOOKNUM, base.hook);
        bw.w.put_u32(NFTA_HOOK_PRIORITY, base.priority as u32);
        bw.w.end_nest(h);
        bw.w.put_u32(NFTA_CHAIN_POLICY, base.policy);
        bw.w.put_str(NFTA_CHAIN_TYPE, &base.kind);
    }
    bw.end(m, NFT_MSG_NEWCHAIN, format!("NEWCHAIN {}", chain.name));
    if flush {
        let m = bw.begin(NFT_MSG_DELRULE, 0);
        bw.w.put_str(NFTA_RULE_TABLE, table);
        bw.w.put_str(NFTA_RULE_CHAIN, &chain.name);
        bw.end(
            m,
            NFT_MSG_DELRULE,
            format!("DELRULE {} (flush)", chain.name),
        );
    }
    for (i, rule) in chain.rules.iter().enumerate() {
        let m = bw.begin(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
        bw.w.put_str(NFTA_RULE_TABLE, table);
        bw.w.put_str(NFTA_RULE_CHAIN, &chain.name);
        let list = bw.w.begin_nest(NFTA_RULE_EXPRESSIONS);
        for e in lower(&rule.stmts, set_id) {
            e.encode(&mut bw.w);
        }
        bw.w.end_nest(list);
        bw.end(
            m,
            NFT_MSG_NEWRULE,
            format!("NEWRULE {} #{}: {rule}", chain.name, i + 1),
        );
    }
}

/// Interval elements: `(key, is_end)`, ascending.
type Elements = Vec<(u128, bool)>;

/// The elements of a set cut into whole intervals: the leading end element alone, then each
/// start with its end (a span reaching the top of the key space has none). Intervals are
/// what the delta deletes and adds, never single boundaries: with whole intervals every
/// state the kernel passes through while the batch applies is a valid interval set, which
/// its overlap checks (6.2 and later: a start after a start, an end next to an end) want.
fn intervals(elements: &[(u128, bool)]) -> Vec<&[(u128, bool)]> {
    let mut out = Vec::with_capacity(elements.len() / 2 + 1);
    let mut i = 0;
    while i < elements.len() {
        let len = if !elements[i].1 && elements.get(i + 1).is_some_and(|e| e.1) {
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
fn interval_diff(old: &[(u128, bool)], new: &[(u128, bool)]) -> (Elements, Elements) {
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
            (Some(x), Some(y)) if (x[0].0, !x[0].1) < (y[0].0, !y[0].1) => {
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
    let (old_specs, specs) = (set_specs(old), set_specs(table));
    let same_shape = old.name == table.name
        && old.flags == table.flags
        && old_specs.len() == specs.len()
        && old_specs
            .iter()
            .zip(&specs)
            .all(|(a, b)| a.name == b.name && a.key_type == b.key_type && a.key_len == b.key_len)
        && old.chains.len() == table.chains.len()
        && old
            .chains
            .iter()
            .zip(&table.chains)
            .all(|(a, b)| a.name == b.name && a.base == b.base);
    if !same_shape {
        return None;
    }
    let name = table.name.as_str();
    // Only at the generation that proves the live table is `old`: a commit by someone else
    // between our reading it and this batch makes the kernel refuse the batch, instead of
    // the difference leaving their change in place.
    let mut bw = BatchWriter::at_generation(seq, 4096, Some(generation));
    bw.table(NFT_MSG_NEWTABLE, name, Some(table.flags.0));
    let mut elements = 0;
    for (was, set) in old_specs.iter().zip(&specs) {
        let (gone, came) = interval_diff(&was.elements, &set.elements);
        // Deletions first: the intervals added may reuse their boundaries.
        element_messages(&mut bw, NFT_MSG_DELSETELEM, name, set, &gone);
        element_messages(&mut bw, NFT_MSG_NEWSETELEM, name, set, &came);
        elements += gone.len() + came.len();
    }
    for (was, chain) in old.chains.iter().zip(&table.chains) {
        if was.rules != chain.rules {
            // Rules are few: a changed chain is flushed and refilled. Sets by name only:
            // they exist, none is created by this batch.
            chain_messages(&mut bw, name, chain, &|_| None, true);
        }
    }
    Some(bw.finish(elements))
}

/// The set elements the replace form sends for `table` (interval starts and ends).
pub fn element_count(table: &Table) -> usize {
    set_specs(table).iter().map(|s| s.elements.len()).sum()
}

/// The batch that deletes the table `name`.
pub fn delete(name: &str, seq: u32) -> Batch {
    single(
        NFT_MSG_DELTABLE,
        NFPROTO_INET,
        seq,
        format!("DELTABLE inet {name}"),
        |w| w.put_str(NFTA_TABLE_NAME, name),
    )
}

/// A batch of one ACKed nf_tables message of `kind` in `family`, its attributes written by
/// `attrs` (e.g. `DELTABLE` in `NFPROTO_UNSPEC` with no name: what `nft flush ruleset` sends).
/// `what` describes the message in error reports.
pub fn single(
    kind: u16,
    family: u8,
    seq: u32,
    what: String,
    attrs: impl FnOnce(&mut Writer),
) -> Batch {
    single_with_flags(kind, 0, family, seq, what, attrs)
}

/// [`single`] with netlink `flags` on the message (`NLM_F_CREATE | NLM_F_APPEND` for a
/// `NEWRULE` without a handle, as `nft add rule` sends it).
pub fn single_with_flags(
    kind: u16,
    flags: u16,
    family: u8,
    seq: u32,
    what: String,
    attrs: impl FnOnce(&mut Writer),
) -> Batch {
    let mut bw = BatchWriter::new(seq, 128);
    let m = bw.begin_in(kind, flags, family);
    attrs(&mut bw.w);
    bw.end(m, kind, what);
    bw.finish(0)
}

/// A single (non-batch) request: a GET or a dump, with attributes written by `attrs`.
pub fn request(
    kind: u16,
    dump: bool,
    seq: u32,
    family: u8,
    attrs: impl FnOnce(&mut Writer),
) -> Vec<u8> {
    let mut w = Writer::with_capacity(128);
    let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
    let m = w.begin_msg(nft_type(kind), flags, seq, family, 0);
    attrs(&mut w);
    w.end_msg(m);
    w.into_bytes()
}

impl fmt::Display for BatchMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

#[cfg(test)]
mod tests;
