//! The embedded document store: a redb file of its own (`docs.redb`) in the data directory.
//!
//! A separate file from the case log (`store::embedded`) so that keystrokes in a document never
//! queue behind, or enlarge, the case log's commits, and the two can be compacted independently.
//! The same scheme as the case log, though: one writer thread takes every write, drains what is
//! queued and commits it as one durable transaction (`Durability::Immediate`, i.e. fsync), then
//! answers each request; reads run in read transactions on tokio's blocking pool.
//!
//! Tables, keyed by (case, document):
//! * `doc_updates`: (case, doc, seq) → update bytes;
//! * `doc_heads`: (case, doc) → seq of the last update appended (also after compaction);
//! * `doc_snapshots`: (case, doc) → (seq included up to, state bytes).

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::{DocStore, StoredDoc};
use crate::store::StoreError;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "docs.redb";

const UPDATES: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("doc_updates");
const HEADS: TableDefinition<(&str, &str), u64> = TableDefinition::new("doc_heads");
const SNAPSHOTS: TableDefinition<(&str, &str), (u64, &[u8])> =
    TableDefinition::new("doc_snapshots");

/// Writes queued while a commit runs are committed together, up to this many.
const MAX_GROUP: usize = 256;

enum Write {
    Append {
        case: String,
        doc: String,
        first: u64,
        updates: Vec<Vec<u8>>,
    },
    Snapshot {
        case: String,
        doc: String,
        upto: u64,
        state: Vec<u8>,
    },
}

struct WriteRequest {
    write: Write,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// redb's error, boxed: it is large, and results carry it through every read and write.
struct Failure(Box<redb::Error>);

impl<E: Into<redb::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(Box::new(e.into()))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded document store: {e}"))
}

/// The embedded backend of [`DocStore`].
pub struct EmbeddedDocStore {
    db: Arc<Database>,
    path: PathBuf,
    writer_tx: Option<mpsc::Sender<WriteRequest>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedDocStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedDocStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedDocStore {
    /// Opens (or creates) `docs.redb` in `dir` and starts the writer thread. Blocking.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(unavailable)?;
        let txn = db.begin_write().map_err(unavailable)?;
        txn.open_table(UPDATES).map_err(unavailable)?;
        txn.open_table(HEADS).map_err(unavailable)?;
        txn.open_table(SNAPSHOTS).map_err(unavailable)?;
        txn.commit().map_err(unavailable)?;
        let db = Arc::new(db);
        let (writer_tx, writer_rx) = mpsc::channel();
        let writer_db = Arc::clone(&db);
        let writer = std::thread::Builder::new()
            .name("yuntiao-docs-writer".into())
            .spawn(move || writer_loop(&writer_db, &writer_rx))
            .map_err(unavailable)?;
        Ok(Self {
            db,
            path,
            writer_tx: Some(writer_tx),
            writer: Some(writer),
        })
    }

    async fn write(&self, write: Write) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer_tx
            .as_ref()
            .ok_or_else(|| unavailable("closed"))?
            .send(WriteRequest { write, reply })
            .map_err(|_| unavailable("the writer thread stopped"))?;
        rx.await
            .map_err(|_| unavailable("the writer thread stopped"))?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T, Failure> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read()?;
            f(&txn)
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)
    }
}

