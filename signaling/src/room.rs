//! The room: a case's live state as a fold of its event log, and the rules that turn requests
//! into new events.
//!
//! The server drives a [`Room`] like this:
//!
//! 1. a request arrives: [`Room::handle`] (or [`Room::join`], or an admin command) checks the
//!    permission matrix and the case's state and returns [`Draft`]s, or a typed error;
//! 2. the server seals the drafts ([`Room::seal`]), appends them to the store, and only then
//! 3. applies them ([`Room::apply`]), acknowledges the request, delivers each event to the
//!    participants for whom [`Room::view_for`] returns a view, and carries out
//!    [`Room::effects`] (catch a newly admitted participant up, close a removed one's connection).
//!
//! Nothing here reads a clock: time comes in as `now_ms`. A request that fails changes nothing.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::document::{DocName, DocPolicy, PolicyEntry};
use crate::event::{
    sha256_hex, CaseParticipant, ChainError, ConsentKind, Draft, Event, EventBody, JoinedAs,
    NoteScope, Outcome, Visibility, GENESIS_HASH,
};
use crate::protocol::{CaucusView, ErrorCode, ProtocolError, Request, RosterEntry, Welcome};
use crate::role::{allowed, Action, Role};
use crate::token::InviteClaims;

/// Longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 4_000;
/// Longest note or terms text, in characters.
pub const MAX_TEXT_CHARS: usize = 20_000;
/// Largest SDP accepted, in bytes.
pub const MAX_SDP_BYTES: usize = 32 * 1024;
/// Longest display name, reason or title, in characters.
pub const MAX_SHORT_CHARS: usize = 200;

/// Where a participant stands in the case.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantStatus {
    /// Known to the case (named at creation or invited) but never joined.
    Invited,
    /// Waiting for a mediator to admit them.
    Lobby,
    /// In the room.
    Admitted,
    /// Refused entry by a mediator.
    Denied,
    /// Left the room of their own accord (may join again).
    Left,
    /// Removed by a mediator.
    Removed,
}

/// What the room knows about one participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    pub role: Role,
    pub name: String,
    pub status: ParticipantStatus,
    /// The active caucus this participant is in, if any.
    pub caucus: Option<String>,
    pub consents: BTreeMap<&'static str, bool>,
}

/// A caucus (背对背调解): a private session of staff with some participants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caucus {
    pub started_by: String,
    pub members: BTreeSet<String>,
    pub active: bool,
}

/// A party's decision on terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Accepted,
    Rejected,
}

/// Terms put to the parties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms {
    pub text: String,
    pub text_hash: String,
    pub proposed_by: String,
    pub decisions: BTreeMap<String, Decision>,
    pub confirmed_by: Option<String>,
}

/// An invite as the case record knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    pub participant: String,
    pub role: Role,
    pub expires_at: i64,
    pub revoked: bool,
}

/// Something the server must do after an event was stored, besides delivering it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send this participant every event they may now see that their connection has not had
    /// (they were just admitted).
    CatchUp { participant: String },
    /// Close every connection of this participant, telling them why.
    Close {
        participant: String,
        code: Option<ErrorCode>,
        message: String,
    },
    /// Close every connection that joined with this invite.
    CloseInvite { jti: String },
}

/// The live state of one case.
#[derive(Clone, Debug, Default)]
pub struct Room {
    case: String,
    title: String,
    events: Vec<Event>,
    participants: BTreeMap<String, Participant>,
    caucuses: BTreeMap<String, Caucus>,
    invites: BTreeMap<String, Invite>,
    terms: BTreeMap<String, Terms>,
    current_terms: Option<String>,
    outcome: Option<Outcome>,
    /// Documents each participant was allowed to edit (besides what their role gives).
    doc_writers: BTreeMap<String, BTreeSet<DocName>>,
}

fn err(code: ErrorCode, message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(code, message)
}

fn check_text(field: &str, text: &str, max: usize) -> Result<(), ProtocolError> {
    if text.trim().is_empty() {
        return Err(err(
            ErrorCode::InvalidMessage,
            format!("`{field}` is empty"),
        ));
    }
    if text.chars().count() > max {
        return Err(err(
            ErrorCode::InvalidMessage,
            format!("`{field}` is longer than {max} characters"),
        ));
    }
    Ok(())
}

/// Whether `s` has the form of a SHA-256 digest as this protocol writes it: 64 lowercase hex
/// digits.
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_reason(reason: &Option<String>) -> Result<(), ProtocolError> {
    match reason {
        Some(r) if r.chars().count() > MAX_TEXT_CHARS => Err(err(
            ErrorCode::InvalidMessage,
            format!("`reason` is longer than {MAX_TEXT_CHARS} characters"),
        )),
        _ => Ok(()),
    }
}

fn draft(visibility: Visibility, body: EventBody) -> Draft {
    Draft { visibility, body }
}

impl Room {
    /// An empty room: the case does not exist until a `case_created` event is applied.
    pub fn new() -> Room {
        Room::default()
    }

