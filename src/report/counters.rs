//! Masqueraded packets and bytes as monotonic totals.
//!
//! The kernel's rule counters restart at zero with every commit (the table is replaced
//! whole). So just before a commit the daemon reads them and, once the commit succeeded,
//! folds them into a base; a scrape reads the live counters through a socket of its own and
//! reports base + live.

use std::sync::Mutex;

use crate::kernel::nft::NftSocket;
use crate::model::TABLE_NAME;
use crate::report::metrics::Metrics;

/// The totals across commits.
#[derive(Debug, Default)]
pub struct MasqCounters {
    base: Mutex<(u64, u64)>,
    /// The scrape's own socket, opened on first use (the loop's is busy with its own work).
    reader: Mutex<Option<NftSocket>>,
}

impl MasqCounters {
    /// Adds what the rules counted before a successful commit reset them; returns the base.
    pub fn fold(&self, before: (u64, u64)) -> (u64, u64) {
        let Ok(mut base) = self.base.lock() else {
            return (0, 0);
        };
        base.0 = base.0.saturating_add(before.0);
        base.1 = base.1.saturating_add(before.1);
        *base
    }

    /// Reads the live counters and raises the metrics to base + live.
    pub fn refresh(&self, metrics: &Metrics) {
        let Ok(mut reader) = self.reader.lock() else {
            return;
        };
        if reader.is_none() {
            *reader = NftSocket::open().ok();
        }
        let Some(sock) = reader.as_mut() else {
            return;
        };
        match read_live(sock) {
            Ok(Some((p, b))) => {
                let base = self.base.lock().map(|b| *b).unwrap_or_default();
                metrics.masqueraded(base.0.saturating_add(p), base.1.saturating_add(b));
            }
            Ok(None) => {}
            Err(e) => tracing::debug!("reading the masquerade counters failed: {e}"),
        }
    }
}

fn read_live(sock: &mut NftSocket) -> Result<Option<(u64, u64)>, crate::kernel::nft::NftError> {
    Ok(sock
        .read_rules(TABLE_NAME)?
        .map(|t| t.masquerade_counters()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_accumulates_and_never_overflows() {
        let c = MasqCounters::default();
        assert_eq!(c.fold((3, 300)), (3, 300));
        assert_eq!(c.fold((2, 100)), (5, 400));
        assert_eq!(c.fold((u64::MAX, 0)), (u64::MAX, 400));
    }
}
