//! Interface names as nftables matches them (`oifname`), and their interval encoding. A leaf,
//! like [`crate::addr::prefix`].
//!
//! The kernel compares an interface name as its 16-byte, NUL-padded buffer (IFNAMSIZ). Read
//! as one big-endian 128-bit number, an exact name is a single value and a prefix wildcard
//! (`eth*`, as nft writes it) is every value that starts with the prefix's bytes: the same
//! aligned blocks as address prefixes. So an interval set of names is encoded, merged and
//! decoded with the address machinery of [`crate::addr::prefix`].

use std::fmt;

use crate::addr::prefix::Span;

/// The kernel's limit: IFNAMSIZ (16) bytes including the terminating NUL.
pub const MAX_LEN: usize = 15;

/// An interface name, or a prefix of names with a trailing `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interface {
    /// The name, or the prefix before `*`.
    pub name: String,
    /// Whether every name starting with `name` matches.
    pub wildcard: bool,
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if self.wildcard {
            f.write_str("*")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Interface {
    type Err = String;

    /// Accepts what the kernel accepts as a name (`dev_valid_name`): 1 to 15 bytes, not `.`
    /// or `..`, no `/`, `:` or white space; with a trailing `*` for a prefix (at least one
    /// byte before it).
    fn from_str(s: &str) -> Result<Interface, String> {
        let (name, wildcard) = match s.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (s, false),
        };
        if name.is_empty() {
            return Err(if wildcard {
                "a wildcard needs at least one character before `*` (to match every interface, \
                 leave egressInterfaces out)"
                    .into()
            } else {
                "an interface name cannot be empty".into()
            });
        }
        if name.len() > MAX_LEN {
            return Err(format!(
                "{} bytes: the kernel's interface names have at most {MAX_LEN}",
                name.len()
            ));
        }
        if !wildcard && (name == "." || name == "..") {
            return Err("not a valid interface name".into());
        }
        if let Some(c) = name
            .chars()
            .find(|c| *c == '/' || *c == ':' || *c == '*' || c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "interface names cannot contain {c:?}{}",
                if c == '*' {
                    " (`*` only at the end, as a prefix wildcard)"
                } else {
                    ""
                }
            ));
        }
        Ok(Interface {
            name: name.into(),
            wildcard,
        })
    }
}

/// Width of a name key in bits (IFNAMSIZ bytes).
pub const BITS: u8 = 128;

/// The 16-byte buffer of `bytes`, NUL-padded, as a big-endian number.
fn key(bytes: &[u8]) -> u128 {
    let mut buf = [0u8; 16];
    buf[..bytes.len()].copy_from_slice(bytes);
    u128::from_be_bytes(buf)
}

impl Interface {
    /// The names this matches, as a span of 16-byte keys: one value for a name, every key
    /// starting with the prefix's bytes for a wildcard.
    pub fn span(&self) -> Span {
        let lo = key(self.name.as_bytes());
        if !self.wildcard {
            return Span { lo, hi: lo };
        }
        let free_bits = 8 * (16 - self.name.len() as u32);
        let hi = lo | ((1u128 << free_bits) - 1);
        Span { lo, hi }
    }

    /// The matches of a span read back from the kernel, if it is one a name or a wildcard
    /// makes; `None` for any other range.
    pub fn from_span(span: Span) -> Option<Interface> {
        let bytes = span.lo.to_be_bytes();
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(16);
        let name = std::str::from_utf8(&bytes[..len]).ok()?.to_string();
        if name.is_empty() || name.len() > MAX_LEN {
            return None;
        }
        let exact = Interface {
            name,
            wildcard: false,
        };
        if span.hi == span.lo {
            return Some(exact);
        }
        let wild = Interface {
            wildcard: true,
            ..exact
        };
        (wild.span() == span).then_some(wild)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(s: &str) -> Interface {
        s.parse().unwrap()
    }

    #[test]
    fn names_and_wildcards_parse_like_the_kernel_takes_them() {
        assert_eq!(
            iface("eth0"),
            Interface {
                name: "eth0".into(),
                wildcard: false
            }
        );
        assert!(iface("eth*").wildcard);
        assert!(iface("veth1234567890a").name.len() == 15);
        for bad in [
            "",
            "*",
            "veth1234567890ab",
            "a/b",
            "a:b",
            "a b",
            "e*th",
            "..",
        ] {
            assert!(bad.parse::<Interface>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spans_match_nft_keys_and_come_back() {
        // nft's elements for "eth*": start "eth\0...", end "eti\0..." (one past the span).
        let s = iface("eth*").span();
        assert_eq!(s.lo.to_be_bytes()[..4], *b"eth\0");
        assert_eq!((s.hi + 1).to_be_bytes()[..4], *b"eti\0");
        // An exact name is one key; the end nft sends is the key + 1.
        let w = iface("wlan0").span();
        assert_eq!(w.lo, w.hi);
        assert_eq!((w.hi + 1).to_be_bytes()[15], 1);
        for s in ["eth*", "wlan0", "veth1234567890a", "v*"] {
            assert_eq!(Interface::from_span(iface(s).span()), Some(iface(s)), "{s}");
        }
        // A range no name or wildcard makes is not one.
        let odd = Span {
            lo: iface("a").span().lo,
            hi: iface("b").span().lo,
        };
        assert_eq!(Interface::from_span(odd), None);
    }
}
