//! An independent WebRTC client peer for media tests, built on the `webrtc` crate (webrtc-rs),
//! so the server's SFU (str0m) is checked against a second implementation.
//!
//! A [`Peer`] takes a joined [`Client`] and holds the participant's one peer connection to the
//! server:
//!
//! * it publishes an Opus track and a VP8 track ([`TrackLocalStaticRTP`]) and offers them with
//!   `media_offer` (non-trickle: the offer is sent once ICE gathering completed; its host
//!   candidates can also be trickled with `ice_candidate`, see [`Peer::trickle_candidates`]);
//! * a background task owns the websocket: it answers the server's `media_offer`
//!   (renegotiation), keeps the latest `media_tracks`, logs every message the server sent, and
//!   carries the test's own requests ([`Peer::signal`]);
//! * sender tasks write synthetic RTP: audio every 20 ms, video at 30 frames per second (three
//!   packets per keyframe, two per delta frame; a keyframe every second and after each PLI/FIR
//!   the server relays, as an encoder would). Every payload carries
//!   the sender's 8-byte tag and a counter, and the rest of it is a function of those, so a
//!   receiver can rebuild the exact bytes the sender wrote and tell forwarding errors from
//!   forwarding ([`expected_payload`]);
//! * received RTP is counted per sender tag and kind and per received track ([`Peer::received`],
//!   [`Peer::tracks`]); keyframe requests and NACKs about our own tracks are counted too
//!   ([`Peer::feedback_received`]; webrtc 0.21 hands inbound RTCP to the application only when
//!   an interceptor marks it, which `FeedbackToApplication` does).
//!
//! A simulcast publisher ([`Peer::connect_simulcast`]) sends its video as several encodings on
//! one line, told apart by rid (`a=simulcast:send`, and the mid and rid header extensions on
//! every packet, as a browser does). Each layer has a tag of its own ([`Peer::layer_tag`]), its
//! own sequence number, timestamp, VP8 picture ID and TL0PICIDX bases, and a keyframe only every
//! ten seconds or when a PLI names its SSRC, so a receiver can tell which layer it got, whether
//! the stream stayed continuous across a switch, and whether the switch waited for a keyframe the
//! server asked for. Its VP8 payload descriptors carry a picture ID and TL0PICIDX (which an SFU
//! may rewrite: the payload check rebuilds the descriptor from the received values). Received
//! packets are kept in order per track ([`TrackStats::history`]).
//!
//! [`PeerOptions`] ([`Peer::connect_opts`]) choose the video codecs offered (VP8, H.264 with the
//! fmtp browsers use; the first is the one sent: H.264 frames are an SPS, a PPS and an IDR in
//! two FU-A fragments for a keyframe, a single NAL unit or two FU-A fragments otherwise, with the
//! same tag-and-counter payload check), whether `video/rtx` (RFC 4588) is offered, and
//! deterministic loss: a loss injector (`LossInjector`) between the wire and the NACK interceptors drops chosen
//! video packets on arrival (downlink) or after the NACK responder buffered them (uplink), and
//! records what it dropped, the NACKs sent and the retransmissions seen. The same place holds
//! a thin downlink ([`Peer::limit_downlink`]): a token bucket that loses whatever received RTP
//! exceeds a given rate, audio and video alike, as a full mobile link would.
//!
//! The peer connection, its sockets and the sender and receiver tasks live on a runtime of their
//! own, so [`Peer::vanish`] can make a participant disappear as a crashed phone would: no DTLS
//! close, no RTCP BYE, no websocket close frame. Only loopback host candidates are gathered
//! (the UDP socket is bound to 127.0.0.1, IPv4 UDP only), since the server under test listens on
//! 127.0.0.1 and tests send nothing elsewhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet as InterceptorPacket, Slot, StreamInfo,
    TaggedPacket,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit,
    RTCIceConnectionState, RTCIceGatheringState, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder,
};
use yuntiao_signaling::protocol::TrackInfo;

use crate::client::Client;

/// Size of every audio payload.
pub const AUDIO_PAYLOAD_LEN: usize = 80;
/// Size of every video payload.
pub const VIDEO_PAYLOAD_LEN: usize = 1000;
/// Audio packet interval.
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// Video frame interval (30 fps).
pub const VIDEO_INTERVAL: Duration = Duration::from_micros(33_333);
/// One keyframe every this many frames (one per second).
pub const KEYFRAME_EVERY: u32 = 30;
/// A simulcast layer's keyframe interval (ten seconds): switches must come from keyframe requests.
pub const SIMULCAST_KEYFRAME_EVERY: u32 = 300;
/// How many received packets a track remembers in [`TrackStats::history`].
pub const HISTORY_MAX: usize = 20_000;
/// Payload types offered (the browser's usual numbers).
pub const OPUS_PT: u8 = 111;
pub const VP8_PT: u8 = 96;
/// VP8's retransmission payload type (`video/rtx`, `apt=96`), when RTX is offered.
pub const VP8_RTX_PT: u8 = 97;
/// H.264 (packetization-mode 1, constrained baseline 3.1), as browsers offer it.
pub const H264_PT: u8 = 102;
/// H.264's retransmission payload type (`apt=102`), when RTX is offered.
pub const H264_RTX_PT: u8 = 103;
/// The fmtp line browsers offer for constrained-baseline H.264.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// A video codec a test peer can offer and send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

impl VideoCodec {
    fn mime(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "video/VP8",
            VideoCodec::H264 => "video/H264",
        }
    }

    fn pt(self) -> u8 {
        match self {
            VideoCodec::Vp8 => VP8_PT,
            VideoCodec::H264 => H264_PT,
        }
    }

    fn rtx_pt(self) -> u8 {
        match self {
            VideoCodec::Vp8 => VP8_RTX_PT,
            VideoCodec::H264 => H264_RTX_PT,
        }
    }
}

/// Which packets of a video stream the loss injector (`LossInjector`) drops: those whose ordinal (0 for the
/// first packet of the stream, retransmissions not counted) is `from + k * every` for
/// `k = 0 .. count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropPlan {
    pub from: u64,
    pub every: u64,
    pub count: u64,
}

impl DropPlan {
    fn hits(&self, ordinal: u64) -> bool {
        ordinal >= self.from
            && (ordinal - self.from).is_multiple_of(self.every.max(1))
            && (ordinal - self.from) / self.every.max(1) < self.count
    }
}

/// How a test peer is built: transport, the video codecs it offers (the first is the one it
/// sends), whether it offers RTX, and deterministic loss on its video.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    pub transport: Transport,
    /// Video codecs offered, in order of preference; the first is the one our video is sent in.
    pub video: Vec<VideoCodec>,
    /// Offer `video/rtx` (RFC 4588, `apt=`) for each video codec, with an RTX SSRC of our own.
    pub rtx: bool,
    /// Drop these received video packets before the NACK generator sees them (downlink loss).
    pub drop_inbound_video: Option<DropPlan>,
    /// Drop these sent video packets after the NACK responder has buffered them (uplink loss).
    pub drop_outbound_video: Option<DropPlan>,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            transport: Transport::Udp,
            video: vec![VideoCodec::Vp8],
            rtx: false,
            drop_inbound_video: None,
            drop_outbound_video: None,
        }
    }
}

/// Identifies a sending peer inside its payloads.
pub type Tag = [u8; 8];

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Audio,
    Video,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Audio => "audio",
            Kind::Video => "video",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------------

const AUDIO_MAGIC: &[u8; 3] = b"AUD";
const VIDEO_MAGIC: &[u8; 3] = b"VID";
/// The VP8 payload header (RFC 7741 §4.3) of a keyframe: frame tag with P = 0 and show_frame,
/// the start code 9d 01 2a, then 640 x 480. An SFU's keyframe detection looks at the P bit.
const VP8_KEYFRAME_HEADER: [u8; 10] = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
/// The frame tag of a delta frame (P = 1), padded to the keyframe header's length.
const VP8_DELTA_HEADER: [u8; 10] = [0x11, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0];

/// Where a video packet sits in its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoPos {
    pub frame: u32,
    pub index: u8,
    pub count: u8,
    pub keyframe: bool,
}

fn fill(buf: &mut Vec<u8>, len: usize, tag: &Tag, counter: u32) {
    let c = counter.to_be_bytes();
    while buf.len() < len {
        let i = buf.len();
        buf.push(tag[i % 8] ^ c[i % 4] ^ (i as u8).wrapping_mul(31));
    }
}

/// The audio payload a sender with `tag` writes as its `counter`-th packet.
pub fn audio_payload(tag: &Tag, counter: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(AUDIO_PAYLOAD_LEN);
    p.extend_from_slice(AUDIO_MAGIC);
    p.extend_from_slice(tag);
    p.extend_from_slice(&counter.to_be_bytes());
    fill(&mut p, AUDIO_PAYLOAD_LEN, tag, counter);
    p
}

/// The video payload: a VP8 payload descriptor (S bit on the first packet of a frame, partition
/// 0), the VP8 payload header on the first packet, then tag, counter, position and filler.
pub fn video_payload(tag: &Tag, counter: u32, pos: VideoPos) -> Vec<u8> {
    video_payload_with(tag, counter, pos, None)
}

/// [`video_payload`] with an extended descriptor carrying a 15-bit picture ID and TL0PICIDX
/// (`pic`), as a simulcast layer sends it.
pub fn video_payload_with(
    tag: &Tag,
    counter: u32,
    pos: VideoPos,
    pic: Option<(u16, u8)>,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(VIDEO_PAYLOAD_LEN);
    let start = if pos.index == 0 { 0x10 } else { 0x00 };
    match pic {
        // X; I, L, T; M and the picture ID; TL0PICIDX; TID 0, no Y, KEYIDX 0.
        Some((pid, tl0)) => p.extend_from_slice(&[
            0x80 | start,
            0xe0,
            0x80 | (pid >> 8) as u8 & 0x7f,
            pid as u8,
            tl0,
            0x00,
        ]),
        None => p.push(start),
    }
    if pos.index == 0 {
        p.extend_from_slice(if pos.keyframe {
            &VP8_KEYFRAME_HEADER
        } else {
            &VP8_DELTA_HEADER
        });
    }
    p.extend_from_slice(VIDEO_MAGIC);
    p.extend_from_slice(tag);
    p.extend_from_slice(&counter.to_be_bytes());
    p.extend_from_slice(&pos.frame.to_be_bytes());
    p.extend_from_slice(&[pos.index, pos.count, pos.keyframe as u8]);
    fill(&mut p, VIDEO_PAYLOAD_LEN, tag, counter);
    p
}

const H264_MAGIC: &[u8; 3] = b"H26";

/// How many packets an H.264 frame takes: a keyframe is SPS, PPS and an IDR slice in two FU-A
/// fragments; delta frames alternate between one slice as a single NAL unit and one in two FU-A
/// fragments.
pub fn h264_packets(frame: u32, keyframe: bool) -> u8 {
    if keyframe {
        4
    } else if frame.is_multiple_of(2) {
        1
    } else {
        2
    }
}

