//! An iptables-nft `nat` table as the takeover reads it: its chains and its rules, each rule
//! with its expressions and its comment. Decoded from the kernel's dump replies (the raw
//! messages, back to back, as [`super::read_raw`] keeps them and the fixtures hold them).
//! Pure.

use crate::kernel::netlink::{Malformed, Msg, messages};
use crate::kernel::nft::decode;
use crate::kernel::nft::expr::Expr;
use crate::kernel::nft::uapi::*;

/// The table iptables-nft writes `-t nat` into, in the `ip` and `ip6` families.
pub const NAT_TABLE: &str = "nat";

/// `NFTA_RULE_USERDATA` (enum nft_rule_attributes): where nft keeps a rule's comment.
const NFTA_RULE_USERDATA: u16 = 7;
/// libnftnl's user-data type of a rule comment (`NFTNL_UDATA_RULE_COMMENT`).
const UDATA_RULE_COMMENT: u8 = 0;

/// One chain of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatChain {
    /// Its name.
    pub name: String,
    /// Whether it is a base chain (on a hook): iptables-nft's built-in chains are; the chains
    /// `iptables -N` makes are not.
    pub base: bool,
}

/// One rule of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatRule {
    /// The chain it is in.
    pub chain: String,
    /// Its handle.
    pub handle: u64,
    /// Its expressions, in order (unknown ones kept by name).
    pub exprs: Vec<Expr>,
    /// A comment kept in the rule's user data (nft's `comment "..."`); iptables-nft keeps
    /// `-m comment` as an x_tables match instead, which is one of `exprs`.
    pub comment: Option<String>,
}

/// The `nat` table of one family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatTable {
    /// `NFPROTO_IPV4` or `NFPROTO_IPV6`.
    pub family: u8,
    /// Its chains, in dump order.
    pub chains: Vec<NatChain>,
    /// Its rules, in dump order (evaluation order within a chain).
    pub rules: Vec<NatRule>,
}

impl NatTable {
    /// The chain called `name`, if the table has one.
    pub fn chain(&self, name: &str) -> Option<&NatChain> {
        self.chains.iter().find(|c| c.name == name)
    }
}

/// Decodes the NEWCHAIN and NEWRULE messages of table `nat` in `bytes` (other messages and
/// other tables are skipped: a filter in the kernel's dump is not trusted).
pub fn parse(family: u8, bytes: &[u8]) -> Result<NatTable, Malformed> {
    let mut table = NatTable {
        family,
        ..NatTable::default()
    };
    for m in messages(bytes) {
        let m = m?;
        if m.family() != family || !decode::is_of_table(&m, NAT_TABLE) {
            continue;
        }
        match m.nft_msg() {
            Some(NFT_MSG_NEWCHAIN) => {
                let c = decode::chain(&m)?;
                table.chains.push(NatChain {
                    name: c.chain.name,
                    base: c.chain.base.is_some(),
                });
            }
            Some(NFT_MSG_NEWRULE) => {
                let r = decode::rule(&m)?;
                table.rules.push(NatRule {
                    chain: r.chain,
                    handle: r.handle,
                    exprs: r.exprs,
                    comment: user_comment(&m)?,
                });
            }
            _ => {}
        }
    }
    Ok(table)
}

/// The comment in a rule's user data: type-length-value records of one byte each for type
/// and length (libnftnl's format); the comment is NUL-terminated.
fn user_comment(m: &Msg<'_>) -> Result<Option<String>, Malformed> {
    for a in m.attrs() {
        let a = a?;
        if a.ty != NFTA_RULE_USERDATA {
            continue;
        }
        let mut rest = a.data;
        while let [ty, len, tail @ ..] = rest {
            let len = usize::from(*len);
            let Some(value) = tail.get(..len) else {
                return Err(Malformed("rule user data: record past its end".into()));
            };
            if *ty == UDATA_RULE_COMMENT {
                let text = value.split(|b| *b == 0).next().unwrap_or_default();
                return Ok(Some(String::from_utf8_lossy(text).into_owned()));
            }
            rest = &tail[len..];
        }
    }
    Ok(None)
}
