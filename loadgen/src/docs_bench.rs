//! `yuntiao-loadgen docs-trace`: the shared-document benchmark (issue 4), against Yuntiao's
//! document server (`--target yuntiao`) or the stock `@y/websocket-server` (`--target stock`),
//! with the same trace, the same clients and the same pacing.
//!
//! A run has four phases, in this order, all on one server process:
//!
//! 1. **Memory per open document** (`--memory-docs`, 200): the server's RSS is read with nothing
//!    open (for Yuntiao: the cases created and each mediator joined over signaling, since only an
//!    admitted participant may open a document), then `--memory-docs` documents are opened, one
//!    connection each, and each is given `--memory-doc-bytes` (4 KiB) of the trace's text, typed
//!    in 32-character updates at the end; a second sync step 1 → sync step 2 round trip confirms
//!    the server has applied (and, for Yuntiao, stored) them all. After a 2 s settle the RSS is
//!    read again: (after − before) / documents. The connections are then closed.
//! 2. **Trace replay** ([`crate::docs_trace`]): one editor connection sends every edit as its own
//!    y-websocket `Update` message (pre-encoded by a `yrs` document before the phase, so the
//!    editor's own CPU is not in the figures); three receiver connections apply every update they
//!    get to their own `yrs` documents. Pacing: at most `--window` (256) updates sent and not yet
//!    received by receiver 1 (the editor waits for receiver 1 before sending more), and with
//!    `--paced-rate` not faster than that rate either. Figures: updates per second end to end
//!    (trace length ÷ time from the first send to the moment the last of the three receivers has
//!    applied the last update), fan-out latency (send → receipt, for every update at every
//!    receiver, matched by order: a connection delivers updates in order), the server's (and
//!    Redis's) CPU seconds over the phase from `/proc/PID/stat`, the load generator's and the rest
//!    of the machine's, and the server's RSS before and after. Every receiver's final text must
//!    equal the editor's, or the run fails.
//! 3. **Late joiners** (`--late-joins`, 10, one after the other): a new connection with an empty
//!    document opens the replayed document; timed from the start of the TCP connect to the
//!    moment its sync step 2 is applied and its text read and checked (length and content
//!    equal the trace's final text).
//! 4. **Paced latency** (`--paced-rate` > 0, optional): a fresh document, the first
//!    `--paced-edits` edits of the trace at a fixed rate, below either server's capacity: fan-out
//!    latency without queueing.
//!
//! The stock server is reached at `ws://HOST:PORT/<room>/agreement` (it serves any room name and
//! has no authentication); Yuntiao at `ws://HOST:PORT/docs/<case>/agreement?token=…`, with a
//! case per document made over the admin API (the mediator edits, the judge, consumer and
//! merchant receive, the judge joins late).
//!
//! Each run appends one JSON line to `--summary`; `docs-trace --summarize FILE` prints them side
//! by side with the ratios against the stock server's row.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures_util::{stream, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::{Text, Transact};

use crate::admin::Admin;
use crate::conn::{histogram, nanos, Ws};
use crate::docs_trace::{self, Trace};
use crate::ydoc_client as yc;
use crate::{max_ms, ms, procstat, read_pid, rss};

/// Which server is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// `yuntiao serve`: cases over the admin API, invite tokens.
    Yuntiao,
    /// The stock `@y/websocket-server`: any room name, no authentication.
    Stock,
}

