//! nft-masq-agent: an ip-masq-agent-compatible masquerade policy, kept in force as one
//! nftables table that is committed atomically over netlink.
//!
//! Layers, each using only those below it:
//!
//! - [`prefix`], [`ifname`]: address prefixes, interface names, interval arithmetic (leaves);
//! - [`config`]: ip-masq-agent's file, validated into a `Config` ([`config::source`] reads it);
//! - [`model`]: the desired table as a value, and its `nft` rendering;
//! - [`netlink`]: netfilter netlink framing and the socket;
//! - [`nft`]: nf_tables: encoding, decoding, commits, reads, notifications, and the
//!   [`nft::Kernel`] seam;
//! - [`conntrack`]: ctnetlink: dump conntrack entries, delete those a policy change affects;
//! - [`flows`]: which flows a policy change affects (old and new table, evaluated per flow);
//! - [`drift`]: what notifications mean for our table;
//! - [`health`], [`metrics`], [`counters`], [`http`]: what the agent reports and serves;
//! - [`watch`]: the config directory watch;
//! - [`privilege`]: whether CAP_NET_ADMIN is effective, and the explanation when not;
//! - [`daemon`]: the reconciler and its event loop.

pub mod config;
pub mod conflict;
pub mod conntrack;
pub mod counters;
pub mod daemon;
pub mod drift;
pub mod explain;
pub mod flows;
pub mod health;
pub mod http;
pub mod ifname;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod nft;
pub mod prefix;
pub mod privilege;
pub mod watch;
