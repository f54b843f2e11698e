//! The executor's integration tests (one binary: DataFusion links once).

mod ballista;
mod conformance;
mod malformed;
mod memory;
mod naive;
mod quality;
mod random;
mod s3;
mod unicode;

use std::path::Path;

use cohort_executor::{Catalog, JoinStrategy, Model, PlanChoice, RunOptions, RunReport, Segment};

/// Loads a model and segment from files and runs them with the given plan choice.
pub async fn run_files(model: &Path, segment: &Path, as_of: &str, plan: PlanChoice) -> cohort_executor::Result<RunReport> {
    run_files_with(model, segment, as_of, plan, JoinStrategy::Hash, KeySets::InPlan).await
}

/// Whether parts of the single plan (aggregate key sets, the rows before an aggregate) run
/// before the rest, at any size, or stay in it.
#[derive(Debug, Clone, Copy)]
pub enum KeySets {
    /// Everything worth running first runs first, whatever its size; aggregates are always
    /// cut to the rows before them.
    First,
    /// As `First`, but aggregates are never cut.
    FirstUncut,
    /// Nothing runs first.
    InPlan,
}

/// As [`run_files`], with a join strategy and a choice of key sets first.
pub async fn run_files_with(
    model: &Path,
    segment: &Path,
    as_of: &str,
    plan: PlanChoice,
    join: JoinStrategy,
    key_sets: KeySets,
) -> cohort_executor::Result<RunReport> {
    run_files_on(model, segment, as_of, plan, join, key_sets, None).await
}

/// As [`run_files_with`], on a Ballista cluster when `ballista` names one.
pub async fn run_files_on(
    model: &Path,
    segment: &Path,
    as_of: &str,
    plan: PlanChoice,
    join: JoinStrategy,
    key_sets: KeySets,
    ballista: Option<&cohort_executor::BallistaUrl>,
) -> cohort_executor::Result<RunReport> {
    let model = Model::from_file(model)?;
    let catalog = Catalog::load(model, &Default::default()).await?;
    let segment = Segment::from_file(segment, &catalog)?;
    let as_of =
        cohort_executor::parse_timestamp(as_of.trim()).ok_or_else(|| cohort_executor::Error::Internal(format!("bad as_of {as_of:?} in a test case")))?;
    let mut options = RunOptions::new(as_of);
    options.plan = plan;
    options.join_strategy = join;
    options.ballista = ballista.cloned();
    (options.key_sets_first_min_rows, options.cut_share) = match key_sets {
        KeySets::First => (0, 1.0),
        KeySets::FirstUncut => (0, 0.0),
        KeySets::InPlan => (u64::MAX, 0.0),
    };
    cohort_executor::run_segment(&catalog, &segment, &options).await
}

/// The case folders (each with a `segment.json`) under `root`, sorted; none when `root` is
/// absent.
pub fn case_dirs_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir(root)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join("segment.json").exists()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Writes `columns` as one Parquet file, `part-0.parquet`, in the folder `dir`.
pub fn write_parquet(dir: &Path, columns: Vec<(&str, datafusion::arrow::array::ArrayRef)>) {
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::datatypes::{Field, Schema};
    std::fs::create_dir_all(dir).expect("dir");
    let schema = std::sync::Arc::new(Schema::new(columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect::<Vec<_>>()));
    let batch = RecordBatch::try_new(std::sync::Arc::clone(&schema), columns.into_iter().map(|(_, a)| a).collect()).expect("batch");
    let file = std::fs::File::create(dir.join("part-0.parquet")).expect("file");
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

/// `model.json` in `dir`: people (`person/`) and their events (`event/`, `person_id` joins).
pub fn write_person_event_model(dir: &Path) {
    let model = serde_json::json!({
        "objects": [
            {"name": "person", "primary_key": "person_id", "source": {"format": "parquet", "path": "person/"}},
            {"name": "event", "primary_key": "event_id", "source": {"format": "parquet", "path": "event/"}},
        ],
        "relationships": [{"name": "event_person", "from": "event", "from_field": "person_id", "to": "person", "to_field": "person_id"}],
    });
    std::fs::write(dir.join("model.json"), model.to_string()).expect("model");
}

/// Both planning modes, forced.
pub const MODES: [PlanChoice; 2] = [PlanChoice::Single, PlanChoice::Phased];
