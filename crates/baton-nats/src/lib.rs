//! Connecting to NATS and declaring Baton's JetStream streams and consumers. The coordinator,
//! the worker SDK and the CLI all go through here, so every process agrees on one stream and
//! consumer configuration.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{ConnectErrorKind, HeaderMap};
use baton_protocol::subject::{self, header};
use baton_protocol::{AgentName, Encoding};

#[cfg(feature = "cli")]
mod args;
mod options;
mod secret;

#[cfg(feature = "cli")]
pub use args::NatsArgs;
pub use options::{NatsOptions, check_tls_files};
pub use secret::{REDACTED, Secret, read_secret_file, redact_url};

/// Why a NATS setup step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid NATS configuration: {0}")]
    Config(String),
    /// `url` is redacted: it never carries a password or token.
    #[error("could not connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    /// The TLS handshake failed: a certificate that does not verify, or TLS on one side only.
    #[error("TLS with NATS at {url} failed: {source}")]
    Tls {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("could not create JetStream stream {stream}: {message}")]
    Stream {
        stream: &'static str,
        message: String,
    },
    #[error("could not create JetStream consumer {consumer}: {message}")]
    Consumer { consumer: String, message: String },
}

/// Connects, retrying the first connection while the server cannot be reached and
/// reconnecting forever after: Baton processes must ride out a nats-server restart without a
/// human. Refused credentials and TLS failures are not retried: they need a human, so they
/// fail at once with an error that says so.
pub async fn connect(options: &NatsOptions) -> Result<async_nats::Client, Error> {
    let mut delay = Duration::from_millis(100);
    loop {
        match connect_once(options, Duration::from_secs(10)).await {
            Err(Error::Connect { url, source }) if transient(&source) => {
                tracing::warn!(url = %url, error = %source, "NATS not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            result => return result,
        }
    }
}

/// Whether a failed connect may succeed later (the server is down or unreachable), as
/// opposed to needing a human (refused credentials, a certificate that does not verify).
fn transient(error: &async_nats::ConnectError) -> bool {
    match error.kind() {
        ConnectErrorKind::TimedOut | ConnectErrorKind::Dns => true,
        ConnectErrorKind::Io => !is_tls_failure(error),
        _ => false,
    }
}

/// async-nats reports a failed TLS handshake as an I/O error wrapping the rustls error.
fn is_tls_failure(error: &async_nats::ConnectError) -> bool {
    matches!(error.kind(), ConnectErrorKind::Tls)
        || std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::get_ref)
            .is_some_and(|inner| inner.is::<async_nats::rustls::Error>())
}

/// Connects once (for short-lived clients such as the CLI), then reconnects forever like
/// [`connect`]. `request_timeout` bounds every request on the connection.
pub async fn connect_once(
    options: &NatsOptions,
    request_timeout: Duration,
) -> Result<async_nats::Client, Error> {
    let (connect, urls) = options.client_options().map_err(Error::Config)?;
    connect
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(request_timeout))
        .event_callback(|event| async move {
            tracing::info!(event = %event, "NATS connection event");
        })
        .connect(urls.as_str())
        .await
        .map_err(|source| {
            let url = options.redacted_url();
            if is_tls_failure(&source) {
                Error::Tls { url, source }
            } else {
                Error::Connect { url, source }
            }
        })
}

/// How long the work-queue streams remember a `Nats-Msg-Id`: publishing the same id again
/// within it stores nothing and returns the first copy's sequence.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Stream configurations, the one place they are defined.
///
/// Message size is left to the server's `max_payload`: every process must declare identical
/// configurations, since creating a stream that exists with another configuration fails.
pub fn stream_configs() -> Vec<stream::Config> {
    let work_queue = |name: &str, subjects: &str| stream::Config {
        name: name.to_owned(),
        subjects: vec![subjects.to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    vec![
        work_queue(subject::stream::JOBS, subject::ENQUEUE),
        work_queue(subject::stream::TASKS, subject::TASKS_ALL),
        work_queue(subject::stream::RESULTS, subject::RESULTS_ALL),
        stream::Config {
            name: subject::stream::DLQ.to_owned(),
            subjects: vec![subject::DLQ_ALL.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(14 * 24 * 3600),
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        },
    ]
}

/// Creates Baton's streams if they do not exist (an existing stream is left as it is).
/// Several processes may race to create the same stream at startup: a failed create is
/// followed by a look-up, and only a stream that is still missing is an error.
pub async fn ensure_streams(js: &jetstream::Context) -> Result<(), Error> {
    ensure_named_streams(js, &[]).await
}

/// [`ensure_streams`] for the named streams only (all of them when `names` is empty). Each
/// stream is looked up before it is created, so a process that may only look streams up (a
/// least-privilege worker, docs/security.md) starts once they exist.
pub async fn ensure_named_streams(js: &jetstream::Context, names: &[&str]) -> Result<(), Error> {
    for config in stream_configs() {
        if !names.is_empty() && !names.contains(&config.name.as_str()) {
            continue;
        }
        let name = match config.name.as_str() {
            subject::stream::JOBS => subject::stream::JOBS,
            subject::stream::TASKS => subject::stream::TASKS,
            subject::stream::RESULTS => subject::stream::RESULTS,
            _ => subject::stream::DLQ,
        };
        if let Err(error) = js.get_or_create_stream(config).await
            && js.get_stream(name).await.is_err()
        {
            return Err(Error::Stream {
                stream: name,
                message: error.to_string(),
            });
        }
    }
    Ok(())
}

/// Settings of the consumer shared by all replicas of one agent type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentConsumerOptions {
    /// How long the broker waits for an ack (or an in-progress heartbeat) before redelivering.
    pub ack_wait: Duration,
    /// Deliveries before the broker gives up on a task (a poison task); the coordinator's
    /// step timeout then takes over.
    pub max_deliver: i64,
    /// Tasks in flight across all replicas of the agent type.
    pub max_ack_pending: i64,
}

impl Default for AgentConsumerOptions {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_ack_pending: 1000,
        }
    }
}