/// The H.264 payload header (RFC 6184) of packet `index` of a frame: a single NAL unit header
/// (SPS 0x67 with profile 42e01f, PPS 0x68, or a non-IDR slice 0x41), or an FU-A indicator and
/// FU header (type 28; S on the first fragment, E on the last; IDR type 5 or non-IDR type 1).
fn h264_header(pos: VideoPos) -> Vec<u8> {
    let fu = |first: bool, last: bool, nal: u8, nri: u8| {
        let s = if first { 0x80 } else { 0 };
        let e = if last { 0x40 } else { 0 };
        vec![nri | 28, s | e | nal]
    };
    match (pos.keyframe, pos.count, pos.index) {
        (true, _, 0) => vec![0x67, 0x42, 0xe0, 0x1f],
        (true, _, 1) => vec![0x68, 0xce, 0x3c, 0x80],
        (true, n, i) => fu(i == 2, i + 1 == n, 5, 0x60),
        (false, 1, _) => vec![0x41],
        (false, n, i) => fu(i == 0, i + 1 == n, 1, 0x40),
    }
}

/// The length of an H.264 payload header written by [`h264_header`].
fn h264_header_len(p: &[u8]) -> Option<usize> {
    Some(match p.first()? & 0x1f {
        28 => 2,
        7 => 4,
        8 => 4,
        _ => 1,
    })
}

/// The H.264 payload a sender with `tag` writes as its `counter`-th video packet: the payload
/// header for its place in the frame, then tag, counter, position and filler.
pub fn h264_payload(tag: &Tag, counter: u32, pos: VideoPos) -> Vec<u8> {
    let mut p = Vec::with_capacity(VIDEO_PAYLOAD_LEN);
    p.extend_from_slice(&h264_header(pos));
    p.extend_from_slice(H264_MAGIC);
    p.extend_from_slice(tag);
    p.extend_from_slice(&counter.to_be_bytes());
    p.extend_from_slice(&pos.frame.to_be_bytes());
    p.extend_from_slice(&[pos.index, pos.count, pos.keyframe as u8]);
    fill(&mut p, VIDEO_PAYLOAD_LEN, tag, counter);
    p
}

/// Whether an H.264 payload starts a keyframe: an SPS, an IDR slice, or the first FU-A fragment
/// of one.
pub fn is_h264_keyframe(p: &[u8]) -> bool {
    match p.first().map(|b| b & 0x1f) {
        Some(5) | Some(7) => true,
        Some(28) => p.get(1).is_some_and(|h| h & 0x80 != 0 && h & 0x1f == 5),
        _ => false,
    }
}

/// What a received payload claims to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The codec of a video payload (audio: VP8, unused).
    pub codec: VideoCodec,
    pub kind: Kind,
    pub tag: Tag,
    pub counter: u32,
    pub video: Option<VideoPos>,
    /// The VP8 picture ID and TL0PICIDX, when the descriptor has them.
    pub pic: Option<(u16, u8)>,
}

/// The VP8 payload descriptor's length, and its picture ID (15-bit) and TL0PICIDX if present.
fn vp8_descriptor(p: &[u8]) -> Option<(usize, Option<(u16, u8)>)> {
    let b0 = *p.first()?;
    if b0 & 0x80 == 0 {
        return Some((1, None));
    }
    let x = *p.get(1)?;
    let mut i = 2;
    let mut pid = None;
    if x & 0x80 != 0 {
        let m = *p.get(i)?;
        if m & 0x80 != 0 {
            pid = Some(u16::from(m & 0x7f) << 8 | u16::from(*p.get(i + 1)?));
            i += 2;
        } else {
            pid = Some(u16::from(m));
            i += 1;
        }
    }
    let mut tl0 = None;
    if x & 0x40 != 0 {
        tl0 = Some(*p.get(i)?);
        i += 1;
    }
    if x & 0x30 != 0 {
        i += 1;
    }
    Some((i, pid.zip(tl0)))
}

/// Reads the tag and counter a payload claims; `None` if it is none of ours.
pub fn parse_payload(p: &[u8]) -> Option<Parsed> {
    if p.len() >= 15 && &p[..3] == AUDIO_MAGIC {
        return Some(Parsed {
            codec: VideoCodec::Vp8,
            kind: Kind::Audio,
            tag: p[3..11].try_into().ok()?,
            counter: u32::from_be_bytes(p[11..15].try_into().ok()?),
            video: None,
            pic: None,
        });
    }
    if let Some(b) = h264_header_len(p).and_then(|h| p.get(h..h + 22)) {
        if &b[..3] == H264_MAGIC {
            return Some(Parsed {
                codec: VideoCodec::H264,
                kind: Kind::Video,
                tag: b[3..11].try_into().ok()?,
                counter: u32::from_be_bytes(b[11..15].try_into().ok()?),
                video: Some(VideoPos {
                    frame: u32::from_be_bytes(b[15..19].try_into().ok()?),
                    index: b[19],
                    count: b[20],
                    keyframe: b[21] != 0,
                }),
                pic: None,
            });
        }
    }
    let (dlen, pic) = vp8_descriptor(p)?;
    let start = if p.first()? & 0x10 != 0 {
        dlen + VP8_KEYFRAME_HEADER.len()
    } else {
        dlen
    };
    let b = p.get(start..start + 22)?;
    if &b[..3] != VIDEO_MAGIC {
        return None;
    }
    Some(Parsed {
        codec: VideoCodec::Vp8,
        kind: Kind::Video,
        tag: b[3..11].try_into().ok()?,
        counter: u32::from_be_bytes(b[11..15].try_into().ok()?),
        video: Some(VideoPos {
            frame: u32::from_be_bytes(b[15..19].try_into().ok()?),
            index: b[19],
            count: b[20],
            keyframe: b[21] != 0,
        }),
        pic,
    })
}

/// The exact bytes the sender wrote for what `parsed` claims.
pub fn expected_payload(parsed: &Parsed) -> Vec<u8> {
    match (parsed.video, parsed.codec) {
        (None, _) => audio_payload(&parsed.tag, parsed.counter),
        (Some(pos), VideoCodec::H264) => h264_payload(&parsed.tag, parsed.counter, pos),
        (Some(pos), VideoCodec::Vp8) => {
            video_payload_with(&parsed.tag, parsed.counter, pos, parsed.pic)
        }
    }
}

/// Whether a video payload written by this module starts a keyframe, in whichever codec.
pub fn is_keyframe(p: &[u8]) -> bool {
    match parse_payload(p) {
        Some(Parsed {
            codec: VideoCodec::H264,
            ..
        }) => is_h264_keyframe(p),
        _ => is_vp8_keyframe(p),
    }
}

/// Whether a VP8 payload written by [`video_payload`] starts a keyframe.
pub fn is_vp8_keyframe(p: &[u8]) -> bool {
    let Some((dlen, _)) = vp8_descriptor(p) else {
        return false;
    };
    p[0] & 0x10 != 0 && p.get(dlen).is_some_and(|h| h & 0x01 == 0)
}

// ---------------------------------------------------------------------------------------------
// Receive statistics
// ---------------------------------------------------------------------------------------------

/// What arrived from one sender, of one kind.
#[derive(Clone, Debug, Default)]
pub struct FlowStats {
    pub packets: u64,
    pub bytes: u64,
    /// Packets whose payload differs from what the sender wrote.
    pub mismatches: u64,
    pub keyframes: u64,
    /// Packets whose payload is H.264 (the rest of the video is VP8).
    pub h264: u64,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    pub max_counter: u32,
}

/// What arrived on one received track (one m-line of this peer's connection).
#[derive(Clone, Debug)]
pub struct TrackStats {
    /// Local index, in the order the tracks opened.
    pub index: u64,
    /// The m-line (`a=mid`), once known.
    pub mid: Option<String>,
    pub kind: Kind,
    pub packets: u64,
    pub bytes: u64,
    /// Sender tags seen on this track.
    pub tags: BTreeSet<Tag>,
    pub ssrcs: BTreeSet<u32>,
    pub payload_types: BTreeSet<u8>,
    /// RTP header-extension ids seen on this track's packets (`a=extmap` ids).
    pub ext_ids: BTreeSet<u8>,
    pub last: Option<Instant>,
    pub mismatches: u64,
    /// Packets that are none of ours.
    pub unparsable: u64,
    /// Packets whose payload says another kind than the track's.
    pub wrong_kind: u64,
    pub ended: bool,
    /// The packets received, in order of arrival (at most [`HISTORY_MAX`]).
    pub history: Vec<RecvPacket>,
}

/// One received packet, as [`TrackStats::history`] keeps it.
#[derive(Clone, Copy, Debug)]
pub struct RecvPacket {
    pub seq: u16,
    pub ts: u32,
    /// The sender (or simulcast layer) tag, when the payload is ours.
    pub tag: Option<Tag>,
    /// The sender's packet counter, when the payload is ours.
    pub counter: Option<u32>,
    /// Where a video payload of ours sits in its frame.
    pub video: Option<VideoPos>,
    /// The payload type it came with.
    pub pt: u8,
    /// Starts a keyframe.
    pub keyframe: bool,
    /// VP8 picture ID and TL0PICIDX, when the descriptor has them.
    pub pic: Option<(u16, u8)>,
    pub at: Instant,
}

/// One layer of a simulcast publisher's video.
struct LayerSend {
    rid: String,
    ssrc: u32,
    tag: Tag,
    sending: AtomicBool,
    /// Sends only every this many frames (1: all 30 a second), for a layer of lower bitrate.
    every: AtomicU32,
    force_keyframe: AtomicBool,
    plis: AtomicU64,
}

#[derive(Default)]
struct Received {
    flows: BTreeMap<(Tag, Kind), FlowStats>,
    tracks: BTreeMap<u64, TrackStats>,
}

// ---------------------------------------------------------------------------------------------
// Shared state and the event handler
// ---------------------------------------------------------------------------------------------

struct Shared {
    tag: Tag,
    /// The codec our video is sent in.
    video_codec: VideoCodec,
    /// What the loss injector dropped and saw.
    loss: Arc<LossReport>,
    received: Mutex<Received>,
    remotes: Mutex<HashMap<u64, Arc<dyn TrackRemote>>>,
    next_track: AtomicU64,
    pc: OnceLock<Arc<dyn PeerConnection>>,
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    ice_state: Mutex<String>,
    local_candidates: Mutex<Vec<String>>,
    /// Every message the server sent on the websocket after the peer took it over.
    messages: Mutex<Vec<Value>>,
    message_added: Notify,
    media_tracks: Mutex<Vec<TrackInfo>>,
    /// Renegotiation failures seen by the background task.
    errors: Mutex<Vec<String>>,
    /// Negotiated payload types (u16::MAX until known).
    audio_pt: AtomicU16,
    video_pt: AtomicU16,
    send_audio: AtomicBool,
    send_video: AtomicBool,
    sent_audio: AtomicU64,
    sent_video: AtomicU64,
    send_errors: AtomicU64,
    plis: AtomicU64,
    firs: AtomicU64,
    nacks: AtomicU64,
    /// Our senders' SSRCs (audio, video, and each simulcast layer's).
    own_ssrcs: Vec<u32>,
    /// Simulcast layers of our video, smallest first (empty: one plain video stream).
    layers: Vec<LayerSend>,
    /// Once negotiated: our video line's mid, and the ids of the mid and rid header extensions.
    video_exts: Mutex<Option<(String, u8, u8)>>,
    /// Feedback received about our published tracks, by RTCP type and format.
    rtcp: Mutex<BTreeMap<String, u64>>,
    /// Set by a keyframe request: the next video frame is a keyframe, as an encoder would do.
    force_keyframe: AtomicBool,
    ws_closed: AtomicBool,
    /// While set, the server's `media_offer`s are kept in `held_offers` instead of being
    /// answered (to put an offer of ours on the wire while one of the server's is outstanding).
    hold_offers: AtomicBool,
    held_offers: Mutex<Vec<String>>,
}

