//! The reconciler: an attempt that Redis says is running but whose task is not in the broker
//! (a lost publish) or left it without a result (acked by a worker that lost it) is
//! published again, long before its deadline, and its result counts once; a task that is
//! still in the broker is left alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use baton_protocol::messages::{EventKind, JobStatus};
use baton_protocol::{AgentName, subject};
use baton_tests::{EventLog, Fleet};
use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

/// Far beyond what any test waits: only the reconciler can finish these attempts in time.
const TIMEOUT_MS: u64 = 120_000;

async fn fleet() -> Fleet {
    let mut fleet = Fleet::start().await;
    fleet.coordinator_options.reconcile_after_ms = 300;
    fleet.spawn_coordinator();
    fleet.wait_ready().await;
    fleet
}

fn one_step(agent: &str) -> Value {
    json!({"steps": [{"id": "only", "agent": agent, "timeout_ms": TIMEOUT_MS}]})
}

async fn wait_stored_tasks(fleet: &Fleet, want: u64) {
    for _ in 0..200 {
        if fleet.stored_tasks().await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the tasks stream never held {want} messages");
}

fn redispatches(events: &EventLog, job: Uuid) -> Vec<String> {
    events
        .of(job)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::StepRedispatched {
                attempt, reason, ..
            } => {
                assert_eq!(attempt, 1, "a re-dispatch keeps the attempt number");
                Some(reason)
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_missing_from_the_broker_is_published_again() {
    let mut fleet = fleet().await;
    let events = fleet.record_events().await;
    let job = fleet.submit(one_step("lost"), json!({"n": 1})).await;
    wait_stored_tasks(&fleet, 1).await;
    // The broker loses the task (as in a crash before its write reached the disk).
    let js = jetstream::new(fleet.client.clone());
    js.get_stream(subject::stream::TASKS)
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    assert_eq!(fleet.stored_tasks().await, 0);
    fleet.spawn_sim("lost");
    let status = fleet
        .wait_for(job, JobStatus::Succeeded, Duration::from_secs(30))
        .await;
    // The reconciler recovered it, not the attempt's deadline (which the 30 s wait above could
    // never reach): no attempt failed.
    assert!(
        !events
            .of(job)
            .iter()
            .any(|e| matches!(e.kind, EventKind::StepFailed { .. })),
        "the lost task was recovered by a timeout"
    );
    assert_eq!(status.steps["only"].attempts, 1, "not counted as a failure");
    assert_eq!(status.output.as_ref().unwrap()["input"], json!({"n": 1}));
    let reasons = redispatches(&events, job);
    assert!(!reasons.is_empty(), "no step_redispatched event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_acked_without_a_result_is_dispatched_again() {
    let mut fleet = fleet().await;
    let events = fleet.record_events().await;
    let job = fleet.submit(one_step("zombie"), json!({"n": 2})).await;
    wait_stored_tasks(&fleet, 1).await;
    // A worker takes the task and acks it without publishing a result — what a worker that
    // lost its lease does to the copy the broker redelivered.
    let js = jetstream::new(fleet.client.clone());
    let agent = AgentName::new("zombie").unwrap();
    let consumer = baton_nats::agent_consumer(&js, &agent, Default::default())
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let message = batch.next().await.unwrap().unwrap();
    message.ack_with(AckKind::Ack).await.unwrap();
    drop(batch);
    wait_stored_tasks(&fleet, 0).await;

    fleet.spawn_sim("zombie");
    let status = fleet
        .wait_for(job, JobStatus::Succeeded, Duration::from_secs(30))
        .await;
    assert_eq!(status.steps["only"].attempts, 1);
    let reasons = redispatches(&events, job);
    assert_eq!(
        reasons,
        ["the task left the broker without a result"],
        "exactly one fresh copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_still_in_the_broker_is_left_alone() {
    let mut fleet = fleet().await;
    let events = fleet.record_events().await;
    fleet.spawn_sim("slow");
    // Runs for many reconcile intervals while its task stays in the broker (in progress).
    let job = fleet
        .submit(one_step("slow"), json!({"sim": {"sleep_ms": 2500}}))
        .await;
    let status = fleet
        .wait_for(job, JobStatus::Succeeded, Duration::from_secs(30))
        .await;
    assert_eq!(status.steps["only"].attempts, 1);
    assert_eq!(redispatches(&events, job), Vec::<String>::new());
    let dispatched = events
        .of(job)
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::StepDispatched { .. }))
        .count();
    assert_eq!(dispatched, 1);
}
