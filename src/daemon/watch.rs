//! Watches the config files' directories with inotify and turns every change into a hint.
//!
//! Kubernetes updates a ConfigMap volume by writing a new timestamped directory and renaming
//! a `..data` symlink over the old one; the file we read is a symlink through `..data`. A
//! watch on the file itself would follow the old inode and miss the swap, so we watch the
//! directory: the rename, a plain rewrite, a create, a delete and a rename of the file all
//! show up there. A config path may also be a directory of files (`ip-masq*`), or reached
//! through a symlinked directory (`cur -> v1`, switched with `mv -T`): the directory holding
//! each such symlink is watched too, so a switch is seen and the watch follows it. A
//! directory that does not exist yet (an optional ConfigMap) is waited for by watching the
//! nearest existing ancestor.
//!
//! The kernel drops a watch when its directory is deleted, even if a new directory takes the
//! same path (and, on ext4, the same inode number) at once: a removal of a watched directory
//! marks the watch dropped, and [`ConfigWatch::ensure`] re-arms it whatever the inode says.
//! [`ConfigWatch::rearm`] re-arms everything unconditionally; the daemon calls it at every
//! resync, so no lost watch outlives a resync period.
//!
//! Events are only hints: the loop re-reads the files and commits only if the desired
//! ruleset changed, so spurious or duplicate events cost a read and a comparison.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::config::DIR_FILE_PREFIX;

/// Errors of the watcher.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path} for config changes")]
pub struct WatchError {
    path: PathBuf,
    #[source]
    source: notify::Error,
}

/// Which names in a watched directory matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Names {
    /// One name (a config file, or a symlink on the way to a config directory).
    Exactly(OsString),
    /// Every name starting with [`DIR_FILE_PREFIX`] (a config directory).
    ConfigFiles,
}

/// One directory to watch, and which names in it matter. kubelet's `..data` machinery
/// (`..data`, `..data_tmp`, `..<timestamp>`) always matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The directory, absolute (inotify events carry absolute paths).
    pub dir: PathBuf,
    /// The names that matter in it.
    pub names: Names,
}

impl Target {
    /// Whether an event on `path` can change the config.
    pub fn relevant(&self, path: &Path) -> bool {
        if path == self.dir {
            return true;
        }
        match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) if parent == self.dir => {
                name.to_string_lossy().starts_with("..")
                    || match &self.names {
                        Names::Exactly(n) => name == n,
                        Names::ConfigFiles => name.to_string_lossy().starts_with(DIR_FILE_PREFIX),
                    }
            }
            _ => false,
        }
    }
}

/// The path made absolute without resolving symlinks, so that events (which carry the path
/// the watch was given) can be matched against it.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The directory holding `config`, absolute.
pub fn config_dir(config: &Path) -> PathBuf {
    match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => absolute(p),
        _ => absolute(Path::new(".")),
    }
}

/// The targets for these config paths as the file system is now: each file's directory, each
/// directory itself, and the directory of every symlink on the way to either.
pub fn plan(configs: &[PathBuf]) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    let mut add = |t: Target| {
        if !out.contains(&t) {
            out.push(t);
        }
    };
    for config in configs {
        let config = absolute(config);
        let (dir, names) = if config.is_dir() {
            (config.clone(), Names::ConfigFiles)
        } else {
            let name = config.file_name().unwrap_or(OsStr::new("")).to_os_string();
            (config_dir(&config), Names::Exactly(name))
        };
        for link in symlinks_on_the_way(&dir) {
            if let (Some(parent), Some(name)) = (link.parent(), link.file_name()) {
                add(Target {
                    dir: parent.to_path_buf(),
                    names: Names::Exactly(name.to_os_string()),
                });
            }
        }
        add(Target { dir, names });
    }
    out
}

/// The paths that are symlinks among `dir` and its ancestors.
fn symlinks_on_the_way(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut at = PathBuf::new();
    for c in dir.components() {
        at.push(c);
        if matches!(c, Component::Normal(_))
            && std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink())
        {
            out.push(at.clone());
        }
    }
    out
}

