//! Writes the seed corpora in `fuzz/seeds/<target>/` (committed; libFuzzer's own finds go to
//! `fuzz/corpus/`, which is not):
//!
//! - `config`: a flags byte (see `nma_fuzz::policy_flags`) and the config examples of
//!   `src/config/tests.rs`, the ConfigMaps in `deploy/`, and edge cases (top of the address
//!   space, tags, anchors, nesting);
//! - `decode`: the kernel dumps in `tests/fixtures/`, the encoder's batches (notifications
//!   have the layout of requests), ACKs with and without extended attributes, a NEWGEN;
//! - `roundtrip`: the same batches and dumps behind the byte 1 (batch mode), and a few
//!   pseudo-random structured inputs behind the byte 0;
//! - `conflict`: programs for `nma_fuzz::foreign::build`: the hostile jump graph of issue 17,
//!   a verdict map to a masquerade, a loop, kube-proxy's marked masquerade, sets, an inet
//!   table asked about IPv6.
//!
//! Run from the repository: `cargo run --manifest-path fuzz/Cargo.toml --example seeds`. It
//! only adds and overwrites its own files, so regression seeds (`crash-*`, `slow-*`) stay.

use std::fs;
use std::path::Path;

use nft_masq_agent::config::{self, Config, PolicyFlags};
use nft_masq_agent::kernel::netlink::uapi::{NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS};
use nft_masq_agent::kernel::nft::encode::{self, ReplaceForm};
use nft_masq_agent::model::{self, TableFlags};
use nft_masq_agent::testing::wire::{ack, new_generation};
use nma_fuzz::flags_byte;
use nma_fuzz::foreign::{Prog, s, x};

