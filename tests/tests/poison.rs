//! A task that crashes its worker on every delivery is delivered a bounded number of times,
//! then dead-lettered, removed from the work queue and escalated — and workers serve the next
//! job normally.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use baton_protocol::messages::{FailureClass, JobStatus};
use baton_protocol::subject;
use baton_tests::Fleet;
use serde_json::{Value, json};

const WORKER: [&str; 6] = [
    "--type",
    "crashy",
    "--ack-wait-secs",
    "1",
    "--max-deliver",
    "3",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_task_is_dead_lettered_removed_and_escalated() {
    let mut fleet = Fleet::with_coordinator().await;
    let mut worker = fleet.spawn_process("baton-agent-sim", &WORKER);
    // Retries would allow 5 attempts and the timeout is long: only the poison path can end
    // this step quickly.
    let plan = json!({"steps": [{"id": "boom", "agent": "crashy", "timeout_ms": 60000,
        "retry": {"max_attempts": 5}}]});
    let job = fleet.submit(plan, json!({"sim": {"fail": "crash"}})).await;
    // Play the supervisor (Kubernetes would): restart the worker whenever it dies.
    let started = Instant::now();
    let mut restarts = 0;
    let status = loop {
        let status = fleet.status(job).await;
        if status.status != JobStatus::Running {
            break status;
        }
        if fleet.process_exited(worker) {
            restarts += 1;
            worker = fleet.spawn_process("baton-agent-sim", &WORKER);
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "not escalated: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.status, JobStatus::Escalated, "{status:#?}");
    let step = &status.steps["boom"];
    assert_eq!(step.attempts, 1, "escalated without retries");
    let error = step.error.clone().unwrap();
    assert_eq!(error.class, FailureClass::Poison);
    assert!(
        error.message.contains("delivered 3 times"),
        "{}",
        error.message
    );
    assert_eq!(restarts, 3, "one crash per delivery, bounded by MaxDeliver");

    // Dead-lettered with its input, and gone from the work queue. The dead letter is
    // published just after the transition that status reports, so it may land a moment
    // later (on a loaded machine, after the status poll above saw the escalation).
    let js = async_nats::jetstream::new(fleet.client.clone());
    let dlq = js.get_stream(subject::stream::DLQ).await.unwrap();
    let mut found = None;
    for _ in 0..100 {
        if let Ok(message) = dlq
            .get_last_raw_message_by_subject("baton.dlq.crashy")
            .await
        {
            found = Some(message);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let letter = found.expect("no dead letter on baton.dlq.crashy");
    let body: Value = serde_json::from_slice(&letter.payload).unwrap();
    assert_eq!(body["job_id"], json!(job));
    assert_eq!(body["input"]["input"]["sim"]["fail"], json!("crash"));
    assert_eq!(
        letter
            .headers
            .get(subject::header::DLQ_REASON)
            .unwrap()
            .as_str(),
        "non-retryable error"
    );
    for _ in 0..100 {
        if fleet.stored_tasks().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        fleet.stored_tasks().await,
        0,
        "the poison task stayed in the work queue"
    );

    // The (restarted) worker serves the next job.
    if fleet.process_exited(worker) {
        worker = fleet.spawn_process("baton-agent-sim", &WORKER);
    }
    let plan = json!({"steps": [{"id": "fine", "agent": "crashy"}]});
    let next = fleet.submit(plan, json!({"ok": true})).await;
    fleet
        .wait_for(next, JobStatus::Succeeded, Duration::from_secs(20))
        .await;
    assert!(!fleet.process_exited(worker));
}
