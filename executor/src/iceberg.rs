//! Apache Iceberg sources: a table's metadata and its snapshot's data files found with the
//! `iceberg` crate, the files then read by DataFusion as Parquet like any other source.
//!
//! The `iceberg` crate trails DataFusion and brings its own Arrow and Parquet; none of their
//! types leaves this module. What does: file paths, sizes, record counts, the snapshot id, and
//! the table's columns as model types. Manifests are read through the model's own object
//! stores (an [`iceberg::io::Storage`] over `object_store`), so a table on local disk or in
//! S3 is reached exactly as a Parquet folder there is.
//!
//! The table: `{"format": "iceberg", "path": LOCATION}`, LOCATION a table folder (its newest
//! `metadata/*.metadata.json`, by the version number the name starts with, or the one
//! `metadata/version-hint.text` names) or a `*.metadata.json` named directly. Its current
//! snapshot is read, or the one `snapshot_id` pins. Format v1 and v2. What is not supported yet
//! is refused, never ignored: delete files (position or equality: PyIceberg writes deletes
//! copy-on-write, so its tables have none), data files other than Parquet, renamed columns and
//! a name reused by a new column (a schema's columns are matched by name, so the field ids of
//! every schema in the table's history must agree with the names).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use futures::TryStreamExt;
use futures::stream::BoxStream;
use iceberg::io::{FileIOBuilder, FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig, StorageFactory};
use iceberg::spec::{DataContentType, DataFileFormat, PrimitiveType, TableMetadata, Type};
use serde::{Deserialize, Serialize};

use crate::model::FieldType;
use crate::storage::ObjectStores;

/// A table's snapshot as planned: what the catalog keeps of it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Planned {
    /// The metadata file read.
    pub metadata_location: String,
    /// The snapshot read; `None` for a table with no snapshot yet (no rows).
    pub snapshot_id: Option<i64>,
    /// The data files: location (a URL or an absolute path, as the table records it), size
    /// in bytes, record count.
    pub files: Vec<(String, u64, u64)>,
    /// The columns of the snapshot's schema that have a model type, in order, with their
    /// Arrow types as Iceberg writes them.
    pub columns: Vec<(String, datafusion::arrow::datatypes::DataType)>,
}

/// Where a path of the table (`s3://bucket/key`, `file:///path` or `/path`) is, in the
/// object stores: the store and the key.
fn locate(stores: &ObjectStores, path: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath), String> {
    if let Some(rest) = path.strip_prefix("s3://").or_else(|| path.strip_prefix("s3a://")) {
        let (bucket, key) = rest.split_once('/').ok_or_else(|| format!("{path:?} names no object"))?;
        let store = stores.bucket(bucket).map_err(|e| e.to_string())?;
        return Ok((store, ObjectPath::from(key)));
    }
    let local = path.strip_prefix("file://").unwrap_or(path);
    let local = if local.starts_with('/') { local.to_string() } else { format!("/{local}") };
    let key = ObjectPath::from_absolute_path(&local).map_err(|e| format!("{path:?}: {e}"))?;
    Ok((Arc::new(datafusion::object_store::local::LocalFileSystem::new()), key))
}

fn io_error(path: &str, e: impl std::fmt::Display) -> iceberg::Error {
    iceberg::Error::new(iceberg::ErrorKind::Unexpected, format!("{path}: {e}"))
}

fn read_only(path: &str) -> iceberg::Error {
    iceberg::Error::new(iceberg::ErrorKind::FeatureUnsupported, format!("{path}: Cohort reads Iceberg tables and never writes them"))
}

/// The model's object stores as the `iceberg` crate's storage: reads only.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ObjectStorage {
    #[serde(skip)]
    stores: Arc<ObjectStores>,
}

struct ObjectFile {
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    path: String,
}

#[async_trait]
impl FileRead for ObjectFile {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        self.store.get_range(&self.key, range).await.map_err(|e| io_error(&self.path, e))
    }
}

