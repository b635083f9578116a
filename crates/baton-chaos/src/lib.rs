//! `baton chaos`: the proof that a crash never loses or doubles work, as a command anyone can
//! rerun.
//!
//! A run starts its own nats-server (file storage) and redis-server (AOF, `appendfsync
//! always`), N coordinators and M sim workers as separate processes, and submits numbered
//! jobs (a diamond of four steps) by durable publish while one fault schedule runs. Then it
//! heals every process, waits for the work to drain, and checks each job the way Jepsen's
//! checkers do: every accepted number must have exactly one job, which succeeded with the
//! output its input determines, or is escalated to a human. It prints one table; a run with
//! anything lost, duplicated or wrong fails.

mod fleet;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use baton_client::Client;
use baton_protocol::messages::{EventKind, JobStatus, StatusReply, SubmitRequest};
use baton_protocol::subject;
use futures::StreamExt;
use redis::AsyncCommands;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fleet::{AGENT, Fleet};

/// One fault schedule, injected while jobs are submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL a worker every few hundred milliseconds, and start a new one.
    WorkerChurn,
    /// SIGSTOP a worker for 3×AckWait, then SIGCONT it; repeated.
    Zombie,
    /// SIGKILL one of the coordinators (taking turns), and start it again.
    CoordinatorKill,
    /// Every worker down for 2×AckWait, then all back.
    WorkersDown,
    /// SIGKILL nats-server and restart it on the same port and store.
    NatsRestart,
    /// SIGKILL redis-server and restart it from its append-only file.
    RedisRestart,
    /// SIGTERM the first coordinator and the first worker halfway through, as a rolling
    /// update does, and start their replacements at once: both must drain and exit 0 within
    /// the shutdown grace.
    Sigterm,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::WorkerChurn,
        Fault::Zombie,
        Fault::CoordinatorKill,
        Fault::WorkersDown,
        Fault::NatsRestart,
        Fault::RedisRestart,
        Fault::Sigterm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::WorkerChurn => "worker-churn",
            Fault::Zombie => "zombie",
            Fault::CoordinatorKill => "coordinator-kill",
            Fault::WorkersDown => "workers-down",
            Fault::NatsRestart => "nats-restart",
            Fault::RedisRestart => "redis-restart",
            Fault::Sigterm => "sigterm",
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fault {name:?}; one of: {}", names.join(", "))
            })
    }
}

/// How big a run is.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub fault: Fault,
    /// Numbered jobs to submit, spread over `duration`.
    pub jobs: u64,
    /// How long the fault schedule runs.
    pub duration: Duration,
    pub coordinators: usize,
    pub workers: usize,
    /// The workers' AckWait: how soon the broker redelivers a task nobody acknowledged.
    pub ack_wait_secs: u64,
    /// How long each step's agent works.
    pub step_ms: u64,
    /// How long to wait, after healing, for every job to finish.
    pub drain_timeout: Duration,
    /// The coordinators' `--shutdown-grace-secs`: a SIGTERMed process (coordinator or
    /// worker) that has not exited 0 within it counts as an unclean exit.
    pub shutdown_grace_secs: u64,
    /// Where the `baton` and `baton-agent-sim` binaries are.
    pub bin_dir: PathBuf,
}

impl ChaosOptions {
    /// The long run: minutes of one fault under steady load.
    pub fn long(fault: Fault, bin_dir: PathBuf) -> Self {
        Self {
            fault,
            jobs: 2000,
            duration: Duration::from_secs(120),
            coordinators: 2,
            workers: 3,
            ack_wait_secs: 2,
            step_ms: 200,
            drain_timeout: Duration::from_secs(300),
            shutdown_grace_secs: 10,
            bin_dir,
        }
    }

