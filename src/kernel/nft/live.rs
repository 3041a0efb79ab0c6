//! The live table as the agent knows it without reading it: its own last commit, followed
//! through what others did to it since, as nftables notifications report it.
//!
//! Pure. Each committed transaction reaches the notification group as one message per
//! changed object (an element added or deleted, a rule, a set, a chain, the table), then a
//! NEWGEN with the new generation id. A [`Known`] table advances one generation per
//! transaction ([`Known::follow`]): a transaction that did not touch our table only moves
//! the generation, one that added or deleted elements of our sets or rules of our chains is
//! recorded as [`Edits`], and anything else (a set, chain or the table itself added, deleted
//! or changed; an element that does not decode; a generation skipped; notifications lost)
//! means the live table is no longer known. The repair is then the difference between what
//! is live and what is wanted (`encode::delta`), sent as a compare-and-commit on the
//! generation the model reached: what someone else changed is undone, nothing else is sent.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::model::Table;

/// Interval elements of one set: `(key, is_end)`, ascending (as the encoder writes them).
pub type Elements = Vec<(u128, bool)>;

/// One foreign transaction's changes to our table, in the order the notifications came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edit {
    /// Elements added or deleted, per set, in arrival order.
    pub elements: Vec<ElementChange>,
    /// Chains whose rules were added or deleted.
    pub chains: Vec<String>,
    /// A change the model cannot follow (a set, a chain or the table added, deleted or
    /// changed; a message that does not decode): what it was.
    pub unknown: Option<&'static str>,
}

impl Edit {
    /// Whether the transaction changed nothing of our table.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty() && self.chains.is_empty() && self.unknown.is_none()
    }

    /// Number of element keys recorded.
    pub fn keys(&self) -> usize {
        self.elements.iter().map(|e| e.keys.len()).sum()
    }
}

/// Elements of one set added or deleted by one message (or consecutive messages folded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementChange {
    /// The set.
    pub set: String,
    /// Added (`true`) or deleted.
    pub added: bool,
    /// The elements: `(key, is_end)`.
    pub keys: Elements,
}

/// What the notification stream said about one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A transaction ended at generation `to`; `from` is the one before it as the listener
    /// saw it (`None`: not known). `edit` is what it did to our table, if anything.
    Generation {
        /// The generation before, as last seen.
        from: Option<u32>,
        /// The transaction's generation.
        to: u32,
        /// Its changes to our table (`None`: it did not touch it).
        edit: Option<Edit>,
    },
    /// Notifications were lost or a generation was skipped: the live table is not known.
    Lost,
}

/// One element change recorded against a set: `(key, is_end, added)`.
type Op = (u128, bool, bool);

/// What others did to the table since the agent's commit: per set the element changes in
/// order, and the chains whose rules changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    ops: HashMap<String, Vec<Op>>,
    dirty: Vec<String>,
    count: usize,
}

impl Edits {
    /// Whether chain `name` had rules added or deleted by others.
    pub fn chain_dirty(&self, name: &str) -> bool {
        self.dirty.iter().any(|c| c == name)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.dirty.is_empty()
    }

    /// Whether others changed elements of set (or map) `name`.
    pub fn touches(&self, name: &str) -> bool {
        self.ops.get(name).is_some_and(|o| !o.is_empty())
    }

