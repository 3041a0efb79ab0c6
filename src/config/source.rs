//! Where a config comes from: the files on disk, with one way to read, hash, validate and
//! report them, used by every mode (`--once`, `--dry-run`, the daemon); or one file's bytes
//! already in hand ([`parse`], [`parse_str`]).
//!
//! The daemon re-reads the file on every hint and every resync; hashing the bytes lets it
//! skip validating a file that did not change (100,000 entries take a noticeable fraction of
//! a second to validate). The [`Source`] trait is what the daemon sees, so its decisions can
//! be tested with configs held in memory.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use super::merge::merge;
use super::{ConfigError, DIR_FILE_PREFIX, Loaded, PolicyFlags, validate};

/// Validates the bytes of one config file into the whole config (defaults for what it does
/// not set); `path` is only used in messages.
pub fn parse(bytes: &[u8], path: &Path, flags: &PolicyFlags) -> Result<Loaded, ConfigError> {
    let parsed = validate::parse_file(bytes, path, flags)?;
    merge(vec![(path.to_path_buf(), parsed)], flags)
}

/// Validates config text into the whole config; `path` is only used in messages.
pub fn parse_str(text: &str, path: &Path, flags: &PolicyFlags) -> Result<Loaded, ConfigError> {
    let parsed = validate::parse_file_str(text, path, flags)?;
    merge(vec![(path.to_path_buf(), parsed)], flags)
}

/// What a re-read found.
#[derive(Debug)]
pub enum Update {
    /// The bytes are the same as last time: nothing to validate.
    Unchanged,
    /// A valid config (or no file at all: the defaults).
    Loaded(Loaded),
    /// The file cannot be read or is invalid; the caller keeps what it had.
    Failed(ConfigError),
}

/// Where the daemon's config comes from.
pub trait Source {
    /// Reads and validates the config now, whatever was read before.
    fn load(&mut self) -> Result<Loaded, ConfigError>;

    /// Reads the config again; [`Update::Unchanged`] when its bytes did not change since the
    /// last read.
    fn reload(&mut self) -> Update;

    /// The config's location, for the log.
    fn describe(&self) -> String;
}

/// The most config files one directory may hold.
pub const MAX_DIR_FILES: usize = 64;

/// The config files at some paths, as ip-masq-agent reads one (a missing file means the
/// defaults) and ip-masq-agent-v2 reads a directory (every file whose name starts with
/// `ip-masq`, in name order), merged. Every `ip-masq*` entry of a directory is read, or the
/// whole read fails (see `dir_files`).
#[derive(Debug, Clone)]
pub struct ConfigSource {
    paths: Vec<PathBuf>,
    /// Which paths stand for a directory, decided once when the source is made: a path that
    /// is a directory then, or ends in `/`. A file path that later turns into a directory
    /// (a broken volume mount, a swapped symlink) is then a read error that keeps the last
    /// good config, not an empty directory whose "no file at all" would commit the defaults.
    dirs: Vec<bool>,
    flags: PolicyFlags,
    /// Hash of what the last read saw (`None`: never read, or it failed).
    last: Option<u64>,
}

impl ConfigSource {
    /// The config at one path (a file or a directory), validated against `flags`.
    pub fn new(path: impl Into<PathBuf>, flags: PolicyFlags) -> ConfigSource {
        ConfigSource::with_paths(vec![path.into()], flags)
    }

    /// The config at several paths, merged in order.
    pub fn with_paths(paths: Vec<PathBuf>, flags: PolicyFlags) -> ConfigSource {
        let dirs = paths
            .iter()
            .map(|p| p.is_dir() || p.as_os_str().as_encoded_bytes().ends_with(b"/"))
            .collect();
        ConfigSource {
            paths,
            dirs,
            flags,
            last: None,
        }
    }

    /// The paths given.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The files the paths stand for now: a file path as it is, a directory's `ip-masq*`
    /// files in name order, each with the directory it was listed in.
    fn files(&self) -> Result<Vec<(PathBuf, Option<&Path>)>, ConfigError> {
        let mut out = Vec::new();
        for (path, &dir) in self.paths.iter().zip(&self.dirs) {
            if dir && path.is_dir() {
                out.extend(
                    dir_files(path)?
                        .into_iter()
                        .map(|f| (f, Some(path.as_path()))),
                );
            } else {
                out.push((path.clone(), None));
            }
        }
        Ok(out)
    }

