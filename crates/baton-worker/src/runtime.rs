//! The worker runtime: pull, bound, heartbeat, publish the result, then ack; drain on
//! shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind};
use backon::{ExponentialBuilder, Retryable};
use baton_nats::{AgentConsumerOptions, NatsOptions};
use baton_otel::worker::{self as otel, GenAiUsage, Outcome as SpanOutcome};
use baton_protocol::messages::{
    AgentError as WireError, CancelNotice, Task as WireTask, TaskResult,
};
use baton_protocol::{AgentName, Limits, subject};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::agent::{Agent, Reporter, Task};
use crate::metrics::{Outcome, WorkerMetrics};

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Nats(#[from] baton_nats::Error),
    #[error("could not open the task stream: {0}")]
    Stream(String),
    #[error(transparent)]
    Metrics(#[from] baton_metrics::Error),
}

/// Configuration of one worker process.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerOptions {
    pub nats: NatsOptions,
    /// The agent type this worker serves.
    pub agent: AgentName,
    /// Tasks processed at once by this process.
    pub concurrency: usize,
    /// The consumer's ack deadline; heartbeats go out every third of it.
    pub ack_wait: Duration,
    /// Deliveries of one task before the broker stops redelivering it.
    pub max_deliver: i64,
    /// How long shutdown waits for tasks in flight before handing them back.
    pub drain_timeout: Duration,
    /// Identity reported in results.
    pub worker_id: String,
    /// Largest result accepted; a larger output becomes a non-retryable error.
    pub max_payload_bytes: usize,
    /// Where to serve the admin endpoint — Prometheus metrics (`GET /metrics`) and the
    /// probes (`GET /livez`, `GET /readyz`); off when `None`. Port 0 picks a free port
    /// (logged as `Metrics listening`).
    pub admin_addr: Option<SocketAddr>,
}

impl WorkerOptions {
    pub fn new(agent: AgentName) -> Self {
        let worker_id = format!("{agent}-{}", std::process::id());
        Self {
            nats: NatsOptions {
                name: format!("baton-agent-{agent}"),
                ..NatsOptions::default()
            },
            agent,
            concurrency: 16,
            ack_wait: Duration::from_secs(30),
            max_deliver: AgentConsumerOptions::default().max_deliver,
            drain_timeout: Duration::from_secs(30),
            worker_id,
            max_payload_bytes: Limits::default().max_payload_bytes,
            admin_addr: None,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        self.nats.validate()?;
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err("ack_wait must be at least 1s".into());
        }
        if self.max_deliver == 0 {
            return Err("max_deliver must be positive (or -1 for unlimited)".into());
        }
        Ok(())
    }
}

/// A worker process serving one agent type.
pub struct Worker<A> {
    options: WorkerOptions,
    agent: Arc<A>,
}

struct Shared<A> {
    options: WorkerOptions,
    agent: Arc<A>,
    js: jetstream::Context,
    /// The connection tasks publish progress on, shared by pointer (cloning a client copies
    /// several handles).
    reporting: Arc<async_nats::Client>,
    /// Fired when the drain timeout passes: tasks still running hand their message back.
    hard_stop: CancellationToken,
    /// The running attempts, by (job, step, attempt): a cancel notice fires the token.
    running: Mutex<HashMap<Attempt, CancellationToken>>,
    metrics: WorkerMetrics,
}

/// One attempt: (job, step, attempt).
type Attempt = (uuid::Uuid, String, u32);

impl<A: Agent> Worker<A> {
    pub fn new(options: WorkerOptions, agent: A) -> Self {
        Self {
            options,
            agent: Arc::new(agent),
        }
    }

