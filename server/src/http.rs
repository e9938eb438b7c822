//! HTTP surface: health checks, the connection probe, the websocket upgrade and the admin API.
//!
//! The admin API (`/admin/...`) is guarded by the admin bearer token and answers JSON; its errors
//! use the same codes as the websocket protocol (`{"code": ..., "message": ...}`).
//! Invite links carry the token in the URL fragment (`/join#token=...`), so it never reaches
//! this server's logs nor a Referer header.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use yuntiao_signaling::document::DocName;
use yuntiao_signaling::event::{sha256_hex, verify_chain, CaseParticipant};
use yuntiao_signaling::protocol::{ErrorCode, ProtocolError, RosterEntry};
use yuntiao_signaling::{Event, InviteClaims, Role};

use crate::rooms::{AdminCommand, AdminReply};
use crate::state::AppState;

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let max = state.config.max_frame_bytes;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/probe", get(probe))
        .route("/metrics", get(crate::metrics::render))
        .route(
            "/ws",
            get(
                move |ws: WebSocketUpgrade, State(state): State<AppState>| async move {
                    // Frames a little over the limit get a typed `frame_too_large` error from the
                    // connection; grossly oversized ones are cut off by the websocket layer.
                    let hard = (max * 4).max(256 * 1024);
                    // Small buffers: an idle participant should cost a few KiB, not the 128 KiB
                    // tungstenite reserves by default. Messages are small; buffers grow on demand.
                    ws.max_message_size(hard)
                        .max_frame_size(hard)
                        .read_buffer_size(4 * 1024)
                        .write_buffer_size(0)
                        .on_upgrade(move |socket| crate::ws::serve(socket, state))
                },
            ),
        )
        .route("/docs/{case}/{doc}", get(crate::docs::ws::upgrade))
        .route("/admin/cases", post(create_case).get(list_cases))
        .route("/admin/cases/{case}", get(case_record))
        .route("/admin/cases/{case}/verify", get(verify_case))
        .route("/admin/cases/{case}/export", get(export_case))
        .route("/admin/cases/{case}/documents/{doc}", get(read_document))
        .route("/admin/cases/{case}/invites", post(mint_invite))
        .route("/admin/cases/{case}/invites/{jti}", delete(revoke_invite))
        .merge(crate::web::routes())
        .with_state(state)
}

/// An error answer of the admin API.
pub struct ApiError(StatusCode, ProtocolError);

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        let status = match e.code {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::CaseNotFound | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict | ErrorCode::CaseClosed => StatusCode::CONFLICT,
            ErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(status, e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"code": self.1.code, "message": self.1.message})),
        )
            .into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ProtocolError::new(ErrorCode::InvalidMessage, msg).into()
}

fn check_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !presented.is_empty() && crate::auth::admin_token_matches(&state.admin_token, presented) {
        Ok(())
    } else {
        Err(ProtocolError::new(ErrorCode::Unauthorized, "a valid admin token is required").into())
    }
}

/// Parses a JSON body ourselves so a bad one gets our error shape.
fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid request body: {e}")))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.rooms.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unreachable").into_response(),
    }
}

/// Largest answer of `GET /probe`, in bytes.
pub const PROBE_MAX_BYTES: usize = 256 * 1024;
/// Size of `GET /probe` without `bytes`.
pub const PROBE_DEFAULT_BYTES: usize = 64 * 1024;

/// The probe's payload: pseudo-random bytes (xorshift), made once, so that nothing on the way
/// can compress them and make a slow link look fast.
static PROBE_PAYLOAD: LazyLock<Bytes> = LazyLock::new(|| {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(PROBE_MAX_BYTES);
    while out.len() < PROBE_MAX_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(PROBE_MAX_BYTES);
    Bytes::from(out)
});

#[derive(Deserialize)]
struct ProbeQuery {
    bytes: Option<usize>,
}

/// `GET /probe?bytes=N`: N bytes (default 64 KiB, at most 256 KiB), never cached, for the web
/// client's device check to time a small download (docs/operations.md). No token: it reveals
/// nothing, and costs no more than the client's own script, which is served to anyone too.
async fn probe(Query(q): Query<ProbeQuery>) -> Response {
    let n = q.bytes.unwrap_or(PROBE_DEFAULT_BYTES).min(PROBE_MAX_BYTES);
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PROBE_PAYLOAD.slice(..n),
    )
        .into_response()
}

#[derive(Deserialize)]
struct NewParticipant {
    role: String,
    name: String,
}

