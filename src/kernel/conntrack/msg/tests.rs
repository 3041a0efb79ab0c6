//! The ctnetlink codec on bytes: dumps captured from the kernel (`tests/fixtures/`),
//! request encodings byte by byte, and hostile input.

use super::*;
use crate::kernel::netlink::messages;
use crate::kernel::netlink::uapi::NLMSG_DONE;

fn udp4(src: &str, sport: u16, dst: &str, dport: u16, reply_dst: &str) -> Flow {
    Flow {
        family: Family::V4,
        protocol: IPPROTO_UDP,
        original: Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            l4: L4::Ports {
                src: sport,
                dst: dport,
            },
        },
        reply: Tuple {
            src: dst.parse().unwrap(),
            dst: reply_dst.parse().unwrap(),
            l4: L4::Ports {
                src: dport,
                dst: sport,
            },
        },
        status: 0,
        id: None,
        zone: None,
        mark: None,
        timeout: None,
    }
}

fn icmp6() -> Flow {
    Flow {
        family: Family::V6,
        protocol: IPPROTO_ICMPV6,
        original: Tuple {
            src: "fd00:10:244:1::2".parse().unwrap(),
            dst: "2001:db8:5::5".parse().unwrap(),
            l4: L4::Icmp {
                id: 0x1234,
                ty: 128,
                code: 0,
            },
        },
        reply: Tuple {
            src: "2001:db8:5::5".parse().unwrap(),
            dst: "fd00:10:244:1::2".parse().unwrap(),
            l4: L4::Icmp {
                id: 0x1234,
                ty: 129,
                code: 0,
            },
        },
        status: 0,
        id: None,
        zone: Some(3),
        mark: Some(0xabcd),
        timeout: None,
    }
}

/// A conntrack entry message as the kernel frames a dump reply, built with the create
/// encoder (same attributes) plus whatever `extra` appends.
fn entry(flow: &Flow, extra: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::default();
    let m = w.begin_msg(ct_type(IPCTNL_MSG_CT_NEW), 0, 1, af(flow.family), 0);
    put_tuple(&mut w, CTA_TUPLE_ORIG, flow.protocol, &flow.original);
    put_tuple(&mut w, CTA_TUPLE_REPLY, flow.protocol, &flow.reply);
    extra(&mut w);
    w.end_msg(m);
    w.into_bytes()
}

fn decode(bytes: &[u8]) -> Result<Flow, Malformed> {
    let m = messages(bytes).next().expect("one message")?;
    Flow::decode(&m)
}

#[test]
fn entries_round_trip_through_the_create_encoder() {
    let mut f = udp4("10.244.1.2", 40001, "11.22.33.44", 53, "198.51.100.1");
    f.zone = Some(7);
    f.mark = Some(42);
    let mut w = Writer::default();
    encode_new(&mut w, &f, 600, 9);
    let bytes = w.into_bytes();
    let back = decode(&bytes).unwrap();
    assert_eq!(
        back,
        Flow {
            timeout: Some(600),
            ..f
        }
    );
    let f = icmp6();
    let mut w = Writer::default();
    encode_new(&mut w, &f, 30, 9);
    let back = decode(&w.into_bytes()).unwrap();
    assert_eq!(back.original, f.original);
    assert_eq!(back.reply, f.reply);
    assert_eq!((back.zone, back.mark), (Some(3), Some(0xabcd)));
}

#[test]
fn dump_request_bytes() {
    let bytes = dump_request(Some(Family::V6), 0x0a0b0c0d);
    let mut want = Vec::new();
    want.extend_from_slice(&20u32.to_ne_bytes());
    want.extend_from_slice(&0x0101u16.to_ne_bytes()); // CTNETLINK << 8 | CT_GET
    want.extend_from_slice(&0x0301u16.to_ne_bytes()); // REQUEST | DUMP
    want.extend_from_slice(&0x0a0b0c0du32.to_ne_bytes());
    want.extend_from_slice(&0u32.to_ne_bytes());
    want.extend_from_slice(&[10, 0, 0, 0]); // AF_INET6, version 0, res_id 0
    assert_eq!(bytes, want);
    assert_eq!(dump_request(Some(Family::V4), 1)[16], AF_INET);
    assert_eq!(dump_request(None, 1)[16], AF_UNSPEC);
}

