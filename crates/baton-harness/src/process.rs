//! Shared plumbing: locating binaries, picking ports, waiting for readiness, signalling.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Why a server could not be started or controlled.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found: run scripts/ensure-deps.sh, put it on PATH, or set {1} to its path")]
    NotFound(&'static str, &'static str),
    #[error("could not start {name}: {source}")]
    Spawn {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} did not become ready on port {port} within {seconds}s; its log:\n{log}")]
    NotReady {
        name: &'static str,
        port: u16,
        seconds: u64,
        log: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("could not signal {name}: {source}")]
    Signal {
        name: &'static str,
        #[source]
        source: nix::Error,
    },
}

/// Finds a server binary: the environment variable, then the project's `.tools/bin`, then
/// `PATH`.
pub fn find_binary(name: &'static str, env_var: &'static str) -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(path));
    }
    let tools = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.tools/bin")
        .join(name);
    if tools.is_file() {
        return Ok(tools);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or(Error::NotFound(name, env_var))
}

/// A loopback port that was free a moment ago. Another process may take it before the server
/// binds it; callers retry on a bind failure.
pub fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Waits until `probe` succeeds against the port, or the child exits, or the deadline passes.
pub(crate) fn wait_ready(
    name: &'static str,
    child: &mut Child,
    port: u16,
    log: &Path,
    timeout: Duration,
    probe: &dyn Fn(&mut TcpStream) -> bool,
) -> Result<(), Error> {
    let started = Instant::now();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            stream.set_read_timeout(Some(Duration::from_millis(500)))?;
            if probe(&mut stream) {
                return Ok(());
            }
        }
        let exited = child.try_wait()?.is_some();
        if exited || started.elapsed() > timeout {
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
            return Err(Error::NotReady {
                name,
                port,
                seconds: timeout.as_secs(),
                log: std::fs::read_to_string(log).unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// NATS greets every client with an `INFO` line, which names the server. Checking the name
/// makes sure we reached *our* server: another test's server may have taken the port in the
/// moment between picking it and binding it.
pub(crate) fn nats_probe(name: &str) -> impl Fn(&mut TcpStream) -> bool + '_ {
    move |stream| {
        let mut line = String::new();
        let mut reader = std::io::BufReader::new(stream);
        std::io::BufRead::read_line(&mut reader, &mut line).is_ok()
            && line.starts_with("INFO")
            && line.contains(&format!("\"server_name\":\"{name}\""))
    }
}

/// Redis answers `PING` with `+PONG` once it is loaded (during AOF loading it says
/// `-LOADING`); its `dir` tells our server from another test's on the same port.
pub(crate) fn redis_probe(dir: &Path) -> impl Fn(&mut TcpStream) -> bool + '_ {
    move |stream| {
        let mut buf = [0u8; 5];
        if stream.write_all(b"PING\r\n").is_err()
            || stream.read_exact(&mut buf).is_err()
            || &buf != b"+PONG"
        {
            return false;
        }
        let mut skip = [0u8; 2];
        let _ = stream.read_exact(&mut skip);
        if stream.write_all(b"CONFIG GET dir\r\n").is_err() {
            return false;
        }
        let mut reply = vec![0u8; 4096];
        let n = stream.read(&mut reply).unwrap_or(0);
        String::from_utf8_lossy(&reply[..n]).contains(&*dir.to_string_lossy())
    }
}

/// Sends `signal` to a child process (`name` labels the error).
pub fn signal(name: &'static str, child: &Child, signal: Signal) -> Result<(), Error> {
    let pid = i32::try_from(child.id()).map_err(|_| Error::Signal {
        name,
        source: nix::Error::ESRCH,
    })?;
    kill(Pid::from_raw(pid), signal).map_err(|source| Error::Signal { name, source })
}
