//! Bounded loops (contract v1.1): when the looping step succeeds and its `until` is false,
//! the loop's body (every step from `back_to` to it) runs again as the next iteration, with
//! fresh retry budgets and attempt numbers that count on; after `max_iterations` the looping
//! step escalates (`loop_limit`), and a head that answers as in the iteration before makes
//! the loop escalate at once (`loop_stalled`). All of it is decided here, from recorded
//! outputs, in the success's one fenced write.

use std::collections::BTreeMap;

use baton_protocol::messages::{Failure, FailureClass, StepStatus};
use baton_protocol::plan::{Plan, Step};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::decision::{Apply, Decision, Outcome};
use crate::facts::Facts;
use crate::field::{Field, StepField};
use crate::write::{Context, fail, refresh, start, step_field};

/// What a success of `step` reads for its loops: as a looping step, its iteration, its
/// feedback, the input and its needs' outputs (for `until`) and the body's attempts; as a
/// loop's head, its previous output and the loop's iteration (for the stall check).
pub(crate) fn reads(plan: &Plan, step: &Step, fields: &mut Vec<Field>) {
    if let Some(looping) = &step.loop_ {
        fields.push(step_field(StepField::Iteration, step));
        fields.push(step_field(StepField::Feedback, step));
        fields.push(Field::Input);
        for need in &step.needs {
            fields.push(Field::step(StepField::Output, need.as_str()));
        }
        for member in &looping.body {
            fields.push(Field::step(StepField::Attempt, member.as_str()));
            fields.push(Field::step(StepField::Output, member.as_str()));
        }
    }
    if let Some(closer) = plan.loop_of_head(step.id.as_str()) {
        fields.push(step_field(StepField::Output, step));
        fields.push(step_field(StepField::Iteration, closer));
    }
}

/// Decides a success of `step` when a loop has a say: the head stalled, the loop iterates,
/// its bound is reached, or its `until` cannot be evaluated. Returns false when the success
/// is an ordinary one (not in a loop's way, or the loop is left).
#[allow(clippy::too_many_arguments)]
pub(crate) fn on_success(
    job: Uuid,
    plan: &Plan,
    facts: &Facts,
    step: &Step,
    attempt: u32,
    output: &str,
    decision: &mut Decision,
    apply: &mut Apply,
    ctx: &Context,
) -> bool {
    let id = step.id.as_str();
    if let Some(closer) = plan.loop_of_head(id) {
        let iteration = iteration(facts, closer);
        if iteration > 1 && facts.step(StepField::Output, id) == Some(output) {
            let message = format!(
                "loop {} -> {}: {id} answered exactly as in iteration {} (no progress)",
                closer.id,
                id,
                iteration - 1
            );
            escalate(
                job,
                facts,
                step,
                attempt,
                message,
                FailureClass::LoopStalled,
                decision,
                apply,
                ctx,
            );
            return true;
        }
    }
    let Some(looping) = &step.loop_ else {
        return false;
    };
    let value: Value = serde_json::from_str(output).unwrap_or(Value::Null);
    let input: Value = facts
        .get(&Field::Input)
        .and_then(|raw| serde_json::from_str(raw).ok())
        .unwrap_or(Value::Null);
    let mut needs = BTreeMap::new();
    for need in &step.needs {
        if let Some(raw) = facts.step(StepField::Output, need.as_str()) {
            needs.insert(
                need.local(),
                serde_json::from_str(raw).unwrap_or(Value::Null),
            );
        }
    }
    let iteration = iteration(facts, step);
    match looping.until.eval_with(&input, &needs, Some(&value)) {
        Ok(true) => false,
        Err(error) => {
            let message = format!("loop {} -> {}: until {error}", looping.back_to, id);
            escalate(
                job,
                facts,
                step,
                attempt,
                message,
                FailureClass::InvalidOutput,
                decision,
                apply,
                ctx,
            );
            true
        }
        Ok(false) if iteration >= looping.max_iterations => {
            let message = format!(
                "loop {} -> {id} ran max_iterations ({}) and until {:?} still does not hold",
                looping.back_to,
                looping.max_iterations,
                looping.until.source()
            );
            escalate(
                job,
                facts,
                step,
                attempt,
                message,
                FailureClass::LoopLimit,
                decision,
                apply,
                ctx,
            );
            true
        }
        Ok(false) => {
            iterate(
                job, plan, facts, step, output, value, iteration, decision, apply, ctx,
            );
            true
        }
    }
}

