//! Coordinator configuration: defaults, then whatever the CLI layers on top, then `validate()`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use baton_nats::{NatsOptions, Secret, check_tls_files, redact_url};
use baton_protocol::Limits;
use serde::{Deserialize, Serialize};

/// Everything a coordinator replica needs to run. All replicas of one deployment should use
/// the same values. `Debug` never shows a password or token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// NATS connection.
    pub nats: NatsOptions,
    /// Redis URL, e.g. `redis://127.0.0.1:6379` (`rediss://` for TLS,
    /// `redis://user:password@host` for an ACL user).
    pub redis_url: String,
    /// Redis ACL user; overrides the URL's.
    pub redis_user: Option<String>,
    /// Redis password (of `redis_user`, or of the default user); overrides the URL's.
    pub redis_password: Option<Secret>,
    /// File holding the Redis password (instead of `redis_password`), e.g. a mounted
    /// Kubernetes Secret; read at start, a trailing newline dropped.
    pub redis_password_file: Option<PathBuf>,
    /// PEM file of the CA(s) that signed Redis's certificate (needs a `rediss://` URL;
    /// without it the system's roots are used).
    pub redis_tls_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS with Redis, with `redis_tls_key`.
    pub redis_tls_cert: Option<PathBuf>,
    /// PEM private key of `redis_tls_cert`.
    pub redis_tls_key: Option<PathBuf>,
    /// Bounds on plans and payloads.
    pub limits: Limits,
    /// TTL of a running job's state. A transition sets it again once half of it has run, so
    /// a job keeps its state while it makes progress at least that often.
    pub running_ttl_secs: u64,
    /// How long a finished job's state is kept.
    pub retention_secs: u64,
    /// Results, submissions and timers handled concurrently by this replica.
    pub max_in_flight: usize,
    /// Longest wait between two looks at the timer set (timers this replica schedules wake it
    /// earlier; this bounds how late it notices another replica's timers).
    pub timer_poll_ms: u64,
    /// How long a claimed timer is reserved for the replica that claimed it.
    pub timer_lease_ms: u64,
    /// How long an attempt runs before the reconciler checks that its task is still in the
    /// broker, and the interval of further checks. A task that was never stored is published
    /// again at the first check; one that left the broker without a result (acknowledged by
    /// a worker that lost it) on the second check that finds it gone.
    pub reconcile_after_ms: u64,
    /// How long shutdown waits for in-flight work (at most: the shutdown grace bounds it).
    pub drain_timeout_secs: u64,
    /// Seconds from SIGTERM to exit, everything included (stop pulling, hand back, finish
    /// in-flight work, flush the decision log and the span exporter). Keep it below the
    /// orchestrator's kill deadline (Kubernetes: `terminationGracePeriodSeconds`, 30 s).
    pub shutdown_grace_secs: u64,
    /// Price of each model, by the model name agents report; `"*"` prices any other model.
    /// Usage of an unpriced model is counted with cost 0.
    pub prices: BTreeMap<String, Price>,
    /// Most bytes of decision log kept per job (the newest entries are kept).
    pub max_log_bytes: u64,
    /// Where to serve the admin endpoint — Prometheus metrics (`GET /metrics`) and the
    /// probes (`GET /livez`, `GET /readyz`) — e.g. `0.0.0.0:9090`; off when missing. Port 0
    /// picks a free port (logged as `Metrics listening`). `metrics_addr` is its old name.
    #[serde(alias = "metrics_addr")]
    pub admin_addr: Option<SocketAddr>,
    /// OTLP/HTTP collector to export job, step and attempt spans to, as a base URL
    /// (`http://collector:4318`; `/v1/traces` is appended). Tracing is off without one.
    pub otlp_endpoint: Option<String>,
}