    /// Rebuilds a room from its log, verifying the hash chain first.
    pub fn from_events(events: Vec<Event>) -> Result<Room, ChainError> {
        crate::event::verify_chain(&events)?;
        let mut room = Room::new();
        for e in events {
            room.apply(e);
        }
        Ok(room)
    }

    pub fn exists(&self) -> bool {
        !self.events.is_empty()
    }

    pub fn case_id(&self) -> &str {
        &self.case
    }

    pub fn title(&self) -> &str {
        &self.title
    }

    pub fn head_seq(&self) -> u64 {
        self.events.last().map_or(0, |e| e.seq)
    }

    pub fn head_hash(&self) -> &str {
        self.events.last().map_or(GENESIS_HASH, |e| &e.hash)
    }

    /// The whole log (the case record).
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    pub fn participant(&self, id: &str) -> Option<&Participant> {
        self.participants.get(id)
    }

    pub fn participants(&self) -> &BTreeMap<String, Participant> {
        &self.participants
    }

    pub fn caucus(&self, id: &str) -> Option<&Caucus> {
        self.caucuses.get(id)
    }

    pub fn terms(&self, id: &str) -> Option<&Terms> {
        self.terms.get(id)
    }

    pub fn current_terms(&self) -> Option<&str> {
        self.current_terms.as_deref()
    }

    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    pub fn invite(&self, jti: &str) -> Option<&Invite> {
        self.invites.get(jti)
    }

