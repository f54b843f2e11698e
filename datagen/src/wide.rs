//! The `wide` profile: a model with 6,000 objects and 10,000 relationships, few rows each —
//! for the cost of loading, resolving and compiling against a big model, not of scanning.
//!
//! Each object `obj_NNNN` has 4–8 fields: `id` (string, the primary key), one to three
//! string reference fields `ref_1..`, and data fields of every type. The relationship graph
//! is a random spanning tree (so everything is connected) plus random extra edges, a few
//! self-loops and parallel edges among them. A relationship joins a `ref_*` field to the
//! other end's `id` (or, now and then, to one of its `ref_*` fields): all keys are drawn from
//! the same values `k000`, `k001`, … so every relationship joins some rows, with skew, NULLs,
//! duplicate keys and dangling references.
//!
//! `--scale` is the rows per object, capped at [`MAX_ROWS_PER_OBJECT`].
//! With ~10,000 relationships shortest paths are usually ambiguous, so every segment names
//! its paths with `via`.

use std::collections::BTreeMap;

use indicatif::ProgressBar;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::random::{AS_OF_DAY, Skewed, chance, day_within, instant_within_days, stream_id, stream_rng};
use super::writer::{FieldType as T, PartWriter, Relationship, Table};
use super::{GenContext, Task, Tenant, run_tasks};

/// Objects in the model.
pub const OBJECT_COUNT: usize = 6_000;
/// Relationships in the model (a spanning tree of `OBJECT_COUNT - 1` plus extra edges).
pub const RELATIONSHIP_COUNT: usize = 10_000;
/// The most rows an object gets, whatever `--scale` says.
pub const MAX_ROWS_PER_OBJECT: u64 = 50;

/// Objects per generation task.
const OBJECTS_PER_TASK: usize = 200;
/// Self-loop relationships among the extra edges.
const SELF_LOOPS: usize = 8;

const STREAM_SHAPE: u32 = 1;
const STREAM_ROWS: u32 = 2;
const STREAM_SEGMENTS: u32 = 3;

const LABELS: &[&str] = &["red", "green", "blue", "amber", "violet", "teal", "black", "white"];

/// Makes the wide tenant under `ctx.out`.
pub(super) fn generate(ctx: &GenContext) -> anyhow::Result<Tenant> {
    let rows_per_object = ctx.scale.min(MAX_ROWS_PER_OBJECT);
    let mut shape_rng = stream_rng(ctx.seed, stream_id(STREAM_SHAPE, 0));
    let tables = make_tables(&mut shape_rng);
    let relationships = make_relationships(&mut shape_rng, &tables);
    ctx.prepare_tables(&tables)?;

    let keys = Skewed::new(rows_per_object + rows_per_object / 6 + 1, 1.0, 0.3, 1);
    let mut tasks: Vec<Task<'_>> = Vec::new();
    for (chunk_index, chunk) in tables.chunks(OBJECTS_PER_TASK).enumerate() {
        let keys = &keys;
        tasks.push(Box::new(move |progress| {
            let mut counts = Vec::with_capacity(chunk.len());
            for (i, table) in chunk.iter().enumerate() {
                let index = chunk_index * OBJECTS_PER_TASK + i;
                let written = write_object(ctx, table, index, rows_per_object, keys, progress)?;
                counts.push((table.name.clone(), written));
            }
            Ok(counts)
        }));
    }
    let rows: BTreeMap<String, u64> = run_tasks("wide", tasks, rows_per_object * OBJECT_COUNT as u64)?;

    let mut segment_rng = stream_rng(ctx.seed, stream_id(STREAM_SEGMENTS, 0));
    let graph = Graph::new(&tables, &relationships);
    let segments = make_segments(&mut segment_rng, &graph);
    Ok(Tenant { tables, relationships, guardrails: Some(json!({"max_hops": 4, "max_related": 64})), segments, rows })
}

fn make_tables(rng: &mut ChaCha8Rng) -> Vec<Table> {
    let data_types = [T::Int, T::Float, T::Bool, T::Date, T::Timestamp, T::String];
    (0..OBJECT_COUNT)
        .map(|i| {
            let total = rng.random_range(4..=8usize);
            let refs = rng.random_range(1..=3usize).min(total - 2);
            let mut fields = vec![("id".to_string(), T::String)];
            for r in 1..=refs {
                fields.push((format!("ref_{r}"), T::String));
            }
            for d in 1..=(total - 1 - refs) {
                let t = data_types[rng.random_range(0..data_types.len())];
                let prefix = match t {
                    T::Int => "n",
                    T::Float => "x",
                    T::Bool => "flag",
                    T::Date => "day",
                    T::Timestamp => "at",
                    T::String => "label",
                };
                fields.push((format!("{prefix}_{d}"), t));
            }
            Table { name: object_name(i), primary_key: "id".into(), fields }
        })
        .collect()
}

