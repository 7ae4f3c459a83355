//! Stream framing and the request/response messages that travel on QUIC
//! streams: the join exchange, the client API and notice sync.
//!
//! Owns the frame format (a u32 big-endian length, then one bincode value).
//! Must never allocate more than the frame limit the caller gives, and never
//! accept a frame with trailing bytes.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::core::codec;
use crate::core::state::model::{Command as StateCommand, Outcome, StatusView};
use crate::core::{MemberInfo, Notice};

/// Largest frame on a client API or sync stream (requests, and answers
/// other than status).
pub const MAX_API_FRAME_BYTES: usize = 1 << 20;
/// Largest status answer: about 100 bytes per entity, so about 600,000
/// entities fit. Both sides refuse a larger frame with a clear error; the
/// buffer is allocated only for a frame that announced its size below it.
pub const MAX_STATUS_FRAME_BYTES: usize = 64 << 20;
/// Largest streamed status answer ([`Request::StatusStream`]), all chunks
/// together: about 150 bytes per entity encoded, so about 7 million
/// entities. The reader grows its buffer only as chunks arrive, and past
/// this bound stops with [`FrameError::TooLarge`].
pub const MAX_STATUS_STREAM_BYTES: usize = 1 << 30;
/// Largest chunk of a streamed answer; each must be taken off the stream
/// within [`ANSWER_WRITE_DEADLINE_MS`].
pub const MAX_STATUS_CHUNK_BYTES: usize = 4 << 20;
/// Largest frame on a join stream (a request is small; a reply holds PEMs).
pub const MAX_JOIN_FRAME_BYTES: usize = 64 << 10;
/// Most bytes of notices an admission carries (departures and replaced
/// members, never tokens); at the bound the rest are left out, and the
/// new member learns them from gossip and the notice sync when it comes
/// up. Keeps the answer under [`MAX_JOIN_FRAME_BYTES`] whatever exists.
pub const MAX_ADMISSION_NOTICES_BYTES: usize = 16 << 10;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("stream closed: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes is over the {limit}-byte limit")]
    TooLarge { len: usize, limit: usize },
    #[error("frame does not decode: {0}")]
    Decode(String),
    #[error("value does not encode: {0}")]
    Encode(String),
    #[error("frame not complete within {ms} ms")]
    TimedOut { ms: u64 },
}

/// Writes one frame holding `value`, bincode-encoded.
pub async fn write_frame<T: Serialize>(
    send: &mut (impl AsyncWriteExt + Unpin),
    value: &T,
    limit: usize,
) -> Result<(), FrameError> {
    let bytes = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    write_raw_frame(send, &bytes, limit).await
}

/// How long a peer has to take one answer frame off a stream. A peer that
/// reads too slowly or not at all (flow control then holds the writer, and
/// the encoded answer with it) has the stream reset at this deadline.
pub const ANSWER_WRITE_DEADLINE_MS: u64 = 10_000;

/// [`write_frame`] on a QUIC stream within `deadline_ms`; past it the
/// stream is reset ([`super::transport::STREAM_REFUSED`]), so a later write
/// on it fails at once, and [`FrameError::TimedOut`] is returned.
pub async fn write_frame_within<T: Serialize>(
    send: &mut quinn::SendStream,
    value: &T,
    limit: usize,
    deadline_ms: u64,
) -> Result<(), FrameError> {
    match tokio::time::timeout(
        std::time::Duration::from_millis(deadline_ms),
        write_frame(send, value, limit),
    )
    .await
    {
        Ok(done) => done,
        Err(_) => {
            let _ = send.reset(super::transport::STREAM_REFUSED.into());
            Err(FrameError::TimedOut { ms: deadline_ms })
        }
    }
}

/// Reads one frame of at most `limit` bytes and decodes it exactly.
pub async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut (impl AsyncReadExt + Unpin),
    limit: usize,
) -> Result<T, FrameError> {
    let buf = read_raw_frame(recv, limit).await?;
    decode_frame_body(&buf, limit)
}

