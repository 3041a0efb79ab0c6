//! The forms that must create sets, without the new-set gap: the sets are created and filled
//! in one transaction with no rule that looks into them, and the chains and rules that use
//! them come in a later transaction. Kernels from 6.18 search an interval set through an
//! array built when the transaction that filled it ends, after that transaction's rules are
//! live, so a rule added together with its set would match nothing until then.
//!
//! Which batches, in which order, is decided here from what the live table and a leftover
//! handover table are ([`steps`]); each batch is valid only at the ruleset generation the
//! previous one made (`NFNL_BATCH_GENID`), so a commit by anyone in between makes the kernel
//! refuse the rest. Pure: sending them is `kernel/nft/create.rs`.

use super::batch::{Batch, BatchWriter};
use super::chain::chain_messages;
use super::set::{new_sets, set_specs, verdict_elements};
use super::{ReplaceForm, estimate, replace_at};
use crate::kernel::nft::uapi::*;
use crate::model::{Table, TableFlags};

/// What a live table (ours, or the handover table) is, as far as the choice of steps needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// There is no such table.
    Absent,
    /// It exists with exactly the desired sets, chains and flags: the in-place form turns it
    /// into the desired table ([`super::fits_in_place`]).
    Fits,
    /// It is the desired table but for its base chains, read whole at the generation the
    /// steps are valid at: every set, map and element, every other chain and rule as wanted
    /// (a creation cut short after its first transaction, or our base chains deleted). It
    /// translates nothing; adding the base chains completes it, and no element is sent.
    Unchained,
    /// It exists, and the in-place form would leave something behind or cannot change it
    /// (other flags, a planted chain or set, a set of another type).
    Other,
}

