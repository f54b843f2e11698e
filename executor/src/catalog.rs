//! A model bound to its data: each object's files listed through DataFusion's object-store
//! layer, its real schema read (Parquet footers, CSV headers) and checked against the model.
//!
//! A source path resolves to a `ListingTableUrl`: a file, a directory or a glob; a URL such as
//! `s3://…` needs only an object store registered in the session. When every source of a model
//! is local, the objects are loaded on plain threads (one per core, at most eight, each taking a
//! share of the objects) outside the async runtime, and Parquet footers are read synchronously:
//! a handoff to the runtime's blocking pool for every listing and footer costs more than the
//! read itself when a model has thousands of objects.
//!
//! The Parquet files of one source must agree on the model type of the columns they share
//! (files that differ only in physical type, Int32 here and Int64 there, are read as the first);
//! the CSV files of one source must have the same header. A declared field must exist with its
//! declared type; without declared fields every supported column is a field (a CSV source's
//! types inferred from the first 1,000 rows of its first file). A confined model (one a tenant
//! sent) has every listed file checked to resolve inside the tenant's data root.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::SessionState;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
#[allow(deprecated)] // Still the object-store reader DataFusion 55 itself uses for footers.
use datafusion::parquet::arrow::async_reader::ParquetObjectReader;
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::json::did_you_mean;
use crate::model::{Field, FieldType, Model, ObjectDef, SourceFormat, check_primary_key};

/// How many sources are inspected at once while loading a model.
const LOAD_CONCURRENCY: usize = 64;

/// The canonical Arrow type each model type is evaluated as.
pub fn arrow_type(field_type: FieldType) -> DataType {
    match field_type {
        FieldType::String => DataType::Utf8,
        FieldType::Int => DataType::Int64,
        FieldType::Float => DataType::Float64,
        FieldType::Bool => DataType::Boolean,
        FieldType::Date => DataType::Date32,
        FieldType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

/// The model type an Arrow type stands for, when there is one.
pub fn model_type(data_type: &DataType) -> Option<FieldType> {
    Some(match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => FieldType::String,
        DataType::Dictionary(_, v) => return model_type(v).filter(|t| *t == FieldType::String),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            FieldType::Int
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) | DataType::Decimal256(..) => FieldType::Float,
        DataType::Boolean => FieldType::Bool,
        DataType::Date32 | DataType::Date64 => FieldType::Date,
        DataType::Timestamp(..) => FieldType::Timestamp,
        _ => return None,
    })
}

/// One object of a loaded model: what the model says, where the files are, what they hold.
#[derive(Debug, Clone)]
pub struct LoadedObject {
    /// The object's name.
    pub name: String,
    /// Its primary key field.
    pub primary_key: String,
    /// Parquet or CSV.
    pub format: SourceFormat,
    /// The resolved location (a file, a directory or a glob).
    pub url: ListingTableUrl,
    /// The file extension the listing filters by (empty for a single file).
    pub file_extension: String,
    /// The usable fields: the declared ones, or all the source's supported columns.
    pub fields: Vec<Field>,
    /// The schema the source is read with (all of the source's columns).
    pub read_schema: SchemaRef,
    /// How many files the source has.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// Rows, when the format records them (Parquet, Iceberg); `None` for CSV.
    pub rows: Option<u64>,
    /// The files a run reads when the source names them itself (an Iceberg snapshot's data
    /// files); empty: the files listed under `url`.
    pub data_files: Vec<ListingTableUrl>,
    /// The snapshot read, for a table format that has them.
    pub snapshot: Option<SourceSnapshot>,
    field_index: HashMap<String, usize>,
}

/// The snapshot of a table source a catalog read: what a run records and a re-run pins.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceSnapshot {
    /// `iceberg`.
    pub format: String,
    /// The snapshot id.
    pub id: i64,
    /// The metadata file it was found in.
    pub metadata: String,
}

