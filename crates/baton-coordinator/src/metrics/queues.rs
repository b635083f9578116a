//! Queue depths: the JetStream consumers' pending and in-flight counts, read when a scrape
//! arrives (at most once a second, waiting at most two seconds) and encoded as gauges.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use baton_metrics::prometheus_client;
use baton_protocol::subject;
use futures::TryStreamExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use super::{AgentLabels, Metrics, QueueLabels, name};

/// Queue depths are read at most this often, however often Prometheus scrapes.
const QUEUE_CACHE: Duration = Duration::from_secs(1);
/// A scrape waits at most this long for JetStream, then serves the last values read.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(2);

/// Depths of the JetStream consumers, as last read.
#[derive(Debug, Clone, Default)]
pub(super) struct Queues {
    /// Agent type → its `baton-agent-<agent>` consumer on `BATON_TASKS`.
    pub(super) agents: Vec<(String, ConsumerCounts)>,
    /// `results` and `submissions`: the coordinators' own consumers.
    pub(super) coordinator: Vec<(&'static str, ConsumerCounts)>,
    pub(super) read_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ConsumerCounts {
    /// Stored and not yet delivered.
    pub(super) pending: u64,
    /// Delivered and not yet acknowledged.
    pub(super) in_flight: u64,
    /// Delivered more than once and not yet acknowledged.
    pub(super) redelivered: u64,
}

impl From<&jetstream::consumer::Info> for ConsumerCounts {
    fn from(info: &jetstream::consumer::Info) -> Self {
        Self {
            pending: info.num_pending,
            in_flight: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
        }
    }
}

/// Reads every agent consumer of `BATON_TASKS` (found by listing the stream's consumers, so
/// an agent type shows up once its first worker bound it) and the coordinators' consumers.
async fn read_queues(js: &jetstream::Context) -> Result<Queues, async_nats::Error> {
    let tasks = js.get_stream_no_info(subject::stream::TASKS).await?;
    let mut consumers = tasks.consumers();
    let mut agents = Vec::new();
    while let Some(info) = consumers.try_next().await? {
        if let Some(agent) = subject::consumer::agent_of(&info.name) {
            agents.push((agent.to_owned(), ConsumerCounts::from(&info)));
        }
    }
    agents.sort_by(|a, b| a.0.cmp(&b.0));
    let mut coordinator = Vec::new();
    for (queue, stream, consumer) in [
        (
            "results",
            subject::stream::RESULTS,
            subject::consumer::RESULTS,
        ),
        (
            "submissions",
            subject::stream::JOBS,
            subject::consumer::JOBS,
        ),
    ] {
        let info = js
            .get_stream_no_info(stream)
            .await?
            .consumer_info(consumer)
            .await?;
        coordinator.push((queue, ConsumerCounts::from(&info)));
    }
    Ok(Queues {
        agents,
        coordinator,
        read_at: Some(Instant::now()),
    })
}

/// Renders a scrape: refreshes the queue depths when they are older than [`QUEUE_CACHE`]
/// (waiting at most [`QUEUE_TIMEOUT`]), then encodes the registry.
pub(crate) struct Exporter {
    metrics: Arc<Metrics>,
    js: jetstream::Context,
    /// When the queues were last read (or tried); held while reading, so concurrent scrapes
    /// read once.
    last_read: tokio::sync::Mutex<Option<Instant>>,
}

impl Exporter {
    pub(super) fn new(metrics: Arc<Metrics>, js: jetstream::Context) -> Self {
        Self {
            metrics,
            js,
            last_read: tokio::sync::Mutex::new(None),
        }
    }
}

impl baton_metrics::Scrape for Exporter {
    async fn scrape(&self) -> String {
        {
            let mut last_read = self.last_read.lock().await;
            if last_read.is_none_or(|at| at.elapsed() >= QUEUE_CACHE) {
                match tokio::time::timeout(QUEUE_TIMEOUT, read_queues(&self.js)).await {
                    Ok(Ok(queues)) => {
                        *self
                            .metrics
                            .queues
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = queues;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(error = %error, "Queue depths not read");
                        self.metrics.queue_read_failures.inc();
                    }
                    Err(_) => {
                        tracing::debug!("Queue depths not read in time; serving the last ones");
                        self.metrics.queue_read_failures.inc();
                    }
                }
                *last_read = Some(Instant::now());
            }
        }
        baton_metrics::encode(&self.metrics.registry)
    }
}

/// Encodes the queue depths last read as gauges.
#[derive(Debug)]
pub(super) struct QueueCollector(pub(super) Arc<Mutex<Queues>>);

impl Collector for QueueCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let queues = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(read_at) = queues.read_at else {
            return Ok(());
        };
        let agent = |(agent, _): &(String, ConsumerCounts)| AgentLabels {
            agent: agent.clone(),
        };
        let agents = &queues.agents;
        gauges(
            &mut encoder,
            name::TASKS_PENDING,
            "Tasks stored and not yet delivered to a worker, by agent type (the consumer's lag)",
            agents.iter().map(|q| (agent(q), q.1.pending)),
        )?;
        gauges(
            &mut encoder,
            name::TASKS_IN_FLIGHT,
            "Tasks delivered to a worker and not yet acknowledged, by agent type",
            agents.iter().map(|q| (agent(q), q.1.in_flight)),
        )?;
        gauges(
            &mut encoder,
            name::TASKS_REDELIVERED,
            "Tasks delivered more than once and not yet acknowledged, by agent type",
            agents.iter().map(|q| (agent(q), q.1.redelivered)),
        )?;
        let coordinator = &queues.coordinator;
        gauges(
            &mut encoder,
            name::COORDINATOR_PENDING,
            "Results and durable submissions stored and not yet delivered to a coordinator",
            coordinator
                .iter()
                .map(|(queue, c)| (QueueLabels { queue }, c.pending)),
        )?;
        gauges(
            &mut encoder,
            name::COORDINATOR_IN_FLIGHT,
            "Results and durable submissions delivered to a coordinator and not yet acknowledged",
            coordinator
                .iter()
                .map(|(queue, c)| (QueueLabels { queue }, c.in_flight)),
        )?;
        let age = read_at.elapsed().as_secs_f64();
        let metric = encoder.encode_descriptor(
            name::QUEUE_AGE,
            "Seconds since the queue depths were last read from JetStream.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(age).encode(metric)
    }
}

/// One gauge family from `(labels, value)` pairs; nothing when there are none.
fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &'static str,
    help: &str,
    values: impl ExactSizeIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    if values.len() == 0 {
        return Ok(());
    }
    let help = format!("{help}.");
    let mut metric = encoder.encode_descriptor(name, &help, None, MetricType::Gauge)?;
    for (labels, value) in values {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}
