//! The simulation agent (`baton-agent-sim`): returns its task input as output, and fails,
//! hangs or misbehaves on demand, for tests, benchmarks and failure demos.
//!
//! It reads `sim` from the task input, or from `input.sim` under the default mapping (so a
//! `sim` in the job input applies to every step):
//! `{"sleep_ms": N, "fail": "error|timeout|invalid", "fail_attempts": K}` sleeps N ms, then
//! fails the first K attempts of each step the given way (all attempts when K is missing):
//! `error` returns a retryable error, `timeout` never answers, `invalid` returns an output
//! that is not the step's input (a string), which breaks any output schema, and `crash`
//! aborts the whole worker process on every delivery (a poison task). `"usage"` reports token
//! usage on every attempt: `true` derives it from the input size (model `sim-1`), an object
//! `{"model", "input_tokens", "output_tokens"}` is reported as given. `"output": v` returns
//! `v` instead of the input; `"outputs": [v1, v2, …]` returns element k the k-th time the
//! step runs in the job (its attempt number, which counts every run of the step; the last
//! element repeats), or element `index` for a map element (a task input with `item` and
//! `index`), so a test's job input can steer routers, loops and planners. Its work runs in a
//! `sim.work` span, which nests under the runtime's span of the attempt when tracing is on.

use std::time::Duration;

use baton_protocol::messages::Usage;
use baton_worker::{Agent, AgentError, Task};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

/// The model name the simulation reports usage for.
pub const SIM_MODEL: &str = "sim-1";

/// How the simulation behaves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSpec {
    #[serde(default)]
    pub sleep_ms: u64,
    #[serde(default)]
    pub fail: Option<FailMode>,
    #[serde(default)]
    pub fail_attempts: Option<u32>,
    /// Token usage to report on each attempt, as an LLM agent would.
    #[serde(default)]
    pub usage: Option<SimUsage>,
    /// The output of every run, instead of the input.
    #[serde(default)]
    pub output: Option<Value>,
    /// The output of each run in turn (the last repeats); wins over `output`.
    #[serde(default)]
    pub outputs: Option<Vec<Value>>,
}

/// What usage the simulation reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SimUsage {
    /// `true`: one input token per 4 bytes of the task input, half as many output tokens.
    Derived(bool),
    /// Exactly this usage.
    Fixed(Usage),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    Error,
    Timeout,
    Invalid,
    Crash,
}

impl SimSpec {
    /// The spec in a task input, if any.
    pub fn of(input: &Value) -> Result<Self, String> {
        match input.get("sim").or_else(|| input.pointer("/input/sim")) {
            None | Some(Value::Null) => Ok(Self::default()),
            Some(spec) => {
                serde_json::from_value(spec.clone()).map_err(|e| format!("bad sim spec: {e}"))
            }
        }
    }

    /// The output of the run `attempt` of a step whose task input is `input`: the element of
    /// `outputs` for that run (or for the map element `index`), else `output`, else the input.
    pub fn output_of(&self, attempt: u32, input: Value) -> Value {
        if let Some(outputs) = self.outputs.as_ref().filter(|list| !list.is_empty()) {
            let element = input
                .get("item")
                .and(input.get("index"))
                .and_then(Value::as_u64)
                .unwrap_or_else(|| u64::from(attempt.saturating_sub(1)));
            let k = usize::try_from(element).unwrap_or(usize::MAX);
            return outputs[k.min(outputs.len() - 1)].clone();
        }
        self.output.clone().unwrap_or(input)
    }

    /// The failure to inject on `attempt`, if any.
    pub fn failure_on(&self, attempt: u32) -> Option<FailMode> {
        let fail = self.fail?;
        (attempt <= self.fail_attempts.unwrap_or(u32::MAX)).then_some(fail)
    }
}

/// The simulation agent.
#[derive(Debug, Default)]
pub struct Sim;

/// The usage the simulation reports for a task input of `bytes` bytes.
pub fn sim_usage(bytes: usize) -> Usage {
    let input_tokens = (bytes as u64 / 4).max(1);
    Usage {
        model: Some(SIM_MODEL.to_owned()),
        input_tokens,
        output_tokens: (input_tokens / 2).max(1),
    }
}

