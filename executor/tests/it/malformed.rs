//! Bad models and segments are errors that name their place, never panics. Tests are data:
//! each row is an input and a fragment the message must contain.

use std::path::{Path, PathBuf};

use cohort_executor::{Catalog, Error, Model, Segment};
use serde_json::{Value, json};

/// The data of worked case 00: person, campaigns, events, households, tickets, accounts.
fn case_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/segments/case-00")
}

fn base_model() -> Value {
    let text = std::fs::read_to_string(case_dir().join("model.json")).expect("case-00 model");
    serde_json::from_str(&text).expect("case-00 model is JSON")
}

async fn catalog() -> Catalog {
    let model = Model::from_value(&base_model(), &case_dir()).expect("case-00 model is valid");
    Catalog::load(model, &Default::default()).await.expect("case-00 loads")
}

async fn load_model_text(text: &str) -> Result<Catalog, Error> {
    let model = Model::from_json(text, &case_dir())?;
    Catalog::load(model, &Default::default()).await
}

fn assert_invalid<T>(result: Result<T, Error>, fragment: &str, input: &str) {
    match result {
        Err(e) => {
            let text = e.to_string();
            assert_eq!(e.exit_code(), 2, "{input}: want exit 2, got {} ({text})", e.exit_code());
            assert!(text.contains(fragment), "{input}: message {text:?} should contain {fragment:?}");
        }
        Ok(_) => panic!("{input}: accepted, want an error containing {fragment:?}"),
    }
}

/// Applies `edit` to a copy of the case-00 model.
fn edited(edit: impl FnOnce(&mut Value)) -> String {
    let mut model = base_model();
    edit(&mut model);
    model.to_string()
}

#[tokio::test]
async fn bad_models_are_rejected_with_their_place() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(String, &str)> = vec![
        ("{".into(), "not valid JSON"),
        ("[]".into(), "a model is a JSON object"),
        (deep, "nested more than 128 levels"),
        (edited(|m| m["extra"] = json!(1)), "extra: unknown key"),
        (edited(|m| m["objects"] = json!([])), "objects: a model needs at least one object"),
        (edited(|m| m["objects"][0]["name"] = json!("1person")), "objects[0].name"),
        (edited(|m| m["objects"][1]["name"] = json!("person")), "objects[1].name: \"person\" names another object"),
        (edited(|m| m["objects"][0]["fields"][1]["type"] = json!("strng")), "did you mean \"string\""),
        (edited(|m| m["objects"][0]["fields"][1]["type"] = json!(7)), "objects[0].fields[1].type"),
        (edited(|m| m["objects"][0]["primary_key"] = json!("nope")), "objects[0].primary_key"),
        (edited(|m| m["objects"][1]["primary_key"] = json!("float_cam")), "a primary key must be string or int"),
        (edited(|m| m["objects"][0]["source"]["format"] = json!("xlsx")), "objects[0].source.format"),
        (edited(|m| m["objects"][0]["source"]["path"] = json!(42)), "objects[0].source.path"),
        (edited(|m| m["objects"][0]["fields"][0]["nullable"] = json!(true)), "objects[0].fields[0].nullable: unknown key"),
        (edited(|m| m["objects"][0]["fields"][1]["name"] = json!("__cohort_x")), "reserved"),
        (edited(|m| m["relationships"][0]["to"] = json!("persn")), "relationships[0].to: \"persn\" is not an object of the model (did you mean \"person\"?)"),
        (edited(|m| m["relationships"][0]["from_field"] = json!("person_ref")), "relationships[0].from_field"),
        (
            edited(|m| m["relationships"][0]["to_field"] = json!("cat_pr")),
            "relationships[0].to_field: \"cat_pr\" is not a field of \"person\" (did you mean \"cat_per\"?)",
        ),
        (edited(|m| m["relationships"][0]["to_field"] = json!("date_per")), "a relationship joins fields of one type"),
        (edited(|m| m["relationships"][1]["name"] = json!("r0_campaigns_person")), "names another relationship"),
        (edited(|m| m["guardrails"] = json!({"max_hops": -1})), "guardrails.max_hops"),
        (edited(|m| m["guardrails"] = json!({"max_hop": 3})), "did you mean \"max_hops\""),
        (edited(|m| m["objects"][0]["fields"][1]["name"] = json!("no_such_column")), "objects[0].fields[1]"),
    ];
    for (text, fragment) in &cases {
        assert_invalid(load_model_text(text).await, fragment, &text.chars().take(120).collect::<String>());
    }
}

