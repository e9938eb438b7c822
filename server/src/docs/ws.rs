//! The document websocket, `/docs/{case}/{doc}?token=<invite token>`: the y-websocket protocol.
//!
//! The stock `y-websocket` provider connects to `<server url>/<room name>?<params>`, so a client
//! opens `new WebsocketProvider(origin + "/docs/" + caseId, docName, ydoc, { params: { token } })`
//! and needs nothing else. The token travels in the query string because browsers cannot set
//! headers on a websocket; this server never logs request URIs (and a reverse proxy in front of
//! it must not either; docs/operations.md).
//!
//! Authentication happens after the upgrade, so that a refusal reaches the browser as a close
//! code and reason (a failed upgrade is invisible to scripts): the token is verified like a
//! signaling `join` (signature, algorithm, expiry, audience, issuer, revocation, the case
//! record), then the room's document policy decides whether this participant may open the
//! document. Every refusal closes with [`super::close_code`] and the error code as the reason.
//!
//! The reader enforces the frame limit (`--doc-max-frame-bytes`, close 1009) and a token-bucket
//! rate limit (`--doc-rate-limit`, close 4429: dropping an edit silently would lose it, a closed
//! connection resyncs); text frames are refused (`invalid_message`). Everything else is the
//! document task's job.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::{debug, Instrument};
use yuntiao_signaling::document::DocName;
use yuntiao_signaling::protocol::{ErrorCode, ProtocolError};

use super::close_code;
use super::task::{DocCommand, DocConn, DocOut, DOC_OUTBOX};
use crate::state::AppState;
use crate::ws::RateLimiter;

/// Bytes gathered before the websocket writes to the socket (a burst is flushed at its end).
const WRITE_BUFFER: usize = 64 * 1024;
/// Messages written as one burst at most.
const WRITE_BURST: usize = 256;

/// `GET /docs/{case}/{doc}`: upgrades, then authenticates.
pub async fn upgrade(
    ws: WebSocketUpgrade,
    Path((case, doc)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    State(state): State<AppState>,
) -> Response {
    let max = state.config.doc_max_frame_bytes;
    let token = query.get("token").cloned();
    // The websocket layer cuts off grossly oversized messages; the reader reports the rest.
    let hard = max.saturating_mul(2).max(256 * 1024);
    ws.max_message_size(hard)
        .max_frame_size(hard)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| {
            let conn = state.docs.next_conn_id();
            let span = tracing::info_span!("docws", conn, case = %short(&case), doc = %short(&doc));
            serve(socket, state, case, doc, token, conn).instrument(span)
        })
}

/// At most 64 characters of a path segment, for logs.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

fn close_frame(code: ErrorCode) -> Message {
    Message::Close(Some(CloseFrame {
        code: close_code(code),
        reason: Utf8Bytes::from(code.as_str()),
    }))
}

/// Everything that must hold before a connection may open the document.
async fn authenticate(
    state: &AppState,
    case: &str,
    doc: &str,
    token: Option<&str>,
) -> Result<
    (
        DocName,
        yuntiao_signaling::InviteClaims,
        tokio::sync::watch::Receiver<std::sync::Arc<yuntiao_signaling::document::DocPolicy>>,
    ),
    ProtocolError,
> {
    let name = DocName::parse(doc)
        .ok_or_else(|| ProtocolError::new(ErrorCode::NotFound, "this case has no such document"))?;
    let token = token.ok_or_else(|| {
        ProtocolError::new(
            ErrorCode::TokenMalformed,
            "the invite token is missing (`?token=`)",
        )
    })?;
    let claims = state.tokens.verify(token)?;
    if claims.case != case {
        return Err(ProtocolError::new(
            ErrorCode::WrongCase,
            "the invite is for another case",
        ));
    }
    let policy = state.rooms.doc_policy(case).await?;
    {
        let p = policy.borrow();
        p.check_exists(&name)?;
        p.check_invite(&claims.jti, &claims.sub)?;
    }
    Ok((name, claims, policy))
}

