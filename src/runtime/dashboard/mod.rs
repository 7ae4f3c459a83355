//! The web dashboard a manager serves with `--dashboard-listen ADDR`:
//! HTTPS (TLS 1.3) with the manager's own certificate, signed by the
//! cluster CA; read-only views of HA, managers, machines, applications,
//! units and a timeline, updated live over server-sent events.
//!
//! Access: `juju dashboard` asks a manager over the API for a single-use
//! login link (`auth.rs`); opening it sets a session cookie (HttpOnly,
//! Secure, SameSite=Strict) and redirects to `/`. Without a live session
//! every page, asset and stream answers 401 with an empty body.
//!
//! Owns the HTTP side (axum on hyper, tokio-rustls) and its bounds:
//! [`MAX_CONNECTIONS`], [`MAX_EVENT_STREAMS`], the TLS handshake and
//! request-head deadlines, the request head size, and no request bodies.
//! Must never change node state (it only reads the status), never show
//! anything without a session, and never log a link's or cookie's secret.

pub mod auth;
pub mod feed;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::shared::Shared;
use super::wire::{self, MemberRow};
use crate::metrics::{DropReason, Metrics};
use crate::pki::{ClusterCa, IssuedCert};

/// TCP connections served at once; past it a new one is closed at once
/// (and counted as `dashboard_full`).
pub const MAX_CONNECTIONS: usize = 64;
/// Live event streams at once (each holds a connection); past it a new
/// stream is answered 503 with an empty body.
pub const MAX_EVENT_STREAMS: usize = 16;
/// How long a client has to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// How long a client has to send a request head, and how long a
/// keep-alive connection may idle before its next one (hyper's header
/// read timeout): a slowloris is cut off here.
pub const HEADER_READ_TIMEOUT_MS: u64 = 5_000;
/// Largest request head hyper buffers (hyper's minimum is 8 KiB).
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 << 10;
/// Longest life of one connection, event streams included (the browser's
/// EventSource reconnects by itself, and is then checked again).
pub const CONNECTION_MAX_MS: u64 = 3_600_000;
/// A comment line on an idle event stream this often, so proxies and the
/// browser see it alive.
pub const EVENT_KEEPALIVE_MS: u64 = 15_000;
/// Pause after a failed `accept` (e.g. out of file descriptors).
pub const ACCEPT_RETRY_MS: u64 = 100;
/// The session cookie's name.
pub const COOKIE: &str = "jujud_dashboard";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("cannot listen for the dashboard on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("dashboard TLS: {0}")]
    Tls(String),
}

/// One manager's dashboard: its credential tables, its feed, and what
/// `juju dashboard` is told.
pub struct Dashboard {
    pub auth: auth::Auth,
    pub feed: feed::Feed,
    base_url: String,
    ca_fingerprint: String,
    ca_spki_sha256_base64: String,
    streams: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Dashboard {
    /// A fresh login link, as the API answers it.
    pub fn login_link(&self) -> wire::Response {
        match self.auth.mint_link(Instant::now()) {
            Ok(secret) => wire::Response::DashboardLink {
                url: format!("{}/", self.base_url),
                login_url: format!("{}/login/{secret}", self.base_url),
                expires_in_ms: auth::LOGIN_LINK_TTL_MS,
                ca_fingerprint: self.ca_fingerprint.clone(),
                ca_spki_sha256_base64: self.ca_spki_sha256_base64.clone(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "dashboard login link refused");
                self.metrics.count_drop(DropReason::Rejected);
                wire::Response::Error(e.to_string())
            }
        }
    }
}

/// Binds `listen`, and serves the dashboard there until the process
/// ends; `public` is the address put in links (the listen address, or the
/// advertised IP when listening on an unspecified one).
pub async fn start(
    listen: SocketAddr,
    public: SocketAddr,
    shared: Arc<Shared>,
    cert: &IssuedCert,
) -> Result<Arc<Dashboard>, DashboardError> {
    let tls = tls_config(&shared.ca, cert)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| DashboardError::Bind { addr: listen, source })?;
    let bound =
        listener.local_addr().map_err(|source| DashboardError::Bind { addr: listen, source })?;
    let host = if bound.ip().is_unspecified() { public.ip() } else { bound.ip() };
    let dash = Arc::new(Dashboard {
        auth: auth::Auth::default(),
        feed: feed::Feed::default(),
        base_url: format!("https://{}", SocketAddr::new(host, bound.port())),
        ca_fingerprint: shared.ca_fingerprint.clone(),
        ca_spki_sha256_base64: spki_pin(&shared.ca).map_err(DashboardError::Tls)?,
        streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
        metrics: shared.metrics.clone(),
    });
    tracing::info!(url = %dash.base_url, "dashboard listening (log in with `juju dashboard`)");
    tokio::spawn(poll(shared, dash.clone()));
    tokio::spawn(accept_loop(
        listener,
        tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
        router(dash.clone()),
        dash.metrics.clone(),
    ));
    Ok(dash)
}

