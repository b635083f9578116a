//! The ceilings: the task → result → state loop Baton runs, written directly against
//! async-nats and Redis with none of Baton's code, on the same servers and the same plans.
//! This module holds what both share (the plan as they run it, the streams, the message
//! format, the worker loop, one timed run) and the bare ceiling itself: file-storage
//! work-queue streams, a PubAck awaited before each task is acked, one Lua transition per
//! result, the next tasks published from it, and nothing else. The durable ceiling
//! (`durable.rs`) adds what any durable orchestrator must pay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{Semaphore, oneshot};

use crate::procs::Proc;

const TASKS: &str = "CEILING_TASKS";
pub(crate) const RESULTS: &str = "CEILING_RESULTS";
const TASK_SUBJECT: &str = "ceiling.tasks";
pub(crate) const RESULT_SUBJECT: &str = "ceiling.results";
/// Results (and, in the durable ceiling, submissions) handled at once by the coordinator
/// loop: the bench's `baton coordinator --max-in-flight`.
pub(crate) const MAX_IN_FLIGHT: usize = 512;
/// How long a job may take before the run fails.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// Records a step of the bare ceiling; returns the steps to publish next, or `done` after
/// the sink. KEYS[1] = the job hash; ARGV[1] = the step, then each of its dependents followed
/// by `1` if that is its only need, else `0` (a join, counted down in `w.<dependent>`).
const BARE_SCRIPT: &str = r"
local first = redis.call('HSETNX', KEYS[1], ARGV[1], 1) == 1
redis.call('PEXPIRE', KEYS[1], 600000)
if #ARGV == 1 then return {'done'} end
local next = {}
for i = 2, #ARGV, 2 do
  if ARGV[i + 1] == '1' then
    next[#next + 1] = ARGV[i]
  else
    -- A redelivered result (its first handling failed to publish) must still lead on.
    local field = 'w.' .. ARGV[i]
    local left = tonumber(redis.call('HGET', KEYS[1], field))
    if first then left = redis.call('HINCRBY', KEYS[1], field, -1) end
    if left == 0 then next[#next + 1] = ARGV[i] end
  end
end
return next
";

/// Which ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bare,
    Durable,
}

impl Kind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Bare => "bare ceiling",
            Kind::Durable => "durable ceiling",
        }
    }
}

/// A plan as the ceilings run it: steps by index, with their needs and dependents, built
/// from the JSON plan Baton is given. It must have one sink, whose end is the job's end.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) needs: Vec<Vec<usize>>,
    pub(crate) dependents: Vec<Vec<usize>>,
}

impl Plan {
    pub(crate) fn from_json(plan: &Value) -> anyhow::Result<Self> {
        let steps = plan["steps"].as_array().context("a plan has steps")?;
        let index: HashMap<&str, usize> = steps
            .iter()
            .enumerate()
            .filter_map(|(i, step)| Some((step["id"].as_str()?, i)))
            .collect();
        let mut needs = vec![Vec::new(); steps.len()];
        let mut dependents = vec![Vec::new(); steps.len()];
        for (i, step) in steps.iter().enumerate() {
            for need in step["needs"].as_array().into_iter().flatten() {
                let need = need
                    .as_str()
                    .and_then(|n| index.get(n))
                    .copied()
                    .context("a need that is no step")?;
                needs[i].push(need);
                dependents[need].push(i);
            }
        }
        let sinks = dependents.iter().filter(|d| d.is_empty()).count();
        ensure!(sinks == 1, "a ceiling plan has one sink, not {sinks}");
        Ok(Self { needs, dependents })
    }

    pub(crate) fn len(&self) -> usize {
        self.needs.len()
    }

    pub(crate) fn roots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(|&i| self.needs[i].is_empty())
    }

    /// Steps with more than one need, with their number of needs.
    pub(crate) fn joins(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.len())
            .filter(|&i| self.needs[i].len() > 1)
            .map(|i| (i, self.needs[i].len()))
    }
}

/// A task or a result on the wire: `<job> <step> <attempt> <body>`, where the body is the
/// step's input or output (empty in the bare ceiling). A worker answers with the task's
/// payload: its output is its input, as Baton's sim agent's is.
pub(crate) struct Message<'a> {
    pub(crate) job: u64,
    pub(crate) step: usize,
    pub(crate) attempt: u32,
    pub(crate) body: &'a [u8],
}

pub(crate) fn encode(job: u64, step: usize, attempt: u32, body: &[u8]) -> Bytes {
    let mut payload = format!("{job} {step} {attempt} ").into_bytes();
    payload.extend_from_slice(body);
    payload.into()
}

pub(crate) fn decode(payload: &[u8]) -> Option<Message<'_>> {
    let mut parts = payload.splitn(4, |&b| b == b' ');
    let mut number = || std::str::from_utf8(parts.next()?).ok()?.parse::<u64>().ok();
    let (job, step, attempt) = (number()?, number()?, number()?);
    Some(Message {
        job,
        step: usize::try_from(step).ok()?,
        attempt: u32::try_from(attempt).ok()?,
        body: parts.next().unwrap_or_default(),
    })
}