#[derive(Parser, Debug)]
#[command(
    name = "yuntiao-loadgen docs-trace",
    about = "Shared-document benchmark: replays an editing trace through a y-websocket server"
)]
pub struct DocsArgs {
    /// The server under test.
    #[arg(long, value_enum, default_value = "yuntiao")]
    target: Target,
    /// Base URL of the running server (http://HOST:PORT).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Admin bearer token of a Yuntiao server.
    #[arg(long, env = "YUNTIAO_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// PID of the server, for its CPU time and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// PID of redis-server, for its CPU time.
    #[arg(long)]
    redis_pid: Option<u32>,
    /// Label of this run in the summary (e.g. "yuntiao embedded").
    #[arg(long, default_value = "run")]
    label: String,
    /// Seed of the trace generator.
    #[arg(long, default_value_t = 4)]
    seed: u64,
    /// Single-character edits in the trace.
    #[arg(long, default_value_t = 260_000)]
    edits: usize,
    /// UTF-8 size the trace's final text aims at.
    #[arg(long, default_value_t = 160 * 1024)]
    target_bytes: usize,
    /// Updates sent and not yet received by receiver 1, at most.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Late joiners, one after the other, after the replay.
    #[arg(long, default_value_t = 10)]
    late_joins: usize,
    /// Documents opened for the memory measurement (0: skip it).
    #[arg(long, default_value_t = 200)]
    memory_docs: usize,
    /// Text given to each of those documents, in UTF-8 bytes.
    #[arg(long, default_value_t = 4096)]
    memory_doc_bytes: usize,
    /// Updates per second of the paced-latency phase (0: skip it).
    #[arg(long, default_value_t = 0.0)]
    paced_rate: f64,
    /// Edits of the paced-latency phase (the trace's first ones).
    #[arg(long, default_value_t = 20_000)]
    paced_edits: usize,
    /// Cache of the encoded trace (written if missing or made for other parameters).
    #[arg(long)]
    trace_cache: Option<PathBuf>,
    /// Append the results as one JSON line to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Do not run: print the JSON lines of this file as Markdown tables.
    #[arg(long)]
    summarize: Option<PathBuf>,
}

/// Client ids: the editor's (in the pre-encoded updates) and the memory documents' writer.
const EDITOR_CLIENT: u64 = 0x5eed;
const MEMORY_CLIENT: u64 = 0x3e3;

/// The URLs of one document: the editor's, the three receivers', and the late joiners'.
struct DocRoom {
    editor: String,
    readers: [String; 3],
    late: String,
    /// Signaling connections kept open (and drained) while the document is in use.
    signaling: Vec<JoinHandle<()>>,
}

impl Drop for DocRoom {
    fn drop(&mut self) {
        for h in &self.signaling {
            h.abort();
        }
    }
}

/// Keeps reading a websocket (and so answering pings) until it closes.
fn drain(mut ws: Ws) -> JoinHandle<()> {
    tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} })
}

fn ws_base(server: &str) -> anyhow::Result<String> {
    let base = server.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}"))
    } else if let Some(rest) = base.strip_prefix("https://") {
        Ok(format!("wss://{rest}"))
    } else {
        bail!("--server must start with http:// or https://")
    }
}

/// A nonce for the stock server's room names (it keeps every document it ever saw).
fn nonce() -> String {
    format!("{:x}", rand::random::<u64>())
}

struct Ctx {
    args: DocsArgs,
    base: String,
    admin: Option<Admin>,
    run: String,
}

impl Ctx {
    fn doc_url(&self, case: &str, token: &str) -> String {
        format!("{}/docs/{case}/agreement?token={token}", self.base)
    }

    /// A document with its editor, readers and late joiner (for Yuntiao: a case whose four
    /// participants have joined over signaling, the parties admitted).
    async fn room(&self, name: &str) -> anyhow::Result<DocRoom> {
        let Some(admin) = &self.admin else {
            let url = format!("{}/{}-{name}/agreement", self.base, self.run);
            return Ok(DocRoom {
                editor: url.clone(),
                readers: [url.clone(), url.clone(), url.clone()],
                late: url,
                signaling: Vec::new(),
            });
        };
        let prepared = crate::prepare(admin, 1, 8).await?;
        let room = prepared[0].clone();
        let sig_url = crate::ws_url(&self.args.server)?;
        let (ready, _) = crate::join_all(&sig_url, prepared, 8).await?;
        let signaling = ready.into_iter().flat_map(|r| r.conns).map(drain).collect();
        // Seats are in ROLES order: mediator, judge, consumer, merchant.
        let url = |i: usize| self.doc_url(&room.case, &room.seats[i].token);
        Ok(DocRoom {
            editor: url(0),
            readers: [url(1), url(2), url(3)],
            late: url(1),
            signaling,
        })
    }
}

/// CPU and RSS readings at one moment.
#[derive(Clone, Copy)]
struct Reading {
    server: Option<f64>,
    redis: Option<f64>,
    me: Option<f64>,
    machine: Option<f64>,
    rss: Option<u64>,
}

