//! `baton coordinator`: one coordinator replica, configured by defaults, then an optional
//! file, then `BATON_*` variables and flags, then validated before anything connects.

use anyhow::Context;
use baton_coordinator::{Coordinator, Options};
use clap::Args;

use crate::ConfigError;

#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// Redis URL (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS).
    #[arg(
        long,
        env = "BATON_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// Redis ACL user (overrides the URL's).
    #[arg(long, env = "BATON_REDIS_USER")]
    pub redis_user: Option<String>,
    /// Redis password (overrides the URL's); prefer the environment variable.
    #[arg(long, env = "BATON_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<baton_nats::Secret>,
    /// PEM file of the CA(s) that signed Redis's certificate (with a `rediss://` URL).
    #[arg(long, env = "BATON_REDIS_TLS_CA")]
    pub redis_tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate for mutual TLS with Redis (with --redis-tls-key).
    #[arg(long, env = "BATON_REDIS_TLS_CERT")]
    pub redis_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --redis-tls-cert.
    #[arg(long, env = "BATON_REDIS_TLS_KEY")]
    pub redis_tls_key: Option<std::path::PathBuf>,
    /// Milliseconds a running attempt runs before the reconciler checks its task in the
    /// broker (and the interval of further checks).
    #[arg(long, env = "BATON_RECONCILE_AFTER_MS")]
    pub reconcile_after_ms: Option<u64>,
    /// A YAML or JSON file with coordinator options (see ARCHITECTURE.md); flags and
    /// `BATON_*` variables override it.
    #[arg(long, env = "BATON_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Results, submissions and timers handled at once by this replica.
    #[arg(long, env = "BATON_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Seconds a finished job's state is kept.
    #[arg(long, env = "BATON_RETENTION_SECS")]
    pub retention_secs: Option<u64>,
    /// Serve Prometheus metrics on this address (`GET /metrics`), e.g. `0.0.0.0:9090`.
    #[arg(long, env = "BATON_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// OTLP/HTTP collector to export job, step and attempt spans to, as a base URL
    /// (`http://collector:4318`); falls back to the config file, then to
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`. Tracing is off without one.
    #[arg(long, env = "BATON_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

pub(crate) fn options(
    nats: &baton_nats::NatsArgs,
    args: &CoordinatorArgs,
) -> anyhow::Result<Options> {
    let mut options = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            serde_yaml_ng::from_str::<Options>(&text)
                .map_err(|e| ConfigError(format!("invalid config {}: {e}", path.display())))?
        }
        None => Options::default(),
    };
    nats.apply(&mut options.nats);
    options.redis_url = args.redis_url.clone();
    if args.redis_user.is_some() {
        options.redis_user.clone_from(&args.redis_user);
    }
    if args.redis_password.is_some() {
        options.redis_password.clone_from(&args.redis_password);
    }
    if args.redis_tls_ca.is_some() {
        options.redis_tls_ca.clone_from(&args.redis_tls_ca);
    }
    if args.redis_tls_cert.is_some() {
        options.redis_tls_cert.clone_from(&args.redis_tls_cert);
    }
    if args.redis_tls_key.is_some() {
        options.redis_tls_key.clone_from(&args.redis_tls_key);
    }
    if let Some(value) = args.max_in_flight {
        options.max_in_flight = value;
    }
    if let Some(value) = args.retention_secs {
        options.retention_secs = value;
    }
    if let Some(value) = args.reconcile_after_ms {
        options.reconcile_after_ms = value;
    }
    if args.metrics_addr.is_some() {
        options.metrics_addr = args.metrics_addr;
    }
    if args.otlp_endpoint.is_some() || options.otlp_endpoint.is_none() {
        options.otlp_endpoint = baton_otel::endpoint_from_env(args.otlp_endpoint.clone());
    }
    options.validate().map_err(ConfigError)?;
    Ok(options)
}

pub(crate) async fn run(nats: &baton_nats::NatsArgs, args: CoordinatorArgs) -> anyhow::Result<i32> {
    let options = options(nats, &args)?;
    Coordinator::new(options)
        .run(baton_agents::cli::shutdown_signal())
        .await
        .context("coordinator failed")?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nats(url: &str) -> baton_nats::NatsArgs {
        baton_nats::NatsArgs {
            nats_url: url.into(),
            nats_user: None,
            nats_password: None,
            nats_token: None,
            nats_nkey: None,
            nats_creds: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            nats_tls_required: false,
            nats_inbox_prefix: None,
        }
    }

    fn args(redis_url: &str, config: Option<std::path::PathBuf>) -> CoordinatorArgs {
        CoordinatorArgs {
            redis_url: redis_url.into(),
            redis_user: None,
            redis_password: None,
            redis_tls_ca: None,
            redis_tls_cert: None,
            redis_tls_key: None,
            config,
            max_in_flight: None,
            retention_secs: None,
            reconcile_after_ms: None,
            metrics_addr: None,
            otlp_endpoint: None,
        }
    }

    #[test]
    fn the_example_config_parses_to_the_defaults() {
        let args = args(
            "redis://127.0.0.1:6379",
            Some(
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../deploy/coordinator.example.yaml"
                )
                .into(),
            ),
        );
        let options = options(&nats("nats://127.0.0.1:4222"), &args).unwrap();
        assert_eq!(options, Options::default());
    }

    #[test]
    fn the_metrics_address_comes_from_the_file_or_the_flag() {
        use clap::Parser as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "metrics_addr: 127.0.0.1:9090\n").unwrap();
        let mut args = args("redis://x", Some(path));
        let from_file = options(&nats("nats://x"), &args).unwrap();
        assert_eq!(
            from_file.metrics_addr,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        args.metrics_addr = Some("0.0.0.0:0".parse().unwrap());
        let from_flag = options(&nats("nats://x"), &args).unwrap();
        assert_eq!(from_flag.metrics_addr, Some("0.0.0.0:0".parse().unwrap()));
        let parsed = crate::Cli::try_parse_from(["baton", "coordinator", "--metrics-addr", "nine"]);
        assert!(parsed.is_err());
    }

    #[test]
    fn unknown_config_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "redis_ur1: redis://x\n").unwrap();
        let args = args("redis://x", Some(path));
        let error = options(&nats("nats://x"), &args).unwrap_err();
        assert!(error.downcast_ref::<ConfigError>().is_some());
        assert!(error.to_string().contains("redis_ur1"), "{error}");
    }

    #[test]
    fn half_a_client_certificate_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "x").unwrap();
        let mut nats_args = nats("nats://x");
        nats_args.nats_tls_cert = Some(cert.clone());
        let error = options(&nats_args, &args("redis://x", None)).unwrap_err();
        assert!(error.downcast_ref::<ConfigError>().is_some());
        let mut redis_args = args("rediss://x", None);
        redis_args.redis_tls_key = Some(cert);
        let error = options(&nats("nats://x"), &redis_args).unwrap_err();
        assert!(error.to_string().contains("together"), "{error}");
    }
}
