//! The SFU engine: one task, one UDP socket, every peer's str0m `Rtc`.
//!
//! The loop feeds datagrams, commands and timeouts to the peers, then drains their outputs:
//! transmits go to the socket, RTP packets are forwarded to the receivers allowed by the case's
//! media plan, keyframe requests travel back to the publisher. str0m runs in RTP mode, so
//! payloads are forwarded as they came (no depacketizing); only SSRC, payload type, sequence
//! numbers and header extensions are rewritten per receiver.
//!
//! Simulcast: a publisher's video line may carry several encodings, told apart by their rid
//! (`a=simulcast:send` in its offer; str0m maps each rid's SSRC from the RTP header extensions).
//! Each receiver's line carries one of them at a time ([`OutTrack::layers`]): the best layer
//! that is arriving and not above the quality the receiver asked for (`media_layer`, default
//! the best), else the lowest one arriving above it. A layer counts as stopped when str0m
//! reports its stream paused ([`PAUSE_AFTER`] without packets) and as flowing again with its
//! next packet. A change of layer is made at a keyframe of the new layer, which the engine asks
//! the publisher for (PLI on that rid); until it comes, the old layer goes on. At the switch the
//! outgoing stream is kept continuous: sequence numbers go on from the last one sent, the RTP
//! timestamp goes on from the last one sent plus the wall-clock time between the two packets
//! (layers have unrelated timestamp bases), and VP8 picture IDs and TL0PICIDX go on from the
//! last ones sent (a jump would make a receiver's decoder treat the new layer's frames as
//! missing references or as old frames). Layers are ranked by their rid names when they are a
//! known scheme (`q`/`h`/`f`, `l`/`m`/`h`, `low`/`medium`/`high`, numbers), else in the order of
//! the publisher's `a=simulcast` line, taken as smallest first (how browsers list
//! `sendEncodings` in the usual configuration).
//!
//! Downlink protection ([`super::downlink`]): each receiver's reported loss and round trip on
//! the streams sent to it (str0m's per-stream stats events, from its RTCP receiver reports)
//! sets how much video it gets: all, the lowest simulcast layer (a cap over its `media_layer`
//! choice), or none (`forward` skips its video lines; audio goes on), and it is told with
//! `media_downlink`.
//! Video that comes back restarts its lines ([`OutTrack::restart`]: no sequence gap to NACK)
//! and asks the publishers for keyframes. str0m's delay-based estimator (`enable_bwe`) was not
//! used for this: it turns on str0m's leaky-bucket pacer, which queues every forwarded packet
//! instead of sending it at once, and its estimate only ramps up from the initial value by
//! about 5 % a step without probing (tried with the webrtc-rs test peers on loopback).
//!
//! Sending: str0m is the patched copy in `vendor/str0m` (see its YUNTIAO.md). A forwarded packet
//! leaves through `Rtc::send_rtp_now`, which makes its datagram at once when the receiver's
//! stream has nothing else waiting, without passing it through the stream's send queue, and
//! finds the stream by the SSRC memo kept on the receiver's line ([`OutTrack::ssrc`]). The
//! datagram is made by str0m's own send code, so it is counted for sender reports, cached for
//! RTX and sequenced for TWCC. Otherwise str0m queues the
//! packet and the receiver is driven as usual (a timeout, then polls): the `written` flag.
//! Received datagrams go in through the patch's `Rtc::handle_receive`, which after an RTP
//! packet skips str0m's full timeout unless one is due; `poll`, which runs right after, finds
//! the deadlines the packet moved and handles one already due at once.
//!
//! The per-packet maps (a publisher's lines, a line's fan-out, sequence statistics per layer)
//! use `rustc-hash`'s Fx hasher: their keys (mids, rids) are few per peer, bounded by the
//! negotiated lines and str0m's streams, so SipHash's protection against chosen keys buys
//! nothing there. The address routing map keeps the standard hasher: its keys are any source
//! address on the network. Per-peer deadlines live in one array beside the peers ([`Schedule`]),
//! as every wake-up reads all of them, with a list of the peers to poll and of those found
//! closed, so that a wake-up reads no other peer's state. The per-packet counters are summed in
//! the engine and added to the shared atomics once per wake-up ([`Tally`]).
//!
//! Renegotiation: when a receiver may receive a new track (a publisher added one, the plan
//! changed), the engine adds a send-only media line to the receiver's connection, or flips an
//! existing one between send-only and inactive, and sends the client a `media_offer`. One
//! server offer is outstanding per peer at a time; a client offer meanwhile wins (str0m drops
//! our pending offer) and ours is redone after.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind as Kind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc, Vp8Descriptor};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, SendNow};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use yuntiao_signaling::protocol::{
    DownlinkVideo, ErrorCode, LayerQuality, MediaKind, ProtocolError, ServerMessage, TrackInfo,
};

use super::downlink::{Downlink, Gaps, Level};
use super::routes::Routes;
use super::tcp::{self, TcpEvent};
use super::udp::{self, RecvBufs, SendQueue};
use super::{Command, MediaPlan, MediaStats, PeerKey, PeerStats};
use crate::rooms::Outbound;

/// How often per-peer bitrate and loss are refreshed for `/metrics`.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// How many already-passed deadlines one poll of a peer handles before leaving the rest to the
/// next wake-up (so that a peer that keeps asking cannot hold the engine).
const MAX_TIMEOUT_ROUNDS: u32 = 4;

/// How long a simulcast layer may send nothing before receivers fall back to another one.
const PAUSE_AFTER: Duration = Duration::from_secs(1);
/// How often a keyframe of the layer a receiver waits for is asked for again.
const LAYER_KEYFRAME_RETRY: Duration = Duration::from_millis(500);

struct InTrack {
    kind: Kind,
    /// Sequence statistics per encoding (rid; `None` without simulcast), for the loss figure.
    seqs: FxHashMap<Option<Rid>, SeqStat>,
    /// Simulcast layers, smallest first; empty without simulcast.
    layers: Vec<Layer>,
}

#[derive(Default)]
struct SeqStat {
    first: Option<u64>,
    max: u64,
    received: u64,
}

#[derive(Clone, Copy, Debug)]
struct Layer {
    rid: Rid,
    /// A packet of it arrived and str0m has not reported it paused since.
    flowing: bool,
}

/// Which layer a receiver's line carries, and how its stream is kept continuous across
/// switches (see the module docs).
#[derive(Default)]
struct LayerState {
    quality: Option<LayerQuality>,
    /// The layer forwarded now.
    current: Option<Rid>,
    /// The layer to switch to at its next keyframe, and when its keyframe was last asked for.
    target: Option<(Rid, Instant)>,
    /// Packets of the current layer below this sequence number predate the switch (dropped).
    switch_seq: u64,
    /// Added to the current layer's RTP timestamps.
    ts_offset: u32,
    /// The last timestamp sent, and when its packet arrived.
    last_ts: Option<(u32, Instant)>,
    /// Added to the current layer's VP8 picture ID and TL0PICIDX, and the last ones sent.
    pid_offset: u16,
    tl0_offset: u8,
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
}

struct OutTrack {
    mid: Mid,
    kind: Kind,
    /// The publisher and the publisher's mid this line carries.
    src: (String, Mid),
    /// Sending (the plan allows it and the source exists) or inactive.
    active: bool,
    /// Next outgoing sequence number, and the offset from the source's numbers; reset after a
    /// pause so receivers see no gap to NACK.
    next_seq: u64,
    seq_offset: Option<i64>,
    /// The receiver's payload type for each of the source's (`None`: the receiver has no
    /// matching codec), once the line is negotiated.
    pt_map: Vec<(Pt, Option<Pt>)>,
    /// The last entry of `pt_map` used, kept inline: a source sends one payload type as a rule,
    /// and this saves a memory miss per forwarded packet on a busy server.
    last_pt: Option<(Pt, Option<Pt>)>,
    /// The SSRC of this line's send stream, as str0m's `send_rtp_now` last found it: it takes
    /// the stream by a hash lookup instead of searching the peer's send streams by mid.
    ssrc: Option<Ssrc>,
    /// Simulcast layer selection for this line (unused when the source has no layers).
    layers: LayerState,
    /// Its source has sent simulcast layers (so downlink protection can reduce it).
    simulcast: bool,
    /// Video given back after downlink protection paused it (no simulcast): nothing is sent
    /// until a keyframe, which was last asked for then (a receiver cannot decode the frames
    /// before one).
    await_keyframe: Option<Instant>,
    /// The publisher's gaps this line forwarded, to tell them from the receiver's own loss in
    /// its reports (downlink protection).
    gaps: Gaps,
    /// Since the last stats interval, from the receiver's reports: packets the server had for
    /// it, and how many of those it lost.
    reported: (u64, u64),
    /// The highest round trip of those reports.
    rtt: Option<Duration>,
}

