//! The agent's commit path: one replace through the kernel seam, table flags stepped down
//! when the kernel refuses them, what a commit changed (counters, flows, analysis), and a
//! refusal told apart from another process owning the table. Apart from `agent.rs`, which
//! decides when to commit; this decides how.

use std::sync::Arc;
use std::time::Instant;

use super::Agent;
use crate::config::Source;
use crate::daemon::reader::Reader;
use crate::daemon::seam::{Holder, Kernel};
use crate::daemon::state::commit::{self, Why};
use crate::daemon::state::owner::may_be_owner_refusal;
use crate::kernel::nft::compat;
use crate::kernel::nft::{CommitReport, NftError};
use crate::model::{TABLE_NAME, Table};
use crate::report::metrics::Reason;

impl<K: Kernel, S: Source> Agent<K, S> {
    /// Replaces the table with the wanted one, stepping down table flags the kernel refuses.
    pub(super) fn commit(&mut self, reason: Reason, why: Why, now: Instant) {
        let health = self.out.health.clone();
        let _busy = health.busy("committing");
        let start = Instant::now();
        if let Err(e) = self.kernel.listen(false) {
            tracing::warn!("{e}");
        }
        let gen_before = self.kernel.generation().ok();
        // A commit without a model of the table at this generation reads it whole or sends
        // every element: no config read may run meanwhile, or their memory adds up (see
        // `daemon/reader.rs`). A repair of a followed table never waits.
        let _hold = self
            .reader
            .as_ref()
            .filter(|_| gen_before.is_none_or(|g| self.kernel.known_generation() != Some(g)))
            .map(Reader::hold);
        // Read just before the replace resets them; added to the base only if it commits.
        let counters = self.kernel.counters(TABLE_NAME).ok().flatten();
        let result = self.replace_stepping_down();
        let gen_after = self.kernel.generation().ok();
        if let Err(e) = self.kernel.listen(true) {
            tracing::warn!("{e}");
        }
        let gen_now = self.kernel.generation().ok();
        self.commits.live_mut().committed(gen_now);
        let elapsed = start.elapsed();
        let report = match result {
            Ok(report) => report,
            Err(e) => return self.commit_failed(reason, why, e, now),
        };
        // A difference that left the rules alone left their counters running too.
        if let Some(c) = counters.filter(|_| report.counters_reset) {
            self.out.counters.fold(c);
        }
        let table = Arc::new(self.wanted.table().clone());
        let sent = report.messages != 0;
        if sent {
            let before = self.commits.live().before();
            let metrics = &self.out.metrics;
            commit::report_commit((reason, &why), &report, elapsed, (before, &table), metrics);
            metrics.owner_mode(compat::owner_label(self.table_flags));
            let before = self.commits.in_force(table.clone());
            self.replaced(before, table);
        } else {
            // The live table was already the wanted one (the agent's own last commit,
            // untouched since).
            self.commits.already(table, reason, &why);
        }
        // Anyone else committing between our generation reads did so while we were not
        // subscribed: look at the table instead of trusting the events. Unless the commit's
        // last batches were each conditioned on the generation before them and the ruleset
        // is still where they left it: whatever others did came before the read those
        // batches were computed from, so the live table is the wanted one (a creation under
        // a tamper storm, whose first attempt someone cut short, is not followed by a full
        // read and a refill of every element).
        let proven = gen_now.is_some() && self.kernel.known_generation() == gen_now;
        if commit::raced(gen_before, gen_after, gen_now, report.transactions) && !proven {
            self.pending.check = Some(Reason::Resync);
        }
        let valid = self.wanted.valid();
        crate::daemon::takeover::after_commit(&mut self.kernel, &mut self.takeover, valid);
    }

    /// A commit replaced `before` with `after`: the flows a change of decision affects are
    /// reconciled, and a new policy is analysed.
    fn replaced(&mut self, before: Option<Arc<Table>>, after: Arc<Table>) {
        let before = self.flows.replaced(before);
        let changed = before.as_ref().is_none_or(|b| !b.same_policy(&after));
        if let (Some(protocols), Some(before)) = (self.flows.protocols(), before) {
            // Off the loop: the dump walks the node's whole conntrack table. A commit that
            // comes before it runs merges into the same job (see `worker::Flows`).
            self.jobs.reconcile(before, after, protocols);
        }
        if changed {
            self.analyse();
        }
    }

    /// One replace; on a refusal of the table flags, the next flags [`compat`] allows.
    fn replace_stepping_down(&mut self) -> Result<CommitReport, NftError> {
        loop {
            let result = self.kernel.replace(self.wanted.table());
            let Err(e) = &result else {
                return result;
            };
            let Some(step) = compat::step_down(self.owner_mode, self.table_flags, e) else {
                return result;
            };
            let next = if step.next.0 == 0 {
                "no ownership".to_string()
            } else {
                step.next.to_string()
            };
            tracing::warn!(
                "the kernel refused table flags {} ({}); using {next} (--table-owner={:?})",
                step.refused,
                step.missing,
                self.owner_mode,
            );
            if step.ownership_lost {
                tracing::error!(
                    "--table-owner=on but this kernel has no table owner flag: running without \
                     ownership"
                );
            }
            self.table_flags = step.next;
            self.wanted.set_flags(step.next);
        }
    }

    fn commit_failed(&mut self, reason: Reason, why: Why, e: NftError, now: Instant) {
        self.out.metrics.commit_failed();
        match self.held_by_other(&e) {
            Some(port) => {
                self.owner.refused(port, now);
                self.commits.refused_by_owner();
            }
            None => self.commits.failed(e, reason, &why, now),
        }
    }

    /// The port id of the socket that owns the table, when that is why `e` refused our
    /// commit.
    fn held_by_other(&mut self, e: &NftError) -> Option<u32> {
        if !may_be_owner_refusal(e) {
            return None;
        }
        match self.kernel.holder(TABLE_NAME) {
            Ok(Holder::Owned(port)) if port != self.kernel.port_id() => Some(port),
            _ => None,
        }
    }
}
