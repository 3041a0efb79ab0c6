use super::*;
use std::path::PathBuf;

use crate::config::{Entry, Origin, merge, validate, values};

fn flags() -> PolicyFlags {
    PolicyFlags::default()
}

fn v6() -> PolicyFlags {
    PolicyFlags {
        enable_ipv6: true,
        ..PolicyFlags::default()
    }
}

fn parse(text: &str) -> Result<Loaded, ConfigError> {
    parse_str(text, Path::new("/etc/config/ip-masq-agent"), &flags())
}

fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("{e}")).config
}

fn problems(text: &str, flags: &PolicyFlags) -> Vec<String> {
    match parse_str(text, Path::new("/cfg"), flags) {
        Ok(l) => panic!("expected errors, got {:?}", l.config),
        Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
    }
}

/// The values of a list, without origins.
fn vals(list: &[Entry<IpNet>]) -> Vec<IpNet> {
    values(list).copied().collect()
}

/// A parsed config compared with the defaults: only the files it was read from differ.
fn without_files(c: Config) -> Config {
    Config {
        files: Vec::new(),
        ..c
    }
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn empty_and_comment_only_files_mean_defaults() {
    for text in ["", "\n\n", "# only a comment\n# and another\n", "---\n"] {
        let l = parse(text).unwrap();
        assert_eq!(
            without_files(l.config),
            Config::defaults(&flags()),
            "{text:?}"
        );
    }
    let d = Config::defaults(&flags());
    assert_eq!(
        vals(&d.non_masquerade_cidrs),
        nets(&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"])
    );
    assert!(
        d.non_masquerade_cidrs
            .iter()
            .all(|e| e.origin == Origin::Default)
    );
    assert!(!d.masq_link_local && !d.masq_link_local_ipv6);
    assert_eq!(d.resync_interval, Duration::from_secs(60));
}

#[test]
fn reserved_ranges_flag_extends_the_default_only() {
    let f = PolicyFlags {
        nomasq_all_reserved_ranges: true,
        ..PolicyFlags::default()
    };
    let d = Config::defaults(&f);
    assert_eq!(d.non_masquerade_cidrs.len(), 11);
    assert!(vals(&d.non_masquerade_cidrs).contains(&"240.0.0.0/4".parse().unwrap()));
    assert!(vals(&d.non_masquerade_cidrs).contains(&"100.64.0.0/10".parse().unwrap()));
    assert_eq!(d.non_masquerade_cidrs[10].origin, Origin::ReservedRanges);
    // An explicit list wins over the flag, as in ip-masq-agent.
    let l = parse_str("nonMasqueradeCIDRs: [10.0.0.0/8]", Path::new("/c"), &f).unwrap();
    assert_eq!(vals(&l.config.non_masquerade_cidrs), nets(&["10.0.0.0/8"]));
}

#[test]
fn ip_masq_agent_yaml_example() {
    let c = ok(
        "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  - 100.64.0.0/10\nmasqLinkLocal: true\n\
                resyncInterval: 1m30s\ncidrLimit: 10\n",
    );
    assert_eq!(
        vals(&c.non_masquerade_cidrs),
        nets(&["10.0.0.0/8", "100.64.0.0/10"])
    );
    assert!(c.masq_link_local);
    assert_eq!(c.resync_interval, Duration::from_secs(90));
}

#[test]
fn json_is_accepted() {
    let c = ok(
        r#"{"nonMasqueradeCIDRs": ["192.168.0.0/16"], "masqLinkLocalIPv6": false,
                  "masqueradeCIDRs": ["192.168.7.0/24"]}"#,
    );
    assert_eq!(vals(&c.non_masquerade_cidrs), nets(&["192.168.0.0/16"]));
    assert_eq!(vals(&c.masquerade_cidrs), nets(&["192.168.7.0/24"]));
}

#[test]
fn null_keeps_the_default_and_empty_list_clears_it() {
    assert_eq!(
        ok("nonMasqueradeCIDRs: null\n").non_masquerade_cidrs,
        Config::defaults(&flags()).non_masquerade_cidrs
    );
    assert!(
        ok("nonMasqueradeCIDRs: []\n")
            .non_masquerade_cidrs
            .is_empty()
    );
}

#[test]
fn yaml_1_1_booleans_are_accepted_like_ip_masq_agent() {
    assert!(ok("masqLinkLocal: yes").masq_link_local);
    assert!(ok("masqLinkLocal: on").masq_link_local);
    assert!(!ok("masqLinkLocal: off").masq_link_local);
    assert!(!ok("masqLinkLocal: false").masq_link_local);
    assert!(ok("{\"masqLinkLocalIPv6\": true}").masq_link_local_ipv6);
}

#[test]
fn booleans_given_as_strings_are_refused_with_a_hint_like_ip_masq_agent() {
    let err = parse_str(
        "masqLinkLocal: \"true\"\n",
        Path::new("/etc/config/ip-masq-agent"),
        &flags(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(
            "/etc/config/ip-masq-agent: masqLinkLocal = \"true\": expected true or false, got a \
             string: write masqLinkLocal: true without quotes (ip-masq-agent refuses a string \
             here too)"
        ),
        "{err}"
    );
    let p = problems("{\"masqLinkLocalIPv6\": \"false\"}", &flags());
    assert_eq!(
        p,
        [
            "masqLinkLocalIPv6 = \"false\": expected true or false, got a string: write \
          masqLinkLocalIPv6: false without quotes (ip-masq-agent refuses a string here too)"
        ]
    );
    for quoted in ["'yes'", "'off'", "\"True\""] {
        let p = problems(&format!("masqLinkLocal: {quoted}\n"), &flags());
        assert!(
            p.len() == 1 && p[0].contains("without quotes"),
            "{quoted}: {p:?}"
        );
    }
    assert_eq!(
        problems("masqLinkLocal: maybe\n", &flags()),
        ["masqLinkLocal = \"maybe\": expected true or false, got a string"]
    );
}

#[test]
fn a_whole_configmap_manifest_gets_one_error_with_a_hint() {
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ip-masq-agent\n  \
                    namespace: kube-system\ndata:\n  ip-masq-agent: |\n    \
                    nonMasqueradeCIDRs: [10.0.0.0/8]\n";
    let p = problems(manifest, &flags());
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with(
            "(document): this is a Kubernetes ConfigMap manifest, not the config it carries \
             (its data keys: ip-masq-agent): pass the value of data.ip-masq-agent"
        ),
        "{p:?}"
    );
    assert!(p[0].contains("jsonpath='{.data.ip-masq-agent}'"), "{p:?}");
    // As JSON, and without kind: apiVersion with data is enough.
    let p = problems("{\"apiVersion\": \"v1\", \"data\": {}}", &flags());
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("it has no data keys"), "{p:?}");
    // A config with a stray unknown key is still an unknown key.
    let p = problems("kind: 1\n", &flags());
    assert!(p[0].contains("unknown key"), "{p:?}");
}

