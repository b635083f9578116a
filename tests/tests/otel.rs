//! Distributed tracing end to end: a coordinator and two sim workers as separate processes
//! export over OTLP/HTTP to a real receiver in this test, which decodes the protobuf. One
//! job is one trace, and the spans nest job → step → attempt → worker `process` → the
//! agent's own span.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use async_nats::HeaderMap;
use baton_harness::Signal;
use baton_protocol::messages::JobStatus;
use baton_protocol::subject;
use baton_tests::Fleet;
use baton_tests::otlp::{OtlpReceiver, ReceivedSpan};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

const SUBMITTER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-{SUBMITTER_SPAN}-01")
}

fn random_trace() -> String {
    Uuid::now_v7().simple().to_string()
}

/// The spans of one trace, by name (names are unique within the jobs below but for the
/// worker spans, which are looked up by parent).
fn of_trace(spans: &[ReceivedSpan], trace: &str) -> Vec<ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.trace_id() == trace)
        .cloned()
        .collect()
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name() == name).collect()
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "spans named {name:?}: {found:#?}");
    found[0]
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.parent_id() == parent.span_id())
        .collect()
}

/// Checks an attempt span, the worker's `process` span under it and the sim's span under
/// that; returns the process span.
fn check_attempt<'a>(
    spans: &'a [ReceivedSpan],
    attempt: &ReceivedSpan,
    agent: &str,
    number: i64,
    outcome: &str,
) -> &'a ReceivedSpan {
    assert_eq!(attempt.service, "baton-coordinator");
    assert_eq!(attempt.attr("baton.agent").as_deref(), Some(agent));
    assert_eq!(attempt.int("baton.attempt"), Some(number));
    assert_eq!(attempt.attr("baton.outcome").as_deref(), Some(outcome));
    assert_eq!(
        attempt.attr("gen_ai.request.model").as_deref(),
        Some("sim-1")
    );
    assert!(attempt.int("gen_ai.usage.input_tokens").unwrap() > 0);
    assert!(attempt.int("gen_ai.usage.output_tokens").unwrap() > 0);
    let process = children(spans, attempt);
    assert_eq!(process.len(), 1, "process spans under {attempt:#?}");
    let process = process[0];
    assert_eq!(process.name(), format!("process {agent}"));
    assert_eq!(process.service, format!("baton-worker-{agent}"));
    assert_eq!(process.attr("baton.agent").as_deref(), Some(agent));
    assert_eq!(process.int("baton.attempt"), Some(number));
    assert_eq!(process.attr("baton.outcome").as_deref(), Some(outcome));
    assert_eq!(
        process.attr("gen_ai.request.model").as_deref(),
        Some("sim-1")
    );
    assert!(process.int("gen_ai.usage.input_tokens").unwrap() > 0);
    assert_eq!(process.is_error(), outcome != "succeeded");
    let own = children(spans, process);
    assert_eq!(own.len(), 1, "agent spans under {process:#?}");
    assert_eq!(own[0].name(), "sim.work");
    assert_eq!(own[0].service, process.service);
    process
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_job_is_one_trace_across_coordinator_and_worker_processes() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let mut fleet = Fleet::start().await;
    let processes = [
        fleet.spawn_process("baton", &["coordinator", "--otlp-endpoint", &endpoint]),
        fleet.spawn_process(
            "baton-agent-sim",
            &["--type", "fetch", "--otlp-endpoint", &endpoint],
        ),
        fleet.spawn_process(
            "baton-agent-sim",
            &["--type", "summarise", "--otlp-endpoint", &endpoint],
        ),
    ];
    fleet.wait_ready().await;
    // Tasks and results on the wire, to see the headers they carry.
    let mut wire = fleet.client.subscribe("baton.*.>").await.unwrap();
    fleet.client.flush().await.unwrap();

    // A two-step job submitted by request/reply inside the submitter's trace.
    let trace = random_trace();
    let plan = json!({"name": "traced", "steps": [
        {"id": "fetch", "agent": "fetch"},
        {"id": "summarise", "agent": "summarise", "needs": ["fetch"]},
    ]});
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", traceparent(&trace).as_str());
    let body = json!({"plan": plan, "input": {"sim": {"usage": true}, "text": "hello"}});
    let reply = fleet
        .request_raw(
            subject::SUBMIT,
            Some(headers),
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await;
    let job: Uuid = serde_json::from_value(reply["job_id"].clone()).unwrap();
    fleet
        .wait_for(job, JobStatus::Succeeded, Duration::from_secs(30))
        .await;

    // A job with a retry, submitted durably inside another trace.
    let retry_trace = random_trace();
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", traceparent(&retry_trace).as_str());
    let body = json!({
        "plan": {"name": "flaky", "steps": [{"id": "flaky", "agent": "summarise",
            "retry": {"max_attempts": 3, "initial_backoff_ms": 50}}]},
        "input": {"sim": {"usage": true, "fail": "error", "fail_attempts": 1}},
        "idempotency_key": "otel-retry",
    });
    let js = async_nats::jetstream::new(fleet.client.clone());
    js.publish_with_headers(
        subject::ENQUEUE,
        headers,
        serde_json::to_vec(&body).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let retry_job = fleet.wait_for_key("otel-retry").await;
    fleet
        .wait_for(retry_job, JobStatus::Succeeded, Duration::from_secs(30))
        .await;

    // Stopping flushes every exporter.
    for process in processes {
        fleet.signal_process(process, Signal::SIGTERM);
    }
    for process in processes {
        let exit = tokio::task::block_in_place(|| fleet.wait_process(process));
        assert!(exit.success(), "process {process} exited with {exit}");
    }
    let spans = receiver
        .wait_for(Duration::from_secs(10), "both jobs' spans", |spans| {
            spans.iter().filter(|s| s.trace_id() == trace).count() == 9
                && spans.iter().filter(|s| s.trace_id() == retry_trace).count() == 8
        })
        .await;

    // Every span that names the job is in the submitter's trace.
    for span in &spans {
        if span.attr("baton.job_id") == Some(job.to_string()) {
            assert_eq!(span.trace_id(), trace, "{span:#?}");
        }
    }
    let traced = of_trace(&spans, &trace);
    let job_span = one(&traced, "job traced");
    assert_eq!(job_span.parent_id(), SUBMITTER_SPAN);
    assert_eq!(job_span.service, "baton-coordinator");
    assert_eq!(job_span.attr("baton.outcome").as_deref(), Some("succeeded"));
    assert!(job_span.int("gen_ai.usage.input_tokens").unwrap() > 0);
    let mut process_ids = HashMap::new();
    for (step, agent) in [("fetch", "fetch"), ("summarise", "summarise")] {
        let step_span = one(&traced, &format!("step {step}"));
        assert_eq!(step_span.parent_id(), job_span.span_id());
        assert_eq!(step_span.attr("baton.step_id").as_deref(), Some(step));
        assert_eq!(step_span.attr("baton.agent").as_deref(), Some(agent));
        assert_eq!(
            step_span.attr("baton.outcome").as_deref(),
            Some("succeeded")
        );
        assert_eq!(
            step_span.attr("gen_ai.request.model").as_deref(),
            Some("sim-1")
        );
        let attempts = children(&traced, step_span);
        assert_eq!(attempts.len(), 1, "{attempts:#?}");
        assert_eq!(attempts[0].name(), "attempt 1");
        let process = check_attempt(&traced, attempts[0], agent, 1, "succeeded");
        process_ids.insert(step, (attempts[0].span_id(), process.span_id()));
    }
    assert!(job_span.span.start_time_unix_nano <= job_span.span.end_time_unix_nano);

    // The wire: each task names its attempt span, each result its process span.
    let mut seen = 0;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), wire.next()).await
    {
        let Some(header) = message.headers.as_ref().and_then(|h| h.get("traceparent")) else {
            continue;
        };
        let header = header.as_str();
        if !header.contains(&trace) {
            continue;
        }
        let step = if message.subject.contains("fetch") {
            "fetch"
        } else {
            "summarise"
        };
        let (attempt, process) = &process_ids[step];
        if message.subject.starts_with("baton.tasks.") {
            assert_eq!(header, format!("00-{trace}-{attempt}-01"));
            seen += 1;
        } else if message.subject.starts_with("baton.results.") {
            assert_eq!(header, format!("00-{trace}-{process}-01"));
            seen += 1;
        }
    }
    assert_eq!(seen, 4, "two tasks and two results carry the trace");

    // The retried job: one step span, two attempts under it, the first failed.
    let retried = of_trace(&spans, &retry_trace);
    let job_span = one(&retried, "job flaky");
    assert_eq!(job_span.parent_id(), SUBMITTER_SPAN);
    let step_span = one(&retried, "step flaky");
    assert_eq!(step_span.parent_id(), job_span.span_id());
    assert_eq!(step_span.int("baton.attempt"), Some(2));
    let mut attempts = children(&retried, step_span);
    attempts.sort_by_key(|s| s.int("baton.attempt"));
    assert_eq!(
        attempts.iter().map(|s| s.name()).collect::<Vec<_>>(),
        ["attempt 1", "attempt 2"]
    );
    check_attempt(&retried, attempts[0], "summarise", 1, "failed");
    assert_eq!(
        attempts[0].attr("baton.failure_class").as_deref(),
        Some("error")
    );
    assert!(attempts[0].is_error());
    check_attempt(&retried, attempts[1], "summarise", 2, "succeeded");
    assert!(!attempts[1].is_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_traceparent_the_trace_id_is_the_job_id() {
    let receiver = OtlpReceiver::start().await;
    let mut fleet = Fleet::start().await;
    let mut options = fleet.coordinator_options.clone();
    options.otlp_endpoint = Some(receiver.endpoint());
    fleet.spawn_coordinator_with(options);
    // An in-process worker: this test process exports nothing of its own.
    fleet.spawn_sim("sim");
    fleet.wait_ready().await;
    let job = fleet
        .submit(
            baton_tests::plan(&[("a", "sim", &[]), ("b", "sim", &["a"])]),
            json!({}),
        )
        .await;
    fleet
        .wait_for(job, JobStatus::Succeeded, Duration::from_secs(30))
        .await;
    fleet.stop_services().await;
    let trace = job.simple().to_string();
    let spans = receiver
        .wait_for(Duration::from_secs(10), "the job's spans", |spans| {
            spans.iter().filter(|s| s.trace_id() == trace).count() == 5
        })
        .await;
    let spans = of_trace(&spans, &trace);
    let job_span = one(&spans, "job test");
    assert_eq!(job_span.parent_id(), "", "the job span is the root");
    for step in ["a", "b"] {
        let step_span = one(&spans, &format!("step {step}"));
        assert_eq!(step_span.parent_id(), job_span.span_id());
        let attempts = children(&spans, step_span);
        assert_eq!(attempts.len(), 1);
        assert_eq!(
            attempts[0].attr("baton.outcome").as_deref(),
            Some("succeeded")
        );
        // No usage was reported, so no GenAI attributes.
        assert_eq!(attempts[0].attr("gen_ai.usage.input_tokens"), None);
    }
}