/// Config texts from `src/config/tests.rs` and a few edge cases; `true` when IPv6 is needed.
const CONFIGS: &[(&str, &str, bool)] = &[
    ("empty", "", false),
    ("comment-only", "# only a comment\n# and another\n", false),
    ("document-marker", "---\n", false),
    ("one-list", "nonMasqueradeCIDRs: [10.0.0.0/8]", false),
    (
        "ip-masq-agent-yaml-example",
        "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  - 100.64.0.0/10\nmasqLinkLocal: true\n\
         resyncInterval: 1m30s\ncidrLimit: 10\n",
        false,
    ),
    (
        "json",
        r#"{"nonMasqueradeCIDRs": ["192.168.0.0/16"], "masqLinkLocalIPv6": false,
          "masqueradeCIDRs": ["192.168.7.0/24"]}"#,
        false,
    ),
    ("null-list", "nonMasqueradeCIDRs: null\n", false),
    ("empty-list", "nonMasqueradeCIDRs: []\n", false),
    (
        "case-insensitive-keys",
        "CidrLimit: 5\nnonmasqueradecidrs: [10.0.0.0/8]",
        false,
    ),
    (
        "key-twice-two-spellings",
        "cidrLimit: 5\nCIDRLIMIT: 6\n",
        false,
    ),
    ("key-twice", "cidrLimit: 5\ncidrLimit: 6\n", false),
    ("typo", "nonMasqueradeCIDR: [10.0.0.0/8]\n", false),
    (
        "link-local-ipv6-spelling",
        "masqLinkLocalIpv6: true\n",
        false,
    ),
    ("unknown-key", "foo: 1\n", false),
    (
        "every-cidr-problem",
        "\nnonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  - 10.0.0.1/8\n  - 10.0.0.0\n  - 10.0.0.0/33\n  \
         - 300.0.0.0/8\n  - fd00::/8\n  - 7\n  - 10.0.0.0/x\n",
        false,
    ),
    (
        "ipv6-bad",
        "nonMasqueradeCIDRs: ['fd00::/129', 'fd00::1/64']",
        true,
    ),
    ("ipv6", "nonMasqueradeCIDRs: ['fd00::/8']", true),
    (
        "wrong-types",
        "nonMasqueradeCIDRs: 10.0.0.0/8\nmasqueradeCIDRs: {a: 1}\ncidrLimit: \"64\"\n\
         masqLinkLocal: 1\nresyncInterval: 60\n",
        false,
    ),
    (
        "cidr-limit",
        "cidrLimit: 2\nnonMasqueradeCIDRs: [10.0.0.0/8, 'fd00::/8', 192.168.0.0/16]",
        true,
    ),
    ("cidr-limit-negative", "cidrLimit: -1", false),
    ("resync-1s", "resyncInterval: 1s", false),
    ("resync-too-short", "resyncInterval: 999ms", false),
    ("resync-go-syntax", "resyncInterval: 1h2m3.5s", false),
    ("unclosed-flow", "nonMasqueradeCIDRs: [10.0.0.0/8\n", false),
    ("two-problems", "foo: 1\ncidrLimit: x\n", false),
    (
        "overlaps",
        "nonMasqueradeCIDRs: [10.0.0.0/8, 10.1.0.0/16, 10.0.0.0/8, 192.168.0.0/16]",
        false,
    ),
    (
        "carve-out",
        "masqueradeCIDRs: [10.11.0.0/24, 8.8.8.0/24]",
        false,
    ),
    (
        "carve-out-host-bits",
        "masqueradeCIDRs: [10.11.0.1/24]",
        false,
    ),
    (
        "top-of-address-space",
        "nonMasqueradeCIDRs: [0.0.0.0/0, '::/0', 240.0.0.0/4]\nmasqueradeCIDRs: \
         [255.255.255.255/32, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128', '::/128']\n",
        true,
    ),
    (
        "yaml-1.1-booleans-and-tags",
        "masqLinkLocal: yes\nmasqLinkLocalIPv6: !!str off\nnonMasqueradeCIDRs: !!seq [10.0.0.0/8]\n",
        false,
    ),
    (
        "anchors",
        "nonMasqueradeCIDRs: &a [10.0.0.0/8, 172.16.0.0/12]\nmasqueradeCIDRs: *a\n",
        false,
    ),
    (
        "nesting",
        "nonMasqueradeCIDRs: [[[[[[10.0.0.0/8]]]]]]\n",
        false,
    ),
    (
        "scopes-and-snat",
        "nonMasqueradeCIDRs: [10.0.0.0/8]\nsourceCIDRs: [10.244.0.0/16, 'fd00:10:244::/56']\n\
         egressInterfaces: [eth0, 'ens*']\nsnatTo: [192.0.2.10-192.0.2.20, '2001:db8::1']\n",
        true,
    ),
    (
        "scopes-and-snat-bad",
        "snatTo: [10.0.0.2-10.0.0.1, 1.2.3.4, '::1-1.2.3.4']\n\
         egressInterfaces: ['*', 'a/b', averyveryverylongname, '..']\nsourceCIDRs: [10.0.0.1/8]\n",
        false,
    ),
    ("not-a-mapping", "- 10.0.0.0/8\n", false),
    ("non-string-key", "? [a]\n: 1\n1: 2\n", false),
];

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = root.join("seeds");
    config_seeds(&root.join(".."), &seeds.join("config"));
    let batches = batches(&root.join(".."));
    decode_seeds(&batches, &seeds.join("decode"));
    roundtrip_seeds(&batches, &seeds.join("roundtrip"));
    conflict_seeds(&seeds.join("conflict"));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn config_seeds(repo: &Path, dir: &Path) {
    let mut texts: Vec<(String, String, bool)> = CONFIGS
        .iter()
        .map(|(n, t, v6)| (n.to_string(), t.to_string(), *v6))
        .collect();
    // Many carve-outs: the prefix cap's case.
    let holes: Vec<String> = (0..50).map(|i| format!("10.0.{i}.1/32")).collect();
    texts.push((
        "many-holes".into(),
        format!(
            "cidrLimit: 1000\nnonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [{}]\n",
            holes.join(", ")
        ),
        false,
    ));
    for file in [
        "deploy/base/configmap.yaml",
        "deploy/overlays/dual-stack/kustomization.yaml",
    ] {
        let yaml = fs::read_to_string(repo.join(file)).unwrap();
        for (i, block) in block_scalars(&yaml).into_iter().enumerate() {
            let name = format!("{}-{i}", file.replace('/', "-").trim_end_matches(".yaml"));
            texts.push((name, block, true));
        }
    }
    for (name, text, v6) in &texts {
        // As given, and with --enable-ipv6 --to-ports and a cap of 64 prefixes.
        let mut with = vec![flags_byte(*v6, false, false)];
        with.extend_from_slice(text.as_bytes());
        write(dir, name, &with);
        let mut with = vec![flags_byte(true, true, true) | 0x20];
        with.extend_from_slice(text.as_bytes());
        write(dir, &format!("{name}-ipv6-to-ports-cap64"), &with);
    }
}

/// The literal block scalars (`key: |`) of a YAML file, de-indented: the ConfigMaps' configs.
fn block_scalars(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if !l.trim_end().ends_with(": |") {
            continue;
        }
        let base = indent(l);
        let body: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|b| b.trim().is_empty() || indent(b) > base)
            .copied()
            .collect();
        let cut = body
            .iter()
            .filter(|b| !b.trim().is_empty())
            .map(|b| indent(b))
            .min()
            .unwrap_or(0);
        let text: String = body
            .iter()
            .map(|b| format!("{}\n", b.get(cut..).unwrap_or("")))
            .collect();
        out.push(text);
    }
    out
}

