//! One benchmark participant's WebRTC peer connection to the server (`--media` mode), on the
//! `webrtc` crate (webrtc-rs): the independent peer implementation the server's str0m SFU is
//! measured against.
//!
//! A [`MediaPeer`] takes over a joined (and admitted) websocket and:
//!
//! * publishes an Opus track and, with video, a VP8 track ([`TrackLocalStaticRTP`]): it offers
//!   them with `media_offer` once ICE gathering is complete, applies the `media_answer`, then a
//!   background task answers every `media_offer` the server sends when the tracks it may receive
//!   change (the other participants publishing);
//! * sends synthetic RTP: one audio packet every 20 ms; video at 30 frames per second, each frame
//!   split into packets of at most 1,200 bytes with the marker bit on its last packet, a keyframe
//!   first and then every `keyframe_every` frames, frame sizes chosen for the configured bitrate.
//!   Every payload carries the sender's number, a per-kind sequence number and the send time in
//!   nanoseconds on the load generator's process-wide monotonic clock ([`crate::conn::nanos`]);
//! * reads every track it receives and, for each packet, records the forwarding latency
//!   (receipt − send time, same clock), and which (sender, kind, sequence) arrived, so loss and
//!   duplicates are exact ([`RecvStats`]).
//!
//! The measured phase is a window of send times (`Window`): senders count what they send in
//! it and stop at its end; receivers count only packets sent in it. Everything runs on the load
//! generator's one tokio runtime; every socket is bound to 127.0.0.1.
//!
//! Keyframe requests (PLI/FIR) from the server are not answered (the synthetic "encoder" only
//! sends its periodic keyframes): the SFU forwards regardless of keyframes, so forwarding
//! figures do not depend on it. NACKs are answered by webrtc-rs's default interceptors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rtc::ice::network_type::NetworkType;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder, StatsSelector,
};

use crate::conn::{histogram, nanos, Ws};

/// Audio packet interval (Opus, 20 ms frames).
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// Video frame interval (30 fps).
pub const VIDEO_INTERVAL: Duration = Duration::from_micros(33_333);
/// Largest RTP payload of a video packet.
pub const MAX_VIDEO_PAYLOAD: usize = 1200;
/// Payload types offered (the browser's usual numbers).
const OPUS_PT: u8 = 111;
const VP8_PT: u8 = 96;

/// Our marker at the start of every payload (after the VP8 payload descriptor and header).
const MAGIC: &[u8; 3] = b"YLG";
/// magic, kind, sender, sequence, send time.
const HEADER_LEN: usize = 3 + 1 + 4 + 4 + 8;
/// The VP8 payload header (RFC 7741 §4.3) of a keyframe: frame tag with P = 0 and show_frame,
/// the start code 9d 01 2a, then 1280 x 720.
const VP8_KEYFRAME_HEADER: [u8; 10] = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02];
/// The frame tag of a delta frame (P = 1), padded to the keyframe header's length.
const VP8_DELTA_HEADER: [u8; 10] = [0x11, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0];

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Audio = 0,
    Video = 1,
}

/// What a participant publishes.
#[derive(Clone, Copy, Debug)]
pub struct MediaSpec {
    pub video: bool,
    /// Audio payload size in bytes.
    pub audio_bytes: usize,
    /// Video bitrate (RTP payload bytes), bits per second.
    pub video_bps: u64,
    /// A keyframe every this many frames (and the first frame).
    pub keyframe_every: u32,
}

impl MediaSpec {
    /// Payload bytes of a keyframe and of a delta frame: a keyframe is three average frames,
    /// and the delta frames share the rest of each keyframe interval's budget.
    pub fn frame_bytes(&self) -> (usize, usize) {
        let avg = self.video_bps as f64 / 8.0 / 30.0;
        let k = f64::from(self.keyframe_every.max(2));
        let key = 3.0 * avg;
        let delta = (avg * k - key) / (k - 1.0);
        (key as usize, (delta as usize).max(64))
    }
}

