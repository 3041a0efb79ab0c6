//! Kernel bytes -> the decoders: `decode::table_from_dump`, each per-message decoder,
//! `events::classify`, `ack::parse`, `offsets::describe`, `interval_prefixes` and the
//! interface-name intervals.
//!
//! Never panics, whatever the kernel (or anyone able to write to our socket) sends. Beyond
//! that: interval elements always decode to sorted, disjoint prefixes; a decoded table
//! renders and equals itself by `same_policy`; and a decoded table the agent could have
//! written (unique names, no unknown statements, nothing foreign) comes back unchanged from
//! encode -> decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nft_masq_agent::kernel::netlink::{ack, messages};
use nft_masq_agent::kernel::nft::{decode, events, offsets};
use nft_masq_agent::model::{Family, Interface, TABLE_NAME};
use nma_fuzz::{assert_canonical_sets, assert_raise_consistent, assert_round_trip, representable};

fuzz_target!(|data: &[u8]| {
    let mut names = vec![TABLE_NAME.to_string()];
    for m in messages(data).take(64) {
        let Ok(m) = m else { break };
        let _ = events::classify(&m);
        let _ = ack::parse(&m);
        if let Some(t) = decode::table_of(&m) {
            if let Ok(t) = std::str::from_utf8(t) {
                if names.len() < 3 && !names.iter().any(|n| n == t) {
                    names.push(t.to_string());
                }
            }
        }
        let _ = decode::table(&m);
        let _ = decode::set(&m);
        let _ = decode::chain(&m);
        let _ = decode::generation(&m);
        if let Ok(r) = decode::rule(&m) {
            for e in &r.exprs {
                let _ = e.describe();
            }
            assert_raise_consistent(&r.exprs);
        }
        if let Ok(e) = decode::elements(&m) {
            // Interface-name intervals: a span a name or wildcard makes gives it back.
            for span in decode::interval_spans(&e.elements, 16, u128::MAX) {
                if let Some(i) = Interface::from_span(span) {
                    assert_eq!(i.span(), span, "{i}");
                }
            }
            for family in [Family::V4, Family::V6] {
                let p = decode::interval_prefixes(&e.elements, family);
                assert!(p.len() <= 2 * family.bits() as usize * (e.elements.len() + 1));
                let set = nft_masq_agent::model::Set {
                    name: e.set.clone(),
                    family,
                    prefixes: p,
                };
                assert_canonical_sets(&nft_masq_agent::model::Table {
                    name: String::new(),
                    flags: Default::default(),
                    sets: vec![set],
                    name_sets: Vec::new(),
                    maps: Vec::new(),
                    dispatch: Vec::new(),
                    chains: Vec::new(),
                    foreign: Vec::new(),
                });
            }
        }
    }
    // The kernel's error offset is walked through the message we sent.
    for off in (0..data.len().min(512)).step_by(4) {
        let _ = offsets::describe(data, off);
    }
    let _ = offsets::describe(data, usize::MAX);

    for name in &names {
        let Ok(Some(t)) = decode::table_from_dump(data, name) else {
            continue;
        };
        assert!(t.same_policy(&t));
        assert_canonical_sets(&t);
        let _ = t.to_string();
        let _ = t.masquerade_counters();
        if representable(&t) {
            assert_round_trip(&t, 7);
        }
    }
});
