//! Unit tests of the coordinator's metrics: events in, OpenMetrics text out.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use baton_protocol::messages::{Failure, UsageTotals};
use serde_json::json;

use super::queues::{ConsumerCounts, Queues};
use super::*;

fn plan() -> Plan {
    let spec = json!({"steps": [{"id": "a", "agent": "llm"}, {"id": "b", "agent": "sql", "needs": ["a"]}]});
    Plan::from_value(spec, &baton_protocol::Limits::default()).unwrap()
}

fn line<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .map(|l| &l[prefix.len() + 1..])
}

#[test]
fn events_become_counters_and_histograms() {
    let metrics = Metrics::new();
    let plan = plan();
    let report = |latency, duration, usage| AttemptReport {
        latency_ms: Some(latency),
        duration_ms: Some(duration),
        usage,
        worker: Some("w".into()),
    };
    let usage = UsageTotals {
        input_tokens: 1000,
        output_tokens: 10,
        cost_usd: 0.25,
        model: Some("m1".into()),
    };
    let events = [
        EventKind::JobCreated {
            plan: None,
            steps: 2,
        },
        EventKind::StepDispatched {
            step_id: "a".into(),
            agent: "llm".into(),
            attempt: 1,
            input_bytes: None,
            input_sha256: None,
        },
        EventKind::StepFailed {
            step_id: "a".into(),
            attempt: 1,
            error: Failure {
                message: "x".into(),
                class: FailureClass::Timeout,
                retryable: true,
            },
            report: report(3000, 0, None),
        },
        EventKind::RetryScheduled {
            step_id: "a".into(),
            attempt: 2,
            delay_ms: 5,
            class: Some(FailureClass::Timeout),
        },
        EventKind::StepSucceeded {
            step_id: "a".into(),
            attempt: 2,
            human: false,
            report: report(40, 38, Some(usage.clone())),
        },
        EventKind::StepSucceeded {
            step_id: "a".into(),
            attempt: 2,
            human: false,
            report: report(40, 38, Some(usage)),
        },
        EventKind::ResultFenced {
            step_id: "a".into(),
            attempt: 1,
            reason: "stale running:2".into(),
        },
        EventKind::StepSucceeded {
            step_id: "b".into(),
            attempt: 1,
            human: true,
            report: AttemptReport::default(),
        },
        EventKind::JobSucceeded { usage: None },
    ];
    for event in &events {
        metrics.observe(event, Some(&plan));
    }
    metrics.observe(
        &EventKind::StepEscalated {
            step_id: "a".into(),
            attempt: 1,
            escalation_id: "x".into(),
        },
        None,
    );
    let text = baton_metrics::encode(&metrics.registry);
    let value = |series: &str| line(&text, series).unwrap_or_else(|| panic!("{series}: {text}"));
    assert_eq!(value("baton_jobs_created_total"), "1");
    assert_eq!(
        value("baton_jobs_finished_total{status=\"succeeded\"}"),
        "1"
    );
    assert_eq!(value("baton_jobs_finished_total{status=\"failed\"}"), "0");
    assert_eq!(value("baton_step_attempts_total{agent=\"llm\"}"), "1");
    assert_eq!(
        value("baton_step_outcomes_total{agent=\"llm\",outcome=\"timeout\"}"),
        "1"
    );
    assert_eq!(
        value("baton_step_outcomes_total{agent=\"llm\",outcome=\"succeeded\"}"),
        "2"
    );
    assert_eq!(value("baton_step_timeouts_total{agent=\"llm\"}"), "1");
    assert_eq!(
        value("baton_step_retries_total{agent=\"llm\",class=\"timeout\"}"),
        "1"
    );
    assert_eq!(
        value("baton_results_fenced_total{agent=\"llm\",reason=\"stale\"}"),
        "1"
    );
    assert_eq!(
        value("baton_step_latency_seconds_count{agent=\"llm\"}"),
        "3"
    );
    assert_eq!(
        value("baton_step_overhead_seconds_count{agent=\"llm\"}"),
        "3"
    );
    assert_eq!(
        value("baton_step_overhead_seconds_bucket{le=\"0.0025\",agent=\"llm\"}"),
        "2"
    );
    assert_eq!(
        value("baton_tokens_total{agent=\"llm\",model=\"m1\",direction=\"input\"}"),
        "2000"
    );
    assert_eq!(
        value("baton_cost_usd_total{agent=\"llm\",model=\"m1\"}"),
        "0.5"
    );
    // The human's output for b is no attempt; an event without a cached plan is counted
    // under `unknown`.
    assert!(
        line(
            &text,
            "baton_step_outcomes_total{agent=\"sql\",outcome=\"succeeded\"}"
        )
        .is_none()
    );
    assert_eq!(
        value("baton_step_escalations_total{agent=\"unknown\"}"),
        "1"
    );
    // No queue has been read yet: no queue gauges.
    assert!(!text.contains(name::TASKS_PENDING), "{text}");
}

#[test]
fn queue_depths_are_gauges_per_agent() {
    let metrics = Metrics::new();
    let counts = ConsumerCounts {
        pending: 7,
        in_flight: 2,
        redelivered: 1,
    };
    *metrics.queues.lock().unwrap() = Queues {
        agents: vec![("sql".into(), counts)],
        coordinator: vec![("results", ConsumerCounts::default())],
        read_at: Some(Instant::now()),
    };
    let text = baton_metrics::encode(&metrics.registry);
    assert_eq!(line(&text, "baton_tasks_pending{agent=\"sql\"}"), Some("7"));
    assert_eq!(
        line(&text, "baton_tasks_in_flight{agent=\"sql\"}"),
        Some("2")
    );
    assert_eq!(
        line(&text, "baton_tasks_redelivered{agent=\"sql\"}"),
        Some("1")
    );
    assert_eq!(
        line(&text, "baton_coordinator_pending{queue=\"results\"}"),
        Some("0")
    );
    assert!(
        text.contains("# TYPE baton_queue_info_age_seconds gauge\n"),
        "{text}"
    );
}
