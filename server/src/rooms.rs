//! The room manager: one task per active case, driving the signaling crate's [`Room`].
//!
//! Each case that has connections (or just got an admin command) is served by a *room task*
//! that owns the case's [`Room`] and the connections joined to it. All changes to a case go
//! through its task, one at a time, in this order: the room decides (drafts or a typed error),
//! the drafts are sealed into the hash chain, appended to the store, and only then applied,
//! acknowledged and fanned out. A failed append changes nothing and is reported as
//! `store_unavailable`; a conflicting one (someone else wrote the log) reloads the room from the
//! store and reports `conflict`, so the client can retry.
//!
//! # Batches
//!
//! A durable append costs an fsync (Redis's or the embedded store's), so a room that stored each
//! request on its own could acknowledge at most one request per append round trip, and would pay
//! the append's fixed cost (a script call, a group-commit entry) per request. When several
//! participant requests are queued for a room, the task therefore takes up to [`MAX_BATCH`] of
//! them at once and stores all their events with ONE append, with exactly the outcome they would
//! have had one after the other:
//!
//! * each request is checked against the room as the earlier requests of the batch left it. That
//!   is possible without storing them first because only *record-only* events (chat, notes:
//!   [`Room::is_record_only`]) are applied before the append; a request whose events change the
//!   state (admit, caucus, terms, ...) ends the batch, and its events are applied only once stored;
//! * a request refused by the room gets its typed error and adds nothing to the batch;
//! * if the append fails, the record-only events are taken back ([`Room::unapply_records`]), so the
//!   room is again the fold of the stored log, and every request of the batch that had events gets
//!   `store_unavailable` (or `conflict`, after a reload): none of them is acknowledged;
//! * once stored, the events are applied and fanned out, and the requests answered, in order, so
//!   every connection sees the same sequence of events, acks and errors as without batching.
//!
//! Media requests, joins, disconnects and admin commands are never part of a batch: they run
//! alone, in queue order, after the batch ahead of them.
//!
//! Connections receive [`Outbound`] messages through a bounded channel; a connection that cannot
//! keep up is dropped (its client resumes from the last seq it saw) rather than slowing the room.
//! A room task with no connections and no commands for [`IDLE_TIMEOUT`] exits; the manager
//! starts a fresh one, rebuilt from the store, when the case is next used.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn, Instrument};
use yuntiao_signaling::document::DocPolicy;
use yuntiao_signaling::event::CaseParticipant;
use yuntiao_signaling::protocol::{ErrorCode, MediaKind, ProtocolError, Request, ServerMessage};
use yuntiao_signaling::room::Effect;
use yuntiao_signaling::{Draft, Event, InviteClaims, Role, Room};

use crate::media::turn::TurnConfig;
use crate::media::{MediaHandle, MediaPlan, PeerKey};
use crate::store::{Store, StoreError, StoredEvent};

/// How long a room task with nothing to do stays in memory.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Queue of commands to one room task.
const ROOM_QUEUE: usize = 1024;
/// Most participant requests stored with one append (see "Batches" in the module docs).
pub const MAX_BATCH: usize = 64;

/// A message for one connection's writer.
#[derive(Debug)]
pub enum Outbound {
    /// A serialized [`ServerMessage`].
    Text(Utf8Bytes),
    /// Send a `closed` message with this reason, then close the websocket.
    Close {
        code: Option<ErrorCode>,
        message: String,
    },
}

/// What a connection tells the room when it joins.
pub struct ConnInfo {
    pub id: u64,
    /// The `id` of the join request, echoed in the welcome.
    pub request_id: Option<String>,
    pub outbox: mpsc::Sender<Outbound>,
}

/// The result of a successful join.
#[derive(Clone, Debug)]
pub struct Joined {
    pub participant: String,
    pub role: Role,
}

/// Admin commands, answered with JSON.
pub enum AdminCommand {
    Create {
        title: String,
        participants: Vec<CaseParticipant>,
    },
    IssueInvite {
        jti: String,
        participant: Option<String>,
        role: Role,
        name: String,
        expires_at: i64,
    },
    RevokeInvite {
        jti: String,
    },
    Record,
}

/// What an admin command produced.
pub enum AdminReply {
    Created {
        seq: u64,
        participants: Vec<CaseParticipant>,
    },
    InviteIssued {
        seq: u64,
        participant: String,
    },
    Revoked {
        seq: u64,
    },
    Record {
        title: String,
        events: Vec<Event>,
        roster: Vec<yuntiao_signaling::protocol::RosterEntry>,
    },
}

