//! What the takeover removes, refuses or leaves, from the `nat` tables as read; and the one
//! batch that removes it. Pure.

use super::dump::{NAT_TABLE, NatTable};
use super::recognise::{self, Written};
use crate::kernel::netlink::Writer;
use crate::kernel::nft::encode::{Batch, BatchMsg};
use crate::kernel::nft::uapi::*;

/// A jump to the chain, removed with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    /// The chain the jump is in (`POSTROUTING`).
    pub chain: String,
    /// The rule's handle.
    pub handle: u64,
    /// Whether it is ip-masq-agent's own jump (its comment, `addrtype ! LOCAL`).
    pub own: bool,
    /// The rule in `iptables-save` terms.
    pub description: String,
}

/// The chain and its jumps in one family's `nat` table, all ip-masq-agent's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// `NFPROTO_IPV4` or `NFPROTO_IPV6`.
    pub family: u8,
    /// The chain.
    pub chain: String,
    /// Its rules: handle and what each does.
    pub rules: Vec<(u64, Written)>,
    /// Every rule of the table that jumps (or goes) to it.
    pub jumps: Vec<Jump>,
}

/// A rule of the chain that ip-masq-agent would not have written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    /// `NFPROTO_IPV4` or `NFPROTO_IPV6`.
    pub family: u8,
    /// The rule's handle; `None` when the chain itself is the problem (a base chain).
    pub handle: Option<u64>,
    /// The rule in `iptables-save` terms.
    pub description: String,
    /// Why it is not ip-masq-agent's.
    pub why: String,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The chain is in no `nat` table of nf_tables.
    Nothing,
    /// Remove these, in one transaction.
    Remove(Vec<Removal>),
    /// The chain holds rules ip-masq-agent would not have written: remove nothing.
    Refuse(Vec<Foreign>),
}

/// The family's name as nft and the logs spell it.
pub fn family_name(family: u8) -> &'static str {
    match family {
        NFPROTO_IPV4 => "ip",
        NFPROTO_IPV6 => "ip6",
        _ => "?",
    }
}

/// Decides, over every family's `nat` table: remove the chain `chain` and every jump to it
/// where it exists, unless any of its rules (in any family) is not one ip-masq-agent writes.
pub fn plan(chain: &str, tables: &[NatTable]) -> Plan {
    let mut removals = Vec::new();
    let mut foreign = Vec::new();
    for t in tables {
        let Some(c) = t.chain(chain) else {
            continue;
        };
        if c.base {
            foreign.push(Foreign {
                family: t.family,
                handle: None,
                description: format!("chain {chain}"),
                why: "a base chain (on a hook), which iptables -N never makes".into(),
            });
            continue;
        }
        let mut rules = Vec::new();
        for r in t.rules.iter().filter(|r| r.chain == chain) {
            match recognise::written(t.family, r) {
                Ok(w) => rules.push((r.handle, w)),
                Err(why) => foreign.push(Foreign {
                    family: t.family,
                    handle: Some(r.handle),
                    description: recognise::describe(t.family, r),
                    why,
                }),
            }
        }
        let jumps = t
            .rules
            .iter()
            .filter(|r| r.chain != chain && recognise::jump_target(r) == Some(chain))
            .map(|r| Jump {
                chain: r.chain.clone(),
                handle: r.handle,
                own: recognise::own_jump(t.family, r, chain),
                description: recognise::describe(t.family, r),
            })
            .collect();
        removals.push(Removal {
            family: t.family,
            chain: chain.to_string(),
            rules,
            jumps,
        });
    }
    if !foreign.is_empty() {
        Plan::Refuse(foreign)
    } else if removals.is_empty() {
        Plan::Nothing
    } else {
        Plan::Remove(removals)
    }
}

