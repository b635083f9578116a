//! `decide`: the one function that decides every transition of a job, from its recorded facts
//! and the cause, with no I/O. `reads` says which facts a cause needs.

use std::sync::Arc;

use baton_protocol::keys::{TimerKind, TimerMember};
use baton_protocol::messages::{JobStatus, StepStatus};
use baton_protocol::plan::{Plan, Step};
use uuid::Uuid;

use crate::decision::{Apply, Decision, End, Expire, Outcome, Started, Timer};
use crate::facts::Facts;
use crate::field::{Field, StepField};
pub use crate::write::Context;
use crate::write::{expire_running, fail, refresh, start, step_field, timer};

/// Why a transition happens.
#[derive(Debug, Clone, Copy)]
pub enum Cause<'a> {
    /// A job is to be created.
    Submitted(NewJob<'a>),
    /// A worker answered an attempt (or the coordinator failed it in a worker's stead: a
    /// task that cannot be built, a poison task).
    Result {
        step: &'a str,
        attempt: u32,
        outcome: Attempt<'a>,
        usage: Usage<'a>,
    },
    /// An attempt's deadline passed.
    TimedOut {
        step: &'a str,
        attempt: u32,
        /// The failure (JSON) and the backoff before the next attempt.
        failure: &'a str,
        retry_delay_ms: u64,
    },
    /// A retry's backoff ended.
    RetryDue { step: &'a str, attempt: u32 },
    /// A human resolved an escalated step.
    Resolved {
        step: &'a str,
        resolution: Resolution<'a>,
    },
    /// The reconciler looked at a running attempt's task and notes where it sits.
    Reconcile {
        step: &'a str,
        attempt: u32,
        note: &'a str,
    },
    /// The running job's plan grows to `plan` (the next revision of the plan decided with,
    /// from [`Plan::grow`]); `stored` is its JSON, as the job keeps it. Shared, so that what
    /// the transition hands on (its executor, the plan cache) is the grown plan itself.
    Grow {
        plan: &'a Arc<Plan>,
        stored: &'a str,
    },
    /// A planner's attempt answered with an accepted sub-plan: `plan` is the job's plan grown
    /// by it (from [`Plan::expand`]), `stored` its JSON. The planner's output is recorded
    /// (the sub-plan's roots read it), its status becomes `expanded`, and the sub-plan starts.
    Expand {
        step: &'a str,
        attempt: u32,
        output: &'a str,
        plan: &'a Arc<Plan>,
        stored: &'a str,
        usage: Usage<'a>,
    },
    /// The job is cancelled: by a request, or because its deadline passed (then it ends
    /// `failed` with `deadline_exceeded`).
    Cancel {
        reason: Option<&'a str>,
        /// The job's deadline (unix ms) when it is the deadline that passed.
        deadline: Option<u64>,
    },
}

impl<'a> Cause<'a> {
    /// The step the cause is about, if it is about one.
    pub fn step(&self) -> Option<&'a str> {
        match *self {
            Cause::Result { step, .. }
            | Cause::TimedOut { step, .. }
            | Cause::RetryDue { step, .. }
            | Cause::Resolved { step, .. }
            | Cause::Reconcile { step, .. }
            | Cause::Expand { step, .. } => Some(step),
            Cause::Submitted(_) | Cause::Grow { .. } | Cause::Cancel { .. } => None,
        }
    }

    /// The plan the job has once this cause's decision is applied: the grown plan for
    /// [`Cause::Grow`], else `plan` (the one decided with).
    pub fn plan_after<'p>(&'p self, plan: &'p Arc<Plan>) -> &'p Arc<Plan> {
        match self {
            Cause::Grow { plan: grown, .. } | Cause::Expand { plan: grown, .. } => grown,
            _ => plan,
        }
    }
}

/// What a new job starts from.
#[derive(Debug, Clone, Copy)]
pub struct NewJob<'a> {
    /// The plan as stored (normalised JSON).
    pub plan: &'a str,
    /// The job input (JSON).
    pub input: &'a str,
    /// The Redis key of its idempotency mapping.
    pub idempotency_key: Option<&'a str>,
    pub traceparent: Option<&'a str>,
    /// Outputs a rerun reuses: (step, output JSON); those steps start succeeded.
    pub reused: &'a [(String, String)],
    /// When the job must have ended (unix ms): a timer cancels it then.
    pub deadline: Option<u64>,
}