    /// Serves tasks until `shutdown` completes, then stops pulling and drains. A `shutdown`
    /// that completes during startup ends it (`Ok`).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        self.options.validate().map_err(Error::Config)?;
        // Bound first, so a taken or foreign address fails startup before anything connects;
        // served from here on, so `/livez` answers while startup waits for NATS.
        let admin_server = match self.options.admin_addr {
            Some(addr) => Some(baton_metrics::MetricsServer::bind(addr).await?),
            None => None,
        };
        let metrics = WorkerMetrics::new(self.options.agent.as_str());
        let health = baton_metrics::Health::new();
        // Cancelled when `run` returns, however it returns: scrapes are answered to the end.
        let admin_stop = CancellationToken::new().drop_guard();
        if let Some(server) = admin_server {
            server.spawn(
                metrics.registry.clone(),
                health.clone(),
                admin_stop.token().clone(),
            );
        }
        tokio::pin!(shutdown);
        let connected = tokio::select! {
            connected = self.connect(&health) => connected?,
            () = &mut shutdown => {
                tracing::info!("Stopped before the worker was ready");
                return Ok(());
            }
        };
        let (client, js, consumer) = connected;
        let shared = Arc::new(Shared {
            options: self.options.clone(),
            agent: self.agent,
            js,
            reporting: Arc::new(client.clone()),
            hard_stop: CancellationToken::new(),
            running: Mutex::new(HashMap::new()),
            metrics,
        });
        // Subscribed before the first task is pulled, so no cancel of a task this worker
        // runs is missed. Core NATS: a notice for a task another worker runs is ignored.
        let mut notices = client
            .subscribe(subject::cancel(&self.options.agent))
            .await
            .map_err(|e| Error::Stream(e.to_string()))?;
        let listener = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Some(message) = notices.next().await {
                    let Ok(notice) = serde_json::from_slice::<CancelNotice>(&message.payload)
                    else {
                        continue;
                    };
                    let key = (notice.job_id, notice.step_id, notice.attempt);
                    if let Some(token) = shared.running_attempts().get(&key) {
                        token.cancel();
                    }
                }
            })
        };
        // Stopped when `run` returns.
        let _listener = tokio_util::task::AbortOnDropHandle::new(listener);
        let limit = Arc::new(Semaphore::new(self.options.concurrency));
        let mut tasks = JoinSet::new();
        health.serving(NatsUp(client.clone()));
        tracing::info!(agent = %self.options.agent, concurrency = self.options.concurrency, "Worker ready");
        'outer: loop {
            let mut messages = consumer
                .stream()
                .max_messages_per_batch(self.options.concurrency)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .map_err(|e| Error::Stream(e.to_string()))?;
            loop {
                // Take a slot first, so no more tasks are pulled than can run.
                let permit = tokio::select! {
                    () = &mut shutdown => break,
                    permit = limit.clone().acquire_owned() => permit,
                };
                let Ok(permit) = permit else { break };
                let message = tokio::select! {
                    () = &mut shutdown => break,
                    message = messages.next() => message,
                };
                match message {
                    Some(Ok(message)) => {
                        let shared = shared.clone();
                        // Boxed: handling a task is a future of kilobytes, and a task's
                        // future is copied when it is spawned and when it finishes.
                        let work = Box::pin(async move { shared.handle(message).await });
                        tasks.spawn(async move {
                            work.await;
                            drop(permit);
                        });
                    }
                    Some(Err(error)) => tracing::debug!(error = %error, "Pull stream hiccup"),
                    None => continue 'outer,
                }
                // Reap finished tasks so the set does not grow without bound.
                while tasks.try_join_next().is_some() {}
            }
            // Not ready from now on; the tasks buffered but not started go back to the broker.
            health.draining();
            baton_nats::hand_back(messages).await;
            break;
        }
        // The pull stream is dropped, which queues its unsubscribe. A round trip returns once
        // the server has processed it, so from here on no task is handed to this process (it
        // would sit unacknowledged until its AckWait ran out).
        if !baton_nats::round_trip(&client, Duration::from_secs(2)).await {
            tracing::debug!("NATS server did not confirm the unsubscribes");
        }
        tracing::info!(in_flight = tasks.len(), "Worker draining");
        let drained = tokio::time::timeout(self.options.drain_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                in_flight = tasks.len(),
                "Drain timeout: handing unfinished tasks back"
            );
            shared.hard_stop.cancel();
            while tasks.join_next().await.is_some() {}
        }
        // Acks are fire-and-forget and `drain` returns before anything is written: without a
        // round trip the last tasks' acks can be lost when the process exits, and those tasks
        // would sit unacknowledged until their AckWait ran out.
        if !baton_nats::round_trip(&client, Duration::from_secs(2)).await {
            tracing::debug!("NATS server did not confirm the last acks");
        }
        if let Err(error) = client.drain().await {
            tracing::debug!(error = %error, "NATS drain incomplete");
        }
        otel::flush().await;
        tracing::info!("Worker stopped");
        Ok(())
    }
}

