//! The catalog cache: tenants' loaded catalogs, reused while their model and files are
//! unchanged, and preparing a job's catalog and segment.
//!
//! Loading a catalog reads every source's metadata (Parquet footers); for small jobs that is most of
//! the work. The cache is keyed by tenant and checked at every run against the model version and a
//! fingerprint of the source files (names, sizes, modification times). `execute` runs a job here or,
//! for a job queued as `ballista`, on the cluster (`RunOptions::ballista`).

use super::*;

/// Loaded catalogs, one per tenant, reused while the tenant's model version and the files
/// under its sources are unchanged. Loading a catalog reads every source's metadata (Parquet
/// footers); for small jobs that is most of the work, so each run of an unchanged tenant
/// skips it. The files are checked at every run (names, sizes, modification times): data
/// that grows or changes between runs is loaded again.
#[derive(Debug, Default)]
pub struct Catalogs {
    loaded: std::sync::Mutex<HashMap<String, CachedCatalog>>,
    /// How tenants' `s3://` data roots are reached (the configuration's `[storage]`).
    storage: std::sync::RwLock<Arc<StorageConfig>>,
}

/// A tenant's catalog with the model version and file fingerprint it was loaded for.
pub(super) type CachedCatalog = (i64, u64, Arc<Catalog>);

impl Catalogs {
    /// The object-storage settings tenants' models are read with.
    pub fn storage(&self) -> Arc<StorageConfig> {
        self.storage.read().map(|s| Arc::clone(&s)).unwrap_or_default()
    }

    /// Sets the object-storage settings (the configuration's `[storage]`).
    pub fn set_storage(&self, storage: StorageConfig) {
        if let Ok(mut s) = self.storage.write() {
            *s = Arc::new(storage);
        }
    }

    /// A tenant's model bound to its data root and confined there, read through the
    /// tenant's object stores.
    pub async fn tenant_model(&self, tenant: &Tenant, model: Model) -> std::result::Result<Model, ExecError> {
        let storage = self.storage();
        let stores = storage
            .stores(&tenant.data_root, tenant.storage.as_ref())
            .map_err(|e| ExecError::Executor(cohort_executor::Error::Source { object: String::new(), message: e.to_string() }))?;
        let model = model.with_stores(stores).confined_to_root(&tenant.data_root).map_err(ExecError::Executor)?;
        storage.resolve_tables(model).await.map_err(|e| match e {
            Error::Model(e) => ExecError::Executor(e),
            other => ExecError::Service(other),
        })
    }

    /// The catalog of `model` (version `version` of `tenant`'s), loaded or reused.
    pub async fn get(&self, tenant: &str, version: i64, model: Model) -> std::result::Result<Arc<Catalog>, ExecError> {
        let files =
            if model.prefix.is_some() { cohort_executor::storage::fingerprint(&model).await.map_err(ExecError::Executor)? } else { fingerprint(&model) };
        if let Some((v, f, catalog)) = lock(&self.loaded).get(tenant)
            && *v == version
            && *f == files
        {
            return Ok(Arc::clone(catalog));
        }
        let catalog = Arc::new(Catalog::load(model, &SessionContext::new()).await.map_err(ExecError::Executor)?);
        lock(&self.loaded).insert(tenant.to_string(), (version, files, Arc::clone(&catalog)));
        Ok(catalog)
    }
}

