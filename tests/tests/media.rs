//! Media through the server's SFU, checked with independent `webrtc`-crate peers (see
//! `yuntiao_tests::peer`) against the real binary: four participants hear and see each other
//! with payloads forwarded byte for byte; a caucus cuts the other side off and ending it restores
//! the flows; the lobby gets nothing; clients only ever see the server's address; a peer that
//! vanishes is cleaned up; bad SDP and garbage UDP get an error or a silent drop, never a crash;
//! a client that cannot use UDP reaches the same SFU over ICE-TCP; a simulcast publisher's
//! receivers get one layer at a time, the one they ask for or the next one flowing, as one
//! continuous stream; a receiver whose downlink turns thin loses its video, keeps its audio whole,
//! and gets the video back when the link recovers.
//!
//! Each test starts its own server with `--media-listen 127.0.0.1:<free port>`. The tests take a
//! shared lock so that only one set of peers streams at a time: on a two-core machine, parallel
//! media tests would measure the scheduler rather than the server.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::Duration;

use reqwest::Method;
use rtc::sdp::extmap::{ExtMap, SDES_MID_URI, TRANSPORT_CC_URI};
use serde_json::json;
use yuntiao_tests::peer::{
    candidate_addr, candidate_lines, eventually, participant_gauge, Kind, Peer, RecvPacket, Tag,
    TrackStats, Transport, CONNECT_TIMEOUT,
};
use yuntiao_tests::{Case, Client, Server, StoreKind};

/// How long flows get to start after a connection or a change.
const START: Duration = Duration::from_secs(10);
/// How long a change of who-receives-whom gets to take effect before we measure.
const SETTLE: Duration = Duration::from_millis(300);
/// The window in which nothing may arrive.
const SILENCE: Duration = Duration::from_millis(1500);

/// One WebRTC test at a time under `cargo test` (threads of one process); under nextest, whose
/// tests are processes of their own, the `media` test group of `.config/nextest.toml` does it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start() -> (Server, u16) {
    Server::start_with_media(StoreKind::Embedded).await.unwrap()
}

/// Four joined and admitted clients: consumer, merchant, mediator, judge.
async fn four_admitted(server: &Server) -> (Case, Vec<Client>) {
    let (case, clients) = server.four_admitted().await.unwrap();
    (case, clients.into())
}

async fn connect_all(clients: Vec<Client>) -> Vec<Peer> {
    let mut peers = Vec::new();
    for c in clients {
        peers.push(Peer::connect(c).await.unwrap());
    }
    peers
}

const NAMES: [&str; 5] = ["consumer", "merchant", "mediator", "judge", "merchant2"];

/// Four admitted participants with peer connections, each receiving the three others.
async fn four_flowing(server: &Server) -> Vec<Peer> {
    let (_case, clients) = four_admitted(server).await;
    let peers = connect_all(clients).await;
    wait_all_flowing(&peers.iter().collect::<Vec<_>>(), START).await;
    peers
}

/// Waits until every peer receives audio and video from every other peer in `from`.
async fn wait_all_flowing(peers: &[&Peer], timeout: Duration) {
    let ok = eventually(timeout, || {
        peers.iter().all(|r| {
            peers.iter().all(|s| {
                r.tag() == s.tag()
                    || (r.received(s.tag(), Kind::Audio) > 0
                        && r.received(s.tag(), Kind::Video) > 0)
            })
        })
    })
    .await;
    if !ok {
        panic!("not every flow started: {}", matrix(peers));
    }
}

/// A readable who-received-what table for failure messages.
fn matrix(peers: &[&Peer]) -> String {
    let mut s = String::new();
    for r in peers {
        s.push_str(&format!(
            "\n  {} (state {}, sent a{} v{}, send errors {}, errors {:?}):",
            r.participant(),
            r.state(),
            r.sent(Kind::Audio),
            r.sent(Kind::Video),
            r.send_errors(),
            r.errors()
        ));
        for snd in peers {
            if snd.tag() != r.tag() {
                s.push_str(&format!(
                    " from {} a{} v{};",
                    snd.participant(),
                    r.received(snd.tag(), Kind::Audio),
                    r.received(snd.tag(), Kind::Video)
                ));
            }
        }
    }
    s
}

fn assert_exact(peers: &[&Peer]) {
    for p in peers {
        assert_eq!(
            p.bad_payloads(),
            0,
            "{}: payloads differ from what was sent: {:?}",
            p.participant(),
            p.tracks()
        );
        for t in p.tracks() {
            assert!(
                t.tags.len() <= 1,
                "{}: one received track carries several senders: {t:?}",
                p.participant()
            );
            assert!(
                !t.tags.contains(&p.tag()),
                "{}: received its own media",
                p.participant()
            );
        }
        assert!(
            p.errors().is_empty(),
            "{}: {:?}",
            p.participant(),
            p.errors()
        );
    }
}

fn tags(peers: &[&Peer]) -> BTreeMap<String, Tag> {
    peers
        .iter()
        .map(|p| (p.participant().to_owned(), p.tag()))
        .collect()
}

async fn metrics(server: &Server) -> String {
    server.metrics().await.unwrap()
}

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The id an `a=extmap` line of `sdp` gives the extension `uri` (parsed by webrtc-rs's SDP
/// crate).
fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines()
        .filter(|l| l.starts_with("a=extmap:"))
        .filter_map(|l| ExtMap::unmarshal(&mut l.as_bytes()).ok())
        .find(|e| e.uri.as_ref().is_some_and(|u| u.as_str() == uri))
        .and_then(|e| u8::try_from(e.value).ok())
}

/// (1) Four participants receive each other's audio and video, byte for byte; each received
/// track carries the participant `media_tracks` says it does, and no transport-wide sequence
/// numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_peers_receive_each_other() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let (_case, clients) = four_admitted(&server).await;
    let peers = connect_all(clients).await;
    let all: Vec<&Peer> = peers.iter().collect();
    wait_all_flowing(&all, START).await;
    assert_exact(&all);

    // A clean window: everything that arrives now arrives on the track media_tracks names.
    for p in &peers {
        p.reset_counters();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let by_participant = tags(&all);
    for p in &peers {
        for s in &peers {
            if s.tag() == p.tag() {
                continue;
            }
            for kind in [Kind::Audio, Kind::Video] {
                let f = p.flow(s.tag(), kind).unwrap_or_default();
                assert!(
                    f.packets > 0,
                    "{} stopped receiving {kind:?} from {}: {}",
                    p.participant(),
                    s.participant(),
                    matrix(&all)
                );
                assert_eq!(f.mismatches, 0);
            }
        }
        let infos = p.media_tracks();
        assert_eq!(
            infos.len(),
            6,
            "{}: media_tracks should list 3 senders x 2 kinds: {infos:?}",
            p.participant()
        );
        for t in p.tracks().iter().filter(|t| t.packets > 0) {
            let mid = t.mid.as_deref().expect("mid of a received track");
            let info = infos
                .iter()
                .find(|i| i.mid == mid)
                .unwrap_or_else(|| panic!("mid {mid} is not in media_tracks {infos:?}"));
            assert_eq!(json!(info.kind), json!(t.kind.as_str()));
            let tag = by_participant[&info.participant];
            assert_eq!(
                t.tags.iter().copied().collect::<Vec<_>>(),
                vec![tag],
                "{}: mid {mid} should carry {}",
                p.participant(),
                info.participant
            );
        }
    }
    // Video keyframes reach the receivers (one a second from each sender, plus those the
    // server asks for when a receiver subscribes).
    let keyframes = eventually(Duration::from_secs(3), || {
        peers.iter().all(|p| {
            peers.iter().all(|s| {
                s.tag() == p.tag()
                    || p.flow(s.tag(), Kind::Video)
                        .is_some_and(|f| f.keyframes > 0)
            })
        })
    })
    .await;
    assert!(keyframes, "a receiver saw no keyframe: {}", matrix(&all));
    // What the server forwards carries the mid but no transport-wide sequence number: nothing
    // on the server reads receivers' transport feedback, so it does not ask for any. The
    // extension stays negotiated (the server's feedback to publishers uses their numbers).
    for p in &peers {
        let sdp = p.server_sdps().pop().expect("a server SDP");
        let mid_ext = extmap_id(&sdp, SDES_MID_URI).expect("mid extmap");
        let twcc = extmap_id(&sdp, TRANSPORT_CC_URI).expect("transport-wide-cc extmap");
        for t in p.tracks().iter().filter(|t| t.packets > 0) {
            // (These test peers negotiate the mid extension on video lines only.)
            assert!(
                t.kind == Kind::Audio || t.ext_ids.contains(&mid_ext),
                "{}: mid {:?} packets lack the mid extension: {:?}",
                p.participant(),
                t.mid,
                t.ext_ids
            );
            assert!(
                !t.ext_ids.contains(&twcc),
                "{}: mid {:?} packets carry transport-wide sequence numbers (id {twcc})",
                p.participant(),
                t.mid
            );
        }
    }
    // The server's figures agree that media flows.
    let m = metrics(&server).await;
    assert_eq!(gauge(&m, "yuntiao_media_peers"), Some(4.0), "{m}");
    assert!(gauge(&m, "yuntiao_media_packets_forwarded_total").unwrap_or(0.0) > 0.0);
    for p in peers {
        p.close().await;
    }
}

