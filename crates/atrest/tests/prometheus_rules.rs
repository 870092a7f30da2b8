//! The alert rules in `deploy/prometheus/` load (`promtool check rules`) and fire exactly as their
//! unit tests say (`promtool test rules`). promtool comes with Debian's `prometheus` package
//! (`scripts/test` installs it); without it this test fails, it does not skip.

use std::path::PathBuf;
use std::process::Command;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .current_dir(deploy_dir())
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install it with `apt-get install prometheus` (scripts/test does)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_load_and_pass_their_unit_tests() {
    let checked = promtool(&["check", "rules", "atrest-rules.yaml"]);
    assert!(checked.contains("SUCCESS: 14 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "atrest-rules.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_metric_the_rules_use_is_exported_by_atrest() {
    let rules = std::fs::read_to_string(deploy_dir().join("atrest-rules.yaml")).unwrap();
    let exported = [
        include_str!("../../atrest-monitor/src/metrics.rs"),
        include_str!("../../atrest-kms/src/server/metrics.rs"),
    ]
    .concat();
    let mut names: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("atrest_"))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        // Counters are registered without `_total`, histograms exported with `_bucket`.
        let base = name.trim_end_matches("_total").trim_end_matches("_bucket");
        assert!(
            exported.contains(&format!("\"{base}\"")),
            "the rules use {name}, which atrest does not export"
        );
    }
}
