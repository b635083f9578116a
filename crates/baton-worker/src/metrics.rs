//! The worker's Prometheus metrics (`baton_worker_*`), served on `GET /metrics` when
//! `WorkerOptions::admin_addr` is set. Every metric is listed in docs/observability.md.

use std::sync::Arc;
use std::time::Duration;

use baton_metrics::{ByName, TokenLabels, prometheus_client};
use baton_protocol::messages::Usage;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// How a task this process received ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The agent's output was stored as the result.
    Succeeded,
    /// The agent's error (or an output over the payload limit) was stored as the result.
    Failed,
    /// The agent panicked; an error result was stored.
    Panicked,
    /// The task's deadline had passed before it started; terminated, nothing sent.
    Expired,
    /// The deadline passed while the agent worked; stopped and terminated, nothing sent.
    TimedOut,
    /// Given back to the broker (NAK): the result could not be stored, or the drain timeout
    /// passed.
    HandedBack,
    /// The task could not be decoded; terminated, nothing sent.
    Undecodable,
    /// The job was cancelled while the agent worked (`baton.cancel.<agent>`): the agent's
    /// future was dropped and the task acknowledged, nothing sent.
    Cancelled,
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Panicked,
        Outcome::Expired,
        Outcome::TimedOut,
        Outcome::HandedBack,
        Outcome::Undecodable,
        Outcome::Cancelled,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Panicked => "panicked",
            Outcome::Expired => "expired",
            Outcome::TimedOut => "timed_out",
            Outcome::HandedBack => "handed_back",
            Outcome::Undecodable => "undecodable",
            Outcome::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    agent: String,
    outcome: &'static str,
}

/// The registry of one worker and the series of its agent type, resolved once.
pub(crate) struct WorkerMetrics {
    pub(crate) registry: Arc<Registry>,
    agent: String,
    received: Counter,
    finished: [Counter; Outcome::ALL.len()],
    duration: Histogram,
    in_flight: Gauge,
    heartbeats: Counter,
    publish_failures: Counter,
    fenced: Counter,
    tokens: Family<TokenLabels, Counter>,
    models: ByName<[Counter; 2]>,
}

impl WorkerMetrics {
    pub(crate) fn new(agent: &str) -> Self {
        let labels = AgentLabels {
            agent: agent.to_owned(),
        };
        let received = Family::<AgentLabels, Counter>::default();
        let finished = Family::<OutcomeLabels, Counter>::default();
        let seconds: fn() -> Histogram = baton_metrics::seconds_histogram;
        let duration = Family::<AgentLabels, Histogram, _>::new_with_constructor(seconds);
        let in_flight = Family::<AgentLabels, Gauge>::default();
        let heartbeats = Family::<AgentLabels, Counter>::default();
        let publish_failures = Family::<AgentLabels, Counter>::default();
        let fenced = Family::<AgentLabels, Counter>::default();
        let tokens = Family::<TokenLabels, Counter>::default();

        let mut r = Registry::default();
        r.register(
            "baton_worker_tasks_received",
            "Task messages this worker received",
            received.clone(),
        );
        r.register(
            "baton_worker_tasks_finished",
            "Tasks this worker finished, by how they ended",
            finished.clone(),
        );
        r.register_with_unit(
            "baton_worker_task_duration",
            "How long the agent worked on a task it answered",
            Unit::Seconds,
            duration.clone(),
        );
        r.register(
            "baton_worker_tasks_in_flight",
            "Tasks this worker is working on",
            in_flight.clone(),
        );
        r.register(
            "baton_worker_heartbeats",
            "In-progress acknowledgements (+WPI) sent for long tasks",
            heartbeats.clone(),
        );
        r.register(
            "baton_worker_result_publish_failures",
            "Results the broker did not store after retries (the task was handed back)",
            publish_failures.clone(),
        );
        r.register(
            "baton_worker_results_fenced",
            "Results the broker dropped as duplicates: the attempt was already answered",
            fenced.clone(),
        );
        r.register(
            "baton_worker_tokens",
            "Tokens the agent reported, by model and direction (input or output)",
            tokens.clone(),
        );
        Self {
            registry: Arc::new(r),
            agent: agent.to_owned(),
            received: received.get_or_create_owned(&labels),
            finished: Outcome::ALL.map(|outcome| {
                finished.get_or_create_owned(&OutcomeLabels {
                    agent: agent.to_owned(),
                    outcome: outcome.label(),
                })
            }),
            duration: duration.get_or_create_owned(&labels),
            in_flight: in_flight.get_or_create_owned(&labels),
            heartbeats: heartbeats.get_or_create_owned(&labels),
            publish_failures: publish_failures.get_or_create_owned(&labels),
            fenced: fenced.get_or_create_owned(&labels),
            tokens,
            models: ByName::default(),
        }
    }

