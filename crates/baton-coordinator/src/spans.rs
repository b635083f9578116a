//! The coordinator's spans of a job: `job <plan>` → `step <id>` → `attempt <n>`, built with
//! deterministic ids (see `baton_otel::JobTrace`) and exported by the replica that makes the
//! transition ending each one, with start times from the job hash. Off (no endpoint), every
//! hook returns at once and no task carries a `traceparent`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use baton_otel::{JobTrace, KeyValue, SpanKind, SpanRecord, SpanSink, TraceParent, attr};
use baton_protocol::keys::field;
use baton_protocol::messages::{Failure, FailureClass, ResolveAction};
use baton_protocol::plan::{Plan, Step};
use uuid::Uuid;

use crate::clock::now_ms;
use crate::report::{AttemptInfo, usd};
use crate::store::{Store, Transition};
use baton_core::Outcome;

/// `service.name` of every coordinator replica.
const SERVICE: &str = "baton-coordinator";

/// The span exporter (when tracing is on) and the trace of recent jobs.
pub(crate) struct Spans {
    sink: Option<SpanSink>,
    /// The trace of a job, like the plan cache: derived from immutable state (the job id and
    /// the stored submitter's `traceparent`), reloaded from Redis on a miss.
    traces: quick_cache::sync::Cache<Uuid, JobTrace>,
}