    /// The sets others changed elements of, by name (sorted).
    pub fn sets(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .ops
            .iter()
            .filter(|(_, o)| !o.is_empty())
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// What others did to set `name` whose elements at the agent's commit were `base`
    /// (ascending, an end before a start at the same key): the elements they deleted and
    /// those they added, each in that order; `None`
    /// when a change contradicts what was there (an element deleted that was not in the
    /// set, or added that was): then the model is wrong and the table must be read.
    pub fn net(&self, name: &str, base: &[(u128, bool)]) -> Option<(Elements, Elements)> {
        let Some(ops) = self.ops.get(name).filter(|o| !o.is_empty()) else {
            return Some((Vec::new(), Vec::new()));
        };
        // Group the changes by element, keeping their order within each element (a stable
        // sort), then replay each element's changes from whether the base holds it.
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_by_key(|&i| in_order((ops[i].0, ops[i].1)));
        let mut gone: Elements = Vec::new();
        let mut came: Elements = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let (key, end, _) = ops[order[i]];
            let was = base
                .binary_search_by_key(&in_order((key, end)), |&e| in_order(e))
                .is_ok();
            let mut present = was;
            while i < order.len() && (ops[order[i]].0, ops[order[i]].1) == (key, end) {
                let added = ops[order[i]].2;
                if added == present {
                    // Added while there, or deleted while absent: the kernel would have
                    // refused that, so the model is not what is live.
                    return None;
                }
                present = added;
                i += 1;
            }
            match (was, present) {
                (true, false) => gone.push((key, end)),
                (false, true) => came.push((key, end)),
                _ => {}
            }
        }
        Some((gone, came))
    }

    /// The live elements of set `name` whose elements at the agent's commit were `base`
    /// (ascending), with the recorded changes applied; `None` as for [`Edits::net`].
    pub fn live_elements<'a>(
        &self,
        name: &str,
        base: &'a [(u128, bool)],
    ) -> Option<Cow<'a, [(u128, bool)]>> {
        if self.ops.get(name).is_none_or(|o| o.is_empty()) {
            return Some(Cow::Borrowed(base));
        }
        let (gone, came) = self.net(name, base)?;
        // Both lists are ascending (from the sort): one merge walk.
        let mut out = Vec::with_capacity(base.len() + came.len() - gone.len().min(base.len()));
        let (mut g, mut c) = (0, 0);
        for &e in base {
            while c < came.len() && in_order(came[c]) < in_order(e) {
                out.push(came[c]);
                c += 1;
            }
            if g < gone.len() && gone[g] == e {
                g += 1;
                continue;
            }
            out.push(e);
        }
        out.extend_from_slice(&came[c..]);
        Some(Cow::Owned(out))
    }
}

/// The order of interval elements: by key, and at one key the end before the start (the
/// end of an interval and the start of the next one adjacent to it share their key).
fn in_order((key, end): (u128, bool)) -> (u128, bool) {
    (key, !end)
}

/// The most element changes the model records before it gives up and the table is read:
/// a set flushed at the prefix cap (150,000 IPv6 prefixes, 300,000 elements) still fits,
/// so its repair is a difference too; a tamperer cannot grow the agent's memory past about
/// 10 MiB this way.
pub const MAX_EDITS: usize = 320_000;

/// The live table: the agent's last commit at the generation it made, plus what others did
/// to it since, at the generation the notifications reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    generation: u32,
    table: Table,
    edits: Edits,
}

impl Known {
    /// `table` is live at `generation`, exactly (our own commit, or a read that no commit
    /// interrupted).
    pub fn new(generation: u32, table: Table) -> Known {
        Known {
            generation,
            table,
            edits: Edits::default(),
        }
    }

    /// The generation at which the model holds.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The table the model starts from (before [`Known::edits`]).
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// What others did to [`Known::table`] since.
    pub fn edits(&self) -> &Edits {
        &self.edits
    }

    /// Whether committing `table` over the live table changes any rule: the wanted rules
    /// differ, or others added or deleted rules in one of its chains. Then the difference
    /// refills those chains, and their counters start again.
    pub fn rules_change(&self, table: &Table) -> bool {
        // By name: the kernel's order of chains is their order of creation.
        let known: HashMap<&str, &crate::model::Chain> = self
            .table
            .chains
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect();
        self.table.chains.len() != table.chains.len()
            || table.chains.iter().any(|c| {
                self.edits.chain_dirty(&c.name)
                    || known
                        .get(c.name.as_str())
                        .is_none_or(|o| o.rules != c.rules)
            })
    }