/// Decodes one frame's body exactly, bounded
/// ([`codec::decode_exact_bounded`]): bincode may reserve, for all the
/// strings and byte vectors it decodes together, at most 8 times the bytes
/// received, and never more than `frame_limit` rounded up to a power of two
/// (less than twice it), whatever lengths the bytes claim. A claim past
/// that is a [`FrameError::Decode`], never an allocation. Pure: the fuzz
/// harness calls it directly.
pub fn decode_frame_body<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    frame_limit: usize,
) -> Result<T, FrameError> {
    if bytes.len() > frame_limit {
        return Err(FrameError::TooLarge { len: bytes.len(), limit: frame_limit });
    }
    codec::decode_exact_bounded(bytes, frame_limit).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Writes one frame of raw bytes (no encoding).
pub async fn write_raw_frame(
    send: &mut (impl AsyncWriteExt + Unpin),
    bytes: &[u8],
    limit: usize,
) -> Result<(), FrameError> {
    if bytes.len() > limit {
        return Err(FrameError::TooLarge { len: bytes.len(), limit });
    }
    send.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    send.write_all(bytes).await?;
    Ok(())
}

/// Reads one frame of raw bytes of at most `limit` bytes. The buffer grows
/// as bytes arrive (never more than twice what was received), so a length
/// claim costs nothing until its bytes are sent.
pub async fn read_raw_frame(
    recv: &mut (impl AsyncReadExt + Unpin),
    limit: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await?;
    read_raw_body(recv, u32::from_be_bytes(len) as usize, limit).await
}

/// [`read_raw_frame`] for a session-like stream that may idle between
/// frames: the wait for a frame's first byte has no deadline (the caller's
/// connection has its idle timeout), but once a frame has begun, the rest
/// of it must arrive within `frame_deadline_ms`, so a peer that sends one
/// byte and stalls holds nothing for long.
pub async fn read_raw_frame_started(
    recv: &mut (impl AsyncReadExt + Unpin),
    limit: usize,
    frame_deadline_ms: u64,
) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len[..1]).await?;
    let rest = async {
        recv.read_exact(&mut len[1..]).await?;
        read_raw_body(recv, u32::from_be_bytes(len) as usize, limit).await
    };
    tokio::time::timeout(std::time::Duration::from_millis(frame_deadline_ms), rest)
        .await
        .map_err(|_| FrameError::TimedOut { ms: frame_deadline_ms })?
}

async fn read_raw_body(
    recv: &mut (impl AsyncReadExt + Unpin),
    len: usize,
    limit: usize,
) -> Result<Vec<u8>, FrameError> {
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    let mut buf = Vec::new();
    (&mut *recv).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(buf)
}

/// Writes `value` bincode-encoded as chunks of at most
/// [`MAX_STATUS_CHUNK_BYTES`], then an empty chunk that ends it; the whole
/// encoding may be at most `limit` bytes. Each chunk must be taken within
/// `deadline_ms` ([`FrameError::TimedOut`] otherwise).
pub async fn write_chunked<T: Serialize>(
    send: &mut (impl AsyncWriteExt + Unpin),
    value: &T,
    limit: usize,
    deadline_ms: u64,
) -> Result<(), FrameError> {
    let bytes = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    if bytes.len() > limit {
        return Err(FrameError::TooLarge { len: bytes.len(), limit });
    }
    let deadline = std::time::Duration::from_millis(deadline_ms);
    for chunk in bytes.chunks(MAX_STATUS_CHUNK_BYTES).chain(std::iter::once(&[][..])) {
        let write = write_raw_frame(send, chunk, MAX_STATUS_CHUNK_BYTES);
        tokio::time::timeout(deadline, write)
            .await
            .map_err(|_| FrameError::TimedOut { ms: deadline_ms })??;
    }
    Ok(())
}

/// [`write_chunked`] on a QUIC stream; a chunk not taken within
/// `deadline_ms` resets the stream, as [`write_frame_within`] does.
pub async fn write_chunked_within<T: Serialize>(
    send: &mut quinn::SendStream,
    value: &T,
    limit: usize,
    deadline_ms: u64,
) -> Result<(), FrameError> {
    let written = write_chunked(send, value, limit, deadline_ms).await;
    if let Err(FrameError::TimedOut { .. }) = written {
        let _ = send.reset(super::transport::STREAM_REFUSED.into());
    }
    written
}