#[test]
fn delete_request_bytes_name_reply_tuple_id_and_zone() {
    let mut f = udp4("10.244.1.2", 0x9c41, "11.22.33.44", 53, "198.51.100.1");
    f.id = Some(0xdead_beef);
    f.zone = Some(0x0102);
    f.mark = Some(5); // not part of a delete
    f.status = IPS_SRC_NAT; // nor this
    let mut w = Writer::default();
    encode_delete(&mut w, &f, 77);
    let bytes = w.into_bytes();
    let mut want: Vec<u8> = Vec::new();
    want.extend_from_slice(&88u32.to_ne_bytes());
    want.extend_from_slice(&0x0102u16.to_ne_bytes()); // CTNETLINK << 8 | CT_DELETE
    want.extend_from_slice(&0x0005u16.to_ne_bytes()); // REQUEST | ACK
    want.extend_from_slice(&77u32.to_ne_bytes());
    want.extend_from_slice(&0u32.to_ne_bytes());
    want.extend_from_slice(&[2, 0, 0, 0]); // AF_INET
    let nla = |len: u16, ty: u16| {
        let mut v = len.to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v
    };
    // The reply tuple: 11.22.33.44:53 -> 198.51.100.1:40001 (the translated source).
    want.extend(nla(52, CTA_TUPLE_REPLY | 0x8000));
    want.extend(nla(20, CTA_TUPLE_IP | 0x8000));
    want.extend(nla(8, CTA_IP_V4_SRC));
    want.extend([11, 22, 33, 44]);
    want.extend(nla(8, CTA_IP_V4_DST));
    want.extend([198, 51, 100, 1]);
    want.extend(nla(28, CTA_TUPLE_PROTO | 0x8000));
    want.extend(nla(5, CTA_PROTO_NUM));
    want.extend([17, 0, 0, 0]);
    want.extend(nla(6, CTA_PROTO_SRC_PORT));
    want.extend([0, 53, 0, 0]); // big-endian
    want.extend(nla(6, CTA_PROTO_DST_PORT));
    want.extend([0x9c, 0x41, 0, 0]);
    want.extend(nla(8, CTA_ID));
    want.extend([0xde, 0xad, 0xbe, 0xef]);
    want.extend(nla(6, CTA_ZONE));
    want.extend([1, 2, 0, 0]);
    assert_eq!(bytes, want);
}

#[test]
fn delete_requests_without_id_or_zone_still_carry_the_tuple() {
    // Without a tuple the kernel would flush the whole table: every delete has one.
    for f in [
        udp4("10.0.0.1", 1, "10.0.0.2", 2, "10.0.0.1"),
        icmp6(),
        Flow {
            protocol: 47,
            original: Tuple {
                l4: L4::None,
                ..icmp6().original
            },
            reply: Tuple {
                l4: L4::None,
                ..icmp6().reply
            },
            zone: None,
            ..icmp6()
        },
    ] {
        let mut w = Writer::default();
        encode_delete(&mut w, &f, 1);
        let bytes = w.into_bytes();
        let m = messages(&bytes).next().unwrap().unwrap();
        assert_eq!(m.ty, ct_type(IPCTNL_MSG_CT_DELETE));
        let attrs: Vec<_> = m.attrs().map(Result::unwrap).collect();
        assert_eq!(attrs[0].ty, CTA_TUPLE_REPLY);
        let (proto, t) = tuple(f.family, &attrs[0]).unwrap();
        assert_eq!((proto, t), (f.protocol, f.reply), "{f}");
        assert!(!attrs.iter().any(|a| a.ty == CTA_TUPLE_ORIG));
        assert_eq!(attrs.iter().any(|a| a.ty == CTA_ZONE), f.zone.is_some());
        assert!(!attrs.iter().any(|a| a.ty == CTA_ID));
    }
    // ICMPv6 identifiers go in the ICMPv6 attributes.
    let mut w = Writer::default();
    encode_delete(&mut w, &icmp6(), 1);
    let bytes = w.into_bytes();
    let m = messages(&bytes).next().unwrap().unwrap();
    let reply = m.attrs().next().unwrap().unwrap();
    let proto = reply.nested().nth(1).unwrap().unwrap();
    let types: Vec<u16> = proto.nested().map(|a| a.unwrap().ty).collect();
    assert_eq!(
        types,
        [
            CTA_PROTO_NUM,
            CTA_PROTO_ICMPV6_ID,
            CTA_PROTO_ICMPV6_TYPE,
            CTA_PROTO_ICMPV6_CODE
        ]
    );
}

