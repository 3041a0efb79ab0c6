//! The netlink layer against the running kernel, in a throwaway namespace: rejected batches,
//! reading large tables back, and how our own commits look on the notification group.
//! Needs root.

use std::time::Duration;

use nft_masq_agent::config::{Config, PolicyFlags};
use nft_masq_agent::kernel::nft::events::{Event, EventSocket};
use nft_masq_agent::kernel::nft::{self, NftError, NftSocket, ReplaceForm};
use nft_masq_agent::model::{self, TableFlags};
use nma_testkit::{Netns, root_or_skip};

fn ns(tag: &str) -> Netns {
    Netns::new(format!("nma-{}-kernel-{tag}", std::process::id()))
}

fn defaults() -> model::Table {
    let f = PolicyFlags::default();
    model::desired(&Config::defaults(&f), &f, TableFlags::default())
}

#[test]
fn a_rejected_batch_names_message_and_attribute_and_changes_nothing() {
    root_or_skip!();
    ns("reject").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        let good = defaults();
        nft::replace_table(&mut sock, &good).unwrap();
        // Overlapping intervals: the kernel refuses them (the model never produces this).
        let mut bad = good.clone();
        bad.sets[0].prefixes.push("10.1.0.0/16".parse().unwrap());
        bad.sets[0].prefixes.sort();
        let err = nft::replace_table(&mut sock, &bad).unwrap_err();
        let text = err.to_string();
        match &err {
            NftError::Rejected {
                what, attr, errno, ..
            } => {
                assert!(what.starts_with("NEWSETELEM nonmasq-v4"), "{text}");
                assert!(
                    attr.as_deref()
                        .is_some_and(|a| a.starts_with("NFTA_SET_ELEM_LIST_ELEMENTS")),
                    "{text}"
                );
                assert!([libc::EEXIST, libc::ENOTEMPTY].contains(errno), "{text}");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(text.contains("rolled back"), "{text}");
        // The transaction was rolled back: the live table is the good one.
        let live = sock.read_table(&good.name).unwrap().unwrap();
        assert!(live.same_policy(&good));
    });
}

#[test]
fn large_tables_read_back_exactly() {
    root_or_skip!();
    ns("large").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        let f = PolicyFlags {
            enable_ipv6: true,
            ..PolicyFlags::default()
        };
        let mut c = Config::defaults(&f);
        let nets: Vec<ipnet::IpNet> = (0..20_000u32)
            .map(|i| {
                format!("11.{}.{}.0/24", i / 128, (i % 128) * 2)
                    .parse()
                    .unwrap()
            })
            .chain((0..5_000u32).map(|i| format!("fd00:{:x}::/32", i * 2).parse().unwrap()))
            .chain(["240.0.0.0/4".parse().unwrap(), "ff00::/8".parse().unwrap()])
            .collect();
        c.non_masquerade_cidrs = nft_masq_agent::config::entries(nets);
        let t = model::desired(&c, &f, TableFlags::default());
        let report = nft::replace_table(&mut sock, &t).unwrap();
        assert!(report.messages > 10, "{report:?}");
        let live = sock.read_table(&t.name).unwrap().unwrap();
        assert_eq!(live.sets, t.sets);
        assert!(live.same_policy(&t), "read back:\n{live}\nwanted:\n{t}");
        // Plus the two link-local ranges; nothing here is adjacent, so nothing merged.
        assert_eq!(live.prefix_count(), 20_000 + 5_000 + 2 + 2);
    });
}

#[test]
fn own_commits_carry_our_port_id_and_leaving_the_group_silences_them() {
    root_or_skip!();
    ns("events").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        let mut events = EventSocket::open().unwrap();
        nft::replace_table(&mut sock, &defaults()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let seen = events.drain().unwrap();
        let gens: Vec<u32> = seen
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Generation { port_id, .. } => Some(*port_id),
                _ => None,
            })
            .collect();
        // Two transactions (the sets, then the rules that use them), both ours.
        assert_eq!(gens, [sock.port_id(); 2]);
        assert!(seen.events.iter().any(|e| matches!(
            e,
            Event::Object { table, port_id, .. } if table == "nft-masq-agent" && *port_id == sock.port_id()
        )));
        // Out of the group, a commit produces nothing for us, and the generation moves by one.
        events.subscribe(false).unwrap();
        let g0 = sock.generation().unwrap();
        let mut changed = defaults();
        changed.sets[0].prefixes.push("203.0.113.0/24".parse().unwrap());
        changed.sets[0].prefixes.sort();
        nft::replace_table(&mut sock, &changed).unwrap();
        assert_eq!(sock.generation().unwrap(), g0.wrapping_add(1));
        events.subscribe(true).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(events.drain().unwrap().events.is_empty());
    });
}

