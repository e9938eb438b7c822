//! Command line and environment configuration.
//!
//! Every `serve` option can also be given as an environment variable (`YUNTIAO_*`), which is
//! how the compose file and systemd units configure the server. Secrets are best passed that
//! way or as files, never on a shared machine's command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "yuntiao",
    version,
    about = "Yuntiao (云调) cloud mediation server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Mint an invite link for an existing case (asks the running server's admin API).
    Invite(InviteArgs),
    /// Verify the hash chain of a case's record (asks the running server's admin API).
    Verify(VerifyArgs),
}

/// Signing algorithm for invite tokens. The server accepts only the configured one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "EdDSA")]
    EdDsa,
    #[value(name = "RS256")]
    Rs256,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on for HTTP and websockets.
    #[arg(long, env = "YUNTIAO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Public base URL of this server, used in invite links and as the token audience.
    /// Defaults to http://<listen>.
    #[arg(long, env = "YUNTIAO_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Data directory: the embedded store and, in dev mode, the generated secrets.
    #[arg(long = "data", env = "YUNTIAO_DATA", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Use Redis at this URL as the store instead of the embedded one.
    #[arg(long, env = "YUNTIAO_REDIS")]
    pub redis: Option<String>,
    /// Prefix of every Redis key this server writes.
    #[arg(long, env = "YUNTIAO_REDIS_PREFIX", default_value = "yt:")]
    pub redis_prefix: String,
    /// Refuse to start without configured secrets (no generated dev secrets).
    #[arg(long, env = "YUNTIAO_PRODUCTION")]
    pub production: bool,
    /// Bearer token guarding the admin API.
    #[arg(long, env = "YUNTIAO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Invite-token algorithm.
    #[arg(
        long,
        env = "YUNTIAO_JWT_ALGORITHM",
        value_enum,
        default_value = "HS256"
    )]
    pub jwt_algorithm: JwtAlgorithm,
    /// HS256 secret (at least 32 bytes).
    #[arg(long, env = "YUNTIAO_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM private key for EdDSA or RS256.
    #[arg(long, env = "YUNTIAO_JWT_PRIVATE_KEY")]
    pub jwt_private_key: Option<PathBuf>,
    /// PEM public key for EdDSA or RS256.
    #[arg(long, env = "YUNTIAO_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Token issuer (`iss`).
    #[arg(long, env = "YUNTIAO_ISSUER", default_value = "yuntiao")]
    pub issuer: String,
    /// Largest websocket message accepted, in bytes; larger ones get `frame_too_large`.
    #[arg(long, env = "YUNTIAO_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,
    /// Sustained messages per second allowed on one connection.
    #[arg(long, env = "YUNTIAO_RATE_LIMIT", default_value_t = 20.0)]
    pub rate_limit: f64,
    /// Burst of messages allowed on one connection above the sustained rate.
    #[arg(long, env = "YUNTIAO_RATE_BURST", default_value_t = 60.0)]
    pub rate_burst: f64,
    /// Largest message on a shared-document websocket, in bytes (a whole document's state can
    /// arrive in one sync message).
    #[arg(long, env = "YUNTIAO_DOC_MAX_FRAME_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub doc_max_frame_bytes: usize,
    /// Sustained messages per second on one shared-document websocket (one per keystroke).
    #[arg(long, env = "YUNTIAO_DOC_RATE_LIMIT", default_value_t = 200.0)]
    pub doc_rate_limit: f64,
    /// Burst of messages allowed on one shared-document websocket (a paste, a reconnect).
    #[arg(long, env = "YUNTIAO_DOC_RATE_BURST", default_value_t = 1000.0)]
    pub doc_rate_burst: f64,
    /// Updates appended to a document's log before it is compacted into a snapshot.
    #[arg(long, env = "YUNTIAO_DOC_SNAPSHOT_EVERY", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub doc_snapshot_every: u64,
    /// UDP address of the media plane (one port for every peer connection).
    #[arg(long, env = "YUNTIAO_MEDIA_LISTEN", default_value = "127.0.0.1:7882")]
    pub media_listen: std::net::SocketAddr,
    /// Public IP to advertise in ICE candidates when the server is behind 1:1 NAT (required when
    /// --media-listen binds 0.0.0.0 or ::).
    #[arg(long, env = "YUNTIAO_MEDIA_PUBLIC_IP")]
    pub media_public_ip: Option<std::net::IpAddr>,
    /// TCP address for ICE-TCP (RFC 6544), for clients on networks that block UDP; off unless
    /// set (e.g. 0.0.0.0:7881 with --media-public-ip).
    #[arg(long, env = "YUNTIAO_MEDIA_TCP_LISTEN")]
    pub media_tcp_listen: Option<std::net::SocketAddr>,
    /// TURN server URLs handed to clients (e.g. turn:turn.example.org:3478?transport=udp);
    /// repeat the flag or separate with commas.
    #[arg(long, env = "YUNTIAO_TURN_URL", value_delimiter = ',')]
    pub turn_url: Vec<String>,
    /// Secret shared with coturn (`static-auth-secret`) for time-limited credentials.
    #[arg(long, env = "YUNTIAO_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// Lifetime of TURN credentials.
    #[arg(long, env = "YUNTIAO_TURN_TTL", default_value = "12h")]
    pub turn_ttl: humantime::Duration,
    /// Default lifetime of an invite when the request names none.
    #[arg(long, env = "YUNTIAO_INVITE_TTL", default_value = "7d")]
    pub invite_ttl: humantime::Duration,
}

impl ServeArgs {
    pub fn public_url(&self) -> String {
        let url = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen));
        url.trim_end_matches('/').to_owned()
    }
}

/// How the CLI reaches a running server's admin API.
#[derive(Args, Debug, Clone)]
pub struct AdminClientArgs {
    /// Base URL of the running server.
    #[arg(long, env = "YUNTIAO_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Admin token; defaults to the dev-mode token stored in the data directory.
    #[arg(long, env = "YUNTIAO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Data directory holding dev-mode secrets (used when no admin token is given).
    #[arg(long = "data", env = "YUNTIAO_DATA", default_value = "./data")]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct InviteArgs {
    #[command(flatten)]
    pub admin: AdminClientArgs,
    /// Case id.
    #[arg(long)]
    pub case: String,
    /// consumer, merchant, mediator or judge.
    #[arg(long)]
    pub role: String,
    /// Display name of the invited person.
    #[arg(long)]
    pub name: String,
    /// Lifetime of the link, e.g. 30m, 24h, 7d.
    #[arg(long)]
    pub ttl: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub admin: AdminClientArgs,
    /// Case id.
    #[arg(long)]
    pub case: String,
}
