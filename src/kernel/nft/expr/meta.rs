//! `meta` and `fib`: loads of what the kernel knows about a packet rather than its bytes
//! (its interfaces, mark, protocol, ...; the result of a route lookup for it). `meta set`
//! (a source register) is not the agent's and is kept as [`Expr::Other`].

use super::Expr;
use super::fields::{Fields, put_u32s};
use crate::kernel::netlink::{Malformed, Writer};
use crate::kernel::nft::uapi::*;

const META: [u16; 2] = [NFTA_META_DREG, NFTA_META_KEY];

pub(super) fn emit_meta(w: &mut Writer, key: u32, dreg: u32) {
    put_u32s(w, &META, &[dreg, key]);
}

pub(super) fn parse_meta(f: &Fields<'_>) -> Result<Expr, Malformed> {
    if f.find(NFTA_META_DREG).is_none() {
        return Ok(f.other());
    }
    Ok(Expr::Meta {
        key: f.u32(NFTA_META_KEY)?,
        dreg: f.u32(NFTA_META_DREG)?,
    })
}

pub(super) fn describe_meta(key: u32, dreg: u32) -> String {
    format!("meta load key {key} => reg {dreg}")
}

const FIB: [u16; 3] = [NFTA_FIB_DREG, NFTA_FIB_RESULT, NFTA_FIB_FLAGS];

/// Writes `[dreg, result, flags]`.
pub(super) fn emit_fib(w: &mut Writer, values: [u32; 3]) {
    put_u32s(w, &FIB, &values);
}

pub(super) fn parse_fib(f: &Fields<'_>) -> Result<Expr, Malformed> {
    Ok(Expr::Fib {
        flags: f.u32(NFTA_FIB_FLAGS)?,
        result: f.u32(NFTA_FIB_RESULT)?,
        dreg: f.u32(NFTA_FIB_DREG)?,
    })
}

pub(super) fn describe_fib(flags: u32, result: u32, dreg: u32) -> String {
    format!("fib flags 0x{flags:x} result {result} => reg {dreg}")
}
