//! The bad-input battery (shared/RELIABILITY.md, "Bad input") on every request subject other
//! than submit (which `bad_input.rs` covers), on results, and hostile plans. One table-driven
//! battery runs on each subject: every case gets a structured error reply with the expected
//! code, in the request's encoding, and afterwards the coordinator still serves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::HeaderMap;
use baton_protocol::messages::{EventKind, JobStatus};
use baton_protocol::{keys, subject};
use baton_tests::{Fleet, plan};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

/// The coordinator limit the battery runs against: small enough that limit + 1 still fits
/// NATS's own `max_payload` (1 MiB), so the coordinator, not the server, must reject it.
const LIMIT: usize = 64 * 1024;

fn content_type(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", value);
    headers
}

fn msgpack(value: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(value).unwrap()
}

fn nested(levels: usize) -> Value {
    let mut value = json!(1);
    for _ in 0..levels {
        value = json!([value]);
    }
    value
}

/// The JSON encoding of `value`, padded with trailing whitespace (which JSON allows) to
/// exactly `size` bytes.
fn padded(value: &Value, size: usize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).unwrap();
    assert!(bytes.len() <= size);
    bytes.resize(size, b' ');
    bytes
}

/// What a subject's battery needs to know about its request shape.
struct Shape {
    subject: &'static str,
    /// A well-formed request and the code it gets (`None`: a successful reply).
    valid: Value,
    valid_code: Option<&'static str>,
    /// Well-formed encoding, wrong field type.
    wrong_type: Value,
    /// A body missing a required field (`None` when the subject has none).
    missing: Option<Value>,
    /// Puts a value into the request where it is decoded (for deep nesting, huge numbers).
    with: fn(Value) -> Value,
    /// Codes for `with(nested(100))` (inside the decoders' limit), `with(nested(200))` and
    /// `with(nested(2000))` (past it), `with(1e400)` and `with(2^64)`. Where the field is a
    /// typed scalar the decoder stops at the first `[` (`invalid_request`); where it is any
    /// JSON value the depth limits answer.
    nested_100: Option<&'static str>,
    nested_deep: Option<&'static str>,
    huge_float: Option<&'static str>,
    huge_int: Option<&'static str>,
    /// The code of an empty body.
    empty: Option<&'static str>,
}

struct Case {
    name: String,
    headers: Option<HeaderMap>,
    payload: Vec<u8>,
    /// Expected error code (`None`: a successful reply).
    code: Option<&'static str>,
    /// Whether the reply must be MessagePack.
    msgpack: bool,
}

impl Case {
    fn json(name: &str, payload: Vec<u8>, code: Option<&'static str>) -> Self {
        Self {
            name: name.to_owned(),
            headers: None,
            payload,
            code,
            msgpack: false,
        }
    }

    fn msgpack(name: &str, payload: Vec<u8>, code: Option<&'static str>) -> Self {
        Self {
            name: name.to_owned(),
            headers: Some(content_type("application/msgpack")),
            payload,
            code,
            msgpack: true,
        }
    }
}

