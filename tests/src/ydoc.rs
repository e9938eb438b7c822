//! Shared-document clients for tests: a `yrs` client speaking the y-websocket protocol over a
//! real `tokio-tungstenite` websocket ([`YrsClient`]), and the stock JavaScript client (`yjs` with
//! the unmodified `y-websocket` provider, in node) driven over stdin/stdout ([`NodeYjsClient`]).
//!
//! Both edit the shared text named [`TEXT`], with UTF-16 offsets like JavaScript, and keep the
//! awareness states they receive (the yrs client as raw JSON by client id, the node client as its
//! provider reports them), so tests can check what the server relays.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::encoding::read::Cursor;
use yrs::sync::protocol::{MessageReader, SyncMessage};
use yrs::sync::Message;
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::{
    Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Text, TextRef, Transact, Update,
};

use crate::client::WAIT;

/// The name of the shared text in every Yuntiao document.
pub const TEXT: &str = "text";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The document websocket URL for `case`/`doc` with `token`.
pub fn doc_url(port: u16, case: &str, doc: &str, token: &str) -> String {
    format!("ws://127.0.0.1:{port}/docs/{case}/{doc}?token={token}")
}

/// A `yrs` document connected to the server.
pub struct YrsClient {
    ws: Ws,
    pub doc: Doc,
    text: TextRef,
    /// Whether the server's sync step 2 (its whole state) has arrived.
    pub synced: bool,
    /// The close code and reason, once the server closed the connection.
    pub closed: Option<(u16, String)>,
    /// Binary messages received, raw.
    pub received: usize,
    /// Awareness states received, by client id: the state's JSON text (removed on `null`).
    pub awareness: HashMap<u64, String>,
    /// Awareness messages received.
    pub awareness_messages: usize,
    /// Document updates received (sync step 2 and update messages).
    pub updates_received: usize,
}

