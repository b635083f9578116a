//! What `decide` returns: a typed decision, data only. The store applies its writes in one
//! fenced script; the coordinator's executor performs the rest (tasks, events, timers, the
//! decision log, metrics, spans, dead letters).

use baton_protocol::keys::TimerMember;
use baton_protocol::messages::{JobStatus, SkipReason, StepStatus};

use crate::field::Field;

/// One decision about one job.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    /// The job's status after the decision.
    pub status: JobStatus,
    /// The writes, and the facts they depend on; `None` when nothing changes.
    pub apply: Option<Apply>,
    /// Attempts this decision starts, whose tasks are to be published.
    pub dispatch: Vec<Start>,
    /// Timers to schedule *before* the writes are applied (a crash in between leaves a timer
    /// that fires and finds nothing due, never a transition without its timer).
    pub timers: Vec<Timer>,
    /// A timer this decision makes moot (the deadline of an attempt whose result counted).
    pub settles: Option<TimerMember>,
    /// An escalation to index before the writes are applied (same reasoning as timers).
    pub escalation: Option<String>,
    /// Set when this decision ends the job.
    pub ends: Option<End>,
    /// For a recorded attempt: when it and its step started.
    pub started: Option<Started>,
    /// Outputs the decision had in hand, by step: a dispatch reads none of them again.
    pub known: Vec<(String, String)>,
    /// The job input, when the decision had it in hand.
    pub input: Option<String>,
    /// Steps this decision skipped (a router's untaken branch, a false condition, every
    /// need skipped), in the order decided.
    pub skipped: Vec<Skip>,
    /// Steps a cancel ended, each with its running attempt (to be told to stop), if any.
    pub cancelled: Vec<(String, Option<u32>)>,
    /// Planners whose sub-plan finished in this decision: they succeeded.
    pub completed: Vec<String>,
    /// Set when the decision turned a successful attempt into a failure (a loop's bound, a
    /// stalled loop, an `until` that cannot be evaluated).
    pub failure: Option<baton_protocol::messages::Failure>,
    /// When a loop iterates: what each step of its body answered in the iteration that ended.
    pub loop_outputs: Vec<(String, String)>,
}

impl Decision {
    /// A decision that changes nothing.
    pub fn nothing(outcome: Outcome, status: JobStatus) -> Self {
        Self {
            outcome,
            status,
            apply: None,
            dispatch: Vec::new(),
            timers: Vec::new(),
            settles: None,
            escalation: None,
            ends: None,
            started: None,
            known: Vec::new(),
            input: None,
            skipped: Vec::new(),
            cancelled: Vec::new(),
            completed: Vec::new(),
            failure: None,
            loop_outputs: Vec::new(),
        }
    }
}

/// What a decision did, or why it did nothing. A new way for a transition to end is a new
/// variant here, which every consumer's `match` must then handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new job was created.
    Created,
    /// The job existed already (same id: an idempotent submit).
    Exists,
    /// The attempt's output was recorded; the step succeeded.
    Succeeded,
    /// The attempt failed; `next_attempt` starts after the backoff.
    Retrying { next_attempt: u32 },
    /// The attempt failed and the policy is exhausted (or the failure is not retryable).
    Escalated,
    /// A retry's backoff ended; its attempt started.
    Dispatched,
    /// A human resolved an escalation.
    Resolved,
    /// The reconciler's note on a running attempt was kept.
    Noted,
    /// No change: the job does not exist.
    Missing,
    /// No change: the job has ended.
    Ended,
    /// No change: the attempt is not the step's current one in the state the cause needs.
    Stale {
        step: Option<StepStatus>,
        attempt: u32,
    },
    /// No change: the timer fired early; it is due at `due` (unix ms).
    Later { due: u64 },
    /// No change: the step a resolution names is not escalated.
    NotEscalated { step: Option<StepStatus> },
    /// The plan grew to `revision`, adding `steps` steps.
    Grown { revision: u32, steps: usize },
    /// The job was cancelled (or its deadline passed).
    Cancelled,
    /// A planner's sub-plan was accepted: the plan grew to `revision` by `steps` steps.
    Expanded { revision: u32, steps: usize },
    /// The looping step's `until` did not hold: its body runs again from `back_to`.
    Iterated { back_to: String, iteration: u32 },
    /// No change: the job's stored plan is at `revision`, not the one decided with. The
    /// caller loads that revision and decides again.
    PlanChanged { revision: u32 },
    /// No change: the job's plan has no such step.
    UnknownStep,
}

