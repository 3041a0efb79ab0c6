//! `cmp`: a register compared with bytes (register, operation, and the bytes in an
//! `NFTA_DATA_VALUE` nest).

use super::Expr;
use super::fields::{Fields, hex, put_u32s, put_value};
use crate::kernel::netlink::{Malformed, Writer};
use crate::kernel::nft::uapi::*;

pub(super) fn emit(w: &mut Writer, sreg: u32, op: u32, data: &[u8]) {
    put_u32s(w, &[NFTA_CMP_SREG, NFTA_CMP_OP], &[sreg, op]);
    put_value(w, NFTA_CMP_DATA, data);
}

pub(super) fn parse(f: &Fields<'_>) -> Result<Expr, Malformed> {
    Ok(Expr::Cmp {
        sreg: f.u32(NFTA_CMP_SREG)?,
        op: f.u32(NFTA_CMP_OP)?,
        data: f.value(NFTA_CMP_DATA)?,
    })
}

pub(super) fn describe(sreg: u32, op: u32, data: &[u8]) -> String {
    format!("cmp op {op} reg {sreg} 0x{}", hex(data))
}