    /// The short variant the test suite runs.
    pub fn short(fault: Fault, bin_dir: PathBuf) -> Self {
        Self {
            jobs: 60,
            duration: Duration::from_secs(8),
            drain_timeout: Duration::from_secs(120),
            ..Self::long(fault, bin_dir)
        }
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub fault: String,
    /// Numbered jobs the runner tried to submit.
    pub submitted: u64,
    /// Submissions the broker acknowledged (stored): each must end as a job.
    pub accepted: u64,
    pub succeeded: u64,
    /// Waiting for a human: not lost, the retry policy ran out under the fault.
    pub escalated: u64,
    /// Accepted, but neither succeeded nor escalated after the drain (or never created).
    pub lost: u64,
    /// More than one job for one number, or a step whose success was announced twice.
    pub duplicates: u64,
    /// Succeeded with an output other than the one its input determines.
    pub unexpected: u64,
    /// Results workers published (each is one execution of an attempt).
    pub executions: u64,
    /// Steps recorded as succeeded.
    pub steps: u64,
    /// Executions beyond the first of the same attempt (redelivered or re-dispatched copies).
    pub redeliveries: u64,
    /// Results that did not count: answers beyond an attempt's first (the broker keeps one
    /// per attempt `Nats-Msg-Id`), and results the coordinator ignored as stale.
    pub fenced: u64,
    /// Tasks the reconciler published again.
    pub redispatched: u64,
    /// From the end of healing and submitting until every accepted job had finished.
    pub drain: Duration,
    /// Processes sent SIGTERM (fault `sigterm`).
    pub terminated: u64,
    /// SIGTERMed processes that did not exit 0 within the shutdown grace.
    pub unclean_exits: u64,
    /// The longest a SIGTERMed process took to exit.
    pub slowest_exit: Duration,
}

impl Report {
    /// A run passes with nothing lost, duplicated or wrong, and every SIGTERMed process
    /// exited 0 within the grace.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.unexpected == 0 && self.unclean_exits == 0
    }

    /// The table's header row.
    pub fn header() -> String {
        format!(
            "{:<17} {:>9} {:>8} {:>9} {:>9} {:>4} {:>10} {:>10} {:>10} {:>10} {:>6} {:>12} {:>8} {:>14}",
            "fault",
            "submitted",
            "accepted",
            "succeeded",
            "escalated",
            "lost",
            "duplicates",
            "unexpected",
            "exec/step",
            "redelivered",
            "fenced",
            "redispatched",
            "drain",
            "sigterm exits"
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_step = if self.steps == 0 {
            0.0
        } else {
            self.executions as f64 / self.steps as f64
        };
        write!(
            f,
            "{:<17} {:>9} {:>8} {:>9} {:>9} {:>4} {:>10} {:>10} {:>10.3} {:>11} {:>6} {:>12} {:>7.1}s {:>14}",
            self.fault,
            self.submitted,
            self.accepted,
            self.succeeded,
            self.escalated,
            self.lost,
            self.duplicates,
            self.unexpected,
            per_step,
            self.redeliveries,
            self.fenced,
            self.redispatched,
            self.drain.as_secs_f64(),
            if self.terminated == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{}/{} in {:.1}s",
                    self.terminated - self.unclean_exits,
                    self.terminated,
                    self.slowest_exit.as_secs_f64()
                )
            }
        )
    }
}

const STEPS: [&str; 4] = ["a", "b", "c", "d"];

fn plan() -> Value {
    let retry = json!({"max_attempts": 10, "initial_backoff_ms": 100, "max_backoff_ms": 2000});
    let step = |id: &str, needs: &[&str]| json!({"id": id, "agent": AGENT, "needs": needs, "retry": retry, "timeout_ms": 20_000});
    json!({"name": "chaos", "steps": [
        step("a", &[]), step("b", &["a"]), step("c", &["a"]), step("d", &["b", "c"])
    ]})
}

fn input(n: u64, step_ms: u64) -> Value {
    json!({"n": n, "sim": {"sleep_ms": step_ms}})
}

/// What the diamond must produce: the sim agent returns its input, and each step's input is
/// the default mapping of the job input and its needs' outputs.
fn expected_output(input: &Value) -> Value {
    let a = json!({"input": input, "needs": {}});
    let b = json!({"input": input, "needs": {"a": a}});
    let c = json!({"input": input, "needs": {"a": a}});
    json!({"input": input, "needs": {"b": b, "c": c}})
}

fn key(n: u64) -> String {
    format!("chaos-{n}")
}

/// What the runner sees on the wire while the run goes on.
#[derive(Default)]
struct Observed {
    /// Results published, per (job, step, attempt).
    results: HashMap<(Uuid, String, u32), u64>,
    /// `step_succeeded` events per (job, step).
    successes: HashMap<(Uuid, String), u64>,
    fenced: u64,
    redispatched: u64,
}

