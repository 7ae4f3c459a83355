//! The tiny `GET /metrics` endpoint that serves a peer's [`Metrics`].
//!
//! Why a hand-written HTTP/1.1 responder: one fixed endpoint does not justify
//! an HTTP stack (hyper, axum and their dependencies). It reads one bounded
//! request head under a timeout, answers, and closes; no keep-alive, no
//! bodies, no chunking.
//!
//! Connections are served concurrently, each with its own deadlines. At
//! [`MAX_HTTP_CONNECTIONS`], a new connection takes the place of the oldest
//! one that has not yet sent its request head (closed at once), so idle or
//! slow connections cannot keep a scraper out; only when every connection
//! is busy being answered is the new one closed.
//!
//! Must never panic on network input, never hold more than
//! [`MAX_HTTP_CONNECTIONS`] connections or [`MAX_REQUEST_HEAD_BYTES`] per
//! connection, and never change node state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::timeout;

use super::Metrics;

/// The only path served; everything else is a 404.
pub const METRICS_PATH: &str = "/metrics";
/// Connections served at once. One more closes the oldest connection
/// still waiting for its request head, or, if all are being answered, is
/// itself closed without a word.
pub const MAX_HTTP_CONNECTIONS: usize = 16;
/// Longest request head (request line plus headers) read before giving up.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub const REQUEST_HEAD_TIMEOUT_MS: u64 = 2_000;
/// How long a client may take to read the response.
pub const RESPONSE_WRITE_TIMEOUT_MS: u64 = 5_000;
/// Pause after a failed `accept` (e.g. out of file descriptors), so the
/// loop does not spin.
pub const ACCEPT_RETRY_MS: u64 = 100;
/// The text exposition format 0.0.4, for people and plain scrapers.
const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// What `prometheus-client` really emits; sent when the scraper asks for it
/// (Prometheus does), so counter metadata is read correctly.
const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why one HTTP exchange ended early; logged at debug, never fatal.
#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("client closed before sending a full request head")]
    Closed,
    #[error("request head not complete after {REQUEST_HEAD_TIMEOUT_MS} ms")]
    HeadTimeout,
    #[error("request head longer than {MAX_REQUEST_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("response not written within {RESPONSE_WRITE_TIMEOUT_MS} ms")]
    WriteTimeout,
}

/// Serves `GET /metrics` on `listener` until the future is dropped (which
/// also aborts the connections in flight). `refresh` runs before each
/// encoding, on a tokio worker, so it must be quick (typically it copies
/// the node's stats into `metrics` with [`Metrics::update_from`]).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    refresh: impl Fn() + Send + Sync + 'static,
) {
    let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(refresh);
    let mut connections = JoinSet::new();
    // Open connections, oldest first.
    let mut slots: std::collections::VecDeque<Slot> = std::collections::VecDeque::new();
    loop {
        while connections.try_join_next().is_some() {}
        slots.retain(|s| !s.task.is_finished());
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        if slots.len() >= MAX_HTTP_CONNECTIONS {
            let Some(oldest_silent) = slots.iter().position(|s| s.waiting.load(Ordering::Relaxed))
            else {
                tracing::debug!(%peer, "metrics endpoint: every connection is being answered, closing");
                continue;
            };
            if let Some(evicted) = slots.remove(oldest_silent) {
                evicted.task.abort();
                tracing::debug!(%peer, "metrics endpoint: at the connection cap, closed the oldest one without a request");
            }
        }
        let (metrics, refresh) = (metrics.clone(), refresh.clone());
        let waiting = Arc::new(AtomicBool::new(true));
        let flag = waiting.clone();
        let task = connections.spawn(async move {
            if let Err(e) = answer(stream, &metrics, refresh.as_ref(), &flag).await {
                tracing::debug!(%peer, error = %e, "metrics endpoint: request failed");
            }
        });
        slots.push_back(Slot { task, waiting });
    }
}

/// One open connection: its task, and whether it still waits for a head.
struct Slot {
    task: AbortHandle,
    waiting: Arc<AtomicBool>,
}

/// One exchange: read the head, write one response, close.
async fn answer(
    mut stream: TcpStream,
    metrics: &Metrics,
    refresh: &(dyn Fn() + Send + Sync),
    waiting: &AtomicBool,
) -> Result<(), HttpError> {
    let head_timeout = Duration::from_millis(REQUEST_HEAD_TIMEOUT_MS);
    let head =
        timeout(head_timeout, read_head(&mut stream)).await.map_err(|_| HttpError::HeadTimeout)?;
    // From here on it is being answered: no longer the one to make room.
    waiting.store(false, Ordering::Relaxed);
    let (response, outcome) = match head {
        Ok(head) => (respond(&parse_request(&head), metrics, refresh), Ok(())),
        Err(HttpError::HeadTooLarge) => (
            response("431 Request Header Fields Too Large", CONTENT_TYPE_TEXT, ""),
            Err(HttpError::HeadTooLarge),
        ),
        Err(e) => return Err(e),
    };
    let write = async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    };
    timeout(Duration::from_millis(RESPONSE_WRITE_TIMEOUT_MS), write)
        .await
        .map_err(|_| HttpError::WriteTimeout)??;
    outcome
}