/// The (device, inode) a path resolves to: a symlink switched to another directory, or a
/// directory replaced, changes it.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The nearest existing directory at or above `dir`.
fn nearest_existing(dir: &Path) -> PathBuf {
    let mut at = dir.to_path_buf();
    while identity(&at).is_none() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p.to_path_buf(),
            _ => return PathBuf::from("/"),
        }
    }
    at
}

/// Whether the event is the kernel dropping a watched directory's watch: the directory
/// itself deleted or moved away.
fn drops_a_watch(ev: &Event, armed: &[PathBuf]) -> bool {
    let self_event = matches!(
        ev.kind,
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From))
    );
    self_event && ev.paths.iter().any(|p| armed.contains(p))
}

/// The state the inotify thread's callback reads.
#[derive(Debug, Default)]
struct Shared {
    targets: RwLock<Vec<Target>>,
    armed: RwLock<Vec<PathBuf>>,
    dropped: AtomicBool,
}

/// The directory watches.
pub struct ConfigWatch {
    watcher: RecommendedWatcher,
    configs: Vec<PathBuf>,
    shared: Arc<Shared>,
    /// What is watched now, and what each path resolved to when armed.
    armed: Vec<(PathBuf, Option<(u64, u64)>)>,
}

impl std::fmt::Debug for ConfigWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatch")
            .field("configs", &self.configs)
            .field("armed", &self.armed)
            .finish()
    }
}

