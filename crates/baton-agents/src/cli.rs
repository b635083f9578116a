//! The shared `main` of every agent binary: configuration in layers — built-in defaults,
//! then an optional file (`--config`), then `BATON_*` variables, then flags — logging,
//! signal handling, then the worker runtime.
//!
//! No flag has a clap default (it would replace the file's value); the defaults are
//! [`WorkerConfig::default`], under the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use baton_nats::NatsOptions;
use baton_protocol::AgentName;
use baton_worker::{Agent, Worker, WorkerOptions};
use clap::Parser;
use serde::{Deserialize, Serialize};

/// Flags every agent binary accepts.
#[derive(Debug, Default, Parser)]
pub struct AgentArgs {
    #[command(flatten)]
    pub nats: baton_nats::NatsArgs,
    /// A YAML or JSON file with worker options (keys: `nats`, `agent_type`, `concurrency`,
    /// `ack_wait_secs`, `max_deliver`, `drain_timeout_secs`, `admin_addr`, `otlp_endpoint`);
    /// `BATON_*` variables and flags override it.
    #[arg(long, env = "BATON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Agent type to serve (defaults to the binary's own type).
    #[arg(long = "type", env = "BATON_AGENT_TYPE")]
    pub agent_type: Option<String>,
    /// Tasks processed at once by this process [default: 16].
    #[arg(long, env = "BATON_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Seconds the broker waits for an ack or heartbeat before redelivering a task
    /// [default: 30].
    #[arg(long, env = "BATON_ACK_WAIT_SECS")]
    pub ack_wait_secs: Option<u64>,
    /// Deliveries of one task before the broker stops redelivering it [default: 5].
    #[arg(long, env = "BATON_MAX_DELIVER")]
    pub max_deliver: Option<i64>,
    /// Seconds to wait for tasks in flight on SIGTERM/Ctrl-C, then hand them back
    /// [default: 30]. Give the process a kill deadline a few seconds longer.
    #[arg(long, env = "BATON_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// Serve the admin endpoint on this address, e.g. `0.0.0.0:9091`: Prometheus metrics
    /// (`GET /metrics`) and the probes (`GET /livez`, `GET /readyz`). Off when unset.
    #[arg(long, env = "BATON_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// The old name of --admin-addr (deprecated; --admin-addr wins when both are given).
    #[arg(long, env = "BATON_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// OTLP/HTTP collector to export spans to, as a base URL (`http://collector:4318`);
    /// falls back to the config file, then to `OTEL_EXPORTER_OTLP_ENDPOINT`. Tracing is off
    /// without one.
    #[arg(long, env = "BATON_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Print the configuration this worker would run with (every layer applied, secrets
    /// redacted) as YAML, and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// A worker's configuration: what its `--config` file holds, and what `--print-config`
/// prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// NATS connection (as in the coordinator's file). A missing `name` becomes
    /// `baton-agent-<type>`.
    pub nats: NatsOptions,
    /// Agent type to serve; the binary's own type when missing.
    pub agent_type: Option<String>,
    /// Tasks processed at once by this process.
    pub concurrency: usize,
    /// Seconds the broker waits for an ack or heartbeat before redelivering a task.
    pub ack_wait_secs: u64,
    /// Deliveries of one task before the broker stops redelivering it.
    pub max_deliver: i64,
    /// Seconds shutdown waits for tasks in flight before handing them back.
    pub drain_timeout_secs: u64,
    /// Where to serve `/metrics`, `/livez` and `/readyz`; off when missing. `metrics_addr` is
    /// its old name.
    #[serde(alias = "metrics_addr")]
    pub admin_addr: Option<SocketAddr>,
    /// OTLP/HTTP collector to export spans to.
    pub otlp_endpoint: Option<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            nats: NatsOptions {
                name: String::new(),
                ..NatsOptions::default()
            },
            agent_type: None,
            concurrency: 16,
            ack_wait_secs: 30,
            max_deliver: 5,
            drain_timeout_secs: 30,
            admin_addr: None,
            otlp_endpoint: None,
        }
    }
}

impl WorkerConfig {
    /// Defaults, then the file `args` names, then `args` (flags over variables, as clap read
    /// them); the agent type falls back to `default_type`.
    pub fn from_layers(args: &AgentArgs, default_type: &str) -> anyhow::Result<Self> {
        let mut config = match &args.config {
            Some(path) => Self::read(path)?,
            None => Self::default(),
        };
        args.nats.apply(&mut config.nats);
        set_some(&mut config.agent_type, &args.agent_type);
        set(&mut config.concurrency, &args.concurrency);
        set(&mut config.ack_wait_secs, &args.ack_wait_secs);
        set(&mut config.max_deliver, &args.max_deliver);
        set(&mut config.drain_timeout_secs, &args.drain_timeout_secs);
        set_some(&mut config.admin_addr, &args.metrics_addr);
        set_some(&mut config.admin_addr, &args.admin_addr);
        if args.otlp_endpoint.is_some() || config.otlp_endpoint.is_none() {
            config.otlp_endpoint = baton_otel::endpoint_from_env(args.otlp_endpoint.clone());
        }
        if config.agent_type.is_none() {
            config.agent_type = Some(default_type.to_owned());
        }
        // A file's `nats:` section without a `name` gets NatsOptions' generic default.
        if config.nats.name.is_empty() || config.nats.name == NatsOptions::default().name {
            config.nats.name = format!(
                "baton-agent-{}",
                config.agent_type.as_deref().unwrap_or(default_type)
            );
        }
        Ok(config)
    }

    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_yaml_ng::from_str(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    /// The runtime's options, validated.
    pub fn worker_options(&self) -> anyhow::Result<WorkerOptions> {
        let raw = self.agent_type.as_deref().unwrap_or_default();
        let agent = AgentName::new(raw).context("--type")?;
        let mut options = WorkerOptions::new(agent);
        options.nats = self.nats.clone();
        options.concurrency = self.concurrency;
        options.ack_wait = Duration::from_secs(self.ack_wait_secs);
        options.max_deliver = self.max_deliver;
        options.drain_timeout = Duration::from_secs(self.drain_timeout_secs);
        options.admin_addr = self.admin_addr;
        options.validate().map_err(anyhow::Error::msg)?;
        Ok(options)
    }

    /// A copy fit for printing: passwords and tokens replaced, URLs redacted.
    pub fn redacted(&self) -> Self {
        let hide = |secret: &Option<baton_nats::Secret>| {
            secret
                .as_ref()
                .map(|_| baton_nats::Secret::new(baton_nats::REDACTED))
        };
        let mut copy = self.clone();
        copy.nats.url = baton_nats::redact_url(&copy.nats.url);
        copy.nats.password = hide(&copy.nats.password);
        copy.nats.token = hide(&copy.nats.token);
        copy.otlp_endpoint = copy.otlp_endpoint.as_deref().map(baton_nats::redact_url);
        copy
    }
}

fn set<T: Clone>(target: &mut T, value: &Option<T>) {
    if let Some(value) = value {
        target.clone_from(value);
    }
}

fn set_some<T: Clone>(target: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        target.clone_from(value);
    }
}

