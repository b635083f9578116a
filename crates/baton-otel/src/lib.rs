//! Baton's distributed tracing with OpenTelemetry: one job is one trace.
//!
//! - [`TraceParent`]: the W3C `traceparent` header that carries the trace from the submitter
//!   through the coordinator, every task and the worker, and back with the result.
//! - [`JobTrace`]: the coordinator's **deterministic** span ids. The coordinator is stateless
//!   and a job's spans start and end in different replicas, so every id is derived from the
//!   job id (and the submitter's trace id, when one was given) instead of being remembered.
//! - [`SpanSink`]: exports spans the coordinator builds itself (ids and times its own) through
//!   a batch span processor and the OTLP/HTTP (protobuf) exporter.
//! - [`worker`]: the worker side, where spans come from `tracing`: a subscriber with an
//!   OpenTelemetry layer, and the span around an agent's `process` under which the agent's
//!   own `tracing` spans nest.
//!
//! Tracing is off unless an OTLP endpoint is configured; off, nothing here runs on the hot
//! path (the worker checks one flag, the coordinator one `Option`).

mod context;
mod export;
mod ids;
pub mod worker;

pub use context::TraceParent;
pub use export::{Error, SpanRecord, SpanSink, endpoint_from_env, traces_url};
pub use ids::JobTrace;
pub use opentelemetry::KeyValue;
pub use opentelemetry::trace::{SpanId, SpanKind, TraceId};

/// The W3C trace-context header (lower case, as the spec writes it).
pub const TRACEPARENT: &str = "traceparent";

/// The standard variable naming the OTLP base URL, honoured when no Baton flag or
/// `BATON_OTLP_ENDPOINT` is given.
pub const OTEL_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Span attribute names, in one place: Baton's own, and the OpenTelemetry GenAI semantic
/// conventions for token usage.
pub mod attr {
    pub const JOB_ID: &str = "baton.job_id";
    pub const STEP_ID: &str = "baton.step_id";
    pub const AGENT: &str = "baton.agent";
    pub const ATTEMPT: &str = "baton.attempt";
    pub const OUTCOME: &str = "baton.outcome";
    pub const FAILURE_CLASS: &str = "baton.failure_class";
    pub const PLAN: &str = "baton.plan";
    pub const WORKER: &str = "baton.worker";
    pub const COST_USD: &str = "baton.cost_usd";
    pub const INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const REQUEST_MODEL: &str = "gen_ai.request.model";
}

/// Span names, in one place.
pub mod name {
    /// The worker's span around `Agent::process` (`tracing` name; exported as
    /// `process <agent>`).
    pub const PROCESS: &str = "baton.process";
}
