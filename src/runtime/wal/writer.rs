//! The group-commit writer: one thread owns the [`Wal`], takes everything
//! queued, writes it, fsyncs once and answers every waiter. A snapshot file
//! (tens of MB at 100,000 entities) is written by a helper thread while
//! appends go on; one at a time, a later one waits its turn. Must never
//! answer a waiter before its record is synced, and never delete segments
//! a snapshot covers before that snapshot is durable.

use super::*;

/// Group-commit statistics of a [`WalWriter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records written.
    pub appends: u64,
    /// fsyncs that made records durable.
    pub syncs: u64,
    /// Record bytes written, headers included.
    pub bytes: u64,
    /// The most records one fsync made durable.
    pub max_records_per_sync: u64,
    pub snapshots: u64,
    /// Requests waiting in the queue now.
    pub queued_requests: usize,
}

impl WalStats {
    /// Mean records per fsync: the group-commit factor.
    pub fn records_per_sync(&self) -> f64 {
        self.appends as f64 / self.syncs.max(1) as f64
    }
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, WalError>>;

/// A request to the writer thread.
pub(super) enum Request {
    Append {
        payload: Vec<u8>,
        /// `None` for [`WalWriter::append_nowait`].
        done: Option<Reply<u64>>,
        /// Holds the payload's share of [`WRITER_QUEUE_MAX_BYTES`] until it
        /// is written.
        _permit: OwnedSemaphorePermit,
    },
    Snapshot {
        /// `None`: everything queued before this request.
        covered_lsn: Option<u64>,
        bytes: SnapshotBytes,
        done: Reply<()>,
    },
    /// From the helper thread: the snapshot file covering `covered_lsn` is
    /// durable (or could not be written).
    SnapshotWritten { result: Result<SnapshotFile, WalError>, done: Reply<()> },
}

/// A snapshot's payload: given, or made by the helper thread (so that a
/// caller can capture its state at once and encode it off its own thread).
pub enum SnapshotBytes {
    Ready(Vec<u8>),
    Later(Box<dyn FnOnce() -> Result<Vec<u8>, String> + Send>),
}

impl SnapshotBytes {
    /// The size to check before writing (a later payload is checked when made).
    fn known_len(&self) -> usize {
        match self {
            SnapshotBytes::Ready(b) => b.len(),
            SnapshotBytes::Later(_) => 0,
        }
    }

    fn make(self) -> Result<Vec<u8>, WalError> {
        let bytes = match self {
            SnapshotBytes::Ready(b) => b,
            SnapshotBytes::Later(f) => f().map_err(WalError::SnapshotNotMade)?,
        };
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            return Err(WalError::SnapshotTooLarge { len: bytes.len() });
        }
        Ok(bytes)
    }
}

/// A snapshot waiting for the helper thread, its range already fixed.
pub(super) struct QueuedSnapshot {
    covered_lsn: u64,
    bytes: SnapshotBytes,
    done: Reply<()>,
}

/// The writer thread's snapshot state.
pub(super) struct Snapshots {
    /// The helper thread's way back (weak: it must not keep the writer alive).
    back: mpsc::WeakSender<Request>,
    busy: bool,
    /// Snapshots requested while one was being written, oldest first (at
    /// most [`WRITER_QUEUE_CAPACITY_REQUESTS`], as they came through the queue).
    waiting: std::collections::VecDeque<QueuedSnapshot>,
}

/// State shared by the handles and the writer thread.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) appends: AtomicU64,
    pub(super) syncs: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) max_records_per_sync: AtomicU64,
    pub(super) snapshots: AtomicU64,
    /// The error that failed the log, handed to every later request.
    pub(super) failure: Mutex<Option<WalError>>,
}

impl Shared {
    fn failure(&self) -> Option<WalError> {
        self.failure.lock().map_or(None, |f| f.clone())
    }

    fn set_failure(&self, err: &WalError) {
        if let Ok(mut f) = self.failure.lock()
            && f.is_none()
        {
            *f = Some(err.clone());
        }
    }

    /// The error for a request the writer thread can no longer serve.
    fn gone(&self) -> WalError {
        match self.failure() {
            Some(first) => WalError::Failed { first: Box::new(first) },
            None => WalError::WriterGone,
        }
    }

