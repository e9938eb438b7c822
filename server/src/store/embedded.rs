//! The embedded store: every case log in the data directory, in a write-ahead log and redb.
//!
//! This is the default backend, so `yuntiao` runs on a fresh machine with nothing else installed
//! (DESIGN.md, decision 2). It keeps the [`Store`] contract with an fsync on every commit: an
//! append that returned `Ok` survives a power cut.
//!
//! # Layout
//!
//! * `<dir>/wal/wal-<lsn>.log`: the write-ahead log ([`super::wal`]): one checksummed record per
//!   append request. Its `fdatasync` is the durability point of an append.
//! * `<dir>/yuntiao.redb`, with three tables, the *checkpoint* of the log:
//!   * `events`: `(case id, seq) -> event bytes`. redb orders tuple keys element by element, so a
//!     case's log is one contiguous, seq-ordered key range and a read is a single range scan.
//!   * `cases`: `case id -> last seq`, written in the same transaction as the events; it gives
//!     `list_cases` without scanning every event.
//!   * `meta`: `"checkpoint_lsn" -> u64`, the last log record whose events are in this file.
//!
//! # Why a write-ahead log in front of redb
//!
//! A durable redb commit of one small event writes about 18 pages of 4 KiB (the B-tree paths,
//! the allocator state, the header) and then fsyncs them: a few milliseconds on the benchmark
//! machine, most of the chat fan-out latency (docs/benchmarks.md). A record appended to a plain
//! file and `fdatasync`ed costs what the disk's own append costs (0.2–0.3 ms there). So an append
//! is made durable in the log, answered, and kept in memory (the *tail*) until a background thread
//! copies the tail into redb in one durable transaction (a *checkpoint*, every
//! [`CHECKPOINT_INTERVAL`] or every [`CHECKPOINT_EVENTS`] events, and on close), after which the
//! log segments it covers are deleted. Reads merge redb with the tail, so a caller that got `Ok`
//! from `append` reads its own write. Opening replays the records after the last checkpoint into
//! redb (a torn last record, never acknowledged, is cut off: see [`super::wal`]).
//!
//! # Why one writer thread and group commit
//!
//! A durable append costs an fsync, so committing each append on its own would cap the whole
//! server at one append per fsync, however many rooms are live. So all appends go to ONE
//! dedicated OS thread (never a tokio worker: an fsync must not stall the async runtime) fed by a
//! channel. Each time it wakes up it drains every append request queued at that moment, across
//! all cases, writes one log record per request with a single `write` and a single `fdatasync`,
//! then answers each caller. Under load, requests pile up while the previous fsync runs, so the
//! cost of one fsync is shared by many appends: throughput grows with concurrency.
//!
//! Group commit must not weaken the per-request contract:
//!
//! * each request is checked *before* anything of it is written: a malformed batch
//!   ([`StoreError::InvalidBatch`]) or a stale/ahead expectation ([`StoreError::Conflict`]) writes
//!   nothing and does not affect the other requests of the group;
//! * the check uses the writer's own map of each case's last seq, updated as requests of the
//!   group are accepted (two racing writers on one case in one group: the first wins, the second
//!   gets a conflict, exactly as if they had been committed apart);
//! * no caller is answered before the `fdatasync` is done. If the write or the `fdatasync` fails,
//!   the segment is cut back to where it was (so nothing of the group can reappear after a crash)
//!   and every request of the group that was not malformed gets [`StoreError::Unavailable`]. (A
//!   conflict verdict computed against a group that then failed is reported as `Unavailable`
//!   too, which is still true: nothing was written.) If even cutting back fails, the log can no
//!   longer be trusted and every later append is refused.
//!
//! Shortcut taken: [`EmbeddedStore::open`] and `Drop` are blocking (opening may repair redb after
//! an unclean shutdown and replays the log; dropping waits for the writer thread to finish the
//! group in flight and for a last checkpoint). Both happen once per process lifetime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::wal::{self, Segment, Spares};
use super::{Store, StoreError, StoredEvent};
use crate::metrics::{histogram_header, DurationHistogram};

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "yuntiao.redb";
/// Name of the write-ahead log's directory inside the data directory.
pub const WAL_DIR: &str = "wal";