impl Shared {
    fn log(&self, v: &Value) {
        self.messages.lock().unwrap().push(v.clone());
        self.message_added.notify_waiters();
    }

    fn error(&self, e: String) {
        self.errors.lock().unwrap().push(e);
    }

    fn record(&self, track: u64, track_kind: Kind, pkt: &rtc::rtp::Packet) {
        let now = Instant::now();
        let payload = &pkt.payload[..];
        let parsed = parse_payload(payload);
        let mut r = self.received.lock().unwrap();
        if let Some(t) = r.tracks.get_mut(&track) {
            t.packets += 1;
            t.bytes += payload.len() as u64;
            t.last = Some(now);
            t.ssrcs.insert(pkt.header.ssrc);
            t.payload_types.insert(pkt.header.payload_type);
            t.ext_ids.extend(pkt.header.extensions.iter().map(|e| e.id));
            if t.history.len() < HISTORY_MAX {
                t.history.push(RecvPacket {
                    seq: pkt.header.sequence_number,
                    ts: pkt.header.timestamp,
                    tag: parsed.as_ref().map(|p| p.tag),
                    counter: parsed.as_ref().map(|p| p.counter),
                    video: parsed.as_ref().and_then(|p| p.video),
                    pt: pkt.header.payload_type,
                    keyframe: track_kind == Kind::Video && is_keyframe(payload),
                    pic: parsed.as_ref().and_then(|p| p.pic),
                    at: now,
                });
            }
            match &parsed {
                Some(p) => {
                    t.tags.insert(p.tag);
                    if expected_payload(p) != payload {
                        t.mismatches += 1;
                    }
                    if p.kind != track_kind {
                        t.wrong_kind += 1;
                    }
                }
                None => t.unparsable += 1,
            }
        }
        if let Some(p) = parsed {
            let ok = expected_payload(&p) == payload;
            let f = r.flows.entry((p.tag, p.kind)).or_default();
            f.packets += 1;
            f.bytes += payload.len() as u64;
            if !ok {
                f.mismatches += 1;
            }
            if p.kind == Kind::Video && is_keyframe(payload) {
                f.keyframes += 1;
            }
            if p.kind == Kind::Video && p.codec == VideoCodec::H264 {
                f.h264 += 1;
            }
            f.first.get_or_insert(now);
            f.last = Some(now);
            f.max_counter = f.max_counter.max(p.counter);
        }
    }
}

struct Handler {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            self.shared
                .local_candidates
                .lock()
                .unwrap()
                .push(init.candidate);
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.shared
            .gathered
            .send_replace(state == RTCIceGatheringState::Complete);
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        *self.shared.ice_state.lock().unwrap() = state.to_string();
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.shared.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Called on the driver task: hand the reading to a task of its own at once.
        let shared = Arc::clone(&self.shared);
        tokio::spawn(read_track(shared, track));
    }
}

fn kind_of(k: RtpCodecKind) -> Kind {
    if k == RtpCodecKind::Video {
        Kind::Video
    } else {
        Kind::Audio
    }
}

async fn read_track(shared: Arc<Shared>, track: Arc<dyn TrackRemote>) {
    let index = shared.next_track.fetch_add(1, Ordering::Relaxed);
    let kind = kind_of(track.kind().await);
    shared.received.lock().unwrap().tracks.insert(
        index,
        TrackStats {
            index,
            mid: None,
            kind,
            packets: 0,
            bytes: 0,
            tags: BTreeSet::new(),
            ssrcs: BTreeSet::new(),
            payload_types: BTreeSet::new(),
            ext_ids: BTreeSet::new(),
            last: None,
            mismatches: 0,
            unparsable: 0,
            wrong_kind: 0,
            ended: false,
            history: Vec::new(),
        },
    );
    shared
        .remotes
        .lock()
        .unwrap()
        .insert(index, Arc::clone(&track));
    while let Some(evt) = track.poll().await {
        match evt {
            TrackRemoteEvent::OnRtpPacket(p) => shared.record(index, kind, &p),
            TrackRemoteEvent::OnOpen(init) => {
                // Which m-line: find the transceiver of this receiver (off this task, since it
                // round-trips through the driver).
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let Some(pc) = shared.pc.get().cloned() else {
                        return;
                    };
                    for t in pc.get_transceivers().await {
                        let Ok(Some(r)) = t.receiver().await else {
                            continue;
                        };
                        if r.id() == init.receiver_id {
                            if let Ok(Some(mid)) = t.mid().await {
                                if let Some(ts) =
                                    shared.received.lock().unwrap().tracks.get_mut(&index)
                                {
                                    ts.mid = Some(mid);
                                }
                            }
                            break;
                        }
                    }
                });
            }
            TrackRemoteEvent::OnRtcpPacket(pkts) => count_rtcp(&shared, &pkts),
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
    if let Some(t) = shared.received.lock().unwrap().tracks.get_mut(&index) {
        t.ended = true;
    }
}

/// Counts the RTCP the server sent about our published tracks: keyframe requests make the next
/// video frame a keyframe, as an encoder would.
///
/// webrtc 0.21 routes a compound RTCP packet to a track by the first SSRC its first packet names,
/// so feedback can arrive on a local or on a received track; both paths land here, filtered by
/// the media SSRC.
fn count_rtcp(shared: &Shared, pkts: &[Box<dyn rtc::rtcp::Packet>]) {
    for p in pkts {
        let any = p.as_any();
        let about = if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            Some((pli.media_ssrc, &shared.plis))
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            Some((fir.media_ssrc, &shared.firs))
        } else {
            any.downcast_ref::<TransportLayerNack>()
                .map(|n| (n.media_ssrc, &shared.nacks))
        };
        let Some((ssrc, counter)) = about else {
            continue;
        };
        if !shared.own_ssrcs.contains(&ssrc) {
            continue;
        }
        if let Some(l) = shared.layers.iter().find(|l| l.ssrc == ssrc) {
            if !any.is::<TransportLayerNack>() {
                l.force_keyframe.store(true, Ordering::Relaxed);
                l.plis.fetch_add(1, Ordering::Relaxed);
            }
        }
        let h = p.header();
        *shared
            .rtcp
            .lock()
            .unwrap()
            .entry(format!("{:?}/{}", h.packet_type, h.count))
            .or_default() += 1;
        counter.fetch_add(1, Ordering::Relaxed);
        if !any.is::<TransportLayerNack>() {
            shared.force_keyframe.store(true, Ordering::Relaxed);
        }
    }
}

