//! The reshape form ([`super::ReplaceForm::Reshape`]): after the agent's own commit, a
//! change that adds or removes sets and chains (a block of the exemptions crossing
//! `--max-set-prefixes`, so blocks are halved or joined; a family cut into blocks or back into
//! one set) sent as what it changes, in four transactions that keep the old or the new
//! policy in force at every instant:
//!
//! 1. **add**: the new sets filled, the new chains with their rules, a new dispatch map
//!    with its jumps. Nothing reaches them yet, and on 6.18 a set is searched only once the
//!    transaction that filled it has ended, so they are complete before anything looks.
//! 2. **switch**: the difference of the sets and maps both tables have (a dispatch map's
//!    jumps to the old blocks go, those to the new blocks come) and the chains whose rules
//!    changed, refilled. The kernel applies it atomically; existing sets answer with their
//!    old elements until it ends.
//! 3. **unhook**: what only the old table had is now unreachable: its dispatch maps deleted
//!    (releasing the chains they jump to) and its chains flushed.
//! 4. **remove**: those chains and sets deleted. Apart from the flush because the kernel
//!    keeps a chain busy while a rule deleted in the same transaction still jumps to it
//!    (the block chains to `translate`).
//!
//! Each batch is valid only at the generation the previous one made, so a commit by anyone in
//! between stops the rest (the caller then reads the table and takes a full form; what the
//! first phases left is unreachable or the new policy). Pure.

use std::collections::{HashMap, HashSet};

use super::batch::{Batch, BatchWriter};
use super::chain::{chain_messages, flush_chain};
use super::delta::interval_diff;
use super::set::{Elem, SetSpec, element_messages, new_sets, set_specs, verdict_elements};
use crate::kernel::nft::uapi::*;
use crate::model::{Chain, Table};

/// The transactions of a reshape from `old` (the live table, known exactly) to `new`.
///
/// Both tables' sets are built into their element lists once, here: each phase reads them,
/// and at 500,000 prefixes building them is most of a phase's encoding time.
pub struct Reshape<'a> {
    old: &'a Table,
    new: &'a Table,
    old_specs: Vec<SetSpec<'a>>,
    specs: Vec<SetSpec<'a>>,
    /// The old table's sets and chains by name, so each phase pairs them in linear time.
    old_set: HashMap<&'a str, usize>,
    old_chain: HashMap<&'a str, &'a Chain>,
    /// The names of the new table's sets and chains.
    new_sets: HashSet<&'a str>,
    new_chains: HashSet<&'a str>,
}

impl std::fmt::Debug for Reshape<'_> {
    /// The tables' names and how many sets each has: the element lists are far too long.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reshape")
            .field("table", &self.new.name)
            .field("old_sets", &self.old_specs.len())
            .field("new_sets", &self.specs.len())
            .finish_non_exhaustive()
    }
}

/// The phases of a [`Reshape`], in the order they are sent.
pub const PHASES: usize = 4;

/// The reshape from `old` to `new`, when the difference between them is sets, dispatch maps
/// and chains that come or go (and elements and rules in the rest): the same table name and
/// flags, the same base chains, and every set or chain they share of the same kind. `None`
/// otherwise (then a full form).
pub fn reshape<'a>(old: &'a Table, new: &'a Table) -> Option<Reshape<'a>> {
    if old.name != new.name || old.flags != new.flags {
        return None;
    }
    let (old_specs, specs) = (set_specs(old), set_specs(new));
    let old_set: HashMap<&'a str, usize> = old_specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name, i))
        .collect();
    let old_chain: HashMap<&'a str, &'a Chain> =
        old.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    let same_kinds = specs.iter().all(|s| {
        old_set.get(s.name).is_none_or(|&i| {
            let o = &old_specs[i];
            o.key_type == s.key_type
                && o.key_len == s.key_len
                && o.data == s.data
                && o.verdicts.is_some() == s.verdicts.is_some()
        })
    });
    let bases = |t: &'a Table| {
        t.chains
            .iter()
            .filter(|c| c.base.is_some())
            .map(|c| (&c.name, &c.base))
            .collect::<Vec<_>>()
    };
    let chains_agree = new.chains.iter().all(|c| {
        old_chain
            .get(c.name.as_str())
            .is_none_or(|o| o.base == c.base)
    });
    if !(same_kinds && chains_agree && bases(old) == bases(new)) {
        return None;
    }
    Some(Reshape {
        old,
        new,
        new_sets: specs.iter().map(|s| s.name).collect(),
        new_chains: new.chains.iter().map(|c| c.name.as_str()).collect(),
        old_specs,
        specs,
        old_set,
        old_chain,
    })
}

