//! The ctnetlink wire format, pure: a [`Flow`] decoded from a conntrack entry message (what
//! a dump answers with), and the requests the agent sends (dump, delete; create for tests
//! and benchmarks). No I/O, so it is tested on bytes captured from the kernel and on hostile
//! input without root.
//!
//! Decoding is strict about what it uses and blind to the rest: an attribute it does not know
//! is skipped, but a known one of the wrong size, a tuple without addresses of the message's
//! family or a half-present ICMP triple makes the whole entry malformed. A malformed entry is
//! never deleted: the delete request is built from the decoded values, so guessing at one
//! could aim it at another flow.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::uapi::*;
use crate::addr::prefix::Family;
use crate::kernel::netlink::uapi::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use crate::kernel::netlink::{Attr, Malformed, Msg, Writer};

/// The layer 4 part of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4 {
    /// Source and destination port (TCP, UDP, UDP-Lite, SCTP, DCCP; GRE keys also travel in
    /// these attributes).
    Ports {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
    },
    /// ICMP or ICMPv6: the echo identifier, type and code.
    Icmp {
        /// Identifier.
        id: u16,
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
    },
    /// Nothing beyond the protocol number (protocols conntrack tracks generically).
    None,
}

/// One direction of a flow: addresses and the layer 4 identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Ports or ICMP identifiers.
    pub l4: L4,
}

/// A conntrack entry as the kernel reported it.
///
/// `original` is the direction of the first packet (the pod's view: pod address, remote
/// destination); `reply` is what the answer looks like on the wire, so for a masqueraded flow
/// its destination is the translated source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Address family.
    pub family: Family,
    /// Layer 4 protocol number (17 for UDP, ...).
    pub protocol: u8,
    /// The original direction.
    pub original: Tuple,
    /// The reply direction.
    pub reply: Tuple,
    /// `IPS_*` status bits (0 when the kernel did not say).
    pub status: u32,
    /// The entry's id (`CTA_ID`). Not unique over time: a new entry with the same original
    /// tuple can get the id of one that ended (see [`encode_delete`]).
    pub id: Option<u32>,
    /// Its conntrack zone; absent means the default zone 0 (the kernel omits zone 0).
    pub zone: Option<u16>,
    /// Its mark, when the kernel reported one.
    pub mark: Option<u32>,
    /// Seconds until it expires.
    pub timeout: Option<u32>,
}

impl Flow {
    /// Whether the kernel translated the source of this flow (masquerade or SNAT).
    pub fn is_src_nat(&self) -> bool {
        self.status & IPS_SRC_NAT != 0
    }

    /// Whether the kernel translated the destination (DNAT, e.g. a Service).
    pub fn is_dst_nat(&self) -> bool {
        self.status & IPS_DST_NAT != 0
    }

    /// The address the original source was translated to, for a source-NATed flow: the
    /// reply's destination.
    pub fn translated_source(&self) -> Option<IpAddr> {
        self.is_src_nat().then_some(self.reply.dst)
    }

    /// The source a NAT postrouting hook saw on the flow's first packet: the original
    /// source, before any source NAT (which happens at that hook or after it).
    pub fn postrouting_source(&self) -> IpAddr {
        self.original.src
    }

    /// The destination a NAT postrouting hook saw on the flow's first packet: after any
    /// destination NAT (a Service address DNAT'ed to an endpoint at prerouting or output),
    /// which is where the reply comes from, the reply tuple's source. Without DNAT it is the
    /// original destination.
    pub fn postrouting_destination(&self) -> IpAddr {
        self.reply.src
    }

