//! The message on every subject of the public contract v1 (see `docs/protocol.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// Body of `baton.jobs.submit` and `baton.jobs.enqueue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The plan: a JSON object, or a string holding JSON or YAML.
    pub plan: Value,
    /// The job input; `null` when missing.
    #[serde(default)]
    pub input: Value,
    /// A repeated submit with the same key returns the existing job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The job must end within this many milliseconds of its acceptance; when they pass, it
    /// is cancelled and ends `failed` with `deadline_exceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

/// Body of `baton.jobs.cancel`: the job (exactly one of `job_id` and `idempotency_key`),
/// and why.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who cancelled it, for the decision log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Reply to a cancel: the job's status after it (`cancelled`). A job that had already ended
/// is answered with its status and the error `already_ended`; nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    pub job_id: Uuid,
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Published (core NATS) on `baton.cancel.<agent>` for each attempt a cancel stops: the
/// worker running it drops the agent's future and acknowledges the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelNotice {
    pub job_id: Uuid,
    pub step_id: String,
    pub attempt: u32,
}

/// Successful reply to a submit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitReply {
    pub job_id: Uuid,
    /// True when the idempotency key matched an existing job.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub existing: bool,
}

/// Error reply on any request subject: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable snake_case code, e.g. `plan_cycle`, `invalid_request`, `not_found`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl ErrorReply {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// A reply that is either the expected body or an [`ErrorReply`]; what clients decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply<T> {
    Err(ErrorReply),
    Ok(T),
}

impl<T> Reply<T> {
    pub fn into_result(self) -> Result<T, ErrorBody> {
        match self {
            Reply::Ok(value) => Ok(value),
            Reply::Err(reply) => Err(reply.error),
        }
    }
}

/// Body of `baton.jobs.status`: exactly one of the two fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Escalated,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Escalated => "escalated",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "pending" => JobStatus::Pending,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "escalated" => JobStatus::Escalated,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Some needs have not succeeded yet.
    Waiting,
    /// An attempt is dispatched and has not answered.
    Running,
    /// An attempt failed; the next one starts when the backoff ends.
    Retrying,
    Succeeded,
    /// The retry policy is exhausted; a human decides.
    Escalated,
    Failed,
    Cancelled,
    /// The step will not run: a router did not take its branch, its `when` was false, or
    /// every one of its needs was skipped. It counts as done for its dependents.
    Skipped,
    /// A planner whose sub-plan runs: it succeeds with the sub-plan's output.
    Expanded,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Waiting => "waiting",
            StepStatus::Running => "running",
            StepStatus::Retrying => "retrying",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Escalated => "escalated",
            StepStatus::Failed => "failed",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Skipped => "skipped",
            StepStatus::Expanded => "expanded",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "waiting" => StepStatus::Waiting,
            "running" => StepStatus::Running,
            "retrying" => StepStatus::Retrying,
            "succeeded" => StepStatus::Succeeded,
            "escalated" => StepStatus::Escalated,
            "failed" => StepStatus::Failed,
            "cancelled" => StepStatus::Cancelled,
            "skipped" => StepStatus::Skipped,
            "expanded" => StepStatus::Expanded,
            _ => return None,
        })
    }
}

/// Reply to `baton.jobs.status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    pub job_id: Uuid,
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    pub steps: BTreeMap<String, StepView>,
    /// The output of the sink step, or a map of sink id to output when there are several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tokens and cost of all steps, once any attempt reported usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageTotals>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    pub status: StepStatus,
    pub attempts: u32,
    pub agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// Tokens and cost of all the step's attempts, once one reported usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageTotals>,
}

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The agent reported an error.
    Error,
    /// The attempt did not answer before its deadline.
    Timeout,
    /// The agent's answer broke the contract (e.g. both or neither of output and error).
    Invalid,
    /// The task was delivered the consumer's `MaxDeliver` times and never answered: a worker
    /// crashed on it every time. Not retried: it escalates at once.
    Poison,
    /// The output broke the step's control flow: a router's `route` names no branch, or a
    /// condition cannot be evaluated on the recorded outputs.
    InvalidOutput,
    /// A loop ran `max_iterations` times and its `until` still did not hold (the looping
    /// step escalates; the message names the loop).
    LoopLimit,
    /// A loop's head answered as in the previous iteration: the loop makes no progress (the
    /// head escalates; the message names the loop).
    LoopStalled,
}