    /// Seals drafts as the next events of this log (does not apply them).
    pub fn seal(&self, drafts: Vec<Draft>, now_ms: i64) -> Vec<Event> {
        let mut prev = self.head_hash().to_owned();
        let mut seq = self.head_seq();
        drafts
            .into_iter()
            .map(|d| {
                seq += 1;
                let e = Event::seal(d, seq, now_ms, &prev);
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    /// The seq the next sealed event will get; ids of caucuses and terms derive from it.
    fn next_seq(&self) -> u64 {
        self.head_seq() + 1
    }

    // ----- admin commands -------------------------------------------------------------------

    /// Creates the case (the first event of its log).
    pub fn create_case(
        &self,
        case: &str,
        title: &str,
        participants: Vec<CaseParticipant>,
    ) -> Result<Vec<Draft>, ProtocolError> {
        if self.exists() {
            return Err(err(ErrorCode::Conflict, "the case already exists"));
        }
        check_text("title", title, MAX_SHORT_CHARS)?;
        let mut seen = BTreeSet::new();
        for p in &participants {
            check_text("name", &p.name, MAX_SHORT_CHARS)?;
            if !seen.insert(&p.participant) {
                return Err(err(ErrorCode::InvalidMessage, "duplicate participant id"));
            }
        }
        Ok(vec![draft(
            Visibility::Staff,
            EventBody::CaseCreated {
                case: case.to_owned(),
                title: title.to_owned(),
                participants,
            },
        )])
    }

    /// Finds the participant an invite for `role` and `name` is for: the one already known with
    /// that role and name, if any.
    pub fn find_participant(&self, role: Role, name: &str) -> Option<&str> {
        self.participants
            .iter()
            .find(|(_, p)| p.role == role && p.name == name)
            .map(|(id, _)| id.as_str())
    }

    /// Records that an invite was minted.
    pub fn issue_invite(
        &self,
        jti: &str,
        participant: &str,
        role: Role,
        name: &str,
        expires_at: i64,
    ) -> Result<Vec<Draft>, ProtocolError> {
        self.require_case()?;
        check_text("name", name, MAX_SHORT_CHARS)?;
        if let Some(p) = self.participants.get(participant) {
            if p.role != role {
                return Err(err(
                    ErrorCode::Conflict,
                    "this participant has another role in the case",
                ));
            }
        }
        if self.invites.contains_key(jti) {
            return Err(err(ErrorCode::Conflict, "duplicate invite id"));
        }
        Ok(vec![draft(
            Visibility::Staff,
            EventBody::InviteIssued {
                jti: jti.to_owned(),
                participant: participant.to_owned(),
                role,
                name: name.to_owned(),
                expires_at,
            },
        )])
    }

    /// Revokes an invite; its connections are closed once the event is stored.
    pub fn revoke_invite(&self, jti: &str) -> Result<Vec<Draft>, ProtocolError> {
        self.require_case()?;
        match self.invites.get(jti) {
            None => Err(err(ErrorCode::NotFound, "no such invite in this case")),
            Some(i) if i.revoked => Err(err(ErrorCode::Conflict, "the invite is already revoked")),
            Some(_) => Ok(vec![draft(
                Visibility::Staff,
                EventBody::InviteRevoked {
                    jti: jti.to_owned(),
                },
            )]),
        }
    }

    fn require_case(&self) -> Result<(), ProtocolError> {
        if self.exists() {
            Ok(())
        } else {
            Err(err(ErrorCode::CaseNotFound, "the case does not exist"))
        }
    }

    // ----- participants ---------------------------------------------------------------------

    /// Checks a verified token against the case record and returns the events joining causes
    /// (none when the participant is already in the lobby or the room, i.e. reconnecting).
    pub fn join(&self, claims: &InviteClaims) -> Result<Vec<Draft>, ProtocolError> {
        if !self.exists() || claims.case != self.case {
            return Err(err(ErrorCode::CaseNotFound, "the case does not exist"));
        }
        let role = Role::parse(&claims.role)
            .ok_or_else(|| err(ErrorCode::TokenRole, "the invite names an unknown role"))?;
        let invite = self.invites.get(&claims.jti).ok_or_else(|| {
            err(
                ErrorCode::TokenUnknown,
                "this invite was not issued for this case",
            )
        })?;
        if invite.revoked {
            return Err(err(ErrorCode::TokenRevoked, "this invite has been revoked"));
        }
        if invite.participant != claims.sub || invite.role != role {
            return Err(err(
                ErrorCode::TokenUnknown,
                "the invite does not match the case record",
            ));
        }
        let p = self.participants.get(&claims.sub);
        match p.map(|p| p.status) {
            Some(ParticipantStatus::Denied) => Err(err(
                ErrorCode::Denied,
                "a mediator declined your entry to this session",
            )),
            Some(ParticipantStatus::Removed) => Err(err(
                ErrorCode::Removed,
                "a mediator removed you from this session",
            )),
            Some(ParticipantStatus::Lobby) | Some(ParticipantStatus::Admitted) => Ok(vec![]),
            Some(ParticipantStatus::Invited) | Some(ParticipantStatus::Left) | None => {
                let joined_as = if allowed(role, Action::SkipLobby) {
                    JoinedAs::Admitted
                } else {
                    JoinedAs::Lobby
                };
                let name = p.map_or(claims.name.clone(), |p| p.name.clone());
                let visibility = match joined_as {
                    JoinedAs::Admitted => Visibility::Everyone,
                    JoinedAs::Lobby => Visibility::Staff,
                };
                Ok(vec![draft(
                    visibility,
                    EventBody::ParticipantJoined {
                        participant: claims.sub.clone(),
                        role,
                        name,
                        joined_as,
                    },
                )])
            }
        }
    }

    /// Turns a joined participant's request into event drafts, or a typed error.
    /// `join` and `ping` are handled by the server and rejected here.
    pub fn handle(&self, actor: &str, request: &Request) -> Result<Vec<Draft>, ProtocolError> {
        let me = self
            .participants
            .get(actor)
            .ok_or_else(|| err(ErrorCode::NotJoined, "you have not joined this case"))?;
        if let Some(action) = request.action() {
            if !allowed(me.role, action) {
                return Err(err(
                    ErrorCode::Forbidden,
                    format!("a {} may not {}", me.role, request.type_name()),
                ));
            }
        }
        let lobby_ok = matches!(request, Request::Leave {} | Request::Consent { .. });
        match me.status {
            ParticipantStatus::Admitted => {}
            ParticipantStatus::Lobby if lobby_ok => {}
            ParticipantStatus::Lobby => {
                return Err(err(
                    ErrorCode::NotAdmitted,
                    "please wait until the mediator lets you in",
                ))
            }
            _ => return Err(err(ErrorCode::NotJoined, "you are not in this session")),
        }
        // Where this participant's words go: their caucus while one is running.
        let room_visibility = match &me.caucus {
            Some(c) => Visibility::Caucus { caucus: c.clone() },
            None => Visibility::Everyone,
        };
        let actor_s = actor.to_owned();
        match request {
            Request::Join { .. } => Err(err(ErrorCode::AlreadyJoined, "already joined")),
            Request::Ping {} => Ok(vec![]),
            Request::Chat { text } => {
                check_text("text", text, MAX_CHAT_CHARS)?;
                Ok(vec![draft(
                    room_visibility,
                    EventBody::Chat {
                        from: actor_s,
                        text: text.clone(),
                    },
                )])
            }
            Request::Admit { participant } => {
                self.waiting(participant)?;
                let who = self.other(participant)?;
                Ok(vec![draft(
                    Visibility::Everyone,
                    EventBody::Admitted {
                        participant: participant.clone(),
                        by: actor_s,
                        role: Some(who.role),
                        name: Some(who.name.clone()),
                    },
                )])
            }
            Request::Deny {
                participant,
                reason,
            } => {
                check_reason(reason)?;
                self.waiting(participant)?;
                Ok(vec![draft(
                    Visibility::Staff,
                    EventBody::Denied {
                        participant: participant.clone(),
                        by: actor_s,
                        reason: reason.clone(),
                    },
                )])
            }
            Request::Remove {
                participant,
                reason,
            } => {
                check_reason(reason)?;
                if participant == actor {
                    return Err(err(ErrorCode::Conflict, "use `leave` to leave"));
                }
                let p = self.other(participant)?;
                if !matches!(
                    p.status,
                    ParticipantStatus::Admitted | ParticipantStatus::Lobby
                ) {
                    return Err(err(
                        ErrorCode::Conflict,
                        "that participant is not in the session",
                    ));
                }
                // Someone removed from the lobby was never visible to the parties.
                let visibility = if p.status == ParticipantStatus::Lobby {
                    Visibility::Staff
                } else {
                    Visibility::Everyone
                };
                Ok(vec![draft(
                    visibility,
                    EventBody::Removed {
                        participant: participant.clone(),
                        by: actor_s,
                        reason: reason.clone(),
                    },
                )])
            }
            Request::Leave {} => Ok(vec![draft(
                if me.status == ParticipantStatus::Lobby {
                    Visibility::Staff
                } else {
                    Visibility::Everyone
                },
                EventBody::Left {
                    participant: actor_s,
                },
            )]),
            Request::CaucusStart { members } => {
                if me.caucus.is_some() {
                    return Err(err(ErrorCode::Conflict, "you are already in a caucus"));
                }
                let mut set = BTreeSet::new();
                for m in members {
                    if m == actor {
                        continue;
                    }
                    let p = self.other(m)?;
                    if p.status != ParticipantStatus::Admitted {
                        return Err(err(
                            ErrorCode::Conflict,
                            "caucus members must be in the room",
                        ));
                    }
                    if p.caucus.is_some() {
                        return Err(err(ErrorCode::Conflict, "a member is already in a caucus"));
                    }
                    set.insert(m.clone());
                }
                if set.is_empty() {
                    return Err(err(
                        ErrorCode::InvalidMessage,
                        "a caucus needs at least one other member",
                    ));
                }
                set.insert(actor_s.clone());
                Ok(vec![draft(
                    Visibility::Everyone,
                    EventBody::CaucusStarted {
                        caucus: format!("k{}", self.next_seq()),
                        by: Some(actor_s),
                        members: set.into_iter().collect(),
                    },
                )])
            }
            Request::CaucusEnd { caucus } => {
                let c = self
                    .caucuses
                    .get(caucus)
                    .ok_or_else(|| err(ErrorCode::NotFound, "no such caucus"))?;
                if !c.active {
                    return Err(err(ErrorCode::Conflict, "the caucus has already ended"));
                }
                if !c.members.contains(actor) {
                    return Err(err(
                        ErrorCode::Forbidden,
                        "only a member of the caucus can end it",
                    ));
                }
                Ok(vec![draft(
                    Visibility::Everyone,
                    EventBody::CaucusEnded {
                        caucus: caucus.clone(),
                        by: Some(actor_s),
                    },
                )])
            }
            Request::Note { text, scope } => {
                check_text("text", text, MAX_TEXT_CHARS)?;
                let visibility = match scope {
                    NoteScope::Shared => room_visibility,
                    NoteScope::Staff => Visibility::Staff,
                    NoteScope::Private => Visibility::Participant {
                        participant: actor_s.clone(),
                    },
                };
                Ok(vec![draft(
                    visibility,
                    EventBody::NoteAdded {
                        author: actor_s,
                        scope: *scope,
                        text: text.clone(),
                    },
                )])
            }
            Request::ProposeTerms {
                text,
                document,
                version,
            } => {
                self.require_open()?;
                let (text, doc_state) = match (document, version) {
                    (None, _) => (text, None),
                    (Some(_), _) if !text.is_empty() => {
                        return Err(err(
                            ErrorCode::InvalidMessage,
                            "give either `text` or `document`, not both",
                        ))
                    }
                    (Some(d), _) if DocName::parse(d) != Some(DocName::Agreement) => {
                        return Err(err(
                            ErrorCode::NotFound,
                            "terms can be taken only from the agreement document",
                        ))
                    }
                    (Some(_), None) => {
                        return Err(err(
                            ErrorCode::Internal,
                            "the agreement document could not be read",
                        ))
                    }
                    (Some(_), Some(v)) => (&v.text, Some(v.state_vector.clone())),
                };
                check_text("text", text, MAX_TEXT_CHARS)?;
                Ok(vec![draft(
                    Visibility::Everyone,
                    EventBody::TermsProposed {
                        terms: format!("t{}", self.next_seq()),
                        by: actor_s,
                        text: text.clone(),
                        text_hash: sha256_hex(text.as_bytes()),
                        document: document.clone(),
                        doc_state,
                    },
                )])
            }
            Request::AcceptTerms { terms, .. } | Request::RejectTerms { terms, .. } => {
                self.require_open()?;
                let t = self.current(terms)?;
                // The signature binds the hash of the terms' text, computed here from the text
                // the server holds (the text of `terms_proposed`, which is what every party's
                // screen shows for these terms), never taken from the client. A client's own
                // hash of its screen is a further check: it must be well formed and equal.
                let signed = sha256_hex(t.text.as_bytes());
                if let Request::AcceptTerms {
                    text_hash: Some(seen),
                    ..
                } = request
                {
                    if !is_sha256_hex(seen) {
                        return Err(err(
                            ErrorCode::InvalidMessage,
                            "`text_hash` must be a SHA-256 in hex: 64 lowercase hex digits",
                        ));
                    }
                    if *seen != signed {
                        return Err(err(
                            ErrorCode::Conflict,
                            "the text you are signing is not the text of these terms",
                        ));
                    }
                }
                if t.decisions.contains_key(actor) {
                    return Err(err(
                        ErrorCode::Conflict,
                        "you have already decided on these terms",
                    ));
                }
                let body = match request {
                    Request::RejectTerms { reason, .. } => {
                        check_reason(reason)?;
                        EventBody::TermsRejected {
                            terms: terms.clone(),
                            by: actor_s,
                            reason: reason.clone(),
                        }
                    }
                    _ => EventBody::TermsAccepted {
                        terms: terms.clone(),
                        by: actor_s,
                        text_hash: signed,
                    },
                };
                Ok(vec![draft(Visibility::Everyone, body)])
            }
            Request::ConfirmTerms { terms } => {
                // Confirmation may follow a settlement, but not a failed or withdrawn mediation.
                if self
                    .outcome
                    .is_some_and(|o| !matches!(o, Outcome::Settled | Outcome::PartiallySettled))
                {
                    return Err(err(
                        ErrorCode::CaseClosed,
                        "the mediation ended without settlement; nothing to confirm",
                    ));
                }
                let t = self.current(terms)?;
                if t.confirmed_by.is_some() {
                    return Err(err(
                        ErrorCode::Conflict,
                        "these terms are already confirmed",
                    ));
                }
                if !self.all_parties_accepted(t) {
                    return Err(err(
                        ErrorCode::Conflict,
                        "every party must accept the terms before confirmation",
                    ));
                }
                Ok(vec![draft(
                    Visibility::Everyone,
                    EventBody::TermsConfirmed {
                        terms: terms.clone(),
                        by: actor_s,
                        text_hash: t.text_hash.clone(),
                    },
                )])
            }
            Request::RecordOutcome { outcome, reason } => {
                self.require_open()?;
                check_reason(reason)?;
                if *outcome == Outcome::Failed
                    && reason.as_deref().is_none_or(|r| r.trim().is_empty())
                {
                    return Err(err(
                        ErrorCode::InvalidMessage,
                        "a failed mediation needs a reason",
                    ));
                }
                if matches!(outcome, Outcome::Settled) {
                    let ok = self
                        .current_terms
                        .as_ref()
                        .and_then(|t| self.terms.get(t))
                        .is_some_and(|t| self.all_parties_accepted(t));
                    if !ok {
                        return Err(err(
                            ErrorCode::Conflict,
                            "a settlement needs terms accepted by every party",
                        ));
                    }
                }
                Ok(vec![draft(
                    Visibility::Everyone,
                    EventBody::OutcomeRecorded {
                        outcome: *outcome,
                        by: actor_s,
                        reason: reason.clone(),
                        terms: self.current_terms.clone(),
                    },
                )])
            }
            // Media requests change no case state: the permission and lobby checks above are
            // all the room decides; the server's media plane does the rest.
            Request::MediaOffer { sdp } | Request::MediaAnswer { sdp } => {
                if sdp.len() > MAX_SDP_BYTES {
                    return Err(err(ErrorCode::InvalidMessage, "the SDP is too large"));
                }
                Ok(vec![])
            }
            Request::IceCandidate { .. } | Request::Mute { .. } | Request::MediaLayer { .. } => {
                Ok(vec![])
            }
            Request::Consent { kind, given } => Ok(vec![draft(
                // From the lobby, only staff may learn of it (parties don't see the lobby).
                if me.status == ParticipantStatus::Lobby {
                    Visibility::Staff
                } else {
                    Visibility::Everyone
                },
                EventBody::ConsentGiven {
                    participant: actor_s,
                    consent: *kind,
                    given: *given,
                },
            )]),
            Request::DocPermission {
                doc,
                participant,
                write,
            } => {
                let name = DocName::parse(doc)
                    .ok_or_else(|| err(ErrorCode::NotFound, "this case has no such document"))?;
                if name != DocName::Agreement {
                    return Err(err(
                        ErrorCode::InvalidMessage,
                        "only the agreement's write access can be changed; caucus documents \
                         are written by the caucus's members",
                    ));
                }
                let target = self.other(participant)?;
                if target.role == Role::Mediator {
                    return Err(err(
                        ErrorCode::Conflict,
                        "mediators always write the agreement",
                    ));
                }
                let has = self
                    .doc_writers
                    .get(participant)
                    .is_some_and(|d| d.contains(&name));
                if has == *write {
                    return Err(err(
                        ErrorCode::Conflict,
                        if *write {
                            "that participant can already edit this document"
                        } else {
                            "that participant cannot edit this document"
                        },
                    ));
                }
                Ok(vec![draft(
                    Visibility::Everyone,
                    EventBody::DocPermission {
                        doc: name.as_string(),
                        participant: participant.clone(),
                        write: *write,
                        by: actor_s,
                    },
                )])
            }
        }
    }

    fn other(&self, id: &str) -> Result<&Participant, ProtocolError> {
        self.participants
            .get(id)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such participant in this case"))
    }

    /// The participant exists in this case and waits in the lobby (admit and deny need that).
    fn waiting(&self, id: &str) -> Result<(), ProtocolError> {
        if self.other(id)?.status != ParticipantStatus::Lobby {
            return Err(err(
                ErrorCode::Conflict,
                "that participant is not in the lobby",
            ));
        }
        Ok(())
    }

    fn require_open(&self) -> Result<(), ProtocolError> {
        match self.outcome {
            Some(_) => Err(err(
                ErrorCode::CaseClosed,
                "the outcome has been recorded; terms can no longer change",
            )),
            None => Ok(()),
        }
    }

    fn current(&self, terms: &str) -> Result<&Terms, ProtocolError> {
        let t = self
            .terms
            .get(terms)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such terms"))?;
        if self.current_terms.as_deref() != Some(terms) {
            return Err(err(
                ErrorCode::Conflict,
                "these terms were superseded by newer ones",
            ));
        }
        Ok(t)
    }

    /// Every party of the case still in it (not denied or removed) accepted `t`.
    fn all_parties_accepted(&self, t: &Terms) -> bool {
        let mut any = false;
        for (id, p) in &self.participants {
            if !p.role.is_party()
                || matches!(
                    p.status,
                    ParticipantStatus::Denied | ParticipantStatus::Removed
                )
            {
                continue;
            }
            any = true;
            if t.decisions.get(id) != Some(&Decision::Accepted) {
                return false;
            }
        }
        any
    }

    // ----- the fold -------------------------------------------------------------------------

    /// Applies a stored event to the state. The event must follow the head (the server only
    /// applies what it sealed from this room or read from the store after verifying the chain).
    pub fn apply(&mut self, e: Event) {
        match &e.body {
            EventBody::CaseCreated {
                case,
                title,
                participants,
            } => {
                self.case = case.clone();
                self.title = title.clone();
                for p in participants {
                    self.participants.insert(
                        p.participant.clone(),
                        Participant {
                            role: p.role,
                            name: p.name.clone(),
                            status: ParticipantStatus::Invited,
                            caucus: None,
                            consents: BTreeMap::new(),
                        },
                    );
                }
            }
            EventBody::InviteIssued {
                jti,
                participant,
                role,
                name,
                expires_at,
            } => {
                self.participants
                    .entry(participant.clone())
                    .or_insert_with(|| Participant {
                        role: *role,
                        name: name.clone(),
                        status: ParticipantStatus::Invited,
                        caucus: None,
                        consents: BTreeMap::new(),
                    });
                self.invites.insert(
                    jti.clone(),
                    Invite {
                        participant: participant.clone(),
                        role: *role,
                        expires_at: *expires_at,
                        revoked: false,
                    },
                );
            }
            EventBody::InviteRevoked { jti } => {
                if let Some(i) = self.invites.get_mut(jti) {
                    i.revoked = true;
                }
            }
            EventBody::ParticipantJoined {
                participant,
                role,
                name,
                joined_as,
            } => {
                let p = self
                    .participants
                    .entry(participant.clone())
                    .or_insert_with(|| Participant {
                        role: *role,
                        name: name.clone(),
                        status: ParticipantStatus::Invited,
                        caucus: None,
                        consents: BTreeMap::new(),
                    });
                p.status = match joined_as {
                    JoinedAs::Lobby => ParticipantStatus::Lobby,
                    JoinedAs::Admitted => ParticipantStatus::Admitted,
                };
            }
            EventBody::Admitted { participant, .. } => {
                self.set_status(participant, ParticipantStatus::Admitted)
            }
            EventBody::Denied { participant, .. } => {
                self.set_status(participant, ParticipantStatus::Denied)
            }
            EventBody::Left { participant } => {
                self.set_status(participant, ParticipantStatus::Left)
            }
            EventBody::Removed { participant, .. } => {
                self.set_status(participant, ParticipantStatus::Removed)
            }
            EventBody::Chat { .. } | EventBody::NoteAdded { .. } => {}
            EventBody::CaucusStarted {
                caucus,
                by,
                members,
                ..
            } => {
                for m in members {
                    if let Some(p) = self.participants.get_mut(m) {
                        p.caucus = Some(caucus.clone());
                    }
                }
                self.caucuses.insert(
                    caucus.clone(),
                    Caucus {
                        started_by: by.clone().unwrap_or_default(),
                        members: members.iter().cloned().collect(),
                        active: true,
                    },
                );
            }
            EventBody::CaucusEnded { caucus, .. } => {
                if let Some(c) = self.caucuses.get_mut(caucus) {
                    c.active = false;
                    for m in &c.members {
                        if let Some(p) = self.participants.get_mut(m) {
                            if p.caucus.as_deref() == Some(caucus) {
                                p.caucus = None;
                            }
                        }
                    }
                }
            }
            EventBody::TermsProposed {
                terms,
                by,
                text,
                text_hash,
                ..
            } => {
                self.terms.insert(
                    terms.clone(),
                    Terms {
                        text: text.clone(),
                        text_hash: text_hash.clone(),
                        proposed_by: by.clone(),
                        decisions: BTreeMap::new(),
                        confirmed_by: None,
                    },
                );
                self.current_terms = Some(terms.clone());
            }
            EventBody::TermsAccepted { terms, by, .. } => {
                if let Some(t) = self.terms.get_mut(terms) {
                    t.decisions.insert(by.clone(), Decision::Accepted);
                }
            }
            EventBody::TermsRejected { terms, by, .. } => {
                if let Some(t) = self.terms.get_mut(terms) {
                    t.decisions.insert(by.clone(), Decision::Rejected);
                }
            }
            EventBody::TermsConfirmed { terms, by, .. } => {
                if let Some(t) = self.terms.get_mut(terms) {
                    t.confirmed_by = Some(by.clone());
                }
            }
            EventBody::OutcomeRecorded { outcome, .. } => self.outcome = Some(*outcome),
            EventBody::ConsentGiven {
                participant,
                consent,
                given,
            } => {
                if let Some(p) = self.participants.get_mut(participant) {
                    let key = match consent {
                        ConsentKind::OnlineMediation => "online_mediation",
                        ConsentKind::Recording => "recording",
                    };
                    p.consents.insert(key, *given);
                }
            }
            EventBody::DocPermission {
                doc,
                participant,
                write,
                ..
            } => {
                if let Some(name) = DocName::parse(doc) {
                    let docs = self.doc_writers.entry(participant.clone()).or_default();
                    if *write {
                        docs.insert(name);
                    } else {
                        docs.remove(&name);
                    }
                }
            }
        }
        self.events.push(e);
    }

    /// Whether `e` is a record only: applying it appends it to the log and changes nothing else
    /// (participants, caucuses, invites, terms, outcome, and therefore every permission, view and
    /// effect, are the same before and after). Chat messages and notes are; anything not listed
    /// here is assumed to change the state.
    ///
    /// The server batches queued requests of one room into one store append (server/src/rooms.rs):
    /// it applies record-only events before the batch is stored, so the next request of the batch
    /// is checked against them, and refolds the log if the append fails. Events that change the
    /// state are applied only once stored, so they end a batch.
    pub fn is_record_only(e: &Event) -> bool {
        matches!(e.body, EventBody::Chat { .. } | EventBody::NoteAdded { .. })
    }

    /// Undoes [`Room::apply`] of record-only events at the end of the log, keeping its first
    /// `len` events. Exact, because such events changed nothing else ([`Room::is_record_only`]).
    /// Returns `false` and changes nothing if one of the events to remove is not record-only (or
    /// `len` is beyond the log): the caller must then rebuild the room from its stored log.
    pub fn unapply_records(&mut self, len: usize) -> bool {
        match self.events.get(len..) {
            Some(tail) if tail.iter().all(Room::is_record_only) => {
                self.events.truncate(len);
                true
            }
            _ => false,
        }
    }

    fn set_status(&mut self, id: &str, status: ParticipantStatus) {
        if let Some(p) = self.participants.get_mut(id) {
            p.status = status;
        }
    }

    /// What the server must do once `e` (already applied) is stored.
    pub fn effects(&self, e: &Event) -> Vec<Effect> {
        match &e.body {
            EventBody::Admitted { participant, .. } => vec![Effect::CatchUp {
                participant: participant.clone(),
            }],
            EventBody::Denied {
                participant,
                reason,
                ..
            } => vec![Effect::Close {
                participant: participant.clone(),
                code: Some(ErrorCode::Denied),
                message: reason
                    .clone()
                    .unwrap_or_else(|| "a mediator declined your entry to this session".into()),
            }],
            EventBody::Removed {
                participant,
                reason,
                ..
            } => vec![Effect::Close {
                participant: participant.clone(),
                code: Some(ErrorCode::Removed),
                message: reason
                    .clone()
                    .unwrap_or_else(|| "a mediator removed you from this session".into()),
            }],
            EventBody::Left { participant } => vec![Effect::Close {
                participant: participant.clone(),
                code: None,
                message: "you left the session".into(),
            }],
            EventBody::InviteRevoked { jti } => vec![Effect::CloseInvite { jti: jti.clone() }],
            _ => vec![],
        }
    }

    // ----- who sees what --------------------------------------------------------------------

    /// May `viewer` receive `e` now? Only participants in the room receive events; beyond that
    /// the event's visibility decides. The same answer holds live and on resume.
    pub fn can_see(&self, viewer: &str, e: &Event) -> bool {
        let Some(p) = self.participants.get(viewer) else {
            return false;
        };
        if p.status != ParticipantStatus::Admitted {
            return false;
        }
        match &e.visibility {
            Visibility::Everyone => true,
            Visibility::Staff => allowed(p.role, Action::ReadStaffNotes),
            Visibility::Caucus { caucus } => self
                .caucuses
                .get(caucus)
                .is_some_and(|c| c.members.contains(viewer)),
            Visibility::Participant { participant } => participant == viewer,
        }
    }

    /// The event as `viewer` receives it, or `None` if they may not see it. Outside a caucus,
    /// one only learns that a caucus started or ended, not who is in it.
    pub fn view_for<'a>(&self, viewer: &str, e: &'a Event) -> Option<Cow<'a, Event>> {
        if !self.can_see(viewer, e) {
            return None;
        }
        let caucus = match &e.body {
            EventBody::CaucusStarted { caucus, .. } | EventBody::CaucusEnded { caucus, .. } => {
                caucus
            }
            _ => return Some(Cow::Borrowed(e)),
        };
        let member = self
            .caucuses
            .get(caucus)
            .is_some_and(|c| c.members.contains(viewer));
        if member {
            return Some(Cow::Borrowed(e));
        }
        let mut redacted = e.clone();
        match &mut redacted.body {
            EventBody::CaucusStarted { by, members, .. } => {
                *by = None;
                members.clear();
            }
            EventBody::CaucusEnded { by, .. } => *by = None,
            _ => {}
        }
        Some(Cow::Owned(redacted))
    }

    /// Events after `after` that `viewer` may see, as they see them (for resume and catch-up).
    pub fn replay_for<'a>(
        &'a self,
        viewer: &'a str,
        after: u64,
    ) -> impl Iterator<Item = Cow<'a, Event>> + 'a {
        let start = self.events.partition_point(|e| e.seq <= after);
        self.events[start..]
            .iter()
            .filter_map(move |e| self.view_for(viewer, e))
    }

