//! `baton bench`: measures, in one run on servers it starts itself, Baton's per-step
//! orchestration overhead, its throughput next to two ceilings written directly on async-nats
//! and Redis (the bare loop, and the bare loop plus what any durable orchestrator must pay),
//! CPU per 1000 steps of every process (on the 5-step DAG, a 1000-wide fan-out/fan-in and a
//! 1000-step chain), Redis commands and NATS messages per step, Redis memory per job,
//! coordinator RSS over many steps, throughput with 1, 2 and 4 workers, and transition
//! conflicts with two coordinators. Prints a table; `--quick` is the CI variant that checks
//! the benchmark works, not its figures.

mod ceiling;
mod durable;
mod fleet;
mod procs;
mod tracker;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::ceiling::Kind;
use crate::fleet::Fleet;
use crate::procs::Proc;
use crate::tracker::Tracker;

/// How big a run is.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Jobs of the 20-step chain, run one after another (Baton and each ceiling).
    pub overhead_jobs: usize,
    /// Jobs of the 5-step DAG per throughput run, at least.
    pub throughput_jobs: u64,
    /// Shortest throughput run: jobs keep being started until it has passed, so that every
    /// timed run spans the host's drift alike.
    pub min_run: Duration,
    /// Jobs in flight at once during throughput runs.
    pub window: usize,
    /// Repetitions of each throughput measurement (medians are reported).
    pub runs: usize,
    /// Jobs of the 1000-wide fan-out/fan-in in flight at once (and started at least).
    pub wide_window: usize,
    /// Jobs of the 1000-step chain in flight at once (and started at least).
    pub long_window: usize,
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
            min_run: Duration::from_secs(10),
            window: 1000,
            runs: 3,
            wide_window: 4,
            long_window: 50,
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
            min_run: Duration::ZERO,
            window: 50,
            runs: 1,
            wide_window: 1,
            long_window: 1,
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

/// A chain whose steps pass on a constant-size input (under the default mapping each output
/// would nest all the earlier ones, past the JSON depth limit of a long chain).
fn long_chain(steps: usize) -> Value {
    let steps: Vec<Value> = (0..steps)
        .map(|i| match i {
            0 => json!({"id": "s0", "agent": AGENT, "input": {"i": 0}}),
            _ => json!({
                "id": format!("s{i}"),
                "agent": AGENT,
                "needs": [format!("s{}", i - 1)],
                "input": {"i": i, "prev": format!("$needs/s{}/i", i - 1)}
            }),
        })
        .collect();
    json!({"name": "long-chain", "steps": steps})
}

/// root → `width` parallel steps → one sink (default mappings).
fn fan(width: usize) -> Value {
    let mut steps = vec![json!({"id": "root", "agent": AGENT})];
    let middle: Vec<String> = (0..width).map(|i| format!("m{i}")).collect();
    for id in &middle {
        steps.push(json!({"id": id, "agent": AGENT, "needs": ["root"]}));
    }
    steps.push(json!({"id": "sink", "agent": AGENT, "needs": middle}));
    json!({"name": "fan", "steps": steps})
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

fn steps_of(plan: &Value) -> u64 {
    plan["steps"].as_array().map_or(0, |s| s.len() as u64)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    percentile(&values, 50.0)
}

/// What [`drive`] ran.
pub(crate) struct Driven {
    pub(crate) jobs: u64,
    pub(crate) seconds: f64,
    /// Each job's latency in seconds, in the order they were started.
    pub(crate) latencies: Vec<f64>,
}

/// Runs jobs with at most `window` in flight, starting new ones until at least `jobs` have
/// started and `min_duration` has passed, then waits for all of them. `start(n)` runs job
/// number `n` to its end. Shared by Baton's runs and the ceilings'.
pub(crate) async fn drive<F, Fut>(
    jobs: u64,
    min_duration: Duration,
    window: usize,
    start: F,
) -> anyhow::Result<Driven>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(window.max(1)));
    let started = Instant::now();
    let mut handles = Vec::new();
    let mut job = 0;
    while job < jobs || started.elapsed() < min_duration {
        let permit = limit.clone().acquire_owned().await?;
        let run = start(job);
        handles.push(tokio::spawn(async move {
            let begun = Instant::now();
            run.await?;
            drop(permit);
            anyhow::Ok(begun.elapsed().as_secs_f64())
        }));
        job += 1;
    }
    let mut latencies = Vec::with_capacity(handles.len());
    for handle in handles {
        latencies.push(handle.await??);
    }
    Ok(Driven {
        jobs: job,
        seconds: started.elapsed().as_secs_f64(),
        latencies,
    })
}

