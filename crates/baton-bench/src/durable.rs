//! The durable ceiling: the bare loop of `ceiling.rs` plus what any durable orchestrator
//! must pay, and nothing Baton-specific (no validation, no decision log, no metrics, no
//! prices, no retries, no timer loop: nothing is due in a run without faults):
//! - a `Nats-Msg-Id` on every task and result publish (a re-published attempt is stored once);
//! - one fenced Lua script (EVALSHA) per transition: a result counts only if its step runs at
//!   exactly that attempt; the script writes the step's status and output and reads what the
//!   next dispatch needs (the other needs' outputs), and ends the job after its last step;
//! - a durable timer per dispatch: `ZADD` to a sorted set when an attempt starts, `ZREM`
//!   when its result is recorded (inside the transition's script, so atomic with it);
//! - one event message per transition (core NATS, `ceiling.events.<job>.step`, and
//!   `ceiling.events.<job>.end` for the last, from which the client learns the job's end);
//! - submissions by NATS request/reply, answered by a responder in the coordinator loop.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, ensure};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::ceiling::{Ctx, MAX_IN_FLIGHT, RESULT_SUBJECT, RESULTS, decode, pull};

const SUBMIT: &str = "ceiling.submit";
const ENDS: &str = "ceiling.events.*.end";
/// The timer set (one for all jobs, as Baton's).
const TIMERS: &str = "ceiling:timers";
/// An attempt's deadline: Baton's default step timeout.
const TIMEOUT: Duration = Duration::from_secs(30);
/// TTL of a running job's state, and of a finished one's: Baton's defaults.
const RUNNING_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
const RETENTION_MS: u64 = 24 * 3600 * 1000;
/// Every job's input.
const INPUT: &[u8] = b"{}";