/// (2) A caucus of the mediator and the consumer: the merchant and the judge receive nothing of
/// theirs, and they nothing of the merchant's and the judge's; after the caucus all flows resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caucus_cuts_media_and_end_restores_it() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let (case, clients) = four_admitted(&server).await;
    let peers = connect_all(clients).await;
    let [consumer, merchant, mediator, judge] = [&peers[0], &peers[1], &peers[2], &peers[3]];
    let all = [consumer, merchant, mediator, judge];
    wait_all_flowing(&all, START).await;

    mediator
        .ok(json!({"type": "caucus_start", "members": [case.consumer().participant]}))
        .await
        .unwrap();
    let started = mediator
        .wait_message(START, |m| {
            m["type"] == "event" && m["kind"] == "caucus_started"
        })
        .await
        .unwrap();
    let caucus = started["caucus"].as_str().unwrap().to_owned();
    tokio::time::sleep(SETTLE).await;
    for p in all {
        p.reset_counters();
    }
    tokio::time::sleep(SILENCE).await;
    let inside = [consumer, mediator];
    let outside = [merchant, judge];
    for r in outside {
        for s in inside {
            assert_eq!(
                r.received_from(s.tag()),
                0,
                "{} received caucus member {}'s media during the caucus: {}",
                NAMES[peers.iter().position(|p| p.tag() == r.tag()).unwrap()],
                NAMES[peers.iter().position(|p| p.tag() == s.tag()).unwrap()],
                matrix(&all)
            );
        }
    }
    for r in inside {
        for s in outside {
            assert_eq!(
                r.received_from(s.tag()),
                0,
                "caucus member {} received {} during the caucus: {}",
                r.participant(),
                s.participant(),
                matrix(&all)
            );
        }
    }
    // Each side still hears its own.
    for (a, b) in [(consumer, mediator), (merchant, judge)] {
        for (r, s) in [(a, b), (b, a)] {
            for kind in [Kind::Audio, Kind::Video] {
                assert!(
                    r.received(s.tag(), kind) > 0,
                    "{} stopped receiving {kind:?} from {} during the caucus: {}",
                    r.participant(),
                    s.participant(),
                    matrix(&all)
                );
            }
        }
    }
    // The outside side's media_tracks no longer name the caucus members.
    for r in outside {
        let named: Vec<String> = r
            .media_tracks()
            .into_iter()
            .map(|t| t.participant)
            .collect();
        for s in inside {
            assert!(
                !named.iter().any(|n| n == s.participant()),
                "{}: media_tracks still lists {} during the caucus: {named:?}",
                r.participant(),
                s.participant()
            );
        }
    }
    assert_exact(&all);

    mediator
        .ok(json!({"type": "caucus_end", "caucus": caucus}))
        .await
        .unwrap();
    for p in all {
        p.reset_counters();
    }
    wait_all_flowing(&all, START).await;
    assert_exact(&all);
    for p in peers {
        p.close().await;
    }
}

/// (3) A participant in the lobby cannot open media and receives nothing; once admitted it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lobby_gets_no_media() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let (case, clients) = four_admitted(&server).await;
    let peers = connect_all(clients).await;
    let all: Vec<&Peer> = peers.iter().collect();
    wait_all_flowing(&all, START).await;

    let second = server
        .invite(&case.id, "merchant", "第二商家", "1h")
        .await
        .unwrap();
    let (c, w) = Client::join(&server.ws_url(), &second.token, None)
        .await
        .unwrap();
    assert_eq!(w["status"], "lobby");
    let lobby = Peer::new(c).await.unwrap();
    let reply = lobby.negotiate().await.unwrap();
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "not_admitted", "{reply}");
    tokio::time::sleep(SILENCE).await;
    assert_eq!(lobby.total_received(), 0);
    assert!(
        lobby
            .messages()
            .iter()
            .all(|m| m["type"] != "media_offer" && m["type"] != "media_tracks"),
        "the lobby got media signaling: {:?}",
        lobby.messages()
    );
    for p in &peers {
        assert_eq!(p.received_from(lobby.tag()), 0);
    }
    let m = metrics(&server).await;
    assert_eq!(gauge(&m, "yuntiao_media_peers"), Some(4.0), "{m}");

    // Admitted, the same participant negotiates and then hears everyone, and everyone it.
    peers[2]
        .ok(json!({"type": "admit", "participant": second.participant}))
        .await
        .unwrap();
    lobby
        .wait_message(START, |m| {
            m["type"] == "welcome" && m["status"] == "admitted"
        })
        .await
        .unwrap();
    let reply = lobby.negotiate().await.unwrap();
    assert_eq!(reply["type"], "media_answer", "{reply}");
    lobby.wait_connected(CONNECT_TIMEOUT).await.unwrap();
    let mut all = all;
    all.push(&lobby);
    for p in &all {
        p.reset_counters();
    }
    wait_all_flowing(&all, START).await;
    assert_exact(&all);
    drop(all);
    lobby.close().await;
    for p in peers {
        p.close().await;
    }
}

