//! The coordinator's Prometheus metrics. Everything about steps and jobs is derived from the
//! events the replica publishes (one call in `Engine::event_at`), so a metric can never
//! disagree with the decision log. Queue depths are read from JetStream when a scrape arrives.
//! Every metric is listed in docs/observability.md.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use baton_metrics::{ByName, TokenLabels, prometheus_client};
use baton_protocol::messages::{AttemptReport, EventKind, FailureClass, ResolveAction, SkipReason};
use baton_protocol::plan::Plan;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

mod queues;
#[cfg(test)]
mod tests;

pub(crate) use queues::Exporter;
use queues::{QueueCollector, Queues};

/// Metric names, in one place (the `_total` suffix of counters and the unit suffix are added
/// by the encoder).
mod name {
    pub(super) const JOBS_CREATED: &str = "baton_jobs_created";
    pub(super) const JOBS_FINISHED: &str = "baton_jobs_finished";
    pub(super) const ATTEMPTS: &str = "baton_step_attempts";
    pub(super) const REDISPATCHES: &str = "baton_step_redispatches";
    pub(super) const OUTCOMES: &str = "baton_step_outcomes";
    pub(super) const TIMEOUTS: &str = "baton_step_timeouts";
    pub(super) const RETRIES: &str = "baton_step_retries";
    pub(super) const DEAD_LETTERS: &str = "baton_step_dead_letters";
    pub(super) const ESCALATIONS: &str = "baton_step_escalations";
    pub(super) const RESOLUTIONS: &str = "baton_escalation_resolutions";
    pub(super) const FENCED: &str = "baton_results_fenced";
    pub(super) const SKIPPED: &str = "baton_steps_skipped";
    pub(super) const CANCELLED: &str = "baton_steps_cancelled";
    pub(super) const EXPANDED: &str = "baton_steps_expanded";
    pub(super) const ITERATIONS: &str = "baton_loop_iterations";
    pub(super) const LATENCY: &str = "baton_step_latency";
    pub(super) const OVERHEAD: &str = "baton_step_overhead";
    pub(super) const TOKENS: &str = "baton_tokens";
    pub(super) const COST: &str = "baton_cost";
    pub(super) const QUEUE_READ_FAILURES: &str = "baton_queue_read_failures";
    pub(super) const TASKS_PENDING: &str = "baton_tasks_pending";
    pub(super) const TASKS_IN_FLIGHT: &str = "baton_tasks_in_flight";
    pub(super) const TASKS_REDELIVERED: &str = "baton_tasks_redelivered";
    pub(super) const COORDINATOR_PENDING: &str = "baton_coordinator_pending";
    pub(super) const COORDINATOR_IN_FLIGHT: &str = "baton_coordinator_in_flight";
    pub(super) const QUEUE_AGE: &str = "baton_queue_info_age_seconds";
    pub(super) const CONFLICTS: &str = "baton_transition_conflicts";
}

/// Label of series whose agent could not be found (the plan was not cached and events are
/// not worth a Redis read).
const UNKNOWN: &str = "unknown";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    agent: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    agent: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    agent: String,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    agent: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    agent: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
}

type SecondsFamily = Family<AgentLabels, Histogram, fn() -> Histogram>;
type UsdCounter = Counter<f64, AtomicU64>;

/// Why a result was fenced, as the `reason` label gives it (the first word of the event's);
/// the last is every other reason.
const FENCE_REASONS: [&str; 4] = ["stale", "ended", "missing", "other"];

fn fence_index(word: &str) -> usize {
    FENCE_REASONS
        .iter()
        .position(|known| *known == word)
        .unwrap_or(FENCE_REASONS.len() - 1)
}

/// The families, from which each agent's series are taken once.
struct Families {
    attempts: Family<AgentLabels, Counter>,
    redispatches: Family<AgentLabels, Counter>,
    outcomes: Family<OutcomeLabels, Counter>,
    timeouts: Family<AgentLabels, Counter>,
    retries: Family<ClassLabels, Counter>,
    dead_letters: Family<AgentLabels, Counter>,
    escalations: Family<AgentLabels, Counter>,
    resolutions: Family<ActionLabels, Counter>,
    fenced: Family<ReasonLabels, Counter>,
    skipped: Family<ReasonLabels, Counter>,
    cancelled: Family<AgentLabels, Counter>,
    expanded: Family<AgentLabels, Counter>,
    iterations: Family<AgentLabels, Counter>,
    latency: SecondsFamily,
    overhead: SecondsFamily,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabels, UsdCounter>,
}

