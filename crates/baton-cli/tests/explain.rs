//! Every job explainable: `baton trace` (text, JSON, HTML), `baton replay` (matching, and a
//! changed retry policy reported), token and cost accounting, `baton rerun --from`, and
//! progress streamed to `baton submit --follow` / `baton watch`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use baton_coordinator::Price;
use baton_protocol::messages::{EventKind, JobStatus, StepStatus, Usage};
use baton_tests::Fleet;
use baton_worker::{Agent, AgentError, Task};
use serde_json::{Value, json};
use uuid::Uuid;

use common::{baton, stdout};

const WAIT: Duration = Duration::from_secs(30);

/// A step that fails once, a step that times out once, and a step that escalates after two
/// failed attempts.
fn eventful_plan(c_attempts: u32) -> Value {
    let retry =
        |max: u32| json!({"max_attempts": max, "initial_backoff_ms": 50, "max_backoff_ms": 50});
    json!({"name": "eventful", "steps": [
        {"id": "a", "agent": "sim", "retry": retry(3),
         "input": {"sim": {"fail": "error", "fail_attempts": 1}}},
        {"id": "b", "agent": "sim", "needs": ["a"], "timeout_ms": 800, "retry": retry(3),
         "input": {"sim": {"fail": "timeout", "fail_attempts": 1}}},
        {"id": "c", "agent": "sim", "needs": ["b"], "retry": retry(c_attempts),
         "input": {"sim": {"fail": "error"}}}
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_shows_a_retry_a_timeout_and_an_escalation_in_order_and_replay_checks_them() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let job = fleet.submit(eventful_plan(2), json!({"n": 1})).await;
    let status = fleet.wait_for(job, JobStatus::Escalated, WAIT).await;
    assert_eq!(status.steps["c"].attempts, 2);
    let id = format!("{job}.c");
    let resolved = baton(
        &fleet,
        &[
            "escalations",
            "resolve",
            &id,
            "--output",
            r#"{"by": "hand"}"#,
            "--by",
            "ops@example.com",
        ],
    )
    .await;
    assert!(resolved.status.success(), "{resolved:?}");
    fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    fleet.trace(job).await; // the log holds the job's end

    // Text: the waterfall rows and the decision path, in order.
    let text = baton(&fleet, &["trace", &job.to_string()]).await;
    assert!(text.status.success(), "{text:?}");
    let text = stdout(&text);
    let row = |step: &str, attempt: u32, outcome: &str| {
        text.lines().any(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 5
                && cols[0] == step
                && cols[2] == attempt.to_string()
                && cols.contains(&outcome)
        })
    };
    for (step, attempt, outcome) in [
        ("a", 1, "failed"),
        ("a", 2, "succeeded"),
        ("b", 1, "timeout"),
        ("b", 2, "succeeded"),
        ("c", 1, "failed"),
        ("c", 2, "failed"),
    ] {
        assert!(
            row(step, attempt, outcome),
            "no row {step} #{attempt} {outcome}:\n{text}"
        );
    }
    assert!(
        text.starts_with(&format!("job {job} · plan eventful · succeeded · ")),
        "{text}"
    );
    let order = [
        "a: attempt 1 failed (error)",
        "a: retry as attempt 2",
        "a: attempt 2 succeeded",
        "b: attempt 1 failed (timeout)",
        "b: retry as attempt 2",
        "b: attempt 2 succeeded",
        "c: attempt 1 failed (error)",
        "c: retry as attempt 2",
        "c: attempt 2 failed (error)",
        "c: attempt 2 dead-lettered to baton.dlq.sim",
        "c: escalated to a human after attempt 2",
        "c: resolved by ops@example.com with a supplied output",
        "job succeeded",
    ];
    let mut at = 0;
    for needle in order {
        let found = text[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing or out of order in:\n{text}"));
        at += found + needle.len();
    }

    // JSON: attempt counts and outcomes per step.
    let json_out = baton(&fleet, &["trace", &job.to_string(), "--json"]).await;
    assert!(json_out.status.success(), "{json_out:?}");
    let trace: Value = serde_json::from_str(&stdout(&json_out)).unwrap();
    let attempts = |step: &str| -> Vec<String> {
        trace["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == step)
            .unwrap()["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["outcome"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(attempts("a"), ["failed", "succeeded"]);
    assert_eq!(attempts("b"), ["timeout", "succeeded"]);
    assert_eq!(attempts("c"), ["failed", "failed"]);
    assert_eq!(trace["status"], "succeeded");

    // HTML: a self-contained page with one bar per attempt.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("trace.html");
    let html = baton(
        &fleet,
        &["trace", &job.to_string(), "--html", page.to_str().unwrap()],
    )
    .await;
    assert!(html.status.success(), "{html:?}");
    let page = std::fs::read_to_string(&page).unwrap();
    assert_eq!(page.matches(r#"class="bar""#).count(), 6);
    assert!(page.contains(r#"data-outcome="timeout""#));
    assert!(!page.contains("<script"), "the page needs no script");

    // Replay: every decision matches the record.
    let replay = baton(&fleet, &["replay", &job.to_string()]).await;
    assert_eq!(replay.status.code(), Some(0), "{replay:?}");
    assert!(stdout(&replay).contains("decisions match the record"));

    // Replay against a plan whose step c may try three times: the escalation after attempt 2
    // becomes a retry, which is reported.
    let changed = dir.path().join("changed.json");
    std::fs::write(&changed, eventful_plan(3).to_string()).unwrap();
    let replay = baton(
        &fleet,
        &[
            "replay",
            &job.to_string(),
            "--plan",
            changed.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(replay.status.code(), Some(1), "{replay:?}");
    let report: Value = serde_json::from_str(&stdout(&replay)).unwrap();
    let mismatches = report["mismatches"].as_array().unwrap();
    assert!(
        mismatches.iter().any(|m| m["scope"] == "c"
            && m["recorded"] == "escalate after attempt 2"
            && m["replayed"] == "retry as attempt 3"),
        "{report:#}"
    );
    // The changed decision's consequences follow (the human's resolution finds no
    // escalation, the job does not end), and nothing upstream of c differs.
    assert!(
        mismatches
            .iter()
            .all(|m| m["scope"] == "c" || m["scope"] == "job"),
        "{report:#}"
    );
}

/// An agent that reports usage: `tokens` input tokens and half as many output tokens per
/// attempt, model `m-large` for step `big` and `m-small` otherwise; step `flaky` fails its
/// first attempt (after spending tokens).
struct Metered;

impl Agent for Metered {
    async fn process(&self, task: Task) -> Result<Value, AgentError> {
        let tokens = 100 * u64::from(task.attempt) + task.step_id.len() as u64;
        let model = if task.step_id == "big" {
            "m-large"
        } else {
            "m-small"
        };
        task.report_usage(Usage {
            model: Some(model.into()),
            input_tokens: tokens,
            output_tokens: tokens / 2,
        });
        if task.step_id == "flaky" && task.attempt == 1 {
            return Err(AgentError::retryable("rate limited"));
        }
        Ok(json!({"step": task.step_id}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_cost_totals_of_a_job_are_the_sums_of_its_steps() {
    let mut fleet = Fleet::start().await;
    let mut options = fleet.coordinator_options.clone();
    options.prices.insert(
        "m-large".into(),
        Price {
            input_per_mtok: 3.0,
            output_per_mtok: 15.0,
        },
    );
    options.prices.insert(
        "m-small".into(),
        Price {
            input_per_mtok: 0.25,
            output_per_mtok: 1.25,
        },
    );
    fleet.spawn_coordinator_with(options);
    fleet.wait_ready().await;
    fleet.spawn_agent("llm", Metered);
    let plan = json!({"steps": [
        {"id": "big", "agent": "llm"},
        {"id": "flaky", "agent": "llm", "retry": {"initial_backoff_ms": 20}},
        {"id": "join", "agent": "llm", "needs": ["big", "flaky"]}
    ]});
    let job = fleet.submit(plan, json!({})).await;
    let status = fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;

    // Expected from the agent's arithmetic and the price table, in nano-dollars.
    let cost = |input: u64, output: u64, (pi, po): (u64, u64)| input * pi + output * po;
    let large = (3000, 15000); // n$ per token
    let small = (250, 1250);
    let tokens = |step: &str, attempt: u64| 100 * attempt + step.len() as u64;
    let expect = [
        ("big", vec![tokens("big", 1)], large),
        ("flaky", vec![tokens("flaky", 1), tokens("flaky", 2)], small),
        ("join", vec![tokens("join", 1)], small),
    ];
    let (mut job_in, mut job_out, mut job_nanos) = (0, 0, 0);
    for (step, attempts, price) in expect {
        let usage = status.steps[step].usage.clone().expect("step usage");
        let input: u64 = attempts.iter().sum();
        let output: u64 = attempts.iter().map(|t| t / 2).sum();
        let nanos: u64 = attempts.iter().map(|t| cost(*t, t / 2, price)).sum();
        assert_eq!(usage.input_tokens, input, "{step}");
        assert_eq!(usage.output_tokens, output, "{step}");
        assert_eq!((usage.cost_usd * 1e9).round() as u64, nanos, "{step}");
        job_in += input;
        job_out += output;
        job_nanos += nanos;
    }
    let total = status.usage.clone().expect("job usage");
    assert_eq!(total.input_tokens, job_in);
    assert_eq!(total.output_tokens, job_out);
    assert_eq!((total.cost_usd * 1e9).round() as u64, job_nanos);
    let steps_sum: f64 = status
        .steps
        .values()
        .map(|s| s.usage.as_ref().unwrap().cost_usd)
        .sum();
    assert!((steps_sum - total.cost_usd).abs() < 1e-12);
    assert_eq!(
        status.steps["big"].usage.as_ref().unwrap().model.as_deref(),
        Some("m-large")
    );

    // The decision log carries each attempt's usage, and the job's end carries the totals.
    let trace = fleet.trace(job).await;
    let per_attempt: u64 = trace
        .decisions
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepSucceeded { report, .. } | EventKind::StepFailed { report, .. } => {
                report.usage.as_ref().map(|u| u.input_tokens)
            }
            _ => None,
        })
        .sum();
    assert_eq!(per_attempt, job_in);
    let end = trace
        .decisions
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::JobSucceeded { usage } => usage.clone(),
            _ => None,
        })
        .expect("job_succeeded with usage");
    assert_eq!(end.input_tokens, job_in);
    fleet.assert_replays(job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_from_a_step_reuses_the_outputs_before_it_and_runs_the_rest() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let plan = json!({"name": "chain", "steps": [
        {"id": "a", "agent": "sim"},
        {"id": "side", "agent": "sim"},
        {"id": "b", "agent": "sim", "needs": ["a"]},
        {"id": "c", "agent": "sim", "needs": ["b", "side"]}
    ]});
    let job = fleet.submit(plan, json!({"q": 1})).await;
    let original = fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    let events = fleet.record_events().await;

    let rerun = baton(&fleet, &["rerun", &job.to_string(), "--from", "b"]).await;
    assert!(rerun.status.success(), "{rerun:?}");
    let new_job: Uuid = stdout(&rerun).trim().parse().unwrap();
    assert_ne!(new_job, job);
    let status = fleet.wait_for(new_job, JobStatus::Succeeded, WAIT).await;
    for reused in ["a", "side"] {
        assert_eq!(status.steps[reused].attempts, 0, "{reused} was not run");
        assert_eq!(status.steps[reused].status, StepStatus::Succeeded);
        assert_eq!(status.steps[reused].output, original.steps[reused].output);
    }
    for live in ["b", "c"] {
        assert_eq!(status.steps[live].attempts, 1, "{live} ran");
    }
    assert_eq!(status.output, original.output);
    fleet.trace(new_job).await;
    let dispatched: Vec<String> = events
        .of(new_job)
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepDispatched { step_id, .. } => Some(step_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(dispatched, ["b", "c"]);
    assert!(events.of(new_job).iter().any(|e| matches!(
        &e.kind,
        EventKind::StepReused { step_id, source_job } if step_id == "a" && *source_job == job
    )));
    fleet.assert_replays(new_job).await;

    // Bad reruns are clear errors.
    let unknown = baton(&fleet, &["rerun", &job.to_string(), "--from", "nope"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown_step"));
    let missing = baton(
        &fleet,
        &["rerun", &Uuid::now_v7().to_string(), "--from", "a"],
    )
    .await;
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not_found"));
    let escalating = json!({"steps": [
        {"id": "x", "agent": "sim", "retry": {"max_attempts": 1}, "input": {"sim": {"fail": "error"}}},
        {"id": "y", "agent": "sim", "needs": ["x"]}
    ]});
    let stuck = fleet.submit(escalating, json!({})).await;
    fleet.wait_for(stuck, JobStatus::Escalated, WAIT).await;
    let not_reusable = baton(&fleet, &["rerun", &stuck.to_string(), "--from", "y"]).await;
    assert!(
        String::from_utf8_lossy(&not_reusable.stderr).contains("not_reusable"),
        "{not_reusable:?}"
    );
}

/// Streams three tokens as progress, then answers with them joined.
struct Streaming;

impl Agent for Streaming {
    async fn process(&self, task: Task) -> Result<Value, AgentError> {
        let mut text = String::new();
        for token in ["Hel", "lo, ", "world"] {
            task.progress(json!(token)).await;
            text.push_str(token);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        Ok(json!(text))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_follow_and_watch_print_events_and_progress_live() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_agent("writer", Streaming);
    fleet.spawn_sim("sim");
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        json!({"name": "stream", "steps": [{"id": "write", "agent": "writer"}]}).to_string(),
    )
    .unwrap();
    let follow = baton(&fleet, &["submit", plan.to_str().unwrap(), "--follow"]).await;
    assert_eq!(follow.status.code(), Some(0), "{follow:?}");
    let out = stdout(&follow);
    let mut at = 0;
    assert!(out.contains("job created"), "{out}");
    assert!(
        out.contains("write: dispatched attempt 1 to writer"),
        "{out}"
    );
    // Progress comes from the worker on its own subject, so it may overtake the first
    // events; it is ordered among itself and comes before the step's success.
    for needle in [
        "write (attempt 1) #1: Hel",
        "write (attempt 1) #2: lo, ",
        "write (attempt 1) #3: world",
        "write: attempt 1 succeeded",
        "job succeeded",
    ] {
        let found = out[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing or out of order in:\n{out}"));
        at += found + needle.len();
    }

    // `watch` on a job that is running: history first, then live events to the end.
    let slow = json!({"steps": [
        {"id": "wait", "agent": "sim", "input": {"sim": {"sleep_ms": 700}}},
        {"id": "after", "agent": "sim", "needs": ["wait"]}
    ]});
    let job = fleet.submit(slow, json!({})).await;
    let watch = baton(&fleet, &["watch", &job.to_string()]).await;
    assert_eq!(watch.status.code(), Some(0), "{watch:?}");
    let out = stdout(&watch);
    for needle in [
        "job created",
        "wait: dispatched attempt 1",
        "after: attempt 1 succeeded",
        "job succeeded",
    ] {
        assert!(out.contains(needle), "{needle:?} missing in:\n{out}");
    }
    assert_eq!(
        out.matches("wait: dispatched attempt 1").count(),
        1,
        "no event printed twice:\n{out}"
    );
    // An escalating job: watch exits 2.
    let failing = json!({"steps": [{"id": "x", "agent": "sim", "retry": {"max_attempts": 1}, "input": {"sim": {"fail": "error"}}}]});
    let job = fleet.submit(failing, json!({})).await;
    let watch = baton(&fleet, &["watch", &job.to_string(), "--json"]).await;
    assert_eq!(watch.status.code(), Some(2), "{watch:?}");
    let lines: Vec<Value> = stdout(&watch)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["type"] == "step_escalated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_log_stays_within_its_bound_and_keeps_the_newest_entries() {
    let mut fleet = Fleet::start().await;
    let mut options = fleet.coordinator_options.clone();
    options.max_log_bytes = 4096;
    fleet.spawn_coordinator_with(options);
    fleet.wait_ready().await;
    fleet.spawn_sim("sim");
    // A chain of 40 steps: about 80 events, well over 4 KiB of log.
    let steps: Vec<Value> = (0..40)
        .map(|i| match i {
            0 => json!({"id": "s0", "agent": "sim"}),
            _ => json!({"id": format!("s{i}"), "agent": "sim", "needs": [format!("s{}", i - 1)],
                        "input": {"n": i}}),
        })
        .collect();
    let job = fleet.submit(json!({"steps": steps}), json!({})).await;
    fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    let trace = fleet.trace(job).await;
    assert!(trace.dropped > 0, "nothing was dropped");
    let last = trace.decisions.last().expect("entries kept");
    assert!(
        matches!(last.kind, EventKind::JobSucceeded { .. }),
        "{last:?}"
    );
    let len: u64 = redis::cmd("STRLEN")
        .arg(baton_protocol::keys::log(job))
        .query_async(&mut fleet.redis_conn().await)
        .await
        .unwrap();
    assert!(len <= 4096, "log is {len} bytes");
    // Every entry kept is whole, and kept plus dropped is every event of the job.
    assert_eq!(trace.decisions.len() as u64 + trace.dropped, 1 + 40 * 2 + 1);
    // A log that lost entries cannot be replayed, and says so.
    let scratch = baton_harness::RedisServer::start().unwrap();
    let error = baton_coordinator::replay(&trace, None, &scratch.url())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("cannot be replayed"), "{error}");
}
