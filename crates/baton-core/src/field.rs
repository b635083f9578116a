//! The fields of a job's state, typed. Decisions read and write these; the store turns them
//! into the Redis hash's field names (`keys::field` in the protocol crate spells them, once).

use baton_protocol::keys::field as name;

/// A field of the job hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// The job's status.
    Status,
    /// The plan (normalised JSON).
    Plan,
    /// The plan's revision: 1 when submitted, raised each time the running job's plan grows.
    Revision,
    /// The job input (JSON).
    Input,
    Created,
    Updated,
    /// When the running TTL was last set (unix ms).
    TtlMark,
    /// Steps not yet succeeded.
    Left,
    /// Open escalations.
    Escalated,
    /// The Redis key of the job's idempotency mapping.
    Idempotency,
    /// The submitter's `traceparent`.
    TraceParent,
    /// The job's failure reason.
    Error,
    /// The job's deadline (unix ms).
    Deadline,
    /// Token and cost totals of the job.
    UsageInput,
    UsageOutput,
    UsageCost,
    /// A field of one step.
    Step(StepField, String),
}

/// A field of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StepField {
    Status,
    /// The current attempt (1-based; 0 before the first dispatch).
    Attempt,
    /// Attempts spent before the current retry budget (a human retry raises it).
    Base,
    /// Needs not yet done (succeeded or skipped).
    Waiting,
    /// Needs that were skipped.
    SkippedNeeds,
    /// A planner's sub-plan sinks not yet done.
    SubLeft,
    /// A looping step's iteration.
    Iteration,
    /// A looping step's earlier outputs (JSON list).
    Feedback,
    /// A loop head's `loop` input.
    LoopInput,
    /// The running attempt's deadline, or the retry's due time.
    Due,
    Output,
    /// The last error (JSON).
    Error,
    /// A human's replacement input, kept for the step's later attempts.
    Input,
    /// When the step's first attempt started (unix ms).
    Started,
    /// When the current attempt started (unix ms).
    AttemptStarted,
    UsageInput,
    UsageOutput,
    UsageCost,
    UsageModel,
    /// The reconciler's note on the running attempt.
    Reconcile,
}

impl Field {
    pub fn step(field: StepField, step: &str) -> Self {
        Self::Step(field, step.to_owned())
    }

    /// The field's name in the job hash.
    pub fn name(&self) -> String {
        match self {
            Field::Status => name::STATUS.to_owned(),
            Field::Plan => name::PLAN.to_owned(),
            Field::Revision => name::PLAN_REVISION.to_owned(),
            Field::Input => name::INPUT.to_owned(),
            Field::Created => name::CREATED.to_owned(),
            Field::Updated => name::UPDATED.to_owned(),
            Field::TtlMark => name::TTL_MARK.to_owned(),
            Field::Left => name::LEFT.to_owned(),
            Field::Escalated => name::ESCALATED.to_owned(),
            Field::Idempotency => name::IDEMPOTENCY_KEY.to_owned(),
            Field::TraceParent => name::TRACE_PARENT.to_owned(),
            Field::Error => name::ERROR.to_owned(),
            Field::Deadline => name::DEADLINE.to_owned(),
            Field::UsageInput => name::USAGE_INPUT.to_owned(),
            Field::UsageOutput => name::USAGE_OUTPUT.to_owned(),
            Field::UsageCost => name::USAGE_COST.to_owned(),
            Field::Step(field, step) => {
                let usage = |i: usize| {
                    name::step_usage(step)
                        .into_iter()
                        .nth(i)
                        .unwrap_or_default()
                };
                match field {
                    StepField::Status => name::step_status(step),
                    StepField::Attempt => name::step_attempt(step),
                    StepField::Base => name::step_base(step),
                    StepField::Waiting => name::step_waiting(step),
                    StepField::SkippedNeeds => name::step_skipped_needs(step),
                    StepField::SubLeft => name::step_sub_left(step),
                    StepField::Iteration => name::step_iteration(step),
                    StepField::Feedback => name::step_feedback(step),
                    StepField::LoopInput => name::step_loop_input(step),
                    StepField::Due => name::step_deadline(step),
                    StepField::Output => name::step_output(step),
                    StepField::Error => name::step_error(step),
                    StepField::Input => name::step_input(step),
                    StepField::Started => name::step_started(step),
                    StepField::AttemptStarted => name::attempt_started(step),
                    StepField::UsageInput => usage(0),
                    StepField::UsageOutput => usage(1),
                    StepField::UsageCost => usage(2),
                    StepField::UsageModel => usage(3),
                    StepField::Reconcile => name::step_reconcile(step),
                }
            }
        }
    }
}
