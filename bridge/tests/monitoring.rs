//! The shipped monitoring files stay honest: the Prometheus rules load and pass their unit tests
//! (`promtool`, Debian package `prometheus`, which scripts/deps.sh installs), the example
//! Prometheus configuration loads, and every metric the rules, their tests and the Grafana
//! dashboard query is one the daemons export (`toxmail_bridge::metrics::exported_names`).
//!
//! Files: deploy/prometheus/{toxmail.rules.yml, toxmail.rules.test.yml, prometheus.example.yml},
//! deploy/grafana/toxmail-dashboard.json. No YAML or JSON crate: metric names are picked out of
//! the text. In the YAML files that is every non-comment line; in the dashboard it is the string
//! values of its `"expr"`, `"query"` and `"definition"` keys (panel queries and the template
//! variable), JSON-unescaped. A metric name is `toxmail_[a-z0-9_]+` not preceded by a name
//! character; recording rules (`toxmail:...`) are not metric names of the daemons.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bridge/ sits in the workspace root")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs promtool in the workspace root and fails the test with its output unless it succeeds.
fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool (Debian package prometheus, scripts/deps.sh) could not run: {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        output.status
    );
    println!("promtool {}:\n{text}", args.join(" "));
    text
}

#[test]
fn promtool_accepts_the_rules() {
    let out = promtool(&["check", "rules", "deploy/prometheus/toxmail.rules.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_rules_pass_their_unit_tests() {
    let out = promtool(&["test", "rules", "deploy/prometheus/toxmail.rules.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// `check config` needs no network: it parses the file and loads the rule files it names.
#[test]
fn promtool_accepts_the_example_config_and_its_jobs_are_the_ones_the_rules_name() {
    let out = promtool(&[
        "check",
        "config",
        "deploy/prometheus/prometheus.example.yml",
    ]);
    assert!(out.contains("1 rule files found"), "{out}");

    let config = read("deploy/prometheus/prometheus.example.yml");
    let rules = read("deploy/prometheus/toxmail.rules.yml");
    let jobs: Vec<&str> = config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- job_name:"))
        .map(str::trim)
        .collect();
    for job in ["toxmail-bridge", "toxmail-relay"] {
        assert!(
            jobs.contains(&job),
            "example config lacks job {job}: {jobs:?}"
        );
        assert!(rules.contains(job), "the rules do not name job {job}");
    }
}

/// Every `toxmail_[a-z0-9_]+` in `text` that starts a name (not preceded by a name character).
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("toxmail_").map(|i| i + from) {
        let starts_name = at == 0 || {
            let c = bytes[at - 1];
            !(c.is_ascii_alphanumeric() || c == b'_' || c == b':')
        };
        let end = at
            + text[at..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(text.len() - at);
        if starts_name {
            names.insert(text[at..end].to_string());
        }
        from = end.max(at + 1);
    }
    names
}

/// The lines of a YAML file that are not comments.
fn yaml_code(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The string values of `"key": "..."` anywhere in a JSON text, unescaped.
fn json_string_values(json: &str, key: &str) -> Vec<String> {
    let pattern = format!("\"{key}\":");
    let mut values = Vec::new();
    let mut rest = json;
    while let Some(at) = rest.find(&pattern) {
        rest = rest[at + pattern.len()..].trim_start();
        let Some(body) = rest.strip_prefix('"') else {
            continue; // an object or number, e.g. the variable's "query": {...}
        };
        let mut value = String::new();
        let mut chars = body.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("unterminated JSON string");
            match c {
                '"' => break i,
                '\\' => match chars.next().expect("escape at end of JSON").1 {
                    'n' => value.push('\n'),
                    't' => value.push('\t'),
                    'r' => value.push('\r'),
                    'u' => {
                        let hex: String = (0..4).map(|_| chars.next().unwrap().1).collect();
                        let code = u32::from_str_radix(&hex, 16).expect("\\u escape");
                        value.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                    }
                    other => value.push(other), // \" \\ \/
                },
                c => value.push(c),
            }
        };
        values.push(value);
        rest = &body[end + 1..];
    }
    values
}

fn dashboard_queries() -> Vec<String> {
    let json = read("deploy/grafana/toxmail-dashboard.json");
    let mut queries = json_string_values(&json, "expr");
    assert!(
        queries.len() >= 30,
        "only {} exprs found in the dashboard",
        queries.len()
    );
    queries.extend(json_string_values(&json, "query"));
    queries.extend(json_string_values(&json, "definition"));
    queries
}

/// Names in `used` that the daemons do not export; histogram series (`_bucket`, `_sum`,
/// `_count`) count by their family's name.
fn unknown(used: &BTreeSet<String>, exported: &BTreeSet<String>) -> Vec<String> {
    used.iter()
        .filter(|name| {
            !exported.contains(*name)
                && !["_bucket", "_sum", "_count"].iter().any(|suffix| {
                    name.strip_suffix(suffix)
                        .is_some_and(|base| exported.contains(base))
                })
        })
        .cloned()
        .collect()
}

fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[test]
fn rules_and_dashboard_use_only_exported_metrics() {
    let exported: BTreeSet<String> = toxmail_bridge::metrics::exported_names()
        .into_iter()
        .collect();
    assert!(exported.len() >= 20, "exported_names: {exported:?}");

    let rules = metric_names(&yaml_code(&read("deploy/prometheus/toxmail.rules.yml")));
    // The unit tests feed series by name: a name misspelt alike in a rule and its test would pass
    // promtool and never fire in production.
    let rule_tests = metric_names(&yaml_code(&read(
        "deploy/prometheus/toxmail.rules.test.yml",
    )));
    let dashboard: BTreeSet<String> = dashboard_queries()
        .iter()
        .flat_map(|q| metric_names(q))
        .collect();
    assert!(rules.len() >= 8, "rules use only {rules:?}");
    assert!(dashboard.len() >= 25, "dashboard uses only {dashboard:?}");

    let mut problems = Vec::new();
    for (file, used) in [
        ("deploy/prometheus/toxmail.rules.yml", &rules),
        ("deploy/prometheus/toxmail.rules.test.yml", &rule_tests),
        ("deploy/grafana/toxmail-dashboard.json", &dashboard),
    ] {
        let bad = unknown(used, &exported);
        if !bad.is_empty() {
            problems.push(format!("{file}: {bad:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "metrics the daemons do not export (exported: {exported:?}):\n{}",
        problems.join("\n")
    );

    // The softer reverse check: exported but on no dashboard panel. Printed, not failed.
    let shown: BTreeSet<&str> = dashboard.iter().map(|n| family(n)).collect();
    let unshown: Vec<&String> = exported
        .iter()
        .filter(|n| !shown.contains(n.as_str()))
        .collect();
    if unshown.is_empty() {
        println!("every exported metric is on the dashboard");
    } else {
        println!("exported but on no dashboard panel: {unshown:?}");
    }
}

#[test]
fn the_name_scanners_find_what_they_should() {
    let names = metric_names(
        "sum(rate(toxmail_a_total{x=\"toxmail_label\"}[5m])) / toxmail:recorded x_toxmail_b",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["toxmail_a_total", "toxmail_label"]
    );
    let json = r#"{"expr": "up{job=\"a\\b\"} \u0041", "query": {"query": "q"}, "expr":"x"}"#;
    assert_eq!(
        json_string_values(json, "expr"),
        ["up{job=\"a\\b\"} A", "x"]
    );
    assert_eq!(json_string_values(json, "query"), ["q"]);
    let exported: BTreeSet<String> = ["toxmail_h_seconds".to_string()].into();
    let used: BTreeSet<String> = [
        "toxmail_h_seconds_bucket".to_string(),
        "toxmail_h_seconds_count".to_string(),
        "toxmail_nope_bucket".to_string(),
    ]
    .into();
    assert_eq!(unknown(&used, &exported), ["toxmail_nope_bucket"]);
}
