//! Every NATS subject, stream, consumer and message-id format Baton uses, in one place.
//! Nothing else builds a subject with `format!`.

use uuid::Uuid;

use crate::name::{AgentName, StepId};

/// Request/reply: submit a job. A stream must never capture this subject, or JetStream would
/// answer the request with a PubAck instead of the coordinator's reply.
pub const SUBMIT: &str = "baton.jobs.submit";
/// JetStream publish: durable submit, stored in [`stream::JOBS`] until a coordinator takes it.
pub const ENQUEUE: &str = "baton.jobs.enqueue";
/// Request/reply: job status by id or idempotency key.
pub const STATUS: &str = "baton.jobs.status";
/// Request/reply: a job's status, plan, input and decision log, for `baton trace`,
/// `baton watch` and `baton replay`.
pub const TRACE: &str = "baton.jobs.trace";
/// Request/reply: starts a new job that reuses a finished job's outputs up to a step.
pub const RERUN: &str = "baton.jobs.rerun";
/// Wildcard over every job's progress subjects (see [`progress`]).
pub const PROGRESS_ALL: &str = "baton.progress.>";
/// Request/reply: list open escalations (oldest first).
pub const ESCALATIONS_LIST: &str = "baton.escalations.list";
/// Request/reply: one escalation by id.
pub const ESCALATIONS_GET: &str = "baton.escalations.get";
/// Request/reply: resolve an escalation (supply an output, retry, or fail the job).
pub const ESCALATIONS_RESOLVE: &str = "baton.escalations.resolve";
/// Request/reply: cancel a job.
pub const CANCEL: &str = "baton.jobs.cancel";

/// Queue group the coordinator replicas share for request/reply subjects, so each request is
/// answered once.
pub const COORDINATOR_QUEUE_GROUP: &str = "baton-coordinator";

/// Wildcard over all task subjects (the `BATON_TASKS` stream's subject).
pub const TASKS_ALL: &str = "baton.tasks.>";
/// Wildcard over all result subjects (the `BATON_RESULTS` stream's subject).
pub const RESULTS_ALL: &str = "baton.results.>";
/// Wildcard over all dead-letter subjects (the `BATON_DLQ` stream's subject).
pub const DLQ_ALL: &str = "baton.dlq.>";
/// Wildcard over all job event subjects (see [`events`]).
pub const EVENTS_ALL: &str = "baton.events.>";
/// Wildcard over all jobs' end events (see [`ended`]).
pub const ENDED_ALL: &str = "baton.jobs.ended.>";

/// JetStream advisories for tasks delivered `MaxDeliver` times without an answer (a worker
/// crashed on each delivery), from any agent consumer of [`stream::TASKS`]; the coordinator
/// turns each into a `poison` failure.
pub const POISON_ADVISORIES: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.BATON_TASKS.*";

/// Tasks for one agent type.
pub fn tasks(agent: &AgentName) -> String {
    format!("baton.tasks.{agent}")
}

/// Results from one agent type.
pub fn results(agent: &AgentName) -> String {
    format!("baton.results.{agent}")
}

/// Core NATS: stop notices for the running attempts of one agent type (a cancelled job's).
pub fn cancel(agent: &AgentName) -> String {
    format!("baton.cancel.{agent}")
}

/// Dead letters of one agent type.
pub fn dlq(agent: &AgentName) -> String {
    format!("baton.dlq.{agent}")
}

/// Dead letters for submissions on `baton.jobs.enqueue` that could not be accepted. Agent
/// names cannot start with `_`, so this never collides with an agent's dead letters.
pub const DLQ_SUBMISSIONS: &str = "baton.dlq._submissions";
/// Dead letters for result messages that could not be used: undecodable, published on
/// another agent's subject, or for a step the job does not have.
pub const DLQ_RESULTS: &str = "baton.dlq._results";

/// Events of one job (core NATS, published by the coordinator after each transition).
pub fn events(job: Uuid) -> String {
    format!("baton.events.{job}")
}

/// The end of one job: its `job_succeeded` or `job_failed` event, published here as well as
/// on [`events`], for observers that want only job ends.
pub fn ended(job: Uuid) -> String {
    format!("baton.jobs.ended.{job}")
}

/// Progress an agent publishes while it works on one of the job's steps (core NATS, not
/// stored).
pub fn progress(job: Uuid) -> String {
    format!("baton.progress.{job}")
}

