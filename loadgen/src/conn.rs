//! One participant's websocket: joining, being admitted, and the measured phase.
//!
//! Latencies are measured on one monotonic clock for the whole process ([`nanos`]): the sender
//! writes the send time into the message text (`lg <k> <nanos> [padding]`) and every receiver
//! subtracts it from its own reading of the same clock. No wall clocks, no clock skew, and no
//! shared map to lock on the hot path.
//!
//! Every connection keeps reading until the end of the grace period, whatever its role, so the
//! server never sees a slow reader (it drops connections whose outbox fills up) and no
//! connection closes while others are still being measured.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

static T0: OnceLock<Instant> = OnceLock::new();

/// The process-wide start instant that [`nanos`] counts from.
pub fn process_start() -> Instant {
    *T0.get_or_init(Instant::now)
}

/// Nanoseconds since the process-wide start instant (monotonic).
pub fn nanos() -> u64 {
    T0.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A latency histogram in microseconds, 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

/// The fields of a server message the load generator looks at; the rest is skipped.
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn parse(text: &str) -> anyhow::Result<Incoming> {
    serde_json::from_str(text).context("the server sent a message that is not JSON")
}

/// The send time embedded in a load-generator text, if this is one.
fn sent_at(text: &str) -> Option<u64> {
    let mut parts = text.split(' ');
    if parts.next()? != "lg" {
        return None;
    }
    parts.nth(1)?.parse().ok()
}

/// Reads the next text frame, within `timeout`.
async fn next_text(ws: &mut Ws, timeout: Duration) -> anyhow::Result<String> {
    loop {
        let m = tokio::time::timeout(timeout, ws.next())
            .await
            .map_err(|_| anyhow!("no answer from the server within {timeout:?}"))?;
        match m {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(f))) => bail!("the server closed the connection: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("websocket error: {e}"),
            None => bail!("the connection closed"),
        }
    }
}

const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection that has joined its case.
pub struct Joined {
    pub ws: Ws,
    /// TCP connect plus the websocket upgrade.
    pub connect: Duration,
    /// `join` sent → `welcome` received.
    pub join: Duration,
}

/// Opens a websocket to `url` and joins with `token`.
pub async fn connect_and_join(url: &str, token: &str) -> anyhow::Result<Joined> {
    let t0 = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let connect = t0.elapsed();
    let msg = serde_json::json!({"type": "join", "id": "j", "token": token}).to_string();
    let t1 = Instant::now();
    ws.send(Message::text(msg)).await.context("sending join")?;
    loop {
        let text = next_text(&mut ws, SETUP_TIMEOUT).await?;
        let m = parse(&text)?;
        match m.ty.as_str() {
            "welcome" => {
                return Ok(Joined {
                    ws,
                    connect,
                    join: t1.elapsed(),
                })
            }
            "error" | "closed" => bail!(
                "join refused: {} {}",
                m.code.unwrap_or_default(),
                m.message.unwrap_or_default()
            ),
            _ => continue,
        }
    }
}

/// The mediator admits the two parties and waits for both acks.
pub async fn admit(ws: &mut Ws, parties: &[&str]) -> anyhow::Result<()> {
    for (i, p) in parties.iter().enumerate() {
        let msg = serde_json::json!({"type": "admit", "id": format!("a{i}"), "participant": p});
        ws.send(Message::text(msg.to_string()))
            .await
            .context("sending admit")?;
    }
    let mut acked = 0;
    while acked < parties.len() {
        let m = parse(&next_text(ws, SETUP_TIMEOUT).await?)?;
        let ours = m.id.as_deref().is_some_and(|id| id.starts_with('a'));
        match m.ty.as_str() {
            "ack" if ours => acked += 1,
            "error" if ours => bail!(
                "admit refused: {} {}",
                m.code.unwrap_or_default(),
                m.message.unwrap_or_default()
            ),
            _ => {}
        }
    }
    Ok(())
}

/// A party waits in the lobby until the welcome that says it was admitted.
pub async fn wait_admitted(ws: &mut Ws) -> anyhow::Result<()> {
    loop {
        let m = parse(&next_text(ws, SETUP_TIMEOUT).await?)?;
        match (m.ty.as_str(), m.status.as_deref()) {
            ("welcome", Some("admitted")) => return Ok(()),
            ("error" | "closed", _) => bail!(
                "while waiting to be admitted: {} {}",
                m.code.unwrap_or_default(),
                m.message.unwrap_or_default()
            ),
            _ => {}
        }
    }
}

