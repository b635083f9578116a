//! Job state in Redis: one Lua script per transition (see `lua/`), the durable timer set,
//! the idempotency index and the escalation index. Everything Baton knows about a job is
//! here; the coordinator keeps nothing in memory that it could not reload.

use std::collections::HashMap;
use std::time::Duration;

use baton_protocol::keys::{self, TimerMember};
use baton_protocol::plan::{Plan, Step};
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
}

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

/// The reply of a job script.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Transition {
    /// What the script did: `created`, `exists`, `succeeded`, `retry`, `escalated`,
    /// `dispatched`, `resolved`, or why it did nothing: `stale`, `ended`, `missing`, `later`,
    /// `not_escalated`.
    pub(crate) outcome: String,
    /// The job's status after the script.
    pub(crate) status: String,
    /// Outcome-specific detail (next attempt, due time, current state).
    pub(crate) detail: String,
    /// The job input (JSON), present when something is to be dispatched.
    pub(crate) input: String,
    /// For a recorded result: when the attempt started and when the step's first attempt
    /// started (unix ms).
    pub(crate) started: Option<Started>,
    /// The time the script ran with (unix ms): when its decisions were taken.
    pub(crate) now: u64,
    /// Set when this transition ended the job.
    pub(crate) ending: Option<Ending>,
    /// Attempts the script started; Rust publishes their tasks.
    pub(crate) dispatch: Vec<Dispatch>,
}

/// What a new job starts from, besides its plan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewJob<'a> {
    /// The job input (JSON).
    pub(crate) input: &'a str,
    pub(crate) idempotency_key: Option<&'a str>,
    /// The submitter's W3C `traceparent`.
    pub(crate) traceparent: Option<&'a str>,
    /// Outputs a rerun reuses: (step, output JSON).
    pub(crate) reused: &'a [(String, String)],
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

/// What the script read when a transition ended its job (cjson leaves missing fields out).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub(crate) struct Ending {
    pub(crate) ui: Option<String>,
    pub(crate) uo: Option<String>,
    pub(crate) uc: Option<String>,
    /// The idempotency mapping to retire.
    pub(crate) idem: Option<String>,
    pub(crate) error: Option<String>,
}

/// Start times of an attempt and of its step, as recorded when they were dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Started {
    pub(crate) attempt_ms: u64,
    pub(crate) step_ms: u64,
}

impl Started {
    fn parse(raw: &str) -> Option<Self> {
        let (attempt, step) = raw.split_once(':')?;
        let attempt_ms = attempt.parse().ok()?;
        Some(Self {
            attempt_ms,
            step_ms: step.parse().unwrap_or(attempt_ms),
        })
    }
}

/// One attempt to publish.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dispatch {
    pub(crate) step: String,
    pub(crate) attempt: u32,
    /// A human-supplied input that replaces the mapping (escalation retry with `--input`).
    pub(crate) input_override: Option<String>,
    /// Outputs (JSON) of the step's needs, in the plan's order.
    pub(crate) needs: Vec<String>,
}

/// Arguments of the `record` script beyond the step.
pub(crate) struct Record<'a> {
    pub(crate) attempt: u32,
    pub(crate) kind: RecordKind,
    pub(crate) payload: &'a str,
    pub(crate) retryable: bool,
    pub(crate) delay_ms: u64,
    /// Tokens the result reported and their cost (nano-dollars).
    pub(crate) usage: Option<&'a baton_protocol::messages::Usage>,
    pub(crate) cost_nanos: u64,
}

/// A human's resolution of an escalated step.
pub(crate) struct Resolution<'a> {
    /// `output`, `retry` or `fail`.
    pub(crate) action: &'a str,
    /// The output, the replacement input (or ''), or the failure reason.
    pub(crate) payload: &'a str,
    /// The attempt a retry starts.
    pub(crate) next_attempt: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    Ok,
    Fail,
    Timeout,
}

