//! Config bytes -> `config::parse`, under flag combinations chosen by the first byte.
//!
//! Never panics, and every accepted config keeps its promises: no IPv6 without
//! `--enable-ipv6`, host bits clear, `snatTo` ranges ordered within one family and free of
//! addresses no packet may leave with,
//! `resyncInterval` at least the minimum; the desired table builds, holds at most `--max-prefixes` prefixes in canonical
//! form, exempts every non-masquerade address that no `masqueradeCIDRs` entry covers and none
//! that one does, holds exactly the `sourceCIDRs` as sources, renders, and survives encode -> decode unchanged. A refusal lists between 1
//! and `MAX_PROBLEMS` (+1 summary line) problems. Hangs are libFuzzer's `-timeout`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nft_masq_agent::config::{
    self, Config, MAX_PROBLEMS, MIN_RESYNC_INTERVAL, PolicyFlags, values,
};
use nft_masq_agent::model::{self, Family, TableFlags};
use nma_fuzz::{assert_canonical_sets, assert_exempts, assert_round_trip, policy_flags};

fuzz_target!(|data: &[u8]| {
    let Some((&b, text)) = data.split_first() else {
        return;
    };
    let flags = policy_flags(b);
    let path = Path::new("/etc/config/ip-masq-agent");
    match config::parse(text, path, &flags) {
        Ok(loaded) => {
            for n in &loaded.notes {
                assert!(!n.is_empty());
            }
            check(&loaded.config, &flags, TableFlags(u32::from(b >> 6)));
        }
        Err(e) => {
            let n = e.problems().len();
            assert!((1..=MAX_PROBLEMS + 1).contains(&n), "{n} problems");
            assert!(e.to_string().contains("/etc/config/ip-masq-agent"));
        }
    }
});

fn check(c: &Config, flags: &PolicyFlags, table_flags: TableFlags) {
    assert!(c.resync_interval >= MIN_RESYNC_INTERVAL);
    for n in values(&c.non_masquerade_cidrs)
        .chain(values(&c.masquerade_cidrs))
        .chain(values(&c.source_cidrs))
    {
        assert_eq!(n.trunc(), *n, "{n} has host bits");
        assert!(
            flags.enable_ipv6 || Family::of(n) == Family::V4,
            "{n} without --enable-ipv6"
        );
    }
    for t in values(&c.snat_to) {
        assert_eq!(
            Family::of_addr(&t.first),
            Family::of_addr(&t.last),
            "snatTo {t}"
        );
        assert!(t.first <= t.last, "snatTo {t}");
        assert!(
            config::snat::unusable_blocks(t.first, t.last).is_empty(),
            "snatTo {t} holds an address no packet may leave with"
        );
    }

    // snatRules: one address per family, never a range nor an unusable one; every prefix's
    // family has one; the map is the longest-prefix answer for each source.
    for r in values(&c.snat_rules) {
        for t in &r.snat_to {
            assert_eq!(t.first, t.last, "snatRules range {t}");
            assert!(config::snat::unusable_blocks(t.first, t.last).is_empty(), "{t}");
        }
        for n in &r.source_cidrs {
            assert_eq!(n.trunc(), *n, "{n} has host bits");
            assert!(r.target(Family::of(n)).is_some(), "{n} without an address");
        }
    }

    let table = model::desired(c, flags, table_flags);
    for m in &table.maps {
        assert!(m.entries.windows(2).all(|w| w[0].span.hi < w[1].span.lo), "{} overlaps", m.name);
        for e in &m.entries {
            let src = match m.family {
                Family::V4 => std::net::IpAddr::from(std::net::Ipv4Addr::from(e.span.lo as u32)),
                Family::V6 => std::net::IpAddr::from(std::net::Ipv6Addr::from(e.span.lo)),
            };
            let want = c.snat_rule_for(src).map(|(_, to, _)| to);
            assert_eq!(want, Some(e.to), "{} at {src}", m.name);
        }
    }
    assert!(
        table.prefix_count() <= flags.max_prefixes,
        "{} prefixes, cap {}",
        table.prefix_count(),
        flags.max_prefixes
    );
    assert_canonical_sets(&table);
    assert_exempts(c, &table);
    let text = table.to_string();
    assert!(text.contains("table inet nft-masq-agent"));
    if table.prefix_count() <= 20_000 {
        assert_round_trip(&table, 1);
    }
}
