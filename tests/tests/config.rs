//! Configuration the way clusters give it, through the built binaries: a mounted file
//! (`--config` / `BATON_CONFIG`), `BATON_*` variables and flags, with precedence flag >
//! variable > file > default, one test per layer (`--print-config` shows what a process
//! would run with), secrets read from files, and — the bug this fixed — a coordinator whose
//! file alone points it at Redis and NATS connects there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use baton_coordinator::Options;
use baton_tests::scrape::wait_probe;
use baton_tests::{Fleet, binary_path};
use serde_yaml_ng::Value;

/// A binary with only the variables given: nothing from the test's own environment.
fn command(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary_path(binary));
    command
        .env_clear()
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "error")
        .stdin(Stdio::null());
    command
}

fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(binary, args, env)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e} (cargo build --bins first)"))
}

/// The coordinator's options as `baton coordinator --print-config` prints them.
fn coordinator(args: &[&str], env: &[(&str, &str)]) -> Options {
    let mut all = vec!["coordinator", "--print-config"];
    all.extend_from_slice(args);
    let output = run("baton", &all, env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_yaml_ng::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A worker's configuration as `baton-agent-sim --print-config` prints it.
fn worker(args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut all = vec!["--print-config"];
    all.extend_from_slice(args);
    let output = run("baton-agent-sim", &all, env);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_yaml_ng::from_slice(&output.stdout).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn coordinator_layers_default_file_environment_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "coordinator.yaml",
        "redis_url: redis://from-file:6379\nnats:\n  url: nats://from-file:4222\n\
         shutdown_grace_secs: 7\nmax_in_flight: 3\nadmin_addr: 0.0.0.0:9090\n",
    );
    // Default.
    let defaults = coordinator(&[], &[]);
    assert_eq!(defaults, Options::default());
    assert_eq!(defaults.shutdown_grace_secs, 25);
    // File over default (named by the variable, as a ConfigMap mount would be).
    let from_file = coordinator(&[], &[("BATON_CONFIG", &file)]);
    assert_eq!(from_file.redis_url, "redis://from-file:6379");
    assert_eq!(from_file.nats.url, "nats://from-file:4222");
    assert_eq!(from_file.shutdown_grace_secs, 7);
    assert_eq!(from_file.max_in_flight, 3);
    assert_eq!(from_file.retention_secs, Options::default().retention_secs);
    // Environment over file.
    let env = [
        ("BATON_CONFIG", file.as_str()),
        ("BATON_REDIS_URL", "redis://from-env:6379"),
        ("BATON_SHUTDOWN_GRACE_SECS", "9"),
        ("BATON_ADMIN_ADDR", "127.0.0.1:9100"),
    ];
    let from_env = coordinator(&[], &env);
    assert_eq!(from_env.redis_url, "redis://from-env:6379");
    assert_eq!(from_env.nats.url, "nats://from-file:4222");
    assert_eq!(from_env.shutdown_grace_secs, 9);
    assert_eq!(from_env.max_in_flight, 3);
    assert_eq!(from_env.admin_addr, Some("127.0.0.1:9100".parse().unwrap()));
    // Flag over environment.
    let from_flag = coordinator(
        &[
            "--redis-url",
            "redis://from-flag:6379",
            "--shutdown-grace-secs",
            "11",
            "--nats-url",
            "nats://from-flag:4222",
        ],
        &env,
    );
    assert_eq!(from_flag.redis_url, "redis://from-flag:6379");
    assert_eq!(from_flag.nats.url, "nats://from-flag:4222");
    assert_eq!(from_flag.shutdown_grace_secs, 11);
    assert_eq!(
        from_flag.admin_addr,
        Some("127.0.0.1:9100".parse().unwrap())
    );
    // The deprecated name of the admin address still works, under the new one.
    let old: SocketAddr = "127.0.0.1:9200".parse().unwrap();
    let from_old = coordinator(&[], &[("BATON_METRICS_ADDR", "127.0.0.1:9200")]);
    assert_eq!(from_old.admin_addr, Some(old));
    let both = coordinator(
        &["--admin-addr", "127.0.0.1:9300"],
        &[("BATON_METRICS_ADDR", "127.0.0.1:9200")],
    );
    assert_eq!(both.admin_addr, Some("127.0.0.1:9300".parse().unwrap()));
}

#[test]
fn worker_layers_default_file_environment_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "worker.yaml",
        "nats:\n  url: nats://from-file:4222\nconcurrency: 3\ndrain_timeout_secs: 12\n",
    );
    let defaults = worker(&[], &[]);
    assert_eq!(defaults["concurrency"], Value::from(16));
    assert_eq!(defaults["agent_type"], Value::from("sim"));
    assert_eq!(
        defaults["nats"]["url"],
        Value::from("nats://127.0.0.1:4222")
    );
    let from_file = worker(&["--config", &file], &[]);
    assert_eq!(
        from_file["nats"]["url"],
        Value::from("nats://from-file:4222")
    );
    assert_eq!(from_file["concurrency"], Value::from(3));
    assert_eq!(from_file["ack_wait_secs"], Value::from(30));
    let env = [
        ("BATON_CONFIG", file.as_str()),
        ("BATON_CONCURRENCY", "5"),
        ("BATON_ADMIN_ADDR", "0.0.0.0:9091"),
    ];
    let from_env = worker(&[], &env);
    assert_eq!(from_env["concurrency"], Value::from(5));
    assert_eq!(from_env["drain_timeout_secs"], Value::from(12));
    assert_eq!(from_env["admin_addr"], Value::from("0.0.0.0:9091"));
    let from_flag = worker(&["--concurrency", "7", "--type", "other"], &env);
    assert_eq!(from_flag["concurrency"], Value::from(7));
    assert_eq!(from_flag["agent_type"], Value::from("other"));
    assert_eq!(from_flag["nats"]["name"], Value::from("baton-agent-other"));
}

