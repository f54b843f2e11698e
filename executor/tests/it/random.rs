//! Property test: random segments over random dirty models agree with the naive evaluator,
//! in both plan modes. Models have cycles, self-relationships, several relationships between
//! the same objects, many-to-many links on shared values, duplicate and NULL keys, dangling
//! and NULL references; data is written as CSV or Parquet at random.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::naive::{Db, Rel, Table, V};
use crate::{KeySets, MODES, run_files_with};
use cohort_executor::{JoinStrategy, PlanChoice};

const TYPES: [&str; 6] = ["string", "int", "float", "bool", "date", "timestamp"];
const AS_OF: &str = "2026-09-01T12:00:00Z";
const WORDS: [&str; 8] = ["alpha", "Beta", "gamma", "beta", "alp ha", "delta", "zeta", "al"];

fn random_value(rng: &mut ChaCha8Rng, field_type: &str, null_share: f64) -> V {
    if rng.random_bool(null_share) {
        return V::Null;
    }
    match field_type {
        "string" => V::S(WORDS.choose(rng).copied().unwrap_or("alpha").to_string()),
        "int" => V::I(rng.random_range(-3..12)),
        // Quarters keep sums and averages exact in any order.
        "float" => V::F(f64::from(rng.random_range(-8..40)) * 0.25),
        "bool" => V::B(rng.random_bool(0.5)),
        "date" => V::D(crate::naive::days("2026-08-01") + rng.random_range(0..45)),
        _ => V::T(crate::naive::micros("2026-08-20T00:00:00Z") + rng.random_range(0..20 * 86_400i64) * 1_000_000 / 4 * 4),
    }
}

fn key_value(rng: &mut ChaCha8Rng, key_type: &str, null_share: f64) -> V {
    if rng.random_bool(null_share) {
        return V::Null;
    }
    let k: i64 = rng.random_range(0..10);
    if key_type == "int" { V::I(k) } else { V::S(format!("K{k}")) }
}

/// A random model: tables (with rows) and relationships.
fn random_model(rng: &mut ChaCha8Rng) -> (Vec<Table>, Vec<Rel>) {
    let n_objects = rng.random_range(2..=4);
    let mut tables: Vec<Table> = (0..n_objects)
        .map(|i| {
            let key_type = if rng.random_bool(0.5) { "int" } else { "string" };
            let mut fields = vec![(format!("id{i}"), key_type.to_string())];
            for j in 0..rng.random_range(1..=3) {
                let t = TYPES.choose(rng).copied().unwrap_or("int");
                fields.push((format!("f{i}_{j}"), t.to_string()));
            }
            Table { name: format!("o{i}"), primary_key: format!("id{i}"), fields, rows: Vec::new() }
        })
        .collect();
    let mut rels = Vec::new();
    for r in 0..rng.random_range(n_objects..=n_objects + 3) {
        let from = rng.random_range(0..n_objects);
        let to = if rng.random_bool(0.15) { from } else { rng.random_range(0..n_objects) };
        let to_key_type = tables[to].fields[0].1.clone();
        // Mostly a reference to the key; sometimes a many-to-many link on a shared value.
        let to_field = if rng.random_bool(0.8) {
            tables[to].primary_key.clone()
        } else {
            let f = format!("link{r}");
            tables[to].fields.push((f.clone(), to_key_type.clone()));
            f
        };
        let from_field = format!("ref{r}");
        tables[from].fields.push((from_field.clone(), to_key_type));
        rels.push(Rel { name: format!("r{r}"), from: tables[from].name.clone(), from_field, to: tables[to].name.clone(), to_field });
    }
    for t in &mut tables {
        let n_rows = rng.random_range(0..14);
        for _ in 0..n_rows {
            let row: Vec<V> = t
                .fields
                .iter()
                .enumerate()
                .map(|(c, (name, ty))| {
                    if c == 0 || name.starts_with("ref") || name.starts_with("link") {
                        // Keys: few distinct values so they repeat (duplicates) and dangle.
                        key_value(rng, ty, if c == 0 { 0.08 } else { 0.15 })
                    } else {
                        random_value(rng, ty, 0.15)
                    }
                })
                .collect();
            t.rows.push(row);
        }
    }
    (tables, rels)
}