fn object_name(index: usize) -> String {
    format!("obj_{:04}", index + 1)
}

fn ref_fields(table: &Table) -> Vec<&str> {
    table.fields.iter().filter(|(n, _)| n.starts_with("ref_")).map(|(n, _)| n.as_str()).collect()
}

fn make_relationships(rng: &mut ChaCha8Rng, tables: &[Table]) -> Vec<Relationship> {
    let mut relationships = Vec::with_capacity(RELATIONSHIP_COUNT);
    let add = |rng: &mut ChaCha8Rng, from: usize, to: usize, relationships: &mut Vec<Relationship>| {
        let from_refs = ref_fields(&tables[from]);
        let from_field = from_refs[rng.random_range(0..from_refs.len())];
        let to_field = if from != to && chance(rng, 0.8) {
            "id"
        } else {
            let to_refs = ref_fields(&tables[to]);
            to_refs[rng.random_range(0..to_refs.len())]
        };
        let name = format!("rel_{:05}", relationships.len() + 1);
        relationships.push(Relationship::new(&name, &tables[from].name, from_field, &tables[to].name, to_field));
    };
    // A random spanning tree: each object points at an earlier one (either direction).
    for i in 1..tables.len() {
        let j = rng.random_range(0..i);
        if chance(rng, 0.5) {
            add(rng, i, j, &mut relationships);
        } else {
            add(rng, j, i, &mut relationships);
        }
    }
    for _ in 0..SELF_LOOPS {
        let i = rng.random_range(0..tables.len());
        add(rng, i, i, &mut relationships);
    }
    while relationships.len() < RELATIONSHIP_COUNT {
        let a = rng.random_range(0..tables.len());
        let b = rng.random_range(0..tables.len());
        if a != b {
            add(rng, a, b, &mut relationships);
        }
    }
    relationships
}

fn write_object(ctx: &GenContext, table: &Table, index: usize, rows: u64, keys: &Skewed, progress: &ProgressBar) -> anyhow::Result<u64> {
    let mut rng = stream_rng(ctx.seed, stream_id(STREAM_ROWS, index));
    let mut w = PartWriter::create(&ctx.out, table, 0, progress)?;
    for r in 0..rows {
        let roll = rng.random::<f64>();
        for (c, (name, t)) in table.fields.iter().enumerate() {
            match t {
                T::String if c == 0 => {
                    // The key: NULL 1%, a duplicate of an earlier row's 2%.
                    if roll < 0.01 {
                        w.string(0, None);
                    } else if roll < 0.03 && r > 0 {
                        w.string_fmt(0, format_args!("k{:03}", rng.random_range(0..r)));
                    } else {
                        w.string_fmt(0, format_args!("k{r:03}"));
                    }
                }
                T::String if name.starts_with("ref_") => {
                    if chance(&mut rng, 0.05) {
                        w.string(c, None);
                    } else {
                        w.string_fmt(c, format_args!("k{:03}", keys.sample(&mut rng)));
                    }
                }
                _ if chance(&mut rng, 0.05) => match t {
                    T::String => w.string(c, None),
                    T::Int => w.int(c, None),
                    T::Float => w.float(c, None),
                    T::Bool => w.bool(c, None),
                    T::Date => w.date(c, None),
                    T::Timestamp => w.timestamp(c, None),
                },
                T::String => w.string(c, Some(LABELS[rng.random_range(0..LABELS.len())])),
                T::Int => w.int(c, Some(rng.random_range(0..1000))),
                T::Float => w.float(c, Some(rng.random::<f64>())),
                T::Bool => w.bool(c, Some(chance(&mut rng, 0.5))),
                T::Date => w.date(c, Some(day_within(&mut rng, 730))),
                T::Timestamp => w.timestamp(c, Some(instant_within_days(&mut rng, 365))),
            }
        }
        w.end_row()?;
    }
    w.finish()
}

/// The relationship graph, for random walks.
struct Graph<'a> {
    tables: &'a [Table],
    relationships: &'a [Relationship],
    index: BTreeMap<&'a str, usize>,
    /// Per object, the relationships that touch it.
    touching: Vec<Vec<usize>>,
}

