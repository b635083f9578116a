//! The view model of a job's trace: its attempts on one time axis (start, duration,
//! outcome, tokens, cost), the time its steps waited for a human, and its decisions in
//! words. [`Trace::from_reply`] computes it from a `baton.jobs.trace` reply; `baton trace`
//! renders it as text, JSON (this model, serialised) and an HTML waterfall.

use std::collections::BTreeMap;

use baton_protocol::messages::{
    AttemptReport, Event, EventKind, FailureClass, JobStatus, ResolveAction, StepStatus,
    TraceReply, UsageTotals,
};
use serde::Serialize;
use uuid::Uuid;

use crate::describe::describe;

/// A job's trace: its attempts on one time axis, and its decisions.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub job_id: Uuid,
    pub plan: Option<String>,
    pub status: JobStatus,
    /// Unix ms of the job's creation: offsets count from here.
    pub started_ms: u64,
    /// Until the job ended, or until its last event while it runs.
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageTotals>,
    /// Steps in the order they started; those that never did, last (by id).
    pub steps: Vec<StepTrace>,
    /// Time steps spent escalated, waiting for a human.
    pub escalations: Vec<EscalationTrace>,
    pub decisions: Vec<Decision>,
    /// Oldest decisions the log no longer keeps.
    pub dropped: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepTrace {
    pub id: String,
    pub agent: String,
    pub status: StepStatus,
    pub attempts: Vec<AttemptTrace>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageTotals>,
    /// The output was reused from another job (`baton rerun`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<Uuid>,
    /// Why the step did not run, when it was skipped (`route by triage`, `condition`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptTrace {
    pub attempt: u32,
    /// Offset of the dispatch from the job's start.
    pub start_ms: u64,
    /// Until the outcome was recorded; `None` while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub outcome: AttemptOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the agent itself worked (the worker's figure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageTotals>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// How an attempt ended: `failed` is an agent's error, the others a failure class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Running,
    Succeeded,
    Failed,
    Timeout,
    Invalid,
    Poison,
    InvalidOutput,
    LoopLimit,
    LoopStalled,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::Invalid => "invalid",
            AttemptOutcome::Poison => "poison",
            AttemptOutcome::InvalidOutput => "invalid_output",
            AttemptOutcome::LoopLimit => "loop_limit",
            AttemptOutcome::LoopStalled => "loop_stalled",
        }
    }

    fn failed(class: FailureClass) -> Self {
        match class {
            FailureClass::Error => AttemptOutcome::Failed,
            FailureClass::Timeout => AttemptOutcome::Timeout,
            FailureClass::Invalid => AttemptOutcome::Invalid,
            FailureClass::Poison => AttemptOutcome::Poison,
            FailureClass::InvalidOutput => AttemptOutcome::InvalidOutput,
            FailureClass::LoopLimit => AttemptOutcome::LoopLimit,
            FailureClass::LoopStalled => AttemptOutcome::LoopStalled,
        }
    }
}

impl std::fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EscalationTrace {
    pub step: String,
    pub start_ms: u64,
    /// Until a human resolved it; `None` while it waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// How a human resolved it, once resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<ResolveAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// One entry of the decision log, in words ([`describe`]) and as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub offset_ms: u64,
    pub text: String,
    pub event: Event,
}

impl Trace {
    /// Computes the trace from a `baton.jobs.trace` reply. Events are put in decision order
    /// first (the log of parallel steps may interleave).
    pub fn from_reply(reply: TraceReply) -> Self {
        let mut events = reply.decisions;
        baton_protocol::messages::sort_decisions(&mut events);
        let created_ms = reply.job.created_ms;
        let started_ms = events
            .first()
            .map_or(created_ms, |e| e.ts_ms.min(created_ms));
        let ended = events.iter().rev().find_map(|e| match e.kind {
            EventKind::JobSucceeded { .. }
            | EventKind::JobFailed { .. }
            | EventKind::JobCancelled { .. } => Some(e.ts_ms),
            _ => None,
        });
        let last = events.last().map_or(started_ms, |e| e.ts_ms);
        let mut builder = Builder {
            started_ms,
            steps: reply
                .job
                .steps
                .iter()
                .map(|(id, view)| {
                    let step = StepTrace {
                        id: id.clone(),
                        agent: view.agent.clone(),
                        status: view.status,
                        attempts: Vec::new(),
                        usage: view.usage.clone(),
                        reused_from: None,
                        skipped: None,
                    };
                    (id.clone(), step)
                })
                .collect(),
            escalations: Vec::new(),
        };
        for event in &events {
            builder.apply(event);
        }
        let decisions = events
            .into_iter()
            .map(|event| Decision {
                offset_ms: builder.offset(event.ts_ms),
                text: describe(&event.kind),
                event,
            })
            .collect();
        let mut steps: Vec<StepTrace> = builder.steps.into_values().collect();
        steps.sort_by_key(|s| {
            (
                s.attempts.first().map_or(u64::MAX, |a| a.start_ms),
                s.id.clone(),
            )
        });
        Trace {
            job_id: reply.job.job_id,
            plan: reply.job.plan,
            status: reply.job.status,
            started_ms,
            duration_ms: ended.unwrap_or(last).saturating_sub(started_ms),
            usage: reply.job.usage,
            steps,
            escalations: builder.escalations,
            decisions,
            dropped: reply.dropped,
        }
    }