/// The measured phase as a window of send times (ns on [`nanos`]'s clock). Until it is set,
/// both ends are `u64::MAX`: nothing is in the phase and senders keep sending.
pub struct Window {
    pub start: AtomicU64,
    pub end: AtomicU64,
}

impl Window {
    pub fn new() -> Window {
        Window {
            start: AtomicU64::new(u64::MAX),
            end: AtomicU64::new(u64::MAX),
        }
    }

    fn contains(&self, t: u64) -> bool {
        t >= self.start.load(Ordering::Relaxed) && t < self.end.load(Ordering::Relaxed)
    }

    fn ended(&self, t: u64) -> bool {
        t >= self.end.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------------

fn put_header(p: &mut Vec<u8>, kind: Kind, sender: u32, seq: u32, t: u64) {
    p.extend_from_slice(MAGIC);
    p.push(kind as u8);
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&t.to_be_bytes());
}

/// An audio payload of `len` bytes.
fn audio_payload(len: usize, sender: u32, seq: u32, t: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(len.max(HEADER_LEN));
    put_header(&mut p, Kind::Audio, sender, seq, t);
    p.resize(len.max(HEADER_LEN), 0xa5);
    p
}

/// A video payload of `len` bytes: the VP8 payload descriptor (S bit on the first packet of a
/// frame, partition 0), the VP8 payload header on the first packet, then our header.
fn video_payload(
    len: usize,
    first: bool,
    keyframe: bool,
    sender: u32,
    seq: u32,
    t: u64,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(len.max(HEADER_LEN + 11));
    if first {
        p.push(0x10);
        p.extend_from_slice(if keyframe {
            &VP8_KEYFRAME_HEADER
        } else {
            &VP8_DELTA_HEADER
        });
    } else {
        p.push(0x00);
    }
    put_header(&mut p, Kind::Video, sender, seq, t);
    p.resize(len.max(p.len()), 0x5a);
    p
}

/// (kind, sender, sequence, send time) of one of our payloads.
fn parse_payload(p: &[u8]) -> Option<(Kind, u32, u32, u64)> {
    let start = if p.first() == Some(&MAGIC[0]) {
        0
    } else if p.first()? & 0x10 != 0 {
        11
    } else {
        1
    };
    let h = p.get(start..start + HEADER_LEN)?;
    if &h[..3] != MAGIC {
        return None;
    }
    let kind = match h[3] {
        0 => Kind::Audio,
        1 => Kind::Video,
        _ => return None,
    };
    Some((
        kind,
        u32::from_be_bytes(h[4..8].try_into().ok()?),
        u32::from_be_bytes(h[8..12].try_into().ok()?),
        u64::from_be_bytes(h[12..20].try_into().ok()?),
    ))
}

// ---------------------------------------------------------------------------------------------
// Receive statistics
// ---------------------------------------------------------------------------------------------

/// Which sequence numbers of one (sender, kind) arrived.
#[derive(Default)]
struct Flow {
    seen: Vec<u64>,
}

impl Flow {
    /// Marks `seq` as seen; false if it already was (a duplicate).
    fn mark(&mut self, seq: u32) -> bool {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= w {
            self.seen.resize(w + 1, 0);
        }
        let fresh = self.seen[w] & (1 << b) == 0;
        self.seen[w] |= 1 << b;
        fresh
    }
}

/// What one participant (or, merged, all of them) received.
pub struct RecvStats {
    /// Send → receipt of packets sent in the phase, first copies only (µs).
    pub latency: Histogram<u64>,
    pub latency_audio: Histogram<u64>,
    pub latency_video: Histogram<u64>,
    /// Packets sent in the phase and received (first copies), by kind.
    pub in_phase: [u64; 2],
    /// Packets received in all (setup, phase and grace), duplicates included.
    pub total: u64,
    /// Second and later copies of a packet (retransmissions).
    pub duplicates: u64,
    /// Packets that are none of ours.
    pub unparsable: u64,
    flows: HashMap<(u32, Kind), Flow>,
}

impl RecvStats {
    pub fn new() -> RecvStats {
        RecvStats {
            latency: histogram(),
            latency_audio: histogram(),
            latency_video: histogram(),
            in_phase: [0; 2],
            total: 0,
            duplicates: 0,
            unparsable: 0,
            flows: HashMap::new(),
        }
    }

