//! The coordinator's readiness check (`GET /readyz` once it is serving): its NATS connection
//! is up, and Redis answers and holds the coordinator's scripts. Run on every probe, so a
//! replica that lost NATS or Redis leaves its Service's endpoints until they are back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use baton_metrics::{Check, CheckFuture};

use crate::store::Store;

/// How long the Redis round trip of a probe may take; Redis answers in well under a
/// millisecond when it is there.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

pub(crate) struct Ready {
    client: async_nats::Client,
    store: Store,
    /// The scripts are loaded in the Redis that answers: set at start, cleared by a failed
    /// look at Redis (it may come back as a new process, with an empty script cache).
    scripts: AtomicBool,
}

impl Ready {
    /// A check for a replica that has just loaded its scripts.
    pub(crate) fn new(client: async_nats::Client, store: Store) -> Self {
        Self {
            client,
            store,
            scripts: AtomicBool::new(true),
        }
    }

    async fn redis(&self) -> Result<(), crate::store::Error> {
        self.store.ping().await?;
        if !self.scripts.load(Ordering::SeqCst) {
            self.store.load_scripts().await?;
            self.scripts.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl Check for Ready {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            baton_nats::connected(&self.client)?;
            let answered = tokio::time::timeout(REDIS_TIMEOUT, self.redis()).await;
            if !matches!(answered, Ok(Ok(()))) {
                self.scripts.store(false, Ordering::SeqCst);
            }
            match answered {
                Ok(Ok(())) => Ok(()),
                // Redis errors name the server and the failure, never a password.
                Ok(Err(error)) => Err(format!("Redis not ready: {error}")),
                Err(_) => Err(format!(
                    "Redis did not answer within {} ms",
                    REDIS_TIMEOUT.as_millis()
                )),
            }
        })
    }
}
