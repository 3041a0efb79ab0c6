//! Config files as Kubernetes delivers them: a ConfigMap volume, updated atomically.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The key ip-masq-agent's ConfigMap uses, and the file name the agent reads.
pub const KEY: &str = "ip-masq-agent";

/// A config directory laid out as kubelet writes a ConfigMap volume: one symlink per key
/// (`ip-masq-agent -> ..data/ip-masq-agent`), `..data -> ..<timestamp>`, the timestamped
/// directory holding the files. Directories are mode 0755 and files 0644 (kubelet's
/// `defaultMode`), so a non-root agent reads them.
pub struct ConfigMap {
    dir: PathBuf,
    generation: u64,
    /// Timestamped directories published and not yet removed (the last is current).
    versions: Vec<String>,
    /// Keys with a symlink in the directory.
    linked: Vec<String>,
}

impl ConfigMap {
    /// The volume at `dir` (created) with one key, `ip-masq-agent`, holding `text`.
    pub fn new(dir: impl Into<PathBuf>, text: &str) -> ConfigMap {
        ConfigMap::with_files(dir, &[(KEY, text)])
    }

    /// The volume at `dir` (created) with these keys and contents.
    pub fn with_files(dir: impl Into<PathBuf>, files: &[(&str, &str)]) -> ConfigMap {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut c = ConfigMap {
            dir,
            generation: 0,
            versions: Vec::new(),
            linked: Vec::new(),
        };
        c.update_files(files);
        c
    }

    /// The volume's directory (what `--config` names for several keys).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `ip-masq-agent` key's path (what `--config` names).
    pub fn path(&self) -> PathBuf {
        self.dir.join(KEY)
    }

    /// An update of the `ip-masq-agent` key, as kubelet makes it; when the new data became
    /// visible (just before the `..data` rename).
    pub fn update(&mut self, text: &str) -> Instant {
        self.update_files(&[(KEY, text)])
    }

    /// An update to exactly these keys: [`ConfigMap::publish`], then [`ConfigMap::finish`].
    pub fn update_files(&mut self, files: &[(&str, &str)]) -> Instant {
        let at = self.publish(files);
        self.finish();
        at
    }

    /// kubelet's atomic writer up to the swap: a new timestamped directory with the files,
    /// a `..data_tmp` symlink to it renamed over `..data`, then a symlink for each new key.
    /// Keys no longer in the data keep their (now dangling) links until
    /// [`ConfigMap::finish`]. Returns the time just before the rename.
    pub fn publish(&mut self, files: &[(&str, &str)]) -> Instant {
        self.generation += 1;
        let ts = format!("..2026_11_25_12_00_00.{:04}", self.generation);
        let new = self.dir.join(&ts);
        std::fs::create_dir(&new).unwrap_or_else(|e| panic!("{}: {e}", new.display()));
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{}: {e}", new.display()));
        for (key, text) in files {
            let f = new.join(key);
            std::fs::write(&f, text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&ts, &tmp).expect("..data_tmp symlink");
        let at = Instant::now();
        std::fs::rename(&tmp, self.dir.join("..data")).expect("rename ..data_tmp over ..data");
        self.versions.push(ts);
        for (key, _) in files {
            if !self.linked.iter().any(|k| k == key) {
                std::os::unix::fs::symlink(format!("..data/{key}"), self.dir.join(key))
                    .unwrap_or_else(|e| panic!("symlink for key {key}: {e}"));
                self.linked.push(key.to_string());
            }
        }
        at
    }

    /// kubelet's last steps: the links of keys the current data no longer has, and the
    /// older timestamped directories, removed.
    pub fn finish(&mut self) {
        let Some(current) = self.versions.last().cloned() else {
            return;
        };
        let dir = self.dir.clone();
        self.linked.retain(|key| {
            let keep = dir.join(&current).join(key).exists();
            if !keep {
                let _ = std::fs::remove_file(dir.join(key));
            }
            keep
        });
        for old in self.versions.drain(..self.versions.len() - 1) {
            std::fs::remove_dir_all(self.dir.join(&old))
                .unwrap_or_else(|e| panic!("remove {old}: {e}"));
        }
    }
}

/// Replaces `path` with `text` atomically (a file beside it, renamed over it), as an editor
/// or a ConfigMap update does: the agent never reads a half-written file.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("nma-tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config into place");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_swap_data_and_keys_follow_kubelet() {
        let dir = std::env::temp_dir().join(format!("nma-testkit-cm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cm = ConfigMap::with_files(&dir, &[(KEY, "a: 1\n"), ("ip-masq-extra", "b: 2\n")]);
        assert_eq!(std::fs::read_to_string(cm.path()).unwrap(), "a: 1\n");
        assert_eq!(
            std::fs::read_link(cm.path()).unwrap(),
            PathBuf::from("..data/ip-masq-agent")
        );
        // The extra key goes: its link dangles until the update finishes.
        cm.publish(&[(KEY, "a: 2\n")]);
        assert_eq!(std::fs::read_to_string(cm.path()).unwrap(), "a: 2\n");
        assert!(std::fs::symlink_metadata(dir.join("ip-masq-extra")).is_ok());
        assert!(!dir.join("ip-masq-extra").exists());
        cm.finish();
        assert!(std::fs::symlink_metadata(dir.join("ip-masq-extra")).is_err());
        let mut entries: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(
            entries,
            ["..2026_11_25_12_00_00.0002", "..data", "ip-masq-agent"]
        );
        cm.update("a: 3\n");
        assert_eq!(std::fs::read_to_string(cm.path()).unwrap(), "a: 3\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
