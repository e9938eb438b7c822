//! Shared documents (issue 4), the points `documents.rs` leaves open, against the real binary:
//!
//! * **stored before broadcast, as an ordering**: with the Redis store failed (killed, or frozen
//!   with SIGSTOP) a writer's edit reaches no reader, every connection closes with
//!   `store_unavailable`, and the document does not hold the edit once Redis is back; the writer
//!   reconnects and resends it (a server mutated to broadcast before storing fails both). On
//!   both stores, what a reader saw survives a kill -9 of the server taken the moment it saw it
//!   (an invariant check; it did not catch that mutant).
//! * **awareness**: relayed both ways between the stock Yjs client and yrs, sent to newcomers,
//!   at most [`MAX_AWARENESS_IDS`] client ids per connection, removed when a connection drops,
//!   and a malformed awareness message closes the connection (4400) and changes nothing.
//! * **signed versions**: `doc_state` of terms taken from the agreement is the document's real
//!   state vector, the export carries it, and an acceptance is always bound to the hash of the
//!   terms' text (with or without a client hash; a malformed one is refused).
//! * **concurrent editing**: a seeded run of hundreds of random interleaved inserts and deletes
//!   (Chinese, emoji, ASCII; UTF-16 offsets) from the JavaScript and the yrs client converges on
//!   every client and for a late joiner.
//! * **the export rendered**: printed by headless Chromium, its text holds the Chinese and
//!   English lines.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use yrs::sync::awareness::AwarenessUpdateEntry;
use yrs::sync::protocol::SyncMessage;
use yrs::sync::{AwarenessUpdate, Message};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, ReadTxn, StateVector, Transact, Update};
use yuntiao_server::docs::task::MAX_AWARENESS_IDS;
use yuntiao_tests::doc_session::{session, Session};
use yuntiao_tests::ydoc::{scratch_update, utf16_len, NodeYjsClient, YrsClient};
use yuntiao_tests::{RedisServer, StoreKind};

const QUIET: Duration = Duration::from_millis(400);

fn sha256_hex(s: &str) -> String {
    yuntiao_signaling::event::sha256_hex(s.as_bytes())
}

fn decode_sv(b64: &str) -> StateVector {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("state vector is base64");
    StateVector::decode_v1(&bytes).expect("state vector decodes")
}

/// Sends a signal to a process with `kill(1)`.
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

