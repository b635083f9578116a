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
mod ready;
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

/// What startup connects and binds before the replica serves.
struct Connected {
    store: store::Store,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    results: async_nats::jetstream::consumer::PullConsumer,
    jobs: async_nats::jetstream::consumer::PullConsumer,
}

impl Coordinator {
    pub fn new(options: Options) -> Self {
        Self { options }
    }

    /// Connects, declares streams and consumers, and serves until `shutdown` completes; then
    /// stops taking work, hands back what it holds, waits for work in flight and flushes the
    /// decision log and the span exporter, all within `shutdown_grace_secs`. A `shutdown`
    /// that completes during startup ends it (`Ok`).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let mut options = self.options;
        options.validate().map_err(Error::Config)?;
        options.read_secret_files().map_err(Error::Config)?;
        // Bound first, so a taken or foreign address fails startup before anything connects;
        // served from here on, so `/livez` answers while startup waits for NATS or Redis.
        let admin_server = match options.admin_addr {
            Some(addr) => Some(baton_metrics::MetricsServer::bind(addr).await?),
            None => None,
        };
        let health = baton_metrics::Health::new();
        let scrape = Arc::new(baton_metrics::Late::<metrics::Exporter>::new());
        // Cancelled when `run` returns, however it returns.
        let admin_stop = CancellationToken::new().drop_guard();
        let admin_task = admin_server
            .map(|server| server.spawn(scrape.clone(), health.clone(), admin_stop.token().clone()));
        let spans = spans::Spans::new(options.otlp_endpoint.as_deref())
            .map_err(|error| Error::Config(error.to_string()))?;
        tokio::pin!(shutdown);
        let connected = tokio::select! {
            connected = connect(&options, &health) => connected?,
            () = &mut shutdown => {
                tracing::info!("Stopped before the coordinator was ready");
                return Ok(());
            }
        };
        let Connected {
            store,
            client,
            js,
            results,
            jobs,
        } = connected;
        let drain = Duration::from_secs(options.drain_timeout_secs);
        let grace = Duration::from_secs(options.shutdown_grace_secs);
        let limit = Arc::new(Semaphore::new(options.max_in_flight));
        let log_stop = CancellationToken::new();
        let (log, log_writer) = decisions::DecisionLog::spawn(store.clone(), log_stop.clone());
        let ready = ready::Ready::new(client.clone(), store.clone());
        let engine = Arc::new(engine::Engine::new(
            client.clone(),
            store,
            log,
            options,
            spans,
        ));
        scrape.set(engine.metrics.exporter(js.clone()));
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
        health.serving(ready);
        tracing::info!("Coordinator ready");

        tokio::select! {
            () = &mut shutdown => {}
            Some(Ok(Err(error))) = loops.join_next() => {
                health.draining();
                stop.cancel();
                return Err(error.into());
            }
        }
        // Not ready from now on: the Service stops sending work here while it drains.
        health.draining();
        let deadline = tokio::time::Instant::now() + grace;
        // Kept, out of the grace, for flushing the decision log, the spans and the last acks
        // after work in flight.
        let reserve = (grace / 5).min(Duration::from_secs(5));
        tracing::info!(grace_secs = grace.as_secs(), "Coordinator draining");
        stop.cancel();
        // The loops stop pulling and hand back (NAK) what their pull streams buffered.
        if tokio::time::timeout_at(deadline, async {
            while loops.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("Input loops did not stop within the shutdown grace");
        }
        // The loops dropped their pull streams and subscriptions, which queues unsubscribes.
        // A round trip to the server returns once it has processed them, so from here on nothing is
        // handed to this replica: a durable message would otherwise sit unacknowledged until
        // its AckWait ran out, and a request would go unanswered.
        if !baton_nats::round_trip(&client, until(deadline, Duration::from_secs(2))).await {
            tracing::debug!("NATS server did not confirm the unsubscribes");
        }
        tasks.close();
        let for_work = drain.min(until(deadline, grace).saturating_sub(reserve));
        let drained = tokio::time::timeout(for_work, tasks.wait()).await;
        if drained.is_err() {
            // Unfinished work is redelivered (its messages were not acked) and fenced.
            tracing::warn!("Drain timeout: in-flight work abandoned; it will be redelivered");
        }
        // Work has ended: write the decision-log entries still queued.
        log_stop.cancel();
        match tokio::time::timeout_at(deadline, log_writer).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::warn!("Decision-log writer failed"),
            Err(_) => tracing::warn!("Decision log not flushed within the shutdown grace"),
        }
        if tokio::time::timeout_at(deadline, engine.spans.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("Spans not exported within the shutdown grace");
        }
        // Acks, replies and events are fire-and-forget, and `drain` returns before anything is
        // written: a round trip makes sure the server has them before the process exits.
        if !baton_nats::round_trip(&client, until(deadline, Duration::from_secs(2))).await {
            tracing::debug!("NATS server did not confirm the last acks");
        }
        match tokio::time::timeout_at(deadline, client.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(error = %error, "NATS drain incomplete"),
            Err(_) => tracing::debug!("NATS drain incomplete within the shutdown grace"),
        }
        // Scrapes are answered until the very end, so the last counts can be read.
        drop(admin_stop);
        if let Some(task) = admin_task {
            let _ = task.await;
        }
        tracing::info!("Coordinator stopped");
        Ok(())
    }
}

/// What is left of `at_most` before `deadline`.
fn until(deadline: tokio::time::Instant, at_most: Duration) -> Duration {
    deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .min(at_most)
}

/// Connects to Redis (loading the scripts) and NATS, declares the streams and binds the
/// coordinators' consumers, saying in `health` which step is under way.
async fn connect(options: &Options, health: &baton_metrics::Health) -> Result<Connected, Error> {
    let ttl = store::Ttl {
        running: options.running_ttl(),
        retention: options.retention(),
        reconcile_after: Duration::from_millis(options.reconcile_after_ms),
        max_log_bytes: options.max_log_bytes,
    };
    let redis_error = |source| Error::Redis {
        url: baton_nats::redact_url(&options.redis_url),
        source,
    };
    health.starting("connecting to Redis");
    let store = store::Store::connect(options, ttl)
        .await
        .map_err(redis_error)?;
    store.load_scripts().await.map_err(redis_error)?;
    health.starting("connecting to NATS");
    let client = baton_nats::connect(&options.nats).await?;
    let js = async_nats::jetstream::new(client.clone());
    health.starting("declaring JetStream streams and consumers");
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
    health.starting("subscribing");
    Ok(Connected {
        store,
        client,
        js,
        results,
        jobs,
    })
}
