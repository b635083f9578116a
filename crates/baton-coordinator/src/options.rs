//! Coordinator configuration: defaults, then whatever the CLI layers on top, then `validate()`.

use std::time::Duration;

use baton_nats::NatsOptions;
use baton_protocol::Limits;
use serde::{Deserialize, Serialize};

/// Everything a coordinator replica needs to run. All replicas of one deployment should use
/// the same values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// NATS connection.
    pub nats: NatsOptions,
    /// Redis URL, e.g. `redis://127.0.0.1:6379` (`rediss://` for TLS).
    pub redis_url: String,
    /// Bounds on plans and payloads.
    pub limits: Limits,
    /// TTL of a running job's state, refreshed on every transition.
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
    /// How long shutdown waits for in-flight work.
    pub drain_timeout_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nats: NatsOptions {
                name: "baton-coordinator".into(),
                ..NatsOptions::default()
            },
            redis_url: "redis://127.0.0.1:6379".into(),
            limits: Limits::default(),
            running_ttl_secs: 7 * 24 * 3600,
            retention_secs: 24 * 3600,
            max_in_flight: 256,
            timer_poll_ms: 250,
            timer_lease_ms: 10_000,
            reconcile_after_ms: 15_000,
            drain_timeout_secs: 10,
        }
    }
}

impl Options {
    /// Checks the values before anything connects.
    pub fn validate(&self) -> Result<(), String> {
        if self.nats.url.trim().is_empty() {
            return Err("NATS URL is empty".into());
        }
        for url in self.nats.url.split(',') {
            let url = url.trim();
            let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|s| url.starts_with(s))
                || !url.contains("://");
            if !scheme_ok {
                return Err(format!(
                    "NATS URL {url:?} must start with nats://, tls://, ws:// or wss://"
                ));
            }
        }
        if !(self.redis_url.starts_with("redis://")
            || self.redis_url.starts_with("rediss://")
            || self.redis_url.starts_with("redis+unix://")
            || self.redis_url.starts_with("unix://"))
        {
            return Err(format!(
                "Redis URL {:?} must start with redis://, rediss:// or unix://",
                self.redis_url
            ));
        }
        if self.max_in_flight == 0 {
            return Err("max_in_flight must be at least 1".into());
        }
        if self.retention_secs == 0 || self.running_ttl_secs == 0 {
            return Err("TTLs must be at least one second".into());
        }
        if self.timer_poll_ms == 0 || self.timer_lease_ms < 1000 {
            return Err("timer_poll_ms must be positive and timer_lease_ms at least 1000".into());
        }
        if self.reconcile_after_ms < 100 {
            return Err("reconcile_after_ms must be at least 100".into());
        }
        if self.limits.max_payload_bytes < 1024 {
            return Err("limits.max_payload_bytes must be at least 1024".into());
        }
        Ok(())
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
}