/// Creates a job (idempotent on its id) and starts its roots with their timers.
/// KEYS[1] = the job hash, KEYS[2] = the timer set. ARGV: deadline, job id, TTL (ms), number
/// of steps, input, number of roots, the roots, then each join and its number of needs.
const CREATE: &str = r"
if redis.call('HSETNX', KEYS[1], 'left', ARGV[4]) == 0 then return 'exists' end
local write = {'input', ARGV[5]}
local roots = tonumber(ARGV[6])
for i = 7, 6 + roots do
  write[#write + 1] = 's.' .. ARGV[i]
  write[#write + 1] = 'r1'
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2] .. ':' .. ARGV[i] .. ':1')
end
for i = 7 + roots, #ARGV, 2 do
  write[#write + 1] = 'w.' .. ARGV[i]
  write[#write + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[1], unpack(write))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 'created'
";

/// Records a result, fenced by attempt; starts the dependents it completes, with their
/// timers. KEYS[1] = the job hash, KEYS[2] = the timer set. ARGV: step, attempt, output,
/// deadline, job id, retention (ms), then for each dependent: its id, the number of its other
/// needs, their ids. Replies `fenced`, or `ok` / `done` (the job's last step) followed by each
/// started dependent and its other needs' outputs.
const RECORD: &str = r"
local job, step, attempt = KEYS[1], ARGV[1], ARGV[2]
-- One read: the fence (the step's state is 'r<attempt>' while that attempt runs), the steps
-- left, and the waiting count of each dependent that has other needs.
local fields = {'s.' .. step, 'left'}
local deps = {}
local i = 7
while i <= #ARGV do
  local others = tonumber(ARGV[i + 1])
  deps[#deps + 1] = {ARGV[i], i + 2, others}
  if others > 0 then fields[#fields + 1] = 'w.' .. ARGV[i] end
  i = i + 2 + others
end
local v = redis.call('HMGET', job, unpack(fields))
if v[1] ~= 'r' .. attempt then return {'fenced'} end
redis.call('ZREM', KEYS[2], ARGV[5] .. ':' .. step .. ':' .. attempt)
local left = tonumber(v[2]) - 1
local write = {'s.' .. step, 'ok', 'o.' .. step, ARGV[3], 'left', left}
local reply = {'ok'}
local f = 3
for _, d in ipairs(deps) do
  local ready = true
  if d[3] > 0 then
    local waiting = tonumber(v[f]) - 1
    f = f + 1
    write[#write + 1] = 'w.' .. d[1]
    write[#write + 1] = waiting
    ready = waiting == 0
  end
  if ready then
    write[#write + 1] = 's.' .. d[1]
    write[#write + 1] = 'r1'
    redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5] .. ':' .. d[1] .. ':1')
    reply[#reply + 1] = d[1]
    if d[3] > 0 then
      -- What the dispatch needs: the other needs' outputs (this step's is in hand).
      local names = {}
      for j = 0, d[3] - 1 do names[#names + 1] = 'o.' .. ARGV[d[2] + j] end
      for _, output in ipairs(redis.call('HMGET', job, unpack(names))) do
        reply[#reply + 1] = output
      end
    end
  end
end
if left == 0 then
  write[#write + 1] = 'status'
  write[#write + 1] = 'succeeded'
  reply[1] = 'done'
end
redis.call('HSET', job, unpack(write))
if left == 0 then redis.call('PEXPIRE', job, ARGV[6]) end
return reply
";

/// Subscribes to submissions and job ends (before any job starts) and spawns the coordinator
/// loop and the client's end listener.
pub(crate) async fn spawn(ctx: &Ctx) -> anyhow::Result<Vec<JoinHandle<anyhow::Result<()>>>> {
    let submits = ctx
        .client
        .queue_subscribe(SUBMIT, "ceiling-coordinator".into())
        .await?;
    let mut ends = ctx.client.subscribe(ENDS).await?;
    ctx.client.flush().await?;
    let () = redis::cmd("DEL")
        .arg(TIMERS)
        .query_async(&mut ctx.redis.clone())
        .await?;
    let client = ctx.clone();
    let listener = tokio::spawn(async move {
        while let Some(event) = ends.next().await {
            // `<job id> …`, where the id is `<run>-<job>`.
            let id = std::str::from_utf8(&event.payload)
                .ok()
                .and_then(|p| p.split(' ').next());
            if let Some(id) = id
                && let Some(job) = id.rsplit('-').next().and_then(|j| j.parse().ok())
                && id == client.job_id(job)
            {
                client.end(job);
            }
        }
        anyhow::Ok(())
    });
    Ok(vec![
        tokio::spawn(coordinator_loop(ctx.clone(), submits)),
        listener,
    ])
}

/// Checks a finished run: every attempt's timer was removed when its result was recorded.
pub(crate) async fn check(ctx: &Ctx) -> anyhow::Result<()> {
    let left: u64 = redis::cmd("ZCARD")
        .arg(TIMERS)
        .query_async(&mut ctx.redis.clone())
        .await?;
    ensure!(left == 0, "the durable ceiling left {left} timers behind");
    Ok(())
}

/// The client's side: submits a job by request/reply and waits for its end event.
pub(crate) async fn submit(ctx: &Ctx, job: u64) -> anyhow::Result<()> {
    let end = ctx.expect_end(job)?;
    let reply = ctx
        .client
        .request(SUBMIT, job.to_string().into())
        .await
        .context("durable ceiling submit")?;
    ensure!(
        reply.payload.starts_with(b"ok"),
        "durable ceiling submit failed: {}",
        String::from_utf8_lossy(&reply.payload)
    );
    ctx.wait_end(job, end).await
}

fn deadline() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now + TIMEOUT).as_millis() as u64
}

async fn coordinator_loop(ctx: Ctx, mut submits: async_nats::Subscriber) -> anyhow::Result<()> {
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let create = Arc::new(redis::Script::new(CREATE));
    let record = Arc::new(redis::Script::new(RECORD));
    // Re-open the pull stream if it ends, as Baton's coordinator does.
    loop {
        let mut results = pull(&ctx.js, RESULTS, "ceiling-coordinator", RESULT_SUBJECT).await?;
        loop {
            tokio::select! {
                request = submits.next() => {
                    let Some(request) = request else { return Ok(()) };
                    let permit = limit.clone().acquire_owned().await?;
                    let (ctx, create) = (ctx.clone(), create.clone());
                    tokio::spawn(async move {
                        let outcome = on_submit(&ctx, &create, &request).await;
                        if let Some(to) = request.reply {
                            let reply = match outcome {
                                Ok(id) => format!("ok {id}"),
                                Err(error) => format!("error {error:#}"),
                            };
                            let _ = ctx.client.publish(to, reply.into()).await;
                        }
                        drop(permit);
                    });
                }
                result = results.next() => {
                    let Some(result) = result else { break };
                    let Ok(result) = result else { continue };
                    let permit = limit.clone().acquire_owned().await?;
                    let (ctx, record) = (ctx.clone(), record.clone());
                    tokio::spawn(async move {
                        // A result that fails here is left unacked: the broker redelivers it.
                        if on_result(&ctx, &record, &result.payload).await.is_ok() {
                            let _ = result.ack().await;
                        }
                        drop(permit);
                    });
                }
            }
        }
    }
}

/// One event message per transition.
async fn event(ctx: &Ctx, id: &str, end: bool, what: String) -> anyhow::Result<()> {
    let subject = format!("ceiling.events.{id}.{}", if end { "end" } else { "step" });
    ctx.client.publish(subject, what.into()).await?;
    Ok(())
}

/// Creates the job, publishes its first tasks and its event; returns its id.
async fn on_submit(
    ctx: &Ctx,
    script: &redis::Script,
    request: &async_nats::Message,
) -> anyhow::Result<String> {
    let job: u64 = std::str::from_utf8(&request.payload)?.parse()?;
    let id = ctx.job_id(job);
    let plan = &ctx.plan;
    let roots: Vec<usize> = plan.roots().collect();
    let mut invocation = script.key(ctx.job_key(job));
    invocation
        .key(TIMERS)
        .arg(deadline())
        .arg(&id)
        .arg(RUNNING_TTL_MS)
        .arg(plan.len())
        .arg(INPUT)
        .arg(roots.len());
    for &root in &roots {
        invocation.arg(root);
    }
    for (join, needs) in plan.joins() {
        invocation.arg(join).arg(needs);
    }
    let status: String = invocation.invoke_async(&mut ctx.redis.clone()).await?;
    // A repeated submission of a job that exists changes nothing and publishes nothing.
    if status == "created" {
        for &root in &roots {
            ctx.publish_task(job, root, 1, INPUT).await?;
        }
        event(ctx, &id, false, format!("{id} created {roots:?}")).await?;
    }
    Ok(id)
}

/// Records a result, publishes the tasks it starts, then its event.
async fn on_result(ctx: &Ctx, script: &redis::Script, payload: &[u8]) -> anyhow::Result<()> {
    // Not ours: acked and dropped.
    let Some(result) = decode(payload) else {
        return Ok(());
    };
    let plan = &ctx.plan;
    let step = result.step;
    let dependents = plan.dependents.get(step).context("no such step")?;
    let id = ctx.job_id(result.job);
    let mut invocation = script.key(ctx.job_key(result.job));
    invocation
        .key(TIMERS)
        .arg(step)
        .arg(result.attempt)
        .arg(result.body)
        .arg(deadline())
        .arg(&id)
        .arg(RETENTION_MS);
    for &dependent in dependents {
        let others = plan.needs[dependent].iter().filter(|&&n| n != step);
        invocation.arg(dependent).arg(others.clone().count());
        for other in others {
            invocation.arg(*other);
        }
    }
    let reply: Vec<Option<Vec<u8>>> = invocation.invoke_async(&mut ctx.redis.clone()).await?;
    let mut reply = reply.into_iter();
    let status = reply.next().flatten().context("an empty reply")?;
    if status == b"fenced" {
        return Ok(());
    }
    let mut started = Vec::new();
    while let Some(dependent) = reply.next() {
        let dependent: usize = std::str::from_utf8(&dependent.context("no dependent")?)?.parse()?;
        // Its input: its needs' outputs, in plan order.
        let mut input = b"[".to_vec();
        for (n, &need) in plan.needs[dependent].iter().enumerate() {
            if n > 0 {
                input.push(b',');
            }
            if need == step {
                input.extend_from_slice(result.body);
            } else {
                let output = reply.next().flatten().ok_or_else(|| anyhow!("no output"))?;
                input.extend_from_slice(&output);
            }
        }
        input.push(b']');
        ctx.publish_task(result.job, dependent, 1, &input).await?;
        started.push(dependent);
    }
    let end = status == b"done";
    let what = format!("{id} {step} {} ok {started:?}", result.attempt);
    event(ctx, &id, end, what).await
}
