//! Yuntiao signaling: the mediation protocol and session logic, with no I/O.
//!
//! This crate is the sans-I/O core of the server, in the style of str0m: a [`room::Room`] is a
//! state machine. The server feeds it inputs (a participant's request, an admin command, the
//! current time as a number) and gets back outputs to act on: event drafts to seal and persist,
//! what each participant may see, and effects such as "close this participant's connection".
//! It never touches a socket, a clock or a database, so every rule is tested deterministically.
//!
//! * [`role`]: the roles and the permission matrix.
//! * [`protocol`]: the wire messages of protocol v1 and the error codes.
//! * [`event`]: case events, their visibility and the hash chain.
//! * [`room`]: the room state machine, a fold of the case's events.
//! * [`token`]: the claims of an invite token.
//! * [`document`]: the shared documents of a case and who may read or write them.
//! * `typescript` (tests only): generates the web client's protocol types from these ones.

pub mod document;
pub mod event;
pub mod protocol;
pub mod role;
pub mod room;
pub mod token;
mod typescript;

pub use event::{Draft, Event, EventBody, Visibility};
pub use protocol::{ErrorCode, ProtocolError, Request, ServerMessage};
pub use role::{Action, Role};
pub use room::Room;
pub use token::InviteClaims;
