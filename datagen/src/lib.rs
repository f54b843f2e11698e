//! `cohort datagen` (the crate `cohort-datagen`): synthetic tenants (Parquet data, `model.json`, `segments/`).
//!
//! Three profiles: `retail` (individuals, orders, lines, products, email events, web visits,
//! loyalty accounts), `b2b` (accounts, contacts, opportunities, cases, activities, users) and
//! `wide` (6,000 objects and about 10,000 relationships, few rows each).
//!
//! The data is dirty the way customer data is: skewed foreign keys (a few keys own most rows),
//! duplicate and NULL primary keys, NULL and dangling foreign keys. Times are relative to the
//! fixed instant [`random::AS_OF_TEXT`] (2026-11-01T00:00:00Z): evaluate segments `--as-of` it.
//!
//! Determinism: every part file is made from its own stream of a `ChaCha8Rng` seeded with
//! `--seed`, so the same seed gives byte-identical files whatever the thread scheduling.
//! `model.json` is written last: when it exists, the tenant is complete.

#![deny(missing_docs)]

mod b2b;
pub mod random;
mod retail;
mod wide;
mod writer;

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use writer::{Relationship, Table};

/// Arguments of `cohort datagen`.
#[derive(Debug, clap::Args)]
pub struct DatagenArgs {
    /// Which kind of tenant to make.
    #[arg(long, value_enum)]
    pub profile: Profile,
    /// Size: individuals (retail), accounts (b2b), or rows per object (wide, at most 50).
    #[arg(long, default_value_t = 10_000)]
    pub scale: u64,
    /// Seed for the random generator: the same seed gives the same data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The folder to write into (created if missing). Existing `part-*.parquet` files in the
    /// objects' folders are replaced.
    #[arg(long)]
    pub out: PathBuf,
}

/// The kinds of synthetic tenant.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Profile {
    /// A retailer: individuals, orders, lines, products, email events, web visits, loyalty.
    Retail,
    /// A B2B company: accounts, contacts, opportunities, cases, activities.
    B2b,
    /// A 6,000-object model with about 10,000 relationships and few rows each.
    Wide,
}

impl Profile {
    /// The profile's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Retail => "retail",
            Profile::B2b => "b2b",
            Profile::Wide => "wide",
        }
    }
}

