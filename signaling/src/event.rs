//! Case events: the durable record of a mediation, and its hash chain.
//!
//! Every state change of a case is an [`Event`] appended to the case's log before it is
//! acknowledged or delivered (DESIGN.md, decision 1). Each event carries a [`Visibility`] that
//! decides who may ever receive it (live or on resume), and the hash of its predecessor, so that
//! the record is tamper-evident (全程留痕): [`verify_chain`] recomputes every link.
//!
//! The hash of an event is SHA-256 over `prev_hash`, a newline, and the canonical JSON of the
//! event without its `hash` field (serde_json with the field order of these structs). The first
//! event's `prev_hash` is [`GENESIS_HASH`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::role::Role;

/// `prev_hash` of a case's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who may receive an event.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Visibility {
    /// Every admitted participant.
    Everyone,
    /// Mediators and judges only.
    Staff,
    /// The members of one caucus (fixed when the caucus started). Staff outside the caucus do
    /// not receive it either: what is said in caucus stays in caucus (Art 18).
    Caucus { caucus: String },
    /// One participant (a private note's author).
    Participant { participant: String },
}

/// Scope of a case note, chosen by its author.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteScope {
    /// Part of the record everyone in the room sees (inside a caucus: its members).
    Shared,
    /// Mediators and judges only.
    Staff,
    /// The author only.
    Private,
}

/// How a mediation ended.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Settled,
    PartiallySettled,
    /// Requires a reason (Art 21).
    Failed,
    Withdrawn,
    ReferredToCourt,
}

/// What a participant consents to.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentKind {
    /// Consent to mediating online (Art 4).
    OnlineMediation,
    /// Consent to the session being recorded (Art 22).
    Recording,
}

/// A participant named when the case was created.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseParticipant {
    pub participant: String,
    pub role: Role,
    pub name: String,
}

/// Whether a newly joined participant waits in the lobby or entered directly.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinedAs {
    Lobby,
    Admitted,
}

/// The kinds of events, with their data.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    CaseCreated {
        case: String,
        title: String,
        participants: Vec<CaseParticipant>,
    },
    /// An invite link was minted (the token itself is never stored).
    InviteIssued {
        jti: String,
        participant: String,
        role: Role,
        name: String,
        expires_at: i64,
    },
    InviteRevoked {
        jti: String,
    },
    ParticipantJoined {
        participant: String,
        role: Role,
        name: String,
        joined_as: JoinedAs,
    },
    Admitted {
        participant: String,
        by: String,
        /// The admitted participant's role and name, so that everyone in the room learns who
        /// joined them (parties never saw the `participant_joined` from the lobby).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        role: Option<Role>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        name: Option<String>,
    },
    Denied {
        participant: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        reason: Option<String>,
    },
    Left {
        participant: String,
    },
    Removed {
        participant: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        reason: Option<String>,
    },
    Chat {
        from: String,
        text: String,
    },
    CaucusStarted {
        caucus: String,
        /// Empty in the view of a non-member.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        by: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        members: Vec<String>,
    },
    CaucusEnded {
        caucus: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        by: Option<String>,
    },
    NoteAdded {
        author: String,
        scope: NoteScope,
        text: String,
    },
    TermsProposed {
        terms: String,
        by: String,
        text: String,
        /// SHA-256 (hex) of `text`: what an acceptance binds to.
        text_hash: String,
        /// The shared document the text was taken from, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        document: Option<String>,
        /// That document's state vector (Yjs v1, base64) when the text was taken.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        doc_state: Option<String>,
    },
    TermsAccepted {
        terms: String,
        by: String,
        text_hash: String,
    },
    TermsRejected {
        terms: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        reason: Option<String>,
    },
    TermsConfirmed {
        terms: String,
        by: String,
        text_hash: String,
    },
    OutcomeRecorded {
        outcome: Outcome,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        terms: Option<String>,
    },
    ConsentGiven {
        participant: String,
        consent: ConsentKind,
        given: bool,
    },
    /// A mediator let `participant` edit shared document `doc` (`write: true`) or made it
    /// read-only for them again.
    DocPermission {
        doc: String,
        participant: String,
        write: bool,
        by: String,
    },
}

/// An event before it is sealed into the chain: what the room decided should happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    pub visibility: Visibility,
    pub body: EventBody,
}

