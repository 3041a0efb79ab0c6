//! Conntrack reconciliation: delete the conntrack entries of flows a policy change affects,
//! so that their next packet is evaluated by the NAT rules in force (issue 12).
//!
//! NAT is decided on a flow's first packet and kept in its conntrack entry; a UDP flow that
//! keeps sending keeps its old translation for ever. Deleting the entry makes the next
//! packet a new flow. Which flows a change affects is the caller's decision (a predicate);
//! this module is the kernel-facing engine: ctnetlink over the shared netfilter netlink
//! foundation ([`crate::netlink`]), no `conntrack` binary, no C.
//!
//! - [`msg`] (pure): [`Flow`] decoded from a dump, the dump, delete and create requests.

pub mod error;
pub mod msg;
pub mod uapi;

pub use error::ConntrackError;
pub use msg::{Flow, L4, Tuple};