/// (4) Every candidate the server ever sends names the server's own address, never another
/// participant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_only_the_servers_candidates() {
    let _serial = SERIAL.lock().await;
    let (server, port) = start().await;
    let (case, clients) = four_admitted(&server).await;
    let peers = connect_all(clients).await;
    let all: Vec<&Peer> = peers.iter().collect();
    wait_all_flowing(&all, START).await;
    // Renegotiations both ways (caucus start and end) add more server SDPs to check.
    peers[2]
        .ok(json!({"type": "caucus_start", "members": [case.consumer().participant]}))
        .await
        .unwrap();
    let started = peers[2]
        .wait_message(START, |m| {
            m["type"] == "event" && m["kind"] == "caucus_started"
        })
        .await
        .unwrap();
    tokio::time::sleep(SETTLE).await;
    peers[2]
        .ok(json!({"type": "caucus_end", "caucus": started["caucus"]}))
        .await
        .unwrap();
    tokio::time::sleep(SETTLE).await;

    let client_ports: Vec<u16> = peers
        .iter()
        .flat_map(|p| p.local_candidates())
        .filter_map(|c| candidate_addr(&c).map(|(_, port)| port))
        .collect();
    assert!(!client_ports.is_empty(), "peers gathered no candidates");
    let mut checked = 0;
    for p in &peers {
        let sdps = p.server_sdps();
        assert!(
            sdps.len() >= 2,
            "{}: expected an answer and at least one server offer, got {}",
            p.participant(),
            sdps.len()
        );
        for sdp in sdps {
            // The SDP as a whole names no client port (no peer's address leaks in any line).
            for line in sdp.lines() {
                for cp in &client_ports {
                    assert!(
                        !line.contains(&format!(" {cp} ")) || !line.contains("127.0.0.1"),
                        "server SDP line names a client address: {line}"
                    );
                }
            }
            for c in candidate_lines(&sdp) {
                let (addr, cport) = candidate_addr(&c).expect("candidate has an address");
                assert_eq!(addr, "127.0.0.1", "foreign address in {c}");
                assert_eq!(cport, port, "candidate not on the media port: {c}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "server SDPs carried no candidates to check");
    // Our offer went out with loopback host candidates only.
    for p in &peers {
        for c in p.local_candidates() {
            assert_eq!(candidate_addr(&c).unwrap().0, "127.0.0.1", "{c}");
            assert!(c.contains("typ host"), "{c}");
        }
    }
    for p in peers {
        p.close().await;
    }
}

async fn wait_gauge(
    server: &Server,
    name: &str,
    want: f64,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let m = metrics(server).await;
        if gauge(&m, name) == Some(want) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "{name} did not reach {want} within {timeout:?}; now {:?}",
                gauge(&m, name)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (5) A peer that vanishes (connection and websocket dropped, no goodbye) stops reaching the
/// others and is cleaned up on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_peer_is_cleaned_up() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let mut peers = four_flowing(&server).await;
    wait_gauge(&server, "yuntiao_media_peers", 4.0, START)
        .await
        .unwrap();
    let judge = peers.pop().unwrap();
    let judge_tag = judge.tag();
    let judge_participant = judge.participant().to_owned();
    judge.vanish();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in &peers {
        p.reset_counters();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rest: Vec<&Peer> = peers.iter().collect();
    for p in &rest {
        assert_eq!(p.received_from(judge_tag), 0, "{}", p.participant());
    }
    for p in &rest {
        p.reset_counters();
    }
    wait_all_flowing(&rest, START).await;
    wait_gauge(&server, "yuntiao_media_peers", 3.0, Duration::from_secs(30))
        .await
        .unwrap();
    assert_tracks_dropped(&rest, &judge_participant).await;
    assert_exact(&rest);
    drop(rest);
    for p in peers {
        p.close().await;
    }
}

/// The others' `media_tracks` stop naming `gone`.
async fn assert_tracks_dropped(peers: &[&Peer], gone: &str) {
    let dropped = eventually(START, || {
        peers
            .iter()
            .all(|p| p.media_tracks().iter().all(|t| t.participant != gone))
    })
    .await;
    assert!(
        dropped,
        "media_tracks still name {gone}: {:?}",
        peers.iter().map(|p| p.media_tracks()).collect::<Vec<_>>()
    );
}

/// (5b) A peer whose media vanishes while its websocket stays open (a phone dropping off Wi-Fi)
/// is timed out by the media plane itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_whose_media_vanishes_times_out() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let mut peers = four_flowing(&server).await;
    let mut judge = peers.pop().unwrap();
    judge.vanish_media();
    wait_gauge(&server, "yuntiao_media_peers", 3.0, Duration::from_secs(30))
        .await
        .unwrap();
    // The websocket is still up.
    let pong = judge.signal(json!({"type": "ping"})).await.unwrap();
    assert_eq!(pong["type"], "pong");
    let rest: Vec<&Peer> = peers.iter().collect();
    for p in &rest {
        p.reset_counters();
    }
    wait_all_flowing(&rest, START).await;
    for p in &rest {
        assert_eq!(p.received_from(judge.tag()), 0);
    }
    assert_tracks_dropped(&rest, judge.participant()).await;
    assert_exact(&rest);
    drop(rest);
    judge.vanish();
    for p in peers {
        p.close().await;
    }
}

/// (6) Bad input: malformed SDP, an offer with no usable codec, odd ICE candidates, garbage UDP
/// on the media port. Each gets a clear error or a silent drop; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_media_input_is_refused_and_harmless() {
    let _serial = SERIAL.lock().await;
    let (server, port) = start().await;
    let (_case, mut clients) = four_admitted(&server).await;
    let judge_client = clients.pop().unwrap();
    let mediator_client = clients.pop().unwrap();
    let consumer = Peer::new(clients.remove(0)).await.unwrap();

    // Garbage SDP.
    for junk in [
        "",
        "hello",
        "v=0\r\nthis is not sdp\r\n",
        "v=0\r\no=- 0 0 IN IP4 1.2.3.4\r\n",
    ] {
        let r = consumer.offer_raw(junk).await.unwrap();
        assert_eq!(r["type"], "error", "{junk:?}: {r}");
        assert_eq!(r["code"], "invalid_message", "{junk:?}: {r}");
    }
    // A media_offer that is not even a string.
    let r = consumer
        .signal(json!({"type": "media_offer", "sdp": 42}))
        .await
        .unwrap();
    assert_eq!(r["code"], "invalid_message", "{r}");
    // A well-formed offer whose only codecs are made up.
    // Our real offer first (it is answered), then the same with its codecs renamed.
    let r = consumer.negotiate().await.unwrap();
    assert_eq!(r["type"], "media_answer", "{r}");
    let real = consumer.local_sdp().await.expect("local offer");
    let fake = real
        .replace("opus/48000/2", "x-madeup/48000/2")
        .replace("VP8/90000", "X-FAKE/90000");
    assert_ne!(fake, real);
    // As a renegotiation of a working connection it may be refused, or answered (str0m keeps
    // the payload types already negotiated); either way the connection keeps working (checked
    // below).
    let r = consumer.offer_raw(fake.clone()).await.unwrap();
    assert!(
        r["type"] == "media_answer" || (r["type"] == "error" && r["code"] == "invalid_message"),
        "{r}"
    );
    // A fresh participant whose first offer has no usable codec.
    let mediator = Peer::new(mediator_client).await.unwrap();
    let r = mediator.offer_raw(fake).await.unwrap();
    if r["type"] == "error" {
        assert_eq!(r["code"], "invalid_message", "{r}");
    } else {
        assert_eq!(r["type"], "media_answer", "{r}");
        let sdp = r["sdp"].as_str().unwrap();
        assert!(
            sdp.lines()
                .filter(|l| l.starts_with("m="))
                .all(|l| l.split_whitespace().nth(1) == Some("0")),
            "an answer to an offer without usable codecs must reject every m-line: {sdp}"
        );
    }

    // ICE candidates: garbage is refused; a candidate naming someone else's address is accepted
    // or refused but never used (the server is ICE-lite). Loopback addresses only, on purpose.
    let r = consumer
        .signal(json!({"type": "ice_candidate", "candidate": "candidate:garbage"}))
        .await
        .unwrap();
    assert!(
        r["type"] == "error" && r["code"] == "invalid_message" || r["type"] == "ack",
        "{r}"
    );
    for c in [
        "candidate:1 1 udp 2130706431 127.0.0.9 9 typ host",
        "a=candidate:2 1 udp 2130706431 127.0.0.10 10 typ host",
    ] {
        let r = consumer
            .signal(json!({"type": "ice_candidate", "candidate": c}))
            .await
            .unwrap();
        assert!(r["type"] == "ack" || r["type"] == "error", "{r}");
    }
    let replies = consumer.trickle_candidates().await.unwrap();
    assert!(!replies.is_empty());
    for r in replies {
        assert_eq!(r["type"], "ack", "trickling a real candidate: {r}");
    }

    // Garbage UDP at the media port: random bytes, a fake STUN binding request, a fake
    // DTLS-looking and an RTP-looking datagram, an empty one, an oversized one.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = format!("127.0.0.1:{port}");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let mut stun = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
    stun.extend(rnd(12));
    stun.extend([0x00, 0x06, 0x00, 0x04, b'a', b'b', b':', b'c']);
    let mut dtls = vec![22, 0xfe, 0xfd];
    dtls.extend(rnd(60));
    let mut rtp = vec![0x80, 96];
    rtp.extend(rnd(200));
    let mut datagrams = vec![stun, dtls, rtp, vec![], rnd(1400)];
    for n in [1, 2, 20, 100, 500] {
        for _ in 0..20 {
            datagrams.push(rnd(n));
        }
    }
    for d in &datagrams {
        sock.send_to(d, &target).unwrap();
    }

    // The server still serves: a new peer connects and media flows both ways.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = server.admin(Method::GET, "/healthz", None).await.unwrap();
    assert_eq!(r.0, 200, "{r:?}");
    let judge = Peer::connect(judge_client).await.unwrap();
    consumer.wait_connected(CONNECT_TIMEOUT).await.unwrap();
    let both = [&consumer, &judge];
    wait_all_flowing(&both, START).await;
    assert_exact(&both);
    let m = metrics(&server).await;
    assert!(
        gauge(&m, "yuntiao_media_udp_unmatched_total").unwrap_or(0.0) >= 1.0,
        "garbage UDP should be counted: {m}"
    );
    mediator.close().await;
    consumer.close().await;
    judge.close().await;
}

/// (7) A receiver's keyframe request (PLI) reaches the publisher through the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_reach_the_publisher() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let (_case, mut clients) = four_admitted(&server).await;
    clients.truncate(2);
    let peers = connect_all(clients).await;
    let (consumer, merchant) = (&peers[0], &peers[1]);
    wait_all_flowing(&[consumer, merchant], START).await;
    tokio::time::sleep(SETTLE).await;
    let before = merchant.feedback_received();
    let mut sent = 0;
    for _ in 0..5 {
        if consumer.request_keyframe(merchant.tag()).await.unwrap() {
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent > 0, "consumer has no video track of the merchant");
    let ok = eventually(Duration::from_secs(5), || {
        let now = merchant.feedback_received();
        now.0 + now.1 > before.0 + before.1
    })
    .await;
    assert!(
        ok,
        "the merchant got no PLI/FIR after the consumer asked: before {before:?}, now {:?}; \
         RTCP the merchant received: {:?}",
        merchant.feedback_received(),
        merchant.rtcp_received()
    );
    for p in peers {
        p.close().await;
    }
}

/// ICE-TCP: with `--media-tcp-listen`, the answer carries a passive TCP candidate on that port
/// next to the UDP one, and a peer that may only use TCP (an active candidate) publishes to and
/// receives from peers on UDP through the same SFU, payloads intact. Strangers' TCP connections
/// that speak no ICE are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_carries_media_for_clients_without_udp() {
    let _serial = SERIAL.lock().await;
    let udp = yuntiao_tests::server::free_udp_port();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start(
        StoreKind::Embedded,
        &[
            "--media-listen",
            &format!("127.0.0.1:{udp}"),
            "--media-tcp-listen",
            &format!("127.0.0.1:{tcp}"),
        ],
    )
    .await
    .unwrap();
    let (_case, mut clients) = four_admitted(&server).await;
    let _judge = clients.pop().unwrap();
    let mediator = clients.pop().unwrap();
    let merchant = clients.pop().unwrap();
    let consumer = clients.pop().unwrap();

    // The consumer's network blocks UDP: TCP only.
    let consumer = Peer::new_with(consumer, Transport::Tcp).await.unwrap();
    let answer = consumer.negotiate().await.unwrap();
    assert_eq!(answer["type"], "media_answer", "{answer}");
    let sdp = answer["sdp"].as_str().unwrap();
    let lines = candidate_lines(sdp);
    assert!(
        lines.iter().any(|l| l.to_lowercase().contains(" tcp ")
            && l.contains("tcptype passive")
            && candidate_addr(l) == Some(("127.0.0.1".into(), tcp))),
        "no passive TCP candidate on port {tcp}: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.to_lowercase().contains(" udp ")
            && candidate_addr(l) == Some(("127.0.0.1".into(), udp))),
        "{lines:?}"
    );
    consumer.wait_connected(CONNECT_TIMEOUT).await.unwrap();
    let merchant = Peer::connect(merchant).await.unwrap();
    let mediator = Peer::connect_with(mediator, Transport::Tcp).await.unwrap();
    let all = [&consumer, &merchant, &mediator];
    wait_all_flowing(&all, START).await;
    assert_exact(&all);
    assert_eq!(consumer.bad_payloads(), 0);

    // A stranger's connection that sends a non-ICE frame is closed by the server.
    use std::io::{Read, Write};
    let mut stranger = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stranger.write_all(&[0, 4, 1, 2, 3, 4]).unwrap();
    let mut buf = [0u8; 16];
    let n = stranger.read(&mut buf).unwrap_or(usize::MAX);
    assert_eq!(
        n, 0,
        "the server should close a connection that speaks no ICE"
    );
    // The media still flows.
    for p in all {
        p.reset_counters();
    }
    wait_all_flowing(&all, START).await;
    for p in [consumer, merchant, mediator] {
        p.close().await;
    }
}

