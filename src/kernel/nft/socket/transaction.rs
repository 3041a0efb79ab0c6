//! The transaction: a batch sent and judged by the kernel's ACKs (the first failure named by
//! message and attribute, lost answers counted), the generation id that tells whether anyone
//! committed since, and the record of this socket's last commit. Apart from the read-back
//! ([`super::readback`]) because this is the side that changes the kernel's state.

use std::io;

use super::{NftSocket, io_err};
use crate::kernel::netlink::Malformed;
use crate::kernel::netlink::ack::{self, Ack};
use crate::kernel::netlink::messages;
use crate::kernel::nft::decode;
use crate::kernel::nft::encode::Batch;
use crate::kernel::nft::error::NftError;
use crate::kernel::nft::live::{Known, Step};
use crate::kernel::nft::offsets;
use crate::kernel::nft::uapi::*;
use crate::model::Table;

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

    /// Takes the live table as known (a commit takes it and records its own with
    /// [`NftSocket::set_known`], so the table is moved, never copied).
    pub(crate) fn take_known(&mut self) -> Option<Known> {
        self.known.take()
    }

    /// Records (or, with `None`, forgets) the live table as known.
    pub(crate) fn set_known(&mut self, known: Option<Known>) {
        self.known = known;
    }

    /// The generation at which the live table is known, if it is.
    pub fn known_generation(&self) -> Option<u32> {
        self.known.as_ref().map(Known::generation)
    }

    /// Follows others' transactions, as the notification group reported them: the live
    /// table stays known (so a repair is a difference) until a step it cannot follow.
    pub fn follow(&mut self, steps: &[Step]) {
        Known::follow_all(&mut self.known, steps);
    }

    /// Learns the live table by reading it (`None` when it does not exist or is not one
    /// this agent can have written), unless it is known already: a new process then commits
    /// only the difference to what it finds. The read must not be interrupted by a commit,
    /// so the generation before it is the one it holds at.
    pub fn learn(&mut self, name: &str) -> Result<Option<Table>, NftError> {
        if let Some(k) = &self.known {
            return Ok(Some(k.table().clone()));
        }
        let Some((generation, table)) = self.read_table_at(name)? else {
            return Ok(None);
        };
        self.known = Some(Known::new(generation, table.clone()));
        Ok(Some(table))
    }
}