#[derive(Deserialize)]
struct NewCase {
    title: String,
    /// The parties' display names and the assigned mediators and judges.
    #[serde(default)]
    participants: Vec<NewParticipant>,
}

fn parse_role(s: &str) -> Result<Role, ApiError> {
    Role::parse(s).ok_or_else(|| bad(format!("unknown role `{s}`")))
}

async fn create_case(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let req: NewCase = parse_body(&body)?;
    let mut participants = Vec::new();
    for p in req.participants {
        participants.push(CaseParticipant {
            participant: crate::ids::participant_id(),
            role: parse_role(&p.role)?,
            name: p.name,
        });
    }
    let case = crate::ids::case_id();
    let reply = state
        .rooms
        .admin(
            &case,
            AdminCommand::Create {
                title: req.title,
                participants,
            },
        )
        .await?;
    let AdminReply::Created { seq, participants } = reply else {
        return Err(ProtocolError::new(ErrorCode::Internal, "unexpected reply").into());
    };
    tracing::info!(case = %case, "case created");
    Ok((
        StatusCode::CREATED,
        Json(json!({"case": case, "seq": seq, "participants": participants})),
    )
        .into_response())
}

async fn list_cases(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let cases = state.rooms.store().list_cases().await.map_err(|_| {
        ProtocolError::new(ErrorCode::StoreUnavailable, "the case store is unavailable")
    })?;
    Ok(Json(json!({ "cases": cases })).into_response())
}

/// The case record as the room holds it: title, every event, the roster.
async fn record(
    state: &AppState,
    case: &str,
) -> Result<(String, Vec<Event>, Vec<RosterEntry>), ApiError> {
    match state.rooms.admin(case, AdminCommand::Record).await? {
        AdminReply::Record {
            title,
            events,
            roster,
        } => Ok((title, events, roster)),
        _ => Err(ProtocolError::new(ErrorCode::Internal, "unexpected reply").into()),
    }
}

async fn case_record(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(case): Path<String>,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let (title, events, roster) = record(&state, &case).await?;
    let head = events.last().map(|e| (e.seq, e.hash.clone()));
    Ok(Json(json!({
        "case": case,
        "title": title,
        "head_seq": head.as_ref().map_or(0, |h| h.0),
        "head_hash": head.map(|h| h.1),
        "participants": roster,
        "events": events,
    }))
    .into_response())
}

/// A shared document's current text, its hash and state vector.
async fn read_document(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((case, doc)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let name = DocName::parse(&doc)
        .ok_or_else(|| ProtocolError::new(ErrorCode::NotFound, "this case has no such document"))?;
    let v = state.docs.version(&state.rooms, &case, &name).await?;
    Ok(Json(json!({
        "case": case,
        "doc": name.as_string(),
        "text": v.text,
        "text_hash": sha256_hex(v.text.as_bytes()),
        "state_vector": v.state_vector,
        "head": v.head,
    }))
    .into_response())
}

/// The case record as one printable, self-contained HTML page (see [`crate::export`]).
async fn export_case(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(case): Path<String>,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let (title, events, roster) = record(&state, &case).await?;
    // Verify the log as stored, not the room's copy.
    let stored = state.rooms.store().read(&case, 0).await.map_err(|_| {
        ProtocolError::new(ErrorCode::StoreUnavailable, "the case store is unavailable")
    })?;
    let parsed: Result<Vec<Event>, String> = stored
        .iter()
        .map(|s| Event::from_json(&s.data).map_err(|_| format!("event {} is unreadable", s.seq)))
        .collect();
    let chain = parsed.and_then(|evs| verify_chain(&evs).map_err(|e| e.to_string()));
    let agreement = state
        .docs
        .version(&state.rooms, &case, &DocName::Agreement)
        .await
        .ok();
    let page = crate::export::render(&crate::export::ExportInput {
        case: &case,
        title: &title,
        events: &events,
        roster: &roster,
        chain,
        agreement,
        generated_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    });
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        page,
    )
        .into_response())
}

/// Verifies the hash chain of the log *as stored* (not the room's in-memory copy).
async fn verify_case(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(case): Path<String>,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let stored = state.rooms.store().read(&case, 0).await.map_err(|_| {
        ProtocolError::new(ErrorCode::StoreUnavailable, "the case store is unavailable")
    })?;
    if stored.is_empty() {
        return Err(ProtocolError::new(ErrorCode::CaseNotFound, "the case does not exist").into());
    }
    let mut events = Vec::with_capacity(stored.len());
    for s in &stored {
        match Event::from_json(&s.data) {
            Ok(e) if e.seq == s.seq => events.push(e),
            _ => {
                return Ok(Json(json!({
                    "case": case, "ok": false, "events": stored.len(),
                    "error": {"problem": "unreadable", "seq": s.seq},
                }))
                .into_response())
            }
        }
    }
    Ok(match verify_chain(&events) {
        Ok(head) => {
            Json(json!({"case": case, "ok": true, "events": events.len(), "head_hash": head}))
        }
        Err(e) => Json(json!({"case": case, "ok": false, "events": events.len(), "error": e})),
    }
    .into_response())
}

