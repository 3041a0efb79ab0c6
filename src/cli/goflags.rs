//! ip-masq-agent's and ip-masq-agent-v2's command line, as Go's `flag` package reads it: the
//! flags they register (their own, and klog's or glog's), each with its Go type and what
//! nft-masq-agent does with it. [`go_flags`] takes them out of the arguments before clap
//! parses the rest: the ones we implement in one canonical form, the others as [`Foreign`]
//! flags for one warning at start ([`warning`]).

use std::ffi::OsString;

/// A flag of ip-masq-agent, ip-masq-agent-v2 or the logging they register (klog, or glog in
/// older releases) that nft-masq-agent accepts without implementing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    /// Its name, without dashes.
    pub name: &'static str,
    /// Its value as given (`true` for a boolean given bare).
    pub value: String,
}

/// The type of a Go flag's value, checked as Go's `flag` package checks it: a value the old
/// agent refused at start is refused here too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GoType {
    /// `strconv.ParseBool`; may be given bare (`-flag` means true).
    Bool,
    /// A signed integer.
    Int,
    /// An unsigned integer.
    Uint,
    /// Any text.
    Str,
}

/// What nft-masq-agent does with a Go flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Implemented: handed on to clap under the same name, keeping its meaning.
    Ours,
    /// Accepted and not used; the text says what we do instead.
    Instead(&'static str),
}

/// One flag of the Go tools' flag set.
struct GoFlag {
    name: &'static str,
    ty: GoType,
    to: Use,
}

const LOGGING: Use = Use::Instead(
    "klog's log files and formatting: logs go to stderr, one line per event, text or --log-format json",
);

/// Every flag ip-masq-agent (each release since v0.2.0) and ip-masq-agent-v2 (each release
/// since v0.1.0) register on Go's global flag set, read from their `main` packages and from
/// the logging libraries they call `InitFlags` of or import: klog/v2 up to v2.140.0, and
/// glog up to v1.2.0 (ip-masq-agent before v2.12.0, ip-masq-agent-v2 v0.1.0). Both call
/// `flag.Parse`, so these are the only flags they accept; `--version` (component-base's
/// verflag, on pflag's flag set, never parsed) and `--help` are clap's here.
const GO_FLAGS: &[GoFlag] = &[
    // ip-masq-agent and ip-masq-agent-v2.
    GoFlag {
        name: "nomasq-all-reserved-ranges",
        ty: GoType::Bool,
        to: Use::Ours,
    },
    GoFlag {
        name: "enable-ipv6",
        ty: GoType::Bool,
        to: Use::Ours,
    },
    // ip-masq-agent only.
    GoFlag {
        name: "random-fully",
        ty: GoType::Bool,
        to: Use::Ours,
    },
    GoFlag {
        name: "to-ports",
        ty: GoType::Str,
        to: Use::Ours,
    },
    GoFlag {
        name: "masq-chain",
        ty: GoType::Str,
        to: Use::Instead("no iptables chain is made, the policy is table inet nft-masq-agent"),
    },
    // ip-masq-agent-v2 only: seconds between its config reads.
    GoFlag {
        name: "resync-interval",
        ty: GoType::Int,
        to: Use::Instead(
            "config changes apply as they happen, and the full check runs every \
             resyncInterval of the config, 60s by default",
        ),
    },
    // klog (and glog): verbosity.
    GoFlag {
        name: "v",
        ty: GoType::Int,
        to: Use::Instead(
            "the log level: 0-2 info, 3-4 debug, 5 and more trace, unless RUST_LOG is set",
        ),
    },
    GoFlag {
        name: "vmodule",
        ty: GoType::Str,
        to: LOGGING,
    },
    GoFlag {
        name: "log_backtrace_at",
        ty: GoType::Str,
        to: LOGGING,
    },
    // klog and glog: destinations.
    GoFlag {
        name: "logtostderr",
        ty: GoType::Bool,
        to: LOGGING,
    },
    GoFlag {
        name: "alsologtostderr",
        ty: GoType::Bool,
        to: LOGGING,
    },
    GoFlag {
        name: "stderrthreshold",
        ty: GoType::Str,
        to: LOGGING,
    },
    GoFlag {
        name: "log_dir",
        ty: GoType::Str,
        to: LOGGING,
    },
    // klog only.
    GoFlag {
        name: "log_file",
        ty: GoType::Str,
        to: LOGGING,
    },
    GoFlag {
        name: "log_file_max_size",
        ty: GoType::Uint,
        to: LOGGING,
    },
    GoFlag {
        name: "add_dir_header",
        ty: GoType::Bool,
        to: LOGGING,
    },
    GoFlag {
        name: "skip_headers",
        ty: GoType::Bool,
        to: LOGGING,
    },
    GoFlag {
        name: "skip_log_headers",
        ty: GoType::Bool,
        to: LOGGING,
    },
    GoFlag {
        name: "one_output",
        ty: GoType::Bool,
        to: LOGGING,
    },
    // klog v2.140.0.
    GoFlag {
        name: "alsologtostderrthreshold",
        ty: GoType::Str,
        to: LOGGING,
    },
    GoFlag {
        name: "legacy_stderr_threshold_behavior",
        ty: GoType::Bool,
        to: LOGGING,
    },
    // glog v1.1 and later (ip-masq-agent v2.10.1 to v2.11.0).
    GoFlag {
        name: "log_link",
        ty: GoType::Str,
        to: LOGGING,
    },
    GoFlag {
        name: "logbuflevel",
        ty: GoType::Int,
        to: LOGGING,
    },
];

