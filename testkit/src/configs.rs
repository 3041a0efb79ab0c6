//! Config generators: many prefixes that never merge, holes carved into a range, and the
//! config file text around them.

use std::fmt::Display;
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

/// `n` /32s two addresses apart from `first`: never adjacent, so nothing merges and each is
/// one prefix (one interval) of the table.
pub fn spaced_hosts(first: Ipv4Addr, n: usize) -> Vec<IpNet> {
    let base = u32::from(first);
    (0..n as u32).map(|i| v4(base + 2 * i, 32)).collect()
}

/// The config file of the large-table tests and benchmarks: `n` [`spaced_hosts`] from
/// 30.0.0.0, then `extra`, as `nonMasqueradeCIDRs`.
pub fn hosts_config(n: usize, extra: &[&str]) -> String {
    let mut list: Vec<String> = spaced_hosts(Ipv4Addr::new(30, 0, 0, 0), n)
        .iter()
        .map(ToString::to_string)
        .collect();
    list.extend(extra.iter().map(ToString::to_string));
    ConfigText::new().non_masquerade(&list).render()
}

/// `n` /24s 512 addresses apart from `first` (a /24 left out between two): nothing merges.
pub fn spaced_24s(first: Ipv4Addr, n: usize) -> Vec<IpNet> {
    let base = u32::from(first);
    (0..n as u32).map(|i| v4(base + i * 512, 24)).collect()
}

/// A /32 at `offset` in each of the first `blocks` /24s of 10.0.0.0/8.
pub fn holes_in_10(blocks: u32, offset: u8) -> Vec<IpNet> {
    (0..blocks)
        .map(|b| {
            v4(
                u32::from(Ipv4Addr::new(10, (b >> 8) as u8, b as u8, offset)),
                32,
            )
        })
        .collect()
}

/// Prefixes needed to cover `[lo, hi)` exactly (greedy, largest aligned block first): an
/// independent count to hold the agent's own against.
pub fn prefixes_in(mut lo: u64, hi: u64) -> usize {
    let mut n = 0;
    while lo < hi {
        let mut size = if lo == 0 {
            1u64 << 32
        } else {
            lo & lo.wrapping_neg()
        };
        while lo + size > hi {
            size /= 2;
        }
        lo += size;
        n += 1;
    }
    n
}

/// The prefixes of 10.0.0.0/8 minus [`holes_in_10`], plus the link-local /16 the defaults
/// add to the non-masquerade set.
pub fn prefixes_with_holes(blocks: u32, offset: u8) -> usize {
    let start = u64::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)));
    let end = start + (1 << 24);
    let mut at = start;
    let mut n = 0;
    for b in 0..u64::from(blocks) {
        let hole = start + b * 256 + u64::from(offset);
        n += prefixes_in(at, hole);
        at = hole + 1;
    }
    n + prefixes_in(at, end) + 1
}

fn v4(addr: u32, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), len).expect("valid prefix length"))
}

/// An ip-masq-agent config file, built key by key. `cidrLimit` is set to admit the longest
/// list (at least ip-masq-agent's default, 64).
#[derive(Debug, Clone, Default)]
pub struct ConfigText {
    nonmasq: Option<Vec<String>>,
    masq: Option<Vec<String>>,
    resync: Option<String>,
}

impl ConfigText {
    /// A config that sets nothing.
    pub fn new() -> ConfigText {
        ConfigText::default()
    }

    /// `nonMasqueradeCIDRs`.
    pub fn non_masquerade<T: Display>(mut self, list: &[T]) -> ConfigText {
        self.nonmasq = Some(list.iter().map(ToString::to_string).collect());
        self
    }

    /// `masqueradeCIDRs`.
    pub fn masquerade<T: Display>(mut self, list: &[T]) -> ConfigText {
        self.masq = Some(list.iter().map(ToString::to_string).collect());
        self
    }

    /// `resyncInterval` (`1s`).
    pub fn resync(mut self, interval: &str) -> ConfigText {
        self.resync = Some(interval.to_string());
        self
    }

    /// The YAML text: block lists, one entry a line.
    pub fn render(&self) -> String {
        let longest = [&self.nonmasq, &self.masq]
            .iter()
            .filter_map(|l| l.as_ref().map(Vec::len))
            .max()
            .unwrap_or(0);
        let mut s = format!("cidrLimit: {}\n", longest.max(64));
        if let Some(r) = &self.resync {
            s.push_str(&format!("resyncInterval: {r}\n"));
        }
        for (key, list) in [
            ("nonMasqueradeCIDRs", &self.nonmasq),
            ("masqueradeCIDRs", &self.masq),
        ] {
            let Some(list) = list else { continue };
            if list.is_empty() {
                s.push_str(&format!("{key}: []\n"));
                continue;
            }
            s.reserve(list.len() * 20);
            s.push_str(&format!("{key}:\n"));
            for p in list {
                s.push_str("  - ");
                s.push_str(p);
                s.push('\n');
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_prefixes_never_touch() {
        let hosts = spaced_hosts(Ipv4Addr::new(30, 0, 0, 0), 3);
        assert_eq!(
            hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["30.0.0.0/32", "30.0.0.2/32", "30.0.0.4/32"]
        );
        let nets = spaced_24s(Ipv4Addr::new(11, 0, 0, 0), 2);
        assert_eq!(nets[1].to_string(), "11.0.2.0/24");
        let holes = holes_in_10(300, 5);
        assert_eq!(holes[0].to_string(), "10.0.0.5/32");
        assert_eq!(holes[299].to_string(), "10.1.43.5/32");
    }

    #[test]
    fn prefix_counts_cover_ranges_exactly() {
        assert_eq!(prefixes_in(0, 1 << 32), 1);
        assert_eq!(prefixes_in(1, 4), 2); // 1/32, 2/31
        // 10/8 without 10.0.0.5: 10.0.0.0/30 and .4/32 below it; .6/31, .8/29, .16/28, .32/27,
        // .64/26, .128/25 and a block of each length from /24 to /9 above it; link-local.
        assert_eq!(prefixes_with_holes(1, 5), 2 + 22 + 1);
    }

    #[test]
    fn config_text_sets_the_keys_given() {
        let text = ConfigText::new()
            .non_masquerade(&["10.0.0.0/8"])
            .masquerade::<&str>(&[])
            .resync("1s")
            .render();
        assert_eq!(
            text,
            "cidrLimit: 64\nresyncInterval: 1s\nnonMasqueradeCIDRs:\n  - 10.0.0.0/8\n\
             masqueradeCIDRs: []\n"
        );
        let big = ConfigText::new()
            .non_masquerade(&spaced_hosts(Ipv4Addr::new(30, 0, 0, 0), 100))
            .render();
        assert!(big.starts_with("cidrLimit: 100\n"), "{big}");
        assert_eq!(big.lines().count(), 102);
    }
}
