//! The end of every nf_tables transaction, seen from outside the agent: a `NEWGEN`
//! notification on the `NFNLGRP_NFTABLES` group. Independent of the agent's own netlink code,
//! so that a timing taken with it does not depend on what it measures.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::poll::{PollFd, PollFlags, poll};

/// `NFNLGRP_NFTABLES`: the multicast group of nf_tables notifications.
const NFNLGRP_NFTABLES: u32 = 7;
/// `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN`: a transaction ended.
const NEWGEN: u16 = (10 << 8) | 15;

/// A netlink socket subscribed to nf_tables notifications in the namespace it was opened in.
pub struct Generations {
    sock: Socket,
}

impl Generations {
    /// Subscribes in the calling thread's namespace (open it inside [`crate::Netns::enter`]).
    pub fn open() -> std::io::Result<Generations> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind(&SocketAddr::new(0, 0))?;
        sock.add_membership(NFNLGRP_NFTABLES)?;
        sock.set_non_blocking(true)?;
        // A commit of a large table notifies every element: with the default buffer the
        // flood overflows it and a transaction's end can be lost with it. As root the
        // buffer can be forced past the system limit.
        let size: libc::c_int = 64 << 20;
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        #[allow(unsafe_code)]
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Ok(Generations { sock })
    }

    /// Receives what is queued, without waiting; whether it held the end of a transaction.
    fn drain(&self) -> bool {
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
        let mut seen = false;
        loop {
            buf.clear();
            match self.sock.recv(&mut buf, 0) {
                Ok(n) if n > 0 => seen |= has_newgen(&buf),
                _ => return seen,
            }
        }
    }

    /// Drops every notification received so far.
    pub fn clear(&self) {
        self.drain();
    }

    /// Waits up to `timeout` for the end of a transaction; when it was received.
    pub fn next(&self, timeout: Duration) -> Option<Instant> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, ms).unwrap_or(0) == 0 {
                continue;
            }
            let now = Instant::now();
            if self.drain() {
                return Some(now);
            }
        }
    }
}

/// Whether a datagram of netlink messages holds a `NEWGEN`.
fn has_newgen(mut data: &[u8]) -> bool {
    while data.len() >= 16 {
        let len = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into().expect("2 bytes"));
        if kind == NEWGEN {
            return true;
        }
        let step = len.max(16).next_multiple_of(4);
        if step > data.len() {
            break;
        }
        data = &data[step..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, payload: usize) -> Vec<u8> {
        let len = 16 + payload;
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.resize(len.next_multiple_of(4), 0);
        m
    }

    #[test]
    fn newgen_is_found_after_other_messages() {
        let newtable = 10 << 8; // NFT_MSG_NEWTABLE is 0
        let mut data = msg(newtable, 13);
        assert!(!has_newgen(&data));
        data.extend(msg(NEWGEN, 8));
        assert!(has_newgen(&data));
        assert!(!has_newgen(&data[..10]));
    }
}
