//! `payload`: a load of packet bytes into a register (the agent's address and port
//! matches). A payload write (`payload set`) has no destination register and is kept as
//! [`Expr::Other`].

use super::Expr;
use super::fields::{Fields, put_u32s};
use crate::kernel::netlink::{Malformed, Writer};
use crate::kernel::nft::uapi::*;

const ATTRS: [u16; 4] = [
    NFTA_PAYLOAD_DREG,
    NFTA_PAYLOAD_BASE,
    NFTA_PAYLOAD_OFFSET,
    NFTA_PAYLOAD_LEN,
];

/// Writes `[dreg, base, offset, len]`.
pub(super) fn emit(w: &mut Writer, values: [u32; 4]) {
    put_u32s(w, &ATTRS, &values);
}

pub(super) fn parse(f: &Fields<'_>) -> Result<Expr, Malformed> {
    if f.find(NFTA_PAYLOAD_DREG).is_none() {
        return Ok(f.other());
    }
    Ok(Expr::Payload {
        base: f.u32(NFTA_PAYLOAD_BASE)?,
        offset: f.u32(NFTA_PAYLOAD_OFFSET)?,
        len: f.u32(NFTA_PAYLOAD_LEN)?,
        dreg: f.u32(NFTA_PAYLOAD_DREG)?,
    })
}

pub(super) fn describe(base: u32, offset: u32, len: u32, dreg: u32) -> String {
    format!("payload load {len}b @ base {base} + {offset} => reg {dreg}")
}
