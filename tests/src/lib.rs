//! The fixture every end-to-end test uses: a [`Fleet`] of real servers (nats-server and
//! redis-server on free ports in temp dirs), coordinators and workers — in this process, or
//! as separate processes of the built binaries — plus client helpers and an event recorder.
//! Everything is stopped and cleaned up on drop. Requests to the coordinator go through
//! [`baton_client`] ([`Fleet::baton`]); raw requests (for tests of the wire) through
//! [`Fleet::request_raw`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod otlp;
pub mod scrape;

use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use baton_client::Feed;
use baton_coordinator::{Coordinator, Options};
use baton_harness::{NatsServer, RedisOptions, RedisServer};
use baton_protocol::messages::{Event, JobStatus, StatusReply, StatusRequest, SubmitRequest};
use baton_protocol::{AgentName, subject};
use baton_worker::{Agent, Worker, WorkerOptions};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Whether the trace's decision log holds an event that `is` matches.
pub fn logged(
    trace: &baton_protocol::messages::TraceReply,
    is: impl Fn(&baton_protocol::messages::EventKind) -> bool,
) -> bool {
    trace.decisions.iter().any(|e| is(&e.kind))
}

/// Servers, services and a client, torn down on drop.
pub struct Fleet {
    pub nats: NatsServer,
    pub redis: RedisServer,
    pub client: async_nats::Client,
    /// The typed client of the public contract, on the same connection as `client`.
    pub baton: baton_client::Client,
    stop: CancellationToken,
    services: JoinSet<()>,
    children: Vec<Child>,
    /// Options every coordinator of this fleet starts with.
    pub coordinator_options: Options,
    /// How in-process workers of this fleet connect to NATS (the name is the worker's own).
    pub worker_nats: baton_nats::NatsOptions,
}

impl Fleet {
    /// Starts nats-server and redis-server (with AOF, so restarts keep state).
    pub async fn start() -> Self {
        let redis = RedisOptions {
            aof: true,
            ..Default::default()
        };
        Self::start_with(baton_harness::NatsOptions::default(), redis, |nats| {
            baton_nats::NatsOptions {
                url: nats.url(),
                ..Default::default()
            }
        })
        .await
    }

    /// Starts servers with these options. `client` gives the NATS options of the fleet's own
    /// client; coordinators and in-process workers start with the same ones (tests change
    /// `coordinator_options` and `worker_nats` to give them their own credentials).
    pub async fn start_with(
        nats: baton_harness::NatsOptions,
        redis: RedisOptions,
        client: impl FnOnce(&NatsServer) -> baton_nats::NatsOptions,
    ) -> Self {
        let (nats, redis) = tokio::task::spawn_blocking(|| {
            let nats = NatsServer::start_with(nats).expect("nats-server");
            let redis = RedisServer::start_with(redis).expect("redis-server");
            (nats, redis)
        })
        .await
        .unwrap();
        let client_options = client(&nats);
        let client = baton_nats::connect(&client_options).await.unwrap();
        let mut coordinator_options = Options::default();
        coordinator_options.nats = baton_nats::NatsOptions {
            name: coordinator_options.nats.name.clone(),
            ..client_options.clone()
        };
        coordinator_options.redis_url = redis.url();
        coordinator_options.drain_timeout_secs = 2;
        Self {
            nats,
            redis,
            baton: baton_client::Client::new(client.clone()),
            client,
            stop: CancellationToken::new(),
            services: JoinSet::new(),
            children: Vec::new(),
            coordinator_options,
            worker_nats: client_options,
        }
    }

    /// Starts a fleet with one in-process coordinator, ready to answer.
    pub async fn with_coordinator() -> Self {
        let mut fleet = Self::start().await;
        fleet.spawn_coordinator();
        fleet.wait_ready().await;
        fleet
    }

    /// Runs a coordinator replica in this process.
    pub fn spawn_coordinator(&mut self) {
        self.spawn_coordinator_with(self.coordinator_options.clone());
    }

    pub fn spawn_coordinator_with(&mut self, options: Options) {
        let shutdown = self.stop.clone().cancelled_owned();
        self.services.spawn(async move {
            if let Err(error) = Coordinator::new(options).run(shutdown).await {
                eprintln!("coordinator failed: {error}");
            }
        });
    }

    /// Runs a worker of `agent` type with the simulation agent's logic in this process.
    pub fn spawn_sim(&mut self, agent: &str) {
        self.spawn_agent(agent, baton_agents::sim::Sim);
    }