impl LoadedObject {
    /// Its rows: Parquet's count, or for CSV one row per 100 bytes.
    pub fn rows_or_estimate(&self) -> u64 {
        self.rows.unwrap_or(self.bytes / 100)
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.field_index.get(name).map(|&i| &self.fields[i])
    }

    /// The object's rows as a DataFusion table, read as a run reads them (its files, with the
    /// schema the catalog found). Scanning it needs the catalog's stores registered
    /// ([`Catalog::register_stores`]).
    pub fn table(&self) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
        crate::compile::source_table(self)
    }

    /// A message that says `name` is no field of this object, with a suggestion.
    pub fn no_such_field(&self, name: &str) -> String {
        format!("{name:?} is not a field of {:?}{}", self.name, did_you_mean(name, self.fields.iter().map(|f| f.name.as_str())))
    }
}

/// A model whose sources have been found and whose schemas agree with it.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The model as parsed.
    pub model: Model,
    /// The objects, in the model's order.
    pub objects: Vec<LoadedObject>,
}

impl Catalog {
    /// Lists every source, reads its schema and checks it against the model. Reads
    /// metadata only (Parquet footers, the first line of each CSV file), never rows.
    ///
    /// A model whose sources are all local files is read on threads of their own (one per
    /// core, each taking a share of the objects), outside the async runtime, where the
    /// object store reads inline: a handoff to the runtime's blocking pool for every listing
    /// and footer costs more than the read itself when a model has thousands of objects.
    pub async fn load(model: Model, ctx: &SessionContext) -> Result<Catalog> {
        let remote = |o: &ObjectDef| o.source.path.contains("://") || o.source.format == SourceFormat::Iceberg;
        if model.prefix.is_some() || model.objects.iter().any(remote) {
            let state = ctx.state();
            let loaded = load_objects(&model, 0..model.objects.len(), ctx, &state).await?;
            return Catalog::checked(model, loaded);
        }
        let ctx = ctx.clone();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("cohort-catalog".into())
            .spawn(move || {
                let _ = sender.send(load_locally(model, &ctx));
            })
            .map_err(|e| Error::Internal(format!("starting the catalog reader: {e}")))?;
        receiver.await.map_err(|_| Error::Internal("the catalog reader stopped without an answer".into()))?
    }

    /// Registers the object stores of the catalog's sources (`s3://` buckets) in a session
    /// that will read them.
    pub fn register_stores(&self, ctx: &SessionContext) -> Result<()> {
        let urls = self.objects.iter().flat_map(|o| std::iter::once(&o.url).chain(&o.data_files)).map(|u| u.get_url());
        self.model.stores.register_in(ctx, urls)
    }

    /// Checks that every data file a table source named when the catalog was loaded is still
    /// there (a HEAD of each, 64 at once). DataFusion reads a listed file that has vanished as
    /// an empty folder; a table's missing file must fail the run instead (`source_unavailable`),
    /// never shrink its members.
    pub async fn check_table_files(&self, ctx: &SessionContext, objects: &[usize]) -> Result<()> {
        let runtime = ctx.runtime_env();
        let heads: Vec<BoxFuture<'_, Result<()>>> = objects
            .iter()
            .filter_map(|&i| self.objects.get(i))
            .flat_map(|o| o.data_files.iter().map(move |f| (o, f)))
            .map(|(o, file)| {
                let runtime = Arc::clone(&runtime);
                async move {
                    let missing = |message: String| Error::Source { object: o.name.clone(), message };
                    let store = runtime.object_store(file.object_store()).map_err(|e| missing(format!("no object store for {}: {e}", file.as_str())))?;
                    match store.head(file.prefix()).await {
                        Ok(_) => Ok(()),
                        Err(e) => Err(missing(format!("data file {} of the table's snapshot cannot be read: {e}", file.as_str()))),
                    }
                }
                .boxed()
            })
            .collect();
        futures::stream::iter(heads).buffer_unordered(LOAD_CONCURRENCY).try_collect::<Vec<()>>().await?;
        Ok(())
    }