/// `(case id, seq) -> event bytes`.
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
/// `case id -> last seq` of that case's log.
const CASES: TableDefinition<&str, u64> = TableDefinition::new("cases");
/// `"checkpoint_lsn" -> LSN` of the last log record copied into this file.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const CHECKPOINT_LSN: &str = "checkpoint_lsn";
/// `log key -> seq`: the events up to this seq were dropped on purpose ([`EmbeddedStore::truncate`],
/// used by the document store for the updates a snapshot covers); checkpoints and log replay do
/// not bring them back. Case logs are never truncated, so this table has no case in it.
const FLOORS: TableDefinition<&str, u64> = TableDefinition::new("floors");

/// Upper bound on the append requests handled in one group commit, so one huge backlog does not
/// make the first callers of the group wait for everyone else's records.
const MAX_GROUP: usize = 1024;
/// How often the tail is copied into redb (when there is one).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// A tail of this many events is copied into redb without waiting for the interval.
pub const CHECKPOINT_EVENTS: usize = 20_000;
/// A log segment this large is closed and a new one started, so checkpoints can delete the old.
/// Also the largest zero-filled spare ([`wal::Spares`]).
const SEGMENT_BYTES: u64 = 16 << 20;
/// The first zero-filled spare's size after opening; each next one is twice as large.
const FIRST_SPARE_BYTES: u64 = 1 << 20;

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

/// One queued append, answered by the writer thread once its group is durable (or failed).
struct AppendRequest {
    case: String,
    events: Vec<StoredEvent>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// What the writer thread has done since the store was opened (for metrics, and for tests that
/// check that group commit really shares fsyncs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Durable group commits, i.e. `fdatasync`s of the log.
    pub commits: u64,
    /// Append requests stored by those commits.
    pub appends: u64,
    /// Checkpoints (durable redb transactions) done.
    pub checkpoints: u64,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    appends: AtomicU64,
    checkpoints: AtomicU64,
    /// How long each group commit's `write` + `fdatasync` of the log took: the store's share
    /// of an append's latency.
    log_sync: DurationHistogram,
    /// How long each checkpoint (the redb transaction and its fsync) took.
    checkpoint: DurationHistogram,
}

/// A log `write` + `fdatasync` this slow is logged as a warning (the disk stalled every append).
const SLOW_LOG_SYNC: Duration = Duration::from_secs(1);

/// Per case, the events appended since they were last handed to a checkpoint.
type TailMap = HashMap<String, Vec<StoredEvent>>;

/// Durable events not yet in redb, as reads must see them.
#[derive(Default)]
struct Tail {
    /// Appended since the current (or last) checkpoint took its copy.
    active: TailMap,
    /// Events in `active`.
    active_events: usize,
    /// LSN of the last record whose events are in `active` (or in `flushing`).
    active_lsn: u64,
    /// Being copied into redb by the checkpointer; dropped once that transaction is committed.
    flushing: Option<Arc<TailMap>>,
    /// Set when the checkpointer should stop (after a last checkpoint).
    stop: bool,
}

/// What the threads share.
struct Shared {
    tail: Mutex<Tail>,
    /// Wakes the checkpointer (large tail, or stop).
    wake: Condvar,
    counters: Counters,
    wal_dir: PathBuf,
}

