//! Signaling protocol v1: the JSON messages exchanged over `/ws`, and the error codes.
//!
//! Every client message is a JSON object with a `type`, an optional request `id` (echoed in the
//! `ack` or `error` that answers it) and an optional `case` (if present it must name the case the
//! connection joined, a guard against a client acting on the wrong case). docs/protocol.md
//! documents each message and each [`ErrorCode`]; the web client's types are generated from these
//! definitions.
//!
//! Parsing is done in steps ([`parse_client_message`]) so that each kind of bad input gets its own
//! code: not JSON, not an object / no `type`, an unknown `type`, then missing or ill-typed fields.

use serde::{Deserialize, Serialize};

use crate::event::{ConsentKind, Event, NoteScope, Outcome};
use crate::role::{Action, Role};

/// Version of this protocol, sent in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every error the server reports, on the websocket and in the admin API.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON, or is a binary frame. (A text frame that is not UTF-8
    /// violates the websocket protocol itself and closes the connection.)
    MalformedJson,
    /// JSON, but not a message: not an object, no `type`, missing or ill-typed fields.
    InvalidMessage,
    /// A `type` this protocol does not have.
    UnknownType,
    /// The frame is larger than the configured limit.
    FrameTooLarge,
    /// Too many messages on this connection; the message was dropped.
    RateLimited,
    /// A message other than `join` or `ping` before a successful `join`.
    NotJoined,
    /// A second `join` on a connection that already joined.
    AlreadyJoined,
    /// The message names a case other than the one this connection joined.
    WrongCase,
    /// The participant's role may not do this.
    Forbidden,
    /// The participant is still in the lobby and may not do this yet.
    NotAdmitted,
    /// The participant, caucus or terms named do not exist in this case.
    NotFound,
    /// The request does not fit the case's current state (e.g. terms already decided).
    Conflict,
    /// The outcome has been recorded; terms can no longer change.
    CaseClosed,
    /// The token is not a well-formed JWT.
    TokenMalformed,
    /// The token's signature does not verify.
    TokenSignature,
    /// The token uses another algorithm than the one the server pins (including `none`).
    TokenAlgorithm,
    /// The token has expired.
    TokenExpired,
    /// The token is not valid yet (`nbf` in the future).
    TokenNotYetValid,
    /// The token was issued for another audience.
    TokenAudience,
    /// The token was issued by another issuer.
    TokenIssuer,
    /// The invite was revoked.
    TokenRevoked,
    /// The token was signed with our key but was never issued for this case.
    TokenUnknown,
    /// The token names a role that does not exist.
    TokenRole,
    /// The token's case does not exist.
    CaseNotFound,
    /// A mediator denied this participant entry.
    Denied,
    /// A mediator removed this participant.
    Removed,
    /// Missing or wrong admin credentials (admin API).
    Unauthorized,
    /// The store could not be reached; nothing was changed.
    StoreUnavailable,
    /// An unexpected server-side failure; nothing was changed.
    Internal,
}

/// Every error code, for documentation checks and tests.
pub const ALL_ERROR_CODES: [ErrorCode; 29] = [
    ErrorCode::MalformedJson,
    ErrorCode::InvalidMessage,
    ErrorCode::UnknownType,
    ErrorCode::FrameTooLarge,
    ErrorCode::RateLimited,
    ErrorCode::NotJoined,
    ErrorCode::AlreadyJoined,
    ErrorCode::WrongCase,
    ErrorCode::Forbidden,
    ErrorCode::NotAdmitted,
    ErrorCode::NotFound,
    ErrorCode::Conflict,
    ErrorCode::CaseClosed,
    ErrorCode::TokenMalformed,
    ErrorCode::TokenSignature,
    ErrorCode::TokenAlgorithm,
    ErrorCode::TokenExpired,
    ErrorCode::TokenNotYetValid,
    ErrorCode::TokenAudience,
    ErrorCode::TokenIssuer,
    ErrorCode::TokenRevoked,
    ErrorCode::TokenUnknown,
    ErrorCode::TokenRole,
    ErrorCode::CaseNotFound,
    ErrorCode::Denied,
    ErrorCode::Removed,
    ErrorCode::Unauthorized,
    ErrorCode::StoreUnavailable,
    ErrorCode::Internal,
];

