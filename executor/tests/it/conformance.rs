//! The worked conformance cases of the spec (`tests/cases/segments/`), in both plan modes.
//! A case is a folder: a new case is a new folder, not a new function.

use std::path::{Path, PathBuf};

use cohort_executor::{JoinStrategy, PlanChoice};

use crate::{KeySets, case_dirs_under, run_files, run_files_with};

fn case_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/segments");
    assert!(root.is_dir(), "the cases folder is part of the repository");
    case_dirs_under(&root)
}

/// Every way of running a segment that must give the same members.
pub(crate) const CONFIGURATIONS: [(PlanChoice, JoinStrategy, KeySets); 4] = [
    (PlanChoice::Single, JoinStrategy::Hash, KeySets::InPlan),
    (PlanChoice::Single, JoinStrategy::Hash, KeySets::First),
    (PlanChoice::Phased, JoinStrategy::Hash, KeySets::InPlan),
    (PlanChoice::Single, JoinStrategy::SortMerge, KeySets::FirstUncut),
];

#[tokio::test]
async fn every_case_gives_the_expected_members_in_every_plan_mode_and_join_strategy() {
    let dirs = case_dirs();
    assert!(dirs.len() >= 32, "expected the 32 worked cases, found {}", dirs.len());
    let mut failures = Vec::new();
    let mut checked = 0;
    for dir in &dirs {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let as_of = std::fs::read_to_string(dir.join("as_of.txt")).expect("as_of.txt");
        for (plan, join, key_sets) in CONFIGURATIONS {
            let mode = (plan, join, key_sets);
            let result = run_files_with(&dir.join("model.json"), &dir.join("segment.json"), &as_of, plan, join, key_sets).await;
            checked += 1;
            if dir.join("expect_exit.txt").exists() {
                let want: u8 = std::fs::read_to_string(dir.join("expect_exit.txt")).expect("expect_exit").trim().parse().expect("exit code");
                match result {
                    Err(e) if e.exit_code() == want => {}
                    Err(e) => failures.push(format!("{name} {mode:?}: exit {} ({e}), want {want}", e.exit_code())),
                    Ok(r) => failures.push(format!("{name} {mode:?}: succeeded with {} members, want exit {want}", r.members.len())),
                }
                continue;
            }
            let expected: Vec<String> = std::fs::read_to_string(dir.join("expected.txt")).expect("expected.txt").lines().map(str::to_string).collect();
            match result {
                Ok(report) if report.members == expected => {}
                Ok(report) => failures.push(format!(
                    "{name} {mode:?}: {} members, want {}; extra {:?}; missing {:?}",
                    report.members.len(),
                    expected.len(),
                    report.members.iter().filter(|m| !expected.contains(m)).take(5).collect::<Vec<_>>(),
                    expected.iter().filter(|m| !report.members.contains(m)).take(5).collect::<Vec<_>>(),
                )),
                Err(e) => failures.push(format!("{name} {mode:?}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{} of {checked} runs failed:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn invalid_cases_name_the_place() {
    for dir in case_dirs().iter().filter(|d| d.join("expect_exit.txt").exists()) {
        let as_of = std::fs::read_to_string(dir.join("as_of.txt")).expect("as_of.txt");
        let err = run_files(&dir.join("model.json"), &dir.join("segment.json"), &as_of, PlanChoice::Single).await.expect_err("an invalid case must fail");
        let text = err.to_string();
        assert!(text.contains("filter"), "{}: the message should name the place in the filter: {text}", dir.display());
    }
}
