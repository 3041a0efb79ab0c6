//! What happens next: the value each entry point of the [`Agent`](super::agent::Agent)
//! returns once it has done its work, as a kube-rs reconciler returns its `Action`. The
//! event loop sleeps until [`Next::wake_at`] (it never asks the agent when to wake or whether
//! work is left), re-arms the config watch when a timer wakes it at or after
//! [`Next::resync_at`], and readiness is published from [`Next::ready`]: `/readyz`'s body and
//! the ready metric are that value, so a test that looks at what a call returned sees what
//! the probe would.
//!
//! Readiness is typed ([`NotReady`]): each state of the agent hands over its reason as a
//! value (an error, a change, a port), [`Condition::readiness`] picks the most fundamental,
//! and the text for people is made only by `Display`, where it is published.

use std::sync::Arc;
use std::time::Instant;

use super::drift::Change;
use super::error::chain;
use super::reconcile::Fight;
use super::state::config::Fallback;
use crate::config::ConfigError;
use crate::kernel::nft::NftError;

/// What happens next, after an entry point of the agent did its work.
#[derive(Debug, Clone)]
pub struct Next {
    /// When the agent next needs `tick`: the `now` it was called with when work is left over
    /// (the step bound was reached: the loop looks at other wake-ups, then calls again at
    /// once), else the earliest of its timers (the resync, a deferred commit, a re-check, a
    /// look at who owns the table).
    pub wake_at: Instant,
    /// When the periodic resync is due (one of the timers above): the loop re-arms the config
    /// watch when a timer wakes it at or after this, so a watch the kernel dropped unnoticed
    /// is back within one period.
    pub resync_at: Instant,
    /// Readiness, as published to `/readyz` and the ready metric.
    pub ready: Result<(), NotReady>,
}

/// Why the agent is not ready; its `Display` is `/readyz`'s body. The errors are shared with
/// the state that keeps them (`Arc`), so the value is cheap to hand out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotReady {
    /// No config file has validated since start: the defaults, or the table found at start,
    /// are in force because of an error.
    #[error("{0}")]
    NoGoodConfig(Fallback),
    /// The config cannot be read now (the last good one is in force).
    #[error("cannot read the config (the last good one is in force): {}", chain(&**.0))]
    ConfigUnreadable(Arc<ConfigError>),
    /// Another socket owns the table (its netlink port id), so the agent cannot commit.
    #[error("table owned by another process (netlink port {0})")]
    HeldByOther(u32),
    /// The last commit failed.
    #[error("commit failed: {}", chain(&**.0))]
    CommitFailed(Arc<NftError>),
    /// Someone keeps changing the table.
    #[error("table contested: {0}")]
    Contested(Fight),
    /// Reading the table back failed several times in a row: the agent cannot see drift.
    #[error("cannot read the table back: {}", chain(&**.0))]
    Blind(Arc<NftError>),
    /// Someone changed the table and the repair has not happened yet.
    #[error("table changed: {0}")]
    Drift(Change),
    /// Nothing has been committed (or adopted) yet.
    #[error("starting")]
    Starting,
}

/// The agent's condition, as its states report it, from which readiness follows.
#[derive(Debug, Clone, Default)]
pub struct Condition {
    /// Why the table in force is not the operator's (the config was invalid at start).
    pub no_good_config: Option<Fallback>,
    /// The config cannot be read now, with the error.
    pub config_unreadable: Option<Arc<ConfigError>>,
    /// The port id of another socket that owns the table.
    pub held_by_other: Option<u32>,
    /// The last commit failed, with its error.
    pub commit_failed: Option<Arc<NftError>>,
    /// Someone keeps changing the table.
    pub contested: Option<Fight>,
    /// Reading the table back keeps failing, with the last error.
    pub blind: Option<Arc<NftError>>,
    /// A foreign change not yet repaired.
    pub drift: Option<Change>,
    /// Nothing has been committed (or adopted) yet.
    pub nothing_in_force: bool,
}

impl Condition {
    /// Ready means: the table in force is the one the last good config asks for. The first
    /// reason that applies is reported, the most fundamental first.
    pub fn readiness(self) -> Result<(), NotReady> {
        if let Some(why) = self.no_good_config {
            return Err(NotReady::NoGoodConfig(why));
        }
        if let Some(e) = self.config_unreadable {
            return Err(NotReady::ConfigUnreadable(e));
        }
        if let Some(port) = self.held_by_other {
            return Err(NotReady::HeldByOther(port));
        }
        if let Some(e) = self.commit_failed {
            return Err(NotReady::CommitFailed(e));
        }
        if let Some(fight) = self.contested {
            return Err(NotReady::Contested(fight));
        }
        if let Some(e) = self.blind {
            return Err(NotReady::Blind(e));
        }
        if let Some(change) = self.drift {
            return Err(NotReady::Drift(change));
        }
        if self.nothing_in_force {
            return Err(NotReady::Starting);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::daemon::drift::Committer;

    /// The C library's words for `errno` (glibc and musl word some differently).
    fn os(errno: i32) -> String {
        std::io::Error::from_raw_os_error(errno).to_string()
    }

    fn text(c: &Condition) -> Result<(), String> {
        c.clone().readiness().map_err(|e| e.to_string())
    }

    #[test]
    fn readiness_reports_the_most_fundamental_reason() {
        let mut c = Condition {
            nothing_in_force: true,
            ..Condition::default()
        };
        assert_eq!(text(&c), Err("starting".into()));
        c.nothing_in_force = false;
        assert_eq!(text(&c), Ok(()));
        c.drift = Some(Change {
            what: "rule deleted".into(),
            by: Committer {
                proc_name: Some("nft".into()),
                pid: Some(42),
                port_id: 777,
            },
        });
        assert_eq!(
            text(&c),
            Err("table changed: rule deleted by nft (pid 42, netlink port 777)".into())
        );
        c.blind = Some(Arc::new(NftError::Kernel {
            request: "GETSET",
            errno: libc::EIO,
        }));
        assert_eq!(
            text(&c),
            Err(format!(
                "cannot read the table back: the kernel answered GETSET with: {}",
                os(libc::EIO)
            ))
        );
        c.contested = Some(Fight {
            repairs: 5,
            opponent: None,
        });
        assert_eq!(
            text(&c),
            Err(
                "table contested: another committer keeps changing the table: 5 repairs in \
                 10s, last against ?"
                    .into()
            )
        );
        c.commit_failed = Some(Arc::new(NftError::Kernel {
            request: "NEWTABLE",
            errno: libc::EPERM,
        }));
        assert_eq!(
            text(&c),
            Err(format!(
                "commit failed: the kernel answered NEWTABLE with: {}",
                os(libc::EPERM)
            ))
        );
        c.held_by_other = Some(999);
        assert_eq!(
            text(&c),
            Err("table owned by another process (netlink port 999)".into())
        );
        c.config_unreadable = Some(Arc::new(ConfigError::Read {
            path: PathBuf::from("F"),
            source: std::io::Error::from_raw_os_error(libc::ELOOP),
        }));
        let why = text(&c).unwrap_err();
        assert!(
            why.starts_with("cannot read the config (the last good one is in force): "),
            "{why}"
        );
        assert!(why.ends_with("(os error 40)"), "{why}");
        c.no_good_config = Some(Fallback::Defaults);
        assert_eq!(
            text(&c),
            Err("the config file is invalid: the defaults are in force until it is fixed".into())
        );
    }
}