impl<'a> Graph<'a> {
    fn new(tables: &'a [Table], relationships: &'a [Relationship]) -> Graph<'a> {
        let index: BTreeMap<&str, usize> = tables.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
        let mut touching = vec![Vec::new(); tables.len()];
        for (r, rel) in relationships.iter().enumerate() {
            if let (Some(&a), Some(&b)) = (index.get(rel.from.as_str()), index.get(rel.to.as_str())) {
                touching[a].push(r);
                if b != a {
                    touching[b].push(r);
                }
            }
        }
        Graph { tables, relationships, index, touching }
    }

    /// A random walk of `hops` relationships from `start`, never taking the relationship it
    /// just came by when there is another: the `via` names and the object it ends at.
    fn walk(&self, rng: &mut ChaCha8Rng, start: usize, hops: usize) -> (Vec<String>, usize) {
        let mut at = start;
        let mut last: Option<usize> = None;
        let mut via = Vec::with_capacity(hops);
        for _ in 0..hops {
            let options: Vec<usize> = self.touching[at].iter().copied().filter(|r| Some(*r) != last).collect();
            let options = if options.is_empty() { self.touching[at].clone() } else { options };
            let r = options[rng.random_range(0..options.len())];
            let rel = &self.relationships[r];
            // `via` semantics: from `from` to `to` when standing on `from`, else backwards.
            let next = if rel.from == self.tables[at].name { &rel.to } else { &rel.from };
            at = self.index.get(next.as_str()).copied().unwrap_or(at);
            via.push(rel.name.clone());
            last = Some(r);
        }
        (via, at)
    }
}

/// A leaf predicate on one of `table`'s data fields (or its key), valid for its type.
fn leaf(rng: &mut ChaCha8Rng, table: &Table) -> Value {
    let data: Vec<&(String, T)> = table.fields.iter().filter(|(n, _)| n != "id" && !n.starts_with("ref_")).collect();
    let Some((name, t)) = data.get(rng.random_range(0..data.len().max(1))).copied() else {
        return json!({"field": "id", "op": "is_not_null"});
    };
    let choice = rng.random_range(0..4);
    match t {
        T::Int => match choice {
            0 => json!({"field": name, "op": "ge", "value": rng.random_range(100..900)}),
            1 => json!({"field": name, "op": "lt", "value": rng.random_range(100..900)}),
            2 => {
                let low = rng.random_range(0..500);
                json!({"field": name, "op": "between", "value": [low, low + 400]})
            }
            _ => json!({"field": name, "op": "ne", "value": rng.random_range(0..1000)}),
        },
        T::Float => match choice {
            0 | 1 => json!({"field": name, "op": "gt", "value": 0.25}),
            2 => json!({"field": name, "op": "between", "value": [0.1, 0.8]}),
            _ => json!({"field": name, "op": "le", "value": 0.75}),
        },
        T::Bool => json!({"field": name, "op": "eq", "value": choice % 2 == 0}),
        T::Date => match choice {
            0 => json!({"field": name, "op": "within_last", "value": "400d"}),
            1 => json!({"field": name, "op": "older_than", "value": "60d"}),
            2 => json!({"field": name, "op": "between", "value": ["2025-01-01", "2026-09-30"]}),
            _ => json!({"field": name, "op": "ge", "value": date_text(AS_OF_DAY - 500)}),
        },
        T::Timestamp => match choice {
            0 => json!({"field": name, "op": "within_last", "value": "200d"}),
            1 => json!({"field": name, "op": "older_than", "value": "30d"}),
            2 => json!({"field": name, "op": "lt", "value": "2026-08-01T00:00:00Z"}),
            _ => json!({"field": name, "op": "is_not_null"}),
        },
        T::String => match choice {
            0 => json!({"field": name, "op": "in", "value": [LABELS[0], LABELS[1], LABELS[2], LABELS[3], LABELS[4]]}),
            1 => json!({"field": name, "op": "ne", "value": LABELS[rng.random_range(0..LABELS.len())]}),
            2 => json!({"field": name, "op": "contains", "value": "e"}),
            _ => json!({"field": name, "op": "not_in", "value": [LABELS[5], LABELS[6]]}),
        },
    }
}

/// `YYYY-MM-DD` of a day number.
fn date_text(day: i32) -> String {
    chrono::DateTime::from_timestamp(i64::from(day) * 86_400, 0).map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_else(|| "2025-06-01".to_string())
}

