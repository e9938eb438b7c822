//! The embedded store: every case log in one redb file in the data directory.
//!
//! This is the default backend, so `yuntiao` runs on a fresh machine with nothing else installed
//! (DESIGN.md, decision 2). It keeps the [`Store`] contract with fsync on every commit: an append
//! that returned `Ok` survives a power cut.
//!
//! # Layout
//!
//! One file, `<dir>/yuntiao.redb`, with two tables:
//!
//! * `events`: `(case id, seq) -> event bytes`. redb orders tuple keys element by element, so a
//!   case's log is one contiguous, seq-ordered key range and `read` is a single range scan.
//! * `cases`: `case id -> last seq`. Written in the same transaction as the events, so it is never
//!   out of step with them. It makes the append's conditional check one point lookup and gives
//!   `list_cases` without scanning every event.
//!
//! # Why one writer thread and group commit
//!
//! redb is synchronous and admits one write transaction at a time, and a durable commit costs an
//! fsync (milliseconds on real disks). Committing each append on its own would cap the whole
//! server at roughly one append per fsync, however many rooms are live. So all writes go to ONE
//! dedicated OS thread (never a tokio worker: an fsync must not stall the async runtime) fed by a
//! channel. Each time it wakes up it drains every append request queued at that moment, across
//! all cases, and handles them in a single write transaction with a single fsync, then answers
//! each caller. Under load, requests pile up while the previous fsync runs, so the cost of one
//! fsync is shared by many appends: throughput grows with concurrency instead of being capped.
//!
//! Group commit must not weaken the per-request contract, so inside the shared transaction:
//!
//! * each request is checked *before* anything of it is inserted: a malformed batch
//!   ([`StoreError::InvalidBatch`]) or a stale/ahead expectation ([`StoreError::Conflict`]) writes
//!   nothing and does not affect the other requests of the group;
//! * the check reads the `cases` table through the same write transaction, so it sees the
//!   requests accepted earlier in the same group (two racing writers on one case in one group:
//!   the first wins, the second gets a conflict, exactly as if they had been committed apart);
//! * no caller is answered before the commit (and its fsync) is done. If the transaction or the
//!   commit fails, every request of the group that was not malformed gets
//!   [`StoreError::Unavailable`]: nothing of the group took effect. (A conflict verdict computed
//!   against a group that then failed to commit might be wrong, so it is reported as
//!   `Unavailable` too, which is still true: nothing was written.)
//!
//! Reads run in read transactions on tokio's blocking pool (`spawn_blocking`); redb lets them run
//! concurrently with the writer and they only see committed data, so a caller that got `Ok` from
//! `append` reads its own write.
//!
//! Shortcut taken: [`EmbeddedStore::open`] and `Drop` are blocking (opening may repair the file
//! after an unclean shutdown; dropping waits for the writer thread to finish the group in
//! flight). Both happen once per process lifetime, at startup and shutdown.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::{Store, StoreError, StoredEvent};

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "yuntiao.redb";

/// `(case id, seq) -> event bytes`.
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
/// `case id -> last seq` of that case's log.
const CASES: TableDefinition<&str, u64> = TableDefinition::new("cases");

/// Upper bound on the append requests handled in one transaction, so one huge backlog does not
/// make the first callers of the group wait for everyone else's inserts.
const MAX_GROUP: usize = 1024;

/// Checks the shape of an append batch: non-empty, starting at seq 1 or later, consecutive.
///
/// Shared by both backends so they reject exactly the same batches, before touching storage.
pub(crate) fn check_batch(events: &[StoredEvent]) -> Result<(), StoreError> {
    let Some(first) = events.first() else {
        return Err(StoreError::InvalidBatch("empty batch"));
    };
    if first.seq == 0 {
        return Err(StoreError::InvalidBatch("sequence numbers start at 1"));
    }
    for pair in events.windows(2) {
        if pair[0].seq.checked_add(1) != Some(pair[1].seq) {
            return Err(StoreError::InvalidBatch("sequence numbers not consecutive"));
        }
    }
    Ok(())
}

