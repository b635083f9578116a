//! Control flow (contract v1.1): what a step's end does to its dependents when routers and
//! conditions may skip them. A succeeded or skipped step releases each dependent: a router's
//! untaken branch skips it at once; otherwise its count of needs not yet done drops, and at
//! zero it is skipped (every need skipped, or its `when` false) or started. Skipping
//! releases the skipped step's own dependents the same way, so a decision settles the whole
//! region it affects in one fenced write.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use baton_protocol::messages::SkipReason;
use baton_protocol::plan::{Plan, Step};
use serde_json::Value;

use crate::decision::{Apply, Skip};
use crate::facts::Facts;
use crate::field::{Field, StepField};

/// Steps whose state a success of `step` may change beyond its direct dependents' counts:
/// everything downstream of the dependents a router's branch or a condition may skip.
pub(crate) fn region<'p>(plan: &'p Plan, step: &Step) -> BTreeSet<&'p str> {
    let mut region = BTreeSet::new();
    for dep in plan.dependents(step.id.as_str()) {
        let routed = step
            .routes
            .as_ref()
            .is_some_and(|routes| routes.routes(dep.id.as_str()));
        if (routed || dep.when.is_some()) && !region.contains(dep.id.as_str()) {
            region.extend(plan.downstream(dep.id.as_str()));
        }
    }
    region
}

/// True when `step` is a sink of its planner's sub-plan: its end may finish the planner.
fn sub_sink(plan: &Plan, step: &Step) -> bool {
    step.id.planner().is_some() && plan.dependents(step.id.as_str()).next().is_none()
}

/// What finishing planner `planner` reads: its sinks left, its sinks' outputs and statuses,
/// and what its own success reads (its dependents' counts, their region).
fn planner_reads(plan: &Plan, planner: &str, fields: &mut Vec<Field>) {
    let Some(step) = plan.step(planner) else {
        return;
    };
    fields.push(Field::step(StepField::SubLeft, planner));
    for sink in plan.sub_sinks(planner) {
        fields.push(Field::step(StepField::Status, sink.id.as_str()));
        fields.push(Field::step(StepField::Output, sink.id.as_str()));
    }
    fields.extend(
        plan.dependents(planner)
            .map(|dep| Field::step(StepField::Waiting, dep.id.as_str())),
    );
    region_reads(plan, step, fields);
}

/// The facts a success of `step` needs to settle its region: the counts of each step in it,
/// for a step with a condition the outputs of its needs and the job input, and for a sink of
/// a sub-plan what finishing its planner reads.
pub(crate) fn region_reads(plan: &Plan, step: &Step, fields: &mut Vec<Field>) {
    let region = region(plan, step);
    let mut planners: BTreeSet<&str> = BTreeSet::new();
    if sub_sink(plan, step) {
        planners.extend(step.id.planner());
    }
    for id in &region {
        if let Some(member) = plan.step(id)
            && sub_sink(plan, member)
        {
            planners.extend(member.id.planner());
        }
    }
    for planner in planners {
        planner_reads(plan, planner, fields);
    }
    if region.is_empty() {
        return;
    }
    let mut seen: HashSet<Field> = fields.iter().cloned().collect();
    let mut push = |field: Field| {
        if seen.insert(field.clone()) {
            fields.push(field);
        }
    };
    push(Field::Input);
    for id in region {
        push(Field::step(StepField::Waiting, id));
        push(Field::step(StepField::SkippedNeeds, id));
        let Some(member) = plan.step(id) else {
            continue;
        };
        if member.when.is_some() {
            for need in &member.needs {
                push(Field::step(StepField::Output, need.as_str()));
            }
        }
    }
}

/// What settling a step's end decided: the steps to start (with the condition error that
/// fails their first attempt at once, if any) and the steps skipped.
#[derive(Debug, Default)]
pub(crate) struct Settled<'p> {
    pub(crate) start: Vec<(&'p Step, Option<String>)>,
    pub(crate) skipped: Vec<Skip>,
    /// Planners whose sub-plan this decision finished, with their output.
    pub(crate) completed: Vec<(String, String)>,
}

