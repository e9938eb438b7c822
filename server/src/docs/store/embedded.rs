//! The embedded document store: each document's update log in a write-ahead-logged store of its
//! own (`docs-log/` in the data directory), its snapshot in a redb file (`docs.redb`).
//!
//! The update log is an [`EmbeddedStore`], the same engine as the case log (`store::embedded`),
//! in its own directory, with one log per document keyed `"<case>/<doc>"` and the Yjs updates
//! as its entries: an append is durable once its record is in the write-ahead log and
//! `fdatasync`ed (one per group commit, shared by every document with updates queued), and is
//! copied into redb in the background. So a keystroke waits for what the disk's own append costs,
//! not for a redb commit (about 18 pages and an fsync per update at a low rate, most of the paced
//! fan-out latency before: docs/benchmarks.md). A separate directory from the case log so that
//! keystrokes never queue behind, or enlarge, the case log's commits.
//!
//! A snapshot is written to `docs.redb` (durable) *before* the updates it covers are dropped from
//! the log ([`EmbeddedStore::truncate`]), so a crash in between leaves extra updates that are
//! skipped when loading, never a gap.
//!
//! Tables of `docs.redb`, keyed by (case, document):
//! * `doc_snapshots`: (case, doc) → (seq included up to, state bytes);
//! * `doc_updates`, `doc_heads`: the update log of the earlier layout (updates as redb rows);
//!   opening moves whatever is there into the log store and empties them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::{DocStore, StoredDoc};
use crate::store::embedded::EmbeddedStore;
use crate::store::{Store, StoreError, StoredEvent};

/// The snapshot database's file name inside the data directory.
pub const DB_FILE: &str = "docs.redb";
/// The update log's directory inside the data directory.
pub const LOG_DIR: &str = "docs-log";

const UPDATES: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("doc_updates");
const HEADS: TableDefinition<(&str, &str), u64> = TableDefinition::new("doc_heads");
const SNAPSHOTS: TableDefinition<(&str, &str), (u64, &[u8])> =
    TableDefinition::new("doc_snapshots");

/// The update log's key of a document. Document names never contain `/` (`DocName`), so the
/// last `/` separates the two whatever the case id holds.
fn log_key(case: &str, doc: &str) -> String {
    format!("{case}/{doc}")
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
    log: EmbeddedStore,
}