/// Parquet files carry their types: a declared type they do not hold is a schema mismatch
/// found at load time, before any row is read.
#[tokio::test]
async fn parquet_types_are_checked_against_the_model() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/segments/case-16");
    let mut model: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).expect("model")).expect("json");
    let field = model["objects"][0]["fields"][1].clone();
    let other = if field["type"] == "int" { "string" } else { "int" };
    model["objects"][0]["fields"][1]["type"] = json!(other);
    let loaded = match Model::from_value(&model, &dir) {
        Ok(m) => Catalog::load(m, &Default::default()).await,
        Err(e) => Err(e),
    };
    assert_invalid(loaded, &format!("objects[0].fields[1]: {} is declared {other} but the source holds", field["name"]), "case-16 retyped");
}

#[tokio::test]
async fn paths_outside_the_data_root_are_refused_when_confined() {
    for path in ["../case-01/person.csv", "/etc/passwd", "sub/../../x.csv", "file:///etc/passwd"] {
        let text = edited(|m| m["objects"][0]["source"]["path"] = json!(path));
        let model = Model::from_json(&text, &case_dir()).expect("parses");
        assert_invalid(model.confined_to(&case_dir()), "objects[0].source.path", path);
    }
    // Every file a folder or a glob lists is checked: a link inside the root to a file
    // outside it is refused, named as listed; a link that stays inside the root is read.
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
    std::fs::create_dir_all(root.join("person")).expect("person folder");
    std::fs::create_dir_all(&outside).expect("outside");
    for entry in std::fs::read_dir(case_dir()).expect("case-00").flatten() {
        if entry.path().extension().is_some_and(|x| x == "csv") {
            std::fs::copy(entry.path(), root.join(entry.file_name())).expect("copy");
        }
    }
    std::fs::rename(root.join("person.csv"), root.join("person/part-0.csv")).expect("move");
    std::fs::copy(root.join("person/part-0.csv"), outside.join("secret.csv")).expect("copy");
    std::os::unix::fs::symlink(root.join("person/part-0.csv"), root.join("person/part-1.csv")).expect("link inside");
    let load = |path: &'static str| {
        let text = edited(|m| m["objects"][0]["source"]["path"] = json!(path));
        let root = root.clone();
        async move { Catalog::load(Model::from_json(&text, &root)?.confined_to(&root)?, &Default::default()).await }
    };
    assert!(load("person/").await.is_ok(), "a link inside the root is read");
    std::os::unix::fs::symlink(outside.join("secret.csv"), root.join("person/part-2.csv")).expect("link out");
    for path in ["person/", "person/*.csv", "person/part-[0-9].csv"] {
        assert_invalid(load(path).await, "objects[0].source.path: \"person/part-2.csv\" is a link that leads out", path);
    }
    // A folder behind a link inside a listed folder is not listed at all: its files outside
    // the root are never read (if a listing ever follows it, the check above refuses them).
    std::fs::remove_file(root.join("person/part-2.csv")).expect("unlink");
    std::os::unix::fs::symlink(&outside, root.join("person/more")).expect("folder link");
    match load("person/").await {
        Ok(catalog) => assert_eq!(catalog.objects[0].files, 2, "only person/part-0.csv and the link inside the root"),
        Err(e) => assert!(e.to_string().contains("\"person/more/secret.csv\" is a link that leads out"), "{e}"),
    }

    // Unconfined (the command line), a missing file is unreadable data: exit 1, not a panic.
    let text = edited(|m| m["objects"][0]["source"]["path"] = json!("../no-such-dir/person.csv"));
    let err = load_model_text(&text).await.expect_err("missing source");
    assert_eq!(err.exit_code(), 1, "{err}");
}

