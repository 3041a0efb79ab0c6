//! Sets and their elements: the interval elements of address and interface-name sets (a
//! span's start, and its end + 1 flagged as an end), NEWSET, the flush, and the element
//! lists cut under the attribute size limit. Interval maps (`snatRules`) are sets whose
//! start elements carry data (the address), written by the same code.

use std::collections::HashMap;

use super::batch::BatchWriter;
use crate::addr::prefix::{Family, Span, addr_to_u128, make_net};
use crate::kernel::nft::uapi::*;
use crate::model::{Dispatch, Interface, Map, NameSet, Set, Table};

/// Keep each element list well under the 64 KiB limit of a netlink attribute length.
const ELEMENTS_CHUNK_BYTES: usize = 60 * 1024;

/// The big-endian key of `len` bytes for a key integer.
pub(super) fn key_bytes(v: u128, len: usize) -> Vec<u8> {
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

/// An interval boundary: its key, whether it ends an interval, and (a map's start) the
/// data it carries, 0 otherwise.
pub(super) type Elem = (u128, bool, u128);

/// Interval boundaries, for the difference form's interval cutting: sets' `(key, is_end)`
/// and maps' `(key, is_end, data)` alike.
pub(super) trait Boundary: Copy + PartialEq {
    /// The key.
    fn key(&self) -> u128;
    /// Whether it ends an interval.
    fn is_end(&self) -> bool;
}

impl Boundary for (u128, bool) {
    fn key(&self) -> u128 {
        self.0
    }
    fn is_end(&self) -> bool {
        self.1
    }
}

impl Boundary for Elem {
    fn key(&self) -> u128 {
        self.0
    }
    fn is_end(&self) -> bool {
        self.1
    }
}

/// What the encoder needs of a set: its name, key type and length, a map's data type and
/// length, and its elements.
pub(super) struct SetSpec<'a> {
    pub(super) name: &'a str,
    pub(super) key_type: u32,
    pub(super) key_len: usize,
    /// A map's data type and length; `None` for a set.
    pub(super) data: Option<(u32, usize)>,
    /// A verdict map's blocks: each start element's data is its block's prefix length, and
    /// it jumps to the block's chain.
    pub(super) verdicts: Option<&'a Dispatch>,
    pub(super) elements: Vec<Elem>,
}

/// nft's data type of an address of `family` (`ipv4_addr`, `ipv6_addr`).
fn addr_type(family: Family) -> u32 {
    match family {
        Family::V4 => NFT_TYPE_IPADDR,
        Family::V6 => NFT_TYPE_IP6ADDR,
    }
}

fn without_data(elements: Vec<(u128, bool)>) -> Vec<Elem> {
    elements.into_iter().map(|(k, end)| (k, end, 0)).collect()
}

