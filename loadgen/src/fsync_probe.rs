//! `--fsync-probe DIR`: the disk's own durable-append latency, as a reference.
//!
//! Both stores make an event durable before it is acknowledged or fanned out (the embedded one
//! with an fsync per group commit, Redis with `appendfsync always`), so the fan-out latency of a
//! chat message can never be lower than one durable write to the disk under the data directory.
//! This probe measures that floor on the same disk in the same run: append a record of the size
//! of a stored event to a file and `fdatasync` it, one after the other, for the given time.
//!
//! It measures it twice, because the embedded store does not append to a growing file: it writes
//! over log segments filled with zeros beforehand (`server/src/store/wal.rs`), whose `fdatasync`
//! has no file size or extent to commit to the file system's journal. [`How::Append`] is the
//! plain append (what Redis's AOF does), [`How::OverZeros`] the same records written over a file
//! of zeros written and synced before the timing starts.

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

/// Where each record goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// At the end of the file, growing it.
    Append,
    /// Over zeros written and synced beforehand (the file does not grow while it lasts).
    OverZeros,
}

/// The most a zero-filled probe file may take (writing stops when it is used up).
const ZEROS_MAX: u64 = 256 << 20;

/// Writes `record_bytes` and fdatasyncs, sequentially, for `duration`. Blocking.
pub fn run(dir: &Path, duration: Duration, record_bytes: usize, how: How) -> anyhow::Result<Probe> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("yuntiao-loadgen-fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let record = vec![b'x'; record_bytes.max(1)];
    let mut room = u64::MAX;
    if how == How::OverZeros {
        // Enough for 20,000 records per second, the most this disk does is far below that.
        room = (record.len() as u64 * 20_000 * duration.as_secs().max(1)).min(ZEROS_MAX);
        let chunk = vec![0u8; 1 << 20];
        let mut left = room;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n])
                .context("zero-filling the probe file")?;
            left -= n as u64;
        }
        file.sync_all()
            .context("syncing the zero-filled probe file")?;
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(0))?;
    }
    let mut latency = crate::conn::histogram();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < duration && (n + 1) * record.len() as u64 <= room {
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
