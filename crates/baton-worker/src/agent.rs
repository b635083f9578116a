//! What an agent implements: turn a task into an output or an error that says whether
//! another attempt may help.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use uuid::Uuid;

/// One attempt of one step, as the agent sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub job_id: Uuid,
    pub step_id: String,
    /// 1-based attempt number.
    pub attempt: u32,
    pub agent: String,
    /// The step's input: by default `{"input": <job input>, "needs": {"<dep>": <output>}}`.
    pub input: Value,
    /// Unix milliseconds after which the coordinator counts the attempt as timed out.
    pub deadline_ms: u64,
}

impl Task {
    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Duration::from_millis(self.deadline_ms.saturating_sub(now))
    }
}

/// An agent's failure. `retryable: false` tells the coordinator another attempt cannot
/// help (bad input, a refused request), so the step escalates at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    pub message: String,
    pub retryable: bool,
}

impl AgentError {
    /// A failure another attempt may fix (a timeout upstream, a rate limit, a flaky tool).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry can fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// An agent type's logic. One value serves all concurrent tasks of a worker process, so it
/// is shared (`&self`) and must be `Send + Sync`.
pub trait Agent: Send + Sync + 'static {
    fn process(&self, task: Task) -> impl Future<Output = Result<Value, AgentError>> + Send;
}
