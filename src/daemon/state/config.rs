//! The config state ([`Wanted`]): the config the agent follows (the last good one), the table
//! it asks for, why the file's current contents are not in force (the error, kept as the
//! error), and where the table in force comes from ([`Fallback`]: a config invalid from the
//! start leaves the defaults or the table found at start).

use std::fmt;
use std::sync::Arc;

use crate::config::{Config, ConfigError, Loaded, PolicyFlags};
use crate::daemon::error::chain;
use crate::model::{self, TABLE_NAME, Table, TableFlags};
use crate::report::jsonlog::error_with_problems;
use crate::report::metrics::PolicySource;

/// Why the table in force is not the operator's: no config has validated since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// There was no table at start: the defaults are in force.
    Defaults,
    /// The table found at start (a previous agent's) is kept as it is.
    Adopted,
}

impl Fallback {
    /// The `policy_source` metric's value.
    pub fn source(self) -> PolicySource {
        match self {
            Fallback::Defaults => PolicySource::Defaults,
            Fallback::Adopted => PolicySource::Adopted,
        }
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fallback::Defaults => {
                "the config file is invalid: the defaults are in force until it is fixed"
            }
            Fallback::Adopted => {
                "the config file is invalid: the table found at start is kept as it is until \
                 the file is fixed"
            }
        })
    }
}

/// What the agent is asked to keep in force.
#[derive(Debug)]
pub struct Wanted {
    flags: PolicyFlags,
    /// The last good config (the defaults until one validates).
    config: Config,
    /// The table the agent keeps in force: the config's, or the one adopted at start.
    table: Table,
    /// Set until a config validates: why the table in force is not the operator's.
    fallback: Option<Fallback>,
    /// The last config error, logged once until its text changes; cleared by a valid one.
    error: Option<Arc<ConfigError>>,
    /// The config paths were given explicitly (`--config`): none of them existing is a
    /// mistake to show (the `missing` policy source), not ip-masq-agent's defaults on purpose.
    explicit: bool,
}

impl Wanted {
    /// The defaults, with `table_flags`, until a config is read.
    pub fn new(flags: PolicyFlags, table_flags: TableFlags) -> Wanted {
        let config = Config::defaults(&flags);
        let table = model::desired(&config, &flags, table_flags);
        Wanted {
            flags,
            config,
            table,
            fallback: None,
            error: None,
            explicit: false,
        }
    }

    /// Says whether the config paths were given explicitly (`--config`).
    pub fn set_explicit(&mut self, explicit: bool) {
        self.explicit = explicit;
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The table the agent keeps in force.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The config's table with `table_flags`.
    pub fn build(&self, table_flags: TableFlags) -> Table {
        model::desired(&self.config, &self.flags, table_flags)
    }

    /// Keeps `table` in force from now on.
    pub fn set_table(&mut self, table: Table) {
        self.table = table;
    }

    /// The kernel refused the table flags: the table carries `flags` from now on.
    pub fn set_flags(&mut self, flags: TableFlags) {
        self.table.flags = flags;
    }

    /// Whether a config has validated since start (the table in force is the operator's).
    pub fn valid(&self) -> bool {
        self.fallback.is_none()
    }

    /// Why the table in force is not the operator's, if it is not.
    pub fn fallback(&self) -> Option<Fallback> {
        self.fallback
    }

    /// Where the table in force comes from.
    pub fn source(&self) -> PolicySource {
        match self.fallback {
            Some(fallback) => fallback.source(),
            // A valid config read from no file is the defaults: on purpose at the default
            // path, a mistake when the paths were given explicitly.
            None if self.explicit && self.config.files.is_empty() => PolicySource::Missing,
            None => PolicySource::Config,
        }
    }

    /// The error while the config cannot be read at all (not while it is read and refused):
    /// the agent cannot tell what the operator asks for, so it is not ready.
    pub fn unreadable(&self) -> Option<Arc<ConfigError>> {
        self.error.clone().filter(|e| e.is_unreadable())
    }

    /// A config validated at start: its notes are logged, and it is in force. `true` when
    /// its resync interval differs from the one before.
    pub fn started(&mut self, loaded: Loaded) -> bool {
        for note in &loaded.notes {
            tracing::info!("{note}");
        }
        self.set(loaded.config)
    }

    /// A config validated on a re-read (`source` names it): said when it was invalid
    /// before, its notes logged when it changed, and it is in force. `true` when its resync
    /// interval changed.
    pub fn reloaded(&mut self, loaded: Loaded, source: &str) -> bool {
        if self.error.take().is_some() {
            tracing::info!("config {source} is valid again");
        }
        if loaded.config != self.config {
            for note in &loaded.notes {
                tracing::info!("{note}");
            }
        }
        self.set(loaded.config)
    }

    fn set(&mut self, config: Config) -> bool {
        let interval_changed = config.resync_interval != self.config.resync_interval;
        self.config = config;
        self.fallback = None;
        interval_changed
    }

    /// A re-read failed: the last good config stays in force. Logged when the error's text
    /// changed (the cause is part of it, so a change of cause is logged too).
    pub fn failed(&mut self, e: ConfigError) {
        let text = chain(&e);
        if self.error.as_deref().map(|old| chain(old)).as_ref() != Some(&text) {
            let ready = if e.is_unreadable() {
                "; not ready until it can be read"
            } else {
                ""
            };
            error_with_problems(
                &text,
                &format!(
                    "; keeping the last good config ({} prefixes in force){ready}",
                    self.table.prefix_count()
                ),
            );
        }
        self.error = Some(Arc::new(e));
    }

    /// The config is invalid at start: `found`, the table a previous agent left, is kept
    /// exactly as it is; where there is none the defaults are, so a node never goes without
    /// masquerading. Says so loudly either way.
    pub fn invalid_at_start(
        &mut self,
        e: ConfigError,
        found: Option<Table>,
        table_flags: TableFlags,
    ) -> Fallback {
        let error = chain(&e);
        self.error = Some(Arc::new(e));
        let fallback = match found {
            Some(live) => {
                error_with_problems(
                    &error,
                    &format!(
                        "; KEEPING TABLE inet {TABLE_NAME} AS IT IS ({} prefixes, adopted from \
                         before this start) until the file is fixed",
                        live.prefix_count()
                    ),
                );
                self.table = live;
                Fallback::Adopted
            }
            None => {
                // ip-masq-agent installs nothing for a whole resync period in this case; a
                // node without masquerade rules loses egress, so we run the defaults, say
                // so loudly, and stay not ready (a rollout with a broken ConfigMap stalls).
                error_with_problems(
                    &error,
                    "; STARTING WITH THE DEFAULT CONFIG until the file is fixed",
                );
                self.table = self.build(table_flags);
                Fallback::Defaults
            }
        };
        self.fallback = Some(fallback);
        fallback
    }
}
