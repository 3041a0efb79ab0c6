//! The pure packet analysis: what a table, a config, or other components' rules do to a
//! packet. [`flows`] (which open flows a policy change affects), [`conflict`] (whether other
//! NAT rules translate a packet before ours) and [`explain`] (why a destination is, or is not,
//! translated, for `--explain`). Tables, flows and questions come in as values; nothing here
//! reads the kernel.

pub mod conflict;
pub mod explain;
pub mod flows;