#[test]
fn keys_match_case_insensitively_with_a_note() {
    let l = parse("CidrLimit: 5\nnonmasqueradecidrs: [10.0.0.0/8]").unwrap();
    assert_eq!(vals(&l.config.non_masquerade_cidrs), nets(&["10.0.0.0/8"]));
    assert!(
        l.notes
            .iter()
            .any(|n| n.contains("CidrLimit taken as cidrLimit"))
    );
}

#[test]
fn a_key_given_twice_in_two_spellings_is_an_error() {
    let p = problems("cidrLimit: 5\nCIDRLIMIT: 6\n", &flags());
    assert_eq!(p.len(), 1);
    assert!(p[0].contains("given twice"), "{p:?}");
}

#[test]
fn duplicate_yaml_key_is_an_error_naming_key_and_value() {
    let p = problems("cidrLimit: 5\ncidrLimit: 6\n", &flags());
    assert_eq!(p, ["cidrLimit = 6: cidrLimit is given twice"]);
}

#[test]
fn unknown_key_is_rejected_with_a_suggestion() {
    let p = problems("nonMasqueradeCIDR: [10.0.0.0/8]\n", &flags());
    assert_eq!(
        p,
        ["nonMasqueradeCIDR = [\"10.0.0.0/8\"]: unknown key; did you mean nonMasqueradeCIDRs?"]
    );
    // A different spelling of a known key is accepted (as Go's JSON decoder does), noted.
    let l = parse("masqLinkLocalIpv6: true\n").unwrap();
    assert!(l.config.masq_link_local_ipv6);
    assert_eq!(l.notes.len(), 1);
}