impl Drop for EmbeddedDocStore {
    fn drop(&mut self) {
        drop(self.writer_tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn writer_loop(db: &Database, rx: &mpsc::Receiver<WriteRequest>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Ok(first) = rx.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        match write_group(db, &group) {
            Ok(outcomes) => {
                for (r, outcome) in group.drain(..).zip(outcomes) {
                    let _ = r.reply.send(outcome);
                }
            }
            Err(e) => {
                let message = format!("embedded document store: commit failed: {e}");
                tracing::error!("{message}");
                for r in group.drain(..) {
                    let _ = r.reply.send(Err(StoreError::Unavailable(message.clone())));
                }
            }
        }
    }
}

/// Writes a group in one durable transaction; each request gets its own verdict, and `Err` means
/// nothing of the group was written.
fn write_group(
    db: &Database,
    group: &[WriteRequest],
) -> Result<Vec<Result<(), StoreError>>, Failure> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    let mut outcomes = Vec::with_capacity(group.len());
    {
        let mut updates = txn.open_table(UPDATES)?;
        let mut heads = txn.open_table(HEADS)?;
        let mut snapshots = txn.open_table(SNAPSHOTS)?;
        for r in group {
            match &r.write {
                Write::Append {
                    case,
                    doc,
                    first,
                    updates: batch,
                } => {
                    if batch.is_empty() || *first == 0 {
                        outcomes.push(Err(StoreError::InvalidBatch(
                            "an append needs updates, numbered from 1",
                        )));
                        continue;
                    }
                    let key = (case.as_str(), doc.as_str());
                    let found = heads.get(key)?.map(|g| g.value()).unwrap_or(0);
                    if found != first - 1 {
                        outcomes.push(Err(StoreError::Conflict {
                            expected: first - 1,
                            found,
                        }));
                        continue;
                    }
                    for (i, u) in batch.iter().enumerate() {
                        updates.insert((key.0, key.1, first + i as u64), u.as_slice())?;
                    }
                    heads.insert(key, first + batch.len() as u64 - 1)?;
                    outcomes.push(Ok(()));
                }
                Write::Snapshot {
                    case,
                    doc,
                    upto,
                    state,
                } => {
                    let key = (case.as_str(), doc.as_str());
                    let current = snapshots.get(key)?.map(|g| g.value().0).unwrap_or(0);
                    let head = heads.get(key)?.map(|g| g.value()).unwrap_or(0);
                    if *upto > head {
                        outcomes.push(Err(StoreError::InvalidBatch(
                            "a snapshot cannot include updates that were never stored",
                        )));
                        continue;
                    }
                    if *upto > current {
                        snapshots.insert(key, (*upto, state.as_slice()))?;
                        // Drop what the snapshot covers.
                        let covered: Vec<u64> = updates
                            .range((key.0, key.1, 0)..=(key.0, key.1, *upto))?
                            .map(|e| e.map(|(k, _)| k.value().2))
                            .collect::<Result<_, _>>()?;
                        for seq in covered {
                            updates.remove((key.0, key.1, seq))?;
                        }
                    }
                    outcomes.push(Ok(()));
                }
            }
        }
    }
    txn.commit()?;
    Ok(outcomes)
}

#[async_trait]
impl DocStore for EmbeddedDocStore {
    async fn load(&self, case: &str, doc: &str) -> Result<StoredDoc, StoreError> {
        let (case, doc) = (case.to_owned(), doc.to_owned());
        self.read(move |txn| {
            let key = (case.as_str(), doc.as_str());
            let snapshot = txn.open_table(SNAPSHOTS)?.get(key)?.map(|g| {
                let (upto, state) = g.value();
                (upto, state.to_vec())
            });
            let after = snapshot.as_ref().map_or(0, |(s, _)| *s);
            let table = txn.open_table(UPDATES)?;
            let mut updates = Vec::new();
            for entry in table.range((key.0, key.1, after + 1)..=(key.0, key.1, u64::MAX))? {
                let (k, v) = entry?;
                updates.push((k.value().2, v.value().to_vec()));
            }
            Ok(StoredDoc { snapshot, updates })
        })
        .await
    }

    async fn append(
        &self,
        case: &str,
        doc: &str,
        first: u64,
        updates: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        self.write(Write::Append {
            case: case.to_owned(),
            doc: doc.to_owned(),
            first,
            updates: updates.to_vec(),
        })
        .await
    }

    async fn snapshot(
        &self,
        case: &str,
        doc: &str,
        upto: u64,
        state: &[u8],
    ) -> Result<(), StoreError> {
        self.write(Write::Snapshot {
            case: case.to_owned(),
            doc: doc.to_owned(),
            upto,
            state: state.to_vec(),
        })
        .await
    }

    async fn list(&self, case: &str) -> Result<Vec<String>, StoreError> {
        let case = case.to_owned();
        self.read(move |txn| {
            let heads = txn.open_table(HEADS)?;
            let mut docs = Vec::new();
            // Every (case, doc) key sorts after (case, "") and before the next case.
            for entry in heads.range((case.as_str(), "")..)? {
                let (k, _) = entry?;
                let (c, d) = k.value();
                if c != case {
                    break;
                }
                docs.push(d.to_owned());
            }
            Ok(docs)
        })
        .await
    }
}
