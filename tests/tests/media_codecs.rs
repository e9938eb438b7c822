//! Codecs and loss recovery through the server's SFU, checked with independent `webrtc`-crate
//! peers (see `yuntiao_tests::peer`) against the real binary:
//!
//! * H.264 end to end: a publisher whose video is H.264 (packetization-mode 1, 42e01f, the fmtp
//!   browsers offer) reaches receivers that offer H.264, byte for byte; a receiver's keyframe
//!   request reaches it and its answer (an IDR with SPS and PPS) reaches the receiver; receivers
//!   that share no video codec with a publisher get none of its video.
//! * NACK/RTX, hop by hop: loss on a receiver's downlink is repaired from the server's send
//!   buffer (RTX), loss on a publisher's uplink is NACKed by the server and repaired by the
//!   publisher, and in both cases the receiver ends up with every lost payload, byte for byte.
//! * A re-offer that maps an already negotiated payload type to another codec is refused, and
//!   the connection goes on as it was.
//! * Downlink protection does not take a receiver's video away for loss on its publisher's
//!   uplink.
//!
//! Each test starts its own server; a shared lock keeps one set of peers streaming at a time (two
//! cores: parallel media tests would measure the scheduler).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use yuntiao_tests::peer::{
    eventually, participant_gauge, DropPlan, Kind, Peer, PeerOptions, Tag, TrackStats, VideoCodec,
    H264_PT, KEYFRAME_EVERY, OPUS_PT, VP8_PT,
};
use yuntiao_tests::{Client, Server, StoreKind};

/// How long flows get to start after a connection.
const START: Duration = Duration::from_secs(10);
/// How long a publisher's packets get to show up (or not) at a receiver.
const FLOW: Duration = Duration::from_secs(3);

/// One WebRTC test at a time under `cargo test` (threads of one process); under nextest, whose
/// tests are processes of their own, the `media` test group of `.config/nextest.toml` does it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start() -> Server {
    Server::start_with_media(StoreKind::Embedded)
        .await
        .unwrap()
        .0
}

/// Four joined and admitted clients: consumer, merchant, mediator, judge.
async fn four_admitted(server: &Server) -> Vec<Client> {
    server.four_admitted().await.unwrap().1.into()
}

/// The consumer's and the merchant's clients of a four-party case, everyone admitted.
async fn consumer_and_merchant(server: &Server) -> (Client, Client) {
    let [consumer, merchant, ..] = server.four_admitted().await.unwrap().1;
    (consumer, merchant)
}

fn codecs(video: &[VideoCodec]) -> PeerOptions {
    PeerOptions {
        video: video.to_vec(),
        ..Default::default()
    }
}

/// Every payload received was what its sender wrote, and the background task saw no error.
fn assert_exact(p: &Peer) {
    assert_eq!(
        p.bad_payloads(),
        0,
        "{}: payloads differ from what was sent: {:?}",
        p.participant(),
        p.tracks()
    );
    assert!(
        p.errors().is_empty(),
        "{}: {:?}",
        p.participant(),
        p.errors()
    );
}

/// The received video track carrying `tag`'s video.
fn video_track_of(receiver: &Peer, tag: Tag) -> Option<TrackStats> {
    receiver
        .tracks()
        .into_iter()
        .find(|t| t.kind == Kind::Video && t.tags.contains(&tag))
}