    /// Attempts of all steps.
    pub fn attempt_count(&self) -> usize {
        self.steps.iter().map(|s| s.attempts.len()).sum()
    }

    /// Where a span from `start_ms` lasting `duration_ms` ends, as offsets: one still open
    /// (an attempt running, a step waiting for a human) lasts until the trace's end.
    pub fn end_ms(&self, start_ms: u64, duration_ms: Option<u64>) -> u64 {
        start_ms + duration_ms.unwrap_or(self.duration_ms.saturating_sub(start_ms))
    }
}

/// The steps and escalations as the events in decision order build them.
struct Builder {
    started_ms: u64,
    steps: BTreeMap<String, StepTrace>,
    escalations: Vec<EscalationTrace>,
}

impl Builder {
    fn offset(&self, ts_ms: u64) -> u64 {
        ts_ms.saturating_sub(self.started_ms)
    }

    fn apply(&mut self, event: &Event) {
        let at = self.offset(event.ts_ms);
        match &event.kind {
            EventKind::StepEscalated { step_id, .. } => self.escalations.push(EscalationTrace {
                step: step_id.clone(),
                start_ms: at,
                duration_ms: None,
                action: None,
                by: None,
            }),
            EventKind::EscalationResolved {
                step_id,
                action,
                by,
                ..
            } => {
                if let Some(wait) = self
                    .escalations
                    .iter_mut()
                    .rev()
                    .find(|w| &w.step == step_id && w.action.is_none())
                {
                    wait.duration_ms = Some(at.saturating_sub(wait.start_ms));
                    wait.action = Some(*action);
                    wait.by = by.clone();
                }
            }
            EventKind::StepDispatched {
                step_id, attempt, ..
            } => {
                // A re-dispatch of the same attempt is not another attempt.
                if let Some(step) = self.steps.get_mut(step_id)
                    && !step.attempts.iter().any(|a| a.attempt == *attempt)
                {
                    step.attempts.push(AttemptTrace {
                        attempt: *attempt,
                        start_ms: at,
                        duration_ms: None,
                        outcome: AttemptOutcome::Running,
                        error: None,
                        agent_ms: None,
                        usage: None,
                        worker: None,
                    });
                }
            }
            EventKind::StepSucceeded {
                step_id,
                attempt,
                report,
                ..
            } => self.record(
                step_id,
                *attempt,
                at,
                report,
                AttemptOutcome::Succeeded,
                None,
            ),
            EventKind::StepFailed {
                step_id,
                attempt,
                report,
                error,
            } => self.record(
                step_id,
                *attempt,
                at,
                report,
                AttemptOutcome::failed(error.class),
                Some(error.message.clone()),
            ),
            EventKind::StepReused {
                step_id,
                source_job,
            } => {
                if let Some(step) = self.steps.get_mut(step_id) {
                    step.reused_from = Some(*source_job);
                }
            }
            EventKind::StepExpanded {
                step_id, attempt, ..
            } => self.record(
                step_id,
                *attempt,
                at,
                &AttemptReport::default(),
                AttemptOutcome::Succeeded,
                None,
            ),
            EventKind::StepSkipped {
                step_id,
                reason,
                router,
            } => {
                if let Some(step) = self.steps.get_mut(step_id) {
                    step.skipped = Some(match router {
                        Some(router) => format!("{} by {router}", reason.as_str()),
                        None => reason.as_str().to_owned(),
                    });
                }
            }
            _ => {}
        }
    }