impl Outcome {
    /// True when the decision changed the job.
    pub fn changed(&self) -> bool {
        matches!(
            self,
            Outcome::Created
                | Outcome::Succeeded
                | Outcome::Retrying { .. }
                | Outcome::Escalated
                | Outcome::Dispatched
                | Outcome::Resolved
                | Outcome::Noted
                | Outcome::Grown { .. }
                | Outcome::Cancelled
                | Outcome::Expanded { .. }
                | Outcome::Iterated { .. }
        )
    }

    /// Why a result was fenced, as events and metrics say it (`stale succeeded:1`, `ended`,
    /// `missing`); `None` for outcomes that are not a fence.
    pub fn fence_reason(&self, status: JobStatus) -> Option<String> {
        match self {
            Outcome::Missing => Some("missing".to_owned()),
            Outcome::UnknownStep => Some("missing step".to_owned()),
            Outcome::Ended => Some(format!("ended {}", status.as_str())),
            Outcome::Stale { step, attempt } => Some(format!(
                "stale {}:{attempt}",
                step.map_or("", StepStatus::as_str)
            )),
            _ => None,
        }
    }
}

/// How the job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Succeeded,
    Failed { error: String },
    Cancelled { reason: Option<String> },
}

/// Start times of an attempt and of its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub attempt_ms: u64,
    pub step_ms: u64,
}

/// One attempt to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub step: String,
    pub attempt: u32,
    /// Set when the attempt fails before it is published: the step's `when` could not be
    /// evaluated (the executor records the failure, class `invalid_output`).
    pub fail: Option<String>,
}

/// A step that will not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub step: String,
    pub reason: SkipReason,
    /// The router whose route left it out.
    pub router: Option<String>,
}

/// A timer to schedule: the member and when it is due (unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub member: TimerMember,
    pub due: u64,
}

/// The writes of one decision, applied atomically only if the facts it was based on still
/// hold. Counters are the exception that keeps concurrent results of one job from conflicting:
/// a decrement is applied to the value current at apply time, and only whether it reaches
/// zero (which the decision depended on) is checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Apply {
    /// Fields that must hold exactly this value (`None`: absent).
    pub guards: Vec<(Field, Option<String>)>,
    /// Counters to decrement, each by an amount and with whether the decision expects it to
    /// reach zero (or below).
    pub counts: Vec<(Field, u32, bool)>,
    pub set: Vec<(Field, String)>,
    pub delete: Vec<Field>,
    /// Integer fields to add to (usage totals: they commute, so they need no guard).
    pub add: Vec<(Field, i64)>,
    pub expire: Expire,
}

/// What happens to the job's TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expire {
    /// Leave it.
    #[default]
    Keep,
    /// The running TTL, set again.
    Running,
    /// The retention of an ended job.
    Retention,
}

impl Apply {
    pub(crate) fn guard(&mut self, field: Field, value: Option<String>) -> &mut Self {
        self.guards.push((field, value));
        self
    }

    pub(crate) fn set(&mut self, field: Field, value: impl Into<String>) -> &mut Self {
        self.set.push((field, value.into()));
        self
    }
}

/// The outcome's name, as logs and replay mismatches print it: the one place these words are
/// spelled.
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Exists => "exists",
            Outcome::Succeeded => "succeeded",
            Outcome::Retrying { .. } => "retry",
            Outcome::Escalated => "escalated",
            Outcome::Dispatched => "dispatched",
            Outcome::Resolved => "resolved",
            Outcome::Noted => "noted",
            Outcome::Missing => "missing",
            Outcome::Ended => "ended",
            Outcome::Stale { .. } => "stale",
            Outcome::Later { .. } => "later",
            Outcome::NotEscalated { .. } => "not_escalated",
            Outcome::Grown { .. } => "grown",
            Outcome::Cancelled => "cancelled",
            Outcome::Expanded { .. } => "expanded",
            Outcome::Iterated { .. } => "iterated",
            Outcome::PlanChanged { .. } => "plan_changed",
            Outcome::UnknownStep => "unknown_step",
        })
    }
}
