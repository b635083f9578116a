//! The Redis key schema. Every key of one job carries the hash tag `{<job id>}`, so one job's
//! script touches one slot (Redis Cluster ready). The few global keys are indexes that are
//! written *before* the job transition they describe, so a crash leaves an extra entry (which
//! its reader skips), never a missing one.
//!
//! Fields of the job hash (step ids never contain `.`, so step fields cannot collide with job
//! fields):
//!
//! | field | meaning |
//! |---|---|
//! | `status` | job status (`running`, `succeeded`, …) |
//! | `plan`, `input` | the plan (normalised JSON) and the job input |
//! | `pr` | the plan's revision (absent: 1); caches of the plan key on it |
//! | `created`, `updated` | unix milliseconds |
//! | `x` | when the running TTL was last set (unix ms); set again once half of it has run |
//! | `dl` | the job's deadline (unix ms), if it was submitted with `deadline_ms` |
//! | `left` | steps not yet done (succeeded or skipped) |
//! | `escalated` | open escalations |
//! | `idem` | the Redis key of the job's idempotency mapping, if any |
//! | `output`, `error` | the job's output (written by releases before the decision core; now derived from the sinks' outputs when read) or failure reason, once it ends |
//! | `s.<step>` | step status: `waiting`, `running`, `retrying`, `succeeded`, `escalated`, `failed`, `cancelled`, `skipped` |
//! | `a.<step>` | current attempt (1-based; absent or 0 before the first dispatch) |
//! | `b.<step>` | attempts already spent before the current retry budget (raised by a human retry; absent: 0) |
//! | `w.<step>` | needs not yet done, succeeded or skipped (absent: waits for nothing; removed when the step is skipped) |
//! | `k.<step>` | needs that were skipped (absent: 0) |
//! | `n.<step>` | a planner's sub-plan sinks not yet done (succeeded or skipped) |
//! | `it.<step>`, `fb.<step>` | a looping step's iteration (absent: 1) and its earlier outputs (JSON list) |
//! | `l.<step>` | a loop head's `loop` input for its current iteration (`{"iteration","feedback"}`) |
//! | `d.<step>` | due time: attempt deadline while running, retry time while retrying |
//! | `o.<step>` | output (JSON) |
//! | `e.<step>` | last error (JSON `{"message","class","retryable"}`) |
//! | `i.<step>` | input of the current attempt, kept while escalated for inspection and retry |

use uuid::Uuid;

/// The job hash.
pub fn job(job: Uuid) -> String {
    format!("baton:{{{job}}}:job")
}

/// The job's decision log: a string of newline-delimited event JSON, in the job's hash slot,
/// expiring with
/// the job.
pub fn log(job: Uuid) -> String {
    format!("baton:{{{job}}}:log")
}

/// Maps a submitter's idempotency key to its job id.
pub fn idempotency(key: &str) -> String {
    format!("baton:idem:{key}")
}

/// Maps a durable submission that carried no idempotency key to its job id, by the stream
/// sequence and the time the broker stored it (so a recreated stream's sequences never match
/// an old mapping). A separate namespace: no submitter's key can collide with it.
pub fn enqueued(stream_sequence: u64, stored_unix_nanos: i128) -> String {
    format!("baton:enqueued:{stored_unix_nanos}:{stream_sequence}")
}

/// Durable timers: a sorted set of [`TimerMember`]s scored by due time (unix ms).
pub const TIMERS: &str = "baton:timers";

/// Index of escalations, scored by creation time (unix ms). Members are escalation ids.
pub const ESCALATIONS: &str = "baton:escalations";

/// Job hash field names.
pub mod field {
    pub const STATUS: &str = "status";
    pub const PLAN: &str = "plan";
    pub const INPUT: &str = "input";
    pub const CREATED: &str = "created";
    pub const UPDATED: &str = "updated";
    pub const OUTPUT: &str = "output";
    pub const ERROR: &str = "error";
    pub const IDEMPOTENCY_KEY: &str = "idem";
    /// Token and cost totals of the job (input tokens, output tokens, nano-dollars).
    pub const USAGE_INPUT: &str = "ui";
    pub const USAGE_OUTPUT: &str = "uo";
    pub const USAGE_COST: &str = "uc";
    /// Decision-log entries dropped to keep the log within its bound.
    pub const LOG_DROPPED: &str = "ld";
    /// The plan's revision (absent: 1).
    pub const PLAN_REVISION: &str = "pr";
    /// When the running TTL was last set (unix ms).
    pub const TTL_MARK: &str = "x";
    /// The job's deadline (unix ms), when it was submitted with `deadline_ms`.
    pub const DEADLINE: &str = "dl";
    /// Steps not yet succeeded.
    pub const LEFT: &str = "left";
    /// Open escalations.
    pub const ESCALATED: &str = "escalated";
    /// The submitter's W3C `traceparent`, when it sent one: the job's trace id and the
    /// parent of its job span (the coordinator derives every other span id).
    pub const TRACE_PARENT: &str = "tp";