/// The submitter's `traceparent` on a submit or enqueue message, if valid.
pub(crate) fn submitter(headers: Option<&HeaderMap>) -> Option<TraceParent> {
    headers?
        .get(baton_otel::TRACEPARENT)
        .and_then(|value| TraceParent::parse(value.as_str()))
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Spans {
    pub(crate) fn new(endpoint: Option<&str>) -> Result<Self, baton_otel::Error> {
        let sink = endpoint
            .map(|endpoint| SpanSink::new(endpoint, SERVICE))
            .transpose()?;
        Ok(Self {
            sink,
            traces: quick_cache::sync::Cache::new(10_000),
        })
    }

    /// Whether spans are exported (an OTLP endpoint is set).
    pub(crate) fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// A job was created (by this replica): remember its trace.
    pub(crate) fn created(&self, job: Uuid, submitter: Option<&TraceParent>) {
        if self.sink.is_some() {
            self.traces.insert(job, JobTrace::new(job, submitter));
        }
    }

    /// The job's trace, when tracing is on: from the cache, or from the job hash.
    async fn trace(&self, store: &Store, job: Uuid) -> Option<JobTrace> {
        self.sink.as_ref()?;
        if let Some(trace) = self.traces.get(&job) {
            return Some(trace);
        }
        let fields = store
            .job_fields(job, &[field::TRACE_PARENT.to_owned()])
            .await
            .ok()?;
        let submitter = fields
            .into_iter()
            .next()
            .flatten()
            .and_then(|value| TraceParent::parse(&value));
        let trace = JobTrace::new(job, submitter.as_ref());
        self.traces.insert(job, trace);
        Some(trace)
    }

    /// The `traceparent` of an attempt's task: the attempt span is the worker's parent.
    pub(crate) async fn task_header(
        &self,
        store: &Store,
        job: Uuid,
        step: &str,
        attempt: u32,
    ) -> Option<String> {
        let trace = self.trace(store, job).await?;
        Some(trace.task_parent(step, attempt).to_string())
    }

    fn export(&self, trace: &JobTrace, span: SpanRecord) {
        if let Some(sink) = &self.sink
            && trace.sampled()
        {
            sink.export(span);
        }
    }

    /// After `record`: ends the attempt span when its outcome counted, and the step span when
    /// the step succeeded.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn recorded(
        &self,
        store: &Store,
        job: Uuid,
        step: &Step,
        attempt: u32,
        outcome: &Result<String, Failure>,
        info: &AttemptInfo,
        cost_nanos: u64,
        transition: &Transition,
        now: u64,
    ) {
        if !matches!(
            transition.outcome,
            Outcome::Succeeded | Outcome::Retrying { .. } | Outcome::Escalated
        ) {
            return;
        }
        let Some(trace) = self.trace(store, job).await else {
            return;
        };
        let step_id = step.id.as_str();
        let mut attributes = common(job, step, attempt);
        let (name, error) = match outcome {
            Ok(_) => ("succeeded", None),
            Err(failure) => {
                let name = if failure.class == FailureClass::Timeout {
                    "timeout"
                } else {
                    "failed"
                };
                attributes.push(KeyValue::new(attr::FAILURE_CLASS, failure.class.as_str()));
                (name, Some(failure.message.clone()))
            }
        };
        attributes.push(KeyValue::new(attr::OUTCOME, name));
        if let Some(worker) = &info.worker {
            attributes.push(KeyValue::new(attr::WORKER, worker.clone()));
        }
        if let Some(usage) = &info.usage {
            attributes.extend(baton_otel::worker::gen_ai(baton_otel::worker::GenAiUsage {
                model: usage.model.as_deref(),
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
            }));
            attributes.push(KeyValue::new(attr::COST_USD, usd(cost_nanos)));
        }
        let started = transition.started;
        self.export(
            &trace,
            SpanRecord {
                trace_id: trace.trace_id(),
                span_id: trace.attempt_span(step_id, attempt),
                parent: Some((trace.step_span(step_id), false)),
                name: format!("attempt {attempt}"),
                kind: SpanKind::Producer,
                start: time(started.map_or(now, |s| s.attempt_ms)),
                end: time(now),
                attributes,
                error,
            },
        );
        if transition.outcome == Outcome::Succeeded {
            let started = started.map(|s| s.step_ms);
            self.step_ended(
                store,
                &trace,
                job,
                step,
                attempt,
                "succeeded",
                None,
                started,
                now,
            )
            .await;
        }
    }

    /// A human resolved an escalated step: `output` and `fail` end its span (`retry` starts
    /// another attempt under it).
    pub(crate) async fn resolved(
        &self,
        store: &Store,
        job: Uuid,
        step: &Step,
        attempt: u32,
        action: ResolveAction,
        reason: &str,
    ) {
        let (outcome, error) = match action {
            ResolveAction::Output => ("resolved", None),
            ResolveAction::Fail => ("failed", Some(reason.to_owned())),
            ResolveAction::Retry => return,
        };
        let Some(trace) = self.trace(store, job).await else {
            return;
        };
        self.step_ended(
            store,
            &trace,
            job,
            step,
            attempt,
            outcome,
            error,
            None,
            now_ms(),
        )
        .await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn step_ended(
        &self,
        store: &Store,
        trace: &JobTrace,
        job: Uuid,
        step: &Step,
        attempt: u32,
        outcome: &str,
        error: Option<String>,
        started_ms: Option<u64>,
        now: u64,
    ) {
        let step_id = step.id.as_str();
        let [input, output, cost, model] = field::step_usage(step_id);
        let fields = [field::step_started(step_id), input, output, cost, model];
        let values = store.job_fields(job, &fields).await.unwrap_or_default();
        let mut values = values.into_iter();
        let mut next = || values.next().flatten();
        let stored_start = next().and_then(|v| v.parse().ok());
        let mut attributes = common(job, step, attempt);
        attributes.push(KeyValue::new(attr::OUTCOME, outcome.to_owned()));
        attributes.extend(usage_attributes(next(), next(), next(), next()));
        self.export(
            trace,
            SpanRecord {
                trace_id: trace.trace_id(),
                span_id: trace.step_span(step_id),
                parent: Some((trace.job_span(), false)),
                name: format!("step {step_id}"),
                kind: SpanKind::Internal,
                start: time(started_ms.or(stored_start).unwrap_or(now)),
                end: time(now),
                attributes,
                error,
            },
        );
    }

    /// The job ended (succeeded, or failed by a human): ends the job span.
    pub(crate) async fn job_ended(&self, store: &Store, job: Uuid, plan: &Plan, status: &str) {
        let Some(trace) = self.trace(store, job).await else {
            return;
        };
        let now = now_ms();
        let fields = [
            field::CREATED,
            field::ERROR,
            field::USAGE_INPUT,
            field::USAGE_OUTPUT,
            field::USAGE_COST,
        ]
        .map(str::to_owned);
        let values = store.job_fields(job, &fields).await.unwrap_or_default();
        let mut values = values.into_iter();
        let mut next = || values.next().flatten();
        let created = next().and_then(|v| v.parse().ok()).unwrap_or(now);
        let error = next().filter(|e| !e.is_empty() && status != "succeeded");
        let mut attributes = vec![
            KeyValue::new(attr::JOB_ID, job.to_string()),
            KeyValue::new(attr::OUTCOME, status.to_owned()),
        ];
        if let Some(name) = plan.name() {
            attributes.push(KeyValue::new(attr::PLAN, name.to_owned()));
        }
        attributes.extend(usage_attributes(next(), next(), next(), None));
        self.export(
            &trace,
            SpanRecord {
                trace_id: trace.trace_id(),
                span_id: trace.job_span(),
                parent: trace.parent().map(|span| (span, true)),
                name: match plan.name() {
                    Some(name) => format!("job {name}"),
                    None => "job".to_owned(),
                },
                kind: SpanKind::Internal,
                start: time(created),
                end: time(now),
                attributes,
                error: error.or_else(|| (status != "succeeded").then(|| status.to_owned())),
            },
        );
    }

    /// Exports what is queued (on shutdown).
    pub(crate) async fn shutdown(&self) {
        if let Some(sink) = &self.sink {
            sink.shutdown().await;
        }
    }
}

/// The attributes every step and attempt span has.
fn common(job: Uuid, step: &Step, attempt: u32) -> Vec<KeyValue> {
    vec![
        KeyValue::new(attr::JOB_ID, job.to_string()),
        KeyValue::new(attr::STEP_ID, step.id.to_string()),
        KeyValue::new(attr::AGENT, step.agent().to_string()),
        KeyValue::new(attr::ATTEMPT, i64::from(attempt)),
    ]
}

/// Usage totals stored in the job hash (tokens, nano-dollars, model), as span attributes;
/// nothing when no usage was ever recorded.
fn usage_attributes(
    input: Option<String>,
    output: Option<String>,
    cost: Option<String>,
    model: Option<String>,
) -> Vec<KeyValue> {
    if input.is_none() && output.is_none() && cost.is_none() && model.is_none() {
        return Vec::new();
    }
    let number = |raw: Option<String>| raw.and_then(|r| r.parse::<u64>().ok()).unwrap_or(0);
    let mut attributes = vec![
        KeyValue::new(attr::INPUT_TOKENS, int(number(input))),
        KeyValue::new(attr::OUTPUT_TOKENS, int(number(output))),
        KeyValue::new(attr::COST_USD, usd(number(cost))),
    ];
    if let Some(model) = model {
        attributes.push(KeyValue::new(attr::REQUEST_MODEL, model));
    }
    attributes
}
