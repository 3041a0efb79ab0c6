//! `--take-over-iptables-chain` against ip-masq-agent's real rules, loaded with
//! `iptables-nft-restore` (and `iptables-legacy-restore`) into the node namespace: the old
//! chain and its jumps go, every other rule stays byte for byte, packets follow our policy;
//! a chain with someone else's rule is refused and nothing is removed; a chain in
//! iptables-legacy gets the commands to run, and they work. iptables is only the fixture and
//! the observer: the agent never runs it. Needs root and the iptables package; also runs in
//! the QEMU guests of `vm-tests/`.

use std::time::Duration;

use nma_testkit::listing::{handle_of, iptables_save_stable};
use nma_testkit::{Topology, installed, root_or_skip, run, slack};

/// ip-masq-agent's comments, as its source writes them.
const RETURN_COMMENT: &str = "ip-masq-agent: local traffic is not subject to MASQUERADE";
const MASQ_COMMENT: &str =
    "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)";

/// The rules ip-masq-agent writes with its defaults (and `--enable-ipv6` for ip6), in
/// `iptables-save` form: its jump from POSTROUTING, added by `iptables -A` with the quotes
/// inside the comment argument, and its chain; for IPv4 `masq_tail` are the rules before
/// the final MASQUERADE (`--to-ports`).
fn ip_masq_agent_rules(chain: &str, exempt: &[&str], masq_tail: &[&str]) -> String {
    let mut s = format!(
        "-A POSTROUTING -m comment --comment \"\\\"ip-masq-agent: ensure nat POSTROUTING \
         directs all non-LOCAL destination traffic to our custom {chain} chain\\\"\" -m \
         addrtype ! --dst-type LOCAL -j {chain}\n"
    );
    for d in exempt {
        s += &format!("-A {chain} -d {d} -m comment --comment \"{RETURN_COMMENT}\" -j RETURN\n");
    }
    for r in masq_tail {
        s += &format!("-A {chain} -m comment --comment \"{MASQ_COMMENT}\" {r}\n");
    }
    s += &format!(
        "-A {chain} -m comment --comment \"{MASQ_COMMENT}\" -j MASQUERADE --random-fully\n"
    );
    s
}

/// kube-proxy's and kubelet's nat rules (a Service's DNAT, the mark-based masquerade):
/// they must come through untouched.
const KUBE_CHAINS: &str = "\
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
";
const KUBE_RULES: &str = "\
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully
-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m comment --comment \"kube-system/kube-dns:dns cluster IP\" -m udp --dport 53 -j DNAT --to-destination 10.244.1.5:53
";

/// A whole `nat` table for `*-restore`: the built-in chains, `chains` declared, `rules`.
fn nat_table(chains: &str, rules: &str) -> String {
    format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n{chains}{rules}COMMIT\n"
    )
}

/// The IPv4 node: ip-masq-agent's defaults in `chain` (10/8, 172.16/12, 192.168/16 and
/// link-local exempt, the rest masqueraded) next to kube-proxy's rules.
fn node_rules(chain: &str, masq_tail: &[&str]) -> String {
    let exempt = [
        "169.254.0.0/16",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
    ];
    nat_table(
        &format!("{KUBE_CHAINS}:{chain} - [0:0]\n"),
        &format!(
            "{KUBE_RULES}{}",
            ip_masq_agent_rules(chain, &exempt, masq_tail)
        ),
    )
}

/// The IPv6 node: ip-masq-agent `--enable-ipv6` (link-local exempt, the rest masqueraded)
/// and one unrelated rule.
fn node_rules6(chain: &str) -> String {
    nat_table(
        &format!(":{chain} - [0:0]\n"),
        &format!(
            "-A POSTROUTING -s fd00:dead::/64 -j MASQUERADE\n{}",
            ip_masq_agent_rules(chain, &["fe80::/10"], &[])
        ),
    )
}

/// Feeds `rules` to `program` (an `*-restore`) in the node namespace.
fn restore(t: &Topology, program: &str, rules: &str) {
    t.node.restore(program, &[], rules);
}

/// The iptables nat tables as nft lists them (with handles, without counters) and as
/// `iptables-nft-save` does (without its timestamped comments and chain counters).
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    nft4: String,
    nft6: String,
    save4: String,
    save6: String,
}

fn save(t: &Topology, program: &str) -> String {
    let out = run(t.node.cmd(program).args(["-t", "nat"])).stdout;
    iptables_save_stable(&String::from_utf8_lossy(&out))
}

