//! Whether the process holds CAP_NET_ADMIN, and what to tell the operator when it does not.
//!
//! Every nf_tables request needs CAP_NET_ADMIN in the network namespace. Without it the
//! kernel answers each one with EPERM, which says nothing about why the capability is
//! missing. In the shipped image the agent runs as UID 65532 and gets the capability from
//! the file capability on its binary (the `security.capability` extended attribute), so
//! the usual causes are an image builder that dropped that attribute and a runtime that
//! empties the permitted set of non-root users. [`assess`] decides from the capability lines
//! of `/proc/self/status` (pure, tested on sample texts) and builds the explanation;
//! [`require_net_admin`] reads the file and applies it at start-up.

use std::fmt;

/// CAP_NET_ADMIN's bit in the capability masks of `/proc/PID/status`.
pub const CAP_NET_ADMIN: u32 = 12;

/// Where the process's own status is read from.
pub const STATUS_PATH: &str = "/proc/self/status";

/// The capability sets of a process, as the `Cap*` lines of `/proc/PID/status` show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSets {
    /// `CapInh`: kept across execve when the file's inheritable set has them too.
    pub inheritable: u64,
    /// `CapPrm`: what the process may make effective.
    pub permitted: u64,
    /// `CapEff`: what the kernel checks.
    pub effective: u64,
    /// `CapBnd`: the most any execve can grant.
    pub bounding: u64,
    /// `CapAmb`: kept across execve of files without capabilities.
    pub ambient: u64,
}

/// `/proc/self/status` did not have the expected lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// A line the kernel always writes is missing.
    #[error("no {0} line in {STATUS_PATH}")]
    Missing(&'static str),
    /// A line that is not what the kernel writes.
    #[error("cannot read the {field} line of {STATUS_PATH}: {value:?}")]
    Malformed {
        /// The field name (`CapEff`, `Uid`, ...).
        field: &'static str,
        /// The text after the colon.
        value: String,
    },
}

fn field<'a>(status: &'a str, name: &'static str) -> Result<&'a str, StatusError> {
    status
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key == name).then_some(value.trim())
        })
        .ok_or(StatusError::Missing(name))
}

fn mask(status: &str, name: &'static str) -> Result<u64, StatusError> {
    let value = field(status, name)?;
    u64::from_str_radix(value, 16).map_err(|_| StatusError::Malformed {
        field: name,
        value: value.to_string(),
    })
}

impl CapSets {
    /// Reads the five `Cap*` lines of a `/proc/PID/status` text.
    pub fn parse(status: &str) -> Result<CapSets, StatusError> {
        Ok(CapSets {
            inheritable: mask(status, "CapInh")?,
            permitted: mask(status, "CapPrm")?,
            effective: mask(status, "CapEff")?,
            bounding: mask(status, "CapBnd")?,
            ambient: mask(status, "CapAmb")?,
        })
    }
}

/// The effective user id: the second number of the `Uid:` line of a `/proc/PID/status` text.
pub fn effective_uid(status: &str) -> Result<u32, StatusError> {
    let value = field(status, "Uid")?;
    value
        .split_whitespace()
        .nth(1)
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| StatusError::Malformed {
            field: "Uid",
            value: value.to_string(),
        })
}

/// Why CAP_NET_ADMIN is not effective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Not in the bounding set: the container was started without NET_ADMIN.
    NotInBounding,
    /// Non-root, in the bounding set but not permitted: the file capability on the binary
    /// did not take effect (lost by the image builder, or capped at an empty permitted set
    /// by the runtime under no_new_privs).
    FileCapabilityLost,
    /// Root, in the bounding set but not permitted: something dropped it after start.
    RootWithoutPermitted,
    /// Permitted but not effective: a file capability without the effective flag.
    NotEffective,
}

/// CAP_NET_ADMIN is not effective; `Display` is the explanation for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoNetAdmin {
    /// What is missing where.
    pub cause: Cause,
    /// The process's capability sets.
    pub caps: CapSets,
    /// The process's effective user id.
    pub euid: u32,
}

const PRIVILEGES: &str = "docs/operations.md, \"Privileges\"";