#[test]
fn delete_of_a_missing_table_is_not_an_error() {
    root_or_skip!();
    ns("delete").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        assert!(!nft::delete_table(&mut sock, "nft-masq-agent").unwrap());
        nft::replace_table(&mut sock, &defaults()).unwrap();
        assert!(nft::delete_table(&mut sock, "nft-masq-agent").unwrap());
        assert!(sock.read_table("nft-masq-agent").unwrap().is_none());
    });
}

/// `nft` in the current (test) namespace, as the tamperer; panics if it fails.
fn nft_cmd(args: &str) {
    let out = std::process::Command::new("nft")
        .args(args.split_whitespace())
        .output()
        .expect("run nft");
    assert!(
        out.status.success(),
        "nft {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The in-place form (sets and chains flushed and refilled, so a set never stops matching
/// during the transaction) is used whenever the live table has exactly our sets and chains,
/// and leaves exactly the desired table; anything else there (a planted chain) means the
/// whole-table replace, which removes it.
#[test]
fn our_own_table_is_updated_in_place_and_anything_planted_means_a_replace() {
    root_or_skip!();
    ns("inplace").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        // One set per family: the forms, not the blocks (those are the next test's).
        let f = PolicyFlags {
            enable_ipv6: true,
            max_set_prefixes: 1_000_000,
            ..PolicyFlags::default()
        };
        let table = |n: u32| spaced_table(&f, n);
        let (a, b) = (table(5_000), table(3_000));
        let report = nft::replace_table(&mut sock, &a).unwrap();
        // No table yet: its sets, then its rules.
        assert_eq!((report.form, report.transactions), (ReplaceForm::Create, 2));
        // Right after our own commit only the difference is sent.
        let report = nft::replace_table(&mut sock, &b).unwrap();
        assert_eq!(report.form, ReplaceForm::Delta);
        let live = sock.read_table(&b.name).unwrap().unwrap();
        assert_eq!(live.sets, b.sets);
        assert!(live.same_policy(&b), "read back:\n{live}\nwanted:\n{b}");

        // Someone else committed (an element and a rule added): the table is read once and
        // only the difference to it sent (the element deleted, the chain refilled).
        nft_cmd("add element inet nft-masq-agent nonmasq-v4 { 203.0.113.0/24 }");
        nft_cmd("insert rule inet nft-masq-agent postrouting counter accept");
        let report = nft::replace_table(&mut sock, &b).unwrap();
        assert_eq!(report.form, ReplaceForm::Delta);
        let live = sock.read_table(&b.name).unwrap().unwrap();
        assert_eq!(live, b, "read back:\n{live}\nwanted:\n{b}");

        // Someone else's change larger than the table (both sets flushed, an element and a
        // rule added): the in-place form, which flushes them too.
        nft_cmd("flush set inet nft-masq-agent nonmasq-v4");
        nft_cmd("flush set inet nft-masq-agent nonmasq-v6");
        nft_cmd("add element inet nft-masq-agent nonmasq-v4 { 203.0.113.0/24 }");
        nft_cmd("insert rule inet nft-masq-agent postrouting counter accept");
        let report = nft::replace_table(&mut sock, &a).unwrap();
        assert_eq!(report.form, ReplaceForm::InPlace);
        let live = sock.read_table(&a.name).unwrap().unwrap();
        assert_eq!(live.sets, a.sets);
        assert!(live.same_policy(&a), "read back:\n{live}\nwanted:\n{a}");

        // A planted chain would survive a flush: the table is recreated (through the
        // handover table, which is gone after) and it is gone.
        nft_cmd("add chain inet nft-masq-agent planted");
        let report = nft::replace_table(&mut sock, &b).unwrap();
        assert_eq!(
            (report.form, report.transactions),
            (ReplaceForm::Handover, 5)
        );
        let live = sock.read_table(&b.name).unwrap().unwrap();
        assert!(!live.chains.iter().any(|c| c.name == "planted"), "{live}");
        assert!(live.same_policy(&b));
        let handover = "nft-masq-agent-handover";
        assert!(sock.table_info(handover).unwrap().is_none());
        // And so would a set.
        nft_cmd("add set inet nft-masq-agent planted { type ipv4_addr; }");
        let report = nft::replace_table(&mut sock, &a).unwrap();
        assert_eq!(report.form, ReplaceForm::Handover);
        assert_eq!(sock.read_table(&a.name).unwrap().unwrap().sets, a.sets);
        assert!(sock.table_info(handover).unwrap().is_none());
    });
}