/// A `having` on `table`: a count, or an aggregate of a numeric field when it has one.
fn having(rng: &mut ChaCha8Rng, table: &Table) -> Value {
    let numeric: Vec<&(String, T)> = table.fields.iter().filter(|(_, t)| matches!(t, T::Int | T::Float)).collect();
    match (rng.random_range(0..5), numeric.first()) {
        (0, _) => json!({"agg": "count", "op": "ge", "value": 2}),
        (1, _) => json!({"agg": "count_distinct", "field": "id", "op": "ge", "value": 2}),
        (2, Some((name, T::Int))) => json!({"agg": "sum", "field": name, "op": "gt", "value": 500}),
        (3, Some((name, T::Int))) => json!({"agg": "max", "field": name, "op": "ge", "value": 500}),
        (2, Some((name, _))) => json!({"agg": "avg", "field": name, "op": "gt", "value": 0.3}),
        (3, Some((name, _))) => json!({"agg": "min", "field": name, "op": "lt", "value": 0.5}),
        _ => json!({"agg": "count", "op": "lt", "value": 5}),
    }
}

/// A `related` node from `start`: a walk of `hops`, and sometimes a `where` and a `having`.
fn related(rng: &mut ChaCha8Rng, graph: &Graph<'_>, start: usize, hops: usize, nested: Option<usize>) -> Value {
    let (via, end) = graph.walk(rng, start, hops);
    let target = &graph.tables[end];
    let mut node = json!({"related": target.name, "via": via});
    let mut where_parts = Vec::new();
    if chance(rng, 0.7) {
        where_parts.push(leaf(rng, target));
    }
    if let Some(nested_hops) = nested {
        where_parts.push(related(rng, graph, end, nested_hops, None));
    }
    if let Some(map) = node.as_object_mut() {
        match where_parts.len() {
            0 => {}
            1 => {
                map.insert("where".into(), where_parts.remove(0));
            }
            _ => {
                map.insert("where".into(), json!({"and": where_parts}));
            }
        }
        if chance(rng, 0.4) {
            map.insert("having".into(), having(rng, target));
        }
    }
    node
}

fn make_segments(rng: &mut ChaCha8Rng, graph: &Graph<'_>) -> Vec<(String, Value)> {
    // Roots: well-connected objects, so the walks go somewhere.
    let candidates: Vec<usize> = (0..graph.tables.len()).filter(|&i| graph.touching[i].len() >= 4).collect();
    let mut root = || {
        if candidates.is_empty() { 0 } else { candidates[rng.random_range(0..candidates.len())] }
    };
    let (root_a, root_b, root_c) = (root(), root(), root());
    let mut segments = Vec::new();

    // twenty_related: exactly 20 `related` predicates (one nested in another's `where`),
    // 1–4 hops each (five of 4 hops), under and / or / not with leaf predicates.
    let hops = [4, 1, 2, 3, 4, 2, 1, 3, 4, 2, 3, 1, 4, 2, 3, 2, 1, 4, 3, 2];
    let root_table = &graph.tables[root_a];
    let r = |i: usize, rng: &mut ChaCha8Rng| related(rng, graph, root_a, hops[i], None);
    let filter = json!({"and": [
        {"or": [
            {"and": [
                leaf(rng, root_table),
                {"or": [r(0, rng), r(1, rng), r(2, rng), r(3, rng)]},
                {"not": r(7, rng)},
                r(8, rng)
            ]},
            {"and": [
                {"or": [r(4, rng), {"and": [r(5, rng), r(6, rng)]}]},
                {"or": [{"not": r(9, rng)}, r(10, rng), leaf(rng, root_table)]},
                {"or": [r(11, rng), r(12, rng), r(13, rng), r(14, rng)]}
            ]}
        ]},
        // One nested: the 16th walks 2 hops and its `where` holds a 1-hop related (the 17th).
        {"and": [
            {"or": [related(rng, graph, root_a, hops[15], Some(1)), r(17, rng)]},
            {"not": {"and": [r(18, rng), r(19, rng)]}}
        ]}
    ]});
    segments.push(("twenty_related".to_string(), json!({"name": "twenty_related", "root": root_table.name, "filter": filter})));

    // One long path with a filter at its end.
    let root_table = &graph.tables[root_b];
    let far = related(rng, graph, root_b, 4, None);
    segments.push(("four_hops".to_string(), json!({"name": "four_hops", "root": root_table.name, "filter": {"and": [leaf(rng, root_table), far]}})));

    // A small segment: three related predicates, one of them nested two deep.
    let root_table = &graph.tables[root_c];
    let filter = json!({"or": [
        related(rng, graph, root_c, 2, Some(2)),
        {"and": [leaf(rng, root_table), {"not": related(rng, graph, root_c, 1, None)}]}
    ]});
    segments.push(("three_related".to_string(), json!({"name": "three_related", "root": root_table.name, "filter": filter})));
    segments
}
