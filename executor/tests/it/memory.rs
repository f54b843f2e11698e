//! Memory limits: too small a pool is a clean `ResourcesExhausted` (exit 3), enough succeeds,
//! and the pool's high-water mark is reported.

use std::sync::Arc;

use cohort_executor::{Catalog, Error, Model, PlanChoice, RunOptions, Segment, run_segment};
use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use serde_json::json;

/// 200,000 people and 1,000,000 events with skewed references, as Parquet.
fn write_tenant(dir: &std::path::Path) {
    let write = |name: &str, columns: Vec<(&str, ArrayRef)>| crate::write_parquet(&dir.join(name), columns);
    let people = 200_000i64;
    write(
        "person",
        vec![
            ("person_id", Arc::new(StringArray::from_iter_values((0..people).map(|i| format!("P{i:08}"))))),
            ("age", Arc::new(Int64Array::from_iter_values((0..people).map(|i| i % 90)))),
        ],
    );
    let events = 1_000_000i64;
    write(
        "event",
        vec![
            ("event_id", Arc::new(Int64Array::from_iter_values(0..events))),
            // Squares skew the references towards low ids.
            ("person_id", Arc::new(StringArray::from_iter_values((0..events).map(|i| format!("P{:08}", (i * i) % people))))),
            ("amount", Arc::new(Int64Array::from_iter_values((0..events).map(|i| i % 500)))),
        ],
    );
    crate::write_person_event_model(dir);
    let _ = DataType::Utf8;
}

async fn run(dir: &std::path::Path, limit: Option<usize>, plan: PlanChoice) -> Result<cohort_executor::RunReport, Error> {
    let model = Model::from_file(&dir.join("model.json"))?;
    let catalog = Catalog::load(model, &Default::default()).await?;
    let segment = Segment::from_json(
        &json!({"root": "person", "filter": {"or": [
            {"related": "event", "having": {"agg": "sum", "field": "amount", "op": "gt", "value": 1000}},
            {"related": "event", "having": {"agg": "count_distinct", "field": "amount", "op": "ge", "value": 3}},
        ]}})
        .to_string(),
        &catalog,
    )?;
    let mut options = RunOptions::new(0);
    options.memory_limit_bytes = limit;
    options.plan = plan;
    run_segment(&catalog, &segment, &options).await
}

#[tokio::test]
async fn a_pool_too_small_fails_cleanly_and_enough_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tenant(dir.path());
    for plan in crate::MODES {
        let unlimited = run(dir.path(), None, plan).await.expect("runs without a limit");
        assert!(unlimited.peak_memory_bytes > 1 << 20, "{plan:?}: peak {} should be measured", unlimited.peak_memory_bytes);
        assert!(!unlimited.members.is_empty());

        let err = run(dir.path(), Some(256 << 10), plan).await.expect_err("256 KiB is too little");
        assert!(matches!(err, Error::ResourcesExhausted { .. }), "{plan:?}: want ResourcesExhausted, got {err}");
        assert_eq!(err.exit_code(), 3);
        assert!(err.to_string().contains("memory limit of 262144 bytes was not enough"), "{err}");

        let enough = unlimited.peak_memory_bytes * 2;
        let limited = run(dir.path(), Some(enough), plan).await.expect("twice the measured peak is enough");
        assert_eq!(limited.members, unlimited.members, "{plan:?}: a limit must not change the answer");
        assert!(limited.peak_memory_bytes <= enough, "{plan:?}: peak {} above the limit {enough}", limited.peak_memory_bytes);
    }
}

/// 300,000 people with nine-character keys, and a segment of twelve branches that each keep
/// every one of them: a phased run holds twelve phase tables of every key (and the final
/// batches, and the member list) while its operators each need far less.
async fn wide_or(dir: &std::path::Path, limit: Option<usize>) -> Result<cohort_executor::RunReport, Error> {
    let model = Model::from_file(&dir.join("model.json"))?;
    let catalog = Catalog::load(model, &Default::default()).await?;
    let branches: Vec<serde_json::Value> = (0..12).map(|i| json!({"field": "age", "op": "ge", "value": -i})).collect();
    let segment = Segment::from_json(&json!({"root": "person", "filter": {"or": branches}}).to_string(), &catalog)?;
    let mut options = RunOptions::new(0);
    options.memory_limit_bytes = limit;
    options.plan = PlanChoice::Phased;
    run_segment(&catalog, &segment, &options).await
}

#[tokio::test]
async fn phase_tables_final_batches_and_members_count_against_the_memory_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let people = 300_000i64;
    crate::write_parquet(
        &dir.path().join("person"),
        vec![
            ("person_id", Arc::new(StringArray::from_iter_values((0..people).map(|i| format!("P{i:08}"))))),
            ("age", Arc::new(Int64Array::from_iter_values((0..people).map(|i| i % 90)))),
        ],
    );
    crate::write_parquet(
        &dir.path().join("event"),
        vec![
            ("event_id", Arc::new(Int64Array::from_iter_values(0..1))),
            ("person_id", Arc::new(StringArray::from_iter_values(["P00000000".to_string()]))),
            ("amount", Arc::new(Int64Array::from_iter_values(0..1))),
        ],
    );
    crate::write_person_event_model(dir.path());

    let unlimited = wide_or(dir.path(), None).await.expect("runs without a limit");
    assert_eq!(unlimited.members.len(), people as usize);
    assert_eq!(unlimited.phases.len(), 12);
    // What the run holds at its end, at the least: every phase table (a nine-byte key, its
    // four-byte offset and an eight-byte age per row), and the members' strings (24 bytes of
    // header and nine of text each).
    let tables: usize = unlimited.phases.iter().map(|p| p.rows * (9 + 4 + 8)).sum();
    let members = unlimited.members.len() * (24 + 9);
    assert!(
        unlimited.peak_memory_bytes >= tables + members,
        "peak {} leaves out what the run held: phase tables of at least {tables} bytes and members of at least {members}",
        unlimited.peak_memory_bytes
    );
    // A limit below the phase tables alone is caught by the pool.
    let below = tables * 9 / 10;
    let err = wide_or(dir.path(), Some(below)).await.expect_err("the phase tables alone exceed the limit");
    assert!(matches!(err, Error::ResourcesExhausted { .. }), "want ResourcesExhausted under {below} bytes, got {err}");
}
