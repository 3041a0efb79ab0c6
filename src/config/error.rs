//! Why a config could not be used: [`ConfigError`], and the [`Problem`]s a refused file
//! lists (each naming its key and value).

use std::fmt;
use std::path::{Path, PathBuf};

use super::CONFIG_BYTES_PER_PREFIX;

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, with the list index where there is one (`nonMasqueradeCIDRs[2]`).
    pub key: String,
    /// The offending value, rendered compactly, when there is one.
    pub value: Option<String>,
    /// What is wrong, for people.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{} = {}: {}", self.key, v, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Why a config could not be used. The previous ruleset stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An `ip-masq*` entry of a config directory is a symlink to nothing (and not kubelet's
    /// link to a key the ConfigMap no longer holds).
    #[error("config file {path} is a symbolic link to {target}, which does not exist")]
    Dangling {
        /// The entry.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// The path is not a regular file (a directory, a FIFO, a device): never read, since a
    /// FIFO would block the agent and a device could feed it without end.
    #[error("config path {path} is {kind}, not a regular file")]
    NotAFile {
        /// The config path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file is larger than what is left of the size budget the files share
    /// ([`PolicyFlags::max_config_bytes`](super::PolicyFlags::max_config_bytes) minus the files read before it).
    #[error(
        "config file {path} is larger than {max} bytes (the limit follows --max-prefixes: \
         {per} bytes per prefix, at least 1 MiB)",
        per = CONFIG_BYTES_PER_PREFIX
    )]
    TooLarge {
        /// The config path.
        path: PathBuf,
        /// What was left of the budget when this file was read.
        max: u64,
    },
    /// A config directory holds more files than the agent reads.
    #[error("config directory {path} holds {count} ip-masq* files; at most {max} are read")]
    TooManyFiles {
        /// The directory.
        path: PathBuf,
        /// How many it holds.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Two files set a key that must agree to different values.
    #[error(
        "{key} is set to different values in {first} ({first_value}) and {second} \
         ({second_value}); set it in one file, or to the same value"
    )]
    Conflict {
        /// The key.
        key: &'static str,
        /// The file that set it first.
        first: PathBuf,
        /// Its value there.
        first_value: String,
        /// The file that sets it differently.
        second: PathBuf,
        /// Its value there.
        second_value: String,
    },
    /// The files are each valid, but what they make together is not.
    #[error("invalid config (merged from {}): {}", Paths(paths), ProblemList { path: Path::new("merged"), problems })]
    Merged {
        /// The files merged.
        paths: Vec<PathBuf>,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// The file was read and has one or more problems; all of them are listed.
    #[error("invalid config file {path}: {}", ProblemList { path, problems })]
    Invalid {
        /// The config path.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

struct Paths<'a>(&'a [PathBuf]);

impl fmt::Display for Paths<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.0.iter().map(|p| p.display().to_string()).collect();
        f.write_str(&names.join(", "))
    }
}

struct ProblemList<'a> {
    path: &'a Path,
    problems: &'a [Problem],
}

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{n} problem{}", if n == 1 { "" } else { "s" })?;
        for p in self.problems {
            write!(f, "\n  {}: {p}", self.path.display())?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// Whether the config could not be read at all (an I/O error, not a regular file, a
    /// dangling link): the agent cannot tell what it asks for, unlike a config it read and
    /// refused.
    pub fn is_unreadable(&self) -> bool {
        matches!(
            self,
            ConfigError::Read { .. } | ConfigError::NotAFile { .. } | ConfigError::Dangling { .. }
        )
    }

    /// The individual problems (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } | ConfigError::Merged { problems, .. } => {
                problems
            }
            _ => &[],
        }
    }
}