enum Command {
    Join {
        claims: InviteClaims,
        resume_from: u64,
        conn: ConnInfo,
        reply: oneshot::Sender<Result<Joined, ProtocolError>>,
    },
    Request {
        conn: u64,
        id: Option<String>,
        request: Request,
    },
    Disconnect {
        conn: u64,
    },
    Admin {
        command: AdminCommand,
        reply: oneshot::Sender<Result<AdminReply, ProtocolError>>,
    },
    /// Subscribe to the case's shared-document policy (see [`RoomManager::doc_policy`]).
    DocPolicy {
        reply: oneshot::Sender<Result<watch::Receiver<Arc<DocPolicy>>, ProtocolError>>,
    },
}

/// Routes commands to room tasks, starting them on demand.
#[derive(Clone)]
pub struct RoomManager {
    inner: Arc<ManagerInner>,
}

struct ManagerInner {
    store: Arc<dyn Store>,
    media: MediaHandle,
    turn: Option<TurnConfig>,
    rooms: Mutex<HashMap<String, mpsc::Sender<Command>>>,
    next_conn: AtomicU64,
    /// Per case, the shared-document policy, for as long as a document task follows it. Kept
    /// here rather than in the room task so that it outlives an idle room's eviction.
    doc_policies: Mutex<HashMap<String, watch::Sender<Arc<DocPolicy>>>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn internal(msg: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::Internal, msg)
}