    fn record(&mut self, payload: &[u8], at: u64, window: &Window) {
        self.total += 1;
        let Some((kind, sender, seq, t)) = parse_payload(payload) else {
            self.unparsable += 1;
            return;
        };
        if !self.flows.entry((sender, kind)).or_default().mark(seq) {
            self.duplicates += 1;
            return;
        }
        if window.contains(t) {
            self.in_phase[kind as usize] += 1;
            let us = (at.saturating_sub(t) / 1000).max(1);
            self.latency.saturating_record(us);
            match kind {
                Kind::Audio => self.latency_audio.saturating_record(us),
                Kind::Video => self.latency_video.saturating_record(us),
            }
        }
    }

    /// Distinct (sender, kind) flows heard from so far.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    pub fn merge(&mut self, o: &RecvStats) {
        let _ = self.latency.add(&o.latency);
        let _ = self.latency_audio.add(&o.latency_audio);
        let _ = self.latency_video.add(&o.latency_video);
        for (total, n) in self.in_phase.iter_mut().zip(o.in_phase) {
            *total += n;
        }
        self.total += o.total;
        self.duplicates += o.duplicates;
        self.unparsable += o.unparsable;
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state and the event handler
// ---------------------------------------------------------------------------------------------

/// Send counters of one participant.
#[derive(Default)]
pub struct SendStats {
    /// Packets sent in the phase, by kind.
    pub in_phase: [AtomicU64; 2],
    /// Packets sent in all.
    pub total: AtomicU64,
    /// Writes the peer connection refused.
    pub errors: AtomicU64,
    /// Timer ticks that came late by more than one interval (a saturated load generator).
    pub late_ticks: AtomicU64,
}

struct Shared {
    window: Arc<Window>,
    recv: Mutex<RecvStats>,
    sent: SendStats,
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    audio_pt: AtomicU16,
    video_pt: AtomicU16,
    /// Renegotiations answered, and failures of the signaling task.
    renegotiations: AtomicU64,
    signaling_errors: Mutex<Vec<String>>,
}

struct Handler {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.shared
            .gathered
            .send_replace(state == RTCIceGatheringState::Complete);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.shared.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Called on the driver task: read on a task of its own.
        tokio::spawn(read_track(Arc::clone(&self.shared), track));
    }
}

async fn read_track(shared: Arc<Shared>, track: Arc<dyn TrackRemote>) {
    while let Some(evt) = track.poll().await {
        match evt {
            TrackRemoteEvent::OnRtpPacket(p) => {
                let at = nanos();
                shared
                    .recv
                    .lock()
                    .unwrap()
                    .record(&p.payload, at, &shared.window);
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Senders
// ---------------------------------------------------------------------------------------------

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

/// Sleeps a random part of `period` (so that participants do not send in lockstep), then
/// returns an interval of `period`.
async fn ticker(period: Duration, offset: f64) -> tokio::time::Interval {
    tokio::time::sleep(period.mul_f64(offset)).await;
    let mut iv = tokio::time::interval(period);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    iv
}

fn count_sent(shared: &Shared, kind: Kind, t: u64, ok: bool) {
    if ok {
        shared.sent.total.fetch_add(1, Ordering::Relaxed);
        if shared.window.contains(t) {
            shared.sent.in_phase[kind as usize].fetch_add(1, Ordering::Relaxed);
        }
    } else {
        shared.sent.errors.fetch_add(1, Ordering::Relaxed);
    }
}

async fn send_audio(
    shared: Arc<Shared>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    sender: u32,
    spec: MediaSpec,
    offset: f64,
) {
    let mut iv = ticker(AUDIO_INTERVAL, offset).await;
    let (mut seq, mut ts, mut counter) = (rand::random::<u16>(), rand::random::<u32>(), 0u32);
    let mut last = tokio::time::Instant::now();
    loop {
        let tick = iv.tick().await;
        if tick.duration_since(last) > 2 * AUDIO_INTERVAL {
            shared.sent.late_ticks.fetch_add(1, Ordering::Relaxed);
        }
        last = tick;
        let pt = shared.audio_pt.load(Ordering::Relaxed);
        let t = nanos();
        if shared.window.ended(t) {
            return;
        }
        if pt <= 127 {
            let payload = audio_payload(spec.audio_bytes, sender, counter, t);
            let p = rtp(pt as u8, seq, ts, ssrc, counter == 0, payload);
            let ok = track.write_rtp(p).await.is_ok();
            count_sent(&shared, Kind::Audio, t, ok);
            counter += 1;
            seq = seq.wrapping_add(1);
        }
        ts = ts.wrapping_add(960);
    }
}

async fn send_video(
    shared: Arc<Shared>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    sender: u32,
    spec: MediaSpec,
    offset: f64,
) {
    let mut iv = ticker(VIDEO_INTERVAL, offset).await;
    let (key_bytes, delta_bytes) = spec.frame_bytes();
    let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
    let (mut counter, mut frame) = (0u32, 0u32);
    let mut last = tokio::time::Instant::now();
    loop {
        let tick = iv.tick().await;
        if tick.duration_since(last) > 2 * VIDEO_INTERVAL {
            shared.sent.late_ticks.fetch_add(1, Ordering::Relaxed);
        }
        last = tick;
        let pt = shared.video_pt.load(Ordering::Relaxed);
        let t = nanos();
        if shared.window.ended(t) {
            return;
        }
        if pt <= 127 {
            let keyframe = frame.is_multiple_of(spec.keyframe_every.max(1));
            let bytes = if keyframe { key_bytes } else { delta_bytes };
            let count = bytes.div_ceil(MAX_VIDEO_PAYLOAD);
            let each = bytes / count;
            for i in 0..count {
                // Every packet of a frame carries the frame's send time.
                let payload = video_payload(each, i == 0, keyframe, sender, counter, t);
                let p = rtp(pt as u8, seq, ts, ssrc, i + 1 == count, payload);
                let ok = track.write_rtp(p).await.is_ok();
                count_sent(&shared, Kind::Video, t, ok);
                counter += 1;
                seq = seq.wrapping_add(1);
            }
            frame += 1;
        }
        ts = ts.wrapping_add(3000);
    }
}

// ---------------------------------------------------------------------------------------------
// Building and negotiating the connection
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

fn vp8() -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodec {
        mime_type: "video/VP8".to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![
            fb("goog-remb", ""),
            fb("ccm", "fir"),
            fb("nack", ""),
            fb("nack", "pli"),
        ],
    }
}

fn local_track(
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
    ssrc: u32,
    name: &str,
    sender: u32,
) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("loadgen-{sender}"),
        format!("{name}-{sender}"),
        name.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec,
            ..Default::default()
        }],
    )))
}