impl FailureClass {
    /// Every class, in declaration order: `ALL[c.index()] == c`.
    pub const ALL: [FailureClass; 7] = [
        FailureClass::Error,
        FailureClass::Timeout,
        FailureClass::Invalid,
        FailureClass::Poison,
        FailureClass::InvalidOutput,
        FailureClass::LoopLimit,
        FailureClass::LoopStalled,
    ];

    /// The wire name (as serialized, and as the metrics' `class` label gives it).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Error => "error",
            FailureClass::Timeout => "timeout",
            FailureClass::Invalid => "invalid",
            FailureClass::Poison => "poison",
            FailureClass::InvalidOutput => "invalid_output",
            FailureClass::LoopLimit => "loop_limit",
            FailureClass::LoopStalled => "loop_stalled",
        }
    }

    /// The position in [`FailureClass::ALL`], for arrays indexed by class.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for FailureClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed attempt, as recorded and reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub message: String,
    pub class: FailureClass,
    /// False when the agent said retrying cannot help: the step escalates at once.
    pub retryable: bool,
}

/// The body of a step's dead letter on `baton.dlq.<agent>` (docs/protocol.md §10): the last
/// task of a step that escalated. Fields in the order they are serialized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub agent: String,
    /// The last attempt.
    pub attempt: u32,
    /// Its failure, if one was recorded.
    pub error: Option<Failure>,
    /// The escalation to resolve.
    pub escalation_id: String,
    /// The input of that attempt (`{"input", "needs"}`, as its task had it).
    pub input: Value,
    pub job_id: Uuid,
    /// The plan's name.
    pub plan: Option<String>,
    pub step_id: String,
}

/// Why a step's task was dead-lettered: the `Baton-Dlq-Reason` header of its dead letter and
/// the `reason` of its `step_dead_lettered` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadLetterReason {
    /// Every attempt the retry policy allows failed.
    #[serde(rename = "retry policy exhausted")]
    RetryPolicyExhausted,
    /// The agent said another attempt cannot help (or the task was poison).
    #[serde(rename = "non-retryable error")]
    NonRetryable,
}

impl DeadLetterReason {
    /// The reason of a step that escalated after `failure`.
    pub fn of(failure: Option<&Failure>) -> Self {
        match failure {
            Some(failure) if !failure.retryable => DeadLetterReason::NonRetryable,
            _ => DeadLetterReason::RetryPolicyExhausted,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::RetryPolicyExhausted => "retry policy exhausted",
            DeadLetterReason::NonRetryable => "non-retryable error",
        }
    }
}

/// A message on `baton.tasks.<agent>`. `I` is the input's representation: the coordinator
/// writes pre-encoded JSON, workers read a `serde_json::Value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task<I = Value> {
    pub job_id: Uuid,
    pub step_id: String,
    /// 1-based attempt number; the result must echo it (it is the fencing token).
    pub attempt: u32,
    pub agent: String,
    pub input: I,
    /// Unix milliseconds after which the coordinator counts this attempt as timed out;
    /// the worker SDK stops working on it then.
    pub deadline_ms: u64,
}

/// A message on `baton.results.<agent>`: exactly one of `output` and `error`. `"output":
/// null` is an output (null); a missing `output` is not. Unknown fields are ignored, so
/// workers can be upgraded before coordinators. `O` is the output's representation: workers
/// write a `serde_json::Value`, the coordinator reads JSON as it came (`Box<RawValue>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "O: Serialize", deserialize = "O: Deserialize<'de>"))]
pub struct TaskResult<O = Value> {
    pub job_id: Uuid,
    pub step_id: String,
    pub attempt: u32,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<O>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<AgentError>,
    /// Free-form identity of the worker that produced this result (for diagnostics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// How long the agent worked on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Tokens the agent spent on this attempt, as it reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Token usage an agent reports for one attempt (the OpenTelemetry GenAI conventions'
/// `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` and `gen_ai.request.model`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
}

/// Tokens and cost, as totals of a step (all its attempts) or a job (all its steps).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Cost in US dollars from the coordinator's price table; exact to the nano-dollar.
    pub cost_usd: f64,
    /// The model of the last attempt that reported one (steps only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// An agent's error in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentError {
    pub message: String,
    /// Whether another attempt may succeed; `false` escalates immediately.
    #[serde(default = "default_true")]
    pub retryable: bool,
}

fn default_true() -> bool {
    true
}

