//! `masq` and `nat`: the source and destination translations (the agent's `masquerade`, and
//! the SNAT/DNAT rules of other tables the conflict analysis reads). Both take their ranges
//! from registers; every register and the flags are optional.

use super::Expr;
use super::fields::{Fields, put_u32s};
use crate::kernel::netlink::{Malformed, Writer};
use crate::kernel::nft::uapi::*;

pub(super) fn emit_masq(w: &mut Writer, flags: u32, reg_min: Option<u32>, reg_max: Option<u32>) {
    if flags != 0 {
        w.put_u32(NFTA_MASQ_FLAGS, flags);
    }
    if let Some(r) = reg_min {
        w.put_u32(NFTA_MASQ_REG_PROTO_MIN, r);
    }
    if let Some(r) = reg_max {
        w.put_u32(NFTA_MASQ_REG_PROTO_MAX, r);
    }
}

pub(super) fn parse_masq(f: &Fields<'_>) -> Result<Expr, Malformed> {
    Ok(Expr::Masq {
        flags: f.opt_u32(NFTA_MASQ_FLAGS)?.unwrap_or(0),
        reg_min: f.opt_u32(NFTA_MASQ_REG_PROTO_MIN)?,
        reg_max: f.opt_u32(NFTA_MASQ_REG_PROTO_MAX)?,
    })
}

pub(super) fn describe_masq(flags: u32, reg_min: Option<u32>, reg_max: Option<u32>) -> String {
    format!("masq flags 0x{flags:x} proto regs {reg_min:?}-{reg_max:?}")
}

const NAT_REGS: [u16; 4] = [
    NFTA_NAT_REG_ADDR_MIN,
    NFTA_NAT_REG_ADDR_MAX,
    NFTA_NAT_REG_PROTO_MIN,
    NFTA_NAT_REG_PROTO_MAX,
];

/// Writes the type and family, then `[addr_min, addr_max, proto_min, proto_max]` where given,
/// then the flags when not zero.
pub(super) fn emit_nat(w: &mut Writer, kind_family: [u32; 2], regs: [Option<u32>; 4], flags: u32) {
    put_u32s(w, &[NFTA_NAT_TYPE, NFTA_NAT_FAMILY], &kind_family);
    for (ty, reg) in NAT_REGS.iter().zip(regs) {
        if let Some(r) = reg {
            w.put_u32(*ty, r);
        }
    }
    if flags != 0 {
        w.put_u32(NFTA_NAT_FLAGS, flags);
    }
}

/// `NF_NAT_RANGE_MAP_IPS`: the kernel sets it itself when an address register is given, and
/// reports it back; nft neither sends nor shows it.
const NAT_MAP_IPS: u32 = 0x1;

pub(super) fn parse_nat(f: &Fields<'_>) -> Result<Expr, Malformed> {
    let reg_addr_min = f.opt_u32(NFTA_NAT_REG_ADDR_MIN)?;
    let mut flags = f.opt_u32(NFTA_NAT_FLAGS)?.unwrap_or(0);
    if reg_addr_min.is_some() {
        flags &= !NAT_MAP_IPS;
    }
    // Without a last address the kernel uses the first one's register, and says so.
    let reg_addr_max = f
        .opt_u32(NFTA_NAT_REG_ADDR_MAX)?
        .filter(|r| Some(*r) != reg_addr_min);
    Ok(Expr::Nat {
        kind: f.u32(NFTA_NAT_TYPE)?,
        family: f.u32(NFTA_NAT_FAMILY)?,
        reg_addr_min,
        reg_addr_max,
        reg_proto_min: f.opt_u32(NFTA_NAT_REG_PROTO_MIN)?,
        reg_proto_max: f.opt_u32(NFTA_NAT_REG_PROTO_MAX)?,
        flags,
    })
}

pub(super) fn describe_nat(kind: u32, family: u32, flags: u32) -> String {
    format!("nat type {kind} family {family} flags 0x{flags:x}")
}
