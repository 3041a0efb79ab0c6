//! The agent's state, one small struct per concern, each holding its fields and the methods
//! that change them (and log what they change): the config followed ([`config`]), the
//! commits ([`commit`]), the read-back checks ([`check`]), another socket owning the table
//! ([`owner`]), conntrack reconciliation ([`flows`]). Errors are kept as the errors; text is
//! made only where a log line or `/readyz` shows it.

pub mod check;
pub mod commit;
pub mod config;
pub mod flows;
pub mod owner;