/// Glare: the server has an offer outstanding (new tracks for this peer) when the client sends
/// an offer of its own. The client's offer wins (docs/protocol.md "Media", point 5): it is
/// answered, the client drops the server's stale offer, and the server offers the new tracks
/// again, so the media arrives after all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_offer_wins_glare_and_the_server_offers_again() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let (_case, mut clients) = four_admitted(&server).await;
    let _judge = clients.pop().unwrap();
    let _mediator = clients.pop().unwrap();
    let merchant = clients.pop().unwrap();
    let consumer = clients.pop().unwrap();

    let consumer = Peer::connect(consumer).await.unwrap();
    consumer.hold_server_offers(true);
    // The merchant publishes: the server offers the consumer lines for it, which the consumer
    // holds unanswered.
    let merchant = Peer::connect(merchant).await.unwrap();
    assert!(
        eventually(START, || consumer.held_offers() > 0).await,
        "the server did not offer the merchant's tracks to the consumer"
    );
    // The consumer renegotiates on its own meanwhile; its offer wins, and the consumer drops
    // the server's stale offer (the test peer does that when its own offer is answered).
    let reply = consumer.negotiate().await.unwrap();
    assert_eq!(reply["type"], "media_answer", "{reply}");
    assert_eq!(consumer.held_offers(), 0);
    // The server offers the merchant's tracks again; the consumer answers and receives them.
    let pair = [&consumer, &merchant];
    wait_all_flowing(&pair, START).await;
    assert_exact(&pair);
    for p in [consumer, merchant] {
        p.close().await;
    }
}

/// Mute states reach those who start receiving someone later: a participant muted inside a
/// caucus is shown muted to the other side when the caucus ends, and a receiver that reconnects
/// learns who is muted. (Signaling only: mute state is the room's, whether or not media flows.)
#[tokio::test]
async fn late_receivers_learn_who_is_muted() {
    let (server, _port) = start().await;
    let (case, mut clients) = four_admitted(&server).await;
    let mut judge = clients.pop().unwrap();
    let mut mediator = clients.pop().unwrap();
    let mut merchant = clients.pop().unwrap();
    let mut consumer = clients.pop().unwrap();
    let consumer_id = case.consumer().participant.clone();
    mediator
        .ok(json!({"type": "caucus_start", "members": [consumer_id]}))
        .await
        .unwrap();
    merchant.wait_event("caucus_started").await.unwrap();
    // Muted inside the caucus: the mediator (who receives the consumer) is told; the merchant
    // (who does not, now) is not.
    consumer
        .ok(json!({"type": "mute", "kind": "audio", "muted": true}))
        .await
        .unwrap();
    let m = mediator
        .wait_for(|m| m["type"] == "mute" && m["participant"] == consumer_id.as_str())
        .await
        .unwrap();
    assert_eq!(m["muted"], true);
    merchant.sync().await.unwrap();
    let early = merchant.drain(Duration::from_millis(300)).await.unwrap();
    assert!(
        !early.iter().any(|m| m["type"] == "mute"),
        "the merchant learned something of the caucus: {early:?}"
    );
    // The caucus ends: the merchant receives the consumer again and learns the mute.
    let caucus = started_caucus(&mut judge).await;
    mediator
        .ok(json!({"type": "caucus_end", "caucus": caucus}))
        .await
        .unwrap();
    let m = merchant
        .wait_for(|m| m["type"] == "mute" && m["participant"] == consumer_id.as_str())
        .await
        .unwrap();
    assert_eq!(
        (m["kind"].as_str(), m["muted"].as_bool()),
        (Some("audio"), Some(true))
    );
    // A reconnecting receiver learns it too, right after its welcome.
    merchant.close().await;
    let (mut again, _) = Client::join(&server.ws_url(), &case.merchant().token, None)
        .await
        .unwrap();
    let m = again
        .wait_for(|m| m["type"] == "mute" && m["participant"] == consumer_id.as_str())
        .await
        .unwrap();
    assert_eq!(m["muted"], true);
    // Unmuted: nobody is told it is muted any more.
    consumer
        .ok(json!({"type": "mute", "kind": "audio", "muted": false}))
        .await
        .unwrap();
    again
        .wait_for(|m| m["type"] == "mute" && m["muted"] == false)
        .await
        .unwrap();
    again.close().await;
    let (mut third, _) = Client::join(&server.ws_url(), &case.merchant().token, None)
        .await
        .unwrap();
    third.sync().await.unwrap();
    let seen = third.drain(Duration::from_millis(300)).await.unwrap();
    assert!(!seen.iter().any(|m| m["type"] == "mute"), "{seen:?}");
}