/// Exit code for bad configuration (EX_USAGE).
const EXIT_CONFIG: i32 = 64;

/// Runs an agent binary: `default_type` is used when `--type` is not given.
pub fn main<A: Agent>(default_type: &str, make: impl FnOnce() -> anyhow::Result<A>) {
    let args = AgentArgs::parse();
    let configured = WorkerConfig::from_layers(&args, default_type).and_then(|config| {
        let options = config.worker_options()?;
        Ok((config, options))
    });
    let (config, options) = match configured {
        Ok(configured) => configured,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    if args.print_config {
        match serde_yaml_ng::to_string(&config.redacted()) {
            Ok(yaml) => print!("{yaml}"),
            Err(error) => {
                eprintln!("error: cannot print the configuration: {error}");
                std::process::exit(1);
            }
        }
        return;
    }
    let service = format!("baton-worker-{}", options.agent);
    if let Err(error) = baton_otel::worker::init("info", config.otlp_endpoint.as_deref(), &service)
    {
        eprintln!("error: {error:#}");
        std::process::exit(EXIT_CONFIG);
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
        .and_then(|runtime| {
            let result = runtime.block_on(async {
                let agent = make()?;
                Worker::new(options, agent)
                    .run(shutdown_signal())
                    .await
                    .context("worker failed")
            });
            // A span export still on the blocking pool must not hold the exit.
            runtime.shutdown_timeout(Duration::from_millis(500));
            result
        });
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> AgentArgs {
        AgentArgs::try_parse_from(["baton-agent-sim"].iter().chain(flags).copied()).unwrap()
    }

    #[test]
    fn without_a_file_or_flags_the_defaults_apply() {
        let config = WorkerConfig::from_layers(&parse(&[]), "sim").unwrap();
        let options = config.worker_options().unwrap();
        let mut defaults = WorkerOptions::new(AgentName::new("sim").unwrap());
        defaults.worker_id.clone_from(&options.worker_id);
        assert_eq!(options, defaults);
    }

    #[test]
    fn the_file_sets_what_flags_do_not_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.yaml");
        std::fs::write(
            &path,
            "nats:\n  url: nats://nats.remote:4223\nagent_type: summarise\nconcurrency: 3\n\
             metrics_addr: 127.0.0.1:9091\ndrain_timeout_secs: 12\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let config = WorkerConfig::from_layers(&parse(&["--config", file]), "sim").unwrap();
        let options = config.worker_options().unwrap();
        assert_eq!(options.nats.url, "nats://nats.remote:4223");
        assert_eq!(options.nats.name, "baton-agent-summarise");
        assert_eq!(options.agent.as_str(), "summarise");
        assert_eq!(options.concurrency, 3);
        assert_eq!(options.drain_timeout, Duration::from_secs(12));
        assert_eq!(options.admin_addr, Some("127.0.0.1:9091".parse().unwrap()));
        // Not in the file: the default.
        assert_eq!(options.ack_wait, Duration::from_secs(30));
        let args = parse(&[
            "--config",
            file,
            "--nats-url",
            "nats://flag:1",
            "--concurrency",
            "5",
            "--admin-addr",
            "127.0.0.1:0",
            "--type",
            "other",
        ]);
        let options = WorkerConfig::from_layers(&args, "sim")
            .unwrap()
            .worker_options()
            .unwrap();
        assert_eq!(options.nats.url, "nats://flag:1");
        assert_eq!(options.concurrency, 5);
        assert_eq!(options.admin_addr, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(options.agent.as_str(), "other");
        assert_eq!(options.drain_timeout, Duration::from_secs(12));
    }

    #[test]
    fn unknown_keys_and_unreadable_secret_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.yaml");
        std::fs::write(&path, "concurency: 3\n").unwrap();
        let error = WorkerConfig::from_layers(&parse(&["--config", path.to_str().unwrap()]), "sim")
            .unwrap_err();
        assert!(format!("{error:#}").contains("concurency"), "{error:#}");
        let missing = dir.path().join("token");
        let config = WorkerConfig::from_layers(
            &parse(&["--nats-token-file", missing.to_str().unwrap()]),
            "sim",
        )
        .unwrap();
        let error = config.worker_options().unwrap_err().to_string();
        assert!(error.contains(&missing.display().to_string()), "{error}");
    }
}
