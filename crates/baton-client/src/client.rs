//! [`Client`]: one typed method per request subject of the public contract, the durable
//! submission, and the waits built on them (a coordinator ready, a job settled, a durable
//! submission become a job).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream;
use baton_protocol::messages::{
    CancelReply, CancelRequest, EscalationView, Event, GetEscalationRequest, JobStatus,
    ListEscalationsReply, ListEscalationsRequest, Progress, RerunRequest, ResolveEscalationReply,
    ResolveEscalationRequest, StatusReply, StatusRequest, SubmitReply, SubmitRequest, TraceReply,
    TraceRequest,
};
use baton_protocol::subject;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::{Error, decode_reply};
use crate::feed::Feed;

/// The request timeout of [`Client::connect`]: a coordinator waits up to 10 s for Redis
/// before it answers `unavailable`, so a client must wait longer than that.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How often a wait reads a job's status even when no event came: events are core NATS, so
/// one published while the connection was reconnecting is lost.
const RECHECK: Duration = Duration::from_millis(500);

/// Whether a job has settled: it ended, or it waits for a human. Every wait of this crate
/// returns then, since an escalated job makes no progress by itself.
pub fn is_settled(status: JobStatus) -> bool {
    status.is_terminal() || status == JobStatus::Escalated
}

/// A client of one Baton fleet over one NATS connection. Cheap to clone (clones share the
/// connection).
#[derive(Clone, Debug)]
pub struct Client {
    nats: async_nats::Client,
    /// Made on the first durable submission: a JetStream context runs a task of its own.
    jetstream: Arc<OnceLock<jetstream::Context>>,
}

impl Client {
    /// Connects once with these options (a failure is returned, not retried; the connection
    /// reconnects forever afterwards), with [`REQUEST_TIMEOUT`] on every request. Invalid
    /// options are [`Error::Config`].
    pub async fn connect(options: &baton_nats::NatsOptions) -> Result<Self, Error> {
        match baton_nats::connect_once(options, REQUEST_TIMEOUT).await {
            Ok(nats) => Ok(Self::new(nats)),
            Err(baton_nats::Error::Config(message)) => Err(Error::Config(message)),
            Err(error) => Err(Error::Connect(error)),
        }
    }

    /// A client over a connection made elsewhere; requests use that connection's timeout.
    pub fn new(nats: async_nats::Client) -> Self {
        Self {
            nats,
            jetstream: Arc::default(),
        }
    }

    /// The connection, for what is not a request to the coordinator (e.g. the CLI's check
    /// that workers are pulling).
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    async fn request<Q: Serialize, R: DeserializeOwned>(
        &self,
        subject: &'static str,
        body: &Q,
    ) -> Result<R, Error> {
        let payload = serde_json::to_vec(body).map_err(Error::Encode)?;
        let reply = self
            .nats
            .request(subject, payload.into())
            .await
            .map_err(|source| Error::request(subject, source))?;
        decode_reply(subject, &reply.payload)
    }

    /// `baton.jobs.submit`: validates the plan and starts the job (or, for a known
    /// idempotency key, returns the existing one).
    pub async fn submit(&self, request: &SubmitRequest) -> Result<SubmitReply, Error> {
        self.request(subject::SUBMIT, request).await
    }

