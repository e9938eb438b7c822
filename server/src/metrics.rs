//! `/metrics`: the server's counters in the Prometheus text exposition format.
//!
//! Written by hand: a handful of counters and gauges do not need a metrics framework. Labels
//! carry case and participant ids (random, not personal data), never names or tokens.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::media::PeerStats;
use crate::state::AppState;

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// A gauge with one sample per participant (labels: case and participant ids, never names);
/// `value` gives the sample as written, or `None` to leave the participant out.
fn peer_gauge(
    out: &mut String,
    peers: &[PeerStats],
    name: &str,
    help: &str,
    value: impl Fn(&PeerStats) -> Option<String>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for p in peers {
        if let Some(v) = value(p) {
            let _ = writeln!(
                out,
                "{name}{{case=\"{}\",participant=\"{}\"}} {v}",
                p.case, p.participant
            );
        }
    }
}

/// Renders every metric.
pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    metric(
        &mut out,
        "yuntiao_rooms_active",
        "gauge",
        "Cases with a room task in memory.",
        state.rooms.active_rooms() as u64,
    );
    let d = state.docs.stats();
    for (name, kind, help, value) in [
        (
            "yuntiao_docs_open",
            "gauge",
            "Shared documents with a document task in memory.",
            d.open_documents,
        ),
        (
            "yuntiao_docs_connections",
            "gauge",
            "Open shared-document websockets.",
            d.connections,
        ),
        (
            "yuntiao_docs_updates_stored_total",
            "counter",
            "Document updates appended to the store (then broadcast).",
            d.updates_stored,
        ),
        (
            "yuntiao_docs_update_bytes_total",
            "counter",
            "Bytes of stored document updates.",
            d.update_bytes,
        ),
        (
            "yuntiao_docs_dropped_read_only_total",
            "counter",
            "Edits from read-only participants that would have changed a document, dropped.",
            d.dropped_read_only,
        ),
        (
            "yuntiao_docs_rejected_total",
            "counter",
            "Document connections closed for a malformed, unknown, oversized or flooding message.",
            d.rejected_messages,
        ),
        (
            "yuntiao_docs_snapshots_total",
            "counter",
            "Document snapshots written by compaction.",
            d.snapshots,
        ),
    ] {
        metric(&mut out, name, kind, help, value);
    }
    let m = &state.rooms.media().stats;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    metric(
        &mut out,
        "yuntiao_media_peers",
        "gauge",
        "Open WebRTC peer connections.",
        get(&m.peers),
    );
    metric(
        &mut out,
        "yuntiao_media_packets_received_total",
        "counter",
        "RTP packets received from publishers.",
        get(&m.packets_in),
    );
    metric(
        &mut out,
        "yuntiao_media_bytes_received_total",
        "counter",
        "RTP payload bytes received from publishers.",
        get(&m.bytes_in),
    );
    metric(
        &mut out,
        "yuntiao_media_packets_forwarded_total",
        "counter",
        "RTP packets forwarded to receivers.",
        get(&m.packets_forwarded),
    );
    metric(
        &mut out,
        "yuntiao_media_bytes_forwarded_total",
        "counter",
        "RTP payload bytes forwarded to receivers.",
        get(&m.bytes_forwarded),
    );
    metric(&mut out, "yuntiao_media_packets_withheld_total", "counter", "Packets not forwarded to a receiver because the room's rules forbid it (lobby, caucus) or the track is not negotiated yet.", get(&m.packets_withheld));
    metric(
        &mut out,
        "yuntiao_media_packets_dropped_total",
        "counter",
        "Packets dropped: socket or codec mapping failures.",
        get(&m.packets_dropped),
    );
    metric(
        &mut out,
        "yuntiao_media_udp_unmatched_total",
        "counter",
        "Datagrams on the media port that no peer accepted (garbage, strangers).",
        get(&m.udp_garbage),
    );
    metric(
        &mut out,
        "yuntiao_media_layer_switches_total",
        "counter",
        "Simulcast layer switches made on receivers' lines (a receiver's first layer counts as one).",
        get(&m.layer_switches),
    );
    metric(
        &mut out,
        "yuntiao_media_packets_held_downlink_total",
        "counter",
        "Video packets not sent to a receiver whose downlink is too lossy for its video (downlink protection).",
        get(&m.packets_held_downlink),
    );
    metric(
        &mut out,
        "yuntiao_media_downlink_steps_down_total",
        "counter",
        "Downlink protection's steps down: a receiver's video reduced to the lowest simulcast layer, or paused.",
        get(&m.downlink_steps_down),
    );
    metric(
        &mut out,
        "yuntiao_media_downlink_steps_up_total",
        "counter",
        "Downlink protection's steps up: video given back to a receiver whose link recovered.",
        get(&m.downlink_steps_up),
    );
    if let Ok(peers) = m.per_peer.lock() {
        let peers = peers.as_slice();
        peer_gauge(
            &mut out,
            peers,
            "yuntiao_media_peer_bitrate_in_bps",
            "Bits per second received from a participant.",
            |p| Some(format!("{:.0}", p.bitrate_in)),
        );
        peer_gauge(
            &mut out,
            peers,
            "yuntiao_media_peer_bitrate_out_bps",
            "Bits per second forwarded to a participant.",
            |p| Some(format!("{:.0}", p.bitrate_out)),
        );
        peer_gauge(
            &mut out,
            peers,
            "yuntiao_media_peer_loss_ratio",
            "Fraction of a participant's packets lost on the way in.",
            |p| Some(format!("{:.4}", p.loss_in)),
        );
        peer_gauge(&mut out, peers, "yuntiao_media_peer_downlink_loss_ratio", "Fraction of the packets sent to a participant that its receiver reports say were lost on the way to it, over the last second.", |p| p.loss_out.map(|l| format!("{l:.4}")));
        peer_gauge(&mut out, peers, "yuntiao_media_peer_downlink_queue_seconds", "Queueing delay on the way to a participant over the last second: its highest reported round trip above its lowest of the last 30 seconds.", |p| p.queue_out.map(|q| format!("{q:.3}")));
        peer_gauge(&mut out, peers, "yuntiao_media_peer_video_level", "How much video a participant's downlink carries: 0 all, 1 lowest simulcast layers, 2 none (downlink protection).", |p| Some(p.video_level.to_string()));
    }
    let mut stores = Vec::new();
    if let Some(cases) = state.rooms.store().as_embedded() {
        stores.push(("cases", cases));
    }
    if let Some(docs) = state.docs.store().embedded_log() {
        stores.push(("documents", docs));
    }
    crate::store::embedded::render_metrics(&mut out, &stores);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// Upper bounds (seconds) of [`DurationHistogram`]'s buckets: from a fast disk's `fdatasync`
