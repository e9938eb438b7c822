//! The signaling websocket (`/ws`): one per participant, protocol v1.
//!
//! A connection is two halves. The *reader* checks each frame (size, rate, JSON shape), handles
//! `join` and `ping` itself and passes every other request to the case's room task. The *writer*
//! drains the connection's outbox — fed by the reader (errors, pongs) and by the room task
//! (welcome, events, acks, presence) — onto the socket, so the room never waits on a slow client.
//! Before `join` nothing but `join` and `ping` is accepted.

use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::{debug, Instrument};
use yuntiao_signaling::document::DocName;
use yuntiao_signaling::protocol::{
    parse_client_message, DocVersion, ErrorCode, ProtocolError, Request, ServerMessage,
};

use crate::rooms::{ConnInfo, Outbound};
use crate::state::AppState;

/// Messages a connection's outbox holds before it counts as too slow.
pub const OUTBOX: usize = 1024;
/// Consecutive rate-limited messages after which the connection is closed.
const FLOOD_CLOSE_AFTER: u32 = 200;

/// A token bucket: `rate` messages per second sustained, `burst` at once.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn send_now(out: &mpsc::Sender<Outbound>, msg: ServerMessage) -> bool {
    out.try_send(Outbound::Text(msg.to_json().into())).is_ok()
}

/// Answers request `id` with a typed error.
fn refuse(
    out: &mpsc::Sender<Outbound>,
    id: Option<String>,
    code: ErrorCode,
    message: impl Into<String>,
) {
    send_now(
        out,
        ServerMessage::error(id, ProtocolError::new(code, message)),
    );
}

/// Serves one websocket until it closes.
pub async fn serve(socket: WebSocket, state: AppState) {
    let conn_id = state.rooms.next_conn_id();
    let span = tracing::info_span!(
        "ws",
        conn = conn_id,
        case = tracing::field::Empty,
        participant = tracing::field::Empty
    );
    serve_inner(socket, state, conn_id).instrument(span).await
}

