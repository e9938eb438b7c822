//! `yuntiao-loadgen`: a load generator for the Yuntiao signaling server.
//!
//! It drives N rooms of four participants (consumer, merchant, mediator, judge) against a
//! running `yuntiao serve`, over the real admin API and real websockets, and reports latency
//! percentiles, throughput, and the server's CPU and memory. docs/benchmarks.md keeps the
//! figures and the command that produced them (`loadgen/run-bench.sh`).
//!
//! Components:
//!
//! * [`admin`]: the admin API calls of the setup (create a case, mint its four invites);
//! * [`conn`]: one participant's websocket: join, admission, and the measured phase;
//! * [`procstat`]: the server's CPU time and RSS, read from `/proc`;
//! * [`fsync_probe`]: `--fsync-probe`, the disk's durable-append latency, the floor under fan-out;
//! * [`summary`]: `--summarize`, the Markdown tables of a whole benchmark run;
//! * [`media`] and [`media_peer`]: `--media`, the media benchmark (issue 3): the same rooms, each
//!   participant a `webrtc`-crate peer connection publishing audio (and video) through the SFU;
//! * [`docs_bench`], [`docs_trace`] and [`ydoc_client`]: `yuntiao-loadgen docs-trace ...`, the
//!   shared-document benchmark (issue 4): an editing trace replayed over y-websocket, against
//!   Yuntiao or the stock `@y/websocket-server` (`loadgen/run-docs-bench.sh`).
//!
//! A run has three steps. *Setup*: create the cases and invites, then open and join the 4N
//! websockets, at most `--concurrency` operations at a time, and let the mediators admit the
//! parties. *Measured phase* (`--duration`): in the default mode every room's mediator sends chat
//! messages at `--rate` per second (each room with a random phase offset), and the three other
//! participants time their arrival, while each judge also sends a `ping` at the same rate and
//! times the `pong` (answered by the server without the room or the store: the floor under the
//! fan-out at that load); in `--notes-throughput` mode every mediator keeps `--window`
//! staff notes outstanding and counts acknowledgements. *Grace* (`--grace`): everyone keeps
//! reading so that late deliveries are counted, then every socket is closed.
//!
//! The load generator runs on the same machine as the server (and Redis): its own CPU time is
//! reported so the reader can see how much of the machine it took.

// The media report is one large `json!` literal.
#![recursion_limit = "256"]

mod admin;
mod conn;
mod cpu_probe;
mod docs_bench;
mod docs_trace;
mod fsync_probe;
mod media;
mod media_peer;
mod procstat;
mod summary;
mod ydoc_client;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::{stream, StreamExt};
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::json;

use crate::admin::{Admin, PreparedRoom, ROLES};
use crate::conn::{Behaviour, Phase, Stats, Ws};