/// Settles the end of `step` (succeeded with `output`) on a running job, writing the count
/// changes and skips into `apply`.
pub(crate) fn release<'p>(
    plan: &'p Plan,
    facts: &Facts,
    step: &'p Step,
    output: &str,
    apply: &mut Apply,
) -> Settled<'p> {
    let mut walk = Walk {
        facts,
        outputs: vec![(step.id.to_string(), output.to_owned())],
        input: None,
        counts: Vec::new(),
        at: HashMap::new(),
        sinks_done: HashMap::new(),
        done: HashSet::new(),
        settled: Settled::default(),
    };
    let mut work: Vec<(&'p Step, bool)> = vec![(step, true)];
    let _ = output;
    while let Some((from, ran)) = work.pop() {
        let taken = match (&from.routes, ran) {
            (Some(routes), true) => {
                let value: Value = serde_json::from_str(output).unwrap_or(Value::Null);
                // Outputs are checked before they are recorded; one that names no branch
                // anyway (a stored job from before the check) takes none.
                Some(
                    routes
                        .pick(&value)
                        .map(|set| set.into_iter().map(str::to_owned).collect::<HashSet<_>>())
                        .unwrap_or_default(),
                )
            }
            _ => None,
        };
        if sub_sink(plan, from)
            && let Some(planner) = from.id.planner().and_then(|id| plan.step(id))
            && let Some(output) = walk.sink_done(plan, planner, apply)
        {
            walk.outputs.push((planner.id.to_string(), output.clone()));
            walk.settled
                .completed
                .push((planner.id.to_string(), output));
            work.push((planner, true));
        }
        for dep in plan.dependents(from.id.as_str()) {
            let id = dep.id.as_str();
            let Some(left) = walk.waiting(id) else {
                continue;
            };
            if let (Some(taken), Some(routes)) = (&taken, &from.routes)
                && routes.routes(id)
                && !taken.contains(id)
            {
                walk.skip(dep, SkipReason::Route, Some(from.id.as_str()), apply);
                work.push((dep, false));
                continue;
            }
            let count = walk.count(id);
            count.by += 1;
            if !ran {
                count.skipped += 1;
            }
            if left > 1 {
                continue;
            }
            let skipped = facts.step_number(StepField::SkippedNeeds, id) + u64::from(count.skipped);
            if skipped >= dep.needs.len() as u64 {
                walk.skip(dep, SkipReason::Needs, None, apply);
                work.push((dep, false));
                continue;
            }
            match walk.condition(dep) {
                Ok(true) => walk.ready(dep, None),
                Ok(false) => {
                    walk.skip(dep, SkipReason::Condition, None, apply);
                    work.push((dep, false));
                }
                Err(error) => walk.ready(dep, Some(error)),
            }
        }
    }
    for (id, count) in &walk.counts {
        let id = *id;
        let read = facts.step_number(StepField::Waiting, id);
        apply.counts.push((
            Field::step(StepField::Waiting, id),
            count.by,
            read <= u64::from(count.by),
        ));
        if count.skipped > 0 {
            apply.add.push((
                Field::step(StepField::SkippedNeeds, id),
                i64::from(count.skipped),
            ));
        }
    }
    walk.settled
}

#[derive(Debug, Default, Clone, Copy)]
struct Count {
    /// Needs of this step that ended in this decision.
    by: u32,
    /// Of which skipped.
    skipped: u32,
}

