//! The command socket: sends batches and checks every ACK, reads tables back.
//!
//! One long-lived socket per agent: closing a netfilter socket after a commit that deleted
//! objects costs the kernel 5-40 ms (design notes), and with the table owner flag the table
//! belongs to this socket. Blocking I/O with a receive timeout: the kernel processes a batch
//! inside `sendmsg`, so every ACK is already queued when it returns.

use std::io;
use std::time::Duration;

use super::decode;
use super::encode::{self, Batch};
use super::error::NftError;
use super::offsets;
use super::uapi::*;
use crate::kernel::netlink::ack::{self, Ack};
use crate::kernel::netlink::{Malformed, Msg, NetlinkSocket, Writer, messages};
use crate::model::Table;

mod foreign;

/// Netlink receive buffer: dump replies come in skbs of at most 32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// The agent's command socket.
#[derive(Debug)]
pub struct NftSocket {
    sock: NetlinkSocket,
    seq: u32,
    sndbuf: usize,
    buf: Vec<u8>,
    /// Set during [`NftSocket::read_table_unsettled`]: dumps run to their end although
    /// other commits happen meanwhile.
    unsettled: bool,
    /// Called for every batch of replies received: a long read shows it is progressing.
    progress: Option<Progress>,
    /// The table this socket last committed and the generation its commit made: while the
    /// kernel's generation is still that one, nobody has committed since and the live table
    /// is exactly this one (see [`super::replace_table`]).
    last_commit: Option<(u32, Table)>,
}

