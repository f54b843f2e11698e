//! The conformance cases on a local Apache DataFusion Ballista cluster: one scheduler and two
//! executors, started in this process on loopback ports. Every case of the spec's examples
//! (`../shared/examples/segments`, when beside the project) and of the project's own
//! (`tests/cases/segments`) gives on the cluster exactly the members (or the exit status) it
//! gives on the embedded executor, in every plan mode and join strategy, and a cluster run
//! reports its Ballista jobs and what their scans read.

use std::path::{Path, PathBuf};

use cohort_executor::{ErrorClass, LocalCluster};

use crate::conformance::CONFIGURATIONS;
use crate::{case_dirs_under, run_files_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_cases_give_the_same_members_on_a_ballista_cluster_as_embedded() {
    let cluster = LocalCluster::start(2, 2).await.expect("a local Ballista cluster starts");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = manifest.join("../../shared/examples/segments");
    let own = manifest.join("tests/cases/segments");
    // A project case that is a copy of a spec example (same model, segment, data and as-of)
    // runs once.
    let mut dirs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let (mut shared_cases, mut own_cases, mut copies) = (0, 0, 0);
    for (root, count) in [(&shared, &mut shared_cases), (&own, &mut own_cases)] {
        for dir in case_dirs_under(root) {
            *count += 1;
            if seen.insert(fingerprint(&dir)) {
                dirs.push(dir);
            } else {
                copies += 1;
            }
        }
    }
    assert!(own_cases >= 32, "expected the project's 32 cases, found {own_cases}");
    println!("{shared_cases} cases from {}, {own_cases} of the project's ({copies} of them copies, run once)", shared.display());

    let mut failures = Vec::new();
    let (mut compared, mut cluster_jobs, mut rows_scanned) = (0, 0, 0u64);
    for dir in &dirs {
        let name = dir.strip_prefix(manifest.join("../..")).unwrap_or(dir).display().to_string();
        let as_of = std::fs::read_to_string(dir.join("as_of.txt")).expect("as_of.txt");
        for (plan, join, key_sets) in CONFIGURATIONS {
            let mode = (plan, join, key_sets);
            let (model, segment) = (dir.join("model.json"), dir.join("segment.json"));
            let embedded = run_files_on(&model, &segment, &as_of, plan, join, key_sets, None).await;
            let distributed = run_files_on(&model, &segment, &as_of, plan, join, key_sets, Some(&cluster.url)).await;
            compared += 1;
            match (embedded, distributed) {
                (Ok(e), Ok(d)) => {
                    if e.members != d.members {
                        failures.push(format!(
                            "{name} {mode:?}: {} members on Ballista, {} embedded; first differing: {:?}",
                            d.members.len(),
                            e.members.len(),
                            d.members.iter().zip(&e.members).find(|(a, b)| a != b)
                        ));
                    }
                    let Some(run) = &d.ballista else {
                        failures.push(format!("{name} {mode:?}: the report does not say it ran on Ballista"));
                        continue;
                    };
                    if run.jobs.is_empty() || run.scheduler != cluster.url.to_string() {
                        failures.push(format!("{name} {mode:?}: Ballista jobs {:?} on {}", run.jobs, run.scheduler));
                    }
                    if e.rows_scanned > 0 && d.rows_scanned == 0 {
                        failures.push(format!("{name} {mode:?}: embedded scans read {} rows, Ballista's report none", e.rows_scanned));
                    }
                    cluster_jobs += run.jobs.len();
                    rows_scanned += d.rows_scanned;
                }
                (Err(e), Err(d)) => {
                    if e.exit_code() != d.exit_code() {
                        failures.push(format!("{name} {mode:?}: exit {} on Ballista ({d}), {} embedded ({e})", d.exit_code(), e.exit_code()));
                    }
                }
                (Ok(e), Err(d)) => failures.push(format!("{name} {mode:?}: failed on Ballista ({d}), {} members embedded", e.members.len())),
                (Err(e), Ok(d)) => failures.push(format!("{name} {mode:?}: {} members on Ballista, failed embedded ({e})", d.members.len())),
            }
        }
    }
    println!("{compared} runs compared; {cluster_jobs} Ballista jobs read {rows_scanned} rows");
    assert!(failures.is_empty(), "{} of {compared} runs differ:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_corrupted_after_planning_fails_alike_embedded_and_on_the_cluster() {
    let cluster = LocalCluster::start(1, 2).await.expect("a local Ballista cluster starts");
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/segments/case-16");
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&case, dir.path());
    let model = cohort_executor::Model::from_file(&dir.path().join("model.json")).expect("model");
    let catalog = cohort_executor::Catalog::load(model, &Default::default()).await.expect("catalog");
    let segment = cohort_executor::Segment::from_file(&dir.path().join("segment.json"), &catalog).expect("segment");
    // The Parquet files turn to garbage between the catalog's load and the executors' reads.
    let mut corrupted = 0;
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let len = std::fs::metadata(&path).expect("metadata").len() as usize;
                std::fs::write(&path, vec![b'x'; len]).expect("overwrite");
                corrupted += 1;
            }
        }
    }
    assert!(corrupted > 0, "case-16 has Parquet sources");
    let as_of = std::fs::read_to_string(dir.path().join("as_of.txt")).expect("as_of");
    let mut options = cohort_executor::RunOptions::new(cohort_executor::parse_timestamp(as_of.trim()).expect("as_of"));
    let embedded = cohort_executor::run_segment(&catalog, &segment, &options).await.expect_err("the embedded run fails");
    options.ballista = Some(cluster.url.clone());
    let distributed = cohort_executor::run_segment(&catalog, &segment, &options).await.expect_err("the cluster run fails");
    println!("embedded: {embedded}\non Ballista: {distributed}");
    assert_eq!(embedded.class(), ErrorClass::SourceUnavailable, "{embedded}");
    assert_eq!(distributed.class(), embedded.class(), "{distributed}");
}

/// Every file of a case folder, names and contents, as one value.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "check.sh" && n != "README.md") {
                let relative = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
                files.push((relative, std::fs::read(&path).expect("read")));
            }
        }
    }
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