impl OutTrack {
    /// The line starts over after a pause: new sequence offset, layer chosen again at a
    /// keyframe (the receiver's preference stays).
    fn restart(&mut self) {
        self.seq_offset = None;
        self.layers.current = None;
        self.layers.target = None;
    }
}

struct Peer {
    key: PeerKey,
    /// The DTLS certificate fingerprint of the client's first offer, as written there
    /// (`sha-256 AB:CD:…`, compared without regard to case): an offer with another one comes
    /// from a new peer connection.
    remote_fingerprint: Option<String>,
    rtc: Rtc,
    out: mpsc::Sender<Outbound>,
    inbound: FxHashMap<Mid, InTrack>,
    outbound: Vec<OutTrack>,
    pending: Option<SdpPendingOffer>,
    /// Renegotiate once the outstanding offer is answered.
    again: bool,
    /// The send lines as last agreed with the client (mid → sending), to roll back to when a
    /// client offer makes str0m discard our outstanding one.
    negotiated: HashMap<Mid, bool>,
    /// RTP was written to it since it was last polled: str0m's pacer sees written packets only
    /// after a `handle_timeout`, so one is given before the poll (saves a `poll_output` round).
    written: bool,
    tracks_sent: Option<Vec<TrackInfo>>,
    bytes_in: u64,
    bytes_out: u64,
    /// The receivers of each of its published lines (forwarding looks them up per packet).
    fanout: FxHashMap<Mid, Fanout>,
    /// How much video its downlink carries ([`super::downlink`]).
    downlink: Downlink,
}

/// The receivers of one published line, as worked out at `generation` (see `Engine::fanout`).
struct Fanout {
    generation: u64,
    /// (peer, outbound line) pairs.
    targets: Vec<(usize, usize)>,
    /// Peers of the case that do not get it.
    withheld: u64,
}

/// A peer's place in the engine's schedule. Kept in [`Engine::sched`], an array beside
/// `peers` (same index), not in [`Peer`]: every wake-up looks at every peer's deadline, and
/// reading them from one small array costs a few cache lines, where reading them from the
/// peers themselves (about 10 KiB apart) cost a cache miss per peer, which at hundreds of peers
/// was a measurable part of each wake-up.
#[derive(Clone, Copy)]
struct Sched {
    /// When str0m next needs a timeout input (from its last `Output::Timeout`).
    due: Instant,
    /// Something was fed to this peer since it was last polled (a packet, an RTP write, a
    /// timeout, a negotiation): poll it. Peers nothing happened to are not polled, so the
    /// cost of a packet does not grow with the number of peers on the server.
    touched: bool,
}

/// Every peer's [`Sched`], at the peer's index, and the list of the touched ones, so that a
/// pass over the touched peers does not read every peer's flag.
#[derive(Default)]
struct Schedule {
    slots: Vec<Sched>,
    touched: Vec<usize>,
    /// An empty list whose memory the next pass reuses.
    spare: Vec<usize>,
    /// Peers found closed when polled, to be dropped at the end of the wake-up.
    dead: Vec<usize>,
}

impl Schedule {
    /// A new peer, at the end; it is touched (polled on the next pass).
    fn push(&mut self) {
        self.slots.push(Sched {
            due: Instant::now(),
            touched: false,
        });
        self.touch(self.slots.len() - 1);
    }

    /// Peer `idx` was removed with `swap_remove`: so is its slot, and the touched list follows.
    fn swap_remove(&mut self, idx: usize) {
        let last = self.slots.len() - 1;
        self.slots.swap_remove(idx);
        for list in [&mut self.touched, &mut self.dead] {
            list.retain(|&i| i != idx);
            for i in list {
                if *i == last {
                    *i = idx;
                }
            }
        }
    }

    /// Peer `i` is to be polled on the next pass.
    fn touch(&mut self, i: usize) {
        if !self.slots[i].touched {
            self.slots[i].touched = true;
            self.touched.push(i);
        }
    }
}

struct Forward {
    from: usize,
    mid: Mid,
    rid: Option<Rid>,
    pt: Pt,
    seq: u64,
    time: u32,
    marker: bool,
    arrival: Instant,
    ext: ExtensionValues,
    payload: Arc<[u8]>,
}

/// The engine state; see the module docs.
pub struct Engine {
    advertised: SocketAddr,
    /// The passive ICE-TCP candidate's address, when ICE-TCP is on.
    advertised_tcp: Option<SocketAddr>,
    /// Open ICE-TCP connections by the client's address.
    tcp: HashMap<SocketAddr, TcpConn>,
    stats: Arc<MediaStats>,
    peers: Vec<Peer>,
    /// Each peer's schedule, at the peer's index in `peers` (see [`Schedule`]).
    sched: Schedule,
    plans: HashMap<String, MediaPlan>,
    dirty: HashSet<String>,
    forwards: VecDeque<Forward>,
    keyframes: VecDeque<(usize, Mid, Option<Rid>, KeyframeRequestKind)>,
    last_stats: Instant,
    /// Which peer a source address belongs to (see [`Routes`]).
    routes: Routes,
    /// UDP datagrams the peers produced in this wake-up, sent together at its end.
    sendq: SendQueue,
    /// Scratch list of a packet's receivers (peer, outbound line), kept to reuse its memory.
    targets: Vec<(usize, usize)>,
    /// Changes whenever who receives what may have changed (a command, a reconcile, a peer
    /// gone): the peers' cached [`Fanout`]s of an older generation are worked out again.
    generation: u64,
    /// The per-packet counters of this wake-up, added to the shared [`MediaStats`] at its end.
    tally: Tally,
}

/// Per-packet counters summed in the engine and added to the shared atomics once per wake-up:
/// an atomic add per forwarded packet and counter was a measurable part of the forwarding cost.
#[derive(Default)]
struct Tally {
    packets_in: u64,
    bytes_in: u64,
    packets_forwarded: u64,
    bytes_forwarded: u64,
    packets_withheld: u64,
    packets_held_downlink: u64,
}

impl Tally {
    fn flush(&mut self, stats: &MediaStats) {
        let t = std::mem::take(self);
        for (counter, n) in [
            (&stats.packets_in, t.packets_in),
            (&stats.bytes_in, t.bytes_in),
            (&stats.packets_forwarded, t.packets_forwarded),
            (&stats.bytes_forwarded, t.bytes_forwarded),
            (&stats.packets_withheld, t.packets_withheld),
            (&stats.packets_held_downlink, t.packets_held_downlink),
        ] {
            if n > 0 {
                MediaStats::add(counter, n);
            }
        }
    }
}

/// One ICE-TCP connection as the engine sees it.
struct TcpConn {
    writer: mpsc::Sender<Bytes>,
    /// Some peer accepted a frame from it (until then, a frame nobody accepts closes it).
    accepted: bool,
}

/// The next ICE-TCP event, or never when ICE-TCP is off.
async fn next_tcp(rx: &mut Option<mpsc::Receiver<TcpEvent>>) -> Option<TcpEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Ranks simulcast rids smallest first: by a known naming scheme, else as listed.
fn rank_layers(rids: &[Rid]) -> Vec<Rid> {
    let names: Vec<String> = rids.iter().map(|r| r.to_ascii_lowercase()).collect();
    let has = |n: &str| names.iter().any(|x| x == n);
    let scheme: &[&str] = if has("f") || has("q") {
        &["q", "h", "f"]
    } else if has("l") || has("m") {
        &["l", "m", "h"]
    } else if has("low") || has("medium") || has("high") {
        &["low", "medium", "high"]
    } else {
        &[]
    };
    let rank = |n: &String| -> Option<u64> {
        if scheme.is_empty() {
            n.parse().ok()
        } else {
            scheme.iter().position(|s| s == n).map(|p| p as u64)
        }
    };
    if names.iter().all(|n| rank(n).is_some()) {
        let mut v: Vec<(u64, Rid)> = names
            .iter()
            .zip(rids)
            .filter_map(|(n, r)| Some((rank(n)?, *r)))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v.into_iter().map(|(_, r)| r).collect()
    } else {
        rids.to_vec()
    }
}

