//! The `baton` command line. Every subcommand is a thin layer over the library crates; the
//! client subcommands speak only NATS (the contract in `docs/protocol.md`).
//!
//! Feature `dev` (on by default) adds what runs servers of its own — `dev`, `replay`,
//! `bench`, `chaos` — with the demo agents, the test harness, the benchmark and the chaos
//! runner. Without it (`--no-default-features`) the binary is the coordinator and the client
//! commands only, as the coordinator's container image carries it; the other subcommands
//! then exit 64 saying so.

mod client;
mod coordinator;
#[cfg(feature = "dev")]
mod dev;
mod escalations;
mod follow;
mod jobs;
mod process;
mod replay;
mod trace;

use clap::{Parser, Subcommand};

/// Exit code for bad configuration or usage (EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

/// The exit code of a command that waited for a job: 0 succeeded, 1 failed or cancelled, 2
/// escalated (waiting for a human).
pub(crate) fn exit_code(status: baton_protocol::messages::JobStatus) -> i32 {
    use baton_protocol::messages::JobStatus;
    match status {
        JobStatus::Succeeded => 0,
        JobStatus::Escalated => 2,
        _ => 1,
    }
}

/// Baton: a distributed orchestration fleet for multi-agent AI systems.
#[derive(Debug, Parser)]
#[command(name = "baton", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub nats: baton_nats::NatsArgs,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the coordinator's variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything on this machine: nats-server and redis-server on free ports in a temp
    /// dir, a coordinator and the demo agents; run the demo plan and print the answer.
    #[cfg(feature = "dev")]
    Dev(dev::DevArgs),
    #[cfg(not(feature = "dev"))]
    #[command(hide = true)]
    Dev(NotBuilt),
    /// Run a coordinator replica.
    Coordinator(coordinator::CoordinatorArgs),
    /// Submit a plan (JSON or YAML file, or `-` for stdin).
    Submit(jobs::SubmitArgs),
    /// Show a job's status.
    Status(jobs::StatusArgs),
    /// Cancel a job: pending steps end cancelled, running agents are told to stop.
    Cancel(jobs::CancelArgs),
    /// Print a job's events and its agents' progress live, until it ends or escalates.
    Watch(follow::WatchArgs),
    /// Explain a job: a waterfall of its attempts (start, duration, outcome, tokens, cost)
    /// and every decision the orchestrator took, in order.
    Trace(trace::TraceArgs),
    /// Re-run the orchestrator's decisions for a job offline (on a scratch redis-server)
    /// and report whether each matches the record. Exits 1 on a mismatch.
    #[cfg(feature = "dev")]
    Replay(replay::ReplayArgs),
    #[cfg(not(feature = "dev"))]
    #[command(hide = true)]
    Replay(NotBuilt),
    /// Start a new job from a recorded one: steps before --from keep their outputs, --from
    /// and everything downstream of it run live.
    Rerun(replay::RerunArgs),
    /// List, inspect and resolve escalated steps.
    #[command(subcommand)]
    Escalations(escalations::EscalationsCommand),
    /// Measure step overhead, throughput against the bare ceiling, CPU and memory, on
    /// servers and processes it starts itself (build with --release first).
    #[cfg(feature = "dev")]
    Bench(BenchArgs),
    #[cfg(not(feature = "dev"))]
    #[command(hide = true)]
    Bench(NotBuilt),
    /// Run numbered jobs through coordinators and workers started as separate processes
    /// while injecting faults; print submitted, lost, duplicated and redelivered work. Exits
    /// 1 when anything was lost, duplicated or wrong.
    #[cfg(feature = "dev")]
    Chaos(ChaosArgs),
    #[cfg(not(feature = "dev"))]
    #[command(hide = true)]
    Chaos(NotBuilt),
}

/// The arguments of a subcommand this build leaves out (feature `dev` off): taken as they
/// come, so the command can say what is missing instead of failing to parse.
#[cfg(not(feature = "dev"))]
#[derive(Debug, clap::Args)]
pub struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

#[cfg(not(feature = "dev"))]
fn not_built(command: &str) -> anyhow::Result<i32> {
    Err(ConfigError(format!(
        "`baton {command}` is not in this build: it was built without the `dev` feature \
         (the coordinator image's binary); build with `cargo build -p baton-cli --bin baton` \
         for the full command"
    ))
    .into())
}

#[cfg(feature = "dev")]
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Fault schedules to run, one after another (default: all): worker-churn, zombie,
    /// coordinator-kill, workers-down, nats-restart, redis-restart, sigterm.
    #[arg(long, value_delimiter = ',')]
    pub fault: Vec<baton_chaos::Fault>,
    /// The short variant (seconds per fault), as the test suite runs it.
    #[arg(long)]
    pub short: bool,
    /// Numbered jobs per fault.
    #[arg(long)]
    pub jobs: Option<u64>,
    /// Seconds the fault schedule runs.
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Coordinator processes.
    #[arg(long)]
    pub coordinators: Option<usize>,
    /// Worker processes.
    #[arg(long)]
    pub workers: Option<usize>,
}

