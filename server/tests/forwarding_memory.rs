//! Regression test: forwarding through the immediate send path must not grow the heap.
//!
//! The media engine forwards every packet through our patched `Rtc::send_rtp_now`
//! (vendor/str0m/YUNTIAO.md). That path once skipped the purge the queued path does, so each
//! send stream kept a 24-byte history entry per packet for as long as it lived: about 15 MB per
//! hour per audio participant. A leak of that kind does not show in a short functional test, and
//! the benchmark's per-participant memory is taken when publishing starts, so this test measures
//! it directly.
//!
//! Two real str0m `Rtc`s (no mock: DTLS, SRTP, RTCP all run) are connected in memory on a
//! simulated clock, the server side configured as the engine configures a peer. After a warm-up
//! that fills every bounded buffer (NACK history, statistics windows), two minutes of 20-ms audio
//! packets goes through `send_rtp_now`; the heap, counted by a global allocator, must end
//! where it began, within a small margin, and the packets must have arrived.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::Receive;
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc, SendNow};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a side
// effect only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const SERVER_ADDR: &str = "10.20.0.1:7882";
const CLIENT_ADDR: &str = "10.20.0.2:50000";

/// One side of the in-memory call.
struct Side {
    rtc: Rtc,
    addr: SocketAddr,
    /// When this side next wants a timeout.
    due: Instant,
    connected: bool,
    received: u64,
}

impl Side {
    fn new(rtc: Rtc, addr: &str, now: Instant) -> Side {
        Side {
            rtc,
            addr: addr.parse().unwrap(),
            due: now,
            connected: false,
            received: 0,
        }
    }
}

/// Polls `from` until it waits for a timeout, delivering what it transmits to `to`.
fn drain(from: &mut Side, to: &mut Side, now: Instant) {
    loop {
        match from.rtc.poll_output().expect("poll_output") {
            Output::Timeout(at) => {
                from.due = at;
                return;
            }
            Output::Transmit(t) => deliver(to, now, t),
            Output::Event(Event::Connected) => from.connected = true,
            Output::Event(Event::RtpPacket(_)) => from.received += 1,
            Output::Event(_) => {}
        }
    }
}

fn deliver(to: &mut Side, now: Instant, t: str0m::net::Transmit) {
    assert_eq!(t.destination, to.addr, "a datagram for someone else");
    let r = Receive::new(t.proto, t.source, t.destination, &t.contents).expect("parse datagram");
    to.rtc
        .handle_input(Input::Receive(now, r))
        .expect("handle datagram");
}

/// Runs both sides' timers and traffic until `until` on the simulated clock.
fn run_until(server: &mut Side, client: &mut Side, now: &mut Instant, until: Instant) {
    loop {
        drain(server, client, *now);
        drain(client, server, *now);
        let next = server.due.min(client.due);
        if next > until {
            *now = until;
            return;
        }
        *now = next.max(*now);
        for side in [&mut *server, &mut *client] {
            if side.due <= *now {
                side.rtc
                    .handle_input(Input::Timeout(*now))
                    .expect("timeout");
            }
        }
    }
}

#[test]
fn forwarding_through_send_rtp_now_does_not_grow_the_heap() {
    let start = Instant::now();
    let mut now = start;

    // The server as the media engine builds a peer.
    let mut server = Rtc::builder()
        .set_rtp_mode(true)
        .set_ice_lite(true)
        .set_stats_interval(Some(Duration::from_secs(1)))
        .set_rtcp_report_interval_audio(Duration::from_secs(1))
        .build(now);
    let mut client = Rtc::builder().set_rtp_mode(true).build(now);
    server.add_local_candidate(Candidate::host(SERVER_ADDR.parse().unwrap(), "udp").unwrap());
    client.add_local_candidate(Candidate::host(CLIENT_ADDR.parse().unwrap(), "udp").unwrap());

    // The client offers to receive one audio line, as a participant's browser does.
    let mut change = client.sdp_api();
    let mid: Mid = change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = change.apply().expect("an offer");
    let answer = server.sdp_api().accept_offer(offer).expect("answer");
    client
        .sdp_api()
        .accept_answer(pending, answer)
        .expect("accept answer");

    let mut server = Side::new(server, SERVER_ADDR, now);
    let mut client = Side::new(client, CLIENT_ADDR, now);

    // Connect: ICE, DTLS, SRTP.
    let deadline = now + Duration::from_secs(10);
    while !(server.connected && client.connected) {
        assert!(now < deadline, "the peers did not connect");
        let step = now + Duration::from_millis(10);
        run_until(&mut server, &mut client, &mut now, step);
    }

    let opus = server
        .rtc
        .codec_config()
        .iter()
        .find(|p| p.spec().codec == str0m::format::Codec::Opus)
        .map(|p| p.pt())
        .expect("Opus configured");
    let accepted = server.rtc.media(mid).expect("the line").remote_pts();
    assert!(accepted.contains(&opus), "the client accepted Opus");

    let payload: Arc<[u8]> = (0..80u8).collect();
    let mut seq: u64 = 0;
    let mut hint = None;
    let mut forward = |server: &mut Side, client: &mut Side, now: &mut Instant, packets: u64| {
        for _ in 0..packets {
            seq += 1;
            let write = RtpWrite::new(opus, seq.into(), (seq * 960) as u32, *now, payload.clone());
            match server.rtc.send_rtp_now(*now, mid, None, &mut hint, write) {
                SendNow::Sent(t) => deliver(client, *now, t),
                SendNow::Queued => {}
                SendNow::NoStream(_) => panic!("no send stream for the audio line"),
            }
            let step = *now + Duration::from_millis(20);
            run_until(server, client, now, step);
        }
    };

    // Warm-up: 70 s fills every bounded buffer (resend history, statistics windows: the heap
    // grows by some 44 KiB between 10 s and 70 s, then not at all).
    forward(&mut server, &mut client, &mut now, 3500);
    let before_received = client.received;
    let before = LIVE.load(Ordering::Relaxed);

    // Two minutes of audio. A leak into a growing `Vec` or `VecDeque` shows as its doublings:
    // the measured stretch is long enough to hold one whatever the entry size.
    forward(&mut server, &mut client, &mut now, 6000);
    let grown = LIVE.load(Ordering::Relaxed) - before;
    let received = client.received - before_received;

    assert!(
        received >= 5990,
        "only {received} of 6000 packets arrived: the test measured nothing"
    );
    assert!(
        grown < 16 * 1024,
        "the heap grew by {grown} bytes over 6000 forwarded packets ({} per packet)",
        grown / 6000
    );
    assert!(now - start >= Duration::from_secs(190));
}
