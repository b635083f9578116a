//! The shared `main` of every agent binary: flags and `BATON_*` variables, logging, signal
//! handling, then the worker runtime.

use std::time::Duration;

use anyhow::Context;
use baton_protocol::AgentName;
use baton_worker::{Agent, Worker, WorkerOptions};
use clap::Parser;

/// Flags every agent binary accepts.
#[derive(Debug, Parser)]
pub struct AgentArgs {
    #[command(flatten)]
    pub nats: baton_nats::NatsArgs,
    /// Agent type to serve (defaults to the binary's own type).
    #[arg(long = "type", env = "BATON_AGENT_TYPE")]
    pub agent_type: Option<String>,
    /// Tasks processed at once by this process.
    #[arg(long, env = "BATON_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds the broker waits for an ack or heartbeat before redelivering a task.
    #[arg(long, env = "BATON_ACK_WAIT_SECS", default_value_t = 30)]
    pub ack_wait_secs: u64,
    /// Deliveries of one task before the broker stops redelivering it.
    #[arg(long, env = "BATON_MAX_DELIVER", default_value_t = 5)]
    pub max_deliver: i64,
    /// Seconds to wait for tasks in flight on SIGTERM/Ctrl-C.
    #[arg(long, env = "BATON_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,
    /// Serve Prometheus metrics on this address (`GET /metrics`), e.g. `0.0.0.0:9091`.
    #[arg(long, env = "BATON_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// OTLP/HTTP collector to export spans to, as a base URL (`http://collector:4318`);
    /// falls back to `OTEL_EXPORTER_OTLP_ENDPOINT`. Tracing is off without one.
    #[arg(long, env = "BATON_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Exit code for bad configuration (EX_USAGE).
const EXIT_CONFIG: i32 = 64;

/// Runs an agent binary: `default_type` is used when `--type` is not given.
pub fn main<A: Agent>(default_type: &str, make: impl FnOnce() -> anyhow::Result<A>) {
    let args = AgentArgs::parse();
    let endpoint = baton_otel::endpoint_from_env(args.otlp_endpoint.clone());
    let service = format!(
        "baton-worker-{}",
        args.agent_type.as_deref().unwrap_or(default_type)
    );
    let configured = options(&args, default_type).and_then(|options| {
        baton_otel::worker::init("info", endpoint.as_deref(), &service)?;
        Ok(options)
    });
    let options = match configured {
        Ok(options) => options,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
        .and_then(|runtime| {
            runtime.block_on(async {
                let agent = make()?;
                Worker::new(options, agent)
                    .run(shutdown_signal())
                    .await
                    .context("worker failed")
            })
        });
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn options(args: &AgentArgs, default_type: &str) -> anyhow::Result<WorkerOptions> {
    let raw = args.agent_type.as_deref().unwrap_or(default_type);
    let agent = AgentName::new(raw).context("--type")?;
    let mut options = WorkerOptions::new(agent);
    args.nats.apply(&mut options.nats);
    options.concurrency = args.concurrency;
    options.ack_wait = Duration::from_secs(args.ack_wait_secs);
    options.max_deliver = args.max_deliver;
    options.drain_timeout = Duration::from_secs(args.drain_timeout_secs);
    options.metrics_addr = args.metrics_addr;
    options.validate().map_err(anyhow::Error::msg)?;
    Ok(options)
}

/// Logs to stderr at `default` level; `RUST_LOG` overrides it.
pub fn init_logging_at(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Completes on SIGTERM or Ctrl-C (SIGINT). The handlers are installed when this is called,
/// not when the future is first polled, so a signal that arrives in between is not lost
/// (and does not kill the process with the default action).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            // Without handlers, fall back to tokio's portable Ctrl-C.
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
