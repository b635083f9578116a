//! Job state in Redis: the reads a decision needs, the one fenced script that applies a
//! decision (`lua/apply.lua`), the durable timer set, the idempotency index and the escalation
//! index. Everything Baton knows about a job is here; the coordinator keeps nothing in memory
//! that it could not reload. What a transition *does* is decided in `baton-core`, not here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{
    Apply, Cause, Context, Decision, End, Expire, Facts, Field, Outcome, Skip, StepField,
};
use baton_protocol::keys;
use baton_protocol::messages::JobStatus;
use baton_protocol::plan::Plan;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use uuid::Uuid;

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Redis: {0}")]
    Redis(#[from] RedisError),
    #[error("cannot read a Redis TLS file: {0}")]
    Tls(String),
    #[error("unexpected reply from a Redis script: {0}")]
    Reply(String),
    /// A job's stored plan could not be read back.
    #[error("stored plan is unreadable: {0}")]
    Plan(String),
    /// The job kept changing under the decision: every try found other facts than it read.
    #[error("job {0} changed under {MAX_TRIES} decisions in a row")]
    Conflict(Uuid),
}

/// Tries of read → decide → apply before a transition gives up (the cause is retried later:
/// a result is redelivered, a timer fires again, a request gets `unavailable`).
pub(crate) const MAX_TRIES: u32 = 16;

/// TTLs applied on every transition, and when a running attempt is first looked at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ttl {
    /// While a job runs (refreshed on each transition).
    pub(crate) running: Duration,
    /// After a job ended.
    pub(crate) retention: Duration,
    /// How long an attempt runs before the reconciler checks on its task (and again at this
    /// interval until the attempt ends or times out).
    pub(crate) reconcile_after: Duration,
    /// Most decision-log bytes kept per job.
    pub(crate) max_log_bytes: u64,
}

/// One transition, as decided and applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Transition {
    /// The job's plan after it: the one it was decided on, or for a growth the grown one.
    pub(crate) plan: Arc<Plan>,
    /// What the decision did, or why it did nothing.
    pub(crate) outcome: Outcome,
    /// The job's status after it.
    pub(crate) status: JobStatus,
    /// The job input (JSON), present when something is to be dispatched.
    pub(crate) input: String,
    /// For a recorded result: when the attempt and its step started.
    pub(crate) started: Option<Started>,
    /// The time the decision was taken with (unix ms).
    pub(crate) now: u64,
    /// Set when this transition ended the job.
    pub(crate) ending: Option<Ending>,
    /// Attempts it started; the executor publishes their tasks.
    pub(crate) dispatch: Vec<Dispatch>,
    /// Due times of the timers it scheduled (the timer loop is woken for them).
    pub(crate) timers: Vec<u64>,
    /// Steps it skipped.
    pub(crate) skipped: Vec<Skip>,
    /// Steps a cancel ended, with the running attempt each had.
    pub(crate) cancelled: Vec<(String, Option<u32>)>,
    /// Planners whose sub-plan it finished.
    pub(crate) completed: Vec<String>,
    /// The failure a loop made of a successful attempt (its bound, a stall).
    pub(crate) failure: Option<baton_protocol::messages::Failure>,
    /// When a loop iterated: its body's outputs of the iteration that ended.
    pub(crate) loop_outputs: Vec<(String, String)>,
    /// Times the facts changed between read and apply (each was decided again).
    pub(crate) conflicts: u32,
}

pub(crate) use baton_core::Started;

/// What an ended job's end needs: token and cost totals, the idempotency mapping to retire,
/// and the error of a failed job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ending {
    pub(crate) ui: Option<String>,
    pub(crate) uo: Option<String>,
    pub(crate) uc: Option<String>,
    /// The idempotency mapping to retire.
    pub(crate) idem: Option<String>,
    pub(crate) error: Option<String>,
}

