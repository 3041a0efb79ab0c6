//! The few system calls the netlink socket needs, wrapped safely. This is the only module
//! with `unsafe` code: each block is a plain libc call on a file descriptor we own, with
//! pointers to live, correctly sized buffers.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens an `AF_NETLINK` socket of the given protocol, bound to a kernel-assigned port id.
pub fn netlink_socket(protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the returned descriptor is owned by us.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    })?;
    // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid; we set the family; port id 0 asks the
    // kernel to assign one.
    let mut addr: libc::sockaddr_nl = unsafe { zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: addr is a valid sockaddr_nl of the size passed.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// The port id the kernel assigned to a bound netlink socket.
pub fn port_id(fd: &OwnedFd) -> io::Result<u32> {
    // SAFETY: zeroed sockaddr_nl is valid; getsockname writes at most `len` bytes.
    let mut addr: libc::sockaddr_nl = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: pointers to live locals with the matching length.
    check(unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&raw mut addr).cast::<libc::sockaddr>(),
            &raw mut len,
        )
    })?;
    Ok(addr.nl_pid)
}

/// `setsockopt` with an int value.
pub fn set_int_opt(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: pointer to a live c_int with its exact size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast::<libc::c_void>(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `getsockopt` of an int value.
pub fn get_int_opt(fd: &OwnedFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: pointers to live locals with matching sizes.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast::<libc::c_void>(),
            &raw mut len,
        )
    })?;
    Ok(value)
}

/// Sets a receive timeout, so a kernel that never answers cannot hang the agent.
pub fn set_recv_timeout(fd: &OwnedFd, timeout: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval {
        // `as _`: the field types differ between libcs (and are deprecated aliases on musl).
        tv_sec: timeout.as_secs() as _,
        tv_usec: timeout.subsec_micros() as _,
    };
    // SAFETY: pointer to a live timeval with its exact size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast::<libc::c_void>(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Sends one datagram to the kernel (port id 0).
pub fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: zeroed sockaddr_nl addresses the kernel; buf is a live slice.
    let mut addr: libc::sockaddr_nl = unsafe { zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: buf and addr are live for the call, lengths match.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast::<libc::c_void>(),
            buf.len(),
            0,
            (&raw const addr).cast::<libc::sockaddr>(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Receives one datagram. Returns its length and whether it was truncated.
pub fn recv(fd: &OwnedFd, buf: &mut [u8], dont_wait: bool) -> io::Result<(usize, bool)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast::<libc::c_void>(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; we point it at one live iovec.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    let flags = if dont_wait { libc::MSG_DONTWAIT } else { 0 };
    // SAFETY: msg references iov, which references buf; all live for the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, msg.msg_flags & libc::MSG_TRUNC != 0))
}

/// Puts the socket in non-blocking mode (for the event socket under tokio).
pub fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Registers a descriptor-owning value with tokio's reactor.
pub fn register_async<T: AsRawFd>(inner: T) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: `inner` owns its descriptor (an OwnedFd inside) and the AsyncFd owns `inner`,
    // so the descriptor stays open exactly as long as it is registered.
    unsafe { tokio::io::unix::AsyncFd::register(inner) }.map_err(|e| e.into_parts().1)
}
