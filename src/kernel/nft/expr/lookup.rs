//! `lookup`: a register searched in a set (membership, optionally inverted) or a map (the
//! element's data into a register; the verdict register for a verdict map). The set is named,
//! and also given by its batch-local id when sent in the batch that creates it.

use super::Expr;
use super::fields::Fields;
use crate::kernel::netlink::{Malformed, Writer};
use crate::kernel::nft::uapi::*;

pub(super) fn emit(
    w: &mut Writer,
    set: &str,
    sreg: u32,
    dreg: Option<u32>,
    set_id: Option<u32>,
    flags: u32,
) {
    w.put_str(NFTA_LOOKUP_SET, set);
    w.put_u32(NFTA_LOOKUP_SREG, sreg);
    if let Some(d) = dreg {
        w.put_u32(NFTA_LOOKUP_DREG, d);
    }
    if let Some(id) = set_id {
        w.put_u32(NFTA_LOOKUP_SET_ID, id);
    }
    if flags != 0 {
        w.put_u32(NFTA_LOOKUP_FLAGS, flags);
    }
}

pub(super) fn parse(f: &Fields<'_>) -> Result<Expr, Malformed> {
    Ok(Expr::Lookup {
        set: f.str_or_empty(NFTA_LOOKUP_SET),
        sreg: f.u32(NFTA_LOOKUP_SREG)?,
        dreg: f.opt_u32(NFTA_LOOKUP_DREG)?,
        // The id only exists inside a batch; the kernel does not report it.
        set_id: None,
        flags: f.opt_u32(NFTA_LOOKUP_FLAGS)?.unwrap_or(0),
    })
}

pub(super) fn describe(set: &str, sreg: u32, dreg: Option<u32>, flags: u32) -> String {
    let inv = if flags & 1 != 0 { " inverted" } else { "" };
    match dreg {
        Some(NFT_REG_VERDICT) => format!("lookup reg {sreg} vmap {set}{inv}"),
        Some(d) => format!("lookup reg {sreg} map {set} => reg {d}{inv}"),
        None => format!("lookup reg {sreg} set {set}{inv}"),
    }
}