impl RoomManager {
    pub fn new(store: Arc<dyn Store>, media: MediaHandle, turn: Option<TurnConfig>) -> RoomManager {
        RoomManager {
            inner: Arc::new(ManagerInner {
                store,
                media,
                turn,
                rooms: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
                doc_policies: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn media(&self) -> &MediaHandle {
        &self.inner.media
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.inner.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Number of room tasks in memory.
    pub fn active_rooms(&self) -> usize {
        self.inner.rooms.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Sends a command to the case's room task, starting one if needed. A task that is just
    /// shutting down refuses the command; then a new task is started and the command retried.
    async fn send(&self, case: &str, mut cmd: Command) -> Result<(), ProtocolError> {
        for _ in 0..3 {
            let tx = {
                let mut rooms = self
                    .inner
                    .rooms
                    .lock()
                    .map_err(|_| internal("room table poisoned"))?;
                match rooms.get(case) {
                    Some(tx) if !tx.is_closed() => tx.clone(),
                    _ => {
                        let (tx, rx) = mpsc::channel(ROOM_QUEUE);
                        rooms.insert(case.to_owned(), tx.clone());
                        let task = RoomTask::new(case.to_owned(), self.clone());
                        let span = tracing::info_span!("room", case = %case);
                        tokio::spawn(task.run(rx).instrument(span));
                        tx
                    }
                }
            };
            match tx.send(cmd).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(c)) => {
                    cmd = c;
                    if let Ok(mut rooms) = self.inner.rooms.lock() {
                        if rooms.get(case).is_some_and(|t| t.same_channel(&tx)) {
                            rooms.remove(case);
                        }
                    }
                }
            }
        }
        Err(internal("the room is restarting; try again"))
    }

    /// Joins a connection to its token's case. On success the room has already queued the
    /// welcome and any replay on the connection's outbox.
    pub async fn join(
        &self,
        claims: InviteClaims,
        resume_from: u64,
        conn: ConnInfo,
    ) -> Result<Joined, ProtocolError> {
        let (reply, rx) = oneshot::channel();
        let case = claims.case.clone();
        self.send(
            &case,
            Command::Join {
                claims,
                resume_from,
                conn,
                reply,
            },
        )
        .await?;
        rx.await.map_err(|_| internal("the room stopped"))?
    }

    /// Passes a joined connection's request to its room; the answer arrives on the outbox.
    pub async fn request(
        &self,
        case: &str,
        conn: u64,
        id: Option<String>,
        request: Request,
    ) -> Result<(), ProtocolError> {
        self.send(case, Command::Request { conn, id, request })
            .await
    }

    /// Tells the room a connection closed.
    pub async fn disconnect(&self, case: &str, conn: u64) {
        let _ = self.send(case, Command::Disconnect { conn }).await;
    }

    /// The case's shared-document policy, followed live: the room publishes a new one after
    /// every change that alters it. Loads the room if needed.
    pub async fn doc_policy(
        &self,
        case: &str,
    ) -> Result<watch::Receiver<Arc<DocPolicy>>, ProtocolError> {
        let (reply, rx) = oneshot::channel();
        self.send(case, Command::DocPolicy { reply }).await?;
        rx.await.map_err(|_| internal("the room stopped"))?
    }

    /// Runs an admin command on a case.
    pub async fn admin(
        &self,
        case: &str,
        command: AdminCommand,
    ) -> Result<AdminReply, ProtocolError> {
        let (reply, rx) = oneshot::channel();
        self.send(case, Command::Admin { command, reply }).await?;
        rx.await.map_err(|_| internal("the room stopped"))?
    }
}

struct Conn {
    participant: String,
    jti: String,
    outbox: mpsc::Sender<Outbound>,
    /// Highest seq this connection has been given (or skipped as not visible while admitted).
    cursor: u64,
}

struct RoomTask {
    case: String,
    manager: RoomManager,
    room: Room,
    /// Set when the stored log failed verification: the case is then served read-only-nothing.
    broken: Option<String>,
    conns: HashMap<u64, Conn>,
    /// The media plan last handed to the media plane.
    media_plan: MediaPlan,
    /// Microphones and cameras muted right now (participant, kind), so that whoever starts
    /// receiving someone later (after a caucus, on reconnect) learns it. Not part of the case
    /// record: it is a state of the call, not of the case.
    muted: std::collections::HashSet<(String, MediaKind)>,
    /// Commands taken off the queue while gathering a batch but not part of it; they run next,
    /// before anything still in the queue.
    backlog: VecDeque<Command>,
}

/// One participant request of a batch.
struct Queued {
    conn: u64,
    id: Option<String>,
    request: Request,
}

/// What a request of a batch produced, answered once the batch is stored (or failed).
struct Answer {
    conn: u64,
    id: Option<String>,
    /// Its sealed events (empty: nothing to store), or the room's refusal.
    result: Result<Vec<Event>, ProtocolError>,
    /// Whether its events were applied before the append (record-only events).
    applied: bool,
}

impl RoomTask {
    fn new(case: String, manager: RoomManager) -> RoomTask {
        RoomTask {
            case,
            manager,
            room: Room::new(),
            broken: None,
            conns: HashMap::new(),
            media_plan: MediaPlan::new(),
            muted: std::collections::HashSet::new(),
            backlog: VecDeque::new(),
        }
    }

    async fn load(&mut self) -> Result<(), ProtocolError> {
        let stored = self
            .manager
            .store()
            .read(&self.case, 0)
            .await
            .map_err(store_error)?;
        let mut events = Vec::with_capacity(stored.len());
        for s in stored {
            match Event::from_json(&s.data) {
                Ok(e) => events.push(e),
                Err(_) => {
                    self.broken = Some(format!("event {} is unreadable", s.seq));
                    return Ok(());
                }
            }
        }
        match Room::from_events(events) {
            Ok(room) => {
                self.room = room;
                self.broken = None;
            }
            Err(e) => {
                warn!(error = %e, "case record failed hash-chain verification");
                self.broken = Some(e.to_string());
            }
        }
        Ok(())
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut loaded = self.load().await;
        if let Err(e) = &loaded {
            warn!(error = %e.message, "could not load case");
        }
        loop {
            let cmd = if let Some(cmd) = self.backlog.pop_front() {
                cmd
            } else {
                match tokio::time::timeout(IDLE_TIMEOUT, rx.recv()).await {
                    Ok(Some(cmd)) => cmd,
                    Ok(None) => break,
                    Err(_) if self.conns.is_empty() => {
                        // Idle: stop taking commands, finish the queued ones, exit.
                        self.finish(&mut rx, &mut loaded).await;
                        break;
                    }
                    Err(_) => continue,
                }
            };
            self.dispatch(cmd, &mut loaded, &mut rx).await;
            // A case that does not exist and has nobody connected is not kept in memory.
            if !self.room.exists()
                && self.conns.is_empty()
                && rx.is_empty()
                && self.backlog.is_empty()
            {
                self.finish(&mut rx, &mut loaded).await;
                break;
            }
        }
        info!("room task stopped");
        // Only unregister our own (now closed) channel: a newer task may already serve the case.
        if let Ok(mut rooms) = self.manager.inner.rooms.lock() {
            if rooms.get(&self.case).is_some_and(|t| t.is_closed()) {
                rooms.remove(&self.case);
            }
        }
    }

    /// Stops taking commands and runs the ones already queued.
    async fn finish(
        &mut self,
        rx: &mut mpsc::Receiver<Command>,
        loaded: &mut Result<(), ProtocolError>,
    ) {
        rx.close();
        loop {
            let cmd = match self.backlog.pop_front() {
                Some(cmd) => cmd,
                None => match rx.try_recv() {
                    Ok(cmd) => cmd,
                    Err(_) => break,
                },
            };
            self.dispatch(cmd, loaded, rx).await;
        }
    }

    /// The next queued command, without waiting.
    fn next_queued(&mut self, rx: &mut mpsc::Receiver<Command>) -> Option<Command> {
        self.backlog.pop_front().or_else(|| rx.try_recv().ok())
    }

    async fn dispatch(
        &mut self,
        cmd: Command,
        loaded: &mut Result<(), ProtocolError>,
        rx: &mut mpsc::Receiver<Command>,
    ) {
        if loaded.is_err() {
            // The store was unreachable when the task started: try again now.
            *loaded = self.load().await;
        }
        let unavailable = match (&*loaded, &self.broken) {
            (Err(e), _) => Some(e.clone()),
            (Ok(()), Some(why)) => Some(ProtocolError::new(
                ErrorCode::Internal,
                format!("the case record failed verification ({why}); contact the administrator"),
            )),
            _ => None,
        };
        if let Some(e) = unavailable {
            match cmd {
                Command::Join { reply, .. } => {
                    let _ = reply.send(Err(e));
                }
                Command::Admin { reply, .. } => {
                    let _ = reply.send(Err(e));
                }
                Command::Request { conn, id, .. } => {
                    self.send_to(conn, ServerMessage::error(id, e))
                }
                Command::Disconnect { conn } => {
                    self.conns.remove(&conn);
                }
                Command::DocPolicy { reply } => {
                    let _ = reply.send(Err(e));
                }
            }
            return;
        }
        match cmd {
            Command::Join {
                claims,
                resume_from,
                conn,
                reply,
            } => {
                let r = self.join(claims, resume_from, conn).await;
                let _ = reply.send(r);
            }
            Command::Request { conn, id, request } if request.is_media() => {
                self.request(conn, id, request).await
            }
            Command::Request { conn, id, request } => {
                // Take the participant requests queued behind this one (see "Batches").
                let mut batch = vec![Queued { conn, id, request }];
                while batch.len() < MAX_BATCH {
                    match self.next_queued(rx) {
                        Some(Command::Request { conn, id, request }) if !request.is_media() => {
                            batch.push(Queued { conn, id, request })
                        }
                        Some(other) => {
                            self.backlog.push_front(other);
                            break;
                        }
                        None => break,
                    }
                }
                self.requests(batch).await;
            }
            Command::Disconnect { conn } => self.disconnect(conn).await,
            Command::Admin { command, reply } => {
                let r = self.admin(command).await;
                let _ = reply.send(r);
            }
            Command::DocPolicy { reply } => {
                let _ = reply.send(Ok(self.subscribe_doc_policy()));
            }
        }
    }

    /// Seals, stores, then applies drafts and delivers the events. Returns the last seq.
    async fn commit(&mut self, drafts: Vec<Draft>) -> Result<Option<u64>, ProtocolError> {
        if drafts.is_empty() {
            return Ok(None);
        }
        let events = self.room.seal(drafts, now_ms());
        let stored: Vec<StoredEvent> = events
            .iter()
            .map(|e| StoredEvent {
                seq: e.seq,
                data: e.to_json(),
            })
            .collect();
        if let Err(e) = self.manager.store().append(&self.case, &stored).await {
            return Err(self.append_failed(e).await);
        }
        let last = events.last().map(|e| e.seq);
        for e in events {
            self.apply(&e);
            self.deliver(&e).await;
        }
        self.push_media_plan().await;
        Ok(last)
    }

    /// What a stored append error means for the requests that were in it. A conflict (another
    /// writer moved the log) reloads the room from the store.
    async fn append_failed(&mut self, e: StoreError) -> ProtocolError {
        if let StoreError::Conflict { .. } = e {
            warn!("case log changed underneath this room; reloading");
            if let Err(le) = self.load().await {
                warn!(error = %le.message, "reload failed");
            }
            return ProtocolError::new(
                ErrorCode::Conflict,
                "the case changed meanwhile; please retry",
            );
        }
        store_error(e)
    }

    /// Carries out what a stored and applied event means: its effects and its fan-out.
    async fn deliver(&mut self, e: &Event) {
        // A participant who was just admitted is caught up (welcome, then every event up to
        // and including this one) before the ordinary fan-out, which then skips them.
        let (catch_up, others): (Vec<Effect>, Vec<Effect>) = self
            .room
            .effects(e)
            .into_iter()
            .partition(|f| matches!(f, Effect::CatchUp { .. }));
        for effect in catch_up {
            self.carry_out(effect).await;
        }
        self.fan_out(e);
        for effect in others {
            self.carry_out(effect).await;
        }
    }

    /// Handles a batch of participant requests with one store append (see "Batches" in the
    /// module docs). Requests behind one whose events change the state go back to the backlog.
    async fn requests(&mut self, batch: Vec<Queued>) {
        let base = self.room.events().len();
        let now = now_ms();
        let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
        let mut stored: Vec<StoredEvent> = Vec::new();
        let mut queue = batch.into_iter();
        for Queued { conn, id, request } in queue.by_ref() {
            let Some(participant) = self.conns.get(&conn).map(|c| c.participant.clone()) else {
                continue; // closed meanwhile (removed, revoked, too slow)
            };
            let events = match self.room.handle(&participant, &request) {
                Ok(drafts) => self.room.seal(drafts, now),
                Err(e) => {
                    answers.push(Answer {
                        conn,
                        id,
                        result: Err(e),
                        applied: false,
                    });
                    continue;
                }
            };
            stored.extend(events.iter().map(|e| StoredEvent {
                seq: e.seq,
                data: e.to_json(),
            }));
            let record_only = events.iter().all(Room::is_record_only);
            if record_only {
                // Applied now so the next request is checked against it; taken back if the
                // append fails.
                for e in &events {
                    self.room.apply(e.clone());
                }
            }
            answers.push(Answer {
                conn,
                id,
                result: Ok(events),
                applied: record_only,
            });
            if !record_only {
                break;
            }
        }
        // Requests behind a state change wait for the next batch, ahead of the queue.
        for rest in queue.rev() {
            self.backlog.push_front(Command::Request {
                conn: rest.conn,
                id: rest.id,
                request: rest.request,
            });
        }

        let failed = if stored.is_empty() {
            None
        } else {
            match self.manager.store().append(&self.case, &stored).await {
                Ok(()) => None,
                Err(e) => {
                    // Take back what was applied ahead, so the room is the fold of the stored
                    // log again (before a conflict's reload reads that log).
                    if !self.room.unapply_records(base) {
                        warn!("could not take back a failed batch; reloading");
                        if let Err(le) = self.load().await {
                            warn!(error = %le.message, "reload failed");
                        }
                    }
                    Some(self.append_failed(e).await)
                }
            }
        };

        for answer in answers {
            let Answer {
                conn,
                id,
                result,
                applied,
            } = answer;
            let events = match result {
                Ok(events) => events,
                Err(e) => {
                    self.send_to(conn, ServerMessage::error(id, e));
                    continue;
                }
            };
            if let (Some(e), false) = (&failed, events.is_empty()) {
                self.send_to(conn, ServerMessage::error(id, e.clone()));
                continue;
            }
            let seq = events.last().map(|e| e.seq);
            for e in events {
                if !applied {
                    self.apply(&e);
                }
                self.deliver(&e).await;
            }
            self.send_to(conn, ServerMessage::Ack { id, seq });
        }
        if failed.is_none() {
            self.push_media_plan().await;
        }
    }

    fn online(&self, participant: &str) -> bool {
        self.conns.values().any(|c| c.participant == participant)
    }

    /// Delivers an event to every connection whose participant may see it, serializing each
    /// distinct view once.
    fn fan_out(&mut self, e: &Event) {
        let mut full: Option<Utf8Bytes> = None;
        let mut redacted: Option<Utf8Bytes> = None;
        let mut dead = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            if self.room.participant(&c.participant).map(|p| p.status)
                != Some(yuntiao_signaling::room::ParticipantStatus::Admitted)
            {
                continue;
            }
            if c.cursor >= e.seq {
                continue;
            }
            c.cursor = e.seq;
            let Some(view) = self.room.view_for(&c.participant, e) else {
                continue;
            };
            let slot = match view {
                std::borrow::Cow::Borrowed(_) => &mut full,
                std::borrow::Cow::Owned(_) => &mut redacted,
            };
            let text = slot
                .get_or_insert_with(|| {
                    ServerMessage::Event {
                        event: view.into_owned(),
                    }
                    .to_json()
                    .into()
                })
                .clone();
            match c.outbox.try_send(Outbound::Text(text)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => dead.push((*id, true)),
                // Already closing (the connection's writer ended): just forget it.
                Err(mpsc::error::TrySendError::Closed(_)) => dead.push((*id, false)),
            }
        }
        for (id, slow) in dead {
            if slow {
                warn!(conn = id, "connection cannot keep up; dropping it");
            }
            self.conns.remove(&id);
        }
    }

    fn send_to(&mut self, conn: u64, msg: ServerMessage) {
        if let Some(c) = self.conns.get(&conn) {
            if c.outbox
                .try_send(Outbound::Text(msg.to_json().into()))
                .is_err()
            {
                self.conns.remove(&conn);
            }
        }
    }

    /// Sends `participant` everything after their cursor they may now see.
    fn catch_up(&mut self, conn: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let admitted = self.room.participant(&c.participant).map(|p| p.status)
            == Some(yuntiao_signaling::room::ParticipantStatus::Admitted);
        if !admitted {
            return;
        }
        let mut ok = true;
        for view in self.room.replay_for(&c.participant, c.cursor) {
            let msg = ServerMessage::Event {
                event: view.into_owned(),
            };
            if c.outbox
                .try_send(Outbound::Text(msg.to_json().into()))
                .is_err()
            {
                ok = false;
                break;
            }
        }
        c.cursor = self.room.head_seq();
        if !ok {
            warn!(conn, "connection cannot keep up with replay; dropping it");
            self.conns.remove(&conn);
        }
    }

    /// Applies a stored event to the room and publishes the document policy it leads to, before
    /// anyone hears of the event: a write grant is in force on the document connections by the
    /// time the grantee can act on it. (Events applied ahead by `requests` are record-only and
    /// change no policy.)
    fn apply(&mut self, e: &Event) {
        self.room.apply(e.clone());
        self.publish_doc_policy();
    }

    /// Publishes the shared-document policy to the document tasks following this case, if any
    /// and if it changed.
    fn publish_doc_policy(&self) {
        let Ok(policies) = self.manager.inner.doc_policies.lock() else {
            return;
        };
        if let Some(tx) = policies.get(&self.case) {
            let policy = self.room.doc_policy();
            tx.send_if_modified(|current| {
                if **current == policy {
                    false
                } else {
                    *current = Arc::new(policy);
                    true
                }
            });
        }
    }

    fn subscribe_doc_policy(&self) -> watch::Receiver<Arc<DocPolicy>> {
        let policy = self.room.doc_policy();
        let mut policies = self
            .manager
            .inner
            .doc_policies
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Drop the entries nobody follows any more.
        policies.retain(|_, tx| tx.receiver_count() > 0);
        match policies.get(&self.case) {
            Some(tx) => {
                tx.send_if_modified(|current| {
                    if **current == policy {
                        false
                    } else {
                        *current = Arc::new(policy);
                        true
                    }
                });
                tx.subscribe()
            }
            None => {
                let (tx, rx) = watch::channel(Arc::new(policy));
                policies.insert(self.case.clone(), tx);
                rx
            }
        }
    }

    /// Hands the media plan to the media plane if it changed.
    async fn push_media_plan(&mut self) {
        let plan = self.room.media_plan();
        if plan != self.media_plan {
            self.manager.media().plan(&self.case, plan.clone()).await;
            // Receivers who now receive someone new learn that one's mute state.
            let old = std::mem::replace(&mut self.media_plan, plan);
            let empty = std::collections::BTreeSet::new();
            let gained: Vec<(String, String)> = self
                .media_plan
                .iter()
                .flat_map(|(receiver, senders)| {
                    let before = old.get(receiver).unwrap_or(&empty);
                    senders
                        .difference(before)
                        .map(move |s| (receiver.clone(), s.clone()))
                })
                .collect();
            for (receiver, sender) in gained {
                let conns: Vec<u64> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.participant == receiver)
                    .map(|(id, _)| *id)
                    .collect();
                for conn in conns {
                    self.send_mute_states(conn, &sender);
                }
            }
        }
    }

    /// Tells one connection which of `sender`'s tracks are muted.
    fn send_mute_states(&mut self, conn: u64, sender: &str) {
        for kind in [MediaKind::Audio, MediaKind::Video] {
            if self.muted.contains(&(sender.to_owned(), kind)) {
                let msg = ServerMessage::Mute {
                    participant: sender.to_owned(),
                    kind,
                    muted: true,
                };
                self.send_to(conn, msg);
            }
        }
    }

    fn media_key(&self, participant: &str) -> PeerKey {
        PeerKey {
            case: self.case.clone(),
            participant: participant.to_owned(),
        }
    }

    async fn carry_out(&mut self, effect: Effect) {
        match effect {
            Effect::CatchUp { participant } => {
                let ids: Vec<u64> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.participant == participant)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    // Their roster changed completely: send a fresh welcome first.
                    if let Some(w) = self.room.welcome_for(&participant, |p| self.online(p)) {
                        self.send_to(
                            id,
                            ServerMessage::Welcome {
                                id: None,
                                welcome: w,
                            },
                        );
                    }
                    self.catch_up(id);
                }
            }
            Effect::Close {
                participant,
                code,
                message,
            } => {
                self.close_where(|c| c.participant == participant, code, &message);
                self.presence(&participant, false);
                // Their media stops at once, not when the socket notices.
                let key = self.media_key(&participant);
                self.manager.media().remove(key).await;
            }
            Effect::CloseInvite { jti } => {
                let closed: Vec<String> = self
                    .conns
                    .values()
                    .filter(|c| c.jti == jti)
                    .map(|c| c.participant.clone())
                    .collect();
                self.close_where(
                    |c| c.jti == jti,
                    Some(ErrorCode::TokenRevoked),
                    "this invite has been revoked",
                );
                for p in closed {
                    if !self.online(&p) {
                        self.presence(&p, false);
                        let key = self.media_key(&p);
                        self.manager.media().remove(key).await;
                    }
                }
            }
        }
    }

