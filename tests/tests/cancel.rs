//! Cancellation and deadlines against real servers (contract v1.1, docs/protocol.md §4b):
//! a cancel reaches the running agent, pending steps end `cancelled`, late results are
//! fenced, a finished job is left alone, and a deadline ends a job `failed`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baton_protocol::messages::{CancelRequest, EventKind, JobStatus, StepStatus, SubmitRequest};
use baton_protocol::{ErrorCode, subject};
use baton_tests::Fleet;
use baton_worker::{Agent, AgentError, Task};
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// An agent that works for a minute, counting the attempts it started and the futures the
/// runtime dropped before they finished.
#[derive(Clone, Default)]
struct Slow {
    started: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

struct CountsDrop(Arc<AtomicUsize>);

impl Drop for CountsDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Agent for Slow {
    async fn process(&self, _task: Task) -> Result<Value, AgentError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let guard = CountsDrop(self.dropped.clone());
        tokio::time::sleep(Duration::from_secs(60)).await;
        std::mem::forget(guard);
        Ok(json!("too late"))
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn body(value: &impl serde::Serialize) -> bytes::Bytes {
    serde_json::to_vec(value).unwrap().into()
}

async fn cancel(fleet: &Fleet, request: &CancelRequest) -> Value {
    fleet
        .request_raw(subject::CANCEL, None, body(request))
        .await
}

/// slow → after; beside them a root that finished, so the cancel has each kind of step.
fn plan() -> Value {
    json!({"steps": [
        {"id": "work", "agent": "slow", "timeout_ms": 120000},
        {"id": "after", "agent": "sim", "needs": ["work"]},
        {"id": "quick", "agent": "sim"},
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_the_running_agent_and_ends_pending_steps() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let slow = Slow::default();
    fleet.spawn_agent("slow", slow.clone());
    let events = fleet.record_events().await;
    let job = fleet.submit(plan(), json!({})).await;
    eventually("the slow agent to start", || {
        slow.started.load(Ordering::SeqCst) == 1
    })
    .await;
    // `quick` has finished by the time this is read.
    eventually("quick to succeed", || {
        events.of(job).iter().any(
            |e| matches!(&e.kind, EventKind::StepSucceeded { step_id, .. } if step_id == "quick"),
        )
    })
    .await;

    let reply = cancel(
        &fleet,
        &CancelRequest {
            job_id: Some(job),
            reason: Some("the customer hung up".into()),
            by: Some("test".into()),
            ..CancelRequest::default()
        },
    )
    .await;
    assert_eq!(reply["status"], json!("cancelled"), "{reply}");
    assert!(reply.get("error").is_none(), "{reply}");

    // The agent's future was dropped, not left to run for its minute.
    eventually("the agent's future to be dropped", || {
        slow.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    let status = fleet.status(job).await;
    assert_eq!(status.status, JobStatus::Cancelled);
    assert_eq!(status.steps["work"].status, StepStatus::Cancelled);
    assert_eq!(status.steps["after"].status, StepStatus::Cancelled);
    assert_eq!(status.steps["quick"].status, StepStatus::Succeeded);
    let error = status.error.unwrap_or_default();
    assert!(error.contains("the customer hung up"), "{error}");

    let log = events.of(job);
    let cancelled: Vec<_> = log
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepCancelled { step_id, attempt } => Some((step_id.clone(), *attempt)),
            _ => None,
        })
        .collect();
    assert!(
        cancelled.contains(&("work".into(), Some(1))),
        "{cancelled:?}"
    );
    assert!(cancelled.contains(&("after".into(), None)), "{cancelled:?}");
    assert!(log.iter().any(|e| matches!(
        &e.kind,
        EventKind::JobCancelled { by: Some(by), .. } if by == "test"
    )));
    // The cancelled task was acknowledged: nothing is redelivered to the agent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(slow.started.load(Ordering::SeqCst), 1);

    // Cancelling again changes nothing and says so.
    let again = cancel(
        &fleet,
        &CancelRequest {
            job_id: Some(job),
            ..CancelRequest::default()
        },
    )
    .await;
    assert_eq!(
        again["error"]["code"],
        json!(ErrorCode::AlreadyEnded.as_str()),
        "{again}"
    );
    assert_eq!(again["status"], json!("cancelled"));
    fleet.assert_replays(job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_not_cancelled_and_a_late_result_is_fenced() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    // A finished job, named by its idempotency key.
    let reply = fleet
        .request_raw(
            subject::SUBMIT,
            None,
            body(&SubmitRequest {
                plan: json!({"steps": [{"id": "a", "agent": "sim"}]}),
                input: json!({}),
                idempotency_key: Some("done-1".into()),
                deadline_ms: None,
            }),
        )
        .await;
    let job: Uuid = serde_json::from_value(reply["job_id"].clone()).unwrap();
    fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    let reply = cancel(
        &fleet,
        &CancelRequest {
            idempotency_key: Some("done-1".into()),
            ..CancelRequest::default()
        },
    )
    .await;
    assert_eq!(reply["error"]["code"], json!("already_ended"), "{reply}");
    assert_eq!(reply["status"], json!("succeeded"));
    assert_eq!(fleet.status(job).await.status, JobStatus::Succeeded);
    // An unknown job is not found.
    let reply = cancel(
        &fleet,
        &CancelRequest {
            job_id: Some(Uuid::now_v7()),
            ..CancelRequest::default()
        },
    )
    .await;
    assert_eq!(reply["error"]["code"], json!("not_found"), "{reply}");

    // A worker that did not hear the cancel (it started after the notice, which is core
    // NATS) runs the task and answers late; its result is fenced.
    let events = fleet.record_events().await;
    let job = fleet
        .submit(json!({"steps": [{"id": "w", "agent": "deaf"}]}), json!({}))
        .await;
    let reply = cancel(
        &fleet,
        &CancelRequest {
            job_id: Some(job),
            ..CancelRequest::default()
        },
    )
    .await;
    assert_eq!(reply["status"], json!("cancelled"), "{reply}");
    // The deaf agent starts now and answers.
    fleet.spawn_sim("deaf");
    eventually("the late result to be fenced", || {
        events.of(job).iter().any(|e| {
            matches!(&e.kind, EventKind::ResultFenced { reason, .. } if reason.starts_with("ended"))
        })
    })
    .await;
    assert_eq!(fleet.status(job).await.status, JobStatus::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_ends_the_job_failed_with_deadline_exceeded() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let slow = Slow::default();
    fleet.spawn_agent("slow", slow.clone());
    let events = fleet.record_events().await;
    let reply = fleet
        .request_raw(
            subject::SUBMIT,
            None,
            body(&SubmitRequest {
                plan: plan(),
                input: json!({}),
                idempotency_key: None,
                deadline_ms: Some(700),
            }),
        )
        .await;
    let job: Uuid = serde_json::from_value(reply["job_id"].clone()).expect("a job id");
    let status = fleet.wait_for(job, JobStatus::Failed, WAIT).await;
    let error = status.error.unwrap_or_default();
    assert!(error.starts_with("deadline_exceeded"), "{error}");
    assert_eq!(status.steps["work"].status, StepStatus::Cancelled);
    assert_eq!(status.steps["after"].status, StepStatus::Cancelled);
    // The running agent was told to stop.
    eventually("the agent's future to be dropped", || {
        slow.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(events.of(job).iter().any(|e| matches!(
        &e.kind,
        EventKind::JobFailed { error, .. } if error.starts_with("deadline_exceeded")
    )));
    fleet.assert_replays(job).await;
    // A job that ends before its deadline is left alone by the timer.
    let reply = fleet
        .request_raw(
            subject::SUBMIT,
            None,
            body(&SubmitRequest {
                plan: json!({"steps": [{"id": "a", "agent": "sim"}]}),
                input: json!({}),
                idempotency_key: None,
                deadline_ms: Some(300),
            }),
        )
        .await;
    let job: Uuid = serde_json::from_value(reply["job_id"].clone()).unwrap();
    fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fleet.status(job).await.status, JobStatus::Succeeded);
    // A zero deadline is refused.
    let reply = fleet
        .request_raw(
            subject::SUBMIT,
            None,
            body(&SubmitRequest {
                plan: json!({"steps": [{"id": "a", "agent": "sim"}]}),
                input: json!({}),
                idempotency_key: None,
                deadline_ms: Some(0),
            }),
        )
        .await;
    assert_eq!(reply["error"]["code"], json!("invalid_request"), "{reply}");
}
