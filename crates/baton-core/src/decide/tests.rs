//! Every outcome of `decide`, with no servers: facts in, typed decision out.

use baton_protocol::Limits;
use baton_protocol::keys::{TimerKind, TimerMember};
use baton_protocol::messages::{JobStatus, SkipReason, StepStatus};
use baton_protocol::plan::Plan;
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::decision::{Apply, End, Expire, Outcome, Start};
use crate::facts::Facts;
use crate::field::{Field, StepField};

const NOW: u64 = 1_000_000;
const CTX: Context = Context {
    now: NOW,
    running_ttl_ms: 10_000,
    reconcile_after_ms: 500,
};

fn job() -> Uuid {
    Uuid::from_u128(7)
}

/// a → (b, c) → d; b has 2 attempts and a 1 s timeout.
fn diamond() -> Plan {
    Plan::from_value(
        json!({"steps": [
            {"id": "a", "agent": "sim"},
            {"id": "b", "agent": "sim", "needs": ["a"], "timeout_ms": 1000, "retry": {"max_attempts": 2}},
            {"id": "c", "agent": "sim", "needs": ["a"]},
            {"id": "d", "agent": "sim", "needs": ["b", "c"]},
        ]}),
        &baton_protocol::Limits::default(),
    )
    .expect("valid plan")
}

fn sf(field: StepField, step: &str) -> Field {
    Field::step(field, step)
}

/// A running job whose step `step` runs attempt `attempt`.
fn running(step: &str, attempt: u32) -> Facts {
    let mut facts = Facts::default();
    facts.insert(Field::Status, "running");
    facts.insert(Field::TtlMark, NOW.to_string());
    facts.insert(sf(StepField::Status, step), "running");
    facts.insert(sf(StepField::Attempt, step), attempt.to_string());
    facts.insert(sf(StepField::AttemptStarted, step), (NOW - 40).to_string());
    facts.insert(sf(StepField::Started, step), (NOW - 90).to_string());
    facts
}

fn get<'a>(apply: &'a Apply, field: &Field) -> Option<&'a str> {
    apply
        .set
        .iter()
        .rev()
        .find(|(f, _)| f == field)
        .map(|(_, v)| v.as_str())
}

fn ok<'a>(step: &'a str, attempt: u32, output: &'a str) -> Cause<'a> {
    Cause::Result {
        step,
        attempt,
        outcome: Attempt::Succeeded { output },
        usage: Usage::default(),
    }
}

fn failed<'a>(step: &'a str, attempt: u32, retryable: bool) -> Cause<'a> {
    Cause::Result {
        step,
        attempt,
        outcome: Attempt::Failed {
            failure: r#"{"message":"boom","class":"error","retryable":true}"#,
            retryable,
            retry_delay_ms: 250,
        },
        usage: Usage::default(),
    }
}