/// `ttl` as seconds or as a duration string such as "30m", "24h", "7d".
#[derive(Deserialize)]
#[serde(untagged)]
enum Ttl {
    Seconds(u64),
    Text(String),
}

#[derive(Deserialize)]
struct NewInvite {
    role: String,
    name: String,
    #[serde(default)]
    ttl: Option<Ttl>,
    /// Re-issue a link for this existing participant.
    #[serde(default)]
    participant: Option<String>,
}

/// Longest invite lifetime accepted.
const MAX_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

async fn mint_invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(case): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let req: NewInvite = parse_body(&body)?;
    let role = parse_role(&req.role)?;
    let ttl = match req.ttl {
        None => state.config.default_invite_ttl,
        Some(Ttl::Seconds(s)) => Duration::from_secs(s),
        Some(Ttl::Text(t)) => humantime::parse_duration(&t)
            .map_err(|_| bad("`ttl` must be seconds or a duration such as 24h"))?,
    };
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(bad("`ttl` must be between 1 second and 90 days"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let expires_at = now + ttl.as_secs() as i64;
    let jti = crate::ids::invite_id();
    let AdminReply::InviteIssued { seq, participant } = state
        .rooms
        .admin(
            &case,
            AdminCommand::IssueInvite {
                jti: jti.clone(),
                participant: req.participant,
                role,
                name: req.name.clone(),
                expires_at,
            },
        )
        .await?
    else {
        return Err(ProtocolError::new(ErrorCode::Internal, "unexpected reply").into());
    };
    let claims = InviteClaims {
        iss: state.tokens.issuer().to_owned(),
        aud: state.tokens.audience().to_owned(),
        sub: participant.clone(),
        case: case.clone(),
        role: role.as_str().to_owned(),
        name: req.name,
        exp: expires_at,
        nbf: now,
        iat: now,
        jti: jti.clone(),
    };
    let token = state.tokens.mint(&claims)?;
    let url = format!("{}/join#token={}", state.config.public_url, token);
    tracing::info!(case = %case, participant = %participant, role = %role, "invite issued");
    let expires = UNIX_EPOCH + Duration::from_secs(expires_at as u64);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "url": url,
            "expires_at": humantime::format_rfc3339_seconds(expires).to_string(),
            "expires_at_unix": expires_at,
            "jti": jti,
            "participant": participant,
            "seq": seq,
        })),
    )
        .into_response())
}

async fn revoke_invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((case, jti)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let AdminReply::Revoked { seq } = state
        .rooms
        .admin(&case, AdminCommand::RevokeInvite { jti: jti.clone() })
        .await?
    else {
        return Err(ProtocolError::new(ErrorCode::Internal, "unexpected reply").into());
    };
    tracing::info!(case = %case, "invite revoked");
    Ok(Json(json!({"revoked": jti, "seq": seq})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn probe_len(bytes: Option<usize>) -> (usize, Option<String>) {
        let r = probe(Query(ProbeQuery { bytes })).await;
        let cache = r
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (body.len(), cache)
    }

    #[tokio::test]
    async fn probe_answers_the_size_asked_capped_and_uncached() {
        assert_eq!(probe_len(Some(1000)).await.0, 1000);
        assert_eq!(probe_len(None).await.0, PROBE_DEFAULT_BYTES);
        assert_eq!(probe_len(Some(10 << 20)).await.0, PROBE_MAX_BYTES);
        assert_eq!(probe_len(Some(0)).await.0, 0);
        assert_eq!(probe_len(Some(5)).await.1.as_deref(), Some("no-store"));
    }

    #[test]
    fn probe_payload_does_not_compress() {
        // No byte value dominates: a run of equal bytes would compress to nothing.
        let mut counts = [0usize; 256];
        for b in PROBE_PAYLOAD.iter() {
            counts[*b as usize] += 1;
        }
        let max = *counts.iter().max().unwrap();
        assert!(
            max < PROBE_MAX_BYTES / 128,
            "most common byte occurs {max} times"
        );
    }
}
