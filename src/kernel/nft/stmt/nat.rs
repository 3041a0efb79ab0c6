//! The NAT statements: `masquerade`, `snat to`, and `snat ... map` (the `snatRules` maps),
//! lowered to the expressions nft writes and recognised again.

use std::net::IpAddr;

use super::*;

/// `masquerade [to :lo-hi]`: a port range travels in registers 1 and 2.
pub(super) fn lower_masquerade(flags: u32, ports: Option<(u16, u16)>, out: &mut Vec<Expr>) {
    let Some((lo, hi)) = ports else {
        out.push(Expr::Masq {
            flags,
            reg_min: None,
            reg_max: None,
        });
        return;
    };
    out.extend([
        Expr::Immediate {
            dreg: R1,
            data: ImmData::Value(lo.to_be_bytes().to_vec()),
        },
        Expr::Immediate {
            dreg: NFT_REG_2,
            data: ImmData::Value(hi.to_be_bytes().to_vec()),
        },
        Expr::Masq {
            flags,
            reg_min: Some(R1),
            reg_max: Some(NFT_REG_2),
        },
    ]);
}

/// `snat ip|ip6 to first[-last][:ports]`: nft loads the addresses, then the ports, into
/// consecutive registers from 1, and names them in the `nat` expression.
pub(super) fn lower_snat(
    family: Family,
    (first, last): (IpAddr, IpAddr),
    flags: u32,
    ports: Option<(u16, u16)>,
    out: &mut Vec<Expr>,
) {
    let mut reg = R1;
    let mut load = |data: Vec<u8>, out: &mut Vec<Expr>| {
        out.push(Expr::Immediate {
            dreg: reg,
            data: ImmData::Value(data),
        });
        reg += 1;
        reg - 1
    };
    let addr_min = load(addr_bytes(first), out);
    let addr_max = (last != first).then(|| load(addr_bytes(last), out));
    let (proto_min, proto_max) = match ports {
        Some((lo, hi)) => (
            Some(load(lo.to_be_bytes().to_vec(), out)),
            Some(load(hi.to_be_bytes().to_vec(), out)),
        ),
        None => (None, None),
    };
    out.push(Expr::Nat {
        kind: NFT_NAT_SNAT,
        family: u32::from(nfproto_of(family)),
        reg_addr_min: Some(addr_min),
        reg_addr_max: addr_max,
        reg_proto_min: proto_min,
        reg_proto_max: proto_max,
        flags,
    });
}

/// `counter snat ip|ip6 to ip|ip6 saddr map @map[:ports]`: the source address into
/// register 1, looked up in the map with its data into register 1 again (nft's own
/// expressions for the `snat` statement), then the counter, then the ports into registers 2
/// and 3 and the `nat` reading them. nft writes the counter before the lookup; here it comes
/// after, so that a source the map does not hold, whose rule ends at the lookup, is not
/// counted by this rule and again by the fallback it goes on to (nft lists both orders the
/// same way).
pub(super) fn lower_snat_map(
    family: Family,
    map: &str,
    (packets, bytes): (u64, u64),
    flags: u32,
    ports: Option<(u16, u16)>,
    set_id: &dyn Fn(&str) -> Option<u32>,
    out: &mut Vec<Expr>,
) {
    let (offset, len) = saddr_field(family);
    out.extend([
        Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len,
            dreg: R1,
        },
        Expr::Lookup {
            set: map.into(),
            sreg: R1,
            dreg: Some(R1),
            set_id: set_id(map),
            flags: 0,
        },
        Expr::Counter { packets, bytes },
    ]);
    let (proto_min, proto_max) = match ports {
        Some((lo, hi)) => {
            out.extend([
                Expr::Immediate {
                    dreg: NFT_REG_2,
                    data: ImmData::Value(lo.to_be_bytes().to_vec()),
                },
                Expr::Immediate {
                    dreg: NFT_REG_3,
                    data: ImmData::Value(hi.to_be_bytes().to_vec()),
                },
            ]);
            (Some(NFT_REG_2), Some(NFT_REG_3))
        }
        None => (None, None),
    };
    out.push(Expr::Nat {
        kind: NFT_NAT_SNAT,
        family: u32::from(nfproto_of(family)),
        reg_addr_min: Some(R1),
        reg_addr_max: None,
        reg_proto_min: proto_min,
        reg_proto_max: proto_max,
        flags,
    });
}

