//! The orchestration logic shared by every entry point: starting jobs, applying the outcome
//! of a Redis transition (events, dispatch, retries, dead-letters, escalation) and building
//! each step's input.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use backon::{ExponentialBuilder, Retryable};
use baton_protocol::ErrorCode;
use baton_protocol::keys::{self, TimerKind, TimerMember};
use baton_protocol::messages::{
    AttemptReport, DeadLetter, DeadLetterReason, Event, EventKind, Failure, FailureClass,
    JobStatus, MAX_IDEMPOTENCY_KEY_LEN, SubmitRequest, Task, Usage, UsageTotals,
};
use baton_protocol::plan::{Plan, Step};
use baton_protocol::{AgentName, Encoding, codec, subject};
use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::clock::now_ms;
use crate::decisions::DecisionLog;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::options::Options;
use crate::report::{AttemptInfo, usage_totals, usd};
use crate::spans::Spans;
use crate::store::{self, Store, Transition};
use baton_core::{Cause, Outcome};

/// A mapping whose job does not exist is taken to be stale once it is this old: a job is
/// created within milliseconds of its mapping, or its creator died and a retry may finish it.
const STALE_MAPPING: Duration = Duration::from_secs(60);

/// Distinct submitted plans kept validated, and the largest kept (its JSON): at most
/// 4 MiB of plan text.
const SUBMITTED_PLANS: usize = 256;
const SUBMITTED_PLAN_MAX_BYTES: usize = 16 * 1024;

/// Times one cause is decided again on a newer revision of the job's plan before the caller
/// gets `PlanChanged` back (a plan grows once per planner or loop step: more in a row is a
/// plan growing faster than it can be decided on).
const MAX_PLAN_RELOADS: u32 = 4;

/// State shared by all of a replica's loops. Holds no job state: the plan cache holds each
/// job's plan at the revision last seen, loaded from Redis on a miss; a decision guards the
/// revision it was taken on, so a stale entry is found and replaced, never decided on.
pub(crate) struct Engine {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) store: Store,
    pub(crate) options: Options,
    plans: quick_cache::sync::Cache<Uuid, Arc<Plan>>,
    /// Validated plans by the JSON they were submitted as.
    submitted: quick_cache::sync::Cache<String, Arc<Plan>>,
    /// Wakes the timer loop when this replica schedules a timer earlier than it planned to
    /// look next.
    pub(crate) timer_wake: Notify,
    pub(crate) next_timer: AtomicU64,
    log: DecisionLog,
    /// Prometheus metrics, derived from the events this replica publishes.
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) spans: Spans,
}

impl Engine {
    pub(crate) fn new(
        client: async_nats::Client,
        store: Store,
        log: DecisionLog,
        options: Options,
        spans: Spans,
    ) -> Self {
        let js = jetstream::new(client.clone());
        Self {
            client,
            js,
            store,
            options,
            plans: quick_cache::sync::Cache::new(10_000),
            submitted: quick_cache::sync::Cache::new(SUBMITTED_PLANS),
            timer_wake: Notify::new(),
            next_timer: AtomicU64::new(u64::MAX),
            log,
            metrics: Arc::new(Metrics::new()),
            spans,
        }
    }