fn go_flag(name: &str) -> Option<&'static GoFlag> {
    GO_FLAGS.iter().find(|f| f.name == name)
}

/// Go's `strconv.ParseBool`, the values a Go boolean flag takes after `=`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Takes the Go tools' flags out of `args` (without the program name): returns the
/// arguments for clap, with the ip-masq-agent flags we implement in one canonical form each
/// (the last occurrence wins, as in Go), and the flags we accept without implementing.
///
/// Forms, as Go's `flag` package: `-name` and `--name`; `=value`, or the value as the next
/// argument for a non-boolean; a boolean bare (true) or `=` any `strconv.ParseBool` value,
/// and, as clap accepted `--random-fully false` before, followed by `true` or `false`.
/// `long_with_value` are our own options that take the next argument as their value, which is
/// passed on untouched whatever it looks like. After `--` nothing is looked at. An argument
/// that is not a flag but names one of these flags (`v=2`, a manifest without dashes: Go
/// stopped reading flags there and ignored it and everything after it) is an error that says
/// so; any other argument is left to clap, which knows ours and refuses the rest.
pub fn go_flags(
    args: Vec<OsString>,
    long_with_value: &[String],
) -> Result<(Vec<OsString>, Vec<Foreign>), String> {
    let mut out = Vec::with_capacity(args.len());
    let mut foreign = Vec::new();
    // Implemented Go flags, last value wins, emitted once at the end in clap's form.
    let mut ours: Vec<(&'static str, String)> = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            out.push(arg);
            out.extend(it);
            break;
        }
        let body = match s.strip_prefix("--").or_else(|| s.strip_prefix('-')) {
            Some(b) if !b.is_empty() && !b.starts_with('-') => b,
            _ => {
                let name = s.split('=').next().unwrap_or("");
                if !s.starts_with('-')
                    && (go_flag(name).is_some() || long_with_value.iter().any(|l| l == name))
                {
                    return Err(format!(
                        "'{s}' is not a flag: write --{s} (ip-masq-agent and ip-masq-agent-v2 \
                         ignored it without a word, and every argument after it: Go stops \
                         reading flags at the first argument that is not one)"
                    ));
                }
                out.push(arg);
                continue;
            }
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(flag) = go_flag(name) else {
            // One of ours (clap's), or unknown (clap refuses it). An option of ours without
            // `=` takes the next argument as its value: pass it on as it is.
            // clap takes the next argument as the value unless it looks like a flag.
            let takes_next = s.starts_with("--")
                && inline.is_none()
                && long_with_value.iter().any(|l| l == name)
                && it
                    .as_slice()
                    .first()
                    .is_some_and(|n| !n.as_encoded_bytes().starts_with(b"-"));
            out.push(arg);
            if takes_next && let Some(v) = it.next() {
                out.push(v);
            }
            continue;
        };
        let value = match (flag.ty, inline) {
            (GoType::Bool, Some(v)) => parse_go_bool(v)
                .ok_or_else(|| {
                    format!("invalid boolean value {v:?} for flag -{name}: want true or false")
                })?
                .to_string(),
            (GoType::Bool, None) => {
                // `--random-fully false`, accepted by clap before: keep accepting it.
                let next = it.as_slice().first().and_then(|n| n.to_str());
                match next {
                    Some(v @ ("true" | "false")) => {
                        let v = v.to_string();
                        it.next();
                        v
                    }
                    _ => "true".to_string(),
                }
            }
            (_, Some(v)) => v.to_string(),
            (_, None) => it
                .next()
                .map(|v| v.to_string_lossy().into_owned())
                .ok_or_else(|| format!("flag needs an argument: -{name}"))?,
        };
        match flag.ty {
            GoType::Int if value.parse::<i64>().is_err() => {
                return Err(format!(
                    "invalid value {value:?} for flag -{name}: want an integer"
                ));
            }
            GoType::Uint if value.parse::<u64>().is_err() => {
                return Err(format!(
                    "invalid value {value:?} for flag -{name}: want a non-negative integer"
                ));
            }
            _ => {}
        }
        match flag.to {
            Use::Ours => {
                ours.retain(|(n, _)| *n != flag.name);
                ours.push((flag.name, value));
            }
            Use::Instead(_) => foreign.push(Foreign {
                name: flag.name,
                value,
            }),
        }
    }
    for (name, value) in ours {
        match (go_flag(name).map(|f| f.ty), value.as_str()) {
            // clap's booleans that take no value: present when true.
            (Some(GoType::Bool), "false") if name != "random-fully" => {}
            (Some(GoType::Bool), "true") if name != "random-fully" => {
                out.push(format!("--{name}").into())
            }
            _ => out.push(format!("--{name}={value}").into()),
        }
    }
    Ok((out, foreign))
}

