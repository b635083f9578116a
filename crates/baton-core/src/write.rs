//! The writes decisions share: starting an attempt, failing one (the one place the
//! escalation rule lives), the running TTL, step field names, timers. `decide` and the
//! control-flow modules (`flow`, `looping`) build on these.

use baton_protocol::keys::{TimerKind, TimerMember};
use baton_protocol::messages::{JobStatus, StepStatus};
use baton_protocol::plan::Step;
use uuid::Uuid;

use crate::decision::{Apply, Decision, Expire, Outcome, Start, Timer};
use crate::facts::Facts;
use crate::field::{Field, StepField};

/// What a decision takes from its surroundings: the time and the TTL settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// Unix ms: when the decision is taken.
    pub now: u64,
    /// How long a running job's state lives without a transition (ms).
    pub running_ttl_ms: u64,
    /// How long an attempt runs before the reconciler first looks at its task (ms).
    pub reconcile_after_ms: u64,
}

impl Context {
    /// When an attempt starting now is first looked at: its deadline, or earlier for the
    /// reconciler's first look at its task.
    pub fn first_check(&self, step: &Step) -> u64 {
        self.now + step.timeout_ms.min(self.reconcile_after_ms)
    }
}

pub(crate) fn step_field(field: StepField, step: &Step) -> Field {
    Field::step(field, step.id.as_str())
}

pub(crate) fn timer(job: Uuid, step: &Step, attempt: u32, kind: TimerKind) -> TimerMember {
    TimerMember {
        job,
        step: step.id.to_string(),
        attempt,
        kind,
    }
}

/// Sets the running TTL again once half of it has run since it was last set.
pub(crate) fn refresh(apply: &mut Apply, facts: &Facts, ctx: &Context) {
    if ctx.now.saturating_sub(facts.number(&Field::TtlMark)) >= ctx.running_ttl_ms / 2 {
        expire_running(apply, ctx);
    }
}

/// Sets the running TTL, and notes when (`TtlMark`).
pub(crate) fn expire_running(apply: &mut Apply, ctx: &Context) {
    apply.expire = Expire::Running;
    apply.set(Field::TtlMark, ctx.now.to_string());
}

/// A failed attempt: another attempt after the backoff while the policy allows, else an
/// escalation to a human. The one place the escalation rule lives.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fail(
    job: Uuid,
    facts: &Facts,
    step: &Step,
    attempt: u32,
    failure: &str,
    retryable: bool,
    retry_delay_ms: u64,
    decision: &mut Decision,
    apply: &mut Apply,
    ctx: &Context,
) {
    let now = ctx.now.to_string();
    apply
        .set(step_field(StepField::Error, step), failure)
        .set(Field::Updated, now);
    refresh(apply, facts, ctx);
    let base = u32::try_from(facts.step_number(StepField::Base, step.id.as_str())).unwrap_or(0);
    if retryable && attempt.saturating_sub(base) < step.retry.max_attempts {
        let next = attempt + 1;
        let due = ctx.now + retry_delay_ms;
        apply
            .set(
                step_field(StepField::Status, step),
                StepStatus::Retrying.as_str(),
            )
            .set(step_field(StepField::Attempt, step), next.to_string())
            .set(step_field(StepField::Due, step), due.to_string());
        decision.timers.push(Timer {
            member: timer(job, step, next, TimerKind::Retry),
            due,
        });
        decision.outcome = Outcome::Retrying { next_attempt: next };
    } else {
        apply
            .set(
                step_field(StepField::Status, step),
                StepStatus::Escalated.as_str(),
            )
            .set(Field::Status, JobStatus::Escalated.as_str());
        apply.delete.push(step_field(StepField::Due, step));
        apply.add.push((Field::Escalated, 1));
        decision.escalation = Some(baton_protocol::keys::escalation_id(job, step.id.as_str()));
        decision.status = JobStatus::Escalated;
        decision.outcome = Outcome::Escalated;
    }
}

/// Starts `attempt` of `step` now: running, with its deadline, and its timer.
pub(crate) fn start(
    job: Uuid,
    step: &Step,
    attempt: u32,
    decision: &mut Decision,
    apply: &mut Apply,
    ctx: &Context,
) {
    apply
        .set(
            step_field(StepField::Status, step),
            StepStatus::Running.as_str(),
        )
        .set(
            step_field(StepField::Due, step),
            (ctx.now + step.timeout_ms).to_string(),
        )
        .set(
            step_field(StepField::AttemptStarted, step),
            ctx.now.to_string(),
        );
    decision.dispatch.push(Start {
        step: step.id.to_string(),
        attempt,
        fail: None,
    });
    decision.timers.push(Timer {
        member: timer(job, step, attempt, TimerKind::Timeout),
        due: ctx.first_check(step),
    });
}