/// Named batches and dumps: the encoder's, for several configs and both forms, and the kernel's.
fn batches(repo: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let reserved_v6_ports = PolicyFlags {
        nomasq_all_reserved_ranges: true,
        enable_ipv6: true,
        to_ports: Some("1024-29999,32768-65535".parse().unwrap()),
        ..PolicyFlags::default()
    };
    let cases: Vec<(&str, Config, PolicyFlags, TableFlags)> = vec![
        (
            "defaults",
            Config::defaults(&PolicyFlags::default()),
            PolicyFlags::default(),
            TableFlags::default(),
        ),
        (
            "ipv6-to-ports-reserved-owner",
            Config::defaults(&reserved_v6_ports),
            reserved_v6_ports.clone(),
            TableFlags(TableFlags::OWNER | TableFlags::PERSIST),
        ),
        (
            "carve-outs",
            config::parse_str(
                "nonMasqueradeCIDRs: [10.0.0.0/8, 0.0.0.0/0, 'fc00::/7']\n\
                 masqueradeCIDRs: [10.11.0.0/24, 255.255.255.255/32, 'fd00::1/128']\n",
                Path::new("/seed"),
                &reserved_v6_ports,
            )
            .unwrap()
            .config,
            PolicyFlags {
                random_fully: false,
                ..reserved_v6_ports.clone()
            },
            TableFlags::default(),
        ),
        (
            "scopes-and-snat",
            config::parse_str(
                "nonMasqueradeCIDRs: [10.0.0.0/8, 'fc00::/7']\n\
                 sourceCIDRs: [10.244.0.0/16, 'fd00:10:244::/56']\n\
                 egressInterfaces: [eth0, 'ens*', wg0]\n\
                 snatTo: [192.0.2.10-192.0.2.20, '2001:db8::1']\n",
                Path::new("/seed"),
                &reserved_v6_ports,
            )
            .unwrap()
            .config,
            reserved_v6_ports.clone(),
            TableFlags::default(),
        ),
        (
            "everything-masqueraded",
            config::parse_str(
                "nonMasqueradeCIDRs: []\nmasqLinkLocal: true\n",
                Path::new("/seed"),
                &PolicyFlags::default(),
            )
            .unwrap()
            .config,
            PolicyFlags::default(),
            TableFlags::default(),
        ),
    ];
    for (name, config, flags, table_flags) in cases {
        let t = model::desired(&config, &flags, table_flags);
        for (form, tag) in [
            (ReplaceForm::AddDeleteAdd, "add-delete-add"),
            (ReplaceForm::DeleteAdd, "delete-add"),
        ] {
            let b = encode::replace(&t, 1, form);
            out.push((format!("batch-{name}-{tag}"), b.bytes));
        }
    }
    for f in [
        "dump-ipv6-to-ports.bin",
        "dump-tampered.bin",
        "dump-scopes-snat.bin",
    ] {
        out.push((
            format!("fixture-{}", f.trim_end_matches(".bin")),
            fs::read(repo.join("tests/fixtures").join(f)).unwrap(),
        ));
    }
    out
}

fn decode_seeds(batches: &[(String, Vec<u8>)], dir: &Path) {
    for (name, bytes) in batches {
        write(dir, name, bytes);
    }
    write(dir, "ack-success", &ack(0, 7, &[]));
    write(
        dir,
        "ack-error-extended",
        &ack(
            -22,
            9,
            &[
                (NLMSGERR_ATTR_MSG, b"Invalid argument\0"),
                (NLMSGERR_ATTR_OFFS, &44u32.to_ne_bytes()),
            ],
        ),
    );
    write(
        dir,
        "newgen",
        &new_generation(42, 0, Some(1234), Some(b"nft\0")),
    );
}

fn roundtrip_seeds(batches: &[(String, Vec<u8>)], dir: &Path) {
    for (name, bytes) in batches {
        let mut with = vec![1u8];
        with.extend_from_slice(bytes);
        write(dir, name, &with);
    }
    // Structured inputs: any bytes are one; a fixed pseudo-random stream gives a few.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [64usize, 256, 1024, 4096] {
        let mut bytes = vec![0u8];
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x as u8);
        }
        write(dir, &format!("structured-{len}"), &bytes);
    }
}