fn iteration(facts: &Facts, step: &Step) -> u32 {
    u32::try_from(facts.step_number(StepField::Iteration, step.id.as_str()))
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

/// The success escalates instead: recorded as a failure of the attempt, not retried.
#[allow(clippy::too_many_arguments)]
fn escalate(
    job: Uuid,
    facts: &Facts,
    step: &Step,
    attempt: u32,
    message: String,
    class: FailureClass,
    decision: &mut Decision,
    apply: &mut Apply,
    ctx: &Context,
) {
    let failure = Failure {
        message,
        class,
        retryable: false,
    };
    let json = serde_json::to_string(&failure).unwrap_or_default();
    fail(
        job, facts, step, attempt, &json, false, 0, decision, apply, ctx,
    );
    decision.failure = Some(failure);
}

/// The next iteration: the body runs again from its head, which gets `loop` in its input.
#[allow(clippy::too_many_arguments)]
fn iterate(
    job: Uuid,
    plan: &Plan,
    facts: &Facts,
    step: &Step,
    output: &str,
    value: Value,
    iteration: u32,
    decision: &mut Decision,
    apply: &mut Apply,
    ctx: &Context,
) {
    let Some(looping) = &step.loop_ else {
        return;
    };
    let next = iteration + 1;
    let mut feedback: Vec<Value> = facts
        .step(StepField::Feedback, step.id.as_str())
        .and_then(|raw| serde_json::from_str(raw).ok())
        .unwrap_or_default();
    feedback.push(value);
    let loop_input = json!({"iteration": next, "feedback": feedback});
    apply
        .set(step_field(StepField::Iteration, step), next.to_string())
        .set(
            step_field(StepField::Feedback, step),
            Value::Array(feedback).to_string(),
        )
        .set(step_field(StepField::Output, step), output)
        .set(Field::Updated, ctx.now.to_string());
    apply.delete.push(step_field(StepField::Due, step));
    for member in &looping.body {
        let Some(body) = plan.step(member.as_str()) else {
            continue;
        };
        // What the body answered in the iteration that ends: the decision log keeps it, so
        // replay can give each iteration its own outputs.
        let answered = if body.id == step.id {
            Some(output)
        } else {
            facts.step(StepField::Output, member.as_str())
        };
        if let Some(answered) = answered {
            decision
                .loop_outputs
                .push((member.to_string(), answered.to_owned()));
        }
        let spent = facts.attempt(member.as_str());
        // A fresh retry budget for the iteration; attempt numbers count on.
        apply.set(step_field(StepField::Base, body), spent.to_string());
        if *member == looping.back_to {
            start(job, body, spent + 1, decision, apply, ctx);
            apply
                .set(
                    step_field(StepField::Attempt, body),
                    (spent + 1).to_string(),
                )
                .set(
                    step_field(StepField::LoopInput, body),
                    loop_input.to_string(),
                );
        } else {
            let waiting = body
                .needs
                .iter()
                .filter(|need| looping.body.contains(need))
                .count();
            apply
                .set(
                    step_field(StepField::Status, body),
                    StepStatus::Waiting.as_str(),
                )
                .set(step_field(StepField::Waiting, body), waiting.to_string());
            apply.delete.push(step_field(StepField::SkippedNeeds, body));
        }
    }
    // The body's other steps were done; they are not any more (the looping step was not).
    apply.add.push((
        Field::Left,
        i64::try_from(looping.body.len().saturating_sub(1)).unwrap_or(i64::MAX),
    ));
    refresh(apply, facts, ctx);
    decision.outcome = Outcome::Iterated {
        back_to: looping.back_to.to_string(),
        iteration: next,
    };
}