impl ErrorCode {
    /// The wire name (the same string serde writes).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::WrongCase => "wrong_case",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotAdmitted => "not_admitted",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::CaseClosed => "case_closed",
            ErrorCode::TokenMalformed => "token_malformed",
            ErrorCode::TokenSignature => "token_signature",
            ErrorCode::TokenAlgorithm => "token_algorithm",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenNotYetValid => "token_not_yet_valid",
            ErrorCode::TokenAudience => "token_audience",
            ErrorCode::TokenIssuer => "token_issuer",
            ErrorCode::TokenRevoked => "token_revoked",
            ErrorCode::TokenUnknown => "token_unknown",
            ErrorCode::TokenRole => "token_role",
            ErrorCode::CaseNotFound => "case_not_found",
            ErrorCode::Denied => "denied",
            ErrorCode::Removed => "removed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A typed error: a code and a human-readable message (never containing a token).
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
        }
    }
}

/// A client message: the envelope fields plus the request itself.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientMessage {
    /// Request id chosen by the client, echoed in the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub id: Option<String>,
    /// If present, must equal the joined case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub case: Option<String>,
    #[serde(flatten)]
    pub request: Request,
}

/// What a client can ask for.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Join the case named by the invite token. `resume_from`: the last event `seq` this client
    /// saw; events after it that the participant may see are replayed before live ones.
    Join {
        token: String,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        resume_from: Option<u64>,
    },
    Ping {},
    Chat {
        text: String,
    },
    Admit {
        participant: String,
    },
    Deny {
        participant: String,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        reason: Option<String>,
    },
    Remove {
        participant: String,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        reason: Option<String>,
    },
    Leave {},
    /// Start a caucus of the sender and `members`.
    CaucusStart {
        members: Vec<String>,
    },
    CaucusEnd {
        caucus: String,
    },
    Note {
        text: String,
        scope: NoteScope,
    },
    /// Put terms to the parties: either `text`, or the current text of shared document
    /// `document` (`agreement`), which the server reads at that moment and binds, with the
    /// document's state vector, to the terms.
    ProposeTerms {
        #[serde(default)]
        #[cfg_attr(test, ts(as = "Option<String>", optional))]
        text: String,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        document: Option<String>,
        /// Filled by the server from the document (never read from the client).
        #[serde(skip)]
        version: Option<DocVersion>,
    },
    /// Accept (sign) terms. The signature (`terms_accepted`) always binds the SHA-256 of the
    /// terms' text, which the server computes from its own copy: the text of `terms_proposed`,
    /// the text every party's screen shows for these terms. `text_hash`, when given, is the
    /// client's own SHA-256 (64 lowercase hex digits) of the text on its screen: malformed is
    /// `invalid_message`, different is `conflict`, and nothing is recorded.
    AcceptTerms {
        terms: String,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        text_hash: Option<String>,
    },
    RejectTerms {
        terms: String,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        reason: Option<String>,
    },
    ConfirmTerms {
        terms: String,
    },
    RecordOutcome {
        outcome: Outcome,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        reason: Option<String>,
    },
    Consent {
        kind: ConsentKind,
        given: bool,
    },
    /// SDP offer for this participant's one peer connection with the server (first offer or a
    /// renegotiation by the client). Answered by `media_answer`.
    MediaOffer {
        sdp: String,
    },
    /// SDP answer to a `media_offer` the server sent (server-side renegotiation).
    MediaAnswer {
        sdp: String,
    },
    /// A trickled ICE candidate of the client (`a=candidate` value, with or without the prefix).
    IceCandidate {
        candidate: String,
    },
    /// The participant muted or unmuted their microphone or camera.
    Mute {
        kind: MediaKind,
        muted: bool,
    },
    /// Which simulcast layer the server should send on one of this participant's received video
    /// lines (`mid`, as in `media_tracks`): an upper bound; the server sends the best layer the
    /// publisher is sending that is not above it. Default `high`.
    MediaLayer {
        mid: String,
        quality: LayerQuality,
    },
    /// Let `participant` edit shared document `doc` (`write: true`) or make it read-only for
    /// them again (`write: false`). Only the agreement draft's access can be changed.
    DocPermission {
        doc: String,
        participant: String,
        write: bool,
    },
}