#[test]
fn unknown_key_far_from_any_lists_the_known_ones() {
    let p = problems("foo: 1\n", &flags());
    assert!(p[0].contains("known keys: nonMasqueradeCIDRs"), "{p:?}");
}

#[test]
fn every_cidr_problem_is_reported_with_index_and_value() {
    let text = r#"
nonMasqueradeCIDRs:
  - 10.0.0.0/8
  - 10.0.0.1/8
  - 10.0.0.0
  - 10.0.0.0/33
  - 300.0.0.0/8
  - fd00::/8
  - 7
  - 10.0.0.0/x
"#;
    let p = problems(text, &flags());
    assert_eq!(
        p,
        [
            "nonMasqueradeCIDRs[1] = \"10.0.0.1/8\": host bits are set; the network containing \
             this address is 10.0.0.0/8",
            "nonMasqueradeCIDRs[2] = \"10.0.0.0\": not a CIDR: missing /prefix-length (write \
             e.g. 10.0.0.0/8)",
            "nonMasqueradeCIDRs[3] = \"10.0.0.0/33\": prefix length 33 is out of range for IPv4 \
             (0-32)",
            "nonMasqueradeCIDRs[4] = \"300.0.0.0/8\": not a CIDR: \"300.0.0.0\" is not an IP \
             address",
            "nonMasqueradeCIDRs[5] = \"fd00::/8\": IPv6 CIDR, but IPv6 is not enabled (start the \
             agent with --enable-ipv6)",
            "nonMasqueradeCIDRs[6] = 7: expected a CIDR string, got a number",
            "nonMasqueradeCIDRs[7] = \"10.0.0.0/x\": not a CIDR: prefix length \"x\" is not a \
             number from 0 to 32",
        ]
    );
}

#[test]
fn ipv6_prefix_length_and_host_bits() {
    let p = problems("nonMasqueradeCIDRs: ['fd00::/129', 'fd00::1/64']", &v6());
    assert_eq!(p.len(), 2);
    assert!(p[0].contains("out of range for IPv6 (0-128)"), "{p:?}");
    assert!(p[1].contains("fd00::/64"), "{p:?}");
    let c = parse_str("nonMasqueradeCIDRs: ['fd00::/8']", Path::new("/c"), &v6()).unwrap();
    assert_eq!(vals(&c.config.non_masquerade_cidrs), nets(&["fd00::/8"]));
}

#[test]
fn wrong_types_are_reported() {
    let text = "nonMasqueradeCIDRs: 10.0.0.0/8\nmasqueradeCIDRs: {a: 1}\ncidrLimit: \"64\"\n\
                masqLinkLocal: 1\nresyncInterval: 60\n";
    let p = problems(text, &flags());
    assert_eq!(
        p,
        [
            "nonMasqueradeCIDRs = \"10.0.0.0/8\": expected a list of CIDR strings, got a string",
            "masqueradeCIDRs = {mapping with 1 keys}: expected a list of CIDR strings, got a \
             mapping",
            "cidrLimit = \"64\": expected a whole number, got a string",
            "masqLinkLocal = 1: expected true or false, got a number",
            "resyncInterval = 60: expected a duration string such as \"60s\" or \"1m30s\", got \
             a number",
        ]
    );
}

#[test]
fn cidr_limit_counts_v4_and_v6_and_applies_to_the_default_list() {
    let text = "cidrLimit: 2\nnonMasqueradeCIDRs: [10.0.0.0/8, 'fd00::/8', 192.168.0.0/16]";
    let p = problems(text, &v6());
    assert_eq!(
        p,
        [
            "nonMasqueradeCIDRs = (3 entries): more entries than cidrLimit (2); raise cidrLimit \
             if this is intended"
        ]
    );
    // The three default ranges exceed a limit of 2, as in ip-masq-agent.
    assert_eq!(problems("cidrLimit: 2", &flags()).len(), 1);
    assert_eq!(
        problems("cidrLimit: -1", &flags())[0],
        "cidrLimit = -1: must not be negative"
    );
    assert!(problems("cidrLimit: 1.5", &flags())[0].contains("whole number"));
}