/// The layer a receiver asking for `quality` should get: the best flowing layer not above it,
/// else the lowest flowing one above it, else none.
fn choose_layer(layers: &[Layer], quality: LayerQuality) -> Option<Rid> {
    let n = layers.len();
    if n == 0 {
        return None;
    }
    let cap = match quality {
        LayerQuality::High => n - 1,
        LayerQuality::Medium => (n - 1) / 2,
        LayerQuality::Low => 0,
    };
    layers[..=cap]
        .iter()
        .rev()
        .chain(layers[cap + 1..].iter())
        .find(|l| l.flowing)
        .map(|l| l.rid)
}

/// Whether a video payload starts a keyframe (unknown codecs: always, so switching still works).
fn starts_keyframe(codec: Option<Codec>, payload: &[u8]) -> bool {
    use str0m::format::{
        detect_av1_keyframe, detect_h264_keyframe, detect_h265_keyframe, detect_vp8_keyframe,
        detect_vp9_keyframe,
    };
    match codec {
        Some(Codec::Vp8) => detect_vp8_keyframe(payload),
        Some(Codec::Vp9) => detect_vp9_keyframe(payload),
        Some(Codec::H264) => detect_h264_keyframe(payload),
        Some(Codec::H265) => detect_h265_keyframe(payload),
        Some(Codec::Av1) => detect_av1_keyframe(payload),
        _ => true,
    }
}

/// The VP8 picture ID's width: 15 bits (M set) or 7, when the descriptor has one.
fn vp8_pid_bits(payload: &[u8]) -> u32 {
    // X, then I in the extension octet, then M in the first picture ID octet.
    let wide = payload.len() > 2 && payload[0] & 0x80 != 0 && payload[1] & 0x80 != 0 && {
        payload[2] & 0x80 != 0
    };
    if wide {
        15
    } else {
        7
    }
}

fn kind_of(k: Kind) -> MediaKind {
    match k {
        Kind::Audio => MediaKind::Audio,
        Kind::Video => MediaKind::Video,
    }
}

/// The first `a=fingerprint:` of an SDP (session or media level), normalised to lower case.
fn sdp_fingerprint(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=fingerprint:"))
        .map(|f| f.trim().to_ascii_lowercase())
}

/// A fixed message: parser errors can carry internal details (even memory addresses) that
/// clients have no business seeing; the detail goes to the debug log.
fn bad_sdp(detail: impl std::fmt::Display) -> ProtocolError {
    debug!(%detail, "SDP refused");
    ProtocolError::new(
        ErrorCode::InvalidMessage,
        "the SDP could not be parsed or negotiated",
    )
}

/// The payload types an SDP maps to codecs (`a=rtpmap`, every media section), in order.
fn rtpmaps(sdp: &str) -> Vec<(u8, Codec, String)> {
    sdp.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("a=rtpmap:")?;
            let (pt, enc) = rest.split_once(' ')?;
            let pt: u8 = pt.trim().parse().ok()?;
            let name = enc.trim().split('/').next()?;
            Some((pt, Codec::from(name), name.chars().take(32).collect()))
        })
        .collect()
}

/// The payload types already negotiated on `rtc`'s media lines `mids`, with their codecs (a
/// codec's RTX and RED payload types included).
fn negotiated_codecs(rtc: &Rtc, mids: impl Iterator<Item = Mid>) -> HashMap<u8, Codec> {
    let mut map = HashMap::new();
    let config = rtc.codec_config();
    for mid in mids {
        let Some(media) = rtc.media(mid) else {
            continue;
        };
        for &pt in media.remote_pts() {
            let Some(p) = config.find(|p| p.pt() == pt) else {
                continue;
            };
            map.insert(*pt, p.spec().codec);
            if let Some(rtx) = p.resend() {
                map.insert(*rtx, Codec::Rtx);
            }
            if let Some(red) = p.red() {
                map.insert(*red, Codec::Red);
            }
        }
    }
    map
}