/// A shared document's text at one moment, as the server read it for `propose_terms`.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocVersion {
    pub text: String,
    /// The document's state vector (Yjs v1 encoding), base64: which edits the text includes.
    pub state_vector: String,
}

/// Audio or video.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Audio,
    Video,
}

/// A simulcast layer, by quality: the publisher's best, middle and smallest encoding (with two
/// layers, `medium` is the smaller one).
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerQuality {
    High,
    Medium,
    Low,
}

/// The `type` names of [`Request`], for telling an unknown type from a malformed known one.
pub const REQUEST_TYPES: [&str; 22] = [
    "join",
    "ping",
    "chat",
    "admit",
    "deny",
    "remove",
    "leave",
    "caucus_start",
    "caucus_end",
    "note",
    "propose_terms",
    "accept_terms",
    "reject_terms",
    "confirm_terms",
    "record_outcome",
    "consent",
    "media_offer",
    "media_answer",
    "ice_candidate",
    "mute",
    "media_layer",
    "doc_permission",
];

impl Request {
    /// The permission this request needs, if any.
    pub fn action(&self) -> Option<Action> {
        use Request::*;
        match self {
            Join { .. } | Ping {} | Leave {} => None,
            Chat { .. } => Some(Action::Chat),
            Admit { .. } | Deny { .. } | Remove { .. } => Some(Action::ManageParticipants),
            CaucusStart { .. } | CaucusEnd { .. } => Some(Action::Caucus),
            Note { .. } => Some(Action::WriteNotes),
            ProposeTerms { .. } => Some(Action::ProposeTerms),
            AcceptTerms { .. } | RejectTerms { .. } => Some(Action::DecideTerms),
            ConfirmTerms { .. } => Some(Action::ConfirmTerms),
            RecordOutcome { .. } => Some(Action::RecordOutcome),
            Consent { .. } => Some(Action::Consent),
            DocPermission { .. } => Some(Action::ManageDocuments),
            MediaOffer { .. }
            | MediaAnswer { .. }
            | IceCandidate { .. }
            | Mute { .. }
            | MediaLayer { .. } => Some(Action::Chat),
        }
    }

    /// The wire name of this request's type.
    pub fn type_name(&self) -> &'static str {
        use Request::*;
        match self {
            Join { .. } => "join",
            Ping {} => "ping",
            Chat { .. } => "chat",
            Admit { .. } => "admit",
            Deny { .. } => "deny",
            Remove { .. } => "remove",
            Leave {} => "leave",
            CaucusStart { .. } => "caucus_start",
            CaucusEnd { .. } => "caucus_end",
            Note { .. } => "note",
            ProposeTerms { .. } => "propose_terms",
            AcceptTerms { .. } => "accept_terms",
            RejectTerms { .. } => "reject_terms",
            ConfirmTerms { .. } => "confirm_terms",
            RecordOutcome { .. } => "record_outcome",
            Consent { .. } => "consent",
            MediaOffer { .. } => "media_offer",
            MediaAnswer { .. } => "media_answer",
            IceCandidate { .. } => "ice_candidate",
            Mute { .. } => "mute",
            MediaLayer { .. } => "media_layer",
            DocPermission { .. } => "doc_permission",
        }
    }

    /// Requests handled by the media plane rather than the case log.
    pub fn is_media(&self) -> bool {
        matches!(
            self,
            Request::MediaOffer { .. }
                | Request::MediaAnswer { .. }
                | Request::IceCandidate { .. }
                | Request::Mute { .. }
                | Request::MediaLayer { .. }
        )
    }
}