impl fmt::Display for NoNetAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.caps;
        write!(
            f,
            "CAP_NET_ADMIN is not effective (uid {}, CapPrm {:016x}, CapEff {:016x}, CapBnd \
             {:016x}), so the kernel would refuse every nftables request with \"Operation not \
             permitted\"; nothing was changed. ",
            self.euid, c.permitted, c.effective, c.bounding
        )?;
        match self.cause {
            Cause::NotInBounding => write!(
                f,
                "NET_ADMIN is not in the bounding set: the container was started without it. \
                 Add NET_ADMIN to securityContext.capabilities.add, as deploy/base does \
                 ({PRIVILEGES})."
            ),
            Cause::FileCapabilityLost => write!(
                f,
                "As a non-root user the agent gets CAP_NET_ADMIN only from the file capability \
                 on its binary (cap_net_admin=ep, stored in the security.capability extended \
                 attribute), and it did not take effect. Likely causes: the image builder \
                 dropped that attribute (kaniko does; so did Docker's builder before BuildKit), \
                 or the container runtime empties the permitted set of non-root users (Docker \
                 Engine, also through cri-dockerd). Fixes: rebuild the image with a builder \
                 that keeps extended attributes (BuildKit or buildah) and check it as \
                 {PRIVILEGES} shows, or deploy with deploy/components/run-as-root (UID 0, \
                 still only NET_ADMIN), which works with either cause. Outside a container: run \
                 it as root, or give the binary the capability with `setcap cap_net_admin=ep`."
            ),
            Cause::RootWithoutPermitted => write!(
                f,
                "The agent runs as root but CAP_NET_ADMIN is not in its permitted set: the \
                 runtime dropped it. Add NET_ADMIN to securityContext.capabilities.add \
                 ({PRIVILEGES})."
            ),
            Cause::NotEffective => write!(
                f,
                "CAP_NET_ADMIN is permitted but not effective: the binary's file capability \
                 lacks the effective flag. Set it with `setcap cap_net_admin=ep` ({PRIVILEGES})."
            ),
        }
    }
}

/// Decides, from a `/proc/PID/status` text and the effective user id, whether CAP_NET_ADMIN
/// is effective: `Ok(None)` if it is, `Ok(Some(why_not))` if not.
pub fn assess(status: &str, euid: u32) -> Result<Option<NoNetAdmin>, StatusError> {
    let caps = CapSets::parse(status)?;
    let has = |set: u64| set & (1 << CAP_NET_ADMIN) != 0;
    let cause = if has(caps.effective) {
        return Ok(None);
    } else if has(caps.permitted) {
        Cause::NotEffective
    } else if !has(caps.bounding) {
        Cause::NotInBounding
    } else if euid == 0 {
        Cause::RootWithoutPermitted
    } else {
        Cause::FileCapabilityLost
    };
    Ok(Some(NoNetAdmin { cause, caps, euid }))
}

/// Reads [`STATUS_PATH`].
pub fn read_status() -> std::io::Result<String> {
    std::fs::read_to_string(STATUS_PATH)
}

