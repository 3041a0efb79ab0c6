//! `--take-over-iptables-chain`: removes ip-masq-agent's chain (`IP-MASQ-AGENT`, or its
//! `--masq-chain`) and every jump to it from the iptables-nft `nat` tables (`ip` and `ip6`),
//! once our own table is in force.
//!
//! The old chain runs at `nat POSTROUTING` (priority srcnat), before ours, and the first NAT
//! chain that translates a flow decides it: as long as it is there, ip-masq-agent's last
//! policy keeps winning wherever it masquerades. ip-masq-agent never removes it.
//!
//! - [`dump`] (pure): the `nat` table of a family from the kernel's dump replies;
//! - [`recognise`] (pure): which rules ip-masq-agent writes, by shape and comment;
//! - [`plan`] (pure): remove, refuse or nothing; the one batch that removes;
//! - this module: the reading and the commit on the command socket ([`take_over`]), and what
//!   is logged ([`Outcome::log`]).
//!
//! Everything is removed in one transaction, compared against the generation the tables
//! were read at, so nothing committed in between is deleted unseen; a race is retried a
//! few times. Nothing is removed when the chain holds a rule ip-masq-agent would not have
//! written. iptables-legacy's tables are out of netlink's reach: when its nat table exists
//! the outcome carries the commands to run.

pub mod dump;
pub mod plan;
pub mod recognise;

#[cfg(test)]
mod tests;

use super::error::NftError;
use super::socket::NftSocket;
use super::uapi::*;
use crate::kernel::netlink::{Msg, Writer};
use plan::family_name;
pub use plan::{Foreign, Jump, Plan, Removal};
pub use recognise::Written;

/// ip-masq-agent's chain when no `--masq-chain` is given.
pub const DEFAULT_CHAIN: &str = "IP-MASQ-AGENT";

/// How many times the read and the compare-and-commit are tried when others commit between
/// them (each attempt takes a few milliseconds; iptables-nft users commit far less often).
pub const ATTEMPTS: u32 = 5;

/// What the takeover did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The chain looked for.
    pub chain: String,
    /// What happened in nf_tables.
    pub result: Done,
    /// The families (`ip`, `ip6`) where the chain is not in nf_tables and iptables-legacy has
    /// a nat table, which may hold it (unreadable here).
    pub legacy: Vec<&'static str>,
}

/// What happened in nf_tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// The chain is in no iptables-nft `nat` table: nothing to do.
    Absent,
    /// Removed, in one transaction.
    Removed(Vec<Removal>),
    /// Refused: the chain holds rules ip-masq-agent would not have written. Nothing removed.
    Refused(Vec<Foreign>),
}

