//! The command socket: one request and its replies (`exchange`), on which the transaction
//! (`transaction.rs`: batches, their ACKs, the generation id) and the read-back
//! (`readback.rs`: the agent's table dumped and decoded; `foreign.rs`: the other NAT tables)
//! are built. This file holds what both share: the socket, its sequence numbers and its
//! receive loop.
//!
//! One long-lived socket per agent: closing a netfilter socket after a commit that deleted
//! objects costs the kernel 5-40 ms (design notes), and with the table owner flag the table
//! belongs to this socket. Blocking I/O with a receive timeout: the kernel processes a batch
//! inside `sendmsg`, so every ACK is already queued when it returns.

use std::io;
use std::time::Duration;

use super::encode;
use super::error::NftError;
use super::live::Known;
use super::uapi::*;
use crate::kernel::netlink::ack;
use crate::kernel::netlink::{Malformed, Msg, NetlinkSocket, Writer, messages};

mod foreign;
mod readback;
mod transaction;

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
    /// The live table as known without reading it: what this socket last committed (or
    /// read at start) at the generation of that commit, followed through the notifications
    /// of others' transactions since ([`NftSocket::follow`]). While the kernel's generation
    /// is the model's, a commit sends only the difference (see [`super::replace_table`]).
    known: Option<Known>,
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
            known: None,
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

    /// Drops anything queued from earlier exchanges (late replies after a timeout).
    fn drain(&mut self) {
        while let Ok((n, _)) = self.sock.recv(&mut self.buf, true) {
            if n == 0 {
                break;
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
}