/// Runs `cohort datagen`.
pub fn run(args: DatagenArgs) -> anyhow::Result<()> {
    if args.scale == 0 {
        anyhow::bail!("--scale must be at least 1");
    }
    let started = Instant::now();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating the output folder {}", args.out.display()))?;
    // model.json marks a complete tenant: remove a previous one until the new data is written.
    let model_path = args.out.join("model.json");
    if model_path.exists() {
        std::fs::remove_file(&model_path).with_context(|| format!("removing the old {}", model_path.display()))?;
    }
    let ctx = GenContext { out: args.out.clone(), scale: args.scale, seed: args.seed };
    let tenant = match args.profile {
        Profile::Retail => retail::generate(&ctx)?,
        Profile::B2b => b2b::generate(&ctx)?,
        Profile::Wide => wide::generate(&ctx)?,
    };
    tenant.write_metadata(&args.out)?;
    let total: u64 = tenant.rows.values().sum();
    eprintln!(
        "datagen {}: {} objects, {} relationships, {} rows, {} segments in {:.1}s → {}",
        args.profile.name(),
        tenant.tables.len(),
        tenant.relationships.len(),
        total,
        tenant.segments.len(),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    eprintln!("  times are relative to {}: evaluate segments with --as-of {}", random::AS_OF_TEXT, random::AS_OF_TEXT);
    if tenant.tables.len() <= 20 {
        for table in &tenant.tables {
            eprintln!("  {:<18} {:>12} rows", table.name, tenant.rows.get(&table.name).copied().unwrap_or(0));
        }
    }
    Ok(())
}

/// What every profile is given.
#[derive(Debug, Clone)]
pub(crate) struct GenContext {
    /// The output folder (exists).
    pub out: PathBuf,
    /// `--scale`.
    pub scale: u64,
    /// `--seed`.
    pub seed: u64,
}

impl GenContext {
    /// Creates each table's folder and removes part files a previous run left there.
    pub fn prepare_tables(&self, tables: &[Table]) -> anyhow::Result<()> {
        for table in tables {
            let dir = self.out.join(&table.name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let entries = std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
            for entry in entries {
                let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("part-") && name.ends_with(".parquet") {
                    std::fs::remove_file(entry.path()).with_context(|| format!("removing the old {}", entry.path().display()))?;
                }
            }
        }
        Ok(())
    }
}

/// A generated tenant, data already written: what goes into `model.json` and `segments/`.
#[derive(Debug)]
pub(crate) struct Tenant {
    /// The objects.
    pub tables: Vec<Table>,
    /// The relationships.
    pub relationships: Vec<Relationship>,
    /// The model's guardrails, if any.
    pub guardrails: Option<Value>,
    /// The segments: file stem and document.
    pub segments: Vec<(String, Value)>,
    /// Rows written per object.
    pub rows: BTreeMap<String, u64>,
}

impl Tenant {
    /// The `model.json` document.
    pub fn model_json(&self) -> Value {
        let mut model = json!({
            "objects": self.tables.iter().map(Table::model_json).collect::<Vec<_>>(),
            "relationships": self.relationships.iter().map(Relationship::model_json).collect::<Vec<_>>(),
        });
        if let (Some(guardrails), Some(map)) = (&self.guardrails, model.as_object_mut()) {
            map.insert("guardrails".into(), guardrails.clone());
        }
        model
    }

    /// Writes `segments/*.json`, then `model.json` (last: it marks the tenant complete).
    fn write_metadata(&self, out: &Path) -> anyhow::Result<()> {
        let dir = out.join("segments");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, segment) in &self.segments {
            write_json(&dir.join(format!("{name}.json")), segment)?;
        }
        write_json(&out.join("model.json"), &self.model_json())
    }
}

/// Writes a JSON document with serde_json's pretty printing (keys in [`KEY_ORDER`]) and a
/// final newline.
pub(crate) fn write_json(path: &Path, value: &Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(&InKeyOrder(value)).context("serializing JSON")?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The order keys are written in, so that documents read the way the spec writes them
/// (`name` before `fields`, `related` before `where`); other keys follow alphabetically.
const KEY_ORDER: &[&str] = &[
    "name",
    "root",
    "primary_key",
    "source",
    "format",
    "path",
    "type",
    "fields",
    "from",
    "from_field",
    "to",
    "to_field",
    "objects",
    "relationships",
    "guardrails",
    "filter",
    "related",
    "via",
    "where",
    "having",
    "agg",
    "field",
    "op",
    "value",
    "and",
    "or",
    "not",
];

/// Serializes a JSON value with its object keys in [`KEY_ORDER`] (serde_json's own maps are
/// sorted by name).
struct InKeyOrder<'a>(&'a Value);

impl serde::Serialize for InKeyOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort_by_key(|k| (KEY_ORDER.iter().position(|o| o == k).unwrap_or(KEY_ORDER.len()), k.as_str()));
                let mut out = serializer.serialize_map(Some(keys.len()))?;
                for key in keys {
                    out.serialize_entry(key, &InKeyOrder(&map[key.as_str()]))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&InKeyOrder(item))?;
                }
                out.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

/// A unit of generation work: usually one part file of one or a few objects. It returns
/// the rows it wrote per object.
pub(crate) type Task<'a> = Box<dyn FnOnce(&ProgressBar) -> anyhow::Result<Vec<(String, u64)>> + Send + 'a>;

/// Runs tasks on as many threads as there are cores, with one progress bar (on standard
/// error, hidden when it is not a terminal) counting rows up to `expected_rows`.
/// Returns the rows written per object; the first error stops the remaining tasks.
pub(crate) fn run_tasks(label: &str, tasks: Vec<Task<'_>>, expected_rows: u64) -> anyhow::Result<BTreeMap<String, u64>> {
    let progress = ProgressBar::with_draw_target(Some(expected_rows.max(1)), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg:>10} [{bar:40}] {human_pos}/{human_len} rows, {per_sec}, eta {eta}") {
        progress.set_style(style.progress_chars("=> "));
    }
    progress.set_message(label.to_string());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(tasks.len()).max(1);
    let queue = Mutex::new(tasks.into_iter().collect::<VecDeque<_>>());
    let rows: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let task = match queue.lock() {
                        Ok(mut q) => q.pop_front(),
                        Err(_) => None,
                    };
                    let Some(task) = task else { break };
                    match task(&progress) {
                        Ok(counts) => {
                            if let Ok(mut rows) = rows.lock() {
                                for (object, n) in counts {
                                    *rows.entry(object).or_default() += n;
                                }
                            }
                        }
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert(e);
                            }
                        }
                    }
                }
            });
        }
    });
    progress.finish_and_clear();
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    rows.into_inner().map_err(|_| anyhow::anyhow!("a datagen worker panicked"))
}

/// How many parts `rows` base rows make at `per_part` rows a part (at least one).
pub(crate) fn part_count(rows: u64, per_part: u64) -> usize {
    rows.div_ceil(per_part).max(1) as usize
}

/// The base-row range of part `part`.
pub(crate) fn part_range(rows: u64, per_part: u64, part: usize) -> std::ops::Range<u64> {
    let start = (part as u64 * per_part).min(rows);
    start..(start + per_part).min(rows)
}

#[cfg(test)]
mod tests;
