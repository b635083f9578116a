//! Bad plans are rejected before anything is published; malformed submissions get an error
//! reply and the coordinator keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_nats::HeaderMap;
use baton_protocol::messages::JobStatus;
use baton_protocol::subject;
use baton_tests::{Fleet, plan};
use futures::StreamExt;
use serde_json::{Value, json};

fn msgpack_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "application/msgpack");
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plans_are_rejected_and_publish_no_task() {
    let fleet = Fleet::with_coordinator().await;
    let mut tasks = fleet.client.subscribe(subject::TASKS_ALL).await.unwrap();
    fleet.client.flush().await.unwrap();
    let cases: [(&str, Value, &str, &[&str]); 6] = [
        (
            "self-loop",
            plan(&[("a", "sim", &["a"])]),
            "plan_cycle",
            &["a -> a"],
        ),
        (
            "3-cycle",
            plan(&[
                ("a", "sim", &["c"]),
                ("b", "sim", &["a"]),
                ("c", "sim", &["b"]),
            ]),
            "plan_cycle",
            &["a", "b", "c"],
        ),
        (
            "dangling",
            plan(&[("a", "sim", &[]), ("b", "sim", &["ghost"])]),
            "unknown_need",
            &["ghost"],
        ),
        (
            "duplicate",
            plan(&[("a", "sim", &[]), ("a", "sim", &[])]),
            "duplicate_step",
            &["\"a\""],
        ),
        (
            "wildcard agent",
            plan(&[("a", "a.>", &[])]),
            "invalid_name",
            &["a.>"],
        ),
        (
            "valid root, bad later step",
            plan(&[("ok", "sim", &[]), ("bad", "sim", &["bad"])]),
            "plan_cycle",
            &["bad"],
        ),
    ];
    for (name, plan, code, mentions) in cases {
        let reply = fleet.submit_raw(json!({"plan": plan, "input": {}})).await;
        assert_eq!(reply["error"]["code"], json!(code), "{name}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        for mention in mentions {
            assert!(
                message.contains(mention),
                "{name}: {message:?} should name {mention:?}"
            );
        }
    }
    let leaked = tokio::time::timeout(Duration::from_millis(500), tasks.next()).await;
    assert!(leaked.is_err(), "a task was published: {leaked:?}");
    assert_eq!(fleet.stored_tasks().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_submissions_get_error_replies_and_serving_continues() {
    let mut fleet = Fleet::start().await;
    let mut options = fleet.coordinator_options.clone();
    options.limits.max_payload_bytes = 64 * 1024;
    fleet.spawn_coordinator_with(options);
    fleet.spawn_sim("sim");
    fleet.wait_ready().await;
    let valid = json!({"plan": plan(&[("a", "sim", &[])]), "input": {"ok": true}});
    let valid_msgpack = rmp_serde::to_vec_named(&valid).unwrap();
    let oversize = json!({"plan": plan(&[("a", "sim", &[])]), "input": "x".repeat(64 * 1024)});
    let cases: Vec<(&str, Option<HeaderMap>, Vec<u8>, &str)> = vec![
        (
            "invalid JSON",
            None,
            b"{\"plan\": [".to_vec(),
            "malformed_payload",
        ),
        (
            "invalid UTF-8",
            None,
            b"\xff\xfe\xfd".to_vec(),
            "malformed_payload",
        ),
        (
            "truncated MessagePack",
            Some(msgpack_headers()),
            valid_msgpack[..valid_msgpack.len() / 2].to_vec(),
            "malformed_payload",
        ),
        (
            "missing plan",
            None,
            serde_json::to_vec(&json!({"input": 1})).unwrap(),
            "invalid_request",
        ),
        (
            "wrong type",
            None,
            serde_json::to_vec(&json!({"plan": 5})).unwrap(),
            "invalid_plan_syntax",
        ),
        (
            "wrong field type",
            None,
            serde_json::to_vec(&json!({"plan": plan(&[("a", "sim", &[])]), "idempotency_key": 5}))
                .unwrap(),
            "invalid_request",
        ),
        (
            "unknown field",
            None,
            serde_json::to_vec(&json!({"plan": plan(&[("a", "sim", &[])]), "extra": 1})).unwrap(),
            "invalid_request",
        ),
        (
            "oversize",
            None,
            serde_json::to_vec(&oversize).unwrap(),
            "payload_too_large",
        ),
        (
            "wrong content type",
            Some({
                let mut h = HeaderMap::new();
                h.insert("Content-Type", "text/xml");
                h
            }),
            b"<plan/>".to_vec(),
            "unsupported_content_type",
        ),
        (
            "deep nesting",
            None,
            {
                let mut input = json!(1);
                for _ in 0..100 {
                    input = json!([input]);
                }
                serde_json::to_vec(&json!({"plan": plan(&[("a", "sim", &[])]), "input": input}))
                    .unwrap()
            },
            "payload_too_deep",
        ),
    ];
    for (name, headers, payload, code) in cases {
        let reply = fleet
            .request_raw(subject::SUBMIT, headers, payload.into())
            .await;
        assert_eq!(reply["error"]["code"], json!(code), "{name}: {reply}");
        assert!(!reply["error"]["message"].as_str().unwrap().is_empty());
        // The coordinator keeps serving: a valid job right after each bad one completes.
        let job = fleet
            .submit(valid["plan"].clone(), json!({"after": name}))
            .await;
        fleet
            .wait_for(job, JobStatus::Succeeded, Duration::from_secs(20))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_submissions_get_msgpack_replies() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let body = json!({"plan": plan(&[("a", "sim", &[])]), "input": {"n": 1.5}});
    let payload = rmp_serde::to_vec_named(&body).unwrap();
    // request_raw decodes the reply as MessagePack only if it says so in Content-Type.
    let reply = fleet
        .request_raw(subject::SUBMIT, Some(msgpack_headers()), payload.into())
        .await;
    let job =
        serde_json::from_value(reply["job_id"].clone()).expect("a job id in a MessagePack reply");
    let status = fleet
        .wait_for(job, JobStatus::Succeeded, Duration::from_secs(20))
        .await;
    assert_eq!(status.output.unwrap()["input"], json!({"n": 1.5}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_durable_submissions_are_dead_lettered() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let js = async_nats::jetstream::new(fleet.client.clone());
    js.publish(subject::ENQUEUE, b"{broken".to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let cyclic = json!({"plan": plan(&[("a", "sim", &["a"])]), "idempotency_key": "cyclic"});
    js.publish(
        subject::ENQUEUE,
        serde_json::to_vec(&cyclic).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // Both are handled concurrently, so their dead letters may come in either order: read
    // every message in the dead-letter stream, not just the last one.
    let mut dlq = js.get_stream(subject::stream::DLQ).await.unwrap();
    let mut reasons = Vec::new();
    for _ in 0..100 {
        reasons.clear();
        let last = dlq.info().await.unwrap().state.last_sequence;
        for sequence in 1..=last {
            if let Ok(message) = dlq.get_raw_message(sequence).await
                && message.subject.as_str() == subject::DLQ_SUBMISSIONS
            {
                let reason = message.headers.get(subject::header::DLQ_REASON).unwrap();
                reasons.push(reason.to_string());
            }
        }
        if reasons.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reasons.iter().any(|r| r.contains("not valid JSON")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("a -> a")), "{reasons:?}");
    // The work queue is empty and the coordinator still serves.
    let mut jobs = js.get_stream(subject::stream::JOBS).await.unwrap();
    assert_eq!(jobs.info().await.unwrap().state.messages, 0);
    let job = fleet.submit(plan(&[("a", "sim", &[])]), json!(1)).await;
    fleet
        .wait_for(job, JobStatus::Succeeded, Duration::from_secs(20))
        .await;
}
