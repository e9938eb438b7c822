//! The write-ahead log of the embedded store: the file whose `fdatasync` makes an append durable.
//!
//! Why it exists: a durable redb commit rewrites the B-tree path of every key it touches, the
//! allocator state and the header, about 18 pages of 4 KiB for one small event, and that commit
//! was most of the fan-out latency (docs/benchmarks.md). Appending one checksummed record per
//! append request to a plain file and `fdatasync`ing it costs what the disk's own append costs.
//! So the embedded store makes appends durable here, one `fdatasync` per group commit, and
//! brings redb up to date later, in the background ("checkpoint"), see `embedded.rs`.
//!
//! # Format
//!
//! The log is a sequence of *segment* files `wal-<first lsn, 20 digits>.log` in `<data>/wal/`.
//! Each holds records, back to back; each record is one append request (all of its events, so a
//! batch is stored whole or not at all):
//!
//! ```text
//! u32 payload length | u64 lsn | 8 bytes: SHA-256(lsn, payload), truncated | payload
//! payload = u16 case length | case (UTF-8) | u32 event count | per event: u64 seq | u32 length | bytes
//! ```
//!
//! All integers are little-endian. LSNs (log sequence numbers) count records from 1, without gaps,
//! across segments; a segment's name is the LSN of its first record.
//!
//! # Zero-filled segments
//!
//! A record appended at the end of a file grows the file, and then its `fdatasync` must also
//! commit the new size (and, on ext4, the newly allocated blocks) to the file system's journal:
//! every append request's durability waits for a journal commit, behind whatever else the
//! journal carries (redb's checkpoint commits, other programs' writes). Overwriting blocks that
//! were already written changes no metadata, so its `fdatasync` only writes the data (on the
//! benchmark machine 0.16 ms instead of 0.28 ms at the median, and no journal stalls). So the
//! writer appends into segments that a background thread ([`Spares`]) has filled with zeros and
//! synced beforehand, and switches to a fresh one when the current one is full or was never
//! zero-filled (the first segment after opening, or when no spare was ready in time). Allocating
//! with `fallocate` instead would not do: ext4 marks such blocks unwritten, and the first write
//! to each converts it in the journal.
//!
//! A zero-filled segment therefore ends in zeros after its last record. A record is never all
//! zeros (its length field is at least 6: a payload is never empty), so
//! [`recover`] takes a segment whose remaining bytes are all zero as ended there, in any segment;
//! damage is still damage: anything but zeros after a bad record, before the last segment, fails
//! the opening.
//!
//! # Recovery
//!
//! A crash can leave the last segment with a torn tail: a record whose bytes were only partly
//! written, or written in another order than the file offsets. Such a record was never
//! acknowledged (an append is answered only after its `fdatasync`), and neither was anything
//! after it. [`recover`] reads every record after the last checkpoint, checks each one's length,
//! checksum and LSN, and stops at the first that fails: in the last segment that is the torn tail,
//! which is cut off the file; anywhere else it is damage to acknowledged data, and opening fails
//! rather than silently dropping records.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use super::StoredEvent;

/// Bytes before a record's payload.
const HEADER: usize = 4 + 8 + 8;
/// Largest payload accepted when reading (a sanity bound against garbage lengths).
const MAX_PAYLOAD: usize = 1 << 30;

/// One append request, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub lsn: u64,
    pub case: String,
    pub events: Vec<StoredEvent>,
}

fn checksum(lsn: u64, payload: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(lsn.to_le_bytes());
    h.update(payload);
    let digest = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// Appends the encoding of one record to `out`. Fails only if a field does not fit the format
/// (a case id over 64 KiB, an event over 4 GiB), before writing anything to `out`.
pub(crate) fn encode(
    lsn: u64,
    case: &str,
    events: &[StoredEvent],
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    let case_len = u16::try_from(case.len()).map_err(|_| "case id too long for the log")?;
    let count = u32::try_from(events.len()).map_err(|_| "too many events in one append")?;
    let mut payload = Vec::with_capacity(
        2 + case.len() + 4 + events.iter().map(|e| 12 + e.data.len()).sum::<usize>(),
    );
    payload.extend_from_slice(&case_len.to_le_bytes());
    payload.extend_from_slice(case.as_bytes());
    payload.extend_from_slice(&count.to_le_bytes());
    for e in events {
        let len = u32::try_from(e.data.len()).map_err(|_| "event too large for the log")?;
        payload.extend_from_slice(&e.seq.to_le_bytes());
        payload.extend_from_slice(&len.to_le_bytes());
        payload.extend_from_slice(&e.data);
    }
    let len = u32::try_from(payload.len()).map_err(|_| "append too large for the log")?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&checksum(lsn, &payload));
    out.extend_from_slice(&payload);
    Ok(())
}

