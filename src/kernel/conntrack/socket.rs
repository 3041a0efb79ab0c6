//! The conntrack socket: dumps streamed through a callback, deletes (and, for tests and
//! benchmarks, creates) packed many to a datagram, every answer accounted for.
//!
//! Blocking I/O with a receive timeout, like the nf_tables command socket: the kernel handles
//! every message of a datagram inside `sendmsg`, so the answers are queued when it returns.
//! The socket works in the network namespace of the thread that opened it.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use super::error::ConntrackError;
use super::msg::{self, Flow};
use crate::addr::prefix::Family;
use crate::kernel::netlink::ack;
use crate::kernel::netlink::uapi::{
    NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLMSG_NOOP, NLMSG_OVERRUN,
};
use crate::kernel::netlink::{Msg, NetlinkSocket, Writer, messages};

/// One receive: the kernel builds dump datagrams of at most 32 KiB (less its overhead).
const RECV_BUF: usize = 64 * 1024;
/// Receive buffer asked for (the kernel doubles it): every ACK of a datagram of requests
/// must fit, or the kernel drops the excess and reports ENOBUFS.
const RCVBUF: usize = 4 << 20;
/// What one queued ACK costs in the receive buffer (the skb's truesize: data, `sk_buff`
/// and shared info), rounded well up so that a datagram's answers always fit.
const ACK_TRUESIZE: usize = 2048;
/// Requests per datagram at most: enough to amortise the system calls (the kernel's work
/// per entry dominates beyond that), small enough to keep the datagram under 128 KiB.
const MAX_PER_DATAGRAM: usize = 512;
/// Requests per datagram at least, also after ENOBUFS halved it.
const MIN_PER_DATAGRAM: usize = 16;
/// Bounds every blocking receive, so a kernel that never answers cannot hang the caller.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// A ctnetlink socket.
#[derive(Debug)]
pub struct Conntrack {
    sock: NetlinkSocket,
    seq: u32,
    buf: Vec<u8>,
    sndbuf: usize,
    /// Requests per datagram, from the receive buffer the kernel granted.
    per_datagram: usize,
    /// An operation failed half-way (a dump may still be running on the socket): the next
    /// one starts on a fresh socket.
    broken: bool,
}

/// What one dump saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// Entries decoded and passed to the callback.
    pub flows: u64,
    /// Entries that did not decode (see [`msg`]); they were not passed on.
    pub undecodable: u64,
}

/// The kernel's answers to a list of deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteReport {
    /// Entries the kernel deleted.
    pub deleted: u64,
    /// Entries that were gone already (ENOENT): expired or deleted meanwhile, or replaced by
    /// a new entry with the same tuple (another id). Nothing to do, not an error.
    pub already_gone: u64,
    /// Entries the kernel refused to delete, or whose answer was lost.
    pub failed: u64,
    /// The failures by errno (ENOBUFS: the answer was lost, the outcome is unknown).
    pub errors: BTreeMap<i32, u64>,
}

impl DeleteReport {
    fn answer(&mut self, errno: i32) {
        match errno {
            0 => self.deleted += 1,
            libc::ENOENT => self.already_gone += 1,
            e => {
                self.failed += 1;
                *self.errors.entry(e).or_default() += 1;
            }
        }
    }
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> ConntrackError {
    move |source| ConntrackError::Io { op, source }
}

fn dump_name(family: Option<Family>) -> &'static str {
    match family {
        Some(Family::V4) => "the IPv4 conntrack dump",
        Some(Family::V6) => "the IPv6 conntrack dump",
        None => "the conntrack dump",
    }
}

