//! Segment memberships on disk: one Parquet file of members per committed run, and one of the
//! keys each run added and removed.
//!
//! Each attempt of a job writes its files under a name of its own (`<run>.attempt-<n>`, see
//! [`attempt_files`]) before it commits (to a temporary name, synced, then renamed); the
//! commit records that name in the run's history record, and only then are they the run's.
//! An attempt that does not commit (its lease ran out and another attempt committed, or a
//! crash) never touches the files of the one that did. The store decides which run is a
//! segment's latest and which files are a run's; files no commit names are never read.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{Error, Result};

/// Where memberships live: `<root>/<tenant>/<segment>/<files>.members.parquet` and
/// `<files>.changes.parquet`, `<files>` being the name a run's history record gives
/// ([`crate::store::RunRow::files`]; the run id for runs committed before names were
/// recorded).
#[derive(Debug, Clone)]
pub struct MembershipFiles {
    root: PathBuf,
}

/// A key's change in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The key became a member.
    Added,
    /// The key stopped being a member.
    Removed,
}

impl Change {
    /// `added` or `removed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
        }
    }
}

/// The name of the files attempt `attempt` of run `run` writes.
pub fn attempt_files(run: &str, attempt: i64) -> String {
    format!("{run}.attempt-{attempt}")
}

impl MembershipFiles {
    /// Memberships under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        MembershipFiles { root: root.into() }
    }

    fn folder(&self, tenant: &str, segment: &str) -> PathBuf {
        self.root.join(tenant).join(segment)
    }

    /// The members file named `files`.
    pub fn members_path(&self, tenant: &str, segment: &str, files: &str) -> PathBuf {
        self.folder(tenant, segment).join(format!("{files}.members.parquet"))
    }

    /// The changes file named `files`.
    pub fn changes_path(&self, tenant: &str, segment: &str, files: &str) -> PathBuf {
        self.folder(tenant, segment).join(format!("{files}.changes.parquet"))
    }

    /// Writes an attempt's members (sorted keys, text form) and its changes under the name
    /// `files` (see [`attempt_files`]).
    pub fn write_run(&self, tenant: &str, segment: &str, files: &str, members: &[String], added: &[String], removed: &[String]) -> Result<()> {
        let folder = self.folder(tenant, segment);
        std::fs::create_dir_all(&folder).map_err(|e| io(&folder, e))?;
        write_keys(&self.members_path(tenant, segment, files), members, None)?;
        let mut keys = Vec::with_capacity(added.len() + removed.len());
        let mut changes = Vec::with_capacity(keys.capacity());
        for key in added {
            keys.push(key.clone());
            changes.push(Change::Added.as_str());
        }
        for key in removed {
            keys.push(key.clone());
            changes.push(Change::Removed.as_str());
        }
        write_keys(&self.changes_path(tenant, segment, files), &keys, Some(&changes))?;
        sync_dir(&folder);
        Ok(())
    }

    /// The members in the files named `files`, sorted ('': none).
    pub fn read_members(&self, tenant: &str, segment: &str, files: &str) -> Result<Vec<String>> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        Ok(read_keys(&self.members_path(tenant, segment, files))?.into_iter().map(|(k, _)| k).collect())
    }

    /// The changes in the files named `files`: (key, `added` | `removed`).
    pub fn read_changes(&self, tenant: &str, segment: &str, files: &str) -> Result<Vec<(String, String)>> {
        read_keys(&self.changes_path(tenant, segment, files))
    }

    /// Deletes the members file named `files`, once no segment's latest run has it.
    pub fn forget_members(&self, tenant: &str, segment: &str, files: &str) {
        if !files.is_empty() {
            let _ = std::fs::remove_file(self.members_path(tenant, segment, files));
        }
    }

    /// Deletes the files an attempt wrote that did not commit.
    pub fn forget_attempt(&self, tenant: &str, segment: &str, files: &str) {
        self.forget_members(tenant, segment, files);
        if !files.is_empty() {
            let _ = std::fs::remove_file(self.changes_path(tenant, segment, files));
        }
    }
}

/// The keys in `current` and not in `previous` (added), and the reverse (removed); both inputs
/// sorted by bytes, both outputs too.
pub fn diff(previous: &[String], current: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < previous.len() || j < current.len() {
        match (previous.get(i), current.get(j)) {
            (Some(p), Some(c)) if p == c => {
                i += 1;
                j += 1;
            }
            (Some(p), Some(c)) if p < c => {
                removed.push(p.clone());
                i += 1;
            }
            (Some(_), Some(c)) | (None, Some(c)) => {
                added.push(c.clone());
                j += 1;
            }
            (Some(p), None) => {
                removed.push(p.clone());
                i += 1;
            }
            (None, None) => break,
        }
    }
    (added, removed)
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{}: {e}", path.display()))
}

fn write_keys(path: &Path, keys: &[String], changes: Option<&[&str]>) -> Result<()> {
    let mut fields = vec![Field::new("key", DataType::Utf8, false)];
    let mut columns: Vec<Arc<dyn Array>> = vec![Arc::new(StringArray::from_iter_values(keys))];
    if let Some(changes) = changes {
        fields.push(Field::new("change", DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from_iter_values(changes.iter())));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| io(path, e))?;
    let temporary = path.with_extension("parquet.partial");
    let file = File::create(&temporary).map_err(|e| io(&temporary, e))?;
    let mut writer = ArrowWriter::try_new(file, schema, None).map_err(|e| io(&temporary, e))?;
    writer.write(&batch).map_err(|e| io(&temporary, e))?;
    let file = writer.into_inner().map_err(|e| io(&temporary, e))?;
    file.sync_all().map_err(|e| io(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| io(path, e))?;
    Ok(())
}

fn read_keys(path: &Path) -> Result<Vec<(String, String)>> {
    let file = File::open(path).map_err(|e| io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| io(path, e))?.build().map_err(|e| io(path, e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| io(path, e))?;
        let keys = batch.column(0).as_any().downcast_ref::<StringArray>().ok_or_else(|| io(path, "the key column is not text"))?;
        let changes = batch.columns().get(1).and_then(|c| c.as_any().downcast_ref::<StringArray>());
        for i in 0..batch.num_rows() {
            out.push((keys.value(i).to_string(), changes.map(|c| c.value(i).to_string()).unwrap_or_default()));
        }
    }
    Ok(out)
}

fn sync_dir(folder: &Path) {
    if let Ok(dir) = File::open(folder) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &[&str]) -> Vec<String> {
        s.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn diff_of_sorted_keys() {
        let (added, removed) = diff(&keys(&["a", "b", "d"]), &keys(&["b", "c", "d", "e"]));
        assert_eq!(added, keys(&["c", "e"]));
        assert_eq!(removed, keys(&["a"]));
        let (added, removed) = diff(&[], &keys(&["x"]));
        assert_eq!((added, removed), (keys(&["x"]), vec![]));
    }

    #[test]
    fn runs_round_trip_through_parquet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = MembershipFiles::new(dir.path());
        files.write_run("t", "s", "r1", &keys(&["1", "2"]), &keys(&["2"]), &keys(&["0"])).expect("write");
        assert_eq!(files.read_members("t", "s", "r1").expect("read"), keys(&["1", "2"]));
        let changes = files.read_changes("t", "s", "r1").expect("read");
        assert_eq!(changes, vec![("2".into(), "added".into()), ("0".into(), "removed".into())]);
        assert!(files.read_members("t", "s", "").expect("empty").is_empty());
    }
}