/// A little-endian cursor over a payload; `None` when it runs short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn decode_payload(lsn: u64, payload: &[u8]) -> Option<Record> {
    let mut r = Reader(payload);
    let case_len = r.u16()? as usize;
    let case = std::str::from_utf8(r.take(case_len)?).ok()?.to_owned();
    let count = r.u32()? as usize;
    let mut events = Vec::with_capacity(count.min(payload.len() / 12));
    for _ in 0..count {
        let seq = r.u64()?;
        let len = r.u32()? as usize;
        events.push(StoredEvent {
            seq,
            data: r.take(len)?.to_vec(),
        });
    }
    if !r.0.is_empty() {
        return None;
    }
    Some(Record { lsn, case, events })
}

/// Decodes the record at the start of `bytes`: the record and its encoded length, or `None` if
/// the bytes there are not a whole, intact record.
fn decode(bytes: &[u8]) -> Option<(Record, usize)> {
    let mut r = Reader(bytes);
    let len = r.u32()? as usize;
    let lsn = r.u64()?;
    let sum: [u8; 8] = r.take(8)?.try_into().ok()?;
    if len > MAX_PAYLOAD {
        return None;
    }
    let payload = r.take(len)?;
    if checksum(lsn, payload) != sum {
        return None;
    }
    Some((decode_payload(lsn, payload)?, HEADER + len))
}

/// The file name of the segment whose first record has LSN `first`.
pub(crate) fn segment_name(first: u64) -> String {
    format!("wal-{first:020}.log")
}