fn conflict_seeds(dir: &Path) {
    let pod = [10, 244, 1, 2];
    // `post` jumps 4 times to c1, each ci 4 times to c(i+1); c16 masquerades tcp dport 1.
    let mut dag = Prog::v4([10, 1, 2, 3], pod).table(0).base(25);
    for _ in 1..=16 {
        dag = dag.chain();
    }
    for i in 0..16u8 {
        for _ in 0..4 {
            dag = dag.rule(i).expr(x::JUMP, &[i + 1]);
        }
    }
    let dag = dag
        .rule(16)
        .expr(x::PORT, &[])
        .expr(x::CMP, &[0, 2, 0, 1])
        .expr(x::MASQ, &[]);
    write(dir, "hostile-dag-16", &dag.0);
    // ip daddr vmap { 10.0.0.0/8 : jump c1 }; masquerade; c1: masquerade.
    let vmap = Prog::v4([10, 1, 2, 3], pod)
        .table(0)
        .base(25)
        .chain()
        .set(s::VMAP, &[4, 1, 5, 1, 1, 1, 10, 0, 0, 0, 24, 0])
        .rule(0)
        .expr(x::DADDR, &[16, 4])
        .expr(x::LOOKUP, &[0, 0, 1])
        .rule(0)
        .expr(x::COMPAT, &[1, 0, 0])
        .rule(1)
        .expr(x::MASQ, &[]);
    write(dir, "vmap-jump-masquerade", &vmap.0);
    // c0 -> c1 -> c2 -goto-> c1, then a masquerade in c0; c2 also jumps to a chain that
    // does not exist.
    let lp = Prog::v4([192, 168, 0, 5], pod)
        .table(0)
        .base(25)
        .chain()
        .chain()
        .rule(0)
        .expr(x::JUMP, &[1])
        .rule(1)
        .expr(x::JUMP, &[2])
        .rule(2)
        .expr(x::GOTO, &[1])
        .rule(2)
        .expr(x::JUMP, &[60])
        .rule(0)
        .expr(x::MASQ, &[]);
    write(dir, "loop-and-dangling-jump", &lp.0);
    // kube-proxy: jump c1; c1: mark & 0x4000 != 0x4000 return; masquerade.
    let mark = 0x4000u32.to_ne_bytes();
    let kp = Prog::v4([192, 168, 0, 5], pod)
        .table(0)
        .base(25)
        .chain()
        .rule(0)
        .expr(x::JUMP, &[1])
        .rule(1)
        .expr(x::META, &[2])
        .expr(
            x::BITWISE,
            &[mark[0], mark[1], mark[2], mark[3], 0, 0, 0, 0],
        )
        .expr(x::CMP, &[1, 4, mark[0], mark[1], mark[2], mark[3]])
        .expr(x::VERDICT, &[2])
        .rule(1)
        .expr(x::MASQ, &[]);
    write(dir, "kube-proxy-mark", &kp.0);
    // ip daddr != @s0 masquerade, s0 = { 10.0.0.0/8 }; a set not read; snat to a register.
    let sets = Prog::v4([172, 16, 0, 5], pod)
        .table(0)
        .base(25)
        .set(s::KEYS, &[4, 1, 10, 0, 0, 0, 24])
        .set(s::OPAQUE, &[4])
        .rule(0)
        .expr(x::DADDR, &[16, 4])
        .expr(x::LOOKUP, &[0, 1, 0])
        .expr(x::MASQ, &[])
        .rule(0)
        .expr(x::DADDR, &[16, 4])
        .expr(x::LOOKUP, &[1, 0, 0])
        .expr(x::VALUE, &[4, 198, 51, 100, 7])
        .expr(x::SNAT, &[1]);
    write(dir, "sets-and-snat", &sets.0);
    // An inet table asked about IPv6: nfproto match, output interface, iptables-nft rules.
    let mut v6 = vec![1];
    v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
    v6.extend_from_slice(&[0, 1, 1]);
    let inet = Prog(v6)
        .table(2)
        .base(25)
        .base(-10)
        .rule(0)
        .expr(x::META, &[0])
        .expr(x::CMP, &[0, 1, 10])
        .expr(x::META, &[1])
        .expr(x::CMP, &[0, 4, b'e', b't', b'h', b'0'])
        .expr(x::COMPAT, &[1, 0, 0])
        .rule(1)
        .expr(x::COMPAT, &[0, 6, 8, 0, 0, 2, 0, 2, 0, 0, 0])
        .expr(
            x::COMPAT,
            &[1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 198, 51, 100, 9],
        );
    write(dir, "inet-ipv6-iptables-nft", &inet.0);
}