    /// Validates a submission and starts its job; returns the job id and whether it already
    /// existed (same idempotency key). Nothing is published unless the plan is valid.
    /// `traceparent` is the submitter's trace context, if it sent one.
    pub(crate) async fn submit(
        &self,
        request: SubmitRequest,
        enqueued: Option<String>,
        traceparent: Option<baton_otel::TraceParent>,
    ) -> Result<(Uuid, bool), ApiError> {
        let limits = &self.options.limits;
        codec::check_depth(&request.input, limits.max_depth)?;
        let plan = self.validated(request.plan)?;
        if let Some(key) = &request.idempotency_key {
            check_idempotency_key(key)?;
        }
        // The mapping that makes this submission idempotent: the submitter's key, or for a
        // durable submission without one, its place in the stream.
        let mapping = request
            .idempotency_key
            .as_deref()
            .map(keys::idempotency)
            .or(enqueued);
        let input = serde_json::to_string(&request.input)
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?;
        if request.deadline_ms == Some(0) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "deadline_ms must be at least 1",
            ));
        }
        let start = Start {
            reused: Vec::new(),
            source: None,
            traceparent,
            deadline_ms: request.deadline_ms,
        };
        self.start(plan, &input, mapping, start).await
    }

    /// Validates a submitted plan, once per distinct plan: submitters send the same plans
    /// again and again, and validating one (parsing, checking the graph, compiling schemas)
    /// costs more than the lookup, which compares the plan's exact JSON.
    fn validated(&self, submitted: serde_json::Value) -> Result<Arc<Plan>, ApiError> {
        let limits = &self.options.limits;
        let key = serde_json::to_string(&submitted).ok();
        if let Some(key) = &key
            && let Some(plan) = self.submitted.get(key)
        {
            return Ok(plan);
        }
        let plan = Arc::new(Plan::from_value(submitted, limits)?);
        if let Some(key) = key
            && key.len() <= SUBMITTED_PLAN_MAX_BYTES
        {
            self.submitted.insert(key, plan.clone());
        }
        Ok(plan)
    }

    /// Starts a new job from a finished or running one: the same plan and input, with the
    /// recorded outputs of every step that is neither `from` nor downstream of it.
    pub(crate) async fn rerun(
        &self,
        request: baton_protocol::messages::RerunRequest,
    ) -> Result<(Uuid, bool), ApiError> {
        if let Some(key) = &request.idempotency_key {
            check_idempotency_key(key)?;
        }
        let source = request.job_id;
        let not_found = || {
            ApiError::new(
                ErrorCode::NotFound,
                format!("job {source} does not exist (or its retention ended)"),
            )
        };
        let plan = self
            .plan_with(source, &request.from)
            .await?
            .ok_or_else(not_found)?;
        if plan.step(&request.from).is_none() {
            return Err(ApiError::new(
                ErrorCode::UnknownStep,
                format!("job {source} has no step {:?}", request.from),
            ));
        }
        let live = plan.downstream(&request.from);
        let reused: Vec<&Step> = plan
            .steps()
            .iter()
            .filter(|step| !live.contains(step.id.as_str()))
            .collect();
        let mut fields = vec![keys::field::INPUT.to_owned()];
        for step in &reused {
            fields.push(keys::field::step_status(step.id.as_str()));
            fields.push(keys::field::step_output(step.id.as_str()));
        }
        let mut values = self.store.job_fields(source, &fields).await?.into_iter();
        let input = values.next().flatten().ok_or_else(not_found)?;
        let mut outputs = Vec::with_capacity(reused.len());
        for step in &reused {
            let status = values.next().flatten();
            let output = values.next().flatten();
            match (status.as_deref(), output) {
                (Some("succeeded"), Some(output)) => outputs.push((step.id.to_string(), output)),
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::NotReusable,
                        format!(
                            "step {} of job {source} has no output to reuse ({}); rerun from an earlier step",
                            step.id,
                            status.as_deref().unwrap_or("unknown"),
                        ),
                    ));
                }
            }
        }
        let mapping = request.idempotency_key.as_deref().map(keys::idempotency);
        let start = Start {
            reused: outputs,
            source: Some(source),
            traceparent: None,
            deadline_ms: None,
        };
        self.start(plan, &input, mapping, start).await
    }

    /// Creates a job (idempotently, under `mapping`) and publishes its first tasks.
    async fn start(
        &self,
        plan: Arc<Plan>,
        input: &str,
        mapping: Option<String>,
        start: Start,
    ) -> Result<(Uuid, bool), ApiError> {
        let Start {
            reused,
            source,
            traceparent,
            deadline_ms,
        } = start;
        let mut job = Uuid::now_v7();
        if let Some(mapping) = &mapping {
            let (owner, age) = self.store.claim_idempotency(mapping, job).await?;
            if owner != job {
                if self.store.job_exists(owner).await? || age < STALE_MAPPING {
                    // Another submit holds the key. Its job may be half-created if that
                    // coordinator died; creating is idempotent, so finish it with that id.
                    job = owner;
                } else {
                    // The mapping outlived its job (retention ended before the mapping's
                    // own TTL): the key is free again.
                    job = self.store.replace_idempotency(mapping, owner, job).await?;
                }
            }
        }
        let now = now_ms();
        let stored_traceparent = traceparent.map(|t| t.to_string());
        let stored_plan = serde_json::to_string(plan.spec())
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        let cause = Cause::Submitted(baton_core::NewJob {
            plan: &stored_plan,
            input,
            idempotency_key: mapping.as_deref(),
            traceparent: stored_traceparent.as_deref(),
            reused: &reused,
            deadline: deadline_ms.map(|ms| now.saturating_add(ms)),
        });
        let transition = self.handle(job, &plan, &cause, now).await?;
        if transition.outcome == Outcome::Exists {
            return Ok((job, true));
        }
        self.spans.created(job, traceparent.as_ref());
        self.plans.insert(job, plan.clone());
        self.event_at(
            job,
            now,
            EventKind::JobCreated {
                plan: plan.name().map(str::to_owned),
                steps: plan.steps().len(),
            },
        )
        .await;
        if let Some(source) = source {
            for (step_id, _) in &reused {
                self.event_at(
                    job,
                    now,
                    EventKind::StepReused {
                        step_id: step_id.clone(),
                        source_job: source,
                    },
                )
                .await;
            }
        }
        self.apply(job, transition).await;
        Ok((job, false))
    }

    /// The plan grown by a planner's output (its `"plan"`), and that plan as stored; or why
    /// the sub-plan was rejected.
    pub(crate) fn expansion(
        &self,
        plan: &Plan,
        step: &Step,
        output: &str,
    ) -> Result<(Arc<Plan>, String), String> {
        let value: serde_json::Value =
            serde_json::from_str(output).map_err(|e| format!("sub-plan rejected: {e}"))?;
        let Some(sub) = value.get("plan") else {
            return Err("a planner's output must hold \"plan\", its sub-plan".to_owned());
        };
        let grown = plan
            .expand(step.id.as_str(), sub, &self.options.limits)
            .map_err(|e| format!("sub-plan rejected ({}): {e}", e.code().as_str()))?;
        let stored = serde_json::to_string(grown.spec()).map_err(|e| e.to_string())?;
        Ok((Arc::new(grown), stored))
    }

    /// Cancels a job (a request, or its deadline timer): every step not done ends
    /// `cancelled`, running attempts are told to stop, and the job ends.
    pub(crate) async fn cancel(
        &self,
        job: Uuid,
        reason: Option<&str>,
        by: Option<&str>,
        deadline: Option<u64>,
    ) -> Result<Transition, ApiError> {
        let Some(plan) = self.plan(job).await? else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("job {job} does not exist (or its retention ended)"),
            ));
        };
        let cause = Cause::Cancel { reason, deadline };
        let transition = self.handle(job, &plan, &cause, now_ms()).await?;
        if transition.outcome == Outcome::Cancelled {
            let plan = transition.plan.clone();
            for (step_id, attempt) in &transition.cancelled {
                if let (Some(attempt), Some(step)) = (attempt, plan.step(step_id)) {
                    let notice = baton_protocol::messages::CancelNotice {
                        job_id: job,
                        step_id: step_id.clone(),
                        attempt: *attempt,
                    };
                    let payload = Bytes::from(serde_json::to_vec(&notice).unwrap_or_default());
                    if let Err(error) = self
                        .client
                        .publish(subject::cancel(step.agent()), payload)
                        .await
                    {
                        tracing::warn!(job = %job, step = %step_id, error = %error, "Cancel notice not published");
                    }
                }
                self.event_at(
                    job,
                    transition.now,
                    EventKind::StepCancelled {
                        step_id: step_id.clone(),
                        attempt: *attempt,
                    },
                )
                .await;
                if let Some(step) = plan.step(step_id) {
                    let id = keys::escalation_id(job, step.id.as_str());
                    if let Err(error) = self.store.unindex_escalation(&id).await {
                        tracing::debug!(job = %job, error = %error, "Escalation index entry kept");
                    }
                }
            }
            if deadline.is_none() {
                // The job's end for a cancel; a deadline's is `job_failed`, from `apply`.
                let usage = transition
                    .ending
                    .as_ref()
                    .and_then(|e| usage_totals(e.ui.clone(), e.uo.clone(), e.uc.clone(), None));
                self.event_at(
                    job,
                    transition.now,
                    EventKind::JobCancelled {
                        reason: reason.map(str::to_owned),
                        by: by.map(str::to_owned),
                        usage,
                    },
                )
                .await;
            }
        }
        self.apply(job, transition.clone()).await;
        Ok(transition)
    }

    /// The plan of a job: from the cache, or loaded from Redis.
    pub(crate) async fn plan(&self, job: Uuid) -> Result<Option<Arc<Plan>>, ApiError> {
        if let Some(plan) = self.plans.get(&job) {
            return Ok(Some(plan));
        }
        Ok(self.load_plan(job).await?)
    }

    /// The plan of a job that should have `step`: the cached plan, or the stored one when
    /// the cached one lacks the step (the plan grew since it was cached).
    pub(crate) async fn plan_with(
        &self,
        job: Uuid,
        step: &str,
    ) -> Result<Option<Arc<Plan>>, ApiError> {
        self.plan_unless_older(job, |plan| plan.step(step).is_some())
            .await
    }

    /// The plan of a job at `revision` or later (a revision read with the job's state): the
    /// cached plan, or the stored one when the cached one is older.
    pub(crate) async fn plan_at(
        &self,
        job: Uuid,
        revision: u32,
    ) -> Result<Option<Arc<Plan>>, ApiError> {
        self.plan_unless_older(job, |plan| plan.revision() >= revision)
            .await
    }

    /// The cached plan if `current` holds for it, else the stored one.
    async fn plan_unless_older(
        &self,
        job: Uuid,
        current: impl FnOnce(&Plan) -> bool,
    ) -> Result<Option<Arc<Plan>>, ApiError> {
        match self.plan(job).await? {
            Some(plan) if current(&plan) => Ok(Some(plan)),
            Some(_) => Ok(self.load_plan(job).await?),
            None => Ok(None),
        }
    }

    /// The job's plan as stored now, at its revision; replaces the cached one.
    async fn load_plan(&self, job: Uuid) -> Result<Option<Arc<Plan>>, store::Error> {
        let fields = self
            .store
            .job_fields(
                job,
                &[
                    keys::field::PLAN.to_owned(),
                    keys::field::PLAN_REVISION.to_owned(),
                ],
            )
            .await?;
        let mut fields = fields.into_iter();
        let Some(raw) = fields.next().flatten() else {
            return Ok(None);
        };
        let revision = fields
            .next()
            .flatten()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1);
        // Stored plans were validated when submitted (or grown); validating again under the
        // current limits is cheap and keeps one code path.
        let mut limits = self.options.limits;
        limits.max_steps = limits.max_steps.max(100_000);
        let plan = Plan::from_stored(&raw, &limits)
            .map_err(|e| store::Error::Plan(e.to_string()))?
            .at_revision(revision);
        let plan = Arc::new(plan);
        self.plans.insert(job, plan.clone());
        Ok(Some(plan))
    }

    /// Records one attempt's outcome and acts on it.
    pub(crate) async fn record(
        &self,
        job: Uuid,
        plan: &Arc<Plan>,
        step: &Step,
        attempt: u32,
        outcome: Result<String, Failure>,
        info: AttemptInfo,
    ) -> Result<Transition, store::Error> {
        let now = now_ms();
        // A planner's output holds its sub-plan: accepted, it grows the job's plan; rejected,
        // the attempt failed (class invalid_output: the planner's retry policy applies).
        let mut outcome = outcome;
        let expansion = match (&step.expand, &outcome) {
            (Some(_), Ok(output)) => match self.expansion(plan, step, output) {
                Ok(grown) => Some(grown),
                Err(message) => {
                    outcome = Err(Failure {
                        message,
                        class: FailureClass::InvalidOutput,
                        retryable: true,
                    });
                    None
                }
            },
            _ => None,
        };
        let cost_nanos = info
            .usage
            .as_ref()
            .map_or(0, |usage| self.options.cost_nanos(usage));
        let delay_ms = step.retry.delay_ms(attempt, rand::random::<f64>());
        let failure_json = outcome
            .as_ref()
            .err()
            .map(|failure| serde_json::to_string(failure).unwrap_or_default());
        let cause = match (&outcome, failure_json.as_deref()) {
            (Err(failure), Some(json)) if failure.class == FailureClass::Timeout => {
                Cause::TimedOut {
                    step: step.id.as_str(),
                    attempt,
                    failure: json,
                    retry_delay_ms: delay_ms,
                }
            }
            (Err(failure), json) => Cause::Result {
                step: step.id.as_str(),
                attempt,
                outcome: baton_core::Attempt::Failed {
                    failure: json.unwrap_or_default(),
                    retryable: failure.retryable,
                    retry_delay_ms: delay_ms,
                },
                usage: core_usage(info.usage.as_ref(), cost_nanos),
            },
            (Ok(output), _) => match &expansion {
                Some((grown, stored)) => Cause::Expand {
                    step: step.id.as_str(),
                    attempt,
                    output,
                    plan: grown,
                    stored,
                    usage: core_usage(info.usage.as_ref(), cost_nanos),
                },
                None => Cause::Result {
                    step: step.id.as_str(),
                    attempt,
                    outcome: baton_core::Attempt::Succeeded { output },
                    usage: core_usage(info.usage.as_ref(), cost_nanos),
                },
            },
        };
        let transition = self.handle(job, plan, &cause, now).await?;
        // Span work is boxed so that, with tracing off, it adds nothing to the size of this
        // future, which every result's task moves around.
        if self.spans.enabled() {
            Box::pin(self.spans.recorded(
                &self.store,
                job,
                step,
                attempt,
                &outcome,
                &info,
                cost_nanos,
                &transition,
                now,
            ))
            .await;
        }
        let report = || AttemptReport {
            latency_ms: transition
                .started
                .map(|started| now.saturating_sub(started.attempt_ms)),
            duration_ms: info.duration_ms,
            usage: info.usage.as_ref().map(|usage| UsageTotals {
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cost_usd: usd(cost_nanos),
                model: usage.model.clone(),
            }),
            worker: info.worker.clone(),
        };
        match &transition.outcome {
            Outcome::Succeeded => {
                self.event_at(
                    job,
                    now,
                    EventKind::StepSucceeded {
                        step_id: step.id.to_string(),
                        attempt,
                        human: false,
                        report: report(),
                    },
                )
                .await;
            }
            Outcome::Expanded { steps, .. } => {
                let output = outcome
                    .as_ref()
                    .ok()
                    .and_then(|raw| serde_json::from_str(raw).ok())
                    .unwrap_or_default();
                self.event_at(
                    job,
                    now,
                    EventKind::StepExpanded {
                        step_id: step.id.to_string(),
                        attempt,
                        steps: *steps,
                        output,
                    },
                )
                .await;
            }
            Outcome::Iterated { back_to, iteration } => {
                // The attempt succeeded (replay takes its cause from this), and the loop
                // goes round again.
                self.event_at(
                    job,
                    now,
                    EventKind::StepSucceeded {
                        step_id: step.id.to_string(),
                        attempt,
                        human: false,
                        report: report(),
                    },
                )
                .await;
                self.event_at(
                    job,
                    now,
                    EventKind::LoopIterated {
                        step_id: step.id.to_string(),
                        attempt,
                        back_to: back_to.clone(),
                        iteration: *iteration,
                        outputs: transition
                            .loop_outputs
                            .iter()
                            .map(|(id, raw)| {
                                (id.clone(), serde_json::from_str(raw).unwrap_or_default())
                            })
                            .collect(),
                    },
                )
                .await;
            }
            Outcome::Retrying { .. } | Outcome::Escalated => {
                // A loop may have made a failure of a successful attempt.
                let outcome = match (&transition.failure, outcome) {
                    (Some(failure), _) => Err(failure.clone()),
                    (None, outcome) => outcome,
                };
                let class = outcome.as_ref().err().map(|failure| failure.class);
                if let Err(failure) = outcome {
                    self.event_at(
                        job,
                        now,
                        EventKind::StepFailed {
                            step_id: step.id.to_string(),
                            attempt,
                            error: failure,
                            report: report(),
                        },
                    )
                    .await;
                }
                if let Outcome::Retrying { next_attempt } = transition.outcome {
                    self.event_at(
                        job,
                        now,
                        EventKind::RetryScheduled {
                            step_id: step.id.to_string(),
                            attempt: next_attempt,
                            delay_ms,
                            class,
                        },
                    )
                    .await;
                } else {
                    // Boxed: rare, and its future is large.
                    Box::pin(self.escalated(job, plan, step, attempt)).await;
                }
            }
            _ => {}
        }
        self.apply(job, transition.clone()).await;
        Ok(transition)
    }

    /// The one entry into a transition, for every cause: consumers, API handlers, the timer
    /// loop and the reconciler. Reads, decides (`baton_core::decide`) and applies in the
    /// store, then counts conflicts and wakes the timer loop for the timers it scheduled.
    /// The caller's executor (`record`, `apply`) performs the rest of the effects.
    pub(crate) async fn handle(
        &self,
        job: Uuid,
        plan: &Arc<Plan>,
        cause: &Cause<'_>,
        now: u64,
    ) -> Result<Transition, store::Error> {
        let mut plan = plan.clone();
        let mut reloads = 0;
        loop {
            let result = self.store.transition(job, &plan, cause, now).await;
            let conflicts = match &result {
                Ok(transition) => transition.conflicts,
                Err(store::Error::Conflict(_)) => crate::store::MAX_TRIES,
                Err(_) => 0,
            };
            if conflicts > 0 {
                self.metrics.conflicts(conflicts);
            }
            let transition = result?;
            if let Outcome::PlanChanged { .. } = transition.outcome {
                // Another replica grew the plan: decide again on the revision stored now. A
                // plan that keeps changing is a conflict: the cause is retried later (a
                // result is redelivered, a timer fires again), never dropped.
                if reloads == MAX_PLAN_RELOADS {
                    self.metrics.conflicts(1);
                    return Err(store::Error::Conflict(job));
                }
                reloads += 1;
                match self.load_plan(job).await? {
                    Some(stored) => {
                        plan = stored;
                        continue;
                    }
                    None => return Ok(transition),
                }
            }
            if let Outcome::Grown { .. } | Outcome::Expanded { .. } = transition.outcome {
                // Every later cause of this job is decided on the grown plan.
                self.plans.insert(job, transition.plan.clone());
            }
            self.note_timers(transition.timers.iter().copied());
            return Ok(transition);
        }
    }

    /// Publishes what a transition started, and the job's end.
    pub(crate) async fn apply(&self, job: Uuid, transition: Transition) {
        let plan = &transition.plan.clone();
        let job_ended = matches!(
            transition.status,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        );
        for planner in &transition.completed {
            self.event_at(
                job,
                transition.now,
                EventKind::SubPlanSucceeded {
                    step_id: planner.clone(),
                },
            )
            .await;
        }
        for skip in &transition.skipped {
            self.event_at(
                job,
                transition.now,
                EventKind::StepSkipped {
                    step_id: skip.step.clone(),
                    reason: skip.reason,
                    router: skip.router.clone(),
                },
            )
            .await;
        }
        if !transition.dispatch.is_empty() {
            let input = transition.input.as_str();
            let publishes = transition
                .dispatch
                .iter()
                .map(|item| self.dispatch(job, plan, input, item, transition.now));
            futures::future::join_all(publishes).await;
        }
        let changed = transition.outcome.changed();
        if changed
            && job_ended
            && let Some(ending) = transition.ending
        {
            if let Some(mapping) = &ending.idem
                && let Err(error) = self.store.retire_idempotency(mapping).await
            {
                tracing::warn!(job = %job, error = %error, "Idempotency mapping keeps its longer TTL");
            }
            let usage = usage_totals(ending.ui, ending.uo, ending.uc, None);
            if self.spans.enabled() {
                Box::pin(
                    self.spans
                        .job_ended(&self.store, job, plan, transition.status.as_str()),
                )
                .await;
            }
            match transition.status {
                JobStatus::Succeeded => self.event(job, EventKind::JobSucceeded { usage }).await,
                // Announced by `cancel`, which knows who cancelled and why.
                JobStatus::Cancelled => {}
                _ => {
                    let error = ending.error.unwrap_or_default();
                    self.event(job, EventKind::JobFailed { error, usage }).await
                }
            }
        }
    }

    /// Publishes one attempt's task. An attempt whose task cannot be built or is too large
    /// fails without retry; one whose publish fails is left to the reconciler.
    /// The dispatch event is dated `decided`, when the transition started the attempt:
    /// never after the attempt's outcome, however fast the agent answers.
    async fn dispatch(
        &self,
        job: Uuid,
        plan: &Arc<Plan>,
        job_input: &str,
        item: &store::Dispatch,
        decided: u64,
    ) {
        let Some(step) = plan.step(&item.step) else {
            return;
        };
        if let Some(message) = &item.fail {
            // The step's condition could not be evaluated on the recorded outputs: the same
            // outputs give the same error, so the attempt fails without retry.
            let failure = Failure {
                message: message.clone(),
                class: FailureClass::InvalidOutput,
                retryable: false,
            };
            self.fail_unpublished(job, plan, step, item.attempt, failure)
                .await;
            return;
        }
        let deadline_ms = now_ms() + step.timeout_ms;
        let (payload, input) = match self.build_task(job, step, job_input, item, deadline_ms) {
            Ok(built) => built,
            Err(message) => {
                tracing::warn!(job = %job, step = %step.id, attempt = item.attempt, error = %message, "Cannot build task");
                let failure = Failure {
                    message,
                    class: FailureClass::Invalid,
                    retryable: false,
                };
                self.fail_unpublished(job, plan, step, item.attempt, failure)
                    .await;
                return;
            }
        };
        let msg_id = subject::task_msg_id(job, &step.id, item.attempt);
        match self
            .publish_task(job, step, item.attempt, payload, &msg_id)
            .await
        {
            Ok(_) => {
                self.event_at(
                    job,
                    decided,
                    EventKind::StepDispatched {
                        step_id: step.id.to_string(),
                        agent: step.agent().to_string(),
                        attempt: item.attempt,
                        input_bytes: Some(input.bytes),
                        input_sha256: Some(input.sha256),
                    },
                )
                .await
            }
            Err(error) => tracing::warn!(
                job = %job, step = %step.id, attempt = item.attempt, error = %error,
                "Task publish failed; the reconciler will publish it again"
            ),
        }
    }

    /// The task message of one attempt, within the payload limit, and what the decision log
    /// keeps of its input.
    pub(crate) fn build_task(
        &self,
        job: Uuid,
        step: &Step,
        job_input: &str,
        item: &store::Dispatch,
        deadline_ms: u64,
    ) -> Result<(Bytes, InputDigest), String> {
        let input = step_input(step, job_input, item)?;
        let digest = InputDigest::of(input.get());
        let task = Task {
            job_id: job,
            step_id: item.step.clone(),
            attempt: item.attempt,
            agent: step.agent().to_string(),
            input,
            deadline_ms,
        };
        let payload = serde_json::to_vec(&task).map_err(|e| e.to_string())?;
        let limit = self.options.limits.max_payload_bytes;
        if payload.len() > limit {
            return Err(format!(
                "the task for attempt {} is {} bytes; the payload limit is {limit}",
                item.attempt,
                payload.len(),
            ));
        }
        Ok((Bytes::from(payload), digest))
    }

    /// Publishes a task and waits for the broker to store it, retrying briefly. Within the
    /// stream's duplicate window, a second publish with the same `msg_id` stores nothing and
    /// is acknowledged with the first copy's sequence. With tracing on, the task's
    /// `traceparent` names the attempt's span.
    pub(crate) async fn publish_task(
        &self,
        job: Uuid,
        step: &Step,
        attempt: u32,
        payload: Bytes,
        msg_id: &str,
    ) -> Result<jetstream::publish::PublishAck, async_nats::Error> {
        let subject = subject::tasks(step.agent());
        let traceparent = if self.spans.enabled() {
            Box::pin(
                self.spans
                    .task_header(&self.store, job, step.id.as_str(), attempt),
            )
            .await
        } else {
            None
        };
        let publish = || async {
            let mut message = PublishMessage::build()
                .payload(payload.clone())
                .message_id(msg_id);
            if let Some(traceparent) = &traceparent {
                message = message.header(baton_otel::TRACEPARENT, traceparent.as_str());
            }
            let ack = self.js.send_publish(subject.clone(), message).await?;
            ack.await.map_err(async_nats::Error::from)
        };
        publish
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_times(4),
            )
            .await
    }

    /// Records the failure of an attempt that was never published.
    async fn fail_unpublished(
        &self,
        job: Uuid,
        plan: &Arc<Plan>,
        step: &Step,
        attempt: u32,
        failure: Failure,
    ) {
        // Boxed: recording can dispatch again, which makes this recursive.
        let record = Box::pin(self.record(
            job,
            plan,
            step,
            attempt,
            Err(failure),
            AttemptInfo::default(),
        ));
        if let Err(error) = record.await {
            tracing::error!(job = %job, step = %step.id, error = %error, "Could not record a failed dispatch");
        }
    }

    /// After a step escalated: dead-letter its last task and announce the escalation.
    async fn escalated(&self, job: Uuid, plan: &Plan, step: &Step, attempt: u32) {
        let escalation_id = keys::escalation_id(job, step.id.as_str());
        let input = self
            .current_input(job, step)
            .await
            .unwrap_or(serde_json::Value::Null);
        let fields = self
            .store
            .job_fields(job, &[keys::field::step_error(step.id.as_str())])
            .await;
        let error: Option<Failure> = fields
            .ok()
            .and_then(|f| f.into_iter().next().flatten())
            .and_then(|raw| serde_json::from_str(&raw).ok());
        let reason = DeadLetterReason::of(error.as_ref());
        let letter = DeadLetter {
            agent: step.agent().to_string(),
            attempt,
            error,
            escalation_id: escalation_id.clone(),
            input,
            job_id: job,
            plan: plan.name().map(str::to_owned),
            step_id: step.id.to_string(),
        };
        let mut headers = HeaderMap::new();
        headers.insert(subject::header::DLQ_REASON, reason.as_str());
        headers.insert(
            "Nats-Msg-Id",
            subject::dlq_msg_id(job, &step.id, attempt).as_str(),
        );
        let payload = Bytes::from(serde_json::to_vec(&letter).unwrap_or_default());
        let stored = match self
            .js
            .publish_with_headers(subject::dlq(step.agent()), headers, payload)
            .await
        {
            Ok(ack) => ack.await.map_err(async_nats::Error::from),
            Err(error) => Err(error.into()),
        };
        match stored {
            Ok(_) => {
                self.event(
                    job,
                    EventKind::StepDeadLettered {
                        step_id: step.id.to_string(),
                        attempt,
                        agent: step.agent().to_string(),
                        reason: reason.as_str().to_owned(),
                    },
                )
                .await
            }
            Err(error) => {
                tracing::warn!(job = %job, step = %step.id, error = %error, "Dead letter not stored")
            }
        }
        tracing::warn!(job = %job, step = %step.id, attempt, escalation = %escalation_id, "Step escalated to a human");
        self.event(
            job,
            EventKind::StepEscalated {
                step_id: step.id.to_string(),
                attempt,
                escalation_id,
            },
        )
        .await;
    }

    /// The input the step's current attempt gets (for inspection, dead letters and retries).
    pub(crate) async fn current_input(
        &self,
        job: Uuid,
        step: &Step,
    ) -> Result<serde_json::Value, ApiError> {
        let (job_input, item) = self.dispatch_item(job, step, 0).await?;
        let raw = step_input(step, &job_input, &item)
            .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
        serde_json::from_str(raw.get())
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
    }

    /// What publishing `attempt` of `step` again needs, read from the job: the job input and
    /// the step's input override and needs' outputs.
    pub(crate) async fn dispatch_item(
        &self,
        job: Uuid,
        step: &Step,
        attempt: u32,
    ) -> Result<(String, store::Dispatch), ApiError> {
        let mut fields = vec![
            keys::field::INPUT.to_owned(),
            keys::field::step_input(step.id.as_str()),
            keys::field::step_loop_input(step.id.as_str()),
        ];
        fields.extend(
            step.needs
                .iter()
                .map(|n| keys::field::step_output(n.as_str())),
        );
        let values = self.store.job_fields(job, &fields).await?;
        let mut values = values.into_iter();
        let job_input = values.next().flatten().unwrap_or_else(|| "null".into());
        let input_override = values.next().flatten();
        let loop_input = values.next().flatten();
        let item = store::Dispatch {
            step: step.id.to_string(),
            attempt,
            input_override,
            needs: values.collect(),
            fail: None,
            loop_input,
        };
        Ok((job_input, item))
    }

    /// Publishes an event on `baton.events.<job>` (core NATS: live observers, no storage).
    /// Publishing only queues the message on the connection; it does not wait for the server.
    pub(crate) async fn event(&self, job: Uuid, kind: EventKind) {
        self.event_at(job, now_ms(), kind).await;
    }

    /// Publishes an event about a job that has already ended (a result its end fenced): the
    /// job's log keeps the retention the end gave it, whichever replica appends this.
    pub(crate) async fn event_after_end(&self, job: Uuid, kind: EventKind) {
        self.publish_event(job, now_ms(), kind, true).await;
    }

    /// Publishes an event stamped with the time its transition was decided (the `now` the
    /// script ran with), which is what delays and deadlines are measured from.
    pub(crate) async fn event_at(&self, job: Uuid, ts_ms: u64, kind: EventKind) {
        self.publish_event(job, ts_ms, kind, false).await;
    }

    /// Publishes an event and appends it to the job's log; `after_end`: the job ended before
    /// it.
    async fn publish_event(&self, job: Uuid, ts_ms: u64, kind: EventKind, after_end: bool) {
        self.metrics.observe(&kind, self.plans.get(&job).as_deref());
        let event = Event {
            job_id: job,
            ts_ms,
            kind,
        };
        let Ok(entry) = serde_json::to_vec(&event) else {
            return;
        };
        let payload = Bytes::from(entry);
        let ended = matches!(
            event.kind,
            EventKind::JobSucceeded { .. }
                | EventKind::JobFailed { .. }
                | EventKind::JobCancelled { .. }
        );
        self.log.append(job, payload.clone(), ended || after_end);
        if ended
            && let Err(error) = self
                .client
                .publish(subject::ended(job), payload.clone())
                .await
        {
            tracing::debug!(job = %job, error = %error, "Job end not published");
        }
        if let Err(error) = self.client.publish(subject::events(job), payload).await {
            tracing::debug!(job = %job, error = %error, "Event not published");
        }
    }

    /// Tells the timer loop about timers this replica just scheduled.
    pub(crate) fn note_timers(&self, dues: impl Iterator<Item = u64>) {
        if let Some(earliest) = dues.min() {
            let previous = self.next_timer.fetch_min(earliest, Ordering::AcqRel);
            if earliest < previous {
                self.timer_wake.notify_one();
            }
        }
    }

    /// Handles a fired timer; returns the time to fire it again, if it is not due yet.
    pub(crate) async fn on_timer(&self, member: &TimerMember) -> Result<Option<u64>, ApiError> {
        if member.kind == TimerKind::Deadline {
            let due = self
                .store
                .job_fields(member.job, &[keys::field::DEADLINE.to_owned()])
                .await?
                .into_iter()
                .next()
                .flatten()
                .and_then(|v| v.parse::<u64>().ok());
            let Some(due) = due else {
                return Ok(None);
            };
            let transition = match self.cancel(member.job, None, None, Some(due)).await {
                Err(error) if error.code == ErrorCode::NotFound => return Ok(None),
                other => other?,
            };
            return Ok(match transition.outcome {
                Outcome::Later { due } => Some(due),
                _ => None,
            });
        }
        let Some(plan) = self.plan_with(member.job, &member.step).await? else {
            return Ok(None);
        };
        let Some(step) = plan.step(&member.step) else {
            return Ok(None);
        };
        let transition = match member.kind {
            TimerKind::Timeout => {
                if let Some(next) = self.reconcile(member, step).await? {
                    return Ok(Some(next));
                }
                let failure = Failure {
                    message: format!(
                        "attempt {} did not answer within {} ms",
                        member.attempt, step.timeout_ms
                    ),
                    class: FailureClass::Timeout,
                    retryable: true,
                };
                self.record(
                    member.job,
                    &plan,
                    step,
                    member.attempt,
                    Err(failure),
                    AttemptInfo::default(),
                )
                .await?
            }
            TimerKind::Deadline => return Ok(None),
            TimerKind::Retry => {
                let cause = Cause::RetryDue {
                    step: step.id.as_str(),
                    attempt: member.attempt,
                };
                let transition = self.handle(member.job, &plan, &cause, now_ms()).await?;
                self.apply(member.job, transition.clone()).await;
                transition
            }
        };
        Ok(match transition.outcome {
            Outcome::Later { due } => Some(due),
            _ => None,
        })
    }
}