    /// The snapshots of the table sources read, by object name.
    pub fn snapshots(&self) -> Vec<(String, SourceSnapshot)> {
        self.objects.iter().filter_map(|o| o.snapshot.clone().map(|s| (o.name.clone(), s))).collect()
    }

    fn checked(model: Model, loaded: Vec<LoadedObject>) -> Result<Catalog> {
        let catalog = Catalog { model, objects: loaded };
        catalog.check_relationships()?;
        Ok(catalog)
    }

    /// The loaded object called `name`, with its index.
    pub fn object(&self, name: &str) -> Option<(usize, &LoadedObject)> {
        self.model.object(name).map(|(i, _)| (i, &self.objects[i]))
    }

    fn check_relationships(&self) -> Result<()> {
        for (i, rel) in self.model.relationships.iter().enumerate() {
            let place = format!("relationships[{i}]");
            let mut types = Vec::with_capacity(2);
            for (object_key, field_key, object, field) in [("from", "from_field", &rel.from, &rel.from_field), ("to", "to_field", &rel.to, &rel.to_field)] {
                let (_, o) =
                    self.object(object).ok_or_else(|| Error::invalid_model(format!("{place}.{object_key}"), format!("{object:?} is not an object")))?;
                let f = o.field(field).ok_or_else(|| Error::invalid_model(format!("{place}.{field_key}"), o.no_such_field(field)))?;
                types.push(f.field_type);
            }
            if types[0] != types[1] {
                return Err(Error::invalid_model(
                    place,
                    format!(
                        "{}.{} is {} but {}.{} is {}: a relationship joins fields of one type",
                        rel.from,
                        rel.from_field,
                        types[0].name(),
                        rel.to,
                        rel.to_field,
                        types[1].name()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// [`Catalog::load`] for local sources, on the calling thread and one more per core.
fn load_locally(model: Model, ctx: &SessionContext) -> Result<Catalog> {
    let state = ctx.state();
    let n = model.objects.len();
    let threads = crate::machine::cores().clamp(1, 8).min(n.max(1));
    let share = n.div_ceil(threads);
    let parts: Vec<Result<Vec<LoadedObject>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (model, state) = (&model, &state);
                let range = (t * share).min(n)..((t + 1) * share).min(n);
                scope.spawn(move || futures::executor::block_on(load_objects(model, range, ctx, state)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(Error::Internal("a catalog reader panicked".into())))).collect()
    });
    // In the objects' order, so the first bad object is the one reported.
    let mut loaded = Vec::with_capacity(n);
    for part in parts {
        loaded.extend(part?);
    }
    Catalog::checked(model, loaded)
}

/// Loads the objects in `range`, in order.
async fn load_objects(model: &Model, range: std::ops::Range<usize>, ctx: &SessionContext, state: &SessionState) -> Result<Vec<LoadedObject>> {
    // Boxed futures: their type is then provably `Send`, so callers can spawn a load.
    let loads: Vec<BoxFuture<'_, Result<LoadedObject>>> = range.map(|i| load_object(model, i, &model.objects[i], ctx, state).boxed()).collect();
    futures::stream::iter(loads).buffered(LOAD_CONCURRENCY).try_collect().await
}

/// Refuses a listed file that resolves outside `root` (a symbolic link, or a folder behind
/// one), naming it as listed (relative to `base_dir`).
fn confine_files(root: &std::path::Path, base_dir: &std::path::Path, files: &[ObjectMeta], store_url: &ObjectStoreUrl, place: &str) -> Result<()> {
    if store_url.as_str() != "file:///" {
        return Err(Error::invalid_model(place, format!("{} is not on the local file system of the tenant's data root", store_url.as_str())));
    }
    let local = LocalFileSystem::new();
    for file in files {
        let listed = local.path_to_filesystem(&file.location).unwrap_or_else(|_| std::path::PathBuf::from(format!("/{}", file.location)));
        let inside = listed.canonicalize().is_ok_and(|real| real.starts_with(root));
        if !inside {
            let shown = listed.strip_prefix(base_dir).unwrap_or(&listed);
            return Err(Error::invalid_model(
                place,
                format!("{:?} is a link that leads out of the tenant's data root (or cannot be resolved): refused", shown.display().to_string()),
            ));
        }
    }
    Ok(())
}

/// Resolves a source path against the model's base (its directory, or its `s3://` prefix)
/// into a listing URL, and whether it names one file. A path into an object store that names
/// no file (without a trailing `/`) is a folder: [`load_object`] asks the store.
fn resolve_url(model: &Model, path: &str) -> std::result::Result<(ListingTableUrl, bool), String> {
    if let Some(prefix) = &model.prefix {
        // `%` and `#` would be read as a URL's escapes and fragment: escaped, they stay in the key.
        let relative: Vec<String> =
            path.split('/').filter(|part| !part.is_empty() && *part != ".").map(|part| part.replace('%', "%25").replace('#', "%23")).collect();
        let mut text = format!("{}{}", prefix.url(), relative.join("/"));
        if path.ends_with('/') && !relative.is_empty() {
            text.push('/');
        }
        return resolve_url_text(&text);
    }
    if path.contains("://") && !path.starts_with("file://") {
        return resolve_url_text(path);
    }
    if path.contains("://") {
        let url = ListingTableUrl::parse(path).map_err(|e| e.to_string())?;
        let single = !path.ends_with('/') && !path.contains(['*', '?', '[']);
        return Ok((url, single));
    }
    let joined = model.base_dir.join(path);
    let mut text = joined.to_string_lossy().into_owned();
    let is_glob = path.contains(['*', '?', '[']);
    let is_dir = !is_glob && joined.is_dir();
    if is_dir && !text.ends_with('/') {
        text.push('/');
    }
    let url = ListingTableUrl::parse(&text).map_err(|e| e.to_string())?;
    Ok((url, !is_glob && !is_dir))
}

/// A URL text (`s3://bucket/key…`) as a listing URL; a glob in it (`s3://b/orders/*.parquet`)
/// becomes the folder before its first pattern character and the pattern below it, as
/// DataFusion parses globs only in local paths.
fn resolve_url_text(text: &str) -> std::result::Result<(ListingTableUrl, bool), String> {
    if let Some(first) = text.find(['*', '?', '[']) {
        let cut = text[..first].rfind('/').map_or(0, |i| i + 1);
        let (folder, pattern) = text.split_at(cut);
        let url = ListingTableUrl::parse(folder).and_then(|u| u.with_glob(pattern)).map_err(|e| e.to_string())?;
        return Ok((url, false));
    }
    let url = ListingTableUrl::parse(text).map_err(|e| e.to_string())?;
    Ok((url, !text.ends_with('/')))
}

/// `url` as a folder (a trailing `/`) when the object store holds no object of its exact
/// name: `s3://bucket/orders` is then the folder `orders/`.
async fn folder_unless_object(url: ListingTableUrl, store: &dyn ObjectStore) -> std::result::Result<(ListingTableUrl, bool), String> {
    match store.head(url.prefix()).await {
        Ok(_) => Ok((url, true)),
        Err(datafusion::object_store::Error::NotFound { .. }) => {
            let folder = format!("{}/", url.as_str().trim_end_matches('/'));
            let url = ListingTableUrl::parse(&folder).map_err(|e| e.to_string())?;
            Ok((url, false))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Refuses a listed object outside the tenant's `s3://` prefix.
fn confine_objects(prefix: &crate::model::S3Prefix, store_url: &ObjectStoreUrl, files: &[ObjectMeta], place: &str) -> Result<()> {
    let bucket = format!("s3://{}/", prefix.bucket);
    if store_url.as_str() != bucket {
        return Err(Error::invalid_model(place, format!("{} is not the tenant's bucket {bucket}", store_url.as_str())));
    }
    let key = prefix.key.trim_end_matches('/');
    for file in files {
        let location = file.location.as_ref();
        let inside = key.is_empty() || location.strip_prefix(key).is_some_and(|rest| rest.starts_with('/'));
        if !inside {
            return Err(Error::invalid_model(place, format!("{location:?} is outside the tenant's data root {}: refused", prefix.url())));
        }
    }
    Ok(())
}

async fn load_object(model: &Model, index: usize, def: &ObjectDef, ctx: &SessionContext, state: &SessionState) -> Result<LoadedObject> {
    let place = format!("objects[{index}]");
    let source_error = |message: String| Error::Source { object: def.name.clone(), message };
    if def.source.format == SourceFormat::Iceberg {
        return load_iceberg(model, &place, def, ctx).await;
    }
    let (url, single_file) = resolve_url(model, &def.source.path).map_err(|m| source_error(format!("source path {:?}: {m}", def.source.path)))?;
    let store_url: ObjectStoreUrl = url.object_store();
    model.stores.register_in(ctx, [url.get_url()])?;
    let store = ctx.runtime_env().object_store(&store_url).map_err(|e| source_error(format!("no object store for {}: {e}", url.as_str())))?;
    let (url, single_file) = if single_file && store_url.as_str() != "file:///" {
        folder_unless_object(url, store.as_ref()).await.map_err(|m| source_error(format!("cannot read {:?}: {m}", def.source.path)))?
    } else {
        (url, single_file)
    };
    let file_extension = if single_file { String::new() } else { def.source.format.extension().to_string() };
    let mut files: Vec<ObjectMeta> = url
        .list_all_files(state, store.as_ref(), &file_extension)
        .await
        .map_err(|e| source_error(format!("cannot list {:?}: {e}", def.source.path)))?
        .try_collect()
        .await
        .map_err(|e| source_error(format!("cannot list {:?}: {e}", def.source.path)))?;
    if files.is_empty() {
        return Err(source_error(format!("no {} files at {:?}", def.source.format.extension().trim_start_matches('.'), def.source.path)));
    }
    files.sort_by(|a, b| a.location.cmp(&b.location));
    if let Some(prefix) = &model.prefix {
        confine_objects(prefix, &store_url, &files, &format!("{place}.source.path"))?;
    } else if let Some(root) = &model.confinement {
        confine_files(root, &model.base_dir, &files, &store_url, &format!("{place}.source.path"))?;
    }
    let bytes = files.iter().map(|f| f.size).sum();

    let (source_schema, rows) = match def.source.format {
        SourceFormat::Parquet => {
            let local = (store_url.as_str() == "file:///").then(LocalFileSystem::new);
            parquet_schema(&store, local.as_ref(), &files).await.map_err(source_error)?
        }
        SourceFormat::Csv => (csv_schema(def, &store, &files).await.map_err(source_error)?, None),
        SourceFormat::Iceberg => return Err(Error::Internal("an Iceberg source is loaded by load_iceberg".into())),
    };

    let fields = usable_fields(def, &place, &source_schema)?;
    let field_index = fields.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
    Ok(LoadedObject {
        name: def.name.clone(),
        primary_key: def.primary_key.clone(),
        format: def.source.format,
        url,
        file_extension,
        fields,
        read_schema: source_schema,
        files: files.len(),
        bytes,
        rows,
        data_files: Vec::new(),
        snapshot: None,
        field_index,
    })
}

/// An Iceberg source: its snapshot planned ([`crate::iceberg::plan`]), its data files kept
/// for the run (every one inside the tenant's data root, when the model is confined), its
/// schema the snapshot's. Reads no data file.
async fn load_iceberg(model: &Model, place: &str, def: &ObjectDef, ctx: &SessionContext) -> Result<LoadedObject> {
    let source_error = |message: String| Error::Source { object: def.name.clone(), message };
    if let Some((catalog, table)) = &def.source.table {
        return Err(Error::invalid_model(
            format!("{place}.source.catalog"),
            format!(
                "table {table:?} of catalog {catalog:?}: tables from a catalog are read through `cohort serve`, whose configuration names the catalog ([storage.iceberg_catalogs.{catalog}]); give the table's path here instead"
            ),
        ));
    }
    let (url, _) = resolve_url(model, &def.source.path).map_err(|m| source_error(format!("source path {:?}: {m}", def.source.path)))?;
    model.stores.register_in(ctx, [url.get_url()])?;
    // The table's own location, as Iceberg writes paths: `s3://…` or an absolute local path.
    let location = match url.get_url().scheme() {
        "file" => url.get_url().to_file_path().map(|p| p.display().to_string()).unwrap_or_else(|_| url.as_str().to_string()),
        _ => url.as_str().to_string(),
    };
    let planned = crate::iceberg::plan(&model.stores, &location, def.source.snapshot_id)
        .await
        .map_err(|m| source_error(format!("Iceberg table {:?}: {m}", def.source.path)))?;
    let mut data_files = Vec::with_capacity(planned.files.len());
    for (path, _, _) in &planned.files {
        let text = if path.starts_with('/') { format!("file://{path}") } else { path.clone() };
        let file_url = ListingTableUrl::parse(&text).map_err(|e| source_error(format!("data file {path:?}: {e}")))?;
        inside_root(model, path).map_err(|m| Error::invalid_model(format!("{place}.source.path"), m))?;
        data_files.push(file_url);
    }
    inside_root(model, &planned.metadata_location).map_err(|m| Error::invalid_model(format!("{place}.source.path"), m))?;
    model.stores.register_in(ctx, data_files.iter().map(|u| u.get_url()))?;
    let read_schema: SchemaRef = Arc::new(Schema::new(planned.columns.iter().map(|(n, t)| ArrowField::new(n, t.clone(), true)).collect::<Vec<_>>()));
    let fields = usable_fields(def, place, &read_schema)?;
    let field_index = fields.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
    Ok(LoadedObject {
        name: def.name.clone(),
        primary_key: def.primary_key.clone(),
        format: SourceFormat::Iceberg,
        url,
        file_extension: String::new(),
        fields,
        read_schema,
        files: planned.files.len(),
        bytes: planned.files.iter().map(|f| f.1).sum(),
        rows: Some(planned.files.iter().map(|f| f.2).sum()),
        data_files,
        snapshot: planned.snapshot_id.map(|id| SourceSnapshot { format: "iceberg".into(), id, metadata: planned.metadata_location.clone() }),
        field_index,
    })
}

/// Refuses a file a table names (a data or metadata file) outside a confined model's data
/// root: another prefix or bucket, or a local path that resolves elsewhere.
fn inside_root(model: &Model, path: &str) -> std::result::Result<(), String> {
    if let Some(prefix) = &model.prefix {
        let root = prefix.url();
        let normalized = path.replacen("s3a://", "s3://", 1);
        let inside = normalized.starts_with(&root) && !normalized[root.len()..].split('/').any(|p| p == "..");
        return if inside { Ok(()) } else { Err(format!("{path:?} is outside the tenant's data root {root}: refused")) };
    }
    let Some(root) = &model.confinement else {
        return Ok(());
    };
    let local = path.strip_prefix("file://").unwrap_or(path);
    let inside = std::path::Path::new(local).canonicalize().is_ok_and(|real| real.starts_with(root));
    if inside { Ok(()) } else { Err(format!("{path:?} is outside the tenant's data root (or cannot be resolved): refused")) }
}

/// The usable fields of an object: the declared ones, checked against what its source really
/// has, or all of the source's columns that have a model type.
fn usable_fields(def: &ObjectDef, place: &str, source_schema: &SchemaRef) -> Result<Vec<Field>> {
    let fields = match &def.fields {
        Some(declared) => {
            for (j, f) in declared.iter().enumerate() {
                let actual = source_schema.field_with_name(&f.name).map_err(|_| Error::SchemaMismatch {
                    place: format!("{place}.fields[{j}]"),
                    message: format!(
                        "{:?} is declared on {:?} but its source has no such column{}",
                        f.name,
                        def.name,
                        did_you_mean(&f.name, source_schema.fields().iter().map(|x| x.name().as_str()))
                    ),
                })?;
                let actual_type = model_type(actual.data_type());
                if actual_type != Some(f.field_type) {
                    return Err(Error::SchemaMismatch {
                        place: format!("{place}.fields[{j}]"),
                        message: format!(
                            "{:?} is declared {} but the source holds {}",
                            f.name,
                            f.field_type.name(),
                            actual_type.map(|t| t.name().to_string()).unwrap_or_else(|| actual.data_type().to_string())
                        ),
                    });
                }
            }
            declared.clone()
        }
        None => {
            let inferred: Vec<Field> =
                source_schema.fields().iter().filter_map(|f| model_type(f.data_type()).map(|t| Field { name: f.name().clone(), field_type: t })).collect();
            check_primary_key(&def.name, &def.primary_key, &inferred, &format!("{place}.primary_key"))?;
            inferred
        }
    };
    Ok(fields)
}

/// Reads every Parquet footer; the schemas must agree on the columns they share.
///
/// Local footers are read right here: a footer in the page cache takes microseconds, and a
/// handoff to the blocking pool per read (what the object store does) costs more than the
/// read on a big model's thousands of files.
async fn parquet_schema(
    store: &Arc<dyn ObjectStore>,
    local: Option<&LocalFileSystem>,
    files: &[ObjectMeta],
) -> std::result::Result<(SchemaRef, Option<u64>), String> {
    let unreadable = |f: &ObjectMeta, e: &dyn std::fmt::Display| format!("{}: not a readable Parquet file: {e}", f.location);
    let metas: Vec<(String, ArrowReaderMetadata)> = match local {
        Some(fs) => files
            .iter()
            .map(|f| {
                let path = fs.path_to_filesystem(&f.location).map_err(|e| unreadable(f, &e))?;
                let file = std::fs::File::open(&path).map_err(|e| unreadable(f, &e))?;
                ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map(|m| (f.location.to_string(), m)).map_err(|e| unreadable(f, &e))
            })
            .collect::<std::result::Result<_, String>>()?,
        None => {
            let reads: Vec<BoxFuture<'_, std::result::Result<(String, ArrowReaderMetadata), String>>> = files
                .iter()
                .map(|f| {
                    async move {
                        #[allow(deprecated)]
                        let mut reader = ParquetObjectReader::new(Arc::clone(store), f.location.clone()).with_file_size(f.size);
                        ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
                            .await
                            .map(|m| (f.location.to_string(), m))
                            .map_err(|e| unreadable(f, &e))
                    }
                    .boxed()
                })
                .collect();
            futures::stream::iter(reads).buffered(LOAD_CONCURRENCY).try_collect().await?
        }
    };
    let mut rows = 0u64;
    let mut merged: Vec<ArrowField> = Vec::new();
    for (location, meta) in &metas {
        rows += meta.metadata().file_metadata().num_rows().max(0) as u64;
        for f in meta.schema().fields() {
            match merged.iter().find(|m| m.name() == f.name()) {
                None => merged.push(f.as_ref().clone().with_nullable(true)),
                Some(m) if model_type(m.data_type()) != model_type(f.data_type()) => {
                    return Err(format!("{location}: column {:?} is {} here but {} in another file", f.name(), f.data_type(), m.data_type()));
                }
                Some(_) => {}
            }
        }
    }
    // Files that disagree on physical types (Int32 here, Int64 there) are read as the first.
    Ok((Arc::new(Schema::new(merged)), Some(rows)))
}

/// Reads the header line of every CSV file; all must have the same columns. Declared fields
/// are read as their types, other columns as text; with no declared fields the types are
/// inferred from the first file.
async fn csv_schema(def: &ObjectDef, store: &Arc<dyn ObjectStore>, files: &[ObjectMeta]) -> std::result::Result<SchemaRef, String> {
    let reads: Vec<BoxFuture<'_, std::result::Result<(String, Vec<String>), String>>> = files
        .iter()
        .map(|f| {
            async move {
                let header = read_csv_header(store, f).await?;
                Ok::<_, String>((f.location.to_string(), header))
            }
            .boxed()
        })
        .collect();
    let headers: Vec<(String, Vec<String>)> = futures::stream::iter(reads).buffered(LOAD_CONCURRENCY).try_collect().await?;
    let (first_location, first) = &headers[0];
    for (location, header) in &headers[1..] {
        if header != first {
            return Err(format!("{location}: its header differs from {first_location}'s"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for name in first {
        if !seen.insert(name) {
            return Err(format!("{first_location}: the header names {name:?} twice"));
        }
    }
    let inferred = match &def.fields {
        Some(_) => None,
        None => Some(infer_csv_types(store, &files[0]).await?),
    };
    let columns: Vec<ArrowField> = first
        .iter()
        .map(|name| {
            let data_type = match &def.fields {
                Some(fields) => fields.iter().find(|f| &f.name == name).map(|f| arrow_type(f.field_type)).unwrap_or(DataType::Utf8),
                None => inferred
                    .as_ref()
                    .and_then(|s| s.field_with_name(name).ok())
                    .and_then(|f| model_type(f.data_type()))
                    .map(arrow_type)
                    .unwrap_or(DataType::Utf8),
            };
            ArrowField::new(name, data_type, true)
        })
        .collect();
    Ok(Arc::new(Schema::new(columns)))
}

async fn read_csv_header(store: &Arc<dyn ObjectStore>, file: &ObjectMeta) -> std::result::Result<Vec<String>, String> {
    let mut end = 64 * 1024u64;
    loop {
        let range = 0..end.min(file.size);
        let bytes = store.get_range(&file.location, range).await.map_err(|e| format!("{}: {e}", file.location))?;
        let newline = bytes.iter().position(|&b| b == b'\n');
        if newline.is_some() || end >= file.size {
            let line = &bytes[..newline.unwrap_or(bytes.len())];
            let line = std::str::from_utf8(line).map_err(|_| format!("{}: the header is not UTF-8", file.location))?;
            let line = line.trim_end_matches('\r').trim_start_matches('\u{feff}');
            if line.is_empty() {
                return Err(format!("{}: empty file, a CSV source needs a header row", file.location));
            }
            return Ok(line.split(',').map(|c| c.trim().trim_matches('"').to_string()).collect());
        }
        end *= 4;
    }
}

async fn infer_csv_types(store: &Arc<dyn ObjectStore>, file: &ObjectMeta) -> std::result::Result<Schema, String> {
    use datafusion::arrow::csv::reader::Format;
    let take = file.size.min(1 << 20);
    let bytes = store.get_range(&file.location, 0..take).await.map_err(|e| format!("{}: {e}", file.location))?;
    // Only whole lines: drop a partial last line when the sample is cut.
    let cut = if take < file.size { bytes.iter().rposition(|&b| b == b'\n').unwrap_or(bytes.len()) } else { bytes.len() };
    let (schema, _) = Format::default()
        .with_header(true)
        .infer_schema(std::io::Cursor::new(&bytes[..cut]), Some(1000))
        .map_err(|e| format!("{}: cannot infer CSV types: {e}", file.location))?;
    Ok(schema)
}
