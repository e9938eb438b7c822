//! `--summarize FILE`: turns the JSON lines of one benchmark run into Markdown tables.
//!
//! `run-bench.sh` makes every loadgen run append its report (`--summary FILE`) and appends the
//! raw `redis-benchmark` XADD figures to the same file, so the ratios printed here are always
//! between figures measured in the same run, on the same machine. `run-media-bench.sh` does the
//! same with the `--media` runs (mode `media`), which get tables of their own.

use anyhow::Context;
use serde_json::Value;

const FANOUT_P99_TARGET_MS: f64 = 5.0;
const KIB_PER_PARTICIPANT_TARGET: f64 = 50.0;
const NOTES_RATIO_TARGET: f64 = 0.5;
/// Issue 3: forwarded packets per second per server core, and server memory per A/V participant.
const FORWARDED_PER_CORE_TARGET: f64 = 100_000.0;
const KIB_PER_AV_PARTICIPANT_TARGET: f64 = 2048.0;
/// RSS growth during a media phase, per participant and minute, above which the summary points
/// at a possible leak. The str0m byte-history leak (fixed in `2199f8a`) was about 250; after
/// the fix a 60-s phase grew by under 10 (docs/benchmarks.md, eleventh session). Short phases
/// are noisier (the allocator keeps freed pages), hence the margin.
const RSS_GROWTH_NOTE_KIB_PER_MINUTE: f64 = 64.0;

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Appends `row` as one JSON line to the summary file at `path` (created if missing), for
/// `--summarize`.
pub fn append_row(path: &std::path::Path, row: &Value) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{row}")?;
    Ok(())
}

fn f(v: &Value, digits: usize) -> String {
    num(v).map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
}

fn mib(v: &Value) -> String {
    num(v).map_or_else(|| "-".to_owned(), |x| format!("{:.1}", x / 1024.0))
}

