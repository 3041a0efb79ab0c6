//! The config on disk: one way to read, hash, validate and report it, used by every mode
//! (`--once`, `--dry-run`, the daemon).
//!
//! The daemon re-reads the file on every hint and every resync; hashing the bytes lets it
//! skip validating a file that did not change (100,000 entries take a noticeable fraction of
//! a second to validate). The [`Source`] trait is what the daemon sees, so its decisions can
//! be tested with configs held in memory.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use super::merge::merge;
use super::{ConfigError, DIR_FILE_PREFIX, Loaded, PolicyFlags, validate};

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
/// defaults) and ip-masq-agent-v2 reads a directory (every regular file whose name starts
/// with `ip-masq`, in name order), merged.
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
    /// regular files in name order.
    fn files(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let mut out = Vec::new();
        for (path, &dir) in self.paths.iter().zip(&self.dirs) {
            if dir && path.is_dir() {
                out.extend(dir_files(path)?);
            } else {
                out.push(path.clone());
            }
        }
        Ok(out)
    }

    /// Reads every file that exists, within one size budget for them all.
    fn read(&self) -> Result<Vec<(PathBuf, Vec<u8>)>, ConfigError> {
        let mut budget = self.flags.max_config_bytes();
        let mut out = Vec::new();
        for path in self.files()? {
            if let Some(bytes) = read_bounded(&path, budget)? {
                budget -= bytes.len() as u64;
                out.push((path, bytes));
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

/// The `ip-masq*` regular files of a directory, in name order (kubelet's `..data` machinery
/// and anything else there is not config).
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
        // Followed: a ConfigMap's files are symlinks through `..data`.
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        out.push(path);
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

/// Reads a regular file of at most `max` bytes; `None` when it does not exist.
pub fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
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
    let kind = if ty.is_file() {
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
    };
    if let Some(kind) = kind {
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