/// Gets or creates the durable pull consumer of an agent type.
pub async fn agent_consumer(
    js: &jetstream::Context,
    agent: &AgentName,
    options: AgentConsumerOptions,
) -> Result<consumer::PullConsumer, Error> {
    let name = subject::consumer::agent(agent);
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: subject::tasks(agent),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: options.ack_wait,
        max_deliver: options.max_deliver,
        max_ack_pending: options.max_ack_pending,
        ..Default::default()
    };
    durable(js, subject::stream::TASKS, name, config).await
}

/// AckWait of the coordinators' consumers of results and durable submissions.
pub const COORDINATOR_ACK_WAIT: Duration = Duration::from_secs(10);

/// Gets or creates a durable pull consumer shared by all coordinator replicas.
pub async fn coordinator_consumer(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
    filter: &str,
    max_ack_pending: i64,
) -> Result<consumer::PullConsumer, Error> {
    let config = consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        filter_subject: filter.to_owned(),
        ack_policy: consumer::AckPolicy::Explicit,
        // A coordinator handles a message in milliseconds; when one dies holding messages,
        // this is how long their jobs wait for another replica. Handling is idempotent, so a
        // slow replica (Redis down) racing a redelivery is harmless.
        ack_wait: COORDINATOR_ACK_WAIT,
        max_ack_pending,
        ..Default::default()
    };
    durable(js, stream, name.to_owned(), config).await
}

async fn durable(
    js: &jetstream::Context,
    stream: &str,
    name: String,
    config: consumer::pull::Config,
) -> Result<consumer::PullConsumer, Error> {
    let consumer_error = |message: String| Error::Consumer {
        consumer: name.clone(),
        message,
    };
    let stream = js
        .get_stream(stream)
        .await
        .map_err(|e| consumer_error(e.to_string()))?;
    stream
        .get_or_create_consumer(&name, config)
        .await
        .map_err(|error| consumer_error(error.to_string()))
}

/// Hands back every message a pull stream has already received but nobody has taken, for
/// immediate redelivery to another replica, then drops the stream. Called on shutdown: left
/// alone, those messages would sit unacknowledged until their AckWait ran out.
///
/// Follow with [`round_trip`]: it returns once the server has processed the dropped stream's
/// unsubscribe, after which nothing more is delivered to this process.
pub async fn hand_back(mut messages: consumer::pull::Stream) {
    use futures::{FutureExt, StreamExt};
    while let Some(Some(Ok(message))) = messages.next().now_or_never() {
        if let Err(error) = message.ack_with(jetstream::AckKind::Nak(None)).await {
            tracing::debug!(error = %error, "Could not hand a message back");
        }
    }
}

/// Waits, up to `timeout`, until the server has processed everything this client sent so far;
/// false if it did not answer in time. `Client::flush` only waits until the bytes have left the
/// socket; this is a real round trip: a message to our own inbox comes back only after the
/// server has parsed everything sent before it (e.g. the unsubscribe of a dropped stream).
pub async fn round_trip(client: &async_nats::Client, timeout: Duration) -> bool {
    use futures::StreamExt;
    let inbox = client.new_inbox();
    let Ok(mut echo) = client.subscribe(inbox.clone()).await else {
        return false;
    };
    if client.publish(inbox, Default::default()).await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(timeout, echo.next()).await,
        Ok(Some(_))
    )
}

/// Whether the client's connection to the server is up, for readiness probes (async-nats
/// tracks it; a connection being re-established counts as down).
pub fn connected(client: &async_nats::Client) -> Result<(), String> {
    use async_nats::connection::State;
    match client.connection_state() {
        State::Connected => Ok(()),
        State::Pending => Err("NATS not connected yet".into()),
        State::Disconnected => Err("NATS disconnected; reconnecting".into()),
    }
}

/// The encoding a message declares in its `Content-Type` header.
pub fn encoding_of(headers: Option<&HeaderMap>) -> Result<Encoding, baton_protocol::codec::Error> {
    let content_type = headers
        .and_then(|headers| headers.get(header::CONTENT_TYPE))
        .map(|value| value.as_str());
    Encoding::from_content_type(content_type)
}

/// Headers announcing `encoding`, for replies and published messages.
pub fn headers_for(encoding: Encoding) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, encoding.content_type());
    headers
}