    /// `baton.jobs.enqueue`: publishes a durable submission and waits for the broker to store
    /// it; a coordinator takes it when one runs. `msg_id`, as `Nats-Msg-Id`, makes a
    /// publish retried within the duplicate window a no-op. The stream must exist (see
    /// [`Client::declare_streams`]).
    pub async fn enqueue(
        &self,
        request: &SubmitRequest,
        msg_id: Option<&str>,
    ) -> Result<jetstream::publish::PublishAck, Error> {
        let payload = serde_json::to_vec(request).map_err(Error::Encode)?;
        let js = self.jetstream();
        let sent = match msg_id {
            Some(id) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", id);
                js.publish_with_headers(subject::ENQUEUE, headers, payload.into())
                    .await
            }
            None => js.publish(subject::ENQUEUE, payload.into()).await,
        };
        let ack = sent.map_err(|source| Error::Publish {
            subject: subject::ENQUEUE,
            source,
        })?;
        ack.await.map_err(Error::NotStored)
    }

    /// Declares Baton's streams (a no-op when they exist), so a durable submission is stored
    /// even where no coordinator ever ran. Needs the permission to create streams.
    pub async fn declare_streams(&self) -> Result<(), Error> {
        baton_nats::ensure_streams(self.jetstream())
            .await
            .map_err(Error::Streams)
    }

    fn jetstream(&self) -> &jetstream::Context {
        self.jetstream
            .get_or_init(|| jetstream::new(self.nats.clone()))
    }

    /// `baton.jobs.status` of a job.
    pub async fn status(&self, job: Uuid) -> Result<StatusReply, Error> {
        self.status_of(&StatusRequest {
            job_id: Some(job),
            idempotency_key: None,
        })
        .await
    }

    /// `baton.jobs.status` of the job an idempotency key started.
    pub async fn status_by_key(&self, key: &str) -> Result<StatusReply, Error> {
        self.status_of(&StatusRequest {
            job_id: None,
            idempotency_key: Some(key.to_owned()),
        })
        .await
    }

    pub async fn status_of(&self, request: &StatusRequest) -> Result<StatusReply, Error> {
        self.request(subject::STATUS, request).await
    }

    /// `baton.jobs.trace`: status, plan, input and decision log.
    pub async fn trace(&self, job: Uuid) -> Result<TraceReply, Error> {
        self.request(subject::TRACE, &TraceRequest { job_id: job })
            .await
    }

    /// `baton.jobs.rerun`: a new job reusing a job's outputs up to `request.from`.
    pub async fn rerun(&self, request: &RerunRequest) -> Result<SubmitReply, Error> {
        self.request(subject::RERUN, request).await
    }

    /// `baton.jobs.cancel`. A job that had already ended is an error reply with code
    /// `already_ended` (its message names the job's status; the reply also carries it).
    pub async fn cancel(&self, request: &CancelRequest) -> Result<CancelReply, Error> {
        self.request(subject::CANCEL, request).await
    }

    /// `baton.escalations.list`: open escalations, oldest first.
    pub async fn escalations(&self, limit: Option<usize>) -> Result<ListEscalationsReply, Error> {
        self.request(subject::ESCALATIONS_LIST, &ListEscalationsRequest { limit })
            .await
    }

    /// `baton.escalations.get`.
    pub async fn escalation(&self, id: &str) -> Result<EscalationView, Error> {
        let request = GetEscalationRequest { id: id.to_owned() };
        self.request(subject::ESCALATIONS_GET, &request).await
    }

    /// `baton.escalations.resolve`.
    pub async fn resolve(
        &self,
        request: &ResolveEscalationRequest,
    ) -> Result<ResolveEscalationReply, Error> {
        self.request(subject::ESCALATIONS_RESOLVE, request).await
    }

    /// Subscribes to one job's events (`baton.events.<job>`), or every job's.
    pub async fn events(&self, job: Option<Uuid>) -> Result<Feed<Event>, Error> {
        let subject = job.map_or_else(|| subject::EVENTS_ALL.to_owned(), subject::events);
        self.feed(subject).await
    }

    /// Subscribes to one job's end (`baton.jobs.ended.<job>`: its `job_succeeded` or
    /// `job_failed` event), or every job's.
    pub async fn ends(&self, job: Option<Uuid>) -> Result<Feed<Event>, Error> {
        let subject = job.map_or_else(|| subject::ENDED_ALL.to_owned(), subject::ended);
        self.feed(subject).await
    }

    /// Subscribes to what one job's agents report while they work, or every job's.
    pub async fn progress(&self, job: Option<Uuid>) -> Result<Feed<Progress>, Error> {
        let subject = job.map_or_else(|| subject::PROGRESS_ALL.to_owned(), subject::progress);
        self.feed(subject).await
    }

    /// Subscribes and flushes: a request sent on this connection afterwards reaches the
    /// server after the subscription, so nothing it causes is missed.
    async fn feed<T>(&self, subject: String) -> Result<Feed<T>, Error> {
        let subscriber = match self.nats.subscribe(subject.clone()).await {
            Ok(subscriber) => subscriber,
            Err(source) => return Err(Error::Subscribe { subject, source }),
        };
        self.nats.flush().await.map_err(Error::Flush)?;
        Ok(Feed::new(subscriber))
    }

    /// Whether a coordinator answers: a status request for a job that cannot exist, whose
    /// `not_found` (or any other reply) says one is serving.
    pub async fn ping(&self) -> Result<(), Error> {
        match self.status(Uuid::nil()).await {
            Ok(_) | Err(Error::Rejected { .. } | Error::UnknownCode { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Waits until a coordinator answers ([`Client::ping`]), for at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let probe = tokio::time::timeout(left.min(Duration::from_secs(2)), self.ping());
            let error = match probe.await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => error,
                Err(_) => Error::Timeout {
                    subject: subject::STATUS,
                },
            };
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    waited: timeout,
                    last: Box::new(error),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads a job's status; `None` while the coordinator says Redis is unavailable (a
    /// restart: a later read answers).
    pub(crate) async fn read_status(&self, job: Uuid) -> Result<Option<StatusReply>, Error> {
        match self.status(job).await {
            Ok(status) => Ok(Some(status)),
            Err(Error::Rejected {
                code: baton_protocol::ErrorCode::Unavailable,
                ..
            }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Waits until the job ends or escalates ([`is_settled`]) and returns its status. It
    /// listens to the job's events and reads the status after subscribing (so an end that
    /// came first is not missed), after each event, and every half second.
    pub async fn wait(&self, job: Uuid, timeout: Duration) -> Result<StatusReply, Error> {
        let mut events = self.events(Some(job)).await?;
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(status) = self.read_status(job).await? {
                if is_settled(status.status) {
                    return Ok(status);
                }
                last = Some(status.status);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::NotSettled { job, timeout, last });
            }
            // Any event may be the end; the status read after it tells.
            if let Ok(None) =
                tokio::time::timeout_at(deadline.min(now + RECHECK), events.next()).await
            {
                return Err(Error::SubscriptionClosed);
            }
        }
    }

    /// Waits until a durable submission has become a job, and returns its id. Asks by
    /// idempotency key, backing off from 50 ms to 1 s, while the answer is `not_found` or
    /// transient (no coordinator running yet, Redis unavailable).
    pub async fn wait_for_key(&self, key: &str, timeout: Duration) -> Result<Uuid, Error> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(50);
        loop {
            let error = match self.status_by_key(key).await {
                Ok(status) => return Ok(status.job_id),
                Err(error) if error.is_transient() => error,
                Err(error) if error.code() == Some(baton_protocol::ErrorCode::NotFound) => error,
                Err(error) => return Err(error),
            };
            if Instant::now() >= deadline {
                return Err(Error::NotStarted {
                    key: key.to_owned(),
                    last: Box::new(error),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}