struct Scripts {
    log_trim: Script,
    create: Script,
    record: Script,
    retry: Script,
    resolve: Script,
    reconcile: Script,
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

fn job_script(body: &str) -> Script {
    Script::new(&format!("{}\n{}", include_str!("lua/common.lua"), body))
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
            create: job_script(include_str!("lua/create.lua")),
            record: job_script(include_str!("lua/record.lua")),
            retry: job_script(include_str!("lua/retry.lua")),
            resolve: job_script(include_str!("lua/resolve.lua")),
            reconcile: Script::new(include_str!("lua/reconcile.lua")),
            claim: Script::new(include_str!("lua/timers_claim.lua")),
            settle: Script::new(include_str!("lua/timers_settle.lua")),
        };
        Ok(Self {
            conn,
            scripts: std::sync::Arc::new(scripts),
            ttl,
        })
    }

    /// The `EVALSHA` of a job script with the prelude's arguments; callers add their own.
    /// Arguments are written straight into the command's buffer, once.
    fn script_call(&self, script: &Script, job: Uuid, now: u64) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash())
            .arg(1)
            .arg(keys::job(job))
            .arg(now)
            .arg(self.ttl.running.as_millis() as u64)
            .arg(self.ttl.retention.as_millis() as u64);
        cmd
    }

    /// Runs a job script (built by `script_call`) after scheduling `timers`, in one round
    /// trip. The timers go first: if the process dies between the two, a timer exists for a
    /// transition that never happened (it fires, finds nothing due, and is dropped) — never
    /// the other way round.
    ///
    /// `settled` is a timer made moot by this transition (the timeout of an attempt whose
    /// result is being recorded); it is removed in the same round trip, after the script.
    /// Removing it even if the script fails is safe: the result being recorded is still in
    /// its work queue and is redelivered until it is recorded.
    async fn transition(
        &self,
        script: &Script,
        call: redis::Cmd,
        now: u64,
        timers: &[(TimerMember, u64)],
        settled: Option<&TimerMember>,
    ) -> Result<Transition, Error> {
        let mut pipe = redis::pipe();
        for (member, due) in timers {
            pipe.zadd(keys::TIMERS, member.encode(), *due).ignore();
        }
        pipe.add_command(call);
        if let Some(member) = settled {
            pipe.zrem(keys::TIMERS, member.encode()).ignore();
        }
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = match pipe.query_async(&mut conn).await {
            Err(error)
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                // Redis lost its script cache (restart or SCRIPT FLUSH): load and retry.
                script.load_async(&mut conn).await?;
                pipe.query_async(&mut conn).await?
            }
            other => other?,
        };
        let value = reply
            .into_iter()
            .next()
            .ok_or_else(|| Error::Reply("empty".into()))?;
        let mut transition = parse_transition(value)?;
        transition.now = now;
        Ok(transition)
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

    pub(crate) async fn create(
        &self,
        job: Uuid,
        plan: &Plan,
        new: NewJob<'_>,
        now: u64,
    ) -> Result<Transition, Error> {
        let NewJob {
            input,
            idempotency_key,
            traceparent,
            reused,
        } = new;
        let mut call = self.script_call(&self.scripts.create, job, now);
        call.arg(serde_json::to_string(plan.spec()).map_err(|e| Error::Reply(e.to_string()))?)
            .arg(input)
            .arg(idempotency_key.unwrap_or_default())
            .arg(traceparent.unwrap_or_default());
        push_steps(&mut call, plan.steps().iter(), now);
        call.arg(reused.len());
        for (step, output) in reused {
            call.arg(step).arg(output);
        }
        let reused_ids: std::collections::HashSet<&str> =
            reused.iter().map(|(step, _)| step.as_str()).collect();
        let timers: Vec<_> = initial_steps(plan, &reused_ids)
            .map(|step| {
                (
                    timer(job, step, 1, keys::TimerKind::Timeout),
                    self.first_check(step, now),
                )
            })
            .collect();
        self.transition(&self.scripts.create, call, now, &timers, None)
            .await
    }

    /// Records the outcome of one attempt of `step`.
    pub(crate) async fn record(
        &self,
        job: Uuid,
        plan: &Plan,
        step: &Step,
        record: Record<'_>,
        now: u64,
    ) -> Result<Transition, Error> {
        let kind = match record.kind {
            RecordKind::Ok => "ok",
            RecordKind::Fail => "fail",
            RecordKind::Timeout => "timeout",
        };
        let mut call = self.script_call(&self.scripts.record, job, now);
        call.arg(step.id.as_str())
            .arg(record.attempt)
            .arg(kind)
            .arg(record.payload)
            .arg(if record.retryable { "1" } else { "0" })
            .arg(step.retry.max_attempts)
            .arg(now + record.delay_ms)
            .arg(record.usage.map_or(0, |u| u.input_tokens))
            .arg(record.usage.map_or(0, |u| u.output_tokens))
            .arg(record.cost_nanos)
            .arg(
                record
                    .usage
                    .and_then(|u| u.model.as_deref())
                    .unwrap_or_default(),
            );
        let mut timers = Vec::new();
        if record.kind == RecordKind::Ok {
            push_steps(&mut call, plan.dependents(step.id.as_str()), now);
            push_list(&mut call, plan.sinks().map(|s| s.id.as_str()));
            for dep in plan.dependents(step.id.as_str()) {
                timers.push((
                    timer(job, dep, 1, keys::TimerKind::Timeout),
                    self.first_check(dep, now),
                ));
            }
        } else {
            let next = record.attempt + 1;
            timers.push((
                timer(job, step, next, keys::TimerKind::Retry),
                now + record.delay_ms,
            ));
        }
        {
            // A result settles its attempt's timeout; a fired timeout is settled by the timer loop.
            let settled = (record.kind != RecordKind::Timeout)
                .then(|| timer(job, step, record.attempt, keys::TimerKind::Timeout));
            self.transition(&self.scripts.record, call, now, &timers, settled.as_ref())
                .await
        }
    }

    /// Starts the attempt whose backoff ended.
    pub(crate) async fn fire_retry(
        &self,
        job: Uuid,
        step: &Step,
        attempt: u32,
        now: u64,
    ) -> Result<Transition, Error> {
        let mut call = self.script_call(&self.scripts.retry, job, now);
        call.arg(step.id.as_str())
            .arg(attempt)
            .arg(now + step.timeout_ms);
        push_list(&mut call, step.needs.iter().map(|n| n.as_str()));
        let timers = [(
            timer(job, step, attempt, keys::TimerKind::Timeout),
            self.first_check(step, now),
        )];
        self.transition(&self.scripts.retry, call, now, &timers, None)
            .await
    }

    /// Resolves an escalated step.
    pub(crate) async fn resolve(
        &self,
        job: Uuid,
        plan: &Plan,
        step: &Step,
        resolution: Resolution<'_>,
        now: u64,
    ) -> Result<Transition, Error> {
        let Resolution {
            action,
            payload,
            next_attempt,
        } = resolution;
        let mut call = self.script_call(&self.scripts.resolve, job, now);
        call.arg(step.id.as_str())
            .arg(action)
            .arg(payload)
            .arg(now + step.timeout_ms);
        push_steps(&mut call, plan.dependents(step.id.as_str()), now);
        push_list(&mut call, plan.sinks().map(|s| s.id.as_str()));
        push_list(&mut call, step.needs.iter().map(|n| n.as_str()));
        let timers: Vec<_> = match action {
            "output" => plan
                .dependents(step.id.as_str())
                .map(|dep| {
                    (
                        timer(job, dep, 1, keys::TimerKind::Timeout),
                        self.first_check(dep, now),
                    )
                })
                .collect(),
            "retry" => vec![(
                timer(job, step, next_attempt, keys::TimerKind::Timeout),
                self.first_check(step, now),
            )],
            _ => Vec::new(),
        };
        self.transition(&self.scripts.resolve, call, now, &timers, None)
            .await
    }

    /// When the timer of an attempt starting at `now` first fires: at its deadline, or
    /// earlier for the reconciler's first look at its task.
    pub(crate) fn first_check(&self, step: &Step, now: u64) -> u64 {
        now + step
            .timeout_ms
            .min(self.ttl.reconcile_after.as_millis() as u64)
    }

    /// How long a running job's keys live without a transition.
    pub(crate) fn running_ttl(&self) -> Duration {
        self.ttl.running
    }

    /// Interval between the reconciler's looks at a running attempt.
    pub(crate) fn reconcile_after(&self) -> Duration {
        self.ttl.reconcile_after
    }

    /// Stores the reconciler's note on `attempt` of `step`, if it is still running.
    pub(crate) async fn note_reconcile(
        &self,
        job: Uuid,
        step: &str,
        attempt: u32,
        note: &str,
    ) -> Result<(), Error> {
        let _: i64 = self
            .scripts
            .reconcile
            .key(keys::job(job))
            .arg(step)
            .arg(attempt)
            .arg(note)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
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

    pub(crate) async fn index_escalation(&self, id: &str, now: u64) -> Result<(), Error> {
        let _: i64 = redis::cmd("ZADD")
            .arg(keys::ESCALATIONS)
            .arg("NX")
            .arg(now)
            .arg(id)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
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

/// The steps a new job starts with: not reused, and every need reused (roots, without reuse).
pub(crate) fn initial_steps<'a>(
    plan: &'a Plan,
    reused: &'a std::collections::HashSet<&str>,
) -> impl Iterator<Item = &'a Step> + 'a {
    plan.steps().iter().filter(move |step| {
        !reused.contains(step.id.as_str())
            && step.needs.iter().all(|need| reused.contains(need.as_str()))
    })
}

fn timer(job: Uuid, step: &Step, attempt: u32, kind: keys::TimerKind) -> TimerMember {
    TimerMember {
        job,
        step: step.id.to_string(),
        attempt,
        kind,
    }
}

/// Appends steps in the layout `read_steps` in common.lua expects.
/// Step specs for a script: id, the deadline of an attempt starting at `now`, needs.
fn push_steps<'a>(call: &mut redis::Cmd, steps: impl Iterator<Item = &'a Step>, now: u64) {
    let steps: Vec<&Step> = steps.collect();
    call.arg(steps.len());
    for step in steps {
        call.arg(step.id.as_str())
            .arg(now + step.timeout_ms)
            .arg(step.needs.len());
        for need in &step.needs {
            call.arg(need.as_str());
        }
    }
}