/// Reads until the blank line that ends a request head, at most
/// [`MAX_REQUEST_HEAD_BYTES`]. Returns the head without the blank line.
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HttpError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HttpError::Closed);
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() >= MAX_REQUEST_HEAD_BYTES {
            return Err(HttpError::HeadTooLarge);
        }
    }
}

/// Where the head ends: the first empty line (CRLF or bare LF).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What we need from a request head.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    /// `GET /metrics` (a query string is ignored).
    wants_metrics: bool,
    /// The `Accept` header names the OpenMetrics format.
    accepts_openmetrics: bool,
}

fn parse_request(head: &[u8]) -> Request {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let mut request_line = lines.next().unwrap_or("").split_ascii_whitespace();
    let method = request_line.next();
    let path = request_line.next().map(|t| t.split('?').next().unwrap_or(t));
    let accepts_openmetrics = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("accept")
                && value.contains("application/openmetrics-text")
        })
    });
    Request {
        wants_metrics: method == Some("GET") && path == Some(METRICS_PATH),
        accepts_openmetrics,
    }
}

fn respond(request: &Request, metrics: &Metrics, refresh: &(dyn Fn() + Send + Sync)) -> Vec<u8> {
    if !request.wants_metrics {
        return response("404 Not Found", CONTENT_TYPE_TEXT, "not found\n");
    }
    refresh();
    let content_type =
        if request.accepts_openmetrics { CONTENT_TYPE_OPENMETRICS } else { CONTENT_TYPE_TEXT };
    response("200 OK", content_type, &metrics.encode())
}

fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Stats;
    use crate::metrics::tests::sample;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn request_heads_are_parsed_leniently() {
        let r = parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\naccept: application/openmetrics-text;version=1.0.0");
        assert_eq!(r, Request { wants_metrics: true, accepts_openmetrics: true });
        assert!(!parse_request(b"POST /metrics HTTP/1.1").wants_metrics);
        assert!(!parse_request(b"GET /metricsx HTTP/1.1").wants_metrics);
        assert!(!parse_request(b"\xff\xfe garbage").wants_metrics);
        assert!(!parse_request(b"").wants_metrics);
        assert_eq!(head_end(b"GET / HTTP/1.0\n\nrest"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\n"), Some(20));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    /// Sends `request` and reads until the server closes. Errors (a reset
    /// after an early close) yield what was read so far.
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(request).await;
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply).await;
        String::from_utf8_lossy(&reply).into_owned()
    }

    async fn start(
        refreshes: Arc<AtomicUsize>,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let m = metrics.clone();
        let task = tokio::spawn(serve(listener, metrics, move || {
            let n = refreshes.fetch_add(1, Ordering::SeqCst) as u64 + 1;
            m.update_from(&Stats { probes: n * 7, ..Stats::default() }, &[], 0);
        }));
        (addr, task)
    }

    const GUARD: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn serves_metrics_over_tcp() {
        let refreshes = Arc::new(AtomicUsize::new(0));
        let (addr, task) = start(refreshes.clone()).await;
        let reply = timeout(GUARD, exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
            .await
            .unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("Content-Type: text/plain; version=0.0.4"), "{reply}");
        assert!(reply.contains("\r\n\r\n# HELP"), "{reply}");
        assert_eq!(sample(&reply, "jujud_probes_total"), Some(7.0));
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));

        let reply = timeout(
            GUARD,
            exchange(
                addr,
                b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n",
            ),
        )
        .await
        .unwrap();
        assert!(reply.contains("Content-Type: application/openmetrics-text"), "{reply}");
        assert_eq!(sample(&reply, "jujud_probes_total"), Some(14.0));

        let reply = timeout(GUARD, exchange(addr, b"GET /other HTTP/1.1\r\n\r\n")).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 404 Not Found\r\n"), "{reply}");
        assert_eq!(refreshes.load(Ordering::SeqCst), 2, "refresh runs only for /metrics");
        task.abort();
    }

    #[tokio::test]
    async fn oversized_head_is_cut_off() {
        let (addr, task) = start(Arc::new(AtomicUsize::new(0))).await;
        let mut request = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        request.resize(4 * MAX_REQUEST_HEAD_BYTES, b'a');
        let reply = timeout(GUARD, exchange(addr, &request)).await.expect("server must close");
        assert!(!reply.contains("200 OK"), "{reply}");
        // The server is still serving afterwards.
        let reply = timeout(GUARD, exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n")).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        task.abort();
    }

    #[tokio::test]
    async fn idle_connections_beyond_the_limit_do_not_block_a_scrape() {
        let (addr, task) = start(Arc::new(AtomicUsize::new(0))).await;
        let mut idle = Vec::new();
        for _ in 0..2 * MAX_HTTP_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Accepted after 32 idle ones: it takes the place of the oldest.
        let reply = timeout(GUARD, exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n"))
            .await
            .expect("a scrape answers while idle connections are open");
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        // The oldest idle connections were closed to make room: they read EOF.
        let mut byte = [0u8; 1];
        let n = timeout(GUARD, idle[0].read(&mut byte)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0, "the oldest idle connection was closed");
        drop(idle);
        task.abort();
    }
}