/// One agent type's series, resolved once so an event costs a map read and a few atomics.
struct AgentSeries {
    agent: String,
    attempts: Counter,
    redispatches: Counter,
    /// The `outcome` label `succeeded`.
    succeeded: Counter,
    /// The `outcome` label of each failure class, by [`FailureClass::index`].
    failed: [Counter; FailureClass::ALL.len()],
    timeouts: Counter,
    retries: [Counter; FailureClass::ALL.len()],
    dead_letters: Counter,
    escalations: Counter,
    resolutions: [Counter; ResolveAction::ALL.len()],
    fenced: [Counter; FENCE_REASONS.len()],
    /// By [`SkipReason::index`].
    skipped: [Counter; SkipReason::ALL.len()],
    cancelled: Counter,
    expanded: Counter,
    iterations: Counter,
    latency: Histogram,
    overhead: Histogram,
    models: ByName<Arc<ModelSeries>>,
}

/// Tokens and cost of one (agent, model).
struct ModelSeries {
    input: Counter,
    output: Counter,
    cost: UsdCounter,
}

/// The coordinator's registry and the handles events update.
pub(crate) struct Metrics {
    registry: Registry,
    families: Families,
    agents: ByName<Arc<AgentSeries>>,
    jobs_created: Counter,
    jobs_succeeded: Counter,
    jobs_failed: Counter,
    jobs_cancelled: Counter,
    queue_read_failures: Counter,
    conflicts: Counter,
    queues: Arc<Mutex<Queues>>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let seconds: fn() -> Histogram = baton_metrics::seconds_histogram;
        let families = Families {
            attempts: Family::default(),
            redispatches: Family::default(),
            outcomes: Family::default(),
            timeouts: Family::default(),
            retries: Family::default(),
            dead_letters: Family::default(),
            escalations: Family::default(),
            resolutions: Family::default(),
            fenced: Family::default(),
            skipped: Family::default(),
            cancelled: Family::default(),
            expanded: Family::default(),
            iterations: Family::default(),
            latency: Family::new_with_constructor(seconds),
            overhead: Family::new_with_constructor(seconds),
            tokens: Family::default(),
            cost: Family::default(),
        };
        let jobs_created = Counter::default();
        let jobs_finished = Family::<StatusLabels, Counter>::default();
        let jobs_succeeded = jobs_finished.get_or_create_owned(&StatusLabels {
            status: "succeeded",
        });
        let jobs_failed = jobs_finished.get_or_create_owned(&StatusLabels { status: "failed" });
        let jobs_cancelled = jobs_finished.get_or_create_owned(&StatusLabels {
            status: "cancelled",
        });
        let queue_read_failures = Counter::default();
        let queues = Arc::new(Mutex::new(Queues::default()));

