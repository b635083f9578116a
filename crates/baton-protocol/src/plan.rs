//! Plans: the DAG of steps a job runs, how each step's input is built, and the validation
//! that happens before anything is published (cycles named, dangling needs, duplicate ids,
//! bad agent names, limits).
//!
//! A plan is deserialized into [`PlanSpec`] (the wire form, unknown keys rejected so that a
//! typo such as `need:` is an error instead of a silently ignored key) and then checked into a
//! [`Plan`], which also holds the derived graph: dependents, roots and sinks. Later step kinds
//! (router, bounded loop, planner, map) will be new optional keys on [`StepSpec`] and new
//! variants of [`StepKind`]; the graph code only sees ids and edges.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::limits::Limits;
use crate::name::{AgentName, StepId};

mod flow;

pub use flow::{Condition, DEFAULT_BRANCH, Routes};

/// Default number of attempts per step (the first run plus two retries).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default delay before the first retry.
pub const DEFAULT_INITIAL_BACKOFF_MS: u64 = 200;
/// Default ceiling of the exponential backoff.
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 10_000;
/// Default share of each delay that is randomised (0.2: the delay lands in [0.8·d, d]).
pub const DEFAULT_JITTER: f64 = 0.2;
/// Default time an attempt may take before it counts as failed.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// A plan as written by its author (JSON or YAML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    /// Human name of the plan, shown in status and events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The steps; order does not matter, `needs` defines the graph.
    pub steps: Vec<StepSpec>,
}

/// One step as written by the plan's author.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique id within the plan, `^[A-Za-z0-9_-]{1,64}$`.
    pub id: String,
    /// Agent type that runs the step, `^[a-z0-9][a-z0-9_-]{0,63}$`.
    pub agent: String,
    /// Steps whose outputs this step needs; it starts when all of them have succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Explicit input mapping (see [`InputTemplate`]); without it the step receives
    /// `{"input": <job input>, "needs": {"<dep>": <output>, …}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Retry policy; missing keys take the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// How long one attempt may take, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// A JSON Schema the step's output must satisfy; an output that does not is a failed
    /// attempt of class `invalid` (retried like any failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Makes the step a router: its output's `"route"` (a branch name or a list of them)
    /// picks the branches to run; each branch lists dependents of this step. Dependents in
    /// no taken branch end `skipped`; `_default` is taken when the route names no branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<BTreeMap<String, Vec<String>>>,
    /// A CEL condition over `input` and `needs`, evaluated when the step's needs are done;
    /// false ends the step `skipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Makes the step a planner: its output's `"plan"` is a sub-plan, validated like a
    /// submitted plan and run inside the job as `<id>/<sub id>`; the step succeeds with the
    /// sub-plan's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expand: Option<ExpandSpec>,
    /// Makes the step close a bounded loop: while `until` is false after it succeeds, every
    /// step from `back_to` to it runs again, at most `max_iterations` times in all.
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_: Option<LoopSpec>,
}

/// A bounded loop, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopSpec {
    /// The step each new iteration starts from: this step itself, or one it depends on.
    pub back_to: String,
    /// CEL over `output` (this step's), `input` and `needs`: true leaves the loop.
    pub until: String,
    /// Iterations in all, the first included (required).
    pub max_iterations: u32,
}

/// Most iterations a loop may ask for.
pub const MAX_LOOP_ITERATIONS: u32 = 100;

/// A checked loop: its head, its condition, its bound, and its body (every step on a path
/// from `back_to` to the looping step, both included, in plan order).
#[derive(Debug, Clone, PartialEq)]
pub struct Loop {
    pub back_to: StepId,
    pub until: Condition,
    pub max_iterations: u32,
    pub body: Vec<StepId>,
}

/// What a planner's sub-plans may hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpandSpec {
    /// The only agent types the sub-plan may use.
    pub allowed_agents: Vec<String>,
    /// Most steps the sub-plan may have (default 50; at most the plan limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
}

/// Default bound on a sub-plan's steps.
pub const DEFAULT_EXPAND_MAX_STEPS: usize = 50;

/// A planner's checked bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expand {
    pub allowed_agents: std::collections::BTreeSet<AgentName>,
    pub max_steps: usize,
}

