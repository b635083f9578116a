//! The admin HTTP endpoint: `GET /metrics` answers the OpenMetrics text, `GET /livez` and
//! `GET /readyz` the probes (`200 ok`, or `503` and a short reason), any other path 404.
//! Plain HTTP/1.1 on one listener; it is meant for Prometheus and kubelet probes on a private
//! port, not for the internet.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::Health;

/// Connections served at once; more are closed on accept. Prometheus uses one per target.
const MAX_CONNECTIONS: usize = 64;
/// A client that has not sent its request headers by then is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `/livez` waits for a task spawned on the runtime to run.
const LIVE_TIMEOUT: Duration = Duration::from_millis(800);

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot serve the admin endpoint (metrics, probes) on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What a scrape answers: the page, rendered when the scrape arrives (so collectors can look
/// things up first).
pub trait Scrape: Send + Sync + 'static {
    fn scrape(&self) -> impl Future<Output = String> + Send;
}

impl Scrape for Registry {
    fn scrape(&self) -> impl Future<Output = String> + Send {
        std::future::ready(crate::encode(self))
    }
}

/// A scrape that exists only once the process has connected (the coordinator's reads queue
/// depths from JetStream): until [`Late::set`], `/metrics` answers an empty page, so the
/// server can answer probes from the start.
pub struct Late<S> {
    scrape: OnceLock<S>,
}

impl<S> Default for Late<S> {
    fn default() -> Self {
        Self {
            scrape: OnceLock::new(),
        }
    }
}

impl<S> Late<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the scrape; a second call is ignored.
    pub fn set(&self, scrape: S) {
        let _ = self.scrape.set(scrape);
    }
}

impl<S: Scrape> Scrape for Late<S> {
    async fn scrape(&self) -> String {
        match self.scrape.get() {
            Some(scrape) => scrape.scrape().await,
            None => "# EOF\n".to_owned(),
        }
    }
}

/// A bound admin listener (metrics and probes). Binding is separate from serving so that a process fails at
/// startup, before it connects anywhere, when the address is taken or invalid.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port; [`MetricsServer::local_addr`] tells which).
    pub async fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let bind_error = |source| Error::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        tracing::info!(addr = %addr, "Metrics listening (and /livez, /readyz)");
        Ok(Self { listener, addr })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves scrapes and probes until `shutdown` is cancelled, then closes every connection.
    pub async fn serve<S: Scrape>(
        self,
        scrape: Arc<S>,
        health: Health,
        shutdown: CancellationToken,
    ) {
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            while connections.try_join_next().is_some() {}
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, typically: wait instead of spinning.
                    tracing::debug!(error = %error, "Metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if connections.len() >= MAX_CONNECTIONS {
                continue;
            }
            let scrape = scrape.clone();
            let health = health.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let scrape = scrape.clone();
                    let health = health.clone();
                    async move {
                        Ok::<_, Infallible>(respond(scrape.as_ref(), &health, &request).await)
                    }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(error = %error, "Metrics connection ended with an error");
                }
            });
        }
        connections.abort_all();
    }

    /// [`MetricsServer::serve`] on its own task.
    pub fn spawn<S: Scrape>(
        self,
        scrape: Arc<S>,
        health: Health,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(self.serve(scrape, health, shutdown))
    }
}

async fn respond<S: Scrape>(
    scrape: &S,
    health: &Health,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/livez" | "/readyz") {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; this server answers /metrics, /livez and /readyz\n",
        );
    }
    // HEAD gets GET's headers; hyper leaves out the body.
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/livez" => return live().await,
        "/readyz" => {
            return match health.ready().await {
                Ok(()) => plain(StatusCode::OK, "ok\n"),
                Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
            };
        }
        _ => {}
    }
    let body = scrape.scrape().await;
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(crate::CONTENT_TYPE),
    );
    response
}