impl<A> Worker<A> {
    /// Connects, looks up (or declares) the streams a worker uses and binds the agent type's
    /// consumer, saying in `health` which step is under way.
    async fn connect(
        &self,
        health: &baton_metrics::Health,
    ) -> Result<
        (
            async_nats::Client,
            jetstream::Context,
            jetstream::consumer::PullConsumer,
        ),
        Error,
    > {
        health.starting("connecting to NATS");
        let client = baton_nats::connect(&self.options.nats).await?;
        let js = jetstream::new(client.clone());
        health.starting("binding the task stream's consumer");
        // Only the streams a worker uses: a least-privilege worker may look up nothing else.
        baton_nats::ensure_named_streams(&js, &[subject::stream::TASKS, subject::stream::RESULTS])
            .await?;
        let consumer_options = AgentConsumerOptions {
            ack_wait: self.options.ack_wait,
            max_deliver: self.options.max_deliver,
            ..AgentConsumerOptions::default()
        };
        let consumer =
            baton_nats::agent_consumer(&js, &self.options.agent, consumer_options).await?;
        Ok((client, js, consumer))
    }
}

/// The worker's readiness check: its consumer is bound (it serves only after that) and its
/// NATS connection is up.
struct NatsUp(async_nats::Client);

impl baton_metrics::Check for NatsUp {
    fn check(&self) -> baton_metrics::CheckFuture<'_> {
        Box::pin(std::future::ready(baton_nats::connected(&self.0)))
    }
}

