//! `--log-format json` for every mode: a config's problems are a JSON array field, one
//! string per problem naming the file, not one string with `\n` in it; `--once` prints its
//! error as such a line too, and the daemon logs a bad config the same way. Needs root;
//! also runs in the QEMU guests of `vm-tests/`.

use std::time::Duration;

use nma_testkit::log::parse_log;
use nma_testkit::{LogLine, Topology, root_or_skip, wait_until, write_atomic};
use serde_json::Value;

/// Two problems: an unknown key and a boolean given as a string.
const BAD: &str = "foo: 1\nmasqLinkLocal: \"true\"\n";

/// The ERROR line that carries the problems, and the problems.
fn problems(lines: &[LogLine]) -> Option<(&LogLine, Vec<String>)> {
    lines.iter().filter(|l| l.level == "ERROR").find_map(|l| {
        let Some(Value::Array(items)) = l.fields.get("problems") else {
            return None;
        };
        Some((
            l,
            items
                .iter()
                .map(|p| p.as_str().expect("each problem a string").to_string())
                .collect(),
        ))
    })
}

fn assert_the_two(problems: &[String], path: &str) {
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with(&format!("{path}: foo = 1: unknown key")),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with(&format!(
            "{path}: masqLinkLocal = \"true\": expected true or false"
        )),
        "{problems:?}"
    );
}

#[test]
fn problems_are_a_json_array_for_once_and_the_daemon() {
    root_or_skip!();
    let t = Topology::new("jsonlog");
    let cfg = t.config("ip-masq-agent", BAD);
    let path = cfg.display().to_string();
    let out = t
        .agent()
        .args(["--once", "--log-format", "json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = parse_log(&stderr);
    assert!(
        lines.iter().all(|l| !l.level.is_empty()),
        "every line of --once is JSON: {stderr}"
    );
    let (line, found) = problems(&lines).unwrap_or_else(|| panic!("no problems array: {stderr}"));
    assert_eq!(
        line.message,
        format!("invalid config file {path}: 2 problems")
    );
    assert_the_two(&found, &path);
    assert_eq!(t.nft_table(), None, "nothing committed");

    // The daemon: a good config, then the bad one.
    write_atomic(&cfg, "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    let agent = t.start(&cfg, &["--table-owner", "off"]);
    write_atomic(&cfg, BAD);
    assert!(
        wait_until(Duration::from_secs(5), || problems(&agent.lines())
            .is_some()),
        "{}",
        agent.log()
    );
    let lines = agent.lines();
    let (line, found) = problems(&lines).unwrap();
    assert!(
        line.message.starts_with(&format!(
            "invalid config file {path}: 2 problems; keeping the last good config"
        )),
        "{}",
        line.message
    );
    assert!(!line.message.contains('\n'), "{}", line.message);
    assert_the_two(&found, &path);
}
