//! Replay: re-runs the coordinator's decisions for a recorded job, offline, and compares them
//! with the job's decision log — a regression check for the orchestrator itself.
//!
//! The replay drives the same transitions the coordinator runs — `baton_core::decide` and the
//! fenced apply script — on a scratch Redis,
//! feeding them the job's recorded facts in the order they happened: the results agents sent
//! (outputs from the job's state, failures from the log), timeouts, the ends of retry
//! backoffs and humans' resolutions, each at its recorded time. What the scripts and the
//! engine decide in answer — which attempts to dispatch and with which input, retries and
//! their delays, escalations, the job's end — is compared, step by step and in order, with
//! what the log says was decided. A changed plan (`plan_override`), e.g. another retry
//! policy, shows up as mismatches.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use baton_protocol::keys;
use baton_protocol::messages::{EventKind, FailureClass, JobStatus, ResolveAction, TraceReply};
use baton_protocol::plan::{Plan, Step};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::engine::{InputDigest, step_input};
use crate::store::{self, Store, Transition};
use baton_core::{Attempt, Cause, Outcome, Resolution};

/// Why a replay could not run at all (as opposed to finding mismatches).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the plan cannot be used: {0}")]
    Plan(String),
    #[error("the scratch Redis failed: {0}")]
    Store(#[from] store::Error),
    #[error("{0}")]
    Incomplete(String),
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    pub job_id: Uuid,
    /// Decisions compared.
    pub checked: usize,
    /// Decisions that differ; empty when the replay matches the record.
    pub mismatches: Vec<Mismatch>,
}

