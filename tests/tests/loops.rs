//! Bounded loops against real servers (contract v1.1, docs/protocol.md §4d): a draft →
//! review loop that converges, one that reaches `max_iterations` and escalates naming the
//! loop (then a human's output leaves it), and a ping-pong stopped at once as stalled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use baton_protocol::messages::{EventKind, FailureClass, JobStatus, StepStatus};
use baton_protocol::subject;
use baton_tests::Fleet;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// draft → review (loops back to draft) → publish. `draft` echoes its input, which carries
/// `loop` from the second iteration on, unless the job input gives it outputs.
fn plan(draft: Value, max_iterations: u32) -> Value {
    json!({"name": "draft-review", "steps": [
        draft,
        {"id": "review", "agent": "sim", "needs": ["draft"], "input": {"sim": "$input/review"},
         "loop": {"back_to": "draft", "until": "output.approved", "max_iterations": max_iterations}},
        {"id": "publish", "agent": "sim", "needs": ["review"]},
    ]})
}

fn echoing_draft() -> Value {
    json!({"id": "draft", "agent": "sim"})
}

fn iterations(events: &[baton_protocol::messages::Event]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::LoopIterated {
                iteration, back_to, ..
            } if back_to == "draft" => Some(*iteration),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_review_loop_converges_and_feeds_the_reviews_back() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let events = fleet.record_events().await;
    let input = json!({"review": {"outputs": [
        {"approved": false, "note": "too long"},
        {"approved": true},
    ]}});
    let job = fleet.submit(plan(echoing_draft(), 4), input).await;
    let status = fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    assert_eq!(iterations(&events.of(job)), [2]);
    assert_eq!(status.steps["draft"].attempts, 2);
    assert_eq!(status.steps["review"].attempts, 2);
    assert_eq!(status.steps["publish"].status, StepStatus::Succeeded);
    // The second draft was told which iteration it is and what the review said.
    let draft = status.steps["draft"].output.clone().unwrap();
    assert_eq!(
        draft["loop"],
        json!({"iteration": 2, "feedback": [{"approved": false, "note": "too long"}]}),
        "{draft}"
    );
    let publish = status.steps["publish"].output.clone().unwrap();
    assert_eq!(publish["needs"]["review"], json!({"approved": true}));
    fleet.assert_replays(job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_escalates_at_max_iterations_and_a_human_output_leaves_it() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let events = fleet.record_events().await;
    let input = json!({"review": {"output": {"approved": false}}});
    let job = fleet.submit(plan(echoing_draft(), 3), input).await;
    let status = fleet.wait_for(job, JobStatus::Escalated, WAIT).await;
    assert_eq!(iterations(&events.of(job)), [2, 3]);
    // Exactly max_iterations rounds.
    assert_eq!(status.steps["draft"].attempts, 3);
    assert_eq!(status.steps["review"].attempts, 3);
    let review = &status.steps["review"];
    assert_eq!(review.status, StepStatus::Escalated);
    let error = review.error.clone().unwrap();
    assert_eq!(error.class, FailureClass::LoopLimit);
    assert!(
        error.message.contains("loop draft -> review"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("max_iterations (3)"),
        "{}",
        error.message
    );
    assert_eq!(status.steps["publish"].status, StepStatus::Waiting);

    // A human's output leaves the loop.
    let reply = fleet
        .request_raw(
            subject::ESCALATIONS_RESOLVE,
            None,
            serde_json::to_vec(&json!({"id": format!("{job}.review"), "action": "output",
                                        "output": {"approved": true, "by": "editor"}}))
            .unwrap()
            .into(),
        )
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    let status = fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    let publish = status.steps["publish"].output.clone().unwrap();
    assert_eq!(publish["needs"]["review"]["by"], json!("editor"));
    assert_eq!(status.steps["draft"].attempts, 3);
    fleet.assert_replays(job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_pong_loop_is_stopped_early_as_stalled() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    // The draft answers the same thing whatever the review says.
    let draft = json!({"id": "draft", "agent": "sim", "input": {"sim": "$input/draft"}});
    let input = json!({
        "draft": {"output": {"text": "same"}},
        "review": {"output": {"approved": false}},
    });
    let job = fleet.submit(plan(draft, 10), input).await;
    let status = fleet.wait_for(job, JobStatus::Escalated, WAIT).await;
    let draft = &status.steps["draft"];
    assert_eq!(draft.status, StepStatus::Escalated);
    // Stopped in the second iteration, not at the tenth.
    assert_eq!(draft.attempts, 2);
    assert_eq!(status.steps["review"].attempts, 1);
    let error = draft.error.clone().unwrap();
    assert_eq!(error.class, FailureClass::LoopStalled);
    assert!(
        error.message.contains("loop review -> draft"),
        "{}",
        error.message
    );
    fleet.assert_replays(job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_loops_are_rejected_at_submit() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let looped = |lp: Value| {
        json!({"steps": [
            {"id": "a", "agent": "sim"},
            {"id": "b", "agent": "sim", "needs": ["a"], "loop": lp},
            {"id": "c", "agent": "sim"},
        ]})
    };
    for (plan, mention) in [
        (
            looped(json!({"back_to": "a", "until": "output.ok", "max_iterations": 0})),
            "max_iterations",
        ),
        (
            looped(json!({"back_to": "a", "until": "output.ok", "max_iterations": 1000})),
            "max_iterations",
        ),
        (
            looped(json!({"back_to": "c", "until": "output.ok", "max_iterations": 3})),
            "back_to",
        ),
        (
            looped(json!({"back_to": "a", "until": "output.ok >", "max_iterations": 3})),
            "until",
        ),
        (
            looped(json!({"back_to": "a", "until": "output.ok"})),
            "max_iterations",
        ),
    ] {
        let reply = fleet.submit_raw(json!({"plan": plan, "input": {}})).await;
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(mention), "{reply}");
    }
}
