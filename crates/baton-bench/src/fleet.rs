//! The fleet a benchmark measures: nats-server (file storage) and redis-server started by the
//! harness, and coordinator and sim-worker processes of the built binaries, so each one's CPU
//! time can be read separately.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_harness::{NatsOptions, NatsServer, RedisServer};

use crate::procs::Proc;

pub(crate) struct Fleet {
    pub(crate) nats: NatsServer,
    /// nats-server's monitoring endpoint (`/varz` counts messages).
    pub(crate) nats_monitor: String,
    pub(crate) redis: RedisServer,
    coordinators: Vec<Child>,
    /// Each coordinator's Prometheus endpoint (`--metrics-addr`), by index.
    coordinator_metrics: Vec<String>,
    workers: Vec<Child>,
    bin_dir: PathBuf,
    /// The coordinators' config file: limits that admit the 1000-wide and 1000-long plans.
    config: PathBuf,
}

/// Coordinator options beyond the defaults: plans of up to 1002 steps, fan-outs and fan-ins
/// of 1000.
const COORDINATOR_CONFIG: &str =
    r#"{"limits": {"max_steps": 1002, "max_needs": 1000, "max_dependents": 1000}}"#;

impl Fleet {
    pub(crate) fn start(bin_dir: PathBuf) -> anyhow::Result<Self> {
        let monitor = format!("127.0.0.1:{}", baton_harness::free_port()?);
        let options = NatsOptions {
            extra_config: format!("http: \"{monitor}\""),
            ..NatsOptions::default()
        };
        let config = std::env::temp_dir().join(format!(
            "baton-bench-{}-coordinator.json",
            std::process::id()
        ));
        std::fs::write(&config, COORDINATOR_CONFIG)
            .with_context(|| format!("cannot write {}", config.display()))?;
        Ok(Self {
            nats: NatsServer::start_with(options)?,
            nats_monitor: format!("http://{monitor}"),
            redis: RedisServer::start()?,
            coordinators: Vec::new(),
            coordinator_metrics: Vec::new(),
            workers: Vec::new(),
            bin_dir,
            config,
        })
    }

    fn spawn(&self, binary: &str, args: &[&str]) -> anyhow::Result<Child> {
        let path = self.bin_dir.join(binary);
        baton_harness::baton_command(&path, &self.nats, &self.redis)
            .args(args)
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))
    }

    /// Starts `count` more coordinators, each serving metrics on a free loopback port, and
    /// waits until they answer.
    pub(crate) async fn start_coordinators(
        &mut self,
        count: usize,
        client: &baton_client::Client,
    ) -> anyhow::Result<()> {
        let first = self.coordinators.is_empty();
        let mut started_metrics = Vec::new();
        for _ in 0..count {
            let metrics = format!("127.0.0.1:{}", baton_harness::free_port()?);
            let config = self.config.to_string_lossy().into_owned();
            let child = self.spawn(
                "baton",
                &[
                    "coordinator",
                    "--max-in-flight",
                    "512",
                    "--metrics-addr",
                    &metrics,
                    "--config",
                    &config,
                ],
            )?;
            self.coordinators.push(child);
            let url = format!("http://{metrics}/metrics");
            self.coordinator_metrics.push(url.clone());
            started_metrics.push(url);
        }
        let started = Instant::now();
        let deadline = Duration::from_secs(30);
        if first {
            // A status request is answered by any coordinator: it shows the first has started.
            client
                .wait_ready(deadline)
                .await
                .context("the coordinator did not start")?;
        } else {
            // Another one already answers: wait for the new ones' metrics endpoints (bound
            // before they connect), then give them a moment to subscribe.
            for url in started_metrics {
                while crate::http_get(&url).await.is_err() {
                    if started.elapsed() > deadline {
                        bail!("the coordinator did not start");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(())
    }

    /// Each coordinator's `/metrics` URL, in the order of [`Fleet::coordinator_procs`].
    pub(crate) fn coordinator_metrics(&self) -> &[String] {
        &self.coordinator_metrics
    }

    /// Replaces the sim workers of `agent` with `count` fresh ones.
    pub(crate) fn set_workers(
        &mut self,
        agent: &str,
        count: usize,
        concurrency: usize,
    ) -> anyhow::Result<()> {
        for mut child in self.workers.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let concurrency = concurrency.to_string();
        for _ in 0..count {
            let child = self.spawn(
                "baton-agent-sim",
                &["--type", agent, "--concurrency", &concurrency],
            )?;
            self.workers.push(child);
        }
        Ok(())
    }

    pub(crate) fn procs(&self) -> Vec<Proc> {
        let mut procs = Vec::new();
        if let Some(pid) = self.nats.pid() {
            procs.push(Proc {
                name: "nats-server".into(),
                pid,
            });
        }
        if let Some(pid) = self.redis.pid() {
            procs.push(Proc {
                name: "redis-server".into(),
                pid,
            });
        }
        for (i, child) in self.coordinators.iter().enumerate() {
            procs.push(Proc {
                name: format!("coordinator {}", i + 1),
                pid: child.id(),
            });
        }
        for (i, child) in self.workers.iter().enumerate() {
            procs.push(Proc {
                name: format!("worker {}", i + 1),
                pid: child.id(),
            });
        }
        procs
    }

    /// nats-server and redis-server.
    pub(crate) fn server_procs(&self) -> Vec<Proc> {
        self.procs()
            .into_iter()
            .filter(|p| p.name.ends_with("-server"))
            .collect()
    }

    pub(crate) fn coordinator_procs(&self) -> Vec<Proc> {
        self.procs()
            .into_iter()
            .filter(|p| p.name.starts_with("coordinator"))
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in self.coordinators.iter_mut().chain(self.workers.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.config);
    }
}