/// (0.1 ms) to a stall (over a second).
const BOUNDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A Prometheus histogram of durations, lock-free to observe (from the store's own threads).
#[derive(Debug, Default)]
pub struct DurationHistogram {
    /// Non-cumulative counts per bucket of [`BOUNDS`]; the last one is above every bound.
    buckets: [std::sync::atomic::AtomicU64; BOUNDS.len() + 1],
    sum_ns: std::sync::atomic::AtomicU64,
}

impl DurationHistogram {
    /// Counts one duration.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Appends the histogram's `_bucket`, `_sum` and `_count` series under `name`, with `labels`
    /// (`key="value"` pairs, comma-separated, or empty). The `# HELP`/`# TYPE` header is written
    /// by [`histogram_header`], once per metric name.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in BOUNDS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BOUNDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// The `# HELP` and `# TYPE` lines of a histogram.
pub fn histogram_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_are_cumulative_and_bounds_inclusive() {
        let h = DurationHistogram::default();
        h.observe(Duration::from_micros(100)); // on the first bound
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(2)); // above every bound
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "store=\"cases\"");
        assert!(
            out.contains("x_seconds_bucket{store=\"cases\",le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{store=\"cases\",le=\"0.0025\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{store=\"cases\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{store=\"cases\",le=\"1\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{store=\"cases\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_count{store=\"cases\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_sum{store=\"cases\"} 2.0031\n"),
            "{out}"
        );
        assert_eq!(h.count(), 3);
    }
}