impl Conntrack {
    /// Opens a ctnetlink socket in the calling thread's network namespace, where it stays.
    /// (After an operation failed half-way, the next one replaces the socket, again in the
    /// calling thread's namespace.) Opening needs no privilege; dumping and deleting need
    /// CAP_NET_ADMIN there.
    pub fn open() -> Result<Conntrack, ConntrackError> {
        let sock = NetlinkSocket::open_netfilter().map_err(io_err("socket"))?;
        // Short ACKs: an answer does not echo the request, so thousands fit the buffer.
        sock.request_short_extended_acks();
        sock.set_recv_timeout(RECV_TIMEOUT)
            .map_err(io_err("SO_RCVTIMEO"))?;
        // SO_RCVBUFFORCE with CAP_NET_ADMIN, else whatever rmem_max allows; the batch size
        // follows from what the kernel granted.
        let rcvbuf = sock
            .grow_recv_buffer(RCVBUF)
            .or_else(|_| sock.recv_buffer())
            .map_err(io_err("SO_RCVBUF"))?;
        let sndbuf = sock.send_buffer().map_err(io_err("SO_SNDBUF"))?;
        Ok(Conntrack {
            sock,
            // Any start works; a time-derived one keeps late answers meant for an earlier
            // process that had the same port id from matching ours.
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs() as u32),
            buf: vec![0; RECV_BUF],
            sndbuf,
            per_datagram: (rcvbuf / ACK_TRUESIZE).clamp(MIN_PER_DATAGRAM, MAX_PER_DATAGRAM),
            broken: false,
        })
    }

    /// Requests per datagram the socket currently sends.
    pub fn per_datagram(&self) -> usize {
        self.per_datagram
    }

    /// Replaces the socket after an operation stopped half-way.
    fn ready(&mut self) -> Result<(), ConntrackError> {
        if self.broken {
            let fresh = Conntrack::open()?;
            *self = Conntrack {
                seq: self.seq,
                ..fresh
            };
        }
        Ok(())
    }

    /// Streams every conntrack entry of `family` (all zones) to `each`, one decoded entry at
    /// a time: nothing is collected, so memory does not grow with the table.
    ///
    /// An interrupted dump (the kernel flagged it inconsistent with `NLM_F_DUMP_INTR`, or
    /// answers were dropped with ENOBUFS) is still read to its end, and then reported as
    /// [`ConntrackError::Interrupted`]: `each` has seen a partial or inconsistent view, and
    /// the caller decides whether to dump again ([`super::reconcile`] does).
    pub fn dump(
        &mut self,
        family: Family,
        each: impl FnMut(&Flow),
    ) -> Result<DumpStats, ConntrackError> {
        self.dump_families(Some(family), each)
    }

    /// Like [`Conntrack::dump`], for the entries of both families in one dump. The kernel
    /// keeps one table for all families and walks all of it for any dump, so this costs
    /// what one family's dump costs.
    pub fn dump_all(&mut self, each: impl FnMut(&Flow)) -> Result<DumpStats, ConntrackError> {
        self.dump_families(None, each)
    }

    fn dump_families(
        &mut self,
        family: Option<Family>,
        mut each: impl FnMut(&Flow),
    ) -> Result<DumpStats, ConntrackError> {
        let mut stats = DumpStats::default();
        self.dump_messages(family, |m| match Flow::decode(m) {
            Ok(flow) => {
                stats.flows += 1;
                each(&flow);
            }
            Err(_) => stats.undecodable += 1,
        })?;
        Ok(stats)
    }

    /// The raw entry messages of a dump of `family`, back to back as the kernel framed them:
    /// for the decoder's fixtures (`tests/fixtures/conntrack-*.bin`).
    pub fn dump_raw(&mut self, family: Family) -> Result<Vec<u8>, ConntrackError> {
        let mut out = Vec::new();
        self.dump_messages(Some(family), |m| {
            let len = NLMSG_HDRLEN + m.payload.len();
            out.extend_from_slice(&(len as u32).to_ne_bytes());
            out.extend_from_slice(&m.ty.to_ne_bytes());
            out.extend_from_slice(&m.flags.to_ne_bytes());
            out.extend_from_slice(&m.seq.to_ne_bytes());
            out.extend_from_slice(&m.pid.to_ne_bytes());
            out.extend_from_slice(m.payload);
            out.resize((out.len() + 3) & !3, 0);
        })?;
        Ok(out)
    }

    fn dump_messages(
        &mut self,
        family: Option<Family>,
        each: impl FnMut(&Msg<'_>),
    ) -> Result<(), ConntrackError> {
        self.ready()?;
        // Until the dump is read to its end: a socket with a dump still running refuses
        // the next one (EBUSY).
        self.broken = true;
        self.dump_once(family, each)
    }

    fn dump_once(
        &mut self,
        family: Option<Family>,
        mut each: impl FnMut(&Msg<'_>),
    ) -> Result<(), ConntrackError> {
        let request = dump_name(family);
        self.drain();
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.send(&msg::dump_request(family, seq), "sendmsg (dump request)")?;
        let mut interrupted = false;
        loop {
            let n = match self.sock.recv(&mut self.buf, false) {
                Ok((_, true)) => {
                    return Err(ConntrackError::Io {
                        op: "recvmsg (dump)",
                        source: io::Error::other("reply longer than the receive buffer"),
                    });
                }
                Ok((n, false)) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Something queued for this socket was dropped; the dump itself goes on
                // (the kernel fills the buffer only as far as there is room).
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    interrupted = true;
                    continue;
                }
                Err(e) => return Err(io_err("recvmsg (dump)")(e)),
            };
            for m in messages(&self.buf[..n]) {
                let m = m?;
                if m.seq != seq {
                    continue; // a late answer to an earlier request
                }
                interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                match m.ty {
                    NLMSG_DONE => {
                        self.broken = false;
                        // The payload is the dump's status: 0, or a negative errno.
                        let status = m
                            .payload
                            .get(..4)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        if status < 0 {
                            return Err(ConntrackError::kernel(request, status.saturating_neg()));
                        }
                        if interrupted {
                            return Err(ConntrackError::Interrupted {
                                request,
                                attempts: 1,
                            });
                        }
                        return Ok(());
                    }
                    NLMSG_ERROR => {
                        self.broken = false;
                        let errno = ack::parse(&m).map_or(libc::EPROTO, |a| a.errno);
                        if errno == 0 {
                            return Ok(());
                        }
                        return Err(ConntrackError::kernel(request, errno));
                    }
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    _ => each(&m),
                }
            }
        }
    }

    /// Deletes each of `flows` (see [`msg::encode_delete`]: by reply tuple, zone and id),
    /// many per datagram, and accounts for every answer. Entries already gone are counted
    /// as such; other refusals are counted by errno. Errors only when the socket fails.
    pub fn delete(&mut self, flows: &[Flow]) -> Result<DeleteReport, ConntrackError> {
        let mut report = DeleteReport::default();
        self.requests(flows, "delete", msg::encode_delete, |errno| {
            report.answer(errno)
        })?;
        Ok(report)
    }

    /// Creates each of `flows` as a new entry that expires after `timeout_secs` (see
    /// [`msg::encode_new`]). Returns how many were created; any refusal (an existing entry
    /// is one: EEXIST) is an error naming the first errno. The agent never creates
    /// entries; tests and benchmarks use this to make synthetic flows.
    pub fn create(&mut self, flows: &[Flow], timeout_secs: u32) -> Result<u64, ConntrackError> {
        let (mut created, mut first_error) = (0, None);
        self.requests(
            flows,
            "create",
            |w, f, seq| msg::encode_new(w, f, timeout_secs, seq),
            |errno| match errno {
                0 => created += 1,
                e => {
                    first_error.get_or_insert(e);
                }
            },
        )?;
        match first_error {
            Some(e) => Err(ConntrackError::kernel("a conntrack create request", e)),
            None => Ok(created),
        }
    }

    /// Sends one request per item, `per_datagram` to a datagram, each with its own sequence
    /// number and `NLM_F_ACK`, and calls `answer` with every request's errno (0 for done).
    /// A request whose answer was dropped (ENOBUFS) is answered ENOBUFS, and later datagrams
    /// carry half as many requests.
    fn requests(
        &mut self,
        items: &[Flow],
        request: &'static str,
        encode: impl Fn(&mut Writer, &Flow, u32),
        mut answer: impl FnMut(i32),
    ) -> Result<(), ConntrackError> {
        self.ready()?;
        self.drain();
        let mut rest = items;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(self.per_datagram));
            rest = tail;
            let first = self.seq;
            self.seq = self.seq.wrapping_add(chunk.len() as u32);
            let mut w = Writer::with_capacity(chunk.len() * 128);
            for (i, flow) in chunk.iter().enumerate() {
                encode(&mut w, flow, first.wrapping_add(i as u32));
            }
            let bytes = w.into_bytes();
            self.ensure_sndbuf(bytes.len())?;
            self.send(&bytes, "sendmsg (requests)")?;
            let (answers, overflowed) = self.answers(first, chunk.len(), request)?;
            for a in answers {
                answer(a.unwrap_or(libc::ENOBUFS));
            }
            if overflowed {
                self.per_datagram = (self.per_datagram / 2).max(MIN_PER_DATAGRAM);
            }
        }
        Ok(())
    }

    /// The answers to the `n` requests numbered from `first`, and whether some were lost.
    fn answers(
        &mut self,
        first: u32,
        n: usize,
        request: &'static str,
    ) -> Result<(Vec<Option<i32>>, bool), ConntrackError> {
        let mut got: Vec<Option<i32>> = vec![None; n];
        let (mut answered, mut overflowed) = (0, false);
        while answered < n {
            // After an overflow the missing answers will never come: stop at an empty queue.
            let len = match self.sock.recv(&mut self.buf, overflowed) {
                Ok((len, _)) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    overflowed = true;
                    continue;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if overflowed {
                        break;
                    }
                    self.broken = true;
                    return Err(ConntrackError::MissingAck {
                        request,
                        sent: n,
                        answered,
                    });
                }
                Err(e) => return Err(io_err("recvmsg (answers)")(e)),
            };
            for m in messages(&self.buf[..len]) {
                let m = m?;
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let Some(a) = ack::parse(&m) else { continue };
                let i = a.seq.wrapping_sub(first) as usize;
                if let Some(slot @ None) = got.get_mut(i) {
                    *slot = Some(a.errno);
                    answered += 1;
                }
            }
        }
        Ok((got, overflowed))
    }

    fn ensure_sndbuf(&mut self, len: usize) -> Result<(), ConntrackError> {
        // The kernel refuses a datagram larger than the send buffer (EMSGSIZE).
        if len + 4096 <= self.sndbuf {
            return Ok(());
        }
        self.sndbuf = self
            .sock
            .grow_send_buffer(len + 64 * 1024)
            .map_err(io_err("SO_SNDBUF"))?;
        Ok(())
    }

    fn send(&mut self, bytes: &[u8], op: &'static str) -> Result<(), ConntrackError> {
        let sent = self.sock.send(bytes).map_err(io_err(op))?;
        if sent != bytes.len() {
            return Err(ConntrackError::Io {
                op,
                source: io::Error::other(format!("sent {sent} of {} bytes", bytes.len())),
            });
        }
        Ok(())
    }

    /// Drops anything queued from earlier exchanges (answers that came after a timeout).
    fn drain(&mut self) {
        loop {
            match self.sock.recv(&mut self.buf, true) {
                Ok((0, _)) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
}
