//! The document task: one per open document, the only place that document changes.
//!
//! It owns the `yrs` document (UTF-16 offsets, like JavaScript) and its awareness, and serves the
//! y-websocket protocol to every connection on the document:
//!
//! * on connect it sends its sync step 1 (its state vector) and the current awareness states;
//! * a client's sync step 1 is answered with sync step 2 (everything the client lacks);
//! * a writer's sync step 2 or update is decoded, applied, **appended to the store**, and only
//!   then broadcast to the other connections; updates queued meanwhile (from any connection) are
//!   appended together, in one store write (a group commit per document);
//! * a read-only participant's updates are dropped; those that would have changed the document
//!   are counted (`yuntiao_doc_dropped_read_only_total`);
//! * awareness (cursors, names) is relayed and never stored; a connection may speak for at most
//!   [`MAX_AWARENESS_IDS`] client ids and not for another connection's, each state must be
//!   JSON, and a connection's awareness states are removed (and the removal broadcast) when it
//!   closes.
//!
//! Because edits wait for the store only in batches, and nothing is sent that depends on an edit
//! before that edit is stored (a sync step 2 for a newcomer is computed only after every pending
//! edit was stored), no client ever sees a state the store does not have. If an append fails,
//! every connection is closed at once (`store_unavailable`; nothing of the failed batch was sent
//! to anyone) and the document is rebuilt from the store; if the store cannot be read either, the
//! in-memory document (which holds the unstored edits) is dropped and the next connection or
//! version request loads it again. The clients reconnect, resync, and send their unsaved edits
//! again.
//!
//! Compaction: after `--doc-snapshot-every` updates (or [`SNAPSHOT_BYTES`]), the task encodes the
//! whole state and hands it to a background task that writes the snapshot and drops the updates it
//! covers; editing continues meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};
use yrs::sync::protocol::SyncMessage;
use yrs::sync::{Awareness, AwarenessUpdate, Message};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Transact, Update};
use yuntiao_signaling::document::{DocAccess, DocName, DocPolicy};
use yuntiao_signaling::protocol::{ErrorCode, ProtocolError};

use super::DocManager;
use crate::store::StoreError;

/// Commands queued to one document task.
pub const DOC_QUEUE: usize = 1024;
/// Messages a connection's outbox holds before it counts as too slow and is closed.
pub const DOC_OUTBOX: usize = 4096;
/// A task with no connections stops after this long.
pub const DOC_IDLE: Duration = Duration::from_secs(30);
/// Bytes of updates after which the log is compacted into a snapshot.
pub const SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024;
/// Awareness client ids one connection may announce (a browser tab uses one).
pub const MAX_AWARENESS_IDS: usize = 8;
/// Commands drained into one group commit.
const MAX_BATCH: usize = 512;

/// What a document connection's writer sends.
#[derive(Debug)]
pub enum DocOut {
    Binary(Bytes),
    /// Close the websocket with this error code (see [`super::close_code`]).
    Close(ErrorCode),
}

/// A connection joining a document.
pub struct DocConn {
    pub id: u64,
    pub participant: String,
    pub jti: String,
    pub outbox: mpsc::Sender<DocOut>,
}

/// Commands to a document task.
pub enum DocCommand {
    Connect {
        conn: DocConn,
        reply: oneshot::Sender<Result<(), ProtocolError>>,
    },
    /// One binary websocket frame (one or more y-protocol messages).
    Frame {
        conn: u64,
        data: Bytes,
    },
    Disconnect {
        conn: u64,
    },
    /// Read the document's text and state vector as stored now.
    Version {
        reply: oneshot::Sender<Result<DocSnapshot, ProtocolError>>,
    },
}

/// A document's text at one moment, with what identifies that moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocSnapshot {
    /// The shared text (root [`TEXT`]).
    pub text: String,
    /// The state vector, Yjs v1 encoding, base64.
    pub state_vector: String,
    /// Seq of the last stored update.
    pub head: u64,
}

/// The name of the shared text in every Yuntiao document (`ydoc.getText("text")`).
pub const TEXT: &str = "text";

