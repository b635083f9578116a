//! `baton dev`: the embedded default. Starts nats-server and redis-server on free loopback
//! ports in a temp dir, a coordinator and the demo agents in this process, runs the demo
//! plan, prints its progress and answer, and keeps serving until Ctrl-C (or exits at once
//! with `--once`). Everything it started is stopped and removed on the way out.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use async_nats::jetstream::consumer::pull;
use baton_agents::{sim, workers};
use baton_client::Client;
use baton_coordinator::{Coordinator, Options};
use baton_harness::{NatsServer, RedisServer};
use baton_protocol::AgentName;
use baton_protocol::messages::{Event, EventKind, JobStatus, SubmitRequest};
use baton_protocol::subject::{consumer, stream};
use baton_worker::{Agent, Worker, WorkerOptions};
use clap::Args;
use futures::StreamExt;
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const DEMO_PLAN: &str = include_str!("../../../examples/demo.yaml");
/// The agent types `baton dev` runs a worker for.
const AGENTS: [&str; 5] = ["nlu", "sql", "rag", "answer", "sim"];
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
    let interrupted = crate::process::shutdown_signal();
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
    println!("  coordinator and agents {} starting", AGENTS.join(", "));

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
    let client = crate::client::connect_with(&nats).await?;
    let waited = Instant::now();
    wait_ready(&client, Duration::from_secs(10)).await?;
    println!(
        "  ready after {:.0} ms: the coordinator answers requests and pulls results, and every \
         agent's worker has a pull waiting on its consumer",
        waited.elapsed().as_secs_f64() * 1000.0
    );
    let plan: serde_json::Value = serde_yaml_ng::from_str(DEMO_PLAN)?;
    let request = SubmitRequest {
        plan,
        input: json!({ "question": question }),
        idempotency_key: None,
        deadline_ms: None,
    };
    // Subscribed before submitting, so the first events are seen too (the job id is only
    // known from the reply).
    let mut events = client.events(None).await?;
    let submitted = tokio::time::Instant::now();
    let reply = client.submit(&request).await?;
    let job = reply.job_id;
    println!();
    println!("Question: {question}");
    println!("Job {job}: plan sales-question (nlu → sql ∥ rag → answer)");
    println!(
        "  (times are the coordinator's, from the job's creation; [n ms] is from a step's \
         dispatch to its result being recorded)"
    );
    // Offsets are the events' own times (`ts_ms`, stamped by the coordinator when it decided
    // each transition) from the job's creation, not when this process received them: so a
    // step's offset minus its dispatch's is exactly the latency printed beside it.
    let mut timeline = Timeline::default();
    let mut end_received = None;
    let follow = async {
        // Outcomes of parallel steps are recorded concurrently and may arrive out of order: each
        // event waits `REORDER` after it arrived, so that it is printed in time order (events
        // of the same millisecond in the order they came, which is cause before effect), a
        // delay a person cannot tell from live.
        const REORDER: Duration = Duration::from_millis(25);
        let mut pending: Vec<(tokio::time::Instant, Event)> = Vec::new();
        loop {
            pending.sort_by_key(|(_, event)| event.ts_ms);
            while let Some((arrived, _)) = pending.first()
                && arrived.elapsed() >= REORDER
            {
                let (arrived, event) = pending.remove(0);
                println!(
                    "  {:>8}  {}",
                    timeline.offset(&event),
                    baton_client::describe(&event.kind)
                );
                if matches!(
                    event.kind,
                    EventKind::JobSucceeded { .. }
                        | EventKind::JobFailed { .. }
                        | EventKind::JobCancelled { .. }
                ) {
                    end_received = Some(arrived);
                    return;
                }
            }
            let due = pending.first().map(|(arrived, _)| *arrived + REORDER);
            let wake = due.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                event = events.next() => {
                    let Some(event) = event else { return };
                    if event.job_id == job {
                        pending.push((tokio::time::Instant::now(), event));
                    }
                }
                () = tokio::time::sleep_until(wake), if due.is_some() => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), follow).await;
    let status = client.wait(job, Duration::from_secs(30)).await?;
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
    // The coordinator's figure, then what this client saw: its submit request to the end
    // event's arrival (a round trip more, and the connection's delivery).
    let seen = end_received.map(|at| {
        format!(
            "; {:.1} ms from sending the submit request to receiving the end",
            (at - submitted).as_secs_f64() * 1000.0
        )
    });
    match timeline.ended {
        Some(ended) => println!(
            "Answer ({ended} ms from job created to job succeeded{}):",
            seen.unwrap_or_default()
        ),
        None => println!("Answer:"),
    }
    println!("  {answer}");
    if let Some(sources) = output.get("sources") {
        println!("Sources: {sources}");
    }
    Ok(0)
}

/// Offsets of one job's events from its creation, on the coordinator's clock.
#[derive(Debug, Default)]
struct Timeline {
    /// `ts_ms` of `job_created` (or, should it be missed, of the first event seen).
    origin: Option<u64>,
    /// The end's offset, once seen.
    ended: Option<u64>,
}

impl Timeline {
    fn offset(&mut self, event: &Event) -> String {
        let origin = *self.origin.get_or_insert(event.ts_ms);
        let at = event.ts_ms.saturating_sub(origin);
        if matches!(
            event.kind,
            EventKind::JobSucceeded { .. }
                | EventKind::JobFailed { .. }
                | EventKind::JobCancelled { .. }
        ) {
            self.ended = Some(at);
        }
        format!("+{at} ms")
    }
}

/// Waits until the demo's first job will pay no startup: the coordinator answers requests and
/// has a pull waiting on the results consumer, and every agent's consumer has a worker's pull
/// waiting (a task published before that sits in the stream until the worker's first pull).
async fn wait_ready(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let pause = || tokio::time::sleep(Duration::from_millis(10));
    client.wait_ready(timeout).await?;
    let js = async_nats::jetstream::new(client.nats().clone());
    let mut consumers = vec![(stream::RESULTS, consumer::RESULTS.to_owned())];
    for agent in AGENTS {
        consumers.push((stream::TASKS, consumer::agent(&AgentName::new(agent)?)));
    }
    for (stream, name) in consumers {
        loop {
            let waiting = js
                .get_consumer_from_stream::<pull::Config, _, _>(name.as_str(), stream)
                .await
                .map(|consumer| consumer.cached_info().num_waiting);
            match waiting {
                Ok(waiting) if waiting > 0 => break,
                _ if Instant::now() < deadline => pause().await,
                Ok(_) => return Err(anyhow!("nobody pulls from consumer {name} of {stream}")),
                Err(error) => {
                    return Err(anyhow!("consumer {name} of {stream} is missing: {error}"));
                }
            }
        }
    }
    Ok(())
}
