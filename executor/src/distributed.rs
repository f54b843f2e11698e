//! Running segments on an Apache DataFusion Ballista cluster.
//!
//! A run whose [`RunOptions::ballista`](crate::RunOptions::ballista) names a scheduler builds
//! the same plans as an embedded run, in a session whose query planner hands each plan to the
//! scheduler; the scheduler splits it into stages for its executors and the client reads the
//! result back. What is here:
//! - [`BallistaUrl`]: a scheduler's address, `df://host:port`.
//! - [`CohortCodec`]: the logical codec for what Cohort's plans hold that Ballista cannot
//!   ship by itself: the in-memory tables of rows a run computed first (a phase's set, a key
//!   set), sent inside the plan as Arrow IPC. Every other node goes to Ballista's own codec.
//! - [`LocalCluster`]: one scheduler and some executors in this process on loopback ports
//!   (tests, benchmarks, `cohort ballista local`); [`serve_scheduler`] and [`serve_executor`]:
//!   the long-running processes `cohort ballista scheduler|executor` start, with the codec.
//! - [`job_costs`]: what a distributed job read and held, from the scheduler's job metrics:
//!   rows and bytes scanned, spills, and the largest stage's operator memory (Ballista reports
//!   no pool high-water mark).
//! - `classify`: a failed job reaches the client only as text (`Job … failed: …`), so the
//!   executor's error classes are read from it: memory, unreadable sources, and everything else
//!   (the cluster unreachable included) an execution failure.
//!
//! Every gRPC message between Cohort, the scheduler and the executors may be up to
//! [`MAX_MESSAGE_BYTES`] (512 MiB): plans carry the rows a run computed first.

use std::fmt;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::BallistaLogicalExtensionCodec;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{GetJobMetricsParams, OperatorMetricsSet};
use ballista_core::utils::{GrpcClientConfig, create_grpc_client_connection};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SessionState, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::prelude::SessionConfig;
use datafusion_proto::logical_plan::LogicalExtensionCodec;

use crate::error::{Error, Result};
use crate::storage::{ObjectStores, StoreRegistry};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;

/// The port a scheduler listens on when its URL names none.
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// The largest gRPC message between Cohort, the scheduler and the executors. Plans carry the
/// rows a run computed first; Ballista's default (16 MiB) would fail a run whose key set is
/// larger.
pub const MAX_MESSAGE_BYTES: usize = 512 << 20;

/// A Ballista scheduler's address: `df://host:port` (port 50050 when omitted).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BallistaUrl {
    /// Host name or address.
    pub host: String,
    /// gRPC port.
    pub port: u16,
}

impl BallistaUrl {
    /// Parses `df://host:port`.
    pub fn parse(text: &str) -> std::result::Result<BallistaUrl, String> {
        let rest =
            text.trim().strip_prefix("df://").ok_or_else(|| format!("{text:?} is not a Ballista scheduler URL: expected df://host:port (or `embedded`)"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => {
                let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("{port:?} in {text:?} is not a port"))?;
                (host, port)
            }
            _ => (rest, DEFAULT_SCHEDULER_PORT),
        };
        if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
            return Err(format!("{text:?} names no usable host: expected df://host:port"));
        }
        Ok(BallistaUrl { host: host.to_string(), port })
    }

    /// The scheduler's gRPC endpoint, `http://host:port`.
    pub fn grpc(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }
}

impl fmt::Display for BallistaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "df://{}:{}", self.host, self.port)
    }
}

/// What starts an encoded table of rows (anything else is Ballista's).
const ROWS_MAGIC: &[u8] = b"cohort.rows.v1\0";