/// Runs one fault schedule and returns the figures.
pub async fn run(options: ChaosOptions) -> anyhow::Result<Report> {
    let reconcile_after_ms = (options.ack_wait_secs * 1000).max(500);
    let bin_dir = options.bin_dir.clone();
    let (coordinators, workers, ack_wait, grace) = (
        options.coordinators,
        options.workers,
        options.ack_wait_secs,
        options.shutdown_grace_secs,
    );
    let mut fleet = tokio::task::spawn_blocking(move || {
        Fleet::start(
            &bin_dir,
            coordinators,
            workers,
            ack_wait,
            reconcile_after_ms,
            grace,
        )
    })
    .await??;
    let client = Client::new(
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(fleet.nats.url())
            .await?,
    );
    client.wait_ready(Duration::from_secs(30)).await?;
    let observed = observe(&client).await?;

    // Submit numbered jobs at a steady pace while the fault runs.
    let submitter = tokio::spawn(submit_all(client.clone(), options.clone()));
    let started = Instant::now();
    let exits = inject(&mut fleet, &options, started).await?;
    tokio::task::block_in_place(|| fleet.heal())?;
    // Outages slow the submitter down; the drain starts when the fleet is healed and every
    // job has been submitted.
    let accepted = submitter.await??;
    let drain_from = Instant::now();

    let outcome = drain(&client, &accepted, options.drain_timeout).await?;
    let drain = drain_from.elapsed();
    let duplicates_by_number = jobs_per_number(&fleet.redis.url()).await?;

    let observed = observed
        .lock()
        .map_err(|_| anyhow::anyhow!("observer poisoned"))?;
    let mut report = Report {
        fault: options.fault.name().to_owned(),
        submitted: options.jobs,
        accepted: accepted.len() as u64,
        drain,
        redispatched: observed.redispatched,
        executions: observed.results.values().sum(),
        redeliveries: observed.results.values().map(|n| n - 1).sum(),
        terminated: exits.len() as u64,
        unclean_exits: exits.iter().filter(|exit| !exit.clean).count() as u64,
        slowest_exit: exits
            .iter()
            .map(|exit| exit.after)
            .max()
            .unwrap_or_default(),
        ..Report::default()
    };
    for exit in exits.iter().filter(|exit| !exit.clean) {
        eprintln!(
            "chaos: the SIGTERMed {} exited {} after {:.1}s (grace {}s)",
            exit.process,
            exit.status,
            exit.after.as_secs_f64(),
            options.shutdown_grace_secs
        );
    }
    // Every answer beyond an attempt's first was dropped by the broker (same Nats-Msg-Id);
    // the coordinator ignored the others it reports.
    report.fenced = report.redeliveries + observed.fenced;
    for (n, status) in &outcome {
        match status {
            Some(status) if status.status == JobStatus::Succeeded => {
                report.succeeded += 1;
                report.steps += STEPS.len() as u64;
                let want = expected_output(&input(*n, options.step_ms));
                if status.output.as_ref() != Some(&want) {
                    report.unexpected += 1;
                }
            }
            Some(status) if status.status == JobStatus::Escalated => report.escalated += 1,
            // Nothing in a chaos job fails for good: a failed job is a wrong answer.
            Some(status) if status.status.is_terminal() => report.unexpected += 1,
            _ => report.lost += 1,
        }
    }
    report.duplicates = duplicates_by_number
        + observed
            .successes
            .values()
            .filter(|&&count| count > 1)
            .count() as u64;
    if !report.passed() || std::env::var_os("BATON_CHAOS_KEEP_LOGS").is_some() {
        eprintln!(
            "chaos: the processes' logs are kept in {}",
            fleet.keep_logs().display()
        );
    }
    Ok(report)
}

/// Counts results (one per execution) and the coordinators' events.
async fn observe(client: &Client) -> anyhow::Result<Arc<Mutex<Observed>>> {
    let observed = Arc::new(Mutex::new(Observed::default()));
    // Results are watched on the wire (workers' publishes), not through the contract's
    // client side: they count executions, including the ones the broker drops.
    let mut results = client.nats().subscribe(subject::RESULTS_ALL).await?;
    let mut events = client.events(None).await?;
    let shared = observed.clone();
    tokio::spawn(async move {
        while let Some(message) = results.next().await {
            let Ok(result) = serde_json::from_slice::<Value>(&message.payload) else {
                continue;
            };
            let job = result["job_id"]
                .as_str()
                .and_then(|j| Uuid::parse_str(j).ok());
            let step = result["step_id"].as_str().map(str::to_owned);
            let attempt = result["attempt"]
                .as_u64()
                .and_then(|a| u32::try_from(a).ok());
            if let (Some(job), Some(step), Some(attempt)) = (job, step, attempt)
                && let Ok(mut observed) = shared.lock()
            {
                *observed.results.entry((job, step, attempt)).or_default() += 1;
            }
        }
    });
    let shared = observed.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let Ok(mut observed) = shared.lock() else {
                return;
            };
            match event.kind {
                EventKind::StepSucceeded { step_id, .. } => {
                    *observed
                        .successes
                        .entry((event.job_id, step_id))
                        .or_default() += 1;
                }
                EventKind::ResultFenced { .. } => observed.fenced += 1,
                EventKind::StepRedispatched { .. } => observed.redispatched += 1,
                _ => {}
            }
        }
    });
    Ok(observed)
}