/// Reads what [`write_chunked_within`] wrote, at most `limit` bytes in all
/// (the buffer grows only by chunks received), and decodes it exactly.
pub async fn read_chunked<T: serde::de::DeserializeOwned>(
    recv: &mut (impl AsyncReadExt + Unpin),
    limit: usize,
) -> Result<T, FrameError> {
    let mut all = Vec::new();
    let mut chunks = 0usize;
    loop {
        let chunk = match read_raw_frame(recv, MAX_STATUS_CHUNK_BYTES).await {
            Ok(c) => c,
            // A manager that predates streaming wrote one plain frame and
            // ended the stream: that frame alone is the answer (its "bad
            // request" sends the client to `Status`). Anything else that
            // ends early stays an error.
            Err(e) if chunks == 1 => return decode_frame_body(&all, limit).map_err(|_| e),
            Err(e) => return Err(e),
        };
        chunks += 1;
        if chunk.is_empty() {
            break;
        }
        if all.len() + chunk.len() > limit {
            return Err(FrameError::TooLarge { len: all.len() + chunk.len(), limit });
        }
        all.extend_from_slice(&chunk);
    }
    decode_frame_body(&all, limit)
}

/// A new member asks to be admitted (on the join ALPN, before it has a cert).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    /// The id the joiner picked for itself.
    pub node_id: u64,
    /// Where it will accept connections.
    pub advertise: std::net::SocketAddr,
    /// What the joiner runs as (`manager` for `jujud peer`, `agent` for
    /// `jujud agent`); refused when it is not the token's role.
    pub role: String,
}

/// The answer to a [`JoinRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum JoinResponse {
    Admitted(Box<Admission>),
    Refused { refusal: Refusal, reason: String },
}

/// Why a join was refused, so the joiner knows whether waiting helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The request or token is invalid for this cluster (final).
    Invalid,
    /// The token was revoked (final).
    Revoked,
    /// The token expired (final).
    Expired,
    /// The single-use token was used by another node (final).
    AlreadyUsed,
    /// This manager cannot judge yet: it holds no state, or does not know
    /// the token or the machine yet (retryable).
    NotReady,
    /// The node id's tag is taken: pick another id (retryable at once).
    TagInUse,
    /// The answer would not fit the join frame (final; a bug).
    AnswerTooLarge,
    /// The manager could not finish the admission (retryable).
    Busy,
}

impl Refusal {
    /// Whether asking again later may succeed.
    pub fn retryable(self) -> bool {
        matches!(self, Refusal::NotReady | Refusal::Busy)
    }
}

/// Everything a new member needs to act as one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Admission {
    pub cluster_name: String,
    pub ca_cert_pem: String,
    /// Every manager can admit and certify members, so each holds the CA
    /// key; an agent is sent none (empty), nor the cluster secret.
    pub ca_key_pem: String,
    #[serde(deserialize_with = "codec::vec_grown_as_read")]
    pub cluster_secret: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
    /// Notices (departures, replaced members) the new member should know
    /// at once, at most [`MAX_ADMISSION_NOTICES_BYTES`] of them; tokens and
    /// revocations come with the state, by sync.
    #[serde(deserialize_with = "codec::vec_grown_as_read")]
    pub notices: Vec<Notice>,
}

/// A request on the client API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// List the members as the answering manager sees them.
    Members,
    /// Create a join token for a role ("manager"), valid `ttl_secs`;
    /// single-use unless `reusable`; bound to controller machine `machine`
    /// when given (the manager that joins with it is that machine's node).
    TokenCreate { role: String, ttl_secs: u64, reusable: bool, machine: Option<String> },
    /// One page of the tokens this manager's replica holds.
    TokenList(crate::core::state::tokens::TokenQuery),
    /// Revoke a token by id: answered once durable here and held by
    /// `wait_replicated` other managers (every live one when `None`).
    TokenRevoke { token_id: String, wait_replicated: Option<u32>, timeout_ms: u64 },
    /// A manager shares its notices with a peer that just came up.
    SyncNotices(Vec<Notice>),
    /// The environment as the answering manager sees it.
    Status,
    /// A change to the environment. Answered once durable on the answering
    /// manager and held by `wait_replicated` other managers, or refused.
    /// The manager derives a request id; the client never retries it on
    /// another manager. Kept for older clients.
    Command { cmd: StateCommand, wait_replicated: u32, timeout_ms: u64 },
    /// An agent opens its session on this stream (agents only); after this
    /// frame, each frame is one session message, in either direction.
    AgentSession,
    /// [`Request::Command`] with the client's request id (random, the same
    /// on every retry). A manager holding the record of `request_id`
    /// answers with its outcome instead of applying it again, so the
    /// client may retry it on another manager.
    Write { request_id: u64, cmd: StateCommand, wait_replicated: u32, timeout_ms: u64 },
    /// A single-use login link to the answering manager's dashboard
    /// (admins only; see `runtime::dashboard`).
    DashboardLogin,
    /// The ssh provider's pool as the answering manager's replica holds it
    /// (admins only: entries hold the hosts' private keys, which admins
    /// gave). `juju destroy` asks it, to clean hosts other clients added.
    Hosts,
    /// [`Request::Status`] answered as a stream of chunks
    /// ([`write_chunked_within`]), so an answer is bounded by
    /// [`MAX_STATUS_STREAM_BYTES`], not by one frame: `juju status` at a
    /// million entities. A manager that predates it answers "bad request"
    /// and the client asks again with [`Request::Status`].
    StatusStream,
    /// An agent forwards its log lines on this stream (agents only): after
    /// this frame, each frame is a batch of lines (`runtime::logs::sink`).
    LogSink,
    /// `juju debug-log`: the retained lines that match, then live ones if
    /// asked; answered as a stream of `runtime::logs::LogFrame`s.
    DebugLog(crate::runtime::logs::LogQuery),
    /// `juju show-status-log`: the last `n` entries of a machine's or
    /// unit's status history as the answering manager recorded it
    /// (`runtime::history`).
    StatusLog { entity: String, n: u32 },
}