/// Deserializes a field that is present (even as `null`) into `Some`; with
/// `#[serde(default)]` a missing field stays `None`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// The part of a JetStream max-deliveries advisory Baton reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxDeliveriesAdvisory {
    pub stream: String,
    pub consumer: String,
    pub stream_seq: u64,
    pub deliveries: u64,
}

/// Body of `baton.jobs.trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    pub job_id: Uuid,
}

/// Reply to `baton.jobs.trace`: everything needed to explain a job, and to replay it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceReply {
    /// The job's status, as `baton.jobs.status` gives it.
    pub job: StatusReply,
    /// The plan as submitted (JSON).
    pub plan: Value,
    /// The job input.
    pub input: Value,
    /// The decision log, oldest first: the job's events as they were published.
    pub decisions: Vec<Event>,
    /// Entries no longer kept (the log keeps the newest `max_log_bytes`).
    #[serde(default)]
    pub dropped: u64,
}

/// Body of `baton.jobs.rerun`: starts a new job with the same plan and input. Steps that are
/// neither `from` nor downstream of it keep the outputs they recorded in the original job
/// (each must have succeeded there); `from` and everything downstream of it run live.
/// Replied to with a [`SubmitReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerunRequest {
    pub job_id: Uuid,
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A message on `baton.progress.<job_id>`: something an agent reported while it worked
/// (partial output, LLM tokens, a percentage). Core NATS: not stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub job_id: Uuid,
    pub step_id: String,
    pub attempt: u32,
    /// 1, 2, … within the attempt, so a reader can spot a gap.
    pub seq: u64,
    pub ts_ms: u64,
    pub data: Value,
}

/// One event on `baton.events.<job_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub job_id: Uuid,
    pub ts_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// The key [`sort_decisions`] orders by: time, then cause and effect.
    pub fn order_key(&self) -> (u64, u8) {
        (self.ts_ms, self.causal_rank())
    }

    /// Where an event goes among events of the same millisecond, following cause and effect:
    /// a job's creation and reuse, then dispatches, then outcomes, then what outcomes decide
    /// (retries, dead letters, escalations), then humans, then the job's end.
    pub fn causal_rank(&self) -> u8 {
        match self.kind {
            EventKind::JobCreated { .. } => 0,
            EventKind::StepReused { .. } => 1,
            EventKind::StepDispatched { .. } | EventKind::StepRedispatched { .. } => 2,
            EventKind::StepSucceeded { human: false, .. }
            | EventKind::StepFailed { .. }
            | EventKind::ResultFenced { .. } => 3,
            EventKind::RetryScheduled { .. }
            | EventKind::StepDeadLettered { .. }
            | EventKind::StepEscalated { .. }
            | EventKind::StepSkipped { .. }
            | EventKind::StepCancelled { .. }
            | EventKind::StepExpanded { .. }
            | EventKind::SubPlanSucceeded { .. }
            | EventKind::LoopIterated { .. } => 4,
            EventKind::EscalationResolved { .. } => 5,
            EventKind::StepSucceeded { human: true, .. } => 6,
            EventKind::JobSucceeded { .. }
            | EventKind::JobFailed { .. }
            | EventKind::JobCancelled { .. } => 9,
        }
    }
}

/// Puts a decision log in time order: by timestamp, events of one millisecond by
/// [`Event::causal_rank`], then in log order. Entries appended by different coordinator
/// replicas (or by tasks of one replica) may be out of order in the log itself.
pub fn sort_decisions(events: &mut [Event]) {
    events.sort_by_key(Event::order_key);
}