#[derive(Parser, Debug)]
#[command(
    name = "yuntiao-loadgen",
    about = "Load generator for the Yuntiao server (signaling, and media with --media)"
)]
struct Args {
    /// Base URL of the running server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Admin bearer token of the server.
    #[arg(long, env = "YUNTIAO_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Number of rooms (cases), each with four participants and four websockets.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Length of the measured phase.
    #[arg(long, default_value = "20s")]
    duration: humantime::Duration,
    /// Chat messages per second sent by each room's mediator (chat mode).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Measure acknowledged staff notes per second instead of chat fan-out.
    #[arg(long)]
    notes_throughput: bool,
    /// Notes outstanding per mediator connection (notes mode).
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Padding added to each note's text, in bytes (notes mode).
    #[arg(long, default_value_t = 160)]
    note_padding: usize,
    /// PID of the server, to report its CPU time and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// PID of redis-server, to report its CPU time too.
    #[arg(long)]
    redis_pid: Option<u32>,
    /// Setup operations (HTTP requests, websocket joins) in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// How long to keep reading after the phase, for late deliveries.
    #[arg(long, default_value = "3s")]
    grace: humantime::Duration,
    /// Idle time between the end of the setup and the measured phase.
    #[arg(long, default_value = "3s")]
    settle: humantime::Duration,
    /// Label of this run in the summary (e.g. "embedded").
    #[arg(long, default_value = "run")]
    label: String,
    /// Append a one-line summary (tab-separated) to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Write the full results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print fan-out latency per second of the phase (count, p50, p99, max), to see stalls.
    #[arg(long)]
    timeline: bool,
    /// Do not run rooms: measure append + fdatasync latency of the disk holding this directory
    /// for `--duration` (a reference for the stores' durable appends).
    #[arg(long)]
    fsync_probe: Option<PathBuf>,
    /// Do not run rooms: spin one thread per core for `--duration` and report the gaps in which
    /// a core was taken away (hypervisor steal; run it with nothing else busy).
    #[arg(long)]
    cpu_probe: bool,
    /// Record size for `--fsync-probe`, in bytes.
    #[arg(long, default_value_t = 460)]
    probe_bytes: usize,
    /// Do not run: print Markdown tables of the JSON lines in this file (see `--summary`).
    #[arg(long)]
    summarize: Option<PathBuf>,
    /// Media benchmark: every participant holds a WebRTC peer connection to the server's SFU,
    /// publishes Opus audio (20 ms packets) and receives the three others (see `--video`).
    #[arg(long)]
    media: bool,
    /// Media mode: publish VP8 video too (`--video-kbps` at 30 fps).
    #[arg(long)]
    video: bool,
    /// Media mode: audio payload size in bytes.
    #[arg(long, default_value_t = 80)]
    audio_bytes: usize,
    /// Media mode: video bitrate in kbit/s (RTP payload).
    #[arg(long, default_value_t = 500)]
    video_kbps: u64,
    /// Media mode: a keyframe every this many video frames (30 per second), and the first.
    #[arg(long, default_value_t = 90)]
    keyframe_every: u32,
    /// Media mode: rooms whose peer connections are set up at once.
    #[arg(long, default_value_t = 4)]
    media_setup_rooms: usize,
    /// Media mode: start a room's four peer connections at once instead of one after the other
    /// (servers before `bad6782` lost tracks then; see the media module's docs).
    #[arg(long)]
    media_parallel_offers: bool,
    /// Media mode: how long a peer connection may take to connect (ICE + DTLS).
    #[arg(long, default_value = "30s")]
    connect_timeout: humantime::Duration,
    /// Media mode: how long to wait until every participant hears every other's tracks.
    #[arg(long, default_value = "30s")]
    warmup: humantime::Duration,
}

/// A room whose four participants have joined and whose parties are admitted. `conns` is in
/// the order of [`ROLES`]: mediator, judge, consumer, merchant.
struct ReadyRoom {
    conns: Vec<Ws>,
}

/// (websocket connect, join → welcome) of one connection.
type JoinTimes = (Duration, Duration);

struct SetupTimes {
    connect: Histogram<u64>,
    join: Histogram<u64>,
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return f64::NAN;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

fn max_ms(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        return f64::NAN;
    }
    h.max() as f64 / 1000.0
}

fn ws_url(server: &str) -> anyhow::Result<String> {
    let base = server.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}/ws"))
    } else if let Some(rest) = base.strip_prefix("https://") {
        Ok(format!("wss://{rest}/ws"))
    } else {
        bail!("--server must start with http:// or https://")
    }
}

