//! Models and segments drawn from all of Unicode, through the entry points the service uses
//! for what tenants send (`Model::from_value`, `Model::confined_to`, `Catalog::load`,
//! `Segment::from_value`): every input is an answer or an error, never a panic.
//!
//! Each case takes a worked case's valid model and segment and changes them: a string (a key
//! or a value) replaced by arbitrary text, text spliced into the document at any character, a
//! number replaced by a string, or a whole filter node drawn at random. The text is drawn
//! from every Unicode scalar value, weighted toward what breaks byte-indexed code: multi-byte
//! characters, combining marks, digits of other scripts, unit letters with accents, NUL and
//! controls, right-to-left and zero-width marks.
//!
//! `COHORT_FUZZ_CASES` sets the number of cases (5,000 by default, so the suite stays quick;
//! a fuzzing run sets more).

use std::path::{Path, PathBuf};

use cohort_executor::{Catalog, Error, Model, Segment};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// The worked cases whose models and segments are the starting points.
const CASES: [&str; 6] = ["case-00", "case-03", "case-07", "case-11", "case-16", "case-21"];

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/segments").join(case)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One character, from anywhere in Unicode, often one that byte-indexed code trips on.
fn character() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        1 => prop::sample::select(vec![
            'é', 'e', '\u{301}', 'ß', 'ı', 'İ', 'Ω', '٣', '०', '７', '𝟙', '½', 'ⅾ', 'ｄ', 'ｈ', 'ｓ', '\0', '\u{7f}', '\u{200b}',
            '\u{200f}', '\u{202e}', '\u{feff}', '\u{fffd}', '😀', '👩', '\u{200d}', '🏽', '"', '\\', '/', '.', '*', '?', '[', '-', '+',
            'd', 'h', 'm', 's', '0', '9', ' ', '\n', '\t',
        ]),
    ]
}

/// Text of up to twelve such characters.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(character(), 0..12).prop_map(|cs| cs.into_iter().collect())
}

/// A JSON value whose strings and keys are such text.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A filter node of the segment language with its names and values drawn as text.
fn node() -> impl Strategy<Value = Value> {
    let ops = vec![
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "in",
        "not_in",
        "between",
        "contains",
        "starts_with",
        "ends_with",
        "is_null",
        "is_not_null",
        "within_last",
        "older_than",
    ];
    let leaf = (text(), prop::sample::select(ops), prop_oneof![text().prop_map(Value::String), value()])
        .prop_map(|(field, op, value)| json!({"field": field, "op": op, "value": value}));
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3).prop_map(|n| json!({"and": n})),
            prop::collection::vec(inner.clone(), 1..3).prop_map(|n| json!({"or": n})),
            inner.clone().prop_map(|n| json!({"not": n})),
            (text(), inner, text()).prop_map(|(related, w, field)| json!({
                "related": related, "where": w, "having": {"agg": "sum", "field": field, "op": "gt", "value": 1}
            })),
        ]
    })
}

/// What a case does to a valid document.
#[derive(Debug, Clone)]
enum Change {
    /// The `n`th string (keys included, in document order) becomes this text.
    String(usize, String),
    /// This text is spliced in at character `n` of the document's text.
    Splice(usize, String),
    /// The `n`th number becomes this text.
    Number(usize, String),
    /// The segment's filter (or the `n`th object of a model) becomes this value.
    Replace(usize, Value),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (any::<usize>(), text()).prop_map(|(n, t)| Change::String(n, t)),
        3 => (any::<usize>(), text()).prop_map(|(n, t)| Change::Splice(n, t)),
        1 => (any::<usize>(), text()).prop_map(|(n, t)| Change::Number(n, t)),
        2 => (any::<usize>(), prop_oneof![node(), value()]).prop_map(|(n, v)| Change::Replace(n, v)),
    ]
}

/// Counts the strings and numbers of a value, keys first within each object.
fn count(value: &Value, strings: &mut usize, numbers: &mut usize) {
    match value {
        Value::String(_) => *strings += 1,
        Value::Number(_) => *numbers += 1,
        Value::Array(items) => items.iter().for_each(|v| count(v, strings, numbers)),
        Value::Object(map) => {
            for (_, v) in map {
                *strings += 1;
                count(v, strings, numbers);
            }
        }
        _ => {}
    }
}

/// Replaces the `target`th string (`is_string`) or number with `text`; `seen` counts down.
fn replace(value: &mut Value, is_string: bool, seen: &mut usize, target: usize, text: &str) {
    match value {
        Value::String(s) if is_string => {
            if *seen == target {
                *s = text.to_string();
            }
            *seen += 1;
        }
        Value::Number(_) if !is_string => {
            if *seen == target {
                *value = Value::String(text.to_string());
            }
            *seen += 1;
        }
        Value::Array(items) => items.iter_mut().for_each(|v| replace(v, is_string, seen, target, text)),
        Value::Object(map) => {
            let entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
            for (k, mut v) in entries {
                let key = if is_string && *seen == target { text.to_string() } else { k };
                if is_string {
                    *seen += 1;
                }
                replace(&mut v, is_string, seen, target, text);
                map.insert(key, v);
            }
        }
        _ => {}
    }
}

