//! Segment memberships on disk: one Parquet file of members per committed run, and one of the
//! keys each run added and removed.
//!
//! Each attempt of a job writes its files under a name of its own (`<run>.attempt-<n>`, see
//! [`attempt_files`]) before it commits (to a temporary name, synced, then renamed); the
//! commit records that name in the run's history record, and only then are they the run's.
//! An attempt that does not commit (its lease ran out and another attempt committed, or a
//! crash) never touches the files of the one that did. The store decides which run is a
//! segment's latest and which files are a run's; files no commit names are never read.
//!
//! The name is kept in `runs.files` (migration 0011); runs committed before it use their run id.
//! Riders have no files of their own: their history records name their leader's.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector};
use datafusion::parquet::file::metadata::PageIndexPolicy;
use datafusion::parquet::file::properties::WriterProperties;

use crate::{Error, Result};

/// Where memberships live: `<root>/<tenant>/<segment>/<files>.members.parquet` and
/// `<files>.changes.parquet`, `<files>` being the name a run's history record gives
/// ([`crate::store::RunRow::files`]; the run id for runs committed before names were
/// recorded).
#[derive(Debug, Clone)]
pub struct MembershipFiles {
    root: PathBuf,
}

/// Rows per row group of the files written: a page read decodes only the row groups (and,
/// by their offset index, the pages of at most 20,000 rows) that hold its rows.
const ROWS_PER_GROUP: usize = 64 * 1024;

/// One page of a file's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// Rows in the whole file.
    pub total: u64,
    /// The page's keys, with their change (`added` | `removed`; '' in a members file).
    pub keys: Vec<(String, String)>,
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

    /// Members `offset..offset + limit` in the files named `files`, and how many there are in
    /// all, reading only the rows of that page; `None` if the file is gone (the run is no
    /// longer among a segment's latest).
    pub fn read_members_page(&self, tenant: &str, segment: &str, files: &str, offset: u64, limit: u64) -> Result<Option<KeyPage>> {
        read_page(&self.members_path(tenant, segment, files), offset, limit)
    }

    /// Changes `offset..offset + limit` in the files named `files`, as
    /// [`MembershipFiles::read_members_page`] reads members.
    pub fn read_changes_page(&self, tenant: &str, segment: &str, files: &str, offset: u64, limit: u64) -> Result<Option<KeyPage>> {
        read_page(&self.changes_path(tenant, segment, files), offset, limit)
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

fn io(path: &Path, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Io { path: path.to_path_buf(), source: e.into() }
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
    let properties = WriterProperties::builder().set_max_row_group_row_count(Some(ROWS_PER_GROUP)).build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(properties)).map_err(|e| io(&temporary, e))?;
    writer.write(&batch).map_err(|e| io(&temporary, e))?;
    let file = writer.into_inner().map_err(|e| io(&temporary, e))?;
    file.sync_all().map_err(|e| io(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| io(path, e))?;
    Ok(())
}

fn read_keys(path: &Path) -> Result<Vec<(String, String)>> {
    let file = File::open(path).map_err(|e| io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| io(path, e))?.build().map_err(|e| io(path, e))?;
    collect_keys(path, reader)
}

/// Rows `offset..offset + limit` of a keys file: only the row groups that hold them are read,
/// and within those, by the offset index, only the pages that do.
fn read_page(path: &Path, offset: u64, limit: u64) -> Result<Option<KeyPage>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, e)),
    };
    let options = ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options).map_err(|e| io(path, e))?;
    let metadata = std::sync::Arc::clone(builder.metadata());
    let total = u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0);
    let end = offset.saturating_add(limit).min(total);
    if offset >= end {
        return Ok(Some(KeyPage { total, keys: Vec::new() }));
    }
    // The row groups overlapping the page, and the rows to skip in the first of them.
    let (mut groups, mut skip, mut first_row) = (Vec::new(), 0u64, 0u64);
    for (i, group) in metadata.row_groups().iter().enumerate() {
        let rows = u64::try_from(group.num_rows()).unwrap_or(0);
        if first_row + rows > offset && first_row < end {
            if groups.is_empty() {
                skip = offset - first_row;
            }
            groups.push(i);
        }
        first_row += rows;
    }
    let wanted = end - offset;
    let as_usize = |n: u64| usize::try_from(n).map_err(|e| io(path, e));
    let selection = RowSelection::from(vec![RowSelector::skip(as_usize(skip)?), RowSelector::select(as_usize(wanted)?)]);
    let reader = builder.with_row_groups(groups).with_row_selection(selection).with_batch_size(as_usize(wanted.min(8192))?).build().map_err(|e| io(path, e))?;
    let keys = collect_keys(path, reader)?;
    if keys.len() as u64 != wanted {
        return Err(io(path, format!("read {} rows of a page of {wanted}", keys.len())));
    }
    Ok(Some(KeyPage { total, keys }))
}

fn collect_keys(
    path: &Path,
    reader: impl Iterator<Item = std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError>>,
) -> Result<Vec<(String, String)>> {
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

    #[test]
    fn a_page_is_the_rows_of_its_offset_and_limit_across_row_groups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = MembershipFiles::new(dir.path());
        // Three row groups (64 Ki rows each, the last one short).
        let members: Vec<String> = (0..ROWS_PER_GROUP * 2 + 1000).map(|i| format!("{i:08}")).collect();
        files.write_run("t", "s", "r1", &members, &members[..3], &[]).expect("write");
        let n = members.len() as u64;
        for (offset, limit) in [(0, 10), (5, 1000), (ROWS_PER_GROUP as u64 - 3, 10), (n - 7, 1000), (n, 5), (n + 10, 5), (0, 0), (1, n * 2)] {
            let page = files.read_members_page("t", "s", "r1", offset, limit).expect("read").expect("there");
            let expected: Vec<(String, String)> = members.iter().skip(offset as usize).take(limit as usize).map(|k| (k.clone(), String::new())).collect();
            assert_eq!((page.total, page.keys), (n, expected), "offset {offset} limit {limit}");
        }
        let changes = files.read_changes_page("t", "s", "r1", 1, 5).expect("read").expect("there");
        assert_eq!(changes.keys, vec![(members[1].clone(), "added".to_string()), (members[2].clone(), "added".to_string())]);
        assert_eq!(files.read_members_page("t", "s", "gone", 0, 5).expect("read"), None);
    }
}
