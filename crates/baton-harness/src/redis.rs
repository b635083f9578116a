//! A redis-server with its data in a temp dir, optionally with AOF for restart tests.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{self, Error, Signal};

const NAME: &str = "redis-server";

/// How to start redis-server.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Turn on the append-only file with `appendfsync always`, so a kill and restart loses
    /// nothing that was acknowledged.
    pub aof: bool,
    /// Extra `redis.conf` lines (e.g. `requirepass …`).
    pub extra_config: String,
}

/// A running redis-server, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    options: RedisOptions,
    binary: PathBuf,
}

impl RedisServer {
    pub fn start() -> Result<Self, Error> {
        Self::start_with(RedisOptions::default())
    }

    pub fn start_with(options: RedisOptions) -> Result<Self, Error> {
        let binary = process::find_binary(NAME, "BATON_REDIS_SERVER")?;
        let dir = tempfile::Builder::new().prefix("baton-redis-").tempdir()?;
        let mut server = Self {
            child: None,
            port: 0,
            dir,
            options,
            binary,
        };
        let mut last = None;
        for _ in 0..5 {
            server.port = process::free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or(Error::NotFound(NAME, "BATON_REDIS_SERVER")))
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let config = self.dir.path().join("redis.conf");
        std::fs::write(&config, self.config())?;
        let log = self.dir.path().join("redis.log");
        let mut child = Command::new(&self.binary)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(File::options().create(true).append(true).open(&log)?)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn { name: NAME, source })?;
        process::wait_ready(
            NAME,
            &mut child,
            self.port,
            &log,
            Duration::from_secs(20),
            &process::redis_probe(self.dir.path()),
        )?;
        self.child = Some(child);
        Ok(())
    }

    fn config(&self) -> String {
        // noeviction: the volatile-* policies would evict exactly Baton's TTL'd job keys.
        let aof = if self.options.aof {
            "appendonly yes\nappendfsync always\n"
        } else {
            "appendonly no\n"
        };
        format!(
            "bind 127.0.0.1\nport {port}\ndir {dir:?}\nsave \"\"\ndaemonize no\nlogfile \"\"\nmaxmemory-policy noeviction\n{aof}{extra}\n",
            port = self.port,
            dir = self.dir.path(),
            extra = self.options.extra_config,
        )
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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

    pub fn signal(&self, signal: Signal) -> Result<(), Error> {
        match &self.child {
            Some(child) => process::signal(NAME, child, signal),
            None => Ok(()),
        }
    }

    /// Kills the server (SIGKILL); the data dir stays for a restart.
    pub fn kill(&mut self) -> Result<(), Error> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same data dir.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill()?;
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;
    use crate::NatsServer;

    fn get(port: u16, command: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(command.as_bytes()).unwrap();
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn redis_with_aof_keeps_data_across_a_kill() {
        let mut redis = RedisServer::start_with(RedisOptions {
            aof: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(get(redis.port(), "SET k v\r\n"), "+OK\r\n");
        let port = redis.port();
        redis.kill().unwrap();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        redis.restart().unwrap();
        assert_eq!(redis.port(), port);
        assert_eq!(get(port, "GET k\r\n"), "$1\r\nv\r\n");
    }

    #[test]
    fn nats_starts_and_restarts_on_the_same_port() {
        let mut nats = NatsServer::start().unwrap();
        let port = nats.port();
        nats.restart().unwrap();
        assert_eq!(nats.port(), port);
        assert!(nats.url().ends_with(&port.to_string()));
        let path = nats.dir().to_path_buf();
        drop(nats);
        assert!(!path.exists());
    }
}
