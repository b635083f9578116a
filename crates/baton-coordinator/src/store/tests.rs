//! The store against a real redis-server: a plan grows while its job runs, and every
//! decision is fenced by the plan revision it was taken on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use baton_core::{Attempt, Cause, NewJob, Outcome, Usage};
use baton_harness::RedisServer;
use baton_protocol::Limits;
use baton_protocol::messages::JobStatus;
use baton_protocol::plan::{Plan, StepSpec};
use serde_json::json;
use uuid::Uuid;

use super::{Store, Ttl};

const NOW: u64 = 1_000_000;

async fn store(redis: &RedisServer) -> Store {
    let options = crate::Options {
        redis_url: redis.url(),
        ..crate::Options::default()
    };
    let ttl = Ttl {
        running: Duration::from_secs(3600),
        retention: Duration::from_secs(3600),
        reconcile_after: Duration::from_secs(3600),
        max_log_bytes: 4096,
    };
    Store::connect(&options, ttl).await.unwrap()
}

fn succeeded<'a>(step: &'a str, output: &'a str) -> Cause<'a> {
    Cause::Result {
        step,
        attempt: 1,
        outcome: Attempt::Succeeded { output },
        usage: Usage::default(),
    }
}

#[tokio::test]
async fn a_running_jobs_plan_grows_and_stale_plans_are_fenced() {
    let redis = RedisServer::start().unwrap();
    let store = store(&redis).await;
    let job = Uuid::now_v7();
    let limits = Limits::default();
    let base = Arc::new(
        Plan::from_value(json!({"steps": [{"id": "a", "agent": "sim"}]}), &limits).unwrap(),
    );
    let stored = serde_json::to_string(base.spec()).unwrap();
    let created = store
        .transition(
            job,
            &base,
            &Cause::Submitted(NewJob {
                plan: &stored,
                input: "{}",
                idempotency_key: None,
                traceparent: None,
                reused: &[],
                deadline: None,
            }),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(created.outcome, Outcome::Created);

    // The plan grows while `a` runs: `b` needs `a`, `c` needs nothing.
    let steps: Vec<StepSpec> = serde_json::from_value(json!([
        {"id": "b", "agent": "sim", "needs": ["a"]},
        {"id": "c", "agent": "sim"}
    ]))
    .unwrap();
    let grown = Arc::new(base.grow(steps, &limits).unwrap());
    let grown_json = serde_json::to_string(grown.spec()).unwrap();
    let grow = Cause::Grow {
        plan: &grown,
        stored: &grown_json,
    };
    let t = store.transition(job, &base, &grow, NOW + 1).await.unwrap();
    assert_eq!(
        t.outcome,
        Outcome::Grown {
            revision: 2,
            steps: 2
        }
    );
    let started: Vec<&str> = t.dispatch.iter().map(|d| d.step.as_str()).collect();
    assert_eq!(started, ["c"]);
    // What the executor gets is the grown plan: it has the step it is to dispatch.
    assert_eq!(t.plan.revision(), 2);
    assert!(Arc::ptr_eq(&t.plan, &grown));
    // The same growth again is decided on a plan the job no longer has.
    let again = store.transition(job, &base, &grow, NOW + 2).await.unwrap();
    assert_eq!(again.outcome, Outcome::PlanChanged { revision: 2 });

    // A replica still holding revision 1 decides nothing and learns the revision.
    let stale = store
        .transition(job, &base, &succeeded("a", "1"), NOW + 3)
        .await
        .unwrap();
    assert_eq!(stale.outcome, Outcome::PlanChanged { revision: 2 });
    // On revision 2, `a`'s success starts `b` with `a`'s output.
    let t = store
        .transition(job, &grown, &succeeded("a", "1"), NOW + 4)
        .await
        .unwrap();
    assert_eq!(t.outcome, Outcome::Succeeded);
    assert_eq!(t.dispatch.len(), 1);
    assert_eq!(t.dispatch[0].step, "b");
    assert_eq!(t.dispatch[0].needs, [Some("1".to_owned())]);
    // The job ends only when the grown steps have succeeded too.
    let t = store
        .transition(job, &grown, &succeeded("c", "3"), NOW + 5)
        .await
        .unwrap();
    assert_eq!(t.status, JobStatus::Running);
    let t = store
        .transition(job, &grown, &succeeded("b", "2"), NOW + 6)
        .await
        .unwrap();
    assert_eq!(t.status, JobStatus::Succeeded);
    assert!(t.ending.is_some());
    let fields = store
        .job_fields(job, &["pr".to_owned(), "left".to_owned()])
        .await
        .unwrap();
    assert_eq!(fields, [Some("2".to_owned()), Some("0".to_owned())]);
    // An ended job does not grow.
    let more: Vec<StepSpec> = serde_json::from_value(json!([{"id": "d", "agent": "sim"}])).unwrap();
    let further = Arc::new(grown.grow(more, &limits).unwrap());
    let further_json = serde_json::to_string(further.spec()).unwrap();
    let late = store
        .transition(
            job,
            &grown,
            &Cause::Grow {
                plan: &further,
                stored: &further_json,
            },
            NOW + 7,
        )
        .await
        .unwrap();
    assert_eq!(late.outcome, Outcome::Ended);
}
