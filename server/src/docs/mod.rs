//! Shared documents: the agreement draft and the caucus notes, co-edited live over the
//! y-websocket protocol on `yrs` (DESIGN.md, decision 5).
//!
//! * [`ws`]: the websocket at `/docs/{case}/{doc}`: authentication with the invite token,
//!   frame and rate limits, the per-connection reader and writer.
//! * [`task`]: one *document task* per open document, owning the `yrs` document and its
//!   awareness: answers sync messages, applies edits of writers, appends them to the store and
//!   only then broadcasts them; compacts the document's log into snapshots in the background.
//! * [`store`]: the document store contract and its two backends (embedded redb, Redis).
//!
//! Who may open or edit a document is decided by the signaling crate's rules
//! ([`yuntiao_signaling::document`]): the room task publishes a [`DocPolicy`] for its case after
//! every change, and each document task follows it live: a write grant or withdrawal takes effect
//! on open connections at once, and a participant who loses access (removed, revoked invite) is
//! disconnected at once.
//!
//! Errors are reported the y-websocket way, by closing the websocket: the close code says the
//! class of failure ([`close_code`]) and the close reason is the protocol's error code
//! (`token_expired`, `forbidden`, `invalid_message`, ...), documented in docs/protocol.md.

pub mod store;
pub mod task;
pub mod ws;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;
use yuntiao_signaling::document::{DocName, DocPolicy};
use yuntiao_signaling::protocol::{ErrorCode, ProtocolError};

use self::store::DocStore;
use self::task::{DocCommand, DocConn, DocTask};