#[test]
fn resync_interval_must_be_a_go_duration_of_at_least_a_second() {
    assert_eq!(
        ok("resyncInterval: 1s").resync_interval,
        Duration::from_secs(1)
    );
    for bad in ["0s", "-5s", "1ns", "999ms"] {
        assert_eq!(
            problems(&format!("resyncInterval: {bad}"), &flags()),
            [format!(
                "resyncInterval = \"{bad}\": must be at least 1s: every resync reads the whole \
                 table back"
            )]
        );
    }
    assert!(problems("resyncInterval: 5 minutes", &flags())[0].contains("unknown unit"));
}

#[test]
fn top_level_must_be_a_mapping_and_syntax_errors_are_reported() {
    assert!(problems("- 10.0.0.0/8\n", &flags())[0].contains("expected a mapping"));
    let p = problems("nonMasqueradeCIDRs: [10.0.0.0/8\n", &flags());
    assert!(
        p[0].starts_with("(document): not valid YAML or JSON"),
        "{p:?}"
    );
}

#[test]
fn error_display_names_the_file_on_every_line() {
    let err = parse_str(
        "foo: 1\ncidrLimit: x\n",
        Path::new("/etc/config/ip-masq-agent"),
        &flags(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("invalid config file /etc/config/ip-masq-agent: 2 problems"));
    assert_eq!(
        text.matches("\n  /etc/config/ip-masq-agent: ").count(),
        2,
        "{text}"
    );
}

#[test]
fn overlaps_are_merged_with_a_note() {
    let l =
        parse("nonMasqueradeCIDRs: [10.0.0.0/8, 10.1.0.0/16, 10.0.0.0/8, 192.168.0.0/16]").unwrap();
    assert_eq!(
        l.config.non_masquerade_cidrs.len(),
        4,
        "kept as given; the model merges"
    );
    assert!(
        l.notes.iter().any(|n| n
            == "nonMasqueradeCIDRs[1] 10.1.0.0/16 lies inside \
                                         nonMasqueradeCIDRs[0] 10.0.0.0/8; merged"),
        "{:?}",
        l.notes
    );
    assert!(
        l.notes
            .iter()
            .any(|n| n.contains("nonMasqueradeCIDRs[2] 10.0.0.0/8 repeats"))
    );
    assert_eq!(l.notes.len(), 2, "{:?}", l.notes);
}

#[test]
fn masquerade_cidrs_without_effect_get_a_note() {
    let l = parse("masqueradeCIDRs: [10.11.0.0/24, 8.8.8.0/24]").unwrap();
    assert_eq!(l.notes.len(), 1, "{:?}", l.notes);
    assert!(l.notes[0].starts_with("masqueradeCIDRs[1] 8.8.8.0/24 is outside"));
}

#[test]
fn masquerade_cidrs_are_validated_like_the_other_list() {
    let p = problems("masqueradeCIDRs: [10.11.0.1/24]", &flags());
    assert!(
        p[0].starts_with("masqueradeCIDRs[0] = \"10.11.0.1/24\": host bits"),
        "{p:?}"
    );
}

#[test]
fn large_lists_validate_quickly() {
    let mut text = String::from("cidrLimit: 100000\nnonMasqueradeCIDRs:\n");
    for i in 0..100_000u32 {
        let a = 0x0b00_0000 + i * 256;
        text.push_str(&format!(
            "  - {}.{}.{}.0/24\n",
            a >> 24,
            (a >> 16) & 255,
            (a >> 8) & 255
        ));
    }
    let c = ok(&text);
    assert_eq!(c.non_masquerade_cidrs.len(), 100_000);
}

#[test]
fn built_in_lists_parse() {
    for s in RFC1918_RANGES
        .iter()
        .chain(&OTHER_RESERVED_RANGES)
        .chain(&[LINK_LOCAL_V4, LINK_LOCAL_V6])
    {
        assert!(parse_cidr(s).is_ok(), "{s}");
    }
}

#[test]
fn the_resulting_prefixes_are_capped_not_just_the_entries() {
    // 200 /32 holes carved into 10.0.0.0/8 make thousands of prefixes from 201 entries.
    let holes: Vec<String> = (0..200)
        .map(|i| format!("10.{}.{}.1/32", i / 100, i % 100))
        .collect();
    let text = format!(
        "cidrLimit: 1000\nnonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [{}]\n",
        holes.join(", ")
    );
    // What the model makes of it, counted independently of the validator.
    let unlimited = PolicyFlags {
        max_prefixes: usize::MAX,
        ..flags()
    };
    let c = parse_str(&text, Path::new("/cfg"), &unlimited)
        .unwrap()
        .config;
    let made = crate::model::non_masquerade_prefixes(&c, crate::addr::prefix::Family::V4).len();
    assert!(made > 1000, "{made}");
    let small = PolicyFlags {
        max_prefixes: 1000,
        ..flags()
    };
    let p = problems(&text, &small);
    assert_eq!(p.len(), 1, "{p:?}");
    let want = format!("(resulting table) = ({made} prefixes): the lists make {made} prefixes");
    assert!(p[0].starts_with(&want), "{}", p[0]);
    assert!(p[0].contains("more than --max-prefixes (1000)"), "{}", p[0]);
    // A cap of exactly that many accepts it.
    let exact = PolicyFlags {
        max_prefixes: made,
        ..flags()
    };
    assert!(parse_str(&text, Path::new("/cfg"), &exact).is_ok());
}

#[test]
fn an_empty_file_is_held_to_the_prefix_cap_too() {
    // Found by the config fuzz target (input: the flags byte alone): an empty or
    // comment-only file meant the defaults without the --max-prefixes check, so the
    // 4 default prefixes were accepted under a cap of 1. (Merging now checks every config;
    // this keeps it so.)
    let reserved = PolicyFlags {
        nomasq_all_reserved_ranges: true,
        ..flags()
    };
    for (f, made) in [(flags(), 4), (reserved, 12)] {
        for text in ["", "# only a comment\n", "---\n"] {
            let cap = PolicyFlags {
                max_prefixes: made - 1,
                ..f.clone()
            };
            let p = problems(text, &cap);
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].starts_with(&format!("(resulting table) = ({made} prefixes)")));
            let exact = PolicyFlags {
                max_prefixes: made,
                ..f.clone()
            };
            let l = parse_str(text, Path::new("/cfg"), &exact).unwrap();
            assert_eq!(
                l.config.non_masquerade_cidrs,
                Config::defaults(&f).non_masquerade_cidrs
            );
        }
    }
}