#[test]
fn unknown_attributes_are_skipped_at_every_level() {
    let f = udp4("10.244.1.2", 40001, "11.22.33.44", 53, "198.51.100.1");
    let mut w = Writer::default();
    let m = w.begin_msg(ct_type(IPCTNL_MSG_CT_NEW), 0, 1, AF_INET, 0);
    w.put(99, b"future"); // unknown top-level attribute
    let orig = w.begin_nest(CTA_TUPLE_ORIG);
    w.put(3, &[0, 7]); // CTA_TUPLE_ZONE: not used
    let ip = w.begin_nest(CTA_TUPLE_IP);
    w.put(CTA_IP_V4_SRC, &[10, 244, 1, 2]);
    w.put(CTA_IP_V6_SRC, &[0; 16]); // the other family's address: ignored
    w.put(CTA_IP_V4_DST, &[11, 22, 33, 44]);
    w.put(42, &[1, 2, 3]);
    w.end_nest(ip);
    let p = w.begin_nest(CTA_TUPLE_PROTO);
    w.put(CTA_PROTO_NUM, &[17]);
    w.put(CTA_PROTO_SRC_PORT, &40001u16.to_be_bytes());
    w.put(CTA_PROTO_DST_PORT, &53u16.to_be_bytes());
    w.put(31, &[9; 9]);
    w.end_nest(p);
    w.end_nest(orig);
    put_tuple(&mut w, CTA_TUPLE_REPLY, 17, &f.reply);
    w.put_u32(CTA_STATUS, IPS_SRC_NAT | IPS_CONFIRMED);
    w.put_u32(CTA_ID, 7);
    w.put(CTA_ZONE, &9u16.to_be_bytes());
    w.end_msg(m);
    let got = decode(&w.into_bytes()).unwrap();
    assert_eq!(got.original, f.original);
    assert_eq!(got.reply, f.reply);
    assert_eq!((got.id, got.zone), (Some(7), Some(9)));
    assert!(got.is_src_nat() && !got.is_dst_nat());
    assert_eq!(
        got.translated_source(),
        Some("198.51.100.1".parse().unwrap())
    );
    assert_eq!(
        got.to_string(),
        "udp 10.244.1.2:40001 -> 11.22.33.44:53, reply 11.22.33.44:53 -> 198.51.100.1:40001 (id 7, zone 9)"
    );
}