/// What one model costs, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Price {
    /// Cost of a usage in nano-dollars (integers, so totals are exact sums).
    pub(crate) fn cost_nanos(&self, input_tokens: u64, output_tokens: u64) -> u64 {
        // $ per Mtok × tokens = µ$; × 1000 = n$.
        let nanos = (input_tokens as f64 * self.input_per_mtok
            + output_tokens as f64 * self.output_per_mtok)
            * 1000.0;
        nanos.round() as u64
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nats: NatsOptions {
                name: "baton-coordinator".into(),
                ..NatsOptions::default()
            },
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_user: None,
            redis_password: None,
            redis_password_file: None,
            redis_tls_ca: None,
            redis_tls_cert: None,
            redis_tls_key: None,
            limits: Limits::default(),
            running_ttl_secs: 7 * 24 * 3600,
            retention_secs: 24 * 3600,
            max_in_flight: 256,
            timer_poll_ms: 250,
            timer_lease_ms: 10_000,
            reconcile_after_ms: 15_000,
            drain_timeout_secs: 10,
            shutdown_grace_secs: 25,
            prices: BTreeMap::new(),
            max_log_bytes: 4 << 20,
            admin_addr: None,
            otlp_endpoint: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("nats", &self.nats)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_user", &self.redis_user)
            .field("redis_password", &self.redis_password)
            .field("redis_password_file", &self.redis_password_file)
            .field("redis_tls_ca", &self.redis_tls_ca)
            .field("redis_tls_cert", &self.redis_tls_cert)
            .field("redis_tls_key", &self.redis_tls_key)
            .field("limits", &self.limits)
            .field("running_ttl_secs", &self.running_ttl_secs)
            .field("retention_secs", &self.retention_secs)
            .field("max_in_flight", &self.max_in_flight)
            .field("timer_poll_ms", &self.timer_poll_ms)
            .field("timer_lease_ms", &self.timer_lease_ms)
            .field("reconcile_after_ms", &self.reconcile_after_ms)
            .field("drain_timeout_secs", &self.drain_timeout_secs)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("prices", &self.prices)
            .field("max_log_bytes", &self.max_log_bytes)
            .field("admin_addr", &self.admin_addr)
            .field(
                "otlp_endpoint",
                &self.otlp_endpoint.as_deref().map(redact_url),
            )
            .finish()
    }
}

impl Options {
    /// Checks the values before anything connects (including that every file named can be
    /// read). Messages never contain a secret.
    pub fn validate(&self) -> Result<(), String> {
        self.nats.validate()?;
        self.validate_redis()?;
        if self.max_in_flight == 0 {
            return Err("max_in_flight must be at least 1".into());
        }
        if self.retention_secs == 0 || self.running_ttl_secs == 0 {
            return Err("TTLs must be at least one second".into());
        }
        if self.timer_poll_ms == 0 || self.timer_lease_ms < 1000 {
            return Err("timer_poll_ms must be positive and timer_lease_ms at least 1000".into());
        }
        if self.shutdown_grace_secs == 0 {
            return Err("shutdown_grace_secs must be at least 1".into());
        }
        if self.reconcile_after_ms < 100 {
            return Err("reconcile_after_ms must be at least 100".into());
        }
        if self.limits.max_payload_bytes < 1024 {
            return Err("limits.max_payload_bytes must be at least 1024".into());
        }
        if self.max_log_bytes < 4096 {
            return Err("max_log_bytes must be at least 4096".into());
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            baton_otel::traces_url(endpoint).map_err(|_| {
                format!(
                    "otlp_endpoint {:?} must be an http:// or https:// URL",
                    redact_url(endpoint)
                )
            })?;
        }
        for (model, price) in &self.prices {
            let valid = |p: f64| p.is_finite() && p >= 0.0;
            if !valid(price.input_per_mtok) || !valid(price.output_per_mtok) {
                return Err(format!(
                    "the price of model {model:?} must be finite and not negative"
                ));
            }
        }
        Ok(())
    }