type Done = Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>;

/// What the loops of one run share.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) kind: Kind,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) redis: redis::aio::MultiplexedConnection,
    pub(crate) plan: Arc<Plan>,
    /// Job ids are per run: a later run must not find an earlier run's steps recorded.
    run: u128,
    done: Done,
}

impl Ctx {
    pub(crate) fn job_id(&self, job: u64) -> String {
        format!("{}-{job}", self.run)
    }

    pub(crate) fn job_key(&self, job: u64) -> String {
        format!("ceiling:{{{}}}", self.job_id(job))
    }

    /// Registers a job before it starts; [`Ctx::wait_end`] waits for [`Ctx::end`].
    pub(crate) fn expect_end(&self, job: u64) -> anyhow::Result<oneshot::Receiver<()>> {
        let (sender, receiver) = oneshot::channel();
        self.done
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .insert(job, sender);
        Ok(receiver)
    }

    pub(crate) fn end(&self, job: u64) {
        if let Some(sender) = self.done.lock().ok().and_then(|mut d| d.remove(&job)) {
            let _ = sender.send(());
        }
    }

    pub(crate) async fn wait_end(
        &self,
        job: u64,
        end: oneshot::Receiver<()>,
    ) -> anyhow::Result<()> {
        tokio::time::timeout(JOB_TIMEOUT, end).await.map_err(|_| {
            anyhow!(
                "{} job {job} did not finish within {JOB_TIMEOUT:?}",
                self.kind.label()
            )
        })??;
        Ok(())
    }

    /// Publishes a task and awaits its PubAck; the durable ceiling's carries a `Nats-Msg-Id`.
    pub(crate) async fn publish_task(
        &self,
        job: u64,
        step: usize,
        attempt: u32,
        body: &[u8],
    ) -> anyhow::Result<()> {
        let payload = encode(job, step, attempt, body);
        let ack = match self.kind {
            Kind::Bare => self.js.publish(TASK_SUBJECT, payload).await?,
            Kind::Durable => {
                let id = format!("task:{}:{step}:{attempt}", self.job_id(job));
                let message = PublishMessage::build().payload(payload).message_id(id);
                self.js.send_publish(TASK_SUBJECT, message).await?
            }
        };
        ack.await?;
        Ok(())
    }
}

/// Where the ceilings run.
pub(crate) struct Spec<'a> {
    pub(crate) nats_url: &'a str,
    pub(crate) redis_url: &'a str,
    pub(crate) worker_concurrency: usize,
    /// Processes whose CPU time is read around the timed part.
    pub(crate) procs: &'a [Proc],
}

/// What one timed run runs.
pub(crate) struct Load<'a> {
    pub(crate) plan: &'a Value,
    /// Jobs started at least, and for at least `min_duration`.
    pub(crate) jobs: u64,
    pub(crate) min_duration: Duration,
    pub(crate) window: usize,
}

/// What one run measured.
pub(crate) struct Measured {
    pub(crate) driven: crate::Driven,
    /// Steps run.
    pub(crate) steps: u64,
    /// CPU seconds each of the run's processes used during the timed part.
    pub(crate) cpu: Vec<(String, f64)>,
}