    fn close_where(
        &mut self,
        pred: impl Fn(&Conn) -> bool,
        code: Option<ErrorCode>,
        message: &str,
    ) {
        let ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| pred(c))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(c) = self.conns.remove(&id) {
                let _ = c.outbox.try_send(Outbound::Close {
                    code,
                    message: message.to_owned(),
                });
            }
        }
    }

    /// Tells everyone who may know about `participant` that their presence changed.
    fn presence(&mut self, participant: &str, online: bool) {
        let text: Utf8Bytes = ServerMessage::Presence {
            participant: participant.to_owned(),
            online,
        }
        .to_json()
        .into();
        let mut dead = Vec::new();
        for (id, c) in &self.conns {
            if c.participant == participant
                || !self.room.can_see_participant(&c.participant, participant)
            {
                continue;
            }
            if c.outbox.try_send(Outbound::Text(text.clone())).is_err() {
                dead.push(*id);
            }
        }
        for id in dead {
            self.conns.remove(&id);
        }
    }

    async fn join(
        &mut self,
        claims: InviteClaims,
        resume_from: u64,
        conn: ConnInfo,
    ) -> Result<Joined, ProtocolError> {
        let drafts = self.room.join(&claims)?;
        let participant = claims.sub.clone();
        let was_online = self.online(&participant);
        // Register the connection before committing, so effects of the join reach it, but park
        // its cursor so no event is delivered before the welcome; the replay after the welcome
        // then starts from the resume point.
        let resume_cursor = resume_from.min(self.room.head_seq());
        let request_id = conn.request_id;
        self.conns.insert(
            conn.id,
            Conn {
                participant: participant.clone(),
                jti: claims.jti.clone(),
                outbox: conn.outbox,
                cursor: u64::MAX,
            },
        );
        if let Err(e) = self.commit(drafts).await {
            self.conns.remove(&conn.id);
            return Err(e);
        }
        let Some(c) = self.conns.get_mut(&conn.id) else {
            return Err(internal("the connection closed while joining"));
        };
        c.cursor = resume_cursor;
        let role = self
            .room
            .participant(&participant)
            .map(|p| p.role)
            .ok_or_else(|| internal("participant missing after join"))?;
        if let Some(mut w) = self.room.welcome_for(&participant, |p| self.online(p)) {
            if let Some(turn) = &self.manager.inner.turn {
                w.ice_servers = vec![turn.credentials(&participant, now_ms() / 1000)];
            }
            self.send_to(
                conn.id,
                ServerMessage::Welcome {
                    id: request_id,
                    welcome: w,
                },
            );
        }
        // After a restart nobody's admission is new: the plan must still reach the media plane.
        self.push_media_plan().await;
        // A (re)connecting receiver learns the mute states of those it receives.
        let senders: Vec<String> = self
            .media_plan
            .get(&participant)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for sender in senders {
            self.send_mute_states(conn.id, &sender);
        }
        self.catch_up(conn.id);
        if !was_online {
            self.presence(&participant, true);
        }
        info!(participant = %participant, role = %role, "joined");
        Ok(Joined { participant, role })
    }

    /// A media request (never batched: it changes no event log, and the media plane must see
    /// the room as stored).
    async fn request(&mut self, conn: u64, id: Option<String>, request: Request) {
        let Some(participant) = self.conns.get(&conn).map(|c| c.participant.clone()) else {
            return; // closed meanwhile (removed, revoked, too slow)
        };
        let r = match self.room.handle(&participant, &request) {
            Ok(_) => {
                self.media_request(conn, &participant, id.clone(), request)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            self.send_to(conn, ServerMessage::error(id, e));
        }
    }

    /// Media requests: the room checked permission and admission; the media plane does the
    /// rest. Answers go to the requesting connection (the one that holds the peer connection).
    async fn media_request(
        &mut self,
        conn: u64,
        participant: &str,
        id: Option<String>,
        request: Request,
    ) -> Result<(), ProtocolError> {
        let key = self.media_key(participant);
        match request {
            Request::MediaOffer { sdp } => {
                let out = self
                    .conns
                    .get(&conn)
                    .map(|c| c.outbox.clone())
                    .ok_or_else(|| internal("connection gone"))?;
                self.push_media_plan().await;
                self.manager.media().offer(key, id, sdp, out).await?;
            }
            Request::MediaAnswer { sdp } => {
                self.manager.media().answer(key, sdp).await?;
                self.send_to(conn, ServerMessage::Ack { id, seq: None });
            }
            Request::MediaLayer { mid, quality } => {
                self.manager.media().layer(key, mid, quality).await?;
                self.send_to(conn, ServerMessage::Ack { id, seq: None });
            }
            Request::IceCandidate { candidate } => {
                // The server is ICE-lite: it answers the client's checks and never sends its
                // own, so client candidates are only checked for form, never used as targets.
                let line = candidate.trim().trim_start_matches("a=");
                if !line.is_empty() && str0m::Candidate::from_sdp_string(line).is_err() {
                    return Err(ProtocolError::new(
                        ErrorCode::InvalidMessage,
                        "not an ICE candidate",
                    ));
                }
                self.send_to(conn, ServerMessage::Ack { id, seq: None });
            }
            Request::Mute { kind, muted } => {
                if muted {
                    self.muted.insert((participant.to_owned(), kind));
                } else {
                    self.muted.remove(&(participant.to_owned(), kind));
                }
                let text: Utf8Bytes = ServerMessage::Mute {
                    participant: participant.to_owned(),
                    kind,
                    muted,
                }
                .to_json()
                .into();
                let targets: Vec<u64> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| self.room.media_allowed(participant, &c.participant))
                    .map(|(id, _)| *id)
                    .collect();
                for t in targets {
                    if let Some(c) = self.conns.get(&t) {
                        let _ = c.outbox.try_send(Outbound::Text(text.clone()));
                    }
                }
                self.send_to(conn, ServerMessage::Ack { id, seq: None });
            }
            _ => {}
        }
        Ok(())
    }

    async fn disconnect(&mut self, conn: u64) {
        if let Some(c) = self.conns.remove(&conn) {
            if !self.online(&c.participant) {
                self.presence(&c.participant, false);
                let key = self.media_key(&c.participant);
                self.manager.media().remove(key).await;
            }
        }
    }

    async fn admin(&mut self, command: AdminCommand) -> Result<AdminReply, ProtocolError> {
        match command {
            AdminCommand::Create {
                title,
                participants,
            } => {
                let drafts = self
                    .room
                    .create_case(&self.case, &title, participants.clone())?;
                let seq = self.commit(drafts).await?.unwrap_or(0);
                Ok(AdminReply::Created { seq, participants })
            }
            AdminCommand::IssueInvite {
                jti,
                participant,
                role,
                name,
                expires_at,
            } => {
                let participant = match participant {
                    Some(p) => p,
                    None => match self.room.find_participant(role, &name) {
                        Some(p) => p.to_owned(),
                        None => crate::ids::participant_id(),
                    },
                };
                let drafts = self
                    .room
                    .issue_invite(&jti, &participant, role, &name, expires_at)?;
                let seq = self.commit(drafts).await?.unwrap_or(0);
                Ok(AdminReply::InviteIssued { seq, participant })
            }
            AdminCommand::RevokeInvite { jti } => {
                let drafts = self.room.revoke_invite(&jti)?;
                let seq = self.commit(drafts).await?.unwrap_or(0);
                Ok(AdminReply::Revoked { seq })
            }
            AdminCommand::Record => {
                if !self.room.exists() {
                    return Err(ProtocolError::new(
                        ErrorCode::CaseNotFound,
                        "the case does not exist",
                    ));
                }
                let roster = self
                    .room
                    .participants()
                    .iter()
                    .map(|(id, p)| yuntiao_signaling::protocol::RosterEntry {
                        participant: id.clone(),
                        role: p.role,
                        name: p.name.clone(),
                        status: p.status,
                        online: self.online(id),
                    })
                    .collect();
                Ok(AdminReply::Record {
                    title: self.room.title().to_owned(),
                    events: self.room.events().to_vec(),
                    roster,
                })
            }
        }
    }
}

fn store_error(e: StoreError) -> ProtocolError {
    warn!(error = %e, "store error");
    ProtocolError::new(
        ErrorCode::StoreUnavailable,
        "the case store is unavailable; nothing was changed",
    )
}