impl<'a> SetSpec<'a> {
    fn addrs(set: &'a Set) -> SetSpec<'a> {
        let key_type = addr_type(set.family);
        SetSpec {
            name: &set.name,
            key_type,
            key_len: set.family.addr_len(),
            data: None,
            verdicts: None,
            elements: without_data(interval_elements(set)),
        }
    }

    fn names(set: &'a NameSet) -> SetSpec<'a> {
        SetSpec {
            name: &set.name,
            key_type: NFT_TYPE_IFNAME,
            key_len: IFNAMSIZ as usize,
            data: None,
            verdicts: None,
            elements: without_data(span_elements(
                set.names.iter().map(Interface::span),
                u128::MAX,
            )),
        }
    }

    /// An interval map of addresses to addresses: each start carries its address.
    fn map(map: &'a Map) -> SetSpec<'a> {
        let ty = addr_type(map.family);
        let len = map.family.addr_len();
        let bounds = span_elements(map.entries.iter().map(|e| e.span), map.family.max());
        // span_elements writes each start in entry order: pair them with the addresses.
        let mut to = map.entries.iter().map(|e| addr_to_u128(e.to));
        let elements = bounds
            .into_iter()
            .map(|(k, end)| (k, end, if end { 0 } else { to.next().unwrap_or(0) }))
            .collect();
        SetSpec {
            name: &map.name,
            key_type: ty,
            key_len: len,
            data: Some((ty, len)),
            verdicts: None,
            elements,
        }
    }

    /// A block dispatch map: each block's start carries the block's prefix length, which
    /// with the key names the block and so its chain (the verdict, the jump to that chain,
    /// is written by [`element_messages`]). The same block has the same element in any
    /// table, so differences compare blocks.
    fn dispatch(map: &'a Dispatch) -> SetSpec<'a> {
        let ty = addr_type(map.family);
        let bounds = span_elements(map.blocks.iter().map(Span::of), map.family.max());
        let mut lens = map.blocks.iter().map(|b| u128::from(b.prefix_len()));
        let elements = bounds
            .into_iter()
            .map(|(k, end)| (k, end, if end { 0 } else { lens.next().unwrap_or(0) }))
            .collect();
        SetSpec {
            name: &map.name,
            key_type: ty,
            key_len: map.family.addr_len(),
            // The kernel reports a verdict's length as that of its `struct nft_verdict`.
            data: Some((NFT_DATA_VERDICT, 16)),
            verdicts: Some(map),
            elements,
        }
    }

    /// The data of the elements `pairs` (`(key, is_end)`, of this set) as this spec holds
    /// them: a dispatch map's prefix lengths, found by key; 0 for anything else.
    pub(super) fn with_data(&self, pairs: Vec<(u128, bool)>) -> Vec<Elem> {
        pairs
            .into_iter()
            .map(|(k, end)| {
                let data = match self.verdicts {
                    Some(_) if !end => self
                        .elements
                        .binary_search_by_key(&(k, true), |e| (e.0, !e.1))
                        .map_or(0, |i| self.elements[i].2),
                    _ => 0,
                };
                (k, end, data)
            })
            .collect()
    }

    /// The `NFT_SET_*` flags the batch creates it with.
    pub(super) fn flags(&self) -> u32 {
        match self.data {
            Some(_) => NFT_SET_INTERVAL | NFT_SET_MAP,
            None => NFT_SET_INTERVAL,
        }
    }
}

/// The sets of `table` as the batch creates them: address sets, interface-name sets, maps,
/// then dispatch maps.
pub(super) fn set_specs(table: &Table) -> Vec<SetSpec<'_>> {
    table
        .sets
        .iter()
        .map(SetSpec::addrs)
        .chain(table.name_sets.iter().map(SetSpec::names))
        .chain(table.maps.iter().map(SetSpec::map))
        .chain(table.dispatch.iter().map(SetSpec::dispatch))
        .collect()
}

/// The set of `table` named `name`, as [`set_specs`] gives it, building only its elements.
pub(super) fn set_spec_named<'a>(table: &'a Table, name: &str) -> Option<SetSpec<'a>> {
    let addrs = table
        .sets
        .iter()
        .find(|s| s.name == name)
        .map(SetSpec::addrs);
    addrs
        .or_else(|| {
            table
                .name_sets
                .iter()
                .find(|s| s.name == name)
                .map(SetSpec::names)
        })
        .or_else(|| {
            table
                .dispatch
                .iter()
                .find(|d| d.name == name)
                .map(SetSpec::dispatch)
        })
}

/// [`set_messages`] for each of `specs`, with the transaction-local id of its place (1, 2,
/// …): the elements written, and the ids by name, for the rules of the same batch that look
/// the sets up.
pub(super) fn new_sets<'a, 's>(
    bw: &mut BatchWriter,
    table: &str,
    specs: impl IntoIterator<Item = &'s SetSpec<'a>>,
    flush: bool,
) -> (usize, HashMap<&'a str, u32>)
where
    'a: 's,
{
    let mut elements = 0;
    let mut ids = HashMap::new();
    for (set, id) in specs.into_iter().zip(1..) {
        elements += set_messages(bw, table, set, id, flush);
        ids.insert(set.name, id);
    }
    (elements, ids)
}

/// NEWSET (an existing set with the same properties is left as it is), then, when `flush`,
/// a DELSETELEM without elements (the kernel's "flush set"), then the elements; a dispatch
/// map's elements jump to chains, so they come later ([`verdict_elements`]), once the chains
/// exist.
pub(super) fn set_messages(
    bw: &mut BatchWriter,
    table: &str,
    set: &SetSpec<'_>,
    id: u32,
    flush: bool,
) -> usize {
    let m = bw.begin(NFT_MSG_NEWSET, NLM_F_CREATE);
    bw.w.put_str(NFTA_SET_TABLE, table);
    bw.w.put_str(NFTA_SET_NAME, set.name);
    bw.w.put_u32(NFTA_SET_FLAGS, set.flags());
    bw.w.put_u32(NFTA_SET_KEY_TYPE, set.key_type);
    bw.w.put_u32(NFTA_SET_KEY_LEN, set.key_len as u32);
    if let Some((ty, len)) = set.data {
        bw.w.put_u32(NFTA_SET_DATA_TYPE, ty);
        bw.w.put_u32(NFTA_SET_DATA_LEN, len as u32);
    }
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
    if set.verdicts.is_some() {
        return 0;
    }
    element_messages(bw, NFT_MSG_NEWSETELEM, table, set, &set.elements);
    set.elements.len()
}

/// The elements of the dispatch maps among `specs`, after the chains they jump to.
pub(super) fn verdict_elements<'s, 'a: 's>(
    bw: &mut BatchWriter,
    table: &str,
    specs: impl IntoIterator<Item = &'s SetSpec<'a>>,
) -> usize {
    let mut n = 0;
    for set in specs.into_iter().filter(|s| s.verdicts.is_some()) {
        element_messages(bw, NFT_MSG_NEWSETELEM, table, set, &set.elements);
        n += set.elements.len();
    }
    n
}

/// `elems` of `set` in messages of `kind` (NEWSETELEM or DELSETELEM), each list well under
/// the attribute size limit.
pub(super) fn element_messages(
    bw: &mut BatchWriter,
    kind: u16,
    table: &str,
    set: &SetSpec<'_>,
    elems: &[Elem],
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
            let (key, is_end, value) = elems[i];
            let e = bw.w.begin_nest(NFTA_LIST_ELEM);
            let k = bw.w.begin_nest(NFTA_SET_ELEM_KEY);
            bw.w.put(NFTA_DATA_VALUE, &key_bytes(key, set.key_len));
            bw.w.end_nest(k);
            // A map's start carries its data; an end carries none (as nft sends them). A
            // deletion names the key only.
            if let (Some((_, len)), false, NFT_MSG_NEWSETELEM) = (set.data, is_end, kind) {
                let d = bw.w.begin_nest(NFTA_SET_ELEM_DATA);
                match set.verdicts {
                    Some(map) => {
                        let bits = map.family.bits();
                        let block = make_net(key, value.min(u128::from(bits)) as u8, bits);
                        let v = bw.w.begin_nest(NFTA_DATA_VERDICT);
                        bw.w.put_u32(NFTA_VERDICT_CODE, NFT_JUMP as u32);
                        bw.w.put_str(NFTA_VERDICT_CHAIN, &map.chain(&block));
                        bw.w.end_nest(v);
                    }
                    None => bw.w.put(NFTA_DATA_VALUE, &key_bytes(value, len)),
                }
                bw.w.end_nest(d);
            }
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

/// The set elements the replace form sends for `table` (interval starts and ends).
pub fn element_count(table: &Table) -> usize {
    set_specs(table).iter().map(|s| s.elements.len()).sum()
}