/// The pid of the redis-server answering at `redis`, from `INFO server`.
fn redis_pid(redis: &RedisServer) -> u32 {
    let mut con = redis.client().unwrap().get_connection().unwrap();
    let info: String = redis::cmd("INFO").arg("server").query(&mut con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("process_id in INFO")
}

/// Resumes a stopped process when dropped, so a failing test never leaves Redis frozen.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

// ----- 1. stored before broadcast, as an ordering ----------------------------------------------

/// The writer's edit while Redis is dead: nobody receives it, everyone is closed with
/// `store_unavailable`, and once Redis is back (restarted on its AOF) the document does not hold
/// it. The writer then reconnects with its unsaved edit, as y-websocket clients do, and it is
/// stored and delivered.
#[tokio::test]
async fn a_failed_store_delivers_nothing_and_keeps_nothing_redis() {
    let mut redis = RedisServer::start().unwrap();
    let s = session(StoreKind::Redis(redis.url.clone()), &[]).await;
    let mut writer = YrsClient::connect_synced(&s.url(s.case.mediator(), "agreement"))
        .await
        .unwrap();
    let mut reader = YrsClient::connect_synced(&s.url(s.case.judge(), "agreement"))
        .await
        .unwrap();
    let mut node = NodeYjsClient::start(&s.node_base(), "agreement", &s.case.merchant().token)
        .await
        .unwrap();
    node.wait_synced().await.unwrap();
    let stored = "已存：stored. ";
    writer.insert(0, stored).await.unwrap();
    reader.wait_text(|t| t == stored).await.unwrap();
    node.wait_text(|t| t == stored).await.unwrap();
    let updates_before = reader.updates_received;

    redis.kill();
    let lost = "未存 unstored";
    writer.insert(utf16_len(stored), lost).await.unwrap();

    // Nothing of it reaches the readers; every connection closes as documented.
    assert_eq!(
        reader.wait_close().await.unwrap(),
        (4503, "store_unavailable".into())
    );
    assert_eq!(
        reader.updates_received, updates_before,
        "no update after the failure"
    );
    assert_eq!(reader.text(), stored);
    assert_eq!(
        writer.wait_close().await.unwrap(),
        (4503, "store_unavailable".into())
    );
    assert_eq!(
        node.wait_close().await.unwrap(),
        (4503, "store_unavailable".into())
    );
    assert_eq!(node.text, stored, "the stock client never saw the edit");
    // While the store is down the document is not served, not even from memory.
    let mut refused = YrsClient::connect(&s.url(s.case.consumer(), "agreement"))
        .await
        .unwrap();
    assert_eq!(
        refused.wait_close().await.unwrap(),
        (4503, "store_unavailable".into())
    );
    assert_eq!(refused.updates_received, 0);
    let (status, body) = s.agreement().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "store_unavailable");

    // Redis comes back with its data: the document holds what was stored, not the lost edit.
    redis.kill_and_restart().unwrap();
    let mut late = s.open_when_back(s.case.consumer()).await;
    assert_eq!(late.text(), stored);
    let (status, body) = s.agreement().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["text"], stored);

    // The writer reconnects and its client sends what the server lacks: now it is stored and
    // delivered, once.
    resend_unsaved(&s, &writer).await;
    let full = format!("{stored}{lost}");
    assert_eq!(late.wait_text(|t| t == full).await.unwrap(), full);
    // The stock client reconnected by itself (after 4503 refusals while Redis was down) and
    // receives it too.
    assert_eq!(node.wait_text(|t| t == full).await.unwrap(), full);
    assert_eq!(s.agreement().await.1["text"], full);
    node.quit().await;
}

/// The mediator's writer reconnects with everything its closed client `writer` held (edits the
/// server refused to keep included) and syncs: its client sends what the server lacks.
async fn resend_unsaved(s: &Session, writer: &YrsClient) -> YrsClient {
    let mut again = YrsClient::connect(&s.url(s.case.mediator(), "agreement"))
        .await
        .unwrap();
    let unsaved = writer
        .doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    again
        .doc
        .transact_mut()
        .apply_update(Update::decode_v1(&unsaved).unwrap())
        .unwrap();
    again.wait_synced().await.unwrap();
    again
}

/// Redis frozen (SIGSTOP) while an edit is being stored: the append hangs, and for all that
/// time the reader receives nothing of the edit; when the append times out every connection is
/// closed with `store_unavailable`. After SIGCONT the writer resends and the edit is in the
/// document exactly once (whether or not Redis ran the frozen append when it woke).
#[tokio::test]
async fn a_stalled_store_delivers_nothing_until_stored_redis() {
    let redis = RedisServer::start().unwrap();
    let s = session(StoreKind::Redis(redis.url.clone()), &[]).await;
    let mut writer = YrsClient::connect_synced(&s.url(s.case.mediator(), "agreement"))
        .await
        .unwrap();
    let mut reader = YrsClient::connect_synced(&s.url(s.case.judge(), "agreement"))
        .await
        .unwrap();
    let stored = "第一条。";
    writer.insert(0, stored).await.unwrap();
    reader.wait_text(|t| t == stored).await.unwrap();
    let updates_before = reader.updates_received;

    let pid = redis_pid(&redis);
    signal(pid, "STOP");
    let resume = Resume(pid);
    let stalled = "第二条（存储中）";
    writer.insert(utf16_len(stored), stalled).await.unwrap();
    // The append waits for Redis; the reader gets nothing meanwhile, then the close.
    let (code, reason) = reader.wait_close().await.unwrap();
    assert_eq!((code, reason.as_str()), (4503, "store_unavailable"));
    assert_eq!(reader.updates_received, updates_before);
    assert_eq!(reader.text(), stored);
    assert_eq!(
        writer.wait_close().await.unwrap(),
        (4503, "store_unavailable".into())
    );
    drop(resume);

    // Whatever Redis did with the frozen append, a fresh reader sees only what the store has,
    // and the writer's resend lands the edit exactly once.
    let mut late = s.open_when_back(s.case.consumer()).await;
    let (status, body) = s.agreement().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(late.text(), body["text"].as_str().unwrap());
    resend_unsaved(&s, &writer).await;
    let full = format!("{stored}{stalled}");
    assert_eq!(late.wait_text(|t| t == full).await.unwrap(), full);
    assert_eq!(s.agreement().await.1["text"], full);
}

