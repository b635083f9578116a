//! Baton's public contract v1 as pure data: plans and their validation, the messages on every
//! subject, subject and stream names, the Redis key schema, and the JSON/MessagePack codecs.
//!
//! This crate does no I/O and must never depend on tokio, async-nats or redis: a worker in
//! another language needs only what is described here (and in `docs/protocol.md`).

pub mod codec;
pub mod error_code;
pub mod keys;
pub mod limits;
pub mod messages;
pub mod name;
pub mod plan;
pub mod subject;

pub use codec::Encoding;
pub use error_code::ErrorCode;
pub use limits::Limits;
pub use name::{AgentName, StepId};
pub use plan::Plan;