/// (1) H.264 end to end. The consumer publishes H.264 only (as a browser whose camera encoder is
/// H.264), the merchant offers VP8 and H.264 (and sends VP8), the mediator offers VP8 only.
/// The merchant gets the consumer's H.264 byte for byte on the H.264 payload type it offered,
/// keyframes included; a PLI from the merchant reaches the consumer and the keyframe it causes
/// (off the one-second schedule) reaches the merchant. Undecodable video is not forwarded: the
/// mediator gets the consumer's audio but none of its H.264, and the consumer gets the
/// merchant's and mediator's audio but none of their VP8, while the mediator gets the
/// merchant's VP8 (so the line works and only the codec keeps the consumer's video out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_reaches_receivers_that_offer_it_and_no_others() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let mut clients = four_admitted(&server).await;
    clients.truncate(3);
    let mediator = clients.pop().unwrap();
    let merchant = clients.pop().unwrap();
    let consumer = clients.pop().unwrap();
    let consumer = Peer::connect_opts(consumer, codecs(&[VideoCodec::H264]))
        .await
        .unwrap();
    let merchant = Peer::connect_opts(merchant, codecs(&[VideoCodec::Vp8, VideoCodec::H264]))
        .await
        .unwrap();
    let mediator = Peer::connect_opts(mediator, codecs(&[VideoCodec::Vp8]))
        .await
        .unwrap();
    let (c, m, d) = (consumer.tag(), merchant.tag(), mediator.tag());

    // H.264 from the consumer reaches the merchant, keyframes included.
    let ok = eventually(START, || {
        merchant
            .flow(c, Kind::Video)
            .is_some_and(|f| f.h264 >= 60 && f.keyframes >= 2)
    })
    .await;
    assert!(
        ok,
        "the merchant got no H.264 stream from the consumer: {:?}; consumer sent {} (errors {}), \
         {:?}",
        merchant.flow(c, Kind::Video),
        consumer.sent(Kind::Video),
        consumer.send_errors(),
        consumer.errors()
    );
    let flow = merchant.flow(c, Kind::Video).unwrap();
    assert_eq!(flow.h264, flow.packets, "VP8 from an H.264 publisher");
    let track = video_track_of(&merchant, c).unwrap();
    assert_eq!(
        track.payload_types,
        BTreeSet::from([H264_PT]),
        "the consumer's video reached the merchant on other payload types than its H.264"
    );
    // Every packet of the stream arrived, in order, on one SSRC: FU-A fragments and single NAL
    // units alike (loopback loses nothing).
    let h = &track.history;
    assert_eq!(track.ssrcs.len(), 1, "{:?}", track.ssrcs);
    let counters: Vec<u32> = h.iter().filter_map(|p| p.counter).collect();
    let gaps = counters
        .windows(2)
        .filter(|w| w[1] != w[0].wrapping_add(1))
        .count();
    assert_eq!(gaps, 0, "the H.264 stream has gaps: {counters:?}");

    // A PLI from the merchant reaches the consumer; the IDR it causes (a frame number off the
    // one-second schedule) reaches the merchant.
    let before = consumer.feedback_received();
    let asked = |p: &Peer| {
        let now = p.feedback_received();
        now.0 + now.1 > before.0 + before.1
    };
    for _ in 0..5 {
        assert!(merchant.request_keyframe(c).await.unwrap());
        if eventually(Duration::from_secs(1), || asked(&consumer)).await {
            break;
        }
    }
    assert!(
        asked(&consumer),
        "the consumer got no PLI/FIR after the merchant asked: {:?}",
        consumer.rtcp_received()
    );
    let ok = eventually(FLOW, || {
        video_track_of(&merchant, c).is_some_and(|t| {
            t.history.iter().any(|p| {
                p.keyframe
                    && p.video
                        .is_some_and(|v| !v.frame.is_multiple_of(KEYFRAME_EVERY) && v.keyframe)
            })
        })
    })
    .await;
    assert!(
        ok,
        "no keyframe off the schedule reached the merchant after its PLI"
    );

    // Undecodable video is not forwarded; audio and decodable video are.
    let ok = eventually(START, || {
        mediator.received(c, Kind::Audio) > 50
            && mediator.received(m, Kind::Video) > 50
            && consumer.received(m, Kind::Audio) > 50
            && consumer.received(d, Kind::Audio) > 50
            && merchant.received(d, Kind::Video) > 50
    })
    .await;
    assert!(
        ok,
        "flows that should run do not: mediator from consumer a{} / merchant v{}, consumer from \
         merchant a{} / mediator a{}, merchant from mediator v{}",
        mediator.received(c, Kind::Audio),
        mediator.received(m, Kind::Video),
        consumer.received(m, Kind::Audio),
        consumer.received(d, Kind::Audio),
        merchant.received(d, Kind::Video)
    );
    assert_eq!(
        mediator.received(c, Kind::Video),
        0,
        "a VP8-only receiver got H.264: {:?}",
        video_track_of(&mediator, c)
    );
    assert_eq!(
        consumer.received(m, Kind::Video) + consumer.received(d, Kind::Video),
        0,
        "an H.264-only receiver got VP8: {:?}",
        consumer.tracks()
    );
    for p in [&consumer, &merchant, &mediator] {
        assert_exact(p);
    }
    for p in [consumer, merchant, mediator] {
        p.close().await;
    }
}

/// The lost packets `receiver` has not (yet) received from `tag`'s video, by the sender's
/// counter in the payload.
fn missing(receiver: &Peer, tag: Tag, lost: &[u32]) -> Vec<u32> {
    let got: BTreeSet<u32> = video_track_of(receiver, tag)
        .map(|t| {
            t.history
                .iter()
                .filter(|p| p.tag == Some(tag))
                .filter_map(|p| p.counter)
                .collect()
        })
        .unwrap_or_default();
    lost.iter().copied().filter(|c| !got.contains(c)).collect()
}