struct Conn {
    participant: String,
    jti: String,
    access: DocAccess,
    outbox: mpsc::Sender<DocOut>,
    awareness_ids: HashSet<ClientID>,
}

/// An edit applied in memory but not yet stored.
struct Pending {
    from: u64,
    update: Vec<u8>,
}

pub struct DocTask {
    manager: DocManager,
    case: String,
    name: DocName,
    key: String,
    awareness: Awareness,
    policy: watch::Receiver<Arc<DocPolicy>>,
    conns: HashMap<u64, Conn>,
    /// Seq of the last stored update.
    head: u64,
    /// Seq the stored snapshot includes.
    snapshot_upto: u64,
    bytes_since_snapshot: u64,
    compacting: bool,
    pending: Vec<Pending>,
    /// Set when the document could not be loaded; every connection is refused with it.
    load_error: Option<ProtocolError>,
}

fn new_doc() -> Doc {
    Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

fn store_error(e: &StoreError) -> ProtocolError {
    match e {
        StoreError::Conflict { .. } => ProtocolError::new(
            ErrorCode::Conflict,
            "the document changed elsewhere; reconnect",
        ),
        _ => ProtocolError::new(ErrorCode::StoreUnavailable, "the store is unavailable"),
    }
}

/// Would `update` change a document in state `txn`: insert something it lacks, or delete
/// something it has not deleted?
fn would_write<T: ReadTxn>(txn: &T, update: &Update) -> bool {
    let sv = txn.state_vector();
    if update.extends(&sv) {
        return true;
    }
    if update
        .state_vector_lower()
        .iter()
        .any(|(client, clock)| *clock >= sv.get(client))
    {
        return true;
    }
    if update.delete_set().is_empty() {
        return false;
    }
    let deleted = txn.snapshot().delete_set;
    !update.delete_set().diff(&deleted).is_empty()
}

fn encode(msg: &Message) -> Bytes {
    Bytes::from(msg.encode_v1())
}

impl DocTask {
    pub fn new(
        manager: DocManager,
        case: &str,
        name: DocName,
        policy: watch::Receiver<Arc<DocPolicy>>,
    ) -> DocTask {
        DocTask {
            manager,
            case: case.to_owned(),
            key: name.as_string(),
            name,
            awareness: Awareness::new(new_doc()),
            policy,
            conns: HashMap::new(),
            head: 0,
            snapshot_upto: 0,
            bytes_since_snapshot: 0,
            compacting: false,
            pending: Vec::new(),
            load_error: None,
        }
    }

    /// Rebuilds the document from the store: snapshot, then the updates after it.
    async fn load(&mut self) -> Result<(), ProtocolError> {
        let stored = self
            .manager
            .store()
            .load(&self.case, &self.key)
            .await
            .map_err(|e| store_error(&e))?;
        let doc = new_doc();
        {
            let mut txn = doc.transact_mut();
            let parts = stored
                .snapshot
                .iter()
                .map(|(_, s)| s)
                .chain(stored.updates.iter().map(|(_, u)| u));
            for bytes in parts {
                let update = Update::decode_v1(bytes).map_err(|_| {
                    ProtocolError::new(ErrorCode::Internal, "a stored update is unreadable")
                })?;
                txn.apply_update(update).map_err(|_| {
                    ProtocolError::new(ErrorCode::Internal, "a stored update does not apply")
                })?;
            }
        }
        self.awareness = Awareness::new(doc);
        self.head = stored.head();
        self.snapshot_upto = stored.snapshot.as_ref().map_or(0, |(s, _)| *s);
        self.bytes_since_snapshot = stored.updates.iter().map(|(_, u)| u.len() as u64).sum();
        self.pending.clear();
        Ok(())
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<DocCommand>) {
        let metrics = Arc::clone(self.manager.metrics());
        metrics.open_documents.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.load().await {
            warn!(error = %e.message, "could not load document");
            self.load_error = Some(e);
        }
        let (snap_tx, mut snap_rx) = mpsc::channel::<(u64, u64, Result<(), StoreError>)>(4);
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    // A policy published before these messages were sent applies to them, even
                    // when both are ready at once and `select!` took this branch first: the
                    // room publishes a grant before anyone hears of it, so a participant who
                    // types the moment it is told may write is not dropped as read-only.
                    if self.policy.has_changed().unwrap_or(false) {
                        self.follow_policy();
                    }
                    batch.push(cmd);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(c) => batch.push(c),
                            Err(_) => break,
                        }
                    }
                    for cmd in batch.drain(..) {
                        self.handle(cmd).await;
                    }
                    self.flush().await;
                    self.maybe_compact(&snap_tx);
                }
                changed = self.policy.changed() => {
                    if changed.is_err() {
                        // The room manager dropped the policy: the server is shutting down.
                        self.close_all(ErrorCode::Internal);
                        break;
                    }
                    self.follow_policy();
                }
                Some((upto, bytes, result)) = snap_rx.recv() => {
                    self.compacting = false;
                    match result {
                        Ok(()) => {
                            metrics.snapshots.fetch_add(1, Ordering::Relaxed);
                            self.snapshot_upto = self.snapshot_upto.max(upto);
                            self.bytes_since_snapshot =
                                self.bytes_since_snapshot.saturating_sub(bytes);
                        }
                        Err(e) => warn!(error = %e, "compaction failed; will retry"),
                    }
                }
                _ = tokio::time::sleep(DOC_IDLE), if self.conns.is_empty() => {
                    rx.close();
                    while let Ok(cmd) = rx.try_recv() {
                        self.handle(cmd).await;
                    }
                    self.flush().await;
                    if self.conns.is_empty() {
                        break;
                    }
                }
            }
        }
        // Leave a compact document behind for the next load.
        if self.load_error.is_none() && self.head > self.snapshot_upto {
            let state = self.encode_state();
            if let Err(e) = self
                .manager
                .store()
                .snapshot(&self.case, &self.key, self.head, &state)
                .await
            {
                debug!(error = %e, "final snapshot failed");
            } else {
                metrics.snapshots.fetch_add(1, Ordering::Relaxed);
            }
        }
        metrics.open_documents.fetch_sub(1, Ordering::Relaxed);
        self.manager.unregister(&self.case, &self.key);
        info!("document task stopped");
    }

    fn encode_state(&self) -> Vec<u8> {
        self.awareness
            .doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    async fn handle(&mut self, cmd: DocCommand) {
        match cmd {
            DocCommand::Connect { conn, reply } => {
                let r = self.connect(conn).await;
                let _ = reply.send(r);
            }
            DocCommand::Frame { conn, data } => self.frame(conn, data).await,
            DocCommand::Disconnect { conn } => self.disconnect(conn),
            DocCommand::Version { reply } => {
                let r = self.version().await;
                let _ = reply.send(r);
            }
        }
    }

    /// The stored text and state vector (pending edits are stored first).
    async fn version(&mut self) -> Result<DocSnapshot, ProtocolError> {
        self.flush().await;
        self.reload_if_needed().await?;
        let doc = self.awareness.doc();
        let text = doc.get_or_insert_text(TEXT);
        let txn = doc.transact();
        Ok(DocSnapshot {
            text: text.get_string(&txn),
            state_vector: base64::engine::general_purpose::STANDARD
                .encode(txn.state_vector().encode_v1()),
            head: self.head,
        })
    }

    /// If the document could not be loaded (or was dropped after a failed append), tries again:
    /// the store may be back.
    async fn reload_if_needed(&mut self) -> Result<(), ProtocolError> {
        if let Some(e) = &self.load_error {
            let e = e.clone();
            if self.load().await.is_err() {
                return Err(e);
            }
            self.load_error = None;
        }
        Ok(())
    }

    /// Drops the in-memory document (it may hold edits the store does not have) and marks it
    /// unloaded with `e`, so every connection and version request is refused until a load
    /// succeeds.
    fn forget(&mut self, e: ProtocolError) {
        self.awareness = Awareness::new(new_doc());
        self.pending.clear();
        self.load_error = Some(e);
    }

    async fn connect(&mut self, conn: DocConn) -> Result<(), ProtocolError> {
        self.reload_if_needed().await?;
        let policy = self.policy.borrow().clone();
        let access = policy.access(&conn.participant, &self.name);
        if access == DocAccess::None {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "you may not open this document",
            ));
        }
        // The newcomer's sync must not include edits that are not stored yet.
        self.flush().await;
        if let Some(e) = &self.load_error {
            // That append failed and the store could not be read back.
            return Err(e.clone());
        }
        let sv = self.awareness.doc().transact().state_vector();
        let mut opening = vec![encode(&Message::Sync(SyncMessage::SyncStep1(sv)))];
        if let Ok(update) = self.awareness.update() {
            if !update.clients.is_empty() {
                opening.push(encode(&Message::Awareness(update)));
            }
        }
        for m in opening {
            let _ = conn.outbox.try_send(DocOut::Binary(m));
        }
        self.conns.insert(
            conn.id,
            Conn {
                participant: conn.participant,
                jti: conn.jti,
                access,
                outbox: conn.outbox,
                awareness_ids: HashSet::new(),
            },
        );
        Ok(())
    }

    fn disconnect(&mut self, id: u64) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        let ids: Vec<ClientID> = conn.awareness_ids.into_iter().collect();
        if ids.is_empty() {
            return;
        }
        for client in &ids {
            self.awareness.remove_state(*client);
        }
        if let Ok(update) = self.awareness.update_with_clients(ids) {
            self.broadcast(encode(&Message::Awareness(update)), None);
        }
    }

    /// Closes one connection with an error code.
    fn close(&mut self, id: u64, code: ErrorCode) {
        if let Some(conn) = self.conns.get(&id) {
            let _ = conn.outbox.try_send(DocOut::Close(code));
        }
        self.disconnect(id);
    }

    fn close_all(&mut self, code: ErrorCode) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id, code);
        }
    }

    /// Sends `msg` to every connection but `except`; a connection too slow to take it is closed
    /// (its client reconnects and resyncs).
    fn broadcast(&mut self, msg: Bytes, except: Option<u64>) {
        let mut slow = Vec::new();
        for (id, c) in &self.conns {
            if Some(*id) == except {
                continue;
            }
            if c.outbox.try_send(DocOut::Binary(msg.clone())).is_err() {
                slow.push(*id);
            }
        }
        for id in slow {
            self.close(id, ErrorCode::RateLimited);
        }
    }

    fn send_to(&mut self, id: u64, msg: Bytes) {
        let ok = self
            .conns
            .get(&id)
            .is_some_and(|c| c.outbox.try_send(DocOut::Binary(msg)).is_ok());
        if !ok {
            self.close(id, ErrorCode::RateLimited);
        }
    }

    /// Handles one frame: every message in it is decoded and checked before any takes effect,
    /// so a frame with a malformed message changes nothing (the connection is closed with
    /// `invalid_message` or `unknown_type`). Awareness updates of the frame are relayed only
    /// after its edits applied.
    async fn frame(&mut self, id: u64, data: Bytes) {
        let Some(access) = self.conns.get(&id).map(|c| c.access) else {
            return;
        };
        let frames = match split_messages(&data) {
            Ok(f) => f,
            Err(code) => return self.reject(id, code),
        };
        let mut messages = Vec::with_capacity(frames.len());
        for bytes in frames {
            match decode_guarded(|| Message::decode_v1(bytes)) {
                Some(m) => messages.push(m),
                None => return self.reject(id, ErrorCode::InvalidMessage),
            }
        }
        // Decode the updates and check the awareness updates up front, too.
        let mut decoded = Vec::with_capacity(messages.len());
        let mut awareness = Vec::new();
        // The client ids the connection would speak for after this frame, and those other
        // connections speak for (read when the frame has awareness).
        let mut claimed: Option<(HashSet<ClientID>, HashSet<ClientID>)> = None;
        for m in messages {
            match m {
                Message::Sync(SyncMessage::SyncStep2(u))
                | Message::Sync(SyncMessage::Update(u)) => {
                    match decode_guarded(|| Update::decode_v1(&u)) {
                        Some(update) => decoded.push(Step::Edit(u, update)),
                        None => return self.reject(id, ErrorCode::InvalidMessage),
                    }
                }
                Message::Sync(SyncMessage::SyncStep1(sv)) => decoded.push(Step::Sync(sv)),
                Message::Awareness(update) => {
                    let (claimed, others) = claimed.get_or_insert_with(|| {
                        let mine = self.conns.get(&id).map(|c| c.awareness_ids.clone());
                        (mine.unwrap_or_default(), self.ids_of_others(id))
                    });
                    if !self.awareness_acceptable(&update, claimed, others) {
                        return self.reject(id, ErrorCode::InvalidMessage);
                    }
                    awareness.push(update);
                }
                Message::AwarenessQuery => decoded.push(Step::AwarenessQuery),
                // Clients do not send auth messages; one is ignored.
                Message::Auth(_) => {}
                Message::Custom(..) => return self.reject(id, ErrorCode::UnknownType),
            }
        }
        // This frame's edits are `pending[first_of_frame..]` until stored.
        let first_of_frame = self.pending.len();
        for step in decoded {
            if !self.conns.contains_key(&id) {
                return;
            }
            match step {
                Step::Sync(sv) => {
                    // Answer from stored state only.
                    self.flush().await;
                    let update = self
                        .awareness
                        .doc()
                        .transact()
                        .encode_state_as_update_v1(&sv);
                    self.send_to(id, encode(&Message::Sync(SyncMessage::SyncStep2(update))));
                }
                Step::Edit(raw, update) => {
                    if access != DocAccess::Write {
                        if would_write(&self.awareness.doc().transact(), &update) {
                            self.manager
                                .metrics()
                                .dropped_read_only
                                .fetch_add(1, Ordering::Relaxed);
                            debug!("dropped an edit from a read-only participant");
                        }
                        continue;
                    }
                    if update.is_empty() {
                        continue;
                    }
                    let applied = self.awareness.doc().transact_mut().apply_update(update);
                    if applied.is_err() {
                        // The document may hold part of it: rebuild from the store plus the
                        // pending edits of earlier frames, and drop this connection. (Edits of
                        // this frame stored by a sync step earlier in it stay stored: a
                        // y-websocket client sends one message per frame.)
                        self.pending
                            .truncate(first_of_frame.min(self.pending.len()));
                        self.rollback_to_pending().await;
                        return self.reject(id, ErrorCode::InvalidMessage);
                    }
                    self.pending.push(Pending {
                        from: id,
                        update: raw,
                    });
                }
                Step::AwarenessQuery => {
                    if let Ok(update) = self.awareness.update() {
                        self.send_to(id, encode(&Message::Awareness(update)));
                    }
                }
            }
        }
        if let Some((_, others)) = claimed {
            for update in awareness {
                self.awareness_update(id, update, &others);
            }
        }
    }

    /// Whether a connection that speaks for the client ids `claimed` (other connections for
    /// `others`) may send `update`, which adds the ids it would take (see
    /// [`Self::awareness_update`]) to `claimed`: at most [`MAX_AWARENESS_IDS`] ids per
    /// connection, none of them the server's own, and every state JSON (or `null`, a removal). A
    /// state that is not JSON would make the stock JavaScript client throw while decoding the
    /// relayed message.
    fn awareness_acceptable(
        &self,
        update: &AwarenessUpdate,
        claimed: &mut HashSet<ClientID>,
        others: &HashSet<ClientID>,
    ) -> bool {
        if update.clients.contains_key(&self.awareness.client_id())
            || !update
                .clients
                .values()
                .all(|e| serde_json::from_str::<serde::de::IgnoredAny>(&e.json).is_ok())
        {
            return false;
        }
        claimed.extend(
            update
                .clients
                .iter()
                .filter(|(c, e)| &*e.json != "null" && !others.contains(c))
                .map(|(c, _)| *c),
        );
        claimed.len() <= MAX_AWARENESS_IDS
    }

    /// The awareness client ids other connections than `conn` speak for.
    fn ids_of_others(&self, conn: u64) -> HashSet<ClientID> {
        self.conns
            .iter()
            .filter(|(id, _)| **id != conn)
            .flat_map(|(_, c)| c.awareness_ids.iter().copied())
            .collect()
    }

    fn reject(&mut self, id: u64, code: ErrorCode) {
        self.manager
            .metrics()
            .rejected_messages
            .fetch_add(1, Ordering::Relaxed);
        debug!(
            code = code.as_str(),
            "closing a document connection for a bad message"
        );
        self.close(id, code);
    }

    /// Applies an awareness update (checked by [`Self::awareness_acceptable`] when its frame was
    /// decoded) and relays what it changed; `others` are the ids other connections speak for.
    ///
    /// The stock provider sends back every awareness change it sees, other clients' states
    /// included, so an update may carry ids of other connections: those entries are dropped
    /// (an echo changes nothing, and nobody may speak for another connection's client). A
    /// connection comes to speak for an id when it sends a state for it that no other connection
    /// speaks for, as the stock server does; those states are removed when it closes.
    fn awareness_update(
        &mut self,
        id: u64,
        mut update: AwarenessUpdate,
        others: &HashSet<ClientID>,
    ) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        update.clients.retain(|c, _| !others.contains(c));
        conn.awareness_ids.extend(
            update
                .clients
                .iter()
                .filter(|(_, e)| &*e.json != "null")
                .map(|(c, _)| *c),
        );
        let changed = match self.awareness.apply_update_summary(update.clone()) {
            Ok(Some(summary)) => summary,
            Ok(None) => return,
            Err(_) => return self.reject(id, ErrorCode::InvalidMessage),
        };
        update.clients.retain(|c, _| {
            changed.added.contains(c) || changed.updated.contains(c) || changed.removed.contains(c)
        });
        if !update.clients.is_empty() {
            self.broadcast(encode(&Message::Awareness(update)), Some(id));
        }
    }

    /// Rebuilds the document from the store and re-applies the pending edits (all of which
    /// applied before).
    async fn rollback_to_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if let Err(e) = self.load().await {
            warn!(error = %e.message, "reload after a failed edit failed");
            self.close_all(e.code);
            self.forget(e);
            return;
        }
        let mut txn_ok = true;
        {
            let doc = self.awareness.doc();
            let mut txn = doc.transact_mut();
            for p in &pending {
                let applied = Update::decode_v1(&p.update)
                    .ok()
                    .is_some_and(|u| txn.apply_update(u).is_ok());
                txn_ok &= applied;
            }
        }
        if txn_ok {
            self.pending = pending;
        } else {
            // Should not happen; start clean from the store and let everyone resync.
            let _ = self.load().await;
            self.close_all(ErrorCode::Internal);
        }
    }

    /// Appends the pending edits to the store in one write, then broadcasts them.
    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let updates: Vec<Vec<u8>> = pending.iter().map(|p| p.update.clone()).collect();
        let first = self.head + 1;
        let result = self
            .manager
            .store()
            .append(&self.case, &self.key, first, &updates)
            .await;
        if let Err(e) = result {
            warn!(error = %e, "storing document edits failed; reloading");
            // Nothing of `pending` was sent to anyone: close every connection at once (the
            // clients resend their unsaved edits when they reconnect), then drop the unstored
            // edits from memory by reloading. If the store cannot be read either, the document
            // is emptied and marked unloaded, so nothing that is not stored can be served from
            // memory; the next connection or version request loads it again.
            self.close_all(store_error(&e).code);
            if let Err(le) = self.load().await {
                self.forget(le);
            }
            return;
        }
        self.head += updates.len() as u64;
        let bytes: u64 = updates.iter().map(|u| u.len() as u64).sum();
        self.bytes_since_snapshot += bytes;
        let m = self.manager.metrics();
        m.updates_stored
            .fetch_add(updates.len() as u64, Ordering::Relaxed);
        m.update_bytes.fetch_add(bytes, Ordering::Relaxed);
        for (p, u) in pending.into_iter().zip(updates) {
            let msg = encode(&Message::Sync(SyncMessage::Update(u)));
            self.broadcast(msg, Some(p.from));
        }
    }

    /// Starts a background compaction when enough was appended since the last snapshot.
    fn maybe_compact(&mut self, done: &mpsc::Sender<(u64, u64, Result<(), StoreError>)>) {
        let since = self.head - self.snapshot_upto;
        if self.compacting || since == 0 {
            return;
        }
        if since < self.manager.snapshot_every() && self.bytes_since_snapshot < SNAPSHOT_BYTES {
            return;
        }
        self.compacting = true;
        let state = self.encode_state();
        let (upto, bytes) = (self.head, self.bytes_since_snapshot);
        let store = Arc::clone(self.manager.store());
        let (case, key, done) = (self.case.clone(), self.key.clone(), done.clone());
        tokio::spawn(async move {
            let r = store.snapshot(&case, &key, upto, &state).await;
            let _ = done.send((upto, bytes, r)).await;
        });
    }

    /// Applies a new policy to the open connections: revoked invites and lost access close the
    /// connection at once; a changed write grant takes effect on the next message.
    fn follow_policy(&mut self) {
        let policy = self.policy.borrow_and_update().clone();
        let mut closing = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            if policy.is_revoked(&c.jti) {
                closing.push((*id, ErrorCode::TokenRevoked));
                continue;
            }
            match policy.access(&c.participant, &self.name) {
                DocAccess::None => closing.push((*id, ErrorCode::Forbidden)),
                a => c.access = a,
            }
        }
        for (id, code) in closing {
            self.close(id, code);
        }
    }
}

