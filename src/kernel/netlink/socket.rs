//! A netfilter netlink socket: the system calls the agent needs, through `netlink-sys` (the
//! socket, its address and netlink's own options) and `rustix` (the generic socket options),
//! so that this crate has no `unsafe` code of its own.
//!
//! Blocking or not is the caller's choice per call: the command socket blocks with a receive
//! timeout (the kernel answers a batch inside `sendmsg`), the event socket never blocks and is
//! polled by tokio.
//!
//! The one `unsafe` block of the crate is here: registering a socket with tokio's reactor,
//! which tokio marks unsafe because it cannot check that the descriptor outlives the
//! registration. [`Shared`] guarantees it by owning the socket.
#![allow(unsafe_code)]

use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use rustix::net::sockopt;

use super::uapi::NETLINK_NETFILTER;

/// A bound `AF_NETLINK` socket of the `NETLINK_NETFILTER` protocol.
#[derive(Debug)]
pub struct NetlinkSocket {
    sock: netlink_sys::Socket,
    port_id: u32,
}

impl AsFd for NetlinkSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for NetlinkSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl NetlinkSocket {
    /// Opens a netfilter netlink socket bound to a port id the kernel assigns. Needs no
    /// privilege; what it may then ask of the kernel depends on CAP_NET_ADMIN.
    pub fn open_netfilter() -> io::Result<NetlinkSocket> {
        let mut sock = netlink_sys::Socket::new(NETLINK_NETFILTER as isize)?;
        let addr = sock.bind_auto()?;
        Ok(NetlinkSocket {
            sock,
            port_id: addr.port_number(),
        })
    }

    /// The port id the kernel assigned: it stamps it on notifications of our commits.
    pub fn port_id(&self) -> u32 {
        self.port_id
    }

    /// Asks for short ACKs (`NETLINK_CAP_ACK`: no echo of the request) and extended ACKs
    /// (`NETLINK_EXT_ACK`: the kernel names the attribute it rejected). Both exist since
    /// 4.12; where they do not, errors only lose detail, so failures are ignored.
    pub fn request_short_extended_acks(&self) {
        let _ = self.sock.set_cap_ack(true);
        let _ = self.sock.set_ext_ack(true);
    }

    /// Bounds every blocking receive, so a kernel that never answers cannot hang the agent.
    pub fn set_recv_timeout(&self, timeout: Duration) -> io::Result<()> {
        sockopt::set_socket_timeout(self, sockopt::Timeout::Recv, Some(timeout))?;
        Ok(())
    }

    /// Puts the socket in non-blocking mode (for polling under tokio).
    pub fn set_nonblocking(&self) -> io::Result<()> {
        self.sock.set_non_blocking(true)
    }

    /// The send buffer size the kernel reports (twice what was asked, as `socket(7)` says).
    pub fn send_buffer(&self) -> io::Result<usize> {
        Ok(sockopt::socket_send_buffer_size(self)?)
    }

    /// The receive buffer size the kernel reports.
    pub fn recv_buffer(&self) -> io::Result<usize> {
        Ok(sockopt::socket_recv_buffer_size(self)?)
    }

    /// Raises the send buffer to `bytes`: `SO_SNDBUFFORCE` (ignores `wmem_max`, needs
    /// CAP_NET_ADMIN, which commits need anyway), else `SO_SNDBUF`. Returns the new size.
    pub fn grow_send_buffer(&self, bytes: usize) -> io::Result<usize> {
        if sockopt::set_socket_send_buffer_size_force(self, bytes).is_err() {
            sockopt::set_socket_send_buffer_size(self, bytes)?;
        }
        self.send_buffer()
    }

    /// Raises the receive buffer to `bytes`: `SO_RCVBUFFORCE`, else `SO_RCVBUF` (capped by
    /// `rmem_max`). Returns the new size.
    pub fn grow_recv_buffer(&self, bytes: usize) -> io::Result<usize> {
        if sockopt::set_socket_recv_buffer_size_force(self, bytes).is_err() {
            sockopt::set_socket_recv_buffer_size(self, bytes)?;
        }
        self.recv_buffer()
    }

    /// Joins (`true`) or leaves a multicast group.
    pub fn set_membership(&self, group: u32, on: bool) -> io::Result<()> {
        if on {
            self.sock.add_membership(group)
        } else {
            self.sock.drop_membership(group)
        }
    }

    /// Sends one datagram to the kernel.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.sock.send(buf, 0)
    }

    /// Receives one datagram into `buf`. Returns its length and whether it was longer than
    /// `buf` (and so truncated). `dont_wait` makes this one call non-blocking.
    pub fn recv(&self, buf: &mut [u8], dont_wait: bool) -> io::Result<(usize, bool)> {
        let flags = libc::MSG_TRUNC | if dont_wait { libc::MSG_DONTWAIT } else { 0 };
        let cap = buf.len();
        let mut view: &mut [u8] = buf;
        // With MSG_TRUNC the kernel returns the datagram's real length.
        let n = self.sock.recv(&mut view, flags)?;
        Ok((n.min(cap), n > cap))
    }
}

/// A netlink socket owned jointly (one holder polls it, another sets its options).
#[derive(Debug, Clone)]
pub struct Shared(Arc<NetlinkSocket>);

impl Shared {
    /// Shares `sock`.
    pub fn new(sock: NetlinkSocket) -> Shared {
        Shared(Arc::new(sock))
    }

    /// Registers the socket with the current tokio runtime's reactor. The socket must be
    /// non-blocking ([`NetlinkSocket::set_nonblocking`]).
    pub fn into_async(self) -> io::Result<AsyncFd<Shared>> {
        // SAFETY: the AsyncFd owns this `Shared`, which holds the socket (and so its
        // descriptor) open for at least as long as the registration exists: the descriptor
        // cannot be closed or reused while tokio polls it.
        unsafe { AsyncFd::register(self) }.map_err(|e| e.into_parts().1)
    }
}

impl Deref for Shared {
    type Target = NetlinkSocket;
    fn deref(&self) -> &NetlinkSocket {
        &self.0
    }
}

impl AsRawFd for Shared {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_binds_and_reports_a_port_id_without_privileges() {
        let s = NetlinkSocket::open_netfilter().expect("netlink socket");
        assert_ne!(s.port_id(), 0);
        s.set_recv_timeout(Duration::from_millis(10)).unwrap();
        // Nothing was asked: a blocking receive times out instead of hanging.
        let mut buf = [0u8; 64];
        let err = s.recv(&mut buf, false).unwrap_err();
        assert!(matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        assert!(s.send_buffer().unwrap() > 0);
    }
}
