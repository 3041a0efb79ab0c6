//! `counter`: packets and bytes, 64-bit (an absent value reads as zero).

use super::Expr;
use super::fields::Fields;
use crate::kernel::netlink::{Malformed, Writer};
use crate::kernel::nft::uapi::*;

pub(super) fn emit(w: &mut Writer, packets: u64, bytes: u64) {
    w.put_u64(NFTA_COUNTER_BYTES, bytes);
    w.put_u64(NFTA_COUNTER_PACKETS, packets);
}

pub(super) fn parse(f: &Fields<'_>) -> Result<Expr, Malformed> {
    Ok(Expr::Counter {
        bytes: f.u64_or_0(NFTA_COUNTER_BYTES)?,
        packets: f.u64_or_0(NFTA_COUNTER_PACKETS)?,
    })
}

pub(super) fn describe(packets: u64, bytes: u64) -> String {
    format!("counter packets {packets} bytes {bytes}")
}
