//! The probes of the admin endpoint (`--admin-addr`): `/livez` and `/readyz` of the built
//! binaries, run as separate processes against real servers. Readiness follows the live
//! state — it goes false when Redis (coordinator) or NATS (coordinator and worker) stops and
//! true again once they are back on the same port — and turns false when a worker drains.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use baton_harness::Signal;
use baton_tests::scrape::{try_get, wait_probe};
use baton_tests::{Fleet, binary_path};
use serde_json::json;

/// Generous: a debug build on a busy 2-core machine, and async-nats reconnects with backoff.
const WAIT: Duration = Duration::from_secs(60);

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], baton_harness::free_port().unwrap()))
}

async fn ready(addr: SocketAddr) {
    wait_probe(addr, "/readyz", 200, "ok", WAIT).await;
}

async fn live(addr: SocketAddr) {
    let (status, body) = try_get(addr, "/livez").await.expect("no answer on /livez");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_readiness_follows_redis_and_nats() {
    let mut fleet = Fleet::start().await;
    let addr = free_addr();
    let admin = addr.to_string();
    fleet.spawn_process("baton", &["coordinator", "--admin-addr", &admin]);
    ready(addr).await;
    live(addr).await;
    // The same listener still serves the metrics.
    let (status, page) = try_get(addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("baton_"), "{page}");

    tokio::task::block_in_place(|| fleet.redis.kill()).unwrap();
    let reason = wait_probe(addr, "/readyz", 503, "Redis", WAIT).await;
    assert!(!reason.contains("password"), "{reason}");
    live(addr).await;
    tokio::task::block_in_place(|| fleet.redis.restart()).unwrap();
    ready(addr).await;

    tokio::task::block_in_place(|| fleet.nats.kill()).unwrap();
    wait_probe(addr, "/readyz", 503, "NATS", WAIT).await;
    live(addr).await;
    tokio::task::block_in_place(|| fleet.nats.restart()).unwrap();
    ready(addr).await;

    // And it still does its work.
    fleet.wait_ready().await;
    fleet.spawn_sim("sim");
    let job = fleet
        .submit(json!({"steps": [{"id": "a", "agent": "sim"}]}), json!({}))
        .await;
    fleet
        .wait_for(
            job,
            baton_protocol::messages::JobStatus::Succeeded,
            Duration::from_secs(30),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_readiness_follows_nats_and_turns_false_while_draining() {
    let mut fleet = Fleet::with_coordinator().await;
    let addr = free_addr();
    let admin = addr.to_string();
    let worker = fleet.spawn_process(
        "baton-agent-sim",
        &["--admin-addr", &admin, "--drain-timeout-secs", "30"],
    );
    ready(addr).await;
    live(addr).await;

    tokio::task::block_in_place(|| fleet.nats.kill()).unwrap();
    wait_probe(addr, "/readyz", 503, "NATS", WAIT).await;
    live(addr).await;
    tokio::task::block_in_place(|| fleet.nats.restart()).unwrap();
    ready(addr).await;

    // A task that takes a while, then SIGTERM: not ready while it drains, then exit 0.
    fleet.wait_ready().await;
    let job = fleet
        .submit(
            json!({"steps": [{"id": "a", "agent": "sim", "timeout_ms": 60000}]}),
            json!({"sim": {"sleep_ms": 3000}}),
        )
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while fleet.status(job).await.steps["a"].attempts == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never dispatched");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give the worker a moment to take the task off the stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.signal_process(worker, Signal::SIGTERM);
    wait_probe(addr, "/readyz", 503, "draining", WAIT).await;
    let status = tokio::task::block_in_place(|| fleet.wait_process(worker));
    assert_eq!(status.code(), Some(0), "{status}");
    fleet
        .wait_for(
            job,
            baton_protocol::messages::JobStatus::Succeeded,
            Duration::from_secs(30),
        )
        .await;
}

/// Before it has connected, a process is alive and says what it waits for; SIGTERM then ends
/// it with 0 (it used to ignore the signal while it retried the connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_connecting_alive_not_ready_and_sigterm_exits_0() {
    // A Redis for the coordinator (it connects to Redis first), and no NATS anywhere.
    let redis = tokio::task::spawn_blocking(baton_harness::RedisServer::start)
        .await
        .unwrap()
        .unwrap();
    let dead = format!("nats://127.0.0.1:{}", baton_harness::free_port().unwrap());
    for (binary, args) in [("baton-agent-sim", vec![]), ("baton", vec!["coordinator"])] {
        let addr = free_addr();
        let mut child = std::process::Command::new(binary_path(binary))
            .args(&args)
            .args(["--admin-addr", &addr.to_string()])
            .env("BATON_NATS_URL", &dead)
            .env("BATON_REDIS_URL", redis.url())
            .env("RUST_LOG", "error")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {binary}: {e} (cargo build --bins first)"));
        let body = wait_probe(addr, "/readyz", 503, "starting: connecting to NATS", WAIT).await;
        assert_eq!(body, "starting: connecting to NATS\n", "{binary}");
        wait_probe(addr, "/livez", 200, "ok", WAIT).await;
        baton_harness::signal("baton process", &child, Signal::SIGTERM).unwrap();
        let status = tokio::task::block_in_place(|| child.wait()).unwrap();
        assert_eq!(status.code(), Some(0), "{binary}: {status}");
    }
}

/// The shutdown grace bounds everything: with Redis hung (SIGSTOPped) under a request in
/// flight, a SIGTERMed coordinator reports `draining`, gives up on the work it cannot finish
/// (its message is redelivered elsewhere) and on the decision-log flush, and still exits 0
/// within `--shutdown-grace-secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_exits_0_within_the_grace_even_when_redis_hangs() {
    let mut fleet = Fleet::start().await;
    let addr = free_addr();
    let admin = addr.to_string();
    let grace = Duration::from_secs(6);
    let coordinator = fleet.spawn_process(
        "baton",
        &[
            "coordinator",
            "--admin-addr",
            &admin,
            "--shutdown-grace-secs",
            &grace.as_secs().to_string(),
            "--drain-timeout-secs",
            "30",
        ],
    );
    ready(addr).await;
    fleet.wait_ready().await;
    fleet.redis.signal(Signal::SIGSTOP).unwrap();
    // A request whose handler now waits on Redis.
    let client = fleet.baton.clone();
    let stuck = tokio::spawn(async move { client.status(uuid::Uuid::now_v7()).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = std::time::Instant::now();
    fleet.signal_process(coordinator, Signal::SIGTERM);
    wait_probe(addr, "/readyz", 503, "draining", WAIT).await;
    let status = tokio::task::block_in_place(|| fleet.wait_process(coordinator));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    // The process bounds its own work by the grace; the margin is for process teardown on a
    // busy machine, not for work.
    assert!(
        took < grace + Duration::from_secs(3),
        "exited after {took:?}"
    );
    fleet.redis.signal(Signal::SIGCONT).unwrap();
    stuck.abort();
}