/// A hash of the names, sizes and modification times of every file under the model's sources.
pub(super) fn fingerprint(model: &Model) -> u64 {
    use std::hash::{Hash, Hasher};
    pub(super) fn walk(path: &Path, h: &mut std::collections::hash_map::DefaultHasher, depth: u32) {
        path.hash(h);
        match std::fs::metadata(path) {
            Ok(m) => {
                m.len().hash(h);
                m.modified().ok().hash(h);
                if m.is_dir() && depth > 0 {
                    let mut entries: Vec<std::path::PathBuf> = std::fs::read_dir(path).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
                    entries.sort();
                    for entry in entries {
                        walk(&entry, h, depth - 1);
                    }
                }
            }
            Err(_) => 0u8.hash(h),
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for object in &model.objects {
        let path = object.source.path.as_str();
        // A glob's files live under the folder before its first pattern character.
        let base = match path.find(['*', '?', '[']) {
            Some(i) if path[..i].ends_with('/') => Path::new(&path[..i]).to_path_buf(),
            Some(i) => Path::new(&path[..i]).parent().map(Path::to_path_buf).unwrap_or_default(),
            None => Path::new(path).to_path_buf(),
        };
        walk(&model.base_dir.join(base), &mut h, 16);
    }
    h.finish()
}

/// Loads a tenant's catalog (or reuses it) and checks the segment against it.
pub(super) async fn prepare(store: &Store, catalogs: &Catalogs, tenant_id: &str, segment_id: &str) -> std::result::Result<(Arc<Catalog>, Segment), ExecError> {
    prepare_pinned(store, catalogs, tenant_id, segment_id, &[]).await
}

/// [`prepare`], its table sources pinned to the snapshots `pins` names (a pinned catalog is
/// loaded for the job, never cached).
pub(super) async fn prepare_pinned(
    store: &Store,
    catalogs: &Catalogs,
    tenant_id: &str,
    segment_id: &str,
    pins: &[SnapshotView],
) -> std::result::Result<(Arc<Catalog>, Segment), ExecError> {
    let tenant = store.tenant(tenant_id).await?.ok_or_else(|| ExecError::Missing("the tenant was deleted".into()))?;
    let model_row = store.model(tenant_id).await?.ok_or_else(|| ExecError::Missing("the tenant has no model".into()))?;
    let segment_row = store.segment(tenant_id, segment_id).await?.ok_or_else(|| ExecError::Missing(format!("segment {segment_id:?} was deleted")))?;
    if pins.is_empty() {
        return prepare_rows(catalogs, &tenant, &model_row, &segment_row).await;
    }
    let model = Model::from_json(&model_row.definition, Path::new(&tenant.data_root)).map_err(ExecError::Executor)?;
    let model = catalogs.tenant_model(&tenant, model).await?.pin_snapshots(pins.iter().map(|p| (p.object.as_str(), p.id)));
    let catalog = Arc::new(Catalog::load(model, &SessionContext::new()).await.map_err(ExecError::Executor)?);
    let segment = Segment::from_json(&segment_row.definition, &catalog).map_err(ExecError::Executor)?;
    Ok((catalog, segment))
}

/// [`prepare`] from rows already read.
pub(super) async fn prepare_rows(
    catalogs: &Catalogs,
    tenant: &Tenant,
    model_row: &ModelRow,
    segment_row: &SegmentRow,
) -> std::result::Result<(Arc<Catalog>, Segment), ExecError> {
    let model = Model::from_json(&model_row.definition, Path::new(&tenant.data_root)).map_err(ExecError::Executor)?;
    let model = catalogs.tenant_model(tenant, model).await?;
    let catalog = catalogs.get(&tenant.id, model_row.version, model).await?;
    let segment = Segment::from_json(&segment_row.definition, &catalog).map_err(ExecError::Executor)?;
    Ok((catalog, segment))
}

/// A run and when its parts began (for the job's trace).
#[derive(Debug)]
pub(super) struct Executed {
    pub(super) report: RunReport,
    /// Loading the model and segment began.
    pub(super) began: SystemTime,
    /// The executor's run began (its report's offsets count from here).
    pub(super) run_began: SystemTime,
}

/// Loads the job's tenant, model and segment and evaluates it under `grant` bytes, here or
/// on the Ballista cluster at `ballista`.
pub(super) async fn execute(
    store: &Store,
    catalogs: &Catalogs,
    job: &JobRow,
    grant: u64,
    ballista: Option<cohort_executor::BallistaUrl>,
) -> std::result::Result<Executed, ExecError> {
    let began = SystemTime::now();
    // A retry or a re-run reads the snapshots the job's first attempt read; the first
    // records what it reads.
    let pins: Vec<SnapshotView> = match store.job_snapshots(&job.id).await.map_err(ExecError::Store)? {
        Some(text) => serde_json::from_str(&text).map_err(|e| ExecError::Internal(format!("the job's recorded snapshots {text:?}: {e}")))?,
        None => Vec::new(),
    };
    let (catalog, segment) = prepare_pinned(store, catalogs, &job.tenant_id, &job.segment_id, &pins).await?;
    if pins.is_empty() {
        let read: Vec<SnapshotView> =
            catalog.snapshots().into_iter().map(|(object, s)| SnapshotView { object, format: s.format, id: s.id, metadata: s.metadata }).collect();
        if !read.is_empty() {
            let text = serde_json::to_string(&read).map_err(|e| ExecError::Internal(e.to_string()))?;
            store.record_snapshots(&job.id, &text).await.map_err(ExecError::Store)?;
        }
    }
    let mut options = run_options(&catalog, job.as_of);
    options.memory_limit_bytes = Some(usize::try_from(grant).unwrap_or(usize::MAX));
    options.ballista = ballista;
    let run_began = SystemTime::now();
    let report = run_segment(&catalog, &segment, &options).await.map_err(ExecError::Executor)?;
    Ok(Executed { report, began, run_began })
}
