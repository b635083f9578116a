//! Submits jobs and learns when they end, from the job-end events on `baton.jobs.ended.>`
//! (no polling, and none of the other events).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use baton_protocol::messages::{Event, EventKind, Reply, SubmitReply};
use baton_protocol::subject;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

/// How long a benchmark job may take before the run fails (an escalated job never ends).
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Waiters {
    waiting: HashMap<Uuid, oneshot::Sender<bool>>,
    /// Jobs that ended before anyone waited for them.
    ended: HashMap<Uuid, bool>,
}

#[derive(Clone)]
pub(crate) struct Tracker {
    client: async_nats::Client,
    waiters: Arc<Mutex<Waiters>>,
}

impl Tracker {
    pub(crate) async fn new(client: async_nats::Client) -> anyhow::Result<Self> {
        let mut ends = client.subscribe(subject::ENDED_ALL).await?;
        client.flush().await?;
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let shared = waiters.clone();
        tokio::spawn(async move {
            while let Some(message) = ends.next().await {
                let Ok(event) = serde_json::from_slice::<Event>(&message.payload) else {
                    continue;
                };
                let ok = match event.kind {
                    EventKind::JobSucceeded { .. } => true,
                    EventKind::JobFailed { .. } => false,
                    _ => continue,
                };
                let Ok(mut waiters) = shared.lock() else {
                    return;
                };
                match waiters.waiting.remove(&event.job_id) {
                    Some(sender) => {
                        let _ = sender.send(ok);
                    }
                    None => {
                        waiters.ended.insert(event.job_id, ok);
                    }
                }
            }
        });
        Ok(Self { client, waiters })
    }

    /// Submits a job and returns a future that resolves when it ends.
    pub(crate) async fn submit(
        &self,
        plan: &Value,
        input: &Value,
    ) -> anyhow::Result<oneshot::Receiver<bool>> {
        let body = serde_json::to_vec(&serde_json::json!({"plan": plan, "input": input}))?;
        let reply = self
            .client
            .request(subject::SUBMIT, body.into())
            .await
            .context("submit")?;
        let reply: Reply<SubmitReply> = serde_json::from_slice(&reply.payload)?;
        let job = reply
            .into_result()
            .map_err(|e| anyhow!("submit rejected: {}", e.message))?
            .job_id;
        let (sender, receiver) = oneshot::channel();
        let mut waiters = self
            .waiters
            .lock()
            .map_err(|_| anyhow!("tracker poisoned"))?;
        match waiters.ended.remove(&job) {
            Some(ok) => {
                let _ = sender.send(ok);
            }
            None => {
                waiters.waiting.insert(job, sender);
            }
        }
        Ok(receiver)
    }

    /// Submits and waits.
    pub(crate) async fn run(&self, plan: &Value, input: &Value) -> anyhow::Result<()> {
        let done = self.submit(plan, input).await?;
        match tokio::time::timeout(JOB_TIMEOUT, done).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(anyhow!("a benchmark job failed")),
            Ok(Err(_)) => Err(anyhow!("the job-end subscription ended")),
            Err(_) => Err(anyhow!(
                "a benchmark job did not end within {JOB_TIMEOUT:?} (escalated?)"
            )),
        }
    }
}