/// Step 1 of the setup: cases and invites over the admin API.
async fn prepare(
    admin: &Admin,
    rooms: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<PreparedRoom>> {
    // Each room makes one request and then four at once: `concurrency / 4` rooms at a time keep
    // at most `concurrency` requests in flight.
    let per = (concurrency / 4).max(1);
    let results: Vec<anyhow::Result<PreparedRoom>> = stream::iter(0..rooms)
        .map(|n| {
            let admin = admin.clone();
            async move {
                tokio::spawn(async move {
                    let case = admin.create_case(n).await?;
                    let seats = futures_util::future::try_join_all(
                        ROLES.iter().map(|r| admin.invite(&case, r, n)),
                    )
                    .await?;
                    Ok(PreparedRoom { case, seats })
                })
                .await
                .context("setup task panicked")?
            }
        })
        .buffer_unordered(per)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Step 2 of the setup: four websockets per room join; the mediator admits the parties.
async fn join_all(
    url: &str,
    prepared: Vec<PreparedRoom>,
    concurrency: usize,
) -> anyhow::Result<(Vec<ReadyRoom>, SetupTimes)> {
    let per = (concurrency / 4).max(1);
    let results: Vec<anyhow::Result<(ReadyRoom, Vec<JoinTimes>)>> = stream::iter(prepared)
        .map(|room| {
            let url = url.to_owned();
            async move {
                tokio::spawn(async move {
                    let joined = futures_util::future::try_join_all(
                        room.seats
                            .iter()
                            .map(|s| conn::connect_and_join(&url, &s.token)),
                    )
                    .await
                    .with_context(|| format!("joining case {}", room.case))?;
                    let times: Vec<JoinTimes> =
                        joined.iter().map(|j| (j.connect, j.join)).collect();
                    let mut conns: Vec<Ws> = joined.into_iter().map(|j| j.ws).collect();
                    let parties = [
                        room.seats[2].participant.as_str(),
                        room.seats[3].participant.as_str(),
                    ];
                    let (staff, party_conns) = conns.split_at_mut(2);
                    conn::admit(&mut staff[0], &parties)
                        .await
                        .with_context(|| format!("admitting in case {}", room.case))?;
                    for c in party_conns.iter_mut() {
                        conn::wait_admitted(c)
                            .await
                            .with_context(|| format!("admission in case {}", room.case))?;
                    }
                    Ok((ReadyRoom { conns }, times))
                })
                .await
                .context("join task panicked")?
            }
        })
        .buffer_unordered(per)
        .collect()
        .await;
    let mut times = SetupTimes {
        connect: conn::histogram(),
        join: conn::histogram(),
    };
    let mut ready = Vec::with_capacity(results.len());
    let mut first_err = None;
    let mut failed = 0;
    for r in results {
        match r {
            Ok((room, t)) => {
                for (c, j) in t {
                    times
                        .connect
                        .saturating_record((c.as_micros() as u64).max(1));
                    times.join.saturating_record((j.as_micros() as u64).max(1));
                }
                ready.push(room);
            }
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e.context(format!("{failed} room(s) failed to set up")));
    }
    Ok((ready, times))
}

fn read_pid(pid: Option<u32>, f: fn(u32) -> anyhow::Result<f64>) -> Option<f64> {
    pid.and_then(|p| f(p).ok())
}

fn rss(pid: Option<u32>) -> Option<u64> {
    pid.and_then(|p| procstat::rss_kib(p).ok())
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `--fsync-probe`: prints the disk's durable-write latency, appending (half the duration) and
/// over zero-filled blocks (the other half), and appends both to `--summary`.
fn probe(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    use fsync_probe::How;
    for (how, what) in [(How::Append, "append"), (How::OverZeros, "over zeros")] {
        let p = fsync_probe::run(dir, *args.duration / 2, args.probe_bytes, how)?;
        let h = &p.latency;
        println!(
            "fsync probe      {what} {} B + fdatasync: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({:.0} per second, n={})",
            args.probe_bytes,
            ms(h, 0.5),
            ms(h, 0.99),
            max_ms(h),
            p.ops_per_s,
            h.len()
        );
        if let Some(path) = &args.summary {
            let label = match how {
                How::Append => args.label.clone(),
                How::OverZeros => format!("{}, written over zeros", args.label),
            };
            let row = json!({
                "mode": "fsync",
                "label": label,
                "how": what,
                "record_bytes": args.probe_bytes,
                "duration_s": args.duration.as_secs_f64() / 2.0,
                "fsync_ms": {"p50": ms(h, 0.5), "p99": ms(h, 0.99), "max": max_ms(h)},
                "ops_per_s": p.ops_per_s,
            });
            crate::summary::append_row(path, &row)?;
        }
    }
    Ok(())
}

/// `--cpu-probe`: prints and records the gaps each core had.
fn cpu_probe(args: &Args) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cores = cpu_probe::run(threads, *args.duration);
    let total: Duration = cores.iter().map(|c| c.spun).sum();
    let stalled: Duration = cores.iter().map(|c| c.stalled).sum();
    let longest = cores.iter().map(|c| c.longest).max().unwrap_or_default();
    let gaps: u64 = cores.iter().map(|c| c.gaps).sum();
    let share = stalled.as_secs_f64() / total.as_secs_f64().max(1e-9);
    println!(
        "cpu probe        {threads} spinning threads for {:.1} s: {gaps} gaps of >= {} us, {:.1} ms in all ({:.2} % of the time), longest {:.2} ms",
        args.duration.as_secs_f64(),
        cpu_probe::GAP.as_micros(),
        stalled.as_secs_f64() * 1e3,
        share * 100.0,
        longest.as_secs_f64() * 1e3
    );
    if let Some(path) = &args.summary {
        let row = json!({
            "mode": "cpu",
            "label": args.label,
            "threads": threads,
            "duration_s": args.duration.as_secs_f64(),
            "gap_us": cpu_probe::GAP.as_micros() as u64,
            "gaps": gaps,
            "stalled_ms": stalled.as_secs_f64() * 1e3,
            "stalled_share": share,
            "longest_ms": longest.as_secs_f64() * 1e3,
        });
        crate::summary::append_row(path, &row)?;
    }
    Ok(())
}

/// Fan-out latency by second of the phase in which the message was sent.
fn print_timeline(samples: &[(u64, u32)], phase: Phase, duration: Duration) {
    let start_ns = phase
        .start
        .into_std()
        .saturating_duration_since(conn::process_start())
        .as_nanos() as u64;
    let secs = duration.as_secs().max(1) as usize;
    let mut per: Vec<Histogram<u64>> = (0..=secs).map(|_| conn::histogram()).collect();
    for &(t, us) in samples {
        let i = (t.saturating_sub(start_ns) / 1_000_000_000) as usize;
        per[i.min(secs)].saturating_record(u64::from(us).max(1));
    }
    println!("fan-out by second of sending: second  count  p50 ms  p99 ms  max ms");
    for (i, h) in per.iter().enumerate() {
        if !h.is_empty() {
            println!(
                "  {i:>3}  {:>6}  {:>7.2}  {:>7.2}  {:>7.2}",
                h.len(),
                ms(h, 0.5),
                ms(h, 0.99),
                max_ms(h)
            );
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `docs-trace`: the shared-document benchmark (issue 4), with its own options.
    if std::env::args().nth(1).as_deref() == Some("docs-trace") {
        return docs_bench::main(std::env::args().skip(1)).await;
    }
    let args = Args::parse();
    conn::nanos(); // start the process-wide clock
    if let Some(path) = &args.summarize {
        return summary::print(path);
    }
    if let Some(dir) = &args.fsync_probe {
        return probe(&args, dir);
    }
    if args.cpu_probe {
        return cpu_probe(&args);
    }
    let Some(admin_token) = args.admin_token.as_deref() else {
        bail!("--admin-token (or YUNTIAO_ADMIN_TOKEN) is required");
    };
    if args.rooms == 0 {
        bail!("--rooms must be at least 1");
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    if args.window == 0 {
        bail!("--window must be at least 1");
    }
    let nofile = procstat::raise_nofile_limit();
    let needed = (args.rooms * 4 + 64) as u64;
    if nofile < needed {
        bail!("open-file limit {nofile} is below the {needed} sockets needed; raise `ulimit -n`");
    }
    let url = ws_url(&args.server)?;
    let admin = Admin::new(&args.server, admin_token)?;
    if args.media {
        return media::run(&args, &admin, &url).await;
    }
    let mode = if args.notes_throughput {
        "notes"
    } else {
        "chat"
    };
    let duration: Duration = *args.duration;
    let conns_total = args.rooms * 4;

    let rss_before = rss(args.server_pid);
    eprintln!(
        "[{}] setup: {} rooms, {} websockets, concurrency {}",
        args.label, args.rooms, conns_total, args.concurrency
    );
    let t_setup = Instant::now();
    let prepared = prepare(&admin, args.rooms, args.concurrency).await?;
    let t_prepared = t_setup.elapsed();
    let (rooms, times) = join_all(&url, prepared, args.concurrency).await?;
    let t_joined = t_setup.elapsed() - t_prepared;
    eprintln!(
        "[{}] setup done: cases+invites {:.1}s, joins+admissions {:.1}s",
        args.label,
        t_prepared.as_secs_f64(),
        t_joined.as_secs_f64()
    );

    // Every connection starts reading at once; the phase starts after `--settle`, so that the
    // server and the load generator have drained what the setup left queued. The server's RSS
    // "after setup" is read just before the phase, with every participant connected and idle.
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let t_start = tokio::time::Instant::now() + *args.settle;
    let phase = Phase {
        start: t_start,
        end: t_start + duration,
        stop: t_start + duration + *args.grace,
    };
    let mut handles = Vec::with_capacity(conns_total);
    {
        let mut rng = rand::rng();
        for room in rooms {
            for (i, ws) in room.conns.into_iter().enumerate() {
                let behaviour = match (i, args.notes_throughput) {
                    (0, false) => Behaviour::Chat {
                        period,
                        offset: period.mul_f64(rng.random::<f64>()),
                    },
                    (0, true) => Behaviour::Notes {
                        window: args.window,
                        pad: args.note_padding,
                    },
                    // The judge also pings at the chat rate: the floor under the fan-out.
                    (1, false) => Behaviour::ReceiveAndPing {
                        period,
                        offset: period.mul_f64(rng.random::<f64>()),
                    },
                    _ => Behaviour::Receive,
                };
                handles.push(tokio::spawn(conn::run(ws, behaviour, phase, args.timeline)));
            }
        }
    }
    tokio::time::sleep_until(phase.start - Duration::from_millis(100)).await;
    let rss_idle = rss(args.server_pid);
    tokio::time::sleep_until(phase.start).await;
    let self_pid = std::process::id();
    let cpu0 = read_pid(args.server_pid, procstat::cpu_seconds);
    let redis0 = read_pid(args.redis_pid, procstat::cpu_seconds);
    let me0 = procstat::cpu_seconds(self_pid).ok();
    let machine0 = procstat::machine_busy_seconds().ok();
    eprintln!(
        "[{}] measuring {mode} for {}",
        args.label,
        humantime::format_duration(duration)
    );
    tokio::time::sleep_until(phase.end).await;
    let cpu1 = read_pid(args.server_pid, procstat::cpu_seconds);
    let redis1 = read_pid(args.redis_pid, procstat::cpu_seconds);
    let me1 = procstat::cpu_seconds(self_pid).ok();
    let machine1 = procstat::machine_busy_seconds().ok();
    let rss_end = rss(args.server_pid);

    let mut total = Stats::new();
    let mut sockets = Vec::with_capacity(conns_total);
    for h in handles {
        let (st, ws) = h.await.context("connection task panicked")?;
        total.merge(&st);
        sockets.push(ws);
    }
    // Close every socket now that nobody is measuring any more.
    stream::iter(sockets)
        .for_each_concurrent(args.concurrency, |mut ws| async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        })
        .await;

    let secs = duration.as_secs_f64();
    let delta = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let server_cpu = delta(cpu0, cpu1);
    let redis_cpu = delta(redis0, redis1);
    let loadgen_cpu = delta(me0, me1);
    let machine_cpu = delta(machine0, machine1);
    // CPU time of everything else on the machine during the phase (other programs).
    // The readings are a few milliseconds apart and in 10 ms ticks: small negatives are noise.
    let other_cpu = machine_cpu.map(|m| {
        (m - server_cpu.unwrap_or(0.0) - redis_cpu.unwrap_or(0.0) - loadgen_cpu.unwrap_or(0.0))
            .max(0.0)
    });
    let cores = procstat::machine_cpus();
    let per_participant = match (rss_before, rss_idle) {
        (Some(b), Some(a)) => Some((a as f64 - b as f64) / conns_total as f64),
        _ => None,
    };
    let expected_deliveries = total.acked * 3;
    // The stored event is the frame without `"type":"event",` (15 bytes).
    let note_bytes = total
        .note_frame_bytes
        .checked_div(total.note_frames)
        .map(|b| b.saturating_sub(15));

    let report = json!({
        "label": args.label,
        "mode": mode,
        "rooms": args.rooms,
        "websockets": conns_total,
        "duration_s": secs,
        "rate_per_room": if args.notes_throughput { None } else { Some(args.rate) },
        "window": if args.notes_throughput { Some(args.window) } else { None },
        "setup_s": {"cases_invites": t_prepared.as_secs_f64(), "joins": t_joined.as_secs_f64()},
        "connect_ms": {"p50": ms(&times.connect, 0.5), "p99": ms(&times.connect, 0.99), "max": max_ms(&times.connect)},
        "join_ms": {"p50": ms(&times.join, 0.5), "p99": ms(&times.join, 0.99), "max": max_ms(&times.join)},
        "fanout_ms": {"p50": ms(&total.fanout, 0.5), "p99": ms(&total.fanout, 0.99), "p999": ms(&total.fanout, 0.999), "max": max_ms(&total.fanout), "count": total.fanout.len()},
        "ack_ms": {"p50": ms(&total.ack, 0.5), "p99": ms(&total.ack, 0.99), "max": max_ms(&total.ack)},
        "ping_ms": {"p50": ms(&total.ping, 0.5), "p99": ms(&total.ping, 0.99), "max": max_ms(&total.ping)},
        "sent": total.sent,
        "acked": total.acked,
        "acked_in_phase": total.acked_in_phase,
        "acked_per_s": total.acked_in_phase as f64 / secs,
        "delivered": total.delivered,
        "delivered_per_s": total.delivered as f64 / secs,
        "expected_deliveries": if args.notes_throughput { None } else { Some(expected_deliveries) },
        "unanswered": total.unanswered,
        "errors": total.errors,
        "dropped_connections": total.dropped,
        "note_event_bytes": note_bytes,
        "server_cpu_s": server_cpu,
        "server_cpu_pct_of_one_core": server_cpu.map(|c| 100.0 * c / secs),
        "redis_cpu_s": redis_cpu,
        "loadgen_cpu_s": loadgen_cpu,
        "machine_cpu_s": machine_cpu,
        "other_cpu_s": other_cpu,
        "cores": cores,
        "server_rss_kib": {"before_setup": rss_before, "after_setup": rss_idle, "end": rss_end},
        "server_rss_kib_per_participant": per_participant,
    });

    // Human-readable report.
    let f = |h: &Histogram<u64>| {
        format!(
            "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={})",
            ms(h, 0.5),
            ms(h, 0.99),
            max_ms(h),
            h.len()
        )
    };
    println!(
        "== yuntiao-loadgen [{}] mode={mode} rooms={} websockets={conns_total} duration={secs}s",
        args.label, args.rooms
    );
    println!(
        "setup            cases+invites {:.1} s, joins+admissions {:.1} s",
        t_prepared.as_secs_f64(),
        t_joined.as_secs_f64()
    );
    println!("ws connect       {}", f(&times.connect));
    println!("join -> welcome  {}", f(&times.join));
    if args.notes_throughput {
        println!("note -> ack      {}", f(&total.ack));
        println!("note fan-out     {}  (to the judge)", f(&total.fanout));
        println!(
            "acked notes/s    {:.0}  ({} acks in phase, window {} x {} mediators)",
            total.acked_in_phase as f64 / secs,
            total.acked_in_phase,
            args.window,
            args.rooms
        );
        println!(
            "note event size  {} bytes (stored JSON, average)",
            fmt_opt(note_bytes)
        );
    } else {
        println!("chat -> ack      {}", f(&total.ack));
        println!("chat fan-out     {}", f(&total.fanout));
        println!(
            "ping -> pong     {}  (judge, same rate: transport floor)",
            f(&total.ping)
        );
        println!(
            "delivered/s      {:.0}  ({} of {} expected = 3 x acked)",
            total.delivered as f64 / secs,
            total.delivered,
            expected_deliveries
        );
        println!(
            "acked/s          {:.1}  (sent {}, acked {})",
            total.acked_in_phase as f64 / secs,
            total.sent,
            total.acked
        );
    }
    println!(
        "errors           {}  unanswered {}  dropped connections {}",
        if total.errors.is_empty() {
            "none".to_owned()
        } else {
            format!("{:?}", total.errors)
        },
        total.unanswered,
        total.dropped
    );
    println!(
        "server CPU       {} s over the phase ({} % of one core); redis CPU {} s; loadgen CPU {} s",
        fmt_opt(server_cpu.map(|c| format!("{c:.2}"))),
        fmt_opt(server_cpu.map(|c| format!("{:.0}", 100.0 * c / secs))),
        fmt_opt(redis_cpu.map(|c| format!("{c:.2}"))),
        fmt_opt(loadgen_cpu.map(|c| format!("{c:.2}")))
    );
    println!(
        "machine CPU      {} s busy of {:.0} s available ({cores} cores); other processes {} s",
        fmt_opt(machine_cpu.map(|c| format!("{c:.2}"))),
        secs * cores as f64,
        fmt_opt(other_cpu.map(|c| format!("{c:.2}")))
    );
    println!(
        "server RSS       before setup {} KiB, after setup {} KiB, end {} KiB; per participant {} KiB",
        fmt_opt(rss_before),
        fmt_opt(rss_idle),
        fmt_opt(rss_end),
        fmt_opt(per_participant.map(|p| format!("{p:.1}")))
    );

    if args.timeline {
        print_timeline(&total.samples, phase, duration);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.summary {
        crate::summary::append_row(path, &report)?;
    }
    if total.dropped > 0 || !total.errors.is_empty() {
        eprintln!(
            "[{}] warning: errors or dropped connections during the phase",
            args.label
        );
    }
    Ok(())
}
