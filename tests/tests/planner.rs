//! Plan-and-execute against real servers (contract v1.1, docs/protocol.md §4c): a planner's
//! sub-plan is validated like a submitted plan before any of it is published, a rejected one
//! is a failed attempt the planner's retry policy handles, and an accepted one runs inside
//! the job as `<planner>/<sub id>` before the planner's dependents start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use baton_protocol::messages::{EventKind, FailureClass, JobStatus, StepStatus};
use baton_tests::Fleet;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn planner_plan(max_attempts: u32) -> Value {
    json!({"name": "plan-and-execute", "steps": [
        {"id": "plan", "agent": "sim", "input": {"sim": "$input/plan"},
         "expand": {"allowed_agents": ["sim"], "max_steps": 10},
         "retry": {"max_attempts": max_attempts, "initial_backoff_ms": 10}},
        // Starts only once the sub-plan is done, with the planner's final output.
        {"id": "report", "agent": "sim", "needs": ["plan"]},
    ]})
}

fn dispatches(events: &[baton_protocol::messages::Event], step: &str) -> usize {
    events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::StepDispatched { step_id, .. } if step_id == step))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_plan_with_a_cycle_is_rejected_and_the_retry_runs_its_sub_plan() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let events = fleet.record_events().await;
    let cyclic = json!({"plan": {"steps": [
        {"id": "a", "agent": "sim", "needs": ["b"]},
        {"id": "b", "agent": "sim", "needs": ["a"]},
    ]}});
    let good = json!({"plan": {"steps": [
        // A root: it needs the planner, and sees its output under needs.plan.
        {"id": "search", "agent": "sim"},
        {"id": "write", "agent": "sim", "needs": ["search"],
         "when": "needs.search.needs.plan.plan.steps.size() == 2"},
    ]}});
    let input = json!({"plan": {"outputs": [cyclic, good]}});
    let job = fleet.submit(planner_plan(2), input).await;
    let status = fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;

    // Attempt 1's sub-plan was rejected, naming the cycle, and published nothing.
    let log = events.of(job);
    let failed: Vec<_> = log
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepFailed { step_id, error, .. } if step_id == "plan" => {
                Some(error.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].class, FailureClass::InvalidOutput);
    assert!(
        failed[0].message.contains("a -> b -> a"),
        "{}",
        failed[0].message
    );
    assert!(!log.iter().any(|e| matches!(
        &e.kind,
        EventKind::StepDispatched { step_id, .. } if step_id == "plan/a" || step_id == "plan/b"
    )));
    // Attempt 2's sub-plan ran inside the job, once each.
    assert_eq!(dispatches(&log, "plan/search"), 1);
    assert_eq!(dispatches(&log, "plan/write"), 1);
    assert_eq!(status.steps["plan"].status, StepStatus::Succeeded);
    assert_eq!(status.steps["plan"].attempts, 2);
    assert_eq!(status.steps["plan/search"].status, StepStatus::Succeeded);
    assert_eq!(status.steps["plan/write"].status, StepStatus::Succeeded);
    // The planner succeeded with its sub-plan's sink's output (write echoes its input, whose
    // needs name the sub-plan's own ids), and only then did report start.
    let planned = status.steps["plan"].output.clone().unwrap();
    assert!(planned["needs"]["search"].is_object(), "{planned}");
    let report = status.steps["report"].output.clone().unwrap();
    assert_eq!(report["needs"]["plan"], planned);
    let at = |pred: &dyn Fn(&EventKind) -> bool| log.iter().position(|e| pred(&e.kind)).unwrap();
    let finished =
        at(&|k| matches!(k, EventKind::SubPlanSucceeded { step_id } if step_id == "plan"));
    let reported =
        at(&|k| matches!(k, EventKind::StepDispatched { step_id, .. } if step_id == "report"));
    assert!(finished < reported);
    // The job's output is its own sink's, not the sub-plan's.
    assert_eq!(status.output, Some(report));
    fleet.assert_replays(job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_plan_naming_an_agent_outside_allowed_agents_is_rejected() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let events = fleet.record_events().await;
    let input = json!({"plan": {"output": {"plan": {"steps": [
        {"id": "x", "agent": "sim"},
        {"id": "y", "agent": "shell", "needs": ["x"]},
    ]}}}});
    let job = fleet.submit(planner_plan(1), input).await;
    let status = fleet.wait_for(job, JobStatus::Escalated, WAIT).await;
    let error = status.steps["plan"]
        .error
        .clone()
        .expect("the planner's error");
    assert_eq!(error.class, FailureClass::InvalidOutput);
    assert!(
        error.message.contains("\"shell\"") && error.message.contains("allowed_agents"),
        "{}",
        error.message
    );
    assert!(!status.steps.contains_key("plan/x"));
    assert_eq!(dispatches(&events.of(job), "plan/x"), 0);
    assert_eq!(status.steps["report"].status, StepStatus::Waiting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_planners_are_rejected_at_submit() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    for (plan, mention) in [
        (
            json!({"steps": [{"id": "p", "agent": "sim", "expand": {"allowed_agents": []}}]}),
            "allowed_agents",
        ),
        (
            json!({"steps": [{"id": "p", "agent": "sim",
                              "expand": {"allowed_agents": ["sim"], "max_steps": 100000}}]}),
            "max_steps",
        ),
        (json!({"steps": [{"id": "p/q", "agent": "sim"}]}), "p/q"),
    ] {
        let reply = fleet.submit_raw(json!({"plan": plan, "input": {}})).await;
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(mention), "{reply}");
    }
}
