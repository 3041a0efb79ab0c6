//! nft-masq-agent: an ip-masq-agent-compatible masquerade policy, kept in force as one
//! nftables table that is committed atomically over netlink.
//!
//! The crate is layered so that everything but the socket is pure and testable without root:
//! [`config`] reads and validates the ip-masq-agent file, [`model`] computes the desired
//! table as a value and renders it, [`nft`] encodes it into one netlink batch, commits it and
//! reads tables back and listens to nftables notifications; [`run`] is the daemon loop that
//! ties them to the config [`watch`], with [`metrics`] served over [`http`].

pub mod config;
pub mod drift;
pub mod http;
pub mod metrics;
pub mod model;
pub mod nft;
pub mod privilege;
pub mod run;
pub mod watch;