/// The log level klog's `--v=N` stands for: klog prints its unconditional lines at 0 and
/// ip-masq-agent its config and rule lines at 2, which our `info` lines cover; higher levels
/// ask for more detail.
pub fn level_for_verbosity(v: i64) -> &'static str {
    match v {
        ..=2 => "info",
        3..=4 => "debug",
        _ => "trace",
    }
}

/// The one warning at start about the accepted but unimplemented flags: each, as given, with
/// what nft-masq-agent does instead; `None` when there are none.
pub fn warning(foreign: &[Foreign]) -> Option<String> {
    if foreign.is_empty() {
        return None;
    }
    // Grouped by what we do instead, in the order the groups first appear.
    let mut groups: Vec<(&'static str, Vec<String>)> = Vec::new();
    for f in foreign {
        let Some(GoFlag {
            to: Use::Instead(instead),
            ..
        }) = go_flag(f.name)
        else {
            continue;
        };
        let given = format!("--{}={}", f.name, f.value);
        match groups.iter_mut().find(|(i, _)| i == instead) {
            Some((_, flags)) => flags.push(given),
            None => groups.push((instead, vec![given])),
        }
    }
    let parts: Vec<String> = groups
        .into_iter()
        .map(|(instead, flags)| format!("{} ({instead})", flags.join(" ")))
        .collect();
    Some(format!(
        "ip-masq-agent flags accepted for compatibility, not implemented: {}",
        parts.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::cli::Cli;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_args(std::iter::once("nft-masq-agent").chain(args.iter().copied()))
    }

    /// A sample value of each type that Go accepts.
    fn sample(ty: GoType) -> &'static str {
        match ty {
            GoType::Bool => "false",
            GoType::Int => "-3",
            GoType::Uint => "1800",
            GoType::Str => "IP-MASQ",
        }
    }

    #[test]
    fn every_go_flag_is_accepted_in_every_form_go_accepts() {
        for flag in GO_FLAGS {
            let n = flag.name;
            let v = match (n, flag.ty) {
                ("to-ports", _) => "1024-29999,32768-65535",
                (_, ty) => sample(ty),
            };
            let mut forms: Vec<Vec<String>> =
                vec![vec![format!("--{n}={v}")], vec![format!("-{n}={v}")]];
            if flag.ty == GoType::Bool {
                forms.push(vec![format!("--{n}")]);
                forms.push(vec![format!("-{n}")]);
                for b in [
                    "true", "1", "t", "T", "TRUE", "True", "0", "f", "F", "FALSE", "False",
                ] {
                    forms.push(vec![format!("--{n}={b}")]);
                }
            } else {
                forms.push(vec![format!("--{n}"), v.to_string()]);
                forms.push(vec![format!("-{n}"), v.to_string()]);
            }
            for form in forms {
                let args: Vec<&str> = form.iter().map(String::as_str).collect();
                let c = parse(&args).unwrap_or_else(|e| panic!("{form:?}: {e}"));
                if let Use::Instead(_) = flag.to {
                    let given = match args.as_slice() {
                        [a] if flag.ty == GoType::Bool && !a.contains('=') => "true",
                        [a] => a.split_once('=').unwrap().1,
                        [_, v] => v,
                        _ => unreachable!(),
                    };
                    // A boolean is kept as Go prints it back: true or false.
                    let want = match flag.ty {
                        GoType::Bool => parse_go_bool(given).unwrap().to_string(),
                        _ => given.to_string(),
                    };
                    assert_eq!(
                        c.foreign,
                        vec![Foreign {
                            name: n,
                            value: want.clone()
                        }],
                        "{form:?}"
                    );
                    assert!(
                        c.foreign_warning()
                            .unwrap()
                            .contains(&format!("--{n}={want}")),
                        "{form:?}"
                    );
                } else {
                    assert!(c.foreign.is_empty(), "{form:?}");
                }
            }
        }
    }

    #[test]
    fn ip_masq_agent_flags_keep_their_meaning_in_go_forms() {
        let c = |args: &[&str]| parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(!c(&[]).enable_ipv6);
        assert!(c(&["--enable-ipv6"]).enable_ipv6);
        assert!(c(&["-enable-ipv6=true"]).enable_ipv6);
        assert!(!c(&["--enable-ipv6=false"]).enable_ipv6);
        // Go: the last occurrence wins.
        assert!(!c(&["--enable-ipv6", "--enable-ipv6=0"]).enable_ipv6);
        assert!(c(&["--nomasq-all-reserved-ranges=T"]).nomasq_all_reserved_ranges);
        assert!(!c(&["-nomasq-all-reserved-ranges=F"]).nomasq_all_reserved_ranges);
        assert!(c(&[]).random_fully, "on by default, as in ip-masq-agent");
        assert!(!c(&["--random-fully=false"]).random_fully);
        assert!(!c(&["-random-fully=0"]).random_fully);
        assert!(
            !c(&["--random-fully", "false"]).random_fully,
            "as clap accepted before"
        );
        assert!(c(&["--random-fully=false", "--random-fully"]).random_fully);
        let ports = |args: &[&str]| c(args).to_ports.map(|p| format!("{p:?}"));
        let want = ports(&["--to-ports=1024-29999,32768-65535"]);
        assert!(want.is_some());
        assert_eq!(ports(&["-to-ports", "1024-29999,32768-65535"]), want);
        assert_eq!(
            ports(&["--to-ports", "1-2", "--to-ports=1024-29999,32768-65535"]),
            want
        );
        // Our own flags sit among them unchanged.
        let mixed = c(&[
            "-v=4",
            "--config",
            "/tmp/x",
            "--enable-ipv6",
            "--debounce",
            "20ms",
            "--logtostderr",
        ]);
        assert_eq!(mixed.config, vec![PathBuf::from("/tmp/x")]);
        assert_eq!(mixed.debounce, Duration::from_millis(20));
        assert!(mixed.enable_ipv6);
        assert_eq!(mixed.verbosity(), Some(4));
    }

    #[test]
    fn unknown_flags_bad_values_and_flags_without_dashes_stay_errors() {
        for (args, says) in [
            (&["--masq-chains=IP-MASQ"][..], "--masq-chains"),
            (&["--log-dir=/tmp"], "--log-dir"),
            (&["--vv=2"], "--vv"),
            (&["--verbose"], "--verbose"),
            (&["--v=abc"], "\"abc\" for flag -v"),
            (&["--v"], "flag needs an argument: -v"),
            (&["--resync-interval=60s"], "-resync-interval"),
            (&["--log_file_max_size=-1"], "-log_file_max_size"),
            (&["--logtostderr=yes"], "\"yes\" for flag -logtostderr"),
            (&["--enable-ipv6=maybe"], "-enable-ipv6"),
            (&["--to-ports=10-5"], "--to-ports"),
            (&["v=2"], "write --v=2"),
            (&["resync-interval=60"], "write --resync-interval=60"),
            (&["masq-chain=\"IP-MASQ-AGENT\""], "Go stops reading flags"),
            (&["something"], "something"),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(says), "{args:?}: {e}");
        }
        // After `--` nothing is a flag any more.
        assert!(parse(&["--", "--v=2"]).is_err());
    }

    #[test]
    fn klog_verbosity_maps_to_a_log_level() {
        assert_eq!(
            [-1, 0, 1, 2, 3, 4, 5, 10].map(level_for_verbosity),
            [
                "info", "info", "info", "info", "debug", "debug", "trace", "trace"
            ]
        );
        assert_eq!(parse(&["--v=1", "-v", "5"]).unwrap().verbosity(), Some(5));
        assert_eq!(parse(&[]).unwrap().verbosity(), None);
    }
}