fn tls_config(ca: &ClusterCa, cert: &IssuedCert) -> Result<rustls::ServerConfig, DashboardError> {
    let err = |e: &dyn std::fmt::Display| DashboardError::Tls(e.to_string());
    let chain = vec![cert.cert_der().map_err(|e| err(&e))?, ca.cert_der().map_err(|e| err(&e))?];
    let mut config = rustls::ServerConfig::builder_with_provider(crate::pki::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, cert.key_der().map_err(|e| err(&e))?)
        .map_err(|e| err(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The base64 SHA-256 of the CA's SubjectPublicKeyInfo: what Chromium's
/// `--ignore-certificate-errors-spki-list` takes to trust this cluster.
pub fn spki_pin(ca: &ClusterCa) -> Result<String, String> {
    use sha2::Digest;
    let der = ca.cert_der().map_err(|e| e.to_string())?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    Ok(base64(&sha2::Sha256::digest(x509.tbs_certificate.subject_pki.raw)))
}

/// Standard base64 with padding (RFC 4648), for the SPKI pin.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            let c =
                if i <= chunk.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' };
            out.push(c);
        }
    }
    out
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads the status into the feed, until the node stops: every
/// [`feed::POLL_MS`] while a page is open (an event stream), else every
/// [`feed::IDLE_POLL_MS`] (the timeline still records what happens, with
/// coarser times, and an idle manager spends less).
async fn poll(shared: Arc<Shared>, dash: Arc<Dashboard>) {
    let mut prev: Option<feed::Reading> = None;
    loop {
        let open = dash.streams.available_permits() < MAX_EVENT_STREAMS;
        let every = if open { feed::POLL_MS } else { feed::IDLE_POLL_MS };
        tokio::time::sleep(Duration::from_millis(every)).await;
        let Some((me, status, members, controller)) = shared.status().await else {
            if shared.commands.is_closed() {
                return;
            }
            continue;
        };
        let now = feed::Reading {
            answered_by: me,
            status,
            members: members.iter().map(MemberRow::from).collect(),
            controller,
        };
        dash.feed.observe(prev.as_ref(), &now, unix_ms());
        prev = Some(now);
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    app: Router,
    metrics: Arc<Metrics>,
) {
    let conns = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "dashboard accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "dashboard at {MAX_CONNECTIONS} connections; closed a new one");
            metrics.count_drop(DropReason::DashboardFull);
            continue;
        };
        let (tls, app, metrics) = (tls.clone(), app.clone(), metrics.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(
                Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS),
                tls.accept(tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "dashboard TLS handshake failed");
                    metrics.count_drop(DropReason::DashboardTls);
                    return;
                }
                Err(_) => {
                    metrics.count_drop(DropReason::DashboardTls);
                    return;
                }
            };
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_millis(HEADER_READ_TIMEOUT_MS))
                .max_buf_size(MAX_REQUEST_HEAD_BYTES);
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_millis(CONNECTION_MAX_MS), conn).await;
        });
    }
}

