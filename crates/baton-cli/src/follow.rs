//! `baton watch` and `baton submit --follow`: a job's events and its agents' progress, live.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::anyhow;
use baton_protocol::messages::{
    Event, EventKind, JobStatus, Progress, StatusReply, StatusRequest, TraceReply, TraceRequest,
};
use baton_protocol::subject;
use clap::Args;
use futures::StreamExt;
use uuid::Uuid;

use crate::client::Client;

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Job id.
    pub job: Uuid,
    /// Print each event and progress message as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
}

pub(crate) async fn watch(nats: &baton_nats::NatsArgs, args: WatchArgs) -> anyhow::Result<i32> {
    let client = Client::connect(nats).await?;
    let watcher = Watcher::subscribe(&client, args.job, args.json).await?;
    // What happened before we subscribed: the decision log.
    let trace: TraceReply = client
        .request(subject::TRACE, &TraceRequest { job_id: args.job })
        .await?;
    // Offsets count from the job's creation even when the log has dropped its first entries.
    watcher
        .run(
            &client,
            trace.decisions,
            Some(trace.job.created_ms),
            Duration::from_secs(args.timeout_secs),
        )
        .await
}

/// Subscriptions to one job's events and progress, opened before anything can be missed.
pub(crate) struct Watcher {
    job: Uuid,
    json: bool,
    events: async_nats::Subscriber,
    progress: async_nats::Subscriber,
}

impl Watcher {
    pub(crate) async fn subscribe(client: &Client, job: Uuid, json: bool) -> anyhow::Result<Self> {
        let events = client.nats.subscribe(subject::events(job)).await?;
        let progress = client.nats.subscribe(subject::progress(job)).await?;
        // The subscriptions are in place once the server has them.
        client.nats.flush().await?;
        Ok(Self {
            job,
            json,
            events,
            progress,
        })
    }

    /// Subscribes to every job's events and progress, for a job not submitted yet; see
    /// [`Watcher::follow`].
    pub(crate) async fn subscribe_all(client: &Client) -> anyhow::Result<Self> {
        let events = client.nats.subscribe(subject::EVENTS_ALL).await?;
        let progress = client.nats.subscribe(subject::PROGRESS_ALL).await?;
        client.nats.flush().await?;
        Ok(Self {
            job: Uuid::nil(),
            json: false,
            events,
            progress,
        })
    }

    /// Follows `job` from its first event (the subscriptions predate it), `job_created`.
    pub(crate) async fn follow(
        mut self,
        client: &Client,
        job: Uuid,
        timeout: Duration,
    ) -> anyhow::Result<i32> {
        self.job = job;
        self.run(client, Vec::new(), None, timeout).await
    }

