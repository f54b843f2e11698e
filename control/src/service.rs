//! What the API and the demo do to the service beyond reading it: submit a run of a segment,
//! check a tenant's model against its data and store it. Each operation takes
//! the parts it needs (the store, the sizing, the pool), not the API's state, and answers the
//! control plane's [`Error`](crate::Error)s; the API words those as HTTP answers.
//!
//! The schedules size their jobs with the same [`Sizing::new_job`] but insert them together
//! with the schedule's step, in one transaction (`schedules.rs`), so they do not call
//! [`submit`].

use std::path::Path;
use std::time::Duration;

use cohort_executor::{Catalog, Model};
use datafusion::prelude::SessionContext;
use serde_json::Value;

use crate::Result;
use crate::pool::{Catalogs, Pool, Sizing};
use crate::store::{JobRow, SegmentRow, Store, Tenant};

/// A run asked for.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The instant the segment is evaluated for (microseconds).
    pub as_of: i64,
    /// The submitter's idempotency key.
    pub key: Option<String>,
    /// Who asked: `api`, `schedule` or `demo`.
    pub trigger: &'static str,
    /// Replaces the deadline from the estimate (capped at the ceiling).
    pub timeout: Option<Duration>,
    /// The `traceparent` of the request that asked, when traces are on.
    pub trace_link: Option<String>,
}

/// Sizes a job for the segment, stores it and hands it to the pool. With an idempotency key
/// the tenant used before, answers the first job instead, and `false`.
pub async fn submit(store: &Store, sizing: &Sizing, pool: &Pool, tenant: &Tenant, segment: &SegmentRow, submission: Submission) -> Result<(JobRow, bool)> {
    let Submission { as_of, key, trigger, timeout, trace_link } = submission;
    let mut job = sizing.new_job(store, tenant, segment, as_of, key, trigger, timeout).await?;
    job.trace_link = trace_link;
    let (job, created) = store.insert_job(&job).await?;
    if created {
        pool.enqueued(job.clone(), Some(tenant));
    }
    Ok((job, created))
}

/// Loads and checks a model against the tenant's data: confined to its data root, every source
/// found and its schema agreeing with the model. A model that does not hold is
/// [`Error::Model`](crate::Error::Model).
///
/// A tenant whose data root is in object storage is read with its storage settings and the
/// credentials `catalogs`' configuration names.
pub async fn check_model(catalogs: &Catalogs, tenant: &Tenant, definition: &Value) -> Result<Catalog> {
    let model = Model::from_value(definition, Path::new(&tenant.data_root))?;
    let model = catalogs.tenant_model(tenant, model).await.map_err(|e| match e {
        crate::pool::ExecError::Executor(e) => crate::Error::Model(e),
        other => crate::Error::Internal(other.to_string()),
    })?;
    Ok(Catalog::load(model, &SessionContext::new()).await?)
}

/// A model as stored: its version and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredModel {
    /// The tenant's model version, counting from 1.
    pub version: i64,
    /// Objects in it.
    pub objects: i64,
    /// Relationships in it.
    pub relationships: i64,
    /// Bytes of its sources when it was checked.
    pub source_bytes: i64,
}

/// Checks a model against the tenant's data ([`check_model`]) and stores it as the tenant's
/// model.
pub async fn store_model(store: &Store, catalogs: &Catalogs, tenant: &Tenant, definition: &Value) -> Result<StoredModel> {
    let catalog = check_model(catalogs, tenant, definition).await?;
    let objects = catalog.objects.len() as i64;
    let relationships = catalog.model.relationships.len() as i64;
    let source_bytes = catalog.objects.iter().map(|o| o.bytes).sum::<u64>().min(i64::MAX as u64) as i64;
    let version = store.put_model(&tenant.id, &definition.to_string(), objects, relationships, source_bytes).await?;
    Ok(StoredModel { version, objects, relationships, source_bytes })
}
