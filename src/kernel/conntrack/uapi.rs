//! Constants from the kernel UAPI headers `linux/netfilter/nfnetlink.h`,
//! `linux/netfilter/nfnetlink_conntrack.h` and `linux/netfilter/nf_conntrack_common.h`: the
//! part of ctnetlink the agent speaks. The framing (`nlmsghdr`, `nfgenmsg`, flags) is in
//! [`crate::kernel::netlink::uapi`].
//!
//! Byte order, from the header comments and the kernel's policies: every integer attribute
//! of ctnetlink is big-endian (`NLA_BE16`/`NLA_BE32`: ports, ICMP ids, zone, status, id,
//! mark, timeout); `CTA_PROTO_NUM` and the ICMP type and code are single bytes; addresses
//! are the raw network-order bytes.
#![allow(missing_docs)] // The names are the kernel's; the headers document them.

// linux/netfilter/nfnetlink.h
pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;

// linux/socket.h: the nfgenmsg family of a request selects the table's layer 3 protocol.
pub const AF_UNSPEC: u8 = 0;
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

// enum cntl_msg_types
pub const IPCTNL_MSG_CT_NEW: u16 = 0;
pub const IPCTNL_MSG_CT_GET: u16 = 1;
pub const IPCTNL_MSG_CT_DELETE: u16 = 2;

// enum ctattr_type
pub const CTA_TUPLE_ORIG: u16 = 1;
pub const CTA_TUPLE_REPLY: u16 = 2;
pub const CTA_STATUS: u16 = 3;
pub const CTA_TIMEOUT: u16 = 7;
pub const CTA_MARK: u16 = 8;
pub const CTA_ID: u16 = 12;
pub const CTA_ZONE: u16 = 18;

// enum ctattr_tuple
pub const CTA_TUPLE_IP: u16 = 1;
pub const CTA_TUPLE_PROTO: u16 = 2;

// enum ctattr_ip
pub const CTA_IP_V4_SRC: u16 = 1;
pub const CTA_IP_V4_DST: u16 = 2;
pub const CTA_IP_V6_SRC: u16 = 3;
pub const CTA_IP_V6_DST: u16 = 4;

// enum ctattr_l4proto
pub const CTA_PROTO_NUM: u16 = 1;
pub const CTA_PROTO_SRC_PORT: u16 = 2;
pub const CTA_PROTO_DST_PORT: u16 = 3;
pub const CTA_PROTO_ICMP_ID: u16 = 4;
pub const CTA_PROTO_ICMP_TYPE: u16 = 5;
pub const CTA_PROTO_ICMP_CODE: u16 = 6;
pub const CTA_PROTO_ICMPV6_ID: u16 = 7;
pub const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
pub const CTA_PROTO_ICMPV6_CODE: u16 = 9;

// enum ip_conntrack_status
pub const IPS_SEEN_REPLY: u32 = 1 << 1;
pub const IPS_ASSURED: u32 = 1 << 2;
pub const IPS_CONFIRMED: u32 = 1 << 3;
pub const IPS_SRC_NAT: u32 = 1 << 4;
pub const IPS_DST_NAT: u32 = 1 << 5;
pub const IPS_SRC_NAT_DONE: u32 = 1 << 7;
pub const IPS_DST_NAT_DONE: u32 = 1 << 8;

// IANA protocol numbers (netinet/in.h): the layer 4 protocols reconciliation knows.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_DCCP: u8 = 33;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;
pub const IPPROTO_UDPLITE: u8 = 136;
