//! A drop-in for existing DaemonSets: the agent starts with the arguments of real
//! ip-masq-agent and ip-masq-agent-v2 manifests, unchanged, and enforces their policy, checked
//! by datagrams from the pod namespace (the test kit's topology).
//!
//! Only `--config` is added, since the tests cannot use the node's /etc/config: it names the
//! file or directory the manifest's ConfigMap volume would fill; and `--log-format json`, the
//! form in which the test kit reads the agent's log. Each argument list is data
//! taken as it is from its source (cited above it); nothing else of those manifests is used.

use std::path::Path;
use std::time::Duration;

use nma_testkit::{Agent, Topology, root_or_skip, slack};

/// kubernetes-sigs/ip-masq-agent, `ip-masq-agent.yaml` (its example DaemonSet, image
/// v2.8.0 at the time of writing): the container has no `args`.
const UPSTREAM_EXAMPLE: &[&str] = &[];

/// kubernetes/kubernetes, `cluster/addons/ip-masq-agent/ip-masq-agent.yaml` (the addon
/// kube-up installs on GCE, image v2.12.0).
const KUBERNETES_ADDON: &[&str] = &["--masq-chain=IP-MASQ", "--nomasq-all-reserved-ranges"];

/// GKE's documentation, "Configuring the IP masquerade agent in Standard clusters"
/// (cloud.google.com/kubernetes-engine/docs/how-to/ip-masquerade-agent), the DaemonSet of
/// image gke.gcr.io/ip-masq-agent:v2.12.6-gke.15, its comments left out.
const GKE: &[&str] = &[
    "--v=2",
    "--logtostderr=false",
    "--log_file=/dev/stdout",
    "--log_file_max_size=0",
    "--masq-chain=IP-MASQ",
    "--random-fully=false",
];

/// Azure/ip-masq-agent-v2, `examples/ip-masq-agent.yaml` (two ConfigMaps projected into
/// /etc/config).
const V2_EXAMPLE: &[&str] = &["--v=2"];

/// AKS's own `azure-ip-masq-agent` DaemonSet (ip-masq-agent-v2), as `ps` shows its process on
/// an AKS node (`/ip-masq-agent-v2 --v=2 --resync-interval=60`).
const AKS: &[&str] = &["--v=2", "--resync-interval=60"];

/// The start-up warning about accepted, unimplemented flags (`Cli::foreign_warning`).
const WARNING: &str = "ip-masq-agent flags accepted for compatibility, not implemented";

/// Starts the agent with `--config config` and a manifest's arguments; returns it once it has
/// committed, having checked that it warned about exactly the `ignored` flags, once.
fn start(t: &Topology, config: &Path, args: &[&str], ignored: &[&str]) -> Agent {
    let agent = t.start(config, args);
    let log = agent.log();
    if ignored.is_empty() {
        assert_eq!(agent.count(WARNING), 0, "no warning expected:\n{log}");
    } else {
        assert_eq!(agent.count(WARNING), 1, "one warning expected:\n{log}");
        let line = log.lines().find(|l| l.contains(WARNING)).unwrap();
        for flag in ignored {
            assert!(line.contains(flag), "{flag} not named in: {line}");
        }
    }
    agent
}

/// ip-masq-agent-v2's layout: the file you edit and the one the provider keeps up to date,
/// projected into one directory.
fn v2_directory(t: &Topology) -> std::path::PathBuf {
    let dir = t.dir.join("etc-config");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("ip-masq-agent"),
        "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("ip-masq-agent-reconciled"),
        "nonMasqueradeCIDRs:\n  - 172.16.0.0/12\nmasqLinkLocal: true\n",
    )
    .unwrap();
    dir
}

#[test]
fn upstream_example_daemonset() {
    root_or_skip!();
    let t = Topology::new("dropin-upstream");
    let cfg = t.config(
        "ip-masq-agent",
        "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\nresyncInterval: 60s\n",
    );
    let _agent = start(&t, &cfg, UPSTREAM_EXAMPLE, &[]);
    t.expect(&["11.22.33.44", "172.16.0.5"], &["10.20.0.5"]);
}

