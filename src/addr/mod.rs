//! The leaves: addresses and interface names, as values and as intervals. [`prefix`] holds
//! address prefixes and the interval arithmetic on them; [`ifname`] encodes interface names
//! as nftables matches them, with the same machinery. They use nothing else of the crate,
//! and everything else uses them.

pub mod ifname;
pub mod lpm;
pub mod prefix;