/// Reads the payload types the answer settled on for our senders.
async fn learn_payload_types(pc: &Arc<dyn PeerConnection>, shared: &Shared) {
    for s in pc.get_senders().await {
        let kind = s.track().kind().await;
        let Ok(params) = s.get_parameters().await else {
            continue;
        };
        let (want, slot) = if kind == RtpCodecKind::Video {
            ("video/vp8", &shared.video_pt)
        } else {
            ("audio/opus", &shared.audio_pt)
        };
        if let Some(c) = params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(want))
        {
            slot.store(u16::from(c.payload_type), Ordering::Relaxed);
        }
    }
}

const OP_TIMEOUT: Duration = Duration::from_secs(20);

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = webrtc::error::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Err(_) => bail!("{what}: timed out"),
        Ok(Err(e)) => bail!("{what}: {e}"),
        Ok(Ok(v)) => Ok(v),
    }
}

/// The fields of a server message the peer looks at.
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    sdp: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

/// Reads the next frame within `timeout`: a parsed text message, or `None` for frames of
/// other types and text that is none of the protocol's.
async fn next_message(ws: &mut Ws, timeout: Duration) -> anyhow::Result<Option<Incoming>> {
    let m = tokio::time::timeout(timeout, ws.next())
        .await
        .map_err(|_| anyhow!("no message from the server within {timeout:?}"))?;
    match m {
        Some(Ok(Message::Text(t))) => Ok(serde_json::from_str(t.as_str()).ok()),
        Some(Ok(Message::Close(_))) | None => bail!("the server closed the websocket"),
        Some(Ok(_)) => Ok(None),
        Some(Err(e)) => bail!("websocket error: {e}"),
    }
}