/// The one transaction that removes everything in `removals`: per family, each jump, each
/// rule of the chain, then the chain (`DELRULE` by handle, `DELCHAIN` by name). Its BEGIN
/// carries `generation` (`NFNL_BATCH_GENID`): the kernel applies it only if nothing was
/// committed since the tables were read, so a rule planted in between is never removed
/// unseen. Only the last message asks for an ACK (failures are reported anyway).
pub fn batch(removals: &[Removal], seq: u32, generation: u32) -> Batch {
    let mut w = Writer::with_capacity(256);
    let begin = w.begin_msg(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        NFPROTO_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
    );
    w.put(NFNL_BATCH_GENID, &generation.to_be_bytes());
    w.end_msg(begin);
    let mut msgs: Vec<BatchMsg> = Vec::new();
    let mut next = seq.wrapping_add(1);
    let mut message =
        |w: &mut Writer, kind: u16, family: u8, what: String, attrs: &dyn Fn(&mut Writer)| {
            let start = w.begin_msg(nft_type(kind), NLM_F_REQUEST, next, family, 0);
            attrs(w);
            w.end_msg(start);
            msgs.push(BatchMsg {
                seq: next,
                offset: start,
                len: w.len() - start,
                kind,
                what,
            });
            next = next.wrapping_add(1);
        };
    for r in removals {
        let fam = family_name(r.family);
        let rules = r
            .jumps
            .iter()
            .map(|j| (j.chain.as_str(), j.handle))
            .chain(r.rules.iter().map(|(h, _)| (r.chain.as_str(), *h)));
        for (chain, handle) in rules {
            message(
                &mut w,
                NFT_MSG_DELRULE,
                r.family,
                format!("DELRULE {fam} {NAT_TABLE} {chain} handle {handle}"),
                &|w| {
                    w.put_str(NFTA_RULE_TABLE, NAT_TABLE);
                    w.put_str(NFTA_RULE_CHAIN, chain);
                    w.put_u64(NFTA_RULE_HANDLE, handle);
                },
            );
        }
        message(
            &mut w,
            NFT_MSG_DELCHAIN,
            r.family,
            format!("DELCHAIN {fam} {NAT_TABLE} {}", r.chain),
            &|w| {
                w.put_str(NFTA_CHAIN_TABLE, NAT_TABLE);
                w.put_str(NFTA_CHAIN_NAME, &r.chain);
            },
        );
    }
    if let Some(last) = msgs.last() {
        w.add_msg_flags(last.offset, NLM_F_ACK);
    }
    let end = w.begin_msg(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        next,
        NFPROTO_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
    );
    w.end_msg(end);
    Batch {
        bytes: w.into_bytes(),
        msgs,
        elements: 0,
    }
}

/// Of the families whose iptables-legacy nat table exists (`legacy`), those where nf_tables
/// has no chain `chain`: ip-masq-agent writes through one iptables backend (its image's
/// iptables-wrapper follows the node's), so where the chain is in nf_tables it is not in
/// iptables-legacy, and the operator is not sent looking.
pub fn legacy_to_check(
    legacy: &[&'static str],
    tables: &[NatTable],
    chain: &str,
) -> Vec<&'static str> {
    legacy
        .iter()
        .copied()
        .filter(|f| {
            !tables
                .iter()
                .any(|t| family_name(t.family) == *f && t.chain(chain).is_some())
        })
        .collect()
}

/// The shell commands that remove `chain` and the jumps to it from iptables-legacy's nat
/// table of `family` (which nf_tables netlink cannot reach). The jumps are found by
/// `iptables-legacy -S`, whose quoting `eval` undoes, so the `-D` matches each rule exactly
/// whatever its comment.
pub fn legacy_commands(family: u8, chain: &str) -> String {
    let bin = match family {
        NFPROTO_IPV6 => "ip6tables-legacy",
        _ => "iptables-legacy",
    };
    format!(
        "{bin} -t nat -S | sed -n 's/^-A \\(.* -[jg] {chain}\\)$/-D \\1/p' | while read -r r; \
         do eval \"{bin} -t nat $r\"; done; {bin} -t nat -F {chain}; {bin} -t nat -X {chain}"
    )
}
