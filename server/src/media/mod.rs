//! The media plane: a selective forwarding unit (SFU) on str0m.
//!
//! Every participant holds one WebRTC peer connection with the server; all of them share one UDP
//! port. The engine ([`engine`]) runs on its own task, owns the socket and every peer's `Rtc`
//! (str0m's sans-I/O peer connection, in RTP mode) and forwards RTP packets from each publisher
//! to the receivers the room's media plan allows — the same rule the signaling crate applies to
//! events (`Room::media_allowed`): nobody in the lobby sends or receives, and caucus members
//! hear and see only each other. A plan change stops forwarding at once, then renegotiates the
//! receivers' peer connections (tracks added, or set inactive) so clients learn what changed.
//!
//! The server is ICE-lite with only its own host candidate(s): it never sends connectivity
//! checks to addresses a client names, so client candidates cannot make it send traffic anywhere,
//! and clients only ever see the server's address — never another participant's.
//!
//! Simulcast: a publisher may send several encodings (rids) of its video on one line; each
//! receiver gets one of them at a time, as one continuous stream — the layer it asked for with
//! `media_layer` (default: the best), or the next one down while that one is not arriving. See
//! [`engine`] for how layers are switched.
//!
//! Room tasks talk to the engine through a [`MediaHandle`].

mod downlink;
pub mod engine;
mod routes;
pub mod tcp;
pub mod turn;
mod udp;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use yuntiao_signaling::protocol::{ErrorCode, LayerQuality, ProtocolError};

use crate::rooms::Outbound;

/// Receive buffer asked for on the media socket.
const RECV_BUFFER: usize = 8 * 1024 * 1024;

/// Where the media plane listens and what address it advertises.
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// UDP address the shared media socket binds.
    pub listen: SocketAddr,
    /// Address put in the server's ICE candidate, when it differs from `listen` (1:1 NAT).
    pub public_ip: Option<IpAddr>,
    /// TCP address for ICE-TCP (a passive candidate), if enabled.
    pub tcp_listen: Option<SocketAddr>,
}

/// A participant's peer connection is identified by case and participant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    pub case: String,
    pub participant: String,
}

/// Who may receive whose media in one case: receiver → senders.
pub type MediaPlan = BTreeMap<String, BTreeSet<String>>;

pub(crate) enum Command {
    Offer {
        key: PeerKey,
        id: Option<String>,
        sdp: String,
        out: mpsc::Sender<Outbound>,
        reply: oneshot::Sender<Result<(), ProtocolError>>,
    },
    Answer {
        key: PeerKey,
        sdp: String,
        reply: oneshot::Sender<Result<(), ProtocolError>>,
    },
    Plan {
        case: String,
        plan: MediaPlan,
    },
    Remove {
        key: PeerKey,
    },
    Layer {
        key: PeerKey,
        mid: String,
        quality: LayerQuality,
        reply: oneshot::Sender<Result<(), ProtocolError>>,
    },
}

/// Counters of the media plane, exported on `/metrics`.
#[derive(Default, Debug)]
pub struct MediaStats {
    pub peers: AtomicU64,
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub packets_forwarded: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    /// Packets not forwarded because the plan forbids it (lobby, caucus) — by design.
    pub packets_withheld: AtomicU64,
    /// Packets dropped: send buffer full, unknown source, socket errors.
    pub packets_dropped: AtomicU64,
    pub udp_garbage: AtomicU64,
    /// Simulcast layer switches made on receivers' lines.
    pub layer_switches: AtomicU64,
    /// Video packets not sent to a receiver whose downlink is protected (`downlink`).
    pub packets_held_downlink: AtomicU64,
    /// Downlink protection's steps down (less video) and up (more again).
    pub downlink_steps_down: AtomicU64,
    pub downlink_steps_up: AtomicU64,
    /// Per-peer figures, refreshed by the engine about once a second.
    pub per_peer: std::sync::Mutex<Vec<PeerStats>>,
}

/// One peer's figures for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct PeerStats {
    pub case: String,
    pub participant: String,
    /// Bits per second received from this peer over the last interval.
    pub bitrate_in: f64,
    /// Bits per second forwarded to this peer over the last interval.
    pub bitrate_out: f64,
    /// Fraction of packets lost on the way in (from RTP sequence gaps), 0..1.
    pub loss_in: f64,
    /// The loss the participant reported on what the server sent it, less what was already
    /// lost upstream, over the last second (`None`: no receiver report in it).
    pub loss_out: Option<f64>,
    /// The queueing delay on the way to the participant over the last second, in seconds: its
    /// highest reported round trip above its lowest of the last 30 s (`None`: none reported).
    pub queue_out: Option<f64>,
    /// 0: all video, 1: reduced (lowest simulcast layers), 2: no video (see `downlink`).
    pub video_level: u8,
}

