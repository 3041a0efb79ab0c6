//! The read-back: the agent's table dumped from the kernel (raw for the captured-dump
//! fixtures, decoded as the replies arrive, or only its skeleton, flags or rules), retried
//! while the ruleset changes underneath unless the reader listens to notifications. Apart
//! from the transaction ([`super::transaction`]) because it only reads.

use super::NftSocket;
use crate::kernel::netlink::{Msg, Writer};
use crate::kernel::nft::decode;
use crate::kernel::nft::encode;
use crate::kernel::nft::error::NftError;
use crate::kernel::nft::uapi::*;
use crate::model::Table;

/// Reply messages kept back to back, re-framed as the kernel sent them, for the decoder.
#[derive(Debug, Default)]
struct Dump {
    bytes: Vec<u8>,
}

impl Dump {
    fn keep(&mut self, m: &Msg<'_>) -> Result<(), NftError> {
        // Header (16 bytes) + payload, 4-byte aligned.
        let len = NLMSG_HDRLEN + m.payload.len();
        self.bytes.extend_from_slice(&(len as u32).to_ne_bytes());
        self.bytes.extend_from_slice(&m.ty.to_ne_bytes());
        self.bytes.extend_from_slice(&m.flags.to_ne_bytes());
        self.bytes.extend_from_slice(&m.seq.to_ne_bytes());
        self.bytes.extend_from_slice(&m.pid.to_ne_bytes());
        self.bytes.extend_from_slice(m.payload);
        self.bytes.resize((self.bytes.len() + 3) & !3, 0);
        Ok(())
    }
}

impl NftSocket {
    /// Reads table `name` of the inet family: the raw reply messages, back to back, or
    /// `None` when the table does not exist. Retries while the ruleset changes underneath.
    pub fn read_table_raw(&mut self, name: &str) -> Result<Option<Vec<u8>>, NftError> {
        let read = self.read_table_with(name, Dump::default, |d, m| d.keep(m))?;
        Ok(read.map(|d| d.bytes))
    }

