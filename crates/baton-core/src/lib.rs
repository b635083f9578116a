//! Baton's decision core: [`decide`] is the one pure function that decides every transition
//! of a job — which attempts start, retries and their timers, escalations, the job's end —
//! from the job's recorded facts ([`Facts`]) and what happened ([`Cause`]). It returns a typed
//! [`Decision`]: the writes (with the facts they depend on, which the store checks before
//! applying them in one atomic script), the tasks to publish, the timers, the job's end.
//!
//! **Boundary:** no I/O. `scripts/test.sh` fails if tokio, async-nats or redis enter this
//! crate's dependency tree. The coordinator reads, decides with this crate, applies and
//! executes; `baton replay` runs the same function over a job's recorded causes.

mod decide;
mod decision;
mod facts;
mod field;
mod flow;
mod looping;
mod write;

pub use decide::{Attempt, Cause, Context, NewJob, Resolution, Usage, decide, reads};
pub use decision::{Apply, Decision, End, Expire, Outcome, Skip, Start, Started, Timer};
pub use facts::Facts;
pub use field::{Field, StepField};
