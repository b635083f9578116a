//! `baton watch` and `baton submit --follow`: a job's events and its agents' progress, live,
//! printed as a [`baton_client::Watcher`] sees them.

use std::time::Duration;

use anyhow::anyhow;
use baton_client::{Client, Update, Watcher, describe};
use baton_protocol::messages::{Event, JobStatus, Progress, StatusReply};
use clap::Args;
use uuid::Uuid;

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
    let client = crate::client::connect(nats).await?;
    let timeout = Duration::from_secs(args.timeout_secs);
    follow_job(&client, args.job, args.json, timeout).await
}

/// Prints a job that exists from its first decision: the decision log, then what happens
/// live (subscribed before the log is read, so nothing falls between).
pub(crate) async fn follow_job(
    client: &Client,
    job: Uuid,
    json: bool,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let watcher = Watcher::job(client, job).await?;
    let trace = client.trace(job).await?;
    // Offsets count from the job's creation even when the log has dropped its first entries.
    let watcher = watcher.with_history(trace.decisions);
    print(watcher, Some(trace.job.created_ms), json, timeout).await
}

/// Prints what the watcher sees until the job ends or escalates; returns the exit code (0
/// succeeded, 1 failed, 2 escalated). Times are printed as offsets from `created_ms` (the
/// job's creation on the coordinator's clock; when `None`, the first event printed, which is
/// `job_created` when following from the start).
pub(crate) async fn print(
    mut watcher: Watcher,
    created_ms: Option<u64>,
    json: bool,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let job = watcher.job_id();
    let mut clock = Clock(created_ms);
    let run = async {
        while let Some(update) = watcher.next().await? {
            match update {
                Update::Event(event) => print_event(&mut clock, &event, json),
                Update::Progress(progress) => print_progress(&mut clock, &progress, json),
                Update::Settled(status) => return Ok(exit_code(&status, json)),
            }
        }
        Err(anyhow!("the watch of job {job} ended early"))
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| anyhow!("job {job} did not finish within {}s", timeout.as_secs()))?
}

fn print_event(clock: &mut Clock, event: &Event, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(event) {
            crate::out(&format!("{line}\n"));
        }
        return;
    }
    crate::out(&format!(
        "{:>10}  {}\n",
        clock.offset(event.ts_ms),
        describe(&event.kind)
    ));
}

fn print_progress(clock: &mut Clock, progress: &Progress, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(progress) {
            crate::out(&format!("{line}\n"));
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
    crate::exit_code(status.status)
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