    /// Takes the table back (the model is consumed by a commit).
    pub fn into_table(self) -> Table {
        self.table
    }

    /// Follows `steps` in order; the model (`known`) is dropped at the first it cannot
    /// follow, and stays dropped (the next commit is then a full one).
    pub fn follow_all(known: &mut Option<Known>, steps: &[Step]) {
        for step in steps {
            let Some(k) = known else {
                return;
            };
            if let Err(why) = k.follow(step) {
                tracing::debug!("the live table is no longer known: {why}");
                *known = None;
            }
        }
    }

    /// Advances by one notified step; `Err` names why the model is lost (the live table
    /// must then be read or replaced whole).
    pub fn follow(&mut self, step: &Step) -> Result<(), &'static str> {
        let Step::Generation { from, to, edit } = step else {
            return Err("notifications were lost");
        };
        if (to.wrapping_sub(self.generation) as i32) <= 0 {
            // Older than the model (notifications from before our commit): already in it.
            return Ok(());
        }
        if *from != Some(self.generation) || *to != self.generation.wrapping_add(1) {
            return Err("a generation was not followed");
        }
        if let Some(edit) = edit {
            if let Some(what) = edit.unknown {
                return Err(what);
            }
            if self.edits.count + edit.keys() > MAX_EDITS {
                return Err("too many element changes to follow");
            }
            for change in &edit.elements {
                let ops = self.edits.ops.entry(change.set.clone()).or_default();
                ops.extend(change.keys.iter().map(|&(k, end)| (k, end, change.added)));
                self.edits.count += change.keys.len();
            }
            for chain in &edit.chains {
                if !self.table.chains.iter().any(|c| &c.name == chain) {
                    return Err("a rule changed in a chain that is not ours");
                }
                if !self.edits.chain_dirty(chain) {
                    self.edits.dirty.push(chain.clone());
                }
            }
        }
        self.generation = *to;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, PolicyFlags};
    use crate::model::{self, TableFlags};

    fn table() -> Table {
        let f = PolicyFlags::default();
        model::desired(&Config::defaults(&f), &f, TableFlags::default())
    }

    fn step(from: u32, edit: Option<Edit>) -> Step {
        Step::Generation {
            from: Some(from),
            to: from + 1,
            edit,
        }
    }

    fn elements(set: &str, added: bool, keys: &[(u128, bool)]) -> Edit {
        Edit {
            elements: vec![ElementChange {
                set: set.into(),
                added,
                keys: keys.to_vec(),
            }],
            ..Edit::default()
        }
    }

    const BASE: &[(u128, bool)] = &[(0, true), (10, false), (20, true), (30, false), (40, true)];

    #[test]
    fn adjacent_intervals_sharing_a_key_are_followed_both() {
        // [10, 20) and [20, 30): the first one's end and the second one's start are both
        // at 20 (a dispatch map's adjacent blocks). A flush deletes all five.
        let base: &[(u128, bool)] = &[(0, true), (10, false), (20, true), (20, false), (30, true)];
        let mut k = Known::new(1, table());
        k.follow(&step(1, Some(elements("m", false, base))))
            .unwrap();
        let (gone, came) = k.edits().net("m", base).expect("the model holds");
        assert_eq!((gone.as_slice(), came.as_slice()), (base, &[][..]));
        assert_eq!(&*k.edits().live_elements("m", base).unwrap(), &[][..]);
        // Added back, the second interval only: merged in order around the base.
        let mut k = Known::new(1, table());
        k.follow(&step(
            1,
            Some(elements("m", false, &[(20, false), (30, true)])),
        ))
        .unwrap();
        let live = k.edits().live_elements("m", base).unwrap();
        assert_eq!(&*live, &[(0, true), (10, false), (20, true)]);
    }

    #[test]
    fn transactions_that_leave_our_table_alone_only_move_the_generation() {
        let mut k = Known::new(7, table());
        k.follow(&step(7, None)).unwrap();
        k.follow(&step(8, None)).unwrap();
        assert_eq!(k.generation(), 9);
        assert!(k.edits().is_empty());
    }

    #[test]
    fn deleted_and_added_elements_are_applied_in_order() {
        let mut k = Known::new(1, table());
        k.follow(&step(
            1,
            Some(elements("s", false, &[(10, false), (20, true)])),
        ))
        .unwrap();
        let live = k.edits().live_elements("s", BASE).unwrap();
        assert_eq!(&*live, &[(0, true), (30, false), (40, true)]);
        // Re-added by a later transaction, with a new interval beside it.
        k.follow(&step(
            2,
            Some(elements(
                "s",
                true,
                &[(10, false), (20, true), (50, false), (60, true)],
            )),
        ))
        .unwrap();
        let live = k.edits().live_elements("s", BASE).unwrap();
        assert_eq!(
            &*live,
            &[
                (0, true),
                (10, false),
                (20, true),
                (30, false),
                (40, true),
                (50, false),
                (60, true)
            ]
        );
        // Another set is untouched: borrowed, not copied.
        assert!(matches!(
            k.edits().live_elements("t", BASE),
            Some(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn a_flushed_set_is_empty() {
        let mut k = Known::new(1, table());
        k.follow(&step(1, Some(elements("s", false, BASE))))
            .unwrap();
        assert!(k.edits().live_elements("s", BASE).unwrap().is_empty());
    }

    #[test]
    fn a_change_that_contradicts_the_model_means_reading_the_table() {
        let mut k = Known::new(1, table());
        // Deleting what is not there, or adding what is, cannot have happened.
        k.follow(&step(1, Some(elements("s", false, &[(11, false)]))))
            .unwrap();
        assert_eq!(k.edits().live_elements("s", BASE), None);
        let mut k = Known::new(1, table());
        k.follow(&step(1, Some(elements("s", true, &[(10, false)]))))
            .unwrap();
        assert_eq!(k.edits().live_elements("s", BASE), None);
    }

    #[test]
    fn rules_mark_their_chain() {
        let t = table();
        let chain = t.chains[0].name.clone();
        let mut k = Known::new(1, t);
        let edit = Edit {
            chains: vec![chain.clone()],
            ..Edit::default()
        };
        k.follow(&step(1, Some(edit))).unwrap();
        assert!(k.edits().chain_dirty(&chain));
        let stranger = Edit {
            chains: vec!["planted".into()],
            ..Edit::default()
        };
        assert!(k.follow(&step(2, Some(stranger))).is_err());
    }

    #[test]
    fn gaps_lost_notifications_and_unknown_changes_lose_the_model() {
        let mut k = Known::new(1, table());
        assert!(
            k.follow(&Step::Generation {
                from: Some(2),
                to: 3,
                edit: None
            })
            .is_err()
        );
        assert!(
            k.follow(&Step::Generation {
                from: None,
                to: 2,
                edit: None
            })
            .is_err()
        );
        assert!(k.follow(&Step::Lost).is_err());
        let unknown = Edit {
            unknown: Some("set deleted"),
            ..Edit::default()
        };
        assert_eq!(k.follow(&step(1, Some(unknown))), Err("set deleted"));
        // Older generations (our own commit already includes them) change nothing.
        let mut k = Known::new(5, table());
        k.follow(&Step::Generation {
            from: Some(3),
            to: 4,
            edit: Some(elements("s", false, BASE)),
        })
        .unwrap();
        assert!(k.edits().is_empty());
        assert_eq!(k.generation(), 5);
    }

    #[test]
    fn the_model_is_bounded() {
        let mut k = Known::new(1, table());
        let many: Vec<(u128, bool)> = (0..MAX_EDITS as u128 + 1).map(|i| (i, false)).collect();
        assert!(
            k.follow(&step(1, Some(elements("s", true, &many))))
                .is_err()
        );
    }
}
