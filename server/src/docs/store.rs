//! Where shared documents are kept: per document, a log of Yjs updates and at most one snapshot.
//!
//! DESIGN.md, decision 5: every update is appended here *before* it is broadcast, and a document
//! is rebuilt from its latest snapshot plus the updates after it. Updates are opaque bytes (Yjs
//! update v1 encoding) numbered from 1 without gaps; a snapshot is the document's whole state
//! encoded as one update, tagged with the seq of the last update it includes. Writing a snapshot
//! also drops the updates it covers (compaction), in that order, so a crash in between leaves
//! extra updates that are skipped when loading, never a gap.
//!
//! Two backends implement [`DocStore`], next to the case log's two backends and with the same
//! durability: [`embedded::EmbeddedDocStore`] (a redb file of its own in the data directory,
//! fsync on commit) and [`redis::RedisDocStore`] (a stream plus a hash per document, hash-tagged
//! with the case id like the case log). One test suite (`tests/tests/documents.rs`) runs against
//! both through the real server.

pub mod embedded;
pub mod redis;

use async_trait::async_trait;

use crate::store::StoreError;

/// A document as the store holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredDoc {
    /// The latest snapshot: (seq of the last update it includes, encoded state).
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// Updates after the snapshot, in order, with their seqs.
    pub updates: Vec<(u64, Vec<u8>)>,
}

impl StoredDoc {
    /// The seq of the last update the store has (0 for a new document).
    pub fn head(&self) -> u64 {
        let snap = self.snapshot.as_ref().map_or(0, |(s, _)| *s);
        self.updates.last().map_or(snap, |(s, _)| *s).max(snap)
    }
}

/// The contract both document backends keep.
#[async_trait]
pub trait DocStore: Send + Sync + 'static {
    /// Reads a document: its snapshot and the updates after it. An unknown document is empty.
    async fn load(&self, case: &str, doc: &str) -> Result<StoredDoc, StoreError>;

    /// Appends `updates` with seqs `first, first + 1, …` atomically, if and only if the
    /// document's head is `first - 1`. Durable when it returns `Ok`.
    async fn append(
        &self,
        case: &str,
        doc: &str,
        first: u64,
        updates: &[Vec<u8>],
    ) -> Result<(), StoreError>;

    /// Stores `state` as the snapshot including every update up to `upto`, then drops those
    /// updates. A snapshot older than the stored one is ignored.
    async fn snapshot(
        &self,
        case: &str,
        doc: &str,
        upto: u64,
        state: &[u8],
    ) -> Result<(), StoreError>;

    /// The names of the documents `case` has stored anything for, sorted.
    async fn list(&self, case: &str) -> Result<Vec<String>, StoreError>;

    /// The embedded update log behind this store, if it has one (for its metrics).
    fn embedded_log(&self) -> Option<&crate::store::embedded::EmbeddedStore> {
        None
    }
}
