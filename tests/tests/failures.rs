//! Retries with backoff, timeouts, escalation and fencing of duplicate results.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_nats::HeaderMap;
use baton_protocol::messages::{Event, EventKind, FailureClass, JobStatus, StepStatus};
use baton_protocol::subject;
use baton_tests::Fleet;
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn one_step(retry: Value, timeout_ms: u64) -> Value {
    json!({"name": "one", "steps": [{"id": "only", "agent": "sim", "retry": retry, "timeout_ms": timeout_ms}]})
}

fn dispatch_times(events: &[Event]) -> Vec<(u32, u64)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepDispatched { attempt, .. } => Some((*attempt, e.ts_ms)),
            _ => None,
        })
        .collect()
}

fn failure_times(events: &[Event]) -> Vec<(u32, u64, FailureClass)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepFailed { attempt, error, .. } => Some((*attempt, e.ts_ms, error.class)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_fails_twice_succeeds_on_attempt_three_after_backoff() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let events = fleet.record_events().await;
    for jitter in [0.0, 0.2] {
        let retry = json!({"max_attempts": 3, "initial_backoff_ms": 300, "max_backoff_ms": 5000, "jitter": jitter});
        let input = json!({"sim": {"fail": "error", "fail_attempts": 2}});
        let job = fleet.submit(one_step(retry, 5000), input).await;
        let status = fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
        fleet.assert_replays(job).await;
        assert_eq!(status.steps["only"].attempts, 3);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let log = events.of(job);
        let failures = failure_times(&log);
        let dispatches = dispatch_times(&log);
        assert_eq!(failures.len(), 2, "{log:#?}");
        assert_eq!(
            dispatches.iter().map(|d| d.0).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        // The gap between a failure (stamped when it was recorded) and the next dispatch
        // (stamped once its task is stored) is the policy's delay: 300 ms, then 600 ms,
        // shortened by at most `jitter` of it — never earlier. The upper bound only catches
        // a wrong delay (e.g. max_backoff_ms, 5 s): on a loaded 2-core machine a timer can
        // fire hundreds of milliseconds late.
        for (i, expected) in [300u64, 600].into_iter().enumerate() {
            let gap = dispatches[i + 1].1 - failures[i].1;
            let earliest = (expected as f64 * (1.0 - jitter)) as u64;
            assert!(
                gap + 5 >= earliest && gap <= expected + 1500,
                "gap before attempt {} was {gap} ms; expected {earliest}..={expected} ms (+ scheduling): {log:#?}",
                i + 2
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_times_out_is_retried_then_escalated() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let events = fleet.record_events().await;
    let retry = json!({"max_attempts": 2, "initial_backoff_ms": 100, "max_backoff_ms": 100});
    let job = fleet
        .submit(one_step(retry, 400), json!({"sim": {"fail": "timeout"}}))
        .await;
    let status = fleet.wait_for(job, JobStatus::Escalated, WAIT).await;
    fleet.assert_replays(job).await;
    let step = &status.steps["only"];
    assert_eq!(step.status, StepStatus::Escalated);
    assert_eq!(step.attempts, 2);
    assert_eq!(step.error.as_ref().unwrap().class, FailureClass::Timeout);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = events.of(job);
    let failures = failure_times(&log);
    assert_eq!(
        failures.iter().map(|f| (f.0, f.2)).collect::<Vec<_>>(),
        [(1, FailureClass::Timeout), (2, FailureClass::Timeout)]
    );
    // Each timeout fired about timeout_ms after its dispatch.
    for ((_, dispatched), (_, failed, _)) in dispatch_times(&log).iter().zip(&failures) {
        let waited = failed - dispatched;
        // Dispatch events are stamped after the task is stored, a little after the deadline
        // was set; the upper bound allows for a loaded machine.
        assert!(
            (300..=1500).contains(&waited),
            "timed out after {waited} ms"
        );
    }
    assert!(
        log.iter()
            .any(|e| matches!(e.kind, EventKind::StepEscalated { attempt: 2, .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_always_fails_is_dead_lettered_and_escalated() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let js = async_nats::jetstream::new(fleet.client.clone());
    let retry = json!({"max_attempts": 3, "initial_backoff_ms": 50, "max_backoff_ms": 100});
    let input = json!({"sim": {"fail": "error"}, "n": 7});
    let job = fleet.submit(one_step(retry, 5000), input.clone()).await;
    let status = fleet.wait_for(job, JobStatus::Escalated, WAIT).await;
    fleet.assert_replays(job).await;
    assert_eq!(status.steps["only"].attempts, 3);
    // The last task is in the dead-letter stream, with its input and error. It is published
    // just after the transition that status reports, so it may land a moment later.
    let dlq = js.get_stream(subject::stream::DLQ).await.unwrap();
    let mut found = None;
    for _ in 0..100 {
        if let Ok(message) = dlq.get_last_raw_message_by_subject("baton.dlq.sim").await {
            found = Some(message);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let message = found.expect("no dead letter on baton.dlq.sim");
    let letter: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(letter["job_id"], json!(job));
    assert_eq!(letter["attempt"], json!(3));
    assert_eq!(letter["input"]["input"], input);
    assert!(
        letter["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected failure")
    );
    assert_eq!(letter["escalation_id"], json!(format!("{job}.only")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_retryable_error_escalates_at_once() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    // A sim spec the agent cannot parse is a fatal (non-retryable) error.
    let job = fleet
        .submit(
            one_step(json!({"max_attempts": 5}), 5000),
            json!({"sim": {"fail": "explode"}}),
        )
        .await;
    let status = fleet.wait_for(job, JobStatus::Escalated, WAIT).await;
    fleet.assert_replays(job).await;
    assert_eq!(status.steps["only"].attempts, 1);
    assert!(!status.steps["only"].error.as_ref().unwrap().retryable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_delivered_twice_is_recorded_once() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let events = fleet.record_events().await;
    // b sleeps, so the duplicate of a's result arrives while the job is still running.
    let plan = json!({"steps": [
        {"id": "a", "agent": "sim"},
        {"id": "b", "agent": "sim", "needs": ["a"], "input": {"sim": {"sleep_ms": 800}, "from_a": "$needs/a"}}
    ]});
    let job = fleet.submit(plan, json!({"x": 1})).await;
    wait_until(|| {
        events
            .of(job)
            .iter()
            .any(|e| matches!(&e.kind, EventKind::StepSucceeded { step_id, .. } if step_id == "a"))
    })
    .await;

    // Publish a's result again by hand, with a different output, twice: once with the same
    // message id (the broker drops it) and once with a new one (the coordinator fences it).
    let forged = json!({"job_id": job, "step_id": "a", "attempt": 1, "output": {"forged": true}});
    for msg_id in [subject::result_msg_id(job, "a", 1), "a-new-id".to_owned()] {
        publish_result(&fleet, &forged, Some(&msg_id)).await;
    }
    let status = fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    fleet.assert_replays(job).await;
    assert_eq!(
        status.steps["a"].output,
        Some(json!({"input": {"x": 1}, "needs": {}}))
    );
    assert_eq!(
        status.output.as_ref().unwrap()["from_a"],
        json!({"input": {"x": 1}, "needs": {}})
    );
    // After the job ended, the duplicate is fenced again, and nothing changes.
    publish_result(&fleet, &forged, Some("after-end")).await;
    wait_until(|| {
        events
            .of(job)
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ResultFenced { .. }))
            .count()
            == 2
    })
    .await;
    let log = events.of(job);
    let succeeded_a = log
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::StepSucceeded { step_id, .. } if step_id == "a"))
        .count();
    let dispatched_b = log
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::StepDispatched { step_id, .. } if step_id == "b"))
        .count();
    assert_eq!((succeeded_a, dispatched_b), (1, 1), "{log:#?}");
    assert_eq!(
        fleet.status(job).await.steps["a"].output,
        status.steps["a"].output
    );
}

/// A result fenced by the job's end leaves the job's decision log its retention, even when
/// the replica that fences it never wrote to that log: giving the log the running TTL (7 days
/// by default) would keep it long after the job's state (1 day).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_after_the_end_leaves_the_log_its_retention() {
    let mut fleet = Fleet::start().await;
    // Replica 1 runs the job and dies; replica 2 fences the late result.
    let first = fleet.spawn_process("baton", &["coordinator", "--retention-secs", "60"]);
    fleet.wait_ready().await;
    fleet.spawn_sim("sim");
    let job = fleet
        .submit(baton_tests::plan(&[("a", "sim", &[])]), json!({}))
        .await;
    fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    fleet.trace(job).await; // waits until the log holds the job's end
    fleet.kill_process(first);
    let mut options = fleet.coordinator_options.clone();
    options.retention_secs = 60;
    fleet.spawn_coordinator_with(options);
    fleet.wait_ready().await;

    let late = json!({"job_id": job, "step_id": "a", "attempt": 1, "output": {"late": true}});
    publish_result(&fleet, &late, Some("after-end")).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let trace = fleet.trace(job).await;
        if baton_tests::logged(&trace, |k| matches!(k, EventKind::ResultFenced { .. })) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{trace:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ttl = fleet.ttl_ms(&baton_protocol::keys::log(job)).await;
    assert!((1..=60_000).contains(&ttl), "decision log TTL {ttl} ms");
}

/// Publishes a hand-made result to `baton.results.sim` (with a message id, if given) and
/// waits until the broker stored it.
async fn publish_result(fleet: &Fleet, result: &Value, msg_id: Option<&str>) {
    let js = async_nats::jetstream::new(fleet.client.clone());
    let mut headers = HeaderMap::new();
    if let Some(msg_id) = msg_id {
        headers.insert("Nats-Msg-Id", msg_id);
    }
    let payload = serde_json::to_vec(result).unwrap().into();
    js.publish_with_headers("baton.results.sim", headers, payload)
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..300 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met in 6 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_jobs_and_steps_in_results_are_dead_lettered() {
    let fleet = Fleet::with_coordinator().await;
    let js = async_nats::jetstream::new(fleet.client.clone());
    let bad = [
        b"{not json".to_vec(),
        serde_json::to_vec(&json!({"job_id": Uuid::now_v7(), "step_id": "a", "attempt": "one"}))
            .unwrap(),
    ];
    for payload in bad {
        js.publish("baton.results.sim", payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut dlq = js.get_stream(subject::stream::DLQ).await.unwrap();
    for _ in 0..100 {
        if dlq.info().await.unwrap().state.messages >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = dlq
        .get_last_raw_message_by_subject(subject::DLQ_RESULTS)
        .await
        .unwrap();
    assert!(message.headers.get(subject::header::DLQ_REASON).is_some());
    // The results work queue is left empty.
    let mut results = js.get_stream(subject::stream::RESULTS).await.unwrap();
    for _ in 0..100 {
        if results.info().await.unwrap().state.messages == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("bad results stayed in the work queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_breaks_the_output_schema_is_a_failed_attempt() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let plan = json!({"steps": [{"id": "only", "agent": "sim",
        "retry": {"max_attempts": 3, "initial_backoff_ms": 50, "max_backoff_ms": 50},
        "output_schema": {"type": "object", "required": ["input"]}}]});
    // The sim answers with a bare string on attempt 1, then echoes its (valid) input.
    let job = fleet
        .submit(
            plan,
            json!({"sim": {"fail": "invalid", "fail_attempts": 1}}),
        )
        .await;
    let status = fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    fleet.assert_replays(job).await;
    assert_eq!(status.steps["only"].attempts, 2);
    // A step whose every answer is invalid escalates with the schema violation as its error.
    let plan = json!({"steps": [{"id": "only", "agent": "sim",
        "retry": {"max_attempts": 2, "initial_backoff_ms": 50, "max_backoff_ms": 50},
        "output_schema": {"type": "object"}}]});
    let job = fleet
        .submit(plan, json!({"sim": {"fail": "invalid"}}))
        .await;
    let status = fleet.wait_for(job, JobStatus::Escalated, WAIT).await;
    fleet.assert_replays(job).await;
    let error = status.steps["only"].error.clone().unwrap();
    assert_eq!(error.class, FailureClass::Invalid);
    assert!(error.message.contains("output_schema"), "{}", error.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_result_of_an_older_attempt_never_overwrites_a_newer_one() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let events = fleet.record_events().await;
    let retry = json!({"max_attempts": 3, "initial_backoff_ms": 50, "max_backoff_ms": 50});
    // Attempt 1 never answers and times out; attempt 2 answers (well within the timeout even
    // on a loaded machine: 300 ms was once too short for attempt 2 with 5 runnable threads
    // per core).
    let job = fleet
        .submit(
            one_step(retry, 1000),
            json!({"sim": {"fail": "timeout", "fail_attempts": 1}}),
        )
        .await;
    let status = fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    fleet.assert_replays(job).await;
    assert_eq!(status.steps["only"].attempts, 2);
    // Attempt 1's answer finally arrives (a paused worker waking up).
    let late = json!({"job_id": job, "step_id": "only", "attempt": 1, "output": {"late": true}});
    publish_result(&fleet, &late, None).await;
    wait_until(|| {
        events
            .of(job)
            .iter()
            .any(|e| matches!(e.kind, EventKind::ResultFenced { attempt: 1, .. }))
    })
    .await;
    let after = fleet.status(job).await;
    assert_eq!(after.steps["only"].output, status.steps["only"].output);
    assert_eq!(after.output, status.output);
    assert_ne!(after.output, Some(json!({"late": true})));
}