    /// Decodes a conntrack entry message (`IPCTNL_MSG_CT_NEW`, the type dump replies use).
    /// Never panics; see the module docs for what counts as malformed.
    pub fn decode(msg: &Msg<'_>) -> Result<Flow, Malformed> {
        if msg.ty != ct_type(IPCTNL_MSG_CT_NEW) {
            return Err(bad(format!(
                "message type {:#06x} is not a conntrack entry",
                msg.ty
            )));
        }
        if msg.payload.len() < 4 {
            return Err(bad("conntrack message without nfgenmsg header".into()));
        }
        let family = match msg.family() {
            AF_INET => Family::V4,
            AF_INET6 => Family::V6,
            other => return Err(bad(format!("conntrack entry of family {other}"))),
        };
        let (mut original, mut reply) = (None, None);
        let mut flow = Flow {
            family,
            protocol: 0,
            original: placeholder_tuple(),
            reply: placeholder_tuple(),
            status: 0,
            id: None,
            zone: None,
            mark: None,
            timeout: None,
        };
        // The kernel never repeats an attribute; if one is repeated, the last one counts, as
        // the kernel's own parser would have it.
        for a in msg.attrs() {
            let a = a?;
            match a.ty {
                CTA_TUPLE_ORIG => original = Some(tuple(family, &a)?),
                CTA_TUPLE_REPLY => reply = Some(tuple(family, &a)?),
                CTA_STATUS => flow.status = be32(&a)?,
                CTA_ID => flow.id = Some(be32(&a)?),
                CTA_ZONE => flow.zone = Some(be16(&a)?),
                CTA_MARK => flow.mark = Some(be32(&a)?),
                CTA_TIMEOUT => flow.timeout = Some(be32(&a)?),
                _ => {}
            }
        }
        let (proto, orig) = original.ok_or_else(|| bad("no original tuple".into()))?;
        let (reply_proto, rep) = reply.ok_or_else(|| bad("no reply tuple".into()))?;
        if proto != reply_proto {
            return Err(bad(format!(
                "original protocol {proto} differs from reply protocol {reply_proto}"
            )));
        }
        flow.protocol = proto;
        flow.original = orig;
        flow.reply = rep;
        Ok(flow)
    }
}

fn placeholder_tuple() -> Tuple {
    Tuple {
        src: Ipv4Addr::UNSPECIFIED.into(),
        dst: Ipv4Addr::UNSPECIFIED.into(),
        l4: L4::None,
    }
}

fn bad(s: String) -> Malformed {
    Malformed(s)
}

/// The netlink message type of a ctnetlink message.
pub const fn ct_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | msg
}

fn fixed<const N: usize>(a: &Attr<'_>, what: &str) -> Result<[u8; N], Malformed> {
    a.data
        .try_into()
        .map_err(|_| bad(format!("{what} of {} bytes, expected {N}", a.data.len())))
}

fn be32(a: &Attr<'_>) -> Result<u32, Malformed> {
    Ok(u32::from_be_bytes(fixed(a, "32-bit attribute")?))
}

fn be16(a: &Attr<'_>) -> Result<u16, Malformed> {
    Ok(u16::from_be_bytes(fixed(a, "16-bit attribute")?))
}

fn byte(a: &Attr<'_>) -> Result<u8, Malformed> {
    Ok(fixed::<1>(a, "8-bit attribute")?[0])
}

