//! Which table flags each kernel accepts, and what the agent asks for instead when one is
//! refused. Pure: the refusal comes in as an error value, the next flags go out.
//!
//! `NFT_TABLE_F_OWNER` exists since Linux 5.12 and `NFT_TABLE_F_PERSIST` since 6.9. Kernels
//! from 5.12 answer an unknown table flag with EOPNOTSUPP, earlier ones with EINVAL; either
//! refusal of our NEWTABLE steps down, as far as the [`OwnerMode`] allows. Support is learnt
//! from the kernel's answer, never from a version string.

use super::error::NftError;
use super::uapi::NFT_MSG_NEWTABLE;
use crate::model::TableFlags;

/// Whether and how the agent claims its table with the kernel's owner flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerMode {
    /// Owner + persist where the kernel has persist (6.9+), otherwise no ownership: the
    /// table is protected where that is safe and survives a crash everywhere.
    Auto,
    /// Owner, with persist where available. Without persist (5.12-6.8) the table is removed
    /// by the kernel when the agent exits or crashes.
    On,
    /// No ownership: others can change the table and the agent repairs it.
    Off,
}

impl OwnerMode {
    /// The flags to ask for before the kernel has said anything.
    pub fn initial_flags(self) -> TableFlags {
        match self {
            OwnerMode::Off => TableFlags(0),
            OwnerMode::Auto | OwnerMode::On => TableFlags(TableFlags::OWNER | TableFlags::PERSIST),
        }
    }
}

/// The ownership in force, as the `table_owner` metric labels it.
pub fn owner_label(flags: TableFlags) -> &'static str {
    if flags.has(TableFlags::PERSIST) {
        "owner-persist"
    } else if flags.has(TableFlags::OWNER) {
        "owner"
    } else {
        "off"
    }
}

/// A step down from refused table flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepDown {
    /// The flags the kernel refused.
    pub refused: TableFlags,
    /// The flags to try next.
    pub next: TableFlags,
    /// Which kernel feature was missing, for the log.
    pub missing: &'static str,
    /// `--table-owner=on` asked for ownership and the kernel has none: say so loudly.
    pub ownership_lost: bool,
}

/// Whether `err` is the kernel refusing the flags of our NEWTABLE.
fn refuses_table_flags(err: &NftError) -> bool {
    matches!(
        err,
        NftError::Rejected {
            kind: Some(NFT_MSG_NEWTABLE),
            errno: libc::EOPNOTSUPP | libc::EINVAL,
            ..
        }
    )
}

/// The next flags to try after `err` refused `flags`, or `None` when `err` is not such a
/// refusal or there is nothing left to drop.
pub fn step_down(mode: OwnerMode, flags: TableFlags, err: &NftError) -> Option<StepDown> {
    if flags.0 == 0 || !refuses_table_flags(err) {
        return None;
    }
    let persist = flags.has(TableFlags::PERSIST);
    let next = if mode == OwnerMode::On && persist {
        TableFlags(TableFlags::OWNER)
    } else {
        TableFlags(0)
    };
    Some(StepDown {
        refused: flags,
        next,
        missing: if persist {
            "persist needs Linux 6.9+"
        } else {
            "owner needs Linux 5.12+"
        },
        ownership_lost: mode == OwnerMode::On && next.0 == 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(kind: u16, errno: i32) -> NftError {
        NftError::Rejected {
            what: "NEWTABLE inet nft-masq-agent".into(),
            kind: Some(kind),
            attr: None,
            kernel_msg: None,
            errno,
            failed: 1,
        }
    }

    const OP: TableFlags = TableFlags(TableFlags::OWNER | TableFlags::PERSIST);
    const O: TableFlags = TableFlags(TableFlags::OWNER);

    #[test]
    fn auto_drops_ownership_with_persist_on_every_refusal() {
        for errno in [libc::EOPNOTSUPP, libc::EINVAL] {
            let s = step_down(OwnerMode::Auto, OP, &refusal(NFT_MSG_NEWTABLE, errno)).unwrap();
            assert_eq!(s.next, TableFlags(0));
            assert!(!s.ownership_lost);
        }
    }

    #[test]
    fn on_keeps_owner_without_persist_then_gives_up_loudly() {
        let e = refusal(NFT_MSG_NEWTABLE, libc::EOPNOTSUPP);
        let s = step_down(OwnerMode::On, OP, &e).unwrap();
        assert_eq!((s.next, s.missing), (O, "persist needs Linux 6.9+"));
        let s = step_down(OwnerMode::On, O, &refusal(NFT_MSG_NEWTABLE, libc::EINVAL)).unwrap();
        assert_eq!((s.next, s.ownership_lost), (TableFlags(0), true));
        assert_eq!(step_down(OwnerMode::On, TableFlags(0), &e), None);
    }

    #[test]
    fn other_refusals_are_not_about_flags() {
        assert_eq!(
            step_down(OwnerMode::Auto, OP, &refusal(NFT_MSG_NEWTABLE, libc::EPERM)),
            None
        );
        assert_eq!(
            step_down(OwnerMode::Auto, OP, &refusal(9, libc::EINVAL)),
            None
        );
    }
}
