//! A typed client of Baton's public contract (docs/protocol.md): what every program that
//! talks to a Baton fleet from outside stands on — the `baton` CLI's client commands, the
//! benchmark, the chaos runner, the end-to-end tests, and the HTTP gateway and dashboard to
//! come.
//!
//! - [`Client`]: one typed method per request subject (submit, durable enqueue, status,
//!   trace, rerun, the escalation commands), readiness, and waiting until a job ends or
//!   escalates. An error reply becomes [`Error::Rejected`] with its [`ErrorCode`]; a request
//!   nobody serves becomes [`Error::NoCoordinator`].
//! - [`Feed`]: a subscription to events, job ends or progress, decoded.
//! - [`Watcher`]: one job's events and progress, live, until it settles.
//! - [`JobEnds`]: the ends of many jobs from one subscription to `baton.jobs.ended.>`.
//! - [`trace::Trace`]: the view model of `baton trace` (a job's attempts on one time axis,
//!   its escalations and decisions), and [`describe`]: an event as one sentence. Drawing
//!   them (text, HTML) is each front end's: the CLI has its own, the dashboard will have its.
//!
//! **Boundary:** only the public NATS contract crosses this crate — the subjects and
//! messages of `baton-protocol`, over a connection configured by `baton-nats`. It must not
//! depend on the coordinator, the decision core, Redis or the test harness
//! (`scripts/test.sh` checks): what it can do, any client in any language can do.

mod client;
mod describe;
mod ends;
mod error;
mod feed;
pub mod trace;
mod watch;

pub use baton_protocol::ErrorCode;
pub use client::{Client, REQUEST_TIMEOUT, is_settled};
pub use describe::{describe, usage_text};
pub use ends::{Ended, JobEnd, JobEnds};
pub use error::Error;
pub use feed::Feed;
pub use watch::{Update, Watcher};