    fn check(&self) -> Result<(), WalError> {
        match self.failure() {
            Some(first) => Err(WalError::Failed { first: Box::new(first) }),
            None => Ok(()),
        }
    }
}

/// An async handle to a [`Wal`] owned by a dedicated thread that commits
/// in groups. Clone it freely; the thread exits when the last clone drops,
/// after committing what was queued.
#[derive(Clone)]
pub struct WalWriter {
    pub(super) tx: mpsc::Sender<Request>,
    pub(super) queued_bytes: Arc<Semaphore>,
    pub(super) shared: Arc<Shared>,
}

impl WalWriter {
    /// Moves `wal` to a new thread. If the thread cannot start, every
    /// request fails with the error.
    pub fn spawn(wal: Wal) -> WalWriter {
        Self::spawn_gated(wal, None)
    }

    /// `gate`: for tests, the thread waits for a message before serving, so
    /// requests can be queued first; a hang-up drops the log unserved.
    pub(super) fn spawn_gated(wal: Wal, gate: Option<std::sync::mpsc::Receiver<()>>) -> WalWriter {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE_CAPACITY_REQUESTS);
        let back = tx.downgrade();
        let shared = Arc::new(Shared::default());
        let state_dir = wal.state_dir.clone();
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new().name("jujud-wal".into()).spawn(move || {
            if let Some(gate) = gate
                && gate.recv().is_err()
            {
                return;
            }
            let snaps = Snapshots { back, busy: false, waiting: Default::default() };
            writer_loop(wal, rx, &thread_shared, snaps);
        });
        if let Err(e) = spawned {
            shared.set_failure(&io_err("start the writer thread for", &state_dir, e));
        }
        WalWriter { tx, queued_bytes: Arc::new(Semaphore::new(WRITER_QUEUE_MAX_BYTES)), shared }
    }

    /// Appends a record and resolves with its LSN once it is fsync'd.
    /// Dropping the future does not withdraw a queued record.
    pub async fn append(&self, payload: Vec<u8>) -> Result<u64, WalError> {
        let (done, reply) = oneshot::channel();
        self.enqueue(payload, Some(done)).await?;
        reply.await.map_err(|_| self.gone())?
    }

    /// Queues a record without waiting for it to be durable (it is at the
    /// writer's next fsync, which follows at once). For operations already
    /// durable elsewhere, such as replicated remote ones.
    pub async fn append_nowait(&self, payload: Vec<u8>) -> Result<(), WalError> {
        self.enqueue(payload, None).await
    }

    /// Durably writes a snapshot covering up to `covered_lsn`; see
    /// [`Wal::write_snapshot`]. Appends queued before it are committed
    /// first.
    pub async fn snapshot(&self, covered_lsn: u64, bytes: Vec<u8>) -> Result<(), WalError> {
        self.shared.check()?;
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            return Err(WalError::SnapshotTooLarge { len: bytes.len() });
        }
        let (done, reply) = oneshot::channel();
        let request = Request::Snapshot {
            covered_lsn: Some(covered_lsn),
            bytes: SnapshotBytes::Ready(bytes),
            done,
        };
        self.tx.send(request).await.map_err(|_| self.gone())?;
        reply.await.map_err(|_| self.gone())?
    }

    /// Counters since spawn.
    pub fn stats(&self) -> WalStats {
        let s = &self.shared;
        WalStats {
            appends: s.appends.load(Ordering::Relaxed),
            syncs: s.syncs.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            max_records_per_sync: s.max_records_per_sync.load(Ordering::Relaxed),
            snapshots: s.snapshots.load(Ordering::Relaxed),
            queued_requests: self.tx.max_capacity() - self.tx.capacity(),
        }
    }

    async fn enqueue(&self, payload: Vec<u8>, done: Option<Reply<u64>>) -> Result<(), WalError> {
        self.shared.check()?;
        if payload.len() > MAX_RECORD_BYTES {
            return Err(WalError::RecordTooLarge { len: payload.len() });
        }
        let charge = (payload.len() + RECORD_HEADER_BYTES) as u32;
        let permit = Arc::clone(&self.queued_bytes)
            .acquire_many_owned(charge)
            .await
            .map_err(|_| self.gone())?;
        let request = Request::Append { payload, done, _permit: permit };
        self.tx.send(request).await.map_err(|_| self.gone())
    }

    /// The error for a request the writer thread can no longer serve.
    fn gone(&self) -> WalError {
        self.shared.gone()
    }

    fn overloaded(&self) -> WalError {
        WalError::Overloaded { queued_requests: self.tx.max_capacity() - self.tx.capacity() }
    }

    /// Queues a record now, without waiting for room, and returns the
    /// receiver of its durable LSN. The order of calls is the LSN order, so
    /// a synchronous caller fixes the order itself. At a queue bound the
    /// record is not queued and the receiver yields [`WalError::Overloaded`].
    pub fn submit(&self, payload: Vec<u8>) -> oneshot::Receiver<Result<u64, WalError>> {
        let (done, reply) = oneshot::channel();
        if let Err((e, done)) = self.try_enqueue(payload, done) {
            let _ = done.send(Err(e));
        }
        reply
    }

    fn try_enqueue(
        &self,
        payload: Vec<u8>,
        done: Reply<u64>,
    ) -> Result<(), (WalError, Reply<u64>)> {
        if let Err(e) = self.shared.check() {
            return Err((e, done));
        }
        if payload.len() > MAX_RECORD_BYTES {
            return Err((WalError::RecordTooLarge { len: payload.len() }, done));
        }
        let charge = (payload.len() + RECORD_HEADER_BYTES) as u32;
        let Ok(permit) = Arc::clone(&self.queued_bytes).try_acquire_many_owned(charge) else {
            return Err((self.overloaded(), done));
        };
        let request = Request::Append { payload, done: Some(done), _permit: permit };
        match self.tx.try_send(request) {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = match &e {
                    mpsc::error::TrySendError::Full(_) => self.overloaded(),
                    mpsc::error::TrySendError::Closed(_) => self.gone(),
                };
                match e.into_inner() {
                    Request::Append { done: Some(done), .. } => Err((err, done)),
                    _ => unreachable!("try_send returns the request it was given"),
                }
            }
        }
    }

    /// Queues, now and without waiting for room, a snapshot covering every
    /// record queued before this call; the future resolves once it is
    /// durable. Call it in the same synchronous step that captured the
    /// state, or records queued in between are claimed but not contained.
    /// At the request bound it yields [`WalError::Overloaded`].
    pub fn snapshot_after_queued(
        &self,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<(), WalError>> + Send + 'static {
        self.snapshot_after_queued_with(SnapshotBytes::Ready(bytes))
    }

    /// [`WalWriter::snapshot_after_queued`] with a payload that may be made
    /// later, on the snapshot thread (its size is checked then).
    pub fn snapshot_after_queued_with(
        &self,
        bytes: SnapshotBytes,
    ) -> impl Future<Output = Result<(), WalError>> + Send + 'static {
        let (done, reply) = oneshot::channel();
        let queued = self.shared.check().and_then(|()| {
            if bytes.known_len() > MAX_SNAPSHOT_BYTES {
                return Err(WalError::SnapshotTooLarge { len: bytes.known_len() });
            }
            let request = Request::Snapshot { covered_lsn: None, bytes, done };
            self.tx.try_send(request).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => self.overloaded(),
                mpsc::error::TrySendError::Closed(_) => self.gone(),
            })
        });
        let shared = Arc::clone(&self.shared);
        async move {
            queued?;
            reply.await.unwrap_or_else(|_| Err(shared.gone()))
        }
    }
}