/// The measured phase: senders send in `[start, end)`; everyone reads until `stop`.
#[derive(Clone, Copy)]
pub struct Phase {
    pub start: tokio::time::Instant,
    pub end: tokio::time::Instant,
    pub stop: tokio::time::Instant,
}

/// What one connection saw. Merged over all connections at the end.
pub struct Stats {
    /// Receivers: send → receipt of the event carrying a load-generator text (µs).
    pub fanout: Histogram<u64>,
    /// Senders: send → ack (µs).
    pub ack: Histogram<u64>,
    /// Pingers: `ping` → `pong` (µs): the transport and scheduling floor under the same load,
    /// since the server answers a ping in the connection's reader without the room or the store.
    pub ping: Histogram<u64>,
    /// Receivers: load-generator events received (any time before `stop`).
    pub delivered: u64,
    /// Senders: requests sent.
    pub sent: u64,
    /// Senders: acks received (any time before `stop`).
    pub acked: u64,
    /// Senders: acks received within `[start, end]`.
    pub acked_in_phase: u64,
    /// Senders: requests sent but neither acked nor refused by `stop`.
    pub unanswered: u64,
    /// Error replies and `closed` messages, by code.
    pub errors: BTreeMap<String, u64>,
    /// Frame sizes of `note_added` events received (to size the raw Redis reference).
    pub note_frame_bytes: u64,
    pub note_frames: u64,
    /// The connection ended before `stop`.
    pub dropped: u64,
    /// Receivers, with `--timeline`: (send time in ns since the process start, latency in µs).
    pub samples: Vec<(u64, u32)>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            fanout: histogram(),
            ack: histogram(),
            ping: histogram(),
            delivered: 0,
            sent: 0,
            acked: 0,
            acked_in_phase: 0,
            unanswered: 0,
            errors: BTreeMap::new(),
            note_frame_bytes: 0,
            note_frames: 0,
            dropped: 0,
            samples: Vec::new(),
        }
    }

    pub fn merge(&mut self, o: &Stats) {
        let _ = self.fanout.add(&o.fanout);
        let _ = self.ack.add(&o.ack);
        let _ = self.ping.add(&o.ping);
        self.delivered += o.delivered;
        self.sent += o.sent;
        self.acked += o.acked;
        self.acked_in_phase += o.acked_in_phase;
        self.unanswered += o.unanswered;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.note_frame_bytes += o.note_frame_bytes;
        self.note_frames += o.note_frames;
        self.dropped += o.dropped;
        self.samples.extend_from_slice(&o.samples);
    }
}

/// What a connection does during the measured phase.
#[derive(Clone, Copy)]
pub enum Behaviour {
    /// Only read; measure fan-out of load-generator events.
    Receive,
    /// Read and measure fan-out like `Receive`, and also send a `ping` every `period`, the
    /// first at `start + offset`, timing the `pong`.
    ReceiveAndPing { period: Duration, offset: Duration },
    /// Send a chat message every `period`, the first at `start + offset`.
    Chat { period: Duration, offset: Duration },
    /// Keep `window` staff notes outstanding; each ack or error releases the next one.
    Notes { window: usize, pad: usize },
}