#[tokio::test]
async fn bad_segments_are_rejected_with_their_place() {
    let catalog = catalog().await;
    let nots = |n: usize| {
        let mut node = json!({"field": "cat_per", "op": "is_null"});
        for _ in 0..n {
            node = json!({"not": node});
        }
        json!({"root": "person", "filter": node}).to_string()
    };
    let deep_text =
        format!("{{\"root\":\"person\",\"filter\":{}{{\"field\":\"cat_per\",\"op\":\"is_null\"}}{}}}", "{\"not\":".repeat(10_000), "}".repeat(10_000));
    let seg = |filter: Value| json!({"name": "s", "root": "person", "filter": filter}).to_string();
    let related = |r: Value| seg(r);
    let many_related = seg(json!({"or": (0..65).map(|_| json!({"related": "accounts"})).collect::<Vec<_>>()}));
    let huge_in = seg(json!({"field": "cat_per", "op": "in", "value": (0..10_001).map(|i| format!("v{i}")).collect::<Vec<_>>()}));
    let cases: Vec<(String, &str)> = vec![
        ("{\"root\":".into(), "not valid JSON"),
        ("17".into(), "a segment is a JSON object"),
        (deep_text, "nested more than 128 levels"),
        (nots(40), "max_depth"),
        (huge_in, "max_in_list"),
        (many_related, "max_related"),
        (
            json!({"root": "persons", "filter": {"field": "cat_per", "op": "is_null"}}).to_string(),
            "root: \"persons\" is not an object of the model (did you mean \"person\"?)",
        ),
        (json!({"root": "person"}).to_string(), "filter: required"),
        (json!({"root": "person", "filter": {"field": "cat_per", "op": "is_null"}, "limit": 5}).to_string(), "limit: unknown key"),
        (seg(json!({"field": "cat_pr", "op": "eq", "value": "x"})), "filter.field: \"cat_pr\" is not a field of \"person\" (did you mean \"cat_per\"?)"),
        (seg(json!({"field": "cat_per", "op": "eq", "value": "x", "extra": 1})), "filter.extra: unknown key"),
        (seg(json!({"field": "cat_per", "op": "like", "value": "x"})), "filter.op: \"like\" is not an operator"),
        (seg(json!({"field": "cat_per", "op": 5, "value": "x"})), "filter.op: must be a string"),
        (seg(json!({"field": "cat_per", "op": "eq", "value": 5})), "filter.value: 5 does not fit \"cat_per\""),
        (seg(json!({"field": "cat_per", "op": "eq"})), "filter.value: required"),
        (seg(json!({"field": "cat_per", "op": "is_null", "value": "x"})), "takes no value"),
        (seg(json!({"field": "date_per", "op": "eq", "value": "2026-13-01"})), "filter.value"),
        (seg(json!({"field": "date_per", "op": "eq", "value": "2026-1-01"})), "filter.value"),
        (seg(json!({"field": "date_per", "op": "within_last", "value": "30x"})), "not a duration"),
        (seg(json!({"field": "date_per", "op": "within_last", "value": "30é"})), "not a duration"),
        (seg(json!({"field": "date_per", "op": "older_than", "value": "é"})), "not a duration"),
        (seg(json!({"field": "date_per", "op": "within_last", "value": "٣٠d"})), "not a duration"),
        (seg(json!({"field": "date_per", "op": "within_last", "value": "30d\u{301}"})), "not a duration"),
        (seg(json!({"field": "date_per", "op": "within_last", "value": "99999999999999999d"})), "filter.value"),
        (seg(json!({"field": "cat_per", "op": "within_last", "value": "30d"})), "applies to date and timestamp fields"),
        (seg(json!({"field": "date_per", "op": "contains", "value": "x"})), "applies to string fields"),
        (seg(json!({"field": "cat_per", "op": "between", "value": ["a"]})), "array of two values"),
        (seg(json!({"field": "cat_per", "op": "in", "value": "a"})), "takes an array"),
        (seg(json!({"field": "cat_per", "op": "in", "value": ["a", 3]})), "filter.value[1]"),
        (seg(json!({"and": []})), "filter.and: needs at least one node"),
        (seg(json!({"and": {}})), "filter.and: must be an array"),
        (seg(json!({"and": [{"field": "cat_per", "op": "is_null"}, 3]})), "filter.and[1]: a filter node is a JSON object"),
        (seg(json!({"field": "cat_per", "and": []})), "exactly one kind"),
        (seg(json!({"nor": []})), "unknown node \"nor\""),
        (seg(json!({})), "empty node"),
        (related(json!({"related": "acounts"})), "filter.related: \"acounts\" is not an object of the model (did you mean \"accounts\"?)"),
        (related(json!({"related": "accounts", "via": ["r9"]})), "filter.via[0]: \"r9\" is not a relationship"),
        (related(json!({"related": "accounts", "via": ["r3_tickets_households"]})), "does not touch \"person\""),
        (related(json!({"related": "accounts", "via": ["r1_events_person"]})), "the path ends at \"events\""),
        (related(json!({"related": "accounts", "via": []})), "names at least one relationship"),
        (related(json!({"related": "person"})), "needs \"via\""),
        (related(json!({"related": "households"})), "more than one shortest path"),
        (related(json!({"related": "accounts", "where": {"field": "nope", "op": "is_null"}})), "filter.where.field: \"nope\" is not a field of \"accounts\""),
        (related(json!({"related": "accounts", "having": {"agg": "sum", "field": "bool_acc", "op": "gt", "value": 1}})), "needs an int or float field"),
        (related(json!({"related": "accounts", "having": {"agg": "sum", "op": "gt", "value": 1}})), "filter.having.field: required"),
        (related(json!({"related": "accounts", "having": {"agg": "median", "field": "int_acc", "op": "gt", "value": 1}})), "filter.having.agg"),
        (related(json!({"related": "accounts", "having": {"agg": "count", "op": "gt", "value": "1"}})), "filter.having.value: must be a number"),
        (related(json!({"related": "accounts", "having": {"agg": "count", "op": "over", "value": 1}})), "filter.having.op"),
        (related(json!({"related": "accounts", "whre": {}})), "did you mean \"where\""),
        (json!({"root": "tickets", "filter": {"related": "tickets", "via": vec!["r6_tickets_tickets"; 5]}}).to_string(), "max_hops"),
    ];
    for (text, fragment) in &cases {
        assert_invalid(Segment::from_json(text, &catalog), fragment, &text.chars().take(120).collect::<String>());
    }
}

