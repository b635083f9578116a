//! The worker side. Workers trace through `tracing`: with an endpoint, the process's
//! subscriber gets an OpenTelemetry layer, the runtime opens [`process_span`] around each
//! `Agent::process` (its parent is the attempt span named by the task's `traceparent`), and
//! every `tracing` span the agent opens inside nests under it.
//!
//! Without an endpoint nothing is installed, [`enabled`] is false and [`process_span`] is
//! `Span::none()`: the runtime's cost is one atomic load per task.

use std::sync::OnceLock;

use opentelemetry::trace::{Status, TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use uuid::Uuid;

use crate::export::{Error, exporter, resource};
use crate::{TraceParent, attr};

/// The provider of this process, once tracing is on. One per process, like the subscriber.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Sets up this process's `tracing` subscriber: logs to stderr at `default_level`
/// (`RUST_LOG` overrides it) and, with an `endpoint`, spans at INFO and above exported over
/// OTLP/HTTP as service `service` (e.g. `baton-worker-<agent>`). The log filter does not
/// apply to exported spans. Does nothing if the process already has a subscriber.
pub fn init(default_level: &str, endpoint: Option<&str>, service: &str) -> Result<(), Error> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let spans = match endpoint {
        Some(endpoint) => {
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter(endpoint, service)?)
                .with_resource(resource(service))
                .build();
            let tracer = provider.tracer("baton-worker");
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(LevelFilter::INFO);
            Some((layer, provider))
        }
        None => None,
    };
    let (layer, provider) = spans.unzip();
    if tracing_subscriber::registry()
        .with(logs)
        .with(layer)
        .try_init()
        .is_ok()
        && let Some(provider) = provider
    {
        let _ = PROVIDER.set(provider);
    }
    Ok(())
}

/// Whether this process exports spans.
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// Exports every span that ended so far (the worker runtime calls it when it stops).
pub async fn flush() {
    let Some(provider) = PROVIDER.get().cloned() else {
        return;
    };
    let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
    if let Ok(Err(error)) = flushed {
        tracing::warn!(error = %error, "Spans not exported");
    }
}

/// The span around one attempt's `process`, child of the attempt span its task's
/// `traceparent` names (a new trace when the task has none). `Span::none()` when tracing is
/// off.
pub fn process_span(
    traceparent: Option<&str>,
    agent: &str,
    job: Uuid,
    step: &str,
    attempt: u32,
) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "baton.process",
        otel.name = %format_args!("process {agent}"),
        otel.kind = "consumer",
        baton.agent = agent,
        baton.job_id = %job,
        baton.step_id = step,
        baton.attempt = attempt,
    );
    if let Some(parent) = traceparent.and_then(TraceParent::parse) {
        let context = Context::new().with_remote_span_context(parent.span_context());
        let _ = span.set_parent(context);
    }
    span
}

/// The `traceparent` naming `span`, for the result message; `None` when tracing is off.
pub fn traceparent_of(span: &Span) -> Option<String> {
    if span.is_none() {
        return None;
    }
    let context = span.context();
    TraceParent::of(context.span().span_context()).map(|parent| parent.to_string())
}

/// How an attempt ended, as the worker saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    Succeeded,
    /// The agent returned an error (or panicked), with its message.
    Failed(&'a str),
    /// The attempt passed its deadline and was stopped without a result.
    Timeout,
    /// The worker stopped before the attempt finished and handed the task back.
    HandedBack,
}

/// Token usage in GenAI semantic-convention terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenAiUsage<'a> {
    pub model: Option<&'a str>,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Records the outcome (and usage, when the agent reported any) on a process span.
pub fn finish(span: &Span, outcome: Outcome<'_>, usage: Option<GenAiUsage<'_>>) {
    if span.is_none() {
        return;
    }
    let (name, class) = match outcome {
        Outcome::Succeeded => ("succeeded", None),
        Outcome::Failed(message) => {
            span.set_status(Status::error(message.to_owned()));
            ("failed", Some("error"))
        }
        Outcome::Timeout => {
            span.set_status(Status::error("the attempt passed its deadline"));
            ("timeout", Some("timeout"))
        }
        Outcome::HandedBack => ("handed_back", None),
    };
    span.set_attribute(attr::OUTCOME, name);
    if let Some(class) = class {
        span.set_attribute(attr::FAILURE_CLASS, class);
    }
    if let Some(usage) = usage {
        for kv in gen_ai(usage) {
            span.set_attribute(kv.key, kv.value);
        }
    }
}

/// The GenAI usage attributes (`gen_ai.usage.*`, `gen_ai.request.model`).
pub fn gen_ai(usage: GenAiUsage<'_>) -> Vec<KeyValue> {
    let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut attributes = vec![
        KeyValue::new(attr::INPUT_TOKENS, tokens(usage.input_tokens)),
        KeyValue::new(attr::OUTPUT_TOKENS, tokens(usage.output_tokens)),
    ];
    if let Some(model) = usage.model {
        attributes.push(KeyValue::new(attr::REQUEST_MODEL, model.to_owned()));
    }
    attributes
}
