//! Submits jobs and learns when they end, from the job-end events on `baton.jobs.ended.>`
//! (no polling, and none of the other events): per job, one request, its reply and one end.

use std::time::Duration;

use anyhow::{Context, anyhow};
use baton_client::{Client, JobEnd, JobEnds};
use baton_protocol::messages::SubmitRequest;
use serde_json::Value;

/// How long a benchmark job may take before the run fails (an escalated job never ends).
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub(crate) struct Tracker {
    client: Client,
    ends: JobEnds,
}

impl Tracker {
    pub(crate) async fn new(client: Client) -> anyhow::Result<Self> {
        let ends = JobEnds::subscribe(&client).await?;
        Ok(Self { client, ends })
    }

    /// Submits a job and returns a future that resolves when it ends.
    pub(crate) async fn submit(&self, plan: &Value, input: &Value) -> anyhow::Result<JobEnd> {
        let request = SubmitRequest {
            plan: plan.clone(),
            input: input.clone(),
            idempotency_key: None,
            deadline_ms: None,
        };
        let reply = self.client.submit(&request).await.context("submit")?;
        Ok(self.ends.wait(reply.job_id))
    }

    /// Submits and waits.
    pub(crate) async fn run(&self, plan: &Value, input: &Value) -> anyhow::Result<()> {
        let end = self.submit(plan, input).await?;
        match tokio::time::timeout(JOB_TIMEOUT, end).await {
            Ok(Ok(end)) if end.succeeded() => Ok(()),
            Ok(Ok(_)) => Err(anyhow!("a benchmark job failed")),
            Ok(Err(_)) => Err(anyhow!("the job-end subscription ended")),
            Err(_) => Err(anyhow!(
                "a benchmark job did not end within {JOB_TIMEOUT:?} (escalated?)"
            )),
        }
    }
}