        let mut r = Registry::default();
        let f = &families;
        r.register(name::JOBS_CREATED, "Jobs created", jobs_created.clone());
        r.register(
            name::JOBS_FINISHED,
            "Jobs that ended, by final status",
            jobs_finished,
        );
        r.register(
            name::ATTEMPTS,
            "Attempts whose task was stored in BATON_TASKS, by agent type",
            f.attempts.clone(),
        );
        r.register(
            name::REDISPATCHES,
            "Tasks the reconciler published again (same attempt), by agent type",
            f.redispatches.clone(),
        );
        r.register(
            name::OUTCOMES,
            "Recorded attempt outcomes by agent type: succeeded, or the failure class",
            f.outcomes.clone(),
        );
        r.register(
            name::TIMEOUTS,
            "Attempts that did not answer before their deadline, by agent type",
            f.timeouts.clone(),
        );
        r.register(
            name::RETRIES,
            "Retries scheduled, by agent type and the failure class that caused them",
            f.retries.clone(),
        );
        r.register(
            name::DEAD_LETTERS,
            "Step tasks stored in BATON_DLQ, by agent type",
            f.dead_letters.clone(),
        );
        r.register(
            name::ESCALATIONS,
            "Steps escalated to a human, by agent type",
            f.escalations.clone(),
        );
        r.register(
            name::RESOLUTIONS,
            "Escalations a human resolved, by agent type and action",
            f.resolutions.clone(),
        );
        r.register(
            name::FENCED,
            "Results that did not count (stale attempt, job ended, state missing), by agent type",
            f.fenced.clone(),
        );
        r.register(
            name::SKIPPED,
            "Steps that did not run (a router's untaken branch, a false condition, every need \
             skipped), by agent type",
            f.skipped.clone(),
        );
        r.register(
            name::CANCELLED,
            "Steps a cancel or a job deadline ended before they finished, by agent type",
            f.cancelled.clone(),
        );
        r.register(
            name::EXPANDED,
            "Planner outputs whose sub-plan was accepted and joined the job, by agent type",
            f.expanded.clone(),
        );
        r.register(
            name::ITERATIONS,
            "Loop iterations started again from their back_to (until not met), by the looping step's agent type",
            f.iterations.clone(),
        );
        r.register_with_unit(
            name::LATENCY,
            "From an attempt's dispatch to its outcome being recorded, by agent type",
            Unit::Seconds,
            f.latency.clone(),
        );
        r.register_with_unit(
            name::OVERHEAD,
            "Orchestration overhead of an attempt: its latency minus the time the agent \
             reported working, by agent type",
            Unit::Seconds,
            f.overhead.clone(),
        );
        r.register(
            name::TOKENS,
            "Tokens agents reported, by agent type, model and direction (input or output)",
            f.tokens.clone(),
        );
        r.register_with_unit(
            name::COST,
            "Cost of the reported tokens from the coordinator's price table, by agent type \
             and model",
            Unit::Other("usd".into()),
            f.cost.clone(),
        );
        r.register(
            name::QUEUE_READ_FAILURES,
            "Scrapes that could not read the queue depths from JetStream in time (the last \
             values read were served)",
            queue_read_failures.clone(),
        );
        let conflicts = Counter::default();
        r.register(
            name::CONFLICTS,
            "Decisions taken again because the job's facts changed between read and apply",
            conflicts.clone(),
        );
        r.register_collector(Box::new(QueueCollector(queues.clone())));
        Self {
            registry: r,
            families,
            agents: ByName::default(),
            jobs_created,
            jobs_succeeded,
            jobs_failed,
            jobs_cancelled,
            queue_read_failures,
            conflicts,
            queues,
        }
    }

    /// Counts decisions that were taken again (not derived from events: a conflict changes
    /// nothing a job's events show).
    pub(crate) fn conflicts(&self, n: u32) {
        self.conflicts.inc_by(u64::from(n));
    }

    /// Counts one published event. `plan` (from the replica's cache) names the agent of
    /// events that do not carry it.
    pub(crate) fn observe(&self, kind: &EventKind, plan: Option<&Plan>) {
        let agent_of = |step: &str| {
            plan.and_then(|plan| plan.step(step))
                .map_or(UNKNOWN, |step| step.agent().as_str())
        };
        match kind {
            EventKind::JobCreated { .. } => {
                self.jobs_created.inc();
            }
            EventKind::JobSucceeded { .. } => {
                self.jobs_succeeded.inc();
            }
            EventKind::JobFailed { .. } => {
                self.jobs_failed.inc();
            }
            EventKind::JobCancelled { .. } => {
                self.jobs_cancelled.inc();
            }
            EventKind::StepExpanded { step_id, .. } => {
                // The planner's attempt succeeded; its step succeeds with the sub-plan.
                let series = self.agent(agent_of(step_id));
                series.succeeded.inc();
                series.expanded.inc();
            }
            EventKind::SubPlanSucceeded { .. } => {}
            EventKind::LoopIterated { step_id, .. } => {
                // Its attempt's success is counted by its `step_succeeded`.
                self.agent(agent_of(step_id)).iterations.inc();
            }
            EventKind::StepCancelled { step_id, .. } => {
                self.agent(agent_of(step_id)).cancelled.inc();
            }
            EventKind::StepDispatched { agent, .. } => {
                self.agent(agent).attempts.inc();
            }
            // A rerun's reused output is no attempt either.
            EventKind::StepReused { .. } => {}
            EventKind::StepSkipped {
                step_id, reason, ..
            } => {
                self.agent(agent_of(step_id)).skipped[reason.index()].inc();
            }
            EventKind::StepRedispatched { step_id, .. } => {
                self.agent(agent_of(step_id)).redispatches.inc();
            }
            EventKind::StepSucceeded {
                step_id,
                report,
                human,
                ..
            } => {
                // A human-supplied output is no attempt's outcome
                // (`baton_escalation_resolutions_total{action="output"}` counts it).
                if !*human {
                    let series = self.agent(agent_of(step_id));
                    series.succeeded.inc();
                    series.attempt_report(report, self);
                }
            }
            EventKind::StepFailed {
                step_id,
                error,
                report,
                ..
            } => {
                let series = self.agent(agent_of(step_id));
                series.failed[error.class.index()].inc();
                if error.class == FailureClass::Timeout {
                    series.timeouts.inc();
                }
                series.attempt_report(report, self);
            }
            EventKind::RetryScheduled { step_id, class, .. } => {
                let series = self.agent(agent_of(step_id));
                match class {
                    Some(class) => {
                        series.retries[class.index()].inc();
                    }
                    None => {
                        let labels = ClassLabels {
                            agent: series.agent.clone(),
                            class: UNKNOWN,
                        };
                        self.families.retries.get_or_create(&labels).inc();
                    }
                }
            }
            EventKind::StepDeadLettered { agent, .. } => {
                self.agent(agent).dead_letters.inc();
            }
            EventKind::StepEscalated { step_id, .. } => {
                self.agent(agent_of(step_id)).escalations.inc();
            }
            EventKind::EscalationResolved {
                step_id, action, ..
            } => {
                self.agent(agent_of(step_id)).resolutions[action.index()].inc();
            }
            EventKind::ResultFenced {
                step_id, reason, ..
            } => {
                let word = reason.split_whitespace().next().unwrap_or_default();
                self.agent(agent_of(step_id)).fenced[fence_index(word)].inc();
            }
        }
    }

    /// The series of an agent type, created on its first event.
    fn agent(&self, agent: &str) -> Arc<AgentSeries> {
        self.agents
            .get(agent, || Arc::new(AgentSeries::new(&self.families, agent)))
    }

    /// What `GET /metrics` answers: these series and the queue depths read from `js`.
    pub(crate) fn exporter(self: &Arc<Self>, js: jetstream::Context) -> Exporter {
        Exporter::new(self.clone(), js)
    }
}

