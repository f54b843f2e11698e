//! OpenTelemetry traces: one trace per job, exported over OTLP/HTTP when an endpoint is
//! configured, off otherwise.
//!
//! A job's trace id and root span id are derived from its id, so every attempt — in whichever
//! process, after whichever restart — lands in the same trace, and the dashboard can name the
//! trace without storing it. The tree:
//!
//! ```text
//! job                      created → final state; links to the API request that created it
//! ├── admission wait       queued → admitted (one per attempt)
//! └── attempt              admitted → attempt end (one per attempt)
//!     ├── planning         model loaded, plan built; phased runs execute their phases here
//!     │   └── phase N      one per phase (branch) of a phased plan
//!     ├── execution        the final plan run
//!     └── membership commit
//! ```
//!
//! Spans are recorded when what they describe has ended, with their real start and end
//! times, so a span never has to outlive a task or a process.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, SdkTracerProvider, Tracer};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

thread_local! {
    /// Ids the next span built on this thread must take (a job's root span).
    static NEXT_TRACE: Cell<Option<TraceId>> = const { Cell::new(None) };
    static NEXT_SPAN: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// Random ids, except where a job's root span asks for its derived ones.
#[derive(Debug, Default)]
struct JobIds(RandomIdGenerator);

impl IdGenerator for JobIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE.with(Cell::take).unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_SPAN.with(Cell::take).unwrap_or_else(|| self.0.new_span_id())
    }
}

/// The trace id and root span id of a job.
pub fn job_ids(job_id: &str) -> (TraceId, SpanId) {
    let digest = Sha256::digest(format!("cohort-job:{job_id}").as_bytes());
    let mut trace = [0u8; 16];
    let mut span = [0u8; 8];
    trace.copy_from_slice(&digest[..16]);
    span.copy_from_slice(&digest[16..24]);
    (TraceId::from_bytes(trace), SpanId::from_bytes(span))
}

/// The job's trace id as hex (what a tracing UI searches for).
pub fn job_trace_id(job_id: &str) -> String {
    job_ids(job_id).0.to_string()
}

/// A W3C `traceparent` for a span context.
pub fn traceparent(cx: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", cx.trace_id(), cx.span_id(), cx.trace_flags().to_u8())
}

/// Parses a W3C `traceparent` (`00-<trace>-<span>-<flags>`).
pub fn parse_traceparent(text: &str) -> Option<SpanContext> {
    let mut parts = text.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok().filter(|t| *t != TraceId::INVALID)?;
    let span = SpanId::from_hex(span).ok().filter(|s| *s != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(trace, span, TraceFlags::new(flags), true, TraceState::default()))
}

/// What the job's spans are labelled with.
#[derive(Debug, Clone)]
pub struct JobLabels {
    /// The job.
    pub job: String,
    /// Its tenant.
    pub tenant: String,
    /// The tenant's region.
    pub region: String,
    /// The segment.
    pub segment: String,
}

impl JobLabels {
    fn attributes(&self) -> Vec<KeyValue> {
        vec![
            KeyValue::new("cohort.job", self.job.clone()),
            KeyValue::new("cohort.tenant", self.tenant.clone()),
            KeyValue::new("cohort.region", self.region.clone()),
            KeyValue::new("cohort.segment", self.segment.clone()),
        ]
    }
}

/// One phase of a phased plan, in wall-clock time.
#[derive(Debug, Clone)]
pub struct PhaseSpan {
    /// The branch's place (`filter.and[1]`).
    pub place: String,
    /// Start and end.
    pub start: SystemTime,
    /// End.
    pub end: SystemTime,
    /// Rows in its materialized set.
    pub rows: u64,
}

/// What one attempt did, in wall-clock time.
#[derive(Debug, Clone)]
pub struct AttemptSpans {
    /// Attempt number (1 first).
    pub attempt: i64,
    /// The grant it ran under, in bytes.
    pub grant: u64,
    /// When the job entered the queue for this attempt.
    pub queued: SystemTime,
    /// When it was admitted.
    pub admitted: SystemTime,
    /// Planning: start and end (absent if it failed before running).
    pub planning: Option<(SystemTime, SystemTime)>,
    /// Phases of a phased plan.
    pub phases: Vec<PhaseSpan>,
    /// The final plan's run.
    pub execution: Option<(SystemTime, SystemTime)>,
    /// The membership commit.
    pub commit: Option<(SystemTime, SystemTime)>,
    /// End of the attempt.
    pub end: SystemTime,
    /// Plan mode (`single`, `phased`).
    pub plan_mode: Option<String>,
    /// Peak memory, if measured.
    pub peak: Option<u64>,
    /// The failure's class and message, if it failed.
    pub error: Option<(String, String)>,
}

