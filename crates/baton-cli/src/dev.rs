//! `baton dev`: the embedded default. Starts nats-server and redis-server on free loopback
//! ports in a temp dir, a coordinator and the demo agents in this process, runs the demo
//! plan, prints its progress and answer, and keeps serving until Ctrl-C (or exits at once
//! with `--once`). Everything it started is stopped and removed on the way out.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use baton_agents::{sim, workers};
use baton_coordinator::{Coordinator, Options};
use baton_harness::{NatsServer, RedisServer};
use baton_protocol::messages::{Event, EventKind, JobStatus, SubmitReply, SubmitRequest};
use baton_protocol::{AgentName, subject};
use baton_worker::{Agent, Worker, WorkerOptions};
use clap::Args;
use futures::StreamExt;
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::Client;

const DEMO_PLAN: &str = include_str!("../../../examples/demo.yaml");
const DEMO_QUESTION: &str = "What was the total revenue in Q3 2024 for the EMEA region, and what is our refund policy for enterprise customers?";

#[derive(Debug, Args)]
pub struct DevArgs {
    /// The question the demo pipeline answers.
    #[arg(long, default_value = DEMO_QUESTION)]
    pub question: String,
    /// Exit after the demo instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
}

pub(crate) async fn run(args: DevArgs) -> anyhow::Result<i32> {
    // Installed first, so Ctrl-C at any moment stops everything cleanly.
    let interrupted = baton_agents::cli::shutdown_signal();
    println!("baton dev: starting nats-server and redis-server on free loopback ports…");
    let (nats, redis) = tokio::task::spawn_blocking(|| -> anyhow::Result<_> {
        Ok((NatsServer::start()?, RedisServer::start()?))
    })
    .await??;
    println!(
        "  NATS  {}  (JetStream data in {})",
        nats.url(),
        nats.dir().display()
    );
    println!("  Redis {}", redis.url());

    let stop = CancellationToken::new();
    let mut services = JoinSet::new();
    let mut options = Options::default();
    options.nats.url = nats.url();
    options.redis_url = redis.url();
    let shutdown = stop.clone().cancelled_owned();
    services.spawn(async move {
        Coordinator::new(options)
            .run(shutdown)
            .await
            .map_err(anyhow::Error::from)
    });
    spawn_worker(&mut services, &nats.url(), "nlu", workers::Nlu, &stop)?;
    spawn_worker(
        &mut services,
        &nats.url(),
        "sql",
        workers::Sql::new()?,
        &stop,
    )?;
    spawn_worker(
        &mut services,
        &nats.url(),
        "rag",
        workers::Rag::new(),
        &stop,
    )?;
    spawn_worker(&mut services, &nats.url(), "answer", workers::Answer, &stop)?;
    spawn_worker(&mut services, &nats.url(), "sim", sim::Sim, &stop)?;
    println!("  coordinator and agents nlu, sql, rag, answer, sim running");

    let nats_url = nats.url();
    let mut interrupted = std::pin::pin!(interrupted);
    let outcome = tokio::select! {
        outcome = demo(&nats_url, &args.question) => Some(outcome),
        Some(Ok(Err(error))) = services.join_next() => Some(Err(error.context("a service stopped"))),
        () = &mut interrupted => None,
    };
    let was_interrupted = outcome.is_none();
    let code = match outcome {
        Some(Ok(code)) => code,
        Some(Err(error)) => {
            eprintln!("error: {error:#}");
            1
        }
        // Ctrl-C during the demo: stop cleanly.
        None => 0,
    };
    if !args.once && code == 0 && !was_interrupted {
        println!();
        println!("Baton is running. Try, from another terminal:");
        println!(
            "  baton --nats-url {} submit examples/flaky.json --input '{{\"sim\": {{\"fail\": \"error\", \"fail_attempts\": 2}}}}' --wait",
            nats.url()
        );
        println!(
            "  baton --nats-url {} submit examples/eventful.json --follow   (a retry, a timeout, an escalation)",
            nats.url()
        );
        println!(
            "  baton --nats-url {} trace <job id>   (the demo job above, for one)",
            nats.url()
        );
        println!("Press Ctrl-C to stop.");
        interrupted.as_mut().await;
    }
    println!("baton dev: stopping…");
    stop.cancel();
    while let Some(joined) = services.join_next().await {
        if let Ok(Err(error)) = joined {
            eprintln!("warning: {error:#}");
        }
    }
    drop(nats);
    drop(redis);
    println!("baton dev: stopped");
    Ok(code)
}

fn spawn_worker<A: Agent>(
    services: &mut JoinSet<anyhow::Result<()>>,
    nats_url: &str,
    agent: &str,
    logic: A,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut options = WorkerOptions::new(AgentName::new(agent)?);
    options.nats.url = nats_url.to_owned();
    options.drain_timeout = Duration::from_secs(5);
    let shutdown = stop.clone().cancelled_owned();
    services.spawn(async move {
        Worker::new(options, logic)
            .run(shutdown)
            .await
            .map_err(anyhow::Error::from)
    });
    Ok(())
}

async fn demo(nats_url: &str, question: &str) -> anyhow::Result<i32> {
    let nats = baton_nats::NatsOptions {
        url: nats_url.to_owned(),
        name: "baton-cli".to_owned(),
        ..Default::default()
    };
    let client = Client::connect_with(&nats).await?;
    let plan: serde_json::Value = serde_yaml_ng::from_str(DEMO_PLAN)?;
    let request = SubmitRequest {
        plan,
        input: json!({ "question": question }),
        idempotency_key: None,
    };
    // Subscribed before submitting, so the first dispatch is seen too (the job id is only
    // known from the reply).
    let mut events = client.nats.subscribe(subject::EVENTS_ALL).await?;
    let started = Instant::now();
    // The coordinator may still be subscribing: retry "no responders" for a few seconds.
    let reply: SubmitReply = loop {
        match client.request(subject::SUBMIT, &request).await {
            Ok(reply) => break reply,
            Err(error)
                if started.elapsed() < Duration::from_secs(10)
                    && error.to_string().contains("no coordinator") =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error),
        }
    };
    let job = reply.job_id;
    println!();
    println!("Question: {question}");
    println!("Job {job}: plan sales-question (nlu → sql ∥ rag → answer)");
    let follow = async {
        while let Some(message) = events.next().await {
            let Ok(event) = serde_json::from_slice::<Event>(&message.payload) else {
                continue;
            };
            if event.job_id != job {
                continue;
            }
            let at = started.elapsed().as_secs_f64() * 1000.0;
            println!("  {at:>7.1} ms  {}", crate::follow::describe(&event.kind));
            if matches!(
                event.kind,
                EventKind::JobSucceeded { .. } | EventKind::JobFailed { .. }
            ) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), follow).await;
    let status = crate::jobs::wait(&client, job, Duration::from_secs(30)).await?;
    if status.status != JobStatus::Succeeded {
        return Err(anyhow!(
            "the demo job ended {}: {}",
            status.status.as_str(),
            serde_json::to_string(&status)?
        ));
    }
    let output = status.output.context("the demo job has no output")?;
    let answer = output
        .get("answer")
        .and_then(|a| a.as_str())
        .unwrap_or_default();
    println!();
    println!(
        "Answer ({:.1} ms end to end):",
        started.elapsed().as_secs_f64() * 1000.0
    );
    println!("  {answer}");
    if let Some(sources) = output.get("sources") {
        println!("Sources: {sources}");
    }
    Ok(0)
}
