//! The decision log: every event a replica publishes is also appended to its job's log in
//! Redis (`baton:{<job>}:log`, newline-delimited JSON), which `baton.jobs.trace` reads back.
//!
//! Appends are group-committed off the hot path: events queue in memory and one writer sends
//! whatever has queued as one pipeline (per job one `APPEND` and one `PEXPIRE`, no script), in
//! the order the events were published. A replica that dies loses the entries it had not
//! written yet (a few milliseconds' worth); the transitions themselves are in the job hash,
//! so nothing but the explanation is lost.

use std::collections::HashMap;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{LogBatch, Store};

/// Most entries sent in one round trip.
const BATCH: usize = 4096;

/// One entry: the job, the event's JSON, and whether the job has ended (the event is its
/// end, or came after it).
type Entry = (Uuid, Bytes, bool);

/// Queues entries for the writer. Cheap to clone.
#[derive(Clone)]
pub(crate) struct DecisionLog {
    tx: mpsc::UnboundedSender<Entry>,
}

impl DecisionLog {
    /// Starts the writer; it writes until `stop` is cancelled, then writes what is queued and
    /// ends.
    pub(crate) fn spawn(
        store: Store,
        stop: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write(store, rx, stop));
        (Self { tx }, writer)
    }

    /// Queues an entry (the event's JSON, shared with its publish). `ended`: the event is the
    /// job's end or came after it; the log then keeps the job's retention.
    pub(crate) fn append(&self, job: Uuid, entry: Bytes, ended: bool) {
        // Fails only once the writer has ended, after shutdown.
        let _ = self.tx.send((job, entry, ended));
    }
}

/// Logs this writer gave the running TTL to, and when (unix ms). Like the job's hash, a log
/// gets the running TTL again once half of it has run, so it lives as long as the running
/// job; within that half, an append needs no `PEXPIRE`. A log whose job has ended keeps its
/// retention: appends after the end (a result the end fenced) give it the retention again,
/// never the running TTL. Another replica's appends, or a forgotten entry, cost a redundant
/// `PEXPIRE`.
struct Expiries {
    set: quick_cache::unsync::Cache<Uuid, u64>,
    fresh_ms: u64,
}

/// Logs remembered: as many as the plan cache keeps jobs, the jobs this replica is working
/// on. (With 100,000, the cache was still filling a million steps into a run: coordinator
/// RSS grew 5–12% between 200,000 and 1,000,000 steps, and was flat only after 600,000.)
const EXPIRIES: usize = 10_000;

impl Expiries {
    fn new(running_ttl: Duration) -> Self {
        Self {
            set: quick_cache::unsync::Cache::new(EXPIRIES),
            fresh_ms: (running_ttl.as_millis() / 2) as u64,
        }
    }

    /// Whether an append to `job`'s log must also give it the running TTL (again).
    fn needed(&self, job: Uuid, now: u64) -> bool {
        self.set
            .get(&job)
            .is_none_or(|&at| now.saturating_sub(at) >= self.fresh_ms)
    }

    /// Notes a TTL given at `now`, once the write that gave it succeeded.
    fn given(&mut self, job: Uuid, now: u64) {
        self.set.insert(job, now);
    }

    /// Notes that the job's log has its retention: no running TTL for it any more.
    fn ended(&mut self, job: Uuid) {
        self.set.insert(job, u64::MAX);
    }
}

async fn write(store: Store, mut rx: mpsc::UnboundedReceiver<Entry>, stop: CancellationToken) {
    let mut expiries = Expiries::new(store.running_ttl());
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            first = rx.recv() => first,
            () = stop.cancelled() => None,
        };
        let Some(first) = first else {
            // Stopping: write what is left.
            while let Ok(entry) = rx.try_recv() {
                batch.push(entry);
                if batch.len() == BATCH {
                    flush(&store, &mut batch, &mut expiries).await;
                }
            }
            flush(&store, &mut batch, &mut expiries).await;
            return;
        };
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(entry) => batch.push(entry),
                Err(_) => break,
            }
        }
        flush(&store, &mut batch, &mut expiries).await;
    }
}

/// Writes a batch grouped by job, keeping each job's order.
async fn flush(store: &Store, batch: &mut Vec<Entry>, expiries: &mut Expiries) {
    if batch.is_empty() {
        return;
    }
    let now = crate::clock::now_ms();
    let mut groups: Vec<LogBatch> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    for (job, entry, ended) in batch.drain(..) {
        let at = *index.entry(job).or_insert_with(|| {
            groups.push(LogBatch {
                job,
                entries: Vec::new(),
                ended: false,
                expire: false,
            });
            groups.len() - 1
        });
        let group = &mut groups[at];
        group.entries.extend_from_slice(&entry);
        group.entries.push(b'\n');
        group.ended |= ended;
    }
    for group in &mut groups {
        group.expire = !group.ended && expiries.needed(group.job, now);
    }
    let append = || store.append_log(&groups);
    let written = append
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(2))
                .with_max_times(8),
        )
        .await;
    match written {
        Ok(()) => {
            for group in &groups {
                if group.ended {
                    expiries.ended(group.job);
                } else if group.expire {
                    expiries.given(group.job, now);
                }
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, jobs = groups.len(), "Decision-log entries not written")
        }
    }
}
