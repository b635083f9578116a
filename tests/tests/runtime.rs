//! The worker runtime and state lifetimes: heartbeats keep a long task from being
//! redelivered, SIGTERM drains a worker without losing its task, and job state carries a
//! running TTL that becomes the retention TTL when the job ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_nats::jetstream;
use baton_harness::Signal;
use baton_protocol::messages::{EventKind, JobStatus};
use baton_protocol::{AgentName, subject};
use baton_tests::Fleet;
use baton_worker::WorkerOptions;
use serde_json::json;

async fn consumer_info(fleet: &Fleet, agent: &str) -> jetstream::consumer::Info {
    try_consumer_info(fleet, agent)
        .await
        .expect("the agent's consumer exists")
}

async fn try_consumer_info(fleet: &Fleet, agent: &str) -> Option<jetstream::consumer::Info> {
    let js = jetstream::new(fleet.client.clone());
    let stream = js.get_stream(subject::stream::TASKS).await.unwrap();
    let agent = AgentName::new(agent).unwrap();
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer(&subject::consumer::agent(&agent))
        .await
        .ok()?;
    Some(consumer.info().await.ok()?.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_task_longer_than_ack_wait_from_redelivery() {
    let mut fleet = Fleet::with_coordinator().await;
    let mut options = WorkerOptions::new(AgentName::new("slow").unwrap());
    options.nats.url = fleet.nats.url();
    options.ack_wait = Duration::from_secs(1);
    fleet.spawn_worker_with(options, baton_agents::sim::Sim);
    let plan = json!({"steps": [{"id": "long", "agent": "slow", "timeout_ms": 20000}]});
    // 3.5 × AckWait of work.
    let job = fleet.submit(plan, json!({"sim": {"sleep_ms": 3500}})).await;
    let status = fleet
        .wait_for(job, JobStatus::Succeeded, Duration::from_secs(30))
        .await;
    assert_eq!(status.steps["long"].attempts, 1);
    let info = consumer_info(&fleet, "slow").await;
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(
        info.delivered.consumer_sequence, 1,
        "the task was delivered more than once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_worker_without_losing_its_task() {
    let mut fleet = Fleet::with_coordinator().await;
    let worker = fleet.spawn_process("baton-agent-sim", &["--type", "drain"]);
    let plan = json!({"steps": [{"id": "busy", "agent": "drain", "timeout_ms": 20000}]});
    let job = fleet.submit(plan, json!({"sim": {"sleep_ms": 1500}})).await;
    // Wait until the worker holds the task, then ask it to stop.
    for _ in 0..400 {
        if try_consumer_info(&fleet, "drain")
            .await
            .is_some_and(|info| info.num_ack_pending == 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(consumer_info(&fleet, "drain").await.num_ack_pending, 1);
    fleet.signal_process(worker, Signal::SIGTERM);
    let exit = tokio::task::block_in_place(|| fleet.wait_process(worker));
    assert!(exit.success(), "worker exited with {exit:?}");
    // The task it held finished and was recorded, with no other worker running.
    let status = fleet
        .wait_for(job, JobStatus::Succeeded, Duration::from_secs(10))
        .await;
    assert_eq!(status.steps["busy"].attempts, 1);
    assert_eq!(consumer_info(&fleet, "drain").await.num_ack_pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_state_has_a_running_ttl_then_the_retention_ttl() {
    let mut fleet = fleet_with_ttls(3600, 60).await;
    let plan = json!({"steps": [{"id": "a", "agent": "later"}]});
    let job = fleet.submit(plan, json!({})).await;
    // No worker for `later` yet: the job is running and its state lives for the running TTL.
    let ttl = fleet.job_ttl_ms(job).await;
    assert!((3_500_000..=3_600_000).contains(&ttl), "running TTL {ttl}");
    fleet.spawn_sim("later");
    fleet
        .wait_for(job, JobStatus::Succeeded, Duration::from_secs(20))
        .await;
    let ttl = fleet.job_ttl_ms(job).await;
    assert!((50_000..=60_000).contains(&ttl), "retention TTL {ttl}");
}

/// A running job's TTL is set again once half of it has run, so a job that runs for longer
/// than its running TTL keeps its state as long as its transitions come in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlives_its_running_ttl_while_it_makes_progress() {
    let mut fleet = fleet_with_ttls(2, 60).await;
    fleet.spawn_sim("slow");
    let steps: Vec<_> = (0..5)
        .map(|i| match i {
            0 => json!({"id": "s0", "agent": "slow"}),
            _ => json!({"id": format!("s{i}"), "agent": "slow", "needs": [format!("s{}", i - 1)]}),
        })
        .collect();
    let started = std::time::Instant::now();
    let job = fleet
        .submit(json!({"steps": steps}), json!({"sim": {"sleep_ms": 700}}))
        .await;
    fleet
        .wait_for(job, JobStatus::Succeeded, Duration::from_secs(30))
        .await;
    // Five steps of 700 ms: the job ran for well over its 2 s running TTL.
    assert!(started.elapsed() > Duration::from_millis(3000));
    let ttl = fleet.job_ttl_ms(job).await;
    assert!((50_000..=60_000).contains(&ttl), "retention TTL {ttl}");
    // Its decision log lived as long: the first decision is still there.
    let trace = fleet.trace(job).await;
    assert!(
        baton_tests::logged(&trace, |k| matches!(k, EventKind::JobCreated { .. })),
        "{:?}",
        trace.decisions.first()
    );
}

/// A fleet whose coordinator keeps running jobs' state for `running_secs` and finished jobs'
/// for `retention_secs`.
async fn fleet_with_ttls(running_secs: u64, retention_secs: u64) -> Fleet {
    let mut fleet = Fleet::start().await;
    let mut options = fleet.coordinator_options.clone();
    options.running_ttl_secs = running_secs;
    options.retention_secs = retention_secs;
    fleet.spawn_coordinator_with(options);
    fleet.wait_ready().await;
    fleet
}