/// The id of the caucus the judge (outside it) was told started.
async fn started_caucus(judge: &mut Client) -> String {
    let e = judge.wait_event("caucus_started").await.unwrap();
    e["caucus"].as_str().unwrap().to_owned()
}

/// Four participants offer at the same moment (as a committee's session starts): while the
/// server's offer to one peer is outstanding, others' tracks arrive; none may be lost, every
/// peer ends up receiving every other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_offers_lose_no_track() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let (_case, clients) = four_admitted(&server).await;
    let peers: Vec<Peer> = futures_util::future::join_all(clients.into_iter().map(Peer::connect))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let all: Vec<&Peer> = peers.iter().collect();
    wait_all_flowing(&all, START).await;
    assert_exact(&all);
    for p in peers {
        p.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Simulcast
// ---------------------------------------------------------------------------------------------

/// The simulcast layers the publisher sends, smallest first.
const RIDS: [&str; 3] = ["q", "h", "f"];

/// [`simulcast_pair`], once the receiver gets only the best layer; with the receiver's line.
async fn simulcast_on_best_layer(server: &Server) -> (Peer, Peer, String) {
    let (publisher, receiver) = simulcast_pair(server).await;
    let mid = video_mid(&receiver, &publisher);
    tokio::time::sleep(SETTLE).await;
    assert_only_layer(&publisher, &receiver, &mid, "f").await;
    (publisher, receiver, mid)
}

/// A simulcast publisher (the consumer, layers [`RIDS`]) and a plain receiver (the merchant),
/// with the receiver getting the publisher's video.
async fn simulcast_pair(server: &Server) -> (Peer, Peer) {
    let (_case, clients) = four_admitted(server).await;
    simulcast_pair_of(clients).await
}

/// [`simulcast_pair`] of the first two of these clients (consumer, merchant, ...).
async fn simulcast_pair_of(mut clients: Vec<Client>) -> (Peer, Peer) {
    clients.truncate(2);
    let merchant = clients.pop().unwrap();
    let consumer = clients.pop().unwrap();
    let publisher = Peer::connect_simulcast(consumer, &RIDS).await.unwrap();
    let receiver = Peer::connect(merchant).await.unwrap();
    let f = publisher.layer_tag("f").unwrap();
    let ok = eventually(START, || receiver.received(f, Kind::Video) > 0).await;
    assert!(
        ok,
        "the receiver got none of the best layer: {:?}; publisher sent {} (errors {}), {:?}",
        layer_counts(&publisher, &receiver),
        publisher.sent(Kind::Video),
        publisher.send_errors(),
        publisher.errors()
    );
    (publisher, receiver)
}

/// Video packets the receiver got from each of the publisher's layers.
fn layer_counts(publisher: &Peer, receiver: &Peer) -> Vec<(&'static str, u64)> {
    RIDS.iter()
        .map(|r| {
            let tag = publisher.layer_tag(r).unwrap();
            (*r, receiver.received(tag, Kind::Video))
        })
        .collect()
}

/// The mid of the receiver's line that carries the publisher's video.
fn video_mid(receiver: &Peer, publisher: &Peer) -> String {
    receiver
        .media_tracks()
        .into_iter()
        .find(|t| {
            t.participant == publisher.participant()
                && serde_json::to_value(t.kind).unwrap() == "video"
        })
        .map(|t| t.mid)
        .expect("media_tracks lists the publisher's video")
}

/// The receiver's track for that line.
fn video_track(receiver: &Peer, mid: &str) -> TrackStats {
    receiver
        .tracks()
        .into_iter()
        .find(|t| t.mid.as_deref() == Some(mid))
        .expect("a received track on the publisher's video line")
}

/// Which layer a received packet came from.
fn layer_of(publisher: &Peer, p: &RecvPacket) -> Option<&'static str> {
    RIDS.into_iter()
        .find(|r| p.tag.is_some() && publisher.layer_tag(r) == p.tag)
}

/// One continuous stream: sequence numbers step by one (a few lost packets aside), timestamps
/// never go back and jump at most a few seconds, VP8 picture IDs and TL0PICIDX step by zero or
/// one. Returns the indexes where the layer changes.
fn assert_continuous(publisher: &Peer, h: &[RecvPacket]) -> Vec<usize> {
    let mut switches = Vec::new();
    for i in 1..h.len() {
        let (a, b) = (&h[i - 1], &h[i]);
        let ctx = || {
            format!(
                "packet {i}: {:?} {a:?} -> {:?} {b:?}",
                layer_of(publisher, a),
                layer_of(publisher, b)
            )
        };
        let dseq = b.seq.wrapping_sub(a.seq);
        assert!((1..=3).contains(&dseq), "sequence jump {dseq}: {}", ctx());
        let dts = b.ts.wrapping_sub(a.ts) as i32;
        assert!(
            (0..=5 * 90_000).contains(&dts),
            "timestamp step {dts}: {}",
            ctx()
        );
        if let (Some((pa, ta)), Some((pb, tb))) = (a.pic, b.pic) {
            let dp = pb.wrapping_sub(pa) & 0x7fff;
            assert!(dp <= 1, "picture ID step {dp}: {}", ctx());
            let dt = tb.wrapping_sub(ta);
            assert!(dt <= 1, "TL0PICIDX step {dt}: {}", ctx());
        }
        if layer_of(publisher, a) != layer_of(publisher, b) {
            assert_eq!(dseq, 1, "sequence gap at the switch: {}", ctx());
            assert!(b.keyframe, "the switch is not at a keyframe: {}", ctx());
            assert_eq!(
                b.pic.map(|p| p.0),
                a.pic.map(|p| (p.0 + 1) & 0x7fff),
                "picture ID not continued at the switch: {}",
                ctx()
            );
            switches.push(i);
        }
    }
    switches
}

/// Resets the receiver's counters and waits until it gets layer `rid`.
async fn wait_layer(publisher: &Peer, receiver: &Peer, rid: &str) {
    let tag = publisher.layer_tag(rid).unwrap();
    receiver.reset_counters();
    let ok = eventually(START, || receiver.received(tag, Kind::Video) > 0).await;
    assert!(
        ok,
        "the receiver never got layer {rid}: {:?}; keyframe requests per layer {:?}",
        layer_counts(publisher, receiver),
        RIDS.map(|r| (r, publisher.layer_keyframe_requests(r)))
    );
}

/// Over one second, the receiver gets layer `rid` and nothing else of the publisher's video.
async fn assert_only_layer(publisher: &Peer, receiver: &Peer, mid: &str, rid: &str) {
    receiver.reset_counters();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = layer_counts(publisher, receiver);
    for (r, n) in &counts {
        if *r == rid {
            assert!(*n > 10, "layer {rid} is not flowing: {counts:?}");
        } else {
            assert_eq!(*n, 0, "layer {r} arrives besides {rid}: {counts:?}");
        }
    }
    let t = video_track(receiver, mid);
    assert_eq!(t.ssrcs.len(), 1, "one SSRC on the line: {:?}", t.ssrcs);
    assert_eq!(t.mismatches + t.unparsable, 0, "payloads altered: {t:?}");
    assert!(assert_continuous(publisher, &t.history).is_empty());
}

