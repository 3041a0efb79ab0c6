//! Reading the other NAT tables within an element budget (see [`crate::kernel::nft::ruleset`]
//! for what is read and why): the chains their NAT postrouting chains reach, those chains'
//! rules, and the sets those rules look up.

use std::collections::HashMap;

use super::NftSocket;
use crate::kernel::nft::decode::{self, ChainMsg};
use crate::kernel::nft::error::NftError;
use crate::kernel::nft::ruleset::{self, ForeignRead, ForeignTable};
use crate::kernel::nft::uapi::*;

/// The set elements a read of the other NAT tables may still keep.
struct Budget {
    max: usize,
    left: usize,
    /// A set did not fit: nothing more is read.
    spent: bool,
    /// The socket element dumps use: one of their own, so a dump past the budget can be
    /// cut off by closing it instead of being read to its end (the kernel has no other way
    /// to cancel a dump, and ours must stay open).
    sock: Option<NftSocket>,
}

/// A foreign set as read: whole, or not read because the budget ran out.
enum Read {
    Done(ruleset::ForeignSet),
    TooLarge(ruleset::ForeignSet),
}

impl NftSocket {
    /// Every other table with a NAT chain at the postrouting hook (families ip, ip6, inet;
    /// our own table left out): the chains its NAT postrouting chains reach (at any
    /// priority), their rules, and the sets those rules look up, at most `max_elements` set
    /// elements in all. Once a set would exceed that, it and every set after it are not read
    /// (its dump is cut off, not drained) and their tables are listed as too large. Read
    /// between two generation reads and retried if the ruleset changed meanwhile.
    pub fn read_nat_tables(
        &mut self,
        ours: &str,
        max_elements: usize,
    ) -> Result<ForeignRead, NftError> {
        for _ in 0..8 {
            match self.read_nat_tables_once(ours, max_elements) {
                Err(NftError::Interrupted) => continue,
                other => return other,
            }
        }
        Err(NftError::Interrupted)
    }

    fn read_nat_tables_once(
        &mut self,
        ours: &str,
        max_elements: usize,
    ) -> Result<ForeignRead, NftError> {
        let gen_before = self.generation()?;
        let mut chains = Vec::new();
        self.exchange(
            NFT_MSG_GETCHAIN,
            true,
            NFPROTO_UNSPEC,
            |_| {},
            |m| {
                chains.push(ruleset::chain_of(m)?);
                Ok(())
            },
        )?;
        let mut out = ForeignRead::default();
        let mut budget = Budget {
            max: max_elements,
            left: max_elements,
            spent: false,
            sock: None,
        };
        for (family, table) in ruleset::nat_tables(&chains, ours) {
            let own: Vec<ChainMsg> = chains
                .iter()
                .filter(|(f, c)| *f == family && c.table == table)
                .map(|(_, c)| c.clone())
                .collect();
            let (t, too_large) = self.read_foreign(family, table, own, &mut budget)?;
            if too_large {
                out.too_large
                    .push((ruleset::family_name(family), t.name.clone()));
            }
            out.tables.push(t);
        }
        out.elements = budget.max - budget.left;
        if self.generation()? != gen_before {
            return Err(NftError::Interrupted);
        }
        Ok(out)
    }

    /// One foreign table: its rules, then the sets the reachable ones look up (following
    /// the verdict maps read), within `budget`; true when a set was left unread for it.
    fn read_foreign(
        &mut self,
        family: u8,
        table: String,
        mut chains: Vec<ChainMsg>,
        budget: &mut Budget,
    ) -> Result<(ForeignTable, bool), NftError> {
        let mut rules = Vec::new();
        let name = table.as_str();
        self.exchange(
            NFT_MSG_GETRULE,
            true,
            family,
            |w| w.put_str(NFTA_RULE_TABLE, name),
            |m| {
                if decode::is_of_table(m, name) {
                    rules.push(decode::rule(m)?);
                }
                Ok(())
            },
        )?;
        // The sets' descriptions are small; their elements are what others make large.
        let mut set_msgs: HashMap<String, decode::SetMsg> = HashMap::new();
        self.exchange(
            NFT_MSG_GETSET,
            true,
            family,
            |w| w.put_str(NFTA_SET_TABLE, name),
            |m| {
                if decode::is_of_table(m, name) {
                    let s = decode::set(m)?;
                    set_msgs.insert(s.name.clone(), s);
                }
                Ok(())
            },
        )?;
        let mut sets = Vec::new();
        let mut too_large = false;
        let reached = {
            let mut reach = ruleset::Reach::new(&chains, &rules);
            loop {
                let wanted = reach.next_sets();
                if wanted.is_empty() {
                    break;
                }
                for set in wanted {
                    let read = match set_msgs.remove(set) {
                        Some(s) => self.read_set(family, name, s, budget)?,
                        None => Read::Done(ruleset::ForeignSet::opaque(
                            set,
                            0,
                            format!("set {set}, which the dump did not list"),
                        )),
                    };
                    let s = match read {
                        Read::Done(s) => s,
                        Read::TooLarge(s) => {
                            too_large = true;
                            s
                        }
                    };
                    reach.read(&s);
                    sets.push(s);
                }
            }
            reach.finish()
        };
        ruleset::keep_reached(&mut chains, &mut rules, &reached);
        Ok((
            ForeignTable {
                family,
                name: table,
                chains,
                rules,
                sets,
            },
            too_large,
        ))
    }

    /// One set's elements within `budget`, on the budget's own socket. Past the budget
    /// nothing more is kept or read: that socket is closed, which ends the kernel's dump.
    fn read_set(
        &mut self,
        family: u8,
        table: &str,
        s: decode::SetMsg,
        budget: &mut Budget,
    ) -> Result<Read, NftError> {
        let (set, key_len) = (s.name.clone(), s.key_len as usize);
        let not_read = |budget: &Budget| {
            Read::TooLarge(ruleset::ForeignSet::opaque(
                &set,
                key_len,
                ruleset::not_read_reason(&set, table, budget.max),
            ))
        };
        if budget.spent {
            return Ok(not_read(budget));
        }
        let mut sock = match budget.sock.take() {
            Some(sock) => sock,
            None => {
                let mut sock = NftSocket::open()?;
                sock.progress = self.progress.clone();
                sock
            }
        };
        let mut builder = ruleset::SetBuilder::new(s);
        let mut used = 0;
        let room = budget.left;
        let read = sock.exchange_until(
            NFT_MSG_GETSETELEM,
            true,
            family,
            |w| {
                w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
                w.put_str(NFTA_SET_ELEM_LIST_SET, &set);
            },
            |m| match builder.feed(m, room - used)? {
                Some(n) => {
                    used += n;
                    Ok(true)
                }
                None => Ok(false),
            },
        );
        budget.left -= used;
        match read {
            Ok(true) => {
                budget.sock = Some(sock);
                Ok(Read::Done(builder.finish()))
            }
            // Dropping the socket (and what was kept) here ends the dump.
            Ok(false) => {
                budget.spent = true;
                Ok(not_read(budget))
            }
            // A set we cannot ask for (a name that is not UTF-8): lookups in it are unknown,
            // not a reason to fail the whole analysis.
            Err(NftError::Kernel { .. }) => {
                budget.sock = Some(sock);
                Ok(Read::Done(ruleset::ForeignSet::opaque(
                    &set,
                    key_len,
                    format!("set {set} could not be read"),
                )))
            }
            Err(e) => Err(e),
        }
    }
}
