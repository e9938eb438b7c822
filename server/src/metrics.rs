//! `/metrics`: the server's counters in the Prometheus text exposition format.
//!
//! Written by hand: a handful of counters and gauges do not need a metrics framework. Labels
//! carry case and participant ids (random, not personal data), never names or tokens.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::state::AppState;

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
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
    if let Ok(peers) = m.per_peer.lock() {
        let _ = writeln!(out, "# HELP yuntiao_media_peer_bitrate_in_bps Bits per second received from a participant.\n# TYPE yuntiao_media_peer_bitrate_in_bps gauge");
        for p in peers.iter() {
            let _ = writeln!(
                out,
                "yuntiao_media_peer_bitrate_in_bps{{case=\"{}\",participant=\"{}\"}} {:.0}",
                p.case, p.participant, p.bitrate_in
            );
        }
        let _ = writeln!(out, "# HELP yuntiao_media_peer_bitrate_out_bps Bits per second forwarded to a participant.\n# TYPE yuntiao_media_peer_bitrate_out_bps gauge");
        for p in peers.iter() {
            let _ = writeln!(
                out,
                "yuntiao_media_peer_bitrate_out_bps{{case=\"{}\",participant=\"{}\"}} {:.0}",
                p.case, p.participant, p.bitrate_out
            );
        }
        let _ = writeln!(out, "# HELP yuntiao_media_peer_loss_ratio Fraction of a participant's packets lost on the way in.\n# TYPE yuntiao_media_peer_loss_ratio gauge");
        for p in peers.iter() {
            let _ = writeln!(
                out,
                "yuntiao_media_peer_loss_ratio{{case=\"{}\",participant=\"{}\"}} {:.4}",
                p.case, p.participant, p.loss_in
            );
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