/// One transaction of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// The in-place form of the table: its existing sets keep answering throughout.
    InPlace(&'a Table),
    /// The table (deleted first when `delete_first`: it exists and is not fit to keep) with
    /// its sets and their elements, and no chain: nothing looks into the sets yet.
    Sets {
        /// The table to create.
        table: &'a Table,
        /// Delete the live table of that name first.
        delete_first: bool,
    },
    /// The chains and rules of a table whose sets an earlier transaction created and filled.
    Chains(&'a Table),
    /// Deletes the table of that name (the handover table, once ours is complete).
    Delete(&'a str),
}

/// The name of the handover table of table `name`.
pub fn handover_name(name: &str) -> String {
    format!("{name}-handover")
}

/// The handover table for `table`: the same sets, chains and rules under
/// [`handover_name`], owned by the agent's socket when `table` is (so the kernel removes it
/// if the agent dies mid-way) but never persistent.
pub fn handover_of(table: &Table) -> Table {
    let mut h = table.clone();
    h.name = handover_name(&table.name);
    h.flags = TableFlags(table.flags.0 & TableFlags::OWNER);
    h
}

/// The transactions that bring our table to `table`, given what our live table (`ours`) and
/// a leftover handover table (`left`) are; `handover` is [`handover_of`] `table`.
///
/// - Ours fits: the in-place form (its sets never stop answering).
/// - Ours is absent (first install, or someone deleted it): its sets, then its chains. Until
///   the second transaction nothing translates, as before the first.
/// - Ours exists but cannot be updated in place: the old policy must hold until the new one
///   does, so the new policy is first put in force in the handover table (in place when a
///   leftover one fits, else its sets, then its chains, at the same hook and priority as
///   ours); then ours is recreated with its sets and no chain (the handover alone decides),
///   its chains are added, and the handover table is deleted.
///
/// A leftover handover table (a handover that failed half-way) is deleted once ours is
/// complete.
pub fn steps<'a>(table: &'a Table, handover: &'a Table, ours: Live, left: Live) -> Vec<Step<'a>> {
    let mut out = Vec::with_capacity(5);
    match ours {
        Live::Fits => out.push(Step::InPlace(table)),
        Live::Unchained => out.push(Step::Chains(table)),
        Live::Absent => out.extend([
            Step::Sets {
                table,
                delete_first: false,
            },
            Step::Chains(table),
        ]),
        Live::Other => {
            match left {
                Live::Fits => out.push(Step::InPlace(handover)),
                Live::Absent | Live::Other | Live::Unchained => out.extend([
                    Step::Sets {
                        table: handover,
                        delete_first: left != Live::Absent,
                    },
                    Step::Chains(handover),
                ]),
            }
            out.extend([
                Step::Sets {
                    table,
                    delete_first: true,
                },
                Step::Chains(table),
            ]);
        }
    }
    if ours == Live::Other || left != Live::Absent {
        out.push(Step::Delete(&handover.name));
    }
    out
}

/// The form a commit is reported as, from what our live table is.
pub fn form(ours: Live) -> ReplaceForm {
    match ours {
        Live::Fits => ReplaceForm::InPlace,
        Live::Absent | Live::Unchained => ReplaceForm::Create,
        Live::Other => ReplaceForm::Handover,
    }
}

impl Step<'_> {
    /// The step's batch, starting at sequence number `seq`, valid only at ruleset generation
    /// `generation`.
    pub fn batch(&self, seq: u32, generation: Option<u32>) -> Batch {
        match *self {
            Step::InPlace(table) => replace_at(table, seq, ReplaceForm::InPlace, generation),
            Step::Sets {
                table,
                delete_first,
            } => sets(table, seq, generation, delete_first),
            Step::Chains(table) => chains(table, seq, generation),
            Step::Delete(name) => {
                let mut bw = BatchWriter::at_generation(seq, 128, generation);
                bw.table(NFT_MSG_DELTABLE, name, None);
                bw.finish(0)
            }
        }
    }

    /// The name of the table the step changes.
    pub fn table(&self) -> &str {
        match self {
            Step::InPlace(t) | Step::Sets { table: t, .. } | Step::Chains(t) => &t.name,
            Step::Delete(name) => name,
        }
    }
}

/// `[DELTABLE,] NEWTABLE, per set NEWSET + elements`, then the block chains and the dispatch
/// maps' elements that jump to them: the sets created and filled, no base chain, so nothing
/// looks into them yet (a block chain is reached only through the base chain's rule).
fn sets(table: &Table, seq: u32, generation: Option<u32>, delete_first: bool) -> Batch {
    let mut bw = BatchWriter::at_generation(seq, estimate(table), generation);
    let name = table.name.as_str();
    if delete_first {
        bw.table(NFT_MSG_DELTABLE, name, None);
    }
    bw.table(NFT_MSG_NEWTABLE, name, Some(table.flags.0));
    let specs = set_specs(table);
    let (mut elements, ids) = new_sets(&mut bw, name, &specs, false);
    let set_id = |set: &str| ids.get(set).copied();
    for chain in table.chains.iter().filter(|c| c.base.is_none()) {
        chain_messages(&mut bw, name, chain, &set_id, false);
    }
    elements += verdict_elements(&mut bw, name, &specs);
    bw.finish(elements)
}

/// `per base chain NEWCHAIN + NEWRULE…`: the base chains of a table whose sets, maps and
/// block chains exist, looked up by name. No NEWTABLE: the table exists, and one without the
/// owner flag would ask the kernel to change it.
fn chains(table: &Table, seq: u32, generation: Option<u32>) -> Batch {
    let mut bw = BatchWriter::at_generation(seq, 4096, generation);
    for chain in table.chains.iter().filter(|c| c.base.is_some()) {
        chain_messages(&mut bw, &table.name, chain, &|_| None, false);
    }
    bw.finish(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, PolicyFlags};
    use crate::kernel::netlink::messages;
    use crate::model;

    fn table(flags: TableFlags) -> Table {
        let f = PolicyFlags {
            enable_ipv6: true,
            ..PolicyFlags::default()
        };
        model::desired(&Config::defaults(&f), &f, flags)
    }

    fn names(steps: &[Step<'_>]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::InPlace(t) => format!("in-place {}", t.name),
                Step::Sets {
                    table,
                    delete_first,
                } => format!(
                    "sets {}{}",
                    table.name,
                    if *delete_first { " (delete first)" } else { "" }
                ),
                Step::Chains(t) => format!("chains {}", t.name),
                Step::Delete(n) => format!("delete {n}"),
            })
            .collect()
    }

    #[test]
    fn the_handover_table_is_a_copy_owned_but_never_persistent() {
        let t = table(TableFlags(TableFlags::OWNER | TableFlags::PERSIST));
        let h = handover_of(&t);
        assert_eq!(h.name, "nft-masq-agent-handover");
        assert_eq!(h.flags, TableFlags(TableFlags::OWNER));
        assert_eq!(
            (&h.sets, &h.name_sets, &h.chains),
            (&t.sets, &t.name_sets, &t.chains)
        );
        assert_eq!(handover_of(&table(TableFlags(0))).flags, TableFlags(0));
    }

    #[test]
    fn block_chains_and_their_jumps_come_with_the_sets_and_the_base_chain_after() {
        let f = PolicyFlags {
            enable_ipv6: true,
            max_set_prefixes: 2,
            ..PolicyFlags::default()
        };
        let c = Config::defaults(&f);
        let t = model::desired(&c, &f, TableFlags::default());
        assert!(!t.dispatch.is_empty());
        let h = handover_of(&t);
        let plan = steps(&t, &h, Live::Absent, Live::Absent);
        let (first, second) = (plan[0].batch(1, Some(7)), plan[1].batch(100, Some(8)));
        let what = |b: &Batch| -> Vec<String> {
            b.msgs.iter().map(|m| m.what.clone()).collect::<Vec<_>>()
        };
        let first_what = what(&first);
        // The first transaction: every set, the block chains with their rules, then the
        // dispatch elements that jump to them; no base chain, so nothing is reached yet.
        let at = |prefix: &str| first_what.iter().position(|w| w.starts_with(prefix));
        let last_chain = first_what
            .iter()
            .rposition(|w| w.starts_with("NEWRULE "))
            .unwrap();
        let jumps = at("NEWSETELEM nonmasq-dispatch-v4").unwrap();
        assert!(last_chain < jumps, "{first_what:#?}");
        assert!(at("NEWCHAIN postrouting").is_none(), "{first_what:#?}");
        let chains = first_what
            .iter()
            .filter(|w| w.starts_with("NEWCHAIN"))
            .count();
        assert_eq!(chains, t.chains.len() - 1);
        // The second: the base chain alone.
        let second_what = what(&second);
        assert!(
            second_what[0].starts_with("NEWCHAIN postrouting"),
            "{second_what:#?}"
        );
        assert_eq!(
            second_what
                .iter()
                .filter(|w| w.starts_with("NEWCHAIN"))
                .count(),
            1
        );
        // Both read back as the table.
        let mut bytes = first.bytes.clone();
        bytes.extend_from_slice(&second.bytes);
        let back = crate::kernel::nft::decode::table_from_dump(&bytes, &t.name)
            .unwrap()
            .unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn sets_come_a_transaction_before_the_rules_that_use_them() {
        let t = table(TableFlags(TableFlags::OWNER | TableFlags::PERSIST));
        let h = handover_of(&t);
        let ours = "nft-masq-agent";
        let hand = "nft-masq-agent-handover";
        let cases = [
            (Live::Fits, Live::Absent, vec![format!("in-place {ours}")]),
            // Our table as wanted but for its base chains: they alone are added.
            (
                Live::Unchained,
                Live::Absent,
                vec![format!("chains {ours}")],
            ),
            (
                Live::Unchained,
                Live::Fits,
                vec![format!("chains {ours}"), format!("delete {hand}")],
            ),
            (
                Live::Fits,
                Live::Other,
                vec![format!("in-place {ours}"), format!("delete {hand}")],
            ),
            (
                Live::Absent,
                Live::Absent,
                vec![format!("sets {ours}"), format!("chains {ours}")],
            ),
            (
                Live::Absent,
                Live::Fits,
                vec![
                    format!("sets {ours}"),
                    format!("chains {ours}"),
                    format!("delete {hand}"),
                ],
            ),
            (
                Live::Other,
                Live::Absent,
                vec![
                    format!("sets {hand}"),
                    format!("chains {hand}"),
                    format!("sets {ours} (delete first)"),
                    format!("chains {ours}"),
                    format!("delete {hand}"),
                ],
            ),
            (
                Live::Other,
                Live::Fits,
                vec![
                    format!("in-place {hand}"),
                    format!("sets {ours} (delete first)"),
                    format!("chains {ours}"),
                    format!("delete {hand}"),
                ],
            ),
            (
                Live::Other,
                Live::Other,
                vec![
                    format!("sets {hand} (delete first)"),
                    format!("chains {hand}"),
                    format!("sets {ours} (delete first)"),
                    format!("chains {ours}"),
                    format!("delete {hand}"),
                ],
            ),
        ];
        for (ours_live, left, want) in cases {
            let plan = steps(&t, &h, ours_live, left);
            assert_eq!(names(&plan), want, "ours {ours_live:?}, handover {left:?}");
            for (i, step) in plan.iter().enumerate() {
                let b = step.batch(100, Some(40 + i as u32));
                let kinds: Vec<u16> = b.msgs.iter().map(|m| m.kind).collect();
                let has = |k| kinds.contains(&k);
                match step {
                    // A batch that creates sets has no rule, and one with rules creates no
                    // set: no rule ever looks into a set its own transaction fills.
                    Step::Sets { delete_first, .. } => {
                        assert!(!has(NFT_MSG_NEWCHAIN) && !has(NFT_MSG_NEWRULE), "{kinds:?}");
                        assert!(has(NFT_MSG_NEWSET) && has(NFT_MSG_NEWSETELEM), "{kinds:?}");
                        assert_eq!(kinds[0] == NFT_MSG_DELTABLE, *delete_first);
                        assert_eq!(b.elements, element_count_of(&t));
                    }
                    Step::Chains(_) => {
                        assert!(
                            !has(NFT_MSG_NEWSET) && !has(NFT_MSG_NEWSETELEM),
                            "{kinds:?}"
                        );
                        assert!(!has(NFT_MSG_NEWTABLE), "{kinds:?}");
                        assert!(has(NFT_MSG_NEWCHAIN) && has(NFT_MSG_NEWRULE), "{kinds:?}");
                    }
                    Step::InPlace(_) => assert!(has(NFT_MSG_DELRULE), "{kinds:?}"),
                    Step::Delete(_) => assert_eq!(kinds, [NFT_MSG_DELTABLE]),
                }
                // Each a compare-and-commit on the generation the one before made.
                let begin = messages(&b.bytes).next().unwrap().unwrap();
                let genid: Vec<(u16, Vec<u8>)> = begin
                    .attrs()
                    .map(|a| a.unwrap())
                    .map(|a| (a.ty, a.data.to_vec()))
                    .collect();
                let g = 40 + i as u32;
                assert_eq!(genid, [(NFNL_BATCH_GENID, g.to_be_bytes().to_vec())]);
            }
        }
    }

    fn element_count_of(t: &Table) -> usize {
        super::super::element_count(t)
    }

    /// Walks each plan over a model of what is in force: which tables have rules, and
    /// whether those rules hold the old or the new policy. When ours existed before, some
    /// table's rules decide after every step, and they hold the old or the new policy; at the
    /// end ours alone, with the new one.
    #[test]
    fn the_old_or_the_new_policy_is_in_force_after_every_step() {
        #[derive(Clone, Copy, Debug, PartialEq)]
        enum Policy {
            Old,
            New,
            // A leftover handover: one of our own earlier policies.
            Earlier,
        }
        let t = table(TableFlags(0));
        let h = handover_of(&t);
        for ours in [Live::Fits, Live::Other, Live::Absent, Live::Unchained] {
            for left in [Live::Absent, Live::Fits, Live::Other] {
                // (table name, has rules, policy)
                let mut live: Vec<(String, bool, Policy)> = Vec::new();
                match ours {
                    Live::Absent => {}
                    // The new policy's sets, waiting for their rules.
                    Live::Unchained => live.push((t.name.clone(), false, Policy::New)),
                    Live::Fits | Live::Other => live.push((t.name.clone(), true, Policy::Old)),
                }
                if left != Live::Absent {
                    live.push((h.name.clone(), left == Live::Fits, Policy::Earlier));
                }
                for step in steps(&t, &h, ours, left) {
                    let name = step.table().to_string();
                    match step {
                        Step::InPlace(_) => {
                            let e = live.iter_mut().find(|e| e.0 == name).unwrap();
                            *e = (name.clone(), true, Policy::New);
                        }
                        Step::Sets { delete_first, .. } => {
                            assert_eq!(live.iter().any(|e| e.0 == name), delete_first);
                            live.retain(|e| e.0 != name);
                            live.push((name.clone(), false, Policy::New));
                        }
                        Step::Chains(_) => live.iter_mut().find(|e| e.0 == name).unwrap().1 = true,
                        Step::Delete(_) => live.retain(|e| e.0 != name),
                    }
                    let deciding: Vec<Policy> = live.iter().filter(|e| e.1).map(|e| e.2).collect();
                    if matches!(ours, Live::Fits | Live::Other) {
                        assert!(
                            !deciding.is_empty(),
                            "{ours:?} {left:?}: no rules after {name}"
                        );
                        // A leftover handover's policy decides only where it was already
                        // deciding before this commit.
                        assert!(
                            left != Live::Absent || !deciding.contains(&Policy::Earlier),
                            "{ours:?} {left:?}: {deciding:?}"
                        );
                    }
                }
                assert_eq!(
                    live,
                    [(t.name.clone(), true, Policy::New)],
                    "{ours:?} {left:?}"
                );
            }
        }
    }
}
