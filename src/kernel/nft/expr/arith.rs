//! `numgen`, `byteorder` and `bitwise`: register arithmetic (a generated number, a byte-order
//! conversion, a mask and xor). The agent writes the first two for its sampled statement
//! (`numgen random mod N < M`); bitwise comes from other tables' rules (prefix matches of
//! iptables-nft), which the conflict analysis evaluates. Only bitwise's boolean form is
//! modelled; its shifts are [`Expr::Other`].

use super::Expr;
use super::fields::{Fields, hex, put_u32s, put_value};
use crate::kernel::netlink::{Malformed, Writer};
use crate::kernel::nft::uapi::*;

const NUMGEN: [u16; 3] = [NFTA_NG_DREG, NFTA_NG_MODULUS, NFTA_NG_TYPE];

/// Writes `[dreg, modulus, type]`, then the offset when not zero (absent reads as 0).
pub(super) fn emit_numgen(w: &mut Writer, values: [u32; 3], offset: u32) {
    put_u32s(w, &NUMGEN, &values);
    if offset != 0 {
        w.put_u32(NFTA_NG_OFFSET, offset);
    }
}

pub(super) fn parse_numgen(f: &Fields<'_>) -> Result<Expr, Malformed> {
    Ok(Expr::Numgen {
        dreg: f.u32(NFTA_NG_DREG)?,
        modulus: f.u32(NFTA_NG_MODULUS)?,
        kind: f.u32(NFTA_NG_TYPE)?,
        offset: f.opt_u32(NFTA_NG_OFFSET)?.unwrap_or(0),
    })
}

pub(super) fn describe_numgen(dreg: u32, modulus: u32, kind: u32, offset: u32) -> String {
    format!("numgen type {kind} mod {modulus} offset {offset} => reg {dreg}")
}

const BYTEORDER: [u16; 5] = [
    NFTA_BYTEORDER_SREG,
    NFTA_BYTEORDER_DREG,
    NFTA_BYTEORDER_OP,
    NFTA_BYTEORDER_LEN,
    NFTA_BYTEORDER_SIZE,
];

/// Writes `[sreg, dreg, op, len, size]`.
pub(super) fn emit_byteorder(w: &mut Writer, values: [u32; 5]) {
    put_u32s(w, &BYTEORDER, &values);
}

pub(super) fn parse_byteorder(f: &Fields<'_>) -> Result<Expr, Malformed> {
    Ok(Expr::Byteorder {
        sreg: f.u32(NFTA_BYTEORDER_SREG)?,
        dreg: f.u32(NFTA_BYTEORDER_DREG)?,
        op: f.u32(NFTA_BYTEORDER_OP)?,
        len: f.u32(NFTA_BYTEORDER_LEN)?,
        size: f.u32(NFTA_BYTEORDER_SIZE)?,
    })
}

pub(super) fn describe_byteorder(sreg: u32, dreg: u32, op: u32) -> String {
    format!("byteorder op {op} reg {sreg} => reg {dreg}")
}

/// Writes `[sreg, dreg, len]`, then mask and xor, both `NFTA_DATA_VALUE` nests.
pub(super) fn emit_bitwise(w: &mut Writer, regs_len: [u32; 3], mask: &[u8], xor: &[u8]) {
    put_u32s(
        w,
        &[NFTA_BITWISE_SREG, NFTA_BITWISE_DREG, NFTA_BITWISE_LEN],
        &regs_len,
    );
    put_value(w, NFTA_BITWISE_MASK, mask);
    put_value(w, NFTA_BITWISE_XOR, xor);
}

pub(super) fn parse_bitwise(f: &Fields<'_>) -> Result<Expr, Malformed> {
    // A shift (NFTA_BITWISE_OP / DATA) has no mask: not the form we evaluate.
    if f.find(NFTA_BITWISE_MASK).is_none() {
        return Ok(f.other());
    }
    Ok(Expr::Bitwise {
        sreg: f.u32(NFTA_BITWISE_SREG)?,
        dreg: f.u32(NFTA_BITWISE_DREG)?,
        len: f.u32(NFTA_BITWISE_LEN)?,
        mask: f.value(NFTA_BITWISE_MASK)?,
        xor: f.value(NFTA_BITWISE_XOR)?,
    })
}

pub(super) fn describe_bitwise(sreg: u32, dreg: u32, mask: &[u8], xor: &[u8]) -> String {
    format!(
        "bitwise reg {dreg} = (reg {sreg} & 0x{}) ^ 0x{}",
        hex(mask),
        hex(xor)
    )
}