    /// An attempt's outcome, recorded `at` (an offset); only a running attempt has one.
    fn record(
        &mut self,
        step: &str,
        attempt: u32,
        at: u64,
        report: &AttemptReport,
        outcome: AttemptOutcome,
        error: Option<String>,
    ) {
        let Some(trace) = self.steps.get_mut(step) else {
            return;
        };
        if outcome != AttemptOutcome::Succeeded
            && !trace.attempts.iter().any(|a| a.attempt == attempt)
        {
            // Failed before it was published (its condition could not be evaluated, its
            // task could not be built): no dispatch opened it.
            trace.attempts.push(AttemptTrace {
                attempt,
                start_ms: at,
                duration_ms: None,
                outcome: AttemptOutcome::Running,
                error: None,
                agent_ms: None,
                usage: None,
                worker: None,
            });
        }
        let Some(run) = trace
            .attempts
            .iter_mut()
            .find(|a| a.attempt == attempt && a.outcome == AttemptOutcome::Running)
        else {
            return;
        };
        // The attempt started when its transition ran, a moment before its dispatch event
        // (published once the broker stored the task).
        if let Some(latency) = report.latency_ms {
            run.start_ms = run.start_ms.min(at.saturating_sub(latency));
        }
        run.duration_ms = Some(at.saturating_sub(run.start_ms));
        run.agent_ms = report.duration_ms;
        run.usage = report.usage.clone();
        run.worker = report.worker.clone();
        run.outcome = outcome;
        run.error = error;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use baton_protocol::messages::{Failure, StatusReply, StepView};
    use serde_json::{Value, json};

    use super::*;

    const CREATED: u64 = 1_000_000;

    fn event(at: u64, kind: EventKind) -> Event {
        Event {
            job_id: Uuid::nil(),
            ts_ms: CREATED + at,
            kind,
        }
    }

    fn dispatched(at: u64, step: &str, attempt: u32) -> Event {
        event(
            at,
            EventKind::StepDispatched {
                step_id: step.into(),
                agent: "sim".into(),
                attempt,
                input_bytes: None,
                input_sha256: None,
            },
        )
    }

    fn report(latency_ms: u64) -> AttemptReport {
        AttemptReport {
            latency_ms: Some(latency_ms),
            duration_ms: Some(latency_ms / 2),
            usage: None,
            worker: Some("w1".into()),
        }
    }

    fn succeeded(at: u64, step: &str, attempt: u32, latency_ms: u64) -> Event {
        event(
            at,
            EventKind::StepSucceeded {
                step_id: step.into(),
                attempt,
                human: false,
                report: report(latency_ms),
            },
        )
    }

    fn failed(at: u64, step: &str, attempt: u32, class: FailureClass) -> Event {
        event(
            at,
            EventKind::StepFailed {
                step_id: step.into(),
                attempt,
                error: Failure {
                    message: "boom".into(),
                    class,
                    retryable: true,
                },
                report: report(10),
            },
        )
    }

    fn reply(steps: &[(&str, StepStatus)], status: JobStatus, decisions: Vec<Event>) -> TraceReply {
        let steps: BTreeMap<String, StepView> = steps
            .iter()
            .map(|(id, status)| {
                let view = StepView {
                    status: *status,
                    attempts: 0,
                    agent: "sim".into(),
                    output: None,
                    error: None,
                    usage: None,
                };
                ((*id).to_owned(), view)
            })
            .collect();
        TraceReply {
            job: StatusReply {
                job_id: Uuid::nil(),
                status,
                plan: Some("p".into()),
                steps,
                output: None,
                error: None,
                usage: None,
                created_ms: CREATED,
                updated_ms: CREATED,
            },
            plan: Value::Null,
            input: Value::Null,
            decisions,
            dropped: 0,
        }
    }

    #[test]
    fn attempts_get_their_outcomes_and_times_and_steps_their_start_order() {
        // Out of order, as the log of parallel steps can be; `c` never started.
        let decisions = vec![
            succeeded(60, "a", 2, 10),
            event(
                0,
                EventKind::JobCreated {
                    plan: None,
                    steps: 3,
                },
            ),
            dispatched(5, "b", 1),
            dispatched(1, "a", 1),
            failed(20, "a", 1, FailureClass::Timeout),
            dispatched(50, "a", 2),
            // A re-dispatch of attempt 2 and a late duplicate outcome change nothing.
            dispatched(55, "a", 2),
            failed(70, "a", 1, FailureClass::Error),
        ];
        let trace = Trace::from_reply(reply(
            &[
                ("c", StepStatus::Waiting),
                ("b", StepStatus::Running),
                ("a", StepStatus::Succeeded),
            ],
            JobStatus::Running,
            decisions,
        ));
        assert_eq!(trace.started_ms, CREATED);
        // Running: until the last event.
        assert_eq!(trace.duration_ms, 70);
        let ids: Vec<&str> = trace.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let a = &trace.steps[0];
        let outcomes: Vec<_> = a.attempts.iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            [AttemptOutcome::Timeout, AttemptOutcome::Succeeded]
        );
        assert_eq!(a.attempts[0].error.as_deref(), Some("boom"));
        // Attempt 1's outcome at +20 with 10 ms latency: it started at +1 (dispatch) anyway;
        // attempt 2's at +60 with 10 ms latency: from +50.
        assert_eq!(
            (a.attempts[0].start_ms, a.attempts[0].duration_ms),
            (1, Some(19))
        );
        assert_eq!(
            (a.attempts[1].start_ms, a.attempts[1].duration_ms),
            (50, Some(10))
        );
        assert_eq!(a.attempts[1].agent_ms, Some(5));
        assert_eq!(a.attempts[1].worker.as_deref(), Some("w1"));
        let b = &trace.steps[1].attempts[0];
        assert_eq!(b.outcome, AttemptOutcome::Running);
        // Still running: it lasts until the trace's end.
        assert_eq!(trace.end_ms(b.start_ms, b.duration_ms), 70);
        assert!(trace.steps[2].attempts.is_empty());
        assert_eq!(trace.attempt_count(), 3);
        // Decisions in order, with offsets and sentences.
        assert_eq!(trace.decisions.len(), 8);
        assert_eq!(trace.decisions[0].text, "job created: 3 steps");
        assert_eq!(trace.decisions[1].offset_ms, 1);
        assert_eq!(trace.decisions[1].text, "a: dispatched attempt 1 to sim");
    }

