//! `baton replay` (re-run the orchestrator's decisions offline and compare them with the
//! record) and `baton rerun` (a new job that reuses a job's outputs up to a step).

use std::time::Duration;

use baton_protocol::messages::RerunRequest;
use clap::Args;
use uuid::Uuid;

use crate::ConfigError;

#[cfg(feature = "dev")]
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Job id.
    pub job: Uuid,
    /// Replay against this plan (JSON or YAML file) instead of the recorded one, e.g. to see
    /// what a changed retry policy would have decided differently.
    #[arg(long)]
    pub plan: Option<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Exit 0 when every decision matches the record, 1 when one does not. (Feature `dev`: it
/// starts a scratch redis-server with the test harness.)
#[cfg(feature = "dev")]
pub(crate) async fn replay(nats: &baton_nats::NatsArgs, args: ReplayArgs) -> anyhow::Result<i32> {
    let plan = args
        .plan
        .as_deref()
        .map(crate::jobs::read_plan)
        .transpose()?;
    let client = crate::client::connect(nats).await?;
    let trace = client.trace(args.job).await?;
    // The scripts run on a scratch Redis of our own: nothing touches the deployment's.
    let redis = tokio::task::spawn_blocking(baton_harness::RedisServer::start)
        .await?
        .map_err(|e| anyhow::anyhow!("cannot start a scratch redis-server: {e}"))?;
    let report = baton_coordinator::replay(&trace, plan, &redis.url()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.matches() {
        println!(
            "job {}: all {} decisions match the record",
            report.job_id, report.checked
        );
    } else {
        println!(
            "job {}: {} of {} decisions differ from the record",
            report.job_id,
            report.mismatches.len(),
            report.checked
        );
        for mismatch in &report.mismatches {
            println!(
                "  {:<16} recorded: {:<45} replayed: {}",
                mismatch.scope,
                mismatch.recorded.as_deref().unwrap_or("(nothing)"),
                mismatch.replayed.as_deref().unwrap_or("(nothing)")
            );
        }
    }
    Ok(if report.matches() { 0 } else { 1 })
}

#[derive(Debug, Args)]
pub struct RerunArgs {
    /// The job to rerun.
    pub job: Uuid,
    /// The first step to run again: it and everything downstream of it run live; every
    /// other step keeps its recorded output.
    #[arg(long)]
    pub from: String,
    /// A repeated rerun with the same key returns the same new job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Print the new job's events and progress until it ends or escalates.
    #[arg(long)]
    pub follow: bool,
}

pub(crate) async fn rerun(nats: &baton_nats::NatsArgs, args: RerunArgs) -> anyhow::Result<i32> {
    if args.from.is_empty() {
        return Err(ConfigError("--from needs a step id".into()).into());
    }
    let client = crate::client::connect(nats).await?;
    let request = RerunRequest {
        job_id: args.job,
        from: args.from,
        idempotency_key: args.idempotency_key,
    };
    let reply = client.rerun(&request).await?;
    println!("{}", reply.job_id);
    if !args.follow {
        return Ok(0);
    }
    crate::follow::follow_job(&client, reply.job_id, false, Duration::from_secs(3600)).await
}