struct Walk<'p, 'f> {
    facts: &'f Facts,
    /// Outputs in hand: the step that succeeded, and planners finished in this decision.
    outputs: Vec<(String, String)>,
    /// Sinks of each planner's sub-plan done in this decision.
    sinks_done: HashMap<String, u32>,
    input: Option<Value>,
    /// Count changes, in the order the steps were first reached (decisions are compared
    /// by replay, so their writes come in a stable order).
    counts: Vec<(&'p str, Count)>,
    at: HashMap<&'p str, usize>,
    /// Steps started or skipped in this decision.
    done: HashSet<&'p str>,
    settled: Settled<'p>,
}

impl<'p> Walk<'p, '_> {
    fn count(&mut self, id: &'p str) -> &mut Count {
        let at = *self.at.entry(id).or_insert_with(|| {
            self.counts.push((id, Count::default()));
            self.counts.len() - 1
        });
        &mut self.counts[at].1
    }

    /// Needs of `id` not yet done, after this decision's changes so far; `None` when it
    /// waits for nothing (it started, or was skipped).
    fn waiting(&self, id: &str) -> Option<u64> {
        if self.done.contains(id) {
            return None;
        }
        let read: i64 = self
            .facts
            .step(StepField::Waiting, id)
            .and_then(|v| v.parse().ok())?;
        let by = self
            .at
            .get(id)
            .map_or(0, |&at| i64::from(self.counts[at].1.by));
        u64::try_from(read - by).ok().filter(|&left| left > 0)
    }

    fn skip(
        &mut self,
        step: &'p Step,
        reason: SkipReason,
        router: Option<&str>,
        apply: &mut Apply,
    ) {
        let id = step.id.as_str();
        self.done.insert(id);
        apply.set(
            Field::step(StepField::Status, id),
            baton_protocol::messages::StepStatus::Skipped.as_str(),
        );
        apply.delete.push(Field::step(StepField::Waiting, id));
        self.settled.skipped.push(Skip {
            step: id.to_owned(),
            reason,
            router: router.map(str::to_owned),
        });
    }

    /// A step's output: in hand, or as recorded (`None` for a step that was skipped).
    fn output_of(&self, id: &str) -> Option<&str> {
        if let Some((_, raw)) = self.outputs.iter().find(|(known, _)| known == id) {
            return Some(raw);
        }
        if self.settled.skipped.iter().any(|skip| skip.step == id) {
            return None;
        }
        self.facts.step(StepField::Output, id)
    }

    /// One more sink of `planner`'s sub-plan is done; when it was the last, the planner's
    /// output: one sink's output, or a map of the sinks' outputs by their sub-plan ids
    /// (skipped sinks left out; `null` when all were skipped).
    fn sink_done(&mut self, plan: &Plan, planner: &Step, apply: &mut Apply) -> Option<String> {
        let id = planner.id.as_str();
        let done = self.sinks_done.entry(id.to_owned()).or_default();
        *done += 1;
        let by = *done;
        let left = self.facts.step_number(StepField::SubLeft, id);
        let last = left <= u64::from(by);
        // Several sinks may end in one decision: the counter is decremented once, by all.
        apply
            .counts
            .retain(|(field, _, _)| *field != Field::step(StepField::SubLeft, id));
        apply
            .counts
            .push((Field::step(StepField::SubLeft, id), by, last));
        if !last {
            return None;
        }
        let sinks: Vec<&Step> = plan.sub_sinks(id).collect();
        let ran: Vec<(&str, Value)> = sinks
            .iter()
            .filter(|sink| {
                self.facts.step_status(sink.id.as_str())
                    != Some(baton_protocol::messages::StepStatus::Skipped)
            })
            .filter_map(|sink| {
                let raw = self.output_of(sink.id.as_str())?;
                Some((
                    sink.id.local(),
                    serde_json::from_str(raw).unwrap_or(Value::Null),
                ))
            })
            .collect();
        let output = match (sinks.len(), ran.as_slice()) {
            (_, []) => Value::Null,
            (1, [(_, one)]) => one.clone(),
            _ => Value::Object(
                ran.into_iter()
                    .map(|(id, value)| (id.to_owned(), value))
                    .collect(),
            ),
        };
        Some(output.to_string())
    }