/// Exponential backoff with jitter between attempts of one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (1 = never retry).
    pub max_attempts: u32,
    /// Delay before the first retry; each later retry doubles it.
    pub initial_backoff_ms: u64,
    /// Ceiling of the delay.
    pub max_backoff_ms: u64,
    /// Share of each delay that is randomised, 0.0–1.0: the delay lands in
    /// `[(1 - jitter)·d, d]`, so replicas retrying together spread out but never wait longer
    /// than the policy says.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff_ms: DEFAULT_INITIAL_BACKOFF_MS,
            max_backoff_ms: DEFAULT_MAX_BACKOFF_MS,
            jitter: DEFAULT_JITTER,
        }
    }
}

impl RetryPolicy {
    /// The delay before the attempt that follows failed attempt `failed_attempt` (1-based).
    /// `unit` is a uniform random number in [0, 1); passing it in keeps this pure and testable.
    pub fn delay_ms(&self, failed_attempt: u32, unit: f64) -> u64 {
        let exponent = failed_attempt.saturating_sub(1).min(63);
        let base = self
            .initial_backoff_ms
            .saturating_mul(1u64.checked_shl(exponent).unwrap_or(u64::MAX))
            .min(self.max_backoff_ms);
        let jitter = self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0);
        // Truncation is intended: delays are whole milliseconds.
        (base as f64 * (1.0 - jitter)) as u64
    }
}

/// What kind of work a step does. Only agent steps exist in v1; routers, loops, planners and
/// maps will be further variants built from new optional keys of [`StepSpec`].
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// Publish a task to the agent type and record its result.
    Agent(AgentName),
}

/// A validated step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: StepId,
    pub kind: StepKind,
    pub needs: Vec<StepId>,
    pub input: Option<InputTemplate>,
    pub retry: RetryPolicy,
    pub timeout_ms: u64,
    pub output_schema: Option<OutputSchema>,
    /// Set for a router.
    pub routes: Option<Routes>,
    pub when: Option<Condition>,
    /// Set for a planner.
    pub expand: Option<Expand>,
    /// Set for the step that closes a loop.
    pub loop_: Option<Loop>,
}

/// A compiled output schema (compiled once, when the plan is validated).
#[derive(Clone)]
pub struct OutputSchema {
    schema: Value,
    validator: std::sync::Arc<jsonschema::Validator>,
}

impl OutputSchema {
    fn new(schema: Value) -> Result<Self, String> {
        let validator = jsonschema::validator_for(&schema).map_err(|error| error.to_string())?;
        Ok(Self {
            schema,
            validator: std::sync::Arc::new(validator),
        })
    }

    /// Checks an output; the error names the first violation and where it is.
    pub fn check(&self, output: &Value) -> Result<(), String> {
        match self.validator.iter_errors(output).next() {
            None => Ok(()),
            Some(error) => {
                let at = error.instance_path().to_string();
                let at = if at.is_empty() {
                    "the output".to_owned()
                } else {
                    format!("output{at}")
                };
                Err(format!(
                    "{at} does not match the step's output_schema: {error}"
                ))
            }
        }
    }
}

impl std::fmt::Debug for OutputSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OutputSchema").field(&self.schema).finish()
    }
}

impl PartialEq for OutputSchema {
    fn eq(&self, other: &Self) -> bool {
        self.schema == other.schema
    }
}

impl Step {
    /// The agent type that runs this step.
    pub fn agent(&self) -> &AgentName {
        match &self.kind {
            StepKind::Agent(agent) => agent,
        }
    }
}

/// A validated plan and its graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    spec: PlanSpec,
    steps: Vec<Step>,
    index: HashMap<StepId, usize>,
    dependents: Vec<Vec<usize>>,
    /// 1 when submitted; each [`Plan::grow`] adds one.
    revision: u32,
}