    /// May `receiver` receive `sender`'s audio and video now? Both must be in the room (nobody in
    /// the lobby sends or receives media), and on the same side of every caucus: caucus members
    /// hear and see only each other, and those outside hear and see none of them.
    pub fn media_allowed(&self, sender: &str, receiver: &str) -> bool {
        if sender == receiver {
            return false;
        }
        let (Some(s), Some(r)) = (
            self.participants.get(sender),
            self.participants.get(receiver),
        ) else {
            return false;
        };
        s.status == ParticipantStatus::Admitted
            && r.status == ParticipantStatus::Admitted
            && s.caucus == r.caucus
    }

    /// For every participant in the room, the participants whose media they may receive. The
    /// server compares it after each event and hands it to the media plane when it changed.
    pub fn media_plan(&self) -> BTreeMap<String, BTreeSet<String>> {
        let admitted: Vec<&String> = self
            .participants
            .iter()
            .filter(|(_, p)| p.status == ParticipantStatus::Admitted)
            .map(|(id, _)| id)
            .collect();
        admitted
            .iter()
            .map(|r| {
                let senders = admitted
                    .iter()
                    .filter(|s| self.media_allowed(s, r))
                    .map(|s| (*s).clone())
                    .collect();
                ((*r).clone(), senders)
            })
            .collect()
    }

