//! The short variant of every chaos fault schedule (`baton chaos --short`): coordinators and
//! workers as separate processes, numbered jobs, one fault each; nothing may be lost,
//! duplicated or wrong. The long runs are `baton chaos` (see the README).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use baton_chaos::{ChaosOptions, Fault, Report};

async fn run(fault: Fault) {
    let bin_dir = baton_tests::binary_path("baton")
        .parent()
        .unwrap()
        .to_path_buf();
    let report = baton_chaos::run(ChaosOptions::short(fault, bin_dir))
        .await
        .unwrap();
    println!("{}\n{report}", Report::header());
    assert!(report.passed(), "{report:#?}");
    assert_eq!(report.accepted, report.submitted, "{report:#?}");
    assert_eq!(
        report.succeeded + report.escalated,
        report.accepted,
        "{report:#?}"
    );
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
