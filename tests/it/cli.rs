//! `cohort segment run | validate | explain` as a user runs them: exit statuses, output
//! order, messages on standard error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cohort(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort")).args(args).output().expect("the cohort binary runs")
}

fn cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("executor/tests/cases/segments")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The shared runner, exactly as the contract states it, over the shared cases when they are
/// beside the repository (as in CI) and over the project's copy otherwise.
#[test]
fn the_conformance_runner_passes_every_case() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/examples/segments/check.sh");
    let (script, dir) = if shared.exists() {
        (shared.clone(), shared.parent().map(Path::to_path_buf).unwrap_or_default())
    } else {
        println!("../shared is not beside the repository: running the project's copy of the cases");
        (PathBuf::new(), cases())
    };
    if script.as_os_str().is_empty() {
        // The project's copy has no check.sh: run the same loop here.
        for entry in std::fs::read_dir(&dir).expect("cases") {
            let d = entry.expect("entry").path();
            if !d.is_dir() {
                continue;
            }
            let as_of = std::fs::read_to_string(d.join("as_of.txt")).expect("as_of");
            let out = cohort(&[
                "segment",
                "run",
                "--model",
                &d.join("model.json").to_string_lossy(),
                "--segment",
                &d.join("segment.json").to_string_lossy(),
                "--as-of",
                as_of.trim(),
            ]);
            if d.join("expect_exit.txt").exists() {
                assert_eq!(out.status.code(), Some(2), "{}", d.display());
            } else {
                assert_eq!(text(&out.stdout), std::fs::read_to_string(d.join("expected.txt")).expect("expected"), "{}", d.display());
            }
        }
        return;
    }
    let out = Command::new("bash").arg(&script).arg(env!("CARGO_BIN_EXE_cohort")).output().expect("bash runs");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "check.sh failed:\n{stdout}\n{}", text(&out.stderr));
    assert!(stdout.trim_end().ends_with("32 passed, 0 failed"), "{stdout}");
}

#[test]
fn run_prints_sorted_members_and_a_summary() {
    let d = cases().join("case-04");
    let out = cohort(&[
        "segment",
        "run",
        "--model",
        &d.join("model.json").to_string_lossy(),
        "--segment",
        &d.join("segment.json").to_string_lossy(),
        "--as-of",
        "2026-09-01T12:00:00Z",
        "--plan",
        "phased",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let members: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    let mut sorted = members.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(members, sorted);
    let summary = text(&out.stderr);
    assert!(summary.contains("members") && summary.contains("rows scanned") && summary.contains("peak memory") && summary.contains("plan phased"), "{summary}");
}

#[test]
fn output_files_hold_one_key_column() {
    let d = cases().join("case-04");
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("members.csv");
    let out = cohort(&[
        "segment",
        "run",
        "--model",
        &d.join("model.json").to_string_lossy(),
        "--segment",
        &d.join("segment.json").to_string_lossy(),
        "--as-of",
        "2026-09-01T12:00:00Z",
        "--output",
        &csv.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(&csv).expect("csv");
    let expected = std::fs::read_to_string(d.join("expected.txt")).expect("expected");
    assert_eq!(written, format!("key\n{expected}"));
    let parquet = dir.path().join("members.parquet");
    let out = cohort(&[
        "segment",
        "run",
        "--model",
        &d.join("model.json").to_string_lossy(),
        "--segment",
        &d.join("segment.json").to_string_lossy(),
        "--as-of",
        "2026-09-01T12:00:00Z",
        "--output",
        &parquet.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::metadata(&parquet).expect("parquet written").len() > 0);
}

#[test]
fn exit_statuses_follow_the_contract() {
    let d = cases().join("invalid-27");
    let out = cohort(&["segment", "run", "--model", &d.join("model.json").to_string_lossy(), "--segment", &d.join("segment.json").to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("filter.op: \"like\" is not an operator"), "{}", text(&out.stderr));

    // Unreadable data: a model whose source is missing.
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("model.json");
    std::fs::write(
        &model,
        r#"{"objects":[{"name":"p","primary_key":"id","source":{"format":"csv","path":"missing.csv"},"fields":[{"name":"id","type":"string"}]}]}"#,
    )
    .expect("model");
    let segment = dir.path().join("segment.json");
    std::fs::write(&segment, r#"{"root":"p","filter":{"field":"id","op":"is_not_null"}}"#).expect("segment");
    let out = cohort(&["segment", "run", "--model", &model.to_string_lossy(), "--segment", &segment.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("missing.csv"), "{}", text(&out.stderr));

    // Data that does not parse as its declared type is unreadable data too, not a panic.
    std::fs::write(dir.path().join("missing.csv"), "id,n\nA,1\nB,not-a-number\n").expect("csv");
    std::fs::write(&model, r#"{"objects":[{"name":"p","primary_key":"id","source":{"format":"csv","path":"missing.csv"},"fields":[{"name":"id","type":"string"},{"name":"n","type":"int"}]}]}"#).expect("model");
    std::fs::write(&segment, r#"{"root":"p","filter":{"field":"n","op":"gt","value":0}}"#).expect("segment");
    let out = cohort(&["segment", "run", "--model", &model.to_string_lossy(), "--segment", &segment.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    // A memory limit far too small: exit 3 with a message that says so.
    let d = cases().join("case-05");
    let out = cohort(&[
        "segment",
        "run",
        "--model",
        &d.join("model.json").to_string_lossy(),
        "--segment",
        &d.join("segment.json").to_string_lossy(),
        "--as-of",
        "2026-09-01T12:00:00Z",
        "--memory-limit",
        "1KiB",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("memory limit of 1024 bytes was not enough"), "{}", text(&out.stderr));

    let out = cohort(&["segment", "run", "--model", "no-such-model.json", "--segment", "y.json"]);
    assert_eq!(out.status.code(), Some(1), "a missing model file is unreadable input");
    assert!(text(&out.stderr).contains("cannot read no-such-model.json"), "{}", text(&out.stderr));

    let out = cohort(&["segment", "run", "--model", "x.json", "--segment", "y.json", "--memory-limit", "lots"]);
    assert_eq!(out.status.code(), Some(2), "a bad flag is a usage error");
}

#[test]
fn validate_and_explain_describe_the_segment() {
    let d = cases().join("case-05");
    let out = cohort(&["segment", "validate", "--model", &d.join("model.json").to_string_lossy(), "--segment", &d.join("segment.json").to_string_lossy()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("segment ok"), "{}", text(&out.stderr));
    let out = cohort(&[
        "segment",
        "explain",
        "--model",
        &d.join("model.json").to_string_lossy(),
        "--segment",
        &d.join("segment.json").to_string_lossy(),
        "--as-of",
        "2026-09-01T12:00:00Z",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    for needle in ["resolved paths:", "-[r2_accounts_subscriptions", "plan mode: single", "logical", "physical"] {
        assert!(plan.contains(needle), "explain output lacks {needle:?}:\n{plan}");
    }
}
