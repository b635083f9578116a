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
/// Request/reply: list open escalations.
/// A job's status, plan, input and decision log, for `baton trace` and `baton replay`.
pub const TRACE: &str = "baton.jobs.trace";
/// Starts a new job that reuses a finished job's outputs up to a step.
pub const RERUN: &str = "baton.jobs.rerun";
/// Progress of every job's agents.
pub const PROGRESS_ALL: &str = "baton.progress.>";
pub const ESCALATIONS_LIST: &str = "baton.escalations.list";
/// Request/reply: one escalation by id.
pub const ESCALATIONS_GET: &str = "baton.escalations.get";
/// Request/reply: resolve an escalation (supply an output, retry, or fail the job).
pub const ESCALATIONS_RESOLVE: &str = "baton.escalations.resolve";

/// Queue group the coordinator replicas share for request/reply subjects, so each request is
/// answered once.
pub const COORDINATOR_QUEUE_GROUP: &str = "baton-coordinator";

/// Wildcard over all task subjects (the `BATON_TASKS` stream's subject).
pub const TASKS_ALL: &str = "baton.tasks.>";
/// Wildcard over all result subjects (the `BATON_RESULTS` stream's subject).
pub const RESULTS_ALL: &str = "baton.results.>";
/// Wildcard over all dead-letter subjects (the `BATON_DLQ` stream's subject).
pub const DLQ_ALL: &str = "baton.dlq.>";
/// Wildcard over all job event subjects.
pub const EVENTS_ALL: &str = "baton.events.>";
/// Wildcard over all jobs' end events (see [`ended`]).
pub const ENDED_ALL: &str = "baton.jobs.ended.>";

/// JetStream advisories for tasks delivered `MaxDeliver` times without an answer (a worker
/// crashed on each delivery): one per agent consumer.
pub const POISON_ADVISORIES: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.BATON_TASKS.*";

/// Tasks for one agent type.
pub fn tasks(agent: &AgentName) -> String {
    format!("baton.tasks.{agent}")
}

/// Results from one agent type.
pub fn results(agent: &AgentName) -> String {
    format!("baton.results.{agent}")
}

/// Dead letters of one agent type.
pub fn dlq(agent: &AgentName) -> String {
    format!("baton.dlq.{agent}")
}

/// Dead letters for submissions on `baton.jobs.enqueue` that could not be accepted. Agent
/// names cannot start with `_`, so this never collides with an agent's dead letters.
pub const DLQ_SUBMISSIONS: &str = "baton.dlq._submissions";
/// Dead letters for result messages that could not be decoded or matched to a job.
pub const DLQ_RESULTS: &str = "baton.dlq._results";

/// Events of one job.
pub fn events(job: Uuid) -> String {
    format!("baton.events.{job}")
}

/// The end of one job: its `job_succeeded` or `job_failed` event, published here as well as
/// on [`events`], for observers that want only job ends.
pub fn ended(job: Uuid) -> String {
    format!("baton.jobs.ended.{job}")
}

/// Progress an agent publishes while it works on one of the job's steps (core NATS).
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
    /// Dead letters: tasks that exhausted their retry policy, kept for inspection.
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

/// `Nats-Msg-Id` of a dead letter.
pub fn dlq_msg_id(job: Uuid, step: &StepId, attempt: u32) -> String {
    format!("dlq:{job}:{step}:{attempt}")
}

/// Message headers with a meaning in the contract.
pub mod header {
    /// `application/msgpack` switches a message to MessagePack; anything else but
    /// `application/json` is rejected.
    pub const CONTENT_TYPE: &str = "Content-Type";
    pub const MSGPACK: &str = "application/msgpack";
    pub const JSON: &str = "application/json";
    /// Set on dead letters: why the task was dead-lettered.
    pub const DLQ_REASON: &str = "Baton-Dlq-Reason";
    /// Set on dead letters: the subject the message was first published to.
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
