//! Random identifiers for cases, participants and invites.
//!
//! Ids are random rather than sequential so that one case's id says nothing about another's and
//! cannot be guessed from a neighbour's link.

use rand::RngCore;

fn random(prefix: &str, bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    format!("{prefix}{}", hex::encode(buf))
}

/// A case id, e.g. `c_3f9a0c1b2d4e5f60`.
pub fn case_id() -> String {
    random("c_", 8)
}

/// A participant id, e.g. `p_a1b2c3d4e5`.
pub fn participant_id() -> String {
    random("p_", 5)
}

/// An invite's `jti`.
pub fn invite_id() -> String {
    random("i_", 12)
}