fn reading(args: &DocsArgs) -> Reading {
    Reading {
        server: read_pid(args.server_pid, procstat::cpu_seconds),
        redis: read_pid(args.redis_pid, procstat::cpu_seconds),
        me: procstat::cpu_seconds(std::process::id()).ok(),
        machine: procstat::machine_busy_seconds().ok(),
        rss: rss(args.server_pid),
    }
}

fn delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

fn cpu_json(a: &Reading, b: &Reading) -> Value {
    let server = delta(a.server, b.server);
    let redis = delta(a.redis, b.redis);
    let me = delta(a.me, b.me);
    let machine = delta(a.machine, b.machine);
    // Readings are in 10 ms ticks taken a few microseconds apart: small negatives are noise.
    let other = machine
        .map(|m| (m - server.unwrap_or(0.0) - redis.unwrap_or(0.0) - me.unwrap_or(0.0)).max(0.0));
    json!({"server_cpu_s": server, "redis_cpu_s": redis, "loadgen_cpu_s": me,
           "machine_cpu_s": machine, "other_cpu_s": other})
}

fn hist_json(h: &Histogram<u64>) -> Value {
    json!({"p50": ms(h, 0.5), "p99": ms(h, 0.99), "p999": ms(h, 0.999), "max": max_ms(h), "count": h.len()})
}

/// What one receiver saw during a replay.
struct ReceiverRun {
    /// Receipt time (ns, [`nanos`]) of each update, in order.
    times: Vec<u64>,
    /// When the last update had been applied.
    end: u64,
    text: String,
    ws: Ws,
}

/// Replays `msgs` from the editor to the three readers of `room`; checks every text.
async fn replay(
    ctx: &Ctx,
    room: &DocRoom,
    msgs: Arc<Vec<Bytes>>,
    expected: &str,
    rate: Option<f64>,
) -> anyhow::Result<(Value, Vec<Ws>)> {
    let args = &ctx.args;
    let n = msgs.len();
    // Connect and sync everyone first (empty documents).
    let mut editor = yc::connect(&room.editor).await?;
    yc::sync(&mut editor, &docs_trace::new_doc(EDITOR_CLIENT + 1))
        .await
        .context("editor sync")?;
    let count = Arc::new(AtomicUsize::new(0));
    let notify = Arc::new(Notify::new());
    let mut receivers = Vec::new();
    let (synced_tx, mut synced_rx) = tokio::sync::mpsc::channel::<()>(3);
    for (i, url) in room.readers.iter().enumerate() {
        let ws = yc::connect(url).await?;
        let progress = (i == 0).then(|| (Arc::clone(&count), Arc::clone(&notify)));
        let tx = synced_tx.clone();
        let client = 0x7e0 + i as u64;
        receivers.push(tokio::spawn(async move {
            let mut ws = ws;
            let doc = docs_trace::new_doc(client);
            yc::sync(&mut ws, &doc).await.context("receiver sync")?;
            let _ = tx.send(()).await;
            receive(ws, doc, n, progress).await
        }));
    }
    drop(synced_tx);
    for _ in 0..3 {
        if synced_rx.recv().await.is_none() {
            break;
        }
    }
    // The editor reads what the server sends it (the stock server echoes every update to its
    // sender) in its own task.
    let (mut sink, mut editor_rx) = editor.split();
    let echo_task = tokio::spawn(async move {
        let mut frames = 0u64;
        while let Some(Ok(m)) = editor_rx.next().await {
            if matches!(m, WsMessage::Binary(_)) {
                frames += 1;
            }
        }
        frames
    });
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let r0 = reading(args);
    let t_start = tokio::time::Instant::now();
    let window = args.window.max(1);
    for (i, msg) in msgs.iter().enumerate() {
        let deadline = Instant::now() + yc::WAIT;
        while i - count.load(Ordering::Acquire).min(i) >= window {
            if tokio::time::timeout_at(deadline.into(), notify.notified())
                .await
                .is_err()
            {
                bail!(
                    "receiver 1 stalled at {} of {i} sent updates",
                    count.load(Ordering::Acquire)
                );
            }
        }
        if let Some(rate) = rate {
            tokio::time::sleep_until(t_start + Duration::from_secs_f64(i as f64 / rate)).await;
        }
        sent[i].store(nanos(), Ordering::Relaxed);
        sink.send(WsMessage::Binary(msg.clone()))
            .await
            .context("editor send")?;
    }
    let mut runs = Vec::new();
    for h in receivers {
        runs.push(h.await.context("receiver task panicked")??);
    }
    let r1 = reading(args);

    let first = sent[0].load(Ordering::Relaxed);
    let end = runs.iter().map(|r| r.end).max().unwrap_or(first);
    let secs = (end - first) as f64 / 1e9;
    let mut fanout = histogram();
    let mut per_receiver = Vec::new();
    for r in &runs {
        let mut h = histogram();
        for (k, t) in r.times.iter().enumerate() {
            let s = sent[k].load(Ordering::Relaxed);
            h.saturating_record((t.saturating_sub(s) / 1000).max(1));
        }
        let _ = fanout.add(&h);
        per_receiver.push(hist_json(&h));
    }
    let texts_equal = runs.iter().all(|r| r.text == expected);
    for (i, r) in runs.iter().enumerate() {
        if r.text != expected {
            eprintln!(
                "[{}] receiver {} text differs: {} vs {} UTF-16 units",
                args.label,
                i + 1,
                r.text.encode_utf16().count(),
                expected.encode_utf16().count()
            );
        }
    }
    // Close the editor: its echo reader ends.
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    let echoes = tokio::time::timeout(Duration::from_secs(5), echo_task)
        .await
        .ok()
        .and_then(|r| r.ok());
    let result = json!({
        "updates": n,
        "window": window,
        "rate": rate,
        "elapsed_s": secs,
        "updates_per_s": n as f64 / secs,
        "fanout_ms": hist_json(&fanout),
        "fanout_ms_per_receiver": per_receiver,
        "texts_equal": texts_equal,
        "editor_echoes": echoes,
        "cpu": cpu_json(&r0, &r1),
        "server_rss_kib": {"before": r0.rss, "after": r1.rss},
    });
    if !texts_equal {
        bail!("a receiver's final text differs from the editor's");
    }
    Ok((result, runs.into_iter().map(|r| r.ws).collect()))
}

