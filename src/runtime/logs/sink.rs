//! An agent's forwarding of its log lines (its own and its units' output)
//! to one live manager, on a `Request::LogSink` stream over the
//! connection it already holds to that manager. On a new stream (a first
//! one, or after its manager died) it resends its most recent lines, so a
//! reader that followed the dead manager misses as little as possible;
//! the new manager and the reader keep each line once.
//!
//! Owns the choice of manager for logs and the batching. Must never wait
//! on a manager without a deadline, never hold lines beyond its ring (a
//! line that could not be sent stays only in the machine's log file), and
//! never dial: it uses connections the agent's membership already made.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::hub::LogHub;
use super::serve::{MAX_LOG_BATCH_LINES, MAX_LOG_FRAME_BYTES};
use crate::runtime::transport::Transport;
use crate::runtime::wire::{self, MAX_API_FRAME_BYTES, Request};

/// How long new lines are gathered before they are sent.
pub const SINK_FLUSH_MS: u64 = 50;
/// Recent lines resent on each new stream.
pub const RESEND_LINES: usize = 256;
/// First wait before trying again when no stream could be opened,
/// doubling up to [`SINK_RETRY_MAX_MS`].
pub const SINK_RETRY_MIN_MS: u64 = 250;
pub const SINK_RETRY_MAX_MS: u64 = 5_000;
/// Deadline for opening a stream and for each frame written on it.
pub const SINK_WRITE_DEADLINE_MS: u64 = 5_000;

/// Forwards `hub`'s lines until `shutdown`.
pub fn spawn(transport: Arc<Transport>, hub: Arc<LogHub>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut attempt = 0usize;
        let mut backoff = SINK_RETRY_MIN_MS;
        loop {
            let managers = transport.manager_connections();
            let forwarded = match managers.get(attempt % managers.len().max(1)) {
                Some(conn) => forward(conn.clone(), &hub).await,
                None => Err("no manager connection yet".into()),
            };
            attempt = attempt.wrapping_add(1);
            match forwarded {
                Ok(()) => backoff = SINK_RETRY_MIN_MS,
                Err(e) => {
                    tracing::debug!(error = %e, "log forwarding to a manager stopped");
                    backoff = (backoff * 2).min(SINK_RETRY_MAX_MS);
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(backoff)) => {}
            }
        }
    });
}

async fn write(send: &mut quinn::SendStream, lines: &[super::LogLine]) -> Result<(), String> {
    for chunk in lines.chunks(MAX_LOG_BATCH_LINES / 2) {
        wire::write_frame_within(send, &chunk, MAX_LOG_FRAME_BYTES, SINK_WRITE_DEADLINE_MS)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One stream: the resend, then new lines until the connection ends.
/// `Ok` when it had been up (the next try starts without a wait's growth).
async fn forward(conn: quinn::Connection, hub: &LogHub) -> Result<(), String> {
    let mut live = hub.subscribe();
    let deadline = Duration::from_millis(SINK_WRITE_DEADLINE_MS);
    let (mut send, _recv) = tokio::time::timeout(deadline, conn.open_bi())
        .await
        .map_err(|_| "no stream within the deadline".to_string())?
        .map_err(|e| e.to_string())?;
    wire::write_frame_within(
        &mut send,
        &Request::LogSink,
        MAX_API_FRAME_BYTES,
        SINK_WRITE_DEADLINE_MS,
    )
    .await
    .map_err(|e| e.to_string())?;
    write(&mut send, &hub.recent(RESEND_LINES)).await?;
    loop {
        let first = tokio::select! {
            got = live.recv() => got,
            _ = conn.closed() => return Ok(()),
        };
        let mut batch = match first {
            Ok(line) => vec![(*line).clone()],
            Err(broadcast::error::RecvError::Lagged(_)) => Vec::new(),
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        };
        let until = tokio::time::Instant::now() + Duration::from_millis(SINK_FLUSH_MS);
        while batch.len() < MAX_LOG_BATCH_LINES {
            match tokio::time::timeout_at(until, live.recv()).await {
                Ok(Ok(line)) => batch.push((*line).clone()),
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
            }
        }
        write(&mut send, &batch).await?;
    }
}