/// A burst of edits; the moment a reader has seen part of it the server is killed with
/// SIGKILL. Everything the reader saw must be in the document after the restart.
///
/// This holds the invariant on both stores, but as a detector of the ordering it is weak: a
/// server that broadcast before storing (tried as a mutant) still passed it, because the store
/// finished its write before the kill landed. The failure tests on Redis above are the ones that
/// catch that mutant.
async fn what_a_reader_saw_survives_a_kill_at_that_moment(store: StoreKind) {
    let mut s = session(store, &[]).await;
    let mut writer = YrsClient::connect_synced(&s.url(s.case.mediator(), "agreement"))
        .await
        .unwrap();
    let mut reader = YrsClient::connect_synced(&s.url(s.case.judge(), "agreement"))
        .await
        .unwrap();
    let pieces = ["字", "😀", "a", "调解", "🎉", "9"];
    let burst: String = (0..400).map(|i| pieces[i % pieces.len()]).collect();
    // The writer types on its own (until the server is gone) while the reader watches.
    let typing = tokio::spawn(async move {
        let mut sent = String::new();
        for (i, piece) in (0..400).map(|i| (i, pieces[i % pieces.len()])) {
            if writer.insert(utf16_len(&sent), piece).await.is_err() {
                break;
            }
            sent.push_str(piece);
            if i % 8 == 7 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    // Part-way through the burst, kill the server the moment the reader has seen it.
    let seen = reader
        .wait_text(|t| t.chars().count() >= 150)
        .await
        .unwrap();
    s.server.kill9();
    let _ = typing.await;
    assert!(
        burst.starts_with(&seen),
        "the reader saw a prefix of the burst"
    );

    s.server.restart().await.unwrap();
    let after = YrsClient::connect_synced(&s.url(s.case.merchant(), "agreement"))
        .await
        .unwrap()
        .text();
    assert!(
        after.starts_with(&seen),
        "the reader saw {} characters, the restarted server has {}",
        seen.chars().count(),
        after.chars().count()
    );
    assert!(burst.starts_with(&after));
}

#[tokio::test]
async fn what_a_reader_saw_survives_a_kill_at_that_moment_embedded() {
    what_a_reader_saw_survives_a_kill_at_that_moment(StoreKind::Embedded).await;
}

#[tokio::test]
async fn what_a_reader_saw_survives_a_kill_at_that_moment_redis() {
    let redis = RedisServer::start().unwrap();
    what_a_reader_saw_survives_a_kill_at_that_moment(StoreKind::Redis(redis.url.clone())).await;
}

// ----- 2. awareness -----------------------------------------------------------------------------

fn awareness_frame(states: &[(u64, u32, &str)]) -> Vec<u8> {
    let clients = states
        .iter()
        .map(|(id, clock, json)| {
            (
                ClientID::new(*id),
                AwarenessUpdateEntry {
                    clock: *clock,
                    json: Arc::from(*json),
                },
            )
        })
        .collect();
    Message::Awareness(AwarenessUpdate { clients }).encode_v1()
}

/// An awareness message with one state `{}` for any client id, encoded by hand (yrs's
/// `ClientID` holds only 53-bit ids).
fn awareness_frame_with_id(client: u64) -> Vec<u8> {
    let mut payload = vec![1u8];
    let mut v = client;
    while v >= 0x80 {
        payload.push((v as u8) | 0x80);
        v >>= 7;
    }
    payload.push(v as u8);
    payload.extend([1, 2, b'{', b'}']);
    let mut frame = vec![1, payload.len() as u8];
    frame.extend(payload);
    frame
}

/// The user name in an awareness state's JSON.
fn name_in(json: &str) -> Option<String> {
    let v: Value = serde_json::from_str(json).ok()?;
    v["user"]["name"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn awareness_is_relayed_limited_and_removed() {
    let s = session(StoreKind::Embedded, &[]).await;
    let mut node = NodeYjsClient::start(&s.node_base(), "agreement", &s.case.mediator().token)
        .await
        .unwrap();
    node.wait_synced().await.unwrap();
    node.insert(0, "协议草稿").await.unwrap();
    node.query_awareness().await.unwrap();
    node.wait_until("own client id", |c| c.client_id.is_some())
        .await
        .unwrap();
    let node_id = node.client_id.unwrap();

    // yrs sees the stock client's state (in its opening messages).
    let mut yrs = YrsClient::connect_synced(&s.url(s.case.consumer(), "agreement"))
        .await
        .unwrap();
    yrs.wait_until("the node client's awareness", |c| {
        c.awareness
            .get(&node_id)
            .and_then(|j| name_in(j))
            .as_deref()
            == Some("node client")
    })
    .await
    .unwrap();
    // ... and a change of it, relayed live.
    node.set_awareness(json!({"user": {"name": "王调解员"}, "cursor": 3}))
        .await
        .unwrap();
    yrs.wait_until("the changed state", |c| {
        c.awareness
            .get(&node_id)
            .and_then(|j| name_in(j))
            .as_deref()
            == Some("王调解员")
    })
    .await
    .unwrap();

    // The stock client sees the yrs client's state.
    let yrs_id = 4_000_001u64;
    yrs.send_raw(awareness_frame(&[(
        yrs_id,
        1,
        r#"{"user":{"name":"张三"}}"#,
    )]))
    .await
    .unwrap();
    node.wait_until("the yrs client's state", |c| {
        c.awareness.get(&yrs_id).map(|v| v["user"]["name"].clone()) == Some(json!("张三"))
    })
    .await
    .unwrap();

    // A newcomer gets both states at once.
    let mut newcomer = YrsClient::connect_synced(&s.url(s.case.merchant(), "agreement"))
        .await
        .unwrap();
    newcomer
        .wait_until("both states", |c| {
            c.awareness.contains_key(&node_id) && c.awareness.contains_key(&yrs_id)
        })
        .await
        .unwrap();

    // One connection may speak for MAX_AWARENESS_IDS client ids: the rest of them, in one
    // frame, are relayed.
    let more: Vec<(u64, u32, &str)> = (1..MAX_AWARENESS_IDS as u64)
        .map(|i| (yrs_id + i, 1, r#"{"user":{"name":"tab"}}"#))
        .collect();
    yrs.send_raw(awareness_frame(&more)).await.unwrap();
    let all_ids: Vec<u64> = (0..MAX_AWARENESS_IDS as u64).map(|i| yrs_id + i).collect();
    let ids = all_ids.clone();
    node.wait_until("the full set of states", move |c| {
        ids.iter().all(|i| c.awareness.contains_key(i))
    })
    .await
    .unwrap();
    // One more is refused: the connection closes with 4400 and the extra id reaches nobody.
    let extra = yrs_id + MAX_AWARENESS_IDS as u64;
    yrs.send_raw(awareness_frame(&[(
        extra,
        1,
        r#"{"user":{"name":"too many"}}"#,
    )]))
    .await
    .unwrap();
    assert_eq!(
        yrs.wait_close().await.unwrap(),
        (4400, "invalid_message".into())
    );
    // Its states go with the connection: removed on every other client.
    let ids = all_ids.clone();
    node.wait_until("the closed connection's states removed", move |c| {
        ids.iter().all(|i| !c.awareness.contains_key(i))
    })
    .await
    .unwrap();
    let ids = all_ids.clone();
    newcomer
        .wait_until("the closed connection's states removed", move |c| {
            ids.iter().all(|i| !c.awareness.contains_key(i))
        })
        .await
        .unwrap();
    assert!(!node.awareness.contains_key(&extra));
    assert!(!newcomer.awareness.contains_key(&extra));
    assert!(node.awareness.contains_key(&node_id), "the others stay");

    // Malformed awareness closes with 4400 and changes nothing, not even the rest of its frame:
    // a truncated entry; a client id over 53 bits; a state that is not JSON; a valid edit
    // followed by a bad state.
    let mediator_url = s.url(s.case.mediator(), "agreement");
    let text_before = "协议草稿";
    newcomer.wait_text(|t| t == text_before).await.unwrap();
    let mut bad_json_and_edit =
        Message::Sync(SyncMessage::Update(scratch_update("不应出现"))).encode_v1();
    bad_json_and_edit.extend(awareness_frame(&[(5_000_002, 1, "{not json")]));
    for frame in [
        vec![1, 4, 1, 0x85, 0x01, 1],
        awareness_frame_with_id(1 << 60),
        awareness_frame(&[(5_000_001, 1, r#"{"user":"#)]),
        bad_json_and_edit,
    ] {
        let mut c = YrsClient::connect_synced(&mediator_url).await.unwrap();
        c.send_raw(frame).await.unwrap();
        assert_eq!(
            c.wait_close().await.unwrap(),
            (4400, "invalid_message".into())
        );
    }
    newcomer.pump(QUIET).await.unwrap();
    assert!(newcomer.closed.is_none());
    assert!(!newcomer.awareness.contains_key(&5_000_001));
    assert!(!newcomer.awareness.contains_key(&5_000_002));
    assert_eq!(newcomer.text(), text_before);
    node.query_awareness().await.unwrap();
    node.wait_until("a fresh report", |c| c.client_id.is_some())
        .await
        .unwrap();
    assert!(
        node.closes.is_empty(),
        "the stock client was never disconnected: {:?}",
        node.closes
    );
    assert!(!node.awareness.contains_key(&5_000_001));
    assert!(!node.awareness.contains_key(&5_000_002));
    assert_eq!(node.state().await.unwrap().0, text_before);

    // The stock client drops off (killed: it says goodbye to nobody); the server removes its
    // state from everyone else.
    node.kill().await;
    newcomer
        .wait_until("the node client's state removed", |c| {
            !c.awareness.contains_key(&node_id)
        })
        .await
        .unwrap();
}

// ----- 3. signed versions ------------------------------------------------------------------------

async fn signed_version_binds_the_state_vector(store: StoreKind) {
    let mut s = session(store, &[]).await;
    let consumer_id = s.case.consumer().participant.clone();
    s.grant(&consumer_id, true).await;
    let mut editor = NodeYjsClient::start(&s.node_base(), "agreement", &s.case.mediator().token)
        .await
        .unwrap();
    editor.wait_synced().await.unwrap();
    let mut consumer_doc = YrsClient::connect_synced(&s.url(s.case.consumer(), "agreement"))
        .await
        .unwrap();
    let agreed = "调解协议\n商家退款1299元。The merchant refunds 1,299 yuan. 😀";
    editor.insert(0, "商家退款1299元。").await.unwrap();
    consumer_doc
        .wait_text(|t| t == "商家退款1299元。")
        .await
        .unwrap();
    consumer_doc.insert(0, "调解协议\n").await.unwrap();
    editor
        .wait_text(|t| t == "调解协议\n商家退款1299元。")
        .await
        .unwrap();
    editor
        .insert(
            utf16_len("调解协议\n商家退款1299元。"),
            "The merchant refunds 1,299 yuan. 😀",
        )
        .await
        .unwrap();
    consumer_doc.wait_text(|t| t == agreed).await.unwrap();
    editor.wait_text(|t| t == agreed).await.unwrap();

    // The document's real state vector, just before proposing: the admin endpoint's, which is
    // the state vector of every client that holds the whole document.
    let (status, doc) = s.agreement().await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["text"], agreed);
    let sv = doc["state_vector"].as_str().unwrap().to_owned();
    assert_eq!(decode_sv(&sv), consumer_doc.state_vector());
    let (node_text, node_sv) = editor.state().await.unwrap();
    assert_eq!(node_text, agreed);
    assert_eq!(decode_sv(&node_sv), decode_sv(&sv));
    assert_eq!(decode_sv(&sv).len(), 2, "two writers' edits");

    s.mediator
        .ok(json!({"type": "propose_terms", "document": "agreement"}))
        .await
        .unwrap();
    let proposed = s.consumer.wait_event("terms_proposed").await.unwrap();
    assert_eq!(proposed["text"], agreed);
    assert_eq!(proposed["text_hash"], sha256_hex(agreed));
    assert_eq!(proposed["doc_state"], sv.as_str());
    let terms = proposed["terms"].as_str().unwrap().to_owned();

    // The agreement is edited after the proposal: the screen's terms are still the proposed
    // text, and that is what an acceptance binds, with or without a client hash.
    editor.insert(0, "【草稿】").await.unwrap();
    consumer_doc
        .wait_text(|t| t.starts_with("【草稿】"))
        .await
        .unwrap();
    s.consumer
        .ok(json!({"type": "accept_terms", "terms": terms}))
        .await
        .unwrap();
    let accepted = s
        .consumer
        .wait_for(|m| m["kind"] == "terms_accepted")
        .await
        .unwrap();
    assert_eq!(accepted["text_hash"], sha256_hex(agreed));
    // A malformed client hash is refused as such; the live draft's hash is not the terms';
    // nothing is recorded for either.
    let (_, record) = s
        .server
        .admin(Method::GET, &format!("/admin/cases/{}", s.case.id), None)
        .await
        .unwrap();
    let head = record["head_seq"].as_u64().unwrap();
    for bad in ["ABC", &sha256_hex(agreed).to_uppercase()] {
        s.merchant
            .err(
                json!({"type": "accept_terms", "terms": terms, "text_hash": bad}),
                "invalid_message",
            )
            .await
            .unwrap();
    }
    let live = consumer_doc.text();
    s.merchant
        .err(
            json!({"type": "accept_terms", "terms": terms, "text_hash": sha256_hex(&live)}),
            "conflict",
        )
        .await
        .unwrap();
    let (_, record) = s
        .server
        .admin(Method::GET, &format!("/admin/cases/{}", s.case.id), None)
        .await
        .unwrap();
    assert_eq!(
        record["head_seq"].as_u64().unwrap(),
        head,
        "nothing recorded"
    );
    s.merchant
        .ok(json!({"type": "accept_terms", "terms": terms, "text_hash": sha256_hex(agreed)}))
        .await
        .unwrap();

    // The record and the export carry the state vector the terms were bound to.
    let (_, record) = s
        .server
        .admin(Method::GET, &format!("/admin/cases/{}", s.case.id), None)
        .await
        .unwrap();
    let events = record["events"].as_array().unwrap();
    let proposal = events
        .iter()
        .find(|e| e["kind"] == "terms_proposed")
        .unwrap();
    assert_eq!(proposal["doc_state"], sv.as_str());
    let hashes: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "terms_accepted")
        .map(|e| &e["text_hash"])
        .collect();
    assert_eq!(hashes, vec![&json!(sha256_hex(agreed)); 2]);
    let page = s.export().await;
    assert!(page.contains("文档版本 Document state vector"));
    assert!(page.contains(&sv), "the export shows the state vector {sv}");
    assert!(page.contains("was edited after signing"));
    editor.quit().await;
}

#[tokio::test]
async fn signed_version_binds_the_state_vector_embedded() {
    signed_version_binds_the_state_vector(StoreKind::Embedded).await;
}

#[tokio::test]
async fn signed_version_binds_the_state_vector_redis() {
    let redis = RedisServer::start().unwrap();
    signed_version_binds_the_state_vector(StoreKind::Redis(redis.url.clone())).await;
}

// ----- 4. concurrent editing ----------------------------------------------------------------------

/// xorshift64*: small and seedable; the same choices for a seed on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

const PIECES: &[&str] = &[
    "b", "Q", "3", " ", "调", "解", "协议", "退款", "😀", "🎉", "👍🏽", "é", "ok", "，",
];

/// One random edit of the yrs client on its current text: an insert at a code point boundary,
/// or a delete of one to three whole code points, at UTF-16 offsets.
async fn random_yrs_edit(c: &mut YrsClient, rng: &mut Rng) {
    let text = c.text();
    // UTF-16 offset of every code point boundary.
    let mut bounds = vec![0u32];
    let mut at = 0u32;
    for ch in text.chars() {
        at += ch.len_utf16() as u32;
        bounds.push(at);
    }
    let points = bounds.len() - 1;
    if points == 0 || rng.below(3) != 0 {
        let i = bounds[rng.below(bounds.len())];
        c.insert(i, PIECES[rng.below(PIECES.len())]).await.unwrap();
    } else {
        let from = rng.below(points);
        let to = (from + 1 + rng.below(3)).min(points);
        c.delete(bounds[from], bounds[to] - bounds[from])
            .await
            .unwrap();
    }
}

async fn random_concurrent_edits_converge(store: StoreKind) {
    let seed: u32 = std::env::var("YUNTIAO_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_130);
    eprintln!("random edits with seed {seed} (set YUNTIAO_FUZZ_SEED to repeat another)");
    const EDITS: u32 = 300;
    let started = std::time::Instant::now();
    let mut s = session(store, &[]).await;
    let consumer_id = s.case.consumer().participant.clone();
    s.grant(&consumer_id, true).await;
    let mut js = NodeYjsClient::start(&s.node_base(), "agreement", &s.case.mediator().token)
        .await
        .unwrap();
    js.wait_synced().await.unwrap();
    let mut js_reader = NodeYjsClient::start(&s.node_base(), "agreement", &s.case.judge().token)
        .await
        .unwrap();
    js_reader.wait_synced().await.unwrap();
    let mut yrs = YrsClient::connect_synced(&s.url(s.case.consumer(), "agreement"))
        .await
        .unwrap();
    let mut yrs_reader = YrsClient::connect_synced(&s.url(s.case.merchant(), "agreement"))
        .await
        .unwrap();

    // Both writers edit at once, each on its own view of the text, without waiting.
    js.random_edits(seed, EDITS, 3).await.unwrap();
    let mut rng = Rng((u64::from(seed) << 1) | 1);
    for _ in 0..EDITS {
        random_yrs_edit(&mut yrs, &mut rng).await;
        let pause = rng.below(4) as u64;
        yrs.pump(Duration::from_millis(pause)).await.unwrap();
        assert!(yrs.closed.is_none(), "closed {:?}", yrs.closed);
    }
    js.wait_until("the random edits", |c| c.random_done == 1)
        .await
        .unwrap();

    // Converged: the same state vector (every insert of both writers) and the same text. The
    // text is waited for too: a delete travels in an update that adds no item, so it does not
    // show in the state vector, and the yrs writer's last one may still be on its way to the
    // JS writer when the state vectors already agree.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (js_text, js_sv) = loop {
        yrs.pump(Duration::from_millis(50)).await.unwrap();
        let (t, sv) = js.state().await.unwrap();
        if decode_sv(&sv) == yrs.state_vector() && t == yrs.text() {
            break (t, decode_sv(&sv));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence: js {:?} yrs {:?}, texts equal: {}",
            decode_sv(&sv),
            yrs.state_vector(),
            t == yrs.text()
        );
    };
    let final_text = yrs.text();
    assert_eq!(js_text, final_text);
    assert_eq!(js_sv.len(), 2, "both writers edited");
    assert!(!final_text.contains('\u{FFFD}'), "{final_text}");
    // The same for the readers: the state vector and the text (deletes do not show in the
    // former); a reader that never gets there fails the wait with its deadline.
    yrs_reader
        .wait_until("the readers' convergence", |c| {
            c.state_vector() == js_sv && c.text() == final_text
        })
        .await
        .unwrap();
    let expected = final_text.clone();
    js_reader.wait_text(move |t| t == expected).await.unwrap();
    assert_eq!(decode_sv(&js_reader.state().await.unwrap().1), js_sv);
    let late = YrsClient::connect_synced(&s.url(s.case.judge(), "agreement"))
        .await
        .unwrap();
    assert_eq!(late.text(), final_text);
    assert_eq!(late.state_vector(), js_sv);
    let (_, doc) = s.agreement().await;
    assert_eq!(doc["text"], final_text.as_str());
    eprintln!(
        "{} edits converged on {} characters in {:?}",
        2 * EDITS,
        final_text.chars().count(),
        started.elapsed()
    );
    js.quit().await;
    js_reader.quit().await;
}

#[tokio::test]
async fn random_concurrent_edits_converge_embedded() {
    random_concurrent_edits_converge(StoreKind::Embedded).await;
}

#[tokio::test]
async fn random_concurrent_edits_converge_redis() {
    let redis = RedisServer::start().unwrap();
    random_concurrent_edits_converge(StoreKind::Redis(redis.url.clone())).await;
}

// ----- 5. the export, rendered ---------------------------------------------------------------------

/// The signed agreement's export, printed by headless Chromium: the rendered text holds the
/// Chinese and the English lines, and the Chinese is drawn with a font that has it.
#[tokio::test]
async fn the_export_prints_chinese_and_english_in_chromium() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    assert!(
        root.join("tests/e2e/node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci --prefix tests/e2e`"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing"
    );
    let mut s = session(StoreKind::Embedded, &[]).await;
    let mut editor = YrsClient::connect_synced(&s.url(s.case.mediator(), "agreement"))
        .await
        .unwrap();
    let zh = "一、商家于三日内退还货款人民币1299元。";
    let en = "1. The merchant refunds RMB 1,299 within three days.";
    let agreed = format!("{zh}\n{en}");
    editor.insert(0, &agreed).await.unwrap();
    // Stored once a reader has it.
    let mut reader = YrsClient::connect_synced(&s.url(s.case.judge(), "agreement"))
        .await
        .unwrap();
    reader.wait_text(|t| t == agreed).await.unwrap();
    s.mediator
        .ok(json!({"type": "propose_terms", "document": "agreement"}))
        .await
        .unwrap();
    let terms = s.consumer.wait_event("terms_proposed").await.unwrap()["terms"]
        .as_str()
        .unwrap()
        .to_owned();
    for party in [&mut s.consumer, &mut s.merchant] {
        party
            .ok(json!({"type": "accept_terms", "terms": terms}))
            .await
            .unwrap();
    }
    let page = s.export().await;

    let dir = root.join("test-artifacts/documents");
    std::fs::create_dir_all(&dir).unwrap();
    let html = dir.join("export.html");
    std::fs::write(&html, &page).unwrap();
    let (png, pdf) = (dir.join("export.png"), dir.join("export.pdf"));
    let out = tokio::task::spawn_blocking({
        let (root, html, png, pdf) = (root.clone(), html.clone(), png.clone(), pdf.clone());
        move || {
            Command::new("node")
                .arg(root.join("tests/js/print-export.mjs"))
                .args([&html, &png, &pdf])
                .output()
        }
    })
    .await
    .unwrap()
    .expect("running node");
    assert!(
        out.status.success(),
        "printing failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = report["innerText"].as_str().unwrap();
    for line in [
        zh,
        en,
        "调解记录 Mediation record",
        "接受并签署 Accepted and signed",
    ] {
        assert!(text.contains(line), "{line:?} not rendered; text:\n{text}");
    }
    assert!(text.contains(&sha256_hex(&agreed)));
    assert!(report["pdfBytes"].as_u64().unwrap() > 1000, "{report}");
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    // The fonts Chromium drew with include one that covers Chinese (per fontconfig).
    let used: Vec<String> = report["fonts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect();
    if let Ok(list) = Command::new("fc-list")
        .args([":lang=zh", "family"])
        .output()
    {
        let cjk = String::from_utf8_lossy(&list.stdout).to_string();
        assert!(
            used.iter().any(|f| cjk.contains(f.as_str())),
            "no font covering Chinese among {used:?}; fontconfig has:\n{cjk}"
        );
    }
    eprintln!(
        "export rendered with fonts {used:?}; screenshot {}",
        png.display()
    );
}
