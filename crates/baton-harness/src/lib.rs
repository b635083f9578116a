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
pub use process::{Error, Signal, find_binary, free_port};
pub use redis::{RedisOptions, RedisServer};