#[test]
fn a_flood_of_problems_is_listed_up_to_a_limit_and_counted() {
    let entries: Vec<String> = (0..1000).map(|i| format!("bad{i}")).collect();
    let text = format!(
        "cidrLimit: 5000\nnonMasqueradeCIDRs: [{}]\n",
        entries.join(", ")
    );
    let p = problems(&text, &flags());
    assert_eq!(p.len(), MAX_PROBLEMS + 1);
    assert_eq!(
        p.last().unwrap(),
        &format!("…: and {} more problems like these", 1000 - MAX_PROBLEMS)
    );
}

#[test]
fn new_keys_parse_with_their_defaults_absent() {
    let c = parse_str(
        "sourceCIDRs: [10.244.0.0/16]\negressInterfaces: ['eth*', ens5]\n\
         snatTo: ['198.51.100.10-198.51.100.20', '2001:db8::1']\n",
        Path::new("/c"),
        &v6(),
    )
    .unwrap()
    .config;
    assert_eq!(vals(&c.source_cidrs), nets(&["10.244.0.0/16"]));
    let names: Vec<String> = values(&c.egress_interfaces)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(names, ["eth*", "ens5"]);
    let snat: Vec<String> = values(&c.snat_to).map(|t| t.to_string()).collect();
    assert_eq!(snat, ["198.51.100.10-198.51.100.20", "2001:db8::1"]);
    // Absent keys: every source, every interface, masquerade.
    let d = ok("nonMasqueradeCIDRs: [10.0.0.0/8]");
    assert!(d.source_cidrs.is_empty() && d.egress_interfaces.is_empty() && d.snat_to.is_empty());
}

