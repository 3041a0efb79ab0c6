//! The kernel, over netlink, in pure Rust from the UAPI headers: [`netlink`] (netfilter
//! netlink framing, acknowledgements and the socket: the foundation), [`nft`] (nf_tables:
//! our table encoded, committed, read back and watched; other tables read), [`conntrack`]
//! (ctnetlink: dump and delete conntrack entries), and [`privilege`] (whether the process may
//! ask any of it). `nft` and `conntrack` stand on `netlink` and know nothing of each other;
//! none of them knows the analysis, the reports or the daemon above.

pub mod conntrack;
pub mod netlink;
pub mod nft;
pub mod privilege;
