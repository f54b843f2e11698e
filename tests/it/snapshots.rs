//! What a user sees, kept as snapshots under `tests/snapshots/`: the OpenAPI document, the
//! `/metrics` names and labels, every command's `--help`, the migrations and the config keys.
//! Code may move freely underneath; none of these may change unnoticed. When one is changed on
//! purpose, `COHORT_UPDATE_SNAPSHOTS=1 cargo test --workspace --test it -- snapshots::` writes
//! the new snapshot, and the diff is reviewed with the change.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::{Value, json};

use crate::server::{ADMIN, Api, Server, datagen, setup_tenant, watch};

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

/// Compares `actual` with the snapshot `name`, or writes it with `COHORT_UPDATE_SNAPSHOTS=1`.
fn check(name: &str, actual: &str) {
    let path = snapshot_dir().join(name);
    if std::env::var("COHORT_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(snapshot_dir()).expect("tests/snapshots");
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; COHORT_UPDATE_SNAPSHOTS=1 writes it", path.display()));
    if expected != actual {
        let old: BTreeSet<&str> = expected.lines().collect();
        let new: BTreeSet<&str> = actual.lines().collect();
        let gone: Vec<&&str> = old.difference(&new).take(20).collect();
        let added: Vec<&&str> = new.difference(&old).take(20).collect();
        panic!(
            "{name} changed (COHORT_UPDATE_SNAPSHOTS=1 writes it, if the change is meant):\n  lines gone: {gone:#?}\n  lines new: {added:#?}\n  (the same lines in another order if both are empty)"
        );
    }
}

fn cohort(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cohort")).args(args).output().expect("cohort runs");
    assert!(out.status.success(), "cohort {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The subcommands a `--help` text lists under `Commands:`.
fn subcommands(help: &str) -> Vec<String> {
    let Some((_, rest)) = help.split_once("Commands:\n") else {
        return Vec::new();
    };
    rest.lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_commands_help_is_as_it_was() {
    let mut out = String::new();
    let mut queue = vec![Vec::<String>::new()];
    while let Some(path) = queue.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = cohort(&args);
        out.push_str(&format!("==== cohort {}\n{help}\n", args.join(" ")));
        for sub in subcommands(&help).into_iter().rev() {
            let mut next = path.clone();
            next.push(sub);
            queue.push(next);
        }
    }
    assert!(out.matches("==== cohort").count() > 10, "fewer commands than expected:\n{out}");
    check("help.txt", &out);
}

/// FNV-1a, 64 bits: a fingerprint of a file that does not depend on the Rust release.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[test]
fn the_migrations_are_as_they_were() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("control/migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).expect("control/migrations").flatten().map(|e| e.path()).collect();
    files.sort();
    let mut out = String::new();
    for file in files {
        let bytes = std::fs::read(&file).expect("migration");
        let name = file.file_name().and_then(|n| n.to_str()).expect("name");
        out.push_str(&format!("{name} {} bytes fnv1a {:016x}\n", bytes.len(), fnv1a(&bytes)));
    }
    check("migrations.txt", &out);
}

/// A deserializer that answers nothing but records what is asked of it: at the end of `path`,
/// the fields of the struct found there (or that a plain value is there).
struct Probe<'a> {
    path: &'a [&'static str],
    found: &'a mut Option<Vec<&'static str>>,
}

#[derive(Debug)]
struct Stop(String);

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Stop(msg.to_string())
    }
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        if self.path.is_empty() {
            *self.found = Some(Vec::new());
        }
        Err(Stop("a plain value".into()))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(self, _: &'static str, fields: &'static [&'static str], visitor: V) -> Result<V::Value, Stop> {
        match self.path.split_first() {
            None => {
                *self.found = Some(fields.to_vec());
                Err(Stop("fields read".into()))
            }
            Some((first, rest)) => visitor.visit_map(OneField { key: Some(first), rest, found: self.found }),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit unit_struct
        newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

struct OneField<'a> {
    key: Option<&'static str>,
    rest: &'a [&'static str],
    found: &'a mut Option<Vec<&'static str>>,
}

impl<'de> MapAccess<'de> for OneField<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Stop> {
        match self.key.take() {
            Some(key) => seed.deserialize(de::value::StrDeserializer::<Stop>::new(key)).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        seed.deserialize(Probe { path: self.rest, found: self.found })
    }
}

/// Every key a `T` accepts, tables as `a.b.c`, found by asking its `Deserialize` for the
/// fields at each path.
fn keys<T: for<'de> Deserialize<'de>>() -> Vec<String> {
    let mut out = Vec::new();
    let mut queue: Vec<Vec<&'static str>> = vec![Vec::new()];
    while let Some(path) = queue.pop() {
        let mut found = None;
        let _ = T::deserialize(Probe { path: &path, found: &mut found });
        match found {
            Some(fields) if !fields.is_empty() => {
                for field in fields {
                    let mut next = path.clone();
                    next.push(field);
                    queue.push(next);
                }
            }
            _ => out.push(path.join(".")),
        }
    }
    out.sort();
    out
}

#[test]
fn the_config_keys_are_as_they_were() {
    let mut out = keys::<cohort_control::Config>().join("\n");
    out.push('\n');
    // The example file loads (it is checked to) and names only keys that exist.
    let example = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("cohort.example.toml")).expect("cohort.example.toml");
    let table: toml::Table = toml::from_str(&example).expect("cohort.example.toml is TOML");
    assert!(!table.is_empty());
    // The environment variables: every COHORT_* the configuration reads, from its source.
    let source = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("control/src/config.rs")).expect("config.rs");
    let vars: BTreeSet<&str> = source
        .split('"')
        .filter(|s| s.starts_with("COHORT_") || s.starts_with("OTEL_"))
        .filter(|s| s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .collect();
    for var in vars {
        out.push_str(var);
        out.push('\n');
    }
    check("config-keys.txt", &out);
}

