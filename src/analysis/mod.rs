//! The pure packet analysis: what a table, a config, or other components' rules do to a
//! packet. [`flows`] (which open flows a policy change affects), [`conflict`] (whether other
//! NAT rules translate a packet before ours) and [`explain`] (why a destination is, or is not,
//! translated, for `--explain`). Tables, flows and questions come in as values; nothing here
//! reads the kernel. The packet asked about, by `--explain` and by the daemon's sample
//! probes alike, is one [`Packet`].

pub mod conflict;
pub mod explain;
pub mod flows;

use std::net::IpAddr;

use crate::addr::prefix::Family;

/// A packet the analysis asks about, as far as it is known: its destination, and what else
/// the question says (a source, an output interface, whether the destination is local).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Destination address.
    pub dst: IpAddr,
    /// Source address, if known.
    pub src: Option<IpAddr>,
    /// Output interface name, if known.
    pub oif: Option<String>,
    /// Whether the destination is an address of this node, if known.
    pub dst_local: Option<bool>,
}

impl Packet {
    /// A packet to `dst`, nothing else known.
    pub fn to(dst: IpAddr) -> Packet {
        Packet {
            dst,
            src: None,
            oif: None,
            dst_local: None,
        }
    }

    /// The packet's family: its destination's.
    pub fn family(&self) -> Family {
        Family::of_addr(&self.dst)
    }
}