    /// Counts a received task; the task is in flight until the guard is dropped.
    pub(crate) fn received(&self) -> InFlight {
        self.received.inc();
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub(crate) fn finished(&self, outcome: Outcome) {
        let index = Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or_default();
        self.finished[index].inc();
    }

    /// An answered task: how long the agent worked and the tokens it reported.
    pub(crate) fn answered(&self, duration: Duration, usage: Option<&Usage>) {
        self.duration.observe(duration.as_secs_f64());
        if let Some(usage) = usage {
            let [input, output] = self.model(usage.model.as_deref().unwrap_or("unknown"));
            input.inc_by(usage.input_tokens);
            output.inc_by(usage.output_tokens);
        }
    }

    pub(crate) fn heartbeat(&self) {
        self.heartbeats.inc();
    }

    pub(crate) fn publish_failed(&self) {
        self.publish_failures.inc();
    }

    pub(crate) fn fenced(&self) {
        self.fenced.inc();
    }

    fn model(&self, model: &str) -> [Counter; 2] {
        self.models.get(model, || {
            baton_metrics::token_counters(&self.tokens, &self.agent, model)
        })
    }
}

/// Decrements the in-flight gauge when the task's handling ends, however it ends.
pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tasks_outcomes_and_tokens_are_counted() {
        let metrics = WorkerMetrics::new("sql");
        let guard = metrics.received();
        let usage = Usage {
            model: Some("m".into()),
            input_tokens: 5,
            output_tokens: 2,
        };
        metrics.answered(Duration::from_millis(30), Some(&usage));
        metrics.answered(Duration::from_millis(30), Some(&usage));
        metrics.finished(Outcome::Succeeded);
        metrics.finished(Outcome::HandedBack);
        metrics.heartbeat();
        let text = baton_metrics::encode(&metrics.registry);
        assert!(
            text.contains("baton_worker_tasks_in_flight{agent=\"sql\"} 1\n"),
            "{text}"
        );
        drop(guard);
        let text = baton_metrics::encode(&metrics.registry);
        for expected in [
            "baton_worker_tasks_received_total{agent=\"sql\"} 1\n",
            "baton_worker_tasks_in_flight{agent=\"sql\"} 0\n",
            "baton_worker_tasks_finished_total{agent=\"sql\",outcome=\"succeeded\"} 1\n",
            "baton_worker_tasks_finished_total{agent=\"sql\",outcome=\"handed_back\"} 1\n",
            "baton_worker_tasks_finished_total{agent=\"sql\",outcome=\"panicked\"} 0\n",
            "baton_worker_task_duration_seconds_count{agent=\"sql\"} 2\n",
            "baton_worker_tokens_total{agent=\"sql\",model=\"m\",direction=\"input\"} 10\n",
            "baton_worker_tokens_total{agent=\"sql\",model=\"m\",direction=\"output\"} 4\n",
            "baton_worker_heartbeats_total{agent=\"sql\"} 1\n",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
    }
}
