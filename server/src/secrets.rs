//! Server secrets: the invite-token signing key and the admin token.
//!
//! In production (`--production`) both must be configured, and the server refuses to start
//! otherwise. In dev mode, missing ones are generated once, kept in `<data>/secrets.json`
//! (mode 0600) so links stay valid across restarts, and the admin token is printed at start.

use std::path::Path;

use anyhow::{bail, Context};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::{JwtAlgorithm, ServeArgs};

/// The file dev-mode secrets are kept in, inside the data directory.
pub const SECRETS_FILE: &str = "secrets.json";

#[derive(Serialize, Deserialize, Clone)]
pub struct DevSecrets {
    pub jwt_secret: String,
    pub admin_token: String,
}

/// Secrets the server runs with.
pub struct Secrets {
    pub admin_token: String,
    pub jwt: crate::auth::KeyMaterial,
    /// Set when the admin token was generated now and must be shown to the operator.
    pub generated_admin_token: bool,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Reads the dev secrets file, if any.
pub fn read_dev_secrets(data_dir: &Path) -> anyhow::Result<Option<DevSecrets>> {
    let path = data_dir.join(SECRETS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_dev_secrets(data_dir: &Path, s: &DevSecrets) -> anyhow::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join(SECRETS_FILE);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(&serde_json::to_vec_pretty(s)?)?;
    f.sync_all()?;
    Ok(())
}

/// Resolves the secrets from configuration, generating dev ones where allowed.
pub fn load(args: &ServeArgs) -> anyhow::Result<Secrets> {
    let asymmetric = args.jwt_algorithm != JwtAlgorithm::Hs256;
    if args.production {
        if args.admin_token.as_deref().is_none_or(|t| t.len() < 16) {
            bail!("--production needs --admin-token (YUNTIAO_ADMIN_TOKEN), at least 16 characters");
        }
        if !asymmetric && args.jwt_secret.as_deref().is_none_or(|s| s.len() < 32) {
            bail!("--production needs --jwt-secret (YUNTIAO_JWT_SECRET), at least 32 bytes");
        }
    }
    let mut dev: Option<DevSecrets> = None;
    let mut generated_admin_token = false;
    let mut dev_secrets = |args: &ServeArgs| -> anyhow::Result<DevSecrets> {
        if let Some(d) = &dev {
            return Ok(d.clone());
        }
        let d = match read_dev_secrets(&args.data_dir)? {
            Some(d) => d,
            None => {
                let d = DevSecrets {
                    jwt_secret: random_hex(32),
                    admin_token: random_hex(24),
                };
                write_dev_secrets(&args.data_dir, &d)?;
                generated_admin_token = true;
                d
            }
        };
        dev = Some(d.clone());
        Ok(d)
    };
    let admin_token = match &args.admin_token {
        Some(t) => t.clone(),
        None => dev_secrets(args)?.admin_token,
    };
    let jwt = if asymmetric {
        let (Some(private), Some(public)) = (&args.jwt_private_key, &args.jwt_public_key) else {
            bail!("--jwt-algorithm EdDSA/RS256 needs --jwt-private-key and --jwt-public-key");
        };
        crate::auth::KeyMaterial::from_pem_files(args.jwt_algorithm, private, public)?
    } else {
        let secret = match &args.jwt_secret {
            Some(s) if s.len() >= 32 => s.clone(),
            Some(_) => bail!("--jwt-secret must be at least 32 bytes"),
            None => dev_secrets(args)?.jwt_secret,
        };
        crate::auth::KeyMaterial::hs256(secret.as_bytes())
    };
    Ok(Secrets {
        admin_token,
        jwt,
        generated_admin_token,
    })
}