fn errors(r: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = r["errors"].as_object() {
        for (k, v) in m {
            parts.push(format!("{k}:{v}"));
        }
    }
    let dropped = r["dropped_connections"].as_u64().unwrap_or(0);
    if dropped > 0 {
        parts.push(format!("dropped:{dropped}"));
    }
    let unanswered = r["unanswered"].as_u64().unwrap_or(0);
    if unanswered > 0 {
        parts.push(format!("unanswered:{unanswered}"));
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(" ")
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// Prints the tables and the target verdicts for the runs in `path`.
pub fn print(path: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let rows: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("a line of the results file is not JSON")?;
    let by_mode = |m: &'static str| rows.iter().filter(move |r| r["mode"] == m);
    if by_mode("media").next().is_some() {
        print_media(&rows);
    }
    if by_mode("chat").chain(by_mode("notes")).next().is_none() {
        print_cpu(&rows);
        return Ok(());
    }

    println!("### Chat fan-out (1 message/s per room from the mediator to 3 others)\n");
    println!("| store | rooms | websockets | join p50 / p99 / max (ms) | fan-out p50 / p99 / max (ms) | ping→pong p50 / p99 (ms) | delivered/s (received/expected) | acked/s | server CPU s (% of 1 core) | loadgen CPU s | other processes' CPU s | server RSS before / after setup / end (MiB) | RSS per participant (KiB) | errors |");
    println!("|---|---:|---:|---|---|---|---|---:|---|---:|---:|---|---:|---|");
    for r in by_mode("chat") {
        println!(
            "| {} | {} | {} | {} / {} / {} | {} / {} / {} | {} / {} | {} ({}/{}) | {} | {} ({}) | {} | {} | {} / {} / {} | {} | {} |",
            r["label"].as_str().unwrap_or("?"),
            r["rooms"],
            r["websockets"],
            f(&r["join_ms"]["p50"], 2),
            f(&r["join_ms"]["p99"], 2),
            f(&r["join_ms"]["max"], 2),
            f(&r["fanout_ms"]["p50"], 2),
            f(&r["fanout_ms"]["p99"], 2),
            f(&r["fanout_ms"]["max"], 2),
            f(&r["ping_ms"]["p50"], 2),
            f(&r["ping_ms"]["p99"], 2),
            f(&r["delivered_per_s"], 0),
            r["delivered"],
            r["expected_deliveries"],
            f(&r["acked_per_s"], 1),
            f(&r["server_cpu_s"], 2),
            f(&r["server_cpu_pct_of_one_core"], 0),
            f(&r["loadgen_cpu_s"], 2),
            f(&r["other_cpu_s"], 2),
            mib(&r["server_rss_kib"]["before_setup"]),
            mib(&r["server_rss_kib"]["after_setup"]),
            mib(&r["server_rss_kib"]["end"]),
            f(&r["server_rss_kib_per_participant"], 1),
            errors(r),
        );
    }

    println!("\n### Acknowledged notes (staff scope), window per mediator connection\n");
    println!("| store | rooms x window | acked notes/s | note → ack p50 / p99 / max (ms) | fan-out to judge p50 / p99 (ms) | server CPU s (% of 1 core) | redis CPU s | loadgen CPU s | other processes' CPU s | stored event bytes | errors |");
    println!("|---|---|---:|---|---|---|---:|---:|---:|---:|---|");
    for r in by_mode("notes") {
        println!(
            "| {} | {} x {} | {} | {} / {} / {} | {} / {} | {} ({}) | {} | {} | {} | {} | {} |",
            r["label"].as_str().unwrap_or("?"),
            r["rooms"],
            r["window"],
            f(&r["acked_per_s"], 0),
            f(&r["ack_ms"]["p50"], 2),
            f(&r["ack_ms"]["p99"], 2),
            f(&r["ack_ms"]["max"], 2),
            f(&r["fanout_ms"]["p50"], 2),
            f(&r["fanout_ms"]["p99"], 2),
            f(&r["server_cpu_s"], 2),
            f(&r["server_cpu_pct_of_one_core"], 0),
            f(&r["redis_cpu_s"], 2),
            f(&r["loadgen_cpu_s"], 2),
            f(&r["other_cpu_s"], 2),
            r["note_event_bytes"],
            errors(r),
        );
    }

    let xadds: Vec<&Value> = by_mode("xadd").collect();
    if !xadds.is_empty() {
        println!("\n### Raw Redis reference (redis-benchmark XADD, same run)\n");
        println!("| redis config | XADD/s | payload bytes | clients | pipeline | elapsed s | machine CPU s busy |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for r in &xadds {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                r["label"].as_str().unwrap_or("?"),
                f(&r["xadd_per_s"], 0),
                r["payload_bytes"],
                r["clients"],
                r["pipeline"],
                f(&r["elapsed_s"], 1),
                f(&r["machine_cpu_s"], 1),
            );
        }
    }

    let probes: Vec<&Value> = by_mode("fsync").collect();
    if !probes.is_empty() {
        println!(
            "\n### Disk reference (write + fdatasync, one at a time, same run; appended, and over zeros as the embedded store writes)\n"
        );
        println!("| where | record bytes | fdatasync p50 / p99 / max (ms) | per second |");
        println!("|---|---:|---|---:|");
        for r in &probes {
            println!(
                "| {} | {} | {} / {} / {} | {} |",
                r["label"].as_str().unwrap_or("?"),
                r["record_bytes"],
                f(&r["fsync_ms"]["p50"], 2),
                f(&r["fsync_ms"]["p99"], 2),
                f(&r["fsync_ms"]["max"], 2),
                f(&r["ops_per_s"], 0),
            );
        }
    }

    print_cpu(&rows);

    println!("\n### Targets\n");
    for r in by_mode("chat").chain(by_mode("notes")) {
        let avail = num(&r["duration_s"]).unwrap_or(0.0) * num(&r["cores"]).unwrap_or(1.0);
        if let Some(other) = num(&r["other_cpu_s"]).filter(|o| avail > 0.0 && *o > 0.1 * avail) {
            println!(
                "- note: during the {} {} run with {} rooms, other processes used {:.0} % of the machine: its figures are disturbed",
                r["label"].as_str().unwrap_or("?"),
                r["mode"].as_str().unwrap_or("?"),
                r["rooms"],
                100.0 * other / avail
            );
        }
    }
    for r in by_mode("chat") {
        if r["rooms"].as_u64() == Some(1000) {
            if let Some(p99) = num(&r["fanout_ms"]["p99"]) {
                println!(
                    "- fan-out p99 < {FANOUT_P99_TARGET_MS} ms at 1,000 rooms ({}): {p99:.2} ms — {}",
                    r["label"].as_str().unwrap_or("?"),
                    met(p99 < FANOUT_P99_TARGET_MS)
                );
            }
            if let Some(k) = num(&r["server_rss_kib_per_participant"]) {
                println!(
                    "- < {KIB_PER_PARTICIPANT_TARGET} KiB server memory per idle participant at 1,000 rooms ({}): {k:.1} KiB — {}",
                    r["label"].as_str().unwrap_or("?"),
                    met(k < KIB_PER_PARTICIPANT_TARGET)
                );
            }
        }
    }
    for n in by_mode("notes") {
        let Some(notes) = num(&n["acked_per_s"]) else {
            continue;
        };
        for x in &xadds {
            let Some(raw) = num(&x["xadd_per_s"]).filter(|r| *r > 0.0) else {
                continue;
            };
            let ratio = notes / raw;
            let label = n["label"].as_str().unwrap_or("?");
            let xl = x["label"].as_str().unwrap_or("?");
            // The target compares the Redis-backed server with Redis configured the same way.
            let target = label == "redis" && xl == "appendfsync always";
            println!(
                "- acked notes/s ({label}) ÷ raw XADD/s ({xl}) = {notes:.0} ÷ {raw:.0} = {ratio:.2}{}",
                if target {
                    format!(" — target ≥ {NOTES_RATIO_TARGET}: {}", met(ratio >= NOTES_RATIO_TARGET))
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}

fn pct(v: &Value, digits: usize) -> String {
    num(v).map_or_else(|| "-".to_owned(), |x| format!("{:.digits$}", 100.0 * x))
}

/// The CPU probe's rows (`--cpu-probe`): how much of the cores the machine really had.
fn print_cpu(rows: &[Value]) {
    let cpus: Vec<&Value> = rows.iter().filter(|r| r["mode"] == "cpu").collect();
    if cpus.is_empty() {
        return;
    }
    println!(
        "\n### CPU availability (one spinning thread per core, nothing else running; a gap is time a core was taken away)\n"
    );
    println!(
        "| when | threads × s | gaps ≥ 0.5 ms | stalled ms (% of the time) | longest gap ms |"
    );
    println!("|---|---:|---:|---|---:|");
    for r in &cpus {
        println!(
            "| {} | {} × {} | {} | {} ({}) | {} |",
            r["label"].as_str().unwrap_or("?"),
            r["threads"],
            f(&r["duration_s"], 0),
            r["gaps"],
            f(&r["stalled_ms"], 1),
            pct(&r["stalled_share"], 2),
            f(&r["longest_ms"], 2),
        );
    }
}

/// The media benchmark's tables (issue 3) and its target verdicts.
fn print_media(rows: &[Value]) {
    let media: Vec<&Value> = rows.iter().filter(|r| r["mode"] == "media").collect();
    println!("### Media forwarding (rooms of 4, everyone receives the 3 others)\n");
    println!("| media | rooms | participants | consumers | forwarded/s (server) | received/s (receivers) | loss % | latency p50 / p99 / max (ms) | server CPU s (% of 1 core) | server CPU s per 10⁶ forwarded | forwarded per server CPU s | consumers per core | server RSS per participant (KiB) | loadgen CPU s | other CPU s | sent % of nominal | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in &media {
        let mut errs = Vec::new();
        for k in [
            "send_errors",
            "signaling_errors",
            "duplicates",
            "unparsable",
        ] {
            if r[k].as_u64().unwrap_or(0) > 0 {
                errs.push(format!("{k}:{}", r[k]));
            }
        }
        let d = r["server"]["dropped"].as_u64().unwrap_or(0);
        if d > 0 {
            errs.push(format!("server_dropped:{d}"));
        }
        let rf = r["rooms_failed"].as_u64().unwrap_or(0);
        if rf > 0 {
            errs.push(format!("rooms_failed_setup:{rf}"));
        }
        let c = r["connected"].as_u64().unwrap_or(0);
        let n = r["participants"].as_u64().unwrap_or(0);
        if c < n {
            errs.push(format!("not_connected:{}", n - c));
        }
        let (heard, want) = (&r["flows"]["heard"], &r["flows"]["expected"]);
        if heard != want {
            errs.push(format!("flows:{heard}/{want}"));
        }
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} |",
            r["media"].as_str().unwrap_or("?"),
            r["rooms"],
            r["participants"],
            r["consumers"],
            f(&r["server"]["forwarded_per_s"], 0),
            f(&r["received_per_s"], 0),
            pct(&r["loss"], 3),
            f(&r["latency_ms"]["p50"], 2),
            f(&r["latency_ms"]["p99"], 2),
            f(&r["latency_ms"]["max"], 2),
            f(&r["server_cpu_s"], 2),
            f(&r["server_cpu_pct_of_one_core"], 0),
            f(&r["server_cpu_s_per_million_forwarded"], 2),
            f(&r["forwarded_per_server_cpu_s"], 0),
            f(&r["consumers_per_core"], 0),
            f(&r["server_rss_kib_per_participant"], 0),
            f(&r["loadgen_cpu_s"], 2),
            f(&r["other_cpu_s"], 2),
            pct(&r["send_ratio_to_nominal"], 1),
            if errs.is_empty() { "none".to_owned() } else { errs.join(" ") },
        );
    }
    println!("\n| media | rooms | audio latency p50 / p99 / max (ms) | video latency p50 / p99 / max (ms) | audio loss % | video loss % | UDP receive-buffer drops (machine) | server RSS before / publishing / end (MiB) | RSS growth in the phase (KiB per participant per minute) | setup: peer connections / all flows (s) | late sender ticks |");
    println!("|---|---:|---|---|---:|---:|---:|---|---:|---|---:|");
    for r in &media {
        println!(
            "| {} | {} | {} / {} / {} | {} / {} / {} | {} | {} | {} | {} / {} / {} | {} | {} / {} | {} |",
            r["media"].as_str().unwrap_or("?"),
            r["rooms"],
            f(&r["latency_audio_ms"]["p50"], 2),
            f(&r["latency_audio_ms"]["p99"], 2),
            f(&r["latency_audio_ms"]["max"], 2),
            f(&r["latency_video_ms"]["p50"], 2),
            f(&r["latency_video_ms"]["p99"], 2),
            f(&r["latency_video_ms"]["max"], 2),
            pct(&r["loss_audio"], 3),
            pct(&r["loss_video"], 3),
            r["udp_rcvbuf_drops"],
            mib(&r["server_rss_kib"]["before_setup"]),
            mib(&r["server_rss_kib"]["publishing"]),
            mib(&r["server_rss_kib"]["end"]),
            f(&r["server_rss_growth_kib_per_participant_minute"], 1),
            f(&r["setup_s"]["peer_connections"], 1),
            f(&r["setup_s"]["all_flows"], 1),
            r["late_ticks"],
        );
    }
    println!("\n### Media targets\n");
    for r in &media {
        let label = format!(
            "{} {} rooms",
            r["media"].as_str().unwrap_or("?"),
            r["rooms"]
        );
        let avail = num(&r["wall_s"]).unwrap_or(0.0) * num(&r["cores"]).unwrap_or(1.0);
        if let Some(other) = num(&r["other_cpu_s"]).filter(|o| avail > 0.0 && *o > 0.1 * avail) {
            println!(
                "- note: during {label}, other processes used {:.0} % of the machine: its figures are disturbed",
                100.0 * other / avail
            );
        }
        if let Some(lg) = num(&r["loadgen_cpu_s"]).filter(|_| avail > 0.0) {
            let share = lg / avail;
            if share > 0.4 {
                println!(
                    "- note: during {label}, the load generator used {:.0} % of the machine",
                    100.0 * share
                );
            }
        }
        if let Some(x) = num(&r["forwarded_per_server_cpu_s"]) {
            println!(
                "- > {FORWARDED_PER_CORE_TARGET:.0} forwarded packets/s per server core ({label}): {x:.0} — {}",
                met(x > FORWARDED_PER_CORE_TARGET)
            );
        }
        if let Some(g) = num(&r["server_rss_growth_kib_per_participant_minute"])
            .filter(|g| *g > RSS_GROWTH_NOTE_KIB_PER_MINUTE)
        {
            println!(
                "- note: during {label}, the server's RSS grew by {g:.0} KiB per participant per minute: look for a leak"
            );
        }
        if r["media"] == "audio+video" {
            if let Some(k) = num(&r["server_rss_kib_per_participant"]) {
                println!(
                    "- < 2 MiB server memory per A/V participant ({label}): {k:.0} KiB — {}",
                    met(k < KIB_PER_AV_PARTICIPANT_TARGET)
                );
            }
        }
    }
    println!();
}