/// Why a plan was rejected. Each variant maps to a stable `code` in error replies.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("plan is not valid JSON or YAML: {0}")]
    Syntax(String),
    #[error("plan has no steps")]
    Empty,
    #[error("plan has {count} steps; the limit is {limit}")]
    TooManySteps { count: usize, limit: usize },
    #[error("{0}")]
    InvalidName(#[from] crate::name::Error),
    #[error("step id {0:?} is used by more than one step")]
    DuplicateStep(String),
    #[error("step {step:?} needs {need:?}, which is not a step of this plan")]
    UnknownNeed { step: String, need: String },
    #[error("step {step:?} lists {need:?} in needs more than once")]
    RepeatedNeed { step: String, need: String },
    #[error("step {step:?} has {count} needs; the limit is {limit}")]
    TooManyNeeds {
        step: String,
        count: usize,
        limit: usize,
    },
    #[error("{count} steps need step {step:?}; the fan-out limit is {limit}")]
    TooManyDependents {
        step: String,
        count: usize,
        limit: usize,
    },
    #[error("plan has a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("step {step:?}: {message}")]
    InvalidPolicy { step: String, message: String },
    #[error("step {step:?}: input mapping {message}")]
    InvalidInput { step: String, message: String },
    #[error("step {step:?}: output_schema is not a valid JSON Schema: {message}")]
    InvalidSchema { step: String, message: String },
    #[error("step {step:?}: {message}")]
    InvalidRoutes { step: String, message: String },
    #[error("step {step:?}: when is not a valid condition: {message}")]
    InvalidCondition { step: String, message: String },
    #[error("step {step:?}: expand {message}")]
    InvalidExpand { step: String, message: String },
    #[error("step {step:?}: loop {message}")]
    InvalidLoop { step: String, message: String },
    #[error(
        "sub-plan step {step:?} uses agent {agent:?}, which is not in allowed_agents ({allowed})"
    )]
    AgentNotAllowed {
        step: String,
        agent: String,
        allowed: String,
    },
}

impl Error {
    /// The stable snake_case code of this error, used in error replies.
    pub fn code(&self) -> crate::ErrorCode {
        use crate::ErrorCode;
        match self {
            Error::Syntax(_) => ErrorCode::InvalidPlanSyntax,
            Error::Empty => ErrorCode::EmptyPlan,
            Error::TooManySteps { .. } => ErrorCode::PlanTooLarge,
            Error::InvalidName(_) => ErrorCode::InvalidName,
            Error::DuplicateStep(_) => ErrorCode::DuplicateStep,
            Error::UnknownNeed { .. } => ErrorCode::UnknownNeed,
            Error::RepeatedNeed { .. } => ErrorCode::RepeatedNeed,
            Error::TooManyNeeds { .. } => ErrorCode::TooManyNeeds,
            Error::TooManyDependents { .. } => ErrorCode::FanOutTooWide,
            Error::Cycle(_) => ErrorCode::PlanCycle,
            Error::InvalidPolicy { .. } => ErrorCode::InvalidPolicy,
            Error::InvalidInput { .. } => ErrorCode::InvalidInputMapping,
            Error::InvalidSchema { .. } => ErrorCode::InvalidOutputSchema,
            Error::InvalidRoutes { .. }
            | Error::InvalidCondition { .. }
            | Error::InvalidExpand { .. }
            | Error::InvalidLoop { .. }
            | Error::AgentNotAllowed { .. } => ErrorCode::InvalidPlan,
        }
    }
}

impl Plan {
    /// Parses a plan from JSON or YAML text (YAML is a superset of JSON) and validates it.
    pub fn from_text(text: &str, limits: &Limits) -> Result<Self, Error> {
        let spec: PlanSpec =
            serde_yaml_ng::from_str(text).map_err(|error| Error::Syntax(error.to_string()))?;
        Self::new(spec, limits)
    }

    /// Reads a plan back from its stored form, the JSON of [`Plan::spec`], and validates it
    /// again. This must be JSON, not [`Plan::from_text`]: YAML forbids characters that JSON
    /// strings may hold (DEL, C1 controls, U+FFFE), so an accepted plan with one of them in
    /// a name, template or schema could not be read back, and its job would be stuck.
    pub fn from_stored(json: &str, limits: &Limits) -> Result<Self, Error> {
        let spec: PlanSpec =
            serde_json::from_str(json).map_err(|error| Error::Syntax(error.to_string()))?;
        Self::build(spec, limits, Origin::Stored)
    }

    /// Validates a plan given as a JSON value. A JSON string is read as JSON or YAML text.
    pub fn from_value(value: Value, limits: &Limits) -> Result<Self, Error> {
        match value {
            Value::String(text) => Self::from_text(&text, limits),
            other => {
                let spec: PlanSpec = serde_json::from_value(other)
                    .map_err(|error| Error::Syntax(error.to_string()))?;
                Self::new(spec, limits)
            }
        }
    }

    /// Validates a plan spec and derives its graph.
    pub fn new(spec: PlanSpec, limits: &Limits) -> Result<Self, Error> {
        Self::build(spec, limits, Origin::Submitted)
    }