fn state(t: &Topology) -> State {
    // Empty when the family has no nat table.
    let list = |family: &str| {
        let out = t
            .node
            .cmd("nft")
            .args(["--stateless", "--handle", "list", "table", family, "nat"])
            .output()
            .expect("nft");
        // Blank lines only separate chains: left out, so that a chain removed at the end
        // leaves no trace of where it was.
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    State {
        nft4: list("ip"),
        nft6: list("ip6"),
        save4: save(t, "iptables-nft-save"),
        save6: save(t, "ip6tables-nft-save"),
    }
}

/// An nft listing without chain `chain`'s block and without the rules that jump to it.
fn nft_without(listing: &str, chain: &str) -> String {
    let mut out = String::new();
    let mut lines = listing.lines();
    while let Some(l) = lines.next() {
        if l.starts_with(&format!("\tchain {chain} {{")) {
            for inner in lines.by_ref() {
                if inner == "\t}" {
                    break;
                }
            }
            continue;
        }
        if l.contains(&format!(" jump {chain} #")) || l.contains(&format!(" goto {chain} #")) {
            continue;
        }
        out += l;
        out += "\n";
    }
    out
}

/// An `iptables-save` listing without chain `chain` and the jumps to it.
fn save_without(save: &str, chain: &str) -> String {
    save.lines()
        .filter(|l| {
            !l.starts_with(&format!(":{chain} "))
                && !l.starts_with(&format!("-A {chain} "))
                && !l.ends_with(&format!(" -j {chain}"))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

impl State {
    /// What must be left once `chain` is taken over: everything else, unchanged.
    fn without(&self, chain: &str) -> State {
        State {
            nft4: nft_without(&self.nft4, chain),
            nft6: nft_without(&self.nft6, chain),
            save4: save_without(&self.save4, chain),
            save6: save_without(&self.save6, chain),
        }
    }
}

/// The handles of the rules in an nft listing that jump to `chain`.
fn jump_handles(listing: &str, chain: &str) -> Vec<u64> {
    listing
        .lines()
        .filter(|l| l.contains(&format!(" jump {chain} #")))
        .filter_map(|l| l.rsplit_once("# handle ")?.1.trim().parse().ok())
        .collect()
}

const T: Duration = Duration::from_secs(5);

#[test]
fn the_old_chain_goes_and_our_policy_decides() {
    root_or_skip!();
    let t = Topology::new("takeover");
    restore(
        &t,
        "iptables-nft-restore",
        &node_rules("IP-MASQ-AGENT", &[]),
    );
    restore(&t, "ip6tables-nft-restore", &node_rules6("IP-MASQ-AGENT"));
    let before = state(&t);
    let jumps4 = jump_handles(&before.nft4, "IP-MASQ-AGENT");
    let jumps6 = jump_handles(&before.nft6, "IP-MASQ-AGENT");
    assert_eq!((jumps4.len(), jumps6.len()), (1, 1), "{before:?}");
    // ip-masq-agent's policy alone: 10/8 exempt, 100.64/10 and fd00::/8 masqueraded.
    t.expect(&["100.64.0.5", "11.22.33.44", "fd00:11::5"], &["10.11.0.5"]);

    // Ours masquerades 10/8 and exempts 100.64/10 and fd00::/8: the reverse.
    let cfg = t.config(
        "c",
        "nonMasqueradeCIDRs: [100.64.0.0/10, 172.16.0.0/12, 192.168.0.0/16, fd00::/8]\n",
    );
    let args = [
        "--take-over-iptables-chain",
        "--enable-ipv6",
        "--metrics-address",
        "off",
    ];
    let agent = t.start(&cfg, &args);
    assert!(
        agent.wait_log(
            "took over iptables chain IP-MASQ-AGENT: removed",
            T * slack()
        ),
        "{}",
        agent.log()
    );
    // One line per family, the IPv6 one a moment after the IPv4 one (an emulated guest
    // read the log between the two).
    assert!(
        agent.wait_log("from table ip6 nat", T * slack()),
        "{}",
        agent.log()
    );
    let log = agent.log();
    let lines = agent.lines();
    let committed = lines.iter().position(|l| l.commit().is_some()).unwrap();
    let took = lines
        .iter()
        .position(|l| l.message.contains("took over iptables chain"))
        .unwrap();
    assert!(
        committed < took,
        "taken over before our table was in force:\n{log}"
    );
    for (family, rules, handle) in [("ip", 5, jumps4[0]), ("ip6", 2, jumps6[0])] {
        let line = format!(
            "removed chain IP-MASQ-AGENT ({rules} rules) from table {family} nat and the jumps \
             to it: POSTROUTING handle {handle}: -m comment --comment"
        );
        assert!(log.contains(&line), "no {line:?} in:\n{log}");
    }
    assert!(!log.contains("not ip-masq-agent's own jump"), "{log}");

    // Our policy decides now, both ways and in both families.
    t.expect(&["10.11.0.5", "11.22.33.44"], &["100.64.0.5", "fd00:11::5"]);
    // Nothing else changed: every other chain and rule, handles included.
    assert_eq!(state(&t), before.without("IP-MASQ-AGENT"));

    // A restart finds nothing to take over and changes nothing.
    drop(agent);
    let after = state(&t);
    let again = t.start(&cfg, &args);
    assert!(
        again.wait_log("nothing to take over", T * slack()),
        "{}",
        again.log()
    );
    assert_eq!(state(&t), after);
    t.expect(&["10.11.0.5"], &["100.64.0.5", "fd00:11::5"]);
}

#[test]
fn masq_chain_names_the_chain_and_once_takes_it_over() {
    root_or_skip!();
    let t = Topology::new("takeover-masq-chain");
    // The Kubernetes addon's ip-masq-agent: --masq-chain=IP-MASQ, here with --to-ports
    // (per protocol, the first range drawn by the statistic match).
    let to_ports = [
        "-j MASQUERADE --random-fully -p tcp -m statistic --mode random --probability 0.5 \
         --to-ports 1024-29999",
        "-j MASQUERADE --random-fully -p tcp --to-ports 32768-65535",
        "-j MASQUERADE --random-fully -p udp --to-ports 32768-65535",
        "-j MASQUERADE --random-fully -p sctp --to-ports 32768-65535",
    ];
    restore(
        &t,
        "iptables-nft-restore",
        &node_rules("IP-MASQ", &to_ports),
    );
    let before = state(&t);
    let jump = jump_handles(&before.nft4, "IP-MASQ");
    assert_eq!(jump.len(), 1, "{}", before.nft4);
    t.expect(&["100.64.0.5"], &["10.11.0.5"]);

    let cfg = t.config("c", "nonMasqueradeCIDRs: [100.64.0.0/10]\n");
    let args = ["--masq-chain=IP-MASQ", "--take-over-iptables-chain"];
    let out = t.apply(&cfg, &args);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = format!(
        "removed chain IP-MASQ (9 rules) from table ip nat and the jumps to it: POSTROUTING \
         handle {}",
        jump[0]
    );
    assert!(log.contains(&line), "no {line:?} in:\n{log}");
    assert_eq!(state(&t), before.without("IP-MASQ"));
    t.expect(&["10.11.0.5", "11.22.33.44"], &["100.64.0.5"]);

    // Idempotent.
    let out = t.apply(&cfg, &args);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(log.contains("nothing to take over"), "{log}");
    assert_eq!(state(&t), before.without("IP-MASQ"));
}

#[test]
fn a_chain_with_someone_elses_rule_is_refused_and_nothing_removed() {
    root_or_skip!();
    let t = Topology::new("takeover-refused");
    // Someone added an exemption of their own to ip-masq-agent's chain.
    let hand = "-A IP-MASQ-AGENT -d 203.0.113.0/24 -m comment --comment \"vpn\" -j RETURN\n";
    let rules = node_rules("IP-MASQ-AGENT", &[]).replace("COMMIT\n", &format!("{hand}COMMIT\n"));
    restore(&t, "iptables-nft-restore", &rules);
    let before = state(&t);
    let handle = handle_of(&before.nft4, "ip daddr 203.0.113.0/24")
        .unwrap_or_else(|| panic!("no rule for 203.0.113.0/24 in:\n{}", before.nft4));

    let cfg = t.config("c", "nonMasqueradeCIDRs: [100.64.0.0/10]\n");
    let agent = t.start(
        &cfg,
        &["--take-over-iptables-chain", "--metrics-address", "off"],
    );
    assert!(
        agent.wait_log("not taking over iptables chain IP-MASQ-AGENT", T * slack()),
        "{}",
        agent.log()
    );
    let log = agent.log();
    let named =
        format!("ip nat handle {handle}: -d 203.0.113.0/24 -m comment --comment \"vpn\" -j RETURN");
    assert!(log.contains(&named), "no {named:?} in:\n{log}");
    assert!(!log.contains("removed chain"), "{log}");
    // Not one rule removed: the old chain still decides first where it masquerades,
    // although our config exempts 100.64.0.0/10.
    assert_eq!(state(&t), before);
    t.expect(&["100.64.0.5"], &[]);
}

#[test]
fn a_chain_in_iptables_legacy_gets_the_commands_to_run() {
    root_or_skip!();
    if !installed("iptables-legacy") {
        println!("not applicable: iptables-legacy is not installed");
        return;
    }
    let t = Topology::new("takeover-legacy");
    restore(
        &t,
        "iptables-legacy-restore",
        &node_rules("IP-MASQ-AGENT", &[]),
    );
    let legacy_before = save(&t, "iptables-legacy-save");
    t.expect(&["100.64.0.5"], &["10.11.0.5"]);

    let cfg = t.config("c", "nonMasqueradeCIDRs: [100.64.0.0/10]\n");
    let out = t.apply(&cfg, &["--take-over-iptables-chain"]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(log.contains("is in no iptables-nft nat table"), "{log}");
    let note = "iptables-legacy has a nat table here (ip)";
    assert!(log.contains(note), "no {note:?} in:\n{log}");
    assert!(!log.contains("here (ip6)"), "{log}");
    // Out of netlink's reach: the legacy chain still decides.
    t.expect(&["100.64.0.5"], &[]);

    // The commands the log gives do the job, and only it.
    let cmd = log
        .split_once("the jumps to it with: `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(cmd, _)| cmd.to_string())
        .unwrap_or_else(|| panic!("no command in:\n{log}"));
    run(t.node.cmd("sh").args(["-c", &cmd]));
    assert_eq!(
        save(&t, "iptables-legacy-save"),
        save_without(&legacy_before, "IP-MASQ-AGENT")
    );
    t.expect(&["10.11.0.5", "11.22.33.44"], &["100.64.0.5"]);
}

#[test]
fn a_rule_planted_between_read_and_commit_is_never_removed_unseen() {
    use nft_masq_agent::kernel::nft::NftSocket;
    use nft_masq_agent::kernel::nft::takeover::{self, Done, Plan, dump, plan};
    use nft_masq_agent::kernel::nft::uapi::{NFPROTO_IPV4, NFPROTO_IPV6};

    root_or_skip!();
    let t = Topology::new("takeover-race");
    restore(
        &t,
        "iptables-nft-restore",
        &node_rules("IP-MASQ-AGENT", &[]),
    );
    t.node.enter(|| {
        let mut sock = NftSocket::open().expect("socket");
        // Read and decide, as the takeover does...
        let generation = sock.generation().unwrap();
        let tables: Vec<_> = [NFPROTO_IPV4, NFPROTO_IPV6]
            .into_iter()
            .map(|f| dump::parse(f, &takeover::read_raw(&mut sock, f).unwrap()).unwrap())
            .collect();
        let Plan::Remove(removals) = plan::plan("IP-MASQ-AGENT", &tables) else {
            panic!("ip-masq-agent's chain not recognised");
        };
        // ...then someone adds a rule of their own to the chain before the commit.
        run(t.node.cmd("iptables-nft").args([
            "-t",
            "nat",
            "-I",
            "IP-MASQ-AGENT",
            "-d",
            "203.0.113.0/24",
            "-j",
            "RETURN",
        ]));
        let before = state(&t);
        let batch = plan::batch(&removals, sock.next_seq(), generation);
        let err = sock
            .send_batch(&batch)
            .expect_err("a batch of a past generation");
        assert_eq!(err.errno(), Some(libc::ERESTART), "{err}");
        assert_eq!(state(&t), before, "the refused batch changed something");
        // The takeover reads again and sees the planted rule: refused, nothing removed.
        let outcome = takeover::take_over(&mut sock, "IP-MASQ-AGENT").unwrap();
        let Done::Refused(foreign) = outcome.result else {
            panic!("not refused: {outcome:?}");
        };
        assert_eq!(foreign.len(), 1);
        assert_eq!(foreign[0].description, "-d 203.0.113.0/24 -j RETURN");
        assert_eq!(state(&t), before);
    });
}