impl Reshape<'_> {
    /// The batch of phase `phase` (0 to 3), its messages numbered from `seq`, valid only at
    /// `generation`; `None` when the phase has nothing to do.
    pub fn batch(&self, phase: usize, seq: u32, generation: Option<u32>) -> Option<Batch> {
        let mut bw = BatchWriter::at_generation(seq, 4096, generation);
        let name = self.new.name.as_str();
        bw.table(NFT_MSG_NEWTABLE, name, Some(self.new.flags.0));
        let mut elements = 0;
        let mut changed = false;
        match phase {
            0 => {
                let added: Vec<&SetSpec<'_>> = self
                    .specs
                    .iter()
                    .filter(|s| !self.old_set.contains_key(s.name))
                    .collect();
                let (written, ids) = new_sets(&mut bw, name, added.iter().copied(), false);
                elements += written;
                changed |= !added.is_empty();
                let set_id = |set: &str| ids.get(set).copied();
                for chain in self
                    .new
                    .chains
                    .iter()
                    .filter(|c| !self.old_chain.contains_key(c.name.as_str()))
                {
                    chain_messages(&mut bw, name, chain, &set_id, false);
                    changed = true;
                }
                elements += verdict_elements(&mut bw, name, added);
            }
            1 => {
                for set in &self.specs {
                    let Some(&was) = self.old_set.get(set.name) else {
                        continue;
                    };
                    let (gone, came): (Vec<Elem>, Vec<Elem>) =
                        interval_diff(&self.old_specs[was].elements, &set.elements);
                    // Deletions first: the intervals added may reuse their boundaries.
                    element_messages(&mut bw, NFT_MSG_DELSETELEM, name, set, &gone);
                    element_messages(&mut bw, NFT_MSG_NEWSETELEM, name, set, &came);
                    elements += gone.len() + came.len();
                    changed |= !gone.is_empty() || !came.is_empty();
                }
                for chain in &self.new.chains {
                    let was = self.old_chain.get(chain.name.as_str());
                    if was.is_some_and(|w| w.rules != chain.rules) {
                        chain_messages(&mut bw, name, chain, &|_| None, true);
                        changed = true;
                    }
                }
            }
            2 => {
                // The maps first: their jumps hold the chains. The chains that go are
                // flushed (their rules jump to `translate` and look into the sets that go),
                // and deleted in the next transaction: the kernel keeps a chain busy while
                // a rule deleted in the same transaction still jumps to it.
                for map in self.gone_sets().filter(|o| o.verdicts.is_some()) {
                    delete_set(&mut bw, name, map.name);
                    changed = true;
                }
                for chain in self.gone_chains() {
                    flush_chain(&mut bw, name, chain);
                    changed = true;
                }
            }
            _ => {
                for chain in self.gone_chains() {
                    let m = bw.begin(NFT_MSG_DELCHAIN, 0);
                    bw.w.put_str(NFTA_CHAIN_TABLE, name);
                    bw.w.put_str(NFTA_CHAIN_NAME, chain);
                    bw.end(m, NFT_MSG_DELCHAIN, format!("DELCHAIN {chain}"));
                    changed = true;
                }
                for set in self.gone_sets().filter(|o| o.verdicts.is_none()) {
                    delete_set(&mut bw, name, set.name);
                    changed = true;
                }
            }
        }
        changed.then(|| bw.finish(elements))
    }

    /// The sets and maps only the old table has.
    fn gone_sets(&self) -> impl Iterator<Item = &SetSpec<'_>> {
        self.old_specs
            .iter()
            .filter(|o| !self.new_sets.contains(o.name))
    }

    /// The chains only the old table has.
    fn gone_chains(&self) -> impl Iterator<Item = &str> {
        self.old
            .chains
            .iter()
            .filter(|c| !self.new_chains.contains(c.name.as_str()))
            .map(|c| c.name.as_str())
    }

    /// Whether the switch changes the base chains' rules (their counters then start anew).
    pub fn rules_change(&self) -> bool {
        self.new
            .chains
            .iter()
            .filter(|c| c.base.is_some())
            .any(|c| {
                self.old_chain
                    .get(c.name.as_str())
                    .is_some_and(|o| o.rules != c.rules)
            })
    }
}

