//! Control flow against real servers (contract v1.1, docs/protocol.md §3b): routers and
//! joins, `when` conditions, skipped steps, and what replay makes of them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use baton_protocol::messages::{EventKind, JobStatus, SkipReason, StepStatus};
use baton_protocol::subject;
use baton_tests::Fleet;
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// The triage plan of the contract: a router with three branches and a join after two of
/// them. Each step answers what the job input says under its own id.
fn triage(default: bool) -> Value {
    let mut routes = json!({"billing": ["refund"], "tech": ["diagnose"]});
    if default {
        routes["_default"] = json!(["human"]);
    }
    let sim = |id: &str| json!({"sim": format!("$input/{id}")});
    let mut steps = vec![
        json!({"id": "triage", "agent": "sim", "routes": routes, "input": {"sim": "$input/triage"},
               "retry": {"max_attempts": 2, "initial_backoff_ms": 10}}),
        json!({"id": "refund", "agent": "sim", "needs": ["triage"], "input": sim("refund")}),
        json!({"id": "diagnose", "agent": "sim", "needs": ["triage"], "input": sim("diagnose")}),
        // A join: runs when every need is succeeded or skipped, with the outputs that ran.
        json!({"id": "draft", "agent": "sim", "needs": ["refund", "diagnose"]}),
    ];
    if default {
        steps.push(
            json!({"id": "human", "agent": "sim", "needs": ["triage"], "input": sim("human")}),
        );
    }
    json!({"name": "triage", "steps": steps})
}

fn body(value: Value) -> bytes::Bytes {
    serde_json::to_vec(&value).unwrap().into()
}

fn routed(route: Value) -> Value {
    json!({
        "triage": {"output": {"route": route}},
        "refund": {"output": {"refund": 10}},
        "diagnose": {"output": {"diagnosis": "reboot"}},
        "human": {"output": {"human": true}},
    })
}

fn skips(events: &[baton_protocol::messages::Event]) -> Vec<(String, SkipReason, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepSkipped {
                step_id,
                reason,
                router,
            } => Some((step_id.clone(), *reason, router.clone())),
            _ => None,
        })
        .collect()
}