/// Simulcast: a receiver gets one layer, the best, by default; after `media_layer` `low` it gets
/// only the smallest, switched at a keyframe the server asked the publisher for, and the line
/// stays one continuous stream (sequence numbers, timestamps, VP8 picture IDs); `high` brings
/// the best layer back the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_receiver_gets_one_layer_and_switches_on_request() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let (publisher, receiver, mid) = simulcast_on_best_layer(&server).await;

    // Down to the smallest layer.
    let plis_before = publisher.layer_keyframe_requests("q");
    // Some of f in the history first, so that it shows the switch.
    receiver.reset_counters();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let switches_before = gauge(
        &metrics(&server).await,
        "yuntiao_media_layer_switches_total",
    )
    .expect("the layer switch counter is on /metrics");
    let asked = std::time::Instant::now();
    receiver
        .ok(json!({"type": "media_layer", "mid": mid, "quality": "low"}))
        .await
        .unwrap();
    let q = publisher.layer_tag("q").unwrap();
    let ok = eventually(START, || receiver.received(q, Kind::Video) > 0).await;
    assert!(
        ok,
        "no switch to q: {:?}",
        layer_counts(&publisher, &receiver)
    );
    eprintln!(
        "media_layer low to the first packet of q: {:?}",
        asked.elapsed()
    );
    assert!(
        publisher.layer_keyframe_requests("q") > plis_before,
        "the server did not ask for a keyframe of the layer it switched to"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = video_track(&receiver, &mid);
    let switches = assert_continuous(&publisher, &t.history);
    assert_eq!(switches.len(), 1, "one switch, f to q: {switches:?}");
    let switches_after = gauge(
        &metrics(&server).await,
        "yuntiao_media_layer_switches_total",
    )
    .unwrap_or_default();
    assert!(
        switches_after > switches_before,
        "the switch f to q is not counted on /metrics: {switches_before} then {switches_after}"
    );
    let at = switches[0];
    assert_eq!(layer_of(&publisher, &t.history[at - 1]), Some("f"));
    assert!(
        t.history[at..]
            .iter()
            .all(|p| layer_of(&publisher, p) == Some("q")),
        "after the switch only q"
    );
    assert_eq!(t.mismatches + t.unparsable, 0, "payloads altered: {t:?}");
    assert_only_layer(&publisher, &receiver, &mid, "q").await;

    // `medium` is the middle layer.
    receiver
        .ok(json!({"type": "media_layer", "mid": mid, "quality": "medium"}))
        .await
        .unwrap();
    wait_layer(&publisher, &receiver, "h").await;
    assert_only_layer(&publisher, &receiver, &mid, "h").await;

    // And back up.
    receiver
        .ok(json!({"type": "media_layer", "mid": mid, "quality": "high"}))
        .await
        .unwrap();
    wait_layer(&publisher, &receiver, "f").await;
    assert_only_layer(&publisher, &receiver, &mid, "f").await;
    assert!(receiver.errors().is_empty(), "{:?}", receiver.errors());
    publisher.close().await;
    receiver.close().await;
}

/// Simulcast: when the publisher stops sending the best layer (its uplink got thin), a receiver
/// that wanted it gets the next one down, and the best one again when it returns; the line stays
/// continuous through both switches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_falls_back_when_a_layer_stops() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let (publisher, receiver, mid) = simulcast_on_best_layer(&server).await;

    // Some of f in the history first, so that it shows the switch.
    receiver.reset_counters();
    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher.set_layer_sending("f", false);
    let stopped = std::time::Instant::now();
    wait_layer_kept(&publisher, &receiver, "h").await;
    eprintln!(
        "f stopped to the first packet of h: {:?}",
        stopped.elapsed()
    );
    let t = video_track(&receiver, &mid);
    let switches = assert_continuous(&publisher, &t.history);
    assert_eq!(switches.len(), 1, "one switch, f to h: {switches:?}");
    assert_eq!(layer_of(&publisher, &t.history[switches[0]]), Some("h"));
    assert_only_layer(&publisher, &receiver, &mid, "h").await;

    receiver.reset_counters();
    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher.set_layer_sending("f", true);
    let resumed = std::time::Instant::now();
    wait_layer_kept(&publisher, &receiver, "f").await;
    eprintln!(
        "f resumed to its first packet forwarded: {:?}",
        resumed.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = video_track(&receiver, &mid);
    let switches = assert_continuous(&publisher, &t.history);
    assert_eq!(switches.len(), 1, "one switch, h to f: {switches:?}");
    assert_eq!(layer_of(&publisher, &t.history[switches[0]]), Some("f"));
    assert_only_layer(&publisher, &receiver, &mid, "f").await;
    publisher.close().await;
    receiver.close().await;
}

/// Like [`wait_layer`], without resetting the counters (the history keeps the switch).
async fn wait_layer_kept(publisher: &Peer, receiver: &Peer, rid: &str) {
    let tag = publisher.layer_tag(rid).unwrap();
    let ok = eventually(START, || receiver.received(tag, Kind::Video) > 0).await;
    assert!(
        ok,
        "the receiver never got layer {rid}: {:?}",
        layer_counts(publisher, receiver)
    );
}

/// Bad input: `media_layer` for a mid that is not one of the receiver's received video lines
/// (unknown, its own published line, an audio line) or with an unknown quality gets a typed
/// error, and the receiver keeps getting the layer it had; a participant without a peer
/// connection gets `conflict`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_layer_refuses_foreign_mids_and_changes_nothing() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let (_case, mut clients) = four_admitted(&server).await;
    let mut mediator = clients.remove(2);
    let (publisher, receiver) = simulcast_pair_of(clients).await;
    let mid = video_mid(&receiver, &publisher);
    let r = mediator
        .request(json!({"type": "media_layer", "mid": mid, "quality": "low"}))
        .await
        .unwrap();
    assert_eq!(
        (&r["type"], &r["code"]),
        (&json!("error"), &json!("conflict")),
        "{r}"
    );
    let own_sdp = receiver.local_sdp().await.unwrap();
    let own_video_mid = own_sdp
        .split("m=")
        .find(|m| m.starts_with("video"))
        .and_then(|m| m.lines().find_map(|l| l.trim().strip_prefix("a=mid:")))
        .unwrap()
        .to_owned();
    let audio_mid = receiver
        .media_tracks()
        .into_iter()
        .find(|t| serde_json::to_value(t.kind).unwrap() == "audio")
        .map(|t| t.mid)
        .unwrap();
    let cases = [
        (
            json!({"type": "media_layer", "mid": "zz9", "quality": "low"}),
            "not_found",
        ),
        (
            json!({"type": "media_layer", "mid": own_video_mid, "quality": "low"}),
            "not_found",
        ),
        (
            json!({"type": "media_layer", "mid": audio_mid, "quality": "low"}),
            "invalid_message",
        ),
        (
            json!({"type": "media_layer", "mid": mid, "quality": "ultra"}),
            "invalid_message",
        ),
        (
            json!({"type": "media_layer", "mid": 7, "quality": "low"}),
            "invalid_message",
        ),
    ];
    for (msg, code) in cases {
        let r = receiver.signal(msg.clone()).await.unwrap();
        assert_eq!(r["type"], "error", "{msg} -> {r}");
        assert_eq!(r["code"], code, "{msg} -> {r}");
    }
    // Nothing changed: still the best layer only.
    tokio::time::sleep(SETTLE).await;
    assert_only_layer(&publisher, &receiver, &mid, "f").await;
    publisher.close().await;
    receiver.close().await;
}

