//! A minimal y-websocket client for the shared-document benchmark: a `yrs` document over a
//! `tokio-tungstenite` websocket, speaking the sync protocol the way the stock browser provider
//! does (send sync step 1 on open, answer the server's sync step 1 with a sync step 2, apply
//! sync step 2 and updates).
//!
//! It works unchanged against Yuntiao (`/docs/{case}/{doc}?token=…`) and against the stock
//! `@y/websocket-server` (`/<room>`): the benchmark only changes the URL.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::encoding::read::Cursor;
use yrs::sync::protocol::{MessageReader, SyncMessage};
use yrs::sync::Message;
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, Transact, Update};

use crate::conn::Ws;
use crate::docs_trace::TEXT;

/// How long a client waits for the server before giving up.
pub const WAIT: Duration = Duration::from_secs(60);

/// What one binary frame from the server carried.
#[derive(Default)]
pub struct Received {
    /// Non-empty updates (sync step 2 or update messages) applied to the document.
    pub updates: usize,
    /// Whether a sync step 2 was among them (the answer to our sync step 1).
    pub step2: bool,
}

/// Opens the websocket (TCP_NODELAY, like a browser).
pub async fn connect(url: &str) -> anyhow::Result<Ws> {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .context("connecting the document websocket")?;
    Ok(ws)
}

/// Sends one y-protocol message as a binary frame.
pub async fn send(ws: &mut Ws, msg: Message) -> anyhow::Result<()> {
    ws.send(WsMessage::Binary(Bytes::from(msg.encode_v1())))
        .await
        .context("sending a document message")
}

fn apply(doc: &Doc, bytes: &[u8]) -> anyhow::Result<bool> {
    let update = Update::decode_v1(bytes).context("decoding an update")?;
    if update.is_empty() {
        return Ok(false);
    }
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| anyhow!("applying an update: {e}"))?;
    Ok(true)
}

/// Handles one binary frame: applies what it carries to `doc` and returns the replies to send
/// (a sync step 2 for the server's sync step 1).
pub fn handle(doc: &Doc, data: &[u8]) -> anyhow::Result<(Received, Vec<Message>)> {
    let mut got = Received::default();
    let mut replies = Vec::new();
    let mut decoder = DecoderV1::new(Cursor::new(data));
    for msg in MessageReader::new(&mut decoder) {
        match msg.context("decoding a server message")? {
            Message::Sync(SyncMessage::SyncStep1(sv)) => {
                let u = doc.transact().encode_state_as_update_v1(&sv);
                replies.push(Message::Sync(SyncMessage::SyncStep2(u)));
            }
            Message::Sync(SyncMessage::SyncStep2(u)) => {
                got.step2 = true;
                got.updates += usize::from(apply(doc, &u)?);
            }
            Message::Sync(SyncMessage::Update(u)) => got.updates += usize::from(apply(doc, &u)?),
            _ => {}
        }
    }
    Ok((got, replies))
}

/// Reads the next binary frame (answering nothing), within [`WAIT`].
pub async fn next_binary(ws: &mut Ws) -> anyhow::Result<Bytes> {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .map_err(|_| anyhow!("no message from the document server within {WAIT:?}"))?;
        match m {
            Some(Ok(WsMessage::Binary(b))) => return Ok(b),
            Some(Ok(WsMessage::Close(f))) => {
                bail!("the document server closed the connection: {f:?}")
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("document websocket error: {e}"),
            None => bail!("the document connection closed"),
        }
    }
}

/// What a sync round trip took.
pub struct Synced {
    /// When the frame carrying sync step 2 arrived (before it was decoded and applied).
    pub step2_at: Instant,
    /// Size of that frame.
    pub step2_bytes: usize,
}

/// Sends sync step 1 and handles messages until the server's sync step 2 has been applied.
pub async fn sync(ws: &mut Ws, doc: &Doc) -> anyhow::Result<Synced> {
    let sv = doc.transact().state_vector();
    send(ws, Message::Sync(SyncMessage::SyncStep1(sv))).await?;
    loop {
        let data = next_binary(ws).await?;
        let at = Instant::now();
        let (got, replies) = handle(doc, &data)?;
        for r in replies {
            send(ws, r).await?;
        }
        if got.step2 {
            return Ok(Synced {
                step2_at: at,
                step2_bytes: data.len(),
            });
        }
    }
}

/// The document's shared text.
pub fn text(doc: &Doc) -> String {
    let t = doc.get_or_insert_text(TEXT);
    t.get_string(&doc.transact())
}

/// Closes the websocket politely, waiting at most two seconds.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// A late joiner: connect, sync with an empty document, read the text.
pub struct Joined {
    /// TCP connect + websocket upgrade.
    pub connect: Duration,
    /// Connect start → the frame with sync step 2 received.
    pub received: Duration,
    /// Connect start → sync step 2 applied and the text read.
    pub total: Duration,
    /// Size of the frame carrying sync step 2.
    pub step2_bytes: usize,
    pub text: String,
    /// The joiner's document, holding the whole state after the sync.
    pub doc: yrs::Doc,
    pub ws: Ws,
}

/// Joins `url` with an empty document and times it.
pub async fn late_join(url: &str, client_id: u64) -> anyhow::Result<Joined> {
    let t0 = Instant::now();
    let mut ws = connect(url).await?;
    let connect = t0.elapsed();
    let doc = crate::docs_trace::new_doc(client_id);
    let s = sync(&mut ws, &doc).await?;
    let text = text(&doc);
    let total = t0.elapsed();
    Ok(Joined {
        connect,
        received: s.step2_at - t0,
        total,
        step2_bytes: s.step2_bytes,
        text,
        doc,
        ws,
    })
}
