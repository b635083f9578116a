//! Control flow of contract v1.1 (docs/protocol.md §3b): a router's `routes` and a step's
//! `when` condition. Both are checked when the plan is validated; both are evaluated from
//! recorded outputs only, so every replica and `baton replay` decide the same.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use crate::name::StepId;

/// The branch taken when a router's `route` names no branch.
pub const DEFAULT_BRANCH: &str = "_default";

/// A router's branches: names to the steps each one starts. Every step in a branch needs the
/// router; a step that needs the router but is in no branch always runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    branches: BTreeMap<String, Vec<StepId>>,
    /// Every step in some branch.
    targets: BTreeSet<StepId>,
}

impl Routes {
    /// Checks the branches against the router's dependents (`needs_router` says whether a
    /// step needs the router).
    pub(crate) fn new(
        branches: &BTreeMap<String, Vec<String>>,
        needs_router: impl Fn(&str) -> Option<StepId>,
    ) -> Result<Self, String> {
        if branches.is_empty() {
            return Err("routes has no branches".to_owned());
        }
        let mut checked = BTreeMap::new();
        let mut targets = BTreeSet::new();
        for (name, steps) in branches {
            if name.is_empty() {
                return Err("routes has a branch with an empty name".to_owned());
            }
            let mut list = Vec::with_capacity(steps.len());
            for step in steps {
                let Some(id) = needs_router(step) else {
                    return Err(format!(
                        "routes branch {name:?} names {step:?}, which does not need this step (a branch may only start the router's dependents)"
                    ));
                };
                if !list.contains(&id) {
                    targets.insert(id.clone());
                    list.push(id);
                }
            }
            checked.insert(name.clone(), list);
        }
        Ok(Self {
            branches: checked,
            targets,
        })
    }

    /// True when `step` is in some branch (so it runs only if one of its branches is taken).
    pub fn routes(&self, step: &str) -> bool {
        self.targets.contains(step)
    }

    /// The branch names, as written.
    pub fn branches(&self) -> impl Iterator<Item = &str> {
        self.branches.keys().map(String::as_str)
    }