    fn validate_redis(&self) -> Result<(), String> {
        let url = &self.redis_url;
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+unix://")
            || url.starts_with("unix://"))
        {
            return Err(format!(
                "Redis URL {:?} must start with redis://, rediss:// or unix://",
                redact_url(url)
            ));
        }
        match (&self.redis_password, &self.redis_password_file) {
            (Some(_), Some(_)) => {
                return Err("give the Redis password or a file holding it, not both".into());
            }
            (None, Some(path)) => {
                baton_nats::read_secret_file("Redis password file", path)?;
            }
            _ => {}
        }
        let tls_files = [
            &self.redis_tls_ca,
            &self.redis_tls_cert,
            &self.redis_tls_key,
        ];
        if tls_files.iter().any(|path| path.is_some()) && !url.starts_with("rediss://") {
            return Err("Redis TLS files need a rediss:// URL".into());
        }
        check_tls_files(
            "Redis",
            self.redis_tls_ca.as_deref(),
            self.redis_tls_cert.as_deref(),
            self.redis_tls_key.as_deref(),
        )
    }

    /// Cost in nano-dollars of a usage, from the price table.
    pub(crate) fn cost_nanos(&self, usage: &baton_protocol::messages::Usage) -> u64 {
        let price = usage
            .model
            .as_deref()
            .and_then(|model| self.prices.get(model))
            .or_else(|| self.prices.get("*"));
        price.map_or(0, |p| p.cost_nanos(usage.input_tokens, usage.output_tokens))
    }

    /// Reads the secrets given as files (`redis_password_file`) into their values, once, at
    /// start. (NATS's files are read when connecting, like its nkey and `.creds` files.)
    pub(crate) fn read_secret_files(&mut self) -> Result<(), String> {
        if let Some(path) = self.redis_password_file.take() {
            self.redis_password = Some(baton_nats::read_secret_file("Redis password file", &path)?);
        }
        Ok(())
    }

    /// A copy fit for printing in full (`baton coordinator --print-config`): passwords and
    /// tokens replaced by [`baton_nats::REDACTED`], URLs redacted.
    pub fn redacted(&self) -> Self {
        let hide =
            |secret: &Option<Secret>| secret.as_ref().map(|_| Secret::new(baton_nats::REDACTED));
        let mut copy = self.clone();
        copy.nats.url = redact_url(&copy.nats.url);
        copy.nats.password = hide(&copy.nats.password);
        copy.nats.token = hide(&copy.nats.token);
        copy.redis_url = redact_url(&copy.redis_url);
        copy.redis_password = hide(&copy.redis_password);
        copy.otlp_endpoint = copy.otlp_endpoint.as_deref().map(redact_url);
        copy
    }

    pub(crate) fn running_ttl(&self) -> Duration {
        Duration::from_secs(self.running_ttl_secs)
    }

    pub(crate) fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_urls_do_not() {
        assert_eq!(Options::default().validate(), Ok(()));
        let bad = Options {
            redis_url: "http://x".into(),
            ..Options::default()
        };
        assert!(bad.validate().unwrap_err().contains("Redis URL"));
        let mut bad = Options::default();
        bad.nats.url = "http://x".into();
        assert!(bad.validate().unwrap_err().contains("NATS URL"));
    }

    #[test]
    fn prices_turn_tokens_into_exact_nano_dollars() {
        let mut options = Options::default();
        options.prices.insert(
            "m".into(),
            Price {
                input_per_mtok: 3.0,
                output_per_mtok: 15.0,
            },
        );
        let usage = |model: Option<&str>| baton_protocol::messages::Usage {
            model: model.map(str::to_owned),
            input_tokens: 1000,
            output_tokens: 100,
        };
        // 1000 × $3/M + 100 × $15/M = $0.0045.
        assert_eq!(options.cost_nanos(&usage(Some("m"))), 4_500_000);
        assert_eq!(options.cost_nanos(&usage(Some("other"))), 0);
        options.prices.insert(
            "*".into(),
            Price {
                input_per_mtok: 1.0,
                output_per_mtok: 0.0,
            },
        );
        assert_eq!(options.cost_nanos(&usage(None)), 1_000_000);
        options.prices.insert(
            "bad".into(),
            Price {
                input_per_mtok: -1.0,
                output_per_mtok: 0.0,
            },
        );
        assert!(options.validate().unwrap_err().contains("\"bad\""));
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let options = Options {
            redis_url: "http://baton:MARKER@x".into(),
            redis_password: Some(Secret::new("MARKER")),
            ..Options::default()
        };
        assert!(!format!("{options:?}").contains("MARKER"));
        assert!(!options.validate().unwrap_err().contains("MARKER"));
        let plain = Options {
            redis_tls_ca: Some("/nonexistent".into()),
            ..Options::default()
        };
        assert!(plain.validate().unwrap_err().contains("rediss://"));
    }
}
