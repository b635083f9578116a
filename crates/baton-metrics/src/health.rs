//! What `GET /readyz` answers: a latch set once the process has connected and bound what it
//! serves from, a live check of its connections on every probe, and draining, which no
//! check undoes (linkerd2-proxy's admin server works the same way).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A readiness check's answer: `Err` carries a short reason for the probe's body.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// A live look at what a serving process depends on (its NATS connection, Redis), run on
/// every `/readyz`. It should answer quickly; [`Health::ready`] bounds it by
/// [`CHECK_TIMEOUT`] anyway.
pub trait Check: Send + Sync + 'static {
    fn check(&self) -> CheckFuture<'_>;
}

/// How long a readiness check may take before the probe is answered "not ready". Below
/// kubelet's default probe timeout (1 s), so a hung dependency reads as not ready rather
/// than as a failed probe request.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(800);

enum State {
    /// Not serving yet: what the process is doing (`connecting to NATS`, …).
    Starting(String),
    /// Serving, as long as the check passes.
    Serving(Arc<dyn Check>),
    /// Shutting down: not ready, whatever the connections say.
    Draining,
}

/// A process's readiness, shared by the process and its admin server. Cheap to clone.
#[derive(Clone)]
pub struct Health {
    state: Arc<Mutex<State>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: Arc::new(Mutex::new(State::Starting("starting".into()))),
        }
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &*self.lock() {
            State::Starting(what) => format!("starting: {what}"),
            State::Serving(_) => "serving".into(),
            State::Draining => "draining".into(),
        };
        f.debug_tuple("Health").field(&state).finish()
    }
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Names the startup step under way (the reason `/readyz` gives until serving).
    pub fn starting(&self, what: impl Into<String>) {
        let mut state = self.lock();
        if let State::Starting(_) = *state {
            *state = State::Starting(what.into());
        }
    }

    /// Everything is connected and bound: ready from now on while `check` passes. Ignored
    /// once draining.
    pub fn serving(&self, check: impl Check) {
        let mut state = self.lock();
        if !matches!(*state, State::Draining) {
            *state = State::Serving(Arc::new(check));
        }
    }

    /// Shutdown started: not ready from now on.
    pub fn draining(&self) {
        *self.lock() = State::Draining;
    }

    pub fn is_draining(&self) -> bool {
        matches!(*self.lock(), State::Draining)
    }

    /// Whether the process is ready, and if not, why.
    pub async fn ready(&self) -> Result<(), String> {
        let check = match &*self.lock() {
            State::Starting(what) => return Err(format!("starting: {what}")),
            State::Draining => return Err("draining".into()),
            State::Serving(check) => check.clone(),
        };
        match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "readiness check took longer than {} ms",
                CHECK_TIMEOUT.as_millis()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    struct Flag(Arc<AtomicBool>);

    impl Check for Flag {
        fn check(&self) -> CheckFuture<'_> {
            let up = self.0.load(Ordering::SeqCst);
            Box::pin(async move { if up { Ok(()) } else { Err("down".into()) } })
        }
    }

    struct Hangs;

    impl Check for Hangs {
        fn check(&self) -> CheckFuture<'_> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn starting_then_serving_while_the_check_passes_then_draining_for_good() {
        let health = Health::new();
        assert_eq!(health.ready().await, Err("starting: starting".into()));
        health.starting("connecting to NATS");
        assert_eq!(
            health.ready().await,
            Err("starting: connecting to NATS".into())
        );
        let up = Arc::new(AtomicBool::new(true));
        health.serving(Flag(up.clone()));
        assert_eq!(health.ready().await, Ok(()));
        up.store(false, Ordering::SeqCst);
        assert_eq!(health.ready().await, Err("down".into()));
        up.store(true, Ordering::SeqCst);
        assert_eq!(health.ready().await, Ok(()));
        health.draining();
        assert!(health.is_draining());
        health.serving(Flag(up.clone()));
        health.starting("again");
        assert_eq!(health.ready().await, Err("draining".into()));
    }

    #[tokio::test]
    async fn a_hung_check_is_not_ready() {
        let health = Health::new();
        health.serving(Hangs);
        let error = health.ready().await.unwrap_err();
        assert!(error.contains("longer than"), "{error}");
    }
}