/// Refuses an offer that maps a payload type already negotiated on this connection to another
/// codec: RFC 3264 §8.3.2 keeps a payload type's codec for the whole session, and str0m would
/// otherwise go on with the old meaning (or, for a payload type it had locked to another codec,
/// fail an internal assertion).
fn check_codecs_kept(rtc: &Rtc, known_mids: &[Mid], sdp: &str) -> Result<(), ProtocolError> {
    let offered_mids = sdp
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=mid:"))
        .map(|m| Mid::from(m.trim()));
    let negotiated = negotiated_codecs(rtc, known_mids.iter().copied().chain(offered_mids));
    for (pt, codec, name) in rtpmaps(sdp) {
        if let Some(&was) = negotiated.get(&pt) {
            if was != codec {
                return Err(ProtocolError::new(
                    ErrorCode::InvalidMessage,
                    format!(
                        "payload type {pt} is {was} on this connection; an offer may not map it \
                         to {name} (RFC 3264 8.3.2). Nothing was changed"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The payload type a receiver's line `mid` takes a source's packets of codec `spec` in: one
/// the receiver accepted on that line (its `remote_pts`), of the same codec and clock rate (and
/// for H.264 the same packetization mode), preferring the same format parameters; `None` when
/// the receiver shares no such codec (its packets would be undecodable there, so they are not
/// sent).
fn receiving_pt(rtc: &Rtc, mid: Mid, spec: &str0m::format::CodecSpec) -> Option<Pt> {
    let accepted = rtc.media(mid)?.remote_pts();
    rtc.codec_config()
        .iter()
        .filter(|p| accepted.contains(&p.pt()))
        .filter(|p| {
            let s = p.spec();
            s.codec == spec.codec
                && s.clock_rate == spec.clock_rate
                && (s.codec != Codec::H264
                    || s.format.packetization_mode.unwrap_or(0)
                        == spec.format.packetization_mode.unwrap_or(0))
        })
        .max_by_key(|p| {
            let f = p.spec().format;
            (
                f == spec.format,
                f.profile_level_id == spec.format.profile_level_id,
            )
        })
        .map(|p| p.pt())
}

impl Engine {
    pub fn new(
        advertised: SocketAddr,
        advertised_tcp: Option<SocketAddr>,
        stats: Arc<MediaStats>,
    ) -> Engine {
        Engine {
            advertised,
            advertised_tcp,
            tcp: HashMap::new(),
            stats,
            peers: Vec::new(),
            sched: Schedule::default(),
            plans: HashMap::new(),
            dirty: HashSet::new(),
            forwards: VecDeque::new(),
            keyframes: VecDeque::new(),
            last_stats: Instant::now(),
            routes: Routes::default(),
            sendq: SendQueue::default(),
            targets: Vec::new(),
            generation: 0,
            tally: Tally::default(),
        }
    }

    /// Runs until every [`super::MediaHandle`] is dropped.
    pub(crate) async fn run(
        mut self,
        socket: UdpSocket,
        mut rx: mpsc::Receiver<Command>,
        mut tcp_rx: Option<mpsc::Receiver<TcpEvent>>,
    ) {
        // Every datagram waiting when the engine wakes is taken at once (`recvmmsg`) and fed to
        // its peer before any peer is polled: a peer that got several packets, or had several
        // written to it, is polled once, and what they all produce leaves in one `sendmmsg`.
        let mut bufs = RecvBufs::default();
        info!(addr = %self.advertised, "media plane listening");
        loop {
            let next = self.drive(&socket);
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next));
            let mut received = false;
            tokio::select! {
                r = udp::recv_batch(&socket, &mut bufs) => match r {
                    Ok(_) => received = true,
                    Err(e) => debug!(error = %e, "udp receive error"),
                },
                Some(ev) = next_tcp(&mut tcp_rx) => self.tcp_event(ev),
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                _ = sleep => {}
            }
            if received {
                for (source, data) in bufs.iter() {
                    self.datagram(Protocol::Udp, source, data);
                }
            }
            let now = Instant::now();
            for i in 0..self.peers.len() {
                let p = &mut self.peers[i];
                if self.sched.slots[i].due <= now && p.rtc.is_alive() {
                    let _ = p.rtc.handle_input(Input::Timeout(now));
                    self.sched.touch(i);
                }
            }
        }
    }

    /// A packet from a client, over UDP or ICE-TCP. Returns whether a peer took it.
    fn datagram(&mut self, proto: Protocol, source: SocketAddr, data: &[u8]) -> bool {
        let destination = match proto {
            Protocol::Tcp => self.advertised_tcp.unwrap_or(self.advertised),
            _ => self.advertised,
        };
        let Ok(receive) = Receive::new(proto, source, destination, data) else {
            MediaStats::add(&self.stats.udp_garbage, 1);
            return false;
        };
        let input = Input::Receive(Instant::now(), receive);
        let peers = &self.peers;
        let found = self
            .routes
            .find(proto, source, peers.len(), |i| peers[i].rtc.accepts(&input));
        match found {
            Some(i) => {
                let p = &mut self.peers[i];
                // `handle_receive` skips str0m's full timeout after an RTP packet unless one is
                // due; `poll` below finds the deadlines the packet moved and handles a due one.
                if let Input::Receive(at, receive) = input {
                    if let Err(e) = p.rtc.handle_receive(at, receive) {
                        debug!(error = %e, "peer rejected input");
                    }
                }
                // Polled at once: in RTP mode str0m holds one received packet until the next
                // `poll_output`, and the next datagram of a batch may be this peer's too.
                let due = self.poll(i);
                self.sched.slots[i].due = due;
                true
            }
            None => {
                MediaStats::add(&self.stats.udp_garbage, 1);
                false
            }
        }
    }

    fn tcp_event(&mut self, ev: TcpEvent) {
        match ev {
            TcpEvent::Opened { remote, writer } => {
                self.tcp.insert(
                    remote,
                    TcpConn {
                        writer,
                        accepted: false,
                    },
                );
            }
            TcpEvent::Frame { remote, data } => {
                if !self.tcp.contains_key(&remote) {
                    return;
                }
                let taken = self.datagram(Protocol::Tcp, remote, &data);
                if let Some(c) = self.tcp.get_mut(&remote) {
                    if taken {
                        c.accepted = true;
                    } else if !c.accepted {
                        // A stranger's connection: forgetting it closes it.
                        self.tcp.remove(&remote);
                    }
                }
            }
            TcpEvent::Closed { remote } => {
                self.tcp.remove(&remote);
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        self.generation += 1;
        match cmd {
            Command::Offer {
                key,
                id,
                sdp,
                out,
                reply,
            } => {
                let r = self.offer(key, &sdp, out.clone()).map(|answer| {
                    let msg = ServerMessage::MediaAnswer { id, sdp: answer };
                    let _ = out.try_send(Outbound::Text(msg.to_json().into()));
                });
                let _ = reply.send(r);
            }
            Command::Answer { key, sdp, reply } => {
                let r = self.answer(&key, &sdp);
                let _ = reply.send(r);
            }
            Command::Plan { case, plan } => {
                if plan.is_empty() {
                    self.plans.remove(&case);
                } else {
                    self.plans.insert(case.clone(), plan);
                }
                self.dirty.insert(case);
            }
            Command::Remove { key } => {
                if let Some(i) = self.peers.iter().position(|p| p.key == key) {
                    self.peers[i].rtc.disconnect();
                    self.sched.touch(i);
                }
            }
            Command::Layer {
                key,
                mid,
                quality,
                reply,
            } => {
                let _ = reply.send(self.set_layer(&key, &mid, quality));
            }
        }
    }

    fn offer(
        &mut self,
        key: PeerKey,
        sdp: &str,
        out: mpsc::Sender<Outbound>,
    ) -> Result<String, ProtocolError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(bad_sdp)?;
        let fingerprint = sdp_fingerprint(sdp);
        let existing = self.peers.iter().position(|p| p.key == key);
        // Another DTLS certificate: a new RTCPeerConnection of the same participant (a reloaded
        // page, a client that rebuilt its connection after a network change), not a
        // renegotiation. It gets a peer of its own; once its offer is accepted the old one goes
        // (and the others' lines from it with the reconcile), so a refused offer still changes
        // nothing.
        let replaces = existing
            .filter(|i| fingerprint.is_some() && self.peers[*i].remote_fingerprint != fingerprint);
        let existing = existing.filter(|_| replaces.is_none());
        if let Some(i) = existing {
            // Checked before anything is touched, so a refused offer changes nothing.
            let p = &self.peers[i];
            let mids: Vec<Mid> = p
                .inbound
                .keys()
                .copied()
                .chain(p.outbound.iter().map(|t| t.mid))
                .collect();
            check_codecs_kept(&p.rtc, &mids, sdp)?;
        }
        let idx = match existing {
            Some(i) => i,
            None => {
                let mut rtc = Rtc::builder()
                    .set_rtp_mode(true)
                    .set_ice_lite(true)
                    .set_pause_threshold(PAUSE_AFTER)
                    // Per-stream statistics, for the loss receivers report (downlink
                    // protection); str0m gathers them once per interval, not per packet.
                    .set_stats_interval(Some(STATS_INTERVAL))
                    // Sender reports on audio every second, not every 5 s: a receiver report's
                    // round trip is that of the last sender report, and while a receiver's video
                    // is paused only its audio lines report, so with 5 s one delayed report
                    // would count for several seconds and a drained queue be seen late.
                    .set_rtcp_report_interval_audio(Duration::from_secs(1))
                    // No transport-wide sequence numbers on what the server sends: with no
                    // bandwidth estimator nothing reads the receivers' transport feedback, and
                    // without them receivers send none (about ten RTCP packets a second each
                    // that the server decrypted and threw away). Publishers still get the
                    // server's feedback on what they send, for their own estimators.
                    .set_send_twcc(false)
                    .build(Instant::now());
                let internal = |e: str0m::error::IceError| {
                    ProtocolError::new(ErrorCode::Internal, e.to_string())
                };
                let candidate = Candidate::host(self.advertised, "udp").map_err(internal)?;
                rtc.add_local_candidate(candidate);
                if let Some(tcp) = self.advertised_tcp {
                    let candidate = Candidate::builder()
                        .tcp()
                        .host(tcp)
                        .tcptype(TcpType::Passive)
                        .build()
                        .map_err(internal)?;
                    rtc.add_local_candidate(candidate);
                }
                self.peers.push(Peer {
                    key: key.clone(),
                    remote_fingerprint: fingerprint.clone(),
                    rtc,
                    out: out.clone(),
                    inbound: FxHashMap::default(),
                    outbound: Vec::new(),
                    pending: None,
                    again: false,
                    negotiated: HashMap::new(),
                    written: false,
                    tracks_sent: None,
                    bytes_in: 0,
                    bytes_out: 0,
                    fanout: FxHashMap::default(),
                    downlink: Downlink::new(Instant::now()),
                });
                self.sched.push();
                self.stats.peers.store(
                    self.peers.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                self.peers.len() - 1
            }
        };
        // Whatever happens below, this case's lines are checked again (reconcile is idempotent).
        self.dirty.insert(key.case.clone());
        self.sched.touch(idx);
        let peer = &mut self.peers[idx];
        peer.out = out;
        // A client offer wins over ours: str0m discards our pending offer, with the lines it
        // added and the directions it changed. Roll our bookkeeping back to what the client
        // agreed to; the reconcile below (the case is marked dirty) then makes those changes
        // again and offers them once this answer is out.
        if peer.pending.take().is_some() {
            peer.again = false;
            let negotiated = &peer.negotiated;
            peer.outbound.retain(|t| negotiated.contains_key(&t.mid));
            for t in &mut peer.outbound {
                let active = negotiated[&t.mid];
                if t.active != active {
                    t.active = active;
                    t.restart();
                }
            }
            peer.tracks_sent = None;
        }
        let answer = match peer.rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => {
                if existing.is_none() {
                    self.drop_peer(idx);
                }
                return Err(bad_sdp(e));
            }
        };
        let usable = answer.to_sdp_string().lines().any(|l| {
            l.starts_with("m=") && l.split_whitespace().nth(1).is_none_or(|port| port != "0")
        });
        if !usable {
            if existing.is_none() {
                self.drop_peer(idx);
            }
            return Err(ProtocolError::new(
                ErrorCode::InvalidMessage,
                "the offer has no media this server can use (Opus, VP8, VP9 or H.264)",
            ));
        }
        if let Some(old) = replaces {
            // Commands run between drives, so no queued forward refers to peer indices.
            debug_assert!(self.forwards.is_empty() && self.keyframes.is_empty());
            info!(case = %key.case, participant = %key.participant,
                "a new peer connection replaces the participant's old one");
            self.peers[old].rtc.disconnect();
            self.drop_peer(old);
        }
        self.dirty.insert(key.case.clone());
        Ok(answer.to_sdp_string())
    }

    fn answer(&mut self, key: &PeerKey, sdp: &str) -> Result<(), ProtocolError> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(bad_sdp)?;
        let i = peer_index_of(&self.peers, key)?;
        self.sched.touch(i);
        let peer = &mut self.peers[i];
        let pending = peer.pending.take().ok_or_else(|| {
            ProtocolError::new(ErrorCode::Conflict, "the server has no offer outstanding")
        })?;
        peer.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(bad_sdp)?;
        peer.negotiated = peer.outbound.iter().map(|t| (t.mid, t.active)).collect();
        if std::mem::take(&mut peer.again) {
            self.dirty.insert(key.case.clone());
        }
        // Sources now flowing to this peer need a keyframe for video to start.
        let srcs: Vec<(String, Mid)> = peer
            .outbound
            .iter()
            .filter(|t| t.active && t.kind == Kind::Video)
            .map(|t| t.src.clone())
            .collect();
        for (participant, mid) in srcs {
            if let Some(i) = self.peer_index(&key.case, &participant) {
                self.keyframes
                    .push_back((i, mid, None, KeyframeRequestKind::Pli));
            }
        }
        Ok(())
    }

    /// `media_layer`: the receiver's quality for one of its received video lines. Takes effect
    /// with the next packet of that line's source.
    fn set_layer(
        &mut self,
        key: &PeerKey,
        mid: &str,
        quality: LayerQuality,
    ) -> Result<(), ProtocolError> {
        let i = peer_index_of(&self.peers, key)?;
        let peer = &mut self.peers[i];
        let shown: String = mid.chars().take(20).collect();
        let track = peer
            .outbound
            .iter_mut()
            .find(|t| t.mid.to_string() == mid)
            .ok_or_else(|| {
                ProtocolError::new(
                    ErrorCode::NotFound,
                    format!("no received track with mid `{shown}` on this connection"),
                )
            })?;
        if track.kind != Kind::Video {
            return Err(ProtocolError::new(
                ErrorCode::InvalidMessage,
                format!("mid `{shown}` is audio, which has no layers"),
            ));
        }
        track.layers.quality = Some(quality);
        Ok(())
    }

    fn peer_index(&self, case: &str, participant: &str) -> Option<usize> {
        self.peers
            .iter()
            .position(|p| p.key.case == case && p.key.participant == participant)
    }

    fn drop_peer(&mut self, idx: usize) {
        self.generation += 1;
        self.routes.removed(idx, self.peers.len());
        let p = self.peers.swap_remove(idx);
        self.sched.swap_remove(idx);
        self.dirty.insert(p.key.case.clone());
        self.stats.peers.store(
            self.peers.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        info!(case = %p.key.case, participant = %p.key.participant, "media peer closed");
    }

    /// Polls every peer, forwards what they produced, reconciles changed cases, and returns
    /// when the engine next needs to wake up.
    fn drive(&mut self, socket: &UdpSocket) -> Instant {
        // Once a second, first: downlink protection may queue keyframe requests, which the
        // loop below sends before anything can move a peer.
        let stats_due = self.last_stats.elapsed() >= STATS_INTERVAL;
        if stats_due {
            self.refresh_stats();
        }
        let mut polling = std::mem::take(&mut self.sched.spare);
        loop {
            std::mem::swap(&mut polling, &mut self.sched.touched);
            for &i in &polling {
                self.sched.slots[i].touched = false;
                let p = &mut self.peers[i];
                if std::mem::take(&mut p.written) && p.rtc.is_alive() {
                    let _ = p.rtc.handle_input(Input::Timeout(Instant::now()));
                }
                self.sched.slots[i].due = self.poll(i);
            }
            polling.clear();
            if self.forwards.is_empty()
                && self.keyframes.is_empty()
                && self.dirty.is_empty()
                && self.sched.touched.is_empty()
            {
                break;
            }
            while let Some(f) = self.forwards.pop_front() {
                self.forward(f);
            }
            while let Some((i, mid, rid, kind)) = self.keyframes.pop_front() {
                if let Some(p) = self.peers.get_mut(i) {
                    self.sched.touch(i);
                    // Without a rid, a simulcast source has no stream to ask: the receiver's
                    // line asks for its layer's keyframe itself when it picks one (`forward`).
                    let mut api = p.rtc.direct_api();
                    if let Some(rx) = api.stream_rx_by_mid(mid, rid) {
                        rx.request_keyframe(kind);
                    }
                }
            }
            for case in std::mem::take(&mut self.dirty) {
                self.reconcile(&case);
            }
        }
        self.sched.spare = polling;
        // Dead peers (ICE gone, closed) are cleaned up; their receivers renegotiate. A peer
        // closes only on an input, after which it is polled, so the polls list them; all peers
        // are looked at once a second all the same (reading each one's `Rtc` every wake-up was
        // a cache miss per peer).
        let mut dead = std::mem::take(&mut self.sched.dead);
        if stats_due {
            dead.extend(0..self.peers.len());
        }
        dead.sort_unstable();
        dead.dedup();
        // Highest first: `drop_peer` moves the last peer into the dropped one's place.
        for &i in dead.iter().rev() {
            if i < self.peers.len() && !self.peers[i].rtc.is_alive() {
                self.drop_peer(i);
            }
        }
        dead.clear();
        self.sched.dead = dead;
        if !self.sendq.is_empty() {
            let dropped = self.sendq.flush(socket);
            MediaStats::add(&self.stats.packets_dropped, dropped as u64);
        }
        self.tally.flush(&self.stats);
        let mut next = Instant::now() + Duration::from_millis(100);
        for s in &self.sched.slots {
            next = next.min(s.due);
        }
        if !self.dirty.is_empty() {
            next = Instant::now();
        }
        next
    }

    fn poll(&mut self, i: usize) -> Instant {
        let mut rounds = 0;
        loop {
            let peer = &mut self.peers[i];
            if !peer.rtc.is_alive() {
                self.sched.dead.push(i);
                return Instant::now() + Duration::from_millis(100);
            }
            match peer.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    // A deadline that has already passed is handled at once, not on another
                    // wake-up of the engine. In RTP mode str0m asks for one after every packet
                    // written to a peer (its pacer takes stock of the send queues only in
                    // `handle_timeout`) and again after sending it, so without this each
                    // forwarded packet cost the engine two more trips through the runtime.
                    let now = Instant::now();
                    if t <= now && rounds < MAX_TIMEOUT_ROUNDS {
                        rounds += 1;
                        let _ = peer.rtc.handle_input(Input::Timeout(now));
                        continue;
                    }
                    return t;
                }
                Ok(Output::Transmit(t)) => transmit(&mut self.sendq, &self.tcp, &self.stats, t),
                Ok(Output::Event(e)) => self.event(i, e),
                Err(e) => {
                    warn!(error = %e, "media peer failed; closing it");
                    peer.rtc.disconnect();
                }
            }
        }
    }

    fn event(&mut self, i: usize, e: Event) {
        let peer = &mut self.peers[i];
        match e {
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                peer.rtc.disconnect();
            }
            Event::MediaAdded(m) => {
                let ours = peer.outbound.iter().any(|t| t.mid == m.mid);
                if !ours && matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) {
                    let rids: Vec<Rid> = m
                        .simulcast
                        .map(|s| s.recv.iter().map(|l| l.rid).collect())
                        .unwrap_or_default();
                    let layers = rank_layers(&rids)
                        .into_iter()
                        .map(|rid| Layer {
                            rid,
                            flowing: false,
                        })
                        .collect();
                    peer.inbound.insert(
                        m.mid,
                        InTrack {
                            kind: m.kind,
                            seqs: FxHashMap::default(),
                            layers,
                        },
                    );
                    self.dirty.insert(peer.key.case.clone());
                }
            }
            Event::RtpPacket(p) => {
                let ssrc = p.header.ssrc;
                let Some((mid, rid)) = peer
                    .rtc
                    .direct_api()
                    .stream_rx(&ssrc)
                    .map(|s| (s.mid(), s.rid()))
                else {
                    MediaStats::add(&self.stats.packets_dropped, 1);
                    return;
                };
                let len = p.payload.len() as u64;
                self.tally.packets_in += 1;
                self.tally.bytes_in += len;
                peer.bytes_in += len;
                let seq: u64 = *p.seq_no;
                if let Some(t) = peer.inbound.get_mut(&mid) {
                    let s = t.seqs.entry(rid).or_default();
                    s.received += 1;
                    s.first.get_or_insert(seq);
                    s.max = s.max.max(seq);
                    if let Some(rid) = rid {
                        match t.layers.iter_mut().find(|l| l.rid == rid) {
                            Some(l) => l.flowing = true,
                            // A rid the offer did not list: a layer all the same, ranked last.
                            None => t.layers.push(Layer { rid, flowing: true }),
                        }
                    }
                }
                let ext = ExtensionValues {
                    audio_level: p.header.ext_vals.audio_level,
                    voice_activity: p.header.ext_vals.voice_activity,
                    video_orientation: p.header.ext_vals.video_orientation,
                    ..Default::default()
                };
                self.forwards.push_back(Forward {
                    from: i,
                    mid,
                    rid,
                    pt: p.header.payload_type,
                    seq,
                    time: p.header.timestamp,
                    marker: p.header.marker,
                    arrival: p.timestamp,
                    ext,
                    payload: p.payload,
                });
            }
            Event::KeyframeRequest(r) => {
                // A receiver whose video is paused by downlink protection, or whose line
                // waits for the keyframe the engine asked for, asks for nothing more.
                let paused = peer.downlink.level() == Level::Paused;
                if let Some(t) =
                    peer.outbound.iter().find(|t| t.mid == r.mid).filter(|t| {
                        !(t.kind == Kind::Video && (paused || t.await_keyframe.is_some()))
                    })
                {
                    let (src, src_mid) = t.src.clone();
                    // The layer this line carries (or is about to).
                    let rid = t.layers.current.or(t.layers.target.map(|(r, _)| r));
                    let case = peer.key.case.clone();
                    if let Some(j) = self.peer_index(&case, &src) {
                        self.keyframes.push_back((j, src_mid, rid, r.kind));
                    }
                }
            }
            Event::MediaEgressStats(st) => {
                let Some(t) = peer.outbound.iter_mut().find(|t| t.mid == st.mid) else {
                    return;
                };
                // The receiver's last report (str0m repeats it until a new one comes): its
                // highest sequence number and cumulative loss (24 bits; negative, from
                // duplicates, counts as none).
                if let Some(r) = &st.remote {
                    let lost = if r.packets_lost >= 0x80_0000 {
                        0
                    } else {
                        r.packets_lost
                    };
                    if let Some((had, lost)) = t.gaps.report(*r.maximum_sequence_number, lost) {
                        t.reported.0 += had;
                        t.reported.1 += lost;
                        // Its round trip, taken only with a new report (str0m repeats the last).
                        if let Some(rtt) = st.rtt {
                            t.rtt = t.rtt.max(Some(rtt));
                        }
                    }
                }
            }
            Event::StreamPaused(sp) => {
                if let (Some(t), Some(rid)) = (peer.inbound.get_mut(&sp.mid), sp.rid) {
                    if let Some(l) = t.layers.iter_mut().find(|l| l.rid == rid) {
                        l.flowing = !sp.paused;
                    }
                }
            }
            _ => {}
        }
    }

    fn forward(&mut self, f: Forward) {
        let src_params: Option<str0m::format::CodecSpec> = self.peers[f.from]
            .rtc
            .codec_config()
            .iter()
            .find(|p| p.pt() == f.pt)
            .map(|p| p.spec());
        let codec = src_params.as_ref().map(|p| p.codec);
        let clock = src_params.as_ref().map_or(90_000, |p| p.clock_rate.get());
        // Simulcast: the source's layers (smallest first), to pick one per receiver.
        let layers: Vec<Layer> = match f.rid {
            Some(_) => self.peers[f.from]
                .inbound
                .get(&f.mid)
                .map(|t| t.layers.clone())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let rid = f.rid.filter(|_| !layers.is_empty());
        let keyframe = rid.is_some() && starts_keyframe(codec, &f.payload);
        let vp8 = match (rid, codec) {
            (Some(_), Some(Codec::Vp8)) => Vp8Descriptor::parse(&f.payload).ok(),
            _ => None,
        };
        let pid_mask: u16 = if vp8_pid_bits(&f.payload) == 15 {
            0x7fff
        } else {
            0x7f
        };
        let now = Instant::now();
        let mut asks: Vec<Rid> = Vec::new();
        let mut asks_plain = false;
        // The receivers (peer, line), worked out again only after something changed them.
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        let withheld = match self.peers[f.from].fanout.get(&f.mid) {
            Some(c) if c.generation == self.generation => {
                targets.extend_from_slice(&c.targets);
                c.withheld
            }
            _ => {
                let fanout = self.fanout(f.from, f.mid);
                targets.extend_from_slice(&fanout.targets);
                let withheld = fanout.withheld;
                self.peers[f.from].fanout.insert(f.mid, fanout);
                withheld
            }
        };
        if withheld > 0 {
            self.tally.packets_withheld += withheld;
        }
        for &(j, k) in &targets {
            let peer = &mut self.peers[j];
            let level = peer.downlink.level();
            let track = &mut peer.outbound[k];
            if level == Level::Paused && track.kind == Kind::Video {
                self.tally.packets_held_downlink += 1;
                continue;
            }
            if let Some(asked) = track.await_keyframe {
                if rid.is_none() && !starts_keyframe(codec, &f.payload) {
                    if now.saturating_duration_since(asked) >= LAYER_KEYFRAME_RETRY {
                        track.await_keyframe = Some(now);
                        if !asks_plain {
                            asks_plain = true;
                            self.keyframes.push_back((
                                f.from,
                                f.mid,
                                None,
                                KeyframeRequestKind::Pli,
                            ));
                        }
                    }
                    self.tally.packets_held_downlink += 1;
                    continue;
                }
                track.await_keyframe = None;
            }
            let known = match track.last_pt {
                Some((src, pt)) if src == f.pt => Some(pt),
                _ => track
                    .pt_map
                    .iter()
                    .find(|(src, _)| *src == f.pt)
                    .map(|&(_, pt)| pt),
            };
            let pt = match known {
                Some(pt) => {
                    track.last_pt = Some((f.pt, pt));
                    pt
                }
                None => {
                    let pt = src_params
                        .as_ref()
                        .and_then(|spec| receiving_pt(&peer.rtc, track.mid, spec));
                    // Kept once the line is negotiated (str0m does not change a line's
                    // payload types after that); until then, looked up again.
                    let negotiated = peer
                        .rtc
                        .media(track.mid)
                        .is_some_and(|m| !m.remote_pts().is_empty());
                    if negotiated {
                        track.pt_map.push((f.pt, pt));
                    }
                    pt
                }
            };
            let Some(pt) = pt else {
                MediaStats::add(&self.stats.packets_dropped, 1);
                continue;
            };
            let mut time = f.time;
            let mut patch = None;
            if let Some(rid) = rid {
                track.simulcast = true;
                let ls = &mut track.layers;
                let quality = match level {
                    // Downlink protection: the lowest layer, whatever the receiver asked for.
                    Level::Reduced => LayerQuality::Low,
                    _ => ls.quality.unwrap_or(LayerQuality::High),
                };
                let want = choose_layer(&layers, quality);
                match want {
                    Some(w) if Some(w) != ls.current => {
                        let ask = ls.target.is_none_or(|(t, at)| {
                            t != w || now.saturating_duration_since(at) >= LAYER_KEYFRAME_RETRY
                        });
                        if ask {
                            ls.target = Some((w, now));
                            if !asks.contains(&w) {
                                asks.push(w);
                            }
                        }
                    }
                    // The wanted layer is the one sent, or nothing arrives: no switch.
                    _ => ls.target = None,
                }
                if keyframe && ls.target.is_some_and(|(t, _)| t == rid) {
                    // Switch: this layer's keyframe continues the outgoing stream.
                    ls.current = Some(rid);
                    ls.target = None;
                    ls.switch_seq = f.seq;
                    track.seq_offset = Some(track.next_seq as i64 - f.seq as i64);
                    ls.ts_offset = match ls.last_ts {
                        Some((last, at)) => {
                            let gap = f.arrival.saturating_duration_since(at).as_secs_f64();
                            let step = ((gap * clock as f64) as u32).max(1);
                            last.wrapping_add(step).wrapping_sub(f.time)
                        }
                        None => 0,
                    };
                    if let Some(d) = &vp8 {
                        ls.pid_offset = match (ls.last_pid, d.picture_id()) {
                            (Some(last), Some(pid)) => last.wrapping_add(1).wrapping_sub(pid),
                            _ => 0,
                        } & pid_mask;
                        ls.tl0_offset = match (ls.last_tl0, d.tl0_pic_idx()) {
                            (Some(last), Some(t)) => last.wrapping_add(1).wrapping_sub(t),
                            _ => 0,
                        };
                    }
                    MediaStats::add(&self.stats.layer_switches, 1);
                } else if ls.current != Some(rid) || f.seq < ls.switch_seq {
                    // Another layer than the one sent, or a late packet from before the switch.
                    continue;
                }
                time = f.time.wrapping_add(ls.ts_offset);
                ls.last_ts = Some((time, f.arrival));
                if let Some(d) = &vp8 {
                    let mut b = d.patch();
                    let mut changed = false;
                    if let Some(pid) = d.picture_id() {
                        let out = pid.wrapping_add(ls.pid_offset) & pid_mask;
                        ls.last_pid = Some(out);
                        if out != pid {
                            b = b.picture_id(out);
                            changed = true;
                        }
                    }
                    if let Some(t) = d.tl0_pic_idx() {
                        let out = t.wrapping_add(ls.tl0_offset);
                        ls.last_tl0 = Some(out);
                        if out != t {
                            b = b.tl0_pic_idx(out);
                            changed = true;
                        }
                    }
                    if changed {
                        patch = b.build().ok();
                    }
                }
            }
            let offset = *track
                .seq_offset
                .get_or_insert(track.next_seq as i64 - f.seq as i64);
            let seq = (f.seq as i64 + offset).max(0) as u64;
            track.next_seq = track.next_seq.max(seq + 1);
            track.gaps.forwarded(seq);
            let nackable = track.kind == Kind::Video;
            let mid = track.mid;
            let mut write = RtpWrite::new(pt, seq.into(), time, f.arrival, f.payload.clone())
                .marker(f.marker)
                .ext_vals(f.ext.clone())
                .nackable(nackable);
            if let Some(patch) = patch {
                write = write.vp8_patch(patch);
            }
            // The common case leaves at once (see the module docs on the str0m patch); a busy
            // stream queues it and the peer is driven as usual.
            match peer
                .rtc
                .send_rtp_now(now, mid, None, &mut track.ssrc, write)
            {
                SendNow::Sent(t) => transmit(&mut self.sendq, &self.tcp, &self.stats, t),
                SendNow::Queued => {
                    self.sched.touch(j);
                    peer.written = true;
                }
                SendNow::NoStream(_) => {
                    MediaStats::add(&self.stats.packets_dropped, 1);
                    continue;
                }
            }
            let len = f.payload.len() as u64;
            peer.bytes_out += len;
            self.tally.packets_forwarded += 1;
            self.tally.bytes_forwarded += len;
        }
        self.targets = targets;
        for rid in asks {
            self.keyframes
                .push_back((f.from, f.mid, Some(rid), KeyframeRequestKind::Pli));
        }
    }

    /// Who receives the packets of peer `from`'s line `mid`: the lines of the case's other
    /// peers that the plan lets hear `from` and that carry that source, and how many peers of
    /// the case are kept from it (by the plan, or because their line is not negotiated yet).
    fn fanout(&self, from: usize, mid: Mid) -> Fanout {
        let mut out = Fanout {
            generation: self.generation,
            targets: Vec::new(),
            withheld: 0,
        };
        let (case, src) = (
            &self.peers[from].key.case,
            &self.peers[from].key.participant,
        );
        let plan = self.plans.get(case);
        for (j, p) in self.peers.iter().enumerate() {
            if j == from || p.key.case != *case {
                continue;
            }
            let allowed = plan
                .and_then(|pl| pl.get(&p.key.participant))
                .is_some_and(|s| s.contains(src));
            let line = allowed
                .then(|| {
                    p.outbound
                        .iter()
                        .position(|t| t.active && t.src.0 == *src && t.src.1 == mid)
                })
                .flatten();
            match line {
                Some(k) => out.targets.push((j, k)),
                // Not allowed, or not negotiated yet (the offer is on its way).
                None => out.withheld += 1,
            }
        }
        out
    }

    /// Brings every peer of `case` in line with the plan and the published tracks.
    fn reconcile(&mut self, case: &str) {
        self.generation += 1;
        let published: Vec<(String, Mid, Kind)> = self
            .peers
            .iter()
            .filter(|p| p.key.case == case && p.rtc.is_alive())
            .flat_map(|p| {
                p.inbound
                    .iter()
                    .map(move |(mid, t)| (p.key.participant.clone(), *mid, t.kind))
            })
            .collect();
        let plan = self.plans.get(case).cloned().unwrap_or_default();
        let mut keyframes = Vec::new();
        for j in 0..self.peers.len() {
            if self.peers[j].key.case != case || !self.peers[j].rtc.is_alive() {
                continue;
            }
            // An offer of ours is outstanding: leave this peer's lines alone (changes made now
            // could not be offered, and str0m would drop them) and redo this after the answer.
            // Forwarding already follows the new plan: `forward` checks it for every packet.
            if self.peers[j].pending.is_some() {
                self.peers[j].again = true;
                continue;
            }
            let me = self.peers[j].key.participant.clone();
            let allowed = plan.get(&me);
            self.sched.touch(j);
            let peer = &mut self.peers[j];
            let mut api = peer.rtc.sdp_api();
            let mut changed = false;
            // Existing lines: active iff the source still publishes and the plan allows it.
            for t in &mut peer.outbound {
                let want = allowed.is_some_and(|a| a.contains(&t.src.0))
                    && published
                        .iter()
                        .any(|(p, m, _)| *p == t.src.0 && *m == t.src.1);
                if want != t.active {
                    t.active = want;
                    t.restart();
                    api.set_direction(
                        t.mid,
                        if want {
                            Direction::SendOnly
                        } else {
                            Direction::Inactive
                        },
                    );
                    changed = true;
                    if want && t.kind == Kind::Video {
                        keyframes.push((t.src.clone(), case.to_owned()));
                    }
                }
            }
            // New lines for sources this peer may receive and has no line for.
            for (src, mid, kind) in &published {
                if *src == me || !allowed.is_some_and(|a| a.contains(src)) {
                    continue;
                }
                if peer
                    .outbound
                    .iter()
                    .any(|t| t.src.0 == *src && t.src.1 == *mid)
                {
                    continue;
                }
                let new_mid = api.add_media(
                    *kind,
                    Direction::SendOnly,
                    Some(src.clone()),
                    Some(format!("{src}-{mid}")),
                    None,
                );
                peer.outbound.push(OutTrack {
                    mid: new_mid,
                    kind: *kind,
                    src: (src.clone(), *mid),
                    active: true,
                    next_seq: 1,
                    seq_offset: None,
                    pt_map: Vec::new(),
                    last_pt: None,
                    ssrc: None,
                    layers: LayerState::default(),
                    simulcast: false,
                    await_keyframe: None,
                    gaps: Gaps::default(),
                    reported: (0, 0),
                    rtt: None,
                });
                changed = true;
                if *kind == Kind::Video {
                    keyframes.push(((src.clone(), *mid), case.to_owned()));
                }
            }
            if changed {
                if let Some((offer, pending)) = api.apply() {
                    peer.pending = Some(pending);
                    let msg = ServerMessage::MediaOffer {
                        sdp: offer.to_sdp_string(),
                    };
                    if peer
                        .out
                        .try_send(Outbound::Text(msg.to_json().into()))
                        .is_err()
                    {
                        MediaStats::add(&self.stats.packets_dropped, 1);
                    }
                }
            } else {
                drop(api);
            }
            let tracks: Vec<TrackInfo> = peer
                .outbound
                .iter()
                .filter(|t| t.active)
                .map(|t| TrackInfo {
                    mid: t.mid.to_string(),
                    participant: t.src.0.clone(),
                    kind: kind_of(t.kind),
                })
                .collect();
            if peer.tracks_sent.as_ref() != Some(&tracks) {
                let msg = ServerMessage::MediaTracks {
                    tracks: tracks.clone(),
                };
                let _ = peer.out.try_send(Outbound::Text(msg.to_json().into()));
                peer.tracks_sent = Some(tracks);
            }
        }
        for ((src, mid), case) in keyframes {
            if let Some(i) = self.peer_index(&case, &src) {
                self.keyframes
                    .push_back((i, mid, None, KeyframeRequestKind::Pli));
            }
        }
    }

    fn refresh_stats(&mut self) {
        let now = Instant::now();
        let secs = now.duration_since(self.last_stats).as_secs_f64().max(0.001);
        self.last_stats = now;
        // Downlink protection: each receiver's reports of the interval, then its level.
        let mut changes = Vec::new();
        for (i, p) in self.peers.iter_mut().enumerate() {
            let (mut video, mut layers) = (false, false);
            for t in &mut p.outbound {
                let (had, lost) = std::mem::take(&mut t.reported);
                if had > 0 {
                    p.downlink.report(had, lost);
                }
                if let Some(rtt) = t.rtt.take() {
                    p.downlink.round_trip(rtt);
                }
                video |= t.kind == Kind::Video && t.active;
                layers |= t.kind == Kind::Video && t.active && t.simulcast;
            }
            let before = p.downlink.level();
            let sent = p.bytes_out > 0;
            if let Some(level) = p.downlink.evaluate(now, video, layers, sent) {
                changes.push((i, before, level));
            }
        }
        for (i, before, level) in changes {
            self.downlink_changed(i, before, level);
        }
        let per_peer = self
            .peers
            .iter_mut()
            .map(|p| {
                let (expected, received) = p.inbound.values().flat_map(|t| t.seqs.values()).fold(
                    (0u64, 0u64),
                    |acc, s| {
                        let exp = s.first.map_or(0, |f| s.max - f + 1);
                        (acc.0 + exp, acc.1 + s.received)
                    },
                );
                let s = PeerStats {
                    case: p.key.case.clone(),
                    participant: p.key.participant.clone(),
                    bitrate_in: p.bytes_in as f64 * 8.0 / secs,
                    bitrate_out: p.bytes_out as f64 * 8.0 / secs,
                    loss_in: if expected > 0 {
                        (expected.saturating_sub(received)) as f64 / expected as f64
                    } else {
                        0.0
                    },
                    loss_out: p.downlink.loss(),
                    queue_out: p.downlink.queue().map(|q| q.as_secs_f64()),
                    video_level: match p.downlink.level() {
                        Level::Full => 0,
                        Level::Reduced => 1,
                        Level::Paused => 2,
                    },
                };
                p.bytes_in = 0;
                p.bytes_out = 0;
                s
            })
            .collect();
        if let Ok(mut g) = self.stats.per_peer.lock() {
            *g = per_peer;
        }
    }

    /// Peer `i`'s downlink went from `before` to `level`: the client is told, and video that
    /// comes back starts over at a keyframe (asked from its publishers at once; a simulcast
    /// line asks for its layer's keyframe itself when it picks one again).
    fn downlink_changed(&mut self, i: usize, before: Level, level: Level) {
        let counter = if level > before {
            &self.stats.downlink_steps_down
        } else {
            &self.stats.downlink_steps_up
        };
        MediaStats::add(counter, 1);
        let p = &mut self.peers[i];
        debug!(case = %p.key.case, participant = %p.key.participant, ?before, ?level, "downlink level changed");
        let video = match level {
            Level::Full => DownlinkVideo::Full,
            Level::Reduced => DownlinkVideo::Reduced,
            Level::Paused => DownlinkVideo::Paused,
        };
        let msg = ServerMessage::MediaDownlink { video };
        let _ = p.out.try_send(Outbound::Text(msg.to_json().into()));
        if before != Level::Paused {
            return;
        }
        let case = p.key.case.clone();
        let mut sources = Vec::new();
        for (k, t) in p.outbound.iter_mut().enumerate() {
            if t.kind == Kind::Video && t.active {
                t.restart();
                sources.push((k, t.src.clone()));
            }
        }
        let now = Instant::now();
        for (k, (src, src_mid)) in sources {
            if let Some(j) = self.peer_index(&case, &src) {
                let simulcast = self.peers[j]
                    .inbound
                    .get(&src_mid)
                    .is_some_and(|t| !t.layers.is_empty());
                if !simulcast {
                    self.peers[i].outbound[k].await_keyframe = Some(now);
                    self.keyframes
                        .push_back((j, src_mid, None, KeyframeRequestKind::Pli));
                }
            }
        }
    }
}

/// Sends a datagram a peer produced: over its ICE-TCP connection, or over UDP at the end of
/// this wake-up (`drive`) with the others.
fn transmit(
    sendq: &mut SendQueue,
    tcp: &HashMap<SocketAddr, TcpConn>,
    stats: &MediaStats,
    t: Transmit,
) {
    match t.proto {
        Protocol::Tcp => {
            let sent = tcp
                .get(&t.destination)
                .zip(tcp::frame(&t.contents))
                .is_some_and(|(c, f)| c.writer.try_send(f).is_ok());
            if !sent {
                MediaStats::add(&stats.packets_dropped, 1);
            }
        }
        _ => sendq.push(t.destination, t.contents.into()),
    }
}

/// The index of the peer connection of `key`, or `conflict` when the participant has not
/// offered media yet.
fn peer_index_of(peers: &[Peer], key: &PeerKey) -> Result<usize, ProtocolError> {
    peers.iter().position(|p| &p.key == key).ok_or_else(|| {
        ProtocolError::new(
            ErrorCode::Conflict,
            "no peer connection yet; send media_offer first",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rids(names: &[&str]) -> Vec<Rid> {
        names.iter().map(|n| Rid::from(*n)).collect()
    }

    fn names(r: &[Rid]) -> Vec<String> {
        r.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn layers_are_ranked_smallest_first() {
        assert_eq!(
            names(&rank_layers(&rids(&["f", "h", "q"]))),
            ["q", "h", "f"]
        );
        assert_eq!(
            names(&rank_layers(&rids(&["h", "l", "m"]))),
            ["l", "m", "h"]
        );
        assert_eq!(
            names(&rank_layers(&rids(&["2", "0", "1"]))),
            ["0", "1", "2"]
        );
        assert_eq!(
            names(&rank_layers(&rids(&["high", "low"]))),
            ["low", "high"]
        );
        // Unknown names: as listed.
        assert_eq!(names(&rank_layers(&rids(&["b", "a"]))), ["b", "a"]);
    }

    #[test]
    fn choice_is_the_best_flowing_layer_not_above_the_quality() {
        let layers = |flow: [bool; 3]| -> Vec<Layer> {
            rids(&["q", "h", "f"])
                .into_iter()
                .zip(flow)
                .map(|(rid, flowing)| Layer { rid, flowing })
                .collect()
        };
        let pick = |flow, q| choose_layer(&layers(flow), q).map(|r| r.to_string());
        use LayerQuality::*;
        assert_eq!(pick([true; 3], High).as_deref(), Some("f"));
        assert_eq!(pick([true; 3], Medium).as_deref(), Some("h"));
        assert_eq!(pick([true; 3], Low).as_deref(), Some("q"));
        // The top layer stopped: the next one down.
        assert_eq!(pick([true, true, false], High).as_deref(), Some("h"));
        // Nothing at or below the wish: the lowest above it.
        assert_eq!(pick([false, false, true], Low).as_deref(), Some("f"));
        assert_eq!(pick([false, true, true], Low).as_deref(), Some("h"));
        assert_eq!(pick([false; 3], High), None);
        // Two layers: medium is the smaller one.
        let two: Vec<Layer> = rids(&["l", "h"])
            .into_iter()
            .map(|rid| Layer { rid, flowing: true })
            .collect();
        assert_eq!(
            choose_layer(&two, Medium).map(|r| r.to_string()).as_deref(),
            Some("l")
        );
    }

    #[test]
    fn vp8_picture_id_width() {
        assert_eq!(vp8_pid_bits(&[0x90, 0x80, 0x81, 0x02, 0]), 15);
        assert_eq!(vp8_pid_bits(&[0x90, 0x80, 0x01, 0]), 7);
        assert_eq!(vp8_pid_bits(&[0x10, 0x00]), 7);
    }

    #[test]
    fn schedule_lists_follow_a_removed_peer() {
        let mut s = Schedule::default();
        for _ in 0..4 {
            s.push();
        }
        // New peers are polled on the next pass, each listed once however often touched.
        assert_eq!(s.touched, vec![0, 1, 2, 3]);
        s.touch(2);
        assert_eq!(s.touched.len(), 4);
        for &i in &s.touched {
            s.slots[i].touched = false;
        }
        s.touched.clear();

        s.touch(3);
        s.touch(1);
        s.dead = vec![3, 0];
        // Peer 1 goes: the last peer (3) takes its index, in both lists.
        s.swap_remove(1);
        assert_eq!(s.slots.len(), 3);
        assert_eq!(s.touched, vec![1]);
        assert_eq!(s.dead, vec![1, 0]);
        assert!(s.slots[1].touched);
        // The last peer goes: nothing else moves.
        s.swap_remove(2);
        assert_eq!(s.touched, vec![1]);
        assert_eq!(s.dead, vec![1, 0]);
        // A touched peer that goes leaves the list.
        s.swap_remove(1);
        assert!(s.touched.is_empty());
        assert_eq!(s.dead, vec![0]);
    }
}
