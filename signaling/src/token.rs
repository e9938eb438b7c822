//! Invite-token claims.
//!
//! An invite link is `<public-url>/join#token=<JWT>` (DESIGN.md, decision 3). The signaling crate
//! owns what the token says; signing and verifying (with a pinned algorithm) is the server's job,
//! since it holds the keys.

use serde::{Deserialize, Serialize};

/// The claims of an invite token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteClaims {
    /// Issuer: the server's configured issuer name.
    pub iss: String,
    /// Audience: the server's public URL (a token minted for another deployment is refused).
    pub aud: String,
    /// Subject: the participant id within the case.
    pub sub: String,
    /// The case the invite is for.
    pub case: String,
    /// The participant's role; kept as a string so an unknown role gets its own error code.
    pub role: String,
    /// Display name shown to the others.
    pub name: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Not valid before, seconds since the Unix epoch.
    pub nbf: i64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Unique id of this invite; revocation is by jti.
    pub jti: String,
}
