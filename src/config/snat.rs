//! `snatTo` entries: an address or an inclusive range `A-B`, of one family, holding only
//! addresses a packet may leave the node with as its source. Pure.
//!
//! The refusals are one function, [`check_snat_target`], so that every key naming SNAT
//! addresses refuses the same ones (issue 17, finding 7). A SNAT to a loopback, link-local,
//! multicast, unspecified or broadcast address, or to an IPv4-mapped IPv6 address, makes
//! packets that routers drop or answer to the wrong host; the kernel accepts such a rule
//! without a word, so the config is where it is refused.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::SnatTarget;
use crate::addr::prefix::{Span, addr_to_u128};

/// A kind of address no translated packet may carry as its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// `0.0.0.0`, `::`: "no address".
    Unspecified,
    /// `127.0.0.0/8`, `::1`: never leaves the host.
    Loopback,
    /// `169.254.0.0/16`, `fe80::/10`: valid on one link only, never routed.
    LinkLocal,
    /// `224.0.0.0/4`, `ff00::/8`: a group, never a sender.
    Multicast,
    /// `255.255.255.255`: the limited broadcast address.
    Broadcast,
    /// `::ffff:0:0/96`: an IPv4 address written as IPv6, which no IPv6 packet carries on the
    /// wire.
    Ipv4Mapped,
}

impl Unusable {
    /// The kind's name, as an adjective before "address".
    pub fn name(self) -> &'static str {
        match self {
            Unusable::Unspecified => "unspecified",
            Unusable::Loopback => "loopback",
            Unusable::LinkLocal => "link-local",
            Unusable::Multicast => "multicast",
            Unusable::Broadcast => "broadcast",
            Unusable::Ipv4Mapped => "IPv4-mapped IPv6",
        }
    }
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The blocks of each kind, in address order within each family.
const BLOCKS: [(Unusable, &str); 10] = [
    (Unusable::Unspecified, "0.0.0.0/32"),
    (Unusable::Loopback, "127.0.0.0/8"),
    (Unusable::LinkLocal, "169.254.0.0/16"),
    (Unusable::Multicast, "224.0.0.0/4"),
    (Unusable::Broadcast, "255.255.255.255/32"),
    (Unusable::Unspecified, "::/128"),
    (Unusable::Loopback, "::1/128"),
    (Unusable::Ipv4Mapped, "::ffff:0:0/96"),
    (Unusable::LinkLocal, "fe80::/10"),
    (Unusable::Multicast, "ff00::/8"),
];

/// The unusable blocks that the inclusive range `first..=last` (one family) overlaps, in
/// address order: empty when every address of it may be a source.
pub fn unusable_blocks(first: IpAddr, last: IpAddr) -> Vec<(Unusable, IpNet)> {
    let range = Span {
        lo: addr_to_u128(first),
        hi: addr_to_u128(last),
    };
    BLOCKS
        .iter()
        .map(|(kind, block)| {
            // Only called on the constant list above, which the tests parse.
            let net: IpNet = block
                .parse()
                .unwrap_or_else(|_| panic!("bad built-in block {block}"));
            (*kind, net)
        })
        .filter(|(_, net)| net.addr().is_ipv4() == first.is_ipv4())
        .filter(|(_, net)| {
            let b = Span::of(net);
            b.lo <= range.hi && range.lo <= b.hi
        })
        .collect()
}

/// Refuses a SNAT target that is, or whose range contains, an address a packet may not
/// leave with as its source; the message names the kind of address and its block.
pub fn check_snat_target(target: &SnatTarget) -> Result<(), String> {
    let found = unusable_blocks(target.first, target.last);
    let Some(&(kind, block)) = found.first() else {
        return Ok(());
    };
    if target.first == target.last {
        let ip = target.first;
        let hint = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .filter(|_| kind == Unusable::Ipv4Mapped)
                .map(|v4| format!(" (for IPv4, write {v4})"))
                .unwrap_or_default(),
            IpAddr::V4(_) => String::new(),
        };
        let article = if matches!(kind, Unusable::Ipv4Mapped) {
            "an"
        } else {
            "a"
        };
        return Err(match kind {
            Unusable::Unspecified | Unusable::Broadcast => format!(
                "{ip} is the {kind} address: no packet may leave the node with it as its source"
            ),
            _ => format!(
                "{ip} is {article} {kind} address ({block}): no packet may leave the node with \
                 it as its source{hint}"
            ),
        });
    }
    let kinds: Vec<String> = found
        .iter()
        .map(|(kind, block)| format!("{kind} ({block})"))
        .collect();
    let listed = match kinds.as_slice() {
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
        [] => unreachable!("found is not empty"),
    };
    Err(format!(
        "the range contains {listed} addresses: no packet may leave the node with them as \
         its source; choose a range of addresses of this node"
    ))
}

