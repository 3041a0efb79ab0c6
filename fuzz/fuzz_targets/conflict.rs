//! Foreign NAT tables -> `conflict::analyze`, `analyze_until` and `analyze_all`: random
//! tables of random rules (matches, jumps and gotos to any chain or none, verdicts, verdict
//! maps, sets, translations, x_tables matches) built by `nma_fuzz::foreign::build`.
//!
//! Never panics or hangs, and the work is linear: the analysis asks its `stop` callback at
//! its first unit of work and then once per 256 (a rule evaluated, a chain visited), so the
//! number of calls bounds the work, which must stay within 3 per rule plus 2 per (base
//! chain, chain) pair whatever the jumps (a walk per way would take 4^depth). Beyond that: the answer is the
//! same twice; every finding names a rule of its table once per chain, says yes, cannot
//! tell or conditional (with between 1 and 8 reasons for the last two); `analyze_all` adds
//! only "no" findings after it; a stop that says stop is obeyed.
#![no_main]

use std::cell::Cell;
use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use nft_masq_agent::analysis::conflict::{self, Answer};

fuzz_target!(|data: &[u8]| {
    let (probe, tables) = nma_fuzz::foreign::build(data);
    let calls = Cell::new(0u64);
    let found = conflict::analyze_until(&tables, &probe, &|| {
        calls.set(calls.get() + 1);
        false
    })
    .expect("never asked to stop");
    let bound: u64 = tables
        .iter()
        .map(|t| {
            let rules = t.rules.len() as u64;
            let chains = (t.chains.len() + t.rules.len()) as u64;
            let bases = t.chains.len() as u64;
            3 * rules + 2 * bases * chains
        })
        .sum();
    // `stop` is asked at the first unit of work and then once per 256: n calls mean more
    // than (n - 1) * 256 units.
    let at_least = calls.get().saturating_sub(1) * 256;
    assert!(
        at_least < bound.max(1),
        "more than {at_least} units of work for a bound of {bound}"
    );
    assert_eq!(conflict::analyze(&tables, &probe), found);
    let mut seen = HashSet::new();
    for f in &found {
        let t = tables
            .iter()
            .find(|t| t.name == f.table)
            .expect("a finding names a table");
        assert!(t.rules.iter().any(|r| r.handle == f.handle), "{f:?}");
        assert!(
            seen.insert((f.family, f.table.clone(), f.chain.clone(), f.handle)),
            "twice: {f:?}"
        );
        match &f.answer {
            Answer::Yes => {}
            Answer::CannotTell(w) | Answer::Conditional(w) => {
                assert!(!w.is_empty() && w.len() <= 8, "{f:?}");
            }
            Answer::No => panic!("analyze says no: {f:?}"),
        }
    }
    let all = conflict::analyze_all(&tables, &probe);
    assert_eq!(&all[..found.len()], &found[..]);
    assert!(all[found.len()..].iter().all(|f| f.answer == Answer::No));
    if calls.get() > 0 {
        assert!(conflict::analyze_until(&tables, &probe, &|| true).is_none());
    }
});
