//! Watches the config file's directory with inotify and turns every change into a hint.
//!
//! Kubernetes updates a ConfigMap volume by writing a new timestamped directory and renaming
//! a `..data` symlink over the old one; the file we read is a symlink through `..data`. A
//! watch on the file itself would follow the old inode and miss the swap, so we watch the
//! directory: the rename, a plain rewrite, a create, a delete and a rename of the file all
//! show up there. The directory may not exist yet (an optional ConfigMap): then the nearest
//! existing ancestor is watched until it appears, and the watch moves down to it.
//!
//! Events are only hints: the loop re-reads the file and commits only if the desired ruleset
//! changed, so spurious or duplicate events cost a read and a comparison.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

/// Errors of the watcher.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path} for config changes")]
pub struct WatchError {
    path: PathBuf,
    #[source]
    source: notify::Error,
}

/// The directory watch.
pub struct ConfigWatch {
    watcher: RecommendedWatcher,
    dir: PathBuf,
    /// The watched path and its (device, inode), to notice a deleted and recreated dir.
    watched: Option<(PathBuf, (u64, u64))>,
}

impl std::fmt::Debug for ConfigWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatch")
            .field("dir", &self.dir)
            .field("watched", &self.watched)
            .finish()
    }
}

/// The directory holding `config`, absolute: inotify events carry absolute paths, so a
/// relative directory would never match them.
pub fn config_dir(config: &Path) -> PathBuf {
    let dir = match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Whether an event on `path` can change the config: the file itself, kubelet's `..data`
/// machinery (`..data`, `..data_tmp`, `..<timestamp>`), the directory, or a directory on
/// the way to it (while it does not exist yet). Other files in the directory (other keys
/// of the ConfigMap, anything an operator keeps there) are ignored.
fn relevant_path(path: &Path, dir: &Path, file_name: Option<&std::ffi::OsStr>) -> bool {
    if dir.starts_with(path) {
        return true;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if parent == dir => {
            Some(name) == file_name || name.to_string_lossy().starts_with("..")
        }
        _ => false,
    }
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl ConfigWatch {
    /// Starts watching for changes to `config`; each relevant event calls `hint.notify_one()`.
    pub fn new(config: &Path, hint: Arc<Notify>) -> Result<ConfigWatch, WatchError> {
        let dir = config_dir(config);
        let filter_dir = dir.clone();
        let file_name = config.file_name().map(|n| n.to_os_string());
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            use notify::event::{AccessKind, AccessMode};
            let relevant = match &res {
                // Access events (open, read, close-without-write) change nothing.
                Ok(ev)
                    if matches!(
                        ev.kind,
                        EventKind::Access(
                            AccessKind::Open(_)
                                | AccessKind::Read
                                | AccessKind::Close(AccessMode::Read | AccessMode::Execute)
                        )
                    ) =>
                {
                    false
                }
                Ok(ev) => {
                    ev.paths.is_empty()
                        || ev
                            .paths
                            .iter()
                            .any(|p| relevant_path(p, &filter_dir, file_name.as_deref()))
                }
                // An overflowed queue: we may have missed something, so look.
                Err(_) => true,
            };
            if relevant {
                hint.notify_one();
            }
        })
        .map_err(|source| WatchError {
            path: dir.clone(),
            source,
        })?;
        let mut w = ConfigWatch {
            watcher,
            dir,
            watched: None,
        };
        w.ensure()?;
        Ok(w)
    }

    /// The path currently watched: the config directory, or an ancestor while it is absent.
    pub fn watched(&self) -> Option<&Path> {
        self.watched.as_ref().map(|(p, _)| p.as_path())
    }

    /// Points the watch at the config directory if it exists (again), else at the nearest
    /// existing ancestor. Called after every hint; cheap when nothing moved.
    pub fn ensure(&mut self) -> Result<(), WatchError> {
        // Twice at most: if the directory appeared while we armed a watch on its parent,
        // the second pass moves the watch down to it.
        for _ in 0..2 {
            if self.ensure_once()? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Arms the watch; true when it sits on the config directory itself or nothing moved.
    fn ensure_once(&mut self) -> Result<bool, WatchError> {
        let mut target = self.dir.clone();
        while identity(&target).is_none() {
            match target.parent() {
                Some(p) if !p.as_os_str().is_empty() => target = p.to_path_buf(),
                _ => {
                    target = PathBuf::from("/");
                    break;
                }
            }
        }
        let id = identity(&target).unwrap_or((0, 0));
        if let Some((path, old)) = &self.watched {
            if *path == target && *old == id {
                return Ok(true);
            }
            let _ = self.watcher.unwatch(path);
        }
        self.watcher
            .watch(&target, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError {
                path: target.clone(),
                source,
            })?;
        tracing::debug!(path = %target.display(), "watching for config changes");
        let on_dir = target == self.dir;
        self.watched = Some((target, id));
        Ok(on_dir || identity(&self.dir).is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_config_relevant_paths_count() {
        let dir = Path::new("/etc/config");
        let f = Some(std::ffi::OsStr::new("ip-masq-agent"));
        for p in [
            "/etc/config/ip-masq-agent",
            "/etc/config/..data",
            "/etc/config/..data_tmp",
            "/etc/config/..2026_11_25_12_00_00.123",
            "/etc/config",
            "/etc",
        ] {
            assert!(relevant_path(Path::new(p), dir, f), "{p}");
        }
        for p in [
            "/etc/config/agent.log",
            "/etc/config/other-key",
            "/etc/passwd",
            "/var/x",
        ] {
            assert!(!relevant_path(Path::new(p), dir, f), "{p}");
        }
    }
}
