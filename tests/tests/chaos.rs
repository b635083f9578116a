//! The short variant of every chaos fault schedule (`baton chaos --short`): coordinators and
//! workers as separate processes, numbered jobs, one fault each; nothing may be lost,
//! duplicated or wrong. The long runs are `baton chaos` (see the README).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use baton_chaos::{ChaosOptions, Fault, Report};

fn bin_dir() -> std::path::PathBuf {
    baton_tests::binary_path("baton")
        .parent()
        .unwrap()
        .to_path_buf()
}

async fn run(fault: Fault) -> Report {
    run_with(ChaosOptions::short(fault, bin_dir())).await
}

async fn run_with(options: ChaosOptions) -> Report {
    let report = baton_chaos::run(options).await.unwrap();
    println!("{}\n{report}", Report::header());
    assert!(report.passed(), "{report:#?}");
    assert_eq!(report.accepted, report.submitted, "{report:#?}");
    assert_eq!(
        report.succeeded + report.escalated,
        report.accepted,
        "{report:#?}"
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_churn_loses_and_doubles_nothing() {
    run(Fault::WorkerChurn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_worker_loses_and_doubles_nothing() {
    run(Fault::Zombie).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_kills_lose_and_double_nothing() {
    run(Fault::CoordinatorKill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_workers_down_then_back_loses_and_doubles_nothing() {
    run(Fault::WorkersDown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restart_loses_and_doubles_nothing() {
    run(Fault::NatsRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_server_restart_loses_and_doubles_nothing() {
    run(Fault::RedisRestart).await;
}

/// Graceful shutdown (issue 14): the only coordinator and one of two workers get SIGTERM in
/// the middle of 500 jobs, as a rolling update sends it, and replacements start at once.
/// Every job must succeed exactly once (no number without its job, none with two, no step
/// announced twice), and both processes must exit 0 within the coordinator's shutdown grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_the_middle_drains_and_exits_0_losing_and_doubling_nothing() {
    let report = run_with(ChaosOptions {
        jobs: 500,
        duration: Duration::from_secs(10),
        coordinators: 1,
        workers: 2,
        step_ms: 50,
        ..ChaosOptions::short(Fault::Sigterm, bin_dir())
    })
    .await;
    assert_eq!(report.terminated, 2, "{report:#?}");
    assert_eq!(report.unclean_exits, 0, "{report:#?}");
    assert!(
        report.slowest_exit <= Duration::from_secs(10),
        "{report:#?}"
    );
    assert_eq!(report.succeeded, 500, "{report:#?}");
    assert_eq!(report.duplicates, 0, "{report:#?}");
}
