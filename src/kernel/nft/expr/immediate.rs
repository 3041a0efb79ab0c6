//! `immediate`: a value loaded into a data register, or a verdict (with a chain for
//! jump/goto). The verdict's nest is also how set elements of a verdict map carry theirs,
//! so [`parse_verdict`] is shared with the read-back of other tables.

use super::fields::{Fields, hex};
use super::{Expr, ImmData};
use crate::kernel::netlink::{Attr, Malformed, Writer};
use crate::kernel::nft::uapi::*;

pub(super) fn emit(w: &mut Writer, dreg: u32, data: &ImmData) {
    w.put_u32(NFTA_IMMEDIATE_DREG, dreg);
    let d = w.begin_nest(NFTA_IMMEDIATE_DATA);
    match data {
        ImmData::Value(bytes) => w.put(NFTA_DATA_VALUE, bytes),
        ImmData::Verdict(code, chain) => {
            let v = w.begin_nest(NFTA_DATA_VERDICT);
            w.put_u32(NFTA_VERDICT_CODE, *code as u32);
            if let Some(c) = chain {
                w.put_str(NFTA_VERDICT_CHAIN, c);
            }
            w.end_nest(v);
        }
    }
    w.end_nest(d);
}

pub(super) fn parse(f: &Fields<'_>) -> Result<Expr, Malformed> {
    let dreg = f.u32(NFTA_IMMEDIATE_DREG)?;
    let nest = f
        .find(NFTA_IMMEDIATE_DATA)
        .ok_or_else(|| Malformed("immediate without data".into()))?;
    let mut data = None;
    for inner in nest.nested() {
        let inner = inner?;
        match inner.ty {
            NFTA_DATA_VALUE => data = Some(ImmData::Value(inner.data.to_vec())),
            NFTA_DATA_VERDICT => data = Some(parse_verdict(&inner)?),
            _ => {}
        }
    }
    Ok(Expr::Immediate {
        dreg,
        data: data.ok_or_else(|| Malformed("immediate without data".into()))?,
    })
}

/// A verdict (`NFTA_DATA_VERDICT`'s nest): its code and chain.
pub(crate) fn parse_verdict(nest: &Attr<'_>) -> Result<ImmData, Malformed> {
    let mut code = None;
    let mut chain = None;
    for v in nest.nested() {
        let v = v?;
        match v.ty {
            NFTA_VERDICT_CODE => code = Some(v.u32()? as i32),
            // A chain name is someone else's choice: never fail on it.
            NFTA_VERDICT_CHAIN => chain = Some(v.str_lossy().into_owned()),
            _ => {}
        }
    }
    let code = code.ok_or_else(|| Malformed("verdict without code".into()))?;
    Ok(ImmData::Verdict(code, chain))
}

pub(super) fn describe(dreg: u32, data: &ImmData) -> String {
    match data {
        ImmData::Verdict(code, chain) => {
            let v = verdict_name(*code);
            match chain {
                Some(c) => format!("{v} {c}"),
                None => v.to_string(),
            }
        }
        ImmData::Value(v) => format!("immediate reg {dreg} 0x{}", hex(v)),
    }
}

fn verdict_name(code: i32) -> &'static str {
    match code {
        NF_DROP => "drop",
        NF_ACCEPT => "accept",
        NFT_CONTINUE => "continue",
        NFT_BREAK => "break",
        NFT_JUMP => "jump",
        NFT_GOTO => "goto",
        NFT_RETURN => "return",
        _ => "verdict",
    }
}