/// Time from microseconds since the epoch.
pub fn system_time(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// The service's tracer: off, or exporting over OTLP/HTTP.
#[derive(Debug, Default)]
pub struct Traces {
    exporting: Option<(SdkTracerProvider, Tracer)>,
}

impl Traces {
    /// No tracing.
    pub fn off() -> Traces {
        Traces::default()
    }

    /// Exports to an OTLP/HTTP collector at `endpoint` (`http://host:4318`; `/v1/traces` is
    /// added unless given), in batches at most `delay` apart. Requests are sent on `runtime`.
    pub fn otlp(endpoint: &str, delay: Duration, runtime: tokio::runtime::Handle) -> Result<Traces> {
        let endpoint = endpoint.trim_end_matches('/');
        let url = if endpoint.ends_with("/v1/traces") { endpoint.to_string() } else { format!("{endpoint}/v1/traces") };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Config(format!("otlp_endpoint {endpoint:?} must be an http:// or https:// URL")));
        }
        use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
        let client = OtlpClient {
            client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| Error::Config(format!("the OTLP client: {e}")))?,
            runtime,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(url.clone())
            .with_http_client(client)
            .build()
            .map_err(|e| Error::Config(format!("the OTLP exporter for {url}: {e}")))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(BatchConfigBuilder::default().with_scheduled_delay(delay.max(Duration::from_millis(10))).build())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_id_generator(JobIds::default())
            .with_resource(Resource::builder().with_service_name("cohort").build())
            .build();
        let tracer = provider.tracer("cohort");
        tracing::info!(endpoint = %url, "exporting traces over OTLP/HTTP");
        Ok(Traces { exporting: Some((provider, tracer)) })
    }

    /// Whether spans are recorded at all.
    pub fn enabled(&self) -> bool {
        self.exporting.is_some()
    }

    fn tracer(&self) -> Option<&Tracer> {
        self.exporting.as_ref().map(|(_, t)| t)
    }

    /// Starts the span of an API request (a server span), continuing the caller's trace when
    /// it sent a `traceparent`.
    pub fn request(&self, method: &str, route: &str, parent: Option<SpanContext>) -> Option<RequestSpan> {
        let tracer = self.tracer()?;
        let name = format!("{method} {route}");
        let attributes = vec![KeyValue::new("http.request.method", method.to_string()), KeyValue::new("http.route", route.to_string())];
        let cx = match parent {
            Some(p) => Context::new().with_remote_span_context(p),
            None => Context::new(),
        };
        let span = tracer.span_builder(name).with_kind(SpanKind::Server).with_attributes(attributes).start_with_context(tracer, &cx);
        Some(RequestSpan { span })
    }

    /// Records one attempt's spans under the job's root.
    pub fn attempt(&self, job: &JobLabels, a: &AttemptSpans) {
        let Some(tracer) = self.tracer() else { return };
        let (trace, root) = job_ids(&job.job);
        let parent = Context::new().with_remote_span_context(SpanContext::new(trace, root, TraceFlags::SAMPLED, true, TraceState::default()));
        let mut attrs = job.attributes();
        attrs.push(KeyValue::new("cohort.attempt", a.attempt));

        let mut wait = tracer.span_builder("admission wait").with_start_time(a.queued).with_attributes(attrs.clone()).start_with_context(tracer, &parent);
        wait.end_with_timestamp(a.admitted.max(a.queued));

        let mut attempt_attrs = attrs.clone();
        attempt_attrs.push(KeyValue::new("cohort.grant_bytes", i64::try_from(a.grant).unwrap_or(i64::MAX)));
        if let Some(peak) = a.peak {
            attempt_attrs.push(KeyValue::new("cohort.peak_memory_bytes", i64::try_from(peak).unwrap_or(i64::MAX)));
        }
        if let Some(mode) = &a.plan_mode {
            attempt_attrs.push(KeyValue::new("cohort.plan_mode", mode.clone()));
        }
        let mut attempt = tracer.span_builder("attempt").with_start_time(a.admitted).with_attributes(attempt_attrs).start_with_context(tracer, &parent);
        if let Some((class, message)) = &a.error {
            attempt.set_attribute(KeyValue::new("cohort.error_class", class.clone()));
            attempt.set_status(Status::error(message.clone()));
        }
        let under = parent.with_remote_span_context(attempt.span_context().clone());
        if let Some((start, end)) = a.planning {
            let mut planning = tracer.span_builder("planning").with_start_time(start).with_attributes(attrs.clone()).start_with_context(tracer, &under);
            let phases = parent.with_remote_span_context(planning.span_context().clone());
            for (i, p) in a.phases.iter().enumerate() {
                let mut phase_attrs = attrs.clone();
                phase_attrs.push(KeyValue::new("cohort.phase", i64::try_from(i + 1).unwrap_or(i64::MAX)));
                phase_attrs.push(KeyValue::new("cohort.phase.place", p.place.clone()));
                phase_attrs.push(KeyValue::new("cohort.phase.rows", i64::try_from(p.rows).unwrap_or(i64::MAX)));
                let mut span =
                    tracer.span_builder(format!("phase {}", i + 1)).with_start_time(p.start).with_attributes(phase_attrs).start_with_context(tracer, &phases);
                span.end_with_timestamp(p.end.max(p.start));
            }
            planning.end_with_timestamp(end.max(start));
        }
        for (name, times) in [("execution", a.execution), ("membership commit", a.commit)] {
            if let Some((start, end)) = times {
                let mut span = tracer.span_builder(name).with_start_time(start).with_attributes(attrs.clone()).start_with_context(tracer, &under);
                span.end_with_timestamp(end.max(start));
            }
        }
        attempt.end_with_timestamp(a.end.max(a.admitted));
    }

    /// Records the job's root span once it reached its final state.
    pub fn job(&self, job: &JobLabels, created: SystemTime, end: SystemTime, outcome: &str, error: Option<(&str, &str)>, link: Option<&str>) {
        let Some(tracer) = self.tracer() else { return };
        let (trace, root) = job_ids(&job.job);
        let mut attrs = job.attributes();
        attrs.push(KeyValue::new("cohort.outcome", outcome.to_string()));
        let mut builder = tracer.span_builder("job").with_kind(SpanKind::Consumer).with_start_time(created).with_attributes(attrs);
        if let Some(cx) = link.and_then(parse_traceparent) {
            builder = builder.with_links(vec![Link::with_context(cx)]);
        }
        NEXT_TRACE.with(|c| c.set(Some(trace)));
        NEXT_SPAN.with(|c| c.set(Some(root)));
        let mut span = builder.start_with_context(tracer, &Context::new());
        NEXT_TRACE.with(|c| c.set(None));
        NEXT_SPAN.with(|c| c.set(None));
        if let Some((class, message)) = error {
            span.set_attribute(KeyValue::new("cohort.error_class", class.to_string()));
            span.set_status(Status::error(message.to_string()));
        }
        span.end_with_timestamp(end.max(created));
    }

    /// Exports what is buffered (at shutdown).
    pub fn shutdown(&self) {
        if let Some((provider, _)) = &self.exporting
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "the trace exporter did not shut down cleanly");
        }
    }
}

