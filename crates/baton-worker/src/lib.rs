//! Baton's worker SDK. Implement [`Agent`] for your agent type and hand it to [`Worker`]:
//! the runtime binds the agent type's shared durable consumer, pulls tasks over one
//! long-lived stream, runs at most `concurrency` at once, sends in-progress heartbeats while
//! an agent works, publishes each result (and waits for the broker to store it) before acking
//! the task, stops an attempt at its deadline, and drains on shutdown.
//!
//! **Boundary:** workers speak only NATS. Nothing here knows Redis exists.

mod agent;
mod metrics;
mod runtime;

pub use agent::{Agent, AgentError, Task};
/// Token usage an agent reports with [`Task::report_usage`].
pub use baton_protocol::messages::Usage;
pub use runtime::{Error, Worker, WorkerOptions};