/// A participant's peer connection and the tasks around it.
pub struct MediaPeer {
    shared: Arc<Shared>,
    pc: Arc<dyn PeerConnection>,
    stop: watch::Sender<bool>,
    signaling: Option<tokio::task::JoinHandle<Ws>>,
}

impl MediaPeer {
    /// Builds the connection with its tracks on a joined websocket, offers it to the server,
    /// applies the answer and starts sending. Does not wait for the connection to be up
    /// ([`MediaPeer::wait_connected`]).
    pub async fn start(
        mut ws: Ws,
        sender: u32,
        spec: MediaSpec,
        window: Arc<Window>,
    ) -> anyhow::Result<MediaPeer> {
        let shared = Arc::new(Shared {
            window,
            recv: Mutex::new(RecvStats::new()),
            sent: SendStats::default(),
            gathered: watch::Sender::new(false),
            state: watch::Sender::new(RTCPeerConnectionState::New),
            audio_pt: AtomicU16::new(u16::MAX),
            video_pt: AtomicU16::new(u16::MAX),
            renegotiations: AtomicU64::new(0),
            signaling_errors: Mutex::new(Vec::new()),
        });
        let mut media = MediaEngine::default();
        media.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus(),
                payload_type: OPUS_PT,
            },
            RtpCodecKind::Audio,
        )?;
        media.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: vp8(),
                payload_type: VP8_PT,
            },
            RtpCodecKind::Video,
        )?;
        // The default interceptors, as a browser would run: NACK, RTCP reports, TWCC.
        let registry = register_default_interceptors(Registry::new(), &mut media)?;
        // Loopback only: one UDP socket bound to 127.0.0.1, IPv4.
        let settings = SettingEngineBuilder::new()
            .with_include_loopback_candidate(true)
            .with_network_types(vec![NetworkType::Udp4])
            .build();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                shared: Arc::clone(&shared),
            }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await
            .context("building the peer connection")?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let audio_ssrc = rand::random::<u32>() | 1;
        let video_ssrc = rand::random::<u32>() | 2;
        let audio = local_track(RtpCodecKind::Audio, opus(), audio_ssrc, "audio", sender);
        pc.add_track(Arc::clone(&audio) as Arc<dyn TrackLocal>)
            .await?;
        let video = if spec.video {
            let v = local_track(RtpCodecKind::Video, vp8(), video_ssrc, "video", sender);
            pc.add_track(Arc::clone(&v) as Arc<dyn TrackLocal>).await?;
            Some(v)
        } else {
            None
        };

        // Offer (non-trickle: once gathering completed, so it carries our candidate).
        let offer = timed("create_offer", pc.create_offer(None)).await?;
        timed("set_local_description", pc.set_local_description(offer)).await?;
        let mut gathered = shared.gathered.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), gathered.wait_for(|g| *g)).await;
        let sdp = pc
            .local_description()
            .await
            .context("no local description")?
            .sdp;
        let msg = serde_json::json!({"type": "media_offer", "id": "mo", "sdp": sdp});
        ws.send(Message::text(msg.to_string()))
            .await
            .context("sending media_offer")?;
        let answer = loop {
            let Some(m) = next_message(&mut ws, OP_TIMEOUT).await? else {
                continue;
            };
            match (m.ty.as_str(), m.id.as_deref()) {
                ("media_answer", Some("mo")) => break m.sdp.context("media_answer without sdp")?,
                ("error", Some("mo")) => {
                    bail!("media_offer refused: {}", m.code.unwrap_or_default())
                }
                ("closed", _) => bail!("the server closed the session"),
                _ => {}
            }
        };
        let answer = RTCSessionDescription::answer(answer)
            .map_err(|e| anyhow!("server answer does not parse: {e}"))?;
        timed("set_remote_description", pc.set_remote_description(answer)).await?;
        learn_payload_types(&pc, &shared).await;

        let (stop, stop_rx) = watch::channel(false);
        let signaling = tokio::spawn(signaling(ws, Arc::clone(&pc), Arc::clone(&shared), stop_rx));
        tokio::spawn(send_audio(
            Arc::clone(&shared),
            audio,
            audio_ssrc,
            sender,
            spec,
            rand::random::<f64>(),
        ));
        if let Some(v) = video {
            tokio::spawn(send_video(
                Arc::clone(&shared),
                v,
                video_ssrc,
                sender,
                spec,
                rand::random::<f64>(),
            ));
        }
        Ok(MediaPeer {
            shared,
            pc,
            stop,
            signaling: Some(signaling),
        })
    }

    /// Waits until the connection is up (ICE and DTLS).
    pub async fn wait_connected(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut rx = self.shared.state.subscribe();
        let _ = tokio::time::timeout(
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
        if state != RTCPeerConnectionState::Connected {
            bail!("peer connection not connected within {timeout:?}: {state}");
        }
        Ok(())
    }

    /// Distinct (sender, kind) flows this participant has received packets of.
    pub fn flows_heard(&self) -> usize {
        self.shared.recv.lock().unwrap().flows()
    }

    pub fn connected(&self) -> bool {
        *self.shared.state.borrow() == RTCPeerConnectionState::Connected
    }

    /// Packets received by the webrtc stack on every inbound stream (before the queue to the
    /// application, which drops packets when the reader falls behind).
    pub async fn stack_received(&self) -> u64 {
        let report = self
            .pc
            .get_stats(std::time::Instant::now(), StatsSelector::None)
            .await;
        report
            .inbound_rtp_streams()
            .map(|s| s.received_rtp_stream_stats.packets_received)
            .sum()
    }

    /// Stops answering the server's offers. Called for every participant before any closes,
    /// so that the renegotiations the closing ones cause are not counted as failures.
    pub fn stop_signaling(&self) {
        let _ = self.stop.send(true);
    }

    /// Closes the connection and the websocket; returns what was received and sent.
    pub async fn close(mut self) -> PeerReport {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pc.close()).await;
        if let Some(h) = self.signaling.take() {
            if let Ok(Ok(mut ws)) = tokio::time::timeout(Duration::from_secs(5), h).await {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
            }
        }
        let recv = std::mem::replace(&mut *self.shared.recv.lock().unwrap(), RecvStats::new());
        let s = &self.shared.sent;
        PeerReport {
            recv,
            sent_in_phase: [
                s.in_phase[0].load(Ordering::Relaxed),
                s.in_phase[1].load(Ordering::Relaxed),
            ],
            sent_total: s.total.load(Ordering::Relaxed),
            send_errors: s.errors.load(Ordering::Relaxed),
            late_ticks: s.late_ticks.load(Ordering::Relaxed),
            renegotiations: self.shared.renegotiations.load(Ordering::Relaxed),
            signaling_errors: std::mem::take(&mut *self.shared.signaling_errors.lock().unwrap()),
        }
    }
}