    /// Reads table `name` into `sink`, a fresh one per attempt (`fresh`), each reply
    /// message through `feed`. Retries while the ruleset changes underneath.
    fn read_table_with<S>(
        &mut self,
        name: &str,
        fresh: impl Fn() -> S,
        feed: impl Fn(&mut S, &Msg<'_>) -> Result<(), NftError>,
    ) -> Result<Option<S>, NftError> {
        for _ in 0..8 {
            match self.read_table_once(name, fresh(), &feed) {
                Err(NftError::Interrupted) => continue,
                other => return other,
            }
        }
        Err(NftError::Interrupted)
    }

    fn read_table_once<S>(
        &mut self,
        name: &str,
        mut sink: S,
        feed: &impl Fn(&mut S, &Msg<'_>) -> Result<(), NftError>,
    ) -> Result<Option<S>, NftError> {
        let gen_before = self.generation()?;
        if !self.get_table(name, |m| feed(&mut sink, m))? {
            return Ok(None);
        }
        for set in self.dump_sets(name, |m| feed(&mut sink, m))? {
            self.dump_elements(name, &set, |m| feed(&mut sink, m))?;
        }
        // Chain dumps are not filtered by table on every kernel: the filter does it.
        self.dump_of_table(NFT_MSG_GETCHAIN, name, |_| {}, |m| feed(&mut sink, m))?;
        self.dump_rules(name, |m| feed(&mut sink, m))?;
        if !self.unsettled && self.generation()? != gen_before {
            return Err(NftError::Interrupted);
        }
        Ok(Some(sink))
    }

    /// Reads table `name` like [`NftSocket::read_table`], once, without insisting that
    /// nobody commits meanwhile. Any commit (to any table) interrupts a strict read, and a
    /// read of a large set takes seconds: on a node where another component commits every
    /// second, or during a tamper storm, strict reads never finish. This is for a reader
    /// that listens to nftables notifications: a change to table `name` during the read
    /// arrives as one and is acted on, so what the read may have missed is never trusted.
    pub fn read_table_unsettled(&mut self, name: &str) -> Result<Option<Table>, NftError> {
        self.unsettled = true;
        let read =
            self.read_table_once(
                name,
                decode::TableDecoder::new(name),
                &|d, m| Ok(d.feed(m)?),
            );
        self.unsettled = false;
        Ok(read?.and_then(decode::TableDecoder::finish))
    }

    /// Dumps `kind` in the inet family, passing on only the messages of table `name`; the
    /// filter looks at nothing but the table attribute.
    fn dump_of_table(
        &mut self,
        kind: u16,
        name: &str,
        attrs: impl FnOnce(&mut Writer),
        mut each: impl FnMut(&Msg<'_>) -> Result<(), NftError>,
    ) -> Result<(), NftError> {
        self.exchange(kind, true, NFPROTO_INET, attrs, |m| {
            if decode::is_of_table(m, name) {
                each(m)?;
            }
            Ok(())
        })
    }

    /// The sets of table `name` into `dump`; returns their names as the kernel spelt them
    /// (raw bytes: a set someone else added may have a name that is not UTF-8).
    fn dump_sets(
        &mut self,
        name: &str,
        mut each: impl FnMut(&Msg<'_>) -> Result<(), NftError>,
    ) -> Result<Vec<Vec<u8>>, NftError> {
        let mut names = Vec::new();
        let attrs = |w: &mut Writer| w.put_str(NFTA_SET_TABLE, name);
        self.dump_of_table(NFT_MSG_GETSET, name, attrs, |m| {
            if let Some(a) = m
                .attrs()
                .map_while(Result::ok)
                .find(|a| a.ty == NFTA_SET_NAME)
            {
                names.push(a.data.to_vec());
            }
            each(m)
        })?;
        Ok(names)
    }

    fn dump_elements(
        &mut self,
        name: &str,
        set: &[u8],
        each: impl FnMut(&Msg<'_>) -> Result<(), NftError>,
    ) -> Result<(), NftError> {
        let attrs = |w: &mut Writer| {
            w.put_str(NFTA_SET_ELEM_LIST_TABLE, name);
            w.put(NFTA_SET_ELEM_LIST_SET, set);
        };
        self.dump_of_table(NFT_MSG_GETSETELEM, name, attrs, each)
    }

    /// Reads table `name` of the inet family and decodes it, message by message as the
    /// replies arrive.
    pub fn read_table(&mut self, name: &str) -> Result<Option<Table>, NftError> {
        let fresh = || decode::TableDecoder::new(name);
        let read = self.read_table_with(name, fresh, |d, m| Ok(d.feed(m)?))?;
        Ok(read.and_then(decode::TableDecoder::finish))
    }

    /// Reads table `name` like [`NftSocket::read_table`], with the generation it holds at:
    /// no commit interrupted the read. `None` when the table does not exist or does not
    /// decode as one of ours.
    pub fn read_table_at(&mut self, name: &str) -> Result<Option<(u32, Table)>, NftError> {
        self.read_table_at_tries(name, 8)
    }

    /// [`NftSocket::read_table_at`], giving up ([`NftError::Interrupted`]) after `tries`
    /// reads that a commit interrupted.
    pub fn read_table_at_tries(
        &mut self,
        name: &str,
        tries: usize,
    ) -> Result<Option<(u32, Table)>, NftError> {
        for _ in 0..tries {
            let generation = self.generation()?;
            let fresh = decode::TableDecoder::new(name);
            match self.read_table_once(name, fresh, &|d, m| Ok(d.feed(m)?)) {
                Err(NftError::Interrupted) => continue,
                Err(e) => return Err(e),
                Ok(None) => return Ok(None),
                // The read checked that the generation did not move during it; this one
                // was read before it, so a commit in between means reading again.
                Ok(Some(d)) => {
                    if self.generation()? != generation {
                        continue;
                    }
                    return Ok(d.finish().map(|t| (generation, t)));
                }
            }
        }
        Err(NftError::Interrupted)
    }

    /// Dumps the rules of table `name`. Kernels filter the dump by table; we check again, since
    /// a foreign rule in another table must never be taken for ours.
    fn dump_rules(
        &mut self,
        name: &str,
        each: impl FnMut(&Msg<'_>) -> Result<(), NftError>,
    ) -> Result<(), NftError> {
        let attrs = |w: &mut Writer| w.put_str(NFTA_RULE_TABLE, name);
        self.dump_of_table(NFT_MSG_GETRULE, name, attrs, each)
    }

    /// The rules of table `name` (no sets): cheap enough to read on every metrics scrape.
    /// `None` when the table has no rules (or does not exist).
    pub fn read_rules(&mut self, name: &str) -> Result<Option<Table>, NftError> {
        let mut rules = Vec::new();
        self.dump_rules(name, |m| {
            rules.push(decode::rule(m)?);
            Ok(())
        })?;
        if rules.is_empty() {
            return Ok(None);
        }
        let mut chains: Vec<decode::ChainMsg> = Vec::new();
        for r in &rules {
            if !chains.iter().any(|c| c.chain.name == r.chain) {
                chains.push(decode::ChainMsg {
                    table: name.to_string(),
                    chain: crate::model::Chain {
                        name: r.chain.clone(),
                        base: None,
                        rules: Vec::new(),
                    },
                });
            }
        }
        let table = decode::TableMsg {
            name: name.to_string(),
            flags: crate::model::TableFlags::default(),
            owner: None,
        };
        Ok(Some(decode::assemble(table, Vec::new(), chains, rules)))
    }

    /// Asks for table `name` of the inet family, feeding the reply to `each`; false when the
    /// table does not exist.
    fn get_table(
        &mut self,
        name: &str,
        each: impl FnMut(&Msg<'_>) -> Result<(), NftError>,
    ) -> Result<bool, NftError> {
        match self.exchange(
            NFT_MSG_GETTABLE,
            false,
            NFPROTO_INET,
            |w| w.put_str(NFTA_TABLE_NAME, name),
            each,
        ) {
            Err(NftError::Kernel { errno, .. }) if errno == libc::ENOENT => Ok(false),
            Err(e) => Err(e),
            Ok(()) => Ok(true),
        }
    }

    /// The flags, sets and chains of table `name`, without elements or rules: what the
    /// choice of the in-place commit form needs. `None` when the table does not exist. Three
    /// small dumps, not one snapshot: a change between them is seen by the daemon's
    /// notifications and repaired by the next commit.
    pub fn skeleton(&mut self, name: &str) -> Result<Option<encode::Skeleton>, NftError> {
        let Some(table) = self.table_info(name)? else {
            return Ok(None);
        };
        let mut sets = Vec::new();
        self.dump_sets(name, |m| {
            sets.push(decode::set(m)?);
            Ok(())
        })?;
        let mut chains = Vec::new();
        let attrs = |w: &mut Writer| w.put_str(NFTA_CHAIN_TABLE, name);
        self.dump_of_table(NFT_MSG_GETCHAIN, name, attrs, |m| {
            chains.push(decode::chain(m)?.chain);
            Ok(())
        })?;
        Ok(Some(encode::Skeleton {
            flags: table.flags,
            owner: table.owner,
            sets,
            chains,
        }))
    }

    /// Flags and owner of table `name`, without reading its contents.
    pub fn table_info(&mut self, name: &str) -> Result<Option<decode::TableMsg>, NftError> {
        let mut out = None;
        self.get_table(name, |m| {
            out = Some(decode::table(m)?);
            Ok(())
        })?;
        Ok(out)
    }
}
