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
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
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
}

pub(crate) fn options(nats_url: &str, args: &CoordinatorArgs) -> anyhow::Result<Options> {
    let mut options = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            serde_yaml_ng::from_str::<Options>(&text)
                .map_err(|e| ConfigError(format!("invalid config {}: {e}", path.display())))?
        }
        None => Options::default(),
    };
    options.nats.url = nats_url.to_owned();
    options.redis_url = args.redis_url.clone();
    if let Some(value) = args.max_in_flight {
        options.max_in_flight = value;
    }
    if let Some(value) = args.retention_secs {
        options.retention_secs = value;
    }
    if let Some(value) = args.reconcile_after_ms {
        options.reconcile_after_ms = value;
    }
    options.validate().map_err(ConfigError)?;
    Ok(options)
}

pub(crate) async fn run(nats_url: &str, args: CoordinatorArgs) -> anyhow::Result<i32> {
    let options = options(nats_url, &args)?;
    Coordinator::new(options)
        .run(baton_agents::cli::shutdown_signal())
        .await
        .context("coordinator failed")?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_to_the_defaults() {
        let args = CoordinatorArgs {
            redis_url: "redis://127.0.0.1:6379".into(),
            config: Some(
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../deploy/coordinator.example.yaml"
                )
                .into(),
            ),
            max_in_flight: None,
            retention_secs: None,
            reconcile_after_ms: None,
        };
        let options = options("nats://127.0.0.1:4222", &args).unwrap();
        assert_eq!(options, Options::default());
    }

    #[test]
    fn unknown_config_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "redis_ur1: redis://x\n").unwrap();
        let args = CoordinatorArgs {
            redis_url: "redis://x".into(),
            config: Some(path),
            max_in_flight: None,
            retention_secs: None,
            reconcile_after_ms: None,
        };
        let error = options("nats://x", &args).unwrap_err();
        assert!(error.downcast_ref::<ConfigError>().is_some());
        assert!(error.to_string().contains("redis_ur1"), "{error}");
    }
}