/// A callback marking progress (see [`NftSocket::on_progress`]).
#[derive(Clone)]
pub struct Progress(pub std::sync::Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> NftError {
    move |source| NftError::Io { op, source }
}

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

/// The kernel's answers to one batch.
#[derive(Debug, Default)]
struct Answers {
    acks: Vec<Ack>,
    /// Some answers were dropped (ENOBUFS).
    overflowed: bool,
}

/// The batch's outcome from the answers: the first failure, described by message and
/// attribute; else success if the last message's ACK came.
fn check_acks(batch: &Batch, answers: &Answers) -> Result<(), NftError> {
    let failures: Vec<&Ack> = answers.acks.iter().filter(|a| a.errno != 0).collect();
    if let Some(bad) = failures.first() {
        return Err(rejected(batch, bad, failures.len(), answers.overflowed));
    }
    if answers.overflowed {
        // Only failures can overflow the buffer, but none survived to say which.
        return Err(NftError::Rejected {
            what: "the batch".into(),
            kind: None,
            attr: None,
            kernel_msg: None,
            errno: libc::ENOBUFS,
            failed: 0,
        });
    }
    let acked = batch
        .msgs
        .last()
        .is_none_or(|last| answers.acks.iter().any(|a| a.seq == last.seq));
    if !acked {
        return Err(NftError::MissingAck {
            expected: 1,
            got: 0,
        });
    }
    Ok(())
}

/// The error for a failed batch, naming the message (and attribute) the kernel refused.
fn rejected(batch: &Batch, bad: &Ack, failed: usize, overflowed: bool) -> NftError {
    let first = batch.msgs.first().map_or(0, |m| m.seq);
    let msg = batch.msgs.iter().find(|m| m.seq == bad.seq);
    let (what, attr) = match msg {
        Some(m) => (
            m.what.clone(),
            bad.offset.and_then(|off| {
                offsets::describe(&batch.bytes[m.offset..m.offset + m.len], off as usize)
            }),
        ),
        None if bad.seq == first.wrapping_sub(1) => ("the batch".to_string(), None),
        None => (format!("message with sequence number {}", bad.seq), None),
    };
    NftError::Rejected {
        what,
        kind: msg.map(|m| m.kind),
        attr,
        kernel_msg: bad.message.clone(),
        errno: bad.errno,
        // When answers were lost, more failed than were counted.
        failed: if overflowed { failed.max(2) } else { failed },
    }
}

impl NftSocket {
    /// Opens and configures the socket. Needs no privilege; sending a batch needs
    /// CAP_NET_ADMIN in the socket's network namespace.
    pub fn open() -> Result<NftSocket, NftError> {
        let sock = NetlinkSocket::open_netfilter().map_err(io_err("socket"))?;
        // Short ACKs: no echo of our multi-megabyte batch; extended ACKs: the kernel names
        // the attribute it rejected.
        sock.request_short_extended_acks();
        sock.set_recv_timeout(Duration::from_secs(10))
            .map_err(io_err("SO_RCVTIMEO"))?;
        let sndbuf = sock.send_buffer().map_err(io_err("SO_SNDBUF"))?;
        Ok(NftSocket {
            sock,
            // Any start works; a time-derived one keeps replies of an earlier process
            // (same port id reused) from matching ours.
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs() as u32),
            sndbuf,
            buf: vec![0; RECV_BUF],
            unsettled: false,
            progress: None,
            last_commit: None,
        })
    }

    /// Calls `progress` for every batch of replies a read receives (the daemon's liveness:
    /// a read of a large table is a long stream of replies, not a stuck loop).
    pub fn on_progress(&mut self, progress: Progress) {
        self.progress = Some(progress);
    }

    /// The port id of this socket: the kernel stamps it on the notifications of our
    /// commits, which is how the event listener recognises them.
    pub fn port_id(&self) -> u32 {
        self.sock.port_id()
    }

    /// The sequence number the next batch must start with.
    pub fn next_seq(&self) -> u32 {
        self.seq
    }

    fn ensure_sndbuf(&mut self, len: usize) -> Result<(), NftError> {
        // The kernel refuses a datagram larger than the send buffer (EMSGSIZE).
        if len + 4096 <= self.sndbuf {
            return Ok(());
        }
        let want = (len + 64 * 1024).min(i32::MAX as usize / 2);
        self.sndbuf = self
            .sock
            .grow_send_buffer(want)
            .map_err(io_err("SO_SNDBUF"))?;
        Ok(())
    }

    /// Drops anything queued from earlier exchanges (late replies after a timeout).
    fn drain(&mut self) {
        while let Ok((n, _)) = self.sock.recv(&mut self.buf, true) {
            if n == 0 {
                break;
            }
        }
    }

    /// Sends a batch built with [`NftSocket::next_seq`] and checks the kernel's answers: an
    /// error for any message that failed, else the one ACK of the last message. On error the
    /// kernel has aborted the whole transaction: nothing changed.
    pub fn send_batch(&mut self, batch: &Batch) -> Result<(), NftError> {
        self.drain();
        self.ensure_sndbuf(batch.bytes.len())?;
        if let Some(last) = batch.msgs.last() {
            // The END message uses last.seq + 1.
            self.seq = last.seq.wrapping_add(2);
        }
        self.send_all(&batch.bytes, "sendmsg (batch)")?;
        let answers = self.read_acks()?;
        check_acks(batch, &answers)
    }

    fn send_all(&mut self, bytes: &[u8], op: &'static str) -> Result<(), NftError> {
        let sent = self.sock.send(bytes).map_err(io_err(op))?;
        if sent != bytes.len() {
            return Err(NftError::Io {
                op,
                source: io::Error::other(format!("sent {sent} of {} bytes", bytes.len())),
            });
        }
        Ok(())
    }

    /// Everything the kernel queued in answer to a batch (it answers inside `sendmsg`).
    fn read_acks(&mut self) -> Result<Answers, NftError> {
        let mut answers = Answers::default();
        loop {
            let n = match self.sock.recv(&mut self.buf, true) {
                Ok((n, _)) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(answers),
                // More answers than the buffer holds: only failures are answered unasked,
                // so some were lost. The batch failed; the rest say which messages.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    answers.overflowed = true;
                    continue;
                }
                Err(e) => return Err(io_err("recvmsg (acks)")(e)),
            };
            for m in messages(&self.buf[..n]) {
                let m = m?;
                if m.ty == NLMSG_ERROR {
                    answers.acks.extend(ack::parse(&m));
                }
            }
        }
    }
    /// Sends one request and feeds every reply message to `each` until the kernel signals
    /// the end (NLMSG_DONE for a dump, the ACK for a get). An error reply becomes
    /// [`NftError::Kernel`].
    pub(super) fn exchange(
        &mut self,
        kind: u16,
        dump: bool,
        family: u8,
        attrs: impl FnOnce(&mut Writer),
        mut each: impl FnMut(&Msg<'_>) -> Result<(), NftError>,
    ) -> Result<(), NftError> {
        self.exchange_until(kind, dump, family, attrs, |m| each(m).map(|()| true))?;
        Ok(())
    }

    /// [`NftSocket::exchange`], which `each` may end early by returning `false`: then the
    /// rest of the reply is left unread and this returns `false`. Such a socket is only fit
    /// to be dropped (closing it ends the kernel's dump; reading on would drain it first).
    fn exchange_until(
        &mut self,
        kind: u16,
        dump: bool,
        family: u8,
        attrs: impl FnOnce(&mut Writer),
        mut each: impl FnMut(&Msg<'_>) -> Result<bool, NftError>,
    ) -> Result<bool, NftError> {
        self.drain();
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let req = encode::request(kind, dump, seq, family, attrs);
        self.sock.send(&req).map_err(io_err("sendmsg (request)"))?;
        loop {
            let (n, truncated) = self
                .sock
                .recv(&mut self.buf, false)
                .map_err(io_err("recvmsg (reply)"))?;
            if truncated {
                return Err(NftError::Io {
                    op: "recvmsg (reply)",
                    source: io::Error::other("reply truncated"),
                });
            }
            if let Some(p) = &self.progress {
                (p.0)();
            }
            // Copy out so `each` can borrow self.buf's contents while we keep the socket.
            let data = self.buf[..n].to_vec();
            for m in messages(&data) {
                let m = m?;
                if m.seq != seq {
                    continue; // a late reply to an earlier request
                }
                if m.flags & NLM_F_DUMP_INTR != 0 && !self.unsettled {
                    return Err(NftError::Interrupted);
                }
                match m.ty {
                    NLMSG_DONE => return Ok(true),
                    NLMSG_ERROR => {
                        let ack = ack::parse(&m)
                            .ok_or_else(|| NftError::Malformed(Malformed("short error".into())))?;
                        if ack.errno == 0 {
                            return Ok(true);
                        }
                        return Err(NftError::Kernel {
                            request: msg_name(kind),
                            errno: ack.errno,
                        });
                    }
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    // A get answers with one message, then the ACK we asked for; a dump
                    // with multi-part messages, then NLMSG_DONE.
                    _ => {
                        if !each(&m)? {
                            return Ok(false);
                        }
                    }
                }
            }
        }
    }

    /// The current ruleset generation (changes with every committed transaction).
    pub fn generation(&mut self) -> Result<u32, NftError> {
        let mut gen_id = None;
        self.exchange(
            NFT_MSG_GETGEN,
            false,
            NFPROTO_UNSPEC,
            |_| {},
            |m| {
                if m.nft_msg() == Some(NFT_MSG_NEWGEN) {
                    gen_id = Some(decode::generation(m)?.id);
                }
                Ok(())
            },
        )?;
        gen_id.ok_or(NftError::Malformed(Malformed(
            "GETGEN without NEWGEN reply".into(),
        )))
    }

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

    /// Takes the table this socket committed last and the generation its commit made (a
    /// commit takes it and records its own with [`NftSocket::set_committed`], so the table is
    /// moved, never copied).
    pub(crate) fn take_committed(&mut self) -> Option<(u32, Table)> {
        self.last_commit.take()
    }

    /// Records (or, with `None`, forgets) the table of a commit and the generation it made.
    pub(crate) fn set_committed(&mut self, commit: Option<(u32, Table)>) {
        self.last_commit = commit;
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