/// Alive: the runtime still runs tasks. A task spawned now must run within
/// [`LIVE_TIMEOUT`]; a runtime whose threads are all stuck (a blocking call on every worker
/// thread, a deadlock) fails the probe, so the kubelet restarts the process.
async fn live() -> Response<Full<Bytes>> {
    match tokio::time::timeout(LIVE_TIMEOUT, tokio::spawn(async {})).await {
        Ok(Ok(())) => plain(StatusCode::OK, "ok\n"),
        _ => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the event loop is not answering\n",
        ),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    body(status, Bytes::from_static(text.as_bytes()))
}

fn text(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    body(status, Bytes::from(text))
}

fn body(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// One HTTP/1.1 request over a fresh connection; the raw response.
    async fn get(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_metrics_and_404_elsewhere_then_stops() {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        registry.register("baton_test_things", "Things", counter.clone());
        counter.inc_by(3);
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let stop = CancellationToken::new();
        let served = server.spawn(Arc::new(registry), Health::new(), stop.clone());

        let page = get(addr, "GET", "/metrics").await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(page.contains(crate::CONTENT_TYPE), "{page}");
        assert!(
            page.contains("\r\n\r\n# HELP baton_test_things Things.\n"),
            "{page}"
        );
        assert!(page.contains("baton_test_things_total 3\n"), "{page}");
        assert!(page.ends_with("# EOF\n"), "{page}");
        for path in ["/", "/metrics/", "/health", "/metricsx"] {
            let page = get(addr, "GET", path).await;
            assert!(
                page.starts_with("HTTP/1.1 404 Not Found\r\n"),
                "{path}: {page}"
            );
        }
        let page = get(addr, "POST", "/metrics").await;
        assert!(page.starts_with("HTTP/1.1 405 "), "{page}");
        let page = get(addr, "GET", "/metrics?x=1").await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");

        stop.cancel();
        served.await.unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    struct Up;

    impl crate::Check for Up {
        fn check(&self) -> crate::CheckFuture<'_> {
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn probes_answer_liveness_and_readiness_with_a_reason() {
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.local_addr();
        let health = Health::new();
        let late = Arc::new(Late::<Registry>::new());
        let stop = CancellationToken::new();
        let served = server.spawn(late.clone(), health.clone(), stop.clone());

        let page = get(addr, "GET", "/livez").await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(page.ends_with("\r\n\r\nok\n"), "{page}");
        health.starting("connecting to NATS");
        let page = get(addr, "GET", "/readyz").await;
        assert!(page.starts_with("HTTP/1.1 503 "), "{page}");
        assert!(page.ends_with("starting: connecting to NATS\n"), "{page}");
        // Until the scrape is set, an empty page.
        let page = get(addr, "GET", "/metrics").await;
        assert!(page.ends_with("\r\n\r\n# EOF\n"), "{page}");
        let mut registry = Registry::default();
        registry.register("baton_test_late", "Late", Counter::<u64>::default());
        late.set(registry);
        let page = get(addr, "GET", "/metrics").await;
        assert!(page.contains("baton_test_late_total 0\n"), "{page}");

        health.serving(Up);
        let page = get(addr, "GET", "/readyz").await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(page.ends_with("\r\n\r\nok\n"), "{page}");
        let page = get(addr, "HEAD", "/readyz").await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        health.draining();
        let page = get(addr, "GET", "/readyz").await;
        assert!(page.starts_with("HTTP/1.1 503 "), "{page}");
        assert!(page.ends_with("draining\n"), "{page}");
        let page = get(addr, "GET", "/livez").await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        stop.cancel();
        served.await.unwrap();
    }

    #[tokio::test]
    async fn an_address_in_use_or_not_local_fails_to_bind() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = MetricsServer::bind(addr).await.unwrap_err();
        let message = error.to_string();
        assert!(message.contains(&addr.to_string()), "{message}");
        // TEST-NET-1: no interface of this machine has it.
        let foreign: SocketAddr = "192.0.2.1:9100".parse().unwrap();
        assert!(MetricsServer::bind(foreign).await.is_err());
    }
}
