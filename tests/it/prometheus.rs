//! The Prometheus rules in dashboards/ are valid and fire as the built-in rules do, checked
//! with `promtool` (Debian package `prometheus`; CI installs it; with `CI=true` or
//! `COHORT_REQUIRE_PROMTOOL=1` a missing promtool fails the test).

use std::path::Path;
use std::process::Command;

#[test]
fn the_prometheus_rules_check_and_pass_their_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/prometheus");
    let Ok(version) = Command::new("promtool").arg("--version").output() else {
        assert!(std::env::var("COHORT_REQUIRE_PROMTOOL").is_err(), "promtool is required here (COHORT_REQUIRE_PROMTOOL) but not on PATH");
        crate::server::cannot_run("promtool is not on PATH (Debian's prometheus package): the Prometheus rules were not checked");
        return;
    };
    assert!(version.status.success());
    for args in [&["check", "rules", "cohort-alerts.yml"][..], &["test", "rules", "cohort-alerts.test.yml"][..]] {
        let out = Command::new("promtool").args(args).current_dir(&dir).output().expect("promtool runs");
        assert!(out.status.success(), "promtool {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
}