/// Any redb error, boxed (`redb::Error` is large and travels through every `?` here).
#[derive(Debug)]
struct DbError(Box<redb::Error>);

impl<E: Into<redb::Error>> From<E> for DbError {
    fn from(e: E) -> Self {
        DbError(Box::new(e.into()))
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Turns any redb error into the contract's error. redb's messages name the failure, never the
/// data, so they are safe to log.
fn unavailable(e: impl Into<DbError>) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {}", e.into()))
}

/// One queued append, answered by the writer thread once its group is committed (or failed).
struct AppendRequest {
    case: String,
    events: Vec<StoredEvent>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// What the writer thread has done since the store was opened (for metrics, and for tests that
/// check that group commit really shares fsyncs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Durable commits, i.e. fsyncs.
    pub commits: u64,
    /// Append requests stored by those commits.
    pub appends: u64,
}

#[derive(Debug, Default)]
struct WriterCounters {
    commits: AtomicU64,
    appends: AtomicU64,
}

/// The embedded (redb) backend. See the module docs for the design.
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    counters: Arc<WriterCounters>,
    /// `Some` until `Drop`, which closes the channel so the writer thread ends.
    writer_tx: Option<mpsc::Sender<AppendRequest>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`: creates the directory if needed and the database
    /// file [`DB_FILE`] in it, and starts the writer thread.
    ///
    /// Blocking; call it at startup (or from `spawn_blocking`). Fails with
    /// [`StoreError::Unavailable`] if the file is already open, in this process or another.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "embedded store: cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(unavailable)?;

        // Create both tables up front, so readers never meet a missing table.
        let txn = db.begin_write().map_err(unavailable)?;
        txn.open_table(EVENTS).map_err(unavailable)?;
        txn.open_table(CASES).map_err(unavailable)?;
        txn.commit().map_err(unavailable)?;

        let db = Arc::new(db);
        let (writer_tx, writer_rx) = mpsc::channel();
        let writer_db = Arc::clone(&db);
        let counters = Arc::new(WriterCounters::default());
        let writer_counters = Arc::clone(&counters);
        let writer = std::thread::Builder::new()
            .name("yuntiao-store-writer".into())
            .spawn(move || writer_loop(&writer_db, &writer_rx, &writer_counters))
            .map_err(|e| {
                StoreError::Unavailable(format!("embedded store: cannot start writer thread: {e}"))
            })?;

        Ok(Self {
            db,
            path,
            counters,
            writer_tx: Some(writer_tx),
            writer: Some(writer),
        })
    }

    /// The database file in use.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters of the writer thread.
    pub fn writer_stats(&self) -> WriterStats {
        WriterStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            appends: self.counters.appends.load(Ordering::Relaxed),
        }
    }

    /// Runs a read-only closure in a read transaction on the blocking pool.
    async fn read_txn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T, DbError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read()?;
            f(&txn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("embedded store: read task failed: {e}")))?
        .map_err(unavailable)
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish the requests already queued and exit; joining
        // it releases its handle on the database, so the same directory can be reopened at once.
        drop(self.writer_tx.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: receive, drain, commit a group, answer, repeat until the channel closes.
fn writer_loop(db: &Database, rx: &mpsc::Receiver<AppendRequest>, counters: &WriterCounters) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Ok(first) = rx.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        commit_group(db, &mut group, counters);
        group.clear();
    }
}

/// Handles one group: rejects malformed batches, then checks and writes the rest in a single
/// durable transaction, then answers every request.
fn commit_group(db: &Database, group: &mut Vec<AppendRequest>, counters: &WriterCounters) {
    // Malformed batches are answered at once; they never enter the transaction.
    let mut valid = Vec::with_capacity(group.len());
    for request in group.drain(..) {
        match check_batch(&request.events) {
            Ok(()) => valid.push(request),
            Err(e) => {
                let _ = request.reply.send(Err(e));
            }
        }
    }
    if valid.is_empty() {
        return;
    }

    match write_group(db, &valid) {
        Ok(outcomes) => {
            let stored = outcomes.iter().filter(|o| o.is_ok()).count() as u64;
            if stored > 0 {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters.appends.fetch_add(stored, Ordering::Relaxed);
            }
            tracing::trace!(requests = valid.len(), stored, "group commit");
            for (request, outcome) in valid.into_iter().zip(outcomes) {
                let _ = request.reply.send(outcome);
            }
        }
        Err(e) => {
            let message = format!("embedded store: group commit failed: {e}");
            tracing::error!(requests = valid.len(), "{message}");
            for request in valid {
                let _ = request
                    .reply
                    .send(Err(StoreError::Unavailable(message.clone())));
            }
        }
    }
}

/// Writes the accepted requests of `group` in one transaction and commits it with fsync.
/// Returns each request's verdict; `Err` means nothing of the group was written.
fn write_group(
    db: &Database,
    group: &[AppendRequest],
) -> Result<Vec<Result<(), StoreError>>, DbError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    let mut outcomes = Vec::with_capacity(group.len());
    let mut wrote_any = false;
    {
        let mut events_table = txn.open_table(EVENTS)?;
        let mut cases_table = txn.open_table(CASES)?;
        for request in group {
            // `check_batch` passed: non-empty, first seq >= 1, consecutive.
            let first = request.events[0].seq;
            let last_new = request.events[request.events.len() - 1].seq;
            let expected = first - 1;
            // Read through the write transaction: sees the requests accepted earlier in this
            // group, so two writers racing on one case cannot both win.
            let found = cases_table
                .get(request.case.as_str())?
                .map(|guard| guard.value())
                .unwrap_or(0);
            if found != expected {
                outcomes.push(Err(StoreError::Conflict { expected, found }));
                continue;
            }
            for event in &request.events {
                events_table.insert((request.case.as_str(), event.seq), event.data.as_slice())?;
            }
            cases_table.insert(request.case.as_str(), last_new)?;
            wrote_any = true;
            outcomes.push(Ok(()));
        }
    }
    if wrote_any {
        txn.commit()?;
    } else {
        // Only conflicts: nothing to make durable, skip the fsync.
        txn.abort()?;
    }
    Ok(outcomes)
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn append(&self, case: &str, events: &[StoredEvent]) -> Result<(), StoreError> {
        // Reject malformed batches here too, without a round trip through the writer thread.
        check_batch(events)?;
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            case: case.to_owned(),
            events: events.to_vec(),
            reply,
        };
        let sent = match &self.writer_tx {
            Some(tx) => tx.send(request).is_ok(),
            None => false,
        };
        if !sent {
            return Err(StoreError::Unavailable(
                "embedded store: writer thread has stopped".into(),
            ));
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "embedded store: writer thread stopped before answering".into(),
            ))
        })
    }

    async fn read(&self, case: &str, after: u64) -> Result<Vec<StoredEvent>, StoreError> {
        let Some(start) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let case = case.to_owned();
        self.read_txn(move |txn| {
            let table = txn.open_table(EVENTS)?;
            let mut out = Vec::new();
            for entry in table.range((case.as_str(), start)..=(case.as_str(), u64::MAX))? {
                let (key, value) = entry?;
                out.push(StoredEvent {
                    seq: key.value().1,
                    data: value.value().to_vec(),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn list_cases(&self) -> Result<Vec<String>, StoreError> {
        self.read_txn(|txn| {
            let table = txn.open_table(CASES)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (key, _last) = entry?;
                out.push(key.value().to_owned());
            }
            // redb orders `&str` keys by their bytes, which is `String`'s order: already sorted.
            Ok(out)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.writer.as_ref().is_none_or(|w| w.is_finished()) {
            return Err(StoreError::Unavailable(
                "embedded store: writer thread has stopped".into(),
            ));
        }
        self.read_txn(|_txn| Ok(())).await
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }
}
