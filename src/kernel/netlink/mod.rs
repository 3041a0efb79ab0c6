//! Netfilter netlink, the foundation of this layer: message and attribute framing ([`attr`],
//! pure), the acknowledgement format ([`ack`], pure) and the socket ([`socket`]). nf_tables
//! and the other netfilter subsystems (conntrack) share all three; it knows neither.

pub mod ack;
pub mod attr;
pub mod socket;
pub mod uapi;

pub use attr::{Attr, Attrs, Malformed, Msg, Writer, messages};
pub use socket::{NetlinkSocket, Shared};
