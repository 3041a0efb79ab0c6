//! `--take-over-iptables-chain` in the daemon: when it runs. What it removes is
//! [`crate::kernel::nft::takeover`]'s.
//!
//! After the first commit of a valid config's table, and only then: before it, removing
//! ip-masq-agent's chain would leave the node with no masquerade at all, and with an invalid
//! config (the defaults or an adopted table in force) the old chain still holds the
//! operator's last good policy, which a bad config must never take away. A refusal is final
//! (the log says which rules to look at); an error (netlink, or others committing around
//! every attempt) leaves it pending for the next successful commit.

use super::error::chain as error_chain;
use super::seam::Kernel;

/// Called after every successful commit (or a commit that found the table already as
/// wanted): takes over `pending`'s chain if there is one and the config is valid, logging
/// what was removed or refused; `pending` is cleared unless it failed.
pub fn after_commit<K: Kernel>(kernel: &mut K, pending: &mut Option<String>, config_valid: bool) {
    if !config_valid {
        return;
    }
    let Some(chain) = pending.take() else {
        return;
    };
    match kernel.take_over(&chain) {
        Ok(outcome) => outcome.log(),
        Err(e) => {
            tracing::warn!(
                chain = chain.as_str(),
                "{}; tried again after the next commit",
                error_chain(&e)
            );
            *pending = Some(chain);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::Arc;
    use std::time::Instant;

    use super::super::agent::{Agent, Outputs};
    use super::super::worker;
    use crate::config::PolicyFlags;
    use crate::daemon::seam::{Holder, Kernel};
    use crate::kernel::nft::compat::OwnerMode;
    use crate::kernel::nft::takeover::{Done, Outcome, TakeoverError};
    use crate::kernel::nft::{CommitReport, NftError};
    use crate::model::Table;
    use crate::report::counters::MasqCounters;
    use crate::report::health::Health;
    use crate::report::metrics::Metrics;
    use crate::testing::fake::{FakeKernel, FakeSource, LINUX_6_12};

    /// The fake kernel, recording each takeover (with the number of commits before it) and
    /// failing the first `failures` of them.
    #[derive(Clone)]
    struct Recording {
        inner: FakeKernel,
        calls: Rc<RefCell<Vec<(String, usize)>>>,
        failures: Rc<RefCell<u32>>,
    }

    impl Kernel for Recording {
        fn port_id(&self) -> u32 {
            self.inner.port_id()
        }
        fn replace(&mut self, table: &Table) -> Result<CommitReport, NftError> {
            self.inner.replace(table)
        }
        fn read(&mut self, name: &str) -> Result<Option<Table>, NftError> {
            self.inner.read(name)
        }
        fn learn(&mut self, name: &str) -> Result<Option<Table>, NftError> {
            self.inner.learn(name)
        }
        fn follow(&mut self, steps: &[crate::kernel::nft::live::Step]) {
            self.inner.follow(steps)
        }
        fn known_generation(&self) -> Option<u32> {
            self.inner.known_generation()
        }
        fn counters(&mut self, name: &str) -> Result<Option<(u64, u64)>, NftError> {
            self.inner.counters(name)
        }
        fn generation(&mut self) -> Result<u32, NftError> {
            self.inner.generation()
        }
        fn listen(&mut self, on: bool) -> Result<(), NftError> {
            self.inner.listen(on)
        }
        fn holder(&mut self, name: &str) -> Result<Holder, NftError> {
            self.inner.holder(name)
        }
        fn take_over(&mut self, chain: &str) -> Result<Outcome, TakeoverError> {
            self.calls
                .borrow_mut()
                .push((chain.to_string(), self.inner.commits()));
            let mut failures = self.failures.borrow_mut();
            if *failures > 0 {
                *failures -= 1;
                return Err(TakeoverError::Raced {
                    chain: chain.to_string(),
                    attempts: 5,
                });
            }
            Ok(Outcome {
                chain: chain.to_string(),
                result: Done::Absent,
                legacy: Vec::new(),
            })
        }
    }

    struct Setup {
        agent: Agent<Recording, FakeSource>,
        kernel: Recording,
        source: FakeSource,
        now: Instant,
    }

    fn setup(config: &str, failures: u32, takeover: Option<&str>) -> Setup {
        let kernel = Recording {
            inner: FakeKernel::new(LINUX_6_12),
            calls: Rc::default(),
            failures: Rc::new(RefCell::new(failures)),
        };
        let flags = PolicyFlags::default();
        let source = FakeSource::new(Some(config), &flags);
        let (health, _pings) = Health::new();
        let out = Outputs {
            health: Arc::new(health),
            metrics: Arc::new(Metrics::new()),
            counters: Arc::new(MasqCounters::default()),
        };
        let now = Instant::now();
        // The worker is never run here: the takeover is the loop's.
        let (jobs, _worker) = worker::new(kernel.inner.clone(), Instant::now, 1000);
        let agent = Agent::new(
            kernel.clone(),
            source.clone(),
            flags,
            OwnerMode::Off,
            out,
            jobs,
            now,
        )
        .with_takeover(takeover.map(str::to_string));
        Setup {
            agent,
            kernel,
            source,
            now,
        }
    }

    impl Setup {
        fn calls(&self) -> Vec<(String, usize)> {
            self.kernel.calls.borrow().clone()
        }

        fn reconfigure(&mut self, text: &str) {
            self.source.write(Some(text));
            self.agent.config_changed("test", self.now);
        }
    }

    #[test]
    fn taken_over_once_right_after_the_first_commit() {
        let mut s = setup("nonMasqueradeCIDRs: [10.0.0.0/8]\n", 0, Some("IP-MASQ"));
        assert!(s.calls().is_empty(), "nothing before the first commit");
        s.agent.start(s.now);
        assert_eq!(s.calls(), [("IP-MASQ".to_string(), 1)]);
        s.reconfigure("nonMasqueradeCIDRs: [10.0.0.0/9]\n");
        assert_eq!(s.kernel.inner.commits(), 2);
        assert_eq!(s.calls().len(), 1, "not again after later commits");
    }

    #[test]
    fn not_while_the_config_is_invalid() {
        let mut s = setup("nonMasqueradeCIDRs: [bogus]\n", 0, Some("IP-MASQ-AGENT"));
        s.agent.start(s.now);
        assert_eq!(s.kernel.inner.commits(), 1, "the defaults are committed");
        assert!(
            s.calls().is_empty(),
            "ip-masq-agent's chain kept while only the defaults are in force"
        );
        s.reconfigure("nonMasqueradeCIDRs: [10.0.0.0/8]\n");
        assert_eq!(s.calls(), [("IP-MASQ-AGENT".to_string(), 2)]);
    }

    #[test]
    fn a_failure_is_tried_again_after_the_next_commit() {
        let mut s = setup(
            "nonMasqueradeCIDRs: [10.0.0.0/8]\n",
            1,
            Some("IP-MASQ-AGENT"),
        );
        s.agent.start(s.now);
        assert_eq!(s.calls().len(), 1);
        s.reconfigure("nonMasqueradeCIDRs: [10.0.0.0/9]\n");
        assert_eq!(s.calls().len(), 2, "tried again");
        s.reconfigure("nonMasqueradeCIDRs: [10.0.0.0/10]\n");
        assert_eq!(s.calls().len(), 2, "done after it succeeded");
    }

    #[test]
    fn without_the_flag_nothing_is_taken_over() {
        let mut s = setup("nonMasqueradeCIDRs: [10.0.0.0/8]\n", 0, None);
        s.agent.start(s.now);
        assert!(s.calls().is_empty());
    }
}