/// Drains the RTCP delivered to a published track.
async fn read_local_rtcp(shared: Arc<Shared>, track: Arc<TrackLocalStaticRTP>) {
    loop {
        match track.poll().await {
            Some(TrackLocalEvent::OnRtcpPacket(pkts)) => count_rtcp(&shared, &pkts),
            Some(_) => {}
            // Not bound yet (or unbound): look again shortly.
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Lets keyframe requests and NACKs through to the application. webrtc 0.21 ends inbound RTCP
/// at the end of the interceptor chain unless an interceptor marks a packet
/// `DeliverToApplication`; this one does, for the feedback a test wants to see.
struct FeedbackToApplication {
    read: std::collections::VecDeque<TaggedPacket>,
    write: std::collections::VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackToApplication {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let InterceptorPacket::Rtcp(packets) = &msg.message.packet {
            let wanted: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| {
                    let any = p.as_any();
                    any.is::<PictureLossIndication>()
                        || any.is::<FullIntraRequest>()
                        || any.is::<TransportLayerNack>()
                })
                .cloned()
                .collect();
            if !wanted.is_empty() {
                // A copy for the application; the original goes on to the interceptors behind.
                let mut message = AttributedPacket::new(InterceptorPacket::Rtcp(wanted));
                message.add(Attribute::DeliverToApplication);
                self.read.push_back(TaggedPacket {
                    now: msg.now,
                    transport: msg.transport,
                    message,
                });
            }
            msg.message.packet = InterceptorPacket::Rtcp(
                packets
                    .iter()
                    .filter(|p| {
                        let any = p.as_any();
                        !(any.is::<PictureLossIndication>()
                            || any.is::<FullIntraRequest>()
                            || any.is::<TransportLayerNack>())
                    })
                    .cloned()
                    .collect(),
            );
            if let InterceptorPacket::Rtcp(rest) = &msg.message.packet {
                if rest.is_empty() {
                    return Ok(());
                }
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for FeedbackToApplication {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// One video packet the loss injector dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub ssrc: u32,
    pub seq: u16,
    /// The sender's tag and counter from the payload (when it is one of ours).
    pub tag: Option<Tag>,
    pub counter: Option<u32>,
}

/// What the [`LossInjector`] did and saw, shared with the [`Peer`].
#[derive(Default)]
struct LossReport {
    dropped_in: Mutex<Vec<Dropped>>,
    dropped_out: Mutex<Vec<Dropped>>,
    /// NACKs this peer sent (the NACK generator's output, on its way to the wire).
    nacks_sent: AtomicU64,
    /// Packets that arrived on a retransmission (RTX) payload type.
    rtx_in: AtomicU64,
    /// Packets that arrived again with a sequence number that had been dropped on arrival
    /// (a retransmission on the media SSRC itself, without RTX).
    repeats_in: AtomicU64,
    /// Retransmissions this peer sent: RTX packets, or a dropped packet's sequence number again.
    resent_out: AtomicU64,
    /// The thin downlink's rate in bits per second (0: no limit), see [`Peer::limit_downlink`].
    downlink_bps: AtomicU64,
    /// Received RTP packets the thin downlink dropped, by kind.
    policed_audio: AtomicU64,
    policed_video: AtomicU64,
    /// The queueing downlink's rate in bits per second (0: none), see [`Peer::queue_downlink`].
    queue_bps: AtomicU64,
    /// The longest any received packet waited in it, in microseconds.
    queued_max_us: AtomicU64,
    /// How long a packet arriving now would wait in it, in microseconds.
    queue_delay_us: AtomicU64,
}

/// A link of a given rate with a deep buffer, as many mobile networks have: what exceeds the
/// rate waits its turn and arrives late, and nothing is lost. RTP and RTCP wait in the same
/// queue, so the server's sender reports are as late as its media, and each packet reaches the
/// interceptors above with its time of arrival at the end of the link (which the receiver
/// reports' delay since the last sender report is counted from).
#[derive(Default)]
struct DelayLine {
    /// When the link has sent everything queued so far.
    free_at: Option<Instant>,
    held: std::collections::VecDeque<(Instant, TaggedPacket)>,
}

impl DelayLine {
    /// Queues `msg` of `len` bytes on a link of `bps` bits per second.
    fn push(&mut self, bps: u64, len: usize, now: Instant, msg: TaggedPacket) {
        let start = self.free_at.map_or(now, |f| f.max(now));
        let leaves = start + Duration::from_secs_f64(len as f64 * 8.0 / bps as f64);
        self.free_at = Some(leaves);
        self.held.push_back((leaves, msg));
    }

    /// The next packet that has arrived by `now` (everything, once the link has no limit), and
    /// how long it waited.
    fn pop(&mut self, now: Instant, limited: bool) -> Option<(TaggedPacket, Duration)> {
        match self.held.front() {
            Some((leaves, _)) if *leaves <= now || !limited => {
                let (leaves, mut msg) = self.held.pop_front()?;
                let arrived = leaves.min(now);
                let waited = arrived.saturating_duration_since(msg.now);
                msg.now = arrived;
                Some((msg, waited))
            }
            _ => None,
        }
    }
}

/// A token bucket on the received RTP, as a link of a given rate with a short buffer would
/// pass it: packets beyond the rate are lost, whatever their kind.
#[derive(Default)]
struct Policer {
    /// Bytes that may pass now.
    tokens: f64,
    last: Option<Instant>,
}

impl Policer {
    /// The buffer: a quarter of a second at the rate, at least a few packets.
    fn depth(bps: u64) -> f64 {
        (bps as f64 / 8.0 * 0.25).max(4_000.0)
    }

    /// Whether a packet of `len` bytes passes a link of `bps` bits per second now.
    fn pass(&mut self, bps: u64, len: usize, now: Instant) -> bool {
        let elapsed = self
            .last
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.last = Some(now);
        if bps == 0 {
            self.tokens = 0.0;
            return true;
        }
        self.tokens = (self.tokens + elapsed * bps as f64 / 8.0).min(Self::depth(bps));
        if self.tokens >= len as f64 {
            self.tokens -= len as f64;
            true
        } else {
            false
        }
    }
}

/// Deterministic loss between the wire and the NACK interceptors, at [`LOSS_SLOT`]: below the
/// NACK responder (4_000), so an outbound packet it drops has already been buffered for
/// retransmission, and below the NACK generator (7_000), so an inbound packet it drops is never
/// seen as received. Retransmissions are never dropped (RTX payload types pass; a sequence
/// number dropped once passes the second time). Inbound video is told from audio and RTX by
/// payload type: the peer registers fixed ones (Opus 111, RTX 97/103), and every other inbound
/// payload type is video.
struct LossInjector {
    read: std::collections::VecDeque<TaggedPacket>,
    write: std::collections::VecDeque<TaggedPacket>,
    inbound: Option<DropPlan>,
    outbound: Option<DropPlan>,
    own_video_ssrc: u32,
    own_rtx_ssrc: Option<u32>,
    rtx_pts: Vec<u8>,
    /// Per SSRC: packets seen (retransmissions not counted) and sequence numbers dropped.
    in_seen: HashMap<u32, (u64, BTreeSet<u16>)>,
    out_seen: (u64, BTreeSet<u16>),
    report: Arc<LossReport>,
    /// The thin downlink ([`Peer::limit_downlink`]).
    policer: Policer,
    /// The queueing downlink ([`Peer::queue_downlink`]).
    delay: DelayLine,
}

/// The loss injector's place in the interceptor chain (see [`LossInjector`]).
const LOSS_SLOT: usize = 500;

fn dropped(pkt: &rtc::rtp::Packet) -> Dropped {
    let parsed = parse_payload(&pkt.payload);
    Dropped {
        ssrc: pkt.header.ssrc,
        seq: pkt.header.sequence_number,
        tag: parsed.as_ref().map(|p| p.tag),
        counter: parsed.map(|p| p.counter),
    }
}

impl LossInjector {
    /// Moves what the queueing downlink has delivered by `now` on.
    fn release(&mut self, now: Instant, limited: bool) {
        while let Some((msg, waited)) = self.delay.pop(now, limited) {
            self.report
                .queued_max_us
                .fetch_max(waited.as_micros() as u64, Ordering::Relaxed);
            self.arrive(msg);
        }
        if !limited {
            self.delay.free_at = None;
        }
        let delay = self
            .delay
            .free_at
            .map_or(Duration::ZERO, |f| f.saturating_duration_since(now));
        self.report
            .queue_delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// A received packet at the end of the link: the thin downlink and the loss plan, then on.
    fn arrive(&mut self, msg: TaggedPacket) {
        if let InterceptorPacket::Rtp(pkt) = &msg.message.packet {
            let bps = self.report.downlink_bps.load(Ordering::Relaxed);
            let len = pkt.payload.len() + 12;
            if !self.policer.pass(bps, len, Instant::now()) {
                let counter = if pkt.header.payload_type == OPUS_PT {
                    &self.report.policed_audio
                } else {
                    &self.report.policed_video
                };
                counter.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let pt = pkt.header.payload_type;
            if self.rtx_pts.contains(&pt) {
                self.report.rtx_in.fetch_add(1, Ordering::Relaxed);
            } else if pt != OPUS_PT {
                let (seen, gone) = self.in_seen.entry(pkt.header.ssrc).or_default();
                let seq = pkt.header.sequence_number;
                if gone.contains(&seq) {
                    self.report.repeats_in.fetch_add(1, Ordering::Relaxed);
                } else {
                    let n = *seen;
                    *seen += 1;
                    if self.inbound.is_some_and(|p| p.hits(n)) {
                        gone.insert(seq);
                        self.report.dropped_in.lock().unwrap().push(dropped(pkt));
                        return;
                    }
                }
            }
        }
        self.read.push_back(msg);
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for LossInjector {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let bps = self.report.queue_bps.load(Ordering::Relaxed);
        let now = Instant::now();
        if bps > 0 {
            let len = match &msg.message.packet {
                InterceptorPacket::Rtp(pkt) => pkt.payload.len() + 12,
                _ => 100,
            };
            self.delay.push(bps, len, now, msg);
            self.release(now, true);
            return Ok(());
        }
        // Lifted: what is still queued arrives first, then this packet.
        self.release(now, false);
        self.arrive(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        let limited = self.report.queue_bps.load(Ordering::Relaxed) > 0;
        self.release(Instant::now(), limited);
        self.read.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.delay.held.front().map(|(leaves, _)| *leaves)
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        match &msg.message.packet {
            InterceptorPacket::Rtp(pkt) => {
                let ssrc = pkt.header.ssrc;
                if Some(ssrc) == self.own_rtx_ssrc {
                    self.report.resent_out.fetch_add(1, Ordering::Relaxed);
                } else if ssrc == self.own_video_ssrc {
                    let (seen, gone) = &mut self.out_seen;
                    let seq = pkt.header.sequence_number;
                    if gone.contains(&seq) {
                        self.report.resent_out.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let n = *seen;
                        *seen += 1;
                        if self.outbound.is_some_and(|p| p.hits(n)) {
                            gone.insert(seq);
                            self.report.dropped_out.lock().unwrap().push(dropped(pkt));
                            return Ok(());
                        }
                    }
                }
            }
            InterceptorPacket::Rtcp(pkts) => {
                let nacks = pkts
                    .iter()
                    .filter(|p| p.as_any().is::<TransportLayerNack>())
                    .count();
                self.report
                    .nacks_sent
                    .fetch_add(nacks as u64, Ordering::Relaxed);
            }
            _ => {}
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for LossInjector {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

// ---------------------------------------------------------------------------------------------
// Senders
// ---------------------------------------------------------------------------------------------

fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: Vec<u8>) -> rtc::rtp::Packet {
    rtc::rtp::Packet {
        header: rtc::rtp::Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload: Bytes::from(payload),
    }
}

async fn send_audio(shared: Arc<Shared>, track: Arc<TrackLocalStaticRTP>, ssrc: u32) {
    let tag = shared.tag;
    let mut iv = tokio::time::interval(AUDIO_INTERVAL);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut counter: u32 = 0;
    let mut seq = hash64(&[&tag, b"aseq"]) as u16;
    let mut ts = hash64(&[&tag, b"ats"]) as u32;
    loop {
        iv.tick().await;
        let pt = shared.audio_pt.load(Ordering::Relaxed);
        if pt <= 127 && shared.send_audio.load(Ordering::Relaxed) {
            let p = rtp(
                pt as u8,
                seq,
                ts,
                ssrc,
                counter == 0,
                audio_payload(&tag, counter),
            );
            match track.write_rtp(p).await {
                Ok(()) => shared.sent_audio.fetch_add(1, Ordering::Relaxed),
                Err(_) => shared.send_errors.fetch_add(1, Ordering::Relaxed),
            };
            counter = counter.wrapping_add(1);
            seq = seq.wrapping_add(1);
        }
        ts = ts.wrapping_add(960);
    }
}

async fn send_video(shared: Arc<Shared>, track: Arc<TrackLocalStaticRTP>, ssrc: u32) {
    let tag = shared.tag;
    let mut iv = tokio::time::interval(VIDEO_INTERVAL);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut counter: u32 = 0;
    let mut frame: u32 = 0;
    let mut seq = hash64(&[&tag, b"vseq"]) as u16;
    let mut ts = hash64(&[&tag, b"vts"]) as u32;
    loop {
        iv.tick().await;
        let pt = shared.video_pt.load(Ordering::Relaxed);
        if pt <= 127 && shared.send_video.load(Ordering::Relaxed) {
            let keyframe = frame.is_multiple_of(KEYFRAME_EVERY)
                || shared.force_keyframe.swap(false, Ordering::Relaxed);
            let h264 = shared.video_codec == VideoCodec::H264;
            let count: u8 = match (h264, keyframe) {
                (true, _) => h264_packets(frame, keyframe),
                (false, true) => 3,
                (false, false) => 2,
            };
            for index in 0..count {
                let pos = VideoPos {
                    frame,
                    index,
                    count,
                    keyframe,
                };
                let payload = if h264 {
                    h264_payload(&tag, counter, pos)
                } else {
                    video_payload(&tag, counter, pos)
                };
                let p = rtp(pt as u8, seq, ts, ssrc, index + 1 == count, payload);
                match track.write_rtp(p).await {
                    Ok(()) => shared.sent_video.fetch_add(1, Ordering::Relaxed),
                    Err(_) => shared.send_errors.fetch_add(1, Ordering::Relaxed),
                };
                counter = counter.wrapping_add(1);
                seq = seq.wrapping_add(1);
            }
            frame += 1;
        }
        ts = ts.wrapping_add(3000);
    }
}

/// The simulcast publisher's video: every layer each frame (those still sending), each with its
/// own sequence, timestamp, picture ID and TL0PICIDX, and the mid and rid header extensions.
async fn send_video_simulcast(shared: Arc<Shared>, track: Arc<TrackLocalStaticRTP>) {
    struct State {
        counter: u32,
        seq: u16,
        ts: u32,
        pid: u16,
        tl0: u8,
    }
    let mut iv = tokio::time::interval(VIDEO_INTERVAL);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut frame: u32 = 0;
    let mut states: Vec<State> = shared
        .layers
        .iter()
        .map(|l| State {
            counter: 0,
            seq: hash64(&[&l.tag, b"vseq"]) as u16,
            ts: hash64(&[&l.tag, b"vts"]) as u32,
            pid: hash64(&[&l.tag, b"pid"]) as u16 & 0x7fff,
            tl0: hash64(&[&l.tag, b"tl0"]) as u8,
        })
        .collect();
    loop {
        iv.tick().await;
        let pt = shared.video_pt.load(Ordering::Relaxed);
        let exts = shared.video_exts.lock().unwrap().clone();
        let ready = pt <= 127 && shared.send_video.load(Ordering::Relaxed) && exts.is_some();
        for (l, st) in shared.layers.iter().zip(states.iter_mut()) {
            let Some((mid, mid_id, rid_id)) = exts.as_ref().filter(|_| ready) else {
                break;
            };
            let every = l.every.load(Ordering::Relaxed).max(1);
            if l.sending.load(Ordering::Relaxed) && frame.is_multiple_of(every) {
                let keyframe = frame.is_multiple_of(SIMULCAST_KEYFRAME_EVERY)
                    || l.force_keyframe.swap(false, Ordering::Relaxed);
                let count: u8 = if keyframe { 3 } else { 2 };
                for index in 0..count {
                    let pos = VideoPos {
                        frame,
                        index,
                        count,
                        keyframe,
                    };
                    let payload =
                        video_payload_with(&l.tag, st.counter, pos, Some((st.pid, st.tl0)));
                    let mut p = rtp(pt as u8, st.seq, st.ts, l.ssrc, index + 1 == count, payload);
                    let ok = p
                        .header
                        .set_extension(*mid_id, Bytes::from(mid.clone().into_bytes()))
                        .and_then(|_| {
                            p.header
                                .set_extension(*rid_id, Bytes::from(l.rid.clone().into_bytes()))
                        })
                        .is_ok();
                    let sent = ok && track.write_rtp(p).await.is_ok();
                    if sent {
                        shared.sent_video.fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    st.counter = st.counter.wrapping_add(1);
                    st.seq = st.seq.wrapping_add(1);
                }
                st.pid = (st.pid + 1) & 0x7fff;
                st.tl0 = st.tl0.wrapping_add(1);
            }
        }
        if ready {
            frame += 1;
        }
        for st in &mut states {
            st.ts = st.ts.wrapping_add(3000);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building the connection
// ---------------------------------------------------------------------------------------------

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn video_feedback() -> Vec<RTCPFeedback> {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    vec![
        fb("goog-remb", ""),
        fb("ccm", "fir"),
        fb("nack", ""),
        fb("nack", "pli"),
    ]
}

fn vp8() -> RTCRtpCodec {
    video_codec(VideoCodec::Vp8)
}

fn video_codec(codec: VideoCodec) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: codec.mime().to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: match codec {
            VideoCodec::Vp8 => String::new(),
            VideoCodec::H264 => H264_FMTP.to_owned(),
        },
        rtcp_feedback: video_feedback(),
    }
}

/// The RTX codec (RFC 4588) that repairs `codec`.
fn rtx_codec(codec: VideoCodec) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/rtx".to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: format!("apt={}", codec.pt()),
        rtcp_feedback: vec![],
    }
}

struct Built {
    pc: Arc<dyn PeerConnection>,
    audio: Arc<TrackLocalStaticRTP>,
    video: Arc<TrackLocalStaticRTP>,
}

/// How a test peer reaches the server's media plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP only (the default).
    Udp,
    /// TCP only, as an *active* ICE-TCP candidate (RFC 6544): a client on a network that blocks
    /// UDP.
    Tcp,
}

async fn build(
    shared: Arc<Shared>,
    audio_ssrc: u32,
    video_ssrc: u32,
    opts: PeerOptions,
) -> anyhow::Result<Built> {
    let transport = opts.transport;
    let simulcast = !shared.layers.is_empty();
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus(),
            payload_type: OPUS_PT,
        },
        RtpCodecKind::Audio,
    )?;
    for &codec in &opts.video {
        media.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: video_codec(codec),
                payload_type: codec.pt(),
            },
            RtpCodecKind::Video,
        )?;
        if opts.rtx {
            media.register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: rtx_codec(codec),
                    payload_type: codec.rtx_pt(),
                },
                RtpCodecKind::Video,
            )?;
        }
    }
    let rtx_ssrc = opts.rtx.then_some(video_ssrc ^ 0x10);
    if simulcast {
        // The mid and rid header extensions, by which the server tells the layers apart.
        rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers(
            &mut media,
        )?;
    }
    // The default interceptors (NACK, RTCP reports, TWCC), plus one that surfaces keyframe
    // requests and NACKs to the application, application-ward of all of them.
    let registry = register_default_interceptors(Registry::new(), &mut media)?
        .with(
            Slot::from(14_000),
            FeedbackToApplication {
                read: Default::default(),
                write: Default::default(),
            },
        )
        .with(
            Slot::from(LOSS_SLOT),
            LossInjector {
                read: Default::default(),
                write: Default::default(),
                inbound: opts.drop_inbound_video,
                outbound: opts.drop_outbound_video,
                own_video_ssrc: video_ssrc,
                own_rtx_ssrc: rtx_ssrc,
                rtx_pts: if opts.rtx {
                    vec![VP8_RTX_PT, H264_RTX_PT]
                } else {
                    vec![]
                },
                in_seen: HashMap::new(),
                out_seen: Default::default(),
                report: Arc::clone(&shared.loss),
                policer: Policer::default(),
                delay: DelayLine::default(),
            },
        );
    // Loopback only: the socket is bound to 127.0.0.1 (a configured address is bound as given,
    // loopback included), IPv4 UDP only. webrtc 0.21 has no IP filter setter (it is a TODO in
    // its SettingEngine); binding one address has the same effect.
    let network = match transport {
        Transport::Udp => NetworkType::Udp4,
        Transport::Tcp => NetworkType::Tcp4,
    };
    let settings = SettingEngineBuilder::new()
        .with_include_loopback_candidate(true)
        .with_network_types(vec![network])
        .build();
    let (udp, tcp) = match transport {
        Transport::Udp => (vec!["127.0.0.1:0".to_owned()], vec![]),
        Transport::Tcp => (vec![], vec!["127.0.0.1:0".to_owned()]),
    };
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            shared: Arc::clone(&shared),
        }))
        .with_udp_addrs(udp)
        .with_tcp_addrs(tcp)
        .build()
        .await?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let tag_hex: String = shared.tag.iter().map(|b| format!("{b:02x}")).collect();
    let encoding = |codec: RTCRtpCodec, ssrc: u32, rid: &str| RTCRtpEncodingParameters {
        rtp_coding_parameters: RTCRtpCodingParameters {
            rid: rid.to_owned(),
            ssrc: Some(ssrc),
            rtx: rtx_ssrc
                .filter(|_| ssrc == video_ssrc)
                .map(|ssrc| RTCRtpRtxParameters { ssrc }),
            ..Default::default()
        },
        active: true,
        codec,
        ..Default::default()
    };
    let track = |kind: RtpCodecKind, name: &str, encodings: Vec<RTCRtpEncodingParameters>| {
        Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("yuntiao-{tag_hex}"),
            format!("{name}-{tag_hex}"),
            name.to_owned(),
            kind,
            encodings,
        )))
    };
    let audio = track(
        RtpCodecKind::Audio,
        "audio",
        vec![encoding(opus(), audio_ssrc, "")],
    );
    let video_encodings = if simulcast {
        shared
            .layers
            .iter()
            .map(|l| encoding(vp8(), l.ssrc, &l.rid))
            .collect()
    } else {
        vec![encoding(video_codec(shared.video_codec), video_ssrc, "")]
    };
    let video = track(RtpCodecKind::Video, "video", video_encodings);
    pc.add_track(Arc::clone(&audio) as Arc<dyn TrackLocal>)
        .await?;
    pc.add_track(Arc::clone(&video) as Arc<dyn TrackLocal>)
        .await?;
    // webrtc-rs narrows a track's line to the track's own codec; a browser offers every codec
    // it has on it (and webrtc-rs then keeps to the codecs of its first negotiation for the
    // lines the server adds later). Offer them all, in our order of preference.
    if opts.video.len() > 1 || opts.rtx {
        let mut prefs = Vec::new();
        for &codec in &opts.video {
            prefs.push(RTCRtpCodecParameters {
                rtp_codec: video_codec(codec),
                payload_type: codec.pt(),
            });
            if opts.rtx {
                prefs.push(RTCRtpCodecParameters {
                    rtp_codec: rtx_codec(codec),
                    payload_type: codec.rtx_pt(),
                });
            }
        }
        for t in pc.get_transceivers().await {
            let Ok(Some(s)) = t.sender().await else {
                continue;
            };
            if s.track().kind().await == RtpCodecKind::Video {
                t.set_codec_preferences(prefs.clone()).await?;
            }
        }
    }
    Ok(Built { pc, audio, video })
}

