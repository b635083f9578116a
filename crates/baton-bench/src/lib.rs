//! `baton bench`: measures, in one run on servers it starts itself, Baton's per-step
//! orchestration overhead, its throughput next to the bare async-nats + Redis ceiling, CPU
//! per 1000 steps of every process, Redis commands and NATS messages per step, Redis memory
//! per job, coordinator RSS over many steps, and throughput with 1, 2 and 4 workers. Prints
//! a table; `--quick` is the CI variant that checks the benchmark works, not its figures.

mod ceiling;
mod fleet;
mod procs;
mod tracker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::fleet::Fleet;
use crate::procs::Proc;
use crate::tracker::Tracker;

/// How big a run is.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Jobs of the 20-step chain, run one after another.
    pub overhead_jobs: usize,
    /// Jobs of the 5-step DAG per throughput run.
    pub throughput_jobs: u64,
    /// Jobs in flight at once during throughput runs.
    pub window: usize,
    /// Repetitions of each throughput measurement (medians are reported).
    pub runs: usize,
    /// Steps run between the two coordinator RSS readings.
    pub rss_steps: u64,
    /// Jobs held in flight to measure Redis memory per job.
    pub memory_jobs: u64,
    /// Tasks each worker process runs at once.
    pub worker_concurrency: usize,
    /// Where the `baton` and `baton-agent-sim` binaries are.
    pub bin_dir: PathBuf,
}

impl BenchOptions {
    pub fn full(bin_dir: PathBuf) -> Self {
        Self {
            overhead_jobs: 200,
            throughput_jobs: 4000,
            window: 1000,
            runs: 3,
            rss_steps: 1_000_000,
            memory_jobs: 2000,
            worker_concurrency: 256,
            bin_dir,
        }
    }

    pub fn quick(bin_dir: PathBuf) -> Self {
        Self {
            overhead_jobs: 10,
            throughput_jobs: 100,
            window: 50,
            runs: 1,
            rss_steps: 2_000,
            memory_jobs: 50,
            worker_concurrency: 64,
            bin_dir,
        }
    }
}

const AGENT: &str = "bench";

fn chain(steps: usize) -> Value {
    let steps: Vec<Value> = (0..steps)
        .map(|i| match i {
            0 => json!({"id": "s0", "agent": AGENT}),
            _ => json!({"id": format!("s{i}"), "agent": AGENT, "needs": [format!("s{}", i - 1)]}),
        })
        .collect();
    json!({"name": "chain", "steps": steps})
}

fn dag() -> Value {
    json!({"name": "dag", "steps": [
        {"id": "a", "agent": AGENT},
        {"id": "b", "agent": AGENT, "needs": ["a"]},
        {"id": "c", "agent": AGENT, "needs": ["a"]},
        {"id": "d", "agent": AGENT, "needs": ["a"]},
        {"id": "e", "agent": AGENT, "needs": ["b", "c", "d"]}
    ]})
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(values, 50.0)
}