#[cfg(feature = "dev")]
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A small run that checks the benchmark works (CI), not its figures.
    #[arg(long)]
    pub quick: bool,
    /// Repetitions of each throughput measurement; medians are reported.
    #[arg(long)]
    pub runs: Option<usize>,
    /// Jobs per throughput run.
    #[arg(long)]
    pub jobs: Option<u64>,
    /// Steps between the two coordinator RSS readings.
    #[arg(long)]
    pub rss_steps: Option<u64>,
    /// Jobs in flight at once during throughput runs.
    #[arg(long)]
    pub window: Option<usize>,
}

#[cfg(feature = "dev")]
async fn bench(args: BenchArgs) -> anyhow::Result<i32> {
    let bin_dir = bin_dir()?;
    let mut options = if args.quick {
        baton_bench::BenchOptions::quick(bin_dir)
    } else {
        baton_bench::BenchOptions::full(bin_dir)
    };
    if let Some(runs) = args.runs {
        options.runs = runs.max(1);
    }
    if let Some(jobs) = args.jobs {
        options.throughput_jobs = jobs.max(1);
    }
    if let Some(window) = args.window {
        options.window = window.max(1);
    }
    if let Some(steps) = args.rss_steps {
        options.rss_steps = steps.max(5);
    }
    baton_bench::run(options).await?;
    Ok(0)
}

#[cfg(feature = "dev")]
async fn chaos(args: ChaosArgs) -> anyhow::Result<i32> {
    let bin_dir = bin_dir()?;
    let faults = if args.fault.is_empty() {
        baton_chaos::Fault::ALL.to_vec()
    } else {
        args.fault.clone()
    };
    println!("{}", baton_chaos::Report::header());
    let mut passed = true;
    for fault in faults {
        let mut options = if args.short {
            baton_chaos::ChaosOptions::short(fault, bin_dir.clone())
        } else {
            baton_chaos::ChaosOptions::long(fault, bin_dir.clone())
        };
        if let Some(jobs) = args.jobs {
            options.jobs = jobs.max(1);
        }
        if let Some(secs) = args.duration_secs {
            options.duration = std::time::Duration::from_secs(secs.max(1));
        }
        if let Some(coordinators) = args.coordinators {
            options.coordinators = coordinators.max(1);
        }
        if let Some(workers) = args.workers {
            options.workers = workers.max(1);
        }
        let report = baton_chaos::run(options).await?;
        println!("{report}");
        passed &= report.passed();
    }
    Ok(if passed { 0 } else { 1 })
}

/// The directory of this executable, where the other binaries of a build are.
#[cfg(feature = "dev")]
fn bin_dir() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default())
}

/// Parses the command line, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    // Services log their lifecycle; client commands and the demo keep stderr for problems.
    let level = if matches!(cli.command, Command::Coordinator(_)) {
        "info"
    } else {
        "warn"
    };
    process::init_logging_at(level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return 1;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            #[cfg(feature = "dev")]
            Command::Dev(args) => dev::run(args).await,
            #[cfg(not(feature = "dev"))]
            Command::Dev(_) => not_built("dev"),
            Command::Coordinator(args) => coordinator::run(&cli.nats, args).await,
            Command::Submit(args) => jobs::submit(&cli.nats, args).await,
            Command::Status(args) => jobs::status(&cli.nats, args).await,
            Command::Cancel(args) => jobs::cancel(&cli.nats, args).await,
            Command::Watch(args) => follow::watch(&cli.nats, args).await,
            Command::Trace(args) => trace::run(&cli.nats, args).await,
            #[cfg(feature = "dev")]
            Command::Replay(args) => replay::replay(&cli.nats, args).await,
            #[cfg(not(feature = "dev"))]
            Command::Replay(_) => not_built("replay"),
            Command::Rerun(args) => replay::rerun(&cli.nats, args).await,
            Command::Escalations(command) => escalations::run(&cli.nats, command).await,
            #[cfg(feature = "dev")]
            Command::Bench(args) => bench(args).await,
            #[cfg(not(feature = "dev"))]
            Command::Bench(_) => not_built("bench"),
            #[cfg(feature = "dev")]
            Command::Chaos(args) => chaos(args).await,
            #[cfg(not(feature = "dev"))]
            Command::Chaos(_) => not_built("chaos"),
        }
    });
    // Work left on the runtime's blocking pool (a span export to a collector that does not
    // answer) must not hold the exit past the shutdown grace.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            match error.downcast_ref::<ConfigError>() {
                Some(_) => EXIT_CONFIG,
                None => 1,
            }
        }
    }
}

/// Writes to stdout. A reader that went away (`baton trace … | head`) ends the command
/// quietly instead of the panic `println!` gives.
pub(crate) fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        && error.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// Bad configuration or usage: exits with [`EXIT_CONFIG`] before anything connects.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