impl Shared {
    fn lock_tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        // A panic while holding the lock cannot leave the tail half-updated in a way that loses
        // durable data (the log has it), so a poisoned lock is used as is.
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The embedded backend. See the module docs for the design.
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    shared: Arc<Shared>,
    /// `Some` until `Drop`, which closes the channel so the writer thread ends.
    writer_tx: Option<mpsc::Sender<AppendRequest>>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`: creates the directory if needed, the database file
    /// [`DB_FILE`] and the log directory [`WAL_DIR`] in it, replays the log records after the
    /// last checkpoint into the database, and starts the writer and checkpointer threads.
    ///
    /// Blocking; call it at startup (or from `spawn_blocking`). Fails with
    /// [`StoreError::Unavailable`] if the file is already open, in this process or another, or if
    /// the log is damaged anywhere but in its last, unacknowledged record.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!("embedded store: {what}: {e}"))
        };
        std::fs::create_dir_all(dir).map_err(|e| {
            fail(
                &format!("cannot create data directory {}", dir.display()),
                &e,
            )
        })?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(unavailable)?;
        let wal_dir = dir.join(WAL_DIR);
        std::fs::create_dir_all(&wal_dir)
            .map_err(|e| fail("cannot create the log directory", &e))?;

        // Create the tables up front, so readers never meet a missing table.
        let txn = db.begin_write().map_err(unavailable)?;
        txn.open_table(EVENTS).map_err(unavailable)?;
        txn.open_table(CASES).map_err(unavailable)?;
        txn.open_table(FLOORS).map_err(unavailable)?;
        let checkpoint = txn
            .open_table(META)
            .map_err(unavailable)?
            .get(CHECKPOINT_LSN)
            .map_err(unavailable)?
            .map_or(0, |g| g.value());
        txn.commit().map_err(unavailable)?;

        // Replay what the log holds beyond the checkpoint, then start a fresh segment.
        let recovered =
            wal::recover(&wal_dir, checkpoint).map_err(|e| fail("cannot recover the log", &e))?;
        if recovered.torn_bytes > 0 {
            tracing::warn!(
                bytes = recovered.torn_bytes,
                "embedded store: cut an unacknowledged, torn record off the end of the log"
            );
        }
        let last_lsn = recovered.records.last().map_or(checkpoint, |r| r.lsn);
        if !recovered.records.is_empty() {
            tracing::info!(
                records = recovered.records.len(),
                "embedded store: replaying the log after the last checkpoint"
            );
            let mut map = TailMap::new();
            for r in recovered.records {
                map.entry(r.case).or_default().extend(r.events);
            }
            write_checkpoint(&db, &map, last_lsn).map_err(unavailable)?;
        }
        remove_segments_before(&wal_dir, u64::MAX)
            .map_err(|e| fail("cannot remove replayed log segments", &e))?;
        let segment = Segment::create(&wal_dir, last_lsn + 1)
            .map_err(|e| fail("cannot create a log segment", &e))?;
        let spares = Spares::start(&wal_dir, FIRST_SPARE_BYTES, SEGMENT_BYTES);

        let db = Arc::new(db);
        let shared = Arc::new(Shared {
            tail: Mutex::new(Tail {
                active_lsn: last_lsn,
                ..Tail::default()
            }),
            wake: Condvar::new(),
            counters: Counters::default(),
            wal_dir,
        });
        let (writer_tx, writer_rx) = mpsc::channel();
        let mut writer_state = Writer {
            db: Arc::clone(&db),
            shared: Arc::clone(&shared),
            segment,
            spares,
            next_lsn: last_lsn + 1,
            last_seq: HashMap::new(),
            broken: None,
        };
        let writer = std::thread::Builder::new()
            .name("yuntiao-store-writer".into())
            .spawn(move || writer_state.run(&writer_rx))
            .map_err(|e| fail("cannot start the writer thread", &e))?;
        let ckpt_db = Arc::clone(&db);
        let ckpt_shared = Arc::clone(&shared);
        let checkpointer = std::thread::Builder::new()
            .name("yuntiao-store-checkpoint".into())
            .spawn(move || {
                wal::background_priority();
                checkpointer_loop(&ckpt_db, &ckpt_shared)
            })
            .map_err(|e| fail("cannot start the checkpoint thread", &e))?;

        Ok(Self {
            db,
            path,
            shared,
            writer_tx: Some(writer_tx),
            writer: Some(writer),
            checkpointer: Some(checkpointer),
        })
    }

    /// The database file in use.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters of the writer and checkpoint threads.
    pub fn writer_stats(&self) -> WriterStats {
        let c = &self.shared.counters;
        WriterStats {
            commits: c.commits.load(Ordering::Relaxed),
            appends: c.appends.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
        }
    }

    /// Stops the threads the way a crash would (for tests of recovery): the writer finishes the
    /// group in flight, but no last checkpoint is taken, so the log records since the last one
    /// are only in the log, as after `kill -9`. Reopening the directory replays them.
    pub fn close_without_checkpoint(mut self) {
        drop(self.writer_tx.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        {
            let mut tail = self.shared.lock_tail();
            tail.active = TailMap::new();
            tail.active_events = 0;
        }
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Closing the channel lets the writer finish the requests already queued and exit.
        drop(self.writer_tx.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        // Then a last checkpoint of whatever is in the tail, and the checkpointer exits.
        self.shared.lock_tail().stop = true;
        self.shared.wake.notify_all();
        if let Some(checkpointer) = self.checkpointer.take() {
            let _ = checkpointer.join();
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

    /// The last seq appended under `key` (0 if none), durable ones in the tail included.
    pub(crate) async fn last_seq(&self, key: &str) -> Result<u64, StoreError> {
        let pending = {
            let tail = self.shared.lock_tail();
            let last = |m: &TailMap| m.get(key).and_then(|l| l.last()).map(|e| e.seq);
            last(&tail.active).or_else(|| tail.flushing.as_deref().and_then(last))
        };
        if let Some(seq) = pending {
            return Ok(seq);
        }
        let key = key.to_owned();
        self.read_txn(move |txn| {
            let table = txn.open_table(CASES)?;
            Ok(table.get(key.as_str())?.map_or(0, |g| g.value()))
        })
        .await
    }

    /// Drops the events of `key` up to `upto` for good (durably), keeping its last seq, so the
    /// next append still continues after it. For the document store's compaction: a snapshot
    /// covers those updates. Never used on case logs, which are kept whole.
    pub(crate) async fn truncate(&self, key: &str, upto: u64) -> Result<(), StoreError> {
        let db = Arc::clone(&self.db);
        let owned = key.to_owned();
        tokio::task::spawn_blocking(move || -> Result<(), DbError> {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            {
                let mut floors = txn.open_table(FLOORS)?;
                let floor = floors.get(owned.as_str())?.map_or(0, |g| g.value());
                if upto > floor {
                    floors.insert(owned.as_str(), upto)?;
                }
                let mut events = txn.open_table(EVENTS)?;
                events.retain_in((owned.as_str(), 0)..=(owned.as_str(), upto), |_, _| false)?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("embedded store: truncate failed: {e}")))?
        .map_err(unavailable)?;
        // What the tail still holds of them (a copy being checkpointed meanwhile is filtered by
        // the floor inside its own transaction).
        let mut tail = self.shared.lock_tail();
        let mut dropped = 0;
        if let Some(list) = tail.active.get_mut(key) {
            let before = list.len();
            list.retain(|e| e.seq > upto);
            dropped = before - list.len();
        }
        tail.active_events -= dropped;
        Ok(())
    }

    /// Writes `events` under `key` straight into the database, bypassing the log: for moving data
    /// from an older file layout at startup, before any append to `key`. Idempotent. Blocking.
    /// `head` is the key's last seq (at least that of the last event; more if later ones were
    /// dropped).
    pub(crate) fn import_blocking(
        &self,
        key: &str,
        events: &[StoredEvent],
        head: u64,
    ) -> Result<(), StoreError> {
        let last = events.last().map_or(0, |e| e.seq).max(head);
        let run = || -> Result<(), DbError> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            {
                let mut table = txn.open_table(EVENTS)?;
                for e in events {
                    table.insert((key, e.seq), e.data.as_slice())?;
                }
                let mut cases = txn.open_table(CASES)?;
                let known = cases.get(key)?.map_or(0, |g| g.value());
                if last > known {
                    cases.insert(key, last)?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        run().map_err(unavailable)
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Joining the threads releases their handles on the database, so the same directory can
        // be reopened at once.
        self.shutdown();
    }
}

/// The writer thread's state.
struct Writer {
    db: Arc<Database>,
    shared: Arc<Shared>,
    segment: Segment,
    /// Zero-filled segments prepared in the background, to switch to.
    spares: Spares,
    next_lsn: u64,
    /// Each case's last seq, as far as this writer knows (filled from redb on first use: every
    /// later append goes through this writer).
    last_seq: HashMap<String, u64>,
    /// Set when the log could not be restored after a failed write: every append is refused.
    broken: Option<String>,
}

impl Writer {
    /// Receive, drain, commit a group, answer, repeat until the channel closes.
    fn run(&mut self, rx: &mpsc::Receiver<AppendRequest>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while let Ok(first) = rx.recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group);
            group.clear();
        }
    }

    /// The last seq of `case`: from the writer's map, else from redb (the checkpoint holds
    /// everything appended before this writer started).
    fn last_seq(&mut self, case: &str) -> Result<u64, StoreError> {
        if let Some(seq) = self.last_seq.get(case) {
            return Ok(*seq);
        }
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(CASES).map_err(unavailable)?;
        let seq = table
            .get(case)
            .map_err(unavailable)?
            .map_or(0, |g| g.value());
        self.last_seq.insert(case.to_owned(), seq);
        Ok(seq)
    }

    /// Handles one group: checks every request, writes the accepted ones as log records with one
    /// `write` and one `fdatasync`, hands their events to the tail, then answers every request.
    fn commit_group(&mut self, group: &mut Vec<AppendRequest>) {
        if let Some(why) = &self.broken {
            for request in group.drain(..) {
                let _ = request
                    .reply
                    .send(Err(StoreError::Unavailable(why.clone())));
            }
            return;
        }
        let mut buf = Vec::new();
        // Accepted requests, and each one's case's last seq before it (to undo on failure).
        let mut accepted: Vec<(AppendRequest, u64)> = Vec::new();
        let mut refused: Vec<(AppendRequest, StoreError)> = Vec::new();
        for request in group.drain(..) {
            let verdict = check_batch(&request.events).and_then(|()| {
                let expected = request.events[0].seq - 1;
                let found = self.last_seq(&request.case)?;
                if found != expected {
                    return Err(StoreError::Conflict { expected, found });
                }
                let lsn = self.next_lsn + accepted.len() as u64;
                wal::encode(lsn, &request.case, &request.events, &mut buf)
                    .map_err(StoreError::InvalidBatch)?;
                Ok(found)
            });
            match verdict {
                Ok(before) => {
                    let last = request.events[request.events.len() - 1].seq;
                    self.last_seq.insert(request.case.clone(), last);
                    accepted.push((request, before));
                }
                Err(e) => refused.push((request, e)),
            }
        }
        if accepted.is_empty() {
            for (request, e) in refused {
                let _ = request.reply.send(Err(e));
            }
            return;
        }

        let started = Instant::now();
        let written = self.segment.append(&buf);
        let took = started.elapsed();
        self.shared.counters.log_sync.observe(took);
        if took >= SLOW_LOG_SYNC {
            tracing::warn!(
                ms = took.as_millis() as u64,
                requests = accepted.len(),
                "embedded store: slow log write + fdatasync"
            );
        }
        if let Err((e, undo)) = written {
            let message = format!("embedded store: writing the log failed: {e}");
            tracing::error!(requests = accepted.len(), "{message}");
            if let Some(undo) = undo {
                let why = format!(
                    "embedded store: the log could not be restored after a failed write ({undo}); \
                     restart the server"
                );
                tracing::error!("{why}");
                self.broken = Some(why);
            }
            // Nothing of the group was stored: forget what it would have changed.
            for (request, before) in accepted.iter().rev() {
                self.last_seq.insert(request.case.clone(), *before);
            }
            for (request, _) in accepted {
                let _ = request
                    .reply
                    .send(Err(StoreError::Unavailable(message.clone())));
            }
            for (request, e) in refused {
                let unknown = match e {
                    StoreError::Conflict { .. } => StoreError::Unavailable(message.clone()),
                    other => other,
                };
                let _ = request.reply.send(Err(unknown));
            }
            return;
        }

        // Durable. Make the events readable (the tail), then answer.
        let stored = accepted.len() as u64;
        self.next_lsn += stored;
        let mut replies = Vec::with_capacity(accepted.len());
        let wake = {
            let mut tail = self.shared.lock_tail();
            for (request, _) in accepted {
                tail.active_events += request.events.len();
                tail.active
                    .entry(request.case)
                    .or_default()
                    .extend(request.events);
                replies.push(request.reply);
            }
            tail.active_lsn = self.next_lsn - 1;
            tail.active_events >= CHECKPOINT_EVENTS
        };
        if wake {
            self.shared.wake.notify_all();
        }
        let counters = &self.shared.counters;
        counters.commits.fetch_add(1, Ordering::Relaxed);
        counters.appends.fetch_add(stored, Ordering::Relaxed);
        for reply in replies {
            let _ = reply.send(Ok(()));
        }
        for (request, e) in refused {
            let _ = request.reply.send(Err(e));
        }

        // Switch to a zero-filled segment once this one's zeros are used up (or it never had
        // any); if none is ready yet, go on growing this one, up to its maximum size.
        if self.segment.past_zeroed() {
            let next = match self.spares.take(self.next_lsn) {
                Some(next) => Some(next),
                None if self.segment.len() >= SEGMENT_BYTES => {
                    Some(Segment::create(&self.shared.wal_dir, self.next_lsn))
                }
                None => None,
            };
            match next {
                Some(Ok(next)) => self.segment = next,
                // Keep appending to this one; the next group tries again.
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "embedded store: cannot start a log segment")
                }
                None => {}
            }
        }
    }
}

/// Appends the embedded stores' histograms to a `/metrics` page, each store's series labelled
/// `store="<label>"`: `yuntiao_store_log_sync_seconds` (each group commit's log write and
/// `fdatasync`) and `yuntiao_store_checkpoint_seconds` (each checkpoint).
pub fn render_metrics(out: &mut String, stores: &[(&str, &EmbeddedStore)]) {
    if stores.is_empty() {
        return;
    }
    type Pick = fn(&Counters) -> &DurationHistogram;
    let metrics: [(&str, &str, Pick); 2] = [
        (
            "yuntiao_store_log_sync_seconds",
            "Embedded store: time of each group commit's log write and fdatasync.",
            |c| &c.log_sync,
        ),
        (
            "yuntiao_store_checkpoint_seconds",
            "Embedded store: time of each checkpoint (the log's tail copied into redb, durably).",
            |c| &c.checkpoint,
        ),
    ];
    for (name, help, pick) in metrics {
        histogram_header(out, name, help);
        for (label, store) in stores {
            pick(&store.shared.counters).render(out, name, &format!("store=\"{label}\""));
        }
    }
}

/// Writes `map` into redb in one durable transaction, recording `lsn` as the checkpoint.
/// Idempotent: an event already there is overwritten with the same bytes.
fn write_checkpoint(db: &Database, map: &TailMap, lsn: u64) -> Result<(), DbError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    {
        let mut events = txn.open_table(EVENTS)?;
        let mut cases = txn.open_table(CASES)?;
        let floors = txn.open_table(FLOORS)?;
        for (case, list) in map {
            // Read inside this write transaction: a truncation committed before it is seen here,
            // one committed after it deletes what this one inserts.
            let floor = floors.get(case.as_str())?.map_or(0, |g| g.value());
            for e in list.iter().filter(|e| e.seq > floor) {
                events.insert((case.as_str(), e.seq), e.data.as_slice())?;
            }
            let last = list.last().map_or(0, |e| e.seq);
            let known = cases.get(case.as_str())?.map_or(0, |g| g.value());
            if last > known {
                cases.insert(case.as_str(), last)?;
            }
        }
        txn.open_table(META)?.insert(CHECKPOINT_LSN, lsn)?;
    }
    txn.commit()?;
    Ok(())
}

/// Removes the log segments whose records all come before LSN `keep_from` (a segment is known to
/// end before the next one starts); with `u64::MAX`, every segment.
fn remove_segments_before(dir: &Path, keep_from: u64) -> std::io::Result<()> {
    let segs = wal::segments(dir)?;
    let mut removed = false;
    for (i, (_, path)) in segs.iter().enumerate() {
        let ends_before = match segs.get(i + 1) {
            Some((next, _)) => *next <= keep_from,
            None => keep_from == u64::MAX,
        };
        if ends_before {
            std::fs::remove_file(path)?;
            removed = true;
        }
    }
    if removed {
        wal::sync_dir(dir)?;
    }
    Ok(())
}

/// The checkpoint thread: every [`CHECKPOINT_INTERVAL`] (or when woken), copies the tail into
/// redb, then deletes the log segments that copy covers. Exits after a last checkpoint on stop.
fn checkpointer_loop(db: &Database, shared: &Shared) {
    loop {
        let (map, lsn, stop) = {
            let mut tail = shared.lock_tail();
            if !tail.stop && tail.active_events < CHECKPOINT_EVENTS {
                tail = shared
                    .wake
                    .wait_timeout(tail, CHECKPOINT_INTERVAL)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let stop = tail.stop;
            if tail.active.is_empty() {
                if stop {
                    return;
                }
                continue;
            }
            let map = Arc::new(std::mem::take(&mut tail.active));
            tail.active_events = 0;
            tail.flushing = Some(Arc::clone(&map));
            (map, tail.active_lsn, stop)
        };
        let started = Instant::now();
        let written = write_checkpoint(db, &map, lsn);
        shared.counters.checkpoint.observe(started.elapsed());
        match written {
            Ok(()) => {
                shared.lock_tail().flushing = None;
                shared.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = remove_segments_before(&shared.wal_dir, lsn + 1) {
                    tracing::warn!(error = %e, "embedded store: cannot remove old log segments");
                }
            }
            Err(e) => {
                // The log still has everything: put the copy back in front of what came since,
                // and try again at the next interval.
                tracing::error!(error = %e, "embedded store: checkpoint failed");
                let mut tail = shared.lock_tail();
                tail.flushing = None;
                let mut merged = Arc::unwrap_or_clone(map);
                for (case, later) in std::mem::take(&mut tail.active) {
                    merged.entry(case).or_default().extend(later);
                }
                tail.active_events = merged.values().map(Vec::len).sum();
                tail.active = merged;
                if stop {
                    return;
                }
            }
        }
        if stop && shared.lock_tail().active.is_empty() {
            return;
        }
    }
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
        // The tail first, then redb: events only move from the tail into redb (committed there
        // before they leave the tail), so together the two miss nothing; overlaps are dropped.
        let pending: Vec<StoredEvent> = {
            let tail = self.shared.lock_tail();
            let flushing = tail.flushing.as_ref().and_then(|m| m.get(case));
            flushing
                .into_iter()
                .chain(tail.active.get(case))
                .flatten()
                .filter(|e| e.seq >= start)
                .cloned()
                .collect()
        };
        let case = case.to_owned();
        let (mut out, floor) = self
            .read_txn(move |txn| {
                let table = txn.open_table(EVENTS)?;
                let mut out = Vec::new();
                for entry in table.range((case.as_str(), start)..=(case.as_str(), u64::MAX))? {
                    let (key, value) = entry?;
                    out.push(StoredEvent {
                        seq: key.value().1,
                        data: value.value().to_vec(),
                    });
                }
                let floor = txn
                    .open_table(FLOORS)?
                    .get(case.as_str())?
                    .map_or(0, |g| g.value());
                Ok((out, floor))
            })
            .await?;
        // After a truncation the log starts right after its floor.
        let mut next = out
            .last()
            .map_or(start.max(floor.saturating_add(1)), |e| e.seq + 1);
        for e in pending {
            if e.seq == next {
                next += 1;
                out.push(e);
            }
        }
        Ok(out)
    }

    async fn list_cases(&self) -> Result<Vec<String>, StoreError> {
        let pending: Vec<String> = {
            let tail = self.shared.lock_tail();
            tail.active
                .keys()
                .chain(tail.flushing.iter().flat_map(|m| m.keys()))
                .cloned()
                .collect()
        };
        self.read_txn(move |txn| {
            let table = txn.open_table(CASES)?;
            let mut out = pending;
            for entry in table.iter()? {
                let (key, _last) = entry?;
                out.push(key.value().to_owned());
            }
            out.sort();
            out.dedup();
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

    fn as_embedded(&self) -> Option<&EmbeddedStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(range: std::ops::RangeInclusive<u64>) -> Vec<StoredEvent> {
        range
            .map(|seq| StoredEvent {
                seq,
                data: format!("e{seq}").into_bytes(),
            })
            .collect()
    }

    fn seqs(list: &[StoredEvent]) -> Vec<u64> {
        list.iter().map(|e| e.seq).collect()
    }

    /// Truncated events stay gone: whether they were still only in the write-ahead log (replayed
    /// after a crash) or already checkpointed, and the key's last seq is kept.
    #[tokio::test]
    async fn truncated_events_do_not_come_back() {
        let dir = std::env::temp_dir().join(format!(
            "yuntiao-store-truncate-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let store = EmbeddedStore::open(&dir).unwrap();
        // "a": truncated while only in the log; "b": checkpointed first (closing checkpoints).
        store.append("a", &events(1..=5)).await.unwrap();
        store.append("b", &events(1..=4)).await.unwrap();
        drop(store);
        let store = EmbeddedStore::open(&dir).unwrap();
        store.append("a", &events(6..=6)).await.unwrap();
        store.truncate("b", 4).await.unwrap();
        store.truncate("a", 5).await.unwrap();
        assert_eq!(seqs(&store.read("a", 0).await.unwrap()), vec![6]);
        store.close_without_checkpoint();

        let store = EmbeddedStore::open(&dir).unwrap();
        assert_eq!(seqs(&store.read("a", 0).await.unwrap()), vec![6]);
        assert!(store.read("b", 0).await.unwrap().is_empty());
        assert_eq!(store.last_seq("a").await.unwrap(), 6);
        assert_eq!(store.last_seq("b").await.unwrap(), 4);
        assert!(matches!(
            store.append("b", &events(1..=1)).await,
            Err(StoreError::Conflict { found: 4, .. })
        ));
        store.append("b", &events(5..=5)).await.unwrap();
        assert_eq!(seqs(&store.read("b", 0).await.unwrap()), vec![5]);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