    pub fn spawn_agent<A: Agent>(&mut self, agent: &str, logic: A) {
        let mut options = WorkerOptions::new(AgentName::new(agent).unwrap());
        options.nats = baton_nats::NatsOptions {
            name: options.nats.name.clone(),
            ..self.worker_nats.clone()
        };
        options.drain_timeout = Duration::from_secs(2);
        self.spawn_worker_with(options, logic);
    }

    pub fn spawn_worker_with<A: Agent>(&mut self, options: WorkerOptions, logic: A) {
        let shutdown = self.stop.clone().cancelled_owned();
        self.services.spawn(async move {
            if let Err(error) = Worker::new(options, logic).run(shutdown).await {
                eprintln!("worker failed: {error}");
            }
        });
    }

    /// Runs one of the workspace's binaries as a separate process (killed on drop), with
    /// `BATON_NATS_URL` and `BATON_REDIS_URL` pointing at this fleet.
    pub fn spawn_process(&mut self, binary: &str, args: &[&str]) -> usize {
        let child = baton_harness::baton_command(&binary_path(binary), &self.nats, &self.redis)
            .args(args)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary}: {e} (run `cargo build --workspace --bins` first)")
            });
        self.children.push(child);
        self.children.len() - 1
    }

    /// Waits until a coordinator answers requests.
    pub async fn wait_ready(&self) {
        if let Err(error) = self.baton.wait_ready(Duration::from_secs(30)).await {
            panic!("no coordinator became ready: {error:?}");
        }
    }

    /// Sends a raw request and returns the reply's JSON (MessagePack replies are converted).
    pub async fn request_raw(
        &self,
        subject: &'static str,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) -> Value {
        let reply = match headers {
            Some(headers) => {
                self.client
                    .request_with_headers(subject, headers, payload)
                    .await
            }
            None => self.client.request(subject, payload).await,
        }
        .unwrap_or_else(|e| panic!("request on {subject} failed: {e}"));
        let msgpack = reply
            .headers
            .as_ref()
            .and_then(|h| h.get("Content-Type"))
            .is_some_and(|v| v.as_str() == "application/msgpack");
        if msgpack {
            rmp_serde::from_slice(&reply.payload).expect("msgpack reply")
        } else {
            serde_json::from_slice(&reply.payload).expect("json reply")
        }
    }

    /// Submits by request/reply; returns the reply (a job id or an error).
    pub async fn submit_raw(&self, body: Value) -> Value {
        self.request_raw(
            subject::SUBMIT,
            None,
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
    }

    /// Submits by request/reply and returns the job id.
    pub async fn submit(&self, plan: Value, input: Value) -> Uuid {
        let request = SubmitRequest {
            plan,
            input,
            idempotency_key: None,
            deadline_ms: None,
        };
        match self.baton.submit(&request).await {
            Ok(reply) => reply.job_id,
            Err(error) => panic!("submit rejected: {error:?}"),
        }
    }

    /// Publishes a durable submission to `baton.jobs.enqueue` and waits for the PubAck.
    pub async fn enqueue(&self, plan: Value, input: Value, key: &str) {
        let request = SubmitRequest {
            plan,
            input,
            idempotency_key: Some(key.to_owned()),
            deadline_ms: None,
        };
        self.baton.enqueue(&request, None).await.unwrap();
    }

    pub async fn status(&self, job: Uuid) -> StatusReply {
        self.baton.status(job).await.unwrap()
    }

    /// Status by idempotency key.
    pub async fn status_by_key(&self, key: &str) -> Result<StatusReply, baton_client::Error> {
        self.baton.status_by_key(key).await
    }

    pub async fn status_of(
        &self,
        request: StatusRequest,
    ) -> Result<StatusReply, baton_client::Error> {
        self.baton.status_of(&request).await
    }

    /// Waits until the job ends or escalates (event-driven, with a status read after each
    /// event and every half second); panics after `timeout`.
    pub async fn wait(&self, job: Uuid, timeout: Duration) -> StatusReply {
        match self.baton.wait(job, timeout).await {
            Ok(status) => status,
            Err(error) => panic!("waiting for {job}: {error}"),
        }
    }

    /// Waits until a durable submission has become a job; returns its id.
    pub async fn wait_for_key(&self, key: &str) -> Uuid {
        match self.baton.wait_for_key(key, Duration::from_secs(10)).await {
            Ok(job) => job,
            Err(error) => panic!("no job for idempotency key {key}: {error:?}"),
        }
    }

    /// Waits until the job reaches `want`.
    pub async fn wait_for(&self, job: Uuid, want: JobStatus, timeout: Duration) -> StatusReply {
        let status = self.wait(job, timeout).await;
        assert_eq!(status.status, want, "job {job}: {status:#?}");
        status
    }

    /// The job's trace (`baton.jobs.trace`), once its decision log holds the job's end (or
    /// its escalation, while escalated): the log is written a moment after the transitions.
    pub async fn trace(&self, job: Uuid) -> baton_protocol::messages::TraceReply {
        use baton_protocol::messages::EventKind;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let trace = match self.baton.trace(job).await {
                Ok(trace) => trace,
                Err(error) => panic!("trace of {job}: {error:?}"),
            };
            let complete = match trace.job.status {
                JobStatus::Succeeded | JobStatus::Failed => logged(&trace, |k| {
                    matches!(
                        k,
                        EventKind::JobSucceeded { .. } | EventKind::JobFailed { .. }
                    )
                }),
                JobStatus::Escalated => {
                    logged(&trace, |k| matches!(k, EventKind::StepEscalated { .. }))
                }
                _ => true,
            };
            if complete || Instant::now() > deadline {
                return trace;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Replays the job's recorded decisions on a scratch redis-server and asserts every one
    /// matches the record.
    pub async fn assert_replays(&self, job: Uuid) {
        let trace = self.trace(job).await;
        let scratch = RedisServer::start().unwrap();
        let report = baton_coordinator::replay(&trace, None, &scratch.url())
            .await
            .unwrap();
        assert!(
            report.matches() && report.checked > 0,
            "replay of {job} differs from the record: {report:#?}\ndecisions: {:#?}",
            trace.decisions
        );
    }

    /// Starts recording every event on `baton.events.>`.
    pub async fn record_events(&self) -> EventLog {
        Self::record(self.baton.events(None).await.unwrap())
    }

    /// Starts recording every job end on `baton.jobs.ended.>`.
    pub async fn record_ends(&self) -> EventLog {
        Self::record(self.baton.ends(None).await.unwrap())
    }

    fn record(mut feed: Feed<Event>) -> EventLog {
        let log = EventLog::default();
        let events = log.events.clone();
        tokio::spawn(async move {
            while let Some(event) = feed.next().await {
                events.lock().unwrap().push(event);
            }
        });
        log
    }

    /// Messages currently stored in the tasks stream.
    pub async fn stored_tasks(&self) -> u64 {
        let js = async_nats::jetstream::new(self.client.clone());
        let mut stream = js.get_stream(subject::stream::TASKS).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// Stops the in-process services (as on SIGTERM) and waits for them.
    pub async fn stop_services(&mut self) {
        self.stop.cancel();
        while self.services.join_next().await.is_some() {}
        self.stop = CancellationToken::new();
    }

    /// Sends a signal to one spawned process.
    pub fn signal_process(&self, index: usize, signal: baton_harness::Signal) {
        let pid = nix_pid(self.children[index].id());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Whether one spawned process has exited.
    pub fn process_exited(&mut self, index: usize) -> bool {
        self.children[index].try_wait().unwrap().is_some()
    }

    /// Waits for one spawned process to exit.
    pub fn wait_process(&mut self, index: usize) -> std::process::ExitStatus {
        self.children[index].wait().unwrap()
    }

    /// A direct Redis connection, for tests that inspect or damage state.
    pub async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.redis.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }

    /// A key's remaining TTL in milliseconds (-2 when it does not exist).
    pub async fn ttl_ms(&self, key: &str) -> i64 {
        let mut conn = self.redis_conn().await;
        redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// The job hash's remaining TTL in milliseconds (-2 when it does not exist).
    pub async fn job_ttl_ms(&self, job: Uuid) -> i64 {
        self.ttl_ms(&baton_protocol::keys::job(job)).await
    }

    /// Kills one spawned process (SIGKILL).
    pub fn kill_process(&mut self, index: usize) {
        let _ = self.children[index].kill();
        let _ = self.children[index].wait();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.cancel();
        self.services.abort_all();
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Events recorded by [`Fleet::record_events`].
#[derive(Clone, Default)]
pub struct EventLog {
    events: Arc<Mutex<Vec<Event>>>,
}

impl EventLog {
    pub fn all(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    pub fn of(&self, job: Uuid) -> Vec<Event> {
        self.all().into_iter().filter(|e| e.job_id == job).collect()
    }
}

fn nix_pid(id: u32) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(i32::try_from(id).unwrap())
}

/// A binary of this workspace, from the target directory the tests were built into.
pub fn binary_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test binary> → target/<profile>/<name>
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    dir.join(name)
}

/// A plan from a list of (id, agent, needs).
pub fn plan(steps: &[(&str, &str, &[&str])]) -> Value {
    let steps: Vec<Value> = steps
        .iter()
        .map(|(id, agent, needs)| json!({"id": id, "agent": agent, "needs": needs}))
        .collect();
    json!({ "name": "test", "steps": steps })
}