    fn build(spec: PlanSpec, limits: &Limits, origin: Origin) -> Result<Self, Error> {
        if spec.steps.is_empty() {
            return Err(Error::Empty);
        }
        if spec.steps.len() > limits.max_steps {
            return Err(Error::TooManySteps {
                count: spec.steps.len(),
                limit: limits.max_steps,
            });
        }
        let mut index = HashMap::with_capacity(spec.steps.len());
        for (i, step) in spec.steps.iter().enumerate() {
            let id = match origin {
                Origin::Submitted => StepId::new(&step.id)?,
                Origin::Stored => StepId::stored(&step.id)?,
            };
            if index.insert(id, i).is_some() {
                return Err(Error::DuplicateStep(step.id.clone()));
            }
        }
        let mut steps = Vec::with_capacity(spec.steps.len());
        let mut dependents = vec![Vec::new(); spec.steps.len()];
        for (i, raw) in spec.steps.iter().enumerate() {
            let step = check_step(raw, &index, limits, origin)?;
            for need in &step.needs {
                dependents[index[need]].push(i);
            }
            steps.push(step);
        }
        for (i, deps) in dependents.iter().enumerate() {
            if deps.len() > limits.max_dependents {
                return Err(Error::TooManyDependents {
                    step: spec.steps[i].id.clone(),
                    count: deps.len(),
                    limit: limits.max_dependents,
                });
            }
        }
        for (i, raw) in spec.steps.iter().enumerate() {
            let Some(branches) = &raw.routes else {
                continue;
            };
            let needs_router = |id: &str| {
                let (known, &at) = index.get_key_value(id)?;
                dependents[i].contains(&at).then(|| known.clone())
            };
            let routes =
                Routes::new(branches, needs_router).map_err(|message| Error::InvalidRoutes {
                    step: raw.id.clone(),
                    message,
                })?;
            steps[i].routes = Some(routes);
        }
        let mut plan = Self {
            spec,
            steps,
            index,
            dependents,
            revision: 1,
        };
        if let Some(cycle) = plan.find_cycle() {
            return Err(Error::Cycle(cycle));
        }
        plan.check_loops(limits)?;
        Ok(plan)
    }

    /// This plan with more steps, at the next revision: what a running job's plan becomes
    /// when it grows (a planner's sub-plan, a loop's next iteration). The new steps may need
    /// any step, old or new; the old steps stay as they are, in the same order, so every
    /// decision taken on this revision still holds on the next. Validated like a submitted
    /// plan under `limits` (ids, needs, fan-out, cycles, size).
    pub fn grow(&self, steps: Vec<StepSpec>, limits: &Limits) -> Result<Self, Error> {
        if steps.is_empty() {
            return Err(Error::Empty);
        }
        let mut spec = self.spec.clone();
        spec.steps.extend(steps);
        let mut grown = Self::build(spec, limits, Origin::Stored)?;
        grown.revision = self.revision + 1;
        Ok(grown)
    }

