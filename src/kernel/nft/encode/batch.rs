//! The batch: BEGIN, nf_tables messages each recorded for the error reports, the ACK asked
//! of the last one only, END; a one-message batch ([`single`]) and the single request a read
//! sends ([`request`]). What is inside the messages is the other files' concern.

use std::fmt;

use crate::kernel::netlink::Writer;
use crate::kernel::nft::uapi::*;

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

/// A batch being written: BEGIN already, then nf_tables messages with consecutive sequence
/// numbers, each recorded for the error reports; [`BatchWriter::finish`] asks for the one ACK
/// and writes END.
pub(super) struct BatchWriter {
    pub(super) w: Writer,
    seq: u32,
    msgs: Vec<BatchMsg>,
}

impl BatchWriter {
    /// A batch whose BEGIN has sequence number `seq`, `capacity` bytes allocated.
    pub(super) fn new(seq: u32, capacity: usize) -> BatchWriter {
        BatchWriter::at_generation(seq, capacity, None)
    }

    /// A batch the kernel applies only while the ruleset generation is `generation`
    /// (`NFNL_BATCH_GENID` on BEGIN; otherwise it refuses the whole batch with ERESTART):
    /// a compare-and-commit.
    pub(super) fn at_generation(seq: u32, capacity: usize, generation: Option<u32>) -> BatchWriter {
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
    pub(super) fn begin(&mut self, kind: u16, flags: u16) -> usize {
        self.begin_in(kind, flags, NFPROTO_INET)
    }

    /// Starts an nf_tables message in `family`.
    pub(super) fn begin_in(&mut self, kind: u16, flags: u16, family: u8) -> usize {
        self.w
            .begin_msg(nft_type(kind), NLM_F_REQUEST | flags, self.seq, family, 0)
    }

    /// Ends the message begun at `start`, recording it as `what`.
    pub(super) fn end(&mut self, start: usize, kind: u16, what: String) {
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

    /// Asks for the ACK on the last message and ends the batch.
    pub(super) fn finish(mut self, elements: usize) -> Batch {
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
