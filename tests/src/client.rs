//! A protocol-v1 websocket client for tests: a real `tokio-tungstenite` connection with helpers
//! to send requests, wait for their answers and assert what did or did not arrive.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a test waits for an expected message.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Client {
    ws: Ws,
    next_id: u64,
    /// Messages received but not yet consumed by a `wait_*` call.
    pending: VecDeque<Value>,
    /// Every `event` message this client has received, in order.
    pub events: Vec<Value>,
    /// Set once the server closed the connection.
    pub closed: bool,
    pub participant: Option<String>,
}

impl Client {
    pub async fn connect(url: &str) -> anyhow::Result<Client> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .context("ws connect")?;
        Ok(Client {
            ws,
            next_id: 1,
            pending: VecDeque::new(),
            events: Vec::new(),
            closed: false,
            participant: None,
        })
    }

    /// Connects and joins; returns the client and the welcome.
    pub async fn join(
        url: &str,
        token: &str,
        resume_from: Option<u64>,
    ) -> anyhow::Result<(Client, Value)> {
        let mut c = Client::connect(url).await?;
        let mut msg = json!({"type": "join", "token": token});
        if let Some(r) = resume_from {
            msg["resume_from"] = json!(r);
        }
        let answer = c.request(msg).await?;
        if answer["type"] != "welcome" {
            bail!("join failed: {answer}");
        }
        c.participant = answer["participant"].as_str().map(str::to_owned);
        Ok((c, answer))
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) -> anyhow::Result<()> {
        self.ws.send(Message::Text(text.into().into())).await?;
        Ok(())
    }

    /// Sends a message with a fresh request id and waits for the answer carrying that id
    /// (`ack`, `error`, `welcome`, `pong`), keeping everything else that arrives meanwhile.
    pub async fn request(&mut self, mut msg: Value) -> anyhow::Result<Value> {
        let id = format!("r{}", self.next_id);
        self.next_id += 1;
        msg["id"] = json!(id);
        self.send_text(msg.to_string()).await?;
        self.wait_for(|m| m["id"] == json!(id)).await
    }

    /// Like [`request`](Self::request) but expects an `ack` and returns its `seq`.
    pub async fn ok(&mut self, msg: Value) -> anyhow::Result<Option<u64>> {
        let a = self.request(msg.clone()).await?;
        if a["type"] != "ack" {
            bail!("expected ack for {msg}, got {a}");
        }
        Ok(a["seq"].as_u64())
    }

    /// Expects an `error` with this code.
    pub async fn err(&mut self, msg: Value, code: &str) -> anyhow::Result<Value> {
        let a = self.request(msg.clone()).await?;
        if a["type"] != "error" || a["code"] != code {
            bail!("expected error {code} for {msg}, got {a}");
        }
        Ok(a)
    }

    async fn read_one(&mut self, timeout: Duration) -> anyhow::Result<Option<Value>> {
        if self.closed {
            return Ok(None);
        }
        loop {
            let next = match tokio::time::timeout(timeout, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(n) => n,
            };
            match next {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str())
                        .with_context(|| format!("server sent non-JSON: {t}"))?;
                    if v["type"] == "event" {
                        self.events.push(v.clone());
                    }
                    return Ok(Some(v));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    self.closed = true;
                    return Ok(None);
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Waits for the first message (already received or new) matching `pred` and removes it.
    pub async fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        if let Some(pos) = self.pending.iter().position(&pred) {
            return Ok(self.pending.remove(pos).unwrap_or_default());
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_one(left).await? {
                Some(v) if pred(&v) => return Ok(v),
                Some(v) => self.pending.push_back(v),
                None if self.closed => bail!(
                    "connection closed while waiting; {}",
                    self.pending_summary()
                ),
                None => bail!("timed out waiting; {}", self.pending_summary()),
            }
        }
    }

    fn pending_summary(&self) -> String {
        let kinds: Vec<String> = self
            .pending
            .iter()
            .map(|m| {
                format!(
                    "{}:{}",
                    m["type"].as_str().unwrap_or("?"),
                    m["kind"].as_str().or(m["code"].as_str()).unwrap_or("")
                )
            })
            .collect();
        format!("unconsumed messages: [{}]", kinds.join(", "))
    }

    /// Waits for an event of this kind.
    pub async fn wait_event(&mut self, kind: &str) -> anyhow::Result<Value> {
        self.wait_for(|m| m["type"] == "event" && m["kind"] == kind)
            .await
    }

    /// Reads everything that arrives within `quiet` and returns it (also kept as pending).
    pub async fn drain(&mut self, quiet: Duration) -> anyhow::Result<Vec<Value>> {
        while let Some(v) = self.read_one(quiet).await? {
            self.pending.push_back(v);
        }
        Ok(self.pending.iter().cloned().collect())
    }

    /// Round-trips a ping: everything the server sent before the pong is then received.
    pub async fn sync(&mut self) -> anyhow::Result<()> {
        let a = self.request(json!({"type": "ping"})).await?;
        if a["type"] != "pong" {
            bail!("expected pong, got {a}");
        }
        Ok(())
    }

    /// The highest event seq received so far.
    pub fn last_seq(&self) -> u64 {
        self.events
            .iter()
            .filter_map(|e| e["seq"].as_u64())
            .max()
            .unwrap_or(0)
    }

    /// Closes the connection cleanly.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