    /// Reads every file that exists, within one size budget for them all.
    fn read(&self) -> Result<Vec<(PathBuf, Vec<u8>)>, ConfigError> {
        let mut budget = self.flags.max_config_bytes();
        let mut out = Vec::new();
        for (path, listed_in) in self.files()? {
            match read_bounded(&path, budget)? {
                Some(bytes) => {
                    budget -= bytes.len() as u64;
                    out.push((path, bytes));
                }
                // A file path that does not exist contributes nothing (ip-masq-agent's "no
                // file"); a directory's entry gone between the listing and the read is judged
                // as the listing judges one.
                None => {
                    if let Some(dir) = listed_in {
                        absent_entry(dir, &path)?;
                    }
                }
            }
        }
        Ok(out)
    }

    fn validate(&self, files: &[(PathBuf, Vec<u8>)]) -> Result<Loaded, ConfigError> {
        if files.is_empty() {
            // No file: the defaults, held to the same limits as any config (a --max-prefixes
            // below the default list's prefixes refuses them, as it does for an empty file).
            let mut l = merge(Vec::new(), &self.flags).map_err(|e| match e {
                ConfigError::Merged { problems, .. } => ConfigError::Invalid {
                    path: PathBuf::from(self.describe()),
                    problems,
                },
                other => other,
            })?;
            l.notes.insert(
                0,
                format!("no config file at {}: using defaults", self.describe()),
            );
            return Ok(l);
        }
        let mut parsed = Vec::with_capacity(files.len());
        for (path, bytes) in files {
            parsed.push((
                path.clone(),
                validate::parse_file(bytes, path, &self.flags)?,
            ));
        }
        merge(parsed, &self.flags)
    }
}

/// The name of kubelet's link to the current version of a ConfigMap volume's data.
const KUBELET_DATA: &str = "..data";

/// The `ip-masq*` files of a directory, in name order (kubelet's `..data` machinery and
/// anything else there is not config). Symlinks are followed: a ConfigMap's files are
/// symlinks through `..data`.
///
/// Every `ip-masq*` entry is a file of the config or the whole read fails, naming it and the
/// cause, as for a single file path (issue 17, finding 5): one that cannot be looked at (a
/// symlink loop, EACCES, EIO), one that is not a regular file (a directory, a FIFO), a
/// dangling symlink. Dropping it would commit a policy made of the other files, which nobody
/// wrote. Two kinds of missing entry are not errors, since they are not in the config:
/// - an entry gone between the listing and the look at it (deleted, renamed away);
/// - kubelet's link `NAME -> ..data/NAME` while `..data` is a directory without `NAME`: the
///   ConfigMap's current data does not hold that key. kubelet leaves such a link for a
///   moment during every update that removes a key (the `..data` rename comes before the
///   removal of the old links) and, in older versions, that adds one (the new links come
///   before the rename); the watch reports the step that follows.
fn dir_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(DIR_FILE_PREFIX) {
            continue;
        }
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(m) => match not_a_file(m.file_type()) {
                None => out.push(path),
                Some(kind) => return Err(ConfigError::NotAFile { path, kind }),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => absent_entry(dir, &path)?,
            Err(source) => return Err(ConfigError::Read { path, source }),
        }
    }
    if out.len() > MAX_DIR_FILES {
        return Err(ConfigError::TooManyFiles {
            path: dir.to_path_buf(),
            count: out.len(),
            max: MAX_DIR_FILES,
        });
    }
    out.sort();
    Ok(out)
}