/// Runs a ceiling on fresh streams: its worker and coordinator loops in this process, jobs
/// started by [`crate::drive`].
pub(crate) async fn run(kind: Kind, spec: &Spec<'_>, load: &Load<'_>) -> anyhow::Result<Measured> {
    let client = async_nats::connect(spec.nats_url).await?;
    let js = jetstream::new(client.clone());
    for (name, subject) in [(TASKS, TASK_SUBJECT), (RESULTS, RESULT_SUBJECT)] {
        let _ = js.delete_stream(name).await;
        js.create_stream(stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            // Baton's (and the server's default) duplicate window for message ids.
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await?;
    }
    let redis = redis::Client::open(spec.redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let ctx = Ctx {
        kind,
        client,
        js,
        redis,
        plan: Arc::new(Plan::from_json(load.plan)?),
        run: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
        done: Done::default(),
    };
    let mut loops = vec![tokio::spawn(worker_loop(
        ctx.clone(),
        spec.worker_concurrency,
    ))];
    match kind {
        Kind::Bare => loops.push(tokio::spawn(bare_coordinator_loop(ctx.clone()))),
        Kind::Durable => loops.extend(crate::durable::spawn(&ctx).await?),
    }

    let cpu_before = crate::procs::cpu_snapshot(spec.procs);
    let driven = crate::drive(load.jobs, load.min_duration, load.window, |job| {
        let ctx = ctx.clone();
        async move {
            match ctx.kind {
                Kind::Bare => bare_job(&ctx, job).await,
                Kind::Durable => crate::durable::submit(&ctx, job).await,
            }
        }
    })
    .await;
    let cpu = crate::procs::cpu_delta(spec.procs, &cpu_before);
    for handle in loops {
        handle.abort();
    }
    for name in [TASKS, RESULTS] {
        let _ = ctx.js.delete_stream(name).await;
    }
    let driven = driven?;
    if kind == Kind::Durable {
        crate::durable::check(&ctx).await?;
    }
    Ok(Measured {
        steps: driven.jobs * ctx.plan.len() as u64,
        driven,
        cpu,
    })
}

/// Opens a long-lived pull stream on a durable consumer.
pub(crate) async fn pull(
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

/// Pulls tasks and answers each with its own payload; the result's PubAck is awaited before
/// the task is acked. The durable ceiling's results carry a `Nats-Msg-Id` per attempt.
async fn worker_loop(ctx: Ctx, concurrency: usize) -> anyhow::Result<()> {
    let limit = Arc::new(Semaphore::new(concurrency));
    // Re-open the pull stream if it ends, as Baton's runtime does.
    loop {
        let mut messages = pull(&ctx.js, TASKS, "ceiling-worker", TASK_SUBJECT).await?;
        while let Some(message) = messages.next().await {
            // A pull stream reports transient trouble (e.g. a missed heartbeat) as an error
            // item and carries on.
            let Ok(message) = message else { continue };
            let permit = limit.clone().acquire_owned().await?;
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let payload = message.payload.clone();
                let published = match ctx.kind {
                    Kind::Bare => ctx.js.publish(RESULT_SUBJECT, payload).await,
                    Kind::Durable => {
                        let id = decode(&payload).map(|task| {
                            format!(
                                "result:{}:{}:{}",
                                ctx.job_id(task.job),
                                task.step,
                                task.attempt
                            )
                        });
                        let mut result = PublishMessage::build().payload(payload);
                        if let Some(id) = id {
                            result = result.message_id(id);
                        }
                        ctx.js.send_publish(RESULT_SUBJECT, result).await
                    }
                };
                if let Ok(ack) = published
                    && ack.await.is_ok()
                {
                    let _ = message.ack().await;
                }
                drop(permit);
            });
        }
    }
}

/// Starts a bare job (its join counts, then its first tasks) and waits for its end.
async fn bare_job(ctx: &Ctx, job: u64) -> anyhow::Result<()> {
    let end = ctx.expect_end(job)?;
    let mut joins = ctx.plan.joins().peekable();
    if joins.peek().is_some() {
        let mut hset = redis::cmd("HSET");
        hset.arg(ctx.job_key(job));
        for (step, needs) in joins {
            hset.arg(format!("w.{step}")).arg(needs);
        }
        let () = hset.query_async(&mut ctx.redis.clone()).await?;
    }
    for root in ctx.plan.roots() {
        ctx.publish_task(job, root, 1, b"").await?;
    }
    ctx.wait_end(job, end).await
}

async fn bare_coordinator_loop(ctx: Ctx) -> anyhow::Result<()> {
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let script = Arc::new(redis::Script::new(BARE_SCRIPT));
    loop {
        let mut messages = pull(&ctx.js, RESULTS, "ceiling-coordinator", RESULT_SUBJECT).await?;
        while let Some(message) = messages.next().await {
            let Ok(message) = message else { continue };
            let permit = limit.clone().acquire_owned().await?;
            let (ctx, script) = (ctx.clone(), script.clone());
            tokio::spawn(async move {
                if let Some(result) = decode(&message.payload) {
                    let mut invocation = script.key(ctx.job_key(result.job));
                    invocation.arg(result.step);
                    for &dependent in &ctx.plan.dependents[result.step] {
                        let alone = ctx.plan.needs[dependent].len() == 1;
                        invocation.arg(dependent).arg(if alone { "1" } else { "0" });
                    }
                    let next: Vec<String> = invocation
                        .invoke_async(&mut ctx.redis.clone())
                        .await
                        .unwrap_or_default();
                    for step in next {
                        if step == "done" {
                            ctx.end(result.job);
                        } else if let Ok(step) = step.parse()
                            && ctx.publish_task(result.job, step, 1, b"").await.is_err()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_read_from_the_json_baton_is_given() {
        let plan = Plan::from_json(&crate::dag()).unwrap();
        assert_eq!(plan.len(), 5);
        assert_eq!(plan.roots().collect::<Vec<_>>(), vec![0]);
        assert_eq!(plan.dependents[0], vec![1, 2, 3]);
        assert_eq!(plan.needs[4], vec![1, 2, 3]);
        assert_eq!(plan.joins().collect::<Vec<_>>(), vec![(4, 3)]);
        let chain = Plan::from_json(&crate::chain(3)).unwrap();
        assert_eq!(chain.joins().count(), 0);
        assert_eq!(chain.dependents[1], vec![2]);
        let two_sinks = serde_json::json!({"steps": [{"id": "a"}, {"id": "b"}]});
        assert!(Plan::from_json(&two_sinks).is_err());
    }

    #[test]
    fn messages_round_trip_with_any_body() {
        let payload = encode(7, 3, 2, b"[{} ,{}]");
        let message = decode(&payload).unwrap();
        assert_eq!(
            (message.job, message.step, message.attempt, message.body),
            (7, 3, 2, &b"[{} ,{}]"[..])
        );
        assert_eq!(decode(&encode(1, 0, 1, b"")).unwrap().body, b"");
        assert!(decode(b"x 1 1 ").is_none());
    }
}