/// Runs Baton jobs of `plan` (see [`drive`]); returns steps per second and what ran.
async fn throughput(
    tracker: &Tracker,
    plan: &Value,
    jobs: u64,
    min_duration: Duration,
    window: usize,
) -> anyhow::Result<(f64, Driven)> {
    let plan = Arc::new(plan.clone());
    let steps = steps_of(&plan);
    let driven = drive(jobs, min_duration, window, |_| {
        let (tracker, plan) = (tracker.clone(), plan.clone());
        async move { tracker.run(&plan, &json!({})).await }
    })
    .await?;
    Ok(((driven.jobs * steps) as f64 / driven.seconds, driven))
}

/// GETs a URL on loopback (a blocking client on a blocking thread).
pub(crate) async fn http_get(url: &str) -> anyhow::Result<bytes::Bytes> {
    let url = url.to_owned();
    // reqwest comes without a crypto provider (the workspace's rustls uses ring), and wants
    // one even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(tokio::task::spawn_blocking(move || {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?
            .get(&url)
            .send()?
            .error_for_status()?
            .bytes()
    })
    .await??)
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
    let body = http_get(&format!("{monitor}/varz")).await?;
    let varz: serde_json::Value = serde_json::from_slice(&body)?;
    let count = |name: &str| varz.get(name).and_then(serde_json::Value::as_u64);
    Ok(count("in_msgs").context("no in_msgs in /varz")?
        + count("out_msgs").context("no out_msgs in /varz")?)
}

/// The sum of a counter's samples over its label sets in a Prometheus/OpenMetrics text
/// exposition; `None` when it has none.
fn counter(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, rest) = match line.find(['{', ' ']) {
            Some(i) if line.as_bytes()[i] == b'{' => {
                let close = line.rfind('}')?;
                (&line[..i], &line[close + 1..])
            }
            Some(i) => (&line[..i], &line[i..]),
            None => continue,
        };
        if series != name {
            continue;
        }
        if let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

/// `baton_transition_conflicts_total` summed over the coordinators; `None` when any of them
/// does not expose it (or cannot be read).
async fn conflicts(metrics: &[String]) -> Option<f64> {
    let mut total = 0.0;
    for url in metrics {
        let body = http_get(url).await.ok()?;
        total += counter(
            std::str::from_utf8(&body).ok()?,
            "baton_transition_conflicts_total",
        )?;
    }
    Some(total)
}

/// Counts that, unlike CPU time, do not drift with the host.
#[derive(Clone, Copy, Default)]
struct Counts {
    redis_calls: u64,
    nats_msgs: u64,
}

impl Counts {
    async fn read(fleet: &Fleet) -> anyhow::Result<Self> {
        Ok(Self {
            redis_calls: redis_calls(&fleet.redis.url()).await?,
            nats_msgs: nats_msgs(&fleet.nats_monitor).await?,
        })
    }
}

/// One contender's throughput runs, summed.
#[derive(Default)]
struct Tally {
    rates: Vec<f64>,
    steps: u64,
    jobs: u64,
    seconds: f64,
    cpu: Vec<(String, f64)>,
    redis_calls: u64,
    nats_msgs: u64,
}

impl Tally {
    fn add(
        &mut self,
        steps: u64,
        driven: &Driven,
        cpu: Vec<(String, f64)>,
        counts: (Counts, Counts),
    ) {
        self.rates.push(steps as f64 / driven.seconds);
        self.steps += steps;
        self.jobs += driven.jobs;
        self.seconds += driven.seconds;
        if self.cpu.is_empty() {
            self.cpu = cpu;
        } else {
            for ((_, total), (_, seconds)) in self.cpu.iter_mut().zip(cpu) {
                *total += seconds;
            }
        }
        self.redis_calls += counts.1.redis_calls - counts.0.redis_calls;
        self.nats_msgs += counts.1.nats_msgs - counts.0.nats_msgs;
    }

