//! The case store: where each case's event log lives.
//!
//! The event log is the source of truth (DESIGN.md, decision 1): the room manager appends a
//! batch of events here and only then acknowledges or fans them out. The store treats an event
//! as an opaque record (`seq` plus the JSON bytes produced by the signaling crate); it neither
//! parses nor verifies it, so both backends stay small and the hash chain is checked in one
//! place (`yuntiao_signaling::event::verify_chain`).
//!
//! Two backends implement [`Store`] with one contract, exercised by one shared test suite
//! (`tests/tests/store_contract.rs`):
//!
//! * [`embedded::EmbeddedStore`]: a write-ahead log ([`wal`]) and redb in the data directory,
//!   fsync on every commit; the default, so the server runs on a fresh machine with nothing else
//!   installed.
//! * [`redis::RedisStore`]: one Redis stream per case, keys hash-tagged by case id so a Redis
//!   Cluster keeps a case on one slot.

pub mod embedded;
pub mod redis;
pub mod wal;

use async_trait::async_trait;

/// One record of a case's log as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the case's log, starting at 1, without gaps.
    pub seq: u64,
    /// The event as serialized by the signaling crate (JSON, UTF-8).
    pub data: Vec<u8>,
}

/// Errors a store reports. None of them means "maybe written": an append either stored the whole
/// batch or nothing. One caveat for Redis, a networked store: when the reply to an append is lost
/// (timeout, dropped connection), the backend reads the log back and reports `Ok` only if exactly
/// that batch is there; a script still in flight could in principle land after that check. The
/// room then reports `store_unavailable` for an event that is stored, never the reverse, and a
/// retry is safe because appends are conditional on the log's head.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The log's last sequence number is not the one the caller built on: another writer got
    /// there first (or the caller's view is stale). Nothing was written.
    #[error("append conflict on case log: expected last seq {expected}, found {found}")]
    Conflict { expected: u64, found: u64 },
    /// The batch itself is unusable (empty, or sequence numbers not consecutive).
    #[error("invalid append batch: {0}")]
    InvalidBatch(&'static str),
    /// The backend could not be reached or failed; the operation did not take effect.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// The contract both backends keep.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends `events` to the log of `case` atomically, if and only if the log's last sequence
    /// number is `events[0].seq - 1` (0 for an empty log) and the batch is consecutive.
    /// Durable when it returns `Ok` (fsync for the embedded store; for Redis, as durable as the
    /// Redis server is configured to be: AOF with `appendfsync always` in production).
    async fn append(&self, case: &str, events: &[StoredEvent]) -> Result<(), StoreError>;

    /// Returns the events of `case` with `seq > after`, in order (all of them for `after = 0`).
    /// An unknown case has an empty log.
    async fn read(&self, case: &str, after: u64) -> Result<Vec<StoredEvent>, StoreError>;

    /// Lists the ids of all cases that have at least one event, sorted.
    async fn list_cases(&self) -> Result<Vec<String>, StoreError>;

    /// Checks that the backend is reachable (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// A short name for logs and metrics ("embedded" or "redis").
    fn kind(&self) -> &'static str;

    /// The embedded store behind this one, if it is one (for its metrics).
    fn as_embedded(&self) -> Option<&embedded::EmbeddedStore> {
        None
    }
}