/// Publishes the numbered jobs to `baton.jobs.enqueue`, retrying each until the broker
/// stores it (its `Nats-Msg-Id` makes a retry of a stored one a no-op); returns the numbers
/// that were accepted.
async fn submit_all(client: Client, options: ChaosOptions) -> anyhow::Result<Vec<u64>> {
    let plan = plan();
    let pace = options.duration / u32::try_from(options.jobs.max(1)).unwrap_or(u32::MAX);
    let give_up = Instant::now() + options.duration + options.drain_timeout;
    let mut accepted = Vec::new();
    for n in 0..options.jobs {
        let key = key(n);
        let request = SubmitRequest {
            plan: plan.clone(),
            input: input(n, options.step_ms),
            idempotency_key: Some(key.clone()),
            deadline_ms: None,
        };
        loop {
            // The key is the message id too: a retry of a stored publish stores nothing.
            let enqueue = client.enqueue(&request, Some(&key));
            let stored = matches!(
                tokio::time::timeout(Duration::from_secs(5), enqueue).await,
                Ok(Ok(_))
            );
            if stored {
                accepted.push(n);
                break;
            }
            if Instant::now() > give_up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(pace).await;
    }
    Ok(accepted)
}

/// How a SIGTERMed process ended.
struct Exit {
    process: &'static str,
    /// Its exit status, or what happened instead.
    status: String,
    after: Duration,
    /// Exit code 0 within the shutdown grace.
    clean: bool,
}

/// Waits for a SIGTERMed process to exit, killing it when it outlives the grace by far.
async fn wait_exit(
    process: &'static str,
    mut child: std::process::Child,
    signalled: Instant,
    grace: Duration,
) -> Exit {
    // Polled with a generous deadline: a slow exit is measured, not a flaky timeout.
    let give_up = grace * 2 + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let after = signalled.elapsed();
                return Exit {
                    process,
                    status: status.to_string(),
                    after,
                    clean: status.code() == Some(0) && after <= grace,
                };
            }
            Ok(None) if signalled.elapsed() < give_up => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            result => {
                let _ = child.kill();
                let _ = child.wait();
                return Exit {
                    process,
                    status: match result {
                        Err(error) => format!("unknown ({error})"),
                        _ => "nothing: still running, killed".into(),
                    },
                    after: signalled.elapsed(),
                    clean: false,
                };
            }
        }
    }
}

/// Runs the fault schedule until `options.duration` has passed since `started`; returns how
/// the processes it SIGTERMed exited.
async fn inject(
    fleet: &mut Fleet,
    options: &ChaosOptions,
    started: Instant,
) -> anyhow::Result<Vec<Exit>> {
    let ack_wait = Duration::from_secs(options.ack_wait_secs);
    let mut exits = Vec::new();
    let mut round = 0usize;
    while started.elapsed() < options.duration {
        let workers = fleet.workers.len().max(1);
        match options.fault {
            Fault::WorkerChurn => {
                tokio::time::sleep(Duration::from_millis(700)).await;
                let i = round % workers;
                tokio::task::block_in_place(|| {
                    fleet.workers[i].kill();
                    fleet.start_worker(i)
                })?;
            }
            Fault::Zombie => {
                let i = round % workers;
                fleet.workers[i].pause();
                tokio::time::sleep(ack_wait * 3).await;
                fleet.workers[i].resume();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Fault::CoordinatorKill => {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let i = round % fleet.coordinators.len().max(1);
                fleet.coordinators[i].kill();
                tokio::time::sleep(Duration::from_millis(500)).await;
                tokio::task::block_in_place(|| fleet.start_coordinator(i))?;
            }
            Fault::WorkersDown => {
                tokio::time::sleep(options.duration / 4).await;
                for worker in &mut fleet.workers {
                    worker.kill();
                }
                tokio::time::sleep(ack_wait * 2).await;
                tokio::task::block_in_place(|| {
                    (0..fleet.workers.len()).try_for_each(|i| fleet.start_worker(i))
                })?;
                // Once per run: the rest of the time is recovery under load.
                let rest = options.duration.saturating_sub(started.elapsed());
                tokio::time::sleep(rest).await;
            }
            Fault::NatsRestart => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                tokio::task::block_in_place(|| fleet.nats.kill())?;
                tokio::time::sleep(Duration::from_millis(1000)).await;
                tokio::task::block_in_place(|| fleet.nats.restart())?;
            }
            Fault::RedisRestart => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                tokio::task::block_in_place(|| fleet.redis.kill())?;
                tokio::time::sleep(Duration::from_millis(1000)).await;
                tokio::task::block_in_place(|| fleet.redis.restart())?;
            }
            Fault::Sigterm => {
                tokio::time::sleep(options.duration / 2).await;
                let grace = Duration::from_secs(options.shutdown_grace_secs);
                let coordinator = fleet.coordinators[0].terminate()?;
                let worker = fleet.workers[0].terminate()?;
                let signalled = Instant::now();
                // Replacements start at once, as a rolling update starts the new pod.
                tokio::task::block_in_place(|| {
                    fleet.start_coordinator(0)?;
                    fleet.start_worker(0)
                })?;
                let wait = |process, child| wait_exit(process, child, signalled, grace);
                let (coordinator, worker) = tokio::join!(
                    async {
                        match coordinator {
                            Some(child) => Some(wait("coordinator", child).await),
                            None => None,
                        }
                    },
                    async {
                        match worker {
                            Some(child) => Some(wait("worker", child).await),
                            None => None,
                        }
                    }
                );
                exits.extend(coordinator);
                exits.extend(worker);
                // Once per run: the rest of the time is recovery under load.
                let rest = options.duration.saturating_sub(started.elapsed());
                tokio::time::sleep(rest).await;
            }
        }
        round += 1;
    }
    Ok(exits)
}

