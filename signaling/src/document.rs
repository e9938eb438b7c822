//! Shared documents of a case: which exist, and who may read or write each one.
//!
//! A case has one agreement draft (`agreement`) that everyone admitted reads and the mediator
//! writes, and one private notes document per caucus (`caucus-<caucus id>`, e.g. `caucus-k12`)
//! that only that caucus's members may open (DESIGN.md, decision 5; Online Mediation Rules
//! Art 18: what is said in caucus never leaves it). A mediator can let a party (or a judge) type
//! into the agreement and take that back again (`doc_permission`).
//!
//! The document server does not hold a [`crate::Room`]: after every change the room hands it a
//! [`DocPolicy`], a small snapshot of exactly what the rules need (roles, who is admitted, caucus
//! membership, write grants, revoked invites), and the document server asks the policy for each
//! connection. The rules therefore live here, next to the rest of the signaling rules, and are
//! tested without any I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::protocol::{ErrorCode, ProtocolError};
use crate::role::Role;

/// The agreement draft's document name.
pub const AGREEMENT: &str = "agreement";
/// Prefix of a caucus's private notes document: `caucus-<caucus id>`.
pub const CAUCUS_PREFIX: &str = "caucus-";
/// Longest document name accepted (a caucus id is short; this only bounds bad input).
pub const MAX_DOC_NAME: usize = 64;

/// A document of a case, by kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DocName {
    /// The agreement draft.
    Agreement,
    /// The private notes of one caucus.
    Caucus(String),
}

impl DocName {
    /// Parses a document name as it appears in a URL path. `None` for anything that is not a
    /// document name at all (whether the caucus exists is the policy's question).
    pub fn parse(name: &str) -> Option<DocName> {
        if name.len() > MAX_DOC_NAME {
            return None;
        }
        if name == AGREEMENT {
            return Some(DocName::Agreement);
        }
        let id = name.strip_prefix(CAUCUS_PREFIX)?;
        let valid = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        valid.then(|| DocName::Caucus(id.to_owned()))
    }

    /// The wire name.
    pub fn as_string(&self) -> String {
        match self {
            DocName::Agreement => AGREEMENT.to_owned(),
            DocName::Caucus(id) => format!("{CAUCUS_PREFIX}{id}"),
        }
    }
}

/// What one participant may do with one document.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocAccess {
    /// May not open it (or, if open, is disconnected).
    None,
    /// Receives every change; whatever they send that would change the document is dropped.
    Read,
    /// Reads and edits.
    Write,
}

/// What the rules need to know about one participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyEntry {
    pub role: Role,
    /// In the room (admitted, not left, removed or denied).
    pub admitted: bool,
    /// Every caucus this participant is or was a member of.
    pub caucuses: BTreeSet<String>,
    /// Documents a mediator let this participant edit.
    pub writable: BTreeSet<DocName>,
}

/// A snapshot of a case's document rules, produced by [`crate::Room::doc_policy`] after every
/// change and consulted by the document server for every connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocPolicy {
    /// Whether the case exists at all.
    pub exists: bool,
    pub participants: BTreeMap<String, PolicyEntry>,
    /// Every caucus of the case, running or ended.
    pub caucuses: BTreeSet<String>,
    /// Every invite of the case by jti: the participant it admits and whether it was revoked
    /// (connections using a revoked invite are closed at once).
    pub invites: BTreeMap<String, (String, bool)>,
}

impl DocPolicy {
    /// Whether `doc` is a document of this case. Unknown names and caucuses that never ran are
    /// `not_found`.
    pub fn check_exists(&self, doc: &DocName) -> Result<(), ProtocolError> {
        if !self.exists {
            return Err(ProtocolError::new(
                ErrorCode::CaseNotFound,
                "this case does not exist",
            ));
        }
        match doc {
            DocName::Agreement => Ok(()),
            DocName::Caucus(id) if self.caucuses.contains(id) => Ok(()),
            DocName::Caucus(_) => Err(ProtocolError::new(
                ErrorCode::NotFound,
                "this case has no such document",
            )),
        }
    }

    /// What `participant` may do with `doc` right now.
    pub fn access(&self, participant: &str, doc: &DocName) -> DocAccess {
        if self.check_exists(doc).is_err() {
            return DocAccess::None;
        }
        let Some(p) = self.participants.get(participant) else {
            return DocAccess::None;
        };
        if !p.admitted {
            return DocAccess::None;
        }
        match doc {
            DocName::Agreement if p.role == Role::Mediator || p.writable.contains(doc) => {
                DocAccess::Write
            }
            DocName::Agreement => DocAccess::Read,
            DocName::Caucus(id) if p.caucuses.contains(id) => DocAccess::Write,
            DocName::Caucus(_) => DocAccess::None,
        }
    }

    /// Whether this invite was revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.invites.get(jti).is_some_and(|(_, revoked)| *revoked)
    }

    /// Checks a verified token's invite against the case record, with the same codes as a
    /// signaling `join`: unknown (or not matching the record) and revoked invites are refused.
    pub fn check_invite(&self, jti: &str, participant: &str) -> Result<(), ProtocolError> {
        match self.invites.get(jti) {
            None => Err(ProtocolError::new(
                ErrorCode::TokenUnknown,
                "this invite was not issued for this case",
            )),
            Some((_, true)) => Err(ProtocolError::new(
                ErrorCode::TokenRevoked,
                "this invite has been revoked",
            )),
            Some((p, false)) if p != participant => Err(ProtocolError::new(
                ErrorCode::TokenUnknown,
                "the invite does not match the case record",
            )),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_round_trip() {
        assert_eq!(DocName::parse("agreement"), Some(DocName::Agreement));
        assert_eq!(
            DocName::parse("caucus-k12"),
            Some(DocName::Caucus("k12".into()))
        );
        for bad in [
            "",
            "Agreement",
            "caucus-",
            "caucus-k/1",
            "caucus-k 1",
            "notes",
            "../agreement",
        ] {
            assert_eq!(DocName::parse(bad), None, "{bad:?}");
        }
        assert_eq!(DocName::parse(&"caucus-".repeat(20)), None);
        for name in ["agreement", "caucus-k7"] {
            assert_eq!(DocName::parse(name).unwrap().as_string(), name);
        }
    }
}
