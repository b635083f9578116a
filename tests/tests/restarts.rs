//! Coordinators and workers ride out a nats-server restart (file storage) and a redis-server
//! restart (AOF) without a human: jobs in flight finish, none twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use baton_protocol::messages::{EventKind, JobStatus};
use baton_tests::{EventLog, Fleet};
use serde_json::json;
use uuid::Uuid;

fn plan() -> serde_json::Value {
    json!({"steps": [
        {"id": "a", "agent": "sim", "timeout_ms": 5000, "retry": {"max_attempts": 10, "initial_backoff_ms": 100, "max_backoff_ms": 1000}},
        {"id": "b", "agent": "sim", "needs": ["a"], "timeout_ms": 5000, "retry": {"max_attempts": 10, "initial_backoff_ms": 100, "max_backoff_ms": 1000}}
    ]})
}

async fn submit_batch(fleet: &Fleet, n: usize) -> Vec<Uuid> {
    let mut jobs = Vec::new();
    for i in 0..n {
        jobs.push(
            fleet
                .submit(plan(), json!({"n": i, "sim": {"sleep_ms": 300}}))
                .await,
        );
    }
    jobs
}

async fn all_succeed(fleet: &Fleet, jobs: &[Uuid]) {
    for job in jobs {
        let status = fleet
            .wait_for(*job, JobStatus::Succeeded, Duration::from_secs(60))
            .await;
        assert_eq!(status.steps.len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_in_flight_finish_across_a_nats_server_restart() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let events = fleet.record_events().await;
    let jobs = submit_batch(&fleet, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::task::block_in_place(|| fleet.nats.restart()).unwrap();
    // The test's own client reconnects too; give everyone a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.wait_ready().await;
    all_succeed(&fleet, &jobs).await;
    // And new work flows.
    let more = submit_batch(&fleet, 3).await;
    all_succeed(&fleet, &more).await;
    recorded_at_most_once(&events, &jobs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_in_flight_finish_across_a_redis_server_restart() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let events = fleet.record_events().await;
    let jobs = submit_batch(&fleet, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::task::block_in_place(|| fleet.redis.restart()).unwrap();
    all_succeed(&fleet, &jobs).await;
    let more = submit_batch(&fleet, 3).await;
    all_succeed(&fleet, &more).await;
    recorded_at_most_once(&events, &jobs);
}

/// No step result was recorded twice (events missed while NATS was down can only lower the
/// count, never raise it).
fn recorded_at_most_once(events: &EventLog, jobs: &[Uuid]) {
    for job in jobs {
        for step in ["a", "b"] {
            let recorded = events
                .of(*job)
                .iter()
                .filter(|e| matches!(&e.kind, EventKind::StepSucceeded { step_id, .. } if step_id == step))
                .count();
            assert!(
                recorded <= 1,
                "job {job} step {step} recorded {recorded} times"
            );
        }
    }
}