/// Waits until every accepted job succeeded or escalated, or the timeout passed; returns each
/// number's last status (`None`: no job found).
async fn drain(
    client: &Client,
    accepted: &[u64],
    timeout: Duration,
) -> anyhow::Result<Vec<(u64, Option<StatusReply>)>> {
    let deadline = Instant::now() + timeout;
    let mut last: HashMap<u64, Option<StatusReply>> = accepted.iter().map(|&n| (n, None)).collect();
    let mut open: HashSet<u64> = accepted.iter().copied().collect();
    while !open.is_empty() && Instant::now() < deadline {
        for n in open.clone() {
            let Ok(status) = status_by_key(client, &key(n)).await else {
                continue;
            };
            let settled = baton_client::is_settled(status.status);
            last.insert(n, Some(status));
            if settled {
                open.remove(&n);
            }
        }
        if !open.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let mut outcome: Vec<_> = last.into_iter().collect();
    outcome.sort_by_key(|(n, _)| *n);
    Ok(outcome)
}

async fn status_by_key(client: &Client, key: &str) -> anyhow::Result<StatusReply> {
    let status = tokio::time::timeout(Duration::from_secs(5), client.status_by_key(key))
        .await
        .context("status timed out")??;
    Ok(status)
}

/// Jobs beyond the first for any number, read from every job hash in Redis.
async fn jobs_per_number(redis_url: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = {
        let mut iter: redis::AsyncIter<'_, String> = conn.scan_match("baton:{*}:job").await?;
        let mut keys = Vec::new();
        while let Some(key) = iter.next_item().await {
            keys.push(key?);
        }
        keys
    };
    let mut per_number: HashMap<u64, u64> = HashMap::new();
    for key in keys {
        let input: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg("input")
            .query_async(&mut conn)
            .await?;
        let n = input
            .and_then(|i| serde_json::from_str::<Value>(&i).ok())
            .and_then(|i| i["n"].as_u64());
        if let Some(n) = n {
            *per_number.entry(n).or_default() += 1;
        }
    }
    Ok(per_number.values().map(|count| count - 1).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_by_name() {
        for fault in Fault::ALL {
            assert_eq!(fault.name().parse::<Fault>(), Ok(fault));
        }
        assert!(
            "meteor"
                .parse::<Fault>()
                .unwrap_err()
                .contains("worker-churn")
        );
    }

    #[test]
    fn the_expected_output_follows_the_default_mapping() {
        let out = expected_output(&json!({"n": 1}));
        assert_eq!(out["needs"]["b"]["needs"]["a"]["input"], json!({"n": 1}));
        assert_eq!(out["needs"]["c"]["input"], json!({"n": 1}));
    }

    #[test]
    fn a_run_passes_only_with_nothing_lost_duplicated_or_wrong() {
        let clean = Report::default();
        assert!(clean.passed());
        for broken in [
            Report {
                lost: 1,
                ..Report::default()
            },
            Report {
                duplicates: 1,
                ..Report::default()
            },
            Report {
                unexpected: 1,
                ..Report::default()
            },
            Report {
                terminated: 2,
                unclean_exits: 1,
                ..Report::default()
            },
        ] {
            assert!(!broken.passed());
        }
    }
}