/// Twenty video packets, one every seventh from the 60th on (about two seconds of video at
/// 30 fps, starting after the first two seconds).
const LOSS: DropPlan = DropPlan {
    from: 60,
    every: 7,
    count: 20,
};

fn with_rtx(loss_in: Option<DropPlan>, loss_out: Option<DropPlan>) -> PeerOptions {
    PeerOptions {
        rtx: true,
        drop_inbound_video: loss_in,
        drop_outbound_video: loss_out,
        ..Default::default()
    }
}

/// (2a) Downlink loss: the merchant's peer drops twenty of the consumer's video packets on
/// arrival, before its NACK generator sees them. It NACKs them, the server answers from its send
/// buffer with RTX (both offered `video/rtx`), and the merchant ends up with every dropped
/// sequence number carrying the very payload that was lost, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downlink_loss_is_repaired_from_the_servers_buffer() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let (consumer, merchant) = consumer_and_merchant(&server).await;
    let consumer = Peer::connect_opts(consumer, with_rtx(None, None))
        .await
        .unwrap();
    let merchant = Peer::connect_opts(merchant, with_rtx(Some(LOSS), None))
        .await
        .unwrap();
    let c = consumer.tag();
    let ok = eventually(Duration::from_secs(15), || {
        merchant.dropped_inbound().len() as u64 == LOSS.count
    })
    .await;
    assert!(
        ok,
        "the loss injector dropped {} of {} packets; merchant got {} video packets",
        merchant.dropped_inbound().len(),
        LOSS.count,
        merchant.received(c, Kind::Video)
    );
    let dropped = merchant.dropped_inbound();
    assert!(dropped.iter().all(|d| d.tag == Some(c)), "{dropped:?}");
    let lost: Vec<u32> = dropped.iter().filter_map(|d| d.counter).collect();
    assert_eq!(lost.len(), dropped.len());
    let ok = eventually(Duration::from_secs(5), || {
        missing(&merchant, c, &lost).is_empty()
    })
    .await;
    assert!(
        ok,
        "lost packets never arrived: {:?} of {lost:?}; merchant sent {} NACKs, got {:?} \
         retransmissions (RTX, repeats)",
        missing(&merchant, c, &lost),
        merchant.nacks_sent(),
        merchant.retransmissions_received()
    );
    // Same sequence number as the lost packet, same payload (the payload check covers every
    // packet received, the repaired ones too).
    let track = video_track_of(&merchant, c).unwrap();
    for d in &dropped {
        assert!(
            track
                .history
                .iter()
                .any(|p| p.seq == d.seq && p.counter == d.counter && p.pt == VP8_PT),
            "lost packet {d:?} came back under another sequence number or payload type"
        );
    }
    assert_exact(&merchant);
    assert!(merchant.nacks_sent() > 0, "the merchant sent no NACK");
    let (rtx, repeats) = merchant.retransmissions_received();
    assert!(
        rtx >= LOSS.count,
        "repaired without RTX? RTX {rtx}, repeats on the media SSRC {repeats}"
    );
    for p in [consumer, merchant] {
        p.close().await;
    }
}

/// (2b) Uplink loss: the consumer's peer drops twenty of its own video packets on the way out,
/// after its NACK responder buffered them. The server notices the gaps and NACKs the consumer
/// (hop by hop: the merchant saw no loss and asked for nothing), the consumer retransmits them
/// (RTX), and the merchant gets every one of them, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplink_loss_is_nacked_by_the_server_and_repaired_by_the_publisher() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let (consumer, merchant) = consumer_and_merchant(&server).await;
    let consumer = Peer::connect_opts(consumer, with_rtx(None, Some(LOSS)))
        .await
        .unwrap();
    let merchant = Peer::connect_opts(merchant, with_rtx(None, None))
        .await
        .unwrap();
    let c = consumer.tag();
    let nacks_before = consumer.feedback_received().2;
    let ok = eventually(Duration::from_secs(15), || {
        consumer.dropped_outbound().len() as u64 == LOSS.count
    })
    .await;
    assert!(
        ok,
        "the loss injector dropped {} of {} packets",
        consumer.dropped_outbound().len(),
        LOSS.count
    );
    let dropped = consumer.dropped_outbound();
    assert!(dropped.iter().all(|d| d.tag == Some(c)), "{dropped:?}");
    let lost: Vec<u32> = dropped.iter().filter_map(|d| d.counter).collect();
    assert_eq!(lost.len(), dropped.len());
    let ok = eventually(Duration::from_secs(5), || {
        missing(&merchant, c, &lost).is_empty()
    })
    .await;
    assert!(
        ok,
        "lost packets never reached the merchant: {:?} of {lost:?}; the server sent the consumer \
         {} NACKs, the consumer retransmitted {}",
        missing(&merchant, c, &lost),
        consumer.feedback_received().2 - nacks_before,
        consumer.retransmissions_sent()
    );
    assert!(
        consumer.feedback_received().2 > nacks_before,
        "the server sent the consumer no NACK: {:?}",
        consumer.rtcp_received()
    );
    assert!(
        consumer.retransmissions_sent() >= LOSS.count,
        "the consumer retransmitted {} packets",
        consumer.retransmissions_sent()
    );
    assert_exact(&merchant);
    for p in [consumer, merchant] {
        p.close().await;
    }
}

