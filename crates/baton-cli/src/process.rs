//! Process plumbing of the `baton` binary: logging and the shutdown signal. The agent
//! binaries have the same in `baton_agents::cli`; the coordinator-only build (without the
//! `dev` feature) does not link `baton-agents`, so these are its own.

/// Logs to stderr at `default` level; `RUST_LOG` overrides it.
pub(crate) fn init_logging_at(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Completes on SIGTERM or Ctrl-C (SIGINT). The handlers are installed when this is called,
/// not when the future is first polled, so a signal that arrives in between is not lost
/// (and does not kill the process with the default action).
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            // Without handlers, fall back to tokio's portable Ctrl-C.
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
