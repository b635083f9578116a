//! A nats-server with JetStream on file storage.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{self, Error, Signal};

const NAME: &str = "nats-server";

/// How to start nats-server.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// Extra configuration for the generated config file (e.g. `authorization {..}`, or a
    /// whole example config). It goes first: the harness's own listen address, port, server
    /// name and JetStream store dir come after it and win (nats-server keeps the last value of
    /// a repeated key), so a complete config file can be loaded as it is.
    pub extra_config: String,
    /// Environment variables for the server process: nats-server resolves a `$NAME` in its
    /// config from the environment, which is how example configs take their passwords.
    pub env: Vec<(String, String)>,
}

/// A running nats-server, killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    options: NatsOptions,
    binary: PathBuf,
}

impl NatsServer {
    /// Starts a server on a free port.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(NatsOptions::default())
    }

    pub fn start_with(options: NatsOptions) -> Result<Self, Error> {
        let binary = process::find_binary(NAME, "BATON_NATS_SERVER")?;
        let dir = tempfile::Builder::new().prefix("baton-nats-").tempdir()?;
        let mut server = Self {
            child: None,
            port: 0,
            dir,
            options,
            binary,
        };
        let mut last = None;
        // A port that was free can be taken before the server binds it: try a few.
        for _ in 0..5 {
            server.port = process::free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or(Error::NotFound(NAME, "BATON_NATS_SERVER")))
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let config = self.dir.path().join("nats.conf");
        std::fs::write(&config, self.config())?;
        let log = self.log_path();
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::options().create(true).append(true).open(&log)?)
            .spawn()
            .map_err(|source| Error::Spawn { name: NAME, source })?;
        let mut child = child;
        process::wait_ready(
            NAME,
            &mut child,
            self.port,
            &log,
            Duration::from_secs(20),
            &process::nats_probe(&self.name()),
        )?;
        self.child = Some(child);
        Ok(())
    }

    fn config(&self) -> String {
        let store = self.dir.path().join("jetstream");
        format!(
            "{extra}\nhost: 127.0.0.1\nport: {port}\nserver_name: {name}\njetstream {{\n  store_dir: {store:?}\n}}\n",
            port = self.port,
            name = self.name(),
            extra = self.options.extra_config,
        )
    }

    /// A name unique to this server (its data dir is unique), checked on every connect.
    fn name(&self) -> String {
        let dir = self
            .dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        format!("baton-{}", dir.unwrap_or_default())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends a signal (e.g. SIGKILL for a crash, SIGSTOP to freeze).
    pub fn signal(&self, signal: Signal) -> Result<(), Error> {
        match &self.child {
            Some(child) => process::signal(NAME, child, signal),
            None => Ok(()),
        }
    }

    /// Kills the server (SIGKILL) and waits for it; the data dir stays for a restart.
    pub fn kill(&mut self) -> Result<(), Error> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill()?;
        self.spawn()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