async fn serve(
    socket: WebSocket,
    state: AppState,
    case: String,
    doc: String,
    token: Option<String>,
    conn_id: u64,
) {
    let (mut sink, mut stream) = socket.split();
    let (name, claims, policy) = match authenticate(&state, &case, &doc, token.as_deref()).await {
        Ok(ok) => ok,
        Err(e) => {
            debug!(code = e.code.as_str(), "document connection refused");
            let _ = sink.send(close_frame(e.code)).await;
            drain(&mut stream).await;
            return;
        }
    };
    let metrics = std::sync::Arc::clone(state.docs.metrics());
    metrics.connections.fetch_add(1, Ordering::Relaxed);
    let (out_tx, mut out_rx) = mpsc::channel::<DocOut>(DOC_OUTBOX);
    // Writes what is queued as one burst: every message is fed to the websocket's write
    // buffer, then flushed once, so a burst of updates costs one system call, not one each.
    let mut writer = tokio::spawn(async move {
        while let Some(first) = out_rx.recv().await {
            let mut next = Some(first);
            let mut fed = 0;
            while let Some(out) = next.take() {
                match out {
                    DocOut::Binary(b) => {
                        if sink.feed(Message::Binary(b)).await.is_err() {
                            return;
                        }
                    }
                    DocOut::Close(code) => {
                        let _ = sink.send(close_frame(code)).await;
                        return;
                    }
                }
                fed += 1;
                if fed < WRITE_BURST {
                    next = out_rx.try_recv().ok();
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let conn = DocConn {
        id: conn_id,
        participant: claims.sub.clone(),
        jti: claims.jti.clone(),
        outbox: out_tx.clone(),
    };
    let connected = state.docs.connect(&case, &name, &policy, conn).await;
    if let Err(e) = connected {
        debug!(code = e.code.as_str(), "document connection refused");
        let _ = out_tx.send(DocOut::Close(e.code)).await;
        drop(out_tx);
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
        drain(&mut stream).await;
        metrics.connections.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let cfg = &state.config;
    let mut limiter = RateLimiter::new(cfg.doc_rate_limit, cfg.doc_rate_burst);
    let mut closed_by_us = false;
    loop {
        let frame = tokio::select! {
            f = stream.next() => f,
            _ = &mut writer => {
                closed_by_us = true;
                break;
            }
        };
        let refusal = match frame {
            Some(Ok(Message::Binary(data))) => {
                if data.len() > cfg.doc_max_frame_bytes {
                    Some(ErrorCode::FrameTooLarge)
                } else if !limiter.allow(Instant::now()) {
                    Some(ErrorCode::RateLimited)
                } else {
                    let cmd = DocCommand::Frame {
                        conn: conn_id,
                        data,
                    };
                    if state.docs.send(&case, &name, &policy, cmd).await.is_err() {
                        Some(ErrorCode::Internal)
                    } else {
                        None
                    }
                }
            }
            Some(Ok(Message::Text(_))) => Some(ErrorCode::InvalidMessage),
            Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => None,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
        };
        if let Some(code) = refusal {
            if code != ErrorCode::Internal {
                metrics.rejected_messages.fetch_add(1, Ordering::Relaxed);
            }
            let _ = out_tx.try_send(DocOut::Close(code));
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
            closed_by_us = true;
            break;
        }
    }
    state
        .docs
        .notify(&case, &name, DocCommand::Disconnect { conn: conn_id })
        .await;
    drop(out_tx);
    if closed_by_us {
        drain(&mut stream).await;
    } else {
        writer.abort();
    }
    metrics.connections.fetch_sub(1, Ordering::Relaxed);
}

/// After we sent a Close: read until the client's Close (bounded), so the close handshake
/// completes and the kernel does not reset the connection with our last frames unread.
async fn drain(stream: &mut futures_util::stream::SplitStream<WebSocket>) {
    let wait = async {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
}
