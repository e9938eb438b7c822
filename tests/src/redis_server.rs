//! A throwaway `redis-server` per test.
//!
//! Integration tests run against a real Redis (DESIGN.md, "How we know it works"), but never the
//! shared one on port 6379: each [`RedisServer`] is its own `redis-server` process on a free
//! loopback port, with its own temporary directory, so tests stay isolated from each other and
//! from whatever else runs on the machine. It is configured like production for durability (AOF,
//! `appendfsync always`, no RDB snapshots), so a test that kills it and starts it again sees what
//! production would see.
//!
//! The process is killed and its directory removed when the value is dropped.
//!
//! Shortcut taken: the free port is found by binding `127.0.0.1:0` and releasing it, so another
//! process may grab it before Redis does. Startup is retried on a fresh port when that happens,
//! and a server is only accepted once `INFO` confirms it is our process answering.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long `redis-server` may take to answer its first `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh ports tried before giving up.
const START_ATTEMPTS: usize = 5;
const REDIS_BIN: &str = "redis-server";

/// A running `redis-server` owned by the test. See the module docs.
#[derive(Debug)]
pub struct RedisServer {
    /// The loopback port it listens on.
    pub port: u16,
    /// `redis://127.0.0.1:<port>/`.
    pub url: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a fresh `redis-server` (from `PATH`) and waits until it answers `PING`.
    pub fn start() -> anyhow::Result<RedisServer> {
        let dir = tempfile::Builder::new()
            .prefix("yuntiao-redis-")
            .tempdir()
            .context("creating a temp dir for redis-server")?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match spawn_and_wait(port, dir.path()) {
                Ok(child) => {
                    return Ok(RedisServer {
                        port,
                        url: format!("redis://127.0.0.1:{port}/"),
                        child: Some(child),
                        dir,
                    });
                }
                Err(e) if e.is::<MissingBinary>() => return Err(e),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
            .context(format!(
                "redis-server did not start after {START_ATTEMPTS} attempts"
            )))
    }

    /// The server's working directory (holds the AOF and `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client for this server, for tests that inspect keys directly.
    pub fn client(&self) -> anyhow::Result<redis::Client> {
        redis::Client::open(self.url.as_str()).context("redis client for the test server")
    }

    /// Kills the server abruptly (SIGKILL, like a crash or power cut of its host) and starts it
    /// again on the same port and directory, so it reloads its data from the AOF.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        // The port was ours a moment ago; retry briefly in case the kernel has not released it.
        loop {
            match spawn_and_wait(self.port, self.dir.path()) {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline && !e.is::<MissingBinary>() => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.context("restarting redis-server")),
            }
        }
    }

    /// Kills the server (SIGKILL) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        // `dir` (a TempDir) removes itself after this.
    }
}

/// Marker error: `redis-server` is not installed; retrying cannot help.
#[derive(Debug)]
struct MissingBinary;

impl std::fmt::Display for MissingBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{REDIS_BIN}` was not found on PATH; install Redis (e.g. `apt-get install redis-server`) to run these tests"
        )
    }
}

impl std::error::Error for MissingBinary {}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Starts `redis-server` on `port` in `dir` and waits until this very process answers.
fn spawn_and_wait(port: u16, dir: &Path) -> anyhow::Result<Child> {
    let log = dir.join("redis.log");
    let mut child = Command::new(REDIS_BIN)
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args(["--save", ""])
        .args(["--appendonly", "yes"])
        .args(["--appendfsync", "always"])
        .args(["--daemonize", "no"])
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::Error::new(MissingBinary),
            _ => anyhow::Error::new(e).context(format!("spawning {REDIS_BIN}")),
        })?;

    let pid = child.id();
    let url = format!("redis://127.0.0.1:{port}/");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().context("polling redis-server")? {
            bail!(
                "redis-server on port {port} exited with {status}; log:\n{}",
                log_tail(&log)
            );
        }
        match ping_ours(&url, pid) {
            Ok(true) => return Ok(child),
            Ok(false) => {
                // Another Redis holds the port; ours will fail to bind and exit.
                let _ = child.kill();
                let _ = child.wait();
                bail!("port {port} is taken by another redis-server");
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e.context(format!(
                    "redis-server on port {port} did not answer PING within {START_TIMEOUT:?}; log:\n{}",
                    log_tail(&log)
                )));
            }
        }
    }
}

/// Pings the server at `url`; `Ok(true)` if it answers and is the process `pid`.
fn ping_ours(url: &str, pid: u32) -> anyhow::Result<bool> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_connection_with_timeout(Duration::from_millis(500))?;
    let pong: String = redis::cmd("PING").query(&mut con)?;
    if pong != "PONG" {
        bail!("unexpected PING reply");
    }
    let info: String = redis::cmd("INFO").arg("server").query(&mut con)?;
    let server_pid = info
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    Ok(server_pid == Some(pid))
}

/// The last lines of the server log, for error messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