/// The span of one API request; ended when dropped or by [`RequestSpan::end`].
#[derive(Debug)]
pub struct RequestSpan {
    span: opentelemetry_sdk::trace::Span,
}

impl RequestSpan {
    /// The span's context (what a job links to).
    pub fn context(&self) -> SpanContext {
        self.span.span_context().clone()
    }

    /// Ends the span with the response's status.
    pub fn end(mut self, status: u16) {
        self.span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 500 {
            self.span.set_status(Status::error(format!("HTTP {status}")));
        }
        self.span.end();
    }
}

/// Sends OTLP requests with the service's HTTP client, on its runtime (the SDK's batch
/// processor exports from a thread of its own).
#[derive(Debug)]
struct OtlpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> std::result::Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let sent = self.runtime.spawn(async move {
            let response = client.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = sent.await??;
        let mut response = Response::builder().status(status).body(body)?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_junk() {
        let cx = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
            SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let text = traceparent(&cx);
        assert_eq!(text, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(parse_traceparent(&text).map(|c| (c.trace_id(), c.span_id())), Some((cx.trace_id(), cx.span_id())));
        for junk in ["", "00-xyz", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"] {
            assert!(parse_traceparent(junk).is_none(), "{junk}");
        }
    }

    #[test]
    fn a_job_always_has_the_same_trace() {
        assert_eq!(job_ids("job_1"), job_ids("job_1"));
        assert_ne!(job_ids("job_1").0, job_ids("job_2").0);
    }
}