/// The segments in `dir`, sorted by first LSN. Other files are ignored.
pub(crate) fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(first) = name
            .strip_prefix("wal-")
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((first, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Makes the directory's entries (a created or removed segment) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What [`recover`] found.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// The records after the checkpoint, in LSN order.
    pub records: Vec<Record>,
    /// Bytes cut off the end of the last segment (a torn tail), if any.
    pub torn_bytes: u64,
}

/// Reads the records with LSN above `checkpoint` from the segments in `dir` (see the module
/// docs). Cuts a torn tail off the last segment; fails if a record before the last segment's
/// tail is damaged or missing.
pub(crate) fn recover(dir: &Path, checkpoint: u64) -> Result<Recovered, String> {
    let segs = segments(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut out = Recovered::default();
    let mut expected = checkpoint + 1;
    for (i, (first, path)) in segs.iter().enumerate() {
        let last_segment = i + 1 == segs.len();
        // Wholly covered by the checkpoint: the next segment starts at or before `expected`.
        if segs.get(i + 1).is_some_and(|(next, _)| *next <= expected) {
            continue;
        }
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut offset = 0usize;
        let mut lsn_in_segment = *first;
        while offset < bytes.len() {
            let good = match decode(&bytes[offset..]) {
                Some((record, len)) if record.lsn == lsn_in_segment => Some((record, len)),
                _ => None,
            };
            let Some((record, len)) = good else {
                if bytes[offset..].iter().all(|b| *b == 0) {
                    // The unused rest of a zero-filled segment: its records end here.
                    break;
                }
                if !last_segment {
                    return Err(format!(
                        "damaged record in {} at offset {offset} (not the end of the log)",
                        path.display()
                    ));
                }
                // The torn tail of the last segment: never acknowledged. Cut it off, so new
                // records are never written after garbage.
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                file.set_len(offset as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| format!("cannot cut the torn tail of {}: {e}", path.display()))?;
                out.torn_bytes = (bytes.len() - offset) as u64;
                break;
            };
            offset += len;
            lsn_in_segment += 1;
            if record.lsn < expected {
                continue; // already in the checkpoint
            }
            if record.lsn != expected {
                return Err(format!(
                    "the log misses records {expected} to {} (found in {})",
                    record.lsn - 1,
                    path.display()
                ));
            }
            expected += 1;
            out.records.push(record);
        }
    }
    Ok(out)
}

/// The segment being appended to.
pub(crate) struct Segment {
    file: File,
    /// Bytes written and made durable so far.
    len: u64,
    /// Bytes at the start of the file that were zero-filled and synced before use: appends
    /// below this offset overwrite and change no file metadata.
    zeroed: u64,
}

impl Segment {
    /// Creates the segment whose first record will have LSN `first`, empty (not zero-filled),
    /// and makes its directory entry durable (so records synced into it are found after a
    /// crash).
    pub(crate) fn create(dir: &Path, first: u64) -> io::Result<Segment> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(dir.join(segment_name(first)))?;
        sync_dir(dir)?;
        Ok(Segment {
            file,
            len: 0,
            zeroed: 0,
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Whether the next append would grow the file (the zero-filled part is used up, or there
    /// never was one): then it is time to switch to a zero-filled spare.
    pub(crate) fn past_zeroed(&self) -> bool {
        self.len >= self.zeroed
    }

    /// Appends `bytes` and makes them durable (`fdatasync`). On failure, cuts the file back to
    /// where it was, so nothing of `bytes` can reappear after a crash; an error from that too
    /// is returned as the second element: the log can then no longer be trusted.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<(), (io::Error, Option<io::Error>)> {
        let result = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cutting drops the zero-filled rest too; later appends grow the file.
                self.zeroed = self.zeroed.min(self.len);
                let undo = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_data())
                    .and_then(|()| {
                        use std::io::Seek;
                        self.file.seek(io::SeekFrom::Start(self.len)).map(|_| ())
                    });
                Err((e, undo.err()))
            }
        }
    }
}

/// The name of the spare segment while it is being zero-filled; [`segments`] ignores it.
pub(crate) const SPARE_FILE: &str = "spare.tmp";

/// Prepares zero-filled segments in the background (see the module docs), one at a time: the
/// first of `first_size` bytes, each next one twice as large up to `max_size`, so a store that
/// sees little traffic (and a test suite that opens hundreds of them) writes a megabyte or two,
/// and a busy one switches segments rarely.
pub(crate) struct Spares {
    dir: PathBuf,
    next_size: u64,
    max_size: u64,
    /// The thread filling the spare; it returns the spare's size.
    filling: Option<JoinHandle<io::Result<u64>>>,
    /// Tells the filling thread to give up (the store is closing).
    stop: Arc<AtomicBool>,
}

impl Spares {
    /// Removes a spare left over from an earlier run (its filling may not have finished) and
    /// starts filling a new one.
    pub(crate) fn start(dir: &Path, first_size: u64, max_size: u64) -> Spares {
        let _ = std::fs::remove_file(dir.join(SPARE_FILE));
        let mut spares = Spares {
            dir: dir.to_owned(),
            next_size: first_size.min(max_size),
            max_size,
            filling: None,
            stop: Arc::new(AtomicBool::new(false)),
        };
        spares.fill_next();
        spares
    }

    fn fill_next(&mut self) {
        let path = self.dir.join(SPARE_FILE);
        let size = self.next_size;
        self.next_size = (size * 2).min(self.max_size);
        let stop = Arc::clone(&self.stop);
        let spawned = std::thread::Builder::new()
            .name("yuntiao-wal-spare".into())
            .spawn(move || {
                background_priority();
                zero_fill(&path, size, &stop).map(|()| size)
            });
        match spawned {
            Ok(handle) => self.filling = Some(handle),
            Err(e) => tracing::warn!(error = %e, "write-ahead log: cannot start filling a spare"),
        }
    }

    /// If a spare is ready, makes it the segment whose first record will have LSN `first`
    /// (renamed into place, directory synced) and starts filling the next one. `None` while
    /// the spare is still being filled, or when filling it failed (logged; the next call
    /// starts over).
    pub(crate) fn take(&mut self, first: u64) -> Option<io::Result<Segment>> {
        if !self.filling.as_ref()?.is_finished() {
            return None;
        }
        let filled = self.filling.take()?.join();
        let size = match filled {
            Ok(Ok(size)) => size,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "write-ahead log: cannot fill a spare segment");
                self.fill_next();
                return None;
            }
            Err(_) => {
                tracing::warn!("write-ahead log: the spare segment's filler panicked");
                self.fill_next();
                return None;
            }
        };
        let spare = self.dir.join(SPARE_FILE);
        let name = self.dir.join(segment_name(first));
        // Opened before the rename, so that once the name is in place nothing is left to fail
        // but making it durable; if that fails, the name is taken back: a segment file that
        // the writer does not use must not make the records of the one it does use look as if
        // they ended before it (checkpoints delete segments by their successors' names).
        let segment = OpenOptions::new()
            .write(true)
            .open(&spare)
            .and_then(|file| {
                std::fs::rename(&spare, &name)?;
                if let Err(e) = sync_dir(&self.dir) {
                    let _ = std::fs::rename(&name, &spare);
                    return Err(e);
                }
                Ok(Segment {
                    file,
                    len: 0,
                    zeroed: size,
                })
            });
        self.fill_next();
        Some(segment)
    }
}

