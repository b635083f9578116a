//! The simulation agent's `output` and `outputs`, which let a test's job input decide what
//! each run of a step answers (what routers, loops and planners will be driven by).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use baton_protocol::messages::JobStatus;
use baton_tests::Fleet;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_outputs_answer_each_run_of_a_step_in_turn() {
    let mut fleet = Fleet::with_coordinator().await;
    fleet.spawn_sim("sim");
    let plan = json!({"steps": [
        {"id": "a", "agent": "sim", "retry": {"max_attempts": 3, "initial_backoff_ms": 10}},
        // Its own instructions, from the job input by an input mapping.
        {"id": "b", "agent": "sim", "needs": ["a"], "input": {"sim": "$input/b"}}
    ]});
    let input = json!({
        // Every step reads `sim` under the default mapping: `a` fails once, then answers the
        // second element (attempt 2 is its second run).
        "sim": {"fail": "error", "fail_attempts": 1, "outputs": [{"run": 1}, {"run": 2}]},
        "b": {"output": {"route": "billing"}}
    });
    let job = fleet.submit(plan, input).await;
    let status = fleet.wait_for(job, JobStatus::Succeeded, WAIT).await;
    fleet.assert_replays(job).await;
    assert_eq!(status.steps["a"].attempts, 2);
    assert_eq!(status.steps["a"].output, Some(json!({"run": 2})));
    assert_eq!(status.steps["b"].output, Some(json!({"route": "billing"})));
    assert_eq!(status.output, Some(json!({"route": "billing"})));
}