    fn ready(&mut self, step: &'p Step, error: Option<String>) {
        self.done.insert(step.id.as_str());
        self.settled.start.push((step, error));
    }

    /// The step's condition on the recorded outputs of its needs that ran.
    fn condition(&mut self, step: &Step) -> Result<bool, String> {
        let Some(when) = &step.when else {
            return Ok(true);
        };
        let mut needs = BTreeMap::new();
        for need in &step.needs {
            let id = need.as_str();
            if let Some(raw) = self.output_of(id) {
                let value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
                needs.insert(need.local(), value);
            }
        }
        let facts = self.facts;
        let input = self.input.get_or_insert_with(|| {
            facts
                .get(&Field::Input)
                .and_then(|raw| serde_json::from_str(raw).ok())
                .unwrap_or(Value::Null)
        });
        when.eval(input, &needs)
    }
}

/// The steps a new job skips at once, in dependency order: roots whose condition is false
/// on the input, steps a reused router left out, and steps whose every need is skipped.
/// `reused` holds the outputs a rerun reuses. Returns the skips and, for each step that
/// starts now, the condition error that fails its first attempt, if any.
pub(crate) fn at_create<'p>(
    plan: &'p Plan,
    input: &str,
    reused: &HashMap<&str, &str>,
) -> (Vec<Skip>, HashMap<&'p str, Option<String>>) {
    let mut skipped: Vec<Skip> = Vec::new();
    let mut is_skipped: HashSet<&str> = HashSet::new();
    let mut starts = HashMap::new();
    let mut parsed_input: Option<Value> = None;
    let has_flow = plan
        .steps()
        .iter()
        .any(|s| s.when.is_some() || s.routes.is_some());
    if !has_flow {
        return (skipped, starts);
    }
    for step in plan.topological() {
        let id = step.id.as_str();
        if reused.contains_key(id) {
            continue;
        }
        let vetoed = step.needs.iter().find_map(|need| {
            let router = plan.step(need.as_str())?;
            let routes = router.routes.as_ref()?;
            let output = reused.get(need.as_str())?;
            let value: Value = serde_json::from_str(output).unwrap_or(Value::Null);
            let taken = routes.pick(&value).unwrap_or_default();
            (routes.routes(id) && !taken.contains(id)).then(|| need.to_string())
        });
        if let Some(router) = vetoed {
            is_skipped.insert(id);
            skipped.push(Skip {
                step: id.to_owned(),
                reason: SkipReason::Route,
                router: Some(router),
            });
            continue;
        }
        let skipped_needs = step
            .needs
            .iter()
            .filter(|n| is_skipped.contains(n.as_str()))
            .count();
        if !step.needs.is_empty() && skipped_needs == step.needs.len() {
            is_skipped.insert(id);
            skipped.push(Skip {
                step: id.to_owned(),
                reason: SkipReason::Needs,
                router: None,
            });
            continue;
        }
        let pending = step
            .needs
            .iter()
            .any(|n| !is_skipped.contains(n.as_str()) && !reused.contains_key(n.as_str()));
        if pending {
            continue;
        }
        let Some(when) = &step.when else {
            starts.insert(id, None);
            continue;
        };
        let input =
            parsed_input.get_or_insert_with(|| serde_json::from_str(input).unwrap_or(Value::Null));
        let mut needs = BTreeMap::new();
        for need in &step.needs {
            if let Some(raw) = reused.get(need.as_str()) {
                needs.insert(
                    need.as_str(),
                    serde_json::from_str(raw).unwrap_or(Value::Null),
                );
            }
        }
        match when.eval(input, &needs) {
            Ok(true) => {
                starts.insert(id, None);
            }
            Ok(false) => {
                is_skipped.insert(id);
                skipped.push(Skip {
                    step: id.to_owned(),
                    reason: SkipReason::Condition,
                    router: None,
                });
            }
            Err(error) => {
                starts.insert(id, Some(error));
            }
        }
    }
    (skipped, starts)
}