#[tokio::test]
async fn ambiguous_paths_list_their_candidates() {
    let catalog = catalog().await;
    let text = json!({"root": "person", "filter": {"related": "households"}}).to_string();
    let err = Segment::from_json(&text, &catalog).expect_err("ambiguous");
    let message = err.to_string();
    for candidate in ["[\"r1_events_person\", \"r2_households_events\"]", "[\"r1_events_person\", \"r5_events_households\"]"] {
        assert!(message.contains(candidate), "{message} should list {candidate}");
    }
}

/// Random bytes and random mutations of valid documents never panic.
#[tokio::test]
async fn arbitrary_documents_never_panic() {
    use rand::{Rng, SeedableRng};
    let catalog = catalog().await;
    let valid_segment = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/segments/case-05/segment.json")).expect("case-05");
    let valid_model = base_model().to_string();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    // JSON's punctuation and the language's words, and characters from all of Unicode.
    let alphabet: Vec<char> = "{}[]\":,0123456789.-eE truefalsnlrelatedviaopvaluefieldandornot\\é\u{301}٣ｄ😀\u{200b}\0".chars().collect();
    for _ in 0..3_000 {
        for base in [&valid_segment, &valid_model] {
            let mut chars: Vec<char> = base.chars().collect();
            for _ in 0..rng.random_range(1..6) {
                let i = rng.random_range(0..chars.len());
                let c = if rng.random_bool(0.2) {
                    char::from_u32(rng.random_range(0..=0x10FFFF)).unwrap_or('\u{fffd}')
                } else {
                    alphabet[rng.random_range(0..alphabet.len())]
                };
                match rng.random_range(0..3) {
                    0 => chars[i] = c,
                    1 => {
                        chars.remove(i);
                    }
                    _ => chars.insert(i, c),
                }
            }
            let text: String = chars.into_iter().collect();
            let _ = Segment::from_json(&text, &catalog);
            if let Ok(model) = Model::from_json(&text, &case_dir()) {
                let _ = Catalog::load(model, &Default::default()).await;
            }
        }
    }
}