/// Every route but `/login/{secret}` sits behind the session check.
pub fn router(dash: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { page("text/javascript; charset=utf-8", APP_JS) }))
        .route("/style.css", get(|| async { page("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/api/snapshot", get(snapshot))
        .route("/events", get(events))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(middleware::from_fn_with_state(dash.clone(), require_session))
        .route("/login/{secret}", get(login))
        .layer(middleware::from_fn(hardening))
        .with_state(dash)
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// No caching, no framing, no referrer (a login link must not leak), no
/// script from elsewhere; only GET and HEAD, and never a request body.
async fn hardening(req: Request, next: Next) -> Response {
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    let mut resp = if !matches!(*req.method(), Method::GET | Method::HEAD) {
        StatusCode::METHOD_NOT_ALLOWED.into_response()
    } else if has_body {
        StatusCode::PAYLOAD_TOO_LARGE.into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    resp
}

/// The session cookie's value, if the request carries one.
pub fn cookie_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

async fn require_session(State(dash): State<Arc<Dashboard>>, req: Request, next: Next) -> Response {
    match cookie_of(req.headers()) {
        Some(c) if dash.auth.session_ok(c, Instant::now()) => next.run(req).await,
        presented => {
            if presented.is_some() {
                tracing::info!(path = %req.uri().path(), "dashboard request with an unknown or expired session cookie refused");
                dash.metrics.count_drop(DropReason::DashboardUnauthorised);
            }
            StatusCode::UNAUTHORIZED.into_response()
        }
    }
}

async fn login(State(dash): State<Arc<Dashboard>>, Path(secret): Path<String>) -> Response {
    match dash.auth.redeem(&secret, Instant::now()) {
        Some(cookie) => {
            let set = format!(
                "{COOKIE}={cookie}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
                auth::SESSION_TTL_MS / 1000
            );
            tracing::info!("dashboard login");
            (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, "/".to_string()), (header::SET_COOKIE, set)],
            )
                .into_response()
        }
        None => {
            tracing::warn!("dashboard login refused: unknown, used or expired link");
            dash.metrics.count_drop(DropReason::DashboardUnauthorised);
            StatusCode::UNAUTHORIZED.into_response()
        }
    }
}

async fn snapshot(State(dash): State<Arc<Dashboard>>) -> Response {
    let json = dash.feed.latest();
    ([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response()
}

async fn events(State(dash): State<Arc<Dashboard>>) -> Response {
    let Ok(permit) = dash.streams.clone().try_acquire_owned() else {
        tracing::info!("dashboard at {MAX_EVENT_STREAMS} event streams; a new one was refused");
        dash.metrics.count_drop(DropReason::DashboardFull);
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let rx = dash.feed.subscribe();
    let stream = futures_util::stream::unfold((rx, permit), |(mut rx, permit)| async move {
        loop {
            rx.changed().await.ok()?;
            let json = rx.borrow_and_update().clone();
            if !json.is_empty() {
                return Some((
                    Ok::<_, Infallible>(Event::default().data(json.as_str())),
                    (rx, permit),
                ));
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_millis(EVENT_KEEPALIVE_MS)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dash() -> Arc<Dashboard> {
        Arc::new(Dashboard {
            auth: auth::Auth::default(),
            feed: feed::Feed::default(),
            base_url: "https://127.0.0.1:1".into(),
            ca_fingerprint: String::new(),
            ca_spki_sha256_base64: String::new(),
            streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
            metrics: Arc::new(Metrics::new()),
        })
    }

    async fn call(
        app: &Router,
        req: axum::http::Request<axum::body::Body>,
    ) -> (StatusCode, HeaderMap, usize) {
        let resp = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (parts.status, parts.headers, bytes.len())
    }

    fn get(path: &str, cookie: Option<&str>) -> axum::http::Request<axum::body::Body> {
        let mut b = axum::http::Request::get(path);
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, format!("{COOKIE}={c}"));
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn nothing_without_a_session_and_a_link_logs_in_once() {
        let d = dash();
        let app = router(d.clone());
        for path in ["/", "/app.js", "/style.css", "/api/snapshot", "/events", "/nope"] {
            let (status, _, len) = call(&app, get(path, None)).await;
            assert_eq!((status, len), (StatusCode::UNAUTHORIZED, 0), "{path}");
            let (status, _, len) = call(&app, get(path, Some(&"00".repeat(32)))).await;
            assert_eq!((status, len), (StatusCode::UNAUTHORIZED, 0), "{path} with a forged cookie");
        }
        let link = d.auth.mint_link(Instant::now()).unwrap();
        let (status, headers, _) = call(&app, get(&format!("/login/{link}"), None)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let set = headers[header::SET_COOKIE].to_str().unwrap().to_string();
        for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Max-Age="] {
            assert!(set.contains(attr), "{set}");
        }
        let cookie = set.split(';').next().unwrap().split_once('=').unwrap().1.to_string();
        let (status, headers, len) = call(&app, get("/", Some(&cookie))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(len > 0);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        let (status, _, len) = call(&app, get(&format!("/login/{link}"), None)).await;
        assert_eq!((status, len), (StatusCode::UNAUTHORIZED, 0), "a reused link");
        let post =
            axum::http::Request::post("/").header(header::COOKIE, format!("{COOKIE}={cookie}"));
        let (status, _, _) = call(&app, post.body(axum::body::Body::from("x")).unwrap()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "read-only");
    }

    #[tokio::test]
    async fn event_streams_are_bounded() {
        let d = dash();
        let app = router(d.clone());
        let link = d.auth.mint_link(Instant::now()).unwrap();
        let cookie = d.auth.redeem(&link, Instant::now()).unwrap();
        let mut open = Vec::new();
        for _ in 0..MAX_EVENT_STREAMS {
            let resp = tower::ServiceExt::oneshot(app.clone(), get("/events", Some(&cookie)))
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            open.push(resp);
        }
        let (status, _, _) = call(&app, get("/events", Some(&cookie))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "past the bound");
        drop(open);
        let resp =
            tower::ServiceExt::oneshot(app.clone(), get("/events", Some(&cookie))).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "a closed stream frees its place");
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn the_cookie_is_found_among_others_and_a_prefix_is_not_it() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; jujud_dashboardx=2; jujud_dashboard=abc"),
        );
        assert_eq!(cookie_of(&h), Some("abc"));
        h.insert(header::COOKIE, HeaderValue::from_static("jujud_dashboardx=2"));
        assert_eq!(cookie_of(&h), None);
    }
}
