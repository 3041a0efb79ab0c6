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