/// The agent type a task or result subject belongs to, if it is one.
pub fn agent_of(subject: &str) -> Option<&str> {
    subject
        .strip_prefix("baton.tasks.")
        .or_else(|| subject.strip_prefix("baton.results."))
}

/// JetStream stream names.
pub mod stream {
    /// Durable submissions; work-queue retention (a job leaves it once a coordinator took it).
    pub const JOBS: &str = "BATON_JOBS";
    /// Tasks for all agent types; work-queue retention, one consumer per agent type.
    pub const TASKS: &str = "BATON_TASKS";
    /// Results from all agent types; work-queue retention, one consumer shared by all
    /// coordinator replicas.
    pub const RESULTS: &str = "BATON_RESULTS";
    /// Dead letters, kept for inspection (limits retention, 14 days; nobody consumes it):
    /// the last task of each escalated step (retry policy exhausted, or a non-retryable
    /// failure), and the submissions and results that could not be used.
    pub const DLQ: &str = "BATON_DLQ";
}

/// Durable consumer names.
pub mod consumer {
    use crate::name::AgentName;

    /// The consumer coordinators pull durable submissions from.
    pub const JOBS: &str = "baton-coordinator-jobs";
    /// The consumer coordinators pull results from.
    pub const RESULTS: &str = "baton-coordinator-results";

    /// Prefix of the agent consumers' names.
    const AGENT_PREFIX: &str = "baton-agent-";

    /// The one consumer every replica of an agent type shares.
    pub fn agent(agent: &AgentName) -> String {
        format!("{AGENT_PREFIX}{agent}")
    }

    /// The agent type whose consumer this is, if it is an agent consumer.
    pub fn agent_of(consumer: &str) -> Option<&str> {
        consumer.strip_prefix(AGENT_PREFIX)
    }
}

/// `Nats-Msg-Id` of a task: the broker drops a second publish of the same attempt inside the
/// stream's duplicate window, so re-dispatching is safe.
pub fn task_msg_id(job: Uuid, step: &StepId, attempt: u32) -> String {
    format!("task:{job}:{step}:{attempt}")
}

/// `Nats-Msg-Id` of a result: a worker that publishes the same result twice stores it once.
pub fn result_msg_id(job: Uuid, step: &str, attempt: u32) -> String {
    format!("result:{job}:{step}:{attempt}")
}

/// `Nats-Msg-Id` of a step's dead letter (on [`dlq`]). Dead letters on
/// [`DLQ_SUBMISSIONS`] and [`DLQ_RESULTS`] carry none.
pub fn dlq_msg_id(job: Uuid, step: &StepId, attempt: u32) -> String {
    format!("dlq:{job}:{step}:{attempt}")
}

/// Message headers with a meaning in the contract (docs/protocol.md §3). Three are named
/// elsewhere: `Nats-Msg-Id` (the broker's; its values are the `*_msg_id` functions above),
/// `traceparent` (`baton_otel::TRACEPARENT`) and `Baton-Dlq-Truncated` (the original size of
/// a dead letter cut to fit, set by the coordinator).
pub mod header {
    /// [`MSGPACK`] (or `application/x-msgpack`) switches a message to MessagePack; absent,
    /// empty or [`JSON`] means JSON (case and parameters are ignored); anything else is
    /// rejected. See `codec::Encoding::from_content_type`.
    pub const CONTENT_TYPE: &str = "Content-Type";
    pub const MSGPACK: &str = "application/msgpack";
    pub const JSON: &str = "application/json";
    /// Set on every dead letter: why it was dead-lettered (at most 1000 characters).
    pub const DLQ_REASON: &str = "Baton-Dlq-Reason";
    /// Set on dead letters in [`DLQ_SUBMISSIONS`](super::DLQ_SUBMISSIONS) and
    /// [`DLQ_RESULTS`](super::DLQ_RESULTS): the subject the message was first published to.
    pub const DLQ_SUBJECT: &str = "Baton-Dlq-Subject";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_stable() {
        let agent = AgentName::new("sql").unwrap();
        assert_eq!(tasks(&agent), "baton.tasks.sql");
        assert_eq!(results(&agent), "baton.results.sql");
        assert_eq!(dlq(&agent), "baton.dlq.sql");
        assert_eq!(consumer::agent(&agent), "baton-agent-sql");
        assert_eq!(consumer::agent_of("baton-agent-sql"), Some("sql"));
        assert_eq!(consumer::agent_of(consumer::RESULTS), None);
        assert_eq!(agent_of("baton.results.sql"), Some("sql"));
        assert_eq!(agent_of("baton.jobs.submit"), None);
    }
}
