//! The data probe: duplicate keys and extreme skew are found on a sample; clean data has no
//! findings.

use std::sync::Arc;

use cohort_executor::{Catalog, Model, ProbeOptions, Segment, probe_data};
use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use serde_json::json;

/// `people` people (every `dup_every`-th row repeating the previous key) and 10 events each,
/// `skew` of them pointing at one person.
fn write_tenant(dir: &std::path::Path, people: i64, dup_every: i64, skew: f64) {
    let write = |name: &str, columns: Vec<(&str, ArrayRef)>| crate::write_parquet(&dir.join(name), columns);
    let key = |i: i64| if dup_every > 0 && i % dup_every == dup_every - 1 { i - 1 } else { i };
    write(
        "person",
        vec![
            ("person_id", Arc::new(StringArray::from_iter_values((0..people).map(|i| format!("P{:06}", key(i)))))),
            ("age", Arc::new(Int64Array::from_iter_values((0..people).map(|i| i % 90)))),
        ],
    );
    let events = people * 10;
    let heavy = (events as f64 * skew) as i64;
    write(
        "event",
        vec![
            ("event_id", Arc::new(Int64Array::from_iter_values(0..events))),
            ("person_id", Arc::new(StringArray::from_iter_values((0..events).map(|i| format!("P{:06}", if i < heavy { 0 } else { i % people })))) as ArrayRef),
        ],
    );
    crate::write_person_event_model(dir);
}

async fn probe(dir: &std::path::Path) -> Vec<(String, String, String, u64)> {
    let catalog = Catalog::load(Model::from_file(&dir.join("model.json")).expect("model"), &Default::default()).await.expect("catalog");
    let segment = Segment::from_json(
        &json!({"root": "person", "filter": {"and": [
            {"field": "age", "op": "gt", "value": 20},
            {"related": "event", "having": {"agg": "count", "op": "ge", "value": 2}},
        ]}})
        .to_string(),
        &catalog,
    )
    .expect("segment");
    let found = probe_data(&catalog, &segment, &ProbeOptions::default()).await.expect("probe");
    found.into_iter().map(|f| (f.kind, f.object, f.field, (f.share * 100.0).round() as u64)).collect()
}

#[tokio::test]
async fn the_probe_finds_duplicate_keys_and_skew_and_nothing_in_clean_data() {
    let clean = tempfile::tempdir().expect("dir");
    write_tenant(clean.path(), 5_000, 0, 0.0);
    assert_eq!(probe(clean.path()).await, vec![]);

    // A third of the people repeat a key; 60% of the events belong to one person.
    let dirty = tempfile::tempdir().expect("dir");
    write_tenant(dirty.path(), 6_000, 3, 0.6);
    assert_eq!(
        probe(dirty.path()).await,
        vec![("duplicate_keys".into(), "person".into(), "person_id".into(), 33), ("key_skew".into(), "event".into(), "person_id".into(), 60),]
    );

    // Too few rows to judge: nothing, however dirty.
    let tiny = tempfile::tempdir().expect("dir");
    write_tenant(tiny.path(), 60, 2, 0.9);
    assert_eq!(probe(tiny.path()).await, vec![]);
}
