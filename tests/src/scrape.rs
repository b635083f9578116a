//! Reading a Prometheus endpoint the way Prometheus does: `GET /metrics` over a real TCP
//! connection, then looking samples up in the OpenMetrics text.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 GET of `path`; the status code and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    (status, body.to_owned())
}

/// [`get`], or `None` when nothing answers at `addr` (yet): a process that has not bound its
/// admin address, or has exited.
pub async fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
}

/// Polls `path` (a probe) until it answers `status` with a body containing `text`; returns
/// the body. Panics with the last answer after `timeout`.
pub async fn wait_probe(
    addr: SocketAddr,
    path: &str,
    status: u16,
    text: &str,
    timeout: Duration,
) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let answer = try_get(addr, path).await;
        if let Some((got, body)) = &answer
            && *got == status
            && body.contains(text)
        {
            return body.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} of {addr} did not answer {status} {text:?} within {timeout:?}; last: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The metrics page of `addr`.
pub async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body
}

/// Scrapes until `ready` holds for the page (metrics are updated just after the transition
/// or the answer they count); panics with the last page after `timeout`.
pub async fn scrape_until(
    addr: SocketAddr,
    timeout: Duration,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let page = scrape(addr).await;
        if ready(&page) {
            return page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics of {addr} not as expected after {timeout:?}:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one sample, named exactly as it is written (`name{labels}`).
pub fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}
