//! The fleet under test: nats-server (file storage) and redis-server (AOF, `appendfsync
//! always`) from the harness, and coordinators and sim workers as separate processes of the
//! built binaries, each of which can be killed, paused and restarted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use anyhow::Context;
use baton_harness::{NatsServer, RedisOptions, RedisServer, Signal};

/// The agent type every chaos job uses.
pub(crate) const AGENT: &str = "chaos";

/// One process slot: the command to (re)start it and the running child, if any.
pub(crate) struct Slot {
    name: String,
    binary: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

pub(crate) struct Fleet {
    pub(crate) nats: NatsServer,
    pub(crate) redis: RedisServer,
    pub(crate) coordinators: Vec<Slot>,
    pub(crate) workers: Vec<Slot>,
    logs: tempfile::TempDir,
}

impl Fleet {
    pub(crate) fn start(
        bin_dir: &Path,
        coordinators: usize,
        workers: usize,
        ack_wait_secs: u64,
        reconcile_after_ms: u64,
        shutdown_grace_secs: u64,
    ) -> anyhow::Result<Self> {
        let nats = NatsServer::start().context("nats-server")?;
        let redis = RedisServer::start_with(RedisOptions {
            aof: true,
            ..Default::default()
        })
        .context("redis-server")?;
        let logs = tempfile::Builder::new().prefix("baton-chaos-").tempdir()?;
        let mut fleet = Self {
            nats,
            redis,
            coordinators: Vec::new(),
            workers: Vec::new(),
            logs,
        };
        for i in 0..coordinators {
            let args = vec![
                "coordinator".to_owned(),
                "--reconcile-after-ms".to_owned(),
                reconcile_after_ms.to_string(),
                "--shutdown-grace-secs".to_owned(),
                shutdown_grace_secs.to_string(),
            ];
            let slot = Slot::new(format!("coordinator-{i}"), bin_dir.join("baton"), args);
            fleet.coordinators.push(slot);
        }
        for i in 0..workers {
            let args = vec![
                "--type".to_owned(),
                AGENT.to_owned(),
                "--ack-wait-secs".to_owned(),
                ack_wait_secs.to_string(),
                "--concurrency".to_owned(),
                "8".to_owned(),
                "--drain-timeout-secs".to_owned(),
                "2".to_owned(),
            ];
            let slot = Slot::new(format!("worker-{i}"), bin_dir.join("baton-agent-sim"), args);
            fleet.workers.push(slot);
        }
        for i in 0..coordinators {
            fleet.start_coordinator(i)?;
        }
        for i in 0..workers {
            fleet.start_worker(i)?;
        }
        Ok(fleet)
    }

    /// Keeps the processes' logs (one file per slot) after the fleet is gone, for a run
    /// whose figures need explaining; returns where they are.
    pub(crate) fn keep_logs(&mut self) -> &Path {
        self.logs.disable_cleanup(true);
        self.logs.path()
    }

    pub(crate) fn start_coordinator(&mut self, i: usize) -> anyhow::Result<()> {
        let (nats, redis, logs) = (&self.nats, &self.redis, self.logs.path());
        self.coordinators[i].start(nats, redis, logs)
    }

    pub(crate) fn start_worker(&mut self, i: usize) -> anyhow::Result<()> {
        let (nats, redis, logs) = (&self.nats, &self.redis, self.logs.path());
        self.workers[i].start(nats, redis, logs)
    }

    /// Makes sure every process runs and none is paused.
    pub(crate) fn heal(&mut self) -> anyhow::Result<()> {
        if self.nats.pid().is_none() {
            self.nats.restart()?;
        }
        if self.redis.pid().is_none() {
            self.redis.restart()?;
        }
        for i in 0..self.coordinators.len() {
            self.coordinators[i].resume();
            if !self.coordinators[i].running() {
                self.start_coordinator(i)?;
            }
        }
        for i in 0..self.workers.len() {
            self.workers[i].resume();
            if !self.workers[i].running() {
                self.start_worker(i)?;
            }
        }
        Ok(())
    }
}

impl Slot {
    fn new(name: String, binary: PathBuf, args: Vec<String>) -> Self {
        Self {
            name,
            binary,
            args,
            child: None,
            paused: false,
        }
    }

    fn start(&mut self, nats: &NatsServer, redis: &RedisServer, logs: &Path) -> anyhow::Result<()> {
        self.kill();
        let log = File::options()
            .create(true)
            .append(true)
            .open(logs.join(format!("{}.log", self.name)))?;
        let child = baton_harness::baton_command(&self.binary, nats, redis)
            .args(&self.args)
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (build the binaries first: cargo build --bins)",
                    self.binary.display()
                )
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGTERM, as Kubernetes stops a pod: the process is handed over to wait for (it should
    /// drain and exit 0), and the slot is free for a replacement.
    pub(crate) fn terminate(&mut self) -> anyhow::Result<Option<Child>> {
        let Some(child) = self.child.take() else {
            return Ok(None);
        };
        self.paused = false;
        baton_harness::signal("baton process", &child, Signal::SIGTERM)
            .with_context(|| format!("cannot SIGTERM {}", self.name))?;
        Ok(Some(child))
    }

    /// SIGSTOP: the process keeps its connections but does nothing.
    pub(crate) fn pause(&mut self) {
        if let Some(child) = &self.child {
            self.paused = baton_harness::signal("worker", child, Signal::SIGSTOP).is_ok();
        }
    }

    /// SIGCONT after a pause.
    pub(crate) fn resume(&mut self) {
        if let (true, Some(child)) = (self.paused, &self.child) {
            let _ = baton_harness::signal("worker", child, Signal::SIGCONT);
        }
        self.paused = false;
    }

    fn running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.kill();
    }
}