    /// The plan grown by planner `planner`'s sub-plan `sub` (its output's `"plan"`): the
    /// sub-plan is validated as if submitted, with the planner as a virtual root its roots
    /// need (so their inputs and conditions can name it), then checked against the
    /// planner's `expand` bounds (size, `allowed_agents`, no planner inside: nesting is one
    /// level) and added as `<planner>/<sub id>` steps; its roots need the planner.
    pub fn expand(&self, planner: &str, sub: &Value, limits: &Limits) -> Result<Self, Error> {
        let Some(step) = self.step(planner) else {
            return Err(Error::UnknownNeed {
                step: planner.to_owned(),
                need: planner.to_owned(),
            });
        };
        let Some(bounds) = &step.expand else {
            return Err(Error::InvalidExpand {
                step: planner.to_owned(),
                message: "is not set: the step is no planner".to_owned(),
            });
        };
        let mut spec: PlanSpec = match sub {
            Value::String(text) => serde_yaml_ng::from_str(text),
            other => serde_yaml_ng::from_str(&other.to_string()),
        }
        .map_err(|error| Error::Syntax(error.to_string()))?;
        if spec.steps.len() > bounds.max_steps {
            return Err(Error::TooManySteps {
                count: spec.steps.len(),
                limit: bounds.max_steps,
            });
        }
        let local = step.id.local().to_owned();
        let allowed = || {
            bounds
                .allowed_agents
                .iter()
                .map(AgentName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        for raw in &spec.steps {
            if !bounds
                .allowed_agents
                .iter()
                .any(|agent| agent.as_str() == raw.agent)
            {
                return Err(Error::AgentNotAllowed {
                    step: raw.id.clone(),
                    agent: raw.agent.clone(),
                    allowed: allowed(),
                });
            }
            if raw.expand.is_some() {
                return Err(Error::InvalidExpand {
                    step: raw.id.clone(),
                    message: "is not allowed in a sub-plan (planners nest one level)".to_owned(),
                });
            }
            if raw.id == local {
                return Err(Error::DuplicateStep(raw.id.clone()));
            }
        }
        // Validated as submitted, the planner standing in as a root.
        let mut check = spec.clone();
        for raw in &mut check.steps {
            if raw.needs.is_empty() {
                raw.needs.push(local.clone());
            }
        }
        check.steps.push(StepSpec {
            id: local.clone(),
            agent: step.agent().to_string(),
            needs: Vec::new(),
            input: None,
            retry: None,
            timeout_ms: None,
            output_schema: None,
            routes: None,
            when: None,
            expand: None,
            loop_: None,
        });
        Self::build(check, limits, Origin::Submitted)?;
        let prefix = |id: &str| format!("{planner}/{id}");
        for raw in &mut spec.steps {
            raw.needs = if raw.needs.is_empty() {
                vec![planner.to_owned()]
            } else {
                raw.needs.iter().map(|need| prefix(need)).collect()
            };
            if let Some(routes) = &mut raw.routes {
                for targets in routes.values_mut() {
                    for target in targets.iter_mut() {
                        *target = prefix(target);
                    }
                }
            }
            raw.id = prefix(&raw.id);
        }
        let mut limits = *limits;
        limits.max_steps = limits.max_steps.max(self.steps.len() + spec.steps.len());
        self.grow(spec.steps, &limits)
    }

    /// Checks each `loop` and derives its body.
    fn check_loops(&mut self, _limits: &Limits) -> Result<(), Error> {
        let mut loops = Vec::new();
        for (i, raw) in self.spec.steps.iter().enumerate() {
            let Some(spec) = &raw.loop_ else {
                continue;
            };
            let invalid = |message: String| Error::InvalidLoop {
                step: raw.id.clone(),
                message,
            };
            if spec.max_iterations == 0 || spec.max_iterations > MAX_LOOP_ITERATIONS {
                return Err(invalid(format!(
                    "max_iterations must be between 1 and {MAX_LOOP_ITERATIONS}, got {}",
                    spec.max_iterations
                )));
            }
            let id = self.steps[i].id.as_str();
            let Some(head) = self.step(&spec.back_to) else {
                return Err(invalid(format!(
                    "back_to {:?} is not a step of this plan",
                    spec.back_to
                )));
            };
            let head = head.id.clone();
            let from_head = self.downstream(head.as_str());
            if !from_head.contains(id) {
                return Err(invalid(format!(
                    "back_to {:?} must be this step or one it depends on",
                    spec.back_to
                )));
            }
            // On a path from the head to this step: downstream of the head, upstream of it.
            let body: Vec<StepId> = self
                .steps
                .iter()
                .filter(|s| {
                    from_head.contains(s.id.as_str()) && self.downstream(s.id.as_str()).contains(id)
                })
                .map(|s| s.id.clone())
                .collect();
            for member in &body {
                let step = &self.steps[self.index[member]];
                if member.as_str() == id {
                    continue;
                }
                if step.routes.is_some()
                    || step.expand.is_some()
                    || self.spec.steps[self.index[member]].loop_.is_some()
                {
                    return Err(invalid(format!(
                        "body step {member:?} may not be a router, a planner or another loop"
                    )));
                }
                if let Some(outside) = self
                    .dependents(member.as_str())
                    .find(|dep| !body.contains(&dep.id))
                {
                    return Err(invalid(format!(
                        "body step {member:?} is needed by {:?}, outside the loop (only the looping step may have dependents outside it)",
                        outside.id
                    )));
                }
            }
            let needs: Vec<StepId> = self.steps[i]
                .needs
                .iter()
                .map(|need| StepId::new(need.local()))
                .collect::<Result<_, _>>()?;
            let until = Condition::with_output(&spec.until, &needs)
                .map_err(|message| invalid(format!("until is not a valid condition: {message}")))?;
            loops.push((
                i,
                Loop {
                    back_to: head,
                    until,
                    max_iterations: spec.max_iterations,
                    body,
                },
            ));
        }
        for (i, checked) in loops {
            self.steps[i].loop_ = Some(checked);
        }
        Ok(())
    }

    /// The step whose loop has `step` as its head (`back_to`), if any.
    pub fn loop_of_head(&self, step: &str) -> Option<&Step> {
        self.steps
            .iter()
            .find(|s| s.loop_.as_ref().is_some_and(|l| l.back_to.as_str() == step))
    }

    /// True when `step` is in some loop's body (its attempts count on across iterations).
    pub fn in_loop(&self, step: &str) -> bool {
        self.steps.iter().any(|s| {
            s.loop_
                .as_ref()
                .is_some_and(|l| l.body.iter().any(|b| b.as_str() == step))
        })
    }

    /// The steps of planner `planner`'s sub-plan nothing else in it needs: its output comes
    /// from them.
    pub fn sub_sinks(&self, planner: &str) -> impl Iterator<Item = &Step> {
        self.steps.iter().enumerate().filter_map(move |(i, step)| {
            (step.id.planner() == Some(planner) && self.dependents[i].is_empty()).then_some(step)
        })
    }

    /// Steps `grow` added to `base` (the steps after `base`'s).
    pub fn added_since(&self, base: &Plan) -> &[Step] {
        self.steps.get(base.steps.len()..).unwrap_or_default()
    }

    /// The plan's revision: 1 when submitted, one more each time it grew.
    pub fn revision(&self) -> u32 {
        self.revision
    }

    /// The same plan, as stored at `revision` (read back with [`Plan::from_stored`], which
    /// cannot know it).
    pub fn at_revision(mut self, revision: u32) -> Self {
        self.revision = revision;
        self
    }

    /// The plan as its author wrote it (normalised to JSON), for storage.
    pub fn spec(&self) -> &PlanSpec {
        &self.spec
    }

    pub fn name(&self) -> Option<&str> {
        self.spec.name.as_deref()
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.index.get(id).map(|&i| &self.steps[i])
    }

    /// Steps that need `id`.
    pub fn dependents(&self, id: &str) -> impl Iterator<Item = &Step> {
        let list = self
            .index
            .get(id)
            .map(|&i| self.dependents[i].as_slice())
            .unwrap_or(&[]);
        list.iter().map(|&i| &self.steps[i])
    }

    /// Steps with no needs: they start when the job starts.
    pub fn roots(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|step| step.needs.is_empty())
    }

    /// `id` and every step downstream of it (that needs it, directly or not). Empty when
    /// `id` is not a step.
    pub fn downstream(&self, id: &str) -> std::collections::BTreeSet<&str> {
        let mut seen = std::collections::BTreeSet::new();
        let Some(&start) = self.index.get(id) else {
            return seen;
        };
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            if seen.insert(self.steps[i].id.as_str()) {
                stack.extend(self.dependents[i].iter().copied());
            }
        }
        seen
    }