/// Reads a lib0 variable-length unsigned integer at `*pos`.
fn read_var(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Skips a lib0 length-prefixed buffer at `*pos`.
fn skip_buf(data: &[u8], pos: &mut usize) -> Option<()> {
    let len = usize::try_from(read_var(data, pos)?).ok()?;
    let end = pos.checked_add(len)?;
    (end <= data.len()).then(|| *pos = end)
}

/// Yjs client ids are 53-bit (JavaScript's safe integers; the stock client draws 32-bit ones).
const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

/// Checks the client ids of an awareness message's payload (a length-prefixed buffer at the
/// start of `buf`: count, then per client: id, clock, state string): every one must fit in 53
/// bits. yrs asserts that while decoding (a panic in debug builds) and masks a larger id in
/// release builds, so such a message is refused before yrs sees it. The rest of the payload is
/// yrs's to check.
fn check_awareness_ids(buf: &[u8]) -> Option<()> {
    let mut pos = 0;
    let len = usize::try_from(read_var(buf, &mut pos)?).ok()?;
    let payload = buf.get(pos..pos.checked_add(len)?)?;
    let mut pos = 0;
    let count = read_var(payload, &mut pos)?;
    for _ in 0..count {
        if read_var(payload, &mut pos)? > MAX_CLIENT_ID {
            return None;
        }
        read_var(payload, &mut pos)?;
        skip_buf(payload, &mut pos)?;
    }
    Some(())
}

/// Decodes with a decoder that may panic on hostile input (yrs asserts some invariants of
/// decoded values only in debug builds); a panic counts as a decoding error.
fn decode_guarded<T>(decode: impl FnOnce() -> Result<T, yrs::encoding::read::Error>) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
        .ok()?
        .ok()
}