/// Fails with the explanation when this process lacks CAP_NET_ADMIN. When its status cannot
/// be read (no /proc), it logs a warning and lets the kernel decide.
pub fn require_net_admin() -> Result<(), NoNetAdmin> {
    let verdict = read_status()
        .map_err(|e| format!("cannot read {STATUS_PATH}: {e}"))
        .and_then(|status| {
            let euid = effective_uid(&status).map_err(|e| e.to_string())?;
            assess(&status, euid).map_err(|e| e.to_string())
        });
    match verdict {
        Ok(None) => Ok(()),
        Ok(Some(missing)) => Err(missing),
        Err(why) => {
            tracing::warn!("{why}; not checking for CAP_NET_ADMIN before starting");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status text as the kernel writes it, with the given masks.
    fn status(uid: u32, prm: &str, eff: &str, bnd: &str) -> String {
        format!(
            "Name:\tnft-masq-agent\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t42\n\
             Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\n\
             Groups:\t{uid}\nCapInh:\t0000000000000000\nCapPrm:\t{prm}\nCapEff:\t{eff}\n\
             CapBnd:\t{bnd}\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n\
             Seccomp_filters:\t1\n"
        )
    }
    const NET_ADMIN: &str = "0000000000001000";
    const NONE: &str = "0000000000000000";
    const ALL: &str = "000001ffffffffff";

    fn cause(text: &str) -> Option<Cause> {
        let euid = effective_uid(text).unwrap();
        assess(text, euid).unwrap().map(|m| m.cause)
    }

    #[test]
    fn the_daemonset_as_shipped_has_it() {
        // UID 65532, bounding = permitted = effective = {NET_ADMIN} (containerd, CRI-O).
        assert_eq!(cause(&status(65532, NET_ADMIN, NET_ADMIN, NET_ADMIN)), None);
        // run-as-root, and root outside a container.
        assert_eq!(cause(&status(0, NET_ADMIN, NET_ADMIN, NET_ADMIN)), None);
        assert_eq!(cause(&status(0, ALL, ALL, ALL)), None);
    }

    #[test]
    fn docker_engine_or_lost_xattr_names_both_causes_and_both_fixes() {
        // Docker Engine: bounding {NET_ADMIN}, permitted emptied for non-root; a binary
        // without its file capability looks the same.
        let text = status(65532, NONE, NONE, NET_ADMIN);
        let missing = assess(&text, 65532).unwrap().unwrap();
        assert_eq!(missing.cause, Cause::FileCapabilityLost);
        let msg = missing.to_string();
        for needle in [
            "uid 65532",
            "CapPrm 0000000000000000",
            "CapBnd 0000000000001000",
            "security.capability",
            "kaniko",
            "Docker Engine",
            "keeps extended attributes",
            "deploy/components/run-as-root",
            "nothing was changed",
        ] {
            assert!(msg.contains(needle), "{needle:?} not in {msg}");
        }
        // A user shell outside a container: everything bounding, nothing permitted.
        assert_eq!(
            cause(&status(1000, NONE, NONE, ALL)),
            Some(Cause::FileCapabilityLost)
        );
    }

    #[test]
    fn other_causes() {
        assert_eq!(
            cause(&status(65532, NONE, NONE, NONE)),
            Some(Cause::NotInBounding)
        );
        assert_eq!(
            cause(&status(0, NONE, NONE, NONE)),
            Some(Cause::NotInBounding)
        );
        assert_eq!(
            cause(&status(0, NONE, NONE, NET_ADMIN)),
            Some(Cause::RootWithoutPermitted)
        );
        assert_eq!(
            cause(&status(65532, NET_ADMIN, NONE, NET_ADMIN)),
            Some(Cause::NotEffective)
        );
        let msg = assess(&status(65532, NONE, NONE, NONE), 65532)
            .unwrap()
            .unwrap()
            .to_string();
        assert!(msg.contains("capabilities.add"), "{msg}");
    }

    #[test]
    fn only_bit_12_counts() {
        // Everything but NET_ADMIN.
        let all_but = format!("{:016x}", 0x1ff_ffff_ffffu64 & !(1 << CAP_NET_ADMIN));
        assert_eq!(
            cause(&status(0, &all_but, &all_but, &all_but)),
            Some(Cause::NotInBounding)
        );
        assert_eq!(cause(&status(0, "1000", "1000", "1000")), None);
    }

    #[test]
    fn malformed_status_is_an_error_not_a_verdict() {
        assert_eq!(
            assess("Name:\tx\nCapPrm:\t0\n", 0),
            Err(StatusError::Missing("CapInh"))
        );
        let text = status(0, "zz", NONE, NONE);
        assert!(matches!(
            assess(&text, 0),
            Err(StatusError::Malformed {
                field: "CapPrm",
                ..
            })
        ));
        assert_eq!(
            effective_uid("Uid:\t1000\n"),
            Err(StatusError::Malformed {
                field: "Uid",
                value: "1000".into()
            })
        );
        assert_eq!(effective_uid("Uid:\t1000\t0\t0\t0\n"), Ok(0));
    }

    #[test]
    fn this_process_status_parses() {
        // Whatever this process holds, the kernel's own text must parse.
        let text = read_status().unwrap();
        let euid = effective_uid(&text).unwrap();
        assess(&text, euid).unwrap();
    }
}