    fn median(&self) -> f64 {
        median(&self.rates)
    }

    /// The median, with every run's figure.
    fn figure(&self) -> String {
        let runs: Vec<String> = self.rates.iter().map(|r| format!("{r:.0}")).collect();
        format!("{:.0} steps/s (runs: {})", self.median(), runs.join(" / "))
    }

    fn per_1000(&self) -> Vec<(String, f64)> {
        self.cpu
            .iter()
            .map(|(name, seconds)| (name.clone(), seconds * 1000.0 / self.steps.max(1) as f64))
            .collect()
    }

    fn total_per_1000(&self) -> f64 {
        self.per_1000().iter().map(|(_, s)| s).sum()
    }

    fn per_step(&self, count: u64) -> f64 {
        count as f64 / self.steps.max(1) as f64
    }
}

/// Runs Baton on `plan` and returns the sum of the fleet's CPU seconds per 1000 steps.
async fn cpu_per_1000_steps(
    tracker: &Tracker,
    procs: &[Proc],
    plan: &Value,
    min_duration: Duration,
    window: usize,
) -> anyhow::Result<(f64, u64)> {
    let before = procs::cpu_snapshot(procs);
    let (_, driven) = throughput(tracker, plan, window as u64, min_duration, window).await?;
    let cpu: f64 = procs::cpu_delta(procs, &before)
        .iter()
        .map(|(_, s)| s)
        .sum();
    let steps = driven.jobs * steps_of(plan);
    Ok((cpu * 1000.0 / steps.max(1) as f64, driven.jobs))
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
    let client = baton_client::Client::new(async_nats::connect(fleet.nats.url()).await?);
    fleet.start_coordinators(1, &client).await?;
    fleet.set_workers(AGENT, 1, options.worker_concurrency)?;
    let tracker = Tracker::new(client.clone()).await?;
    // Warm up: connections, script cache, consumer creation.
    for _ in 0..3 {
        tracker.run(&dag(), &json!({})).await?;
    }
    let (nats_url, redis_url) = (fleet.nats.url(), fleet.redis.url());
    // The ceilings' coordinator and worker loops run in this process: its CPU is theirs.
    let mut ceiling_procs = fleet.server_procs();
    ceiling_procs.push(Proc {
        name: "ceiling's loops (the bench process)".into(),
        pid: std::process::id(),
    });
    let ceilings = ceiling::Spec {
        nats_url: &nats_url,
        redis_url: &redis_url,
        worker_concurrency: options.worker_concurrency,
        procs: &ceiling_procs,
    };

    // 1. Step overhead: a 20-step chain of no-op steps, one job at a time. The sim agent
    // does no work, so (job latency − agent time) / steps is taken as latency / steps. The
    // ceilings' serial step time is the same measurement of their loops.
    let chain20 = chain(20);
    let mut per_step = Vec::with_capacity(options.overhead_jobs);
    for _ in 0..options.overhead_jobs {
        let started = Instant::now();
        tracker.run(&chain20, &json!({})).await?;
        per_step.push(started.elapsed().as_secs_f64() * 1000.0 / 20.0);
    }
    per_step.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&per_step, 50.0), percentile(&per_step, 99.0));
    let mut serial = Vec::new();
    for kind in [Kind::Bare, Kind::Durable] {
        let load = ceiling::Load {
            plan: &chain20,
            jobs: options.overhead_jobs as u64,
            min_duration: Duration::ZERO,
            window: 1,
        };
        let measured = ceiling::run(kind, &ceilings, &load).await?;
        let mut ms: Vec<f64> = measured
            .driven
            .latencies
            .iter()
            .map(|s| s * 1000.0 / 20.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        serial.push((kind, percentile(&ms, 50.0), percentile(&ms, 99.0)));
    }

    // 2. Throughput, interleaved: bare ceiling, durable ceiling, Baton, bare, durable, Baton,
    // … on the same servers, every run at least `min_run` long, so that the host's drift
    // falls on all three alike. CPU per process, Redis commands and NATS messages are summed
    // over all the runs of each.
    let procs = fleet.procs();
    let plan = dag();
    let (mut baton, mut bare, mut durable) = (Tally::default(), Tally::default(), Tally::default());
    for _ in 0..options.runs {
        for (kind, tally) in [(Kind::Bare, &mut bare), (Kind::Durable, &mut durable)] {
            let before = Counts::read(&fleet).await?;
            let load = ceiling::Load {
                plan: &plan,
                jobs: options.throughput_jobs,
                min_duration: options.min_run,
                window: options.window,
            };
            let measured = ceiling::run(kind, &ceilings, &load).await?;
            let after = Counts::read(&fleet).await?;
            tally.add(
                measured.steps,
                &measured.driven,
                measured.cpu,
                (before, after),
            );
        }
        let before = Counts::read(&fleet).await?;
        let cpu_before = procs::cpu_snapshot(&procs);
        let (_, driven) = throughput(
            &tracker,
            &plan,
            options.throughput_jobs,
            options.min_run,
            options.window,
        )
        .await?;
        let cpu = procs::cpu_delta(&procs, &cpu_before);
        let after = Counts::read(&fleet).await?;
        baton.add(driven.jobs * 5, &driven, cpu, (before, after));
    }

    // 3. CPU per step of wider and longer plans, next to the 5-step DAG's.
    let (wide_cpu, wide_jobs) = cpu_per_1000_steps(
        &tracker,
        &procs,
        &fan(1000),
        options.min_run,
        options.wide_window,
    )
    .await?;
    let (long_cpu, long_jobs) = cpu_per_1000_steps(
        &tracker,
        &procs,
        &long_chain(1000),
        options.min_run,
        options.long_window,
    )
    .await?;

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
    throughput(&tracker, &plan, warm_up, Duration::ZERO, options.window).await?;
    let rss_before: u64 = coordinator.iter().map(procs::Proc::rss_kib).sum();
    throughput(
        &tracker,
        &plan,
        jobs - warm_up.min(jobs),
        Duration::ZERO,
        options.window,
    )
    .await?;
    let rss_after: u64 = coordinator.iter().map(procs::Proc::rss_kib).sum();

    // 4c. Throughput with 1, 2 and 4 workers of one type.
    let mut scaling = Vec::new();
    for workers in [1usize, 2, 4] {
        fleet.set_workers(AGENT, workers, options.worker_concurrency)?;
        tracker.run(&dag(), &json!({})).await?;
        let mut rates = Vec::new();
        for _ in 0..options.runs {
            let (rate, _) = throughput(
                &tracker,
                &plan,
                options.throughput_jobs,
                options.min_run,
                options.window,
            )
            .await?;
            rates.push(rate);
        }
        scaling.push((workers, median(&rates)));
    }

    // 5. Transition conflicts with two coordinators on one Redis: the 5-step DAG, whose
    // fan-in's results may be recorded by both at once. Transitions are counted as steps × 2
    // (a dispatch and a result each).
    fleet.set_workers(AGENT, 1, options.worker_concurrency)?;
    fleet.start_coordinators(1, &client).await?;
    let metrics = fleet.coordinator_metrics().to_vec();
    let conflicts_before = conflicts(&metrics).await;
    let (_, driven) = throughput(
        &tracker,
        &plan,
        options.throughput_jobs,
        options.min_run,
        options.window,
    )
    .await?;
    let conflicts_after = conflicts(&metrics).await;
    let transitions = (driven.jobs * 5 * 2) as f64;
    let conflict_rate = match (conflicts_before, conflicts_after) {
        (Some(before), Some(after)) => format!("{:.2}", (after - before) * 1000.0 / transitions),
        _ => "n/a (baton_transition_conflicts_total not exposed)".to_owned(),
    };

    let min_run = if options.min_run.is_zero() {
        String::new()
    } else {
        format!(", each run ≥ {} s", options.min_run.as_secs())
    };
    println!();
    println!("| measure | figure |");
    println!("|---|---|");
    println!(
        "| step overhead, 20-step chain, {} jobs one at a time: p50 | {p50:.3} ms |",
        options.overhead_jobs
    );
    println!("| step overhead: p99 | {p99:.3} ms |");
    for (kind, p50, p99) in &serial {
        println!(
            "| {} serial step time, same chain, {} jobs one at a time: p50 / p99 | {p50:.3} / {p99:.3} ms |",
            kind.label(),
            options.overhead_jobs
        );
    }
    println!(
        "| Baton throughput, 5-step DAG, ≥ {} jobs per run{min_run}, {} in flight (median of {}) | {}, {:.0} jobs/s |",
        options.throughput_jobs,
        options.window,
        options.runs,
        baton.figure(),
        baton.median() / 5.0
    );
    println!(
        "| bare ceiling, same loop on async-nats + Redis (median of {}) | {} |",
        options.runs,
        bare.figure()
    );
    println!(
        "| durable ceiling, bare loop + message ids, fenced script, timers, events, submit by request (median of {}) | {} |",
        options.runs,
        durable.figure()
    );
    println!(
        "| Baton / bare ceiling | {:.0}% |",
        100.0 * baton.median() / bare.median()
    );
    println!(
        "| Baton / durable ceiling | {:.0}% |",
        100.0 * baton.median() / durable.median()
    );
    for (label, tally) in [
        ("CPU per 1000 steps", &baton),
        ("bare ceiling CPU per 1000 steps", &bare),
        ("durable ceiling CPU per 1000 steps", &durable),
    ] {
        for (name, seconds) in tally.per_1000() {
            println!("| {label}: {name} | {seconds:.3} s |");
        }
    }
    println!(
        "| CPU per 1000 steps, all processes: 5-step DAG, {} jobs | {:.3} s |",
        baton.jobs,
        baton.total_per_1000()
    );
    println!(
        "| CPU per 1000 steps, all processes: 1000-wide fan-out/fan-in (root → 1000 → sink), {wide_jobs} jobs, {} in flight | {wide_cpu:.3} s |",
        options.wide_window
    );
    println!(
        "| CPU per 1000 steps, all processes: 1000-step chain, {long_jobs} jobs, {} in flight | {long_cpu:.3} s |",
        options.long_window
    );
    println!(
        "| Redis commands per step, inside scripts included: Baton / bare ceiling / durable ceiling | {:.1} / {:.1} / {:.1} |",
        baton.per_step(baton.redis_calls),
        bare.per_step(bare.redis_calls),
        durable.per_step(durable.redis_calls)
    );
    println!(
        "| NATS messages per step, received + sent by nats-server: Baton / bare ceiling / durable ceiling | {:.1} / {:.1} / {:.1} |",
        baton.per_step(baton.nats_msgs),
        bare.per_step(bare.nats_msgs),
        durable.per_step(durable.nats_msgs)
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
    println!(
        "| conflicts per 1000 transitions (2 coordinators), 5-step DAG, {} jobs; transitions = steps × 2 | {conflict_rate} |",
        driven.jobs
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_summed_over_its_label_sets() {
        let text = "# TYPE baton_transition_conflicts counter\n\
            baton_transition_conflicts_total{kind=\"record\"} 3\n\
            baton_transition_conflicts_total{kind=\"a b\"} 4 1700000000\n\
            baton_transition_conflicts_created 1.7e9\n\
            baton_other_total 9\n";
        assert_eq!(counter(text, "baton_transition_conflicts_total"), Some(7.0));
        assert_eq!(counter("baton_x_total 2\n", "baton_x_total"), Some(2.0));
        assert_eq!(counter(text, "baton_missing_total"), None);
    }

    #[test]
    fn the_wide_plans_have_the_shapes_their_rows_name() {
        assert_eq!(steps_of(&fan(1000)), 1002);
        assert_eq!(steps_of(&long_chain(1000)), 1000);
        assert_eq!(
            ceiling::Plan::from_json(&fan(1000)).unwrap().needs[1001].len(),
            1000
        );
    }
}