    /// Every step, each after all of its needs (Kahn's order; the plan has no cycle).
    pub fn topological(&self) -> Vec<&Step> {
        let mut waiting: Vec<usize> = self.steps.iter().map(|s| s.needs.len()).collect();
        let mut ready: Vec<usize> = (0..self.steps.len()).filter(|&i| waiting[i] == 0).collect();
        ready.reverse();
        let mut order = Vec::with_capacity(self.steps.len());
        while let Some(i) = ready.pop() {
            order.push(&self.steps[i]);
            for &dep in &self.dependents[i] {
                waiting[dep] -= 1;
                if waiting[dep] == 0 {
                    ready.push(dep);
                }
            }
        }
        order
    }

    /// Steps nothing depends on: together their outputs are the job's output.
    /// (A planner's sub-plan steps are not: their output is the planner's.)
    pub fn sinks(&self) -> impl Iterator<Item = &Step> {
        self.steps
            .iter()
            .enumerate()
            .filter(|(i, step)| self.dependents[*i].is_empty() && step.id.planner().is_none())
            .map(|(_, s)| s)
    }

    /// Finds one cycle, returned as the ids along it with the first repeated at the end
    /// (`a -> b -> a`), so the error names exactly the steps to fix.
    fn find_cycle(&self) -> Option<Vec<String>> {
        // Iterative three-colour DFS over `needs` edges; recursion could overflow the stack on
        // long chains, and a plan is attacker-controlled input.
        const WHITE: u8 = 0;
        const GREY: u8 = 1;
        const BLACK: u8 = 2;
        let n = self.steps.len();
        let mut colour = vec![WHITE; n];
        let needs: Vec<Vec<usize>> = self
            .steps
            .iter()
            .map(|step| step.needs.iter().map(|need| self.index[need]).collect())
            .collect();
        for start in 0..n {
            if colour[start] != WHITE {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            colour[start] = GREY;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&child) = needs[node].get(*next) {
                    *next += 1;
                    match colour[child] {
                        WHITE => {
                            colour[child] = GREY;
                            stack.push((child, 0));
                        }
                        GREY => {
                            let from = stack.iter().position(|&(s, _)| s == child).unwrap_or(0);
                            let mut cycle: Vec<String> = stack[from..]
                                .iter()
                                .map(|&(s, _)| self.steps[s].id.to_string())
                                .collect();
                            cycle.push(self.steps[child].id.to_string());
                            return Some(cycle);
                        }
                        _ => {}
                    }
                } else {
                    colour[node] = BLACK;
                    stack.pop();
                }
            }
        }
        None
    }
}