#[test]
fn snat_to_errors_name_the_entry() {
    let p = problems(
        "snatTo: [192.0.2.1, 192.0.2.2, '192.0.2.9-192.0.2.1', '192.0.2.1-2001:db8::1', nope, \
         0.0.0.0, 224.0.0.1]",
        &v6(),
    );
    assert_eq!(
        p,
        [
            "snatTo[1] = \"192.0.2.2\": a second IPv4 entry (snatTo[0] is one): at most one \
             address or range per family",
            "snatTo[2] = \"192.0.2.9-192.0.2.1\": the range is empty: 192.0.2.9 comes after \
             192.0.2.1",
            "snatTo[3] = \"192.0.2.1-2001:db8::1\": a range must be within one family (IPv4 or \
             IPv6)",
            "snatTo[4] = \"nope\": \"nope\" is not an IP address (write an address or A-B)",
            "snatTo[5] = \"0.0.0.0\": 0.0.0.0 is the unspecified address: no packet may leave \
             the node with it as its source",
            "snatTo[6] = \"224.0.0.1\": 224.0.0.1 is a multicast address (224.0.0.0/4): no \
             packet may leave the node with it as its source",
        ]
    );
    assert_eq!(
        problems("snatTo: ['2001:db8::1']", &flags()),
        [
            "snatTo[0] = \"2001:db8::1\": IPv6 address, but IPv6 is not enabled (start the agent \
          with --enable-ipv6)"
        ]
    );
    assert!(problems("snatTo: 192.0.2.1", &flags())[0].contains("expected a list"));
}

#[test]
fn snat_to_refuses_addresses_no_packet_may_leave_with_naming_file_entry_and_kind() {
    // Issue 17, finding 7: each of these was accepted.
    let cases = [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("fe80::1", "a link-local address"),
        ("169.254.1.1", "a link-local address"),
        ("::ffff:192.0.2.10", "an IPv4-mapped IPv6 address"),
        ("0.0.0.1-255.255.255.254", "loopback (127.0.0.0/8)"),
        ("224.0.0.1", "a multicast address"),
        ("0.0.0.0", "the unspecified address"),
        ("::", "the unspecified address"),
        ("255.255.255.255", "the broadcast address"),
    ];
    let path = Path::new("/etc/config/ip-masq-agent");
    for (value, kind) in cases {
        // Second in the list, after a good entry of the other family.
        let other = if value.contains(':') {
            "192.0.2.1"
        } else {
            "2001:db8::1"
        };
        let text = format!("snatTo: ['{other}', '{value}']\n");
        let err = parse_str(&text, path, &v6()).unwrap_err().to_string();
        let entry = format!("/etc/config/ip-masq-agent: snatTo[1] = \"{value}\": ");
        assert!(err.contains(&entry), "{value}: {err}");
        assert!(err.contains(kind), "{value}: {err}");
        assert!(
            err.contains("no packet may leave the node with"),
            "{value}: {err}"
        );
    }
    // The range names every kind it contains.
    let p = problems("snatTo: ['0.0.0.1-255.255.255.254']", &flags());
    assert_eq!(
        p,
        [
            "snatTo[0] = \"0.0.0.1-255.255.255.254\": the range contains loopback (127.0.0.0/8), \
          link-local (169.254.0.0/16) and multicast (224.0.0.0/4) addresses: no packet may \
          leave the node with them as its source; choose a range of addresses of this node"
        ]
    );
}

#[test]
fn source_cidrs_and_interfaces_errors_name_the_entry() {
    let p = problems(
        "sourceCIDRs: [10.244.0.1/16, 'fd00::/8']\negressInterfaces: ['*', 'a/b', \
         'veth1234567890abc', 7]\n",
        &flags(),
    );
    assert_eq!(p.len(), 6, "{p:?}");
    assert!(
        p[0].starts_with("sourceCIDRs[0] = \"10.244.0.1/16\": host bits"),
        "{p:?}"
    );
    assert!(p[1].starts_with("sourceCIDRs[1] = \"fd00::/8\": IPv6 CIDR, but IPv6 is not"));
    assert!(
        p[2].starts_with("egressInterfaces[0] = \"*\": a wildcard needs"),
        "{p:?}"
    );
    assert!(p[3].starts_with("egressInterfaces[1] = \"a/b\": interface names cannot contain"));
    assert!(p[4].starts_with("egressInterfaces[2] = \"veth1234567890abc\": 17 bytes"));
    assert!(p[5].starts_with("egressInterfaces[3] = 7: expected an interface name string"));
    // cidrLimit bounds these lists too.
    let p = problems(
        "cidrLimit: 1\nsourceCIDRs: [10.0.0.0/8, 11.0.0.0/8]\nnonMasqueradeCIDRs: []",
        &flags(),
    );
    assert_eq!(
        p,
        [
            "sourceCIDRs = (2 entries): more entries than cidrLimit (1); raise cidrLimit if this is \
          intended"
        ]
    );
}