#[async_trait]
#[typetag::serde]
impl Storage for ObjectStorage {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        let (store, key) = locate(&self.stores, path).map_err(|e| io_error(path, e))?;
        match store.head(&key).await {
            Ok(_) => Ok(true),
            Err(datafusion::object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(io_error(path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        let (store, key) = locate(&self.stores, path).map_err(|e| io_error(path, e))?;
        let meta = store.head(&key).await.map_err(|e| io_error(path, e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        let (store, key) = locate(&self.stores, path).map_err(|e| io_error(path, e))?;
        let got = store.get(&key).await.map_err(|e| io_error(path, e))?;
        got.bytes().await.map_err(|e| io_error(path, e))
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        let (store, key) = locate(&self.stores, path).map_err(|e| io_error(path, e))?;
        Ok(Box::new(ObjectFile { store, key, path: path.to_string() }))
    }

    async fn write(&self, path: &str, _bs: Bytes) -> iceberg::Result<()> {
        Err(read_only(path))
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        Err(read_only(path))
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        Err(read_only(path))
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        Err(read_only(path))
    }

    async fn delete_stream(&self, _paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        Err(read_only("delete"))
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        Err(read_only(path))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ObjectStorageFactory {
    #[serde(skip)]
    stores: Arc<ObjectStores>,
}

#[typetag::serde]
impl StorageFactory for ObjectStorageFactory {
    fn build(&self, _config: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        Ok(Arc::new(ObjectStorage { stores: Arc::clone(&self.stores) }))
    }
}

/// The metadata file of the table at `location` (a folder, or a `*.metadata.json`): the one
/// `metadata/version-hint.text` names, else the newest by the version its name starts with
/// (`00003-<uuid>.metadata.json`, `v3.metadata.json`).
async fn metadata_file(stores: &ObjectStores, location: &str) -> Result<String, String> {
    if location.ends_with(".metadata.json") || location.ends_with(".metadata.json.gz") {
        return Ok(location.to_string());
    }
    let folder = format!("{}/metadata", location.trim_end_matches('/'));
    let (store, key) = locate(stores, &folder)?;
    let hint = ObjectPath::from(format!("{key}/version-hint.text"));
    if let Ok(got) = store.get(&hint).await
        && let Ok(bytes) = got.bytes().await
        && let Ok(version) = String::from_utf8_lossy(&bytes).trim().parse::<u64>()
    {
        let named = format!("{folder}/v{version}.metadata.json");
        let (store, key) = locate(stores, &named)?;
        if store.head(&key).await.is_ok() {
            return Ok(named);
        }
    }
    let listed: Vec<_> = store.list(Some(&key)).try_collect().await.map_err(|e| format!("cannot list {folder}: {e}"))?;
    let newest = newest_metadata(listed.iter().filter_map(|o| Some((o.location.filename()?, o.last_modified.timestamp_micros()))))
        .ok_or_else(|| format!("no Iceberg table at {location:?}: {folder} holds no *.metadata.json"))?;
    Ok(format!("{folder}/{newest}"))
}

/// The newest of a table's metadata files, by name and modification time: the highest version
/// its name starts with (`00003-<uuid>.metadata.json`, `v3.metadata.json`), the later one of
/// two with the same version.
fn newest_metadata<'a>(files: impl Iterator<Item = (&'a str, i64)>) -> Option<String> {
    let version_of = |name: &str| -> Option<u64> {
        let stem = name.strip_suffix(".metadata.json")?;
        let digits: String = stem.trim_start_matches('v').chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    files.filter_map(|(name, modified)| Some((version_of(name)?, modified, name))).max().map(|(_, _, name)| name.to_string())
}

/// The Arrow type Iceberg's Parquet files hold for a primitive, and its model type; `None`
/// for types a model has no field type for (they are not fields).
fn column_type(t: &PrimitiveType) -> Option<(datafusion::arrow::datatypes::DataType, FieldType)> {
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    Some(match t {
        PrimitiveType::Boolean => (DataType::Boolean, FieldType::Bool),
        PrimitiveType::Int => (DataType::Int32, FieldType::Int),
        PrimitiveType::Long => (DataType::Int64, FieldType::Int),
        PrimitiveType::Float => (DataType::Float32, FieldType::Float),
        PrimitiveType::Double => (DataType::Float64, FieldType::Float),
        PrimitiveType::Decimal { precision, scale } => (DataType::Decimal128(u8::try_from(*precision).ok()?, i8::try_from(*scale).ok()?), FieldType::Float),
        PrimitiveType::Date => (DataType::Date32, FieldType::Date),
        PrimitiveType::Timestamp => (DataType::Timestamp(TimeUnit::Microsecond, None), FieldType::Timestamp),
        PrimitiveType::Timestamptz => (DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), FieldType::Timestamp),
        PrimitiveType::TimestampNs => (DataType::Timestamp(TimeUnit::Nanosecond, None), FieldType::Timestamp),
        PrimitiveType::TimestamptzNs => (DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), FieldType::Timestamp),
        PrimitiveType::String => (DataType::Utf8, FieldType::String),
        _ => return None,
    })
}

/// Refuses a table whose schemas disagree on what a name or a field id means (a rename, or a
/// name given to a new column): its older files would be read by name as something else.
fn check_schema_history(metadata: &TableMetadata) -> Result<(), String> {
    let mut by_id: HashMap<i32, String> = HashMap::new();
    let mut by_name: HashMap<String, i32> = HashMap::new();
    let mut schemas: Vec<_> = metadata.schemas_iter().collect();
    schemas.sort_by_key(|s| s.schema_id());
    for schema in schemas {
        for field in schema.as_struct().fields() {
            if let Some(old) = by_id.insert(field.id, field.name.clone())
                && old != field.name
            {
                return Err(format!(
                    "column {old:?} was renamed {:?} (field id {}): reading renamed Iceberg columns is not supported yet",
                    field.name, field.id
                ));
            }
            if let Some(old) = by_name.insert(field.name.clone(), field.id)
                && old != field.id
            {
                return Err(format!("column {:?} was dropped and added again (field ids {old} and {}): reading it is not supported yet", field.name, field.id));
            }
        }
    }
    Ok(())
}

/// Plans a read of the table at `location` (see the module doc), at `snapshot` or its
/// current one, through `stores`. Errors are messages for the source's error.
pub(crate) async fn plan(stores: &Arc<ObjectStores>, location: &str, snapshot: Option<i64>) -> Result<Planned, String> {
    let metadata_location = metadata_file(stores, location).await?;
    let (store, key) = locate(stores, &metadata_location)?;
    let bytes = store.get(&key).await.map_err(|e| format!("cannot read {metadata_location}: {e}"))?.bytes().await.map_err(|e| e.to_string())?;
    let bytes = if metadata_location.ends_with(".gz") {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_ref()).read_to_end(&mut out).map_err(|e| format!("{metadata_location}: {e}"))?;
        Bytes::from(out)
    } else {
        bytes
    };
    let metadata: TableMetadata =
        serde_json::from_slice(&bytes).map_err(|e| format!("{metadata_location} is not Iceberg table metadata (format v1 or v2): {e}"))?;
    check_schema_history(&metadata)?;
    let snapshot = match snapshot {
        Some(id) => Some(metadata.snapshot_by_id(id).cloned().ok_or_else(|| format!("the table has no snapshot {id}"))?),
        None => metadata.current_snapshot().cloned(),
    };
    let schema = match &snapshot {
        Some(s) => s.schema(&metadata).map_err(|e| e.to_string())?,
        None => Arc::clone(metadata.current_schema()),
    };
    let columns = schema
        .as_struct()
        .fields()
        .iter()
        .filter_map(|f| match f.field_type.as_ref() {
            Type::Primitive(p) => column_type(p).map(|(arrow, _)| (f.name.clone(), arrow)),
            _ => None,
        })
        .collect();
    let Some(snapshot) = snapshot else {
        return Ok(Planned { metadata_location, snapshot_id: None, files: Vec::new(), columns });
    };
    let file_io = FileIOBuilder::new(Arc::new(ObjectStorageFactory { stores: Arc::clone(stores) })).build();
    let ident = iceberg::TableIdent::from_strs(["cohort", "source"]).map_err(|e| e.to_string())?;
    let runtime = iceberg::Runtime::try_current().map_err(|e| format!("planning needs a runtime: {e}"))?;
    let table = iceberg::table::Table::builder()
        .metadata(metadata)
        .metadata_location(metadata_location.clone())
        .file_io(file_io)
        .identifier(ident)
        .runtime(runtime)
        .readonly(true)
        .build()
        .map_err(|e| e.to_string())?;
    let scan = table.scan().snapshot_id(snapshot.snapshot_id()).select_all().build().map_err(|e| e.to_string())?;
    let tasks: Vec<_> = scan.plan_files().await.map_err(|e| e.to_string())?.try_collect().await.map_err(|e| e.to_string())?;
    let mut files = Vec::with_capacity(tasks.len());
    for task in tasks {
        if task.data_file_format != DataFileFormat::Parquet {
            return Err(format!("{}: {:?} data files are not supported (Parquet only)", task.data_file_path, task.data_file_format));
        }
        if let Some(d) = task.deletes.first() {
            let kind = if d.file_type == DataContentType::EqualityDeletes { "equality" } else { "position" };
            return Err(format!(
                "snapshot {} has {} delete files ({kind} deletes in {}): reading Iceberg delete files is not supported yet",
                snapshot.snapshot_id(),
                task.deletes.len(),
                d.file_path
            ));
        }
        files.push((task.data_file_path.clone(), task.file_size_in_bytes, task.record_count.unwrap_or(0)));
    }
    files.sort();
    files.dedup();
    Ok(Planned { metadata_location, snapshot_id: Some(snapshot.snapshot_id()), files, columns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_metadata_file_is_the_highest_version() {
        let files = [
            ("00000-6b1c.metadata.json", 1),
            ("00002-aa01.metadata.json", 3),
            ("00010-0f3e.metadata.json", 2),
            ("snap-1-1-x.avro", 9),
            ("version-hint.text", 9),
        ];
        assert_eq!(newest_metadata(files.iter().copied()).as_deref(), Some("00010-0f3e.metadata.json"));
        assert_eq!(
            newest_metadata([("v1.metadata.json", 5), ("v12.metadata.json", 1), ("v9.metadata.json", 7)].into_iter()).as_deref(),
            Some("v12.metadata.json")
        );
        assert_eq!(newest_metadata([("x.avro", 1)].into_iter()), None);
    }

    #[test]
    fn paths_of_every_scheme_find_their_store() {
        let stores = ObjectStores::s3(crate::storage::S3Settings { endpoint: Some("http://127.0.0.1:9".into()), allow_http: true, ..Default::default() });
        let (_, key) = locate(&stores, "s3://lake/wh/t/metadata/v1.metadata.json").expect("s3");
        assert_eq!(key.as_ref(), "wh/t/metadata/v1.metadata.json");
        let (_, key) = locate(&stores, "file:///tmp/wh/t").expect("file");
        assert_eq!(key.as_ref(), "tmp/wh/t");
        let (_, key) = locate(&stores, "/tmp/wh/ünï t").expect("plain path");
        assert!(key.as_ref().starts_with("tmp/wh/"), "{key}");
        assert!(locate(&stores, "s3://lake").is_err());
    }
}