    /// The steps the router's `output` starts: its `"route"` is a branch name or a list of
    /// them; names that are no branch fall back to `_default`, and without one the output
    /// is invalid (the router's attempt fails with class `invalid_output`).
    pub fn pick(&self, output: &Value) -> Result<BTreeSet<&str>, String> {
        let names: Vec<&str> = match output.get("route") {
            Some(Value::String(name)) => vec![name.as_str()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| format!("route must list branch names (strings), got {v}"))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(format!(
                    "route must be a branch name or a list of them, got {other}"
                ));
            }
            None => {
                return Err(format!(
                    "a router's output must hold \"route\" (one of {})",
                    self.known()
                ));
            }
        };
        // Each name that is no branch stands for `_default`; so does an empty list.
        let mut taken = BTreeSet::new();
        let mut default = names.is_empty();
        for name in names {
            match self.branches.get(name) {
                Some(steps) => taken.extend(steps.iter().map(StepId::as_str)),
                None => default = true,
            }
        }
        if default {
            let Some(steps) = self.branches.get(DEFAULT_BRANCH) else {
                return Err(format!(
                    "route {} names no branch (branches: {}), and there is no {DEFAULT_BRANCH:?}",
                    output
                        .get("route")
                        .map(Value::to_string)
                        .unwrap_or_default(),
                    self.known()
                ));
            };
            taken.extend(steps.iter().map(StepId::as_str));
        }
        Ok(taken)
    }

    fn known(&self) -> String {
        self.branches
            .keys()
            .map(|name| format!("{name:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A step's `when`: a CEL expression over `input` and `needs`, compiled once when the plan is
/// validated. False (or every need skipped) ends the step `skipped`.
#[derive(Clone)]
pub struct Condition {
    source: String,
    program: Arc<cel::Program>,
}

/// The variables a condition may name; a loop's `until` may name `output` too.
const CONDITION_VARIABLES: [&str; 2] = ["input", "needs"];
const UNTIL_VARIABLES: [&str; 3] = ["input", "needs", "output"];

impl Condition {
    /// Compiles `source` and checks what it names: only `input` and `needs`, and
    /// `needs.<id>` only for the step's own needs. (cel-rust has no type checker: a type
    /// error shows at run time, as a failed attempt of class `invalid_output`.)
    pub(crate) fn new(source: &str, needs: &[StepId]) -> Result<Self, String> {
        Self::compile(source, needs, &CONDITION_VARIABLES)
    }

    /// A loop's `until`: may name the looping step's `output` too.
    pub(crate) fn with_output(source: &str, needs: &[StepId]) -> Result<Self, String> {
        Self::compile(source, needs, &UNTIL_VARIABLES)
    }

    fn compile(source: &str, needs: &[StepId], variables: &[&str]) -> Result<Self, String> {
        let program = cel::Program::compile(source).map_err(|error| error.to_string())?;
        let mut problem = None;
        check_names(
            program.expression(),
            &mut Vec::new(),
            needs,
            variables,
            &mut problem,
        );
        if let Some(problem) = problem {
            return Err(problem);
        }
        Ok(Self {
            source: source.to_owned(),
            program: Arc::new(program),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the condition; an error names what went wrong (not a bool, a missing field).
    pub fn eval(&self, input: &Value, needs: &BTreeMap<&str, Value>) -> Result<bool, String> {
        self.eval_with(input, needs, None)
    }

    /// Evaluates a loop's `until` with the looping step's `output`.
    pub fn eval_with(
        &self,
        input: &Value,
        needs: &BTreeMap<&str, Value>,
        output: Option<&Value>,
    ) -> Result<bool, String> {
        let mut context = cel::Context::default();
        if let Some(output) = output {
            let output = cel::to_value(output).map_err(|e| e.to_string())?;
            context.add_variable_from_value("output", output);
        }
        let as_cel = |value: &Value| cel::to_value(value).map_err(|e| e.to_string());
        context.add_variable_from_value("input", as_cel(input)?);
        let needs: BTreeMap<String, Value> = needs
            .iter()
            .map(|(id, output)| ((*id).to_owned(), output.clone()))
            .collect();
        context.add_variable_from_value(
            "needs",
            as_cel(&serde_json::to_value(needs).unwrap_or_default())?,
        );
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(value)) => Ok(value),
            Ok(other) => Err(format!("when {:?} gave {other:?}, not a bool", self.source)),
            Err(error) => Err(format!("when {:?}: {error}", self.source)),
        }
    }
}

/// Walks the expression: every free identifier must be a condition variable, and
/// `needs.<id>` must name one of the step's needs. Comprehension variables are bound.
fn check_names(
    expr: &cel::IdedExpr,
    bound: &mut Vec<String>,
    needs: &[StepId],
    variables: &[&str],
    problem: &mut Option<String>,
) {
    use cel::common::ast::{EntryExpr, Expr};
    if problem.is_some() {
        return;
    }
    match &expr.expr {
        Expr::Ident(name) => {
            if !bound.iter().any(|b| b == name) && !variables.contains(&name.as_str()) {
                *problem = Some(format!(
                    "names {name:?}; it may only use {}",
                    variables.join(", ")
                ));
            }
        }
        Expr::Select(select) => {
            if let Expr::Ident(name) = &select.operand.expr
                && name == "needs"
                && !bound.iter().any(|b| b == name)
                && !needs.iter().any(|need| need.as_str() == select.field)
            {
                *problem = Some(format!(
                    "refers to needs.{}, but {:?} is not in this step's needs",
                    select.field, select.field
                ));
                return;
            }
            check_names(&select.operand, bound, needs, variables, problem);
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                check_names(target, bound, needs, variables, problem);
            }
            for arg in &call.args {
                check_names(arg, bound, needs, variables, problem);
            }
        }
        Expr::Comprehension(comp) => {
            check_names(&comp.iter_range, bound, needs, variables, problem);
            check_names(&comp.accu_init, bound, needs, variables, problem);
            let depth = bound.len();
            bound.push(comp.iter_var.clone());
            if let Some(second) = &comp.iter_var2 {
                bound.push(second.clone());
            }
            bound.push(comp.accu_var.clone());
            for part in [&comp.loop_cond, &comp.loop_step, &comp.result] {
                check_names(part, bound, needs, variables, problem);
            }
            bound.truncate(depth);
        }
        Expr::List(list) => {
            for element in &list.elements {
                check_names(element, bound, needs, variables, problem);
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                match &entry.expr {
                    EntryExpr::MapEntry(e) => {
                        check_names(&e.key, bound, needs, variables, problem);
                        check_names(&e.value, bound, needs, variables, problem);
                    }
                    EntryExpr::StructField(f) => {
                        check_names(&f.value, bound, needs, variables, problem)
                    }
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                if let EntryExpr::StructField(f) = &entry.expr {
                    check_names(&f.value, bound, needs, variables, problem);
                }
            }
        }
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