/// What a new job starts with besides its plan and input.
struct Start {
    /// Outputs a rerun reuses.
    reused: Vec<(String, String)>,
    /// The job a rerun started from.
    source: Option<Uuid>,
    traceparent: Option<baton_otel::TraceParent>,
    deadline_ms: Option<u64>,
}

/// What the decision log keeps of an attempt's input: its size and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InputDigest {
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
}

impl InputDigest {
    pub(crate) fn of(input: &str) -> Self {
        use sha2::Digest;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let hash = sha2::Sha256::digest(input.as_bytes());
        let mut sha256 = String::with_capacity(64);
        for byte in hash {
            sha256.push(char::from(HEX[usize::from(byte >> 4)]));
            sha256.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        Self {
            bytes: input.len() as u64,
            sha256,
        }
    }
}

/// What an attempt reported, as the decision core adds it up.
fn core_usage(usage: Option<&Usage>, cost_nanos: u64) -> baton_core::Usage<'_> {
    usage.map_or_else(baton_core::Usage::default, |usage| baton_core::Usage {
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cost_nanos,
        model: usage.model.as_deref(),
    })
}

fn check_idempotency_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || key.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::InvalidIdempotencyKey,
            format!(
                "idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} bytes without control characters"
            ),
        ));
    }
    Ok(())
}