/// The logical codec Cohort's plans need: Ballista's, plus the in-memory tables of rows a run
/// computed first, shipped as an Arrow IPC stream. The client, the scheduler and (for logical
/// nodes) the executors must all use it: [`session_config`] sets it on a session.
#[derive(Debug, Default)]
pub struct CohortCodec {
    inner: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for CohortCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> DfResult<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DfResult<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(&self, buf: &[u8], table_ref: &TableReference, schema: SchemaRef, ctx: &TaskContext) -> DfResult<Arc<dyn TableProvider>> {
        match buf.strip_prefix(ROWS_MAGIC) {
            Some(ipc) => decode_rows(ipc, schema),
            None => self.inner.try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(&self, table_ref: &TableReference, node: Arc<dyn TableProvider>, buf: &mut Vec<u8>) -> DfResult<()> {
        let any: &dyn std::any::Any = node.as_ref();
        if let Some(table) = any.downcast_ref::<MemTable>() {
            return encode_rows(table, buf);
        }
        self.inner.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> DfResult<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> DfResult<()> {
        self.inner.try_encode_file_format(buf, node)
    }
}

/// An in-memory table's rows, all partitions in one Arrow IPC stream.
fn encode_rows(table: &MemTable, buf: &mut Vec<u8>) -> DfResult<()> {
    let schema = table.schema();
    buf.extend_from_slice(ROWS_MAGIC);
    let mut writer = StreamWriter::try_new(&mut *buf, &schema)?;
    for partition in &table.batches {
        let batches = partition.try_read().map_err(|_| DataFusionError::Internal("a table of rows was being written while its plan was encoded".into()))?;
        for batch in batches.iter() {
            writer.write(batch)?;
        }
    }
    writer.finish()?;
    Ok(())
}

fn decode_rows(ipc: &[u8], schema: SchemaRef) -> DfResult<Arc<dyn TableProvider>> {
    let reader = StreamReader::try_new(Cursor::new(ipc), None)?;
    let batches = reader.collect::<std::result::Result<Vec<RecordBatch>, _>>()?;
    Ok(Arc::new(MemTable::try_new(schema, vec![batches])?))
}

/// `config` made ready for Ballista with Cohort's codec and message size.
pub fn session_config(config: SessionConfig) -> SessionConfig {
    config
        .upgrade_for_ballista()
        .with_ballista_logical_extension_codec(Arc::new(CohortCodec::default()))
        .with_ballista_grpc_client_max_message_size(MAX_MESSAGE_BYTES)
}

/// The session state a scheduler or executor started by Cohort plans and runs with: its
/// `s3://` sources read with `stores`' settings.
pub fn cluster_state(target_partitions: usize, stores: &ObjectStores) -> SessionState {
    let config = session_config(SessionConfig::new().with_target_partitions(target_partitions.max(1)));
    let runtime = RuntimeEnvBuilder::new().with_object_store_registry(Arc::new(StoreRegistry::new(stores.clone()))).build_arc();
    let builder = SessionStateBuilder::new().with_default_features().with_config(config);
    match runtime {
        Ok(runtime) => builder.with_runtime_env(runtime).build(),
        Err(_) => builder.build(),
    }
}

fn cluster_error(what: &str, e: impl fmt::Display) -> Error {
    Error::Execution(format!("Ballista {what}: {e}"))
}

/// One scheduler and some executors in this process, on loopback ports. They run until the
/// process ends.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    /// The scheduler's URL.
    pub url: BallistaUrl,
    /// Executors started.
    pub executors: usize,
}

impl LocalCluster {
    /// Starts a scheduler and `executors` executors of `task_slots` concurrent tasks each,
    /// and returns once every executor has registered (the scheduler has them all as alive).
    pub async fn start(executors: usize, task_slots: usize) -> Result<LocalCluster> {
        LocalCluster::start_with(executors, task_slots, &ObjectStores::default()).await
    }

    /// [`LocalCluster::start`], its scheduler and executors reading `s3://` sources with
    /// `stores`' settings.
    pub async fn start_with(executors: usize, task_slots: usize, stores: &ObjectStores) -> Result<LocalCluster> {
        let state = cluster_state(task_slots, stores);
        let addr =
            ballista_scheduler::standalone::new_standalone_scheduler_from_state(&state).await.map_err(|e| cluster_error("scheduler did not start", e))?;
        let url = BallistaUrl { host: "localhost".to_string(), port: addr.port() };
        for _ in 0..executors.max(1) {
            let client = scheduler_client(&url).await?;
            ballista_executor::new_standalone_executor_from_state(client, task_slots.max(1), &state)
                .await
                .map_err(|e| cluster_error("executor did not start", e))?;
        }
        Ok(LocalCluster { url, executors: executors.max(1) })
    }
}

/// A gRPC client of the scheduler at `url`.
async fn scheduler_client(url: &BallistaUrl) -> Result<SchedulerGrpcClient<tonic::transport::Channel>> {
    let channel = create_grpc_client_connection(url.grpc(), &GrpcClientConfig::default())
        .await
        .map_err(|e| cluster_error(&format!("scheduler at {url} unreachable"), e))?;
    Ok(SchedulerGrpcClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Runs a scheduler listening on `bind` with Cohort's codec until the process ends.
pub async fn serve_scheduler(bind: SocketAddr, external_host: &str) -> Result<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    // `s3://` sources are listed here while planning: with the standard `AWS_*` settings.
    let state = cluster_state(crate::machine::cores(), &ObjectStores::default());
    let session_config = state.config().clone();
    let config = SchedulerConfig {
        bind_host: bind.ip().to_string(),
        bind_port: bind.port(),
        external_host: external_host.to_string(),
        grpc_server_max_decoding_message_size: MAX_MESSAGE_BYTES as u32,
        grpc_server_max_encoding_message_size: MAX_MESSAGE_BYTES as u32,
        grpc_client_max_message_size: MAX_MESSAGE_BYTES as u32,
        override_logical_codec: Some(Arc::new(CohortCodec::default())),
        override_config_producer: Some(Arc::new(move || session_config.clone())),
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(|e| cluster_error("scheduler state", e))?;
    ballista_scheduler::scheduler_process::start_server(cluster, bind, Arc::new(config)).await.map_err(|e| cluster_error("scheduler stopped", e))
}

/// How `cohort ballista executor` runs.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    /// The scheduler to register with.
    pub scheduler: BallistaUrl,
    /// Address the executor's Arrow Flight service listens on.
    pub bind: SocketAddr,
    /// The host name others reach it by (default: the bind address).
    pub external_host: Option<String>,
    /// Tasks it runs at once.
    pub task_slots: usize,
    /// Memory pool of the executor, shared by its tasks; `None`: Ballista's default share of
    /// the machine's memory.
    pub memory_pool_bytes: Option<u64>,
    /// Folder for shuffle files (default: a temporary folder).
    pub work_dir: Option<String>,
}

/// Runs an executor with Cohort's codec until the process ends or is told to stop (SIGINT).
pub async fn serve_executor(settings: ExecutorSettings) -> Result<()> {
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    let state = cluster_state(settings.task_slots, &ObjectStores::default());
    let session_config = state.config().clone();
    // Sources in object storage are read with the standard `AWS_*` settings of this process;
    // temporary files go to the work folder, as Ballista's own producer puts them.
    let work_dir = settings.work_dir.clone();
    let runtime_producer: ballista_core::RuntimeProducer = Arc::new(move |_| {
        let mut builder = RuntimeEnvBuilder::new().with_object_store_registry(Arc::new(StoreRegistry::new(ObjectStores::default())));
        if let Some(dir) = &work_dir {
            builder = builder.with_temp_file_path(dir.clone());
        }
        Ok(Arc::new(builder.build()?))
    });
    let config = ExecutorProcessConfig {
        override_runtime_producer: Some(runtime_producer),
        bind_host: settings.bind.ip().to_string(),
        port: settings.bind.port(),
        grpc_port: settings.bind.port().saturating_add(1),
        external_host: settings.external_host.clone(),
        scheduler_host: settings.scheduler.host.clone(),
        scheduler_port: settings.scheduler.port,
        scheduler_connect_timeout_seconds: 30,
        vcores: settings.task_slots.max(1),
        work_dir: settings.work_dir.clone(),
        print_thread_info: false,
        memory_pool_size: settings.memory_pool_bytes,
        grpc_max_decoding_message_size: MAX_MESSAGE_BYTES as u32,
        grpc_max_encoding_message_size: MAX_MESSAGE_BYTES as u32,
        override_logical_codec: Some(Arc::new(CohortCodec::default())),
        override_config_producer: Some(Arc::new(move || session_config.clone())),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config)).await.map_err(|e| cluster_error("executor stopped", e))
}

/// What a finished distributed job cost, summed over its stages and tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobCosts {
    /// Rows read by the scans (not by shuffle reads).
    pub rows_scanned: u64,
    /// Bytes read by the scans, where the source reports them (Parquet).
    pub bytes_scanned: u64,
    /// Times an operator spilled.
    pub spill_count: usize,
    /// Bytes spilled.
    pub spilled_bytes: usize,
    /// The largest memory of one stage: its operators' reported peaks (`peak_mem_used`,
    /// `build_mem_used`) summed over its tasks. Ballista reports no pool high-water mark, so
    /// this bounds from above what the stage held at once.
    pub peak_memory_bytes: usize,
    /// Stages the job ran.
    pub stages: usize,
}

/// Reads `job_id`'s metrics from the scheduler at `url`.
pub async fn job_costs(url: &BallistaUrl, job_id: &str) -> Result<JobCosts> {
    let mut client = scheduler_client(url).await?;
    let metrics = client
        .get_job_metrics(GetJobMetricsParams { job_id: job_id.to_string() })
        .await
        .map_err(|e| cluster_error(&format!("metrics of job {job_id}"), e))?
        .into_inner();
    let mut costs = JobCosts { stages: metrics.stages.len(), ..JobCosts::default() };
    for stage in &metrics.stages {
        let mut stage_memory = 0usize;
        for (i, operator) in stage.operators.iter().enumerate() {
            let set: MetricsSet = match (OperatorMetricsSet { metrics: operator.metrics.clone() }).try_into() {
                Ok(set) => set,
                Err(_) => continue,
            };
            let set = set.aggregate_by_name();
            costs.spill_count += set.spill_count().unwrap_or(0);
            costs.spilled_bytes += set.spilled_bytes().unwrap_or(0);
            for name in ["peak_mem_used", "build_mem_used"] {
                stage_memory += set.sum_by_name(name).map(|v| v.as_usize()).unwrap_or(0);
            }
            // A leaf (the next operator is not deeper) that is not a shuffle read is a scan.
            let leaf = stage.operators.get(i + 1).is_none_or(|next| next.depth <= operator.depth);
            let shuffle = operator.operator_type.contains("Shuffle") || operator.operator_desc.contains("Shuffle");
            if leaf && !shuffle {
                costs.rows_scanned += set.output_rows().unwrap_or(0) as u64;
                costs.bytes_scanned += set.sum_by_name("bytes_scanned").map(|v| v.as_usize() as u64).unwrap_or(0);
            }
        }
        costs.peak_memory_bytes = costs.peak_memory_bytes.max(stage_memory);
    }
    Ok(costs)
}

/// Classifies an error of a plan run on Ballista. The scheduler reports a failed job as text
/// (`Job … failed: …`), so the engine's own classes are read from it: memory, unreadable
/// sources, and everything else (the cluster unreachable included) as an execution failure
/// the control plane retries.
pub(crate) fn classify(error: DataFusionError, limit_bytes: usize) -> Error {
    let text = error.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("resources exhausted") {
        return Error::ResourcesExhausted { limit_bytes, message: text };
    }
    let source_markers = ["object store error", "no such file", "io error", "parquet error", "csv error", "parser error", "parseerror", "permission denied"];
    if source_markers.iter().any(|m| lower.contains(m)) {
        return Error::Source { object: String::new(), message: text };
    }
    Error::Execution(format!("on the Ballista cluster: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_print() {
        let url = BallistaUrl::parse("df://sched.internal:50051").expect("url");
        assert_eq!(url, BallistaUrl { host: "sched.internal".into(), port: 50051 });
        assert_eq!(url.to_string(), "df://sched.internal:50051");
        assert_eq!(url.grpc(), "http://sched.internal:50051");
        assert_eq!(BallistaUrl::parse("df://localhost").expect("url").port, DEFAULT_SCHEDULER_PORT);
        for bad in ["http://x:1", "df://", "df://:50050", "df://h:0", "df://h:port", "df://a@b:1"] {
            assert!(BallistaUrl::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn rows_survive_the_codec() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("s", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3])), Arc::new(StringArray::from(vec![Some("a"), None, Some("c")]))],
        )
        .expect("batch");
        let table: Arc<dyn TableProvider> = Arc::new(MemTable::try_new(Arc::clone(&schema), vec![vec![batch.clone()], vec![batch]]).expect("table"));
        let codec = CohortCodec::default();
        let mut buf = Vec::new();
        codec.try_encode_table_provider(&TableReference::bare("t"), table, &mut buf).expect("encode");
        let ctx = TaskContext::default();
        let back = codec.try_decode_table_provider(&buf, &TableReference::bare("t"), Arc::clone(&schema), &ctx).expect("decode");
        let back: &dyn std::any::Any = back.as_ref();
        let back = back.downcast_ref::<MemTable>().expect("a MemTable");
        let rows: usize = back.batches.iter().map(|p| p.try_read().map(|b| b.iter().map(RecordBatch::num_rows).sum::<usize>()).unwrap_or(0)).sum();
        assert_eq!(rows, 6);
    }

    #[test]
    fn remote_failures_keep_their_class() {
        let e = classify(DataFusionError::Execution("Job abc failed: Resources exhausted: Failed to allocate".into()), 10);
        assert!(matches!(e, Error::ResourcesExhausted { limit_bytes: 10, .. }));
        let e = classify(DataFusionError::Execution("Job abc failed: Object Store error: not found".into()), 10);
        assert!(matches!(e, Error::Source { .. }));
        let e = classify(DataFusionError::Execution("transport error".into()), 10);
        assert!(matches!(e, Error::Execution(_)));
    }
}