/// A `CTA_TUPLE_*` nest: the protocol number and the tuple.
fn tuple(family: Family, nest: &Attr<'_>) -> Result<(u8, Tuple), Malformed> {
    let (mut src, mut dst) = (None, None);
    let mut proto = None;
    let (mut sport, mut dport) = (None, None);
    let (mut icmp_id, mut icmp_type, mut icmp_code) = (None, None, None);
    let (mut icmp6_id, mut icmp6_type, mut icmp6_code) = (None, None, None);
    for a in nest.nested() {
        let a = a?;
        match a.ty {
            CTA_TUPLE_IP => {
                for ip in a.nested() {
                    let ip = ip?;
                    // Only addresses of the message's family count; others are "unknown".
                    match (family, ip.ty) {
                        (Family::V4, CTA_IP_V4_SRC) => src = Some(v4(&ip)?),
                        (Family::V4, CTA_IP_V4_DST) => dst = Some(v4(&ip)?),
                        (Family::V6, CTA_IP_V6_SRC) => src = Some(v6(&ip)?),
                        (Family::V6, CTA_IP_V6_DST) => dst = Some(v6(&ip)?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for p in a.nested() {
                    let p = p?;
                    match p.ty {
                        CTA_PROTO_NUM => proto = Some(byte(&p)?),
                        CTA_PROTO_SRC_PORT => sport = Some(be16(&p)?),
                        CTA_PROTO_DST_PORT => dport = Some(be16(&p)?),
                        CTA_PROTO_ICMP_ID => icmp_id = Some(be16(&p)?),
                        CTA_PROTO_ICMP_TYPE => icmp_type = Some(byte(&p)?),
                        CTA_PROTO_ICMP_CODE => icmp_code = Some(byte(&p)?),
                        CTA_PROTO_ICMPV6_ID => icmp6_id = Some(be16(&p)?),
                        CTA_PROTO_ICMPV6_TYPE => icmp6_type = Some(byte(&p)?),
                        CTA_PROTO_ICMPV6_CODE => icmp6_code = Some(byte(&p)?),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let proto = proto.ok_or_else(|| bad("tuple without protocol number".into()))?;
    let src = src.ok_or_else(|| bad(format!("tuple without {family:?} source address")))?;
    let dst = dst.ok_or_else(|| bad(format!("tuple without {family:?} destination address")))?;
    // Which attributes identify the flow depends on the protocol, as in the kernel's
    // per-protocol tuple parsers; a partial set could not be sent back in a delete.
    let l4 = match proto {
        IPPROTO_ICMP => icmp(icmp_id, icmp_type, icmp_code)?,
        IPPROTO_ICMPV6 => icmp(icmp6_id, icmp6_type, icmp6_code)?,
        _ => match (sport, dport) {
            (Some(src), Some(dst)) => L4::Ports { src, dst },
            (None, None) => L4::None,
            _ => return Err(bad("tuple with only one port".into())),
        },
    };
    Ok((proto, Tuple { src, dst, l4 }))
}

fn icmp(id: Option<u16>, ty: Option<u8>, code: Option<u8>) -> Result<L4, Malformed> {
    match (id, ty, code) {
        (Some(id), Some(ty), Some(code)) => Ok(L4::Icmp { id, ty, code }),
        (None, None, None) => Ok(L4::None),
        _ => Err(bad("incomplete ICMP identifiers".into())),
    }
}

fn v4(a: &Attr<'_>) -> Result<IpAddr, Malformed> {
    Ok(Ipv4Addr::from(fixed::<4>(a, "IPv4 address")?).into())
}

fn v6(a: &Attr<'_>) -> Result<IpAddr, Malformed> {
    Ok(Ipv6Addr::from(fixed::<16>(a, "IPv6 address")?).into())
}

/// The `nfgenmsg` family byte of a family.
pub fn af(family: Family) -> u8 {
    match family {
        Family::V4 => AF_INET,
        Family::V6 => AF_INET6,
    }
}

/// The request for a dump of every conntrack entry (all zones) of `family`, or of both
/// families with `None`. The family in the `nfgenmsg` makes the kernel filter by layer 3
/// protocol; `AF_UNSPEC` asks for all, in one walk of the table.
pub fn dump_request(family: Option<Family>, seq: u32) -> Vec<u8> {
    let mut w = Writer::with_capacity(20);
    let m = w.begin_msg(
        ct_type(IPCTNL_MSG_CT_GET),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        family.map_or(AF_UNSPEC, af),
        0,
    );
    w.end_msg(m);
    w.into_bytes()
}

/// Appends the request that deletes exactly `flow`, with `NLM_F_ACK`: looked up by its
/// reply tuple in its zone, and only if the entry found has its id.
///
/// Why the reply tuple: the kernel finds an entry by either tuple (both are unique in a
/// zone), and the reply tuple holds the translation. After a policy change the entry the
/// kernel creates for the same original tuple (the pod sent again, the new rules decided) has
/// another reply tuple, so a delete aimed at the old entry answers ENOENT instead of
/// deleting the new one. The id alone cannot tell them apart: the kernel derives it from the
/// entry's memory address and original tuple, and a freed entry's memory is reused at once
/// (measured on 6.18: same id). The zone makes the lookup happen in the flow's own zone.
/// The tuple is always present: a delete request without one asks the kernel to flush the
/// whole table, which this encoder cannot produce.
pub fn encode_delete(w: &mut Writer, flow: &Flow, seq: u32) {
    let m = w.begin_msg(
        ct_type(IPCTNL_MSG_CT_DELETE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        af(flow.family),
        0,
    );
    put_tuple(w, CTA_TUPLE_REPLY, flow.protocol, &flow.reply);
    if let Some(id) = flow.id {
        w.put_u32(CTA_ID, id);
    }
    if let Some(zone) = flow.zone {
        w.put(CTA_ZONE, &zone.to_be_bytes());
    }
    w.end_msg(m);
}

/// Appends a request that creates `flow` as a new entry expiring after `timeout` seconds,
/// with `NLM_F_ACK` (and `NLM_F_EXCL`: an existing entry is an error, never changed). Its
/// status, id and timeout fields are ignored (the kernel assigns them); zone and mark are
/// set when present. The agent never creates entries: tests and benchmarks make synthetic
/// flows with this.
pub fn encode_new(w: &mut Writer, flow: &Flow, timeout: u32, seq: u32) {
    let m = w.begin_msg(
        ct_type(IPCTNL_MSG_CT_NEW),
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        seq,
        af(flow.family),
        0,
    );
    put_tuple(w, CTA_TUPLE_ORIG, flow.protocol, &flow.original);
    put_tuple(w, CTA_TUPLE_REPLY, flow.protocol, &flow.reply);
    w.put_u32(CTA_TIMEOUT, timeout);
    if let Some(zone) = flow.zone {
        w.put(CTA_ZONE, &zone.to_be_bytes());
    }
    if let Some(mark) = flow.mark {
        w.put_u32(CTA_MARK, mark);
    }
    w.end_msg(m);
}

fn put_tuple(w: &mut Writer, ty: u16, protocol: u8, t: &Tuple) {
    let nest = w.begin_nest(ty);
    let ip = w.begin_nest(CTA_TUPLE_IP);
    for (addr, v4_ty, v6_ty) in [
        (t.src, CTA_IP_V4_SRC, CTA_IP_V6_SRC),
        (t.dst, CTA_IP_V4_DST, CTA_IP_V6_DST),
    ] {
        match addr {
            IpAddr::V4(a) => w.put(v4_ty, &a.octets()),
            IpAddr::V6(a) => w.put(v6_ty, &a.octets()),
        }
    }
    w.end_nest(ip);
    let proto = w.begin_nest(CTA_TUPLE_PROTO);
    w.put(CTA_PROTO_NUM, &[protocol]);
    match t.l4 {
        L4::Ports { src, dst } => {
            w.put(CTA_PROTO_SRC_PORT, &src.to_be_bytes());
            w.put(CTA_PROTO_DST_PORT, &dst.to_be_bytes());
        }
        L4::Icmp { id, ty, code } => {
            let (id_ty, type_ty, code_ty) = if protocol == IPPROTO_ICMPV6 {
                (
                    CTA_PROTO_ICMPV6_ID,
                    CTA_PROTO_ICMPV6_TYPE,
                    CTA_PROTO_ICMPV6_CODE,
                )
            } else {
                (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE)
            };
            w.put(id_ty, &id.to_be_bytes());
            w.put(type_ty, &[ty]);
            w.put(code_ty, &[code]);
        }
        L4::None => {}
    }
    w.end_nest(proto);
    w.end_nest(nest);
}

/// The protocol's usual name, for messages.
pub fn protocol_name(protocol: u8) -> Option<&'static str> {
    Some(match protocol {
        IPPROTO_ICMP => "icmp",
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_DCCP => "dccp",
        IPPROTO_ICMPV6 => "icmpv6",
        IPPROTO_SCTP => "sctp",
        IPPROTO_UDPLITE => "udplite",
        _ => return None,
    })
}

/// An address with a port as sockets print it (`[v6]:port`), or the bare address.
fn endpoint(a: IpAddr, port: Option<u16>) -> String {
    match (a, port) {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.l4 {
            L4::Ports { src, dst } => write!(
                f,
                "{} -> {}",
                endpoint(self.src, Some(src)),
                endpoint(self.dst, Some(dst))
            ),
            L4::Icmp { id, ty, code } => write!(
                f,
                "{} -> {} type {ty} code {code} id {id}",
                self.src, self.dst
            ),
            L4::None => write!(f, "{} -> {}", self.src, self.dst),
        }
    }
}

impl fmt::Display for Flow {
    /// `udp 10.244.1.2:40000 -> 11.22.33.44:53, reply 11.22.33.44:53 -> 198.51.100.1:40000
    /// (id 123, zone 1)`: for logs and test failures.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match protocol_name(self.protocol) {
            Some(n) => f.write_str(n)?,
            None => write!(f, "protocol {}", self.protocol)?,
        }
        write!(f, " {}, reply {}", self.original, self.reply)?;
        if let Some(id) = self.id {
            write!(f, " (id {id}")?;
        } else {
            f.write_str(" (no id")?;
        }
        if let Some(z) = self.zone {
            write!(f, ", zone {z}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests;
