//! The `baton` binary against a real fleet: escalations are listed, shown and resolved each
//! of the three ways; `submit --wait` reports the outcome; bad configuration exits 64;
//! `baton dev` answers the demo question and stops cleanly on Ctrl-C.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton_protocol::messages::{JobStatus, StepStatus};
use baton_tests::Fleet;
use serde_json::{Value, json};
use uuid::Uuid;

use common::{BATON, baton, stdout};

async fn escalated_job(fleet: &Fleet, n: u32) -> Uuid {
    let plan = json!({"name": "always-fails", "steps": [
        {"id": "flaky", "agent": "sim", "retry": {"max_attempts": 2, "initial_backoff_ms": 50, "max_backoff_ms": 50}},
        // An explicit mapping, so the failure injected through the job input does not reach it.
        {"id": "after", "agent": "sim", "needs": ["flaky"], "input": {"from": "$needs/flaky"}}
    ]});
    let job = fleet
        .submit(plan, json!({"sim": {"fail": "error"}, "n": n}))
        .await;
    let status = fleet
        .wait_for(job, JobStatus::Escalated, Duration::from_secs(20))
        .await;
    assert_eq!(status.steps["flaky"].status, StepStatus::Escalated);
    assert_eq!(status.steps["flaky"].attempts, 2);
    assert_eq!(status.steps["after"].status, StepStatus::Waiting);
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalations_are_listed_shown_and_resolved_three_ways() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let jobs = [
        escalated_job(&fleet, 1).await,
        escalated_job(&fleet, 2).await,
        escalated_job(&fleet, 3).await,
    ];
    let ids: Vec<String> = jobs.iter().map(|job| format!("{job}.flaky")).collect();

    let list = baton(&fleet, &["escalations", "list"]).await;
    assert!(list.status.success(), "{list:?}");
    for id in &ids {
        assert!(
            stdout(&list).contains(id.as_str()),
            "{} missing from:\n{}",
            id,
            stdout(&list)
        );
    }
    let show = baton(&fleet, &["escalations", "show", &ids[0]]).await;
    assert!(show.status.success(), "{show:?}");
    let view: Value = serde_json::from_str(&stdout(&show)).unwrap();
    assert_eq!(view["attempts"], json!(2));
    assert_eq!(view["input"]["input"]["n"], json!(1));
    assert!(
        view["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected failure")
    );

    // 1. Supply the output: the step succeeds with it and the job continues.
    let resolved = baton(
        &fleet,
        &[
            "escalations",
            "resolve",
            &ids[0],
            "--output",
            r#"{"fixed": true}"#,
        ],
    )
    .await;
    assert!(resolved.status.success(), "{resolved:?}");
    let status = fleet
        .wait_for(jobs[0], JobStatus::Succeeded, Duration::from_secs(20))
        .await;
    assert_eq!(status.steps["flaky"].output, Some(json!({"fixed": true})));
    assert_eq!(
        status.steps["after"].output,
        Some(json!({"from": {"fixed": true}}))
    );

    // 2. Retry with a new input (no failure injected): the step runs again and succeeds.
    let resolved = baton(
        &fleet,
        &[
            "escalations",
            "resolve",
            &ids[1],
            "--retry",
            "--input",
            r#"{"patched": 2}"#,
        ],
    )
    .await;
    assert!(resolved.status.success(), "{resolved:?}");
    let status = fleet
        .wait_for(jobs[1], JobStatus::Succeeded, Duration::from_secs(20))
        .await;
    assert_eq!(status.steps["flaky"].attempts, 3);
    assert_eq!(status.steps["flaky"].output, Some(json!({"patched": 2})));

    // 3. Fail the job.
    let resolved = baton(
        &fleet,
        &[
            "escalations",
            "resolve",
            &ids[2],
            "--fail",
            "--reason",
            "bad data",
        ],
    )
    .await;
    assert!(resolved.status.success(), "{resolved:?}");
    let status = fleet
        .wait_for(jobs[2], JobStatus::Failed, Duration::from_secs(20))
        .await;
    assert!(status.error.unwrap().contains("bad data"));

    // Nothing is left open, and resolving again is a clear error.
    let list = baton(&fleet, &["escalations", "list", "--json"]).await;
    let open: Value = serde_json::from_str(&stdout(&list)).unwrap();
    assert_eq!(open["escalations"], json!([]));
    let again = baton(&fleet, &["escalations", "resolve", &ids[2], "--fail"]).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not_found"));

    // Each resolution replays: output, retry with a new input, fail.
    for job in jobs {
        fleet.assert_replays(job).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_without_input_gets_a_fresh_budget_and_escalates_again() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let job = escalated_job(&fleet, 9).await;
    let id = format!("{job}.flaky");
    let resolved = baton(&fleet, &["escalations", "resolve", &id, "--retry"]).await;
    assert!(resolved.status.success(), "{resolved:?}");
    // The injected failure still applies to every attempt: two more attempts, then escalated.
    let started = Instant::now();
    loop {
        let status = fleet.status(job).await;
        if status.steps["flaky"].attempts == 4 && status.status == JobStatus::Escalated {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{status:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_prints_the_outcome() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        "steps:\n  - id: a\n    agent: sim\n  - id: b\n    agent: sim\n    needs: [a]\n",
    )
    .unwrap();
    let output = baton(
        &fleet,
        &[
            "submit",
            plan.to_str().unwrap(),
            "--input",
            r#"{"q": 1}"#,
            "--wait",
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let status_json = &text[text.find('{').unwrap()..];
    let status: Value = serde_json::from_str(status_json).unwrap();
    assert_eq!(status["status"], json!("succeeded"));
    assert_eq!(status["output"]["needs"]["a"]["input"], json!({"q": 1}));

    let durable = baton(
        &fleet,
        &[
            "submit",
            plan.to_str().unwrap(),
            "--durable",
            "--idempotency-key",
            "cli-key",
            "--wait",
        ],
    )
    .await;
    assert!(durable.status.success(), "{durable:?}");
    let status = baton(&fleet, &["status", "--idempotency-key", "cli-key"]).await;
    assert!(stdout(&status).contains("\"succeeded\""));

    // A bad plan fails locally with the cycle named, before anything is sent.
    std::fs::write(&plan, "steps:\n  - id: a\n    agent: sim\n    needs: [a]\n").unwrap();
    let output = baton(&fleet, &["submit", plan.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("a -> a"));
}

#[test]
fn invalid_configuration_exits_64_before_connecting() {
    let output = Command::new(BATON)
        .args(["coordinator", "--redis-url", "http://nope"])
        .env("BATON_NATS_URL", "nats://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("Redis URL"));
}

#[test]
fn baton_dev_answers_the_demo_and_stops_on_ctrl_c() {
    let mut child = Command::new(BATON)
        .arg("dev")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let started = Instant::now();
    let mut lines = BufReader::new(stdout).lines();
    let mut answer = None;
    let mut nats_dir = None;
    while let Some(Ok(line)) = lines.next() {
        if let Some(rest) = line.trim().strip_prefix("NATS") {
            nats_dir = rest
                .split("data in ")
                .nth(1)
                .map(|d| d.trim_end_matches(')').to_owned());
        }
        if line.starts_with("Answer") {
            answer = lines.next().and_then(Result::ok);
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let answer = answer.expect("an answer line");
    assert!(answer.contains("$931,242.73"), "{answer}");
    assert!(answer.to_lowercase().contains("refund"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status:?}, output {rest:?}");
    assert!(rest.iter().any(|l| l.contains("stopped")));
    let nats_dir = nats_dir.expect("the NATS data dir is printed");
    assert!(
        !std::path::Path::new(&nats_dir).exists(),
        "{nats_dir} was not cleaned up"
    );
}

#[test]
fn bench_quick_runs_and_prints_its_table() {
    // Checks that the benchmark works end to end, not its figures (those are for
    // BENCHMARKS.md, measured with a release build).
    let output = Command::new(BATON)
        .args(["bench", "--quick"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    for row in [
        "step overhead",
        "bare ceiling serial step time",
        "durable ceiling serial step time",
        "bare ceiling, same loop",
        "durable ceiling, bare loop",
        "Baton / bare ceiling",
        "Baton / durable ceiling",
        "CPU per 1000 steps: nats-server",
        "durable ceiling CPU per 1000 steps: redis-server",
        "CPU per 1000 steps, all processes: 5-step DAG",
        "CPU per 1000 steps, all processes: 1000-wide fan-out/fan-in",
        "CPU per 1000 steps, all processes: 1000-step chain",
        "Redis commands per step",
        "NATS messages per step",
        "Redis memory per job",
        "coordinator RSS",
        "throughput with 4 worker",
        "conflicts per 1000 transitions (2 coordinators)",
    ] {
        assert!(stdout.contains(row), "missing {row:?} in:\n{stdout}");
    }
}