async fn run(
    fleet: &Fleet,
    plan: Value,
    input: Value,
) -> (Uuid, baton_protocol::messages::StatusReply) {
    let job = fleet.submit(plan, input).await;
    let status = fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    fleet.assert_replays(job).await;
    (job, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_takes_each_branch_and_a_join_runs_with_the_needs_that_ran() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let events = fleet.record_events().await;

    // billing: refund runs, diagnose is skipped, the join sees only refund.
    let (job, status) = run(&fleet, triage(true), routed(json!("billing"))).await;
    assert_eq!(status.steps["refund"].status, StepStatus::Succeeded);
    assert_eq!(status.steps["diagnose"].status, StepStatus::Skipped);
    assert_eq!(status.steps["human"].status, StepStatus::Skipped);
    assert_eq!(status.steps["diagnose"].attempts, 0);
    let draft = status.steps["draft"].output.clone().unwrap();
    assert_eq!(draft["needs"], json!({"refund": {"refund": 10}}), "{draft}");
    // Sinks: draft and human; the skipped one gives no output.
    assert_eq!(status.output, Some(json!({"draft": draft})));
    let mut seen = skips(&events.of(job));
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        [
            ("diagnose".into(), SkipReason::Route, Some("triage".into())),
            ("human".into(), SkipReason::Route, Some("triage".into())),
        ]
    );

    // tech: the other branch.
    let (_, status) = run(&fleet, triage(true), routed(json!("tech"))).await;
    assert_eq!(status.steps["refund"].status, StepStatus::Skipped);
    assert_eq!(status.steps["diagnose"].status, StepStatus::Succeeded);
    let draft = status.steps["draft"].output.clone().unwrap();
    assert_eq!(draft["needs"], json!({"diagnose": {"diagnosis": "reboot"}}));

    // A list of branches: both run, and the join sees both.
    let (_, status) = run(&fleet, triage(true), routed(json!(["billing", "tech"]))).await;
    assert_eq!(status.steps["refund"].status, StepStatus::Succeeded);
    assert_eq!(status.steps["diagnose"].status, StepStatus::Succeeded);
    assert_eq!(status.steps["human"].status, StepStatus::Skipped);
    let draft = status.steps["draft"].output.clone().unwrap();
    assert_eq!(
        draft["needs"],
        json!({"refund": {"refund": 10}, "diagnose": {"diagnosis": "reboot"}})
    );

    // A route naming no branch takes `_default`; both branches of the join are skipped, so
    // the join is skipped too (every need skipped).
    let (job, status) = run(&fleet, triage(true), routed(json!("spam"))).await;
    assert_eq!(status.steps["human"].status, StepStatus::Succeeded);
    assert_eq!(status.steps["draft"].status, StepStatus::Skipped);
    assert_eq!(status.output, Some(json!({"human": {"human": true}})));
    let draft_skip: Vec<_> = skips(&events.of(job))
        .into_iter()
        .filter(|s| s.0 == "draft")
        .collect();
    assert_eq!(draft_skip, [("draft".into(), SkipReason::Needs, None)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_naming_no_branch_without_a_default_is_an_invalid_output() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let job = fleet.submit(triage(false), routed(json!("spam"))).await;
    let status = fleet.wait_for(job, JobStatus::Escalated, WAIT).await;
    let triage = &status.steps["triage"];
    assert_eq!(triage.status, StepStatus::Escalated);
    // The router's retry policy applied: two attempts, both invalid.
    assert_eq!(triage.attempts, 2);
    let error = triage.error.as_ref().expect("the router's error");
    assert_eq!(error.class.as_str(), "invalid_output");
    assert!(error.message.contains("spam"), "{}", error.message);
    // Nothing downstream ran or was skipped while the router is escalated.
    assert_eq!(status.steps["refund"].status, StepStatus::Waiting);
    // A human's output for the router is checked the same way …
    let reply = fleet
        .request_raw(
            subject::ESCALATIONS_RESOLVE,
            None,
            body(json!({"id": format!("{job}.triage"), "action": "output", "output": {"route": "spam"}})),
        )
        .await;
    assert_eq!(reply["error"]["code"], json!("invalid_output"), "{reply}");
    // … and a valid one routes.
    let reply = fleet
        .request_raw(
            subject::ESCALATIONS_RESOLVE,
            None,
            body(json!({"id": format!("{job}.triage"), "action": "output", "output": {"route": "tech"}})),
        )
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    let status = fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    assert_eq!(status.steps["refund"].status, StepStatus::Skipped);
    assert_eq!(status.steps["diagnose"].status, StepStatus::Succeeded);
    fleet.assert_replays(job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_false_condition_skips_a_step_and_its_sole_dependents() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let events = fleet.record_events().await;
    let plan = json!({"steps": [
        {"id": "classify", "agent": "sim", "input": {"sim": "$input/classify"}},
        {"id": "diagnose", "agent": "sim", "needs": ["classify"],
         "when": "needs.classify.confidence >= 0.8"},
        // Only after diagnose: skipped with it.
        {"id": "fix", "agent": "sim", "needs": ["diagnose"]},
        // After both: runs with classify's output only.
        {"id": "report", "agent": "sim", "needs": ["classify", "fix"]},
        // A root whose condition reads the job input.
        {"id": "audit", "agent": "sim", "when": "input.audit == true"},
    ]});
    let input = |confidence: f64| json!({"classify": {"output": {"confidence": confidence}}, "audit": false});
    let (job, status) = run(&fleet, plan.clone(), input(0.5)).await;
    for skipped in ["diagnose", "fix", "audit"] {
        assert_eq!(
            status.steps[skipped].status,
            StepStatus::Skipped,
            "{skipped}"
        );
    }
    assert_eq!(status.steps["report"].status, StepStatus::Succeeded);
    let report = status.steps["report"].output.clone().unwrap();
    assert_eq!(
        report["needs"],
        json!({"classify": {"confidence": 0.5}}),
        "{report}"
    );
    let mut seen = skips(&events.of(job));
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        [
            ("audit".into(), SkipReason::Condition, None),
            ("diagnose".into(), SkipReason::Condition, None),
            ("fix".into(), SkipReason::Needs, None),
        ]
    );

    // Confident: everything runs.
    let (_, status) = run(&fleet, plan, input(0.9)).await;
    assert_eq!(status.steps["diagnose"].status, StepStatus::Succeeded);
    assert_eq!(status.steps["fix"].status, StepStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_sinks_are_all_skipped_succeeds_with_null() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let plan = json!({"steps": [
        {"id": "only", "agent": "sim", "when": "input.run"},
        {"id": "after", "agent": "sim", "needs": ["only"]},
    ]});
    let (_, status) = run(&fleet, plan, json!({"run": false})).await;
    assert_eq!(status.steps["only"].status, StepStatus::Skipped);
    assert_eq!(status.steps["after"].status, StepStatus::Skipped);
    // `null` on the wire (which the typed reply reads as no output).
    assert_eq!(status.output.unwrap_or_default(), Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_that_cannot_be_evaluated_fails_the_attempt_as_invalid_output() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let plan = json!({"steps": [
        {"id": "a", "agent": "sim", "input": {"sim": "$input/a"}},
        // `score` is a string: comparing it with a number is a run-time error.
        {"id": "b", "agent": "sim", "needs": ["a"], "when": "needs.a.score > 3"},
    ]});
    let job = fleet
        .submit(plan, json!({"a": {"output": {"score": "high"}}}))
        .await;
    let status = fleet.wait_for(job, JobStatus::Escalated, WAIT).await;
    let b = &status.steps["b"];
    assert_eq!(b.status, StepStatus::Escalated);
    let error = b.error.as_ref().expect("b's error");
    assert_eq!(error.class.as_str(), "invalid_output");
    assert!(
        error.message.contains("needs.a.score > 3"),
        "{}",
        error.message
    );
    // No task was published for b.
    let trace = fleet.trace(job).await;
    assert!(
        !trace.decisions.iter().any(|e| matches!(
            &e.kind,
            EventKind::StepDispatched { step_id, .. } if step_id == "b"
        )),
        "b was dispatched"
    );
    fleet.assert_replays(job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_control_flow_is_rejected_at_submit_naming_the_step() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let cases = [
        (
            "syntax",
            json!({"steps": [{"id": "a", "agent": "sim", "when": "input.x >"}]}),
            &["\"a\"", "when"][..],
        ),
        (
            "unknown variable",
            json!({"steps": [{"id": "a", "agent": "sim", "when": "secrets.x"}]}),
            &["\"a\"", "secrets"][..],
        ),
        (
            "a need it does not have",
            json!({"steps": [
                {"id": "a", "agent": "sim"},
                {"id": "b", "agent": "sim"},
                {"id": "c", "agent": "sim", "needs": ["a"], "when": "needs.b.ok"},
            ]}),
            &["\"c\"", "needs.b"][..],
        ),
        (
            "a branch naming a step that does not need the router",
            json!({"steps": [
                {"id": "r", "agent": "sim", "routes": {"x": ["b"]}},
                {"id": "b", "agent": "sim"},
            ]}),
            &["\"r\"", "\"b\""][..],
        ),
    ];
    for (name, plan, mentions) in cases {
        let reply = fleet.submit_raw(json!({"plan": plan, "input": {}})).await;
        assert_eq!(
            reply["error"]["code"],
            json!("invalid_plan"),
            "{name}: {reply}"
        );
        let message = reply["error"]["message"].as_str().unwrap();
        for mention in mentions {
            assert!(message.contains(mention), "{name}: {message}");
        }
    }
}
