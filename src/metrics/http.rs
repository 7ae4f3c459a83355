//! The `GET /metrics` endpoint that serves a peer's [`Metrics`], on the
//! same HTTP stack as the dashboard (axum on hyper), plain HTTP.
//!
//! One request per connection (no keep-alive): hyper reads one request
//! head of at most [`MAX_REQUEST_HEAD_BYTES`] within
//! [`REQUEST_HEAD_TIMEOUT_MS`], the answer must be taken within
//! [`RESPONSE_WRITE_TIMEOUT_MS`], then the connection closes. Request bodies
//! are never read.
//!
//! Connections are served concurrently, each with its own deadlines. At
//! [`MAX_HTTP_CONNECTIONS`], a new connection takes the place of the oldest
//! one that has not yet sent its request head (closed at once), so idle or
//! slow connections cannot keep a scraper out; only when every connection
//! is busy being answered is the new one closed.
//!
//! Must never panic on network input, never hold more than
//! [`MAX_HTTP_CONNECTIONS`] connections, and never change node state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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
/// Longest request head (request line plus headers) hyper buffers; a
/// longer one is answered 431 and the connection closed. 8 KiB is hyper's
/// smallest buffer.
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

/// What a request handler needs.
type Refresh = Arc<dyn Fn() + Send + Sync>;

/// Serves `GET /metrics` on `listener` until the future is dropped (which
/// also aborts the connections in flight). `refresh` runs before each
/// encoding, on a tokio worker, so it must be quick (typically it copies
/// the node's stats into `metrics` with [`Metrics::update_from`]).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    refresh: impl Fn() + Send + Sync + 'static,
) {
    let refresh: Refresh = Arc::new(refresh);
    let app = Router::new()
        .route(METRICS_PATH, get(scrape))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state((metrics, refresh));
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
        let waiting = Arc::new(AtomicBool::new(true));
        let task = connections.spawn(answer(stream, app.clone(), waiting.clone(), peer));
        slots.push_back(Slot { task, waiting });
    }
}

/// One open connection: its task, and whether it still waits for a head.
struct Slot {
    task: AbortHandle,
    waiting: Arc<AtomicBool>,
}

/// One connection: one request, one answer, closed; within the head and
/// write deadlines together.
async fn answer(
    stream: TcpStream,
    app: Router,
    waiting: Arc<AtomicBool>,
    peer: std::net::SocketAddr,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_millis(REQUEST_HEAD_TIMEOUT_MS))
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .keep_alive(false);
    let service =
        hyper::service::service_fn(move |req: axum::extract::Request<hyper::body::Incoming>| {
            // From here on it is being answered: no longer the one to make room.
            waiting.store(false, Ordering::Relaxed);
            tower::ServiceExt::oneshot(app.clone(), req)
        });
    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let deadline = Duration::from_millis(REQUEST_HEAD_TIMEOUT_MS + RESPONSE_WRITE_TIMEOUT_MS);
    match timeout(deadline, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics endpoint: request failed"),
        Err(_) => tracing::debug!(%peer, "metrics endpoint: connection past its deadline, closed"),
    }
}

async fn scrape(
    State((metrics, refresh)): State<(Arc<Metrics>, Refresh)>,
    headers: HeaderMap,
) -> Response {
    refresh();
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("application/openmetrics-text")));
    let content_type = if openmetrics { CONTENT_TYPE_OPENMETRICS } else { CONTENT_TYPE_TEXT };
    ([(header::CONTENT_TYPE, content_type)], metrics.encode()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Stats;
    use crate::metrics::tests::sample;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
            .unwrap()
            .to_ascii_lowercase();
        assert!(reply.starts_with("http/1.1 200 ok\r\n"), "{reply}");
        assert!(reply.contains("content-type: text/plain; version=0.0.4"), "{reply}");
        assert!(reply.contains("\r\n\r\n# help"), "{reply}");
        assert_eq!(sample(&reply, "jujud_probes_total"), Some(7.0));
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));

        let reply = timeout(
            GUARD,
            exchange(
                addr,
                b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n",
            ),
        )
        .await
        .unwrap();
        assert!(
            reply.to_ascii_lowercase().contains("content-type: application/openmetrics-text"),
            "{reply}"
        );
        assert_eq!(sample(&reply, "jujud_probes_total"), Some(14.0));

        let reply = timeout(GUARD, exchange(addr, b"GET /other HTTP/1.1\r\n\r\n")).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 404 Not Found\r\n"), "{reply}");
        assert_eq!(refreshes.load(Ordering::SeqCst), 2, "refresh runs only for /metrics");
        task.abort();
    }

    #[tokio::test]
    async fn a_slow_head_is_cut_off_and_other_methods_get_no_metrics() {
        let (addr, task) = start(Arc::new(AtomicUsize::new(0))).await;
        // A slowloris: half a head, then nothing. The server closes it at
        // its head deadline (GUARD only bounds a failure).
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").await.unwrap();
        let mut rest = Vec::new();
        timeout(GUARD, slow.read_to_end(&mut rest))
            .await
            .expect("closed at the head deadline")
            .ok();
        assert!(!String::from_utf8_lossy(&rest).contains("jujud_"), "no metrics for half a head");
        let reply =
            timeout(GUARD, exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"))
                .await
                .unwrap();
        assert!(!reply.contains("jujud_") && !reply.contains(" 200 "), "{reply}");
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