/// What happened. The events of a job are also its decision log (`baton.jobs.trace`):
/// what the orchestrator decided, and from what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    JobCreated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan: Option<String>,
        steps: usize,
    },
    StepDispatched {
        step_id: String,
        agent: String,
        attempt: u32,
        /// Size of the attempt's input (JSON bytes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input_bytes: Option<u64>,
        /// SHA-256 of the attempt's input JSON, hex.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input_sha256: Option<String>,
    },
    StepSucceeded {
        step_id: String,
        attempt: u32,
        /// The output was supplied by a human resolving an escalation, not by an agent.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        human: bool,
        #[serde(flatten)]
        report: AttemptReport,
    },
    StepFailed {
        step_id: String,
        attempt: u32,
        error: Failure,
        #[serde(flatten)]
        report: AttemptReport,
    },
    RetryScheduled {
        step_id: String,
        /// The next attempt.
        attempt: u32,
        delay_ms: u64,
        /// How the previous attempt failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class: Option<FailureClass>,
    },
    StepEscalated {
        step_id: String,
        attempt: u32,
        escalation_id: String,
    },
    /// A rerun took the step's output from `source_job` instead of running it.
    StepReused { step_id: String, source_job: Uuid },
    /// A planner's output held an accepted sub-plan (`output.plan`), now part of the job as
    /// `<step_id>/<sub id>` steps.
    StepExpanded {
        step_id: String,
        attempt: u32,
        /// Steps the sub-plan added.
        steps: usize,
        /// The planner's output, as recorded.
        output: Value,
    },
    /// A planner's sub-plan finished: the planner succeeded with its output.
    SubPlanSucceeded { step_id: String },
    /// The looping step `step_id` succeeded and its `until` did not hold: the loop's body
    /// runs again from `back_to`, as `iteration` (2 for the first repeat).
    LoopIterated {
        step_id: String,
        /// The looping step's attempt that succeeded.
        attempt: u32,
        back_to: String,
        iteration: u32,
        /// What each step of the loop's body answered in the iteration that ended.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        outputs: BTreeMap<String, Value>,
    },
    /// A cancel (or the job's deadline) ended the step before it finished; `attempt` is the
    /// running attempt told to stop on `baton.cancel.<agent>`.
    StepCancelled {
        step_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
    },
    /// The step will not run (its status is `skipped`); `router` names the router whose
    /// route left it out.
    StepSkipped {
        step_id: String,
        reason: SkipReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        router: Option<String>,
    },
    /// The step's last task went to `baton.dlq.<agent>`.
    StepDeadLettered {
        step_id: String,
        attempt: u32,
        agent: String,
        reason: String,
    },
    EscalationResolved {
        step_id: String,
        escalation_id: String,
        action: ResolveAction,
        /// Who resolved it, as the request said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// The input a `retry` replaced the step's with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    ResultFenced {
        step_id: String,
        attempt: u32,
        reason: String,
    },
    /// The reconciler published an attempt's task again: it was not in the broker, or it
    /// left the broker without a result (e.g. acknowledged by a worker that had lost it).
    StepRedispatched {
        step_id: String,
        attempt: u32,
        reason: String,
    },
    JobSucceeded {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<UsageTotals>,
    },
    JobFailed {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<UsageTotals>,
    },
    /// The job was cancelled (`baton.jobs.cancel`).
    JobCancelled {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<UsageTotals>,
    },
}

/// Why a step was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// It is only in branches its router did not take.
    Route,
    /// Its `when` condition was false.
    Condition,
    /// Every one of its needs was skipped.
    Needs,
}

impl SkipReason {
    /// Every reason, in declaration order: `ALL[r.index()] == r`.
    pub const ALL: [SkipReason; 3] = [SkipReason::Route, SkipReason::Condition, SkipReason::Needs];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Route => "route",
            SkipReason::Condition => "condition",
            SkipReason::Needs => "needs",
        }
    }

    /// The position in [`SkipReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What the coordinator knew about an attempt when it recorded its outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptReport {
    /// From the attempt's dispatch to its outcome being recorded, as the coordinator saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// How long the agent worked, as the worker reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Tokens and cost of this attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageTotals>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// Body of `baton.escalations.list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListEscalationsRequest {
    /// Most escalations to return (oldest first); default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListEscalationsReply {
    pub escalations: Vec<EscalationView>,
}

/// Body of `baton.escalations.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetEscalationRequest {
    pub id: String,
}

/// An open escalation: a step whose retry policy is exhausted, waiting for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscalationView {
    pub id: String,
    pub job_id: Uuid,
    pub step_id: String,
    pub agent: String,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// The input of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    pub job_status: JobStatus,
}

/// How a human resolves an escalation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveAction {
    /// Use the supplied output as the step's output and continue the job.
    Output,
    /// Run the step again (with a fresh retry budget), optionally with a new input.
    Retry,
    /// Fail the job.
    Fail,
}

impl ResolveAction {
    /// Every action, in declaration order: `ALL[a.index()] == a`.
    pub const ALL: [ResolveAction; 3] = [
        ResolveAction::Output,
        ResolveAction::Retry,
        ResolveAction::Fail,
    ];