impl MediaStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The room tasks' way to the media engine. Cheap to clone.
#[derive(Clone)]
pub struct MediaHandle {
    tx: mpsc::Sender<Command>,
    pub stats: Arc<MediaStats>,
    pub advertised: SocketAddr,
    /// The ICE-TCP candidate's address, when enabled.
    pub advertised_tcp: Option<SocketAddr>,
}

fn stopped() -> ProtocolError {
    ProtocolError::new(ErrorCode::Internal, "the media plane is not running")
}

impl MediaHandle {
    /// Binds the media socket and starts the engine.
    pub async fn start(config: MediaConfig) -> anyhow::Result<MediaHandle> {
        // DTLS and SRTP through the aws-lc-rs provider (built in, no system OpenSSL needed).
        // Installing twice is a no-op.
        str0m::crypto::from_feature_flags().install_process_default();
        let socket = tokio::net::UdpSocket::bind(config.listen).await?;
        // One socket carries every participant's media: a deep receive buffer absorbs the
        // moments the engine task is not scheduled (the kernel caps it at net.core.rmem_max).
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(RECV_BUFFER);
        let local = socket.local_addr()?;
        let advertised = SocketAddr::new(config.public_ip.unwrap_or(local.ip()), local.port());
        let stats = Arc::new(MediaStats::default());
        let (tx, rx) = mpsc::channel(4096);
        let (advertised_tcp, tcp_rx) = match config.tcp_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                let local = listener.local_addr()?;
                let advertised =
                    SocketAddr::new(config.public_ip.unwrap_or(local.ip()), local.port());
                let (tcp_tx, tcp_rx) = mpsc::channel(4096);
                tokio::spawn(tcp::accept_loop(listener, tcp_tx));
                (Some(advertised), Some(tcp_rx))
            }
            None => (None, None),
        };
        let engine = engine::Engine::new(advertised, advertised_tcp, stats.clone());
        // The engine runs on a thread of its own, in a single-threaded runtime: on the shared
        // runtime it woke on whichever worker thread had polled the socket, so its state (every
        // peer's `Rtc`) moved between cores' caches wake-up after wake-up. The socket moves to
        // that runtime's reactor; the channels work across runtimes.
        let socket = socket.into_std()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("yuntiao-media".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::UdpSocket::from_std(socket) {
                        Ok(socket) => engine.run(socket, rx, tcp_rx).await,
                        Err(e) => tracing::error!(error = %e, "media socket unusable"),
                    }
                })
            })?;
        Ok(MediaHandle {
            tx,
            stats,
            advertised,
            advertised_tcp,
        })
    }

    /// Accepts a client's SDP offer (first or renegotiation). The engine itself sends the
    /// `media_answer` (with request `id`) on `out`, so it always precedes any `media_offer` the
    /// engine sends next on the same connection.
    pub async fn offer(
        &self,
        key: PeerKey,
        id: Option<String>,
        sdp: String,
        out: mpsc::Sender<Outbound>,
    ) -> Result<(), ProtocolError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Offer {
                key,
                id,
                sdp,
                out,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Applies a client's answer to the server's last offer.
    pub async fn answer(&self, key: PeerKey, sdp: String) -> Result<(), ProtocolError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Answer { key, sdp, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Sets who may receive whom in a case; takes effect for the next packet.
    pub async fn plan(&self, case: &str, plan: MediaPlan) {
        let _ = self
            .tx
            .send(Command::Plan {
                case: case.to_owned(),
                plan,
            })
            .await;
    }

    /// Sets the simulcast layer a participant wants on one of its received video lines.
    pub async fn layer(
        &self,
        key: PeerKey,
        mid: String,
        quality: LayerQuality,
    ) -> Result<(), ProtocolError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Layer {
                key,
                mid,
                quality,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Closes a participant's peer connection at once (left, removed, revoked, disconnected).
    pub async fn remove(&self, key: PeerKey) {
        let _ = self.tx.send(Command::Remove { key }).await;
    }
}