async fn serve_inner(socket: WebSocket, state: AppState, conn_id: u64) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(OUTBOX);

    let mut writer = tokio::spawn(async move {
        while let Some(out) = out_rx.recv().await {
            match out {
                Outbound::Text(t) => {
                    if sink.send(Message::Text(t)).await.is_err() {
                        return;
                    }
                }
                Outbound::Close { code, message } => {
                    if let Some(code) = code {
                        let closed = ServerMessage::Closed {
                            code,
                            message: message.clone(),
                        };
                        let _ = sink.send(Message::Text(closed.to_json().into())).await;
                    }
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: if code.is_some() { 4000 } else { 1000 },
                            reason: Utf8Bytes::from(code.map_or("bye", |c| c.as_str())),
                        })))
                        .await;
                    return;
                }
            }
        }
        // The room dropped this connection (too slow): close so the client resumes.
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: 1008,
                reason: Utf8Bytes::from_static("too slow; resume"),
            })))
            .await;
    });

    let cfg = &state.config;
    let mut limiter = RateLimiter::new(cfg.rate_limit, cfg.rate_burst);
    let mut flood = 0u32;
    let mut joined: Option<(String, String)> = None; // (case, participant)
    let mut writer_done = false;

    loop {
        let frame = tokio::select! {
            f = stream.next() => f,
            _ = &mut writer => {
                writer_done = true;
                break;
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(b))) => {
                let e = if b.len() > cfg.max_frame_bytes {
                    ProtocolError::new(
                        ErrorCode::FrameTooLarge,
                        format!("frames are limited to {} bytes", cfg.max_frame_bytes),
                    )
                } else {
                    ProtocolError::new(
                        ErrorCode::MalformedJson,
                        "protocol v1 uses text frames with JSON",
                    )
                };
                send_now(&out_tx, ServerMessage::error(None, e));
                continue;
            }
            Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
        };
        if !limiter.allow(Instant::now()) {
            flood += 1;
            if flood >= FLOOD_CLOSE_AFTER {
                let _ = out_tx.try_send(Outbound::Close {
                    code: Some(ErrorCode::RateLimited),
                    message: "too many messages".into(),
                });
                // Let the writer send it, then drain until the client's Close (below).
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut writer).await;
                writer_done = true;
                break;
            }
            refuse(
                &out_tx,
                None,
                ErrorCode::RateLimited,
                "too many messages; this one was dropped",
            );
            continue;
        }
        flood = 0;
        if text.len() > cfg.max_frame_bytes {
            refuse(
                &out_tx,
                None,
                ErrorCode::FrameTooLarge,
                format!("frames are limited to {} bytes", cfg.max_frame_bytes),
            );
            continue;
        }
        let msg = match parse_client_message(text.as_str()) {
            Ok(m) => m,
            Err((id, e)) => {
                send_now(&out_tx, ServerMessage::error(id, e));
                continue;
            }
        };
        let id = msg.id;
        if let (Some(asked), Some((case, _))) = (&msg.case, &joined) {
            if asked != case {
                refuse(
                    &out_tx,
                    id,
                    ErrorCode::WrongCase,
                    "this connection joined another case",
                );
                continue;
            }
        }
        match (msg.request, &joined) {
            (Request::Ping {}, _) => {
                send_now(&out_tx, ServerMessage::Pong { id });
            }
            (Request::Join { .. }, Some(_)) => {
                refuse(
                    &out_tx,
                    id,
                    ErrorCode::AlreadyJoined,
                    "this connection has already joined",
                );
            }
            (Request::Join { token, resume_from }, None) => {
                let claims = match state.tokens.verify(&token) {
                    Ok(c) => c,
                    Err(e) => {
                        debug!(code = e.code.as_str(), "join refused");
                        send_now(&out_tx, ServerMessage::error(id, e));
                        continue;
                    }
                };
                if msg.case.as_deref().is_some_and(|c| c != claims.case) {
                    refuse(
                        &out_tx,
                        id,
                        ErrorCode::WrongCase,
                        "the invite is for another case",
                    );
                    continue;
                }
                let case = claims.case.clone();
                let conn = ConnInfo {
                    id: conn_id,
                    request_id: id.clone(),
                    outbox: out_tx.clone(),
                };
                match state
                    .rooms
                    .join(claims, resume_from.unwrap_or(0), conn)
                    .await
                {
                    Ok(j) => {
                        let span = tracing::Span::current();
                        span.record("case", case.as_str());
                        span.record("participant", j.participant.as_str());
                        joined = Some((case, j.participant));
                    }
                    Err(e) => {
                        debug!(code = e.code.as_str(), "join refused");
                        send_now(&out_tx, ServerMessage::error(id, e));
                    }
                }
            }
            (_, None) => {
                refuse(&out_tx, id, ErrorCode::NotJoined, "join first");
            }
            (mut request, Some((case, _))) => {
                // Terms taken from the agreement: read it now, so the room binds exactly this
                // text and state vector.
                if let Request::ProposeTerms {
                    document: Some(doc),
                    text,
                    version,
                } = &mut request
                {
                    if let (Some(name), true) = (DocName::parse(doc), text.is_empty()) {
                        match state.docs.version(&state.rooms, case, &name).await {
                            Ok(v) => {
                                *version = Some(DocVersion {
                                    text: v.text,
                                    state_vector: v.state_vector,
                                })
                            }
                            Err(e) => {
                                send_now(&out_tx, ServerMessage::error(id, e));
                                continue;
                            }
                        }
                    }
                }
                if let Err(e) = state
                    .rooms
                    .request(case, conn_id, id.clone(), request)
                    .await
                {
                    send_now(&out_tx, ServerMessage::error(id, e));
                }
            }
        }
    }
    if let Some((case, _)) = &joined {
        state.rooms.disconnect(case, conn_id).await;
    }
    if writer_done {
        // We closed (denied, removed, revoked, flooding, too slow): finish the closing handshake
        // by reading until the client's Close. Dropping the socket with unread frames in the
        // kernel's buffer would reset the connection and lose the `closed` message.
        let drain = async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
    }
    drop(out_tx);
    // Let the writer flush what is queued (it ends when the room drops its sender too).
    if !writer_done {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
    }
}