/// Runs one connection through the phase and returns what it saw (and the socket, which the
/// caller closes once every connection is done).
pub async fn run(mut ws: Ws, behaviour: Behaviour, phase: Phase, timeline: bool) -> (Stats, Ws) {
    let mut st = Stats::new();
    let measure_fanout = matches!(
        behaviour,
        Behaviour::Receive | Behaviour::ReceiveAndPing { .. }
    );
    let mut pings: HashMap<u64, u64> = HashMap::new();
    let mut pending: HashMap<u64, u64> = HashMap::new();
    let mut k = 0u64;
    let (period, offset) = match behaviour {
        Behaviour::Chat { period, offset } | Behaviour::ReceiveAndPing { period, offset } => {
            (period, offset)
        }
        _ => (Duration::from_secs(3600), Duration::ZERO),
    };
    let mut ticker = tokio::time::interval_at(phase.start + offset, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let chat = matches!(behaviour, Behaviour::Chat { .. });
    let pinging = matches!(behaviour, Behaviour::ReceiveAndPing { .. });
    let (notes, window, pad) = match behaviour {
        Behaviour::Notes { window, pad } => (true, window, "x".repeat(pad)),
        _ => (false, 0, String::new()),
    };
    let mut notes_started = false;
    let stop = sleep_until(phase.stop);
    tokio::pin!(stop);
    let start = sleep_until(phase.start);
    tokio::pin!(start);

    // Builds and sends the next request; false if the socket failed.
    macro_rules! send_next {
        ($ty:literal, $extra:expr) => {{
            k += 1;
            let t = nanos();
            let text = if pad.is_empty() {
                format!("lg {k} {t}")
            } else {
                format!("lg {k} {t} {pad}")
            };
            let msg = format!(
                r#"{{"type":"{}","id":"{}","text":"{}"{}}}"#,
                $ty, k, text, $extra
            );
            pending.insert(k, t);
            st.sent += 1;
            ws.send(Message::text(msg)).await.is_ok()
        }};
    }

    loop {
        let now = tokio::time::Instant::now();
        let sending = now < phase.end;
        tokio::select! {
            _ = ticker.tick(), if (chat || pinging) && sending => {
                if tokio::time::Instant::now() >= phase.end {
                    continue;
                }
                let ok = if chat {
                    send_next!("chat", "")
                } else {
                    k += 1;
                    pings.insert(k, nanos());
                    let msg = format!(r#"{{"type":"ping","id":"p{k}"}}"#);
                    ws.send(Message::text(msg)).await.is_ok()
                };
                if !ok {
                    st.dropped += 1;
                    break;
                }
            }
            _ = &mut start, if notes && !notes_started => {
                notes_started = true;
                for _ in 0..window {
                    if !send_next!("note", r#","scope":"staff""#) {
                        st.dropped += 1;
                        break;
                    }
                }
            }
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        st.dropped += 1;
                        break;
                    }
                    Some(Ok(_)) => continue,
                };
                let at = nanos();
                let Ok(m) = parse(text.as_str()) else { continue };
                match m.ty.as_str() {
                    "event" => {
                        if m.kind.as_deref() == Some("note_added") {
                            st.note_frame_bytes += text.len() as u64;
                            st.note_frames += 1;
                        }
                        if measure_fanout {
                            if let Some(t) = m.text.as_deref().and_then(sent_at) {
                                st.delivered += 1;
                                let d = Duration::from_nanos(at.saturating_sub(t));
                                record(&mut st.fanout, d);
                                if timeline {
                                    st.samples.push((t, d.as_micros().min(u32::MAX as u128) as u32));
                                }
                            }
                        }
                    }
                    "ack" | "error" => {
                        let id = m.id.as_deref().and_then(|i| i.parse::<u64>().ok());
                        let sent = id.and_then(|i| pending.remove(&i));
                        if m.ty == "error" {
                            let code = m.code.unwrap_or_else(|| "?".into());
                            *st.errors.entry(code).or_default() += 1;
                        } else if let Some(t) = sent {
                            st.acked += 1;
                            if tokio::time::Instant::now() <= phase.end {
                                st.acked_in_phase += 1;
                            }
                            record(&mut st.ack, Duration::from_nanos(at.saturating_sub(t)));
                        }
                        if notes && sent.is_some() && tokio::time::Instant::now() < phase.end
                            && !send_next!("note", r#","scope":"staff""#)
                        {
                            st.dropped += 1;
                            break;
                        }
                    }
                    "pong" => {
                        let id = m.id.as_deref().and_then(|i| i.strip_prefix('p'));
                        if let Some(t) = id.and_then(|i| i.parse::<u64>().ok()).and_then(|i| pings.remove(&i)) {
                            record(&mut st.ping, Duration::from_nanos(at.saturating_sub(t)));
                        }
                    }
                    "closed" => {
                        let code = format!("closed:{}", m.code.unwrap_or_default());
                        *st.errors.entry(code).or_default() += 1;
                    }
                    _ => {}
                }
            }
            _ = &mut stop => break,
        }
    }
    st.unanswered = pending.len() as u64;
    (st, ws)
}