impl std::fmt::Debug for EmbeddedDocStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedDocStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedDocStore {
    /// Opens (or creates) `docs.redb` and the update log `docs-log/` in `dir` (replaying the
    /// log's records after its last checkpoint), and moves updates kept in `docs.redb` by the
    /// earlier layout into the log. Blocking.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(unavailable)?;
        let txn = db.begin_write().map_err(unavailable)?;
        txn.open_table(UPDATES).map_err(unavailable)?;
        txn.open_table(HEADS).map_err(unavailable)?;
        txn.open_table(SNAPSHOTS).map_err(unavailable)?;
        txn.commit().map_err(unavailable)?;
        let log = EmbeddedStore::open(&dir.join(LOG_DIR))?;
        migrate(&db, &log)?;
        Ok(Self {
            db: Arc::new(db),
            path,
            log,
        })
    }

    /// Stops the way a crash would (for tests of recovery): updates appended since the log's last
    /// checkpoint are only in its write-ahead log, as after `kill -9`.
    pub fn close_without_checkpoint(self) {
        self.log.close_without_checkpoint();
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

/// Moves the updates of the earlier layout (rows of `doc_updates`, heads in `doc_heads`) into
/// the log store: written there durably first, then removed here, so a crash in between only
/// repeats the move.
fn migrate(db: &Database, log: &EmbeddedStore) -> Result<(), StoreError> {
    migrate_rows(db, log).map_err(|e| match e {
        Migration::Db(e) => unavailable(e),
        Migration::Store(e) => e,
    })
}

enum Migration {
    Db(Failure),
    Store(StoreError),
}

impl<E: Into<redb::Error>> From<E> for Migration {
    fn from(e: E) -> Self {
        Migration::Db(Failure::from(e))
    }
}

impl From<StoreError> for Migration {
    fn from(e: StoreError) -> Self {
        Migration::Store(e)
    }
}

fn migrate_rows(db: &Database, log: &EmbeddedStore) -> Result<(), Migration> {
    let mut docs: Vec<((String, String), u64)> = Vec::new();
    {
        let txn = db.begin_read()?;
        for entry in txn.open_table(HEADS)?.iter()? {
            let (k, v) = entry?;
            let (case, doc) = k.value();
            docs.push(((case.to_owned(), doc.to_owned()), v.value()));
        }
    }
    if docs.is_empty() {
        return Ok(());
    }
    tracing::info!(
        documents = docs.len(),
        "embedded document store: moving updates into the update log"
    );
    for ((case, doc), head) in &docs {
        let mut events = Vec::new();
        {
            let txn = db.begin_read()?;
            let table = txn.open_table(UPDATES)?;
            for entry in table
                .range((case.as_str(), doc.as_str(), 0)..=(case.as_str(), doc.as_str(), u64::MAX))?
            {
                let (k, v) = entry?;
                events.push(StoredEvent {
                    seq: k.value().2,
                    data: v.value().to_vec(),
                });
            }
        }
        // The head carries over even when a snapshot covered every update.
        log.import_blocking(&log_key(case, doc), &events, *head)?;
    }
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    {
        let mut updates = txn.open_table(UPDATES)?;
        updates.retain(|_, _| false)?;
        let mut heads = txn.open_table(HEADS)?;
        heads.retain(|_, _| false)?;
    }
    txn.commit()?;
    Ok(())
}

#[async_trait]
impl DocStore for EmbeddedDocStore {
    async fn load(&self, case: &str, doc: &str) -> Result<StoredDoc, StoreError> {
        let (c, d) = (case.to_owned(), doc.to_owned());
        let snapshot = self
            .read(move |txn| {
                Ok(txn
                    .open_table(SNAPSHOTS)?
                    .get((c.as_str(), d.as_str()))?
                    .map(|g| {
                        let (upto, state) = g.value();
                        (upto, state.to_vec())
                    }))
            })
            .await?;
        let after = snapshot.as_ref().map_or(0, |(s, _)| *s);
        let updates = self
            .log
            .read(&log_key(case, doc), after)
            .await?
            .into_iter()
            .map(|e| (e.seq, e.data))
            .collect();
        Ok(StoredDoc { snapshot, updates })
    }

    async fn append(
        &self,
        case: &str,
        doc: &str,
        first: u64,
        updates: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        if updates.is_empty() || first == 0 {
            return Err(StoreError::InvalidBatch(
                "an append needs updates, numbered from 1",
            ));
        }
        let events: Vec<StoredEvent> = updates
            .iter()
            .enumerate()
            .map(|(i, u)| StoredEvent {
                seq: first + i as u64,
                data: u.clone(),
            })
            .collect();
        self.log.append(&log_key(case, doc), &events).await
    }

    async fn snapshot(
        &self,
        case: &str,
        doc: &str,
        upto: u64,
        state: &[u8],
    ) -> Result<(), StoreError> {
        let key = log_key(case, doc);
        if upto > self.log.last_seq(&key).await? {
            return Err(StoreError::InvalidBatch(
                "a snapshot cannot include updates that were never stored",
            ));
        }
        let db = Arc::clone(&self.db);
        let (c, d, state) = (case.to_owned(), doc.to_owned(), state.to_vec());
        let newer = tokio::task::spawn_blocking(move || -> Result<bool, Failure> {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            let newer = {
                let mut snapshots = txn.open_table(SNAPSHOTS)?;
                let key = (c.as_str(), d.as_str());
                let current = snapshots.get(key)?.map_or(0, |g| g.value().0);
                if upto > current {
                    snapshots.insert(key, (upto, state.as_slice()))?;
                }
                upto > current
            };
            txn.commit()?;
            Ok(newer)
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        if newer {
            // Durable snapshot first, then drop what it covers.
            self.log.truncate(&key, upto).await?;
        }
        Ok(())
    }

    async fn list(&self, case: &str) -> Result<Vec<String>, StoreError> {
        let mut docs: Vec<String> = self
            .log
            .list_cases()
            .await?
            .into_iter()
            .filter_map(|k| {
                let (c, d) = k.rsplit_once('/')?;
                (c == case).then(|| d.to_owned())
            })
            .collect();
        let c = case.to_owned();
        let snapped = self
            .read(move |txn| {
                let table = txn.open_table(SNAPSHOTS)?;
                let mut out = Vec::new();
                for entry in table.range((c.as_str(), "")..)? {
                    let (k, _) = entry?;
                    let (kc, d) = k.value();
                    if kc != c {
                        break;
                    }
                    out.push(d.to_owned());
                }
                Ok(out)
            })
            .await?;
        docs.extend(snapped);
        docs.sort();
        docs.dedup();
        Ok(docs)
    }

    fn embedded_log(&self) -> Option<&EmbeddedStore> {
        Some(&self.log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "yuntiao-docstore-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A `docs.redb` of the earlier layout (updates as rows) is moved into the update log on
    /// open: the same document loads, appends continue after its head, the old rows are gone.
    #[tokio::test]
    async fn updates_of_the_earlier_layout_move_into_the_log() {
        let dir = temp_dir("migrate");
        {
            let db = Database::create(dir.join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut updates = txn.open_table(UPDATES).unwrap();
                let mut heads = txn.open_table(HEADS).unwrap();
                let mut snapshots = txn.open_table(SNAPSHOTS).unwrap();
                // "agreement": snapshot up to 2, updates 3 and 4 after it.
                snapshots
                    .insert(("c1", "agreement"), (2u64, &b"state"[..]))
                    .unwrap();
                updates.insert(("c1", "agreement", 3), &b"u3"[..]).unwrap();
                updates.insert(("c1", "agreement", 4), &b"u4"[..]).unwrap();
                heads.insert(("c1", "agreement"), 4).unwrap();
                // "caucus-a": a snapshot covers every update; its head must still carry over.
                snapshots
                    .insert(("c1", "caucus-a"), (5u64, &b"all"[..]))
                    .unwrap();
                heads.insert(("c1", "caucus-a"), 5).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = EmbeddedDocStore::open(&dir).unwrap();
        let doc = store.load("c1", "agreement").await.unwrap();
        assert_eq!(doc.snapshot, Some((2, b"state".to_vec())));
        assert_eq!(doc.updates, vec![(3, b"u3".to_vec()), (4, b"u4".to_vec())]);
        assert!(matches!(
            store.append("c1", "agreement", 4, &[b"x".to_vec()]).await,
            Err(StoreError::Conflict {
                expected: 3,
                found: 4
            })
        ));
        store
            .append("c1", "agreement", 5, &[b"u5".to_vec()])
            .await
            .unwrap();
        assert!(matches!(
            store.append("c1", "caucus-a", 1, &[b"x".to_vec()]).await,
            Err(StoreError::Conflict { found: 5, .. })
        ));
        assert_eq!(
            store.list("c1").await.unwrap(),
            vec!["agreement".to_owned(), "caucus-a".to_owned()]
        );
        {
            let txn = store.db.begin_read().unwrap();
            assert!(txn.open_table(UPDATES).unwrap().is_empty().unwrap());
            assert!(txn.open_table(HEADS).unwrap().is_empty().unwrap());
        }
        // Reopening does not move anything twice.
        drop(store);
        let store = EmbeddedDocStore::open(&dir).unwrap();
        assert_eq!(store.load("c1", "agreement").await.unwrap().head(), 5);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
