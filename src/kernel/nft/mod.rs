//! nf_tables over netlink, in pure Rust from the kernel UAPI headers.
//!
//! Pure and byte-tested: [`expr`] (the wire format of expressions), [`stmt`] (statements to
//! expressions and back), [`encode`] (a table into one batch), [`decode`] (kernel messages
//! into the model), [`offsets`] (the kernel's error offsets into attribute names) and
//! [`compat`] (which table flags each kernel accepts), [`live`] (the live table followed
//! through notifications), [`ruleset`] (the other NAT tables, as
//! read for the conflict analysis). I/O: [`socket`] (the command socket:
//! batches, ACKs, reads), [`events`] (the notification group), [`commit`] (replace and
//! delete) and `create` (the full forms' batches, sent in order, each a compare-and-commit).
//! [`takeover`] (`--take-over-iptables-chain`) recognises ip-masq-agent's iptables-nft chain
//! (pure) and removes it in one compare-and-commit batch.

pub mod commit;
pub mod compat;
mod create;
pub mod decode;
pub mod encode;
pub mod error;
pub mod events;
pub mod expr;
pub mod legacy;
pub mod live;
pub mod offsets;
pub mod ruleset;
pub mod socket;
pub mod stmt;
pub mod takeover;
pub mod uapi;

pub use commit::{CommitReport, delete_table, replace_table, replace_table_with};
pub use create::ATTEMPTS;
pub use encode::ReplaceForm;
pub use error::NftError;
pub use socket::NftSocket;