async fn throughput(tracker: &Tracker, jobs: u64, window: usize) -> anyhow::Result<f64> {
    let plan = Arc::new(dag());
    let limit = Arc::new(Semaphore::new(window));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(jobs as usize);
    for _ in 0..jobs {
        let permit = limit.clone().acquire_owned().await?;
        let (tracker, plan) = (tracker.clone(), plan.clone());
        handles.push(tokio::spawn(async move {
            let result = tracker.run(&plan, &json!({})).await;
            drop(permit);
            result
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok((jobs * 5) as f64 / started.elapsed().as_secs_f64())
}

/// One section of redis-server's `INFO`.
async fn redis_info(url: &str, section: &str) -> anyhow::Result<String> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    Ok(redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await?)
}

async fn redis_memory(url: &str) -> anyhow::Result<i64> {
    redis_info(url, "memory")
        .await?
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no used_memory in INFO")
}

/// Commands redis-server has run so far, those inside scripts included (`INFO commandstats`).
async fn redis_calls(url: &str) -> anyhow::Result<u64> {
    let info = redis_info(url, "commandstats").await?;
    Ok(info
        .lines()
        .filter(|line| line.starts_with("cmdstat_"))
        .filter_map(|line| {
            let calls = line.split_once("calls=")?.1;
            calls.split(',').next()?.parse::<u64>().ok()
        })
        .sum())
}

/// Messages nats-server has received plus those it has sent so far (`/varz`).
async fn nats_msgs(monitor: &str) -> anyhow::Result<u64> {
    let url = format!("{monitor}/varz");
    // reqwest comes without a crypto provider (the workspace's rustls uses ring), and wants
    // one even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let body = tokio::task::spawn_blocking(move || {
        reqwest::blocking::get(&url)?.error_for_status()?.bytes()
    })
    .await??;
    let varz: serde_json::Value = serde_json::from_slice(&body)?;
    let count = |name: &str| varz.get(name).and_then(serde_json::Value::as_u64);
    Ok(count("in_msgs").context("no in_msgs in /varz")?
        + count("out_msgs").context("no out_msgs in /varz")?)
}

/// Runs the benchmark and prints its table.
pub async fn run(options: BenchOptions) -> anyhow::Result<()> {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "baton bench: {} cores; nats-server (file storage) and redis-server on loopback; 1 coordinator process, sim workers as processes",
        nproc
    );
    let mut fleet = tokio::task::block_in_place(|| Fleet::start(options.bin_dir.clone()))?;
    let client = async_nats::connect(fleet.nats.url()).await?;
    fleet.start_coordinators(1, &client).await?;
    fleet.set_workers(AGENT, 1, options.worker_concurrency)?;
    let tracker = Tracker::new(client.clone()).await?;
    // Warm up: connections, script cache, consumer creation.
    for _ in 0..3 {
        tracker.run(&dag(), &json!({})).await?;
    }

    // 1. Step overhead: a 20-step chain of no-op steps, one job at a time. The sim agent
    // does no work, so (job latency − agent time) / steps is taken as latency / steps.
    let chain20 = chain(20);
    let mut per_step = Vec::with_capacity(options.overhead_jobs);
    for _ in 0..options.overhead_jobs {
        let started = Instant::now();
        tracker.run(&chain20, &json!({})).await?;
        per_step.push(started.elapsed().as_secs_f64() * 1000.0 / 20.0);
    }
    per_step.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&per_step, 50.0), percentile(&per_step, 99.0));

    // 2. Throughput with CPU per process, and 3. the bare ceiling on the same servers.
    let procs = fleet.procs();
    let mut baton_rates = Vec::new();
    let mut ceiling_rates = Vec::new();
    // The ceiling's coordinator and worker loops run in this process: its CPU is theirs.
    let mut ceiling_procs = fleet.server_procs();
    ceiling_procs.push(Proc {
        name: "ceiling's loops (the bench process)".into(),
        pid: std::process::id(),
    });
    let steps = (options.throughput_jobs * 5) as f64;
    let per_1000 = |delta: Vec<(String, f64)>| -> Vec<(String, f64)> {
        delta
            .into_iter()
            .map(|(name, seconds)| (name, seconds * 1000.0 / steps))
            .collect()
    };
    let mut cpu_per_1000: Vec<(String, f64)> = Vec::new();
    let mut ceiling_cpu_per_1000: Vec<(String, f64)> = Vec::new();
    // Redis commands per step: a count, so unlike CPU time it does not drift with the host.
    let redis_url = fleet.redis.url();
    let (mut baton_calls, mut ceiling_calls) = (0.0, 0.0);
    let (mut baton_msgs, mut ceiling_msgs) = (0.0, 0.0);
    for run in 0..options.runs {
        let calls_before = redis_calls(&redis_url).await?;
        let msgs_before = nats_msgs(&fleet.nats_monitor).await?;
        let before = procs::cpu_snapshot(&procs);
        baton_rates.push(throughput(&tracker, options.throughput_jobs, options.window).await?);
        let delta = procs::cpu_delta(&procs, &before);
        let calls_between = redis_calls(&redis_url).await?;
        let msgs_between = nats_msgs(&fleet.nats_monitor).await?;
        if run == 0 {
            cpu_per_1000 = per_1000(delta);
            baton_calls = (calls_between - calls_before) as f64 / steps;
            baton_msgs = (msgs_between - msgs_before) as f64 / steps;
        }
        let (rate, cpu) = ceiling::run(
            &fleet.nats.url(),
            &fleet.redis.url(),
            options.throughput_jobs,
            options.window,
            options.worker_concurrency,
            &ceiling_procs,
        )
        .await?;
        ceiling_rates.push(rate);
        if run == 0 {
            ceiling_cpu_per_1000 = per_1000(cpu);
            ceiling_calls = (redis_calls(&redis_url).await? - calls_between) as f64 / steps;
            ceiling_msgs = (nats_msgs(&fleet.nats_monitor).await? - msgs_between) as f64 / steps;
        }
    }
    let baton_rate = median(&mut baton_rates);
    let ceiling_rate = median(&mut ceiling_rates);

    // 4a. Redis memory per job in flight (no workers: every job waits at its first step) and
    // after completion (kept for the retention period).
    fleet.set_workers(AGENT, 0, options.worker_concurrency)?;
    let base = redis_memory(&fleet.redis.url()).await?;
    let mut pending = Vec::new();
    for _ in 0..options.memory_jobs {
        pending.push(tracker.submit(&dag(), &json!({})).await?);
    }
    let in_flight = redis_memory(&fleet.redis.url()).await?;
    fleet.set_workers(AGENT, 1, options.worker_concurrency)?;
    for done in pending {
        done.await?;
    }
    let after = redis_memory(&fleet.redis.url()).await?;
    let per_job_in_flight = (in_flight - base) as f64 / options.memory_jobs as f64;
    let per_job_after = (after - base) as f64 / options.memory_jobs as f64;

    // 4b. Coordinator RSS across many steps. The first reading is taken after a warm-up of
    // a fifth of them, which fills the coordinator's bounded caches (10,000 plans) and its
    // allocator's pools: what must stay flat is the growth with steps after that.
    let coordinator = fleet.coordinator_procs();
    let jobs = options.rss_steps.div_ceil(5);
    let warm_up = (jobs / 5).max(1);
    throughput(&tracker, warm_up, options.window).await?;
    let rss_before: u64 = coordinator.iter().map(procs::Proc::rss_kib).sum();
    throughput(&tracker, jobs - warm_up.min(jobs), options.window).await?;
    let rss_after: u64 = coordinator.iter().map(procs::Proc::rss_kib).sum();

    // 4c. Throughput with 1, 2 and 4 workers of one type.
    let mut scaling = Vec::new();
    for workers in [1usize, 2, 4] {
        fleet.set_workers(AGENT, workers, options.worker_concurrency)?;
        tracker.run(&dag(), &json!({})).await?;
        let mut rates = Vec::new();
        for _ in 0..options.runs {
            rates.push(throughput(&tracker, options.throughput_jobs, options.window).await?);
        }
        scaling.push((workers, median(&mut rates)));
    }

    println!();
    println!("| measure | figure |");
    println!("|---|---|");
    println!(
        "| step overhead, 20-step chain, {} jobs one at a time: p50 | {p50:.3} ms |",
        options.overhead_jobs
    );
    println!("| step overhead: p99 | {p99:.3} ms |");
    println!(
        "| Baton throughput, 5-step DAG, {} jobs, {} in flight (median of {}) | {baton_rate:.0} steps/s, {:.0} jobs/s |",
        options.throughput_jobs,
        options.window,
        options.runs,
        baton_rate / 5.0
    );
    println!(
        "| bare ceiling, same loop on async-nats + Redis (median of {}) | {ceiling_rate:.0} steps/s |",
        options.runs
    );
    println!(
        "| Baton / ceiling | {:.0}% |",
        100.0 * baton_rate / ceiling_rate
    );
    for (name, seconds) in &cpu_per_1000 {
        println!("| CPU per 1000 steps: {name} | {seconds:.3} s |");
    }
    for (name, seconds) in &ceiling_cpu_per_1000 {
        println!("| ceiling CPU per 1000 steps: {name} | {seconds:.3} s |");
    }
    println!(
        "| Redis commands per step, inside scripts included: Baton / ceiling | {baton_calls:.1} / {ceiling_calls:.1} |"
    );
    println!(
        "| NATS messages per step, received + sent by nats-server: Baton / ceiling | {baton_msgs:.1} / {ceiling_msgs:.1} |"
    );
    println!(
        "| Redis memory per job in flight | {:.0} bytes |",
        per_job_in_flight
    );
    println!(
        "| Redis memory per job after completion (kept for the retention period) | {:.0} bytes |",
        per_job_after
    );
    println!(
        "| coordinator RSS after a warm-up of {} steps / after {} more | {} / {} KiB ({:+.1}%) |",
        warm_up * 5,
        (jobs - warm_up.min(jobs)) * 5,
        rss_before,
        rss_after,
        100.0 * (rss_after as f64 - rss_before as f64) / rss_before.max(1) as f64
    );
    for (workers, rate) in scaling {
        println!("| throughput with {workers} worker process(es) | {rate:.0} steps/s |");
    }
    Ok(())
}
