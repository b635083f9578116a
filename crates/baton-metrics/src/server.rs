//! The HTTP endpoint: `GET /metrics` answers the OpenMetrics text, any other path 404.
//! Plain HTTP/1.1 on one listener; it is meant for Prometheus and kubelet-style probes on
//! a private port, not for the internet.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
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

/// Connections served at once; more are closed on accept. Prometheus uses one per target.
const MAX_CONNECTIONS: usize = 64;
/// A client that has not sent its request headers by then is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot serve metrics on {addr}: {source}")]
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

/// A bound metrics listener. Binding is separate from serving so that a process fails at
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
        tracing::info!(addr = %addr, "Metrics listening");
        Ok(Self { listener, addr })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves scrapes until `shutdown` is cancelled, then closes every connection.
    pub async fn serve<S: Scrape>(self, scrape: Arc<S>, shutdown: CancellationToken) {
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
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let scrape = scrape.clone();
                    async move { Ok::<_, Infallible>(respond(scrape.as_ref(), &request).await) }
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
    pub fn spawn<S: Scrape>(self, scrape: Arc<S>, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(self.serve(scrape, shutdown))
    }
}

async fn respond<S: Scrape>(scrape: &S, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
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
    let body = scrape.scrape().await;
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(crate::CONTENT_TYPE),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
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
        let served = server.spawn(Arc::new(registry), stop.clone());

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