/// An attempt's outcome.
#[derive(Debug, Clone, Copy)]
pub enum Attempt<'a> {
    Succeeded {
        output: &'a str,
    },
    Failed {
        /// The failure as recorded (JSON).
        failure: &'a str,
        retryable: bool,
        /// The backoff before the next attempt, if there is one.
        retry_delay_ms: u64,
    },
}

/// Tokens and cost an attempt reported.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage<'a> {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_nanos: u64,
    pub model: Option<&'a str>,
}

/// A human's resolution of an escalated step.
#[derive(Debug, Clone, Copy)]
pub enum Resolution<'a> {
    /// Supply the step's output.
    Output(&'a str),
    /// Another attempt with a fresh budget, optionally with a replacement input (JSON).
    Retry { input: Option<&'a str> },
    /// Fail the job.
    Fail { reason: &'a str },
}

/// The facts `decide` needs for `cause`, to read in one go.
pub fn reads(plan: &Plan, cause: &Cause<'_>) -> Vec<Field> {
    let mut fields = vec![Field::Status];
    if let Cause::Submitted(_) = cause {
        return fields;
    }
    fields.push(Field::Revision);
    if let Cause::Grow { plan: grown, .. } = cause {
        fields.push(Field::TtlMark);
        let mut seen = std::collections::HashSet::new();
        for step in grown.added_since(plan) {
            for need in &step.needs {
                if plan.step(need.as_str()).is_some() && seen.insert(need.as_str()) {
                    fields.push(Field::step(StepField::Status, need.as_str()));
                }
            }
        }
        return fields;
    }
    if let Cause::Cancel { .. } = cause {
        fields.push(Field::Deadline);
        for step in plan.steps() {
            fields.push(step_field(StepField::Status, step));
            fields.push(step_field(StepField::Attempt, step));
        }
        return fields;
    }
    let Some(step) = cause.step().and_then(|id| plan.step(id)) else {
        return fields;
    };
    let mut step_fields = |step: &Step, list: &[StepField]| {
        fields.extend(list.iter().map(|f| step_field(*f, step)));
    };
    match cause {
        Cause::Submitted(_) | Cause::Grow { .. } | Cause::Cancel { .. } => {}
        Cause::Expand { .. } => {
            step_fields(
                step,
                &[
                    StepField::Status,
                    StepField::Attempt,
                    StepField::Base,
                    StepField::AttemptStarted,
                    StepField::Started,
                ],
            );
            fields.push(Field::TtlMark);
        }
        Cause::Result { outcome, .. } => {
            step_fields(
                step,
                &[
                    StepField::Status,
                    StepField::Attempt,
                    StepField::Base,
                    StepField::AttemptStarted,
                    StepField::Started,
                ],
            );
            fields.push(Field::TtlMark);
            if let Attempt::Succeeded { .. } = outcome {
                succeed_reads(plan, step, &mut fields);
            }
        }
        Cause::TimedOut { .. } => {
            step_fields(
                step,
                &[
                    StepField::Status,
                    StepField::Attempt,
                    StepField::Base,
                    StepField::Due,
                    StepField::AttemptStarted,
                    StepField::Started,
                ],
            );
            fields.push(Field::TtlMark);
        }
        Cause::RetryDue { .. } => {
            step_fields(
                step,
                &[StepField::Status, StepField::Attempt, StepField::Due],
            );
            fields.push(Field::TtlMark);
        }
        Cause::Resolved { resolution, .. } => {
            step_fields(step, &[StepField::Status, StepField::Attempt]);
            fields.push(Field::Escalated);
            fields.push(Field::TtlMark);
            if let Resolution::Output(_) = resolution {
                succeed_reads(plan, step, &mut fields);
            }
        }
        Cause::Reconcile { .. } => {
            step_fields(step, &[StepField::Status, StepField::Attempt]);
        }
    }
    fields
}

/// What a success reads besides the step: the steps left, its dependents' waiting counts
/// (and attempts, in a loop's body), what its loop needs, and what settling the region its
/// routes and its dependents' conditions may skip needs.
fn succeed_reads(plan: &Plan, step: &Step, fields: &mut Vec<Field>) {
    fields.push(Field::Left);
    for dep in plan.dependents(step.id.as_str()) {
        fields.push(step_field(StepField::Waiting, dep));
        if plan.in_loop(dep.id.as_str()) {
            fields.push(step_field(StepField::Attempt, dep));
        }
    }
    crate::looping::reads(plan, step, fields);
    crate::flow::region_reads(plan, step, fields);
}

/// Decides what `cause` does to `job`, given the facts `reads` named.
pub fn decide(job: Uuid, plan: &Plan, facts: &Facts, cause: &Cause<'_>, ctx: &Context) -> Decision {
    if let Cause::Submitted(new) = cause {
        return create(job, plan, facts, new, ctx);
    }
    let status = match facts.status() {
        None if !facts.exists() => return Decision::nothing(Outcome::Missing, JobStatus::Pending),
        None => JobStatus::Running,
        Some(status) if status.is_terminal() => return Decision::nothing(Outcome::Ended, status),
        Some(status) => status,
    };
    let revision = facts.revision();
    if revision != plan.revision() {
        return Decision::nothing(Outcome::PlanChanged { revision }, status);
    }
    let mut decision = decide_on(job, plan, facts, cause, status, ctx);
    if let Some(apply) = decision.apply.as_mut() {
        // Every write holds only for the plan it was decided on: a concurrent growth of the
        // plan makes it conflict, and the next try finds the new revision.
        apply.guard(
            Field::Revision,
            facts.get(&Field::Revision).map(str::to_owned),
        );
    }
    decision
}

/// `decide` for a job that exists, has not ended, and has the plan decided with.
fn decide_on(
    job: Uuid,
    plan: &Plan,
    facts: &Facts,
    cause: &Cause<'_>,
    status: JobStatus,
    ctx: &Context,
) -> Decision {
    if let Cause::Grow {
        plan: grown,
        stored,
    } = *cause
    {
        return grow(job, plan, grown, stored, facts, status, ctx);
    }
    if let Cause::Cancel { reason, deadline } = *cause {
        return cancel(plan, facts, reason, deadline, status, ctx);
    }
    let Some(step) = cause.step().and_then(|id| plan.step(id)) else {
        return Decision::nothing(Outcome::UnknownStep, status);
    };
    match *cause {
        // Decided above: a new job is not fenced by a status; a growth or a cancel has no
        // step.
        Cause::Submitted(_) | Cause::Grow { .. } | Cause::Cancel { .. } => {
            Decision::nothing(Outcome::Exists, status)
        }
        Cause::Result {
            attempt,
            outcome,
            usage,
            ..
        } => {
            let mut decision = match outcome {
                Attempt::Succeeded { output } => {
                    record(facts, step, attempt, status, ctx, None, |d, a| {
                        if crate::looping::on_success(
                            job, plan, facts, step, attempt, output, d, a, ctx,
                        ) {
                            return;
                        }
                        let ends = succeed(job, plan, facts, step, output, d, a, ctx);
                        d.status = if ends { JobStatus::Succeeded } else { status };
                        d.outcome = Outcome::Succeeded;
                    })
                }
                Attempt::Failed {
                    failure,
                    retryable,
                    retry_delay_ms,
                } => record(facts, step, attempt, status, ctx, None, |d, a| {
                    fail(
                        job,
                        facts,
                        step,
                        attempt,
                        failure,
                        retryable,
                        retry_delay_ms,
                        d,
                        a,
                        ctx,
                    )
                }),
            };
            if decision.outcome.changed() {
                add_usage(&mut decision, step, &usage);
                decision.settles = Some(timer(job, step, attempt, TimerKind::Timeout));
            }
            decision
        }
        Cause::TimedOut {
            attempt,
            failure,
            retry_delay_ms,
            ..
        } => {
            let due = facts.step_number(StepField::Due, step.id.as_str());
            record(facts, step, attempt, status, ctx, Some(due), |d, a| {
                fail(
                    job,
                    facts,
                    step,
                    attempt,
                    failure,
                    true,
                    retry_delay_ms,
                    d,
                    a,
                    ctx,
                )
            })
        }
        Cause::RetryDue { attempt, .. } => retry_due(job, facts, step, attempt, status, ctx),
        Cause::Expand {
            attempt,
            output,
            plan: grown,
            stored,
            usage,
            ..
        } => {
            let mut decision = record(facts, step, attempt, status, ctx, None, |d, a| {
                expand(job, plan, grown, stored, facts, step, output, d, a, ctx);
            });
            if decision.outcome.changed() {
                add_usage(&mut decision, step, &usage);
                decision.settles = Some(timer(job, step, attempt, TimerKind::Timeout));
            }
            decision
        }
        Cause::Resolved { resolution, .. } => {
            resolve(job, plan, facts, step, resolution, status, ctx)
        }
        Cause::Reconcile { attempt, note, .. } => {
            if let Some(stale) = fence(facts, step, StepStatus::Running, attempt, status) {
                return stale;
            }
            let mut apply = Apply::default();
            guard_step(&mut apply, facts, step);
            apply.set(step_field(StepField::Reconcile, step), note);
            Decision {
                apply: Some(apply),
                ..Decision::nothing(Outcome::Noted, status)
            }
        }
    }
}

/// `None` when `step` is in `expected` at `attempt`; else the stale decision.
fn fence(
    facts: &Facts,
    step: &Step,
    expected: StepStatus,
    attempt: u32,
    status: JobStatus,
) -> Option<Decision> {
    let current = facts.step_status(step.id.as_str());
    let current_attempt = facts.attempt(step.id.as_str());
    (current != Some(expected) || current_attempt != attempt).then(|| {
        Decision::nothing(
            Outcome::Stale {
                step: current,
                attempt: current_attempt,
            },
            status,
        )
    })
}

/// Guards the step's status and attempt at the values read.
fn guard_step(apply: &mut Apply, facts: &Facts, step: &Step) {
    for field in [StepField::Status, StepField::Attempt] {
        let value = facts.step(field, step.id.as_str()).map(str::to_owned);
        apply.guard(step_field(field, step), value);
    }
}

/// An attempt's outcome: fenced by the step's running attempt (and, for a timeout, its due
/// time), then `then` fills in the decision.
#[allow(clippy::too_many_arguments)]
fn record(
    facts: &Facts,
    step: &Step,
    attempt: u32,
    status: JobStatus,
    ctx: &Context,
    due: Option<u64>,
    then: impl FnOnce(&mut Decision, &mut Apply),
) -> Decision {
    if let Some(stale) = fence(facts, step, StepStatus::Running, attempt, status) {
        return stale;
    }
    if let Some(due) = due
        && due > ctx.now
    {
        return Decision::nothing(Outcome::Later { due }, status);
    }
    let id = step.id.as_str();
    let started = facts
        .step(StepField::AttemptStarted, id)
        .and_then(|v| v.parse::<u64>().ok())
        .map(|attempt_ms| Started {
            attempt_ms,
            step_ms: facts
                .step(StepField::Started, id)
                .and_then(|v| v.parse().ok())
                .unwrap_or(attempt_ms),
        });
    let mut apply = Apply::default();
    guard_step(&mut apply, facts, step);
    if let Some(due) = due {
        apply.guard(step_field(StepField::Due, step), Some(due.to_string()));
    }
    let mut decision = Decision {
        started,
        ..Decision::nothing(Outcome::Succeeded, status)
    };
    then(&mut decision, &mut apply);
    decision.apply = Some(apply);
    decision
}

/// Records a step's output and starts every dependent whose needs have now all succeeded;
/// returns whether this ends the job.
#[allow(clippy::too_many_arguments)]
fn succeed(
    job: Uuid,
    plan: &Plan,
    facts: &Facts,
    step: &Step,
    output: &str,
    decision: &mut Decision,
    apply: &mut Apply,
    ctx: &Context,
) -> bool {
    let now = ctx.now.to_string();
    apply.delete.push(step_field(StepField::Due, step));
    apply.delete.push(step_field(StepField::Input, step));
    apply
        .set(
            step_field(StepField::Status, step),
            StepStatus::Succeeded.as_str(),
        )
        .set(step_field(StepField::Output, step), output)
        .set(Field::Updated, now.clone());
    let mark = apply.counts.len();
    let settled = crate::flow::release(plan, facts, step, output, apply);
    let done =
        1 + u32::try_from(settled.skipped.len() + settled.completed.len()).unwrap_or(u32::MAX);
    for (planner, output) in &settled.completed {
        apply
            .set(
                Field::step(StepField::Status, planner),
                StepStatus::Succeeded.as_str(),
            )
            .set(Field::step(StepField::Output, planner), output.as_str());
        decision.known.push((planner.clone(), output.clone()));
    }
    decision.completed = settled.completed.iter().map(|(p, _)| p.clone()).collect();
    let ends = facts.number(&Field::Left) <= u64::from(done);
    apply.counts.insert(mark, (Field::Left, done, ends));
    for (dep, error) in settled.start {
        // A step in a loop's body counts its attempts on across iterations.
        let attempt = if plan.in_loop(dep.id.as_str()) {
            facts.attempt(dep.id.as_str()) + 1
        } else {
            1
        };
        start(job, dep, attempt, decision, apply, ctx);
        if let Some(start) = decision.dispatch.last_mut() {
            start.fail = error;
        }
        apply
            .set(step_field(StepField::Attempt, dep), attempt.to_string())
            .set(step_field(StepField::Started, dep), now.clone());
    }
    decision.skipped.extend(settled.skipped);
    decision
        .known
        .push((step.id.to_string(), output.to_owned()));
    if ends {
        apply.set(Field::Status, JobStatus::Succeeded.as_str());
        apply.expire = Expire::Retention;
        decision.ends = Some(End::Succeeded);
    } else {
        refresh(apply, facts, ctx);
    }
    ends
}

/// A new step (of a new job, or added by a growing plan): its first attempt starts now when
/// no need is `waiting` for, else it waits for that many.
fn start_or_wait(
    job: Uuid,
    step: &Step,
    waiting: usize,
    decision: &mut Decision,
    apply: &mut Apply,
    ctx: &Context,
) {
    if waiting == 0 {
        start(job, step, 1, decision, apply, ctx);
        apply
            .set(step_field(StepField::Attempt, step), "1")
            .set(step_field(StepField::Started, step), ctx.now.to_string());
    } else {
        apply
            .set(
                step_field(StepField::Status, step),
                StepStatus::Waiting.as_str(),
            )
            .set(step_field(StepField::Waiting, step), waiting.to_string());
    }
}

fn add_usage(decision: &mut Decision, step: &Step, usage: &Usage<'_>) {
    let Some(apply) = decision.apply.as_mut() else {
        return;
    };
    if usage.input_tokens == 0 && usage.output_tokens == 0 && usage.cost_nanos == 0 {
        if let Some(model) = usage.model {
            apply.set(step_field(StepField::UsageModel, step), model);
        } else {
            return;
        }
    } else if let Some(model) = usage.model {
        apply.set(step_field(StepField::UsageModel, step), model);
    }
    let amount = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    for (step_total, job_total, n) in [
        (StepField::UsageInput, Field::UsageInput, usage.input_tokens),
        (
            StepField::UsageOutput,
            Field::UsageOutput,
            usage.output_tokens,
        ),
        (StepField::UsageCost, Field::UsageCost, usage.cost_nanos),
    ] {
        apply.add.push((step_field(step_total, step), amount(n)));
        apply.add.push((job_total, amount(n)));
    }
}

fn retry_due(
    job: Uuid,
    facts: &Facts,
    step: &Step,
    attempt: u32,
    status: JobStatus,
    ctx: &Context,
) -> Decision {
    if let Some(stale) = fence(facts, step, StepStatus::Retrying, attempt, status) {
        return stale;
    }
    let due = facts.step_number(StepField::Due, step.id.as_str());
    if due > ctx.now {
        return Decision::nothing(Outcome::Later { due }, status);
    }
    let mut decision = Decision::nothing(Outcome::Dispatched, status);
    let mut apply = Apply::default();
    guard_step(&mut apply, facts, step);
    start(job, step, attempt, &mut decision, &mut apply, ctx);
    apply.set(Field::Updated, ctx.now.to_string());
    refresh(&mut apply, facts, ctx);
    decision.apply = Some(apply);
    decision
}

fn resolve(
    job: Uuid,
    plan: &Plan,
    facts: &Facts,
    step: &Step,
    resolution: Resolution<'_>,
    status: JobStatus,
    ctx: &Context,
) -> Decision {
    let current = facts.step_status(step.id.as_str());
    if current != Some(StepStatus::Escalated) {
        return Decision::nothing(Outcome::NotEscalated { step: current }, status);
    }
    let mut decision = Decision::nothing(Outcome::Resolved, status);
    let mut apply = Apply::default();
    guard_step(&mut apply, facts, step);
    let last = facts.number(&Field::Escalated) <= 1;
    apply.counts.push((Field::Escalated, 1, last));
    let next = if last {
        JobStatus::Running
    } else {
        JobStatus::Escalated
    };
    decision.status = next;
    let now = ctx.now.to_string();
    match resolution {
        Resolution::Output(output) => {
            if succeed(
                job,
                plan,
                facts,
                step,
                output,
                &mut decision,
                &mut apply,
                ctx,
            ) {
                decision.status = JobStatus::Succeeded;
            } else {
                apply.set(Field::Status, next.as_str());
            }
        }
        Resolution::Retry { input } => {
            // A fresh retry budget: the attempts already spent become the base.
            let attempt = facts.attempt(step.id.as_str());
            start(job, step, attempt + 1, &mut decision, &mut apply, ctx);
            apply
                .set(
                    step_field(StepField::Attempt, step),
                    (attempt + 1).to_string(),
                )
                .set(step_field(StepField::Base, step), attempt.to_string())
                .set(Field::Status, next.as_str())
                .set(Field::Updated, now);
            if let Some(input) = input {
                apply.set(step_field(StepField::Input, step), input);
            }
            refresh(&mut apply, facts, ctx);
        }
        Resolution::Fail { reason } => {
            apply
                .set(
                    step_field(StepField::Status, step),
                    StepStatus::Failed.as_str(),
                )
                .set(Field::Status, JobStatus::Failed.as_str())
                .set(Field::Error, reason)
                .set(Field::Updated, now);
            apply.expire = Expire::Retention;
            decision.status = JobStatus::Failed;
            decision.ends = Some(End::Failed {
                error: reason.to_owned(),
            });
        }
    }
    decision.apply = Some(apply);
    decision
}

/// A planner's accepted sub-plan: the planner's output is recorded and its status becomes
/// `expanded`; the sub-plan's steps join the job (its roots start now, the others wait for
/// their needs); the planner waits for the sub-plan's sinks.
#[allow(clippy::too_many_arguments)]
fn expand(
    job: Uuid,
    plan: &Plan,
    grown: &Plan,
    stored: &str,
    facts: &Facts,
    step: &Step,
    output: &str,
    decision: &mut Decision,
    apply: &mut Apply,
    ctx: &Context,
) {
    let added = grown.added_since(plan);
    let id = step.id.as_str();
    let sinks = grown.sub_sinks(id).count();
    apply
        .set(
            step_field(StepField::Status, step),
            StepStatus::Expanded.as_str(),
        )
        .set(step_field(StepField::Output, step), output)
        .set(step_field(StepField::SubLeft, step), sinks.to_string())
        .set(Field::Plan, stored)
        .set(Field::Revision, grown.revision().to_string())
        .set(Field::Updated, ctx.now.to_string());
    apply.delete.push(step_field(StepField::Due, step));
    apply
        .add
        .push((Field::Left, i64::try_from(added.len()).unwrap_or(i64::MAX)));
    for sub in added {
        // Roots need only the planner, whose output is recorded now.
        let waiting = sub.needs.iter().filter(|need| need.as_str() != id).count();
        start_or_wait(job, sub, waiting, decision, apply, ctx);
    }
    decision.known.push((id.to_owned(), output.to_owned()));
    decision.outcome = Outcome::Expanded {
        revision: grown.revision(),
        steps: added.len(),
    };
    refresh(apply, facts, ctx);
}

/// The job's plan grows to `grown`: its new steps start, or wait for their needs that have
/// not succeeded, and the job has that many more steps left.
fn grow(
    job: Uuid,
    plan: &Plan,
    grown: &Plan,
    stored: &str,
    facts: &Facts,
    status: JobStatus,
    ctx: &Context,
) -> Decision {
    let added = grown.added_since(plan);
    if grown.revision() != plan.revision() + 1 || added.is_empty() {
        // Not the next revision of the plan the job has: grown from another one.
        return Decision::nothing(
            Outcome::PlanChanged {
                revision: plan.revision(),
            },
            status,
        );
    }
    let now = ctx.now.to_string();
    let mut decision = Decision::nothing(
        Outcome::Grown {
            revision: grown.revision(),
            steps: added.len(),
        },
        status,
    );
    let mut apply = Apply::default();
    apply
        .guard(Field::Status, facts.get(&Field::Status).map(str::to_owned))
        .set(Field::Plan, stored)
        .set(Field::Revision, grown.revision().to_string())
        .set(Field::Updated, now.clone());
    apply
        .add
        .push((Field::Left, i64::try_from(added.len()).unwrap_or(i64::MAX)));
    let mut guarded = std::collections::HashSet::new();
    for step in added {
        let mut waiting = 0;
        for need in &step.needs {
            let old = plan.step(need.as_str()).is_some();
            if old && guarded.insert(need.as_str()) {
                // A need that succeeds concurrently was decided without this dependent.
                let read = facts
                    .step(StepField::Status, need.as_str())
                    .map(str::to_owned);
                apply.guard(Field::step(StepField::Status, need.as_str()), read);
            }
            if !old || facts.step_status(need.as_str()) != Some(StepStatus::Succeeded) {
                waiting += 1;
            }
        }
        start_or_wait(job, step, waiting, &mut decision, &mut apply, ctx);
    }
    refresh(&mut apply, facts, ctx);
    decision.apply = Some(apply);
    decision
}

/// The job ends now: each step not done ends `cancelled` (its running attempt, if any, is to
/// be told to stop), and the job ends `cancelled`, or `failed` when its deadline passed.
fn cancel(
    plan: &Plan,
    facts: &Facts,
    reason: Option<&str>,
    deadline: Option<u64>,
    status: JobStatus,
    ctx: &Context,
) -> Decision {
    if let Some(due) = deadline {
        // The timer of a deadline the job no longer has, or one that fired early.
        let stored = facts.number(&Field::Deadline);
        if stored != due {
            return Decision::nothing(
                Outcome::Stale {
                    step: None,
                    attempt: 0,
                },
                status,
            );
        }
        if due > ctx.now {
            return Decision::nothing(Outcome::Later { due }, status);
        }
    }
    let mut decision = Decision::nothing(Outcome::Cancelled, status);
    let mut apply = Apply::default();
    apply.guard(Field::Status, facts.get(&Field::Status).map(str::to_owned));
    for step in plan.steps() {
        let id = step.id.as_str();
        let current = facts.step_status(id);
        // Every step's status is guarded: a transition racing the cancel conflicts, and the
        // cancel is decided again on what it left.
        apply.guard(
            step_field(StepField::Status, step),
            facts.step(StepField::Status, id).map(str::to_owned),
        );
        let running = match current {
            Some(StepStatus::Succeeded | StepStatus::Skipped | StepStatus::Failed)
            | Some(StepStatus::Cancelled) => continue,
            Some(StepStatus::Running) => Some(facts.attempt(id)),
            _ => None,
        };
        apply.set(
            step_field(StepField::Status, step),
            StepStatus::Cancelled.as_str(),
        );
        apply.delete.push(step_field(StepField::Due, step));
        decision.cancelled.push((id.to_owned(), running));
    }
    let (next, end) = match deadline {
        Some(due) => {
            let error = format!(
                "{}: the job's deadline passed at {due} (unix ms) before it ended",
                baton_protocol::ErrorCode::DeadlineExceeded.as_str()
            );
            (JobStatus::Failed, End::Failed { error })
        }
        None => (
            JobStatus::Cancelled,
            End::Cancelled {
                reason: reason.map(str::to_owned),
            },
        ),
    };
    apply
        .set(Field::Status, next.as_str())
        .set(Field::Escalated, "0")
        .set(Field::Updated, ctx.now.to_string());
    match &end {
        End::Failed { error } => apply.set(Field::Error, error.as_str()),
        _ => apply.set(
            Field::Error,
            reason.map_or_else(|| "cancelled".to_owned(), |r| format!("cancelled: {r}")),
        ),
    };
    apply.expire = Expire::Retention;
    decision.status = next;
    decision.ends = Some(end);
    decision.apply = Some(apply);
    decision
}

fn create(job: Uuid, plan: &Plan, facts: &Facts, new: &NewJob<'_>, ctx: &Context) -> Decision {
    if facts.exists() {
        let status = facts.status().unwrap_or(JobStatus::Running);
        return Decision::nothing(Outcome::Exists, status);
    }
    let reused: std::collections::HashMap<&str, &str> = new
        .reused
        .iter()
        .map(|(step, output)| (step.as_str(), output.as_str()))
        .collect();
    let now = ctx.now.to_string();
    let (skips, mut fails) = crate::flow::at_create(plan, new.input, &reused);
    let skipped: std::collections::HashSet<&str> =
        skips.iter().map(|skip| skip.step.as_str()).collect();
    let left = plan
        .steps()
        .len()
        .saturating_sub(reused.len())
        .saturating_sub(skipped.len());
    let mut decision = Decision::nothing(Outcome::Created, JobStatus::Running);
    let mut apply = Apply::default();
    apply
        .guard(Field::Status, None)
        .set(Field::Status, JobStatus::Running.as_str())
        .set(Field::Plan, new.plan)
        .set(Field::Revision, plan.revision().to_string())
        .set(Field::Input, new.input)
        .set(Field::Created, now.clone())
        .set(Field::Updated, now.clone())
        .set(Field::Left, left.to_string())
        .set(Field::Escalated, "0");
    expire_running(&mut apply, ctx);
    if let Some(key) = new.idempotency_key {
        apply.set(Field::Idempotency, key);
    }
    if let Some(traceparent) = new.traceparent {
        apply.set(Field::TraceParent, traceparent);
    }
    if let Some(deadline) = new.deadline {
        apply.set(Field::Deadline, deadline.to_string());
        decision.timers.push(Timer {
            member: TimerMember {
                job,
                step: String::new(),
                attempt: 0,
                kind: TimerKind::Deadline,
            },
            due: deadline,
        });
    }
    for (step, output) in new.reused {
        apply
            .set(
                Field::step(StepField::Status, step),
                StepStatus::Succeeded.as_str(),
            )
            .set(Field::step(StepField::Output, step), output.as_str());
    }
    for skip in &skips {
        apply.set(
            Field::step(StepField::Status, &skip.step),
            StepStatus::Skipped.as_str(),
        );
    }
    for step in plan.steps() {
        let id = step.id.as_str();
        if reused.contains_key(id) || skipped.contains(id) {
            continue;
        }
        let skipped_needs = step
            .needs
            .iter()
            .filter(|need| skipped.contains(need.as_str()))
            .count();
        let waiting = step
            .needs
            .iter()
            .filter(|need| !reused.contains_key(need.as_str()))
            .count()
            - skipped_needs;
        start_or_wait(job, step, waiting, &mut decision, &mut apply, ctx);
        if waiting == 0 {
            if let Some(start) = decision.dispatch.last_mut() {
                start.fail = fails.remove(id).flatten();
            }
        } else if skipped_needs > 0 {
            apply.set(
                step_field(StepField::SkippedNeeds, step),
                skipped_needs.to_string(),
            );
        }
    }
    decision.skipped = skips;
    if left == 0 {
        // Every step was reused or skipped: the job is done as it starts.
        apply.set(Field::Status, JobStatus::Succeeded.as_str());
        apply.expire = Expire::Retention;
        decision.status = JobStatus::Succeeded;
        decision.ends = Some(End::Succeeded);
    }
    decision.known = new.reused.to_vec();
    decision.input = Some(new.input.to_owned());
    decision.apply = Some(apply);
    decision
}

#[cfg(test)]
mod tests;