impl YrsClient {
    /// Connects and sends sync step 1; does not wait for anything.
    pub async fn connect(url: &str) -> anyhow::Result<YrsClient> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .context("doc ws connect")?;
        let doc = Doc::with_options(Options {
            offset_kind: OffsetKind::Utf16,
            ..Options::default()
        });
        let text = doc.get_or_insert_text(TEXT);
        let mut c = YrsClient {
            ws,
            doc,
            text,
            synced: false,
            closed: None,
            received: 0,
            awareness: HashMap::new(),
            awareness_messages: 0,
            updates_received: 0,
        };
        let sv = c.doc.transact().state_vector();
        c.send(Message::Sync(SyncMessage::SyncStep1(sv))).await?;
        Ok(c)
    }

    /// Connects and waits until the server's state has arrived.
    pub async fn connect_synced(url: &str) -> anyhow::Result<YrsClient> {
        let mut c = YrsClient::connect(url).await?;
        c.wait_synced().await?;
        Ok(c)
    }

    pub async fn send(&mut self, msg: Message) -> anyhow::Result<()> {
        self.send_raw(msg.encode_v1()).await
    }

    /// Sends arbitrary bytes as one binary frame.
    pub async fn send_raw(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.ws.send(WsMessage::Binary(bytes.into())).await?;
        Ok(())
    }

    pub async fn send_text_frame(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(WsMessage::Text(text.into())).await?;
        Ok(())
    }

    pub fn text(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }

    /// Inserts at a UTF-16 offset and sends the update.
    pub async fn insert(&mut self, index: u32, s: &str) -> anyhow::Result<()> {
        let update = {
            let mut txn = self.doc.transact_mut();
            self.text.insert(&mut txn, index, s);
            txn.encode_update_v1()
        };
        self.send(Message::Sync(SyncMessage::Update(update))).await
    }

    /// Deletes `len` UTF-16 units at `index` and sends the update.
    pub async fn delete(&mut self, index: u32, len: u32) -> anyhow::Result<()> {
        let update = {
            let mut txn = self.doc.transact_mut();
            self.text.remove_range(&mut txn, index, len);
            txn.encode_update_v1()
        };
        self.send(Message::Sync(SyncMessage::Update(update))).await
    }

    /// Handles one incoming websocket message; `false` once the connection is closed.
    async fn handle(&mut self, m: WsMessage) -> anyhow::Result<bool> {
        match m {
            WsMessage::Binary(data) => {
                self.received += 1;
                let mut replies = Vec::new();
                {
                    let mut decoder = DecoderV1::new(Cursor::new(&data));
                    let reader = MessageReader::new(&mut decoder);
                    for msg in reader {
                        match msg.context("decoding a server message")? {
                            Message::Sync(SyncMessage::SyncStep1(sv)) => {
                                let u = self.doc.transact().encode_state_as_update_v1(&sv);
                                replies.push(Message::Sync(SyncMessage::SyncStep2(u)));
                            }
                            Message::Sync(SyncMessage::SyncStep2(u)) => {
                                self.updates_received += 1;
                                self.apply(&u)?;
                                self.synced = true;
                            }
                            Message::Sync(SyncMessage::Update(u)) => {
                                self.updates_received += 1;
                                self.apply(&u)?
                            }
                            Message::Awareness(update) => {
                                self.awareness_messages += 1;
                                for (client, entry) in update.clients {
                                    if &*entry.json == "null" {
                                        self.awareness.remove(&client.get());
                                    } else {
                                        self.awareness.insert(client.get(), entry.json.to_string());
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                for r in replies {
                    self.send(r).await?;
                }
                Ok(true)
            }
            WsMessage::Close(frame) => {
                self.closed = Some(
                    frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((u16::from(CloseCode::Status), String::new())),
                );
                Ok(false)
            }
            _ => Ok(true),
        }
    }

    fn apply(&mut self, u: &[u8]) -> anyhow::Result<()> {
        let update = Update::decode_v1(u).context("decoding an update")?;
        self.doc
            .transact_mut()
            .apply_update(update)
            .context("applying an update")?;
        Ok(())
    }

    /// Reads and handles messages for `dur` (or until closed).
    pub async fn pump(&mut self, dur: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + dur;
        while self.closed.is_none() {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => break,
                Ok(None) | Ok(Some(Err(_))) => {
                    self.closed.get_or_insert((1006, String::new()));
                    break;
                }
                Ok(Some(Ok(m))) => {
                    self.handle(m).await?;
                }
            }
        }
        Ok(())
    }

    /// Waits until `pred` holds for the text.
    pub async fn wait_text(&mut self, pred: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let t = self.text();
            if pred(&t) {
                return Ok(t);
            }
            if self.closed.is_some() {
                bail!("closed {:?} while waiting; text {t:?}", self.closed);
            }
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => bail!("timed out waiting for the text; it is {t:?}"),
                Ok(None) | Ok(Some(Err(_))) => {
                    self.closed.get_or_insert((1006, String::new()));
                }
                Ok(Some(Ok(m))) => {
                    self.handle(m).await?;
                }
            }
        }
    }

    /// Reads and handles messages until `pred` holds for the client (or fails after [`WAIT`]).
    pub async fn wait_until(
        &mut self,
        what: &str,
        pred: impl Fn(&YrsClient) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !pred(self) {
            if self.closed.is_some() {
                bail!("closed {:?} while waiting for {what}", self.closed);
            }
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => bail!("timed out waiting for {what}"),
                Ok(None) | Ok(Some(Err(_))) => {
                    self.closed.get_or_insert((1006, String::new()));
                }
                Ok(Some(Ok(m))) => {
                    self.handle(m).await?;
                }
            }
        }
        Ok(())
    }

    pub async fn wait_synced(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.synced {
            if self.closed.is_some() {
                bail!("closed {:?} before syncing", self.closed);
            }
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => bail!("timed out waiting for sync step 2"),
                Ok(None) | Ok(Some(Err(_))) => {
                    self.closed.get_or_insert((1006, String::new()));
                }
                Ok(Some(Ok(m))) => {
                    self.handle(m).await?;
                }
            }
        }
        Ok(())
    }

    /// Waits for the server to close the connection; returns (code, reason).
    pub async fn wait_close(&mut self) -> anyhow::Result<(u16, String)> {
        self.pump(WAIT).await?;
        self.closed
            .clone()
            .context("the server did not close the connection")
    }

    /// The encoded state vector of this client's document.
    pub fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }
}

/// The stock JavaScript client, `tests/js/yclient.mjs`, in a node process.
pub struct NodeYjsClient {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    events: mpsc::UnboundedReceiver<Value>,
    /// The latest text reported.
    pub text: String,
    pub synced: bool,
    pub closes: Vec<(i64, String)>,
    /// The provider's awareness states as last reported, by client id (its own included).
    pub awareness: HashMap<u64, Value>,
    /// The client's own awareness (and document) client id, once reported.
    pub client_id: Option<u64>,
    /// The latest `state` report: (text, state vector, Yjs v1 encoding, base64).
    pub state: Option<(String, String)>,
    /// `random` edit runs finished.
    pub random_done: usize,
}

/// `tests/js`, where the npm packages are installed (`npm ci` by scripts/test.sh).
pub fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