/// Parses one text frame, giving each kind of bad input its own code. Returns the request id,
/// when one could be read, alongside an error so the reply can be correlated.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, (Option<String>, ProtocolError)> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        (
            None,
            ProtocolError::new(ErrorCode::MalformedJson, format!("not valid JSON: {e}")),
        )
    })?;
    let obj = value.as_object().ok_or_else(|| {
        (
            None,
            ProtocolError::new(ErrorCode::InvalidMessage, "a message must be a JSON object"),
        )
    })?;
    let id = obj.get("id").and_then(|v| v.as_str()).map(str::to_owned);
    let ty = match obj.get("type") {
        Some(serde_json::Value::String(t)) => t.clone(),
        Some(_) => {
            return Err((
                id,
                ProtocolError::new(ErrorCode::InvalidMessage, "`type` must be a string"),
            ))
        }
        None => {
            return Err((
                id,
                ProtocolError::new(ErrorCode::InvalidMessage, "missing field `type`"),
            ))
        }
    };
    if !REQUEST_TYPES.contains(&ty.as_str()) {
        let shown: String = ty.chars().take(40).collect();
        return Err((
            id,
            ProtocolError::new(ErrorCode::UnknownType, format!("unknown type `{shown}`")),
        ));
    }
    serde_json::from_value::<ClientMessage>(value).map_err(|e| {
        (
            id,
            ProtocolError::new(ErrorCode::InvalidMessage, format!("invalid `{ty}`: {e}")),
        )
    })
}

/// A participant as others see it.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    pub participant: String,
    pub role: Role,
    pub name: String,
    pub status: crate::room::ParticipantStatus,
    /// Whether a connection of this participant is open right now.
    pub online: bool,
}

/// A caucus as a participant sees it: members are listed only to its own members (staff outside
/// the caucus see only that it runs, like everyone else outside it).
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaucusView {
    pub caucus: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
}

/// The answer to a successful `join`.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol: u32,
    pub case: String,
    pub title: String,
    pub participant: String,
    pub role: Role,
    pub name: String,
    pub status: crate::room::ParticipantStatus,
    /// Last event seq of the case when the welcome was built; replayed events follow up to it.
    pub head_seq: u64,
    pub roster: Vec<RosterEntry>,
    pub caucuses: Vec<CaucusView>,
    /// STUN/TURN servers for the peer connection (time-limited TURN credentials), set by the
    /// server when TURN is configured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ice_servers: Vec<IceServer>,
}

/// One entry of `RTCConfiguration.iceServers`.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub credential: Option<String>,
}

/// A track the server sends to this participant: which participant's audio or video it carries.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// The media line (`a=mid`) in this participant's peer connection.
    pub mid: String,
    pub participant: String,
    pub kind: MediaKind,
}

/// Everything the server sends.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Request `id` was carried out; `seq` is the event it produced, if any.
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        seq: Option<u64>,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        id: Option<String>,
        code: ErrorCode,
        message: String,
    },
    Welcome {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        id: Option<String>,
        #[serde(flatten)]
        welcome: Welcome,
    },
    /// One event of the case log, as this participant may see it.
    Event {
        #[serde(flatten)]
        event: Event,
    },
    /// A participant's connection opened or closed (not part of the case log).
    Presence { participant: String, online: bool },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        id: Option<String>,
    },
    /// The server is closing this connection, and why (denied, removed, revoked, ...).
    Closed { code: ErrorCode, message: String },
    /// The server's SDP answer to the client's `media_offer`.
    MediaAnswer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        id: Option<String>,
        sdp: String,
    },
    /// A server-initiated renegotiation: answer with `media_answer`.
    MediaOffer { sdp: String },
    /// The tracks this participant now receives, and whose they are (sent after every change).
    MediaTracks { tracks: Vec<TrackInfo> },
    /// A participant whose media this participant receives muted or unmuted.
    Mute {
        participant: String,
        kind: MediaKind,
        muted: bool,
    },
    /// How much of its video this participant's connection now gets: the server takes video
    /// away from a link that loses packets, so that the audio stays clear, and gives it back
    /// when the link recovers (sent on every change).
    MediaDownlink { video: DownlinkVideo },
}

