//! Each plan pattern runs to completion with the expected outputs, submitted by
//! request/reply and by durable JetStream publish; a job published while no coordinator runs
//! completes once one starts and is found by its idempotency key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use baton_protocol::messages::{JobStatus, StepStatus};
use baton_tests::{Fleet, plan};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn chain() -> Value {
    plan(&[
        ("s1", "sim", &[]),
        ("s2", "sim", &["s1"]),
        ("s3", "sim", &["s2"]),
        ("s4", "sim", &["s3"]),
        ("s5", "sim", &["s4"]),
    ])
}

fn fan_out() -> Value {
    let mut steps = vec![json!({"id": "root", "agent": "sim"})];
    let workers: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    for id in &workers {
        steps.push(json!({"id": id, "agent": "sim", "needs": ["root"]}));
    }
    steps.push(json!({"id": "join", "agent": "agg", "needs": workers}));
    json!({"name": "fan-out", "steps": steps})
}

fn diamond() -> Value {
    plan(&[
        ("a", "sim", &[]),
        ("b", "sim", &["a"]),
        ("c", "agg", &["a"]),
        ("d", "agg", &["b", "c"]),
    ])
}

fn check_chain(output: &Value, input: &Value) {
    // Each sim step echoes its input, so s5's output nests s4's, which nests s3's, …
    let mut at = output;
    for step in ["s4", "s3", "s2", "s1"] {
        assert_eq!(&at["input"], input);
        at = &at["needs"][step];
    }
    assert_eq!(at, &json!({"input": input, "needs": {}}));
}

fn check_fan_out(output: &Value, input: &Value) {
    let needs = output["needs"].as_object().unwrap();
    assert_eq!(needs.len(), 10, "the fan-in got every branch: {output}");
    for i in 0..10 {
        let branch = &needs[&format!("w{i}")];
        assert_eq!(
            branch["needs"]["root"],
            json!({"input": input, "needs": {}})
        );
    }
}

fn check_diamond(output: &Value, input: &Value) {
    let root = json!({"input": input, "needs": {}});
    assert_eq!(output["needs"]["b"]["needs"]["a"], root);
    assert_eq!(output["needs"]["c"]["needs"]["a"], root);
    assert_eq!(output["needs"].as_object().unwrap().len(), 2);
}

async fn fleet() -> Fleet {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    fleet.spawn_sim("agg");
    fleet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_complete_by_request_reply() {
    let fleet = fleet().await;
    type Check = fn(&Value, &Value);
    let cases: [(&str, Value, Check, usize); 3] = [
        ("chain", chain(), check_chain, 5),
        ("fan-out", fan_out(), check_fan_out, 12),
        ("diamond", diamond(), check_diamond, 4),
    ];
    for (name, plan, check, steps) in cases {
        let input = json!({"case": name});
        let job = fleet.submit(plan, input.clone()).await;
        let status = fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
        fleet.assert_replays(job).await;
        assert_eq!(status.steps.len(), steps, "{name}");
        for (id, step) in &status.steps {
            assert_eq!(step.status, StepStatus::Succeeded, "{name}/{id}");
            assert_eq!(step.attempts, 1, "{name}/{id}");
        }
        check(status.output.as_ref().unwrap(), &input);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_complete_by_durable_publish() {
    let fleet = fleet().await;
    type Check = fn(&Value, &Value);
    let cases: [(&str, Value, Check); 3] = [
        ("chain", chain(), check_chain),
        ("fan-out", fan_out(), check_fan_out),
        ("diamond", diamond(), check_diamond),
    ];
    for (name, plan, check) in cases {
        let input = json!({"case": name, "durable": true});
        let key = format!("durable-{name}");
        fleet.enqueue(plan, input.clone(), &key).await;
        let job = fleet.wait_for_key(&key).await;
        let status = fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
        fleet.assert_replays(job).await;
        check(status.output.as_ref().unwrap(), &input);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_published_while_coordinators_are_down_runs_when_one_starts() {
    // Streams exist (a coordinator ran once), then every coordinator is gone.
    let mut fleet = Fleet::with_coordinator().await;
    fleet.stop_services().await;
    fleet
        .enqueue(diamond(), json!({"queued": true}), "while-down")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Nothing took it: no coordinator answers status.
    let nobody = fleet.status_by_key("while-down").await;
    assert!(
        matches!(nobody, Err(baton_client::Error::NoCoordinator { .. })),
        "no coordinator should be answering: {nobody:?}"
    );

    fleet.spawn_coordinator();
    fleet.spawn_sim("sim");
    fleet.spawn_sim("agg");
    fleet.wait_ready().await;
    let job = fleet.wait_for_key("while-down").await;
    let status = fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    fleet.assert_replays(job).await;
    check_diamond(status.output.as_ref().unwrap(), &json!({"queued": true}));
    // The idempotency key finds the same job.
    let by_key = fleet.status_by_key("while-down").await.unwrap();
    assert_eq!(by_key.job_id, job);
    assert_eq!(by_key.status, JobStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_submit_with_an_idempotency_key_returns_the_same_job() {
    let fleet = fleet().await;
    let body = json!({"plan": diamond(), "input": 1, "idempotency_key": "same"});
    let first = fleet.submit_raw(body.clone()).await;
    let second = fleet.submit_raw(body).await;
    assert_eq!(first["job_id"], second["job_id"]);
    assert_eq!(second["existing"], json!(true));
    let job = serde_json::from_value(first["job_id"].clone()).unwrap();
    fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    fleet.assert_replays(job).await;
    // A durable publish with the same key does not start a second job either.
    fleet.enqueue(diamond(), json!(1), "same").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let by_key = fleet.status_by_key("same").await.unwrap();
    assert_eq!(by_key.job_id, job);
}