impl Drop for Spares {
    /// Stops the filling thread and waits for it, so a store opened again on the same directory
    /// never shares its spare file with a thread of the closed one; removes the spare.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.filling.take() {
            let _ = handle.join();
        }
        let _ = std::fs::remove_file(self.dir.join(SPARE_FILE));
    }
}

/// Writes `size` zero bytes to a new file at `path` and makes them durable; gives up (with an
/// error) when `stop` is set.
///
/// Gently: [`FILL_CHUNK`] bytes at a time, each synced, with a pause after it. A disk's cache
/// flush (the writer's `fdatasync`) waits for every write queued before it, so megabytes of zeros
/// written at once and synced at the end can make the log's `fdatasync` wait for all of them
/// (the disk probe saw a 183 ms `fdatasync` right after filling its file at once, and the first
/// quiet signaling run a 184 ms fan-out p99 on the embedded store only, docs/benchmarks.md);
/// this way at most one chunk is ever in the way.
fn zero_fill(path: &Path, size: u64, stop: &AtomicBool) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)?;
    let chunk = vec![0u8; FILL_CHUNK];
    let mut left = size;
    while left > 0 {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("the store is closing"));
        }
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        file.sync_data()?;
        left -= n as u64;
        if left > 0 {
            std::thread::sleep(FILL_PAUSE);
        }
    }
    file.sync_all()
}