/// One attempt to publish.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dispatch {
    pub(crate) step: String,
    pub(crate) attempt: u32,
    /// A human-supplied input that replaces the mapping (escalation retry with `--input`).
    pub(crate) input_override: Option<String>,
    /// Outputs (JSON) of the step's needs, in the plan's order; `None` for a need that was
    /// skipped (it is absent from the step's input).
    pub(crate) needs: Vec<Option<String>>,
    /// Set when the attempt fails before it is published (its `when` could not be
    /// evaluated): the executor records this failure instead.
    pub(crate) fail: Option<String>,
    /// For a loop's head in a later iteration: `{"iteration", "feedback"}`, added to its
    /// input as `loop`.
    pub(crate) loop_input: Option<String>,
}

/// Decision-log entries of one job, to append in one command.
#[derive(Debug, Clone)]
pub(crate) struct LogBatch {
    pub(crate) job: Uuid,
    /// Newline-terminated JSON entries.
    pub(crate) entries: Vec<u8>,
    /// The batch holds the job's end, or events after it.
    pub(crate) ended: bool,
    /// Give the log the running TTL (again), as the job's transitions do for its hash: the
    /// log lives as long as the running job. False when this replica did so within the last
    /// half of that TTL, or wrote the job's end.
    pub(crate) expire: bool,
}

struct Scripts {
    log_trim: Script,
    apply: Script,
    claim: Script,
    settle: Script,
}

/// The Redis side of the coordinator. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    conn: ConnectionManager,
    scripts: std::sync::Arc<Scripts>,
    ttl: Ttl,
}

/// A Redis client from the URL, with the ACL user, password and TLS files of the options
/// laid over it.
fn client(options: &crate::Options) -> Result<redis::Client, Error> {
    use redis::IntoConnectionInfo;
    let mut info = options.redis_url.as_str().into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &options.redis_user {
        settings = settings.set_username(user);
    }
    if let Some(password) = &options.redis_password {
        settings = settings.set_password(password.expose());
    }
    info = info.set_redis_settings(settings);
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Error::Tls(format!("{}: {e}", path.display())))
    };
    let client_tls = match (&options.redis_tls_cert, &options.redis_tls_key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    let root_cert = options.redis_tls_ca.as_deref().map(read).transpose()?;
    if client_tls.is_none() && root_cert.is_none() {
        return Ok(redis::Client::open(info)?);
    }
    let certificates = redis::TlsCertificates {
        client_tls,
        root_cert,
    };
    Ok(redis::Client::build_with_tls(info, certificates)?)
}

impl Store {
    pub(crate) async fn connect(options: &crate::Options, ttl: Ttl) -> Result<Self, Error> {
        let client = client(options)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        let scripts = Scripts {
            log_trim: Script::new(include_str!("lua/log_trim.lua")),
            apply: Script::new(include_str!("lua/apply.lua")),
            claim: Script::new(include_str!("lua/timers_claim.lua")),
            settle: Script::new(include_str!("lua/timers_settle.lua")),
        };
        Ok(Self {
            conn,
            scripts: std::sync::Arc::new(scripts),
            ttl,
        })
    }