/// Splits a frame into its y-protocol messages, strictly: a truncated message, trailing bytes or
/// an empty frame is `invalid_message`, a message type the protocol does not have is
/// `unknown_type`. (yrs's own reader treats a truncated last message as the end of the frame,
/// which would apply the messages before it.)
pub fn split_messages(data: &[u8]) -> Result<Vec<&[u8]>, ErrorCode> {
    const SYNC: u64 = 0;
    const AWARENESS: u64 = 1;
    const AUTH: u64 = 2;
    const QUERY_AWARENESS: u64 = 3;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let start = pos;
        let invalid = ErrorCode::InvalidMessage;
        let kind = read_var(data, &mut pos).ok_or(invalid)?;
        match kind {
            SYNC => {
                let step = read_var(data, &mut pos).ok_or(invalid)?;
                if step > 2 {
                    return Err(invalid);
                }
                skip_buf(data, &mut pos).ok_or(invalid)?;
            }
            AWARENESS => {
                let start = pos;
                skip_buf(data, &mut pos).ok_or(invalid)?;
                check_awareness_ids(&data[start..pos]).ok_or(invalid)?;
            }
            AUTH => {
                if read_var(data, &mut pos).ok_or(invalid)? == 0 {
                    skip_buf(data, &mut pos).ok_or(invalid)?;
                }
            }
            QUERY_AWARENESS => {}
            _ => return Err(ErrorCode::UnknownType),
        }
        out.push(&data[start..pos]);
    }
    if out.is_empty() {
        return Err(ErrorCode::InvalidMessage);
    }
    Ok(out)
}