/// What one participant saw, once closed.
pub struct PeerReport {
    pub recv: RecvStats,
    pub sent_in_phase: [u64; 2],
    pub sent_total: u64,
    pub send_errors: u64,
    pub late_ticks: u64,
    pub renegotiations: u64,
    pub signaling_errors: Vec<String>,
}

/// Answers the server's offers (renegotiation) until told to stop; returns the websocket.
async fn signaling(
    mut ws: Ws,
    pc: Arc<dyn PeerConnection>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Ws {
    let mut n = 0u64;
    let fail = |e: String| shared.signaling_errors.lock().unwrap().push(e);
    loop {
        let m = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return ws,
            m = ws.next() => m,
        };
        let text = match m {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                fail(format!("websocket error: {e}"));
                let _ = stop.wait_for(|s| *s).await;
                return ws;
            }
            None => {
                fail("websocket closed by the server".to_owned());
                let _ = stop.wait_for(|s| *s).await;
                return ws;
            }
        };
        let Ok(m) = serde_json::from_str::<Incoming>(text.as_str()) else {
            continue;
        };
        match m.ty.as_str() {
            "media_offer" => {
                n += 1;
                let r = async {
                    let sdp = m.sdp.context("media_offer without sdp")?;
                    let offer = RTCSessionDescription::offer(sdp)
                        .map_err(|e| anyhow!("server offer does not parse: {e}"))?;
                    timed("set_remote_description(offer)", pc.set_remote_description(offer))
                        .await?;
                    let answer = timed("create_answer", pc.create_answer(None)).await?;
                    timed("set_local_description(answer)", pc.set_local_description(answer))
                        .await?;
                    let sdp = pc
                        .local_description()
                        .await
                        .context("no local description")?
                        .sdp;
                    let msg =
                        serde_json::json!({"type": "media_answer", "id": format!("ma{n}"), "sdp": sdp});
                    ws.send(Message::text(msg.to_string()))
                        .await
                        .context("sending media_answer")?;
                    learn_payload_types(&pc, &shared).await;
                    anyhow::Ok(())
                }
                .await;
                match r {
                    Ok(()) => {
                        shared.renegotiations.fetch_add(1, Ordering::Relaxed);
                    }
                    // Unless the run is already closing the connections.
                    Err(e) if !*stop.borrow() => {
                        fail(format!("answering the server's offer: {e:#}"))
                    }
                    Err(_) => {}
                }
            }
            "error" => fail(format!(
                "error {} for {}",
                m.code.unwrap_or_default(),
                m.id.unwrap_or_default()
            )),
            "closed" => fail(format!("closed: {}", m.code.unwrap_or_default())),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let a = audio_payload(80, 7, 42, 123_456_789);
        assert_eq!(a.len(), 80);
        assert_eq!(parse_payload(&a), Some((Kind::Audio, 7, 42, 123_456_789)));
        for (first, key) in [(true, true), (true, false), (false, false)] {
            let v = video_payload(1000, first, key, 9, 3, 55);
            assert_eq!(v.len(), 1000);
            assert_eq!(parse_payload(&v), Some((Kind::Video, 9, 3, 55)));
            // The VP8 descriptor's S bit, and the P bit of the frame tag on keyframes.
            assert_eq!(v[0] & 0x10 != 0, first);
            if first {
                assert_eq!(v[1] & 0x01 == 0, key);
            }
        }
        assert!(parse_payload(b"hello").is_none());
    }

    #[test]
    fn frame_sizes_make_the_bitrate() {
        let spec = MediaSpec {
            video: true,
            audio_bytes: 80,
            video_bps: 500_000,
            keyframe_every: 90,
        };
        let (key, delta) = spec.frame_bytes();
        let per_interval = key + 89 * delta;
        let bps = per_interval as f64 * 8.0 / 3.0;
        assert!((bps - 500_000.0).abs() < 2_000.0, "{bps}");
        assert!(delta > MAX_VIDEO_PAYLOAD && delta <= 2 * MAX_VIDEO_PAYLOAD);
    }

    #[test]
    fn flows_count_duplicates() {
        let w = Window::new();
        w.start.store(0, Ordering::Relaxed);
        w.end.store(1_000, Ordering::Relaxed);
        let mut r = RecvStats::new();
        let p = audio_payload(80, 1, 5, 10);
        r.record(&p, 2_010, &w);
        r.record(&p, 3_000, &w);
        r.record(&audio_payload(80, 1, 6, 5_000), 6_000, &w);
        assert_eq!(
            (r.in_phase[0], r.duplicates, r.total, r.flows()),
            (1, 1, 3, 1)
        );
        assert_eq!(r.latency.max(), 2);
    }
}
