//! The durable timer loop: claims due timers from Redis (timeouts and retry backoffs) and
//! fires them. Timers live only in Redis; a replica that dies holding a claim loses nothing,
//! since the claim is a lease that runs out and another replica fires the timer again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use baton_protocol::keys::TimerMember;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_ms;
use crate::engine::Engine;

const BATCH: usize = 256;

pub(crate) async fn run(
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    limit: Arc<Semaphore>,
) {
    let poll = Duration::from_millis(engine.options.timer_poll_ms);
    let lease = Duration::from_millis(engine.options.timer_lease_ms);
    while !shutdown.is_cancelled() {
        let now = now_ms();
        let mut next_due = now + poll.as_millis() as u64;
        let mut full = false;
        match engine.store.claim_timers(now, lease, BATCH).await {
            Ok((members, lease_score, next)) => {
                full = members.len() == BATCH;
                if let Some(next) = next {
                    next_due = next_due.min(next);
                }
                for raw in members {
                    let Ok(permit) = limit.clone().acquire_owned().await else {
                        return;
                    };
                    let engine = engine.clone();
                    tasks.spawn(async move {
                        fire(&engine, &raw, lease_score).await;
                        drop(permit);
                    });
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "Cannot read timers; retrying");
                next_due = now + 500;
            }
        }
        if full {
            continue;
        }
        engine.next_timer.store(next_due, Ordering::Release);
        let wait = Duration::from_millis(next_due.saturating_sub(now_ms()));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
            _ = engine.timer_wake.notified() => {}
        }
    }
}

async fn fire(engine: &Engine, raw: &str, lease_score: u64) {
    let Some(member) = TimerMember::decode(raw) else {
        tracing::warn!(timer = raw, "Malformed timer dropped");
        let _ = engine.store.settle_timer(raw, lease_score, None).await;
        return;
    };
    match engine.on_timer(&member).await {
        Ok(reschedule) => {
            if let Err(error) = engine
                .store
                .settle_timer(raw, lease_score, reschedule)
                .await
            {
                tracing::warn!(timer = raw, error = %error, "Timer not settled; it will fire again");
            }
            if let Some(due) = reschedule {
                engine.note_timers(std::iter::once(due));
            }
        }
        // The claim's lease runs out and the timer fires again.
        Err(error) => {
            tracing::warn!(timer = raw, error = %error, "Timer failed; it will fire again")
        }
    }
}
