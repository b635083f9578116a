//! OTLP/HTTP (protobuf) export, and the sink for spans the coordinator builds itself.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SpanData, SpanEvents, SpanExporter as _, SpanLinks, SpanProcessor,
};

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid OTLP endpoint {0:?}: it must be an http:// or https:// URL")]
    Endpoint(String),
    #[error("cannot build the OTLP exporter: {0}")]
    Build(String),
}

/// The endpoint to export to: the one configured (`--otlp-endpoint`,
/// `BATON_OTLP_ENDPOINT`, a config file), else the standard `OTEL_EXPORTER_OTLP_ENDPOINT`;
/// `None` (tracing off) when neither is set or both are empty.
pub fn endpoint_from_env(configured: Option<String>) -> Option<String> {
    configured
        .filter(|e| !e.trim().is_empty())
        .or_else(|| std::env::var(crate::OTEL_ENDPOINT_VAR).ok())
        .filter(|e| !e.trim().is_empty())
}

/// The traces URL of an OTLP/HTTP endpoint. Like `OTEL_EXPORTER_OTLP_ENDPOINT`, the endpoint
/// is the collector's base URL (`http://collector:4318`) and `/v1/traces` is appended; a URL
/// that already ends in `/v1/traces` is taken as it is.
pub fn traces_url(endpoint: &str) -> Result<String, Error> {
    let endpoint = endpoint.trim();
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"));
    if rest.is_none_or(|host| host.is_empty() || host.starts_with('/')) {
        return Err(Error::Endpoint(endpoint.to_owned()));
    }
    if endpoint.ends_with("/v1/traces") {
        return Ok(endpoint.to_owned());
    }
    Ok(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
}

/// The OTLP/HTTP protobuf span exporter, on a blocking reqwest client over rustls (ring).
pub(crate) fn exporter(
    endpoint: &str,
    service: &str,
) -> Result<opentelemetry_otlp::SpanExporter, Error> {
    let url = traces_url(endpoint)?;
    // reqwest is built without a crypto provider of its own (the workspace's TLS is rustls
    // on ring); it takes the process default, which must exist before a client is built.
    // An error means one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Error::Build(e.to_string()))?;
    exporter.set_resource(&resource(service));
    Ok(exporter)
}

pub(crate) fn resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_owned())
        .build()
}

/// A span that ended, with ids and times chosen by the caller.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The parent span, and whether it lives in another process (the submitter's span).
    pub parent: Option<(SpanId, bool)>,
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Set for a failure: the span's status becomes an error with this description.
    pub error: Option<String>,
}

/// Exports spans built by hand through a batch span processor (its own thread, so `export`
/// never blocks the caller; a full queue drops spans rather than slowing the work).
#[derive(Debug)]
pub struct SpanSink {
    processor: Arc<BatchSpanProcessor>,
    scope: InstrumentationScope,
}

impl SpanSink {
    /// A sink exporting to `endpoint` (an OTLP/HTTP base URL) as service `service`.
    pub fn new(endpoint: &str, service: &str) -> Result<Self, Error> {
        let exporter = exporter(endpoint, service)?;
        Ok(Self {
            processor: Arc::new(BatchSpanProcessor::builder(exporter).build()),
            scope: InstrumentationScope::builder(service.to_owned())
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        })
    }

    /// Queues one ended span for export.
    pub fn export(&self, span: SpanRecord) {
        let (parent_span_id, parent_span_is_remote) =
            span.parent.unwrap_or((SpanId::INVALID, false));
        let data = SpanData {
            span_context: SpanContext::new(
                span.trace_id,
                span.span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id,
            parent_span_is_remote,
            span_kind: span.kind,
            name: Cow::Owned(span.name),
            start_time: span.start,
            end_time: span.end.max(span.start),
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: match span.error {
                Some(description) => Status::error(description),
                None => Status::Unset,
            },
            instrumentation_scope: self.scope.clone(),
        };
        self.processor.on_end(data);
    }

    /// Exports what is queued and stops the exporter; waits (off the async runtime) up to a
    /// few seconds for the collector.
    pub async fn shutdown(&self) {
        let processor = self.processor.clone();
        let stopped = tokio::task::spawn_blocking(move || {
            if let Err(error) = processor.force_flush() {
                tracing::warn!(error = %error, "Spans not exported");
            }
            processor.shutdown_with_timeout(Duration::from_secs(5))
        })
        .await;
        if let Ok(Err(error)) = stopped {
            tracing::debug!(error = %error, "Span exporter did not shut down cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_trace_urls() {
        let url = |e: &str| traces_url(e).ok();
        assert_eq!(
            url("http://127.0.0.1:4318").as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            url("https://c:4318/").as_deref(),
            Some("https://c:4318/v1/traces")
        );
        assert_eq!(
            url("http://c/v1/traces").as_deref(),
            Some("http://c/v1/traces")
        );
        for bad in ["", "c:4318", "grpc://c", "http://", "http:///x"] {
            assert!(url(bad).is_none(), "{bad}");
        }
    }
}
