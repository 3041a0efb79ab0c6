//! The owner state ([`Owner`]): another netlink socket owns the table (its port id), so the
//! agent cannot commit, and when it looks again whether that socket still does.

use std::time::{Duration, Instant};

use crate::kernel::nft::NftError;
use crate::kernel::nft::events::{Drained, Event};
use crate::kernel::nft::uapi::NFT_MSG_NEWTABLE;
use crate::model::TABLE_NAME;

/// How often the agent looks whether another socket still owns the table. The kernel sends
/// no notification when an owning socket closes (measured on 6.18, with and without the
/// persist flag), so a cheap GETTABLE poll is the only prompt way to take over.
pub const OWNER_POLL: Duration = Duration::from_millis(100);

/// Whether `e` may be another socket's ownership refusing our commit: EPERM on our
/// NEWTABLE, while we do have the privilege (who owns the table is then asked).
pub fn may_be_owner_refusal(e: &NftError) -> bool {
    matches!(
        e,
        NftError::Rejected {
            kind: Some(NFT_MSG_NEWTABLE),
            errno: libc::EPERM,
            ..
        }
    )
}

/// Who holds the table, while it is not us.
#[derive(Debug, Default)]
pub struct Owner {
    /// The port id of the socket that owns the table.
    held_by: Option<u32>,
    /// When to look again.
    poll_at: Option<Instant>,
}

impl Owner {
    /// The port id of the socket that owns the table, while another does.
    pub fn held_by(&self) -> Option<u32> {
        self.held_by
    }

    /// When the agent looks again at who owns the table.
    pub fn poll_at(&self) -> Option<Instant> {
        self.poll_at
    }

    /// Notifications concern our table: the owner may have let go, so look now rather than
    /// at the next poll.
    pub fn touched(&mut self, now: Instant) {
        if self.held_by.is_some() {
            self.poll_at = Some(now);
        }
    }

    /// The owner to look at, when the look is due at `now` (once).
    pub fn due(&mut self, now: Instant) -> Option<u32> {
        self.poll_at.take_if(|t| *t <= now)?;
        self.held_by
    }

    /// Socket `port` owns the table and refused our commit: looked at again after
    /// [`OWNER_POLL`]; said once per owner.
    pub fn refused(&mut self, port: u32, now: Instant) {
        if self.held_by != Some(port) {
            tracing::warn!(
                "table inet {TABLE_NAME} is owned by another netlink socket (port {port}, \
                 another agent?); taking it over as soon as it lets go"
            );
        }
        self.held_by = Some(port);
        self.poll_at = Some(now + OWNER_POLL);
    }

    /// The owner still holds the table, or nobody could tell: look again after
    /// [`OWNER_POLL`].
    pub fn still_held(&mut self, now: Instant) {
        self.poll_at = Some(now + OWNER_POLL);
    }

    /// The owner let go (`holder` is who holds the table now, for the log).
    pub fn released(&mut self, holder: &dyn std::fmt::Debug) {
        if let Some(port) = self.held_by.take() {
            tracing::info!(
                "table inet {TABLE_NAME} is no longer owned by netlink port {port} \
                 ({holder:?}): committing"
            );
        }
    }
}

/// Whether any notification concerns our table.
pub fn touches_our_table(d: &Drained) -> bool {
    d.lost
        || d.events
            .iter()
            .any(|e| matches!(e, Event::Object { table, .. } if table == TABLE_NAME))
}