    #[test]
    fn an_escalation_waits_until_a_human_resolves_it_and_the_job_ends() {
        let decisions = vec![
            event(
                0,
                EventKind::JobCreated {
                    plan: None,
                    steps: 1,
                },
            ),
            dispatched(2, "a", 1),
            failed(12, "a", 1, FailureClass::Poison),
            event(
                12,
                EventKind::StepEscalated {
                    step_id: "a".into(),
                    attempt: 1,
                    escalation_id: "x.a".into(),
                },
            ),
            event(
                500,
                EventKind::EscalationResolved {
                    step_id: "a".into(),
                    escalation_id: "x.a".into(),
                    action: ResolveAction::Output,
                    by: Some("ops".into()),
                    input: None,
                    reason: None,
                },
            ),
            event(
                500,
                EventKind::StepSucceeded {
                    step_id: "a".into(),
                    attempt: 1,
                    human: true,
                    report: AttemptReport::default(),
                },
            ),
            event(501, EventKind::JobSucceeded { usage: None }),
            // Something after the end does not stretch the job.
            event(
                900,
                EventKind::StepReused {
                    step_id: "a".into(),
                    source_job: Uuid::max(),
                },
            ),
        ];
        let trace = Trace::from_reply(reply(
            &[("a", StepStatus::Succeeded)],
            JobStatus::Succeeded,
            decisions,
        ));
        assert_eq!(trace.duration_ms, 501);
        let wait = &trace.escalations[0];
        assert_eq!((wait.start_ms, wait.duration_ms), (12, Some(488)));
        assert_eq!(wait.action, Some(ResolveAction::Output));
        assert_eq!(wait.by.as_deref(), Some("ops"));
        let a = &trace.steps[0];
        assert_eq!(a.attempts.len(), 1);
        assert_eq!(a.attempts[0].outcome, AttemptOutcome::Poison);
        assert_eq!(a.reused_from, Some(Uuid::max()));
    }

    #[test]
    fn a_log_that_dropped_its_start_counts_from_the_creation() {
        let decisions = vec![dispatched(40, "a", 3)];
        let mut reply = reply(&[("a", StepStatus::Running)], JobStatus::Running, decisions);
        reply.dropped = 7;
        let trace = Trace::from_reply(reply);
        assert_eq!(trace.started_ms, CREATED);
        assert_eq!(trace.steps[0].attempts[0].start_ms, 40);
        assert_eq!(trace.dropped, 7);
    }

    /// `baton trace --json` prints this model: its wire names are the CLI's output format.
    #[test]
    fn the_json_spells_statuses_outcomes_and_actions_as_the_wire_does() {
        let decisions = vec![
            dispatched(1, "a", 1),
            failed(5, "a", 1, FailureClass::Error),
            event(
                6,
                EventKind::StepEscalated {
                    step_id: "a".into(),
                    attempt: 1,
                    escalation_id: "x.a".into(),
                },
            ),
            event(
                9,
                EventKind::EscalationResolved {
                    step_id: "a".into(),
                    escalation_id: "x.a".into(),
                    action: ResolveAction::Fail,
                    by: None,
                    input: None,
                    reason: None,
                },
            ),
        ];
        let trace = Trace::from_reply(reply(
            &[("a", StepStatus::Failed)],
            JobStatus::Failed,
            decisions,
        ));
        let json = serde_json::to_value(&trace).expect("encodes");
        assert_eq!(json["status"], "failed");
        assert_eq!(json["steps"][0]["status"], "failed");
        assert_eq!(json["steps"][0]["attempts"][0]["outcome"], "failed");
        assert_eq!(json["escalations"][0]["action"], "fail");
        assert_eq!(json["escalations"][0].get("by"), None);
        assert_eq!(json["decisions"][0]["event"]["type"], "step_dispatched");
        assert_eq!(json["plan"], json!("p"));
    }
}
