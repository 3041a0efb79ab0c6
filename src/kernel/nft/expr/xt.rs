//! `match` and `target` (nft_compat): an x_tables extension run by nf_tables, which is how
//! iptables-nft writes `-m addrtype`, `-j MASQUERADE`, `-j SNAT`, ... The takeover of
//! ip-masq-agent's chain and the conflict analysis read them.

use super::Expr;
use super::fields::Fields;
use crate::kernel::netlink::{Malformed, Writer};
use crate::kernel::nft::uapi::*;

/// Writes name, revision and the x_tables info bytes. The attribute numbers of match and
/// target are the same.
pub(super) fn emit(w: &mut Writer, name: &str, rev: u32, info: &[u8]) {
    w.put_str(NFTA_MATCH_NAME, name);
    w.put_u32(NFTA_MATCH_REV, rev);
    w.put(NFTA_MATCH_INFO, info);
}

pub(super) fn parse(f: &Fields<'_>, target: bool) -> Result<Expr, Malformed> {
    let (name_ty, rev_ty, info_ty) = if target {
        (NFTA_TARGET_NAME, NFTA_TARGET_REV, NFTA_TARGET_INFO)
    } else {
        (NFTA_MATCH_NAME, NFTA_MATCH_REV, NFTA_MATCH_INFO)
    };
    Ok(Expr::Compat {
        target,
        name: f.str_or_empty(name_ty),
        rev: f.opt_u32(rev_ty)?.unwrap_or(0),
        info: f.find(info_ty).map(|a| a.data.to_vec()).unwrap_or_default(),
    })
}

/// The kernel's name for the expression.
pub(super) fn name(target: bool) -> &'static str {
    if target { "target" } else { "match" }
}

pub(super) fn describe(target: bool, name: &str, rev: u32) -> String {
    format!("{} name {name} rev {rev}", self::name(target))
}