impl<A: Agent> Shared<A> {
    fn running_attempts(&self) -> std::sync::MutexGuard<'_, HashMap<Attempt, CancellationToken>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn handle(&self, message: jetstream::Message) {
        let _in_flight = self.metrics.received();
        let decoded = baton_nats::encoding_of(message.headers.as_ref()).and_then(|encoding| {
            encoding.decode::<WireTask>(&message.payload, self.options.max_payload_bytes)
        });
        let wire = match decoded {
            Ok(task) => task,
            Err(error) => {
                // Without a readable task there is nobody to answer; the coordinator's
                // timeout handles the step.
                tracing::warn!(subject = %message.subject, error = %error, "Undecodable task terminated");
                let _ = message.ack_with(AckKind::Term).await;
                self.metrics.finished(Outcome::Undecodable);
                return;
            }
        };
        let task = Task {
            job_id: wire.job_id,
            step_id: wire.step_id,
            attempt: wire.attempt,
            agent: wire.agent,
            input: wire.input,
            deadline_ms: wire.deadline_ms,
            reporter: Reporter::connected(self.reporting.clone()),
        };
        let remaining = task.remaining();
        if remaining.is_zero() {
            tracing::info!(job = %task.job_id, step = %task.step_id, attempt = task.attempt, "Task expired before it started");
            let _ = message.ack_with(AckKind::Term).await;
            self.metrics.finished(Outcome::Expired);
            return;
        }
        let (job, step, attempt) = (task.job_id, task.step_id.clone(), task.attempt);
        let cancelled = CancellationToken::new();
        self.running_attempts()
            .insert((job, step.clone(), attempt), cancelled.clone());
        // Removed however this attempt ends.
        let _registered = Registered {
            running: &self.running,
            key: (job, step.clone(), attempt),
        };
        let started = std::time::Instant::now();
        let agent = self.agent.clone();
        let reporter = task.reporter.clone();
        // The attempt's span (`Span::none()` with tracing off); the agent's own spans nest
        // under it.
        let traceparent = otel::enabled()
            .then(|| message.headers.as_ref()?.get(baton_otel::TRACEPARENT))
            .flatten();
        let span = otel::process_span(
            traceparent.map(|value| value.as_str()),
            &task.agent,
            job,
            &step,
            attempt,
        );
        // Its own task, so a panicking agent fails the attempt instead of the worker.
        let mut work =
            tokio::spawn(async move { agent.process(task).await }.instrument(span.clone()));
        // First beat one period from now. (Awaiting an interval's immediate first tick costs a
        // tick of the timer wheel, about 1 ms, on every task.)
        let period = self.options.ack_wait / 3;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let deadline = tokio::time::sleep(remaining);
        tokio::pin!(deadline);
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                _ = heartbeat.tick() => {
                    match message.ack_with(AckKind::Progress).await {
                        Ok(()) => self.metrics.heartbeat(),
                        Err(error) => tracing::debug!(error = %error, "Heartbeat not sent"),
                    }
                }
                () = &mut deadline => {
                    work.abort();
                    otel::finish(&span, SpanOutcome::Timeout, None);
                    tracing::info!(job = %job, step = %step, attempt, "Attempt passed its deadline; stopped");
                    let _ = message.ack_with(AckKind::Term).await;
                    self.metrics.finished(Outcome::TimedOut);
                    return;
                }
                () = cancelled.cancelled() => {
                    // The job was cancelled: its result would be fenced. Drop the agent's
                    // future and acknowledge the task so it is not redelivered.
                    work.abort();
                    otel::finish(&span, SpanOutcome::HandedBack, None);
                    tracing::info!(job = %job, step = %step, attempt, "Attempt cancelled; stopped");
                    let _ = message.ack().await;
                    self.metrics.finished(Outcome::Cancelled);
                    return;
                }
                () = self.hard_stop.cancelled() => {
                    work.abort();
                    otel::finish(&span, SpanOutcome::HandedBack, None);
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    self.metrics.finished(Outcome::HandedBack);
                    return;
                }
            }
        };
        let duration = started.elapsed();
        let (output, error, mut answered) = match outcome {
            Ok(Ok(output)) => (Some(output), None, Outcome::Succeeded),
            Ok(Err(error)) => (
                None,
                Some(WireError {
                    message: error.message,
                    retryable: error.retryable,
                }),
                Outcome::Failed,
            ),
            Err(join) => (
                None,
                Some(WireError {
                    message: format!("agent panicked: {join}"),
                    retryable: true,
                }),
                Outcome::Panicked,
            ),
        };
        let mut result = TaskResult {
            job_id: job,
            step_id: step.clone(),
            attempt,
            output,
            error,
            worker: Some(self.options.worker_id.clone()),
            duration_ms: Some(duration.as_millis() as u64),
            usage: reporter.take_usage(),
        };
        self.metrics.answered(duration, result.usage.as_ref());
        let mut payload = serde_json::to_vec(&result).unwrap_or_default();
        if payload.len() > self.options.max_payload_bytes {
            let message = format!(
                "output is {} bytes; the payload limit is {}",
                payload.len(),
                self.options.max_payload_bytes
            );
            result.output = None;
            result.error = Some(WireError {
                message,
                retryable: false,
            });
            payload = serde_json::to_vec(&result).unwrap_or_default();
            answered = Outcome::Failed;
        }
        let outcome = match &result.error {
            None => SpanOutcome::Succeeded,
            Some(error) => SpanOutcome::Failed(&error.message),
        };
        let usage = result.usage.as_ref().map(|usage| GenAiUsage {
            model: usage.model.as_deref(),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
        });
        otel::finish(&span, outcome, usage);
        // The result names the process span, so whoever reads it can join the trace.
        let traceparent = otel::traceparent_of(&span);
        drop(span);
        let stored = self
            .publish_result(&result, Bytes::from(payload), traceparent.as_deref())
            .await;
        if let Err(error) = stored {
            // Not stored: hand the task back so it is redone rather than lost.
            tracing::warn!(job = %job, step = %step, attempt, error = %error, "Result not stored; task handed back");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            self.metrics.publish_failed();
            self.metrics.finished(Outcome::HandedBack);
            return;
        }
        self.metrics.finished(answered);
        if let Err(error) = message.ack().await {
            tracing::debug!(error = %error, "Ack not sent; the redelivery's result will be fenced");
        }
    }

    /// Publishes a result and waits until the broker stored it. Deduplicated by attempt, so a
    /// retried publish is stored once.
    async fn publish_result(
        &self,
        result: &TaskResult,
        payload: Bytes,
        traceparent: Option<&str>,
    ) -> Result<(), async_nats::Error> {
        let agent = &self.options.agent;
        let msg_id = subject::result_msg_id(result.job_id, &result.step_id, result.attempt);
        let publish = || async {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id.as_str());
            if let Some(traceparent) = traceparent {
                headers.insert(baton_otel::TRACEPARENT, traceparent);
            }
            let ack = self
                .js
                .publish_with_headers(subject::results(agent), headers, payload.clone())
                .await?;
            ack.await.map_err(async_nats::Error::from)
        };
        publish
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_times(6),
            )
            .await
            .map(|ack| {
                if ack.duplicate {
                    self.metrics.fenced();
                    // Another copy of this attempt (a redelivery this process outlived) answered
                    // first; the broker kept that result and dropped this one.
                    tracing::info!(
                        job = %result.job_id, step = %result.step_id, attempt = result.attempt,
                        "Result fenced: this attempt was already answered"
                    );
                }
            })
    }
}

/// Takes an attempt out of the running set when its handling ends.
struct Registered<'a> {
    running: &'a Mutex<HashMap<Attempt, CancellationToken>>,
    key: Attempt,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
    }
}