/// The `snat ... map` the expressions at the start of `exprs` may be (lowering then checks
/// every register and offset).
pub(super) fn snat_map_candidate(exprs: &[Expr]) -> Option<Stmt> {
    let [
        Expr::Payload { .. },
        Expr::Lookup {
            set, dreg: Some(_), ..
        },
        Expr::Counter { packets, bytes },
        rest @ ..,
    ] = exprs
    else {
        return None;
    };
    let (ports, nat) = match rest {
        [
            Expr::Immediate {
                data: ImmData::Value(lo),
                ..
            },
            Expr::Immediate {
                data: ImmData::Value(hi),
                ..
            },
            nat @ Expr::Nat { .. },
            ..,
        ] => (
            Some((
                u16::from_be_bytes(lo.as_slice().try_into().ok()?),
                u16::from_be_bytes(hi.as_slice().try_into().ok()?),
            )),
            nat,
        ),
        [nat @ Expr::Nat { .. }, ..] => (None, nat),
        _ => return None,
    };
    let Expr::Nat { family, flags, .. } = nat else {
        return None;
    };
    let family = family_of(&[u8::try_from(*family).ok()?])?;
    (flags & !KNOWN_NAT_FLAGS == 0).then(|| Stmt::SnatMap {
        family,
        map: set.clone(),
        packets: *packets,
        bytes: *bytes,
        flags: *flags,
        ports,
    })
}

/// The `snat` a run of immediates followed by a `nat` expression may be: the values of the
/// registers the `nat` names (lowering then checks they are exactly where nft puts them).
pub(super) fn snat_candidate(exprs: &[Expr]) -> Option<Stmt> {
    let loads = exprs
        .iter()
        .take_while(|e| matches!(e, Expr::Immediate { dreg, data: ImmData::Value(_) } if *dreg != NFT_REG_VERDICT))
        .count();
    let Some(Expr::Nat {
        kind: NFT_NAT_SNAT,
        family,
        reg_addr_min: Some(amin),
        reg_addr_max,
        reg_proto_min,
        reg_proto_max,
        flags,
    }) = exprs.get(loads)
    else {
        return None;
    };
    let value = |reg: u32| {
        exprs[..loads].iter().find_map(|e| match e {
            Expr::Immediate {
                dreg,
                data: ImmData::Value(v),
            } if *dreg == reg => Some(v.as_slice()),
            _ => None,
        })
    };
    let family = family_of(&[u8::try_from(*family).ok()?])?;
    let addr = |reg: u32| -> Option<IpAddr> {
        let v = value(reg)?;
        match family {
            Family::V4 => Some(IpAddr::from(<[u8; 4]>::try_from(v).ok()?)),
            Family::V6 => Some(IpAddr::from(<[u8; 16]>::try_from(v).ok()?)),
        }
    };
    let port = |reg: u32| Some(u16::from_be_bytes(value(reg)?.try_into().ok()?));
    let first = addr(*amin)?;
    let last = match reg_addr_max {
        Some(r) => addr(*r)?,
        None => first,
    };
    let ports = match (reg_proto_min, reg_proto_max) {
        (Some(a), Some(b)) => Some((port(*a)?, port(*b)?)),
        (None, None) => None,
        _ => return None,
    };
    (flags & !KNOWN_NAT_FLAGS == 0).then_some(Stmt::Snat {
        family,
        first,
        last,
        flags: *flags,
        ports,
    })
}