/// Parses a `snatTo` entry: `A` or `A-B`, one family, A <= B, and only addresses a packet
/// may carry as its source ([`check_snat_target`]).
pub fn parse_snat_target(s: &str) -> Result<SnatTarget, String> {
    let addr = |a: &str| -> Result<IpAddr, String> {
        let a = a.trim();
        a.parse()
            .map_err(|_| format!("{a:?} is not an IP address (write an address or A-B)"))
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (addr(a)?, addr(b)?),
        None => {
            let a = addr(s)?;
            (a, a)
        }
    };
    if first.is_ipv4() != last.is_ipv4() {
        return Err("a range must be within one family (IPv4 or IPv6)".into());
    }
    if first > last {
        return Err(format!("the range is empty: {first} comes after {last}"));
    }
    let target = SnatTarget { first, last };
    check_snat_target(&target)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(s: &str) -> String {
        parse_snat_target(s).expect_err(s)
    }

    #[test]
    fn the_built_in_blocks_parse() {
        for (_, block) in BLOCKS {
            let net: IpNet = block.parse().unwrap();
            assert_eq!(net.trunc(), net, "{block}");
        }
    }

    #[test]
    fn every_kind_of_unusable_address_is_refused_by_name() {
        let cases = [
            (
                "127.0.0.1",
                "127.0.0.1 is a loopback address (127.0.0.0/8): no packet may leave the node \
                 with it as its source",
            ),
            (
                "::1",
                "::1 is a loopback address (::1/128): no packet may leave the node with it as \
                 its source",
            ),
            (
                "fe80::1",
                "fe80::1 is a link-local address (fe80::/10): no packet may leave the node with \
                 it as its source",
            ),
            (
                "169.254.1.1",
                "169.254.1.1 is a link-local address (169.254.0.0/16): no packet may leave the \
                 node with it as its source",
            ),
            (
                "::ffff:192.0.2.10",
                "::ffff:192.0.2.10 is an IPv4-mapped IPv6 address (::ffff:0.0.0.0/96): no \
                 packet may leave the node with it as its source (for IPv4, write 192.0.2.10)",
            ),
            (
                "224.0.0.1",
                "224.0.0.1 is a multicast address (224.0.0.0/4): no packet may leave the node \
                 with it as its source",
            ),
            (
                "ff02::1",
                "ff02::1 is a multicast address (ff00::/8): no packet may leave the node with it \
                 as its source",
            ),
            (
                "0.0.0.0",
                "0.0.0.0 is the unspecified address: no packet may leave the node with it as \
                 its source",
            ),
            (
                "::",
                ":: is the unspecified address: no packet may leave the node with it as its \
                 source",
            ),
            (
                "255.255.255.255",
                "255.255.255.255 is the broadcast address: no packet may leave the node with it \
                 as its source",
            ),
        ];
        for (input, message) in cases {
            assert_eq!(refusal(input), message, "{input}");
        }
    }

    #[test]
    fn a_range_containing_any_unusable_address_is_refused_naming_each_kind() {
        assert_eq!(
            refusal("0.0.0.1-255.255.255.254"),
            "the range contains loopback (127.0.0.0/8), link-local (169.254.0.0/16) and \
             multicast (224.0.0.0/4) addresses: no packet may leave the node with them as its \
             source; choose a range of addresses of this node"
        );
        assert_eq!(
            refusal("0.0.0.0-0.0.0.9"),
            "the range contains unspecified (0.0.0.0/32) addresses: no packet may leave the \
             node with them as its source; choose a range of addresses of this node"
        );
        // Touching a block by one address at either end is enough.
        assert!(refusal("126.255.255.250-127.0.0.0").contains("loopback (127.0.0.0/8)"));
        assert!(refusal("169.253.255.255-169.254.0.0").contains("link-local"));
        assert!(refusal("223.255.255.255-224.0.0.0").contains("multicast"));
        assert!(refusal("240.0.0.1-255.255.255.255").contains("broadcast"));
        assert!(refusal("::-::5").contains("unspecified (::/128) and loopback (::1/128)"));
        assert!(refusal("::fffe:ffff:ffff-::ffff:0:0").contains("IPv4-mapped IPv6"));
        assert!(refusal("fe7f::-fe80::").contains("link-local (fe80::/10)"));
        // Just beside each block: accepted.
        for ok in [
            "126.0.0.0-126.255.255.255",
            "128.0.0.0-169.253.255.255",
            "169.255.0.0-223.255.255.255",
            "240.0.0.1-255.255.255.254",
            "::2-::fffe:ffff:ffff",
            "::1:0:0:0-fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fec0::-feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "198.51.100.10-198.51.100.20",
            "2001:db8::1",
        ] {
            assert!(
                parse_snat_target(ok).is_ok(),
                "{ok}: {:?}",
                parse_snat_target(ok)
            );
        }
    }

    #[test]
    fn shape_errors_come_before_the_refusals() {
        assert_eq!(
            refusal("127.0.0.1-::1"),
            "a range must be within one family (IPv4 or IPv6)"
        );
        assert_eq!(
            refusal("127.0.0.9-127.0.0.1"),
            "the range is empty: 127.0.0.9 comes after 127.0.0.1"
        );
        assert_eq!(
            refusal("nope-127.0.0.1"),
            "\"nope\" is not an IP address (write an address or A-B)"
        );
    }
}