#[test]
fn hostile_entries_are_errors_never_panics() {
    let f = udp4("10.244.1.2", 40001, "11.22.33.44", 53, "198.51.100.1");
    let good = entry(&f, |_| {});
    assert!(decode(&good).is_ok());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not an entry", {
            let mut b = good.clone();
            b[4..6].copy_from_slice(&ct_type(IPCTNL_MSG_CT_DELETE).to_ne_bytes());
            b
        }),
        ("no nfgenmsg", {
            let mut b = good[..18].to_vec();
            b[..4].copy_from_slice(&18u32.to_ne_bytes());
            b
        }),
        ("family 7", {
            let mut b = good.clone();
            b[16] = 7;
            b
        }),
        ("IPv4 message, IPv6 tuples", {
            let mut b = good.clone();
            b[16] = AF_INET6;
            b
        }),
        ("short address", {
            let mut w = Writer::default();
            let m = w.begin_msg(ct_type(IPCTNL_MSG_CT_NEW), 0, 1, AF_INET, 0);
            let o = w.begin_nest(CTA_TUPLE_ORIG);
            let ip = w.begin_nest(CTA_TUPLE_IP);
            w.put(CTA_IP_V4_SRC, &[1, 2, 3]);
            w.put(CTA_IP_V4_DST, &[1, 2, 3, 5]);
            w.end_nest(ip);
            w.end_nest(o);
            put_tuple(&mut w, CTA_TUPLE_REPLY, 17, &f.reply);
            w.end_msg(m);
            w.into_bytes()
        }),
        ("ID of 2 bytes", entry(&f, |w| w.put(CTA_ID, &[0, 1]))),
        ("zone of 4 bytes", entry(&f, |w| w.put_u32(CTA_ZONE, 1))),
        ("status of 1 byte", entry(&f, |w| w.put(CTA_STATUS, &[1]))),
        ("no tuples", {
            let mut w = Writer::default();
            let m = w.begin_msg(ct_type(IPCTNL_MSG_CT_NEW), 0, 1, AF_INET, 0);
            w.put_u32(CTA_ID, 1);
            w.end_msg(m);
            w.into_bytes()
        }),
        ("only one port", {
            let mut one = f;
            one.original.l4 = L4::None;
            let mut w = Writer::default();
            let m = w.begin_msg(ct_type(IPCTNL_MSG_CT_NEW), 0, 1, AF_INET, 0);
            let o = w.begin_nest(CTA_TUPLE_ORIG);
            let ip = w.begin_nest(CTA_TUPLE_IP);
            w.put(CTA_IP_V4_SRC, &[1, 2, 3, 4]);
            w.put(CTA_IP_V4_DST, &[1, 2, 3, 5]);
            w.end_nest(ip);
            let p = w.begin_nest(CTA_TUPLE_PROTO);
            w.put(CTA_PROTO_NUM, &[17]);
            w.put(CTA_PROTO_SRC_PORT, &[0, 1]);
            w.end_nest(p);
            w.end_nest(o);
            put_tuple(&mut w, CTA_TUPLE_REPLY, 17, &one.reply);
            w.end_msg(m);
            w.into_bytes()
        }),
        ("protocols differ", {
            let mut w = Writer::default();
            let m = w.begin_msg(ct_type(IPCTNL_MSG_CT_NEW), 0, 1, AF_INET, 0);
            put_tuple(&mut w, CTA_TUPLE_ORIG, 17, &f.original);
            put_tuple(&mut w, CTA_TUPLE_REPLY, 6, &f.reply);
            w.end_msg(m);
            w.into_bytes()
        }),
        ("partial ICMP", {
            let mut w = Writer::default();
            let m = w.begin_msg(ct_type(IPCTNL_MSG_CT_NEW), 0, 1, AF_INET, 0);
            for ty in [CTA_TUPLE_ORIG, CTA_TUPLE_REPLY] {
                let o = w.begin_nest(ty);
                let ip = w.begin_nest(CTA_TUPLE_IP);
                w.put(CTA_IP_V4_SRC, &[1, 2, 3, 4]);
                w.put(CTA_IP_V4_DST, &[1, 2, 3, 5]);
                w.end_nest(ip);
                let p = w.begin_nest(CTA_TUPLE_PROTO);
                w.put(CTA_PROTO_NUM, &[IPPROTO_ICMP]);
                w.put(CTA_PROTO_ICMP_TYPE, &[8]);
                w.end_nest(p);
                w.end_nest(o);
            }
            w.end_msg(m);
            w.into_bytes()
        }),
    ];
    for (what, bytes) in &cases {
        assert!(decode(bytes).is_err(), "{what} decoded");
    }
}

#[test]
fn every_truncation_and_bit_flip_of_an_entry_is_handled() {
    let mut f = icmp6();
    f.id = Some(1);
    let mut base = entry(&f, |w| w.put_u32(CTA_ID, 1));
    base.extend(entry(
        &udp4("10.0.0.1", 1, "10.0.0.2", 2, "10.0.0.1"),
        |_| {},
    ));
    for cut in 0..base.len() {
        for m in messages(&base[..cut]).map_while(Result::ok) {
            let _ = Flow::decode(&m);
        }
    }
    for i in 0..base.len() {
        for bit in 0..8 {
            let mut b = base.clone();
            b[i] ^= 1 << bit;
            for m in messages(&b).map_while(Result::ok) {
                if let Ok(flow) = Flow::decode(&m) {
                    // Whatever decodes re-encodes without panicking.
                    let mut w = Writer::default();
                    encode_delete(&mut w, &flow, 1);
                    let _ = flow.to_string();
                }
            }
        }
    }
}

/// The entries of a captured dump, decoded; panics on anything that does not decode.
fn fixture(bytes: &[u8]) -> Vec<Flow> {
    messages(bytes)
        .map(|m| m.expect("framing"))
        .filter(|m| m.ty != NLMSG_DONE)
        .map(|m| Flow::decode(&m).expect("entry"))
        .collect()
}

fn find(flows: &[Flow], pred: impl Fn(&Flow) -> bool) -> &Flow {
    let hits: Vec<&Flow> = flows.iter().filter(|f| pred(f)).collect();
    assert_eq!(hits.len(), 1, "{flows:#?}");
    hits[0]
}

const V4: &[u8] = include_bytes!("../../../../tests/fixtures/conntrack-v4.bin");
const V6: &[u8] = include_bytes!("../../../../tests/fixtures/conntrack-v6.bin");

