//! The test kit of nft-masq-agent: one harness for the namespace tests (`tests/`), the
//! benchmarks (`benches/`), the demo (`scripts/demo`, through the `nma-testkit` binary) and
//! the runtime test (`deploy/test-runc`, the `nma-test-runc` binary).
//!
//! - [`Netns`]: a throwaway network namespace, entered by a thread, deleted on drop (also on
//!   panic) with every process still in it.
//! - [`Topology`]: pod, node and remote namespaces wired with veths and addresses; the pod
//!   sends datagrams, the remote records the source they arrive with ([`TopologyBuilder`]
//!   for more pods, more remotes, no IPv6, other destinations).
//! - [`Agent`]: the agent process, started with `--log-format json`; its log is read line by
//!   line into [`LogLine`]s, and commits are told by their fields ([`Commit`]), not by text.
//! - [`ConfigMap`]: a config directory in kubelet's `..data` layout, updated as kubelet does.
//! - [`configs`]: config generators (spaced hosts, /24s, holes in 10/8) and [`configs::ConfigText`].
//! - [`http`]: the agent's endpoint (`GET`, metric series); [`listing`]: nft and iptables
//!   listings made comparable.
//! - [`root_or_skip!`]: the guard every root test starts with; [`emulated`], [`slack`],
//!   [`kernel_at_least`], [`wait_until`].
//!
//! A namespace test (in `tests/*.rs` of the agent's package; add the file to `test_targets` in
//! `vm-tests/run` so the VM suite runs it too):
//!
//! ```no_run
//! use std::time::Duration;
//! use nma_testkit::{Topology, root_or_skip, write_atomic};
//!
//! #[test]
//! fn a_new_exempt_range_is_followed() {
//!     root_or_skip!(); // fails without root, unless NMA_SKIP_ROOT_TESTS=1 skips it
//!     let t = Topology::new("newrange"); // pod, node, remote; deleted on drop
//!     let cfg = t.config("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
//!     let agent = t.start(&cfg, &["--table-owner", "off"]); // after its first commit
//!     t.expect(&["11.22.33.44"], &["10.20.0.5"]); // datagrams: masqueraded, not
//!     write_atomic(&cfg, "nonMasqueradeCIDRs: [10.0.0.0/8, 11.0.0.0/8]\n");
//!     assert!(agent.wait_commits(2, Duration::from_secs(5)).is_some(), "{}", agent.log());
//!     t.expect(&[], &["11.22.33.44", "10.20.0.5"]);
//! }
//! ```
//!
//! Everything here needs only `ip` (iproute2) and, for observers, `nft`: the same harness runs
//! in the QEMU guests of `vm-tests/`. It never touches the host's network: every address and
//! every packet stays inside namespaces it creates (named `nma-…`).

pub mod agent;
pub mod configmap;
pub mod configs;
pub mod env;
pub mod events;
pub mod http;
pub mod listing;
pub mod log;
pub mod netns;
pub mod peak;
pub mod topology;

pub use agent::{Agent, AgentBuilder, agent_bin};
pub use configmap::{ConfigMap, write_atomic};
pub use env::{
    emulated, heavy, installed, ip, kernel_at_least, require_root, run, slack, wait_until,
};
pub use http::{HTTP_PORT, Reply, family_sum, series};
pub use listing::strip_counters;
pub use log::{Commit, LogLine};
pub use netns::Netns;
pub use topology::{DESTS4, DESTS6, NODE4, NODE6, POD4, POD6, Topology, TopologyBuilder};

/// The first line of every test that needs root (network namespaces, netlink): returns from
/// the test, saying so, when it is not root and `NMA_SKIP_ROOT_TESTS` is set; panics (the
/// test fails) when it is not root and the variable is not set. See [`require_root`].
#[macro_export]
macro_rules! root_or_skip {
    () => {
        if !$crate::require_root() {
            return;
        }
    };
}