/// The series of a `/metrics` text as `name{label,label}`, values and label values left out.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let name_end = l.find(['{', ' ']).unwrap_or(l.len());
            let name = &l[..name_end];
            let labels: BTreeSet<&str> = match l[name_end..].strip_prefix('{') {
                Some(rest) => {
                    let body = &rest[..rest.rfind('}').unwrap_or(rest.len())];
                    body.split("\",").filter_map(|kv| kv.split_once('=')).map(|(k, _)| k.trim_start_matches(',')).collect()
                }
                None => BTreeSet::new(),
            };
            format!("{name}{{{}}}", labels.into_iter().collect::<Vec<_>>().join(","))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_and_the_metrics_are_as_they_were() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    datagen("retail", 200, 1, &data);
    let url = format!("sqlite://{}", dir.path().join("cohort.db").display());
    let server = Server::start(&dir.path().join("serve"), &url, 1);
    let admin = Api::new(&server.base, ADMIN);

    let doc = Api::new(&server.base, "").get("/v1/openapi.json").await;
    assert_eq!(doc.status, 200);
    check("openapi.json", &(serde_json::to_string_pretty(&doc.body).expect("json") + "\n"));

    // The metrics once a tenant exists and one job of it has run.
    let api = setup_tenant(&admin, "snap", "eu", &data, &["recent_big_spenders_not_unsubscribed"]).await;
    let run = api.post("/v1/tenants/snap/segments/recent_big_spenders_not_unsubscribed/runs", &json!({})).await;
    assert_eq!(run.status, 202, "{:?}", run.body);
    let id = run.body["id"].as_str().expect("id").to_string();
    let view = watch(&api, "snap", &id, |v: &Value| v["status"] == "succeeded" || v["status"] == "failed").await;
    assert_eq!(view["status"], "succeeded", "{view:?}");
    let metrics = reqwest::get(server.url("/metrics")).await.expect("/metrics").text().await.expect("text");
    let mut out: Vec<String> = series(&metrics).into_iter().collect();
    out.push(String::new());
    check("metrics.txt", &out.join("\n"));
}