/// Captured from kernel 6.18 by `capture_fixtures` in tests/conntrack.rs: datagrams through
/// the agent's table with accounting and timestamps on (counters, use count, timestamp,
/// protocol info and synproxy attributes that the decoder skips), and an entry created in
/// zone 7 with a mark.
#[test]
fn real_ipv4_dump_decodes() {
    let flows = fixture(V4);
    assert_eq!(flows.len(), 4, "{flows:#?}");
    assert!(
        flows
            .iter()
            .all(|f| f.family == Family::V4 && f.id.is_some())
    );

    // Masqueraded UDP: the reply goes to the node's address and a fully-random port.
    let udp = find(&flows, |f| {
        f.original.dst == addr("11.22.33.44") && f.protocol == 17
    });
    assert_eq!(udp.original.src, addr("10.244.1.2"));
    assert_eq!(
        udp.original.l4,
        L4::Ports {
            src: 41001,
            dst: 5001
        }
    );
    assert_eq!(udp.reply.src, addr("11.22.33.44"));
    assert_eq!(udp.translated_source(), Some(addr("198.51.100.1")));
    assert!(matches!(udp.reply.l4, L4::Ports { src: 5001, .. }));
    assert!(udp.status & IPS_CONFIRMED != 0 && udp.is_src_nat() && !udp.is_dst_nat());
    assert_eq!((udp.zone, udp.mark), (None, Some(0)));
    assert!(udp.timeout.is_some_and(|t| t <= 30));

    // Not masqueraded (inside 10/8): the reply goes back to the pod.
    let plain = find(&flows, |f| f.original.dst == addr("10.20.0.5"));
    assert!(!plain.is_src_nat());
    assert_eq!(plain.reply.dst, addr("10.244.1.2"));
    assert_eq!(
        plain.reply.l4,
        L4::Ports {
            src: 5003,
            dst: 41003
        }
    );

    // A masqueraded ping: ICMP identifiers, the echo id translated too.
    let ping = find(&flows, |f| f.protocol == IPPROTO_ICMP);
    assert!(matches!(ping.original.l4, L4::Icmp { ty: 8, code: 0, .. }));
    assert!(matches!(ping.reply.l4, L4::Icmp { ty: 0, code: 0, .. }));
    assert_eq!(ping.translated_source(), Some(addr("198.51.100.1")));

    // Created in zone 7 with a mark.
    let zoned = find(&flows, |f| f.protocol == IPPROTO_TCP);
    assert_eq!((zoned.zone, zoned.mark), (Some(7), Some(42)));
    assert_eq!(
        zoned.original.l4,
        L4::Ports {
            src: 43002,
            dst: 443
        }
    );
}

#[test]
fn real_ipv6_dump_decodes() {
    let flows = fixture(V6);
    assert_eq!(flows.len(), 2, "{flows:#?}");
    assert!(flows.iter().all(|f| f.family == Family::V6));
    let udp = find(&flows, |f| f.protocol == IPPROTO_UDP);
    assert_eq!(udp.original.src, addr("fd00:10:244:1::2"));
    assert_eq!(udp.original.dst, addr("2001:db8:5::5"));
    assert_eq!(
        udp.reply.l4,
        L4::Ports {
            src: 5004,
            dst: 41004
        }
    );
    let ping = find(&flows, |f| f.protocol == IPPROTO_ICMPV6);
    assert!(matches!(
        ping.original.l4,
        L4::Icmp {
            ty: 128,
            code: 0,
            ..
        }
    ));
    assert!(matches!(
        ping.reply.l4,
        L4::Icmp {
            ty: 129,
            code: 0,
            ..
        }
    ));
    assert_eq!(
        udp.to_string(),
        format!(
            "udp [fd00:10:244:1::2]:41004 -> [2001:db8:5::5]:5004, reply [2001:db8:5::5]:5004 -> [fd00:10:244:1::2]:41004 (id {})",
            udp.id.unwrap()
        )
    );
}

#[test]
fn real_entries_survive_every_truncation_and_bit_flip() {
    for bytes in [V4, V6] {
        for cut in 0..bytes.len() {
            for m in messages(&bytes[..cut]).map_while(Result::ok) {
                let _ = Flow::decode(&m);
            }
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.to_vec();
                b[i] ^= 1 << bit;
                for m in messages(&b).map_while(Result::ok) {
                    let _ = Flow::decode(&m);
                }
            }
        }
    }
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}