/// Records appended in the current batch and their waiters.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) waiters: Vec<(u64, Reply<u64>)>,
    pub(super) records: u64,
    pub(super) payload_bytes: usize,
}

impl Batch {
    fn is_full(&self) -> bool {
        self.records >= GROUP_COMMIT_MAX_BATCH_RECORDS as u64
            || self.payload_bytes >= GROUP_COMMIT_MAX_BATCH_BYTES
    }
}

/// The writer thread: take what is queued, write it, fsync once, answer.
pub(super) fn writer_loop(
    mut wal: Wal,
    mut rx: mpsc::Receiver<Request>,
    shared: &Shared,
    mut snaps: Snapshots,
) {
    let mut batch = Batch::default();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(request) = next.take() {
            handle_request(&mut wal, request, &mut batch, shared, &mut snaps);
            if !batch.is_full() {
                next = rx.try_recv().ok();
            }
        }
        commit(&mut wal, &mut batch, shared);
    }
}

pub(super) fn handle_request(
    wal: &mut Wal,
    request: Request,
    batch: &mut Batch,
    shared: &Shared,
    snaps: &mut Snapshots,
) {
    match request {
        Request::Append { payload, done, .. } => match wal.append(&payload) {
            Ok(lsn) => {
                batch.records += 1;
                batch.payload_bytes += payload.len();
                let bytes = (payload.len() + RECORD_HEADER_BYTES) as u64;
                shared.appends.fetch_add(1, Ordering::Relaxed);
                shared.bytes.fetch_add(bytes, Ordering::Relaxed);
                if let Some(done) = done {
                    batch.waiters.push((lsn, done));
                }
            }
            Err(e) => {
                note_failure(wal, shared);
                if let Some(done) = done {
                    let _ = done.send(Err(e));
                }
            }
        },
        Request::Snapshot { covered_lsn, bytes, done } => {
            commit(wal, batch, shared);
            let covered_lsn = covered_lsn.unwrap_or(wal.last_lsn());
            snaps.waiting.push_back(QueuedSnapshot { covered_lsn, bytes, done });
            start_snapshot(wal, shared, snaps);
        }
        Request::SnapshotWritten { result, done } => {
            snaps.busy = false;
            let reply = result.map(|written| {
                wal.end_snapshot(written);
                shared.snapshots.fetch_add(1, Ordering::Relaxed);
            });
            let _ = done.send(reply);
            start_snapshot(wal, shared, snaps);
        }
    }
}

