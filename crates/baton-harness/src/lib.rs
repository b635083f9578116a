//! Real nats-server and redis-server processes for tests, `baton dev`, chaos runs and
//! benchmarks: each on a free loopback port, with its data in its own temp dir, killed and
//! cleaned up on drop. A server can be killed and restarted on the same port and data dir, so
//! clients reconnect to it as they would in production.
//!
//! Binaries are found, in order, from `BATON_NATS_SERVER` / `BATON_REDIS_SERVER`, the
//! project's `.tools/bin` (where `scripts/ensure-deps.sh` installs the pinned nats-server),
//! and `PATH`.

mod nats;
mod process;
mod redis;

pub use nats::{NatsOptions, NatsServer};
pub use process::{Error, Signal, find_binary, free_port, signal};
pub use redis::{RedisOptions, RedisServer};

/// A command for one of Baton's binaries (a coordinator or a worker) pointed at these servers
/// through `BATON_NATS_URL` / `BATON_REDIS_URL`, logging only warnings, with no stdin and its
/// stdout discarded.
pub fn baton_command(
    binary: &std::path::Path,
    nats: &NatsServer,
    redis: &RedisServer,
) -> std::process::Command {
    let mut command = std::process::Command::new(binary);
    command
        .env("BATON_NATS_URL", nats.url())
        .env("BATON_REDIS_URL", redis.url())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    command
}
