//! Idempotency mappings live as long as their jobs, and outputs may be null.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use baton_protocol::keys;
use baton_protocol::messages::JobStatus;
use baton_tests::{Fleet, plan};
use serde_json::json;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_expires_with_its_job_and_then_frees_the_key() {
    let mut fleet = Fleet::start().await;
    let mut options = fleet.coordinator_options.clone();
    options.retention_secs = 30;
    fleet.spawn_coordinator_with(options);
    fleet.spawn_sim("sim");
    fleet.wait_ready().await;
    let body = json!({"plan": plan(&[("a", "sim", &[])]), "input": 1, "idempotency_key": "k1"});
    let first: Uuid =
        serde_json::from_value(fleet.submit_raw(body.clone()).await["job_id"].clone()).unwrap();
    fleet
        .wait_for(first, JobStatus::Succeeded, Duration::from_secs(20))
        .await;
    // The mapping now expires with the job's retention, not the 7-day running TTL.
    let mapping_ttl = fleet.ttl_ms(&keys::idempotency("k1")).await;
    assert!(
        (20_000..=30_000).contains(&mapping_ttl),
        "mapping TTL {mapping_ttl}"
    );

    // Simulate the end of the job's retention while a mapping lingers (e.g. the coordinator
    // died before shortening it): once the mapping is old enough, the key starts a new job.
    let mut redis = fleet.redis_conn().await;
    let _: i64 = redis::cmd("DEL")
        .arg(keys::job(first))
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(keys::idempotency("k1"))
        .arg(first.to_string())
        .arg("PX")
        .arg(7 * 24 * 3600 * 1000 - 120_000)
        .query_async(&mut redis)
        .await
        .unwrap();
    let reply = fleet.submit_raw(body).await;
    let second: Uuid = serde_json::from_value(reply["job_id"].clone()).unwrap();
    assert_ne!(second, first);
    assert_eq!(reply.get("existing"), None);
    fleet
        .wait_for(second, JobStatus::Succeeded, Duration::from_secs(20))
        .await;
    let by_key = fleet.status_by_key("k1").await.unwrap();
    assert_eq!(by_key.job_id, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_output_is_an_output() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    // The sim echoes its input; an explicit mapping makes that input null.
    let plan = json!({"steps": [
        {"id": "a", "agent": "sim", "input": "$input/missing"},
        {"id": "b", "agent": "sim", "needs": ["a"], "input": {"got": "$needs/a"}}
    ]});
    let job = fleet.submit(plan, json!({})).await;
    let status = fleet
        .wait_for(job, JobStatus::Succeeded, Duration::from_secs(20))
        .await;
    assert_eq!(status.steps["a"].attempts, 1);
    assert_eq!(status.output, Some(json!({"got": null})));
}
