//! A worker paused past its ack deadline (SIGSTOP, then SIGCONT) cannot overwrite the work
//! of the worker that got the redelivered copy: the step's result is recorded once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_nats::jetstream;
use baton_harness::Signal;
use baton_protocol::messages::{EventKind, JobStatus};
use baton_protocol::{AgentName, subject};
use baton_tests::Fleet;
use futures::StreamExt;
use serde_json::json;

const WORKER: [&str; 6] = [
    "--type",
    "zombie",
    "--ack-wait-secs",
    "1",
    "--concurrency",
    "1",
];

async fn ack_pending(fleet: &Fleet) -> Option<usize> {
    let js = jetstream::new(fleet.client.clone());
    let stream = js.get_stream(subject::stream::TASKS).await.ok()?;
    let name = subject::consumer::agent(&AgentName::new("zombie").unwrap());
    let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer(&name).await.ok()?;
    Some(consumer.info().await.ok()?.num_ack_pending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_cannot_overwrite_the_redelivered_copys_result() {
    let mut fleet = Fleet::with_coordinator().await;
    let events = fleet.record_events().await;
    // Every result published, whether or not it counts.
    let mut results = fleet
        .client
        .subscribe("baton.results.zombie")
        .await
        .unwrap();
    fleet.client.flush().await.unwrap();
    let zombie = fleet.spawn_process("baton-agent-sim", &WORKER);
    let plan = json!({"steps": [{"id": "slow", "agent": "zombie", "timeout_ms": 20000}]});
    let job = fleet.submit(plan, json!({"sim": {"sleep_ms": 1500}})).await;
    for _ in 0..400 {
        if ack_pending(&fleet).await == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Freeze the worker that holds the task: no heartbeats, so after AckWait the broker
    // redelivers the task to the second worker, which finishes it.
    fleet.signal_process(zombie, Signal::SIGSTOP);
    let _healthy = fleet.spawn_process("baton-agent-sim", &WORKER);
    let status = fleet
        .wait_for(job, JobStatus::Succeeded, Duration::from_secs(20))
        .await;
    let output = status.steps["slow"].output.clone();
    // Wake the zombie: it finishes its copy, publishes a result for the same attempt and acks.
    fleet.signal_process(zombie, Signal::SIGCONT);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = fleet.status(job).await;
    assert_eq!(after.steps["slow"].attempts, 1);
    assert_eq!(after.steps["slow"].output, output);
    assert_eq!(after.status, JobStatus::Succeeded);
    let recorded = events
        .of(job)
        .iter()
        .filter(|e| matches!(e.kind, EventKind::StepSucceeded { .. }))
        .count();
    assert_eq!(
        recorded, 1,
        "the step's result was recorded {recorded} times"
    );
    assert!(!fleet.process_exited(zombie), "the woken worker carries on");
    // Both copies answered attempt 1; the zombie's late answer was fenced: the broker kept
    // only the first result with the attempt's Nats-Msg-Id, and the output is the first's.
    let mut answers = 0;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(200), results.next()).await
    {
        let result: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(
            (result["job_id"].as_str(), result["attempt"].as_u64()),
            (Some(job.to_string().as_str()), Some(1))
        );
        answers += 1;
    }
    assert_eq!(answers, 2, "the zombie's copy should have answered too");
    assert_eq!(ack_pending(&fleet).await, Some(0));
}
