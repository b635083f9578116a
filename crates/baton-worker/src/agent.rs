//! What an agent implements: turn a task into an output or an error that says whether
//! another attempt may help.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_protocol::messages::{Progress, Usage};
use baton_protocol::subject;
use serde_json::Value;
use uuid::Uuid;

/// One attempt of one step, as the agent sees it. Through it the agent also reports what
/// the attempt cost ([`Task::report_usage`]) and streams progress ([`Task::progress`]).
#[derive(Debug, Clone)]
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
    pub(crate) reporter: Reporter,
}

impl Task {
    /// A task that is not connected to a broker: progress goes nowhere, usage is kept for
    /// [`Task::usage`]. For testing agents.
    pub fn new(
        job_id: Uuid,
        step_id: impl Into<String>,
        attempt: u32,
        agent: impl Into<String>,
        input: Value,
        deadline_ms: u64,
    ) -> Self {
        Self {
            job_id,
            step_id: step_id.into(),
            attempt,
            agent: agent.into(),
            input,
            deadline_ms,
            reporter: Reporter::default(),
        }
    }

    /// Adds token usage to this attempt's total (call it once per model call). The result
    /// carries the total; the coordinator prices it. The model of the last call with one is
    /// reported.
    pub fn report_usage(&self, usage: Usage) {
        let mut total = self
            .reporter
            .usage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let total = total.get_or_insert_with(Usage::default);
        total.input_tokens = total.input_tokens.saturating_add(usage.input_tokens);
        total.output_tokens = total.output_tokens.saturating_add(usage.output_tokens);
        if usage.model.is_some() {
            total.model = usage.model;
        }
    }

    /// The usage reported so far on this attempt.
    pub fn usage(&self) -> Option<Usage> {
        self.reporter
            .usage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Publishes progress on `baton.progress.<job_id>` (partial output, LLM tokens): `baton
    /// watch` and `baton submit --follow` print it live. Best effort and not stored: a
    /// message published while the connection is down is dropped.
    pub async fn progress(&self, data: Value) {
        let Some(client) = &self.reporter.client else {
            return;
        };
        let message = Progress {
            job_id: self.job_id,
            step_id: self.step_id.clone(),
            attempt: self.attempt,
            seq: self.reporter.seq.fetch_add(1, Ordering::Relaxed) + 1,
            ts_ms: now_ms(),
            data,
        };
        let Ok(payload) = serde_json::to_vec(&message) else {
            return;
        };
        if let Err(error) = client
            .publish(subject::progress(self.job_id), payload.into())
            .await
        {
            tracing::debug!(error = %error, "Progress not published");
        }
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.saturating_sub(now_ms()))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a task reports through: shared by the clones of one task (one allocation per task).
#[derive(Clone, Default)]
pub(crate) struct Reporter(Arc<Reports>);

#[derive(Default)]
pub(crate) struct Reports {
    client: Option<Arc<async_nats::Client>>,
    usage: Mutex<Option<Usage>>,
    seq: AtomicU64,
}

impl std::ops::Deref for Reporter {
    type Target = Reports;

    fn deref(&self) -> &Reports {
        &self.0
    }
}

impl Reporter {
    pub(crate) fn connected(client: Arc<async_nats::Client>) -> Self {
        Self(Arc::new(Reports {
            client: Some(client),
            ..Reports::default()
        }))
    }

    pub(crate) fn take_usage(&self) -> Option<Usage> {
        self.usage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("connected", &self.client.is_some())
            .finish_non_exhaustive()
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