/// Rewrites the `a=rtpmap` (and any `a=fmtp`) of payload type `pt` in every media section.
fn rename_pt(sdp: &str, pt: u8, rtpmap: &str, fmtp: Option<&str>) -> String {
    let mut out = Vec::new();
    let map = format!("a=rtpmap:{pt} ");
    let fm = format!("a=fmtp:{pt} ");
    for line in sdp.lines() {
        if line.starts_with(&map) {
            out.push(format!("a=rtpmap:{pt} {rtpmap}"));
            if let Some(f) = fmtp {
                out.push(format!("a=fmtp:{pt} {f}"));
            }
        } else if line.starts_with(&fm) {
            continue;
        } else {
            out.push(line.to_owned());
        }
    }
    out.join("\r\n") + "\r\n"
}

fn error_code(reply: &Value) -> &str {
    reply["code"].as_str().unwrap_or_default()
}

/// (3) RFC 3264 §8.3.2: a payload type keeps its codec for the whole session. A re-offer that
/// maps VP8's payload type to H.264, or Opus's to PCMU, is refused with `invalid_message` and
/// changes nothing: media keeps flowing both ways, and the next valid offer is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reoffer_renaming_a_payload_type_is_refused() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let (consumer, merchant) = consumer_and_merchant(&server).await;
    let consumer = Peer::connect(consumer).await.unwrap();
    let merchant = Peer::connect(merchant).await.unwrap();
    let (c, m) = (consumer.tag(), merchant.tag());
    let flowing = |a: u64, b: u64, c_: u64, d: u64| {
        merchant.received(c, Kind::Video) > a
            && merchant.received(c, Kind::Audio) > b
            && consumer.received(m, Kind::Video) > c_
            && consumer.received(m, Kind::Audio) > d
    };
    assert!(eventually(START, || flowing(0, 0, 0, 0)).await);
    let sdp = consumer.local_sdp().await.unwrap();
    assert!(
        sdp.contains(&format!("a=rtpmap:{VP8_PT} VP8/90000")),
        "{sdp}"
    );
    assert!(
        sdp.contains(&format!("a=rtpmap:{OPUS_PT} opus/48000/2")),
        "{sdp}"
    );
    let renamed = [
        rename_pt(
            &sdp,
            VP8_PT,
            "H264/90000",
            Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
        ),
        rename_pt(&sdp, VP8_PT, "VP9/90000", None),
        rename_pt(&sdp, OPUS_PT, "PCMU/8000", None),
    ];
    for offer in renamed {
        let reply = consumer.offer_raw(offer.clone()).await.unwrap();
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(error_code(&reply), "invalid_message", "{reply}");
        let msg = reply["message"].as_str().unwrap_or_default();
        assert!(msg.contains("payload type"), "{reply}");
        // Nothing changed: every flow goes on.
        let counts = (
            merchant.received(c, Kind::Video),
            merchant.received(c, Kind::Audio),
            consumer.received(m, Kind::Video),
            consumer.received(m, Kind::Audio),
        );
        let ok = eventually(FLOW, || {
            flowing(counts.0 + 30, counts.1 + 30, counts.2 + 30, counts.3 + 30)
        })
        .await;
        assert!(ok, "media stopped after a refused offer: {counts:?}");
    }
    // The original offer again (a valid re-offer) is answered, and media still flows.
    let reply = consumer.offer_raw(sdp).await.unwrap();
    assert_eq!(reply["type"], "media_answer", "{reply}");
    let reply = consumer.negotiate().await.unwrap();
    assert_eq!(reply["type"], "media_answer", "{reply}");
    let counts = (
        merchant.received(c, Kind::Video),
        merchant.received(c, Kind::Audio),
        consumer.received(m, Kind::Video),
        consumer.received(m, Kind::Audio),
    );
    let ok = eventually(FLOW, || {
        flowing(counts.0 + 30, counts.1 + 30, counts.2 + 30, counts.3 + 30)
    })
    .await;
    assert!(ok, "media stopped after a valid re-offer: {counts:?}");
    assert_exact(&consumer);
    assert_exact(&merchant);
    for p in [consumer, merchant] {
        p.close().await;
    }
}