impl ReplayReport {
    pub fn matches(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// One decision that differs: what the log says and what the replay decided (`None` when
/// one side has no decision at that place).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mismatch {
    /// The step, or `job` for the job's end.
    pub scope: String,
    pub recorded: Option<String>,
    pub replayed: Option<String>,
}

/// Replays `trace` against the Redis at `redis_url`, which should be a scratch server: the
/// replay creates a job under a fresh id (and timer entries nobody fires).
pub async fn replay(
    trace: &TraceReply,
    plan_override: Option<serde_json::Value>,
    redis_url: &str,
) -> Result<ReplayReport, ReplayError> {
    if trace.dropped > 0 {
        return Err(ReplayError::Incomplete(format!(
            "the job's decision log lost its {} oldest entries (max_log_bytes); it cannot be replayed",
            trace.dropped
        )));
    }
    let limits = baton_protocol::Limits {
        max_steps: 100_000,
        ..baton_protocol::Limits::default()
    };
    // The plan as submitted: the stored one less what planners added (their sub-plans are
    // replayed from the log, as they were accepted).
    let submitted = plan_override.unwrap_or_else(|| {
        let mut plan = trace.plan.clone();
        if let Some(steps) = plan.get_mut("steps").and_then(|s| s.as_array_mut()) {
            steps.retain(|step| !step["id"].as_str().unwrap_or_default().contains('/'));
        }
        plan
    });
    let plan =
        Plan::from_value(submitted, &limits).map_err(|e| ReplayError::Plan(e.to_string()))?;
    let options = crate::Options {
        redis_url: redis_url.to_owned(),
        ..crate::Options::default()
    };
    let ttl = store::Ttl {
        running: Duration::from_secs(3600),
        retention: Duration::from_secs(3600),
        reconcile_after: Duration::from_secs(3600),
        max_log_bytes: 4096,
    };
    let store = Store::connect(&options, ttl).await?;
    let mut replay = Replay {
        store,
        plan: std::sync::Arc::new(plan),
        trace,
        job: Uuid::now_v7(),
        replayed: BTreeMap::new(),
        retries: HashSet::new(),
        delays: Vec::new(),
    };
    replay.run().await?;
    let recorded = recorded_decisions(trace);
    let mut report = ReplayReport {
        job_id: trace.job.job_id,
        checked: 0,
        mismatches: replay.delays.clone(),
    };
    let scopes: std::collections::BTreeSet<&String> =
        recorded.keys().chain(replay.replayed.keys()).collect();
    for scope in scopes {
        let empty = Vec::new();
        let left = recorded.get(scope).unwrap_or(&empty);
        let right = replay.replayed.get(scope).unwrap_or(&empty);
        for i in 0..left.len().max(right.len()) {
            report.checked += 1;
            let (l, r) = (left.get(i), right.get(i));
            if l != r {
                report.mismatches.push(Mismatch {
                    scope: scope.clone(),
                    recorded: l.cloned(),
                    replayed: r.cloned(),
                });
            }
        }
    }
    Ok(report)
}

/// The decisions the log records, per step (and `job`), in causal order: a step's
/// decisions follow its attempts (dispatch n, then what its outcome decided), whatever order
/// replicas appended them in.
fn recorded_decisions(trace: &TraceReply) -> BTreeMap<String, Vec<String>> {
    // (attempt, 0 = its dispatch / 1 = what its outcome decided) orders a step's decisions.
    type Keyed = Vec<((u32, u8), String)>;
    let mut decisions: BTreeMap<String, Keyed> = BTreeMap::new();
    for event in sorted(trace) {
        let (scope, key, decision) = match &event.kind {
            EventKind::StepDispatched {
                step_id,
                attempt,
                input_sha256,
                ..
            } => (
                step_id.clone(),
                (*attempt, 0),
                dispatch(*attempt, input_sha256.as_deref()),
            ),
            EventKind::RetryScheduled {
                step_id, attempt, ..
            } => (
                step_id.clone(),
                (attempt.saturating_sub(1), 1),
                format!("retry as attempt {attempt}"),
            ),
            EventKind::StepEscalated {
                step_id, attempt, ..
            } => (
                step_id.clone(),
                (*attempt, 1),
                format!("escalate after attempt {attempt}"),
            ),
            EventKind::StepReused { step_id, .. } => {
                (step_id.clone(), (0, 0), "reuse output".into())
            }
            EventKind::StepSkipped {
                step_id, reason, ..
            } => (step_id.clone(), (0, 0), skip(*reason)),
            EventKind::StepCancelled { step_id, .. } => {
                (step_id.clone(), (u32::MAX, 2), "cancel".into())
            }
            EventKind::StepExpanded {
                step_id,
                attempt,
                steps,
                ..
            } => (step_id.clone(), (*attempt, 1), expanded(*steps)),
            EventKind::SubPlanSucceeded { step_id } => {
                (step_id.clone(), (u32::MAX, 1), "sub-plan succeeded".into())
            }
            EventKind::LoopIterated {
                step_id,
                attempt,
                iteration,
                ..
            } => (step_id.clone(), (*attempt, 1), iterated(*iteration)),
            EventKind::JobSucceeded { .. } => ("job".into(), (0, 0), "job succeeded".into()),
            EventKind::JobFailed { .. } => ("job".into(), (0, 0), "job failed".into()),
            EventKind::JobCancelled { .. } => ("job".into(), (0, 0), "job cancelled".into()),
            _ => continue,
        };
        decisions.entry(scope).or_default().push((key, decision));
    }
    decisions
        .into_iter()
        .map(|(scope, mut list)| {
            list.sort_by_key(|(key, _)| *key);
            (scope, list.into_iter().map(|(_, d)| d).collect())
        })
        .collect()
}

/// A job error of a deadline that passed.
fn is_deadline(error: &str) -> bool {
    error.starts_with(baton_protocol::ErrorCode::DeadlineExceeded.as_str())
}

fn iterated(iteration: u32) -> String {
    format!("iterate (iteration {iteration})")
}

fn expanded(steps: usize) -> String {
    format!("expand into {steps} steps")
}

fn skip(reason: baton_protocol::messages::SkipReason) -> String {
    format!("skip ({})", reason.as_str())
}

fn dispatch(attempt: u32, sha256: Option<&str>) -> String {
    match sha256 {
        Some(sha) => format!(
            "dispatch attempt {attempt} (input {})",
            &sha[..sha.len().min(12)]
        ),
        None => format!("dispatch attempt {attempt}"),
    }
}

/// The log in time order (stable: entries of one instant keep their log order).
fn sorted(trace: &TraceReply) -> Vec<&baton_protocol::messages::Event> {
    let mut events: Vec<_> = trace.decisions.iter().collect();
    events.sort_by_key(|e| e.order_key());
    events
}

struct Replay<'a> {
    store: Store,
    plan: std::sync::Arc<Plan>,
    trace: &'a TraceReply,
    job: Uuid,
    replayed: BTreeMap<String, Vec<String>>,
    /// Retries the replay scheduled and has not fired: (step, attempt).
    retries: HashSet<(String, u32)>,
    /// Recorded retry delays the policy could not have chosen.
    delays: Vec<Mismatch>,
}

