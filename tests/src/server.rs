//! The real `yuntiao` binary, started per test.
//!
//! [`Server::start`] builds the binary once per test process (a no-op when it is fresh; set
//! `YUNTIAO_BIN` to use a prebuilt one), starts it on a free loopback port with the embedded
//! store in a temp dir or against a [`crate::redis_server::RedisServer`], and waits for
//! `/healthz`. [`Server::kill9`] and [`Server::restart`] let a test crash it and bring it back on
//! the same port and store, as an operator's supervisor would.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// Admin token the harness configures.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// HS256 secret the harness configures (tests mint their own forged or odd tokens with it).
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789";

/// Where the case log lives.
#[derive(Clone, Debug)]
pub enum StoreKind {
    Embedded,
    Redis(String),
}

/// Path of the `yuntiao` binary, built once per test process.
pub fn binary() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("YUNTIAO_BIN") {
            return Ok(PathBuf::from(p));
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-q", "-p", "yuntiao-server", "--bin", "yuntiao"])
            .current_dir(&root)
            .status()
            .map_err(|e| format!("running cargo build: {e}"))?;
        if !status.success() {
            return Err("cargo build of yuntiao failed".into());
        }
        // The test executable lives in target/<profile>/deps/.
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .ok_or("unexpected test executable location")?;
        let bin = profile_dir.join("yuntiao");
        if bin.exists() {
            Ok(bin)
        } else {
            Err(format!("{} not found after build", bin.display()))
        }
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running `yuntiao serve`.
pub struct Server {
    pub port: u16,
    pub store: StoreKind,
    pub data: tempfile::TempDir,
    /// The admin token in force (the harness's, or the one generated in dev mode).
    pub admin_token: String,
    /// Dev mode: no secrets configured, the server generates and keeps its own.
    dev_mode: bool,
    extra: Vec<String>,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Server {
    /// Starts a server with the embedded store.
    pub async fn embedded() -> anyhow::Result<Server> {
        Server::start(StoreKind::Embedded, &[]).await
    }

    /// Starts a server on the given store with extra `serve` arguments.
    pub async fn start(store: StoreKind, extra: &[&str]) -> anyhow::Result<Server> {
        Server::launch(store, extra, false).await
    }

    /// Starts a server in dev mode (no secrets configured): it generates an admin token and a
    /// signing secret in its data directory; `admin_token` is read from there.
    pub async fn dev_mode() -> anyhow::Result<Server> {
        Server::launch(StoreKind::Embedded, &[], true).await
    }

    async fn launch(store: StoreKind, extra: &[&str], dev_mode: bool) -> anyhow::Result<Server> {
        let data = tempfile::Builder::new().prefix("yuntiao-data-").tempdir()?;
        let mut s = Server {
            port: free_port()?,
            store,
            data,
            admin_token: ADMIN_TOKEN.to_owned(),
            dev_mode,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            http: reqwest::Client::new(),
        };
        s.spawn().await?;
        Ok(s)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(binary()?);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data")
            .arg(self.data.path())
            // An ephemeral UDP port per server, unless the test names one.
            .args(if self.extra.iter().any(|a| a == "--media-listen") {
                vec![]
            } else {
                vec!["--media-listen", "127.0.0.1:0"]
            })
            .args(&self.extra)
            .env_remove("YUNTIAO_ADMIN_TOKEN")
            .env_remove("YUNTIAO_JWT_SECRET")
            .env("YUNTIAO_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if !self.dev_mode {
            cmd.env("YUNTIAO_ADMIN_TOKEN", ADMIN_TOKEN)
                .env("YUNTIAO_JWT_SECRET", JWT_SECRET);
        }
        if let StoreKind::Redis(url) = &self.store {
            cmd.arg("--redis").arg(url);
        }
        self.child = Some(cmd.spawn().context("starting yuntiao")?);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(self.url("/healthz")).send().await {
                if r.status().is_success() {
                    if self.dev_mode {
                        let secrets = std::fs::read(self.data.path().join("secrets.json"))?;
                        let v: Value = serde_json::from_slice(&secrets)?;
                        self.admin_token =
                            v["admin_token"].as_str().context("admin_token")?.to_owned();
                    }
                    return Ok(());
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("yuntiao exited during start-up: {status}");
            }
            if Instant::now() > deadline {
                bail!("yuntiao did not become healthy within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process with SIGKILL: no shutdown, no flushing.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port, store and data directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.spawn().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The server's `/metrics` page.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(self.url("/metrics")).await?.text().await?)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// Calls the admin API; returns (status, body).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// Creates a case with one consumer, one merchant, one mediator and one judge and mints an
    /// invite for each.
    pub async fn four_party_case(&self) -> anyhow::Result<Case> {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/admin/cases",
                Some(json!({
                    "title": "网购退款纠纷 (refund dispute)",
                    "participants": [
                        {"role": "consumer", "name": "张三"},
                        {"role": "merchant", "name": "某某电器店"},
                        {"role": "mediator", "name": "王调解员"},
                        {"role": "judge", "name": "李法官"},
                    ]
                })),
            )
            .await?;
        if status != 201 {
            bail!("create case: {status} {body}");
        }
        let case = body["case"].as_str().context("case id")?.to_owned();
        let mut links = Vec::new();
        for (role, name) in [
            ("consumer", "张三"),
            ("merchant", "某某电器店"),
            ("mediator", "王调解员"),
            ("judge", "李法官"),
        ] {
            links.push(self.invite(&case, role, name, "2h").await?);
        }
        Ok(Case {
            id: case,
            invites: links,
        })
    }

    /// A [`four_party_case`](Self::four_party_case) with everyone joined over signaling and
    /// both parties admitted by the mediator: staff enter directly, each party waits in the
    /// lobby and has received its admission (`welcome` with status `admitted`) on return.
    /// Returns the case and the clients in the order consumer, merchant, mediator, judge.
    pub async fn four_admitted(&self) -> anyhow::Result<(Case, [crate::Client; 4])> {
        let case = self.four_party_case().await?;
        let url = self.ws_url();
        let status = |w: &serde_json::Value, want: &str| {
            anyhow::ensure!(w["status"] == want, "expected status {want}: {w}");
            Ok(())
        };
        let (mut mediator, w) = crate::Client::join(&url, &case.mediator().token, None).await?;
        status(&w, "admitted")?;
        let (judge, w) = crate::Client::join(&url, &case.judge().token, None).await?;
        status(&w, "admitted")?;
        let mut parties = Vec::new();
        for p in [case.consumer(), case.merchant()] {
            let (mut c, w) = crate::Client::join(&url, &p.token, None).await?;
            status(&w, "lobby")?;
            mediator
                .ok(json!({"type": "admit", "participant": p.participant}))
                .await?;
            let w = c.wait_for(|m| m["type"] == "welcome").await?;
            status(&w, "admitted")?;
            parties.push(c);
        }
        let merchant = parties.pop().expect("two parties");
        let consumer = parties.pop().expect("two parties");
        Ok((case, [consumer, merchant, mediator, judge]))
    }

    /// Starts the server with its media plane on a free loopback UDP port (returned).
    pub async fn start_with_media(store: StoreKind) -> anyhow::Result<(Server, u16)> {
        let port = free_udp_port();
        let server =
            Server::start(store, &["--media-listen", &format!("127.0.0.1:{port}")]).await?;
        Ok((server, port))
    }

    /// Mints an invite.
    pub async fn invite(
        &self,
        case: &str,
        role: &str,
        name: &str,
        ttl: &str,
    ) -> anyhow::Result<Invite> {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                &format!("/admin/cases/{case}/invites"),
                Some(json!({"role": role, "name": name, "ttl": ttl})),
            )
            .await?;
        if status != 201 {
            bail!("mint invite: {status} {body}");
        }
        let url = body["url"].as_str().context("url")?;
        let token = url
            .split_once("#token=")
            .context("token in fragment")?
            .1
            .to_owned();
        Ok(Invite {
            token,
            jti: body["jti"].as_str().context("jti")?.to_owned(),
            participant: body["participant"]
                .as_str()
                .context("participant")?
                .to_owned(),
            url: url.to_owned(),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A minted invite.
#[derive(Clone, Debug)]
pub struct Invite {
    pub url: String,
    pub token: String,
    pub jti: String,
    pub participant: String,
}

/// A case with four invites: consumer, merchant, mediator, judge (in that order).
#[derive(Clone, Debug)]
pub struct Case {
    pub id: String,
    pub invites: Vec<Invite>,
}

impl Case {
    pub fn consumer(&self) -> &Invite {
        &self.invites[0]
    }
    pub fn merchant(&self) -> &Invite {
        &self.invites[1]
    }
    pub fn mediator(&self) -> &Invite {
        &self.invites[2]
    }
    pub fn judge(&self) -> &Invite {
        &self.invites[3]
    }
}

/// A UDP port on 127.0.0.1 free at the time of the call.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("binding a UDP socket on 127.0.0.1")
        .port()
}
