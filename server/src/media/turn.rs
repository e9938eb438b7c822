//! Time-limited TURN credentials in coturn's shared-secret scheme ("TURN REST API"):
//! the username is `<expiry unix seconds>:<participant id>` and the password is
//! base64(HMAC-SHA1(secret, username)). coturn, configured with `use-auth-secret` and the same
//! `static-auth-secret`, checks them without any call to us.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use yuntiao_signaling::protocol::IceServer;

/// TURN configuration: URLs handed to clients and the secret shared with coturn.
#[derive(Clone, Debug)]
pub struct TurnConfig {
    pub urls: Vec<String>,
    pub secret: String,
    /// Lifetime of a credential, seconds.
    pub ttl_secs: i64,
}

impl TurnConfig {
    /// Credentials for `participant`, valid until `now + ttl`.
    pub fn credentials(&self, participant: &str, now_unix: i64) -> IceServer {
        let username = format!("{}:{}", now_unix + self.ttl_secs, participant);
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(self.secret.as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(username.as_bytes());
        let credential =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        IceServer {
            urls: self.urls.clone(),
            username: Some(username),
            credential: Some(credential),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credential is what coturn computes for the same secret and username.
    #[test]
    fn coturn_rest_credentials() {
        let t = TurnConfig {
            urls: vec!["turn:turn.example.org:3478?transport=udp".into()],
            secret: "north".into(),
            ttl_secs: 3600,
        };
        let c = t.credentials("p_1", 1_700_000_000);
        assert_eq!(c.username.as_deref(), Some("1700003600:p_1"));
        // HMAC-SHA1("north", "1700003600:p_1"), base64 — computed independently with
        // `printf %s 1700003600:p_1 | openssl dgst -sha1 -hmac north -binary | base64`.
        assert_eq!(c.credential.as_deref(), Some(EXPECTED));
    }

    const EXPECTED: &str = "IdCNgzldQA2eeP1zXEA+X2KPSPQ=";
}