impl Replay<'_> {
    fn decide(&mut self, scope: &str, decision: String) {
        self.replayed
            .entry(scope.to_owned())
            .or_default()
            .push(decision);
    }

    async fn run(&mut self) -> Result<(), ReplayError> {
        let trace = self.trace;
        let events = sorted(trace);
        let created = events
            .iter()
            .find(|e| matches!(e.kind, EventKind::JobCreated { .. }))
            .map(|e| e.ts_ms)
            .unwrap_or(trace.job.created_ms);
        let mut reused = Vec::new();
        for event in &events {
            if let EventKind::StepReused { step_id, .. } = &event.kind {
                reused.push((step_id.clone(), self.output_of(step_id)));
                self.decide(step_id, "reuse output".into());
            }
        }
        let input = serde_json::to_string(&trace.input).unwrap_or_else(|_| "null".into());
        let stored_plan = serde_json::to_string(self.plan.spec()).unwrap_or_default();
        // A job whose deadline passed: its deadline is replayed as the moment it fired.
        let deadline = events.iter().find_map(|e| match &e.kind {
            EventKind::JobFailed { error, .. } if is_deadline(error) => Some(e.ts_ms),
            _ => None,
        });
        let cause = Cause::Submitted(baton_core::NewJob {
            plan: &stored_plan,
            input: &input,
            idempotency_key: None,
            traceparent: None,
            reused: &reused,
            deadline,
        });
        let transition = self
            .store
            .transition(self.job, &self.plan, &cause, created)
            .await?;
        self.effects(&transition);
        for (at, event) in events.iter().enumerate() {
            let now = event.ts_ms;
            match &event.kind {
                EventKind::StepSucceeded {
                    step_id,
                    attempt,
                    human,
                    ..
                } => {
                    // A human's output is replayed with the resolution.
                    if *human {
                        continue;
                    }
                    let Some(step) = self.plan.step(step_id).cloned() else {
                        self.decide(step_id, "result for a step the plan lacks".into());
                        continue;
                    };
                    // A step in a loop answered once per iteration: the iteration's end
                    // recorded what; the last iteration's is the step's output.
                    let output = events[at..]
                        .iter()
                        .find_map(|later| match &later.kind {
                            EventKind::LoopIterated { outputs, .. } => outputs.get(step_id),
                            _ => None,
                        })
                        .map(serde_json::Value::to_string)
                        .unwrap_or_else(|| self.output_of(step_id));
                    let outcome = Attempt::Succeeded { output: &output };
                    let transition = self.record(&step, *attempt, outcome, now).await?;
                    self.after_record(&step, *attempt, &transition);
                }
                EventKind::StepFailed {
                    step_id,
                    attempt,
                    error,
                    ..
                } => {
                    let Some(step) = self.plan.step(step_id).cloned() else {
                        self.decide(step_id, "result for a step the plan lacks".into());
                        continue;
                    };
                    let delay = self.recorded_delay(step_id, attempt + 1);
                    let timeout = error.class == FailureClass::Timeout;
                    let now = if timeout {
                        // Deadlines are set when an attempt starts, which the log dates by
                        // its dispatch a moment later: never let that moment matter.
                        now.max(self.deadline(step_id).await?)
                    } else {
                        now
                    };
                    let payload = serde_json::to_string(error).unwrap_or_default();
                    let cause = if timeout {
                        Cause::TimedOut {
                            step: step.id.as_str(),
                            attempt: *attempt,
                            failure: &payload,
                            retry_delay_ms: delay.unwrap_or(0),
                        }
                    } else {
                        Cause::Result {
                            step: step.id.as_str(),
                            attempt: *attempt,
                            outcome: Attempt::Failed {
                                failure: &payload,
                                retryable: error.retryable,
                                retry_delay_ms: delay.unwrap_or(0),
                            },
                            usage: baton_core::Usage::default(),
                        }
                    };
                    let transition = self
                        .store
                        .transition(self.job, &self.plan, &cause, now)
                        .await?;
                    if matches!(transition.outcome, Outcome::Retrying { .. })
                        && let Some(recorded) = delay
                    {
                        self.check_delay(&step, *attempt, recorded);
                    }
                    self.after_record(&step, *attempt, &transition);
                    self.fire_retries().await?;
                }
                EventKind::EscalationResolved {
                    step_id,
                    action,
                    reason,
                    input,
                    ..
                } => {
                    let Some(step) = self.plan.step(step_id).cloned() else {
                        continue;
                    };
                    let payload = match action {
                        ResolveAction::Output => self.output_of(step_id),
                        ResolveAction::Retry => input
                            .as_ref()
                            .map(|input| serde_json::to_string(input).unwrap_or_default())
                            .unwrap_or_default(),
                        ResolveAction::Fail => {
                            crate::api::failed_by_human(step_id, reason.as_deref())
                        }
                    };
                    let resolution = match action {
                        ResolveAction::Output => Resolution::Output(&payload),
                        ResolveAction::Retry => Resolution::Retry {
                            input: (!payload.is_empty()).then_some(payload.as_str()),
                        },
                        ResolveAction::Fail => Resolution::Fail { reason: &payload },
                    };
                    let cause = Cause::Resolved {
                        step: step.id.as_str(),
                        resolution,
                    };
                    let transition = self
                        .store
                        .transition(self.job, &self.plan, &cause, now)
                        .await?;
                    if transition.outcome != Outcome::Resolved {
                        self.decide(
                            step_id,
                            format!("resolution refused ({})", transition.outcome),
                        );
                    }
                    self.effects(&transition);
                }
                EventKind::JobCancelled { reason, .. } => {
                    self.cancel(reason.as_deref(), None, now).await?;
                }
                EventKind::StepExpanded {
                    step_id,
                    attempt,
                    output,
                    ..
                } => {
                    self.expand(step_id, *attempt, output, now).await?;
                }
                EventKind::JobFailed { error, .. } if is_deadline(error) => {
                    self.cancel(None, deadline, now).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Replays a planner's accepted output: the same sub-plan grows the replayed plan.
    async fn expand(
        &mut self,
        step_id: &str,
        attempt: u32,
        output: &serde_json::Value,
        now: u64,
    ) -> Result<(), ReplayError> {
        let limits = baton_protocol::Limits {
            max_steps: 100_000,
            ..baton_protocol::Limits::default()
        };
        let sub = output.get("plan").cloned().unwrap_or_default();
        let grown = match self.plan.expand(step_id, &sub, &limits) {
            Ok(grown) => std::sync::Arc::new(grown),
            Err(error) => {
                self.decide(step_id, format!("sub-plan rejected on replay: {error}"));
                return Ok(());
            }
        };
        let stored = serde_json::to_string(grown.spec()).unwrap_or_default();
        let raw = output.to_string();
        let cause = Cause::Expand {
            step: step_id,
            attempt,
            output: &raw,
            plan: &grown,
            stored: &stored,
            usage: baton_core::Usage::default(),
        };
        let transition = self
            .store
            .transition(self.job, &self.plan, &cause, now)
            .await?;
        match &transition.outcome {
            Outcome::Expanded { steps, .. } => {
                self.decide(step_id, expanded(*steps));
                self.plan = grown;
            }
            other => self.decide(
                step_id,
                format!("outcome of attempt {attempt} not accepted ({other})"),
            ),
        }
        self.effects(&transition);
        Ok(())
    }

    async fn cancel(
        &mut self,
        reason: Option<&str>,
        deadline: Option<u64>,
        now: u64,
    ) -> Result<(), ReplayError> {
        let cause = Cause::Cancel { reason, deadline };
        let transition = self
            .store
            .transition(self.job, &self.plan, &cause, now)
            .await?;
        if transition.outcome != Outcome::Cancelled {
            self.decide("job", format!("cancel refused ({})", transition.outcome));
        }
        self.effects(&transition);
        Ok(())
    }

    /// Ends the backoffs the replay scheduled whose next attempt the log shows dispatched, at
    /// the time of that dispatch. (A retry only touches its own step, so firing it ahead of
    /// other steps' events changes nothing they see.)
    async fn fire_retries(&mut self) -> Result<(), ReplayError> {
        let pending: Vec<(String, u32)> = self.retries.iter().cloned().collect();
        for (step_id, attempt) in pending {
            let Some(at) = self
                .trace
                .decisions
                .iter()
                .find_map(|event| match &event.kind {
                    EventKind::StepDispatched {
                        step_id: s,
                        attempt: a,
                        ..
                    } if *s == step_id && *a == attempt => Some(event.ts_ms),
                    _ => None,
                })
            else {
                continue;
            };
            self.retries.remove(&(step_id.clone(), attempt));
            let Some(step) = self.plan.step(&step_id).cloned() else {
                continue;
            };
            // Not before the backoff the replay scheduled ended.
            let due = self.deadline(&step_id).await?;
            let cause = Cause::RetryDue {
                step: step.id.as_str(),
                attempt,
            };
            let transition = self
                .store
                .transition(self.job, &self.plan, &cause, at.max(due))
                .await?;
            if transition.outcome != Outcome::Dispatched {
                self.decide(
                    &step_id,
                    format!(
                        "retry of attempt {attempt} not started ({})",
                        transition.outcome
                    ),
                );
            }
            self.effects(&transition);
        }
        Ok(())
    }

    async fn record(
        &self,
        step: &Step,
        attempt: u32,
        outcome: Attempt<'_>,
        now: u64,
    ) -> Result<Transition, ReplayError> {
        let cause = Cause::Result {
            step: step.id.as_str(),
            attempt,
            outcome,
            usage: baton_core::Usage::default(),
        };
        Ok(self
            .store
            .transition(self.job, &self.plan, &cause, now)
            .await?)
    }

    /// The decisions that follow recording an attempt's outcome.
    fn after_record(&mut self, step: &Step, attempt: u32, transition: &Transition) {
        let id = step.id.as_str();
        match &transition.outcome {
            Outcome::Retrying { .. } => {
                self.retries.insert((id.to_owned(), attempt + 1));
                self.decide(id, format!("retry as attempt {}", attempt + 1));
            }
            Outcome::Escalated => self.decide(id, format!("escalate after attempt {attempt}")),
            Outcome::Iterated { iteration, .. } => self.decide(id, iterated(*iteration)),
            Outcome::Succeeded => {}
            other => self.decide(
                id,
                format!("outcome of attempt {attempt} not accepted ({other})"),
            ),
        }
        self.effects(transition);
    }

    /// The dispatches a transition started, with their inputs, and the job's end.
    fn effects(&mut self, transition: &Transition) {
        for skipped in &transition.skipped {
            self.decide(&skipped.step, skip(skipped.reason));
        }
        for (step, _) in &transition.cancelled {
            self.decide(step, "cancel".into());
        }
        for planner in &transition.completed {
            self.decide(planner, "sub-plan succeeded".into());
        }
        for item in &transition.dispatch {
            if item.fail.is_some() {
                // Failed before it was published: the log has that failure, replayed as one.
                continue;
            }
            let Some(step) = self.plan.step(&item.step) else {
                continue;
            };
            let decision = match step_input(step, &transition.input, item) {
                Ok(input) => dispatch(item.attempt, Some(&InputDigest::of(input.get()).sha256)),
                Err(error) => format!("attempt {} has no valid input: {error}", item.attempt),
            };
            self.decide(&item.step, decision);
        }
        if transition.outcome.changed() {
            match transition.status {
                JobStatus::Succeeded => self.decide("job", "job succeeded".into()),
                JobStatus::Failed => self.decide("job", "job failed".into()),
                JobStatus::Cancelled => self.decide("job", "job cancelled".into()),
                _ => {}
            }
        }
    }

    fn output_of(&self, step: &str) -> String {
        self.trace
            .job
            .steps
            .get(step)
            .and_then(|view| view.output.as_ref())
            .and_then(|output| serde_json::to_string(output).ok())
            .unwrap_or_else(|| "null".into())
    }

    /// The delay the log recorded for the retry that starts `attempt` of `step`.
    fn recorded_delay(&self, step: &str, attempt: u32) -> Option<u64> {
        self.trace
            .decisions
            .iter()
            .find_map(|event| match &event.kind {
                EventKind::RetryScheduled {
                    step_id,
                    attempt: a,
                    delay_ms,
                    ..
                } if step_id == step && *a == attempt => Some(*delay_ms),
                _ => None,
            })
    }

    /// A recorded delay must be one the step's policy can choose after `failed` attempts.
    fn check_delay(&mut self, step: &Step, failed: u32, recorded: u64) {
        let longest = step.retry.delay_ms(failed, 0.0);
        // `unit` is below 1; the shortest delay is at the limit.
        let shortest = step.retry.delay_ms(failed, 1.0);
        if recorded < shortest || recorded > longest {
            self.delays.push(Mismatch {
                scope: step.id.to_string(),
                recorded: Some(format!(
                    "retry as attempt {} after {recorded} ms",
                    failed + 1
                )),
                replayed: Some(format!(
                    "retry as attempt {} after {shortest}-{longest} ms",
                    failed + 1
                )),
            });
        }
    }

    async fn field(&self, name: String) -> Result<Option<String>, ReplayError> {
        Ok(self
            .store
            .job_fields(self.job, &[name])
            .await?
            .into_iter()
            .next()
            .flatten())
    }

    async fn deadline(&self, step: &str) -> Result<u64, ReplayError> {
        Ok(self
            .field(keys::field::step_deadline(step))
            .await?
            .and_then(|d| d.parse().ok())
            .unwrap_or(0))
    }
}