fn leaf(rng: &mut ChaCha8Rng, table: &Table) -> Value {
    let (field, ty) = table.fields.choose(rng).cloned().unwrap_or_default();
    let lit = |rng: &mut ChaCha8Rng| -> Value {
        match key_or_value(rng, &field, &ty) {
            V::S(s) => json!(s),
            V::I(i) => json!(i),
            V::F(f) => json!(f),
            V::B(b) => json!(b),
            V::D(d) => json!((chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default() + chrono::Days::new(d as u64)).format("%Y-%m-%d").to_string()),
            V::T(t) => json!(chrono::DateTime::from_timestamp_micros(t).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            V::Null => json!(null),
        }
    };
    let mut ops = vec!["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "between", "is_null", "is_not_null"];
    if ty == "string" {
        ops.extend(["contains", "starts_with", "ends_with"]);
    }
    if ty == "date" || ty == "timestamp" {
        ops.extend(["within_last", "older_than", "within_last"]);
    }
    let op = *ops.choose(rng).unwrap_or(&"eq");
    match op {
        "is_null" | "is_not_null" => json!({"field": field, "op": op}),
        "in" | "not_in" => {
            let n = rng.random_range(0..4);
            let values: Vec<Value> = (0..n).map(|_| lit(rng)).collect();
            json!({"field": field, "op": op, "value": values})
        }
        "between" => json!({"field": field, "op": op, "value": [lit(rng), lit(rng)]}),
        "contains" | "starts_with" | "ends_with" => {
            let needle = ["al", "a", "eta", "Be", "ph", " "].choose(rng).copied().unwrap_or("a");
            json!({"field": field, "op": op, "value": needle})
        }
        "within_last" | "older_than" => {
            let d = format!("{}{}", rng.random_range(0..30), ["d", "h", "m", "s"].choose(rng).copied().unwrap_or("d"));
            json!({"field": field, "op": op, "value": d})
        }
        _ => json!({"field": field, "op": op, "value": lit(rng)}),
    }
}

fn key_or_value(rng: &mut ChaCha8Rng, field: &str, ty: &str) -> V {
    let v = if field.starts_with("id") || field.starts_with("ref") || field.starts_with("link") { key_value(rng, ty, 0.0) } else { random_value(rng, ty, 0.0) };
    // A bool never orders usefully as a key; any value of the type will do.
    v
}

fn node(rng: &mut ChaCha8Rng, tables: &[Table], rels: &[Rel], at: usize, depth: usize, related_left: &mut usize) -> Value {
    let choice = if depth >= 3 { 0 } else { rng.random_range(0..10) };
    match choice {
        0..=3 => leaf(rng, &tables[at]),
        4 => json!({"and": (0..rng.random_range(1..=3)).map(|_| node(rng, tables, rels, at, depth + 1, related_left)).collect::<Vec<_>>()}),
        5 => json!({"or": (0..rng.random_range(1..=3)).map(|_| node(rng, tables, rels, at, depth + 1, related_left)).collect::<Vec<_>>()}),
        6 => json!({"not": node(rng, tables, rels, at, depth + 1, related_left)}),
        _ if *related_left == 0 => leaf(rng, &tables[at]),
        _ => related(rng, tables, rels, at, depth, related_left, 0.5),
    }
}

/// A random `related` node from `at` (a walk of 1 to 3 hops), with a `having` at the given
/// odds; a leaf when `at` touches no relationship.
fn related(rng: &mut ChaCha8Rng, tables: &[Table], rels: &[Rel], at: usize, depth: usize, related_left: &mut usize, having_odds: f64) -> Value {
    *related_left = related_left.saturating_sub(1);
    let mut current = at;
    let mut via = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let name = &tables[current].name;
        let touching: Vec<&Rel> = rels.iter().filter(|r| &r.from == name || &r.to == name).collect();
        let Some(rel) = touching.choose(rng) else { break };
        via.push(rel.name.clone());
        let next = if &rel.from == name { &rel.to } else { &rel.from };
        current = tables.iter().position(|t| &t.name == next).unwrap_or(current);
    }
    if via.is_empty() {
        return leaf(rng, &tables[at]);
    }
    let mut out = serde_json::Map::new();
    out.insert("related".into(), json!(tables[current].name));
    out.insert("via".into(), json!(via));
    if rng.random_bool(0.6) {
        out.insert("where".into(), node(rng, tables, rels, current, depth + 1, related_left));
    }
    if rng.random_bool(having_odds) {
        out.insert("having".into(), having(rng, &tables[current]));
    }
    Value::Object(out)
}

/// A random `having` over `table`'s rows.
fn having(rng: &mut ChaCha8Rng, table: &Table) -> Value {
    let numeric: Vec<&(String, String)> = table.fields.iter().filter(|(_, t)| t == "int" || t == "float").collect();
    let agg = ["count", "count_distinct", "sum", "avg", "min", "max"].choose(rng).copied().unwrap_or("count");
    let op = ["eq", "ne", "lt", "le", "gt", "ge"].choose(rng).copied().unwrap_or("eq");
    let value = if rng.random_bool(0.7) { json!(rng.random_range(0..4)) } else { json!(f64::from(rng.random_range(0..16)) * 0.25) };
    match (agg, numeric.choose(rng)) {
        ("count", _) => json!({"agg": "count", "op": op, "value": value}),
        ("count_distinct", _) => {
            let f = &table.fields.choose(rng).map(|f| f.0.clone()).unwrap_or_default();
            json!({"agg": "count_distinct", "field": f, "op": op, "value": value})
        }
        (_, Some((f, _))) => json!({"agg": agg, "field": f, "op": op, "value": value}),
        (_, None) => json!({"agg": "count", "op": op, "value": value}),
    }
}

/// A random filter on `table`'s own fields: leaves under `and`, `or` and `not`.
fn local_node(rng: &mut ChaCha8Rng, table: &Table, depth: usize) -> Value {
    match if depth >= 2 { 0 } else { rng.random_range(0..6) } {
        0..=2 => leaf(rng, table),
        3 => json!({"and": (0..rng.random_range(1..=3)).map(|_| local_node(rng, table, depth + 1)).collect::<Vec<_>>()}),
        4 => json!({"or": (0..rng.random_range(1..=3)).map(|_| local_node(rng, table, depth + 1)).collect::<Vec<_>>()}),
        _ => json!({"not": local_node(rng, table, depth + 1)}),
    }
}

fn model_json(tables: &[Table], rels: &[Rel], formats: &[bool]) -> Value {
    json!({
        "objects": tables.iter().zip(formats).map(|(t, parquet)| json!({
            "name": t.name,
            "primary_key": t.primary_key,
            "source": {"format": if *parquet { "parquet" } else { "csv" }, "path": format!("{}.{}", t.name, if *parquet { "parquet" } else { "csv" })},
            "fields": t.fields.iter().map(|(n, ty)| json!({"name": n, "type": ty})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "relationships": rels.iter().map(|r| json!({
            "name": r.name, "from": r.from, "from_field": r.from_field, "to": r.to, "to_field": r.to_field,
        })).collect::<Vec<_>>(),
    })
}

fn csv_text(t: &Table) -> String {
    let mut out = t.fields.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(",");
    out.push('\n');
    for row in &t.rows {
        let cells: Vec<String> = row
            .iter()
            .map(|v| match v {
                V::Null => String::new(),
                V::S(s) => s.clone(),
                V::I(i) => i.to_string(),
                V::F(f) => format!("{f:?}"),
                V::B(b) => b.to_string(),
                V::D(d) => (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default() + chrono::Days::new(*d as u64)).format("%Y-%m-%d").to_string(),
                V::T(t) => chrono::DateTime::from_timestamp_micros(*t).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn write_parquet(t: &Table, path: &std::path::Path) {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (c, (name, ty)) in t.fields.iter().enumerate() {
        let values = t.rows.iter().map(|r| &r[c]);
        let (data_type, array): (DataType, ArrayRef) = match ty.as_str() {
            "string" => (DataType::Utf8, Arc::new(values.map(|v| if let V::S(s) = v { Some(s.clone()) } else { None }).collect::<StringArray>())),
            "int" => (DataType::Int64, Arc::new(values.map(|v| if let V::I(i) = v { Some(*i) } else { None }).collect::<Int64Array>())),
            "float" => (DataType::Float64, Arc::new(values.map(|v| if let V::F(f) = v { Some(*f) } else { None }).collect::<Float64Array>())),
            "bool" => (DataType::Boolean, Arc::new(values.map(|v| if let V::B(b) = v { Some(*b) } else { None }).collect::<BooleanArray>())),
            "date" => (DataType::Date32, Arc::new(values.map(|v| if let V::D(d) = v { Some(*d) } else { None }).collect::<Date32Array>())),
            _ => (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                Arc::new(values.map(|v| if let V::T(t) = v { Some(*t) } else { None }).collect::<TimestampMicrosecondArray>().with_timezone("UTC")),
            ),
        };
        fields.push(Field::new(name, data_type, true));
        columns.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).expect("batch");
    let file = std::fs::File::create(path).expect("create parquet");
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

#[tokio::test]
async fn random_segments_over_random_dirty_models_agree_with_the_naive_evaluator() {
    let cases: u64 = std::env::var("COHORT_RANDOM_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    agree_with_the_naive_evaluator(0..cases, 4, |rng, tables, rels| {
        let mut related_left = 4;
        node(rng, tables, rels, 0, 0, &mut related_left)
    })
    .await;
}

/// The filters the compiler turns into semi- and anti-joins: `related` nodes (most with a
/// `having`) under a top-level `and`, `or` or `not`, next to the odd leaf.
#[tokio::test]
async fn related_conditions_in_filtering_positions_agree_with_the_naive_evaluator() {
    let cases: u64 = std::env::var("COHORT_RANDOM_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    agree_with_the_naive_evaluator(100_000..100_000 + cases, 4, |rng, tables, rels| {
        let mut related_left = 6;
        let mut branch = |rng: &mut ChaCha8Rng| {
            if rng.random_bool(0.15) { leaf(rng, &tables[0]) } else { related(rng, tables, rels, 0, 1, &mut related_left, 0.8) }
        };
        let children: Vec<Value> = (0..rng.random_range(1..=3)).map(|_| branch(rng)).collect();
        match rng.random_range(0..4) {
            0 => json!({"and": children}),
            1 => json!({"or": children}),
            2 => json!({"not": branch(rng)}),
            _ => json!({"and": [{"or": children}, {"not": branch(rng)}]}),
        }
    })
    .await;
}

/// Several conditions on the same related object over the same relationship, some negated,
/// most with a `having`, under one `and` (the compiler answers them with one aggregate).
/// Conjunctions of random `having`s often select nothing: one case in eight must select
/// something.
#[tokio::test]
async fn conditions_on_one_related_object_agree_with_the_naive_evaluator() {
    let cases: u64 = std::env::var("COHORT_RANDOM_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    agree_with_the_naive_evaluator(200_000..200_000 + cases, 8, |rng, tables, rels| {
        let root = &tables[0].name;
        let touching: Vec<&Rel> = rels.iter().filter(|r| &r.from == root || &r.to == root).collect();
        let Some(rel) = touching.choose(rng) else { return leaf(rng, &tables[0]) };
        let other = if &rel.from == root { &rel.to } else { &rel.from };
        let target = tables.iter().find(|t| &t.name == other).unwrap_or(&tables[0]);
        let mut children: Vec<Value> = (0..rng.random_range(2..=3))
            .map(|_| {
                let mut out = serde_json::Map::new();
                out.insert("related".into(), json!(target.name));
                out.insert("via".into(), json!([rel.name]));
                if rng.random_bool(0.6) {
                    out.insert("where".into(), local_node(rng, target, 0));
                }
                if rng.random_bool(0.7) {
                    out.insert("having".into(), having(rng, target));
                }
                if rng.random_bool(0.3) { json!({"not": Value::Object(out)}) } else { Value::Object(out) }
            })
            .collect();
        if rng.random_bool(0.2) {
            children.push(leaf(rng, &tables[0]));
        }
        json!({"and": children})
    })
    .await;
}

/// Runs a segment from `filter` over a random model for each seed, in every plan mode, and
/// compares its members with the naive evaluator's.
/// At least one case in `nonempty_one_in` must select something.
async fn agree_with_the_naive_evaluator(seeds: std::ops::Range<u64>, nonempty_one_in: u64, filter: impl Fn(&mut ChaCha8Rng, &[Table], &[Rel]) -> Value) {
    let as_of = crate::naive::micros(AS_OF);
    let cases = seeds.end - seeds.start;
    let mut failures = Vec::new();
    let mut nonempty = 0;
    for seed in seeds {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (tables, rels) = random_model(&mut rng);
        let formats: Vec<bool> = tables.iter().map(|_| rng.random_bool(0.5)).collect();
        let filter = filter(&mut rng, &tables, &rels);
        let segment = json!({"name": format!("random_{seed}"), "root": tables[0].name, "filter": filter});

        let dir = tempfile::tempdir().expect("tempdir");
        for (t, parquet) in tables.iter().zip(&formats) {
            if *parquet {
                write_parquet(t, &dir.path().join(format!("{}.parquet", t.name)));
            } else {
                std::fs::write(dir.path().join(format!("{}.csv", t.name)), csv_text(t)).expect("csv");
            }
        }
        std::fs::write(dir.path().join("model.json"), model_json(&tables, &rels, &formats).to_string()).expect("model");
        std::fs::write(dir.path().join("segment.json"), segment.to_string()).expect("segment");

        let expected = Db { tables: &tables, rels: &rels, as_of_micros: as_of }.members(&segment);
        if !expected.is_empty() {
            nonempty += 1;
        }
        let modes = MODES.iter().map(|&plan| (plan, KeySets::InPlan)).chain([(PlanChoice::Single, KeySets::First), (PlanChoice::Single, KeySets::FirstUncut)]);
        for mode in modes {
            let (model, segment_file) = (dir.path().join("model.json"), dir.path().join("segment.json"));
            match run_files_with(&model, &segment_file, AS_OF, mode.0, JoinStrategy::Hash, mode.1).await {
                Ok(report) if report.members == expected => {}
                Ok(report) => failures.push(format!("seed {seed} {mode:?}: got {:?}, want {expected:?}\nsegment: {segment}", report.members)),
                Err(e) => failures.push(format!("seed {seed} {mode:?}: {e}\nsegment: {segment}")),
            }
        }
    }
    assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.iter().take(5).cloned().collect::<Vec<_>>().join("\n\n"));
    // The generator must produce segments that select something, or the test proves little.
    assert!(nonempty * nonempty_one_in >= cases, "only {nonempty} of {cases} random segments had members");
}