/// Builds a step's input: a human override, the step's template, or the default
/// `{"input": <job input>, "needs": {"<dep>": <output>, …}}` spliced from stored JSON
/// without re-parsing the outputs.
pub(crate) fn step_input(
    step: &Step,
    job_input: &str,
    item: &store::Dispatch,
) -> Result<Box<RawValue>, String> {
    if let Some(input) = &item.input_override {
        return RawValue::from_string(input.clone()).map_err(|e| e.to_string());
    }
    if let Some(template) = &step.input {
        let input: serde_json::Value =
            serde_json::from_str(job_input).map_err(|e| e.to_string())?;
        let mut needs = BTreeMap::new();
        for (need, output) in step.needs.iter().zip(&item.needs) {
            if let Some(output) = output {
                let output = serde_json::from_str(output).map_err(|e| e.to_string())?;
                needs.insert(need.local().to_owned(), output);
            }
        }
        let mut rendered = template.render(&input, &needs);
        if let (Some(raw), Some(object)) = (&item.loop_input, rendered.as_object_mut()) {
            let value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
            object.insert("loop".to_owned(), value);
        }
        return serde_json::value::to_raw_value(&rendered).map_err(|e| e.to_string());
    }
    let mut out = String::with_capacity(
        job_input.len()
            + item
                .needs
                .iter()
                .map(|n| n.as_ref().map_or(0, |n| n.len() + 8))
                .sum::<usize>()
            + 24,
    );
    out.push_str("{\"input\":");
    out.push_str(job_input);
    out.push_str(",\"needs\":{");
    // Skipped needs are absent.
    let ran = step
        .needs
        .iter()
        .zip(&item.needs)
        .filter_map(|(need, output)| Some((need, output.as_deref()?)));
    for (i, (need, output)) in ran.enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Step ids are [A-Za-z0-9_-]+: no escaping needed. A sub-plan step names its needs
        // as its sub-plan does.
        out.push('"');
        out.push_str(need.local());
        out.push_str("\":");
        out.push_str(output);
    }
    out.push('}');
    if let Some(raw) = &item.loop_input {
        out.push_str(",\"loop\":");
        out.push_str(raw);
    }
    out.push('}');
    RawValue::from_string(out).map_err(|e| e.to_string())
}

/// The agent type a result subject names, validated.
pub(crate) fn agent_of_subject(subject: &str) -> Option<AgentName> {
    subject::agent_of(subject).and_then(|a| AgentName::new(a).ok())
}

/// Encodes a reply in the request's encoding (errors fall back to JSON).
pub(crate) fn encode_reply<T: serde::Serialize>(encoding: Encoding, value: &T) -> Bytes {
    encoding
        .encode(value)
        .or_else(|_| Encoding::Json.encode(value))
        .map(Bytes::from)
        .unwrap_or_else(|_| {
            Bytes::from_static(
                b"{\"error\":{\"code\":\"internal\",\"message\":\"reply encoding failed\"}}",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::InputDigest;

    #[test]
    fn input_digest_is_the_lowercase_hex_sha256() {
        let digest = InputDigest::of("abc");
        assert_eq!(digest.bytes, 3);
        assert_eq!(
            digest.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