/// Starts the oldest waiting snapshot unless one is being written: syncs
/// and rolls the log here, then writes the file on a helper thread, which
/// reports back through the queue.
fn start_snapshot(wal: &mut Wal, shared: &Shared, snaps: &mut Snapshots) {
    if snaps.busy {
        return;
    }
    let Some(q) = snaps.waiting.pop_front() else { return };
    if let Err(e) = wal.begin_snapshot(q.covered_lsn, q.bytes.known_len()) {
        note_failure(wal, shared);
        let _ = q.done.send(Err(e));
        return start_snapshot(wal, shared, snaps);
    }
    let (dir, back) = (wal.state_dir().to_path_buf(), snaps.back.clone());
    let id = wal.identity().clone();
    let write = move || {
        let result = q
            .bytes
            .make()
            .and_then(|bytes| write_snapshot_file(&dir, &id, q.covered_lsn, &bytes))
            .and_then(|w| sync_dir(&dir).map(|()| w));
        match back.upgrade() {
            Some(tx) => {
                if let Err(mpsc::error::SendError(Request::SnapshotWritten { result, done })) =
                    tx.blocking_send(Request::SnapshotWritten { result, done: q.done })
                {
                    let _ = done.send(result.map(|_| ()));
                }
            }
            // The writer is gone: the file is there, and the next open uses it.
            None => _ = q.done.send(result.map(|_| ())),
        }
    };
    snaps.busy = true;
    if let Err(e) = std::thread::Builder::new().name("jujud-snapshot".into()).spawn(write) {
        snaps.busy = false;
        tracing::error!(error = %e, "could not start the snapshot thread; the snapshot is dropped");
    }
}

/// Fsyncs the batch once and answers every waiter in it.
pub(super) fn commit(wal: &mut Wal, batch: &mut Batch, shared: &Shared) {
    let batch = std::mem::take(batch);
    if batch.records == 0 && batch.waiters.is_empty() {
        return;
    }
    let result = wal.sync();
    match &result {
        Ok(_) => {
            shared.syncs.fetch_add(1, Ordering::Relaxed);
            shared.max_records_per_sync.fetch_max(batch.records, Ordering::Relaxed);
        }
        Err(_) => note_failure(wal, shared),
    }
    for (lsn, done) in batch.waiters {
        let _ = done.send(result.clone().map(|_| lsn));
    }
}

/// Publishes the log's failure, if it has failed, to every handle.
pub(super) fn note_failure(wal: &Wal, shared: &Shared) {
    if let Some(err) = &wal.failed {
        shared.set_failure(err);
    }
}