/// An `ip-masq*` entry of `dir` whose target was not found: `Ok` when it is not part of the
/// config (gone, or kubelet's link to a key the current data does not hold; see
/// [`dir_files`]), else the error that fails the read.
fn absent_entry(dir: &Path, path: &Path) -> Result<(), ConfigError> {
    let target = match std::fs::read_link(path) {
        Ok(target) => target,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        // There, but not a symlink: it was replaced since its target was looked for. The
        // next event re-reads it; this read cannot tell what it holds.
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let Some(name) = path.file_name() else {
        return Ok(());
    };
    let data = dir.join(KUBELET_DATA);
    let key_not_in_data = target == Path::new(KUBELET_DATA).join(name)
        && std::fs::metadata(&data).is_ok_and(|m| m.is_dir())
        && std::fs::symlink_metadata(data.join(name))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
    if key_not_in_data {
        return Ok(());
    }
    Err(ConfigError::Dangling {
        path: path.to_path_buf(),
        target,
    })
}

/// What a file type is when it is not a regular file, for messages; `None` for a regular
/// file.
fn not_a_file(ty: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if ty.is_file() {
        None
    } else if ty.is_dir() {
        Some("a directory")
    } else if ty.is_fifo() {
        Some("a FIFO")
    } else if ty.is_char_device() {
        Some("a character device")
    } else if ty.is_block_device() {
        Some("a block device")
    } else if ty.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Reads a regular file of at most `max` bytes; `None` when it does not exist.
pub fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    // What was opened (symlinks followed), not what the path said a moment before.
    let ty = file.metadata().map_err(read_err)?.file_type();
    if let Some(kind) = not_a_file(ty) {
        return Err(ConfigError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    let mut bytes = Vec::new();
    // One byte more than allowed tells a file at the limit from one over it, whatever its
    // size said (it may grow while we read).
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > max {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(Some(bytes))
}

fn hash_of(files: &[(PathBuf, Vec<u8>)]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    files.hash(&mut h);
    h.finish()
}

impl Source for ConfigSource {
    fn load(&mut self) -> Result<Loaded, ConfigError> {
        self.last = None;
        match self.reload() {
            Update::Loaded(l) => Ok(l),
            Update::Failed(e) => Err(e),
            Update::Unchanged => unreachable!("the first read is never unchanged"),
        }
    }

    fn reload(&mut self) -> Update {
        let files = match self.read() {
            Ok(f) => f,
            Err(e) => {
                self.last = None;
                return Update::Failed(e);
            }
        };
        let hash = hash_of(&files);
        if self.last == Some(hash) {
            return Update::Unchanged;
        }
        self.last = Some(hash);
        match self.validate(&files) {
            Ok(l) => Update::Loaded(l),
            Err(e) => Update::Failed(e),
        }
    }

    fn describe(&self) -> String {
        let names: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nma-src-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn missing_file_means_defaults_with_a_note() {
        let mut s = ConfigSource::new("/nonexistent/ip-masq-agent", PolicyFlags::default());
        let l = s.load().unwrap();
        assert_eq!(l.config, Config::defaults(&PolicyFlags::default()));
        assert!(l.config.files.is_empty());
        assert!(l.notes[0].contains("no config file at /nonexistent/ip-masq-agent"));
    }

    #[test]
    fn a_file_path_turned_directory_is_an_error_not_the_defaults() {
        // The CI find: a file path swapped for an (empty) directory read as a config
        // directory with no files, and the defaults replaced a working policy.
        let dir = scratch("turned");
        let file = dir.join("ip-masq-agent");
        std::fs::write(&file, "nonMasqueradeCIDRs: [10.0.0.0/8]\n").unwrap();
        let mut s = ConfigSource::new(&file, PolicyFlags::default());
        assert!(s.load().is_ok());
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        let err = s.load().unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        // A directory given as one (it is one at start, or the path ends in `/`) is read.
        let mut d = ConfigSource::new(&file, PolicyFlags::default());
        assert!(d.load().unwrap().notes[0].contains("no config file"));
        let later = dir.join("later/");
        let mut l = ConfigSource::new(&later, PolicyFlags::default());
        std::fs::create_dir(&later).unwrap();
        std::fs::write(
            later.join("ip-masq-a"),
            "nonMasqueradeCIDRs: [10.0.0.0/8]\n",
        )
        .unwrap();
        assert_eq!(l.load().unwrap().config.files.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_defaults_are_held_to_the_prefix_cap() {
        // The gap the config fuzz target found for an empty file (the flags byte alone:
        // --max-prefixes 1 and no text accepted the 4 default prefixes), for no file at all.
        let cap = PolicyFlags {
            max_prefixes: 3,
            ..PolicyFlags::default()
        };
        let err = ConfigSource::new("/nonexistent/ip-masq-agent", cap)
            .load()
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/ip-masq-agent"), "{text}");
        assert!(text.contains("more than --max-prefixes (3)"), "{text}");
    }

    #[test]
    fn unreadable_path_is_a_read_error_naming_it_with_its_cause() {
        let dir = scratch("unreadable");
        // A symlink loop: root can read anything else.
        let path = dir.join("ip-masq-agent");
        std::os::unix::fs::symlink(&path, &path).unwrap();
        let err = ConfigSource::new(&path, PolicyFlags::default())
            .load()
            .unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains(&path.display().to_string()));
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(cause.contains("symbolic links"), "{cause}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_regular_files_are_read_and_only_up_to_the_cap() {
        let dir = scratch("bounds");
        // A FIFO with no writer: opening it must not block, and it is refused.
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let err = read_bounded(&fifo, 1024).unwrap_err();
        assert!(
            err.to_string().contains("is a FIFO, not a regular file"),
            "{err}"
        );
        // A device that never ends, reached through a symlink.
        let zero = dir.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let err = read_bounded(&zero, 1024).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        // A directory.
        let err = read_bounded(&dir, 1024).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        // The cap, exactly.
        let f = dir.join("f");
        std::fs::write(&f, vec![b'#'; 1024]).unwrap();
        assert_eq!(read_bounded(&f, 1024).unwrap().unwrap().len(), 1024);
        let err = read_bounded(&f, 1023).unwrap_err();
        assert!(err.to_string().contains("larger than 1023 bytes"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A config directory as ip-masq-agent-v2 has it: the user's file, the provider's, and a
    /// file that is not config.
    fn two_file_dir(name: &str) -> PathBuf {
        let dir = scratch(name);
        std::fs::write(
            dir.join("ip-masq-agent"),
            "nonMasqueradeCIDRs: [10.0.0.0/8]\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("ip-masq-agent-reconciled"),
            "nonMasqueradeCIDRs: [100.64.0.0/10]\n",
        )
        .unwrap();
        std::fs::write(dir.join("other"), "not: [config]\n").unwrap();
        dir
    }

    fn merged(l: &Loaded) -> Vec<String> {
        crate::config::values(&l.config.non_masquerade_cidrs)
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn an_unreadable_entry_of_a_config_directory_fails_the_whole_read() {
        // Issue 17, finding 5: the user's file became a symlink loop and the provider's file
        // was committed alone (10/8 masqueraded from then on).
        let dir = two_file_dir("dir-loop");
        let mut s = ConfigSource::new(&dir, PolicyFlags::default());
        let Update::Loaded(l) = s.reload() else {
            panic!("the directory did not load")
        };
        assert_eq!(merged(&l), ["10.0.0.0/8", "100.64.0.0/10"]);
        let user = dir.join("ip-masq-agent");
        std::fs::remove_file(&user).unwrap();
        std::os::unix::fs::symlink(&user, &user).unwrap();
        let Update::Failed(err) = s.reload() else {
            panic!("a directory with a symlink loop in it was read")
        };
        assert!(err.is_unreadable());
        let text = err.to_string();
        assert!(text.contains(&user.display().to_string()), "{text}");
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(cause.contains("(os error 40)"), "{cause}");
        assert!(s.load().is_err());
        // Back: read again, both files.
        std::fs::remove_file(&user).unwrap();
        std::fs::write(&user, "nonMasqueradeCIDRs: [10.0.0.0/8]\n").unwrap();
        let Update::Loaded(l) = s.reload() else {
            panic!("the mended directory did not load")
        };
        assert_eq!(merged(&l), ["10.0.0.0/8", "100.64.0.0/10"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_dangling_link_a_directory_or_a_fifo_in_a_config_directory_fails_the_read() {
        let dir = two_file_dir("dir-kinds");
        let user = dir.join("ip-masq-agent");
        std::fs::remove_file(&user).unwrap();
        // A dangling link.
        std::os::unix::fs::symlink("/nonexistent/ip-masq-agent", &user).unwrap();
        let err = ConfigSource::new(&dir, PolicyFlags::default())
            .load()
            .unwrap_err();
        assert!(err.is_unreadable());
        assert_eq!(
            err.to_string(),
            format!(
                "config file {} is a symbolic link to /nonexistent/ip-masq-agent, which does \
                 not exist",
                user.display()
            )
        );
        // A directory, directly or through a link.
        std::fs::remove_file(&user).unwrap();
        std::fs::create_dir(&user).unwrap();
        let err = ConfigSource::new(&dir, PolicyFlags::default())
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        std::fs::remove_dir(&user).unwrap();
        std::os::unix::fs::symlink(&dir, &user).unwrap();
        let err = ConfigSource::new(&dir, PolicyFlags::default())
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        // A FIFO: refused without opening it (which would wait for a writer).
        std::fs::remove_file(&user).unwrap();
        let made = std::process::Command::new("mkfifo").arg(&user).status();
        assert!(made.unwrap().success());
        let err = ConfigSource::new(&dir, PolicyFlags::default())
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("is a FIFO"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn entries_not_named_ip_masq_stay_ignored_whatever_they_are() {
        let dir = two_file_dir("dir-others");
        for name in ["loop", "..data", "README"] {
            let p = dir.join(name);
            let _ = std::fs::remove_file(&p);
            std::os::unix::fs::symlink(&p, &p).unwrap();
        }
        std::fs::create_dir(dir.join("..2026_01_01_00_00_00.1")).unwrap();
        let l = ConfigSource::new(&dir, PolicyFlags::default())
            .load()
            .unwrap();
        assert_eq!(merged(&l), ["10.0.0.0/8", "100.64.0.0/10"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A ConfigMap volume's layout: `..data -> ..TS`, `KEY -> ..data/KEY`.
    fn configmap(dir: &Path, ts: &str, files: &[(&str, &str)]) {
        let ts_dir = dir.join(ts);
        std::fs::create_dir(&ts_dir).unwrap();
        for (name, text) in files {
            std::fs::write(ts_dir.join(name), text).unwrap();
        }
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(ts, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(KUBELET_DATA)).unwrap();
    }

    fn key_link(dir: &Path, name: &str) {
        std::os::unix::fs::symlink(Path::new(KUBELET_DATA).join(name), dir.join(name)).unwrap();
    }

    #[test]
    fn kubelets_link_to_a_key_the_data_does_not_hold_is_no_error() {
        // kubelet's update removing the key ip-masq-extra: after the `..data` rename and
        // before the old link is removed, `ip-masq-extra -> ..data/ip-masq-extra` points at
        // nothing. That is the new data without the key, not an unreadable file.
        let dir = scratch("kubelet");
        configmap(
            &dir,
            "..ts1",
            &[
                ("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n"),
                ("ip-masq-extra", "nonMasqueradeCIDRs: [100.64.0.0/10]\n"),
            ],
        );
        key_link(&dir, "ip-masq-agent");
        key_link(&dir, "ip-masq-extra");
        let mut s = ConfigSource::new(&dir, PolicyFlags::default());
        assert_eq!(merged(&s.load().unwrap()), ["10.0.0.0/8", "100.64.0.0/10"]);
        configmap(
            &dir,
            "..ts2",
            &[("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n")],
        );
        let Update::Loaded(l) = s.reload() else {
            panic!("the swap's intermediate state did not load")
        };
        assert_eq!(merged(&l), ["10.0.0.0/8"]);
        // The same link with `..data` itself gone is not kubelet's state: an error.
        std::fs::remove_file(dir.join(KUBELET_DATA)).unwrap();
        std::os::unix::fs::symlink("..ts2", dir.join(KUBELET_DATA)).unwrap();
        std::fs::remove_dir_all(dir.join("..ts2")).unwrap();
        let Update::Failed(err) = s.reload() else {
            panic!("links into a missing ..data were read as no files")
        };
        assert!(matches!(err, ConfigError::Dangling { .. }), "{err}");
        // A link elsewhere that dangles is an error even with a good `..data`.
        configmap(
            &dir,
            "..ts3",
            &[("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n")],
        );
        std::fs::remove_file(dir.join("ip-masq-extra")).unwrap();
        std::os::unix::fs::symlink("..ts1/ip-masq-gone", dir.join("ip-masq-extra")).unwrap();
        let Update::Failed(err) = s.reload() else {
            panic!("a dangling link was dropped")
        };
        assert!(err.to_string().contains("..ts1/ip-masq-gone"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_entry_gone_since_the_listing_is_not_part_of_the_config() {
        let dir = scratch("gone");
        assert!(absent_entry(&dir, &dir.join("ip-masq-agent")).is_ok());
        std::os::unix::fs::symlink("elsewhere", dir.join("ip-masq-agent")).unwrap();
        assert!(absent_entry(&dir, &dir.join("ip-masq-agent")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unchanged_bytes_are_not_validated_again_and_a_change_is() {
        let dir = scratch("reload");
        let path = dir.join("ip-masq-agent");
        std::fs::write(&path, "nonMasqueradeCIDRs: [10.0.0.0/8]\n").unwrap();
        let mut s = ConfigSource::new(&path, PolicyFlags::default());
        assert!(matches!(s.reload(), Update::Loaded(_)));
        assert!(matches!(s.reload(), Update::Unchanged));
        std::fs::write(&path, "nonMasqueradeCIDRs: [10.0.0.0/9]\n").unwrap();
        let Update::Loaded(l) = s.reload() else {
            panic!("changed file not loaded")
        };
        assert_eq!(
            crate::config::values(&l.config.non_masquerade_cidrs)
                .copied()
                .collect::<Vec<_>>(),
            ["10.0.0.0/9".parse::<ipnet::IpNet>().unwrap()]
        );
        // A bad file is reported once; load() always validates.
        std::fs::write(&path, "nonMasqueradeCIDRs: [nope]\n").unwrap();
        assert!(matches!(s.reload(), Update::Failed(_)));
        assert!(matches!(s.reload(), Update::Unchanged));
        assert!(s.load().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