/// Applies `n` updates to `doc` (already synced), noting when each arrived; with `progress`,
/// publishes the count (the editor's window follows receiver 1).
async fn receive(
    mut ws: Ws,
    doc: yrs::Doc,
    n: usize,
    progress: Option<(Arc<AtomicUsize>, Arc<Notify>)>,
) -> anyhow::Result<ReceiverRun> {
    let mut times = Vec::with_capacity(n);
    while times.len() < n {
        let data = yc::next_binary(&mut ws)
            .await
            .with_context(|| format!("receiver after {} of {n} updates", times.len()))?;
        let t = nanos();
        let (got, replies) = yc::handle(&doc, &data)?;
        for r in replies {
            yc::send(&mut ws, r).await?;
        }
        for _ in 0..got.updates {
            times.push(t);
        }
        if let Some((count, notify)) = &progress {
            count.store(times.len(), Ordering::Release);
            notify.notify_one();
        }
    }
    let end = nanos();
    let text = yc::text(&doc);
    Ok(ReceiverRun {
        times,
        end,
        text,
        ws,
    })
}

/// Late joiners, one after the other; each must receive exactly `expected`.
async fn late_joins(ctx: &Ctx, room: &DocRoom, expected: &str) -> anyhow::Result<Value> {
    let want_units = expected.encode_utf16().count();
    let mut totals = Vec::new();
    let mut connects = Vec::new();
    let mut received = Vec::new();
    let mut step2_bytes = 0;
    let mut encode_ms = Vec::new();
    for i in 0..ctx.args.late_joins {
        let j = yc::late_join(&room.late, 0x1a7e + i as u64).await?;
        let units = j.text.encode_utf16().count();
        if units != want_units || j.text != expected {
            bail!("late joiner {i} got {units} UTF-16 units, expected {want_units} (or different text)");
        }
        totals.push(j.total.as_secs_f64() * 1000.0);
        connects.push(j.connect.as_secs_f64() * 1000.0);
        received.push(j.received.as_secs_f64() * 1000.0);
        step2_bytes = j.step2_bytes;
        if i == 0 {
            encode_ms = snapshot_encode_ms(&j.doc);
        }
        yc::close(j.ws).await;
    }
    let mut sorted = totals.clone();
    sorted.sort_by(f64::total_cmp);
    let median = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v[v.len() / 2]
        }
    };
    let mut c_sorted = connects.clone();
    c_sorted.sort_by(f64::total_cmp);
    let mut r_sorted = received.clone();
    r_sorted.sort_by(f64::total_cmp);
    Ok(json!({
        "joins": totals.len(),
        "text_utf16_units": want_units,
        "text_utf8_bytes": expected.len(),
        "total_ms": {"first": totals.first(), "min": sorted.first(), "median": median(&sorted), "max": sorted.last(), "all": totals},
        "connect_ms": {"median": median(&c_sorted), "max": c_sorted.last()},
        "step2_received_ms": {"median": median(&r_sorted), "max": r_sorted.last()},
        "step2_frame_bytes": step2_bytes,
        "state_encode_ms": {"median": median(&encode_ms), "max": encode_ms.last()},
    }))
}