/// The frame limit of a [`Response::Hosts`]: a full pool of the largest
/// entries.
pub const MAX_HOSTS_FRAME_BYTES: usize = crate::core::state::controllers::MAX_HOSTS
    * (crate::core::state::controllers::MAX_HOST_ENTRY_BYTES
        + crate::core::state::controllers::MAX_HOST_ADDRESS_BYTES
        + 16);

/// The frame limit for the answer to `req` (for a streamed answer, the
/// limit of the whole stream).
pub fn answer_limit(req: &Request) -> usize {
    match req {
        Request::Status => MAX_STATUS_FRAME_BYTES,
        Request::Hosts => MAX_HOSTS_FRAME_BYTES,
        Request::StatusStream => MAX_STATUS_STREAM_BYTES,
        _ => MAX_API_FRAME_BYTES,
    }
}

/// One row of the member list as it travels to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    pub id: String,
    pub addr: std::net::SocketAddr,
    pub role: String,
    pub generation: u64,
    pub state: String,
    pub incarnation: u16,
}

impl From<&MemberInfo> for MemberRow {
    fn from(m: &MemberInfo) -> Self {
        MemberRow {
            id: m.identity.id.to_string(),
            addr: m.identity.addr,
            role: m.identity.role.as_str().to_string(),
            generation: m.identity.generation,
            state: m.state.as_str().to_string(),
            incarnation: m.incarnation,
        }
    }
}

/// A token as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRow {
    pub token_id: String,
    pub role: String,
    pub expires_unix_secs: u64,
    pub revoked: bool,
    /// The machine the token is bound to, if any.
    pub subject: Option<String>,
    pub reusable: bool,
    /// Nodes that joined with it.
    pub used_by: Vec<String>,
    /// active, used, revoked or expired (at the answering manager's time).
    pub state: String,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Members {
        answered_by: String,
        members: Vec<MemberRow>,
    },
    Token {
        token: String,
        row: TokenRow,
    },
    /// One page of tokens; `matched` counts every page, `bytes_kept` is what
    /// the answering manager keeps for tokens and revocations.
    Tokens {
        rows: Vec<TokenRow>,
        matched: u64,
        bytes_kept: u64,
    },
    Status {
        answered_by: String,
        status: StatusView,
        members: Vec<MemberRow>,
        controller: crate::core::control::ControllerInfo,
    },
    Applied(Outcome),
    Done,
    Error(String),
    /// This manager cannot serve now (it holds no state yet, or it is
    /// leaving): nothing was applied, and the client asks the next one.
    Unavailable(String),
    /// The answer to [`Request::DashboardLogin`]: the dashboard's address,
    /// a login link valid once and for `expires_in_ms`, and how to trust
    /// the manager's certificate (the cluster CA's SHA-256 fingerprint, and
    /// the base64 SHA-256 of its public key for Chromium's
    /// `--ignore-certificate-errors-spki-list`).
    DashboardLink {
        url: String,
        login_url: String,
        expires_in_ms: u64,
        ca_fingerprint: String,
        ca_spki_sha256_base64: String,
    },
    /// The answer to [`Request::Hosts`]: `(address, entry JSON)` in address
    /// order, removed hosts left out.
    Hosts(Vec<(String, String)>),
    /// The answer to [`Request::StatusLog`]: oldest first.
    StatusLog {
        answered_by: String,
        entity: String,
        entries: Vec<crate::runtime::history::StatusEntry>,
    },
}