/// The websocket close code for an error code. Codes 4000–4999 are for applications (RFC 6455).
pub fn close_code(code: ErrorCode) -> u16 {
    use ErrorCode::*;
    match code {
        TokenMalformed | TokenSignature | TokenAlgorithm | TokenExpired | TokenNotYetValid
        | TokenAudience | TokenIssuer | TokenRevoked | TokenUnknown | TokenRole | Unauthorized => {
            4001
        }
        Forbidden | NotAdmitted | Denied | Removed | NotJoined | WrongCase => 4003,
        CaseNotFound | NotFound => 4004,
        MalformedJson | InvalidMessage | UnknownType | AlreadyJoined => 4400,
        Conflict | CaseClosed => 4409,
        FrameTooLarge => 1009,
        RateLimited => 4429,
        StoreUnavailable => 4503,
        Internal => 4500,
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct DocMetrics {
    /// Document tasks in memory.
    pub open_documents: AtomicU64,
    /// Document websockets open.
    pub connections: AtomicU64,
    /// Updates appended to the store (and then broadcast).
    pub updates_stored: AtomicU64,
    /// Bytes of those updates.
    pub update_bytes: AtomicU64,
    /// Updates from read-only participants that would have changed the document, dropped.
    pub dropped_read_only: AtomicU64,
    /// Connections closed for a malformed or unknown message.
    pub rejected_messages: AtomicU64,
    /// Snapshots written by compaction.
    pub snapshots: AtomicU64,
}

/// A snapshot of [`DocMetrics`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DocStats {
    pub open_documents: u64,
    pub connections: u64,
    pub updates_stored: u64,
    pub update_bytes: u64,
    pub dropped_read_only: u64,
    pub rejected_messages: u64,
    pub snapshots: u64,
}

/// Routes document connections to document tasks, starting them on demand. Cheap to clone.
#[derive(Clone)]
pub struct DocManager {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn DocStore>,
    tasks: Mutex<HashMap<(String, String), mpsc::Sender<DocCommand>>>,
    next_conn: AtomicU64,
    metrics: Arc<DocMetrics>,
    snapshot_every: u64,
}

impl DocManager {
    /// `snapshot_every`: updates after which a document's log is compacted.
    pub fn new(store: Arc<dyn DocStore>, snapshot_every: u64) -> DocManager {
        DocManager {
            inner: Arc::new(Inner {
                store,
                tasks: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
                metrics: Arc::new(DocMetrics::default()),
                snapshot_every: snapshot_every.max(1),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn DocStore> {
        &self.inner.store
    }

    pub fn metrics(&self) -> &Arc<DocMetrics> {
        &self.inner.metrics
    }

    /// The counters, read now.
    pub fn stats(&self) -> DocStats {
        let m = &self.inner.metrics;
        DocStats {
            open_documents: m.open_documents.load(Ordering::Relaxed),
            connections: m.connections.load(Ordering::Relaxed),
            updates_stored: m.updates_stored.load(Ordering::Relaxed),
            update_bytes: m.update_bytes.load(Ordering::Relaxed),
            dropped_read_only: m.dropped_read_only.load(Ordering::Relaxed),
            rejected_messages: m.rejected_messages.load(Ordering::Relaxed),
            snapshots: m.snapshots.load(Ordering::Relaxed),
        }
    }

    pub fn snapshot_every(&self) -> u64 {
        self.inner.snapshot_every
    }

    pub fn next_conn_id(&self) -> u64 {
        self.inner.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a command to the document's task, starting one if needed (as the room manager
    /// does for rooms: a task that is shutting down refuses, and a fresh one is started).
    pub async fn send(
        &self,
        case: &str,
        doc: &DocName,
        policy: &watch::Receiver<Arc<DocPolicy>>,
        mut cmd: DocCommand,
    ) -> Result<(), ProtocolError> {
        let key = (case.to_owned(), doc.as_string());
        for _ in 0..3 {
            let tx = {
                let mut tasks = self
                    .inner
                    .tasks
                    .lock()
                    .map_err(|_| ProtocolError::new(ErrorCode::Internal, "document table"))?;
                match tasks.get(&key) {
                    Some(tx) if !tx.is_closed() => tx.clone(),
                    _ => {
                        let (tx, rx) = mpsc::channel(task::DOC_QUEUE);
                        tasks.insert(key.clone(), tx.clone());
                        let t = DocTask::new(self.clone(), case, doc.clone(), policy.clone());
                        let span = tracing::info_span!("doc", case = %case, doc = %key.1);
                        tokio::spawn(t.run(rx).instrument(span));
                        tx
                    }
                }
            };
            match tx.send(cmd).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(c)) => {
                    cmd = c;
                    if let Ok(mut tasks) = self.inner.tasks.lock() {
                        if tasks.get(&key).is_some_and(|t| t.same_channel(&tx)) {
                            tasks.remove(&key);
                        }
                    }
                }
            }
        }
        Err(ProtocolError::new(
            ErrorCode::Internal,
            "the document is restarting; try again",
        ))
    }

    /// Sends a command to the document's task only if one is running (a disconnect needs no
    /// fresh task).
    pub async fn notify(&self, case: &str, doc: &DocName, cmd: DocCommand) {
        let tx = self.inner.tasks.lock().ok().and_then(|tasks| {
            tasks
                .get(&(case.to_owned(), doc.as_string()))
                .filter(|tx| !tx.is_closed())
                .cloned()
        });
        if let Some(tx) = tx {
            let _ = tx.send(cmd).await;
        }
    }

    /// Opens a connection on a document; the task sends the opening sync messages.
    pub async fn connect(
        &self,
        case: &str,
        doc: &DocName,
        policy: &watch::Receiver<Arc<DocPolicy>>,
        conn: DocConn,
    ) -> Result<(), ProtocolError> {
        let (reply, rx) = oneshot::channel();
        self.send(case, doc, policy, DocCommand::Connect { conn, reply })
            .await?;
        rx.await
            .map_err(|_| ProtocolError::new(ErrorCode::Internal, "the document stopped"))?
    }

    /// The document's current stored text and state vector (starting its task if needed).
    pub async fn version(
        &self,
        rooms: &crate::rooms::RoomManager,
        case: &str,
        doc: &DocName,
    ) -> Result<task::DocSnapshot, ProtocolError> {
        let policy = rooms.doc_policy(case).await?;
        policy.borrow().check_exists(doc)?;
        let (reply, rx) = oneshot::channel();
        self.send(case, doc, &policy, DocCommand::Version { reply })
            .await?;
        rx.await
            .map_err(|_| ProtocolError::new(ErrorCode::Internal, "the document stopped"))?
    }

    /// Called by a task that is exiting: forget its (closed) channel.
    fn unregister(&self, case: &str, doc: &str) {
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            let key = (case.to_owned(), doc.to_owned());
            if tasks.get(&key).is_some_and(|t| t.is_closed()) {
                tasks.remove(&key);
            }
        }
    }
}