#[test]
fn a_new_job_starts_its_roots_and_waits_for_the_rest() {
    let plan = diamond();
    let cause = Cause::Submitted(NewJob {
        plan: "{}",
        input: r#"{"q":1}"#,
        idempotency_key: Some("baton:idem:k"),
        traceparent: None,
        reused: &[],
        deadline: None,
    });
    assert_eq!(reads(&plan, &cause), vec![Field::Status]);
    let decision = decide(job(), &plan, &Facts::default(), &cause, &CTX);
    assert_eq!(decision.outcome, Outcome::Created);
    assert_eq!(decision.status, JobStatus::Running);
    let apply = decision.apply.expect("writes");
    assert_eq!(apply.guards, vec![(Field::Status, None)]);
    assert_eq!(get(&apply, &Field::Left), Some("4"));
    assert_eq!(get(&apply, &Field::Idempotency), Some("baton:idem:k"));
    assert_eq!(get(&apply, &sf(StepField::Status, "a")), Some("running"));
    assert_eq!(get(&apply, &sf(StepField::Status, "d")), Some("waiting"));
    assert_eq!(get(&apply, &sf(StepField::Waiting, "d")), Some("2"));
    assert_eq!(apply.expire, Expire::Running);
    assert_eq!(
        decision.dispatch,
        vec![Start {
            step: "a".into(),
            attempt: 1,
            fail: None,
        }]
    );
    assert_eq!(decision.timers.len(), 1);
    // The first look at the task comes before the 30 s default deadline.
    assert_eq!(decision.timers[0].due, NOW + 500);
    assert_eq!(decision.input.as_deref(), Some(r#"{"q":1}"#));
}

#[test]
fn a_rerun_starts_where_the_reused_outputs_end() {
    let plan = diamond();
    let reused = vec![
        ("a".to_owned(), "1".to_owned()),
        ("b".to_owned(), "2".to_owned()),
    ];
    let cause = Cause::Submitted(NewJob {
        plan: "{}",
        input: "null",
        idempotency_key: None,
        traceparent: None,
        reused: &reused,
        deadline: None,
    });
    let decision = decide(job(), &plan, &Facts::default(), &cause, &CTX);
    let apply = decision.apply.expect("writes");
    assert_eq!(get(&apply, &Field::Left), Some("2"));
    assert_eq!(get(&apply, &sf(StepField::Status, "a")), Some("succeeded"));
    assert_eq!(get(&apply, &sf(StepField::Waiting, "d")), Some("1"));
    let started: Vec<_> = decision.dispatch.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(started, ["c"]);
    assert_eq!(decision.known, reused);
}

#[test]
fn a_second_submit_finds_the_job() {
    let plan = diamond();
    let mut facts = Facts::default();
    facts.insert(Field::Status, "escalated");
    let cause = Cause::Submitted(NewJob {
        plan: "{}",
        input: "null",
        idempotency_key: None,
        traceparent: None,
        reused: &[],
        deadline: None,
    });
    let decision = decide(job(), &plan, &facts, &cause, &CTX);
    assert_eq!(decision.outcome, Outcome::Exists);
    assert_eq!(decision.status, JobStatus::Escalated);
    assert!(decision.apply.is_none() && decision.dispatch.is_empty());
}

#[test]
fn a_success_starts_the_dependents_it_completes() {
    let plan = diamond();
    let mut facts = running("a", 1);
    facts.insert(Field::Left, "4");
    facts.insert(sf(StepField::Waiting, "b"), "1");
    facts.insert(sf(StepField::Waiting, "c"), "1");
    let cause = ok("a", 1, r#"{"x":1}"#);
    let fields = reads(&plan, &cause);
    assert!(fields.contains(&sf(StepField::Waiting, "b")));
    assert!(!fields.contains(&sf(StepField::Waiting, "d")));
    let decision = decide(job(), &plan, &facts, &cause, &CTX);
    assert_eq!(decision.outcome, Outcome::Succeeded);
    assert_eq!(decision.status, JobStatus::Running);
    let apply = decision.apply.as_ref().expect("writes");
    assert_eq!(get(apply, &sf(StepField::Output, "a")), Some(r#"{"x":1}"#));
    assert_eq!(
        apply.counts,
        vec![
            (Field::Left, 1, false),
            (sf(StepField::Waiting, "b"), 1, true),
            (sf(StepField::Waiting, "c"), 1, true)
        ]
    );
    assert_eq!(get(apply, &sf(StepField::Due, "b")), Some("1001000"));
    let started: Vec<_> = decision.dispatch.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(started, ["b", "c"]);
    assert_eq!(
        decision.known,
        vec![("a".to_owned(), r#"{"x":1}"#.to_owned())]
    );
    assert_eq!(
        decision.settles,
        Some(TimerMember {
            job: job(),
            step: "a".into(),
            attempt: 1,
            kind: TimerKind::Timeout
        })
    );
    assert_eq!(
        decision.started,
        Some(Started {
            attempt_ms: NOW - 40,
            step_ms: NOW - 90
        })
    );
    assert!(decision.ends.is_none());
}

#[test]
fn a_success_with_needs_outstanding_starts_nothing() {
    let plan = diamond();
    let mut facts = running("b", 1);
    facts.insert(Field::Left, "2");
    facts.insert(sf(StepField::Waiting, "d"), "2");
    let decision = decide(job(), &plan, &facts, &ok("b", 1, "1"), &CTX);
    assert!(decision.dispatch.is_empty() && decision.timers.is_empty());
    let apply = decision.apply.expect("writes");
    assert_eq!(apply.counts[1], (sf(StepField::Waiting, "d"), 1, false));
    // The TTL was set just now: not again.
    assert_eq!(apply.expire, Expire::Keep);
}

#[test]
fn the_last_success_ends_the_job() {
    let plan = diamond();
    let mut facts = running("d", 1);
    facts.insert(Field::Left, "1");
    let decision = decide(job(), &plan, &facts, &ok("d", 1, "9"), &CTX);
    assert_eq!(decision.status, JobStatus::Succeeded);
    assert_eq!(decision.ends, Some(End::Succeeded));
    let apply = decision.apply.expect("writes");
    assert_eq!(apply.counts, vec![(Field::Left, 1, true)]);
    assert_eq!(get(&apply, &Field::Status), Some("succeeded"));
    assert_eq!(apply.expire, Expire::Retention);
}

#[test]
fn results_of_other_attempts_are_fenced() {
    let plan = diamond();
    let facts = running("b", 2);
    let decision = decide(job(), &plan, &facts, &ok("b", 1, "1"), &CTX);
    assert_eq!(
        decision.outcome,
        Outcome::Stale {
            step: Some(StepStatus::Running),
            attempt: 2
        }
    );
    assert!(decision.apply.is_none() && decision.settles.is_none());
    assert_eq!(
        decision.outcome.fence_reason(decision.status).as_deref(),
        Some("stale running:2")
    );
}

#[test]
fn results_for_ended_or_missing_jobs_change_nothing() {
    let plan = diamond();
    let mut facts = running("b", 1);
    facts.insert(Field::Status, "succeeded");
    let decision = decide(job(), &plan, &facts, &ok("b", 1, "1"), &CTX);
    assert_eq!(decision.outcome, Outcome::Ended);
    assert_eq!(
        decision.outcome.fence_reason(decision.status).as_deref(),
        Some("ended succeeded")
    );
    let decision = decide(job(), &plan, &Facts::default(), &ok("b", 1, "1"), &CTX);
    assert_eq!(decision.outcome, Outcome::Missing);
    assert!(decision.apply.is_none());
}

#[test]
fn a_retryable_failure_schedules_the_next_attempt() {
    let plan = diamond();
    let decision = decide(job(), &plan, &running("b", 1), &failed("b", 1, true), &CTX);
    assert_eq!(decision.outcome, Outcome::Retrying { next_attempt: 2 });
    let apply = decision.apply.as_ref().expect("writes");
    assert_eq!(get(apply, &sf(StepField::Status, "b")), Some("retrying"));
    assert_eq!(get(apply, &sf(StepField::Attempt, "b")), Some("2"));
    assert_eq!(get(apply, &sf(StepField::Due, "b")), Some("1000250"));
    assert_eq!(
        apply.guards,
        vec![
            (sf(StepField::Status, "b"), Some("running".into())),
            (sf(StepField::Attempt, "b"), Some("1".into())),
            // Jobs from before revisions have none stored: revision 1.
            (Field::Revision, None)
        ]
    );
    assert_eq!(decision.timers[0].member.kind, TimerKind::Retry);
    assert_eq!(decision.timers[0].due, NOW + 250);
    assert!(decision.escalation.is_none());
}

#[test]
fn an_exhausted_policy_escalates() {
    let plan = diamond();
    let decision = decide(job(), &plan, &running("b", 2), &failed("b", 2, true), &CTX);
    assert_eq!(decision.outcome, Outcome::Escalated);
    assert_eq!(decision.status, JobStatus::Escalated);
    assert_eq!(
        decision.escalation.as_deref(),
        Some(&*format!("{}.b", job()))
    );
    let apply = decision.apply.expect("writes");
    assert_eq!(apply.add, vec![(Field::Escalated, 1)]);
    assert_eq!(apply.delete, vec![sf(StepField::Due, "b")]);
    assert!(decision.timers.is_empty());
}

#[test]
fn a_non_retryable_failure_escalates_at_once() {
    let plan = diamond();
    let decision = decide(job(), &plan, &running("b", 1), &failed("b", 1, false), &CTX);
    assert_eq!(decision.outcome, Outcome::Escalated);
}

#[test]
fn a_human_retry_gives_a_fresh_budget() {
    // Attempt 3 after a human retry at attempt 2: base 2, so 1 of 2 attempts is spent.
    let plan = diamond();
    let mut facts = running("b", 3);
    facts.insert(sf(StepField::Base, "b"), "2");
    let decision = decide(job(), &plan, &facts, &failed("b", 3, true), &CTX);
    assert_eq!(decision.outcome, Outcome::Retrying { next_attempt: 4 });
    let mut facts = running("b", 4);
    facts.insert(sf(StepField::Base, "b"), "2");
    let decision = decide(job(), &plan, &facts, &failed("b", 4, true), &CTX);
    assert_eq!(decision.outcome, Outcome::Escalated);
}

#[test]
fn usage_is_added_to_step_and_job_once_recorded() {
    let plan = diamond();
    let cause = Cause::Result {
        step: "b",
        attempt: 1,
        outcome: Attempt::Failed {
            failure: "{}",
            retryable: true,
            retry_delay_ms: 1,
        },
        usage: Usage {
            input_tokens: 10,
            output_tokens: 5,
            cost_nanos: 7,
            model: Some("m"),
        },
    };
    let decision = decide(job(), &plan, &running("b", 1), &cause, &CTX);
    let apply = decision.apply.expect("writes");
    assert!(apply.add.contains(&(Field::UsageInput, 10)));
    assert!(apply.add.contains(&(sf(StepField::UsageCost, "b"), 7)));
    assert_eq!(get(&apply, &sf(StepField::UsageModel, "b")), Some("m"));
    // A fenced result adds nothing.
    let decision = decide(job(), &plan, &running("b", 2), &cause, &CTX);
    assert!(decision.apply.is_none());
}

#[test]
fn a_timeout_before_the_deadline_fires_later() {
    let plan = diamond();
    let mut facts = running("b", 1);
    facts.insert(sf(StepField::Due, "b"), (NOW + 300).to_string());
    let cause = Cause::TimedOut {
        step: "b",
        attempt: 1,
        failure: "{}",
        retry_delay_ms: 200,
    };
    let decision = decide(job(), &plan, &facts, &cause, &CTX);
    assert_eq!(decision.outcome, Outcome::Later { due: NOW + 300 });
    facts.insert(sf(StepField::Due, "b"), NOW.to_string());
    let decision = decide(job(), &plan, &facts, &cause, &CTX);
    assert_eq!(decision.outcome, Outcome::Retrying { next_attempt: 2 });
    // The timer loop settles a fired timer itself.
    assert!(decision.settles.is_none());
    let apply = decision.apply.expect("writes");
    assert!(
        apply
            .guards
            .contains(&(sf(StepField::Due, "b"), Some(NOW.to_string())))
    );
}

#[test]
fn a_due_retry_dispatches_its_attempt() {
    let plan = diamond();
    let mut facts = Facts::default();
    facts.insert(Field::Status, "running");
    facts.insert(sf(StepField::Status, "b"), "retrying");
    facts.insert(sf(StepField::Attempt, "b"), "2");
    facts.insert(sf(StepField::Due, "b"), (NOW + 5).to_string());
    let step = "b";
    let cause = Cause::RetryDue { step, attempt: 2 };
    assert_eq!(
        decide(job(), &plan, &facts, &cause, &CTX).outcome,
        Outcome::Later { due: NOW + 5 }
    );
    facts.insert(sf(StepField::Due, "b"), NOW.to_string());
    let decision = decide(job(), &plan, &facts, &cause, &CTX);
    assert_eq!(decision.outcome, Outcome::Dispatched);
    assert_eq!(
        decision.dispatch,
        vec![Start {
            step: "b".into(),
            attempt: 2,
            fail: None,
        }]
    );
    let apply = decision.apply.expect("writes");
    assert_eq!(get(&apply, &sf(StepField::Status, "b")), Some("running"));
    assert_eq!(get(&apply, &sf(StepField::Due, "b")), Some("1001000"));
    // A retry timer of another attempt is stale.
    let cause = Cause::RetryDue { step, attempt: 1 };
    assert!(matches!(
        decide(job(), &plan, &facts, &cause, &CTX).outcome,
        Outcome::Stale { .. }
    ));
}

fn escalated(step: &str, open: u32) -> Facts {
    let mut facts = Facts::default();
    facts.insert(Field::Status, "escalated");
    facts.insert(Field::Escalated, open.to_string());
    facts.insert(Field::Left, "2");
    facts.insert(sf(StepField::Status, step), "escalated");
    facts.insert(sf(StepField::Attempt, step), "2");
    facts
}

#[test]
fn resolving_with_an_output_succeeds_the_step() {
    let plan = diamond();
    let mut facts = escalated("b", 1);
    facts.insert(sf(StepField::Waiting, "d"), "1");
    let cause = Cause::Resolved {
        step: "b",
        resolution: Resolution::Output("42"),
    };
    let decision = decide(job(), &plan, &facts, &cause, &CTX);
    assert_eq!(decision.outcome, Outcome::Resolved);
    assert_eq!(decision.status, JobStatus::Running);
    let apply = decision.apply.expect("writes");
    assert_eq!(get(&apply, &Field::Status), Some("running"));
    assert_eq!(apply.counts[0], (Field::Escalated, 1, true));
    assert_eq!(get(&apply, &sf(StepField::Output, "b")), Some("42"));
    assert_eq!(decision.dispatch[0].step, "d");
}

#[test]
fn resolving_one_of_two_escalations_leaves_the_job_escalated() {
    let plan = diamond();
    let cause = Cause::Resolved {
        step: "b",
        resolution: Resolution::Retry { input: Some("{}") },
    };
    let decision = decide(job(), &plan, &escalated("b", 2), &cause, &CTX);
    assert_eq!(decision.status, JobStatus::Escalated);
    let apply = decision.apply.expect("writes");
    assert_eq!(get(&apply, &sf(StepField::Attempt, "b")), Some("3"));
    assert_eq!(get(&apply, &sf(StepField::Base, "b")), Some("2"));
    assert_eq!(get(&apply, &sf(StepField::Input, "b")), Some("{}"));
    assert_eq!(
        decision.dispatch,
        vec![Start {
            step: "b".into(),
            attempt: 3,
            fail: None,
        }]
    );
    assert_eq!(decision.timers[0].member.attempt, 3);
}

#[test]
fn resolving_with_fail_ends_the_job() {
    let plan = diamond();
    let cause = Cause::Resolved {
        step: "b",
        resolution: Resolution::Fail { reason: "no" },
    };
    let decision = decide(job(), &plan, &escalated("b", 1), &cause, &CTX);
    assert_eq!(decision.status, JobStatus::Failed);
    assert_eq!(decision.ends, Some(End::Failed { error: "no".into() }));
    assert_eq!(decision.apply.expect("writes").expire, Expire::Retention);
}

#[test]
fn resolving_a_step_that_is_not_escalated_changes_nothing() {
    let plan = diamond();
    let cause = Cause::Resolved {
        step: "b",
        resolution: Resolution::Output("1"),
    };
    let decision = decide(job(), &plan, &running("b", 1), &cause, &CTX);
    assert_eq!(
        decision.outcome,
        Outcome::NotEscalated {
            step: Some(StepStatus::Running)
        }
    );
    assert!(!decision.outcome.changed());
}

#[test]
fn the_reconciler_notes_only_on_the_running_attempt() {
    let plan = diamond();
    let step = "b";
    let cause = Cause::Reconcile {
        step,
        attempt: 1,
        note: "seq:5",
    };
    let decision = decide(job(), &plan, &running("b", 1), &cause, &CTX);
    assert_eq!(decision.outcome, Outcome::Noted);
    let apply = decision.apply.expect("writes");
    assert_eq!(get(&apply, &sf(StepField::Reconcile, "b")), Some("seq:5"));
    assert_eq!(apply.expire, Expire::Keep);
    let decision = decide(job(), &plan, &running("b", 2), &cause, &CTX);
    assert!(decision.apply.is_none());
    let decision = decide(job(), &plan, &Facts::default(), &cause, &CTX);
    assert_eq!(decision.outcome, Outcome::Missing);
}

#[test]
fn the_running_ttl_is_set_again_after_half_of_it() {
    let plan = diamond();
    let mut facts = running("b", 1);
    facts.insert(Field::TtlMark, (NOW - 5_000).to_string());
    let decision = decide(job(), &plan, &facts, &failed("b", 1, true), &CTX);
    let apply = decision.apply.expect("writes");
    assert_eq!(apply.expire, Expire::Running);
    assert_eq!(get(&apply, &Field::TtlMark), Some("1000000"));
}

#[test]
fn a_decision_on_another_revision_of_the_plan_changes_nothing() {
    let plan = diamond();
    let mut facts = running("b", 1);
    facts.insert(Field::Revision, "2");
    let decision = decide(job(), &plan, &facts, &ok("b", 1, "1"), &CTX);
    assert_eq!(decision.outcome, Outcome::PlanChanged { revision: 2 });
    assert!(decision.apply.is_none());
    // The same facts at the plan's own revision decide, and guard that revision.
    facts.insert(Field::Revision, "1");
    let decision = decide(job(), &plan, &facts, &ok("b", 1, "1"), &CTX);
    assert_eq!(decision.outcome, Outcome::Succeeded);
    let apply = decision.apply.expect("writes");
    assert!(apply.guards.contains(&(Field::Revision, Some("1".into()))));
    assert!(reads(&plan, &ok("b", 1, "1")).contains(&Field::Revision));
}

#[test]
fn a_result_for_a_step_the_plan_lacks_changes_nothing() {
    let plan = diamond();
    let decision = decide(job(), &plan, &running("b", 1), &ok("zz", 1, "1"), &CTX);
    assert_eq!(decision.outcome, Outcome::UnknownStep);
    assert!(decision.apply.is_none());
}

fn grown(base: &Plan, steps: serde_json::Value) -> std::sync::Arc<Plan> {
    std::sync::Arc::new(
        base.grow(
            serde_json::from_value(steps).expect("specs"),
            &Limits::default(),
        )
        .expect("grows"),
    )
}

#[test]
fn a_growing_plan_starts_the_new_steps_whose_needs_succeeded() {
    // diamond: a -> b, c -> d. a succeeded, b runs.
    let plan = diamond();
    let bigger = grown(
        &plan,
        serde_json::json!([
            {"id": "e", "agent": "sim", "needs": ["a"]},
            {"id": "f", "agent": "sim", "needs": ["b", "e"]},
            {"id": "g", "agent": "sim"}
        ]),
    );
    let mut facts = running("b", 1);
    facts.insert(sf(StepField::Status, "a"), "succeeded");
    let cause = Cause::Grow {
        plan: &bigger,
        stored: "{}",
    };
    let fields = reads(&plan, &cause);
    assert!(fields.contains(&sf(StepField::Status, "a")));
    assert!(fields.contains(&sf(StepField::Status, "b")));
    let decision = decide(job(), &plan, &facts, &cause, &CTX);
    assert_eq!(
        decision.outcome,
        Outcome::Grown {
            revision: 2,
            steps: 3
        }
    );
    let started: Vec<&str> = decision.dispatch.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(started, ["e", "g"]);
    let apply = decision.apply.expect("writes");
    assert_eq!(get(&apply, &Field::Revision), Some("2"));
    assert_eq!(get(&apply, &Field::Plan), Some("{}"));
    assert_eq!(get(&apply, &sf(StepField::Status, "f")), Some("waiting"));
    assert_eq!(get(&apply, &sf(StepField::Waiting, "f")), Some("2"));
    assert!(apply.add.contains(&(Field::Left, 3)));
    // Fenced by the job's status, the revision, and the needs' statuses it counted on.
    assert!(
        apply
            .guards
            .contains(&(Field::Status, Some("running".into())))
    );
    assert!(apply.guards.contains(&(Field::Revision, None)));
    assert!(
        apply
            .guards
            .contains(&(sf(StepField::Status, "a"), Some("succeeded".into())))
    );
    assert!(
        apply
            .guards
            .contains(&(sf(StepField::Status, "b"), Some("running".into())))
    );
}

#[test]
fn an_ended_job_does_not_grow_and_a_stale_growth_is_refused() {
    let plan = diamond();
    let bigger = grown(&plan, serde_json::json!([{"id": "e", "agent": "sim"}]));
    let cause = Cause::Grow {
        plan: &bigger,
        stored: "{}",
    };
    let mut facts = Facts::default();
    facts.insert(Field::Status, "succeeded");
    assert_eq!(
        decide(job(), &plan, &facts, &cause, &CTX).outcome,
        Outcome::Ended
    );
    // Grown from revision 1 while the job is at 2: decided again on revision 2.
    let mut facts = running("b", 1);
    facts.insert(Field::Revision, "2");
    assert_eq!(
        decide(job(), &plan, &facts, &cause, &CTX).outcome,
        Outcome::PlanChanged { revision: 2 }
    );
    // A plan two revisions on is not the next one.
    let further = grown(&bigger, serde_json::json!([{"id": "h", "agent": "sim"}]));
    let cause = Cause::Grow {
        plan: &further,
        stored: "{}",
    };
    assert!(matches!(
        decide(job(), &plan, &running("b", 1), &cause, &CTX).outcome,
        Outcome::PlanChanged { .. }
    ));
}

/// triage routes billing → refund, tech → diagnose; draft joins both; `after` follows diagnose.
fn routed() -> Plan {
    Plan::from_value(
        json!({"steps": [
            {"id": "triage", "agent": "sim", "routes": {"billing": ["refund"], "tech": ["diagnose"]}},
            {"id": "refund", "agent": "sim", "needs": ["triage"]},
            {"id": "diagnose", "agent": "sim", "needs": ["triage"]},
            {"id": "after", "agent": "sim", "needs": ["diagnose"]},
            {"id": "draft", "agent": "sim", "needs": ["refund", "after"],
             "when": "needs.refund.amount > 5"},
        ]}),
        &Limits::default(),
    )
    .expect("valid plan")
}

/// Facts of the routed plan right after its creation, triage running.
fn routed_facts() -> Facts {
    let mut facts = running("triage", 1);
    facts.insert(Field::Left, "5");
    for (step, waiting) in [("refund", 1), ("diagnose", 1), ("after", 1), ("draft", 2)] {
        facts.insert(sf(StepField::Waiting, step), waiting.to_string());
    }
    facts
}

#[test]
fn a_router_skips_its_untaken_branch_and_everything_only_after_it() {
    let plan = routed();
    let cause = ok("triage", 1, r#"{"route":"billing"}"#);
    let fields = reads(&plan, &cause);
    // The region a route may skip is read in the same go: counts downstream, and the
    // outputs the join's condition needs.
    for field in [
        sf(StepField::Waiting, "after"),
        sf(StepField::SkippedNeeds, "draft"),
        sf(StepField::Output, "refund"),
        Field::Input,
    ] {
        assert!(fields.contains(&field), "{field:?} not read");
    }
    let decision = decide(job(), &plan, &routed_facts(), &cause, &CTX);
    assert_eq!(decision.outcome, Outcome::Succeeded);
    let started: Vec<_> = decision.dispatch.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(started, ["refund"]);
    let skipped: Vec<_> = decision
        .skipped
        .iter()
        .map(|s| (s.step.as_str(), s.reason, s.router.as_deref()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("diagnose", SkipReason::Route, Some("triage")),
            ("after", SkipReason::Needs, None)
        ]
    );
    let apply = decision.apply.expect("writes");
    assert_eq!(
        get(&apply, &sf(StepField::Status, "diagnose")),
        Some("skipped")
    );
    assert!(apply.delete.contains(&sf(StepField::Waiting, "diagnose")));
    // triage and two skipped steps are done; the join still waits for refund, with one of
    // its needs skipped.
    assert!(apply.counts.contains(&(Field::Left, 3, false)));
    assert!(
        apply
            .counts
            .contains(&(sf(StepField::Waiting, "draft"), 1, false))
    );
    assert!(
        apply
            .add
            .contains(&(sf(StepField::SkippedNeeds, "draft"), 1))
    );
}

#[test]
fn a_join_runs_when_its_last_need_succeeds_and_its_condition_holds() {
    let plan = routed();
    let mut facts = running("refund", 1);
    facts.insert(Field::Left, "2");
    facts.insert(Field::Input, "{}");
    facts.insert(sf(StepField::Waiting, "draft"), "1");
    facts.insert(sf(StepField::SkippedNeeds, "draft"), "1");
    for (amount, starts) in [(10, true), (1, false)] {
        let output = format!(r#"{{"amount":{amount}}}"#);
        let decision = decide(job(), &plan, &facts, &ok("refund", 1, &output), &CTX);
        let started: Vec<_> = decision.dispatch.iter().map(|s| s.step.as_str()).collect();
        if starts {
            assert_eq!(started, ["draft"]);
            assert!(decision.ends.is_none());
        } else {
            // The condition is false: the join is skipped, and with it the job is done.
            assert!(started.is_empty());
            assert_eq!(decision.skipped[0].reason, SkipReason::Condition);
            assert_eq!(decision.ends, Some(End::Succeeded));
        }
    }
}

#[test]
fn a_condition_that_errs_starts_the_attempt_with_its_failure() {
    let plan = routed();
    let mut facts = running("refund", 1);
    facts.insert(Field::Left, "2");
    facts.insert(sf(StepField::Waiting, "draft"), "1");
    let decision = decide(
        job(),
        &plan,
        &facts,
        &ok("refund", 1, r#"{"amount":"x"}"#),
        &CTX,
    );
    assert_eq!(decision.dispatch.len(), 1);
    let fail = decision.dispatch[0].fail.as_deref().expect("a failure");
    assert!(fail.contains("needs.refund.amount > 5"), "{fail}");
}

#[test]
fn a_root_whose_condition_is_false_is_skipped_at_creation() {
    let plan = Plan::from_value(
        json!({"steps": [
            {"id": "a", "agent": "sim", "when": "input.go"},
            {"id": "b", "agent": "sim", "needs": ["a"]},
            {"id": "c", "agent": "sim"},
        ]}),
        &Limits::default(),
    )
    .expect("valid plan");
    let new = NewJob {
        plan: "{}",
        input: r#"{"go":false}"#,
        idempotency_key: None,
        traceparent: None,
        reused: &[],
        deadline: None,
    };
    let decision = decide(
        job(),
        &plan,
        &Facts::default(),
        &Cause::Submitted(new),
        &CTX,
    );
    let started: Vec<_> = decision.dispatch.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(started, ["c"]);
    let skipped: Vec<_> = decision.skipped.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(skipped, ["a", "b"]);
    let apply = decision.apply.expect("writes");
    assert_eq!(get(&apply, &Field::Left), Some("1"));
    assert_eq!(get(&apply, &sf(StepField::Status, "b")), Some("skipped"));
    // Every step skipped: the job is done as it starts.
    let new = NewJob {
        plan: "{}",
        input: r#"{"go":false}"#,
        idempotency_key: None,
        traceparent: None,
        reused: &[("c".to_owned(), "1".to_owned())],
        deadline: None,
    };
    let decision = decide(
        job(),
        &plan,
        &Facts::default(),
        &Cause::Submitted(new),
        &CTX,
    );
    assert_eq!(decision.ends, Some(End::Succeeded));
}

/// draft → review (loops back to draft, at most 3 iterations) → publish.
fn looped() -> Plan {
    Plan::from_value(
        json!({"steps": [
            {"id": "draft", "agent": "sim"},
            {"id": "review", "agent": "sim", "needs": ["draft"],
             "loop": {"back_to": "draft", "until": "output.approved", "max_iterations": 3}},
            {"id": "publish", "agent": "sim", "needs": ["review"]},
        ]}),
        &Limits::default(),
    )
    .expect("valid plan")
}

fn review_facts(iteration: u32) -> Facts {
    let attempt = iteration;
    let mut facts = running("review", attempt);
    facts.insert(Field::Left, "2");
    facts.insert(Field::Input, "{}");
    facts.insert(sf(StepField::Attempt, "draft"), attempt.to_string());
    facts.insert(sf(StepField::Output, "draft"), r#"{"text":"v"}"#);
    facts.insert(sf(StepField::Waiting, "publish"), "1");
    if iteration > 1 {
        facts.insert(sf(StepField::Iteration, "review"), iteration.to_string());
        facts.insert(sf(StepField::Feedback, "review"), r#"[{"approved":false}]"#);
    }
    facts
}

#[test]
fn a_loop_iterates_until_its_condition_holds() {
    let plan = looped();
    let no = ok("review", 1, r#"{"approved":false,"n":1}"#);
    let fields = reads(&plan, &no);
    assert!(fields.contains(&sf(StepField::Iteration, "review")));
    assert!(fields.contains(&sf(StepField::Attempt, "draft")));
    let decision = decide(job(), &plan, &review_facts(1), &no, &CTX);
    assert_eq!(
        decision.outcome,
        Outcome::Iterated {
            back_to: "draft".into(),
            iteration: 2
        }
    );
    // The head runs again as attempt 2 with a fresh budget and its loop input.
    assert_eq!(decision.dispatch.len(), 1);
    assert_eq!(
        (
            decision.dispatch[0].step.as_str(),
            decision.dispatch[0].attempt
        ),
        ("draft", 2)
    );
    let apply = decision.apply.expect("writes");
    assert_eq!(get(&apply, &sf(StepField::Base, "draft")), Some("1"));
    assert_eq!(
        get(&apply, &sf(StepField::Status, "review")),
        Some("waiting")
    );
    assert_eq!(get(&apply, &sf(StepField::Waiting, "review")), Some("1"));
    assert_eq!(
        get(&apply, &sf(StepField::LoopInput, "draft")),
        Some(r#"{"feedback":[{"approved":false,"n":1}],"iteration":2}"#)
    );
    assert!(apply.add.contains(&(Field::Left, 1)));
    // Its dependents wait: publish is not started.
    assert!(apply.counts.is_empty());

    // Approved: the loop is left, publish starts.
    let yes = ok("review", 2, r#"{"approved":true}"#);
    let decision = decide(job(), &plan, &review_facts(2), &yes, &CTX);
    assert_eq!(decision.outcome, Outcome::Succeeded);
    assert_eq!(decision.dispatch[0].step, "publish");
}

#[test]
fn a_loop_escalates_at_its_bound_and_when_its_head_stalls() {
    let plan = looped();
    let no = ok("review", 3, r#"{"approved":false}"#);
    let decision = decide(job(), &plan, &review_facts(3), &no, &CTX);
    assert_eq!(decision.outcome, Outcome::Escalated);
    let failure = decision.failure.expect("a failure");
    assert_eq!(
        failure.class,
        baton_protocol::messages::FailureClass::LoopLimit
    );
    assert!(
        failure.message.contains("draft -> review"),
        "{}",
        failure.message
    );

    // The head answering as in the iteration before: stalled at once.
    let mut facts = running("draft", 2);
    facts.insert(sf(StepField::Output, "draft"), r#"{"text":"v"}"#);
    facts.insert(sf(StepField::Iteration, "review"), "2");
    let same = ok("draft", 2, r#"{"text":"v"}"#);
    let decision = decide(job(), &plan, &facts, &same, &CTX);
    assert_eq!(decision.outcome, Outcome::Escalated);
    assert_eq!(
        decision.failure.expect("a failure").class,
        baton_protocol::messages::FailureClass::LoopStalled
    );
    // Something new: the loop goes on.
    facts.insert(sf(StepField::Waiting, "review"), "1");
    facts.insert(sf(StepField::Attempt, "review"), "1");
    facts.insert(Field::Left, "3");
    let other = ok("draft", 2, r#"{"text":"w"}"#);
    let decision = decide(job(), &plan, &facts, &other, &CTX);
    assert_eq!(decision.outcome, Outcome::Succeeded);
    assert_eq!(
        (
            decision.dispatch[0].step.as_str(),
            decision.dispatch[0].attempt
        ),
        ("review", 2)
    );
}
