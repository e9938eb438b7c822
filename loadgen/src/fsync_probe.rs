//! `--fsync-probe DIR`: the disk's own durable-append latency, as a reference.
//!
//! Both stores make an event durable before it is acknowledged or fanned out (the embedded one
//! with an fsync per group commit, Redis with `appendfsync always`), so the fan-out latency of a
//! chat message can never be lower than one durable write to the disk under the data directory.
//! This probe measures that floor on the same disk in the same run: append a record of the size
//! of a stored event to a file and `fdatasync` it, one after the other, for the given time.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;

/// What the probe measured.
pub struct Probe {
    pub latency: Histogram<u64>,
    pub ops_per_s: f64,
}

/// Appends `record_bytes` and fdatasyncs, sequentially, for `duration`. Blocking.
pub fn run(dir: &Path, duration: Duration, record_bytes: usize) -> anyhow::Result<Probe> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("yuntiao-loadgen-fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let record = vec![b'x'; record_bytes.max(1)];
    let mut latency = crate::conn::histogram();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < duration {
        let t = Instant::now();
        file.write_all(&record).context("writing the probe file")?;
        file.sync_data().context("fdatasync of the probe file")?;
        latency.saturating_record((t.elapsed().as_micros() as u64).max(1));
        n += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(Probe {
        latency,
        ops_per_s: n as f64 / secs,
    })
}