#[test]
fn kubernetes_addon_daemonset_without_configmap() {
    root_or_skip!();
    let t = Topology::new("dropin-addon");
    // The ConfigMap is optional and absent: the defaults, here with every reserved range.
    let _agent = start(
        &t,
        &t.dir.join("ip-masq-agent"),
        KUBERNETES_ADDON,
        &["--masq-chain=IP-MASQ"],
    );
    // --nomasq-all-reserved-ranges keeps its meaning: 100.64/10 and 198.18/15 exempt too.
    t.expect(
        &["11.22.33.44"],
        &["10.20.0.5", "172.16.0.5", "100.64.0.5", "198.18.0.5"],
    );
}

#[test]
fn gke_daemonset() {
    root_or_skip!();
    let t = Topology::new("dropin-gke");
    let cfg = t.config(
        "ip-masq-agent",
        "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  - 192.168.0.0/16\nmasqLinkLocal: false\n",
    );
    let _agent = start(
        &t,
        &cfg,
        GKE,
        &[
            "--v=2",
            "--logtostderr=false",
            "--log_file=/dev/stdout",
            "--log_file_max_size=0",
            "--masq-chain=IP-MASQ",
        ],
    );
    t.expect(
        &["11.22.33.44", "172.16.0.5"],
        &["10.20.0.5", "192.168.0.5"],
    );
    // --random-fully=false keeps its meaning: the masquerade is not fully random.
    let table = t.nft_table().expect("table");
    assert!(table.contains("masquerade"), "{table}");
    assert!(!table.contains("fully-random"), "{table}");
}

#[test]
fn ip_masq_agent_v2_example_daemonset() {
    root_or_skip!();
    let t = Topology::new("dropin-v2");
    let dir = v2_directory(&t);
    let _agent = start(&t, &dir, V2_EXAMPLE, &["--v=2"]);
    // Both files merged, as v2 does: 172.16/12 and masqLinkLocal come from the second.
    t.expect(
        &["11.22.33.44", "192.168.0.5", "169.254.0.5"],
        &["10.20.0.5", "172.16.0.5"],
    );
}

#[test]
fn aks_daemonset() {
    root_or_skip!();
    let t = Topology::new("dropin-aks");
    let dir = v2_directory(&t);
    let _agent = start(&t, &dir, AKS, &["--v=2", "--resync-interval=60"]);
    t.expect(
        &["11.22.33.44", "192.168.0.5", "169.254.0.5"],
        &["10.20.0.5", "172.16.0.5"],
    );
}

/// klog's `--v` sets the log level when RUST_LOG does not (a DaemonSet whose image alone was
/// replaced has no RUST_LOG): 4 shows the daemon's debug lines, 2 does not.
#[test]
fn klog_verbosity_sets_the_log_level() {
    root_or_skip!();
    let t = Topology::new("dropin-v");
    let cfg = t.config("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    for (v, debug) in [("--v=2", false), ("--v=4", true)] {
        let agent = t
            .agent_builder()
            .env_remove("RUST_LOG")
            .config(&cfg)
            .args([v, "--metrics-address", "off"])
            .spawn();
        // The second agent finds the first one's table: on kernels before 6.9, with no
        // owner flag to add, it is already as wanted and nothing is committed.
        assert!(
            agent
                .wait_in_force(Duration::from_secs(5) * slack())
                .is_some(),
            "{v}: no commit:\n{}",
            agent.log()
        );
        // The config watch logs at debug level before the first commit, so by the commit line
        // (or the line saying there is nothing to commit) a debug level has shown one.
        assert_eq!(
            agent.lines().iter().any(|l| l.level == "DEBUG"),
            debug,
            "{v}:\n{}",
            agent.log()
        );
    }
}