fn delete_set(bw: &mut BatchWriter, table: &str, set: &str) {
    let m = bw.begin(NFT_MSG_DELSET, 0);
    bw.w.put_str(NFTA_SET_TABLE, table);
    bw.w.put_str(NFTA_SET_NAME, set);
    bw.end(m, NFT_MSG_DELSET, format!("DELSET {set}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, PolicyFlags, entries};
    use crate::model::{self, TableFlags};

    /// `n` prefixes `11.<i / 128>.<even>.0/24`, and `extra`.
    fn table(n: u32, cap: usize, extra: &[&str]) -> Table {
        let f = PolicyFlags {
            max_set_prefixes: cap,
            ..PolicyFlags::default()
        };
        let mut c = Config::defaults(&f);
        let nets: Vec<ipnet::IpNet> = (0..n)
            .map(|i| format!("11.{}.{}.0/24", i / 128, (i % 128) * 2))
            .chain(extra.iter().map(|e| e.to_string()))
            .map(|n| n.parse().unwrap())
            .collect();
        c.non_masquerade_cidrs = entries(nets);
        model::desired(&c, &f, TableFlags::default())
    }

    fn what(b: &Option<Batch>) -> Vec<String> {
        b.iter()
            .flat_map(|b| b.msgs.iter().map(|m| m.what.clone()))
            .collect()
    }

    /// What each of the phases sends.
    fn phases(old: &Table, new: &Table) -> [Vec<String>; PHASES] {
        let r = reshape(old, new).expect("a reshape");
        [0, 1, 2, 3].map(|p| what(&r.batch(p, 1, Some(5))))
    }

    #[test]
    fn blocks_halved_are_added_switched_then_removed() {
        // 300 prefixes under a cap of 256: two blocks; 200: one set again.
        let (cut, whole) = (table(300, 256, &[]), table(200, 256, &[]));
        assert!(!cut.dispatch.is_empty() && whole.dispatch.is_empty());
        let [add, switch, unhook, remove] = phases(&whole, &cut);
        // Added: every block set and chain, the map and its jumps; nothing deleted.
        assert!(
            add.iter()
                .any(|w| w.starts_with("NEWSET nonmasq-dispatch-v4")),
            "{add:#?}"
        );
        assert!(
            add.iter().any(|w| w.starts_with("NEWCHAIN nonmasq-v4-")),
            "{add:#?}"
        );
        assert!(!add.iter().any(|w| w.starts_with("DEL")), "{add:#?}");
        let jumps = add
            .iter()
            .position(|w| w.starts_with("NEWSETELEM nonmasq-dispatch"));
        let last_chain = add.iter().rposition(|w| w.starts_with("NEWRULE"));
        assert!(last_chain < jumps, "{add:#?}");
        // Switched: the base chain refilled (the set lookup becomes the map lookup).
        assert!(
            switch.iter().any(|w| w.starts_with("NEWCHAIN postrouting")),
            "{switch:#?}"
        );
        assert!(
            switch
                .iter()
                .any(|w| w.contains("vmap @nonmasq-dispatch-v4")),
            "{switch:#?}"
        );
        assert!(
            !switch.iter().any(|w| w.starts_with("NEWSET")),
            "{switch:#?}"
        );
        // Removed: the plain set only, nothing to unhook first.
        assert!(unhook.is_empty(), "{unhook:#?}");
        assert_eq!(
            remove,
            ["NEWTABLE inet nft-masq-agent", "DELSET nonmasq-v4"]
        );

        // And back: the map deleted and every chain flushed (`translate` too) a
        // transaction before the chains go, the chains before their sets.
        let [add, _, unhook, remove] = phases(&cut, &whole);
        assert!(add.iter().any(|w| w == "NEWSET nonmasq-v4"), "{add:#?}");
        assert!(
            unhook.iter().any(|w| w == "DELSET nonmasq-dispatch-v4"),
            "{unhook:#?}"
        );
        assert!(
            unhook.iter().any(|w| w == "DELRULE translate (flush)"),
            "{unhook:#?}"
        );
        assert!(
            !unhook.iter().any(|w| w.starts_with("DELCHAIN")),
            "{unhook:#?}"
        );
        let pos = |p: &str| remove.iter().position(|w| w.starts_with(p)).unwrap();
        assert!(
            remove.iter().any(|w| w == "DELCHAIN translate"),
            "{remove:#?}"
        );
        assert!(
            pos("DELCHAIN nonmasq-v4-") < pos("DELSET nonmasq-v4-"),
            "{remove:#?}"
        );
    }

    #[test]
    fn a_block_split_touches_that_block_only() {
        // 300 prefixes under a cap of 256: 11.0.0.0/15 (256) and 11.2.0.0/15 (44). One more
        // in the first halves it.
        let (a, b) = (table(300, 256, &[]), table(300, 256, &["11.0.1.64/26"]));
        let names = |t: &Table| {
            t.sets
                .iter()
                .filter(|s| crate::model::is_exemption_set(&s.name))
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
        };
        // (And link-local, from the defaults, in a block of its own.)
        assert_eq!(
            names(&a),
            [
                "nonmasq-v4-11.0.0.0/15",
                "nonmasq-v4-11.2.0.0/15",
                "nonmasq-v4-128.0.0.0/1"
            ]
        );
        assert_eq!(
            names(&b),
            [
                "nonmasq-v4-11.0.0.0/16",
                "nonmasq-v4-11.1.0.0/16",
                "nonmasq-v4-11.2.0.0/15",
                "nonmasq-v4-128.0.0.0/1"
            ]
        );
        let [add, switch, unhook, remove] = phases(&a, &b);
        let starting = |v: &[String], p: &str| v.iter().filter(|w| w.starts_with(p)).count();
        assert_eq!(
            starting(&add, "NEWSET nonmasq-v4-11.0.0.0/16"),
            1,
            "{add:#?}"
        );
        assert_eq!(
            starting(&add, "NEWSET nonmasq-v4-11.1.0.0/16"),
            1,
            "{add:#?}"
        );
        assert_eq!(starting(&add, "NEWCHAIN "), 2, "{add:#?}");
        // The map's jumps move, the base chain stays; the block kept is not touched.
        assert!(
            starting(&switch, "DELSETELEM nonmasq-dispatch-v4") > 0,
            "{switch:#?}"
        );
        assert!(
            starting(&switch, "NEWSETELEM nonmasq-dispatch-v4") > 0,
            "{switch:#?}"
        );
        assert!(
            !switch.iter().any(|w| w.contains("postrouting")),
            "{switch:#?}"
        );
        assert!(!reshape(&a, &b).unwrap().rules_change());
        for phase in [&add, &switch, &unhook, &remove] {
            assert!(
                !phase.iter().any(|w| w.contains("11.2.0.0/15")),
                "{phase:#?}"
            );
        }
        assert_eq!(unhook[1..], ["DELRULE nonmasq-v4-11.0.0.0/15 (flush)"]);
        assert_eq!(
            remove[1..],
            [
                "DELCHAIN nonmasq-v4-11.0.0.0/15",
                "DELSET nonmasq-v4-11.0.0.0/15"
            ]
        );
    }
}