/// The RELIABILITY.md battery for one subject.
fn battery(shape: &Shape) -> Vec<Case> {
    let valid_json = serde_json::to_vec(&shape.valid).unwrap();
    let valid_msgpack = msgpack(&shape.valid);
    let mut unknown = shape.valid.clone();
    unknown["extra"] = json!(1);
    let mut cases = vec![
        Case::json("valid", valid_json.clone(), shape.valid_code),
        Case::msgpack("valid msgpack", valid_msgpack.clone(), shape.valid_code),
        Case::json(
            "invalid UTF-8",
            b"\xff\xfe\xfd".to_vec(),
            Some("malformed_payload"),
        ),
        Case::json(
            "invalid UTF-8 in a string",
            b"{\"\xff\xfe\": 1}".to_vec(),
            Some("malformed_payload"),
        ),
        Case::json(
            "truncated JSON",
            valid_json[..valid_json.len() / 2].to_vec(),
            Some("malformed_payload"),
        ),
        Case::msgpack(
            "truncated MessagePack",
            valid_msgpack[..valid_msgpack.len() - 2].to_vec(),
            Some("malformed_payload"),
        ),
        Case::json("empty body", Vec::new(), shape.empty),
        Case::json(
            "wrong type",
            serde_json::to_vec(&shape.wrong_type).unwrap(),
            Some("invalid_request"),
        ),
        Case::msgpack(
            "wrong type, MessagePack",
            msgpack(&shape.wrong_type),
            Some("invalid_request"),
        ),
        Case::json(
            "not an object",
            b"\"status\"".to_vec(),
            Some("invalid_request"),
        ),
        Case::msgpack("MessagePack integer", vec![0x07], Some("invalid_request")),
        Case::json(
            "unknown field",
            serde_json::to_vec(&unknown).unwrap(),
            Some("invalid_request"),
        ),
        Case::json(
            "nested 100 levels",
            serde_json::to_vec(&(shape.with)(nested(100))).unwrap(),
            shape.nested_100,
        ),
        Case::json(
            "nested 200 levels",
            serde_json::to_vec(&(shape.with)(nested(200))).unwrap(),
            shape.nested_deep,
        ),
        Case::msgpack(
            "nested 200 levels, MessagePack",
            msgpack(&(shape.with)(nested(200))),
            shape.nested_deep,
        ),
        Case::msgpack(
            "nested 2000 levels, MessagePack",
            // 2000 one-element arrays around a 1: each is the byte 0x91.
            msgpack(&(shape.with)(json!("HOLE")))
                .windows(5)
                .position(|w| w == b"\xa4HOLE")
                .map(|at| {
                    let outer = msgpack(&(shape.with)(json!("HOLE")));
                    let mut bytes = outer[..at].to_vec();
                    bytes.extend(std::iter::repeat_n(0x91, 2000));
                    bytes.push(0x01);
                    bytes.extend_from_slice(&outer[at + 5..]);
                    bytes
                })
                .unwrap(),
            shape.nested_deep,
        ),
        Case::json(
            "1e400",
            serde_json::to_vec(&(shape.with)(json!("HUGE")))
                .map(|b| String::from_utf8(b).unwrap().replace("\"HUGE\"", "1e400"))
                .unwrap()
                .into_bytes(),
            shape.huge_float,
        ),
        Case::json(
            "2^64",
            serde_json::to_vec(&(shape.with)(json!("HUGE")))
                .map(|b| {
                    String::from_utf8(b)
                        .unwrap()
                        .replace("\"HUGE\"", "18446744073709551616")
                })
                .unwrap()
                .into_bytes(),
            shape.huge_int,
        ),
        Case::json(
            "size limit - 1",
            padded(&shape.valid, LIMIT - 1),
            shape.valid_code,
        ),
        Case::json("size limit", padded(&shape.valid, LIMIT), shape.valid_code),
        Case::json(
            "size limit + 1",
            padded(&shape.valid, LIMIT + 1),
            Some("payload_too_large"),
        ),
        Case {
            name: "wrong content type".into(),
            headers: Some(content_type("text/xml")),
            payload: b"<status/>".to_vec(),
            code: Some("unsupported_content_type"),
            msgpack: false,
        },
        Case {
            // The type is checked before the body: even a valid body is refused.
            name: "wrong content type, valid body".into(),
            headers: Some(content_type("application/yaml")),
            payload: valid_json,
            code: Some("unsupported_content_type"),
            msgpack: false,
        },
    ];
    if let Some(missing) = &shape.missing {
        cases.push(Case::json(
            "missing required field",
            serde_json::to_vec(missing).unwrap(),
            Some("invalid_request"),
        ));
        cases.push(Case::msgpack(
            "missing required field, MessagePack",
            msgpack(missing),
            Some("invalid_request"),
        ));
    }
    cases
}

