//! Prometheus metrics: after a run with a retry, an escalation (dead-lettered, then failed by
//! a human) and reported token usage, the coordinator's and the worker's `/metrics` pages,
//! scraped over HTTP, count exactly what happened. A taken metrics address fails startup.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use baton_coordinator::{Coordinator, Price};
use baton_protocol::messages::JobStatus;
use baton_protocol::{AgentName, subject};
use baton_tests::scrape::{get, sample, scrape_until};
use baton_tests::{Fleet, binary_path};
use baton_worker::{Worker, WorkerOptions};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], baton_harness::free_port().unwrap()))
}

fn one_step(id: &str, agent: &str, max_attempts: u32) -> Value {
    json!({"steps": [{"id": id, "agent": agent,
        "retry": {"max_attempts": max_attempts, "initial_backoff_ms": 50, "max_backoff_ms": 50}}]})
}

/// The value of a sample that must be there.
fn value(page: &str, series: &str) -> f64 {
    sample(page, series).unwrap_or_else(|| panic!("no sample {series} in:\n{page}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_retry_an_escalation_tokens_and_cost() {
    let mut fleet = Fleet::start().await;
    let coordinator_addr = free_addr();
    fleet.coordinator_options.admin_addr = Some(coordinator_addr);
    // $2 per million input tokens, $10 per million output tokens.
    fleet.coordinator_options.prices.insert(
        "sim-model".into(),
        Price {
            input_per_mtok: 2.0,
            output_per_mtok: 10.0,
        },
    );
    fleet.spawn_coordinator();
    fleet.wait_ready().await;
    let worker_addr = free_addr();
    let mut options = WorkerOptions::new(AgentName::new("sim").unwrap());
    options.nats.url = fleet.nats.url();
    options.admin_addr = Some(worker_addr);
    fleet.spawn_worker_with(options, baton_agents::sim::Sim);

    // A retry: attempt 1 fails, attempt 2 succeeds; both report 1000 + 100 tokens.
    let usage = json!({"model": "sim-model", "input_tokens": 1000, "output_tokens": 100});
    let input = json!({"sim": {"fail": "error", "fail_attempts": 1, "usage": usage}});
    let retried = fleet.submit(one_step("a", "sim", 3), input).await;
    let status = fleet.wait_for(retried, JobStatus::Succeeded, WAIT).await;
    assert_eq!(status.steps["a"].attempts, 2);

    // An escalation: one attempt allowed, it fails; the task is dead-lettered; a human fails
    // the job.
    let input = json!({"sim": {"fail": "error"}});
    let escalated = fleet.submit(one_step("b", "sim", 1), input).await;
    fleet.wait_for(escalated, JobStatus::Escalated, WAIT).await;
    scrape_until(coordinator_addr, WAIT, |page| {
        sample(page, "baton_step_escalations_total{agent=\"sim\"}") == Some(1.0)
    })
    .await;
    let resolve = json!({"id": format!("{escalated}.b"), "action": "fail", "reason": "test"});
    let reply = fleet
        .request_raw(
            subject::ESCALATIONS_RESOLVE,
            None,
            serde_json::to_vec(&resolve).unwrap().into(),
        )
        .await;
    assert_eq!(reply["job_status"], "failed", "{reply}");

    // A task nobody takes: its agent type has a consumer (as if its workers were all down).
    let js = async_nats::jetstream::new(fleet.client.clone());
    let idle = AgentName::new("idle").unwrap();
    baton_nats::agent_consumer(&js, &idle, Default::default())
        .await
        .unwrap();
    fleet.submit(one_step("c", "idle", 1), json!({})).await;

    // The coordinator. Events are counted just after their transition: wait for the last.
    let page = scrape_until(coordinator_addr, WAIT, |page| {
        sample(page, "baton_jobs_finished_total{status=\"failed\"}") == Some(1.0)
            && sample(page, "baton_tasks_pending{agent=\"idle\"}") == Some(1.0)
    })
    .await;
    let expected = [
        ("baton_jobs_created_total", 3.0),
        ("baton_jobs_finished_total{status=\"succeeded\"}", 1.0),
        ("baton_jobs_finished_total{status=\"failed\"}", 1.0),
        ("baton_step_attempts_total{agent=\"sim\"}", 3.0),
        ("baton_step_attempts_total{agent=\"idle\"}", 1.0),
        (
            "baton_step_outcomes_total{agent=\"sim\",outcome=\"succeeded\"}",
            1.0,
        ),
        (
            "baton_step_outcomes_total{agent=\"sim\",outcome=\"error\"}",
            2.0,
        ),
        (
            "baton_step_outcomes_total{agent=\"sim\",outcome=\"timeout\"}",
            0.0,
        ),
        (
            "baton_step_retries_total{agent=\"sim\",class=\"error\"}",
            1.0,
        ),
        ("baton_step_timeouts_total{agent=\"sim\"}", 0.0),
        ("baton_step_escalations_total{agent=\"sim\"}", 1.0),
        ("baton_step_dead_letters_total{agent=\"sim\"}", 1.0),
        (
            "baton_escalation_resolutions_total{agent=\"sim\",action=\"fail\"}",
            1.0,
        ),
        (
            "baton_results_fenced_total{agent=\"sim\",reason=\"stale\"}",
            0.0,
        ),
        ("baton_step_redispatches_total{agent=\"sim\"}", 0.0),
        // Every recorded attempt is observed once, with the overhead the worker's reported
        // duration allows.
        ("baton_step_latency_seconds_count{agent=\"sim\"}", 3.0),
        ("baton_step_overhead_seconds_count{agent=\"sim\"}", 3.0),
        (
            "baton_step_latency_seconds_bucket{le=\"+Inf\",agent=\"sim\"}",
            3.0,
        ),
        (
            "baton_tokens_total{agent=\"sim\",model=\"sim-model\",direction=\"input\"}",
            2000.0,
        ),
        (
            "baton_tokens_total{agent=\"sim\",model=\"sim-model\",direction=\"output\"}",
            200.0,
        ),
        // The idle task waits in the broker; the others were all acknowledged.
        ("baton_tasks_pending{agent=\"idle\"}", 1.0),
        ("baton_tasks_in_flight{agent=\"idle\"}", 0.0),
        ("baton_tasks_pending{agent=\"sim\"}", 0.0),
        ("baton_tasks_in_flight{agent=\"sim\"}", 0.0),
        ("baton_tasks_redelivered{agent=\"sim\"}", 0.0),
        ("baton_coordinator_pending{queue=\"results\"}", 0.0),
        ("baton_coordinator_pending{queue=\"submissions\"}", 0.0),
    ];
    for (series, want) in expected {
        assert_eq!(value(&page, series), want, "{series} in:\n{page}");
    }
    // 2 attempts × (1000 × $2 + 100 × $10) / 1M = $0.006.
    let cost = value(
        &page,
        "baton_cost_usd_total{agent=\"sim\",model=\"sim-model\"}",
    );
    assert!((cost - 0.006).abs() < 1e-12, "cost {cost}");
    let latency = value(&page, "baton_step_latency_seconds_sum{agent=\"sim\"}");
    let overhead = value(&page, "baton_step_overhead_seconds_sum{agent=\"sim\"}");
    assert!(
        latency > 0.0 && (0.0..=latency).contains(&overhead),
        "{page}"
    );
    assert!(page.contains("# TYPE baton_step_latency_seconds histogram\n"));
    assert!(page.contains("# TYPE baton_step_attempts counter\n"));

    // The worker answered three tasks: one output, two errors.
    let page = scrape_until(worker_addr, WAIT, |page| {
        sample(
            page,
            "baton_worker_tasks_finished_total{agent=\"sim\",outcome=\"failed\"}",
        ) == Some(2.0)
    })
    .await;
    let expected = [
        ("baton_worker_tasks_received_total{agent=\"sim\"}", 3.0),
        (
            "baton_worker_tasks_finished_total{agent=\"sim\",outcome=\"succeeded\"}",
            1.0,
        ),
        (
            "baton_worker_tasks_finished_total{agent=\"sim\",outcome=\"failed\"}",
            2.0,
        ),
        (
            "baton_worker_tasks_finished_total{agent=\"sim\",outcome=\"panicked\"}",
            0.0,
        ),
        (
            "baton_worker_tasks_finished_total{agent=\"sim\",outcome=\"handed_back\"}",
            0.0,
        ),
        (
            "baton_worker_task_duration_seconds_count{agent=\"sim\"}",
            3.0,
        ),
        ("baton_worker_tasks_in_flight{agent=\"sim\"}", 0.0),
        (
            "baton_worker_result_publish_failures_total{agent=\"sim\"}",
            0.0,
        ),
        ("baton_worker_results_fenced_total{agent=\"sim\"}", 0.0),
        (
            "baton_worker_tokens_total{agent=\"sim\",model=\"sim-model\",direction=\"input\"}",
            2000.0,
        ),
        (
            "baton_worker_tokens_total{agent=\"sim\",model=\"sim-model\",direction=\"output\"}",
            200.0,
        ),
    ];
    for (series, want) in expected {
        assert_eq!(value(&page, series), want, "{series} in:\n{page}");
    }

    // Only /metrics is served.
    for addr in [coordinator_addr, worker_addr] {
        let (status, _) = get(addr, "/").await;
        assert_eq!(status, 404);
        let (status, _) = get(addr, "/status").await;
        assert_eq!(status, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_metrics_address_fails_startup() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    // In-process: the error comes back before anything connects (nothing listens on these
    // URLs, so getting past the bind would hang in the connect retry loop).
    let mut options = baton_coordinator::Options::default();
    options.nats.url = "nats://127.0.0.1:1".into();
    options.redis_url = "redis://127.0.0.1:1".into();
    options.admin_addr = Some(addr);
    let run = Coordinator::new(options).run(std::future::pending());
    let error = tokio::time::timeout(WAIT, run).await.unwrap().unwrap_err();
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
    let mut options = WorkerOptions::new(AgentName::new("sim").unwrap());
    options.nats.url = "nats://127.0.0.1:1".into();
    options.admin_addr = Some(addr);
    let run = Worker::new(options, baton_agents::sim::Sim).run(std::future::pending());
    let error = tokio::time::timeout(WAIT, run).await.unwrap().unwrap_err();
    assert!(error.to_string().contains(&addr.to_string()), "{error}");

    // The binaries exit non-zero with the reason.
    let addr = addr.to_string();
    for (binary, args) in [
        ("baton-agent-sim", vec!["--metrics-addr", &addr]),
        ("baton", vec!["coordinator", "--metrics-addr", &addr]),
    ] {
        let output = std::process::Command::new(binary_path(binary))
            .args(&args)
            .env("BATON_NATS_URL", "nats://127.0.0.1:1")
            .env("BATON_REDIS_URL", "redis://127.0.0.1:1")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {binary}: {e} (cargo build --bins first)"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{binary}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "cannot serve the admin endpoint (metrics, probes) on {addr}"
            )),
            "{binary}: {stderr}"
        );
    }
    drop(taken);
}