    /// May `viewer` learn about `subject` (roster entry, presence)? Staff see everyone known to
    /// the case; others see admitted participants and themselves.
    pub fn can_see_participant(&self, viewer: &str, subject: &str) -> bool {
        let (Some(v), Some(s)) = (
            self.participants.get(viewer),
            self.participants.get(subject),
        ) else {
            return false;
        };
        if viewer == subject {
            return true;
        }
        if v.status != ParticipantStatus::Admitted {
            return false;
        }
        v.role.is_staff() || s.status == ParticipantStatus::Admitted
    }

    /// The roster as `viewer` sees it; `online` tells whether a participant has a connection.
    pub fn roster_for(&self, viewer: &str, online: impl Fn(&str) -> bool) -> Vec<RosterEntry> {
        self.participants
            .iter()
            .filter(|(id, _)| self.can_see_participant(viewer, id))
            .map(|(id, p)| RosterEntry {
                participant: id.clone(),
                role: p.role,
                name: p.name.clone(),
                status: p.status,
                online: online(id),
            })
            .collect()
    }

    /// The shared-document rules as they stand now, for the document server
    /// ([`crate::document`]).
    pub fn doc_policy(&self) -> DocPolicy {
        let participants = self
            .participants
            .iter()
            .map(|(id, p)| {
                let entry = PolicyEntry {
                    role: p.role,
                    admitted: p.status == ParticipantStatus::Admitted,
                    caucuses: self
                        .caucuses
                        .iter()
                        .filter(|(_, c)| c.members.contains(id))
                        .map(|(k, _)| k.clone())
                        .collect(),
                    writable: self.doc_writers.get(id).cloned().unwrap_or_default(),
                };
                (id.clone(), entry)
            })
            .collect();
        DocPolicy {
            exists: self.exists(),
            participants,
            caucuses: self.caucuses.keys().cloned().collect(),
            invites: self
                .invites
                .iter()
                .map(|(j, i)| (j.clone(), (i.participant.clone(), i.revoked)))
                .collect(),
        }
    }

    /// The welcome for a participant who just joined (after their join events were applied).
    pub fn welcome_for(&self, viewer: &str, online: impl Fn(&str) -> bool) -> Option<Welcome> {
        let p = self.participants.get(viewer)?;
        let admitted = p.status == ParticipantStatus::Admitted;
        let caucuses = self
            .caucuses
            .iter()
            .filter(|(_, c)| c.active && admitted)
            .map(|(id, c)| CaucusView {
                caucus: id.clone(),
                members: if c.members.contains(viewer) {
                    c.members.iter().cloned().collect()
                } else {
                    vec![]
                },
            })
            .collect();
        Some(Welcome {
            protocol: crate::protocol::PROTOCOL_VERSION,
            case: self.case.clone(),
            title: self.title.clone(),
            participant: viewer.to_owned(),
            role: p.role,
            name: p.name.clone(),
            status: p.status,
            head_seq: self.head_seq(),
            roster: self.roster_for(viewer, online),
            caucuses,
            ice_servers: vec![],
        })
    }
}

#[cfg(test)]
mod tests;