/// The video a participant's downlink carries (`media_downlink`).
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownlinkVideo {
    /// All the video it receives, at the layers it asked for.
    Full,
    /// Simulcast video at its lowest layer.
    Reduced,
    /// No video for now; audio only.
    Paused,
}

impl ServerMessage {
    pub fn error(id: Option<String>, e: ProtocolError) -> Self {
        ServerMessage::Error {
            id,
            code: e.code,
            message: e.message,
        }
    }

    pub fn to_json(&self) -> String {
        // Our types only hold strings, numbers and maps with string keys: this cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"serialization failed"}"#.to_owned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_distinguishes_bad_input() {
        let code = |s: &str| parse_client_message(s).unwrap_err().1.code;
        assert_eq!(code("{not json"), ErrorCode::MalformedJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"id":"1"}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":7}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"fly"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"chat"}"#), ErrorCode::InvalidMessage);
        assert_eq!(
            code(r#"{"type":"chat","text":5}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"note","text":"x","scope":"secret"}"#),
            ErrorCode::InvalidMessage
        );
        let (id, _) = parse_client_message(r#"{"type":"chat","id":"r9"}"#).unwrap_err();
        assert_eq!(id.as_deref(), Some("r9"));
    }

    #[test]
    fn parse_reads_envelope_and_body() {
        let m = parse_client_message(
            r#"{"type":"join","id":"a","case":"c1","token":"t","resume_from":12}"#,
        )
        .unwrap();
        assert_eq!(m.id.as_deref(), Some("a"));
        assert_eq!(m.case.as_deref(), Some("c1"));
        assert_eq!(
            m.request,
            Request::Join {
                token: "t".into(),
                resume_from: Some(12)
            }
        );
        let m = parse_client_message(r#"{"type":"ping"}"#).unwrap();
        assert_eq!(m.request, Request::Ping {});
    }

    #[test]
    fn media_layer_parses() {
        let m =
            parse_client_message(r#"{"type":"media_layer","mid":"3","quality":"medium"}"#).unwrap();
        assert_eq!(
            m.request,
            Request::MediaLayer {
                mid: "3".into(),
                quality: LayerQuality::Medium
            }
        );
        assert!(m.request.is_media());
        let bad = parse_client_message(r#"{"type":"media_layer","mid":"3","quality":"4k"}"#);
        assert_eq!(bad.unwrap_err().1.code, ErrorCode::InvalidMessage);
    }

    #[test]
    fn every_type_name_is_listed() {
        for t in REQUEST_TYPES {
            // A known type with no fields parses or fails as invalid_message, never unknown_type.
            let r = parse_client_message(&format!(r#"{{"type":"{t}"}}"#));
            if let Err((_, e)) = r {
                assert_eq!(e.code, ErrorCode::InvalidMessage, "{t}");
            }
        }
    }

    /// docs/protocol.md documents every error code and every request type.
    #[test]
    fn protocol_doc_covers_every_code_and_type() {
        let doc = include_str!("../../docs/protocol.md");
        for code in ALL_ERROR_CODES {
            assert!(
                doc.contains(&format!("| `{}` |", code.as_str())),
                "docs/protocol.md lacks error code {}",
                code.as_str()
            );
        }
        for t in REQUEST_TYPES {
            assert!(
                doc.contains(&format!("| `{t}` |")),
                "docs/protocol.md lacks request type {t}"
            );
        }
    }

    #[test]
    fn error_code_wire_names_match_serde() {
        for code in ALL_ERROR_CODES {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().to_owned())
            );
        }
        assert_eq!(ErrorCode::TokenNotYetValid.as_str(), "token_not_yet_valid");
    }
}