/// The desired table for `n` exemptions, /24s 512 addresses apart from 11.0.0.0.
fn spaced_table(f: &PolicyFlags, n: u32) -> model::Table {
    let mut c = Config::defaults(f);
    let nets = nma_testkit::configs::spaced_24s(std::net::Ipv4Addr::new(11, 0, 0, 0), n as usize);
    c.non_masquerade_cidrs = nft_masq_agent::config::entries(nets);
    model::desired(&c, f, TableFlags::default())
}

/// Past `--max-set-prefixes` a change that moves the blocks (a block halved or joined, the
/// family cut or back into one set) is a reshape: the new sets and chains added, the
/// dispatch switched, the old ones removed, in three transactions; the table then reads
/// back as wanted, whatever the order the kernel lists its sets and chains in.
#[test]
fn a_change_of_blocks_is_a_reshape_and_reads_back_as_wanted() {
    root_or_skip!();
    ns("reshape").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        let f = PolicyFlags {
            enable_ipv6: true,
            ..PolicyFlags::default()
        };
        let table = |n: u32| spaced_table(&f, n);
        let names = |t: &model::Table| t.sets.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        let (a, b, c) = (table(3_000), table(5_000), table(500));
        assert!(a.dispatch.len() == 1 && b.dispatch.len() == 1 && c.dispatch.is_empty());
        assert_ne!(names(&a), names(&b));
        let report = nft::replace_table(&mut sock, &a).unwrap();
        assert_eq!(report.form, ReplaceForm::Create);
        for (to, what) in [
            (&b, "blocks moved"),
            (&c, "back to one set"),
            (&a, "cut again"),
        ] {
            let generation = sock.generation().unwrap();
            let report = nft::replace_table(&mut sock, to).unwrap();
            assert_eq!(report.form, ReplaceForm::Reshape, "{what}");
            assert!(report.transactions <= 4, "{what}: {report:?}");
            // One generation per transaction, and nothing else.
            let after = sock.generation().unwrap();
            assert_eq!(
                after,
                generation.wrapping_add(report.transactions),
                "{what}"
            );
            let live = sock.read_table(&to.name).unwrap().unwrap();
            assert!(live.same_policy(to), "{what}: read back another policy");
            assert!(live.foreign.is_empty(), "{what}: {:?}", live.foreign);
        }
        // The elements sent are those of the blocks that came, not the whole table.
        let report = nft::replace_table(&mut sock, &b).unwrap();
        assert_eq!(report.form, ReplaceForm::Reshape);
        assert!(
            report.sent < nft_masq_agent::kernel::nft::encode::element_count(&b),
            "{report:?}"
        );
        // A process that does not know the table (a new socket) and finds something added
        // to a block: the table, map and chains are ours, so it reads the table and sends
        // the difference (that element deleted).
        let block = &b.sets[0].name;
        nft_cmd(&format!(
            "add element inet nft-masq-agent {block} {{ 11.255.0.1 }}"
        ));
        let mut fresh = NftSocket::open().unwrap();
        let report = nft::replace_table(&mut fresh, &b).unwrap();
        assert_eq!(
            (report.form, report.sent),
            (ReplaceForm::Delta, 2),
            "{report:?}"
        );
        let live = fresh.read_table(&b.name).unwrap().unwrap();
        assert!(live.same_policy(&b), "the difference left another policy");
    });
}