/// The document after `changes`, as text (a splice can make it anything).
fn apply(document: &Value, changes: &[Change], is_model: bool) -> String {
    let mut doc = document.clone();
    let mut text = None;
    for c in changes {
        let (mut strings, mut numbers) = (0, 0);
        count(&doc, &mut strings, &mut numbers);
        match c {
            Change::String(n, t) if strings > 0 => replace(&mut doc, true, &mut 0, n % strings, t),
            Change::Number(n, t) if numbers > 0 => replace(&mut doc, false, &mut 0, n % numbers, t),
            Change::Replace(n, v) => {
                if is_model {
                    if let Some(objects) = doc["objects"].as_array_mut().filter(|o| !o.is_empty()) {
                        let i = n % objects.len();
                        objects[i] = v.clone();
                    }
                } else {
                    doc["filter"] = v.clone();
                }
            }
            Change::Splice(n, t) => {
                let base: String = text.take().unwrap_or_else(|| doc.to_string());
                let chars = base.chars().count();
                let at = base.char_indices().map(|(i, _)| i).nth(n % (chars + 1)).unwrap_or(base.len());
                text = Some(format!("{}{t}{}", &base[..at], &base[at..]));
            }
            _ => {}
        }
    }
    text.unwrap_or_else(|| doc.to_string())
}

#[test]
fn models_and_segments_from_all_of_unicode_never_panic() {
    let cases: usize = std::env::var("COHORT_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(5_000);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let bases: Vec<(PathBuf, Value, Value, Catalog)> = CASES
        .iter()
        .map(|case| {
            let dir = case_dir(case);
            let model = read_json(&dir.join("model.json"));
            let segment = read_json(&dir.join("segment.json"));
            let parsed = Model::from_value(&model, &dir).expect("the case's model parses");
            let catalog = runtime.block_on(Catalog::load(parsed, &Default::default())).expect("the case's model loads");
            (dir, model, segment, catalog)
        })
        .collect();

    let mut runner = TestRunner::new(Config { cases: cases as u32, failure_persistence: None, ..Config::default() });
    let strategy = (0..bases.len(), prop::collection::vec(change(), 1..4), any::<bool>());
    let (accepted_segments, loaded_models) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u64));
    let outcome = runner.run(&strategy, |(base, changes, is_model)| {
        let (dir, model, segment, catalog) = &bases[base];
        let text = apply(if is_model { model } else { segment }, &changes, is_model);
        // As the API reads a body: JSON first, then the value.
        let Ok(value) = serde_json::from_str::<Value>(&text) else { return Ok(()) };
        if is_model {
            let Ok(parsed) = Model::from_value(&value, dir).and_then(|m| m.confined_to(dir)) else { return Ok(()) };
            match runtime.block_on(Catalog::load(parsed, &Default::default())) {
                Ok(_) => loaded_models.set(loaded_models.get() + 1),
                // A panic on a catalog reader's thread comes back as an internal error.
                Err(Error::Internal(m)) => return Err(TestCaseError::fail(format!("internal error loading {text}: {m}"))),
                Err(_) => {}
            }
        } else {
            match Segment::from_value(&value, catalog) {
                Ok(_) => accepted_segments.set(accepted_segments.get() + 1),
                Err(Error::Internal(m)) => return Err(TestCaseError::fail(format!("internal error checking {text}: {m}"))),
                Err(_) => {}
            }
        }
        Ok::<(), TestCaseError>(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    println!("{cases} cases from all of Unicode: {} segments accepted, {} models loaded, no panic", accepted_segments.get(), loaded_models.get());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// CSV sources whose header names (and the model's fields naming them) are arbitrary text:
    /// a catalog or an error naming the problem, never a panic.
    #[test]
    fn csv_headers_from_all_of_unicode(names in prop::collection::vec(text(), 1..4), declared in any::<bool>(), row in text()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let header = names.join(",");
        std::fs::write(dir.path().join("t.csv"), format!("{header}\n{row}\n1,2,3\n")).expect("write");
        let mut object = json!({"name": "t", "primary_key": names[0], "source": {"format": "csv", "path": "t.csv"}});
        if declared {
            object["fields"] = names.iter().map(|n| json!({"name": n, "type": "string"})).collect();
        }
        let model = json!({"objects": [object]});
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        if let Ok(parsed) = Model::from_value(&model, dir.path()).and_then(|m| m.confined_to(dir.path()))
            && let Err(Error::Internal(m)) = runtime.block_on(Catalog::load(parsed, &Default::default())) {
                prop_assert!(false, "internal error for header {:?}: {}", header, m);
            }
    }
}