/// Reads the payload types the answer settled on for our senders.
async fn learn_payload_types(pc: &Arc<dyn PeerConnection>, shared: &Shared) {
    for s in pc.get_senders().await {
        let kind = s.track().kind().await;
        let Ok(params) = s.get_parameters().await else {
            continue;
        };
        let want = if kind == RtpCodecKind::Video {
            shared.video_codec.mime()
        } else {
            "audio/opus"
        };
        if let Some(c) = params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(want))
        {
            let slot = if kind == RtpCodecKind::Video {
                &shared.video_pt
            } else {
                &shared.audio_pt
            };
            slot.store(c.payload_type as u16, Ordering::Relaxed);
        }
    }
    if shared.layers.is_empty() {
        return;
    }
    for t in pc.get_transceivers().await {
        let (Ok(Some(s)), Ok(Some(mid))) = (t.sender().await, t.mid().await) else {
            continue;
        };
        if s.track().kind().await != RtpCodecKind::Video {
            continue;
        }
        let Ok(params) = s.get_parameters().await else {
            continue;
        };
        let id = |uri: &str| {
            params
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|h| h.uri == uri)
                .map(|h| h.id as u8)
        };
        if let (Some(m), Some(r)) = (
            id("urn:ietf:params:rtp-hdrext:sdes:mid"),
            id("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
        ) {
            *shared.video_exts.lock().unwrap() = Some((mid, m, r));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The signaling task
// ---------------------------------------------------------------------------------------------

enum Cmd {
    /// Send a request and return the server's reply to it.
    Request(Value, oneshot::Sender<anyhow::Result<Value>>),
    /// Send a frame without waiting for anything.
    Send(Value),
    /// Offer our connection to the server and apply its answer; returns the reply.
    Negotiate(oneshot::Sender<anyhow::Result<Value>>),
    /// Send this SDP as a `media_offer` as it is (a malformed or odd offer).
    RawOffer(String, oneshot::Sender<anyhow::Result<Value>>),
    /// Close the websocket cleanly.
    Close(oneshot::Sender<()>),
    /// Stop and hand the websocket back, open (for a new peer connection on it).
    Release(oneshot::Sender<Client>),
}

const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Peer::connect`] waits for ICE and DTLS. Generous: the server and the peers are
/// debug builds sharing two cores, where a DTLS handshake under load can take seconds.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const PC_OP_TIMEOUT: Duration = Duration::from_secs(10);

async fn with_timeout<T>(
    what: &str,
    f: impl std::future::Future<Output = webrtc::error::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(PC_OP_TIMEOUT, f).await {
        Err(_) => bail!("{what}: timed out"),
        Ok(Err(e)) => bail!("{what}: {e}"),
        Ok(Ok(v)) => Ok(v),
    }
}

async fn request_logged(client: &mut Client, shared: &Shared, msg: Value) -> anyhow::Result<Value> {
    let reply = client.request(msg).await?;
    shared.log(&reply);
    Ok(reply)
}

async fn negotiate(
    client: &mut Client,
    pc: &Arc<dyn PeerConnection>,
    shared: &Shared,
) -> anyhow::Result<Value> {
    let offer = with_timeout("create_offer", pc.create_offer(None)).await?;
    with_timeout("set_local_description", pc.set_local_description(offer)).await?;
    let mut gathered = shared.gathered.subscribe();
    // Non-trickle: wait until gathering completed, so the offer carries our candidates.
    let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.wait_for(|g| *g)).await;
    let sdp = pc
        .local_description()
        .await
        .context("no local description")?
        .sdp;
    let reply = request_logged(client, shared, json!({"type": "media_offer", "sdp": sdp})).await?;
    if reply["type"] == "media_answer" {
        // Our offer won: server offers held meanwhile are stale (the server discarded them and
        // offers again); later ones are answered as usual.
        shared.held_offers.lock().unwrap().clear();
        shared.hold_offers.store(false, Ordering::Relaxed);
        let sdp = reply["sdp"].as_str().context("media_answer without sdp")?;
        let answer = RTCSessionDescription::answer(sdp.to_owned())
            .map_err(|e| anyhow!("server answer does not parse: {e}"))?;
        with_timeout(
            "set_remote_description(answer)",
            pc.set_remote_description(answer),
        )
        .await?;
        // webrtc 0.21 dials a passive TCP candidate only when it is added as a trickled
        // candidate, not when it comes inside the SDP: hand it over again (a browser needs no
        // such step; the server's answer is the same either way).
        let passive: BTreeSet<String> = candidate_lines(sdp)
            .into_iter()
            .filter(|l| l.contains("tcptype passive"))
            .collect();
        for line in passive {
            {
                let init = RTCIceCandidateInit {
                    candidate: line,
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                    ..Default::default()
                };
                with_timeout("add_ice_candidate(tcp)", pc.add_ice_candidate(init)).await?;
            }
        }
        learn_payload_types(pc, shared).await;
    }
    Ok(reply)
}

async fn answer_server_offer(
    client: &mut Client,
    pc: &Arc<dyn PeerConnection>,
    shared: &Shared,
    sdp: &str,
) -> anyhow::Result<()> {
    let offer = RTCSessionDescription::offer(sdp.to_owned())
        .map_err(|e| anyhow!("server offer does not parse: {e}"))?;
    with_timeout(
        "set_remote_description(offer)",
        pc.set_remote_description(offer),
    )
    .await?;
    let answer = with_timeout("create_answer", pc.create_answer(None)).await?;
    with_timeout(
        "set_local_description(answer)",
        pc.set_local_description(answer),
    )
    .await?;
    let sdp = pc
        .local_description()
        .await
        .context("no local description")?
        .sdp;
    let reply = request_logged(client, shared, json!({"type": "media_answer", "sdp": sdp})).await?;
    if reply["type"] != "ack" {
        bail!("server refused our media_answer: {reply}");
    }
    learn_payload_types(pc, shared).await;
    Ok(())
}

async fn handle_server_message(
    client: &mut Client,
    pc: &Arc<dyn PeerConnection>,
    shared: &Shared,
    msg: Value,
) {
    shared.log(&msg);
    match msg["type"].as_str() {
        Some("media_offer") => {
            let Some(sdp) = msg["sdp"].as_str() else {
                shared.error(format!("media_offer without sdp: {msg}"));
                return;
            };
            if shared.hold_offers.load(Ordering::Relaxed) {
                shared.held_offers.lock().unwrap().push(sdp.to_owned());
                return;
            }
            if let Err(e) = answer_server_offer(client, pc, shared, sdp).await {
                shared.error(format!("answering the server's offer: {e:#}"));
            }
        }
        Some("media_tracks") => {
            match serde_json::from_value::<Vec<TrackInfo>>(msg["tracks"].clone()) {
                Ok(t) => *shared.media_tracks.lock().unwrap() = t,
                Err(e) => shared.error(format!("media_tracks does not parse: {e}: {msg}")),
            }
        }
        _ => {}
    }
}

async fn signaling(
    mut client: Client,
    pc: Arc<dyn PeerConnection>,
    shared: Arc<Shared>,
    mut cmds: mpsc::Receiver<Cmd>,
) {
    enum Next {
        Cmd(Option<Cmd>),
        Msg(anyhow::Result<Value>),
    }
    loop {
        let next = if client.closed {
            Next::Cmd(cmds.recv().await)
        } else {
            tokio::select! {
                biased;
                c = cmds.recv() => Next::Cmd(c),
                m = client.wait_for(|_| true) => Next::Msg(m),
            }
        };
        match next {
            Next::Cmd(None) => return,
            Next::Cmd(Some(cmd)) => {
                if client.closed {
                    shared.ws_closed.store(true, Ordering::Relaxed);
                }
                match cmd {
                    Cmd::Request(msg, reply) => {
                        let r = if client.closed {
                            Err(anyhow!("websocket closed"))
                        } else {
                            request_logged(&mut client, &shared, msg).await
                        };
                        let _ = reply.send(r);
                    }
                    Cmd::Send(msg) => {
                        if !client.closed {
                            let _ = client.send_text(msg.to_string()).await;
                        }
                    }
                    Cmd::Negotiate(reply) => {
                        let r = if client.closed {
                            Err(anyhow!("websocket closed"))
                        } else {
                            negotiate(&mut client, &pc, &shared).await
                        };
                        let _ = reply.send(r);
                    }
                    Cmd::RawOffer(sdp, reply) => {
                        let r = if client.closed {
                            Err(anyhow!("websocket closed"))
                        } else {
                            request_logged(
                                &mut client,
                                &shared,
                                json!({"type": "media_offer", "sdp": sdp}),
                            )
                            .await
                        };
                        let _ = reply.send(r);
                    }
                    Cmd::Close(done) => {
                        client.close().await;
                        shared.ws_closed.store(true, Ordering::Relaxed);
                        let _ = done.send(());
                        return;
                    }
                    Cmd::Release(back) => {
                        let _ = back.send(client);
                        return;
                    }
                }
            }
            Next::Msg(Ok(msg)) => handle_server_message(&mut client, &pc, &shared, msg).await,
            // A quiet spell (wait_for's timeout) or the connection closed.
            Next::Msg(Err(_)) => {
                if client.closed {
                    shared.ws_closed.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The peer
// ---------------------------------------------------------------------------------------------

/// A participant's WebRTC peer connection to the server, with synthetic media and counters.
pub struct Peer {
    participant: String,
    shared: Arc<Shared>,
    pc: Arc<dyn PeerConnection>,
    cmds: mpsc::Sender<Cmd>,
    signaling: Option<tokio::task::JoinHandle<()>>,
    /// Runs the peer connection's driver, sockets, senders and track readers.
    media: Option<tokio::runtime::Runtime>,
}

impl Peer {
    /// Takes over a joined and admitted client, publishes audio and video, negotiates with the
    /// server and waits until the connection is up.
    pub async fn connect(client: Client) -> anyhow::Result<Peer> {
        Peer::connect_with(client, Transport::Udp).await
    }

    /// [`connect`](Self::connect) over the given transport.
    pub async fn connect_with(client: Client, transport: Transport) -> anyhow::Result<Peer> {
        Peer::connect_opts(
            client,
            PeerOptions {
                transport,
                ..Default::default()
            },
        )
        .await
    }

    /// [`connect`](Self::connect) with these options (codecs, RTX, loss).
    pub async fn connect_opts(client: Client, opts: PeerOptions) -> anyhow::Result<Peer> {
        let peer = Peer::build_peer(client, opts, Vec::new()).await?;
        let reply = peer.negotiate().await?;
        if reply["type"] != "media_answer" {
            bail!("media_offer was not answered: {reply}");
        }
        peer.wait_connected(CONNECT_TIMEOUT).await?;
        Ok(peer)
    }

    /// Takes over a joined client and builds the connection and its tracks, without offering it
    /// to the server yet (see [`negotiate`](Self::negotiate)).
    pub async fn new(client: Client) -> anyhow::Result<Peer> {
        Peer::new_with(client, Transport::Udp).await
    }

    /// Like [`connect`](Self::connect), but the video is sent as simulcast layers with these rids
    /// (smallest first), each with a tag of its own ([`layer_tag`](Self::layer_tag)).
    pub async fn connect_simulcast(client: Client, rids: &[&str]) -> anyhow::Result<Peer> {
        let rids: Vec<String> = rids.iter().map(|r| r.to_string()).collect();
        let peer = Peer::build_peer(client, PeerOptions::default(), rids).await?;
        let reply = peer.negotiate().await?;
        if reply["type"] != "media_answer" {
            bail!("media_offer was not answered: {reply}");
        }
        peer.wait_connected(CONNECT_TIMEOUT).await?;
        Ok(peer)
    }

    /// [`new`](Self::new) over the given transport.
    pub async fn new_with(client: Client, transport: Transport) -> anyhow::Result<Peer> {
        let opts = PeerOptions {
            transport,
            ..Default::default()
        };
        Peer::build_peer(client, opts, Vec::new()).await
    }

    async fn build_peer(
        client: Client,
        opts: PeerOptions,
        rids: Vec<String>,
    ) -> anyhow::Result<Peer> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let participant = client
            .participant
            .clone()
            .context("client has not joined")?;
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = hash64(&[
            participant.as_bytes(),
            &n.to_be_bytes(),
            &std::process::id().to_be_bytes(),
        ])
        .to_be_bytes();
        let audio_ssrc = hash64(&[&tag, b"audio-ssrc"]) as u32 | 1;
        let video_ssrc = hash64(&[&tag, b"video-ssrc"]) as u32 | 2;
        let layers: Vec<LayerSend> = rids
            .iter()
            .map(|rid| {
                let tag = hash64(&[&tag, b"layer", rid.as_bytes()]).to_be_bytes();
                LayerSend {
                    rid: rid.clone(),
                    ssrc: hash64(&[&tag, b"ssrc"]) as u32 | 4,
                    tag,
                    sending: AtomicBool::new(true),
                    every: AtomicU32::new(1),
                    force_keyframe: AtomicBool::new(false),
                    plis: AtomicU64::new(0),
                }
            })
            .collect();
        let mut own_ssrcs = vec![audio_ssrc, video_ssrc];
        own_ssrcs.extend(layers.iter().map(|l| l.ssrc));
        let video_codec = *opts.video.first().context("no video codec to offer")?;
        let shared = Arc::new(Shared {
            tag,
            video_codec,
            loss: Arc::new(LossReport::default()),
            received: Mutex::new(Received::default()),
            remotes: Mutex::new(HashMap::new()),
            next_track: AtomicU64::new(0),
            pc: OnceLock::new(),
            gathered: watch::Sender::new(false),
            state: watch::Sender::new(RTCPeerConnectionState::New),
            ice_state: Mutex::new("new".to_owned()),
            local_candidates: Mutex::new(Vec::new()),
            messages: Mutex::new(Vec::new()),
            message_added: Notify::new(),
            media_tracks: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            audio_pt: AtomicU16::new(u16::MAX),
            video_pt: AtomicU16::new(u16::MAX),
            send_audio: AtomicBool::new(true),
            send_video: AtomicBool::new(true),
            sent_audio: AtomicU64::new(0),
            sent_video: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            plis: AtomicU64::new(0),
            firs: AtomicU64::new(0),
            nacks: AtomicU64::new(0),
            own_ssrcs,
            layers,
            video_exts: Mutex::new(None),
            rtcp: Mutex::new(BTreeMap::new()),
            force_keyframe: AtomicBool::new(false),
            hold_offers: AtomicBool::new(false),
            held_offers: Mutex::new(Vec::new()),
            ws_closed: AtomicBool::new(false),
        });
        let media = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-peer-media")
            .enable_all()
            .build()?;
        let built = media
            .spawn(build(Arc::clone(&shared), audio_ssrc, video_ssrc, opts))
            .await
            .context("building the peer connection panicked")?;
        let built = match built {
            Ok(b) => b,
            Err(e) => {
                media.shutdown_background();
                return Err(e.context("building the peer connection"));
            }
        };
        let _ = shared.pc.set(Arc::clone(&built.pc));
        media.spawn(send_audio(
            Arc::clone(&shared),
            Arc::clone(&built.audio),
            audio_ssrc,
        ));
        if shared.layers.is_empty() {
            media.spawn(send_video(
                Arc::clone(&shared),
                Arc::clone(&built.video),
                video_ssrc,
            ));
        } else {
            media.spawn(send_video_simulcast(
                Arc::clone(&shared),
                Arc::clone(&built.video),
            ));
        }
        media.spawn(read_local_rtcp(Arc::clone(&shared), built.audio));
        media.spawn(read_local_rtcp(Arc::clone(&shared), built.video));
        let (tx, rx) = mpsc::channel(16);
        let signaling = tokio::spawn(signaling(
            client,
            Arc::clone(&built.pc),
            Arc::clone(&shared),
            rx,
        ));
        Ok(Peer {
            participant,
            shared,
            pc: built.pc,
            cmds: tx,
            signaling: Some(signaling),
            media: Some(media),
        })
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<anyhow::Result<T>>) -> Cmd,
    ) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(make(tx))
            .await
            .map_err(|_| anyhow!("peer's signaling task has ended"))?;
        rx.await
            .map_err(|_| anyhow!("peer's signaling task has ended"))?
    }

    /// Sends our offer (`media_offer`, after ICE gathering) and applies the answer. Returns the
    /// server's reply: a `media_answer`, or an `error`.
    pub async fn negotiate(&self) -> anyhow::Result<Value> {
        self.call(Cmd::Negotiate).await
    }

    /// Sends a `media_offer` with exactly this SDP; returns the reply. The answer, if any, is not
    /// applied.
    pub async fn offer_raw(&self, sdp: impl Into<String>) -> anyhow::Result<Value> {
        let sdp = sdp.into();
        self.call(|tx| Cmd::RawOffer(sdp, tx)).await
    }

    /// Our current local description (the offer as last sent, candidates included).
    pub async fn local_sdp(&self) -> Option<String> {
        self.pc.local_description().await.map(|d| d.sdp)
    }

    /// Sends a signaling request through the peer's websocket and returns the reply.
    pub async fn signal(&self, msg: Value) -> anyhow::Result<Value> {
        self.call(|tx| Cmd::Request(msg, tx)).await
    }

    /// Like [`signal`](Self::signal), but expects an `ack`.
    pub async fn ok(&self, msg: Value) -> anyhow::Result<Value> {
        let r = self.signal(msg.clone()).await?;
        if r["type"] != "ack" {
            bail!("expected ack for {msg}, got {r}");
        }
        Ok(r)
    }

    /// Sends a frame without a request id and without waiting.
    pub async fn send(&self, msg: Value) -> anyhow::Result<()> {
        self.cmds
            .send(Cmd::Send(msg))
            .await
            .map_err(|_| anyhow!("peer's signaling task has ended"))
    }

    /// Trickles our gathered candidates with `ice_candidate` (each with an id) and returns the
    /// replies.
    pub async fn trickle_candidates(&self) -> anyhow::Result<Vec<Value>> {
        let cands = self.local_candidates();
        let mut replies = Vec::new();
        for c in cands {
            replies.push(
                self.signal(json!({"type": "ice_candidate", "candidate": c}))
                    .await?,
            );
        }
        Ok(replies)
    }

    /// The candidates our ICE agent gathered (`candidate:...`).
    pub fn local_candidates(&self) -> Vec<String> {
        self.shared.local_candidates.lock().unwrap().clone()
    }

    /// Waits until the peer connection is connected.
    pub async fn wait_connected(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut rx = self.shared.state.subscribe();
        let r = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Connected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await;
        let state = *self.shared.state.borrow();
        if r.is_ok() && state == RTCPeerConnectionState::Connected {
            return Ok(());
        }
        let ice = self.shared.ice_state.lock().unwrap().clone();
        let signaling = self.pc_signaling_state().await;
        bail!(
            "peer {} not connected within {timeout:?}: state {state}, ICE {ice}, {signaling}",
            self.participant
        )
    }

    async fn pc_signaling_state(&self) -> String {
        let local = self.pc.pending_local_description().await.is_some();
        let remote = self.pc.pending_remote_description().await.is_some();
        format!("pending local {local}, pending remote {remote}")
    }

    /// The peer connection's state.
    pub fn state(&self) -> RTCPeerConnectionState {
        *self.shared.state.borrow()
    }

    pub fn participant(&self) -> &str {
        &self.participant
    }

    /// The tag in this peer's payloads.
    pub fn tag(&self) -> Tag {
        self.shared.tag
    }

    /// The tag in the payloads of our simulcast layer `rid`.
    pub fn layer_tag(&self, rid: &str) -> Option<Tag> {
        self.shared
            .layers
            .iter()
            .find(|l| l.rid == rid)
            .map(|l| l.tag)
    }

    /// Sends simulcast layer `rid` at a lower frame rate, one frame in `every` (1: all), so that
    /// it takes less bandwidth than the others, as a browser's lowest layer does.
    pub fn thin_layer(&self, rid: &str, every: u32) {
        if let Some(l) = self.shared.layers.iter().find(|l| l.rid == rid) {
            l.every.store(every, Ordering::Relaxed);
        }
    }

    /// Stops (`false`) or resumes sending simulcast layer `rid`, as a browser drops a layer when
    /// its uplink gets thin.
    pub fn set_layer_sending(&self, rid: &str, on: bool) {
        if let Some(l) = self.shared.layers.iter().find(|l| l.rid == rid) {
            l.sending.store(on, Ordering::Relaxed);
        }
    }

    /// Keyframe requests (PLI, FIR) the server sent for simulcast layer `rid`.
    pub fn layer_keyframe_requests(&self, rid: &str) -> u64 {
        self.shared
            .layers
            .iter()
            .find(|l| l.rid == rid)
            .map_or(0, |l| l.plis.load(Ordering::Relaxed))
    }

    /// Packets received from the sender with `tag`, audio and video.
    pub fn received_from(&self, tag: Tag) -> u64 {
        self.received(tag, Kind::Audio) + self.received(tag, Kind::Video)
    }

    /// Packets of one kind received from the sender with `tag`.
    pub fn received(&self, tag: Tag, kind: Kind) -> u64 {
        self.flow(tag, kind).map_or(0, |f| f.packets)
    }

    /// What arrived from `tag` of this kind since the last reset.
    pub fn flow(&self, tag: Tag, kind: Kind) -> Option<FlowStats> {
        self.shared
            .received
            .lock()
            .unwrap()
            .flows
            .get(&(tag, kind))
            .cloned()
    }

    /// Every sender tag heard from since the last reset.
    pub fn senders_heard(&self) -> BTreeSet<Tag> {
        self.shared
            .received
            .lock()
            .unwrap()
            .flows
            .keys()
            .map(|(t, _)| *t)
            .collect()
    }

    /// Packets received in all, since the last reset.
    pub fn total_received(&self) -> u64 {
        let r = self.shared.received.lock().unwrap();
        r.tracks.values().map(|t| t.packets).sum()
    }

    /// Payloads that differ from what their sender wrote, or are none of ours, since the last
    /// reset.
    pub fn bad_payloads(&self) -> u64 {
        let r = self.shared.received.lock().unwrap();
        r.tracks
            .values()
            .map(|t| t.mismatches + t.unparsable + t.wrong_kind)
            .sum()
    }

    /// The tracks received so far, with what arrived on each since the last reset.
    pub fn tracks(&self) -> Vec<TrackStats> {
        self.shared
            .received
            .lock()
            .unwrap()
            .tracks
            .values()
            .cloned()
            .collect()
    }

    /// Zeroes every receive counter (tracks stay known).
    pub fn reset_counters(&self) {
        let mut r = self.shared.received.lock().unwrap();
        r.flows.clear();
        for t in r.tracks.values_mut() {
            t.packets = 0;
            t.bytes = 0;
            t.tags.clear();
            t.ssrcs.clear();
            t.payload_types.clear();
            t.ext_ids.clear();
            t.last = None;
            t.mismatches = 0;
            t.unparsable = 0;
            t.wrong_kind = 0;
            t.history.clear();
        }
    }

    /// Packets of this kind written by our senders.
    pub fn sent(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Audio => self.shared.sent_audio.load(Ordering::Relaxed),
            Kind::Video => self.shared.sent_video.load(Ordering::Relaxed),
        }
    }

    /// Writes our senders could not hand to the connection.
    pub fn send_errors(&self) -> u64 {
        self.shared.send_errors.load(Ordering::Relaxed)
    }

    /// Pauses or resumes one of our senders.
    /// Holds (`true`) or again answers (`false`) the server's offers; see [`Self::held_offers`].
    /// Our own offer being answered drops the held ones and ends holding (a client whose offer
    /// won the glare drops the server's, as docs/protocol.md "Media" says).
    pub fn hold_server_offers(&self, on: bool) {
        self.shared.hold_offers.store(on, Ordering::Relaxed);
    }

    /// How many server offers are held.
    pub fn held_offers(&self) -> usize {
        self.shared.held_offers.lock().unwrap().len()
    }

    pub fn set_sending(&self, kind: Kind, on: bool) {
        match kind {
            Kind::Audio => self.shared.send_audio.store(on, Ordering::Relaxed),
            Kind::Video => self.shared.send_video.store(on, Ordering::Relaxed),
        }
    }

    /// Keyframe requests (PLI, FIR) and NACKs the server sent us about our published tracks.
    pub fn feedback_received(&self) -> (u64, u64, u64) {
        (
            self.shared.plis.load(Ordering::Relaxed),
            self.shared.firs.load(Ordering::Relaxed),
            self.shared.nacks.load(Ordering::Relaxed),
        )
    }

    /// Every RTCP packet the server sent about our published tracks, by type/format.
    pub fn rtcp_received(&self) -> BTreeMap<String, u64> {
        self.shared.rtcp.lock().unwrap().clone()
    }

    /// Received video packets the loss injector dropped ([`PeerOptions::drop_inbound_video`]).
    pub fn dropped_inbound(&self) -> Vec<Dropped> {
        self.shared.loss.dropped_in.lock().unwrap().clone()
    }

    /// Sent video packets the loss injector dropped ([`PeerOptions::drop_outbound_video`]).
    pub fn dropped_outbound(&self) -> Vec<Dropped> {
        self.shared.loss.dropped_out.lock().unwrap().clone()
    }

    /// Makes our downlink a thin one: received RTP beyond `bps` bits per second (payload and
    /// RTP header; a quarter of a second of buffer) is lost before anything of ours sees it, so
    /// our receiver reports count it lost. 0 lifts the limit.
    pub fn limit_downlink(&self, bps: u64) {
        self.shared.loss.downlink_bps.store(bps, Ordering::Relaxed);
    }

    /// Puts a queueing downlink of `bps` bits per second in front of this peer's receive path
    /// (0 lifts it, delivering what waits at once): a link with a deep buffer, which delays
    /// what exceeds its rate and loses nothing. Received RTP and RTCP queue alike, below the
    /// receiver-report interceptor, so the peer's reports carry the delay.
    pub fn queue_downlink(&self, bps: u64) {
        self.shared.loss.queue_bps.store(bps, Ordering::Relaxed);
    }

    /// The longest a received packet waited in the queueing downlink.
    pub fn queued_max(&self) -> Duration {
        Duration::from_micros(self.shared.loss.queued_max_us.load(Ordering::Relaxed))
    }

    /// How long a packet arriving at the queueing downlink now would wait.
    pub fn queue_delay(&self) -> Duration {
        Duration::from_micros(self.shared.loss.queue_delay_us.load(Ordering::Relaxed))
    }

    /// Received packets the thin downlink dropped: (audio, video).
    pub fn policed(&self) -> (u64, u64) {
        (
            self.shared.loss.policed_audio.load(Ordering::Relaxed),
            self.shared.loss.policed_video.load(Ordering::Relaxed),
        )
    }

    /// NACKs this peer sent.
    pub fn nacks_sent(&self) -> u64 {
        self.shared.loss.nacks_sent.load(Ordering::Relaxed)
    }

    /// Packets received on an RTX payload type, and packets received again on the media SSRC
    /// with a sequence number that had been dropped on arrival.
    pub fn retransmissions_received(&self) -> (u64, u64) {
        (
            self.shared.loss.rtx_in.load(Ordering::Relaxed),
            self.shared.loss.repeats_in.load(Ordering::Relaxed),
        )
    }

    /// Retransmissions this peer sent (RTX, or a dropped sequence number again).
    pub fn retransmissions_sent(&self) -> u64 {
        self.shared.loss.resent_out.load(Ordering::Relaxed)
    }

    /// Sends a PLI for the received video track carrying `tag`'s video. Returns false if no
    /// such track has arrived.
    pub async fn request_keyframe(&self, tag: Tag) -> anyhow::Result<bool> {
        let found = {
            let r = self.shared.received.lock().unwrap();
            r.tracks
                .values()
                .filter(|t| t.kind == Kind::Video && t.tags.contains(&tag))
                .find_map(|t| t.ssrcs.iter().next().map(|s| (t.index, *s)))
        };
        let Some((index, media_ssrc)) = found else {
            return Ok(false);
        };
        let Some(remote) = self.shared.remotes.lock().unwrap().get(&index).cloned() else {
            return Ok(false);
        };
        remote
            .write_rtcp(vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            })])
            .await
            .map_err(|e| anyhow!("writing PLI: {e}"))?;
        Ok(true)
    }

    /// The latest `media_tracks` the server sent.
    pub fn media_tracks(&self) -> Vec<TrackInfo> {
        self.shared.media_tracks.lock().unwrap().clone()
    }

    /// Every message the server sent since the peer took the websocket over.
    pub fn messages(&self) -> Vec<Value> {
        self.shared.messages.lock().unwrap().clone()
    }

    /// The `video` of every `media_downlink` the server sent us, in order.
    pub fn downlink_states(&self) -> Vec<String> {
        self.messages()
            .iter()
            .filter(|m| m["type"] == "media_downlink")
            .filter_map(|m| m["video"].as_str().map(str::to_owned))
            .collect()
    }

    /// Every SDP the server sent (answers and offers), in order.
    pub fn server_sdps(&self) -> Vec<String> {
        self.messages()
            .iter()
            .filter(|m| m["type"] == "media_answer" || m["type"] == "media_offer")
            .filter_map(|m| m["sdp"].as_str().map(str::to_owned))
            .collect()
    }

    /// Failures of the background task (answering server offers, parsing media_tracks).
    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().unwrap().clone()
    }

    /// Whether the server closed our websocket.
    pub fn ws_closed(&self) -> bool {
        self.shared.ws_closed.load(Ordering::Relaxed)
    }

    /// Waits for a message from the server (already received or new) matching `pred`.
    pub async fn wait_message(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.message_added.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(m) = self.messages().into_iter().find(|m| pred(m)) {
                return Ok(m);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!(
                    "{}: no matching message within {timeout:?}",
                    self.participant
                );
            }
        }
    }

    /// Closes the connection and the websocket cleanly.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pc.close()).await;
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Close(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        self.teardown();
    }

    /// Replaces this peer connection with a brand-new one on the same websocket, as a page that
    /// recreates its `RTCPeerConnection` after a network change does (new ICE credentials, new
    /// DTLS certificate): the old connection vanishes without a word (no DTLS close alert, no
    /// RTCP BYE: the network it used is gone), the new one publishes, is offered to the server
    /// and connects.
    pub async fn restart(mut self) -> anyhow::Result<Peer> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Release(tx))
            .await
            .map_err(|_| anyhow!("the signaling task is gone"))?;
        let client = tokio::time::timeout(Duration::from_secs(5), rx).await??;
        self.teardown();
        Peer::connect(client).await
    }

    /// Disappears without a word, as a crashed phone would: the connection's tasks and sockets
    /// are dropped (no DTLS close, no RTCP BYE) and the websocket is dropped without a close
    /// frame.
    pub fn vanish(mut self) {
        self.teardown();
    }

    /// Drops only the media side (connection, sockets, senders); the websocket stays open.
    pub fn vanish_media(&mut self) {
        if let Some(rt) = self.media.take() {
            rt.shutdown_background();
        }
    }

    fn teardown(&mut self) {
        if let Some(t) = self.signaling.take() {
            t.abort();
        }
        self.vanish_media();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
/// A per-participant gauge's value in `/metrics` text (`name{case=...,participant="..."} v`).
pub fn participant_gauge(text: &str, name: &str, participant: &str) -> Option<f64> {
    let label = format!("participant=\"{participant}\"");
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `a=candidate` lines of an SDP, without the `a=` prefix.
pub fn candidate_lines(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a="))
        .filter(|l| l.starts_with("candidate:"))
        .map(str::to_owned)
        .collect()
}

/// Address and port of a candidate line (`candidate:f 1 udp prio ADDR PORT typ host ...`).
pub fn candidate_addr(line: &str) -> Option<(String, u16)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    Some((f.get(4)?.to_string(), f.get(5)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let tag = *b"\x01\x02\x03\x04\x05\x06\x07\x08";
        let a = audio_payload(&tag, 42);
        assert_eq!(a.len(), AUDIO_PAYLOAD_LEN);
        let p = parse_payload(&a).unwrap();
        assert_eq!((p.kind, p.tag, p.counter), (Kind::Audio, tag, 42));
        assert_eq!(expected_payload(&p), a);
        for (index, keyframe) in [(0, true), (1, true), (0, false), (1, false)] {
            let pos = VideoPos {
                frame: 7,
                index,
                count: 2,
                keyframe,
            };
            let v = video_payload(&tag, 9, pos);
            assert_eq!(v.len(), VIDEO_PAYLOAD_LEN);
            let p = parse_payload(&v).unwrap();
            assert_eq!(p.video, Some(pos));
            assert_eq!(expected_payload(&p), v);
            assert_eq!(is_vp8_keyframe(&v), index == 0 && keyframe);
        }
        // A simulcast layer's descriptor: picture ID and TL0PICIDX survive the round trip, and
        // the check rebuilds the descriptor from what arrived (an SFU may rewrite it).
        let pos = VideoPos {
            frame: 3,
            index: 0,
            count: 3,
            keyframe: true,
        };
        let v = video_payload_with(&tag, 5, pos, Some((0x1234, 77)));
        assert_eq!(v.len(), VIDEO_PAYLOAD_LEN);
        let p = parse_payload(&v).unwrap();
        assert_eq!((p.video, p.pic), (Some(pos), Some((0x1234, 77))));
        assert_eq!(expected_payload(&p), v);
        assert!(is_vp8_keyframe(&v));
        let delta = video_payload_with(
            &tag,
            6,
            VideoPos {
                keyframe: false,
                ..pos
            },
            Some((1, 2)),
        );
        assert!(!is_vp8_keyframe(&delta));
        assert_eq!(parse_payload(&delta).unwrap().pic, Some((1, 2)));
        let mut bad = audio_payload(&tag, 1);
        bad[40] ^= 1;
        assert_ne!(expected_payload(&parse_payload(&bad).unwrap()), bad);
        assert!(parse_payload(b"hello").is_none());
    }

    #[test]
    fn h264_payloads_round_trip() {
        let tag = *b"\x01\x02\x03\x04\x05\x06\x07\x08";
        for (frame, keyframe) in [(0, true), (1, false), (2, false)] {
            let count = h264_packets(frame, keyframe);
            let mut starts = 0;
            for index in 0..count {
                let pos = VideoPos {
                    frame,
                    index,
                    count,
                    keyframe,
                };
                let v = h264_payload(&tag, 40 + u32::from(index), pos);
                assert_eq!(v.len(), VIDEO_PAYLOAD_LEN);
                let p = parse_payload(&v).unwrap();
                assert_eq!(p.codec, VideoCodec::H264);
                assert_eq!((p.kind, p.tag, p.video), (Kind::Video, tag, Some(pos)));
                assert_eq!(expected_payload(&p), v);
                if is_keyframe(&v) {
                    starts += 1;
                }
                // Not mistaken for VP8 keyframes.
                assert!(!is_vp8_keyframe(&v) || is_h264_keyframe(&v));
            }
            // SPS, and the IDR's first fragment.
            assert_eq!(starts, if keyframe { 2 } else { 0 });
        }
        // FU-A: S on the first fragment, E on the last.
        let pos = |index| VideoPos {
            frame: 1,
            index,
            count: 2,
            keyframe: false,
        };
        assert_eq!(&h264_payload(&tag, 0, pos(0))[..2], &[0x5c, 0x81]);
        assert_eq!(&h264_payload(&tag, 0, pos(1))[..2], &[0x5c, 0x41]);
        // VP8 payloads still parse as VP8.
        let v = video_payload(&tag, 3, pos(0));
        assert_eq!(parse_payload(&v).unwrap().codec, VideoCodec::Vp8);
        let plan = DropPlan {
            from: 10,
            every: 5,
            count: 3,
        };
        let hit: Vec<u64> = (0..40).filter(|n| plan.hits(*n)).collect();
        assert_eq!(hit, [10, 15, 20]);
    }

    #[test]
    fn candidate_parsing() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=mid:0\r\n";
        let c = candidate_lines(sdp);
        assert_eq!(c.len(), 1);
        assert_eq!(candidate_addr(&c[0]), Some(("127.0.0.1".into(), 5000)));
    }
}