/// Bytes of zeros written (and synced) at a time when filling a spare.
const FILL_CHUNK: usize = 128 << 10;
/// The pause after each chunk: at most about 25 MiB/s of zeros, a 16 MiB spare in under a second.
const FILL_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// How much lower than the rest of the process the store's background threads run.
const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority by [`BACKGROUND_NICE`] (Linux: the nice value is
/// per thread). For the store's background work (checkpoints, filling spares): on a server
/// whose cores are busy, the scheduler then runs the threads that answer clients first, and a
/// checkpoint's burst of B-tree work no longer sits in front of a fan-out. At nice +10 such a
/// thread still gets about a tenth of a contended core, so it never stops altogether.
/// Best effort: a failure is logged and changes nothing else.
pub(crate) fn background_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `gettid` has no preconditions.
        let tid = unsafe { libc::gettid() };
        let Ok(who) = libc::id_t::try_from(tid) else {
            return;
        };
        // SAFETY: plain system calls on this thread's own id; `getpriority` can return -1 as a
        // value, so errno is cleared first and checked after.
        let current = unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, who)
        };
        if current == -1 && io::Error::last_os_error().raw_os_error() != Some(0) {
            return;
        }
        let nice = (current + BACKGROUND_NICE).min(19);
        // SAFETY: as above.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) } != 0 {
            tracing::debug!(
                error = %io::Error::last_os_error(),
                "store: cannot lower a background thread's priority"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    fn thread_nice() -> i32 {
        // SAFETY: plain system calls on this thread's own id.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    /// The store's background threads run `BACKGROUND_NICE` lower than the thread that started
    /// them (capped at 19), and only they: the caller keeps its priority.
    #[cfg(target_os = "linux")]
    #[test]
    fn background_threads_run_at_a_lower_priority() {
        let mine = thread_nice();
        let (before, after) = std::thread::spawn(|| {
            let before = thread_nice();
            background_priority();
            (before, thread_nice())
        })
        .join()
        .unwrap();
        assert_eq!(before, mine);
        assert_eq!(after, (before + BACKGROUND_NICE).min(19));
        assert!(after > before || before == 19);
        assert_eq!(thread_nice(), mine);
    }

    fn ev(seq: u64, data: &[u8]) -> StoredEvent {
        StoredEvent {
            seq,
            data: data.to_vec(),
        }
    }

    #[test]
    fn records_round_trip_and_detect_damage() {
        let events = vec![ev(7, b"{\"a\":1}"), ev(8, &[0, 255, b'\n'])];
        let mut buf = Vec::new();
        encode(42, "c_1", &events, &mut buf).unwrap();
        let (record, len) = decode(&buf).unwrap();
        assert_eq!(len, buf.len());
        assert_eq!(
            record,
            Record {
                lsn: 42,
                case: "c_1".into(),
                events
            }
        );
        for cut in 0..buf.len() {
            assert!(
                decode(&buf[..cut]).is_none(),
                "a record cut at {cut} decoded"
            );
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_none(), "a flipped byte {i} went unnoticed");
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "yuntiao-wal-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn record(lsn: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(
            lsn,
            "c_z",
            &[ev(lsn, format!("event {lsn}").as_bytes())],
            &mut buf,
        )
        .unwrap();
        buf
    }

    fn spare_segment(spares: &mut Spares, first: u64) -> Segment {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(segment) = spares.take(first) {
                return segment.unwrap();
            }
            assert!(std::time::Instant::now() < deadline, "no spare got ready");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Records written over zero-filled spares keep the file's size, and recovery reads them and
    /// takes the zeros after them as the end of each segment, in the last segment and before it;
    /// the spares double in size up to the maximum.
    #[test]
    fn zero_filled_segments_are_overwritten_and_recovered() {
        let dir = scratch("zeros");
        let mut spares = Spares::start(&dir, 4096, 8192);
        let mut first = spare_segment(&mut spares, 1);
        assert!(!first.past_zeroed());
        first.append(&[record(1), record(2)].concat()).unwrap();
        let mut second = spare_segment(&mut spares, 3);
        second.append(&record(3)).unwrap();
        let mut third = spare_segment(&mut spares, 4);
        let sizes: Vec<u64> = segments(&dir)
            .unwrap()
            .iter()
            .map(|(_, p)| std::fs::metadata(p).unwrap().len())
            .collect();
        assert_eq!(sizes, vec![4096, 8192, 8192], "overwriting grew a segment");
        // Filling the third past its zeros grows the file, as a plain append would.
        let big = vec![ev(4, &[7u8; 9000])];
        let mut buf = Vec::new();
        encode(4, "c_z", &big, &mut buf).unwrap();
        third.append(&buf).unwrap();
        assert!(third.past_zeroed());
        drop(spares);

        let got = recover(&dir, 0).unwrap();
        let lsns: Vec<u64> = got.records.iter().map(|r| r.lsn).collect();
        assert_eq!(lsns, vec![1, 2, 3, 4]);
        assert_eq!(got.records[3].events, big);
        assert_eq!(got.torn_bytes, 0);
        assert!(
            !dir.join(SPARE_FILE).exists(),
            "the closed spares left a spare"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// In a zero-filled segment, a torn last record is cut off; anything but zeros after a bad
    /// record in an earlier segment is damage; a record missing at the end of an earlier segment
    /// (zeros where it was) shows as a gap.
    #[test]
    fn zero_filled_segments_still_tell_torn_tails_from_damage() {
        // Torn: the second record half written in the last segment.
        let dir = scratch("torn");
        let mut spares = Spares::start(&dir, 4096, 4096);
        let mut seg = spare_segment(&mut spares, 1);
        let (one, two) = (record(1), record(2));
        seg.append(&one).unwrap();
        seg.append(&two[..two.len() / 2]).unwrap();
        drop(spares);
        let got = recover(&dir, 0).unwrap();
        assert_eq!(got.records.len(), 1);
        assert_eq!(got.torn_bytes, 4096 - one.len() as u64);
        std::fs::remove_dir_all(&dir).unwrap();

        // Damage: a flipped byte in the first of two segments, zeros after it.
        let dir = scratch("damage");
        let mut spares = Spares::start(&dir, 4096, 4096);
        let mut seg = spare_segment(&mut spares, 1);
        seg.append(&[record(1), record(2)].concat()).unwrap();
        let mut next = spare_segment(&mut spares, 3);
        next.append(&record(3)).unwrap();
        drop(spares);
        let path = dir.join(segment_name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[one.len() + 25] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = recover(&dir, 0).unwrap_err();
        assert!(err.contains("damaged record"), "{err}");

        // A gap: the second record of the first segment zeroed out.
        bytes[one.len() + 25] ^= 1;
        for b in &mut bytes[one.len()..] {
            *b = 0;
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = recover(&dir, 0).unwrap_err();
        assert!(err.contains("misses records 2 to 2"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
