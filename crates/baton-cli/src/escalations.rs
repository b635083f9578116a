//! `baton escalations list | show <id> | resolve <id> (--output JSON | --retry [--input JSON] | --fail)`.

use baton_protocol::messages::{EscalationView, ResolveAction, ResolveEscalationRequest};
use clap::{ArgGroup, Args, Subcommand};

use crate::ConfigError;
use crate::client::json_arg;

#[derive(Debug, Subcommand)]
pub enum EscalationsCommand {
    /// Open escalations, oldest first.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Most escalations to list.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One escalation with its error and the input of its last attempt.
    Show { id: String },
    /// Resolve an escalation: supply the step's output, retry it, or fail the job.
    Resolve(ResolveArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("action").required(true).args(["output", "retry", "fail"])))]
pub struct ResolveArgs {
    pub id: String,
    /// Use this JSON as the step's output and continue the job.
    #[arg(long)]
    pub output: Option<String>,
    /// Run the step again with a fresh retry budget.
    #[arg(long)]
    pub retry: bool,
    /// With --retry: replace the step's input with this JSON.
    #[arg(long, requires = "retry")]
    pub input: Option<String>,
    /// Fail the job.
    #[arg(long)]
    pub fail: bool,
    /// Why (recorded with --fail, and in the job's decision log).
    #[arg(long)]
    pub reason: Option<String>,
    /// Who resolves it, for the job's decision log (default: $USER).
    #[arg(long, env = "USER", hide_env_values = true)]
    pub by: Option<String>,
}

pub(crate) async fn run(
    nats: &baton_nats::NatsArgs,
    command: EscalationsCommand,
) -> anyhow::Result<i32> {
    // Check arguments before connecting.
    let resolve = match &command {
        EscalationsCommand::Resolve(args) => Some(resolve_request(args)?),
        _ => None,
    };
    let client = crate::client::connect(nats).await?;
    match command {
        EscalationsCommand::List { json, limit } => {
            let reply = client.escalations(Some(limit)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else {
                print_table(&reply.escalations);
            }
        }
        EscalationsCommand::Show { id } => {
            let view = client.escalation(&id).await?;
            println!("{}", serde_json::to_string_pretty(&view)?);
        }
        EscalationsCommand::Resolve(_) => {
            let request = resolve.ok_or_else(|| ConfigError("no resolution".into()))?;
            let reply = client.resolve(&request).await?;
            println!(
                "resolved {} ({:?}); job {} is now {}",
                request.id,
                reply.action,
                reply.job_id,
                reply.job_status.as_str()
            );
        }
    }
    Ok(0)
}

fn resolve_request(args: &ResolveArgs) -> anyhow::Result<ResolveEscalationRequest> {
    let (action, output, input) = match (&args.output, args.retry, args.fail) {
        (Some(output), false, false) => (
            ResolveAction::Output,
            Some(json_arg("--output", output)?),
            None,
        ),
        (None, true, false) => {
            let input = args
                .input
                .as_deref()
                .map(|raw| json_arg("--input", raw))
                .transpose()?;
            (ResolveAction::Retry, None, input)
        }
        (None, false, true) => (ResolveAction::Fail, None, None),
        _ => {
            return Err(ConfigError("give exactly one of --output, --retry, --fail".into()).into());
        }
    };
    Ok(ResolveEscalationRequest {
        id: args.id.clone(),
        action,
        output,
        input,
        reason: args.reason.clone(),
        by: args.by.clone(),
    })
}

fn print_table(escalations: &[EscalationView]) {
    if escalations.is_empty() {
        println!("no open escalations");
        return;
    }
    println!("{:<75} {:<12} {:>8}  ERROR", "ID", "AGENT", "ATTEMPTS");
    for view in escalations {
        let error = view
            .error
            .as_ref()
            .map(|e| e.message.as_str())
            .unwrap_or("");
        let error: String = error.chars().take(60).collect();
        println!(
            "{:<75} {:<12} {:>8}  {}",
            view.id, view.agent, view.attempts, error
        );
    }
}