/// One decoded message of a frame.
enum Step {
    Sync(StateVector),
    Edit(Vec<u8>, Update),
    AwarenessQuery,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_strictly() {
        let update = Message::Sync(SyncMessage::Update(vec![0, 0])).encode_v1();
        let query = Message::AwarenessQuery.encode_v1();
        let mut two = update.clone();
        two.extend_from_slice(&query);
        assert_eq!(split_messages(&two).unwrap(), vec![&update[..], &query[..]]);
        let mut truncated = update.clone();
        truncated.extend_from_slice(&[0, 2, 200]);
        assert_eq!(split_messages(&truncated), Err(ErrorCode::InvalidMessage));
        for bad in [
            &[][..],
            &[0],
            &[0, 2],
            &[0, 2, 5, 1],
            &[0, 9, 0],
            &[1],
            &[0xff; 12],
        ] {
            assert_eq!(
                split_messages(bad),
                Err(ErrorCode::InvalidMessage),
                "{bad:?}"
            );
        }
        assert_eq!(split_messages(&[7, 0]), Err(ErrorCode::UnknownType));
        assert_eq!(split_messages(&[3]).unwrap().len(), 1);
    }

    fn push_var(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// An awareness message with one client's state `{}`, written by hand so that the client id
    /// can be anything.
    fn awareness(client: u64) -> Vec<u8> {
        let mut payload = vec![1];
        push_var(&mut payload, client);
        payload.extend([1, 2, b'{', b'}']);
        let mut bytes = vec![1];
        push_var(&mut bytes, payload.len() as u64);
        bytes.extend(payload);
        bytes
    }

    /// yrs asserts (debug builds only) that a decoded client id fits in 53 bits; a hostile
    /// update breaking that must be a decoding error, not a panic of the document task.
    #[test]
    fn a_panicking_decoder_is_a_decoding_error() {
        use yrs::Text;
        let doc = Doc::with_options(Options {
            client_id: ClientID::new(1),
            ..Options::default()
        });
        let text = doc.get_or_insert_text(TEXT);
        let update = {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "x");
            txn.encode_update_v1()
        };
        // [clients = 1, structs = 1, client = 1, clock = 0, ...]: put a 61-bit client id there.
        assert_eq!(update[..3], [1, 1, 1]);
        let mut hostile = update[..2].to_vec();
        push_var(&mut hostile, 1 << 60);
        hostile.extend_from_slice(&update[3..]);
        assert!(decode_guarded(|| Update::decode_v1(&update)).is_some());
        let decoded = decode_guarded(|| Update::decode_v1(&hostile));
        if cfg!(debug_assertions) {
            // yrs panics on it here (so the guard is what keeps the task alive) ...
            let unguarded = std::panic::catch_unwind(|| Update::decode_v1(&hostile));
            assert!(
                unguarded.is_err(),
                "yrs no longer panics on a 61-bit client id"
            );
            // ... and the guard turns that into a decoding error.
            assert!(decoded.is_none());
        }
    }

    #[test]
    fn awareness_client_ids_fit_in_53_bits() {
        for fits in [42, MAX_CLIENT_ID] {
            assert_eq!(split_messages(&awareness(fits)).unwrap().len(), 1);
            let Ok(Message::Awareness(u)) = Message::decode_v1(&awareness(fits)) else {
                panic!("yrs decodes it");
            };
            assert!(u.clients.contains_key(&ClientID::new(fits)));
        }
        // A truncated payload is caught too.
        assert_eq!(
            split_messages(&[1, 4, 1, 0x85, 0x01, 1]),
            Err(ErrorCode::InvalidMessage)
        );
        for big in [MAX_CLIENT_ID + 1, 1 << 60, u64::MAX] {
            assert_eq!(
                split_messages(&awareness(big)),
                Err(ErrorCode::InvalidMessage),
                "{big}"
            );
        }
    }
}
