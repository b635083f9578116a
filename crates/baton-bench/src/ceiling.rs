//! The bare ceiling: the same task → result → state-update loop as Baton, written directly
//! against async-nats and Redis with no orchestration logic. Same servers, same DAG
//! (a → b, c, d → e), same file-storage work-queue streams, a PubAck awaited before each
//! task is acked, one Lua transition per result, the next tasks published from it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Semaphore, oneshot};

use crate::procs::Proc;

const TASKS: &str = "CEILING_TASKS";
const RESULTS: &str = "CEILING_RESULTS";

/// Records a step; returns the steps to publish next. KEYS[1] = the job hash.
const SCRIPT: &str = r"
local step = ARGV[1]
local first = redis.call('HSETNX', KEYS[1], step, 1) == 1
redis.call('PEXPIRE', KEYS[1], 600000)
if step == 'a' then return {'b', 'c', 'd'} end
if step == 'e' then return {'done'} end
-- A redelivered result (its first handling failed to publish) must still lead on.
local left = tonumber(redis.call('HGET', KEYS[1], 'left'))
if first then left = redis.call('HINCRBY', KEYS[1], 'left', -1) end
if left == 0 then return {'e'} end
return {}
";

type Done = Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>;

/// Runs `jobs` jobs with at most `window` in flight; returns steps per second and the CPU
/// seconds each of `procs` used while they ran.
pub(crate) async fn run(
    nats_url: &str,
    redis_url: &str,
    jobs: u64,
    window: usize,
    worker_concurrency: usize,
    procs: &[Proc],
) -> anyhow::Result<(f64, Vec<(String, f64)>)> {
    let client = async_nats::connect(nats_url).await?;
    let js = jetstream::new(client.clone());
    for (name, subject) in [(TASKS, "ceiling.tasks"), (RESULTS, "ceiling.results")] {
        let _ = js.delete_stream(name).await;
        js.create_stream(stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    }
    let redis = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let script = redis::Script::new(SCRIPT);
    let done: Done = Arc::default();

    let worker = tokio::spawn(worker_loop(js.clone(), worker_concurrency));
    let coordinator = tokio::spawn(coordinator_loop(
        js.clone(),
        redis.clone(),
        script,
        done.clone(),
    ));

    // Job keys are per run: a later run must not find an earlier run's steps recorded.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let limit = Arc::new(Semaphore::new(window));
    let cpu_before = crate::procs::cpu_snapshot(procs);
    let started = Instant::now();
    let mut handles = Vec::new();
    for job in 0..jobs {
        let permit = limit.clone().acquire_owned().await?;
        let (sender, receiver) = oneshot::channel();
        done.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(job, sender);
        let mut redis = redis.clone();
        let js = js.clone();
        handles.push(tokio::spawn(async move {
            let _: () = redis::cmd("HSET")
                .arg(format!("ceiling:{{{run}-{job}}}"))
                .arg("left")
                .arg(3)
                .query_async(&mut redis)
                .await?;
            publish(&js, "ceiling.tasks", run, job, "a").await?;
            tokio::time::timeout(Duration::from_secs(120), receiver)
                .await
                .map_err(|_| anyhow::anyhow!("ceiling job {job} did not finish within 120 s"))??;
            drop(permit);
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = crate::procs::cpu_delta(procs, &cpu_before);
    worker.abort();
    coordinator.abort();
    for name in [TASKS, RESULTS] {
        let _ = js.delete_stream(name).await;
    }
    Ok(((jobs * 5) as f64 / elapsed, cpu))
}

async fn publish(
    js: &jetstream::Context,
    subject: &'static str,
    run: u128,
    job: u64,
    step: &str,
) -> anyhow::Result<()> {
    let payload = Bytes::from(format!("{run} {job} {step}"));
    js.publish(subject, payload).await?.await?;
    Ok(())
}

fn parse(payload: &[u8]) -> Option<(u128, u64, String)> {
    let mut parts = std::str::from_utf8(payload).ok()?.split(' ');
    let run = parts.next()?.parse().ok()?;
    let job = parts.next()?.parse().ok()?;
    Some((run, job, parts.next()?.to_owned()))
}

async fn pull(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
    subject: &str,
) -> anyhow::Result<consumer::pull::Stream> {
    let consumer = js
        .get_stream(stream)
        .await?
        .get_or_create_consumer(
            name,
            consumer::pull::Config {
                durable_name: Some(name.into()),
                filter_subject: subject.into(),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await?;
    consumer
        .stream()
        .max_messages_per_batch(256)
        .messages()
        .await
        .context("pull stream")
}

async fn worker_loop(js: jetstream::Context, concurrency: usize) -> anyhow::Result<()> {
    let limit = Arc::new(Semaphore::new(concurrency));
    // Re-open the pull stream if it ends, as Baton's runtime does.
    loop {
        let mut messages = pull(&js, TASKS, "ceiling-worker", "ceiling.tasks").await?;
        while let Some(message) = messages.next().await {
            // A pull stream reports transient trouble (e.g. a missed heartbeat) as an error
            // item and carries on.
            let Ok(message) = message else { continue };
            let permit = limit.clone().acquire_owned().await?;
            let js = js.clone();
            tokio::spawn(async move {
                if let Ok(ack) = js.publish("ceiling.results", message.payload.clone()).await
                    && ack.await.is_ok()
                {
                    let _ = message.ack().await;
                }
                drop(permit);
            });
        }
    }
}

async fn coordinator_loop(
    js: jetstream::Context,
    redis: redis::aio::MultiplexedConnection,
    script: redis::Script,
    done: Done,
) -> anyhow::Result<()> {
    let limit = Arc::new(Semaphore::new(512));
    let script = Arc::new(script);
    loop {
        let mut messages = pull(&js, RESULTS, "ceiling-coordinator", "ceiling.results").await?;
        while let Some(message) = messages.next().await {
            let Ok(message) = message else { continue };
            let permit = limit.clone().acquire_owned().await?;
            let (js, mut redis, script, done) =
                (js.clone(), redis.clone(), script.clone(), done.clone());
            tokio::spawn(async move {
                if let Some((run, job, step)) = parse(&message.payload) {
                    let next: Vec<String> = script
                        .key(format!("ceiling:{{{run}-{job}}}"))
                        .arg(&step)
                        .invoke_async(&mut redis)
                        .await
                        .unwrap_or_default();
                    for step in next {
                        if step == "done" {
                            if let Some(sender) = done.lock().ok().and_then(|mut d| d.remove(&job))
                            {
                                let _ = sender.send(());
                            }
                        } else if publish(&js, "ceiling.tasks", run, job, &step)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                let _ = message.ack().await;
                drop(permit);
            });
        }
    }
}
