//! Two coordinator replicas and three replicas of one agent type, each a separate process,
//! share 200 jobs: every job succeeds, every step result is recorded exactly once, and each
//! job's end is published once on `baton.jobs.ended.<job>`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use baton_protocol::messages::{EventKind, JobStatus};
use baton_tests::Fleet;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_and_three_workers_share_200_jobs() {
    let mut fleet = Fleet::start().await;
    fleet.spawn_process("baton", &["coordinator"]);
    fleet.spawn_process("baton", &["coordinator"]);
    fleet.wait_ready().await;
    for _ in 0..3 {
        fleet.spawn_process("baton-agent-sim", &["--type", "work"]);
    }
    let events = fleet.record_events().await;
    let ends = fleet.record_ends().await;
    let plan = json!({"name": "scale", "steps": [
        {"id": "a", "agent": "work"},
        {"id": "b", "agent": "work", "needs": ["a"]},
        {"id": "c", "agent": "work", "needs": ["a"]},
        {"id": "d", "agent": "work", "needs": ["b", "c"]}
    ]});
    let submits =
        (0..200).map(|i| fleet.submit(plan.clone(), json!({"n": i, "sim": {"sleep_ms": 5}})));
    let jobs = futures::future::join_all(submits).await;
    for (i, job) in jobs.iter().enumerate() {
        let status = fleet
            .wait_for(*job, JobStatus::Succeeded, Duration::from_secs(120))
            .await;
        assert_eq!(status.output.as_ref().unwrap()["input"]["n"], json!(i));
        for (id, step) in &status.steps {
            assert_eq!(step.attempts, 1, "job {job} step {id}");
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Exactly one recorded success per (job, step), and one job success per job.
    let mut successes: HashMap<(uuid::Uuid, String), usize> = HashMap::new();
    let mut finished = HashMap::new();
    for event in events.all() {
        match event.kind {
            EventKind::StepSucceeded { step_id, .. } => {
                *successes.entry((event.job_id, step_id)).or_default() += 1
            }
            EventKind::JobSucceeded { .. } => *finished.entry(event.job_id).or_insert(0) += 1,
            _ => {}
        }
    }
    assert_eq!(successes.len(), 200 * 4);
    assert!(
        successes.values().all(|&n| n == 1),
        "a step result was recorded twice"
    );
    assert_eq!(finished.len(), 200);
    assert!(finished.values().all(|&n| n == 1));
    // `baton.jobs.ended.>` carries each job's end once, and nothing else.
    let ends = ends.all();
    assert_eq!(ends.len(), 200, "{:?}", ends.first());
    assert!(
        ends.iter()
            .all(|e| matches!(e.kind, EventKind::JobSucceeded { .. })
                && finished.contains_key(&e.job_id))
    );
    let ended: std::collections::HashSet<_> = ends.iter().map(|e| e.job_id).collect();
    assert_eq!(ended.len(), 200);
}
