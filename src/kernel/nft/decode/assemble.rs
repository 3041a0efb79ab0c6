//! A table's decoded parts assembled into the model: what each set read back is (an address
//! set, a name set, a map, a dispatch map, or foreign), rules into their chains, and the
//! decoder that takes a read's replies message by message. Pure.

use super::maps;
use super::{
    ChainMsg, Element, RuleMsg, SetMsg, TableMsg, addr_family, chain, elements, interval_prefixes,
    interval_spans, is_of_table, rule, set, table,
};
use crate::kernel::netlink::{Malformed, Msg, messages};
use crate::kernel::nft::stmt::raise;
use crate::kernel::nft::uapi::*;
use crate::model::{Chain, Dispatch, Interface, Map, NameSet, Rule, Set, Table};

/// What a set read back is: an address set, a name set, a map (`maps.rs`), or something the
/// model has no words for (described).
pub(super) enum SetKind {
    Addrs(Set),
    Names(NameSet),
    Map(Map),
    Dispatch(Dispatch),
    Foreign(String),
}

fn set_kind(s: SetMsg, elems: &[Element], data: &[(u128, u128)]) -> SetKind {
    if s.flags & NFT_SET_MAP != 0 && s.data_type == NFT_DATA_VERDICT {
        return maps::dispatch_kind(s, elems, data);
    }
    if s.flags & NFT_SET_MAP != 0 {
        return maps::map_kind(s, elems, data);
    }
    let family = match (addr_family(s.key_type, s.key_len), s.key_type, s.key_len) {
        (Some(family), ..) => Some(family),
        (None, NFT_TYPE_IFNAME, IFNAMSIZ) => None,
        (None, ty, len) => {
            return SetKind::Foreign(format!(
                "set {} of key type {ty} with {len}-byte keys and {} elements",
                s.name,
                elems.len()
            ));
        }
    };
    if s.flags & (NFT_SET_MAP | NFT_SET_ANONYMOUS) != 0 || s.flags & NFT_SET_INTERVAL == 0 {
        return SetKind::Foreign(format!(
            "set {} with flags 0x{:x} (expected an interval set)",
            s.name, s.flags
        ));
    }
    let Some(family) = family else {
        return names(s.name, elems);
    };
    SetKind::Addrs(Set {
        prefixes: interval_prefixes(elems, family),
        name: s.name,
        family,
    })
}

/// An interface-name set: each span must be a name or a prefix wildcard.
fn names(name: String, elems: &[Element]) -> SetKind {
    let spans = interval_spans(elems, IFNAMSIZ as usize, u128::MAX);
    let mut names = Vec::with_capacity(spans.len());
    for span in spans {
        match Interface::from_span(span) {
            Some(n) => names.push(n),
            None => {
                return SetKind::Foreign(format!(
                    "set {name} holds a range of interface names no name or wildcard makes \
                     (0x{:032x}-0x{:032x})",
                    span.lo, span.hi
                ));
            }
        }
    }
    SetKind::Names(NameSet { name, names })
}

/// Builds the model of a table from its decoded parts. Sets keep the kernel's order; rules
/// go to their chains in the order given (the dump order, which is evaluation order).
pub fn assemble(
    table: TableMsg,
    sets: Vec<SetRead>,
    chains: Vec<ChainMsg>,
    rules: Vec<RuleMsg>,
) -> Table {
    let mut foreign = Vec::new();
    let mut model_sets = Vec::new();
    let mut name_sets = Vec::new();
    let mut maps = Vec::new();
    let mut dispatch = Vec::new();
    for (s, elems, data) in sets {
        match set_kind(s, &elems, &data) {
            SetKind::Addrs(set) => model_sets.push(set),
            SetKind::Names(set) => name_sets.push(set),
            SetKind::Map(map) => maps.push(map),
            SetKind::Dispatch(map) => dispatch.push(map),
            SetKind::Foreign(what) => foreign.push(what),
        }
    }
    let mut model_chains: Vec<Chain> = chains.into_iter().map(|c| c.chain).collect();
    for r in rules {
        match model_chains.iter_mut().find(|c| c.name == r.chain) {
            Some(c) => c.rules.push(Rule {
                stmts: raise(&r.exprs),
            }),
            None => foreign.push(format!(
                "rule handle {} in unknown chain {}",
                r.handle, r.chain
            )),
        }
    }
    Table {
        name: table.name,
        flags: table.flags,
        sets: model_sets,
        name_sets,
        maps,
        dispatch,
        chains: model_chains,
        foreign,
    }
}

/// A set as read: its message, its elements, and its elements' data by key (a map's).
pub type SetRead = (SetMsg, Vec<Element>, Vec<(u128, u128)>);

/// Decodes the replies of a table read message by message, as they arrive: a read of a
/// large table never holds the kernel's bytes and their decoded form at once.
#[derive(Debug)]
pub struct TableDecoder {
    name: String,
    table: Option<TableMsg>,
    sets: Vec<SetRead>,
    chains: Vec<ChainMsg>,
    rules: Vec<RuleMsg>,
}

impl TableDecoder {
    /// A decoder for table `name`.
    pub fn new(name: &str) -> TableDecoder {
        TableDecoder {
            name: name.to_owned(),
            table: None,
            sets: Vec::new(),
            chains: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// Takes one reply message (NEWTABLE, NEWSET, NEWSETELEM, NEWCHAIN or NEWRULE). Objects
    /// of other tables are skipped before anything is decoded: they cannot make reading ours
    /// fail.
    pub fn feed(&mut self, msg: &Msg<'_>) -> Result<(), Malformed> {
        if !is_of_table(msg, &self.name) {
            return Ok(());
        }
        match msg.nft_msg() {
            Some(NFT_MSG_NEWTABLE) => self.table = Some(table(msg)?),
            Some(NFT_MSG_NEWSET) => self.sets.push((set(msg)?, Vec::new(), Vec::new())),
            Some(NFT_MSG_NEWSETELEM) => {
                let e = elements(msg)?;
                if let Some((_, elems, data)) =
                    self.sets.iter_mut().find(|(s, _, _)| s.name == e.set)
                {
                    elems.extend(e.elements);
                    data.extend(e.data);
                }
            }
            Some(NFT_MSG_NEWCHAIN) => self.chains.push(chain(msg)?),
            Some(NFT_MSG_NEWRULE) => self.rules.push(rule(msg)?),
            _ => {}
        }
        Ok(())
    }

    /// The table, or `None` when no NEWTABLE of it was fed.
    pub fn finish(self) -> Option<Table> {
        let TableDecoder {
            table,
            sets,
            chains,
            rules,
            ..
        } = self;
        table.map(|t| assemble(t, sets, chains, rules))
    }
}

/// Decodes the replies of a table read (NEWTABLE, NEWSET, NEWSETELEM, NEWCHAIN, NEWRULE
/// messages back to back, as the kernel sends them) into the model of table `name`.
/// Objects of other tables are skipped; `None` when the table is not among the messages.
pub fn table_from_dump(bytes: &[u8], name: &str) -> Result<Option<Table>, Malformed> {
    let mut d = TableDecoder::new(name);
    for msg in messages(bytes) {
        d.feed(&msg?)?;
    }
    Ok(d.finish())
}
