//! `baton submit` and `baton status`. What `status` prints is the coordinator's status reply
//! (`StatusReply`, the job's description in the public contract) as JSON.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use baton_client::{Client, Watcher};
use baton_protocol::messages::{StatusRequest, SubmitRequest};
use baton_protocol::{Limits, Plan};
use clap::Args;
use serde_json::Value;
use uuid::Uuid;

use crate::ConfigError;
use crate::client::json_arg;

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Plan file, JSON or YAML (`-` reads stdin).
    pub plan: PathBuf,
    /// Job input, as JSON.
    #[arg(long)]
    pub input: Option<String>,
    /// A repeated submit with the same key returns the same job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Publish durably to `baton.jobs.enqueue` (stored even while no coordinator runs)
    /// instead of request/reply; the job is followed by its idempotency key.
    #[arg(long)]
    pub durable: bool,
    /// Wait until the job ends or escalates, then print its status.
    #[arg(long)]
    pub wait: bool,
    /// Print the job's events and its agents' progress live until it ends or escalates
    /// (exit 0 succeeded, 1 failed, 2 escalated).
    #[arg(long, conflicts_with_all = ["wait", "durable"])]
    pub follow: bool,
    /// Longest wait with --wait, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// The job must end within this many milliseconds of its acceptance; then it is
    /// cancelled and ends failed with deadline_exceeded.
    #[arg(long)]
    pub deadline_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Job id.
    #[arg(required_unless_present = "idempotency_key")]
    pub job: Option<Uuid>,
    /// Name the job by its idempotency key instead.
    #[arg(long, conflicts_with = "job")]
    pub idempotency_key: Option<String>,
    /// Why, for the decision log.
    #[arg(long)]
    pub reason: Option<String>,
    /// Who cancels it (default: $USER).
    #[arg(long)]
    pub by: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Job id.
    #[arg(required_unless_present = "idempotency_key")]
    pub job: Option<Uuid>,
    /// Look the job up by its idempotency key instead.
    #[arg(long, conflicts_with = "job")]
    pub idempotency_key: Option<String>,
}

/// Reads a plan file (JSON or YAML) and checks it locally, so a bad plan fails before
/// anything is sent. The coordinator checks again: it trusts no client.
pub(crate) fn read_plan(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the plan from stdin")?
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read plan {}: {e}", path.display())))?
    };
    let plan: Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| ConfigError(format!("plan {} is not JSON or YAML: {e}", path.display())))?;
    Plan::from_value(plan.clone(), &Limits::default()).map_err(|e| {
        ConfigError(format!(
            "invalid plan {}: {e} ({})",
            path.display(),
            e.code()
        ))
    })?;
    Ok(plan)
}

pub(crate) async fn submit(nats: &baton_nats::NatsArgs, args: SubmitArgs) -> anyhow::Result<i32> {
    let plan = read_plan(&args.plan)?;
    let input = match &args.input {
        Some(raw) => json_arg("--input", raw)?,
        None => Value::Null,
    };
    let client = crate::client::connect(nats).await?;
    let timeout = Duration::from_secs(args.timeout_secs);
    if args.durable {
        let key = args
            .idempotency_key
            .unwrap_or_else(|| Uuid::now_v7().to_string());
        let request = SubmitRequest {
            plan,
            input,
            idempotency_key: Some(key.clone()),
            deadline_ms: args.deadline_ms,
        };
        // Stored even if no coordinator ever ran here: declare the streams first (a no-op
        // when they exist).
        client.declare_streams().await?;
        client.enqueue(&request, None).await?;
        println!("enqueued with idempotency key {key}");
        if !args.wait {
            return Ok(0);
        }
        let job = client.wait_for_key(&key, timeout).await?;
        return finish(&client, job, timeout).await;
    }
    let request = SubmitRequest {
        plan,
        input,
        idempotency_key: args.idempotency_key,
        deadline_ms: args.deadline_ms,
    };
    if args.follow {
        let (reply, watcher) = Watcher::submit(&client, &request).await?;
        println!("{}", reply.job_id);
        return crate::follow::print(watcher, None, false, timeout).await;
    }
    let reply = client.submit(&request).await?;
    println!("{}", reply.job_id);
    if !args.wait {
        return Ok(0);
    }
    finish(&client, reply.job_id, timeout).await
}

async fn finish(client: &Client, job: Uuid, timeout: Duration) -> anyhow::Result<i32> {
    let status = client.wait(job, timeout).await?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(crate::exit_code(status.status))
}

/// `baton cancel`: exit 0 when the job was cancelled or had already ended (which it says).
pub(crate) async fn cancel(nats: &baton_nats::NatsArgs, args: CancelArgs) -> anyhow::Result<i32> {
    let client = crate::client::connect(nats).await?;
    let request = baton_protocol::messages::CancelRequest {
        job_id: args.job,
        idempotency_key: args.idempotency_key,
        reason: args.reason,
        by: args.by.or_else(|| std::env::var("USER").ok()),
    };
    match client.cancel(&request).await {
        Ok(reply) => println!("job {} cancelled", reply.job_id),
        Err(baton_client::Error::Rejected {
            code: baton_protocol::ErrorCode::AlreadyEnded,
            message,
        }) => println!("{message}"),
        Err(error) => return Err(error.into()),
    }
    Ok(0)
}

pub(crate) async fn status(nats: &baton_nats::NatsArgs, args: StatusArgs) -> anyhow::Result<i32> {
    let client = crate::client::connect(nats).await?;
    let request = StatusRequest {
        job_id: args.job,
        idempotency_key: args.idempotency_key,
    };
    let status = client.status_of(&request).await?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(0)
}
