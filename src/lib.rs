//! nft-masq-agent: an ip-masq-agent-compatible masquerade policy, kept in force as one
//! nftables table that is committed atomically over netlink.
//!
//! Layers, from the bottom up; each uses only those above it in this list, never one below:
//!
//! - [`addr`]: address prefixes, interval arithmetic, interface names (the leaves);
//! - [`config`]: ip-masq-agent's file, validated into a `Config` ([`config::source`] reads it);
//! - [`model`]: the desired table as a value, and its `nft` rendering;
//! - [`kernel`]: the kernel over netlink: [`kernel::netlink`] (framing and the socket),
//!   [`kernel::nft`] (nf_tables: encoding, decoding, commits, reads, notifications),
//!   [`kernel::conntrack`] (ctnetlink: dump conntrack entries, delete those a policy change
//!   affects), [`kernel::privilege`] (whether CAP_NET_ADMIN is effective);
//! - [`analysis`]: what tables do to a packet, pure: which flows a policy change affects,
//!   whether other NAT rules translate first, and `--explain`'s answer;
//! - [`report`]: what the agent reports and serves (health, metrics, counters, HTTP);
//! - [`daemon`]: the reconciler, its seam to the kernel ([`daemon::Kernel`]), the drift
//!   decisions, the config watch, the background worker and the event loop.
//!
//! `testing` (the `testing` feature) stands above them all: the fake kernel and the
//! wire-fixture builders that tests use.
//!
//! [`analysis`] and [`report`] stand side by side: neither uses the other. The rule can be
//! checked with `grep -rn 'crate::' src/<layer>`: outside its tests, a layer names only
//! layers listed before it.

pub mod addr;
pub mod analysis;
pub mod config;
pub mod daemon;
pub mod kernel;
pub mod model;
pub mod report;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