/// How long encoding the whole state of `doc` takes (the median and the slowest of 20, sorted):
/// the work a compaction does inside the document task before handing the snapshot to the
/// background writer, i.e. the longest an editor's update can wait behind a compaction
/// (server/src/docs/task.rs). Measured on the load generator's copy of the same document, with
/// the same `yrs` version as the server.
fn snapshot_encode_ms(doc: &yrs::Doc) -> Vec<f64> {
    use yrs::{ReadTxn, StateVector, Transact};
    let mut out: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let state = doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            std::hint::black_box(state);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

/// The updates that type `text` at the end of an empty document, 32 characters at a time.
fn memory_updates(text: &str) -> Vec<Bytes> {
    let doc = docs_trace::new_doc(MEMORY_CLIENT);
    let t = doc.get_or_insert_text(docs_trace::TEXT);
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut at = 0u32;
    for chunk in chars.chunks(32) {
        let s: String = chunk.iter().collect();
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, at, &s);
        at += s.encode_utf16().count() as u32;
        out.push(docs_trace::update_message(txn.encode_update_v1()));
    }
    out
}

/// Phase 1: the server's RSS per open document (one connection and a few KB of text each).
async fn memory(ctx: &Ctx, text: &str) -> anyhow::Result<Value> {
    let args = &ctx.args;
    let n = args.memory_docs;
    let updates = Arc::new(memory_updates(text));
    // Where each document's connection goes, and the signaling connections that must stay.
    let mut urls = Vec::with_capacity(n);
    let mut signaling = Vec::new();
    if let Some(admin) = &ctx.admin {
        let prepared = crate::prepare(admin, n, 200).await?;
        let sig_url = crate::ws_url(&args.server)?;
        let joined: Vec<anyhow::Result<Ws>> = stream::iter(prepared.iter())
            .map(|room| {
                let (url, token) = (sig_url.clone(), room.seats[0].token.clone());
                async move { Ok(crate::conn::connect_and_join(&url, &token).await?.ws) }
            })
            .buffer_unordered(25)
            .collect()
            .await;
        for ws in joined {
            signaling.push(drain(ws.context("a mediator's join")?));
        }
        for room in &prepared {
            urls.push(ctx.doc_url(&room.case, &room.seats[0].token));
        }
    } else {
        for i in 0..n {
            urls.push(format!("{}/{}-mem-{i}/agreement", ctx.base, ctx.run));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss(args.server_pid);
    let t0 = Instant::now();
    let opened: Vec<anyhow::Result<(Ws, String)>> = stream::iter(urls)
        .map(|url| {
            let updates = Arc::clone(&updates);
            async move {
                let mut ws = yc::connect(&url).await?;
                let doc = docs_trace::new_doc(MEMORY_CLIENT + 1);
                yc::sync(&mut ws, &doc).await?;
                for u in updates.iter() {
                    ws.feed(WsMessage::Binary(u.clone())).await?;
                }
                ws.flush().await?;
                // The server answers sync step 1 only after it applied (Yuntiao: stored) what
                // came before it on this connection.
                yc::sync(&mut ws, &doc).await?;
                Ok((ws, yc::text(&doc)))
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let open_s = t0.elapsed().as_secs_f64();
    let mut conns = Vec::with_capacity(n);
    let mut text_ok = true;
    for r in opened {
        let (ws, t) = r.context("opening a memory-phase document")?;
        text_ok &= t == text;
        conns.push(drain(ws));
    }
    if !text_ok {
        bail!("a memory-phase document does not hold the text its connection typed");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss(args.server_pid);
    let per_doc = match (before, after) {
        (Some(b), Some(a)) => Some((a as f64 - b as f64) / n as f64),
        _ => None,
    };
    for h in conns.iter().chain(signaling.iter()) {
        h.abort();
    }
    Ok(json!({
        "docs": n,
        "doc_text_utf8_bytes": text.len(),
        "doc_updates": updates.len(),
        "open_s": open_s,
        "server_rss_kib": {"before": before, "after": after},
        "per_doc_kib": per_doc,
    }))
}

fn prefix_by_bytes(s: &str, max: usize) -> &str {
    let mut end = 0;
    for (i, c) in s.char_indices() {
        if i + c.len_utf8() > max {
            break;
        }
        end = i + c.len_utf8();
    }
    &s[..end]
}

fn f(v: &Value, path: &[&str]) -> Option<f64> {
    let mut v = v;
    for p in path {
        v = v.get(*p)?;
    }
    v.as_f64()
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "–".to_owned(), |x| format!("{x:.digits$}"))
}

/// Entry point of `yuntiao-loadgen docs-trace ...` (`argv` starts with "docs-trace").
pub async fn main(argv: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let args = DocsArgs::parse_from(argv);
    nanos();
    if let Some(path) = &args.summarize {
        return summarize(path);
    }
    if args.edits == 0 || args.window == 0 {
        bail!("--edits and --window must be at least 1");
    }
    let admin = match args.target {
        Target::Yuntiao => {
            let Some(token) = args.admin_token.as_deref() else {
                bail!("--admin-token (or YUNTIAO_ADMIN_TOKEN) is required for --target yuntiao");
            };
            Some(Admin::new(&args.server, token)?)
        }
        Target::Stock => None,
    };
    procstat::raise_nofile_limit();
    let label = args.label.clone();

    let t = Instant::now();
    let trace: Trace = docs_trace::generate(args.seed, args.edits, args.target_bytes);
    let t_gen = t.elapsed();
    let t = Instant::now();
    let msgs = docs_trace::encode_cached(&trace, EDITOR_CLIENT, args.trace_cache.as_deref())?;
    let t_enc = t.elapsed();
    let msg_bytes: usize = msgs.iter().map(|m| m.len()).sum();
    let st = &trace.stats;
    eprintln!(
        "[{label}] trace: {} edits ({} inserts, {} deletes; {} typing runs, {} backspace runs, {} jumps) -> {} chars, {} UTF-8 bytes, {} newlines, {} non-ASCII; {:.1} bytes per update message; generated in {:.2}s, encoded in {:.2}s",
        st.edits, st.inserts, st.deletes, st.typing_runs, st.backspace_runs, st.jumps,
        st.final_chars, st.final_utf8_bytes, st.final_newlines, st.final_non_ascii_chars,
        msg_bytes as f64 / msgs.len() as f64, t_gen.as_secs_f64(), t_enc.as_secs_f64()
    );
    let ctx = Ctx {
        base: ws_base(&args.server)?,
        admin,
        run: format!("bench-{}", nonce()),
        args,
    };
    let args = &ctx.args;

    let memory = if args.memory_docs > 0 {
        eprintln!("[{label}] memory: opening {} documents", args.memory_docs);
        let text = prefix_by_bytes(&trace.final_text, args.memory_doc_bytes);
        let m = memory(&ctx, text).await?;
        eprintln!("[{label}] memory: {m}");
        Some(m)
    } else {
        None
    };

    eprintln!(
        "[{label}] replay: {} updates, window {}",
        msgs.len(),
        args.window
    );
    let room = ctx.room("trace").await?;
    let msgs = Arc::new(msgs);
    let (replay_v, receivers) =
        replay(&ctx, &room, Arc::clone(&msgs), &trace.final_text, None).await?;
    eprintln!("[{label}] replay done");
    let late = late_joins(&ctx, &room, &trace.final_text).await?;
    for ws in receivers {
        yc::close(ws).await;
    }
    drop(room);

    let paced = if args.paced_rate > 0.0 {
        let k = args.paced_edits.min(trace.edits.len());
        // Each edit is its own transaction: the first k messages are the first k edits'.
        let pmsgs = msgs[..k].to_vec();
        let ptext = docs_trace::replay_text(&trace.edits[..k]);
        eprintln!("[{label}] paced: {k} updates at {}/s", args.paced_rate);
        let room = ctx.room("paced").await?;
        let (v, receivers) =
            replay(&ctx, &room, Arc::new(pmsgs), &ptext, Some(args.paced_rate)).await?;
        for ws in receivers {
            yc::close(ws).await;
        }
        Some(v)
    } else {
        None
    };
    let rss_end = rss(args.server_pid);

    let report = json!({
        "mode": "docs",
        "label": label,
        "target": format!("{:?}", args.target).to_lowercase(),
        "trace": trace.stats,
        "trace_message_bytes": msg_bytes,
        "memory": memory,
        "replay": replay_v,
        "late_join": late,
        "paced": paced,
        "server_rss_kib_end": rss_end,
        "cores": procstat::machine_cpus(),
    });
    print_report(&report);
    if let Some(path) = &args.summary {
        crate::summary::append_row(path, &report)?;
    }
    Ok(())
}

fn print_report(r: &Value) {
    let rp = &r["replay"];
    println!(
        "== docs-trace [{}] target={}",
        r["label"].as_str().unwrap_or(""),
        r["target"].as_str().unwrap_or("")
    );
    println!(
        "replay           {} updates in {} s: {} updates/s end to end (window {}); texts equal: {}",
        rp["updates"],
        fmt(f(rp, &["elapsed_s"]), 2),
        fmt(f(rp, &["updates_per_s"]), 0),
        rp["window"],
        rp["texts_equal"]
    );
    println!(
        "fan-out          p50 {} ms  p99 {} ms  max {} ms (n={})",
        fmt(f(rp, &["fanout_ms", "p50"]), 2),
        fmt(f(rp, &["fanout_ms", "p99"]), 2),
        fmt(f(rp, &["fanout_ms", "max"]), 2),
        rp["fanout_ms"]["count"]
    );
    println!(
        "CPU (replay)     server {} s, redis {} s, loadgen {} s, other processes {} s",
        fmt(f(rp, &["cpu", "server_cpu_s"]), 2),
        fmt(f(rp, &["cpu", "redis_cpu_s"]), 2),
        fmt(f(rp, &["cpu", "loadgen_cpu_s"]), 2),
        fmt(f(rp, &["cpu", "other_cpu_s"]), 2)
    );
    let lj = &r["late_join"];
    println!(
        "late joiner      {} UTF-8 bytes: median {} ms, first {} ms, max {} ms (connect median {} ms; sync step 2 of {} bytes received at median {} ms)",
        lj["text_utf8_bytes"],
        fmt(f(lj, &["total_ms", "median"]), 2),
        fmt(f(lj, &["total_ms", "first"]), 2),
        fmt(f(lj, &["total_ms", "max"]), 2),
        fmt(f(lj, &["connect_ms", "median"]), 2),
        lj["step2_frame_bytes"],
        fmt(f(lj, &["step2_received_ms", "median"]), 2)
    );
    println!(
        "compaction pause whole-state encode of the final document: median {} ms, max {} ms (of 20; an update can wait this long behind a snapshot)",
        fmt(f(lj, &["state_encode_ms", "median"]), 2),
        fmt(f(lj, &["state_encode_ms", "max"]), 2)
    );
    let m = &r["memory"];
    if !m.is_null() {
        println!(
            "memory           {} documents: RSS {} -> {} KiB, {} KiB per open document",
            m["docs"],
            m["server_rss_kib"]["before"],
            m["server_rss_kib"]["after"],
            fmt(f(m, &["per_doc_kib"]), 1)
        );
    }
    let p = &r["paced"];
    if !p.is_null() {
        println!(
            "paced            {} updates at {}/s: fan-out p50 {} ms  p99 {} ms  max {} ms",
            p["updates"],
            p["rate"],
            fmt(f(p, &["fanout_ms", "p50"]), 2),
            fmt(f(p, &["fanout_ms", "p99"]), 2),
            fmt(f(p, &["fanout_ms", "max"]), 2)
        );
    }
}

/// `docs-trace --summarize FILE`: the runs of one benchmark side by side, with ratios against
/// the stock server's run.
fn summarize(path: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let runs: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["mode"] == "docs")
        .collect();
    if runs.is_empty() {
        bail!("no docs-trace results in {}", path.display());
    }
    // Ratios are taken against the stock server's run with the same window.
    let stock_for = |r: &Value| {
        runs.iter()
            .find(|s| s["target"] == "stock" && s["replay"]["window"] == r["replay"]["window"])
    };
    let ratio = |v: Option<f64>, s: Option<f64>| match (v, s) {
        (Some(v), Some(s)) if s > 0.0 => format!("{:.2}", v / s),
        _ => "–".to_owned(),
    };
    let tp = |r: &Value| f(r, &["replay", "updates_per_s"]);
    let p99 = |r: &Value| f(r, &["replay", "fanout_ms", "p99"]);
    println!("| server | window | updates/s end to end | × stock | fan-out p50 / p99 / max (ms) | p99 ÷ stock | late joiner median / max (ms) | memory per open doc (KiB) | server CPU s (µs per update) | redis CPU s | loadgen CPU s | other CPU s | server RSS after replay (MiB) | texts equal |");
    println!("|---|---:|---:|---:|---|---:|---|---:|---|---:|---:|---:|---:|---|");
    for r in &runs {
        let rp = &r["replay"];
        let n = f(rp, &["updates"]);
        let cpu = f(rp, &["cpu", "server_cpu_s"]);
        let stock = stock_for(r);
        println!(
            "| {} | {} | {} | {} | {} / {} / {} | {} | {} / {} | {} | {} ({}) | {} | {} | {} | {} | {} |",
            r["label"].as_str().unwrap_or(""),
            rp["window"],
            fmt(tp(r), 0),
            stock.map_or("–".to_owned(), |s| ratio(tp(r), tp(s))),
            fmt(f(rp, &["fanout_ms", "p50"]), 2),
            fmt(p99(r), 2),
            fmt(f(rp, &["fanout_ms", "max"]), 2),
            stock.map_or("–".to_owned(), |s| ratio(p99(r), p99(s))),
            fmt(f(r, &["late_join", "total_ms", "median"]), 2),
            fmt(f(r, &["late_join", "total_ms", "max"]), 2),
            fmt(f(r, &["memory", "per_doc_kib"]), 1),
            fmt(cpu, 2),
            fmt(cpu.zip(n).map(|(c, n)| c * 1e6 / n), 1),
            fmt(f(rp, &["cpu", "redis_cpu_s"]), 2),
            fmt(f(rp, &["cpu", "loadgen_cpu_s"]), 2),
            fmt(f(rp, &["cpu", "other_cpu_s"]), 2),
            fmt(f(rp, &["server_rss_kib", "after"]).map(|k| k / 1024.0), 1),
            rp["texts_equal"]
        );
    }
    if runs.iter().any(|r| !r["paced"].is_null()) {
        println!();
        println!("| server | paced updates | rate (/s) | fan-out p50 / p99 / max (ms) | p99 ÷ stock | server CPU s | other CPU s |");
        println!("|---|---:|---:|---|---:|---:|---:|");
        for r in runs.iter().filter(|r| !r["paced"].is_null()) {
            let p = &r["paced"];
            let sp = runs
                .iter()
                .find(|s| s["target"] == "stock" && !s["paced"].is_null())
                .and_then(|s| f(s, &["paced", "fanout_ms", "p99"]));
            println!(
                "| {} | {} | {} | {} / {} / {} | {} | {} | {} |",
                r["label"].as_str().unwrap_or(""),
                p["updates"],
                p["rate"],
                fmt(f(p, &["fanout_ms", "p50"]), 2),
                fmt(f(p, &["fanout_ms", "p99"]), 2),
                fmt(f(p, &["fanout_ms", "max"]), 2),
                ratio(f(p, &["fanout_ms", "p99"]), sp),
                fmt(f(p, &["cpu", "server_cpu_s"]), 2),
                fmt(f(p, &["cpu", "other_cpu_s"]), 2),
            );
        }
    }
    let t = &runs[0]["trace"];
    println!();
    println!(
        "Trace: seed {}, {} edits ({} inserts, {} deletes, {} cursor jumps) -> {} characters, {} UTF-8 bytes ({} non-ASCII, {} newlines).",
        t["seed"], t["edits"], t["inserts"], t["deletes"], t["jumps"], t["final_chars"],
        t["final_utf8_bytes"], t["final_non_ascii_chars"], t["final_newlines"]
    );
    Ok(())
}