impl Agent for Sim {
    async fn process(&self, task: Task) -> Result<Value, AgentError> {
        let span =
            tracing::info_span!("sim.work", sim.step = %task.step_id, sim.attempt = task.attempt);
        work(task).instrument(span).await
    }
}

async fn work(task: Task) -> Result<Value, AgentError> {
    let spec = SimSpec::of(&task.input).map_err(AgentError::fatal)?;
    match &spec.usage {
        Some(SimUsage::Derived(true)) => {
            let bytes = serde_json::to_string(&task.input).map_or(0, |s| s.len());
            task.report_usage(sim_usage(bytes));
        }
        Some(SimUsage::Fixed(usage)) => task.report_usage(usage.clone()),
        _ => {}
    }
    if spec.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(spec.sleep_ms)).await;
    }
    match spec.failure_on(task.attempt) {
        None => Ok(spec.output_of(task.attempt, task.input)),
        Some(FailMode::Error) => Err(AgentError::retryable(format!(
            "sim: injected failure on attempt {} of step {}",
            task.attempt, task.step_id
        ))),
        Some(FailMode::Timeout) => std::future::pending().await,
        Some(FailMode::Invalid) => Ok(json!("sim: invalid output")),
        Some(FailMode::Crash) => {
            eprintln!(
                "sim: crashing on attempt {} of step {} as asked",
                task.attempt, task.step_id
            );
            std::process::abort()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_follow_the_runs_of_a_step_and_the_elements_of_a_map() {
        let input = json!({"input": {}, "needs": {}});
        let echo = SimSpec::default();
        assert_eq!(echo.output_of(1, input.clone()), input);
        let fixed = SimSpec::of(&json!({"sim": {"output": {"route": "billing"}}})).unwrap();
        assert_eq!(
            fixed.output_of(3, input.clone()),
            json!({"route": "billing"})
        );
        let runs = SimSpec::of(&json!({"sim": {"output": 0, "outputs": ["a", "b"]}})).unwrap();
        assert_eq!(runs.output_of(1, input.clone()), json!("a"));
        assert_eq!(runs.output_of(2, input.clone()), json!("b"));
        // The last repeats.
        assert_eq!(runs.output_of(7, input.clone()), json!("b"));
        // A map element takes its own element, whatever the attempt.
        let element = json!({"item": "x", "index": 0});
        assert_eq!(runs.output_of(2, element), json!("a"));
        // An empty list is no list.
        let empty = SimSpec::of(&json!({"sim": {"outputs": []}})).unwrap();
        assert_eq!(empty.output_of(1, input.clone()), input);
    }

    #[test]
    fn spec_is_read_from_the_input_or_the_job_input() {
        let direct = json!({"sim": {"fail": "error", "fail_attempts": 2}});
        let mapped = json!({"input": {"sim": {"fail": "error", "fail_attempts": 2}}, "needs": {}});
        for input in [direct, mapped] {
            let spec = SimSpec::of(&input).unwrap();
            assert_eq!(spec.failure_on(1), Some(FailMode::Error));
            assert_eq!(spec.failure_on(2), Some(FailMode::Error));
            assert_eq!(spec.failure_on(3), None);
        }
        assert_eq!(SimSpec::of(&json!({"x": 1})).unwrap(), SimSpec::default());
        assert!(SimSpec::of(&json!({"sim": {"fail": "explode"}})).is_err());
        let counted = SimSpec::of(&json!({"sim": {"usage": true}})).unwrap();
        assert_eq!(counted.usage, Some(SimUsage::Derived(true)));
        assert!(counted.fail.is_none());
        let usage = sim_usage(400);
        assert_eq!((usage.input_tokens, usage.output_tokens), (100, 50));
        assert_eq!(usage.model.as_deref(), Some(SIM_MODEL));
        assert_eq!(sim_usage(0).output_tokens, 1);
        let always = SimSpec::of(&json!({"sim": {"fail": "timeout"}})).unwrap();
        assert_eq!(always.failure_on(1000), Some(FailMode::Timeout));
        let usage =
            json!({"sim": {"usage": {"model": "m", "input_tokens": 3, "output_tokens": 4}}});
        let Some(SimUsage::Fixed(usage)) = SimSpec::of(&usage).unwrap().usage else {
            panic!("a usage object is reported as given");
        };
        assert_eq!(
            (usage.model.as_deref(), usage.output_tokens),
            (Some("m"), 4)
        );
    }
}