fn parsed(text: &str, flags: &PolicyFlags) -> validate::Parsed {
    validate::parse_file_str(text, Path::new("/x"), flags).unwrap()
}

#[test]
fn files_merge_like_ip_masq_agent_v2() {
    let f = flags();
    let files = vec![
        (
            PathBuf::from("/etc/config/ip-masq-agent"),
            parsed(
                "nonMasqueradeCIDRs: [10.0.0.0/8]\nresyncInterval: 30s\nsnatTo: [192.0.2.1]\n",
                &f,
            ),
        ),
        (
            PathBuf::from("/etc/config/ip-masq-agent-reconciled"),
            parsed(
                "nonMasqueradeCIDRs: [100.64.0.0/10, 10.0.0.0/8]\nmasqLinkLocal: true\n\
                 resyncInterval: 5m\nsnatTo: [192.0.2.1]\n",
                &f,
            ),
        ),
    ];
    let l = merge::merge(files, &f).unwrap();
    let c = l.config;
    assert_eq!(
        vals(&c.non_masquerade_cidrs),
        nets(&["10.0.0.0/8", "100.64.0.0/10", "10.0.0.0/8"])
    );
    assert_eq!(
        c.non_masquerade_cidrs[1].origin,
        Origin::File { file: 1, index: 0 }
    );
    assert!(c.masq_link_local, "OR'd");
    assert_eq!(c.resync_interval, Duration::from_secs(30), "the smallest");
    assert_eq!(c.snat_to.len(), 1, "the same value twice is one");
    // The repeated entry is noted with both files.
    assert!(
        l.notes.iter().any(|n| n.contains("of /etc/config/ip-masq-agent-reconciled 10.0.0.0/8 repeats nonMasqueradeCIDRs[0] of /etc/config/ip-masq-agent")),
        "{:?}",
        l.notes
    );
}

#[test]
fn a_key_no_file_sets_keeps_its_default() {
    let f = flags();
    let files = vec![
        (PathBuf::from("/a"), parsed("masqLinkLocal: true\n", &f)),
        (
            PathBuf::from("/b"),
            parsed("sourceCIDRs: [10.244.0.0/16]\n", &f),
        ),
    ];
    let c = merge::merge(files, &f).unwrap().config;
    assert_eq!(
        vals(&c.non_masquerade_cidrs),
        nets(&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"])
    );
}

#[test]
fn different_snat_to_in_two_files_is_an_error_naming_both() {
    let f = flags();
    let files = vec![
        (
            PathBuf::from("/etc/config/ip-masq-agent"),
            parsed("snatTo: [192.0.2.1]\n", &f),
        ),
        (
            PathBuf::from("/etc/config/ip-masq-agent-reconciled"),
            parsed("snatTo: [192.0.2.2]\n", &f),
        ),
    ];
    let e = merge::merge(files, &f).unwrap_err().to_string();
    assert_eq!(
        e,
        "snatTo is set to different values in /etc/config/ip-masq-agent (192.0.2.1) and \
         /etc/config/ip-masq-agent-reconciled (192.0.2.2); set it in one file, or to the same \
         value"
    );
}

#[test]
fn the_prefix_cap_applies_to_the_merged_files() {
    let f = PolicyFlags {
        max_prefixes: 3,
        ..flags()
    };
    let files = vec![
        (
            PathBuf::from("/a"),
            parsed("nonMasqueradeCIDRs: [10.0.0.0/8]\n", &f),
        ),
        (
            PathBuf::from("/b"),
            parsed("nonMasqueradeCIDRs: [12.0.0.0/8, 14.0.0.0/8]\n", &f),
        ),
    ];
    let e = merge::merge(files, &f).unwrap_err().to_string();
    assert!(e.starts_with("invalid config (merged from /a, /b)"), "{e}");
    assert!(e.contains("(4 prefixes)"), "{e}");
}
