//! Roles and the permission matrix.
//!
//! Every rule about *who may do what* lives here, in one table ([`allowed`]), so the server, the
//! web client and the tests agree. The matrix follows DESIGN.md; `tests` below check every cell,
//! and `room.rs` tests check every message type against every role.

use serde::{Deserialize, Serialize};

/// The four roles of a mediation.
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Consumer,
    Merchant,
    Mediator,
    Judge,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Consumer, Role::Merchant, Role::Mediator, Role::Judge];

    /// Mediators and judges: the committee's and the court's people.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Mediator | Role::Judge)
    }

    /// The two sides of the dispute.
    pub fn is_party(self) -> bool {
        !self.is_staff()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Consumer => "consumer",
            Role::Merchant => "merchant",
            Role::Mediator => "mediator",
            Role::Judge => "judge",
        }
    }

    /// Parses the wire name; `None` for anything else (an unknown role in a token is refused).
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a participant may ask for. Each client message maps to at most one action
/// (`protocol::Request::action`); messages without one (ping, leave) are open to every joined
/// participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Enter the room directly instead of waiting in the lobby.
    SkipLobby,
    /// Admit or deny someone in the lobby; remove someone from the room.
    ManageParticipants,
    /// Chat (and, with the media plane, audio and video: publishing, receiving, muting, and
    /// choosing the simulcast layer of one's own received lines with `media_layer`).
    Chat,
    /// Start or end a caucus.
    Caucus,
    /// Write case notes of any scope (shared, staff, private).
    WriteNotes,
    /// Receive staff-only notes.
    ReadStaffNotes,
    /// Put terms to the parties.
    ProposeTerms,
    /// Record the outcome of the mediation.
    RecordOutcome,
    /// Accept, reject or sign terms.
    DecideTerms,
    /// Judicial confirmation (司法确认) of accepted terms.
    ConfirmTerms,
    /// Give or withdraw consent (to online mediation, to recording).
    Consent,
    /// Let a participant edit the agreement draft, or take that back.
    ManageDocuments,
}

impl Action {
    pub const ALL: [Action; 12] = [
        Action::SkipLobby,
        Action::ManageParticipants,
        Action::Chat,
        Action::Caucus,
        Action::WriteNotes,
        Action::ReadStaffNotes,
        Action::ProposeTerms,
        Action::RecordOutcome,
        Action::DecideTerms,
        Action::ConfirmTerms,
        Action::Consent,
        Action::ManageDocuments,
    ];
}

/// The permission matrix: may `role` perform `action`?
pub fn allowed(role: Role, action: Action) -> bool {
    use Action::*;
    match action {
        Chat | Consent => true,
        SkipLobby | ManageParticipants | Caucus | WriteNotes | ReadStaffNotes | ProposeTerms
        | RecordOutcome => role.is_staff(),
        DecideTerms => role.is_party(),
        ConfirmTerms => role == Role::Judge,
        ManageDocuments => role == Role::Mediator,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole matrix, written out as DESIGN.md shows it, compared cell by cell.
    #[test]
    fn matrix_matches_design() {
        // columns: consumer, merchant, mediator, judge
        let table: [(Action, [bool; 4]); 12] = [
            (Action::SkipLobby, [false, false, true, true]),
            (Action::ManageParticipants, [false, false, true, true]),
            (Action::Chat, [true, true, true, true]),
            (Action::Caucus, [false, false, true, true]),
            (Action::WriteNotes, [false, false, true, true]),
            (Action::ReadStaffNotes, [false, false, true, true]),
            (Action::ProposeTerms, [false, false, true, true]),
            (Action::RecordOutcome, [false, false, true, true]),
            (Action::DecideTerms, [true, true, false, false]),
            (Action::ConfirmTerms, [false, false, false, true]),
            (Action::Consent, [true, true, true, true]),
            (Action::ManageDocuments, [false, false, true, false]),
        ];
        assert_eq!(table.len(), Action::ALL.len());
        for (action, row) in table {
            for (i, role) in Role::ALL.into_iter().enumerate() {
                assert_eq!(allowed(role, action), row[i], "{role} {action:?}");
            }
        }
    }

    #[test]
    fn role_names_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("admin"), None);
        assert_eq!(Role::parse("Mediator"), None);
    }
}
