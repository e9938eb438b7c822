//! Invite tokens: minting and verifying JWTs with a pinned algorithm, and the admin token check.
//!
//! The algorithm is fixed by configuration; a token whose header names any other algorithm
//! (including `none`) is refused before signature checking, with its own error code, so
//! algorithm-confusion attacks have nothing to work with. Each way a token can be bad maps to a
//! distinct [`ErrorCode`]. Tokens are never logged, and error messages never repeat them.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use yuntiao_signaling::protocol::{ErrorCode, ProtocolError};
use yuntiao_signaling::InviteClaims;

use crate::config::JwtAlgorithm;

/// Signing and verifying keys for the configured algorithm.
pub struct KeyMaterial {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl KeyMaterial {
    pub fn hs256(secret: &[u8]) -> KeyMaterial {
        KeyMaterial {
            algorithm: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    pub fn from_pem_files(
        alg: JwtAlgorithm,
        private: &Path,
        public: &Path,
    ) -> anyhow::Result<KeyMaterial> {
        let private_pem = std::fs::read(private)
            .with_context(|| format!("reading private key {}", private.display()))?;
        let public_pem = std::fs::read(public)
            .with_context(|| format!("reading public key {}", public.display()))?;
        let (algorithm, encoding, decoding) = match alg {
            JwtAlgorithm::EdDsa => (
                Algorithm::EdDSA,
                EncodingKey::from_ed_pem(&private_pem).context("EdDSA private key")?,
                DecodingKey::from_ed_pem(&public_pem).context("EdDSA public key")?,
            ),
            JwtAlgorithm::Rs256 => (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(&private_pem).context("RS256 private key")?,
                DecodingKey::from_rsa_pem(&public_pem).context("RS256 public key")?,
            ),
            JwtAlgorithm::Hs256 => anyhow::bail!("HS256 uses a secret, not key files"),
        };
        Ok(KeyMaterial {
            algorithm,
            encoding,
            decoding,
        })
    }
}

/// Mints and verifies invite tokens for one deployment (issuer + audience).
pub struct TokenService {
    keys: KeyMaterial,
    issuer: String,
    audience: String,
    validation: Validation,
}

fn token_error(code: ErrorCode, message: &str) -> ProtocolError {
    ProtocolError::new(code, message)
}

impl TokenService {
    pub fn new(keys: KeyMaterial, issuer: &str, audience: &str) -> TokenService {
        let mut validation = Validation::new(keys.algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        TokenService {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            validation,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Signs claims with the configured key.
    pub fn mint(&self, claims: &InviteClaims) -> Result<String, ProtocolError> {
        jsonwebtoken::encode(
            &Header::new(self.keys.algorithm),
            claims,
            &self.keys.encoding,
        )
        .map_err(|_| token_error(ErrorCode::Internal, "could not sign the invite"))
    }

    /// Verifies a token: shape, pinned algorithm, signature, time window, issuer, audience.
    /// Case existence, role and revocation are checked against the case record by the room.
    pub fn verify(&self, token: &str) -> Result<InviteClaims, ProtocolError> {
        let malformed = || token_error(ErrorCode::TokenMalformed, "the invite link is damaged");
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header.trim_end_matches('='))
            .map_err(|_| malformed())?;
        let header: serde_json::Value = serde_json::from_slice(&header).map_err(|_| malformed())?;
        let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or("");
        let pinned = match self.keys.algorithm {
            Algorithm::HS256 => "HS256",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::RS256 => "RS256",
            _ => "",
        };
        if alg != pinned {
            return Err(token_error(
                ErrorCode::TokenAlgorithm,
                "the invite is signed with an algorithm this server does not accept",
            ));
        }
        match jsonwebtoken::decode::<InviteClaims>(token, &self.keys.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::InvalidSignature => token_error(
                    ErrorCode::TokenSignature,
                    "the invite's signature is not valid",
                ),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => token_error(
                    ErrorCode::TokenAlgorithm,
                    "the invite is signed with an algorithm this server does not accept",
                ),
                ErrorKind::ExpiredSignature => {
                    token_error(ErrorCode::TokenExpired, "the invite link has expired")
                }
                ErrorKind::ImmatureSignature => token_error(
                    ErrorCode::TokenNotYetValid,
                    "the invite link is not valid yet",
                ),
                ErrorKind::InvalidAudience => token_error(
                    ErrorCode::TokenAudience,
                    "the invite link is for another server",
                ),
                ErrorKind::InvalidIssuer => token_error(
                    ErrorCode::TokenIssuer,
                    "the invite link was issued by someone else",
                ),
                _ => malformed(),
            }),
        }
    }
}

/// Compares a presented admin bearer token with the configured one in constant time.
pub fn admin_token_matches(configured: &str, presented: &str) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    // Hash both so the comparison does not leak the length either.
    let a = sha2::Sha256::digest(configured.as_bytes());
    let b = sha2::Sha256::digest(presented.as_bytes());
    a.as_slice().ct_eq(b.as_slice()).into()
}