/// Decode bound of the persisted notice file: twice the most a data-dir
/// file may hold (`datadir::MAX_FILE_BYTES`, 8 MiB), so no allocation made
/// while decoding it exceeds 16 MiB whatever its length prefixes claim.
pub const MAX_NOTICES_FILE_BYTES: usize = 2 * (8 << 20);

/// Decodes a notice list exactly (used for the persisted notice file).
pub fn decode_notices(bytes: &[u8]) -> Result<Vec<Notice>, codec::CodecError> {
    codec::decode_exact_bounded(bytes, MAX_NOTICES_FILE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A streamed answer larger than one status frame arrives whole; one
    /// past the stream's limit is refused by the writer and the reader.
    #[tokio::test]
    async fn chunked_answers_pass_the_frame_limit_and_keep_their_own() {
        let big: Vec<String> = (0..40_000).map(|i| format!("{i:0>2000}")).collect();
        let mut buf = Vec::new();
        write_chunked(&mut buf, &big, MAX_STATUS_STREAM_BYTES, 1_000).await.unwrap();
        assert!(buf.len() > 64 << 20, "more than one status frame: {} bytes", buf.len());
        let back: Vec<String> = read_chunked(&mut &buf[..], MAX_STATUS_STREAM_BYTES).await.unwrap();
        assert_eq!(back, big);
        let limit = 10 << 20;
        assert!(matches!(
            read_chunked::<Vec<String>>(&mut &buf[..], limit).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut out = Vec::new();
        assert!(matches!(
            write_chunked(&mut out, &big, limit, 1_000).await,
            Err(FrameError::TooLarge { .. })
        ));
        assert!(out.is_empty(), "nothing written past the limit");
    }

    #[tokio::test]
    async fn a_plain_frame_is_read_as_a_streamed_answer_but_a_cut_stream_is_not() {
        // What a manager that predates streaming answers: one plain frame.
        let mut buf = Vec::new();
        let old = Response::Error("bad request: unknown variant".into());
        write_frame(&mut buf, &old, 1024).await.unwrap();
        let back: Response = read_chunked(&mut &buf[..], MAX_STATUS_STREAM_BYTES).await.unwrap();
        assert!(matches!(back, Response::Error(e) if e.starts_with("bad request")));
        // A streamed answer cut after its first chunk stays an error.
        let big: Vec<String> = (0..3_000).map(|i| format!("{i:0>2000}")).collect();
        let mut buf = Vec::new();
        write_chunked(&mut buf, &big, MAX_STATUS_STREAM_BYTES, 1_000).await.unwrap();
        let cut = &buf[..MAX_STATUS_CHUNK_BYTES + 100];
        assert!(read_chunked::<Vec<String>>(&mut &cut[..], MAX_STATUS_STREAM_BYTES).await.is_err());
    }

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let mut buf = Vec::new();
        write_frame(
            &mut buf,
            &Request::TokenRevoke { token_id: "abc".into(), wait_replicated: None, timeout_ms: 1 },
            1024,
        )
        .await
        .unwrap();
        let back: Request = read_frame(&mut &buf[..], 1024).await.unwrap();
        assert!(matches!(back, Request::TokenRevoke { token_id, .. } if token_id == "abc"));
        assert!(matches!(
            read_frame::<Request>(&mut &buf[..], 2).await,
            Err(FrameError::TooLarge { .. })
        ));
        let huge = (u32::MAX).to_be_bytes();
        assert!(matches!(
            read_frame::<Request>(&mut &huge[..], 1024).await,
            Err(FrameError::TooLarge { .. })
        ));
        let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame::<Request>(&mut &garbage[..], 1024).await,
            Err(FrameError::Decode(_))
        ));
        let truncated = &buf[..buf.len() - 1];
        assert!(matches!(
            read_frame::<Request>(&mut &truncated[..], 1024).await,
            Err(FrameError::Io(_))
        ));
    }

    /// A varint length claim of 2^60 bytes: bincode's 0xfd marker, then
    /// the u64 little-endian.
    fn claim_2_pow_60() -> Vec<u8> {
        let mut v = vec![0xfd];
        v.extend_from_slice(&(1u64 << 60).to_le_bytes());
        v
    }

    /// Finding 1 of issue 11: on main this aborted the process ("memory
    /// allocation of 1152921504606846976 bytes failed").
    #[tokio::test]
    async fn a_13_byte_frame_claiming_a_2_pow_60_byte_string_is_refused() {
        let body = claim_2_pow_60();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        assert_eq!(frame.len(), 13);
        let got = read_frame::<JoinRequest>(&mut &frame[..], MAX_JOIN_FRAME_BYTES).await;
        assert!(matches!(got, Err(FrameError::Decode(_))), "{got:?}");
        // The same claim inside every frame type, at every frame limit.
        for limit in [
            MAX_FALLBACK_BYTES_FOR_TEST,
            MAX_JOIN_FRAME_BYTES,
            MAX_API_FRAME_BYTES,
            MAX_STATUS_FRAME_BYTES,
        ] {
            assert!(decode_frame_body::<Request>(&[&[4u8][..], &body].concat(), limit).is_err());
            assert!(decode_frame_body::<Response>(&[&[6u8][..], &body].concat(), limit).is_err());
            assert!(
                decode_frame_body::<JoinResponse>(&[&[1u8][..], &body].concat(), limit).is_err()
            );
        }
        let notices = [&[1u8, 0][..], &body].concat();
        assert!(decode_notices(&notices).is_err());
    }

    const MAX_FALLBACK_BYTES_FOR_TEST: usize = 4_096;

    /// The bound is 8 times the bytes received (at least 1 KiB), never past
    /// the frame limit rounded up to a power of two: a claim past it is
    /// refused before any allocation (`LimitExceeded`); one inside it only
    /// fails when its bytes are not there.
    #[test]
    fn a_claim_past_the_bound_is_refused_before_allocating() {
        let claim = |n: u32| [&[0xfcu8][..], &n.to_le_bytes()].concat();
        let over = decode_frame_body::<String>(
            &claim(MAX_JOIN_FRAME_BYTES as u32 + 1),
            MAX_JOIN_FRAME_BYTES,
        );
        assert!(
            matches!(over, Err(FrameError::Decode(ref e)) if e.contains("LimitExceeded")),
            "{over:?}"
        );
        let past_received = decode_frame_body::<String>(
            &claim(MAX_JOIN_FRAME_BYTES as u32 - 8),
            MAX_JOIN_FRAME_BYTES,
        );
        assert!(
            matches!(past_received, Err(FrameError::Decode(ref e)) if e.contains("LimitExceeded")),
            "5 bytes received: {past_received:?}"
        );
        let within = decode_frame_body::<String>(&claim(1_000), MAX_JOIN_FRAME_BYTES);
        assert!(
            matches!(within, Err(FrameError::Decode(ref e)) if e.contains("UnexpectedEnd")),
            "{within:?}"
        );
        let odd = decode_frame_body::<String>(&claim(3_000 * 2), 3_000);
        assert!(
            matches!(odd, Err(FrameError::Decode(ref e)) if e.contains("LimitExceeded")),
            "a 3,000-byte limit is bound at 4 KiB: {odd:?}"
        );
        assert!(matches!(
            decode_frame_body::<String>(&claim(1), codec::MAX_DECODE_BOUND_BYTES * 2),
            Err(FrameError::Decode(_))
        ));
    }

    /// A frame that claims more than was sent costs only what was sent, and
    /// ends in an error at the end of the stream.
    #[tokio::test]
    async fn a_short_frame_is_an_early_end() {
        let mut frame = (MAX_API_FRAME_BYTES as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(b"abc");
        assert!(matches!(
            read_raw_frame(&mut &frame[..], MAX_API_FRAME_BYTES).await,
            Err(FrameError::Io(_))
        ));
    }

    /// A peer that starts a frame and stalls is cut off at the deadline.
    #[tokio::test]
    async fn a_started_frame_that_stalls_times_out() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0]).await.unwrap();
        let got = read_raw_frame_started(&mut b, 1024, 50).await;
        assert!(matches!(got, Err(FrameError::TimedOut { ms: 50 })), "{got:?}");
        drop(a);
    }
}