/// A participant's page builds a brand-new `RTCPeerConnection` (new ICE credentials, new DTLS
/// certificate) and offers it on the same websocket, as after a network change, while the old
/// connection is still alive on the server (nothing told it otherwise). The server takes the
/// offer as a new connection, not as a renegotiation of the old one: the old one is closed (its
/// media stops reaching anyone, the server counts four peers, not five), the new one receives the
/// three others and they receive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_peer_connection_on_the_same_websocket_replaces_the_old_one() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let mut peers = four_flowing(&server).await;
    let consumer = peers.remove(0);
    let old_tag = consumer.tag();

    // A new connection's offer that cannot be used (its only codecs made up) is refused, and
    // the old connection is left as it was: a refused offer changes nothing.
    let real = consumer.local_sdp().await.expect("local offer");
    let fingerprint = real
        .lines()
        .find(|l| l.starts_with("a=fingerprint:"))
        .expect("the offer has a fingerprint")
        .to_owned();
    let other = format!("a=fingerprint:sha-256 {}", vec!["AB"; 32].join(":"));
    let unusable = real
        .replace(&fingerprint, &other)
        .replace("opus/48000/2", "x-madeup/48000/2")
        .replace("VP8/90000", "X-FAKE/90000");
    let r = consumer.offer_raw(unusable).await.unwrap();
    assert_eq!(r["type"], "error", "{r}");
    assert_eq!(r["code"], "invalid_message", "{r}");
    for p in &peers {
        p.reset_counters();
    }
    tokio::time::sleep(SILENCE).await;
    for p in &peers {
        assert!(
            p.received(old_tag, Kind::Audio) > 0 && p.received(old_tag, Kind::Video) > 0,
            "{} lost the consumer after a refused offer",
            p.participant()
        );
    }

    let consumer = consumer
        .restart()
        .await
        .expect("the new connection is answered and connects");
    assert_ne!(consumer.tag(), old_tag);
    peers.insert(0, consumer);
    let all: Vec<&Peer> = peers.iter().collect();
    wait_all_flowing(&all, START).await;

    // The old connection's media is gone for good; the new one's flows both ways.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in &peers {
        p.reset_counters();
    }
    tokio::time::sleep(SILENCE).await;
    for p in &peers[1..] {
        assert_eq!(
            p.received_from(old_tag),
            0,
            "{} still gets the old connection",
            p.participant()
        );
        assert!(
            p.received(peers[0].tag(), Kind::Audio) > 0,
            "{}",
            matrix(&all)
        );
        assert!(
            p.received(peers[0].tag(), Kind::Video) > 0,
            "{}",
            matrix(&all)
        );
        assert!(
            peers[0].received(p.tag(), Kind::Audio) > 0,
            "{}",
            matrix(&all)
        );
    }
    let m = metrics(&server).await;
    assert_eq!(gauge(&m, "yuntiao_media_peers"), Some(4.0), "{m}");
    for p in peers {
        p.close().await;
    }
}

/// Over the next 3 s, `receiver` (whose video is paused) gets no video from any of the other
/// `peers` and at least 120 audio packets from each: 50 a second, less what scheduling on a busy
/// machine delays.
async fn assert_audio_only(peers: &[Peer], receiver: &Peer) {
    let all: Vec<&Peer> = peers.iter().collect();
    for p in peers {
        p.reset_counters();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for s in peers.iter().filter(|s| s.tag() != receiver.tag()) {
        assert_eq!(
            receiver.received(s.tag(), Kind::Video),
            0,
            "video from {} still reaches the paused receiver",
            s.participant()
        );
        let audio = receiver.received(s.tag(), Kind::Audio);
        assert!(
            audio >= 120,
            "only {audio} audio packets from {} in 3 s: {}",
            s.participant(),
            matrix(&all)
        );
    }
}

/// Downlink protection: a receiver whose link turns too thin for the three videos it gets
/// (300 kbps against about 1.6 Mbit/s) is told `media_downlink` `paused`, gets no more video and
/// every packet of its audio, while the others keep everyone's video; once its link recovers it
/// is told `full` and the video comes back, whole and starting at a keyframe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_downlink_pauses_video_keeps_audio_and_recovers() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let peers = four_flowing(&server).await;
    let all: Vec<&Peer> = peers.iter().collect();
    let thin = &peers[0];
    let others: Vec<&Peer> = peers[1..].iter().collect();
    assert!(thin.downlink_states().is_empty());

    thin.limit_downlink(300_000);
    let paused = eventually(Duration::from_secs(15), || {
        thin.downlink_states().last().map(String::as_str) == Some("paused")
    })
    .await;
    let (policed_audio, policed_video) = thin.policed();
    assert!(
        paused,
        "no media_downlink paused: {:?}; policed audio {policed_audio}, video {policed_video}",
        thin.messages()
            .iter()
            .map(|m| m["type"].clone())
            .collect::<Vec<_>>()
    );
    assert!(policed_video > 0, "the thin link lost no video");
    let m = metrics(&server).await;
    assert_eq!(
        participant_gauge(&m, "yuntiao_media_peer_video_level", thin.participant()),
        Some(2.0),
        "{m}"
    );
    assert!(gauge(&m, "yuntiao_media_downlink_steps_down_total").unwrap_or(0.0) >= 1.0);

    // Packets already on their way have arrived or been lost; now a clean window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (audio_lost_before, _) = thin.policed();
    assert_audio_only(&peers, thin).await;
    let (audio_lost_after, _) = thin.policed();
    assert_eq!(
        audio_lost_after, audio_lost_before,
        "audio was lost on the thin link while its video was paused"
    );
    // Only the thin receiver is affected.
    for r in &others {
        assert!(r.downlink_states().is_empty(), "{}", r.participant());
        for s in &peers {
            if s.tag() != r.tag() {
                assert!(
                    r.received(s.tag(), Kind::Video) > 0,
                    "{} lost {}'s video: {}",
                    r.participant(),
                    s.participant(),
                    matrix(&all)
                );
            }
        }
    }

    // The link recovers: after the hold, the video comes back, and the server asks each
    // publisher for a keyframe to start it with (nobody else asks now: the other receivers lose
    // nothing, and a paused receiver's own requests are not passed on).
    let plis_before: Vec<u64> = others.iter().map(|s| s.feedback_received().0).collect();
    thin.limit_downlink(0);
    let full = eventually(Duration::from_secs(30), || {
        thin.downlink_states().last().map(String::as_str) == Some("full")
    })
    .await;
    assert!(full, "video not given back: {:?}", thin.downlink_states());
    let back = eventually(START, || {
        others.iter().all(|s| {
            thin.flow(s.tag(), Kind::Video)
                .is_some_and(|f| f.packets > 0 && f.keyframes > 0)
        })
    })
    .await;
    assert!(back, "video did not come back: {}", matrix(&all));
    for (s, before) in others.iter().zip(plis_before) {
        assert!(
            s.feedback_received().0 > before,
            "{} was not asked for a keyframe when the video came back",
            s.participant()
        );
    }
    // Each video line starts again at a keyframe, with no gap in its sequence numbers.
    for t in thin.tracks() {
        if t.kind != Kind::Video || t.history.is_empty() {
            continue;
        }
        assert!(
            t.history[0].keyframe,
            "video resumed without a keyframe: {t:?}"
        );
        for w in t.history.windows(2) {
            assert_eq!(
                w[1].seq,
                w[0].seq.wrapping_add(1),
                "a gap in the resumed video's sequence numbers"
            );
        }
    }
    assert_eq!(thin.bad_payloads(), 0);
    let m = metrics(&server).await;
    assert_eq!(
        participant_gauge(&m, "yuntiao_media_peer_video_level", thin.participant()),
        Some(0.0),
        "{m}"
    );
    assert!(gauge(&m, "yuntiao_media_downlink_steps_up_total").unwrap_or(0.0) >= 1.0);
    assert!(gauge(&m, "yuntiao_media_packets_held_downlink_total").unwrap_or(0.0) > 0.0);
    for p in peers {
        p.close().await;
    }
}