/// The difference form: after the agent's own commit, with nobody committing since, only
/// what changed is sent, and the live table is exactly the desired one after each of 40
/// random changes (adjacent intervals, the top of the range, everything and nothing);
/// someone else's commit in between means reading the table and sending the difference to
/// it.
#[test]
fn only_the_difference_is_sent_after_our_own_commit_and_the_result_is_exact() {
    root_or_skip!();
    ns("delta").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        let f = PolicyFlags {
            enable_ipv6: true,
            ..PolicyFlags::default()
        };
        let pool: Vec<ipnet::IpNet> = (0..400u32)
            .map(|i| {
                let len = 8 + (i % 4) * 8;
                let a = (i.wrapping_mul(0x0290_0000)) & (u32::MAX << (32 - len));
                format!("{}/{len}", std::net::Ipv4Addr::from(a))
                    .parse()
                    .unwrap()
            })
            .chain(
                (0..100u32).map(|i| format!("fd{:02x}:{:x}::/32", i % 7, i * 3).parse().unwrap()),
            )
            .chain(["0.0.0.0/0", "240.0.0.0/4", "::/0", "ff00::/8"].map(|s| s.parse().unwrap()))
            .collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut chosen: Vec<bool> = pool.iter().map(|_| random() % 4 == 0).collect();
        let table_of = |chosen: &[bool]| {
            let mut c = Config::defaults(&f);
            let nets: Vec<ipnet::IpNet> = pool
                .iter()
                .zip(chosen)
                .filter(|(_, on)| **on)
                .map(|(n, _)| *n)
                .collect();
            c.non_masquerade_cidrs = nft_masq_agent::config::entries(nets);
            model::desired(&c, &f, TableFlags::default())
        };
        nft::replace_table(&mut sock, &table_of(&chosen)).unwrap();
        // Config changes: 1 to 8 entries of the pool switched on or off each time.
        for round in 0..40 {
            for _ in 0..1 + round % 8 {
                let k = (random() % chosen.len() as u64) as usize;
                chosen[k] = !chosen[k];
            }
            let t = table_of(&chosen);
            let report = nft::replace_table(&mut sock, &t).unwrap();
            assert_eq!(report.form, ReplaceForm::Delta, "round {round}");
            let live = sock.read_table(&t.name).unwrap().unwrap();
            assert_eq!(live.sets, t.sets, "round {round}");
            assert!(live.same_policy(&t), "round {round}");
        }
        // Everything switched: a difference larger than the table goes in place instead.
        for on in chosen.iter_mut() {
            *on = !*on;
        }
        let t = table_of(&chosen);
        let report = nft::replace_table(&mut sock, &t).unwrap();
        assert_eq!(report.form, ReplaceForm::InPlace);
        assert_eq!(sock.read_table(&t.name).unwrap().unwrap().sets, t.sets);
        let table = || table_of(&chosen);
        // One prefix less: a batch of two messages.
        let mut more = table();
        nft::replace_table(&mut sock, &more).unwrap();
        more.sets[0].prefixes.pop();
        let report = nft::replace_table(&mut sock, &more).unwrap();
        assert_eq!(report.form, ReplaceForm::Delta);
        assert!(report.messages <= 2, "{report:?}");
        // The same table again: nothing to send, nothing sent.
        let g = sock.generation().unwrap();
        let report = nft::replace_table(&mut sock, &more).unwrap();
        assert_eq!((report.form, report.messages), (ReplaceForm::Delta, 0));
        assert_eq!(sock.generation().unwrap(), g);
        // Someone else's commit (an element added): the table is read, and the element
        // deleted (an interval next to it may be sent again).
        nft_cmd("add element inet nft-masq-agent nonmasq-v6 { fd77::/16 }");
        let t = table();
        let report = nft::replace_table(&mut sock, &t).unwrap();
        assert_eq!(report.form, ReplaceForm::Delta, "{report:?}");
        assert!(report.sent <= 4, "{report:?}");
        let live = sock.read_table(&t.name).unwrap().unwrap();
        assert_eq!(live.sets, t.sets);
    });
}

/// A difference is valid only at the generation it was computed for: a commit by someone
/// else in between (here simulated by computing it for the generation before) makes the
/// kernel refuse the whole batch, so the difference can never leave their change in place.
#[test]
fn a_difference_for_an_older_generation_is_refused_and_changes_nothing() {
    root_or_skip!();
    ns("genid").enter(|| {
        let mut sock = NftSocket::open().unwrap();
        let old = defaults();
        nft::replace_table(&mut sock, &old).unwrap();
        let mut new = old.clone();
        new.sets[0].prefixes.push("203.0.113.0/24".parse().unwrap());
        new.sets[0].prefixes.sort();
        let g = sock.generation().unwrap();
        let stale = nft::encode::delta(&old, &new, sock.next_seq(), g.wrapping_sub(1)).unwrap();
        let err = sock.send_batch(&stale).unwrap_err();
        assert!(matches!(err, NftError::Rejected { .. }), "{err:?}");
        assert_eq!(sock.generation().unwrap(), g, "nothing committed");
        assert_eq!(sock.read_table(&old.name).unwrap().unwrap().sets, old.sets);
        // At the right generation it applies.
        let fresh = nft::encode::delta(&old, &new, sock.next_seq(), g).unwrap();
        sock.send_batch(&fresh).unwrap();
        assert_eq!(sock.read_table(&new.name).unwrap().unwrap().sets, new.sets);
    });
}
