//! [`JobEnds`]: the ends of many jobs from one subscription to `baton.jobs.ended.>`, for
//! submitters with many jobs in flight (the benchmark): no status polling, and none of the
//! other events.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use baton_protocol::messages::{Event, EventKind, UsageTotals};
use futures::StreamExt;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::client::Client;
use crate::error::Error;

/// How long an end nobody waits for yet is kept. A submitter asks for its job's end right
/// after the submit's reply, so an end that arrives first waits for it only a moment; ends
/// of other clients' jobs must not pile up.
const KEEP_UNCLAIMED: Duration = Duration::from_secs(60);

/// A job's end, from its `job_succeeded` or `job_failed` event.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub job_id: Uuid,
    /// When the coordinator decided it (Unix ms).
    pub ts_ms: u64,
    /// Why it failed; `None` when it succeeded.
    pub error: Option<String>,
    pub usage: Option<UsageTotals>,
}

impl Ended {
    /// The end an event records, if it is one.
    pub fn from_event(event: Event) -> Option<Self> {
        let (error, usage) = match event.kind {
            EventKind::JobSucceeded { usage } => (None, usage),
            EventKind::JobFailed { error, usage } => (Some(error), usage),
            EventKind::JobCancelled { reason, usage, .. } => (
                Some(reason.map_or_else(|| "cancelled".to_owned(), |r| format!("cancelled: {r}"))),
                usage,
            ),
            _ => return None,
        };
        Some(Self {
            job_id: event.job_id,
            ts_ms: event.ts_ms,
            error,
            usage,
        })
    }

    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

#[derive(Default)]
struct Waiters {
    waiting: HashMap<Uuid, oneshot::Sender<Ended>>,
    /// Ends that came before anyone waited for them, and when they came.
    unclaimed: HashMap<Uuid, Ended>,
    arrivals: VecDeque<(Instant, Uuid)>,
    /// The subscription ended: nothing more will come.
    closed: bool,
}

impl Waiters {
    fn ended(&mut self, end: Ended) {
        if let Some(sender) = self.waiting.remove(&end.job_id) {
            let _ = sender.send(end);
            return;
        }
        let now = Instant::now();
        while let Some(&(at, job)) = self.arrivals.front()
            && now.duration_since(at) > KEEP_UNCLAIMED
        {
            self.arrivals.pop_front();
            self.unclaimed.remove(&job);
        }
        self.arrivals.push_back((now, end.job_id));
        self.unclaimed.insert(end.job_id, end);
    }
}

struct Shared {
    waiters: Arc<Mutex<Waiters>>,
    listener: tokio::task::AbortHandle,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Job ends as they are published, handed to whoever waits for each. Cheap to clone; the
/// subscription ends when the last clone is dropped.
#[derive(Clone)]
pub struct JobEnds {
    shared: Arc<Shared>,
}

impl JobEnds {
    /// Subscribes to every job's end. Subscribe before submitting: an end published before
    /// the subscription is not seen.
    pub async fn subscribe(client: &Client) -> Result<Self, Error> {
        let mut ends = client.ends(None).await?;
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let shared = waiters.clone();
        let listener = tokio::spawn(async move {
            while let Some(event) = ends.next().await {
                if let Some(end) = Ended::from_event(event) {
                    lock(&shared).ended(end);
                }
            }
            // Whoever waits learns that no end will come.
            let mut waiters = lock(&shared);
            waiters.closed = true;
            waiters.waiting.clear();
        });
        Ok(Self {
            shared: Arc::new(Shared {
                waiters,
                listener: listener.abort_handle(),
            }),
        })
    }

    /// The end of `job`, when it comes (at once if it already came). A job that never ends
    /// (an escalated one) never resolves it: bound it with a timeout.
    pub fn wait(&self, job: Uuid) -> JobEnd {
        let (sender, receiver) = oneshot::channel();
        let mut waiters = lock(&self.shared.waiters);
        if let Some(end) = waiters.unclaimed.remove(&job) {
            let _ = sender.send(end);
        } else if !waiters.closed {
            waiters.waiting.insert(job, sender);
        }
        JobEnd { receiver }
    }
}

fn lock(waiters: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    // Nothing panics while holding it; a poisoned lock still holds consistent maps.
    waiters.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A future of one job's end; [`Error::SubscriptionClosed`] when the subscription ended
/// before it came.
pub struct JobEnd {
    receiver: oneshot::Receiver<Ended>,
}

impl Future for JobEnd {
    type Output = Result<Ended, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|end| end.map_err(|_| Error::SubscriptionClosed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(job: Uuid, error: Option<&str>) -> Ended {
        Ended {
            job_id: job,
            ts_ms: 1,
            error: error.map(str::to_owned),
            usage: None,
        }
    }

    #[test]
    fn an_end_event_is_an_end_and_nothing_else_is() {
        let failed = Event {
            job_id: Uuid::nil(),
            ts_ms: 9,
            kind: EventKind::JobFailed {
                error: "human".into(),
                usage: None,
            },
        };
        let ended = Ended::from_event(failed).expect("an end");
        assert!(!ended.succeeded());
        assert_eq!(ended.ts_ms, 9);
        let created = Event {
            job_id: Uuid::nil(),
            ts_ms: 1,
            kind: EventKind::JobCreated {
                plan: None,
                steps: 1,
            },
        };
        assert_eq!(Ended::from_event(created), None);
    }

    #[test]
    fn an_end_goes_to_its_waiter_or_waits_for_one() {
        let mut waiters = Waiters::default();
        let (sender, mut receiver) = oneshot::channel();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        waiters.waiting.insert(a, sender);
        waiters.ended(end(a, None));
        assert!(receiver.try_recv().expect("delivered").succeeded());
        waiters.ended(end(b, Some("no")));
        assert!(waiters.waiting.is_empty());
        assert_eq!(waiters.unclaimed[&b].error.as_deref(), Some("no"));
    }

    #[test]
    fn unclaimed_ends_are_forgotten_after_a_while() {
        let mut waiters = Waiters::default();
        let old = Uuid::now_v7();
        waiters.unclaimed.insert(old, end(old, None));
        let long_ago = Instant::now() - KEEP_UNCLAIMED - Duration::from_secs(1);
        waiters.arrivals.push_back((long_ago, old));
        let new = Uuid::now_v7();
        waiters.ended(end(new, None));
        assert!(!waiters.unclaimed.contains_key(&old));
        assert!(waiters.unclaimed.contains_key(&new));
        assert_eq!(waiters.arrivals.len(), 1);
    }
}
