//! Why the daemon could not run, and how its errors are told in one line. A leaf of the
//! daemon: the wiring, the event loop, the agent and the worker all report through it.

use crate::daemon::watch::WatchError;
use crate::kernel::nft::NftError;

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The netlink sockets could not be opened.
    #[error("cannot open the nf_tables netlink sockets")]
    Netlink(#[source] NftError),
    /// The config directory cannot be watched.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// The runtime, a signal handler or the HTTP listener could not be set up.
    #[error("{what}")]
    Setup {
        /// What failed.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Turns an I/O error into a [`RunError::Setup`] that says what was being set up.
pub fn setup(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Setup { what, source }
}

/// An error with its causes, one line: log lines must say why (`Display` of a thiserror
/// error names only the outermost layer).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
