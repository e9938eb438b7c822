//! Reading another process's CPU time and memory from `/proc`.
//!
//! CPU time is `utime + stime` (fields 14 and 15 of `/proc/PID/stat`, in clock ticks), turned
//! into seconds with `sysconf(_SC_CLK_TCK)` (100 on every Linux we know of, but asked rather than
//! assumed). Memory is `VmRSS` from `/proc/PID/status`: resident pages, which is what the machine
//! actually pays for, not the virtual size.
//!
//! Linux only, like the benchmark itself.

use anyhow::{bail, Context};

/// Clock ticks per second for `/proc/PID/stat` times.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The machine's CPUs as `/proc/stat` counts them (its `cpuN` lines), which is what
/// [`machine_busy_seconds`] adds up. Unlike `available_parallelism`, this does not shrink when
/// the load generator itself is pinned to one CPU (`PIN=1` in run-bench.sh).
pub fn machine_cpus() -> usize {
    let counted = std::fs::read_to_string("/proc/stat").ok().map(|s| {
        s.lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count()
    });
    match counted {
        Some(n) if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// CPU seconds (user + system) the process has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may contain spaces: split after the last
    // ')'. What follows starts at field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        bail!("unexpected format of {path}");
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.len() < 13 {
        bail!("unexpected format of {path}");
    }
    let utime: u64 = fields[11].parse().context("utime")?;
    let stime: u64 = fields[12].parse().context("stime")?;
    Ok((utime + stime) as f64 / clock_ticks())
}

/// CPU seconds the whole machine spent busy so far (all CPUs, everything but idle and iowait),
/// from the first line of `/proc/stat`. Compared with the server's, the load generator's and
/// Redis's own CPU time it shows how much other work shared the machine during a run.
pub fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        bail!("no cpu line in /proc/stat");
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        bail!("unexpected cpu line in /proc/stat");
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    Ok((total - idle) as f64 / clock_ticks())
}

/// The machine's UDP datagrams dropped because a socket's receive buffer was full
/// (`RcvbufErrors` of the `Udp:` lines of `/proc/net/snmp`), since boot: every socket's,
/// the server's and the load generator's peers' alike.
pub fn udp_rcvbuf_errors() -> anyhow::Result<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").context("reading /proc/net/snmp")?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        bail!("no Udp lines in /proc/net/snmp");
    };
    let Some(i) = names.split_whitespace().position(|n| n == "RcvbufErrors") else {
        bail!("no RcvbufErrors in /proc/net/snmp");
    };
    values
        .split_whitespace()
        .nth(i)
        .context("short Udp line in /proc/net/snmp")?
        .parse()
        .context("RcvbufErrors")
}

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kib = v.trim().trim_end_matches("kB").trim();
            return kib.parse().context("VmRSS");
        }
    }
    bail!("no VmRSS in {path}")
}

/// Raises this process's open-file limit to its hard limit: 4 sockets per room add up.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write to / read from the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
    let cur = lim.rlim_cur as u64;
    cur
}