impl ConfigWatch {
    /// Starts watching for changes to the config paths (files or directories); each relevant
    /// event calls `hint.notify_one()`.
    pub fn new(configs: &[PathBuf], hint: Arc<Notify>) -> Result<ConfigWatch, WatchError> {
        let shared = Arc::new(Shared::default());
        let seen = shared.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<Event>| {
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
                    if seen
                        .armed
                        .read()
                        .is_ok_and(|armed| drops_a_watch(ev, &armed))
                    {
                        seen.dropped.store(true, Ordering::SeqCst);
                    }
                    ev.paths.is_empty()
                        || seen.targets.read().is_ok_and(|targets| {
                            ev.paths.iter().any(|p| {
                                targets
                                    .iter()
                                    .any(|t| t.relevant(p) || t.dir.starts_with(p))
                            })
                        })
                }
                // An overflowed queue: we may have missed something, so look.
                Err(_) => true,
            };
            if relevant {
                hint.notify_one();
            }
        })
        .map_err(|source| WatchError {
            path: configs.first().cloned().unwrap_or_default(),
            source,
        })?;
        let mut w = ConfigWatch {
            watcher,
            configs: configs.to_vec(),
            shared,
            armed: Vec::new(),
        };
        w.ensure()?;
        Ok(w)
    }

    /// The paths watched now.
    pub fn watched(&self) -> Vec<PathBuf> {
        self.armed.iter().map(|(p, _)| p.clone()).collect()
    }

    /// Points the watches where the config paths lead now; cheap when nothing moved. Called
    /// after every hint.
    pub fn ensure(&mut self) -> Result<(), WatchError> {
        let force = self.shared.dropped.swap(false, Ordering::SeqCst);
        self.arm(force)
    }

    /// Re-arms every watch whatever it looks like (the daemon does it at every resync: a
    /// watch the kernel dropped without our noticing is back within one period).
    pub fn rearm(&mut self) -> Result<(), WatchError> {
        self.shared.dropped.store(false, Ordering::SeqCst);
        self.arm(true)
    }

    fn arm(&mut self, force: bool) -> Result<(), WatchError> {
        // Twice at most: a directory that appeared while we armed a watch on its parent
        // moves the watch down on the second pass. Only the first pass forces: re-arming
        // means unwatch then watch, and a directory created between the second pass's look
        // and its watch would go unseen for good (its creation event lost with the old watch,
        // the look too early to find it), leaving the watch on the parent until the resync.
        for pass in 0..2 {
            let force = force && pass == 0;
            let targets = plan(&self.configs);
            let want: Vec<PathBuf> =
                targets
                    .iter()
                    .map(|t| nearest_existing(&t.dir))
                    .fold(Vec::new(), |mut v, p| {
                        if !v.contains(&p) {
                            v.push(p);
                        }
                        v
                    });
            if let Ok(mut t) = self.shared.targets.write() {
                *t = targets;
            }
            let moved = self.arm_paths(&want, force)?;
            if !moved {
                break;
            }
        }
        Ok(())
    }

    /// Watches exactly `want`; returns whether anything changed.
    fn arm_paths(&mut self, want: &[PathBuf], force: bool) -> Result<bool, WatchError> {
        let mut changed = false;
        // Drop watches no longer wanted.
        let mut kept = Vec::new();
        for (path, id) in std::mem::take(&mut self.armed) {
            if want.contains(&path) {
                kept.push((path, id));
            } else {
                let _ = self.watcher.unwatch(&path);
                changed = true;
            }
        }
        self.armed = kept;
        for path in want {
            let id = identity(path);
            let current = self.armed.iter().position(|(p, _)| p == path);
            if let Some(i) = current {
                if !force && self.armed[i].1 == id {
                    continue;
                }
                // The kernel may have dropped it already (a deleted directory): ignore.
                let _ = self.watcher.unwatch(path);
                self.armed.remove(i);
            }
            self.watcher
                .watch(path, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError {
                    path: path.clone(),
                    source,
                })?;
            tracing::debug!(path = %path.display(), "watching for config changes");
            self.armed.push((path.clone(), id));
            changed = true;
        }
        if let Ok(mut a) = self.shared.armed.write() {
            *a = self.armed.iter().map(|(p, _)| p.clone()).collect();
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_target(dir: &str, name: &str) -> Target {
        Target {
            dir: dir.into(),
            names: Names::Exactly(name.into()),
        }
    }

    #[test]
    fn only_config_relevant_paths_count() {
        let t = file_target("/etc/config", "ip-masq-agent");
        for p in [
            "/etc/config/ip-masq-agent",
            "/etc/config/..data",
            "/etc/config/..data_tmp",
            "/etc/config/..2026_11_25_12_00_00.123",
            "/etc/config",
        ] {
            assert!(t.relevant(Path::new(p)), "{p}");
        }
        for p in [
            "/etc/config/agent.log",
            "/etc/config/other-key",
            "/etc/passwd",
            "/var/x",
        ] {
            assert!(!t.relevant(Path::new(p)), "{p}");
        }
        let d = Target {
            dir: "/etc/config".into(),
            names: Names::ConfigFiles,
        };
        assert!(d.relevant(Path::new("/etc/config/ip-masq-agent-reconciled")));
        assert!(!d.relevant(Path::new("/etc/config/kube-proxy")));
    }

    #[test]
    fn symlinks_on_the_way_are_watched_where_they_live() {
        let root = std::env::temp_dir().join(format!("nma-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("v1")).unwrap();
        std::os::unix::fs::symlink("v1", root.join("cur")).unwrap();
        let targets = plan(&[root.join("cur/ip-masq-agent")]);
        assert!(targets.contains(&Target {
            dir: root.clone(),
            names: Names::Exactly("cur".into())
        }));
        assert!(targets.contains(&file_target(
            root.join("cur").to_str().unwrap(),
            "ip-masq-agent"
        )));
        // A directory config path watches itself for its ip-masq* files.
        assert_eq!(
            plan(&[root.join("v1")]),
            [Target {
                dir: root.join("v1"),
                names: Names::ConfigFiles
            }]
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_deleted_watched_directory_drops_its_watch() {
        let armed = vec![PathBuf::from("/etc/config")];
        let gone = Event::new(EventKind::Remove(notify::event::RemoveKind::Folder))
            .add_path("/etc/config".into());
        assert!(drops_a_watch(&gone, &armed));
        let file_gone = Event::new(EventKind::Remove(notify::event::RemoveKind::File))
            .add_path("/etc/config/ip-masq-agent".into());
        assert!(!drops_a_watch(&file_gone, &armed));
    }
}
