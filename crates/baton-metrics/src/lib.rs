//! Prometheus metrics plumbing shared by the coordinator and the worker SDK: the histogram
//! buckets every duration uses, the OpenMetrics text encoding, and [`MetricsServer`], the
//! admin HTTP endpoint that answers `GET /metrics`, `GET /livez` and `GET /readyz` (the
//! latter from a [`Health`]).
//!
//! The metrics themselves live next to the code they describe (`metrics.rs` in
//! `baton-coordinator` and in `baton-worker`); docs/observability.md lists them all.

mod health;
mod server;

use std::collections::HashMap;
use std::sync::RwLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use health::{CHECK_TIMEOUT, Check, CheckFuture, Health};
pub use prometheus_client;
pub use server::{Error, Late, MetricsServer, Scrape};

/// Content type of the OpenMetrics text format, the body of every `GET /metrics` answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds, in seconds, of the buckets of every duration histogram: from half a
/// millisecond (the coordinator's own overhead on a step) to ten minutes (a long agent call),
/// roughly ×2.5 apart so a quantile is never more than one bucket off.
pub const SECONDS_BUCKETS: [f64; 19] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];

/// A histogram with [`SECONDS_BUCKETS`]; usable as a `Family` constructor.
pub fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

/// Milliseconds as the seconds a histogram observes.
pub fn ms_to_seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Labels of the token counters (`baton_tokens_total`, `baton_worker_tokens_total`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub agent: String,
    pub model: String,
    /// `input` or `output`.
    pub direction: &'static str,
}

/// The input and output token counters of one (agent, model).
pub fn token_counters(
    family: &Family<TokenLabels, Counter>,
    agent: &str,
    model: &str,
) -> [Counter; 2] {
    ["input", "output"].map(|direction| {
        family.get_or_create_owned(&TokenLabels {
            agent: agent.to_owned(),
            model: model.to_owned(),
            direction,
        })
    })
}

/// Series by a label value (an agent type, a model), resolved once: a read lock on the hot
/// path, the write lock only the first time a name is seen.
#[derive(Debug)]
pub struct ByName<V> {
    series: RwLock<HashMap<String, V>>,
}

impl<V> Default for ByName<V> {
    fn default() -> Self {
        Self {
            series: RwLock::new(HashMap::new()),
        }
    }
}

impl<V: Clone> ByName<V> {
    /// The series of `model`, made by `create` the first time.
    pub fn get(&self, model: &str, create: impl FnOnce() -> V) -> V {
        let series = self.series.read().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = series.get(model) {
            return found.clone();
        }
        drop(series);
        let mut series = self.series.write().unwrap_or_else(|p| p.into_inner());
        series
            .entry(model.to_owned())
            .or_insert_with(create)
            .clone()
    }
}

/// The registry in the OpenMetrics text format, `# EOF` included.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::with_capacity(8 * 1024);
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, registry) {
        // Writing to a String cannot fail; a metric's encoder can, and then the scrape would
        // be cut short. Say so rather than serve half a page silently.
        tracing::warn!(error = %error, "Metrics encoding failed");
    }
    text
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn buckets_increase_and_counters_get_their_suffix() {
        assert!(SECONDS_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        registry.register("baton_things", "Things", counter.clone());
        counter.inc();
        let histogram = seconds_histogram();
        registry.register_with_unit(
            "baton_wait",
            "Waits",
            prometheus_client::registry::Unit::Seconds,
            histogram.clone(),
        );
        histogram.observe(ms_to_seconds(3));
        let text = encode(&registry);
        assert!(text.contains("baton_things_total 1\n"), "{text}");
        assert!(
            text.contains("baton_wait_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("baton_wait_seconds_count 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