#[test]
fn secrets_come_from_files_and_an_unreadable_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let password = write(dir.path(), "redis-password", "MARKER-redis\n");
    let token = write(dir.path(), "nats-token", "MARKER-token\n");
    let options = coordinator(
        &[],
        &[
            ("BATON_REDIS_PASSWORD_FILE", &password),
            ("BATON_NATS_TOKEN_FILE", &token),
        ],
    );
    assert_eq!(
        options.redis_password_file.as_deref(),
        Some(Path::new(&password))
    );
    assert_eq!(options.nats.token_file.as_deref(), Some(Path::new(&token)));
    let printed = String::from_utf8(
        run(
            "baton",
            &["coordinator", "--print-config"],
            &[("BATON_REDIS_PASSWORD", "MARKER-value")],
        )
        .stdout,
    )
    .unwrap();
    assert!(!printed.contains("MARKER"), "{printed}");
    assert!(printed.contains("[redacted]"), "{printed}");
    let worker = worker(
        &[],
        &[
            ("BATON_NATS_USER", "w"),
            ("BATON_NATS_PASSWORD_FILE", &password),
        ],
    );
    assert_eq!(
        worker["nats"]["password_file"],
        Value::from(password.as_str())
    );

    let missing = dir.path().join("missing").display().to_string();
    for (binary, args, variable, user) in [
        (
            "baton",
            vec!["coordinator"],
            "BATON_REDIS_PASSWORD_FILE",
            None,
        ),
        (
            "baton",
            vec!["coordinator"],
            "BATON_NATS_PASSWORD_FILE",
            Some("u"),
        ),
        ("baton-agent-sim", vec![], "BATON_NATS_TOKEN_FILE", None),
        (
            "baton-agent-sim",
            vec![],
            "BATON_NATS_PASSWORD_FILE",
            Some("u"),
        ),
    ] {
        let mut env = vec![(variable, missing.as_str())];
        env.extend(user.map(|user| ("BATON_NATS_USER", user)));
        let output = run(binary, &args, &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{variable}: {stderr}");
        assert!(stderr.contains(&missing), "{variable}: {stderr}");
    }
}

/// The reported bug: `redis_url` and the NATS URL in the coordinator's file were replaced by
/// the flags' defaults, so it connected to localhost. Here only the file names the servers
/// (on free ports, never localhost's defaults), and secrets come from files as a mounted
/// Secret gives them: the coordinator and a worker become ready and run a job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_and_secrets_from_files_alone() {
    let nats = baton_harness::NatsOptions {
        extra_config: "authorization { token: \"s3cret-token\" }".into(),
        ..Default::default()
    };
    let redis = baton_harness::RedisOptions {
        // The harness's readiness probe uses the default user; Baton uses its own.
        extra_config: "user default on nopass -@all +ping +config|get\n\
                       user baton on >redis-pw ~baton:* &* +@all\n"
            .into(),
        ..Default::default()
    };
    let fleet = Fleet::start_with(nats, redis, |server| baton_nats::NatsOptions {
        url: server.url(),
        token: Some(baton_nats::Secret::new("s3cret-token")),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // As mounted from a Secret: one value per file, with a trailing newline.
    let token = write(dir.path(), "token", "s3cret-token\n");
    let password = write(dir.path(), "password", "redis-pw\n");
    let coordinator_admin: SocketAddr =
        ([127, 0, 0, 1], baton_harness::free_port().unwrap()).into();
    let file = write(
        dir.path(),
        "coordinator.yaml",
        &format!(
            "redis_url: {}\nredis_user: baton\nredis_password_file: {password}\nnats:\n  url: {}\n  token_file: {token}\n\
             admin_addr: {coordinator_admin}\n",
            fleet.redis.url(),
            fleet.nats.url()
        ),
    );
    let mut coordinator = command("baton", &["coordinator", "--config", &file], &[])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let worker_admin: SocketAddr = ([127, 0, 0, 1], baton_harness::free_port().unwrap()).into();
    let worker_file = write(
        dir.path(),
        "worker.yaml",
        &format!(
            "nats:\n  url: {}\nadmin_addr: {worker_admin}\n",
            fleet.nats.url()
        ),
    );
    let mut worker = command(
        "baton-agent-sim",
        &["--config", &worker_file],
        &[("BATON_NATS_TOKEN_FILE", &token)],
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let wait = Duration::from_secs(60);
    wait_probe(coordinator_admin, "/readyz", 200, "ok", wait).await;
    wait_probe(worker_admin, "/readyz", 200, "ok", wait).await;
    let job = fleet
        .submit(
            serde_json::json!({"steps": [{"id": "a", "agent": "sim"}]}),
            serde_json::json!({}),
        )
        .await;
    fleet
        .wait_for(
            job,
            baton_protocol::messages::JobStatus::Succeeded,
            Duration::from_secs(30),
        )
        .await;
    for child in [&mut coordinator, &mut worker] {
        baton_harness::signal("baton process", child, baton_harness::Signal::SIGTERM).unwrap();
        let status = tokio::task::block_in_place(|| child.wait()).unwrap();
        assert_eq!(status.code(), Some(0), "{status}");
    }
    drop(fleet);
}