/// (2c) Without RTX there is no repair, either way: str0m NACKs a publisher only for a stream
/// that declared an RTX stream, and keeps packets for receivers' NACKs only on payload types
/// with an RTX payload type. Neither peer offers `video/rtx`; the consumer loses twenty packets
/// on its uplink, the merchant twenty on its downlink. The merchant NACKs its losses, the server
/// sends the consumer no NACK, and none of the forty lost payloads ever reaches the merchant.
/// (Browsers offer RTX, so this is the fallback for clients that do not.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rtx_lost_packets_stay_lost() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let (consumer, merchant) = consumer_and_merchant(&server).await;
    let no_rtx = |loss_in, loss_out| PeerOptions {
        drop_inbound_video: loss_in,
        drop_outbound_video: loss_out,
        ..Default::default()
    };
    let consumer = Peer::connect_opts(consumer, no_rtx(None, Some(LOSS)))
        .await
        .unwrap();
    let merchant = Peer::connect_opts(merchant, no_rtx(Some(LOSS), None))
        .await
        .unwrap();
    let c = consumer.tag();
    let ok = eventually(Duration::from_secs(15), || {
        consumer.dropped_outbound().len() as u64 == LOSS.count
            && merchant.dropped_inbound().len() as u64 == LOSS.count
    })
    .await;
    assert!(ok, "the loss injectors did not drop what they should");
    let lost: Vec<u32> = consumer
        .dropped_outbound()
        .iter()
        .chain(merchant.dropped_inbound().iter())
        .filter_map(|d| d.counter)
        .collect();
    assert_eq!(lost.len() as u64, 2 * LOSS.count);
    // The merchant asks for its losses; give the repairs that would come time to arrive (a
    // NACK round trip on loopback is milliseconds; the NACK generator asks every 100 ms).
    let ok = eventually(Duration::from_secs(5), || merchant.nacks_sent() > 0).await;
    assert!(ok, "the merchant sent no NACK for its losses");
    let sent = merchant.received(c, Kind::Video);
    let ok = eventually(Duration::from_secs(5), || {
        merchant.received(c, Kind::Video) > sent + 60
    })
    .await;
    assert!(ok, "video stopped");
    assert_eq!(
        missing(&merchant, c, &lost).len(),
        lost.len(),
        "a lost packet was repaired without RTX"
    );
    assert_eq!(consumer.feedback_received().2, 0, "the server NACKed");
    assert_eq!(merchant.retransmissions_received(), (0, 0));
    assert_exact(&merchant);
    for p in [consumer, merchant] {
        p.close().await;
    }
}

/// Downlink protection blames a receiver's link only for what is lost on it: the consumer (no
/// RTX, so nothing is repaired) loses every second video packet on its way to the server for
/// about 6.5 s, so the merchant's receiver reports say half of that video is missing; its own
/// link is clean, and it keeps its video (no `media_downlink`, video level 0, video still
/// arriving).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publishers_uplink_loss_is_not_the_receivers_downlink() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let (consumer, merchant) = consumer_and_merchant(&server).await;
    const UPLINK: DropPlan = DropPlan {
        from: 60,
        every: 2,
        count: 200,
    };
    let consumer = Peer::connect_opts(
        consumer,
        PeerOptions {
            drop_outbound_video: Some(UPLINK),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let merchant = Peer::connect(merchant).await.unwrap();
    let c = consumer.tag();
    let ok = eventually(Duration::from_secs(20), || {
        consumer.dropped_outbound().len() as u64 == UPLINK.count
    })
    .await;
    assert!(
        ok,
        "the uplink dropped {} of {}",
        consumer.dropped_outbound().len(),
        UPLINK.count
    );
    // Reports on the last lost packets come up to two seconds later.
    merchant.reset_counters();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let downlink = merchant.downlink_states();
    assert!(downlink.is_empty(), "the merchant was told {downlink:?}");
    assert!(
        merchant.received(c, Kind::Video) > 60,
        "the merchant's video stopped"
    );
    let m = server.metrics().await.unwrap();
    let level = participant_gauge(&m, "yuntiao_media_peer_video_level", merchant.participant());
    assert_eq!(level, Some(0.0), "{m}");
    consumer.close().await;
    merchant.close().await;
}
