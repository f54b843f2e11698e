//! `cohort-executor` evaluates a tenant's segment over the tenant's own data model on
//! Apache DataFusion, under a memory limit.
//!
//! The pieces, in the order a run uses them:
//! - [`Model`]: the data model as the tenant wrote it, parsed and checked without data.
//! - [`Catalog`]: the model bound to its sources (files listed, real schemas read and checked).
//! - [`Segment`]: a segment parsed and checked against the catalog, paths resolved.
//! - [`run_segment`]: compiles the segment to DataFusion plans (one, or one per top-level
//!   branch in phased mode), executes them under a memory pool, and returns a [`RunReport`].
//!   With [`RunOptions::ballista`] set, the same plans run on an Apache DataFusion Ballista
//!   cluster instead ([`distributed`]: the codec, a local cluster, the cluster processes).
//!
//! ```no_run
//! # async fn demo() -> cohort_executor::Result<()> {
//! use cohort_executor::{Catalog, Model, RunOptions, Segment, run_segment};
//! let model = Model::from_file("tenant/model.json".as_ref())?;
//! let catalog = Catalog::load(model, &Default::default()).await?;
//! let segment = Segment::from_file("tenant/segments/vip.json".as_ref(), &catalog)?;
//! let mut options = RunOptions::new(chrono::Utc::now().timestamp_micros());
//! options.memory_limit_bytes = Some(512 << 20);
//! let report = run_segment(&catalog, &segment, &options).await?;
//! println!("{}", report.summary());
//! # Ok(()) }
//! ```
//!
//! Invariants, stated as absences: the executor knows nothing of tenants, jobs, HTTP or the
//! control plane's store; it never builds SQL text from user values (every value is a typed
//! literal in a DataFusion expression); it reads no rows before the model and segment are
//! fully checked; it does not panic on any model, segment or data.
#![deny(missing_docs)]

mod catalog;
mod compile;
pub mod distributed;
mod error;
mod iceberg;
mod json;
mod machine;
mod model;
mod quality;
mod run;
mod segment;
pub mod storage;

pub use catalog::{Catalog, LoadedObject, SourceSnapshot, arrow_type, model_type};
pub use distributed::{BallistaUrl, LocalCluster};
pub use error::{Error, ErrorClass, Result};
pub use model::RESERVED_PREFIX;
pub use model::{Field, FieldType, Guardrails, Model, ObjectDef, Relationship, S3Prefix, Source, SourceFormat};
pub use quality::{DataFinding, ProbeOptions, probe_data};
pub use run::{
    BallistaRun, JoinStrategy, KEY_SETS_FIRST_MIN_ROWS, PeakTrackingPool, PhaseReport, PlanChoice, PlanMode, RunOptions, RunReport, compile_plans, explain,
    plan_mode, run_analyzed, run_segment, session,
};
pub use segment::{Agg, CmpOp, Having, Hop, Leaf, LeafOp, Literal, Node, Number, PlanShape, Related, Segment, parse_date, parse_timestamp};
