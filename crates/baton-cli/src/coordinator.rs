//! `baton coordinator`: one coordinator replica, configured in layers — built-in defaults,
//! then an optional file (`--config`), then `BATON_*` variables, then flags — and validated
//! before anything connects.
//!
//! No flag has a clap default: clap would hand the default back as if it had been given, and
//! it would replace the file's value (a `redis_url` in the file used to be overwritten by
//! `redis://127.0.0.1:6379`). Defaults live in `Options::default()`, under the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use baton_coordinator::{Coordinator, Options};
use clap::Args;

use crate::ConfigError;

#[derive(Debug, Default, Args)]
pub struct CoordinatorArgs {
    /// Redis URL (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS) [default:
    /// redis://127.0.0.1:6379].
    #[arg(long, env = "BATON_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Redis ACL user (overrides the URL's).
    #[arg(long, env = "BATON_REDIS_USER")]
    pub redis_user: Option<String>,
    /// Redis password (overrides the URL's); prefer --redis-password-file.
    #[arg(long, env = "BATON_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<baton_nats::Secret>,
    /// File holding the Redis password, e.g. a mounted Secret (read once at start; a
    /// trailing newline is dropped).
    #[arg(long, env = "BATON_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// PEM file of the CA(s) that signed Redis's certificate (with a `rediss://` URL).
    #[arg(long, env = "BATON_REDIS_TLS_CA")]
    pub redis_tls_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS with Redis (with --redis-tls-key).
    #[arg(long, env = "BATON_REDIS_TLS_CERT")]
    pub redis_tls_cert: Option<PathBuf>,
    /// PEM private key of --redis-tls-cert.
    #[arg(long, env = "BATON_REDIS_TLS_KEY")]
    pub redis_tls_key: Option<PathBuf>,
    /// Milliseconds a running attempt runs before the reconciler checks its task in the
    /// broker (and the interval of further checks) [default: 15000].
    #[arg(long, env = "BATON_RECONCILE_AFTER_MS")]
    pub reconcile_after_ms: Option<u64>,
    /// A YAML or JSON file with coordinator options (keys as in
    /// deploy/coordinator.example.yaml); `BATON_*` variables and flags override it.
    #[arg(long, env = "BATON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Results, submissions and timers handled at once by this replica [default: 256].
    #[arg(long, env = "BATON_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Seconds a finished job's state is kept [default: 86400].
    #[arg(long, env = "BATON_RETENTION_SECS")]
    pub retention_secs: Option<u64>,
    /// Serve the admin endpoint on this address, e.g. `0.0.0.0:9090`: Prometheus metrics
    /// (`GET /metrics`) and the probes (`GET /livez`, `GET /readyz`). Off when unset.
    #[arg(long, env = "BATON_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// The old name of --admin-addr (deprecated; --admin-addr wins when both are given).
    #[arg(long, env = "BATON_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Seconds from SIGTERM to exit, everything included (stop pulling, hand back, finish
    /// work in flight, flush the decision log and spans); keep it below the kill deadline
    /// (Kubernetes: terminationGracePeriodSeconds, 30) [default: 25].
    #[arg(long, env = "BATON_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Seconds of the shutdown grace spent waiting for work in flight, at most [default: 10].
    #[arg(long, env = "BATON_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// OTLP/HTTP collector to export job, step and attempt spans to, as a base URL
    /// (`http://collector:4318`); falls back to the config file, then to
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`. Tracing is off without one.
    #[arg(long, env = "BATON_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Print the configuration this replica would run with (every layer applied, secrets
    /// redacted) as YAML, and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Reads the options file, or the defaults without one.
fn file_layer(path: Option<&std::path::Path>) -> Result<Options, ConfigError> {
    let Some(path) = path else {
        return Ok(Options::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    serde_yaml_ng::from_str::<Options>(&text)
        .map_err(|e| ConfigError(format!("invalid config {}: {e}", path.display())))
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

/// The options of this replica: defaults, the file, then `args` (flags over variables, as
/// clap read them), validated.
pub(crate) fn options(
    nats: &baton_nats::NatsArgs,
    args: &CoordinatorArgs,
) -> anyhow::Result<Options> {
    let mut options = file_layer(args.config.as_deref())?;
    // A file's `nats:` section without a `name` gets NatsOptions' generic default.
    if options.nats.name == baton_nats::NatsOptions::default().name {
        options.nats.name = Options::default().nats.name;
    }
    nats.apply(&mut options.nats);
    set(&mut options.redis_url, &args.redis_url);
    set_some(&mut options.redis_user, &args.redis_user);
    // A password given here replaces the file's, whether that was a value or a file.
    if args.redis_password.is_some() || args.redis_password_file.is_some() {
        options.redis_password.clone_from(&args.redis_password);
        options
            .redis_password_file
            .clone_from(&args.redis_password_file);
    }
    set_some(&mut options.redis_tls_ca, &args.redis_tls_ca);
    set_some(&mut options.redis_tls_cert, &args.redis_tls_cert);
    set_some(&mut options.redis_tls_key, &args.redis_tls_key);
    set(&mut options.max_in_flight, &args.max_in_flight);
    set(&mut options.retention_secs, &args.retention_secs);
    set(&mut options.reconcile_after_ms, &args.reconcile_after_ms);
    set(&mut options.shutdown_grace_secs, &args.shutdown_grace_secs);
    set(&mut options.drain_timeout_secs, &args.drain_timeout_secs);
    // --admin-addr over its old name, both over the file.
    set_some(&mut options.admin_addr, &args.metrics_addr);
    set_some(&mut options.admin_addr, &args.admin_addr);
    if args.otlp_endpoint.is_some() || options.otlp_endpoint.is_none() {
        options.otlp_endpoint = baton_otel::endpoint_from_env(args.otlp_endpoint.clone());
    }
    options.validate().map_err(ConfigError)?;
    Ok(options)
}

pub(crate) async fn run(nats: &baton_nats::NatsArgs, args: CoordinatorArgs) -> anyhow::Result<i32> {
    let options = options(nats, &args)?;
    if args.print_config {
        let yaml = serde_yaml_ng::to_string(&options.redacted())
            .context("cannot print the configuration")?;
        crate::out(&yaml);
        return Ok(0);
    }
    Coordinator::new(options)
        .run(crate::process::shutdown_signal())
        .await
        .context("coordinator failed")?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn nats(url: &str) -> baton_nats::NatsArgs {
        baton_nats::NatsArgs {
            nats_url: Some(url.into()),
            ..Default::default()
        }
    }

    fn args(redis_url: &str, config: Option<PathBuf>) -> CoordinatorArgs {
        CoordinatorArgs {
            redis_url: Some(redis_url.into()),
            config,
            ..Default::default()
        }
    }

    /// The coordinator's flags as clap parses them (no variable in the test environment
    /// names a Baton setting; see `tests/config.rs` for the variables' layer).
    fn parse(flags: &[&str]) -> (baton_nats::NatsArgs, CoordinatorArgs) {
        let cli = crate::Cli::try_parse_from(["baton", "coordinator"].iter().chain(flags).copied())
            .unwrap();
        match cli.command {
            crate::Command::Coordinator(args) => (cli.nats, args),
            _ => unreachable!(),
        }
    }

    fn file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("coordinator.yaml");
        std::fs::write(&path, text).unwrap();
        path
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
    fn without_a_file_or_flags_the_defaults_apply() {
        let (nats, args) = parse(&[]);
        assert_eq!(options(&nats, &args).unwrap(), Options::default());
    }

    #[test]
    fn urls_set_in_the_file_are_not_replaced_by_defaults() {
        // The bug this layering fixes: clap's default of --redis-url replaced the file's.
        let dir = tempfile::tempdir().unwrap();
        let path = file(
            &dir,
            "redis_url: redis://redis.remote:6380/2\nnats:\n  url: nats://nats.remote:4223\n\
             shutdown_grace_secs: 7\nadmin_addr: 0.0.0.0:9090\n",
        );
        let (nats, args) = parse(&["--config", path.to_str().unwrap()]);
        let options = options(&nats, &args).unwrap();
        assert_eq!(options.redis_url, "redis://redis.remote:6380/2");
        assert_eq!(options.nats.url, "nats://nats.remote:4223");
        assert_eq!(options.nats.name, "baton-coordinator");
        assert_eq!(options.shutdown_grace_secs, 7);
        assert_eq!(options.admin_addr, Some("0.0.0.0:9090".parse().unwrap()));
        // Everything the file does not name keeps its default.
        assert_eq!(options.max_in_flight, Options::default().max_in_flight);
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(
            &dir,
            "redis_url: redis://from-file:1\nnats:\n  url: nats://from-file:1\n\
             max_in_flight: 3\nshutdown_grace_secs: 7\n",
        );
        let (nats, args) = parse(&[
            "--config",
            path.to_str().unwrap(),
            "--redis-url",
            "redis://from-flag:2",
            "--nats-url",
            "nats://from-flag:2",
            "--shutdown-grace-secs",
            "9",
        ]);
        let options = options(&nats, &args).unwrap();
        assert_eq!(options.redis_url, "redis://from-flag:2");
        assert_eq!(options.nats.url, "nats://from-flag:2");
        assert_eq!(options.shutdown_grace_secs, 9);
        assert_eq!(options.max_in_flight, 3);
    }

    #[test]
    fn the_admin_address_comes_from_the_file_or_the_flag_or_its_old_name() {
        let dir = tempfile::tempdir().unwrap();
        // The old key still reads.
        let path = file(&dir, "metrics_addr: 127.0.0.1:9090\n");
        let mut args = args("redis://x", Some(path));
        let from_file = options(&nats("nats://x"), &args).unwrap();
        assert_eq!(
            from_file.admin_addr,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        args.metrics_addr = Some("0.0.0.0:1".parse().unwrap());
        let from_old_flag = options(&nats("nats://x"), &args).unwrap();
        assert_eq!(from_old_flag.admin_addr, Some("0.0.0.0:1".parse().unwrap()));
        args.admin_addr = Some("0.0.0.0:0".parse().unwrap());
        let from_flag = options(&nats("nats://x"), &args).unwrap();
        assert_eq!(from_flag.admin_addr, Some("0.0.0.0:0".parse().unwrap()));
        let parsed = crate::Cli::try_parse_from(["baton", "coordinator", "--admin-addr", "nine"]);
        assert!(parsed.is_err());
        let (_, parsed) = parse(&["--metrics-addr", "127.0.0.1:5"]);
        assert_eq!(parsed.metrics_addr, Some("127.0.0.1:5".parse().unwrap()));
    }

    #[test]
    fn secrets_come_from_files_and_a_higher_layer_replaces_them() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("redis-password");
        std::fs::write(&secret, "from-file\n").unwrap();
        let path = file(
            &dir,
            &format!("redis_password_file: {}\n", secret.display()),
        );
        let (nats, args) = parse(&["--config", path.to_str().unwrap()]);
        let mut from_file = options(&nats, &args).unwrap();
        assert_eq!(from_file.redis_password_file.as_deref(), Some(&*secret));
        // The coordinator reads it once, at start.
        let (nats, args) = parse(&["--config", path.to_str().unwrap(), "--redis-password", "p"]);
        let from_flag = options(&nats, &args).unwrap();
        assert_eq!(from_flag.redis_password_file, None);
        assert_eq!(from_flag.redis_password.unwrap().expose(), "p");
        from_file.redis_password = Some(baton_nats::Secret::new("both"));
        assert!(from_file.validate().unwrap_err().contains("not both"));
        let missing = dir.path().join("missing");
        let (nats, args) = parse(&["--redis-password-file", missing.to_str().unwrap()]);
        let error = options(&nats, &args).unwrap_err();
        assert!(error.downcast_ref::<ConfigError>().is_some());
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );
        let (nats, args) = parse(&["--nats-token-file", missing.to_str().unwrap()]);
        let error = options(&nats, &args).unwrap_err().to_string();
        assert!(error.contains("NATS token file"), "{error}");
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
