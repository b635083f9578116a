//! Events in words: [`describe`] turns an event into the sentence `baton watch`, `baton
//! trace` and `baton dev` print, so every view of a job (the dashboard's too) says the same.

use baton_protocol::messages::{AttemptReport, EventKind, ResolveAction, SkipReason, UsageTotals};

/// One line saying what an event records, for people.
pub fn describe(kind: &EventKind) -> String {
    match kind {
        EventKind::JobCreated { plan, steps } => match plan {
            Some(plan) => format!("job created: plan {plan}, {steps} steps"),
            None => format!("job created: {steps} steps"),
        },
        EventKind::StepDispatched {
            step_id,
            agent,
            attempt,
            input_bytes,
            input_sha256,
        } => {
            let mut line = format!("{step_id}: dispatched attempt {attempt} to {agent}");
            if let (Some(bytes), Some(sha)) = (input_bytes, input_sha256) {
                line.push_str(&format!(
                    " (input {bytes} B, sha256 {})",
                    &sha[..sha.len().min(12)]
                ));
            }
            line
        }
        EventKind::StepSucceeded {
            step_id,
            human: true,
            ..
        } => format!("{step_id}: succeeded with the output a human supplied"),
        EventKind::StepSucceeded {
            step_id,
            attempt,
            report,
            ..
        } => format!(
            "{step_id}: attempt {attempt} succeeded{}",
            report_suffix(report)
        ),
        EventKind::StepFailed {
            step_id,
            attempt,
            error,
            report,
        } => format!(
            "{step_id}: attempt {attempt} failed ({}{}): {}{}",
            error.class.as_str(),
            if error.retryable {
                ""
            } else {
                ", not retryable"
            },
            error.message,
            report_suffix(report)
        ),
        EventKind::RetryScheduled {
            step_id,
            attempt,
            delay_ms,
            class,
        } => match class {
            Some(class) => format!(
                "{step_id}: retry as attempt {attempt} in {delay_ms} ms (after {})",
                class.as_str()
            ),
            None => format!("{step_id}: retry as attempt {attempt} in {delay_ms} ms"),
        },
        EventKind::StepEscalated {
            step_id,
            attempt,
            escalation_id,
        } => format!("{step_id}: escalated to a human after attempt {attempt} ({escalation_id})"),
        EventKind::StepDeadLettered {
            step_id,
            attempt,
            agent,
            reason,
        } => format!("{step_id}: attempt {attempt} dead-lettered to baton.dlq.{agent} ({reason})"),
        EventKind::StepReused {
            step_id,
            source_job,
        } => format!("{step_id}: output reused from job {source_job}"),
        EventKind::StepSkipped {
            step_id,
            reason,
            router,
        } => match (reason, router) {
            (SkipReason::Route, Some(router)) => {
                format!("{step_id}: skipped (router {router} did not take its branch)")
            }
            (SkipReason::Route, None) => format!("{step_id}: skipped (its branch was not taken)"),
            (SkipReason::Condition, _) => format!("{step_id}: skipped (when was false)"),
            (SkipReason::Needs, _) => format!("{step_id}: skipped (every need was skipped)"),
        },
        EventKind::EscalationResolved {
            step_id,
            action,
            by,
            reason,
            ..
        } => {
            let mut line = format!(
                "{step_id}: resolved by {} with {}",
                by.as_deref().unwrap_or("someone"),
                match action {
                    ResolveAction::Output => "a supplied output",
                    ResolveAction::Retry => "a retry",
                    ResolveAction::Fail => "fail",
                }
            );
            if let Some(reason) = reason {
                line.push_str(&format!(": {reason}"));
            }
            line
        }
        EventKind::ResultFenced {
            step_id,
            attempt,
            reason,
        } => format!("{step_id}: a result of attempt {attempt} was ignored ({reason})"),
        EventKind::StepRedispatched {
            step_id,
            attempt,
            reason,
        } => format!("{step_id}: attempt {attempt} published again: {reason}"),
        EventKind::StepExpanded {
            step_id,
            attempt,
            steps,
            ..
        } => format!(
            "{step_id}: attempt {attempt} planned a sub-plan of {steps} steps, accepted (they run as {step_id}/…)"
        ),
        EventKind::LoopIterated {
            step_id,
            attempt,
            back_to,
            iteration,
            ..
        } => format!(
            "{step_id}: attempt {attempt} did not meet until; loop runs again from {back_to} (iteration {iteration})"
        ),
        EventKind::SubPlanSucceeded { step_id } => {
            format!("{step_id}: its sub-plan finished; the planner succeeded with its output")
        }
        EventKind::StepCancelled { step_id, attempt } => match attempt {
            Some(attempt) => {
                format!("{step_id}: cancelled; running attempt {attempt} told to stop")
            }
            None => format!("{step_id}: cancelled"),
        },
        EventKind::JobCancelled { reason, by, usage } => {
            let by = by
                .as_ref()
                .map(|by| format!(" by {by}"))
                .unwrap_or_default();
            let reason = reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            format!("job cancelled{by}{reason}{}", usage_suffix(usage))
        }
        EventKind::JobSucceeded { usage } => format!("job succeeded{}", usage_suffix(usage)),
        EventKind::JobFailed { error, usage } => {
            format!("job failed: {error}{}", usage_suffix(usage))
        }
    }
}

fn report_suffix(report: &AttemptReport) -> String {
    let mut parts = Vec::new();
    if let Some(latency) = report.latency_ms {
        parts.push(format!("{latency} ms"));
    }
    if let Some(usage) = &report.usage {
        parts.push(usage_text(usage));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" [{}]", parts.join(", "))
    }
}

fn usage_suffix(usage: &Option<UsageTotals>) -> String {
    match usage {
        Some(usage) => format!(" [{}]", usage_text(usage)),
        None => String::new(),
    }
}

/// Tokens and cost in words: `3 in / 4 out tokens, $0.000012`.
pub fn usage_text(usage: &UsageTotals) -> String {
    format!(
        "{} in / {} out tokens, ${:.6}",
        usage.input_tokens, usage.output_tokens, usage.cost_usd
    )
}

#[cfg(test)]
mod tests {
    use baton_protocol::messages::{Failure, FailureClass};

    use super::*;

    #[test]
    fn a_failure_says_its_class_retryability_and_usage() {
        let kind = EventKind::StepFailed {
            step_id: "c".into(),
            attempt: 2,
            error: Failure {
                message: "boom".into(),
                class: FailureClass::Error,
                retryable: false,
            },
            report: AttemptReport {
                latency_ms: Some(12),
                usage: Some(UsageTotals {
                    input_tokens: 3,
                    output_tokens: 4,
                    cost_usd: 0.5,
                    model: None,
                }),
                ..AttemptReport::default()
            },
        };
        assert_eq!(
            describe(&kind),
            "c: attempt 2 failed (error, not retryable): boom [12 ms, 3 in / 4 out tokens, $0.500000]"
        );
    }
}