fn push_list<'a>(call: &mut redis::Cmd, items: impl Iterator<Item = &'a str>) {
    let items: Vec<&str> = items.collect();
    call.arg(items.len());
    for item in items {
        call.arg(item);
    }
}

fn parse_transition(value: redis::Value) -> Result<Transition, Error> {
    let redis::Value::Array(items) = value else {
        return Err(Error::Reply(format!("{value:?}")));
    };
    let mut items = items.into_iter();
    let mut text = |name: &str| -> Result<String, Error> {
        match items.next() {
            None | Some(redis::Value::Nil) => Ok(String::new()),
            Some(value) => redis::from_redis_value::<String>(value)
                .map_err(|e| Error::Reply(format!("{name}: {e}"))),
        }
    };
    let outcome = text("outcome")?;
    let status = text("status")?;
    let detail = text("detail")?;
    let input = text("input")?;
    let started = Started::parse(&text("started")?);
    let ending = text("ending")?;
    let ending = (!ending.is_empty())
        .then(|| serde_json::from_str::<Ending>(&ending))
        .transpose()
        .map_err(|e| Error::Reply(format!("ending: {e}")))?;
    let mut dispatch = Vec::new();
    for item in items {
        let parts: Vec<String> =
            redis::from_redis_value(item).map_err(|e| Error::Reply(format!("dispatch: {e}")))?;
        let mut parts = parts.into_iter();
        let (Some(step), Some(attempt), Some(input_override)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::Reply("short dispatch item".into()));
        };
        dispatch.push(Dispatch {
            step,
            attempt: attempt
                .parse()
                .map_err(|_| Error::Reply(format!("attempt {attempt}")))?,
            input_override: (!input_override.is_empty()).then_some(input_override),
            needs: parts.collect(),
        });
    }
    Ok(Transition {
        outcome,
        status,
        detail,
        input,
        started,
        now: 0,
        ending,
        dispatch,
    })
}