    pub fn step_status(step: &str) -> String {
        format!("s.{step}")
    }
    pub fn step_attempt(step: &str) -> String {
        format!("a.{step}")
    }
    /// Attempts spent before the current retry budget (absent: 0).
    pub fn step_base(step: &str) -> String {
        format!("b.{step}")
    }
    /// Needs not yet done, succeeded or skipped (absent: the step waits for nothing).
    pub fn step_waiting(step: &str) -> String {
        format!("w.{step}")
    }
    /// Needs that were skipped (absent: 0).
    pub fn step_skipped_needs(step: &str) -> String {
        format!("k.{step}")
    }
    /// A planner's sub-plan sinks not yet done.
    pub fn step_sub_left(step: &str) -> String {
        format!("n.{step}")
    }
    /// A looping step's current iteration (absent: 1).
    pub fn step_iteration(step: &str) -> String {
        format!("it.{step}")
    }
    /// A looping step's outputs of the iterations before (a JSON list).
    pub fn step_feedback(step: &str) -> String {
        format!("fb.{step}")
    }
    /// What a loop's head gets as `loop` in its input: `{"iteration", "feedback"}`.
    pub fn step_loop_input(step: &str) -> String {
        format!("l.{step}")
    }
    pub fn step_output(step: &str) -> String {
        format!("o.{step}")
    }
    pub fn step_error(step: &str) -> String {
        format!("e.{step}")
    }
    pub fn step_input(step: &str) -> String {
        format!("i.{step}")
    }
    /// Deadline of the running attempt (unix ms).
    pub fn step_deadline(step: &str) -> String {
        format!("d.{step}")
    }
    /// When the step's first attempt started (unix ms).
    pub fn step_started(step: &str) -> String {
        format!("t.{step}")
    }
    /// When the step's current attempt started (unix ms).
    pub fn attempt_started(step: &str) -> String {
        format!("ta.{step}")
    }
    /// Token and cost totals of the step's attempts, and the last model reported.
    pub fn step_usage(step: &str) -> [String; 4] {
        [
            format!("ui.{step}"),
            format!("uo.{step}"),
            format!("uc.{step}"),
            format!("um.{step}"),
        ]
    }
    /// The reconciler's note on the running attempt: where its task sits in the broker.
    pub fn step_reconcile(step: &str) -> String {
        format!("q.{step}")
    }
}

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// The attempt's deadline: if it is still running, it failed with a timeout.
    Timeout,
    /// The end of a retry backoff: dispatch the next attempt.
    Retry,
    /// The job's deadline (`deadline_ms` at submit): cancel it, ending it `failed`. Its
    /// member has an empty step and attempt 0.
    Deadline,
}

/// One timer: (job, step, attempt, kind). Members are unique per attempt, so two replicas
/// never fight over one entry, and firing is fenced by the attempt inside the job's script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerMember {
    pub job: Uuid,
    pub step: String,
    pub attempt: u32,
    pub kind: TimerKind,
}

impl TimerMember {
    pub fn encode(&self) -> String {
        let kind = match self.kind {
            TimerKind::Timeout => 't',
            TimerKind::Retry => 'r',
            TimerKind::Deadline => 'd',
        };
        format!("{}|{}|{}|{}", self.job, self.step, self.attempt, kind)
    }

    pub fn decode(raw: &str) -> Option<Self> {
        let mut parts = raw.split('|');
        let job = Uuid::parse_str(parts.next()?).ok()?;
        let step = parts.next()?.to_owned();
        let attempt = parts.next()?.parse().ok()?;
        let kind = match parts.next()? {
            "t" => TimerKind::Timeout,
            "r" => TimerKind::Retry,
            "d" => TimerKind::Deadline,
            _ => return None,
        };
        parts.next().is_none().then_some(Self {
            job,
            step,
            attempt,
            kind,
        })
    }
}

/// Escalation ids are `<job id>.<step id>`: readable, and they locate the record inside the
/// job's own hash without another index.
pub fn escalation_id(job: Uuid, step: &str) -> String {
    format!("{job}.{step}")
}

/// Splits an escalation id into its job and step.
pub fn parse_escalation_id(id: &str) -> Option<(Uuid, &str)> {
    let (job, step) = id.split_once('.')?;
    Some((Uuid::parse_str(job).ok()?, step))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_keys_share_one_hash_tag() {
        let id = Uuid::now_v7();
        assert_eq!(job(id), format!("baton:{{{id}}}:job"));
    }

    #[test]
    fn timer_members_round_trip() {
        let member = TimerMember {
            job: Uuid::now_v7(),
            step: "s1".into(),
            attempt: 3,
            kind: TimerKind::Retry,
        };
        assert_eq!(TimerMember::decode(&member.encode()), Some(member));
        assert_eq!(TimerMember::decode("x|y"), None);
    }

    #[test]
    fn escalation_ids_round_trip() {
        let id = Uuid::now_v7();
        assert_eq!(
            parse_escalation_id(&escalation_id(id, "a-b")),
            Some((id, "a-b"))
        );
        assert_eq!(parse_escalation_id("nope"), None);
    }
}