    /// The wire name (as serialized, and as the metrics' `action` label gives it).
    pub fn as_str(self) -> &'static str {
        match self {
            ResolveAction::Output => "output",
            ResolveAction::Retry => "retry",
            ResolveAction::Fail => "fail",
        }
    }

    /// The position in [`ResolveAction::ALL`], for arrays indexed by action.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Body of `baton.escalations.resolve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveEscalationRequest {
    pub id: String,
    pub action: ResolveAction,
    /// Required with `output` (may be `null`).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<Value>,
    /// Optional with `retry`: replaces the step's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Optional note, e.g. why the job was failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who resolves it (a name or an e-mail address); kept in the job's decision log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolveEscalationReply {
    pub job_id: Uuid,
    pub step_id: String,
    pub action: ResolveAction,
    pub job_status: JobStatus,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_and_indexes_agree_with_serde() {
        for (i, class) in FailureClass::ALL.into_iter().enumerate() {
            assert_eq!(class.index(), i);
            assert_eq!(serde_json::to_value(class).unwrap(), json!(class.as_str()));
        }
        for (i, action) in ResolveAction::ALL.into_iter().enumerate() {
            assert_eq!(action.index(), i);
            assert_eq!(
                serde_json::to_value(action).unwrap(),
                json!(action.as_str())
            );
        }
    }

    #[test]
    fn a_dead_letter_serializes_as_documented() {
        let letter = DeadLetter {
            agent: "sim".into(),
            attempt: 2,
            error: Some(Failure {
                message: "boom".into(),
                class: FailureClass::Error,
                retryable: true,
            }),
            escalation_id: "j.fetch".into(),
            input: json!({"input": {}, "needs": {}}),
            job_id: Uuid::nil(),
            plan: Some("flaky".into()),
            step_id: "fetch".into(),
        };
        assert_eq!(
            serde_json::to_string(&letter).unwrap(),
            r#"{"agent":"sim","attempt":2,"error":{"message":"boom","class":"error","retryable":true},"escalation_id":"j.fetch","input":{"input":{},"needs":{}},"job_id":"00000000-0000-0000-0000-000000000000","plan":"flaky","step_id":"fetch"}"#
        );
        let reason = DeadLetterReason::of(letter.error.as_ref());
        assert_eq!(reason, DeadLetterReason::RetryPolicyExhausted);
        assert_eq!(
            serde_json::to_value(reason).unwrap(),
            json!(reason.as_str())
        );
        let fatal = Failure {
            retryable: false,
            ..letter.error.clone().unwrap()
        };
        assert_eq!(
            DeadLetterReason::of(Some(&fatal)).as_str(),
            "non-retryable error"
        );
    }

    #[test]
    fn wire_format_is_stable() {
        let job_id = Uuid::nil();
        let event = Event {
            job_id,
            ts_ms: 5,
            kind: EventKind::StepDispatched {
                step_id: "a".into(),
                agent: "sim".into(),
                attempt: 1,
                input_bytes: None,
                input_sha256: None,
            },
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"job_id": job_id, "ts_ms": 5, "type": "step_dispatched", "step_id": "a", "agent": "sim", "attempt": 1})
        );
        let reply = ErrorReply::new("plan_cycle", "plan has a cycle: a -> a");
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"error":{"code":"plan_cycle","message":"plan has a cycle: a -> a"}}"#
        );
        assert_eq!(
            serde_json::to_string(&SubmitReply {
                job_id,
                existing: false
            })
            .unwrap(),
            format!(r#"{{"job_id":"{job_id}"}}"#)
        );
    }

    #[test]
    fn replies_decode_as_ok_or_error() {
        let ok: Reply<SubmitReply> =
            serde_json::from_value(json!({"job_id": Uuid::nil()})).unwrap();
        assert!(ok.into_result().is_ok());
        let err: Reply<SubmitReply> =
            serde_json::from_value(json!({"error": {"code": "x", "message": "y"}})).unwrap();
        assert_eq!(err.into_result().unwrap_err().code, "x");
    }

    #[test]
    fn results_default_retryable_keep_null_outputs_and_ignore_unknown_fields() {
        let r: TaskResult = serde_json::from_value(json!({
            "job_id": Uuid::nil(), "step_id": "a", "attempt": 1, "error": {"message": "boom"}
        }))
        .unwrap();
        assert!(r.error.unwrap().retryable);
        assert_eq!(r.output, None);
        let r: TaskResult = serde_json::from_value(json!({
            "job_id": Uuid::nil(), "step_id": "a", "attempt": 1, "output": null, "lease": 7
        }))
        .unwrap();
        assert_eq!(r.output, Some(Value::Null));
        let bad =
            serde_json::from_value::<TaskResult>(json!({"job_id": Uuid::nil(), "attempt": 1}));
        assert!(bad.is_err());
    }
}