/// Why the takeover did not finish.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    /// A read or the commit failed.
    #[error("taking over iptables chain {chain}")]
    Netlink {
        /// The chain.
        chain: String,
        /// The cause.
        #[source]
        source: NftError,
    },
    /// Others committed between every read and its commit.
    #[error(
        "taking over iptables chain {chain}: the ruleset changed between the read and the \
         commit {attempts} times in a row; nothing removed"
    )]
    Raced {
        /// The chain.
        chain: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// Removes `chain` and every jump to it from the iptables-nft `nat` tables of both families,
/// in one compare-and-commit transaction, unless it holds a rule ip-masq-agent would not have
/// written. Idempotent: a chain already gone is [`Done::Absent`].
pub fn take_over(sock: &mut NftSocket, chain: &str) -> Result<Outcome, TakeoverError> {
    let net = |source| TakeoverError::Netlink {
        chain: chain.to_string(),
        source,
    };
    let legacy = super::legacy::legacy_nat_tables();
    let outcome = |result, tables: &[dump::NatTable]| Outcome {
        chain: chain.to_string(),
        result,
        legacy: plan::legacy_to_check(&legacy, tables, chain),
    };
    for _ in 0..ATTEMPTS {
        let generation = sock.generation().map_err(net)?;
        let mut tables = Vec::new();
        let mut interrupted = false;
        for family in [NFPROTO_IPV4, NFPROTO_IPV6] {
            match read_raw(sock, family) {
                Ok(raw) => {
                    tables.push(dump::parse(family, &raw).map_err(|e| net(NftError::Malformed(e)))?)
                }
                Err(NftError::Interrupted) => interrupted = true,
                Err(e) => return Err(net(e)),
            }
        }
        if interrupted || sock.generation().map_err(net)? != generation {
            continue;
        }
        let removals = match plan::plan(chain, &tables) {
            Plan::Nothing => return Ok(outcome(Done::Absent, &tables)),
            Plan::Refuse(foreign) => return Ok(outcome(Done::Refused(foreign), &tables)),
            Plan::Remove(r) => r,
        };
        let batch = plan::batch(&removals, sock.next_seq(), generation);
        match sock.send_batch(&batch) {
            Ok(()) => return Ok(outcome(Done::Removed(removals), &tables)),
            // Someone committed since the read: read again.
            Err(e) if e.errno() == Some(libc::ERESTART) => continue,
            Err(e) => return Err(net(e)),
        }
    }
    Err(TakeoverError::Raced {
        chain: chain.to_string(),
        attempts: ATTEMPTS,
    })
}

/// The chains and rules of table `nat` in `family`, as the kernel's dump replies, back to
/// back (what [`dump::parse`] reads, and what the fixtures in `tests/fixtures/` hold).
pub fn read_raw(sock: &mut NftSocket, family: u8) -> Result<Vec<u8>, NftError> {
    let mut raw = Vec::new();
    let requests: [(u16, u16); 2] = [
        (NFT_MSG_GETCHAIN, NFTA_CHAIN_TABLE),
        (NFT_MSG_GETRULE, NFTA_RULE_TABLE),
    ];
    for (kind, table_attr) in requests {
        let read = sock.exchange(
            kind,
            true,
            family,
            |w: &mut Writer| w.put_str(table_attr, dump::NAT_TABLE),
            |m| {
                keep(&mut raw, m);
                Ok(())
            },
        );
        match read {
            // No such table: nothing in it.
            Err(NftError::Kernel { errno, .. }) if errno == libc::ENOENT => {}
            other => other?,
        }
    }
    Ok(raw)
}

/// Appends a reply message, re-framed as the kernel sent it.
fn keep(raw: &mut Vec<u8>, m: &Msg<'_>) {
    let len = NLMSG_HDRLEN + m.payload.len();
    raw.extend_from_slice(&(len as u32).to_ne_bytes());
    raw.extend_from_slice(&m.ty.to_ne_bytes());
    raw.extend_from_slice(&m.flags.to_ne_bytes());
    raw.extend_from_slice(&m.seq.to_ne_bytes());
    raw.extend_from_slice(&m.pid.to_ne_bytes());
    raw.extend_from_slice(m.payload);
    raw.resize((raw.len() + 3) & !3, 0);
}

impl Outcome {
    /// The log lines: what was removed (the chain, its rule count, each jump with its
    /// handle), or why nothing was (each foreign rule with its handle), or that there was
    /// nothing; and, where iptables-legacy has a nat table, the commands to run there.
    pub fn log(&self) {
        let chain = &self.chain;
        match &self.result {
            Done::Absent => tracing::info!(
                chain = chain.as_str(),
                "nothing to take over: iptables chain {chain} is in no iptables-nft nat \
                 table (ip, ip6)"
            ),
            Done::Removed(removals) => {
                for r in removals {
                    let fam = family_name(r.family);
                    let jumps: Vec<String> = r.jumps.iter().map(jump_text).collect();
                    tracing::info!(
                        chain = chain.as_str(),
                        family = fam,
                        rules = r.rules.len(),
                        jumps = r.jumps.len(),
                        "took over iptables chain {chain}: removed chain {chain} ({} rules) \
                         from table {fam} nat and the jumps to it: {}",
                        r.rules.len(),
                        if jumps.is_empty() {
                            "none".to_string()
                        } else {
                            jumps.join("; ")
                        },
                    );
                }
            }
            Done::Refused(foreign) => {
                let rules: Vec<String> = foreign.iter().map(foreign_text).collect();
                tracing::warn!(
                    chain = chain.as_str(),
                    rules = foreign.len(),
                    "not taking over iptables chain {chain}: it holds rules ip-masq-agent \
                     would not have written, so nothing was removed: {}; remove or move \
                     them, then restart the agent (or remove the chain by hand)",
                    rules.join("; "),
                );
            }
        }
        for family in &self.legacy {
            let code = if *family == "ip6" {
                NFPROTO_IPV6
            } else {
                NFPROTO_IPV4
            };
            tracing::warn!(
                chain = chain.as_str(),
                family = *family,
                "iptables-legacy has a nat table here ({family}), which netlink cannot \
                 read: if `{}-legacy -t nat -S {chain}` lists chain {chain}, remove it and \
                 the jumps to it with: `{}`",
                if *family == "ip6" {
                    "ip6tables"
                } else {
                    "iptables"
                },
                plan::legacy_commands(code, chain),
            );
        }
    }
}

fn jump_text(j: &Jump) -> String {
    format!(
        "{} handle {}{}: {}",
        j.chain,
        j.handle,
        if j.own {
            ""
        } else {
            " (not ip-masq-agent's own jump)"
        },
        j.description
    )
}

fn foreign_text(f: &Foreign) -> String {
    let at = match f.handle {
        Some(h) => format!("{} nat handle {h}", family_name(f.family)),
        None => format!("{} nat", family_name(f.family)),
    };
    format!("{at}: {} ({})", f.description, f.why)
}