/// Where a plan comes from: a submitter (plain ids only), or the job's store (where a
/// planner's sub-plan steps are `<planner>/<sub id>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Submitted,
    Stored,
}

fn check_step(
    raw: &StepSpec,
    index: &HashMap<StepId, usize>,
    limits: &Limits,
    origin: Origin,
) -> Result<Step, Error> {
    let id = match origin {
        Origin::Submitted => StepId::new(&raw.id)?,
        Origin::Stored => StepId::stored(&raw.id)?,
    };
    let agent = AgentName::new(&raw.agent)?;
    if raw.needs.len() > limits.max_needs {
        return Err(Error::TooManyNeeds {
            step: raw.id.clone(),
            count: raw.needs.len(),
            limit: limits.max_needs,
        });
    }
    let mut needs: Vec<StepId> = Vec::with_capacity(raw.needs.len());
    for need in &raw.needs {
        let Some((known, _)) = index.get_key_value(need.as_str()) else {
            return Err(Error::UnknownNeed {
                step: raw.id.clone(),
                need: need.clone(),
            });
        };
        if needs.contains(known) {
            return Err(Error::RepeatedNeed {
                step: raw.id.clone(),
                need: need.clone(),
            });
        }
        needs.push(known.clone());
    }
    let retry = raw.retry.unwrap_or_default();
    let policy_error = |message: String| Error::InvalidPolicy {
        step: raw.id.clone(),
        message,
    };
    if retry.max_attempts == 0 || retry.max_attempts > limits.max_attempts {
        return Err(policy_error(format!(
            "retry.max_attempts must be between 1 and {}, got {}",
            limits.max_attempts, retry.max_attempts
        )));
    }
    if retry.initial_backoff_ms > retry.max_backoff_ms {
        return Err(policy_error(format!(
            "retry.initial_backoff_ms ({}) is larger than retry.max_backoff_ms ({})",
            retry.initial_backoff_ms, retry.max_backoff_ms
        )));
    }
    if retry.max_backoff_ms > limits.max_timeout_ms {
        return Err(policy_error(format!(
            "retry.max_backoff_ms must be at most {}",
            limits.max_timeout_ms
        )));
    }
    if !(0.0..=1.0).contains(&retry.jitter) {
        return Err(policy_error(format!(
            "retry.jitter must be between 0 and 1, got {}",
            retry.jitter
        )));
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if timeout_ms == 0 || timeout_ms > limits.max_timeout_ms {
        return Err(policy_error(format!(
            "timeout_ms must be between 1 and {}, got {timeout_ms}",
            limits.max_timeout_ms
        )));
    }
    // Inputs and conditions name needs as the step's own (sub-)plan does.
    let local: Vec<StepId> = needs
        .iter()
        .map(|need| StepId::new(need.local()))
        .collect::<Result<_, _>>()?;
    let input = match &raw.input {
        None => None,
        Some(template) => Some(InputTemplate::new(template.clone(), &local).map_err(
            |message| Error::InvalidInput {
                step: raw.id.clone(),
                message,
            },
        )?),
    };
    let output_schema = match &raw.output_schema {
        None => None,
        Some(schema) => {
            Some(
                OutputSchema::new(schema.clone()).map_err(|message| Error::InvalidSchema {
                    step: raw.id.clone(),
                    message,
                })?,
            )
        }
    };
    let when = match &raw.when {
        None => None,
        Some(source) => {
            Some(
                Condition::new(source, &local).map_err(|message| Error::InvalidCondition {
                    step: raw.id.clone(),
                    message,
                })?,
            )
        }
    };
    let expand = match &raw.expand {
        None => None,
        Some(spec) => {
            let invalid = |message: String| Error::InvalidExpand {
                step: raw.id.clone(),
                message,
            };
            if id.planner().is_some() {
                return Err(invalid(
                    "is not allowed in a sub-plan (planners nest one level)".into(),
                ));
            }
            if raw.routes.is_some() {
                return Err(invalid("and routes cannot be on one step".into()));
            }
            let allowed_agents = spec
                .allowed_agents
                .iter()
                .map(|agent| AgentName::new(agent))
                .collect::<Result<std::collections::BTreeSet<_>, _>>()?;
            if allowed_agents.is_empty() {
                return Err(invalid("needs at least one of allowed_agents".into()));
            }
            let max_steps = spec.max_steps.unwrap_or(DEFAULT_EXPAND_MAX_STEPS);
            if max_steps == 0 || max_steps > limits.max_steps {
                return Err(invalid(format!(
                    "max_steps must be between 1 and {}, got {max_steps}",
                    limits.max_steps
                )));
            }
            Some(Expand {
                allowed_agents,
                max_steps,
            })
        }
    };
    Ok(Step {
        id,
        kind: StepKind::Agent(agent),
        needs,
        input,
        retry,
        timeout_ms,
        output_schema,
        routes: None,
        when,
        expand,
        loop_: None,
    })
}

/// An explicit input mapping: any JSON value in which a string starting with `$` is a
/// reference, replaced when the step starts:
///
/// - `"$input"` — the job input; `"$input/question"` — a part of it (a JSON Pointer);
/// - `"$needs/<step>"` — that dependency's output; `"$needs/<step>/path"` — a part of it;
/// - `"$$…"` — a literal string starting with `$`.
///
/// A reference to a missing part becomes `null`.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTemplate(Value);

impl InputTemplate {
    fn new(template: Value, needs: &[StepId]) -> Result<Self, String> {
        let mut problem = None;
        visit_strings(&template, &mut |text| {
            if problem.is_none() {
                problem = check_reference(text, needs).err();
            }
        });
        match problem {
            Some(message) => Err(message),
            None => Ok(Self(template)),
        }
    }

    /// Builds the step's input from the job input and the outputs of its needs.
    pub fn render(&self, input: &Value, needs: &BTreeMap<String, Value>) -> Value {
        render(&self.0, input, needs)
    }
}

fn visit_strings(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::String(text) => f(text),
        Value::Array(items) => items.iter().for_each(|item| visit_strings(item, f)),
        Value::Object(map) => map.values().for_each(|item| visit_strings(item, f)),
        _ => {}
    }
}

