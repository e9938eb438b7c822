//! `--cpu-probe`: how much of each core the machine actually gets.
//!
//! On a virtual machine the hypervisor can take a vCPU away for milliseconds at a time (steal
//! time the guest often does not even report). Any latency figure measured then has those gaps in
//! its tail, whatever the server does. This probe spins one thread per core for a while and
//! records every gap between two consecutive clock reads longer than [`GAP`]: time the thread
//! did not run. Run it with nothing else busy (the benchmark scripts run it before the phases), so
//! a gap means the core was taken away, not that another process of ours used it.

use std::time::{Duration, Instant};

/// A pause between two clock reads at least this long counts as a gap.
pub const GAP: Duration = Duration::from_micros(500);

/// What one spinning thread saw.
#[derive(Clone, Debug, Default)]
pub struct CoreStalls {
    /// Gaps of at least [`GAP`].
    pub gaps: u64,
    /// Their total length.
    pub stalled: Duration,
    /// The longest.
    pub longest: Duration,
    /// How long the thread spun.
    pub spun: Duration,
}

/// Spins `threads` threads for `duration` and returns what each saw.
pub fn run(threads: usize, duration: Duration) -> Vec<CoreStalls> {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut last = start;
                let mut out = CoreStalls::default();
                loop {
                    let now = Instant::now();
                    let gap = now - last;
                    if gap >= GAP {
                        out.gaps += 1;
                        out.stalled += gap;
                        out.longest = out.longest.max(gap);
                    }
                    last = now;
                    if now - start >= duration {
                        out.spun = now - start;
                        return out;
                    }
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect()
}