    /// `PING`: whether Redis answers (readiness, `/readyz`).
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Loads every script into Redis's script cache (`SCRIPT LOAD`, in the least-privilege
    /// ACL): at start, and when readiness sees Redis again after losing it. A script Redis
    /// lost anyway is loaded again by the call that meets `NOSCRIPT`.
    pub(crate) async fn load_scripts(&self) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        for script in [
            &self.scripts.log_trim,
            &self.scripts.apply,
            &self.scripts.claim,
            &self.scripts.settle,
        ] {
            script.load_async(&mut conn).await?;
        }
        Ok(())
    }

    /// The one way a job changes: reads the facts `cause` needs, decides with
    /// `baton_core::decide`, and applies the decision with the fenced script, in one round
    /// trip together with the timers and escalation index it needs first and the reads its
    /// dispatches need after. When a fact changed in between, reads and decides again
    /// (bounded by `MAX_TRIES`).
    pub(crate) async fn transition(
        &self,
        job: Uuid,
        plan: &Arc<Plan>,
        cause: &Cause<'_>,
        now: u64,
    ) -> Result<Transition, Error> {
        let mut ctx = Context {
            now,
            running_ttl_ms: self.ttl.running.as_millis() as u64,
            reconcile_after_ms: self.ttl.reconcile_after.as_millis() as u64,
        };
        let fields = baton_core::reads(plan, cause);
        let names: Vec<String> = fields.iter().map(Field::name).collect();
        // A new job needs no read: its decision is guarded by the job's absence.
        let mut read = !matches!(cause, Cause::Submitted(_));
        for conflicts in 0..MAX_TRIES {
            if conflicts > 0 {
                // The facts changed after `now`: a decision on the new facts is dated after
                // them, so no dispatch is dated before the event it waited for.
                ctx.now = ctx.now.max(crate::clock::now_ms());
            }
            let facts = if read {
                let values = self.job_fields(job, &names).await?;
                Facts::from_values(&fields, values)
            } else {
                Facts::default()
            };
            read = true;
            let now = ctx.now;
            let decision = baton_core::decide(job, plan, &facts, cause, &ctx);
            let Some(apply) = &decision.apply else {
                return Ok(transition(
                    plan,
                    cause,
                    decision,
                    Vec::new(),
                    &[],
                    now,
                    conflicts,
                ));
            };
            let post = post_reads(cause.plan_after(plan), &decision);
            if let Some(values) = self.apply(job, &decision, apply, &post, now).await? {
                return Ok(transition(
                    plan, cause, decision, values, &post, now, conflicts,
                ));
            }
        }
        Err(Error::Conflict(job))
    }

    /// Schedules the decision's timers and indexes its escalation, applies its writes if
    /// their facts still hold, then reads `post`, in one pipeline; removes the timer it
    /// settles. `None` when the facts changed (nothing was written; the timers and index
    /// entry that went first are harmless: a timer that finds nothing due is dropped, an
    /// index entry whose step is not escalated is skipped).
    async fn apply(
        &self,
        job: Uuid,
        decision: &Decision,
        apply: &Apply,
        post: &[String],
        now: u64,
    ) -> Result<Option<Vec<Option<String>>>, Error> {
        let mut pipe = redis::pipe();
        if !decision.timers.is_empty() {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(keys::TIMERS);
            for timer in &decision.timers {
                zadd.arg(timer.due).arg(timer.member.encode());
            }
            pipe.add_command(zadd).ignore();
        }
        if let Some(id) = &decision.escalation {
            pipe.cmd("ZADD")
                .arg(keys::ESCALATIONS)
                .arg("NX")
                .arg(now)
                .arg(id)
                .ignore();
        }
        pipe.add_command(self.apply_call(job, apply));
        if !post.is_empty() {
            pipe.cmd("HMGET").arg(keys::job(job)).arg(post);
        }
        if let Some(member) = &decision.settles {
            // Removing it even if the facts changed is safe: the result being recorded is
            // still in its work queue and is redelivered until it is recorded.
            pipe.zrem(keys::TIMERS, member.encode()).ignore();
        }
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = match pipe.query_async(&mut conn).await {
            Err(error)
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                // Redis lost its script cache (restart or SCRIPT FLUSH): load and retry.
                self.scripts.apply.load_async(&mut conn).await?;
                pipe.query_async(&mut conn).await?
            }
            other => other?,
        };
        let mut reply = reply.into_iter();
        let applied: i64 = reply
            .next()
            .map(redis::from_redis_value)
            .transpose()
            .map_err(|e| Error::Reply(format!("apply: {e}")))?
            .ok_or_else(|| Error::Reply("empty".into()))?;
        if applied != 1 {
            return Ok(None);
        }
        let values = match reply.next() {
            Some(value) if !post.is_empty() => redis::from_redis_value(value)
                .map_err(|e| Error::Reply(format!("reads after apply: {e}")))?,
            _ => Vec::new(),
        };
        Ok(Some(values))
    }

    /// The `EVALSHA` of `lua/apply.lua` for one decision's writes.
    fn apply_call(&self, job: Uuid, apply: &Apply) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.scripts.apply.get_hash())
            .arg(1)
            .arg(keys::job(job));
        match apply.expire {
            Expire::Keep => cmd.arg(""),
            Expire::Running => cmd.arg(self.ttl.running.as_millis() as u64),
            Expire::Retention => cmd.arg(self.ttl.retention.as_millis() as u64),
        };
        cmd.arg(apply.guards.len());
        for (field, value) in &apply.guards {
            cmd.arg(field.name()).arg(value.as_deref().unwrap_or(""));
        }
        cmd.arg(apply.counts.len());
        for (field, by, zero) in &apply.counts {
            cmd.arg(field.name())
                .arg(*by)
                .arg(if *zero { "1" } else { "0" });
        }
        cmd.arg(apply.set.len());
        for (field, value) in &apply.set {
            cmd.arg(field.name()).arg(value.as_str());
        }
        cmd.arg(apply.delete.len());
        for field in &apply.delete {
            cmd.arg(field.name());
        }
        cmd.arg(apply.add.len());
        for (field, amount) in &apply.add {
            cmd.arg(field.name()).arg(*amount);
        }
        cmd
    }

    /// Appends decision-log entries, one batch per job (entries newline-terminated, in
    /// order), in one round trip. `ended` says a batch holds the job's end (or events after
    /// it): the log then takes the retention; otherwise, with `expire`, it gets the running TTL.
    /// Logs that outgrew `max_log_bytes` are trimmed after.
    pub(crate) async fn append_log(&self, batches: &[LogBatch]) -> Result<(), Error> {
        let mut pipe = redis::pipe();
        for batch in batches {
            let key = keys::log(batch.job);
            pipe.append(&key, batch.entries.as_slice());
            if batch.ended {
                pipe.pexpire(&key, self.ttl.retention.as_millis() as i64)
                    .ignore();
            } else if batch.expire {
                pipe.pexpire(&key, self.ttl.running.as_millis() as i64)
                    .ignore();
            }
        }
        let mut conn = self.conn.clone();
        let lengths: Vec<u64> = pipe.query_async(&mut conn).await?;
        for (batch, length) in batches.iter().zip(lengths) {
            if length > self.ttl.max_log_bytes {
                let mut invocation = self.scripts.log_trim.key(keys::log(batch.job));
                invocation
                    .key(keys::job(batch.job))
                    .arg(self.ttl.max_log_bytes);
                let dropped: u64 = invocation.invoke_async(&mut conn).await?;
                tracing::debug!(job = %batch.job, dropped, "Decision log trimmed");
            }
        }
        Ok(())
    }

    /// The job's decision log: newline-terminated JSON entries, oldest first.
    pub(crate) async fn log(&self, job: Uuid) -> Result<Vec<u8>, Error> {
        let log: Option<Vec<u8>> = redis::cmd("GET")
            .arg(keys::log(job))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(log.unwrap_or_default())
    }

    /// How long a running job's keys live without a transition.
    pub(crate) fn running_ttl(&self) -> Duration {
        self.ttl.running
    }

    /// Interval between the reconciler's looks at a running attempt.
    pub(crate) fn reconcile_after(&self) -> Duration {
        self.ttl.reconcile_after
    }
    /// Claims up to `batch` due timers for `lease`; returns them with their lease score and
    /// the earliest score still in the set.
    pub(crate) async fn claim_timers(
        &self,
        now: u64,
        lease: Duration,
        batch: usize,
    ) -> Result<(Vec<String>, u64, Option<u64>), Error> {
        let lease_ms = lease.as_millis() as u64;
        let mut reply: Vec<String> = self
            .scripts
            .claim
            .key(keys::TIMERS)
            .arg(now)
            .arg(lease_ms)
            .arg(batch)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let next = reply
            .pop()
            .and_then(|score| score.parse::<f64>().ok())
            .map(|s| s as u64);
        Ok((reply, now + lease_ms, next))
    }

    /// Removes a claimed timer, or moves it to `reschedule`, unless it was rescheduled since.
    pub(crate) async fn settle_timer(
        &self,
        member: &str,
        lease_score: u64,
        reschedule: Option<u64>,
    ) -> Result<(), Error> {
        let _: i64 = self
            .scripts
            .settle
            .key(keys::TIMERS)
            .arg(member)
            .arg(lease_score)
            .arg(reschedule.map(|s| s.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Maps an idempotency mapping key (see `keys::idempotency`, `keys::enqueued`) to `job`
    /// unless it is taken; returns the job it maps to and the mapping's age.
    pub(crate) async fn claim_idempotency(
        &self,
        mapping: &str,
        job: Uuid,
    ) -> Result<(Uuid, Duration), Error> {
        let ttl = self.ttl.running.as_millis() as u64;
        let (_, owner, remaining): (Option<String>, Option<String>, i64) = redis::pipe()
            .cmd("SET")
            .arg(mapping)
            .arg(job.to_string())
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .cmd("GET")
            .arg(mapping)
            .cmd("PTTL")
            .arg(mapping)
            .query_async(&mut self.conn.clone())
            .await?;
        let owner = owner.ok_or_else(|| Error::Reply("idempotency mapping vanished".into()))?;
        let owner = Uuid::parse_str(&owner).map_err(|e| Error::Reply(e.to_string()))?;
        let age = Duration::from_millis(ttl.saturating_sub(u64::try_from(remaining).unwrap_or(0)));
        Ok((owner, age))
    }

    /// Points a mapping whose job is gone at a new job, unless someone changed it meanwhile.
    pub(crate) async fn replace_idempotency(
        &self,
        mapping: &str,
        stale: Uuid,
        job: Uuid,
    ) -> Result<Uuid, Error> {
        let owner: String = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
               redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end \
             return redis.call('GET', KEYS[1])",
        )
        .key(mapping)
        .arg(stale.to_string())
        .arg(job.to_string())
        .arg(self.ttl.running.as_millis() as u64)
        .invoke_async(&mut self.conn.clone())
        .await?;
        Uuid::parse_str(&owner).map_err(|e| Error::Reply(e.to_string()))
    }

    /// Gives a finished job's idempotency mapping the job's retention, so both expire
    /// together.
    /// Gives an ended job's idempotency mapping the job's retention.
    pub(crate) async fn retire_idempotency(&self, mapping: &str) -> Result<(), Error> {
        let _: i64 = redis::cmd("PEXPIRE")
            .arg(mapping)
            .arg(self.ttl.retention.as_millis() as u64)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    pub(crate) async fn job_exists(&self, job: Uuid) -> Result<bool, Error> {
        Ok(redis::cmd("EXISTS")
            .arg(keys::job(job))
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// The job an idempotency mapping points at.
    pub(crate) async fn idempotency_key(&self, mapping: &str) -> Result<Option<Uuid>, Error> {
        let existing: Option<String> = redis::cmd("GET")
            .arg(mapping)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(existing.and_then(|id| Uuid::parse_str(&id).ok()))
    }

    /// The whole job hash (empty when the job does not exist).
    pub(crate) async fn job(&self, job: Uuid) -> Result<HashMap<String, String>, Error> {
        Ok(redis::cmd("HGETALL")
            .arg(keys::job(job))
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// Selected fields of the job hash.
    pub(crate) async fn job_fields(
        &self,
        job: Uuid,
        fields: &[String],
    ) -> Result<Vec<Option<String>>, Error> {
        Ok(redis::cmd("HMGET")
            .arg(keys::job(job))
            .arg(fields)
            .query_async(&mut self.conn.clone())
            .await?)
    }

    pub(crate) async fn unindex_escalation(&self, id: &str) -> Result<(), Error> {
        let _: i64 = redis::cmd("ZREM")
            .arg(keys::ESCALATIONS)
            .arg(id)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Escalation ids, oldest first.
    pub(crate) async fn escalation_ids(&self, limit: usize) -> Result<Vec<String>, Error> {
        let stop = i64::try_from(limit)
            .unwrap_or(i64::MAX)
            .saturating_sub(1)
            .max(0);
        Ok(redis::cmd("ZRANGE")
            .arg(keys::ESCALATIONS)
            .arg(0)
            .arg(stop)
            .query_async(&mut self.conn.clone())
            .await?)
    }
}

/// The fields a decision's effects read once it is applied: the job input and, for each
/// started attempt, its input override and the outputs of its needs not already in hand
/// (each field once); for the job's end, its totals and idempotency mapping. Outputs of
/// succeeded steps never change, so reading them after the write is as good as before.
fn post_reads(plan: &Plan, decision: &Decision) -> Vec<String> {
    let mut fields = Vec::new();
    if !decision.dispatch.is_empty() {
        if decision.input.is_none() {
            fields.push(Field::Input.name());
        }
        let mut seen = std::collections::HashSet::new();
        for start in &decision.dispatch {
            fields.push(Field::step(StepField::Input, &start.step).name());
            if plan.loop_of_head(&start.step).is_some() {
                fields.push(Field::step(StepField::LoopInput, &start.step).name());
            }
            let Some(step) = plan.step(&start.step) else {
                continue;
            };
            for need in &step.needs {
                let known = decision.known.iter().any(|(id, _)| id == need.as_str());
                if !known && seen.insert(need.as_str()) {
                    fields.push(Field::step(StepField::Output, need.as_str()).name());
                }
            }
        }
    }
    if decision.ends.is_some() {
        for field in [
            Field::UsageInput,
            Field::UsageOutput,
            Field::UsageCost,
            Field::Idempotency,
        ] {
            fields.push(field.name());
        }
    }
    fields
}

/// The transition a decision made, with what was read after it was applied.
fn transition(
    decided_on: &Arc<Plan>,
    cause: &Cause<'_>,
    decision: Decision,
    values: Vec<Option<String>>,
    post: &[String],
    now: u64,
    conflicts: u32,
) -> Transition {
    let plan = cause.plan_after(decided_on).clone();
    let read: HashMap<&str, String> = post
        .iter()
        .map(String::as_str)
        .zip(values)
        .filter_map(|(field, value)| value.map(|value| (field, value)))
        .collect();
    let get = |field: Field| read.get(field.name().as_str()).cloned();
    let input = decision
        .input
        .clone()
        .or_else(|| get(Field::Input))
        .unwrap_or_else(|| {
            if decision.dispatch.is_empty() {
                String::new()
            } else {
                "null".to_owned()
            }
        });
    let Decision {
        outcome,
        status,
        dispatch,
        timers,
        ends,
        started,
        known,
        skipped,
        cancelled,
        completed,
        failure,
        loop_outputs,
        ..
    } = decision;
    let ending = ends.map(|end| Ending {
        ui: get(Field::UsageInput),
        uo: get(Field::UsageOutput),
        uc: get(Field::UsageCost),
        idem: get(Field::Idempotency),
        error: match end {
            End::Succeeded => None,
            End::Failed { error } => Some(error),
            End::Cancelled { reason } => reason,
        },
    });
    let dispatch = dispatch
        .into_iter()
        .map(|start| {
            let needs = plan
                .step(&start.step)
                .map(|step| step.needs.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|need| {
                    known
                        .iter()
                        .find(|(id, _)| id == need.as_str())
                        .map(|(_, output)| output.clone())
                        .or_else(|| get(Field::step(StepField::Output, need.as_str())))
                })
                .collect();
            Dispatch {
                input_override: get(Field::step(StepField::Input, &start.step)),
                loop_input: get(Field::step(StepField::LoopInput, &start.step)),
                step: start.step,
                attempt: start.attempt,
                needs,
                fail: start.fail,
            }
        })
        .collect();
    Transition {
        plan,
        outcome,
        status,
        input,
        started,
        now,
        ending,
        dispatch,
        timers: timers.iter().map(|t| t.due).collect(),
        skipped,
        cancelled,
        completed,
        failure,
        loop_outputs,
        conflicts,
    }
}

#[cfg(test)]
mod tests;
