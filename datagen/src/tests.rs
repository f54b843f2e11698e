//! Checks of the generated tenants: every segment is valid against its model (through the
//! real executor, on the real Parquet files), the columns have exactly the declared Arrow
//! types, and the same seed gives the same bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::writer::FieldType;
use super::{DatagenArgs, Profile, run};

/// Small sizes: enough rows for every kind of dirt, fast to write.
const PROFILES: [(Profile, u64); 3] = [(Profile::Retail, 300), (Profile::B2b, 100), (Profile::Wide, 3)];

fn generate(profile: Profile, scale: u64, seed: u64, out: &Path) -> anyhow::Result<()> {
    run(DatagenArgs { profile, scale, seed, out: out.to_path_buf() })
}

/// Every file under `dir`, by relative path, with its bytes.
fn files(dir: &Path) -> anyhow::Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir)?.to_path_buf();
                out.insert(relative, std::fs::read(&path)?);
            }
        }
    }
    Ok(out)
}

#[tokio::test]
async fn every_segment_is_valid_against_its_model() -> anyhow::Result<()> {
    for (profile, scale) in PROFILES {
        let dir = tempfile::tempdir()?;
        generate(profile, scale, 1, dir.path())?;
        let model = cohort_executor::Model::from_file(&dir.path().join("model.json"))?;
        let catalog = cohort_executor::Catalog::load(model, &Default::default()).await?;
        let mut segments = 0;
        for entry in std::fs::read_dir(dir.path().join("segments"))? {
            let path = entry?.path();
            let segment = cohort_executor::Segment::from_file(&path, &catalog).with_context(|| format!("{}: {}", profile.name(), path.display()))?;
            if path.file_stem().and_then(|s| s.to_str()) == Some("twenty_related") {
                let shape = segment.shape();
                assert_eq!(shape.related_predicates, 20, "twenty_related has exactly 20 related predicates");
                assert_eq!(shape.max_hops, 4, "twenty_related has paths of 4 hops");
            }
            segments += 1;
        }
        let expected = match profile {
            Profile::Retail => 10,
            Profile::B2b => 6,
            Profile::Wide => 3,
        };
        assert_eq!(segments, expected, "{} segments", profile.name());
    }
    Ok(())
}

#[test]
fn parquet_columns_have_the_declared_types() -> anyhow::Result<()> {
    for (profile, scale) in PROFILES {
        let dir = tempfile::tempdir()?;
        generate(profile, scale, 1, dir.path())?;
        let model: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("model.json"))?)?;
        let objects = model["objects"].as_array().context("objects")?;
        // The wide model has 6,000 objects: a sample is enough.
        for object in objects.iter().take(50) {
            let name = object["name"].as_str().context("name")?;
            let file = File::open(dir.path().join(name).join("part-0.parquet"))?;
            let schema = ParquetRecordBatchReaderBuilder::try_new(file)?.schema().clone();
            let fields = object["fields"].as_array().context("fields")?;
            assert_eq!(schema.fields().len(), fields.len(), "{name}: one column per declared field");
            for (column, field) in schema.fields().iter().zip(fields) {
                let declared = match field["type"].as_str() {
                    Some("string") => FieldType::String,
                    Some("int") => FieldType::Int,
                    Some("float") => FieldType::Float,
                    Some("bool") => FieldType::Bool,
                    Some("date") => FieldType::Date,
                    Some("timestamp") => FieldType::Timestamp,
                    other => anyhow::bail!("{name}: unknown type {other:?}"),
                };
                assert_eq!(column.name(), field["name"].as_str().unwrap_or_default(), "{name}: column order");
                assert_eq!(column.data_type(), &super::writer::arrow_type(declared), "{name}.{}", column.name());
            }
        }
    }
    Ok(())
}

#[test]
fn the_same_seed_gives_the_same_bytes() -> anyhow::Result<()> {
    for (profile, scale) in [(Profile::Retail, 300), (Profile::B2b, 100)] {
        let (a, b, c) = (tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?);
        generate(profile, scale, 5, a.path())?;
        generate(profile, scale, 5, b.path())?;
        generate(profile, scale, 6, c.path())?;
        let (a, b, c) = (files(a.path())?, files(b.path())?, files(c.path())?);
        assert!(a == b, "{}: seed 5 twice gave different files", profile.name());
        let order = PathBuf::from(if matches!(profile, Profile::Retail) { "order" } else { "account" }).join("part-0.parquet");
        assert_ne!(a.get(&order), c.get(&order), "{}: seeds 5 and 6 gave the same {}", profile.name(), order.display());
    }
    Ok(())
}

#[test]
fn a_second_run_replaces_the_part_files() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    generate(Profile::Retail, 300, 1, dir.path())?;
    std::fs::write(dir.path().join("order").join("part-7.parquet"), b"left over")?;
    generate(Profile::Retail, 300, 1, dir.path())?;
    assert!(!dir.path().join("order").join("part-7.parquet").exists(), "old part files are removed");
    Ok(())
}

#[test]
fn json_is_written_in_the_spec_order_and_reads_back() -> anyhow::Result<()> {
    let document = serde_json::json!({
        "root": "individual", "name": "x",
        "filter": {"where": {"field": "kind", "op": "eq", "value": "open"}, "related": "email_event", "via": ["a", "b"]}
    });
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("x.json");
    super::write_json(&path, &document)?;
    let text = std::fs::read_to_string(&path)?;
    let expected = r#"{
  "name": "x",
  "root": "individual",
  "filter": {
    "related": "email_event",
    "via": [
      "a",
      "b"
    ],
    "where": {
      "field": "kind",
      "op": "eq",
      "value": "open"
    }
  }
}
"#;
    assert_eq!(text, expected);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&text)?, document);
    Ok(())
}
