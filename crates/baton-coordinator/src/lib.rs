//! Baton's coordinator: a stateless service that validates plans, keeps job state in Redis,
//! publishes tasks on JetStream, records results fenced by attempt, retries with exponential
//! backoff on durable timers, dead-letters and escalates to a human.
//!
//! Any number of replicas run at once against the same NATS and Redis: requests are served by
//! a queue group, submissions and results by shared durable consumers, timers by leases.

mod api;
mod clock;
mod consume;
mod decisions;
mod engine;
mod error;
mod metrics;
mod options;
mod reconcile;
mod replay;
mod report;
mod spans;
mod store;
mod timers;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use baton_protocol::subject;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use options::{Options, Price};
pub use replay::{Mismatch, ReplayError, ReplayReport, replay};
pub use store::Error as StoreError;

/// Why the coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Nats(#[from] baton_nats::Error),
    /// `url` is redacted: it never carries a password.
    #[error("could not connect to Redis at {url}: {source}")]
    Redis {
        url: String,
        #[source]
        source: store::Error,
    },
    #[error("could not subscribe: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error(transparent)]
    Metrics(#[from] baton_metrics::Error),
}

/// One coordinator replica.
pub struct Coordinator {
    options: Options,
}

impl Coordinator {
    pub fn new(options: Options) -> Self {
        Self { options }
    }

    /// Connects, declares streams and consumers, and serves until `shutdown` completes; then
    /// stops taking work and waits (up to the drain timeout) for work in flight.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let options = self.options;
        options.validate().map_err(Error::Config)?;
        // Bound first, so a taken or foreign address fails startup before anything connects.
        let metrics_server = match options.metrics_addr {
            Some(addr) => Some(baton_metrics::MetricsServer::bind(addr).await?),
            None => None,
        };
        let spans = spans::Spans::new(options.otlp_endpoint.as_deref())
            .map_err(|error| Error::Config(error.to_string()))?;
        let ttl = store::Ttl {
            running: options.running_ttl(),
            retention: options.retention(),
            reconcile_after: Duration::from_millis(options.reconcile_after_ms),
            max_log_bytes: options.max_log_bytes,
        };
        let store = store::Store::connect(&options, ttl)
            .await
            .map_err(|source| Error::Redis {
                url: baton_nats::redact_url(&options.redis_url),
                source,
            })?;
        let client = baton_nats::connect(&options.nats).await?;
        let js = async_nats::jetstream::new(client.clone());
        baton_nats::ensure_streams(&js).await?;
        let max_pending = i64::try_from(options.max_in_flight * 4).unwrap_or(i64::MAX);
        let results = baton_nats::coordinator_consumer(
            &js,
            subject::stream::RESULTS,
            subject::consumer::RESULTS,
            subject::RESULTS_ALL,
            max_pending.max(1000),
        )
        .await?;
        let jobs = baton_nats::coordinator_consumer(
            &js,
            subject::stream::JOBS,
            subject::consumer::JOBS,
            subject::ENQUEUE,
            max_pending.max(1000),
        )
        .await?;
        let drain = Duration::from_secs(options.drain_timeout_secs);
        let limit = Arc::new(Semaphore::new(options.max_in_flight));
        let log_stop = CancellationToken::new();
        let (log, log_writer) = decisions::DecisionLog::spawn(store.clone(), log_stop.clone());
        let engine = Arc::new(engine::Engine::new(
            client.clone(),
            store,
            log,
            options,
            spans,
        ));
        // Cancelled when `run` returns, however it returns.
        let metrics_stop = CancellationToken::new().drop_guard();
        let metrics_task = metrics_server.map(|server| {
            let stop = metrics_stop.token().clone();
            engine.metrics.serve(server, js.clone(), stop)
        });
        let stop = CancellationToken::new();
        // Work in flight. A tracker, not a JoinSet: a JoinSet keeps every finished task until
        // it is joined, which grew the coordinator by gigabytes over a million steps.
        let tasks = TaskTracker::new();
        let mut loops = JoinSet::new();
        for subject in [
            subject::SUBMIT,
            subject::STATUS,
            subject::TRACE,
            subject::RERUN,
            subject::ESCALATIONS_LIST,
            subject::ESCALATIONS_GET,
            subject::ESCALATIONS_RESOLVE,
            subject::CANCEL,
        ] {
            loops.spawn(consume::serve(
                engine.clone(),
                subject,
                stop.clone(),
                tasks.clone(),
                limit.clone(),
                consume::on_request,
            ));
        }
        let (e, s, t, l) = (engine.clone(), stop.clone(), tasks.clone(), limit.clone());
        loops.spawn(async move {
            consume::consume(e, results, s, t, l, consume::on_result).await;
            Ok(())
        });
        let (e, s, t, l) = (engine.clone(), stop.clone(), tasks.clone(), limit.clone());
        loops.spawn(async move {
            consume::consume(e, jobs, s, t, l, consume::on_submission).await;
            Ok(())
        });
        let (e, s, t, l) = (engine.clone(), stop.clone(), tasks.clone(), limit.clone());
        loops.spawn(async move {
            timers::run(e, s, t, l).await;
            Ok(())
        });
        loops.spawn(consume::serve(
            engine.clone(),
            subject::POISON_ADVISORIES,
            stop.clone(),
            tasks.clone(),
            limit.clone(),
            consume::on_poison_advisory,
        ));
        client.flush().await.ok();
        tracing::info!("Coordinator ready");

        tokio::select! {
            () = shutdown => {}
            Some(Ok(Err(error))) = loops.join_next() => {
                stop.cancel();
                return Err(error.into());
            }
        }
        tracing::info!("Coordinator draining");
        stop.cancel();
        while loops.join_next().await.is_some() {}
        // The loops dropped their pull streams and subscriptions, which queues unsubscribes.
        // A round trip to the server returns once it has processed them, so from here on nothing is
        // handed to this replica: a durable message would otherwise sit unacknowledged until
        // its AckWait ran out, and a request would go unanswered.
        if !baton_nats::round_trip(&client, Duration::from_secs(2)).await {
            tracing::debug!("NATS server did not confirm the unsubscribes");
        }
        tasks.close();
        let drained = tokio::time::timeout(drain, tasks.wait()).await;
        if drained.is_err() {
            // Unfinished work is redelivered (its messages were not acked) and fenced.
            tracing::warn!("Drain timeout: in-flight work abandoned; it will be redelivered");
        }
        // Work has ended: write the decision-log entries still queued.
        log_stop.cancel();
        if log_writer.await.is_err() {
            tracing::warn!("Decision-log writer failed");
        }
        engine.spans.shutdown().await;
        // Acks, replies and events are fire-and-forget, and `drain` returns before anything is
        // written: a round trip makes sure the server has them before the process exits.
        if !baton_nats::round_trip(&client, Duration::from_secs(2)).await {
            tracing::debug!("NATS server did not confirm the last acks");
        }
        if let Err(error) = client.drain().await {
            tracing::debug!(error = %error, "NATS drain incomplete");
        }
        // Scrapes are answered until the very end, so the last counts can be read.
        drop(metrics_stop);
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        tracing::info!("Coordinator stopped");
        Ok(())
    }
}