    /// Prints `history`, then events and progress as they come, until the job ends or
    /// escalates; returns the exit code (0 succeeded, 1 failed, 2 escalated). Times are
    /// printed as offsets from `created_ms` (the job's creation on the coordinator's clock;
    /// when `None`, the first event printed, which is `job_created` when following from the
    /// start).
    pub(crate) async fn run(
        mut self,
        client: &Client,
        history: Vec<Event>,
        created_ms: Option<u64>,
        timeout: Duration,
    ) -> anyhow::Result<i32> {
        let mut history = history;
        baton_protocol::messages::sort_decisions(&mut history);
        let mut clock = Clock(created_ms.or_else(|| history.first().map(|e| e.ts_ms)));
        let mut seen = HashSet::new();
        for event in history {
            if let Ok(key) = serde_json::to_string(&event) {
                seen.insert(key);
            }
            self.print_event(&mut clock, &event);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.status(client).await?;
            if status.status.is_terminal() || status.status == JobStatus::Escalated {
                // Events published up to now have arrived on the subscription: drain them.
                while let Ok(Some(message)) =
                    tokio::time::timeout(Duration::from_millis(200), self.events.next()).await
                {
                    self.on_event(&mut clock, &mut seen, &message.payload);
                }
                return Ok(exit_code(&status, self.json));
            }
            // Events first when both are ready: they usually caused the progress.
            tokio::select! {
                biased;
                message = self.events.next() => {
                    let Some(message) = message else {
                        return Err(anyhow!("event subscription closed"));
                    };
                    self.on_event(&mut clock, &mut seen, &message.payload);
                }
                message = self.progress.next() => {
                    if let Some(message) = message
                        && let Ok(progress) = serde_json::from_slice::<Progress>(&message.payload)
                        && progress.job_id == self.job
                    {
                        self.print_progress(&mut clock, &progress);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(anyhow!("job {} did not finish within {}s", self.job, timeout.as_secs()));
                }
            }
        }
    }

    async fn status(&self, client: &Client) -> anyhow::Result<StatusReply> {
        client
            .request(
                subject::STATUS,
                &StatusRequest {
                    job_id: Some(self.job),
                    idempotency_key: None,
                },
            )
            .await
    }

    fn on_event(&self, clock: &mut Clock, seen: &mut HashSet<String>, payload: &[u8]) {
        let Ok(event) = serde_json::from_slice::<Event>(payload) else {
            return;
        };
        if event.job_id != self.job {
            return;
        }
        if let Ok(key) = serde_json::to_string(&event)
            && !seen.insert(key)
        {
            return;
        }
        self.print_event(clock, &event);
    }

    fn print_event(&self, clock: &mut Clock, event: &Event) {
        if self.json {
            if let Ok(line) = serde_json::to_string(event) {
                crate::out(&format!(
                    "{line}
"
                ));
            }
            return;
        }
        crate::out(&format!(
            "{:>10}  {}\n",
            clock.offset(event.ts_ms),
            describe(&event.kind)
        ));
    }

    fn print_progress(&self, clock: &mut Clock, progress: &Progress) {
        if self.json {
            if let Ok(line) = serde_json::to_string(progress) {
                crate::out(&format!(
                    "{line}
"
                ));
            }
            return;
        }
        let data = match &progress.data {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        crate::out(&format!(
            "{:>10}  … {} (attempt {}) #{}: {data}\n",
            clock.offset(progress.ts_ms),
            progress.step_id,
            progress.attempt,
            progress.seq
        ));
    }
}

fn exit_code(status: &StatusReply, json: bool) -> i32 {
    if !json {
        match status.status {
            JobStatus::Succeeded => crate::out(&format!("job {} succeeded\n", status.job_id)),
            JobStatus::Escalated => crate::out(&format!(
                "job {} is waiting for a human: see `baton escalations list`\n",
                status.job_id
            )),
            other => crate::out(&format!(
                "job {} {}: {}\n",
                status.job_id,
                other.as_str(),
                status.error.as_deref().unwrap_or("")
            )),
        }
    }
    match status.status {
        JobStatus::Succeeded => 0,
        JobStatus::Escalated => 2,
        _ => 1,
    }
}

/// Offsets from the job's creation. Events are dated by the coordinator (`ts_ms`, when it
/// decided the transition), so a step's offset minus its dispatch's offset is the latency
/// printed beside it; progress is dated by the worker's clock.
struct Clock(Option<u64>);

impl Clock {
    fn offset(&mut self, ts_ms: u64) -> String {
        let start = *self.0.get_or_insert(ts_ms);
        format!("+{:.3}s", ts_ms.saturating_sub(start) as f64 / 1000.0)
    }
}

/// One line saying what an event records, for people.
pub(crate) fn describe(kind: &EventKind) -> String {
    match kind {
        EventKind::JobCreated { plan, steps } => match plan {
            Some(plan) => format!("job created: plan {plan}, {steps} steps"),
            None => format!("job created: {steps} steps"),
        },
        EventKind::StepDispatched {
            step_id,
            agent,
            attempt,
            input_bytes,
            input_sha256,
        } => {
            let mut line = format!("{step_id}: dispatched attempt {attempt} to {agent}");
            if let (Some(bytes), Some(sha)) = (input_bytes, input_sha256) {
                line.push_str(&format!(
                    " (input {bytes} B, sha256 {})",
                    &sha[..sha.len().min(12)]
                ));
            }
            line
        }
        EventKind::StepSucceeded {
            step_id,
            human: true,
            ..
        } => format!("{step_id}: succeeded with the output a human supplied"),
        EventKind::StepSucceeded {
            step_id,
            attempt,
            report,
            ..
        } => format!(
            "{step_id}: attempt {attempt} succeeded{}",
            report_suffix(report)
        ),
        EventKind::StepFailed {
            step_id,
            attempt,
            error,
            report,
        } => format!(
            "{step_id}: attempt {attempt} failed ({}{}): {}{}",
            error.class.as_str(),
            if error.retryable {
                ""
            } else {
                ", not retryable"
            },
            error.message,
            report_suffix(report)
        ),
        EventKind::RetryScheduled {
            step_id,
            attempt,
            delay_ms,
            class,
        } => match class {
            Some(class) => format!(
                "{step_id}: retry as attempt {attempt} in {delay_ms} ms (after {})",
                class.as_str()
            ),
            None => format!("{step_id}: retry as attempt {attempt} in {delay_ms} ms"),
        },
        EventKind::StepEscalated {
            step_id,
            attempt,
            escalation_id,
        } => format!("{step_id}: escalated to a human after attempt {attempt} ({escalation_id})"),
        EventKind::StepDeadLettered {
            step_id,
            attempt,
            agent,
            reason,
        } => format!("{step_id}: attempt {attempt} dead-lettered to baton.dlq.{agent} ({reason})"),
        EventKind::StepReused {
            step_id,
            source_job,
        } => format!("{step_id}: output reused from job {source_job}"),
        EventKind::EscalationResolved {
            step_id,
            action,
            by,
            reason,
            ..
        } => {
            let mut line = format!(
                "{step_id}: resolved by {} with {}",
                by.as_deref().unwrap_or("someone"),
                match action {
                    baton_protocol::messages::ResolveAction::Output => "a supplied output",
                    baton_protocol::messages::ResolveAction::Retry => "a retry",
                    baton_protocol::messages::ResolveAction::Fail => "fail",
                }
            );
            if let Some(reason) = reason {
                line.push_str(&format!(": {reason}"));
            }
            line
        }
        EventKind::ResultFenced {
            step_id,
            attempt,
            reason,
        } => format!("{step_id}: a result of attempt {attempt} was ignored ({reason})"),
        EventKind::StepRedispatched {
            step_id,
            attempt,
            reason,
        } => format!("{step_id}: attempt {attempt} published again: {reason}"),
        EventKind::JobSucceeded { usage } => format!("job succeeded{}", usage_suffix(usage)),
        EventKind::JobFailed { error, usage } => {
            format!("job failed: {error}{}", usage_suffix(usage))
        }
    }
}

fn report_suffix(report: &baton_protocol::messages::AttemptReport) -> String {
    let mut parts = Vec::new();
    if let Some(latency) = report.latency_ms {
        parts.push(format!("{latency} ms"));
    }
    if let Some(usage) = &report.usage {
        parts.push(format!(
            "{} in / {} out tokens, ${:.6}",
            usage.input_tokens, usage.output_tokens, usage.cost_usd
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" [{}]", parts.join(", "))
    }
}

fn usage_suffix(usage: &Option<baton_protocol::messages::UsageTotals>) -> String {
    match usage {
        Some(usage) => format!(
            " [{} in / {} out tokens, ${:.6}]",
            usage.input_tokens, usage.output_tokens, usage.cost_usd
        ),
        None => String::new(),
    }
}