/// One sealed event of a case's log.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Milliseconds since the Unix epoch, as given by the server's clock when sealed.
    pub ts: i64,
    pub visibility: Visibility,
    #[serde(flatten)]
    pub body: EventBody,
    pub prev_hash: String,
    pub hash: String,
}

/// The hashed part of an event, in canonical field order.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    ts: i64,
    visibility: &'a Visibility,
    #[serde(flatten)]
    body: &'a EventBody,
}

/// SHA-256 of a string, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn compute_hash(
    prev_hash: &str,
    seq: u64,
    ts: i64,
    visibility: &Visibility,
    body: &EventBody,
) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    let canonical = serde_json::to_vec(&Hashed {
        seq,
        ts,
        visibility,
        body,
    })
    .unwrap_or_default();
    h.update(&canonical);
    hex::encode(h.finalize())
}

impl Event {
    /// Seals a draft as the event following `prev` (`None`: the first event of the case).
    pub fn seal(draft: Draft, seq: u64, ts: i64, prev_hash: &str) -> Event {
        let hash = compute_hash(prev_hash, seq, ts, &draft.visibility, &draft.body);
        Event {
            seq,
            ts,
            visibility: draft.visibility,
            body: draft.body,
            prev_hash: prev_hash.to_owned(),
            hash,
        }
    }

    /// Recomputes this event's hash from its content.
    pub fn recompute_hash(&self) -> String {
        compute_hash(
            &self.prev_hash,
            self.seq,
            self.ts,
            &self.visibility,
            &self.body,
        )
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(data: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(data)
    }
}

/// Where a case log's hash chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum ChainError {
    #[error("event {seq}: sequence gap (expected {expected})")]
    SequenceGap { seq: u64, expected: u64 },
    #[error("event {seq}: prev_hash does not match the previous event's hash")]
    BrokenLink { seq: u64 },
    #[error("event {seq}: hash does not match its content")]
    BadHash { seq: u64 },
}

/// Verifies a whole log: consecutive seqs from 1, every link and every hash.
/// Returns the head hash on success.
pub fn verify_chain<'a>(events: impl IntoIterator<Item = &'a Event>) -> Result<String, ChainError> {
    let mut prev = GENESIS_HASH.to_owned();
    for (e, expected) in events.into_iter().zip(1u64..) {
        if e.seq != expected {
            return Err(ChainError::SequenceGap {
                seq: e.seq,
                expected,
            });
        }
        if e.prev_hash != prev {
            return Err(ChainError::BrokenLink { seq: e.seq });
        }
        if e.recompute_hash() != e.hash {
            return Err(ChainError::BadHash { seq: e.seq });
        }
        prev = e.hash.clone();
    }
    Ok(prev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Event> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let e = Event::seal(
                    Draft {
                        visibility: Visibility::Everyone,
                        body: EventBody::Chat {
                            from: "p1".into(),
                            text: format!("消息 {seq} 🙂"),
                        },
                    },
                    seq,
                    1_700_000_000_000 + seq as i64,
                    &prev,
                );
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn sealed_chain_verifies_and_survives_json() {
        let events = chain(5);
        let head = verify_chain(&events).unwrap();
        assert_eq!(head, events[4].hash);
        let round: Vec<Event> = events
            .iter()
            .map(|e| Event::from_json(&e.to_json()).unwrap())
            .collect();
        assert_eq!(verify_chain(&round).unwrap(), head);
    }

    #[test]
    fn tampering_is_detected() {
        let mut events = chain(4);
        if let EventBody::Chat { text, .. } = &mut events[2].body {
            text.push('!');
        }
        assert_eq!(verify_chain(&events), Err(ChainError::BadHash { seq: 3 }));

        let mut events = chain(4);
        events[2].visibility = Visibility::Staff;
        assert_eq!(verify_chain(&events), Err(ChainError::BadHash { seq: 3 }));

        let mut events = chain(4);
        events.remove(1);
        assert_eq!(
            verify_chain(&events),
            Err(ChainError::SequenceGap {
                seq: 3,
                expected: 2
            })
        );

        // Re-hashing a modified event does not help: the next link breaks.
        let mut events = chain(4);
        events[1].ts += 1;
        events[1].hash = events[1].recompute_hash();
        assert_eq!(
            verify_chain(&events),
            Err(ChainError::BrokenLink { seq: 3 })
        );
    }
}