/// Sends one case and checks its reply: the expected code (or success), a message, and the
/// request's encoding. Fails, rather than hangs, when no reply comes.
async fn check(fleet: &Fleet, subject: &'static str, case: Case) {
    let name = format!("{subject} / {}", case.name);
    let payload = Bytes::from(case.payload);
    let request = match case.headers {
        Some(headers) => {
            fleet
                .client
                .request_with_headers(subject, headers, payload)
                .await
        }
        None => fleet.client.request(subject, payload).await,
    };
    let reply = request.unwrap_or_else(|e| panic!("{name}: no reply: {e}"));
    let reply_type = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Content-Type"))
        .map(|v| v.as_str().to_owned());
    let body: Value = if case.msgpack {
        assert_eq!(reply_type.as_deref(), Some("application/msgpack"), "{name}");
        rmp_serde::from_slice(&reply.payload)
            .unwrap_or_else(|e| panic!("{name}: reply is not MessagePack: {e}"))
    } else {
        assert_eq!(reply_type.as_deref(), Some("application/json"), "{name}");
        serde_json::from_slice(&reply.payload)
            .unwrap_or_else(|e| panic!("{name}: reply is not JSON: {e}"))
    };
    match case.code {
        Some(code) => {
            assert_eq!(body["error"]["code"], json!(code), "{name}: {body}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(!message.is_empty(), "{name}: {body}");
        }
        None => assert!(body.get("error").is_none(), "{name}: {body}"),
    }
}

/// A fleet with the battery's payload limit, a sim worker, and one open escalation.
async fn fleet_with_escalation() -> (Fleet, Uuid, String) {
    let mut fleet = Fleet::start().await;
    let mut options = fleet.coordinator_options.clone();
    options.limits.max_payload_bytes = LIMIT;
    fleet.spawn_coordinator_with(options);
    fleet.spawn_sim("sim");
    fleet.wait_ready().await;
    let escalating = json!({"steps": [{"id": "e", "agent": "sim", "retry": {"max_attempts": 1}}]});
    let job = fleet
        .submit(escalating, json!({"sim": {"fail": "error"}}))
        .await;
    fleet
        .wait_for(job, JobStatus::Escalated, Duration::from_secs(20))
        .await;
    (fleet, job, keys::escalation_id(job, "e"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_subject_answers_the_battery_with_structured_errors() {
    let (fleet, escalated_job, escalation) = fleet_with_escalation().await;
    let nil = Uuid::nil();
    let ghost = keys::escalation_id(nil, "a");
    let open = escalation.clone();
    let shapes = [
        Shape {
            subject: subject::STATUS,
            valid: json!({"job_id": nil}),
            valid_code: Some("not_found"),
            wrong_type: json!({"job_id": 5}),
            missing: Some(json!({})),
            with: |v| json!({"job_id": v}),
            nested_100: Some("invalid_request"),
            nested_deep: Some("invalid_request"),
            huge_float: Some("malformed_payload"),
            huge_int: Some("invalid_request"),
            empty: Some("malformed_payload"),
        },
        Shape {
            subject: subject::TRACE,
            valid: json!({"job_id": nil}),
            valid_code: Some("not_found"),
            wrong_type: json!({"job_id": 5}),
            missing: Some(json!({})),
            with: |v| json!({"job_id": v}),
            nested_100: Some("invalid_request"),
            nested_deep: Some("invalid_request"),
            huge_float: Some("malformed_payload"),
            huge_int: Some("invalid_request"),
            empty: Some("malformed_payload"),
        },
        Shape {
            subject: subject::RERUN,
            valid: json!({"job_id": nil, "from": "a"}),
            valid_code: Some("not_found"),
            wrong_type: json!({"job_id": nil, "from": 5}),
            missing: Some(json!({"job_id": nil})),
            with: |v| json!({"job_id": Uuid::nil(), "from": v}),
            nested_100: Some("invalid_request"),
            nested_deep: Some("invalid_request"),
            huge_float: Some("malformed_payload"),
            huge_int: Some("invalid_request"),
            empty: Some("malformed_payload"),
        },
        Shape {
            subject: subject::ESCALATIONS_LIST,
            valid: json!({"limit": 5}),
            valid_code: None,
            wrong_type: json!({"limit": -1}),
            missing: None,
            with: |v| json!({"limit": v}),
            nested_100: Some("invalid_request"),
            nested_deep: Some("invalid_request"),
            huge_float: Some("malformed_payload"),
            huge_int: Some("invalid_request"),
            // An empty body means "no options".
            empty: None,
        },
        Shape {
            subject: subject::ESCALATIONS_GET,
            valid: json!({"id": ghost}),
            valid_code: Some("not_found"),
            wrong_type: json!({"id": ["x"]}),
            missing: Some(json!({})),
            with: |v| json!({"id": v}),
            nested_100: Some("invalid_request"),
            nested_deep: Some("invalid_request"),
            huge_float: Some("malformed_payload"),
            huge_int: Some("invalid_request"),
            empty: Some("malformed_payload"),
        },
        Shape {
            subject: subject::ESCALATIONS_RESOLVE,
            valid: json!({"id": ghost, "action": "fail", "reason": "battery"}),
            valid_code: Some("not_found"),
            wrong_type: json!({"id": ghost, "action": "explode"}),
            missing: Some(json!({"id": ghost})),
            // A value for the open escalation's output, so depth and size checks are
            // reached (an unknown id is `not_found` before them).
            with: |v| json!({"id": "OPEN", "action": "output", "output": v}),
            nested_100: Some("payload_too_deep"),
            nested_deep: Some("payload_too_deep"),
            huge_float: Some("malformed_payload"),
            // 2^64 is a valid JSON number: the escalation would be resolved. Aim it at an id
            // that does not exist instead (see below).
            huge_int: Some("not_found"),
            empty: Some("malformed_payload"),
        },
    ];
    for shape in &shapes {
        for mut case in battery(shape) {
            if shape.subject == subject::ESCALATIONS_RESOLVE {
                let id = if case.name == "2^64" { &ghost } else { &open };
                let text = String::from_utf8_lossy(&case.payload).into_owned();
                if text.contains("\"OPEN\"") {
                    case.payload = text.replace("\"OPEN\"", &json!(id).to_string()).into();
                } else if case.msgpack && case.payload.windows(5).any(|w| w == b"\xa4OPEN") {
                    case.payload = replace_msgpack_str(&case.payload, "OPEN", id);
                }
            }
            check(&fleet, shape.subject, case).await;
        }
        // After each subject's battery the coordinator still serves: a status request
        // answers, a new job runs to the end, and the open escalation is untouched.
        let job = fleet
            .submit(plan(&[("a", "sim", &[])]), json!({"after": shape.subject}))
            .await;
        fleet
            .wait_for(job, JobStatus::Succeeded, Duration::from_secs(20))
            .await;
        assert_eq!(
            fleet.status(escalated_job).await.status,
            JobStatus::Escalated
        );
    }
    // The escalation survived every bad resolve and still resolves normally.
    let reply = fleet
        .request_raw(
            subject::ESCALATIONS_RESOLVE,
            None,
            serde_json::to_vec(&json!({"id": escalation, "action": "output", "output": "ok"}))
                .unwrap()
                .into(),
        )
        .await;
    assert_eq!(reply["job_status"], json!("succeeded"), "{reply}");
}

/// Replaces a MessagePack fixstr `from` (≤ 31 bytes) by the str8 encoding of `to`.
fn replace_msgpack_str(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let mut needle = vec![0xa0 | u8::try_from(from.len()).unwrap()];
    needle.extend_from_slice(from.as_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let mut out = bytes[..at].to_vec();
    out.push(0xd9);
    out.push(u8::try_from(to.len()).unwrap());
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(&bytes[at + needle.len()..]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_size_limit_is_what_nats_admits() {
    // With default options the coordinator's limit equals the server's `max_payload`, so a
    // request at the limit is decoded and one byte more never reaches the coordinator: the
    // client refuses to send it. The battery above uses a smaller limit to test the
    // coordinator's own + 1 case.
    let fleet = Fleet::with_coordinator().await;
    let limit = fleet.coordinator_options.limits.max_payload_bytes;
    assert_eq!(fleet.client.server_info().max_payload, limit);
    let at_limit = padded(&json!({"job_id": Uuid::nil()}), limit);
    let reply = fleet
        .request_raw(subject::STATUS, None, at_limit.into())
        .await;
    assert_eq!(reply["error"]["code"], json!("not_found"), "{reply}");
    let over = padded(&json!({"job_id": Uuid::nil()}), limit + 1);
    let refused = fleet.client.request(subject::STATUS, over.into()).await;
    assert!(refused.is_err(), "NATS accepted a message over max_payload");
}

/// Reads every dead letter on `baton.dlq._results` once `count` are there: (reason, body).
async fn dead_results(fleet: &Fleet, count: usize) -> Vec<(String, String, Bytes)> {
    let js = async_nats::jetstream::new(fleet.client.clone());
    let mut dlq = js.get_stream(subject::stream::DLQ).await.unwrap();
    let mut found = Vec::new();
    for _ in 0..200 {
        found.clear();
        let last = dlq.info().await.unwrap().state.last_sequence;
        for sequence in 1..=last {
            if let Ok(message) = dlq.get_raw_message(sequence).await
                && message.subject.as_str() == subject::DLQ_RESULTS
            {
                let header = |name: &str| {
                    message
                        .headers
                        .get(name)
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                };
                found.push((
                    header(subject::header::DLQ_REASON),
                    header(subject::header::DLQ_SUBJECT),
                    message.payload.clone(),
                ));
            }
        }
        if found.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    found
}

/// (name, subject, content type, body, words the dead letter's reason must contain)
type ResultCase<'a> = (&'a str, String, Option<&'a str>, Vec<u8>, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_results_are_dead_lettered_and_a_running_job_is_undisturbed() {
    let mut fleet = Fleet::start().await;
    let mut options = fleet.coordinator_options.clone();
    options.limits.max_payload_bytes = LIMIT;
    fleet.spawn_coordinator_with(options);
    fleet.spawn_sim("sim");
    fleet.wait_ready().await;
    let events = fleet.record_events().await;
    // The step sleeps while the battery is published, so it is running throughout.
    let job = fleet
        .submit(
            plan(&[("a", "sim", &[])]),
            json!({"sim": {"sleep_ms": 3000}}),
        )
        .await;
    for _ in 0..100 {
        if fleet.status(job).await.steps["a"].status
            == baton_protocol::messages::StepStatus::Running
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each aims at the running attempt (job, "a", 1) where it has a job id at all.
    let result = |fields: Value| {
        let mut base = json!({"job_id": job, "step_id": "a", "attempt": 1, "output": "forged"});
        for (key, value) in fields.as_object().unwrap() {
            if value.is_null() {
                base.as_object_mut().unwrap().remove(key);
            } else {
                base[key] = value.clone();
            }
        }
        base
    };
    let valid_json = serde_json::to_vec(&result(json!({}))).unwrap();
    let valid_msgpack = msgpack(&result(json!({})));
    let with_raw = |raw: &str| {
        String::from_utf8(serde_json::to_vec(&result(json!({"attempt": "RAW"}))).unwrap())
            .unwrap()
            .replace("\"RAW\"", raw)
            .into_bytes()
    };
    let results = subject::RESULTS_ALL.trim_end_matches('>');
    let sim = format!("{results}sim");
    let cases: Vec<ResultCase<'_>> = vec![
        (
            "invalid UTF-8",
            sim.clone(),
            None,
            b"\xff\xfe\xfd".to_vec(),
            "not valid JSON",
        ),
        (
            "truncated JSON",
            sim.clone(),
            None,
            valid_json[..valid_json.len() / 2].to_vec(),
            "not valid JSON",
        ),
        (
            "truncated MessagePack",
            sim.clone(),
            Some("application/msgpack"),
            valid_msgpack[..valid_msgpack.len() - 3].to_vec(),
            "not valid MessagePack",
        ),
        (
            "wrong type",
            sim.clone(),
            None,
            serde_json::to_vec(&result(json!({"attempt": "1"}))).unwrap(),
            "expected u32",
        ),
        (
            "wrong type, MessagePack",
            sim.clone(),
            Some("application/msgpack"),
            msgpack(&result(json!({"job_id": 42}))),
            "schema",
        ),
        (
            "missing field",
            sim.clone(),
            None,
            serde_json::to_vec(&result(json!({"attempt": null}))).unwrap(),
            "missing field `attempt`",
        ),
        (
            "nested 200 levels",
            sim.clone(),
            None,
            serde_json::to_vec(&result(json!({"output": nested(200)}))).unwrap(),
            "nests deeper",
        ),
        (
            "attempt 2^64",
            sim.clone(),
            None,
            with_raw("18446744073709551616"),
            "expected u32",
        ),
        (
            "attempt 1e400",
            sim.clone(),
            None,
            with_raw("1e400"),
            "out of range",
        ),
        (
            "over the size limit",
            sim.clone(),
            None,
            serde_json::to_vec(&result(json!({"output": "x".repeat(LIMIT)}))).unwrap(),
            "the limit is",
        ),
        (
            "wrong content type",
            sim.clone(),
            Some("text/plain"),
            valid_json.clone(),
            "unsupported Content-Type",
        ),
        (
            "unknown step",
            sim.clone(),
            None,
            serde_json::to_vec(&result(json!({"step_id": "ghost"}))).unwrap(),
            "no such step",
        ),
        (
            "another agent's subject",
            format!("{results}other"),
            None,
            valid_json.clone(),
            "another agent's subject",
        ),
        (
            "subject token that is no agent name",
            format!("{results}NOT-AN-AGENT"),
            None,
            valid_json.clone(),
            "not a result subject",
        ),
    ];
    let js = async_nats::jetstream::new(fleet.client.clone());
    let mut expected = BTreeMap::new();
    for (name, to, content, body, reason) in &cases {
        let mut headers = HeaderMap::new();
        if let Some(content) = content {
            headers.insert("Content-Type", *content);
        }
        js.publish_with_headers(to.clone(), headers, body.clone().into())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        expected.insert(*name, (to.clone(), body.clone(), *reason));
    }
    // Garbage on the poison-advisory subject the coordinator also listens on is ignored
    // (an advisory for a task that is not stored changes nothing).
    let advisory = subject::POISON_ADVISORIES.replace('*', "baton-agent-sim");
    let missing_task = json!({"stream": "BATON_TASKS", "consumer": "baton-agent-sim",
        "stream_seq": 999_999, "deliveries": 5});
    for body in [
        b"\xff\xfe".to_vec(),
        b"{\"stream_seq\": \"x\"}".to_vec(),
        serde_json::to_vec(&missing_task).unwrap(),
    ] {
        fleet
            .client
            .publish(advisory.clone(), body.into())
            .await
            .unwrap();
    }
    fleet.client.flush().await.unwrap();
    let dead = dead_results(&fleet, cases.len()).await;
    assert_eq!(dead.len(), cases.len(), "{dead:?}");
    for (name, (to, body, reason)) in &expected {
        // Dead letters keep the original bytes (cut to fit when at the limit).
        let kept = body.len().min(LIMIT - 4096);
        let letter = dead
            .iter()
            .find(|(_, from, payload)| from == to && payload[..] == body[..kept]);
        let (found_reason, _, _) = letter.unwrap_or_else(|| panic!("{name}: no dead letter"));
        assert!(
            found_reason.contains(reason),
            "{name}: reason {found_reason:?} should contain {reason:?}"
        );
    }
    // The running attempt was never touched: it succeeds on its first attempt with the
    // worker's output, not a forged one, and nothing failed or was fenced.
    let status = fleet
        .wait_for(job, JobStatus::Succeeded, Duration::from_secs(20))
        .await;
    assert_eq!(status.steps["a"].attempts, 1);
    assert_eq!(
        status.output,
        Some(json!({"input": {"sim": {"sleep_ms": 3000}}, "needs": {}}))
    );
    for event in events.of(job) {
        assert!(
            !matches!(
                event.kind,
                EventKind::StepFailed { .. } | EventKind::ResultFenced { .. }
            ),
            "{event:?}"
        );
    }
    let mut stream = js.get_stream(subject::stream::RESULTS).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plans_are_rejected_and_publish_no_task() {
    let mut fleet = Fleet::start().await;
    let mut options = fleet.coordinator_options.clone();
    // Room for a 10k-step plan, so the validator (not the step limit) has to walk it.
    options.limits.max_steps = 10_000;
    fleet.spawn_coordinator_with(options);
    fleet.wait_ready().await;
    let mut tasks = fleet.client.subscribe(subject::TASKS_ALL).await.unwrap();
    fleet.client.flush().await.unwrap();
    let ids = |n: usize| (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>();
    // A chain s0 <- s1 <- … <- s{n-1}, closed into a cycle by s0 needing the last.
    let cycle = |n: usize| {
        let ids = ids(n);
        let steps: Vec<Value> = (0..n)
            .map(|i| json!({"id": ids[i], "agent": "sim", "needs": [ids[(i + n - 1) % n]]}))
            .collect();
        json!({"steps": steps})
    };
    let chain = |n: usize| {
        let ids = ids(n);
        let steps: Vec<Value> = (0..n)
            .map(|i| match i {
                0 => json!({"id": ids[0], "agent": "sim"}),
                _ => json!({"id": ids[i], "agent": "sim", "needs": [ids[i - 1]]}),
            })
            .collect();
        json!({"steps": steps})
    };
    let fan_out = {
        let mut steps = vec![json!({"id": "root", "agent": "sim"})];
        steps.extend(
            (0..1000).map(|i| json!({"id": format!("leaf{i}"), "agent": "sim", "needs": ["root"]})),
        );
        json!({"steps": steps})
    };
    let agent = |name: &str| json!({"steps": [{"id": "a", "agent": name}]});
    let step = |id: &str| json!({"steps": [{"id": id, "agent": "sim"}]});
    let long_name = "x".repeat(10 * 1024);
    let cases: Vec<(&str, Value, &str, Vec<String>)> = vec![
        (
            "10k + 1 steps",
            chain(10_001),
            "plan_too_large",
            vec!["10001".into()],
        ),
        (
            "10k-step cycle",
            cycle(10_000),
            "plan_cycle",
            vec!["s0 -> s9999".into(), "s1 -> s0".into()],
        ),
        (
            "500-step cycle",
            cycle(500),
            "plan_cycle",
            vec!["s0 -> s499 -> s498".into(), "s2 -> s1 -> s0".into()],
        ),
        (
            "2-cycle",
            cycle(2),
            "plan_cycle",
            vec!["s0 -> s1 -> s0".into()],
        ),
        (
            "fan-out of 1000",
            fan_out,
            "fan_out_too_wide",
            vec!["1000".into(), "\"root\"".into()],
        ),
        (
            "agent a.>",
            agent("a.>"),
            "invalid_name",
            vec!["a.>".into()],
        ),
        ("agent *", agent("*"), "invalid_name", vec!["\"*\"".into()]),
        (
            "agent a b",
            agent("a b"),
            "invalid_name",
            vec!["\"a b\"".into()],
        ),
        (
            "empty agent",
            agent(""),
            "invalid_name",
            vec!["empty".into()],
        ),
        (
            "10 KB agent",
            agent(&long_name),
            "invalid_name",
            vec!["x".repeat(64)],
        ),
        (
            "step id a.b",
            step("a.b"),
            "invalid_name",
            vec!["\"a.b\"".into()],
        ),
        (
            "10 KB step id",
            step(&long_name),
            "invalid_name",
            vec!["x".repeat(64)],
        ),
    ];
    for (name, plan, code, mentions) in cases {
        let reply = fleet.submit_raw(json!({"plan": plan, "input": {}})).await;
        assert_eq!(reply["error"]["code"], json!(code), "{name}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        for mention in &mentions {
            assert!(
                message.contains(mention.as_str()),
                "{name}: {message:?} should name {mention:?}"
            );
        }
        // A 10 KB name is echoed cut, never whole.
        assert!(
            message.len() < 1000 || code == "plan_cycle",
            "{name}: {} bytes",
            message.len()
        );
    }
    let leaked = tokio::time::timeout(Duration::from_millis(500), tasks.next()).await;
    assert!(leaked.is_err(), "a task was published: {leaked:?}");
    assert_eq!(fleet.stored_tasks().await, 0);
    // Still serving: a valid plan is accepted and runs.
    fleet.spawn_sim("sim");
    let job = fleet.submit(plan(&[("a", "sim", &[])]), json!(1)).await;
    fleet
        .wait_for(job, JobStatus::Succeeded, Duration::from_secs(20))
        .await;
}