fn check_reference(text: &str, needs: &[StepId]) -> Result<(), String> {
    let Some(reference) = text.strip_prefix('$') else {
        return Ok(());
    };
    if reference.starts_with('$') {
        return Ok(());
    }
    if reference == "input" || reference.starts_with("input/") {
        return Ok(());
    }
    if let Some(rest) = reference.strip_prefix("needs/") {
        let step = rest.split('/').next().unwrap_or_default();
        if needs.iter().any(|need| need.as_str() == step) {
            return Ok(());
        }
        return Err(format!(
            "refers to {text:?}, but {step:?} is not in this step's needs"
        ));
    }
    Err(format!(
        "has the unknown reference {text:?} (use $input, $input/<pointer>, $needs/<step>[/<pointer>] or $$ for a literal $)"
    ))
}

fn render(template: &Value, input: &Value, needs: &BTreeMap<String, Value>) -> Value {
    match template {
        Value::String(text) => match text.strip_prefix('$') {
            Some(literal) if literal.starts_with('$') => Value::String(literal.to_owned()),
            Some("input") => input.clone(),
            Some(reference) => {
                let found = if let Some(pointer) = reference.strip_prefix("input") {
                    input.pointer(pointer)
                } else if let Some(rest) = reference.strip_prefix("needs/") {
                    let (step, pointer) = match rest.find('/') {
                        Some(at) => rest.split_at(at),
                        None => (rest, ""),
                    };
                    needs.get(step).and_then(|output| output.pointer(pointer))
                } else {
                    None
                };
                found.cloned().unwrap_or(Value::Null)
            }
            None => template.clone(),
        },
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| render(v, input, needs)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render(v, input, needs)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests;