/// Downlink protection on a link that queues instead of losing (a deep mobile buffer): the
/// receiver's reports show no loss, only a round trip that grows, and its video is paused all
/// the same while nothing is lost; audio keeps arriving on time once the queue has drained, and
/// the video comes back when the link does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queueing_downlink_pauses_video_before_anything_is_lost() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let peers = four_flowing(&server).await;
    let all: Vec<&Peer> = peers.iter().collect();
    let slow = &peers[0];
    let others: Vec<&Peer> = peers[1..].iter().collect();
    // A few receiver reports on the link as it is: the round trip without a queue.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(slow.downlink_states().is_empty());

    // About 1.6 Mbit/s arrives; the link carries 1 Mbit/s and holds the rest.
    slow.queue_downlink(1_000_000);
    // What /metrics shows on the way: the queueing delay, and the loss (the other signal,
    // which must not be what steps it down here).
    let (mut queue_seen, mut loss_seen) = (0.0f64, 0.0f64);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        // Read once more after the pause: the second that paused it stays on /metrics until
        // the next second's.
        let done = slow.downlink_states().last().map(String::as_str) == Some("paused")
            || std::time::Instant::now() >= deadline;
        let m = metrics(&server).await;
        let gauge = |name| participant_gauge(&m, name, slow.participant()).unwrap_or(0.0);
        queue_seen = queue_seen.max(gauge("yuntiao_media_peer_downlink_queue_seconds"));
        loss_seen = loss_seen.max(gauge("yuntiao_media_peer_downlink_loss_ratio"));
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        slow.downlink_states(),
        ["paused"],
        "queued up to {:?}",
        slow.queued_max()
    );
    // Nothing was lost: the round trip alone told.
    assert_eq!(loss_seen, 0.0, "the receiver reported loss");
    assert!(slow.queued_max() >= Duration::from_millis(400));
    assert!(
        queue_seen >= 0.4,
        "the queueing delay shown on /metrics peaked at {queue_seen} s"
    );
    let m = metrics(&server).await;
    assert_eq!(
        participant_gauge(&m, "yuntiao_media_peer_video_level", slow.participant()),
        Some(2.0),
        "{m}"
    );

    // The queue drains (audio alone is well under the link's rate), then audio arrives and
    // video does not.
    let drained = eventually(Duration::from_secs(15), || {
        slow.queue_delay() < Duration::from_millis(20)
    })
    .await;
    assert!(drained, "still {:?} of queue", slow.queue_delay());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_audio_only(&peers, slow).await;
    for r in &others {
        assert!(r.downlink_states().is_empty(), "{}", r.participant());
    }

    // Still paused (the hold has not passed). The link recovers: the round trip is back to
    // the link's own, and after the hold the video comes back.
    assert_eq!(slow.downlink_states(), ["paused"]);
    slow.queue_downlink(0);
    let full = eventually(Duration::from_secs(30), || {
        slow.downlink_states().last().map(String::as_str) == Some("full")
    })
    .await;
    assert!(full, "video not given back: {:?}", slow.downlink_states());
    assert_eq!(slow.downlink_states(), ["paused", "full"]);
    let back = eventually(START, || {
        others.iter().all(|s| {
            slow.flow(s.tag(), Kind::Video)
                .is_some_and(|f| f.packets > 0 && f.keyframes > 0)
        })
    })
    .await;
    assert!(back, "video did not come back: {}", matrix(&all));
    assert_eq!(slow.bad_payloads(), 0);
    for p in peers {
        p.close().await;
    }
}

/// Downlink protection with a simulcast publisher whose lowest layer is light (as a browser's
/// is): on a link too thin for the best layer but wide enough for the lowest, the receiver is
/// stepped down to the lowest layer and stays there without loss, video and audio; after the
/// hold it tries the best layer again, which the link cannot carry, and is back on the lowest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_downlink_settles_a_simulcast_receiver_on_the_lowest_layer() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let (publisher, receiver, _mid) = simulcast_on_best_layer(&server).await;
    // The lowest layer at 5 frames a second: about 80 kbit/s, against about 480 for the best.
    publisher.thin_layer("q", 6);

    receiver.limit_downlink(300_000);
    let reduced = eventually(Duration::from_secs(15), || {
        !receiver.downlink_states().is_empty()
    })
    .await;
    assert!(
        reduced,
        "no step down: {:?}",
        layer_counts(&publisher, &receiver)
    );
    assert_eq!(receiver.downlink_states(), ["reduced"]);
    wait_layer(&publisher, &receiver, "q").await;
    // Settled on the lowest layer: nothing more is lost, and it all arrives.
    tokio::time::sleep(Duration::from_secs(1)).await;
    receiver.reset_counters();
    let policed = receiver.policed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        receiver.policed(),
        policed,
        "the link still loses at the lowest layer"
    );
    let q = publisher.layer_tag("q").unwrap();
    let f = publisher.layer_tag("f").unwrap();
    let got_q = receiver.received(q, Kind::Video);
    assert!(
        got_q >= 18,
        "{got_q} packets of the lowest layer in 3 s (about 30 sent)"
    );
    let h = publisher.layer_tag("h").unwrap();
    assert_eq!(receiver.received(f, Kind::Video), 0);
    assert_eq!(receiver.received(h, Kind::Video), 0);
    let audio = receiver.received(publisher.tag(), Kind::Audio);
    assert!(audio >= 120, "only {audio} audio packets in 3 s");
    let m = metrics(&server).await;
    assert_eq!(
        participant_gauge(&m, "yuntiao_media_peer_video_level", receiver.participant()),
        Some(1.0),
        "{m}"
    );

    // After the hold it tries the best layer again; the link still cannot carry it.
    let relapsed = eventually(Duration::from_secs(30), || {
        receiver.downlink_states().len() >= 3
    })
    .await;
    assert!(relapsed, "no retry: {:?}", receiver.downlink_states());
    assert_eq!(receiver.downlink_states(), ["reduced", "full", "reduced"]);
    publisher.close().await;
    receiver.close().await;
}

/// Downlink protection with a simulcast publisher: a thin link first gets the lowest layer
/// (`reduced`), and, since here even that is too much, no video (`paused`); when the link
/// recovers it climbs back one level at a time: the lowest layer, then the best one again, each
/// switch at a keyframe on one continuous stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_downlink_steps_a_simulcast_receiver_down_and_back_up() {
    let _serial = SERIAL.lock().await;
    let (server, _port) = start().await;
    let (publisher, receiver, mid) = simulcast_on_best_layer(&server).await;

    // Every layer of the test publisher is about 500 kbit/s; the link passes 250.
    receiver.reset_counters();
    receiver.limit_downlink(250_000);
    let paused = eventually(Duration::from_secs(20), || {
        receiver.downlink_states().last().map(String::as_str) == Some("paused")
    })
    .await;
    let states = receiver.downlink_states();
    assert!(paused, "not paused: {states:?}");
    assert_eq!(states, ["reduced", "paused"]);
    // While reduced, the line switched to the lowest layer (whatever got through of it).
    let q = publisher.layer_tag("q").unwrap();
    assert!(
        receiver.received(q, Kind::Video) > 0,
        "the lowest layer never came while reduced: {:?}",
        layer_counts(&publisher, &receiver)
    );

    receiver.limit_downlink(0);
    let reduced = eventually(Duration::from_secs(30), || {
        receiver.downlink_states().len() == 3
    })
    .await;
    assert!(reduced, "no step up: {:?}", receiver.downlink_states());
    assert_eq!(receiver.downlink_states()[2], "reduced");
    wait_layer(&publisher, &receiver, "q").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_only_layer(&publisher, &receiver, &mid, "q").await;

    let full = eventually(Duration::from_secs(30), || {
        receiver.downlink_states().len() == 4
    })
    .await;
    assert!(full, "no second step up: {:?}", receiver.downlink_states());
    assert_eq!(receiver.downlink_states()[3], "full");
    wait_layer(&publisher, &receiver, "f").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_only_layer(&publisher, &receiver, &mid, "f").await;
    publisher.close().await;
    receiver.close().await;
}