impl AgentSeries {
    fn new(families: &Families, agent: &str) -> Self {
        let labels = AgentLabels {
            agent: agent.to_owned(),
        };
        let agent = agent.to_owned();
        let with = |value: &'static str| (agent.clone(), value);
        Self {
            attempts: families.attempts.get_or_create_owned(&labels),
            redispatches: families.redispatches.get_or_create_owned(&labels),
            succeeded: {
                let (agent, outcome) = with("succeeded");
                families
                    .outcomes
                    .get_or_create_owned(&OutcomeLabels { agent, outcome })
            },
            failed: FailureClass::ALL.map(|class| {
                let (agent, outcome) = with(class.as_str());
                families
                    .outcomes
                    .get_or_create_owned(&OutcomeLabels { agent, outcome })
            }),
            timeouts: families.timeouts.get_or_create_owned(&labels),
            retries: FailureClass::ALL.map(|class| {
                let (agent, class) = with(class.as_str());
                families
                    .retries
                    .get_or_create_owned(&ClassLabels { agent, class })
            }),
            dead_letters: families.dead_letters.get_or_create_owned(&labels),
            escalations: families.escalations.get_or_create_owned(&labels),
            resolutions: ResolveAction::ALL.map(|action| {
                let (agent, action) = with(action.as_str());
                families
                    .resolutions
                    .get_or_create_owned(&ActionLabels { agent, action })
            }),
            fenced: FENCE_REASONS.map(|reason| {
                let (agent, reason) = with(reason);
                families
                    .fenced
                    .get_or_create_owned(&ReasonLabels { agent, reason })
            }),
            skipped: SkipReason::ALL.map(|reason| {
                let (agent, reason) = with(reason.as_str());
                families
                    .skipped
                    .get_or_create_owned(&ReasonLabels { agent, reason })
            }),
            cancelled: families.cancelled.get_or_create_owned(&labels),
            expanded: families.expanded.get_or_create_owned(&labels),
            iterations: families.iterations.get_or_create_owned(&labels),
            latency: families.latency.get_or_create_owned(&labels),
            overhead: families.overhead.get_or_create_owned(&labels),
            models: ByName::default(),
            agent,
        }
    }

    /// Latency, overhead, tokens and cost of a recorded attempt.
    fn attempt_report(&self, report: &AttemptReport, metrics: &Metrics) {
        if let Some(latency) = report.latency_ms {
            self.latency.observe(baton_metrics::ms_to_seconds(latency));
            if let Some(duration) = report.duration_ms {
                let overhead = latency.saturating_sub(duration);
                self.overhead
                    .observe(baton_metrics::ms_to_seconds(overhead));
            }
        }
        if let Some(usage) = &report.usage {
            let model = self.model(usage.model.as_deref().unwrap_or(UNKNOWN), metrics);
            model.input.inc_by(usage.input_tokens);
            model.output.inc_by(usage.output_tokens);
            model.cost.inc_by(usage.cost_usd);
        }
    }

    fn model(&self, model: &str, metrics: &Metrics) -> Arc<ModelSeries> {
        let families = &metrics.families;
        self.models.get(model, || {
            let [input, output] =
                baton_metrics::token_counters(&families.tokens, &self.agent, model);
            Arc::new(ModelSeries {
                input,
                output,
                cost: families.cost.get_or_create_owned(&ModelLabels {
                    agent: self.agent.clone(),
                    model: model.to_owned(),
                }),
            })
        })
    }
}