impl NodeYjsClient {
    /// Starts a client on `url` (`ws://host:port/docs/<case>`), document `doc`.
    pub async fn start(base_url: &str, doc: &str, token: &str) -> anyhow::Result<NodeYjsClient> {
        let dir = js_dir();
        if !dir.join("node_modules/y-websocket").exists() {
            bail!(
                "{}/node_modules is missing: run `npm ci` there (scripts/test.sh does)",
                dir.display()
            );
        }
        let mut child = tokio::process::Command::new("node")
            .arg("yclient.mjs")
            .arg(base_url)
            .arg(doc)
            .arg(token)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting node")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(NodeYjsClient {
            child,
            stdin,
            events: rx,
            text: String::new(),
            synced: false,
            closes: Vec::new(),
            awareness: HashMap::new(),
            client_id: None,
            state: None,
            random_done: 0,
        })
    }

    async fn command(&mut self, cmd: Value) -> anyhow::Result<()> {
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Inserts at a UTF-16 offset.
    pub async fn insert(&mut self, index: u32, s: &str) -> anyhow::Result<()> {
        self.command(json!({"op": "insert", "index": index, "text": s}))
            .await
    }

    pub async fn delete(&mut self, index: u32, len: u32) -> anyhow::Result<()> {
        self.command(json!({"op": "delete", "index": index, "len": len}))
            .await
    }

    fn absorb(&mut self, v: &Value) {
        match v["ev"].as_str() {
            Some("text") => self.text = v["text"].as_str().unwrap_or_default().to_owned(),
            Some("synced") => self.synced = true,
            Some("close") => self.closes.push((
                v["code"].as_i64().unwrap_or(0),
                v["reason"].as_str().unwrap_or_default().to_owned(),
            )),
            Some("awareness") => {
                self.client_id = v["self"].as_u64();
                self.awareness = v["states"]
                    .as_object()
                    .map(|states| {
                        states
                            .iter()
                            .filter_map(|(k, s)| Some((k.parse().ok()?, s.clone())))
                            .collect()
                    })
                    .unwrap_or_default();
            }
            Some("state") => {
                self.state = Some((
                    v["text"].as_str().unwrap_or_default().to_owned(),
                    v["sv"].as_str().unwrap_or_default().to_owned(),
                ))
            }
            Some("random_done") => self.random_done += 1,
            _ => {}
        }
    }

    /// Sets the provider's local awareness state (`null` removes it).
    pub async fn set_awareness(&mut self, state: Value) -> anyhow::Result<()> {
        self.command(json!({"op": "awareness", "state": state}))
            .await
    }

    /// Asks for a report of the awareness states (also sent on every change).
    pub async fn query_awareness(&mut self) -> anyhow::Result<()> {
        self.command(json!({"op": "awareness_states"})).await
    }

    /// Starts `count` random edits seeded with `seed` in the client (see yclient.mjs); they run
    /// on their own, `random_done` counts finished runs.
    pub async fn random_edits(
        &mut self,
        seed: u32,
        count: u32,
        max_delay_ms: u32,
    ) -> anyhow::Result<()> {
        self.command(
            json!({"op": "random", "seed": seed, "count": count, "maxDelayMs": max_delay_ms}),
        )
        .await
    }

    /// The client's text and state vector (Yjs v1, base64), now.
    pub async fn state(&mut self) -> anyhow::Result<(String, String)> {
        self.state = None;
        self.command(json!({"op": "state"})).await?;
        self.wait("state", |c| c.state.is_some()).await?;
        Ok(self.state.clone().unwrap_or_default())
    }

    /// Waits until `pred` holds for the client, reading its reports.
    pub async fn wait_until(
        &mut self,
        what: &str,
        pred: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<()> {
        self.wait(what, pred).await
    }

    /// Kills the node process (SIGKILL): the provider says nothing, the server sees the
    /// connection drop.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for the next event satisfying `pred` on the client's state.
    async fn wait(&mut self, what: &str, pred: impl Fn(&Self) -> bool) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !pred(self) {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => bail!(
                    "node client: timed out waiting for {what}; text {:?}, closes {:?}",
                    self.text,
                    self.closes
                ),
                Ok(None) => bail!("node client exited while waiting for {what}"),
                Ok(Some(v)) => self.absorb(&v),
            }
        }
        Ok(())
    }

    pub async fn wait_synced(&mut self) -> anyhow::Result<()> {
        self.wait("sync", |c| c.synced).await
    }

    pub async fn wait_text(&mut self, pred: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        self.wait("text", |c| pred(&c.text)).await?;
        Ok(self.text.clone())
    }

    /// Waits for the first close the provider reports; returns (code, reason).
    pub async fn wait_close(&mut self) -> anyhow::Result<(i64, String)> {
        self.wait("close", |c| !c.closes.is_empty()).await?;
        Ok(self.closes[0].clone())
    }

    pub async fn quit(mut self) {
        let _ = self.command(json!({"op": "quit"})).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// A string's length in UTF-16 code units (the offsets Yjs and the y-websocket clients use).
pub fn utf16_len(s: &str) -> u32 {
    s.encode_utf16().count() as u32
}

/// A Yjs update made by a scratch document: it inserts `s` at the start of an empty text.
pub fn scratch_update(s: &str) -> Vec<u8> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text(TEXT);
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, s);
    txn.encode_update_v1()
}
