//! Bad input on the signaling websocket, against the real `yuntiao` binary.
//!
//! DESIGN.md, "How we know it works": bad input gets a clear error and changes nothing —
//! malformed or oversized frames, unknown messages, a role asking for what it may not do; the
//! server never panics on input. Each check below sends something wrong and asserts three things:
//! the documented error code comes back (with the request `id` when one could be read), the case
//! log is unchanged (`head_seq` of `GET /admin/cases/{case}`), and the server keeps serving (the
//! same connection answers a `ping`; at the end other clients join and chat).
//!
//! The server runs with its default limits (64 KiB frames, 20 messages/s with a burst of 60 per
//! connection), so the checks spread their messages over several connections to stay inside the
//! burst, except the flood test, which is about exceeding it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use yuntiao_tests::{Case, Client, RedisServer, Server, StoreKind};

/// Messages sent on one connection before a check moves to a fresh one (burst is 60).
const PER_CONNECTION: usize = 40;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn head(server: &Server, case: &str) -> u64 {
    let (status, body) = server
        .admin(Method::GET, &format!("/admin/cases/{case}"), None)
        .await
        .expect("GET case record");
    assert_eq!(status, 200, "case record: {body}");
    body["head_seq"].as_u64().expect("head_seq")
}

/// The events of the case log, as the admin API returns them.
async fn events(server: &Server, case: &str) -> Vec<Value> {
    let (status, body) = server
        .admin(Method::GET, &format!("/admin/cases/{case}"), None)
        .await
        .expect("GET case record");
    assert_eq!(status, 200, "case record: {body}");
    body["events"].as_array().cloned().unwrap_or_default()
}

/// Sends one raw text frame on `c` and expects an `error` with `code` (and `id`, if given), then
/// a working `ping`.
async fn bad_frame(c: &mut Client, what: &str, frame: &str, code: &str, id: Option<&str>) {
    c.send_text(frame)
        .await
        .unwrap_or_else(|e| panic!("{what}: send: {e}"));
    let answer = c
        .wait_for(|m| m["type"] == "error")
        .await
        .unwrap_or_else(|e| panic!("{what}: no error: {e}"));
    assert_eq!(answer["code"], code, "{what}: {answer}");
    assert!(
        answer["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: error without a message: {answer}"
    );
    match id {
        Some(id) => assert_eq!(answer["id"], id, "{what}: request id not echoed: {answer}"),
        None => assert!(
            answer.get("id").is_none(),
            "{what}: unexpected id: {answer}"
        ),
    }
    c.sync()
        .await
        .unwrap_or_else(|e| panic!("{what}: connection unusable afterwards: {e}"));
}

/// Joins the mediator, a fresh connection.
async fn mediator(server: &Server, case: &Case) -> Client {
    Client::join(&server.ws_url(), &case.mediator().token, None)
        .await
        .expect("mediator joins")
        .0
}

/// The server still serves: the merchant joins (and is admitted if waiting), chats, and a
/// mediator on a fresh connection sees the chat.
async fn still_serving(server: &Server, case: &Case) {
    let mut staff = mediator(server, case).await;
    staff.sync().await.expect("mediator ping");
    let (mut merchant, welcome) = Client::join(&server.ws_url(), &case.merchant().token, None)
        .await
        .expect("merchant joins");
    if welcome["status"] == "lobby" {
        staff
            .ok(json!({"type": "admit", "participant": case.merchant().participant}))
            .await
            .expect("admit merchant");
        merchant
            .wait_event("admitted")
            .await
            .expect("merchant admitted");
    }
    let text = format!("still serving {}", merchant.last_seq());
    merchant
        .ok(json!({"type": "chat", "text": text}))
        .await
        .expect("merchant chats");
    let seen = staff
        .wait_for(|m| m["type"] == "event" && m["kind"] == "chat" && m["text"] == text)
        .await
        .expect("mediator sees the chat");
    assert_eq!(seen["from"], case.merchant().participant);
    merchant.close().await;
    staff.close().await;
}

/// A websocket without the harness client, for frames it cannot send (binary, non-UTF-8,
/// gross sizes).
struct Raw {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    closed: bool,
}

impl Raw {
    async fn connect(server: &Server) -> Raw {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .expect("ws connect");
        Raw { ws, closed: false }
    }

    async fn join(server: &Server, token: &str) -> Raw {
        let mut r = Raw::connect(server).await;
        let join = json!({"type": "join", "token": token}).to_string();
        assert!(r.send(Message::Text(join.into())).await, "send join");
        let w = r
            .wait_for(|m| m["type"] == "welcome" || m["type"] == "error")
            .await
            .expect("join answer");
        assert_eq!(w["type"], "welcome", "{w}");
        r
    }

    /// Sends a message; `false` if the connection refused it (the reading side may still hold
    /// what the server sent before closing).
    async fn send(&mut self, m: Message) -> bool {
        self.ws.send(m).await.is_ok()
    }

    /// The next JSON message matching `pred`, skipping others; `None` once the connection is
    /// closed or nothing matched within 10 s.
    async fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.closed {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match next {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("server sent JSON");
                    if pred(&v) {
                        return Some(v);
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => self.closed = true,
                Some(Ok(_)) => {}
            }
        }
        None
    }

    async fn ping(&mut self, id: &str) -> bool {
        let ping = json!({"type": "ping", "id": id}).to_string();
        if !self.send(Message::Text(ping.into())).await {
            return false;
        }
        self.wait_for(|m| m["type"] == "pong" && m["id"] == id)
            .await
            .is_some()
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed messages
// ---------------------------------------------------------------------------------------------

async fn malformed_messages_get_their_codes(store: StoreKind) {
    let server = Server::start(store, &[]).await.expect("start server");
    let case = server.four_party_case().await.expect("case");
    let long_chat = "长".repeat(4001);

    // (what, frame, code, id echoed)
    let frames: Vec<(&str, String, &str, Option<&str>)> = vec![
        // Not JSON.
        (
            "unclosed object",
            "{not json".into(),
            "malformed_json",
            None,
        ),
        ("empty frame", String::new(), "malformed_json", None),
        ("only spaces", "   ".into(), "malformed_json", None),
        (
            "truncated chat",
            r#"{"type":"chat","text":"unterminated"#.into(),
            "malformed_json",
            None,
        ),
        (
            "trailing garbage",
            r#"{"type":"ping"} {"type":"ping"}"#.into(),
            "malformed_json",
            None,
        ),
        (
            "single quotes",
            "{'type':'ping'}".into(),
            "malformed_json",
            None,
        ),
        // JSON, not a message object.
        ("array", "[1,2]".into(), "invalid_message", None),
        (
            "array of messages",
            r#"[{"type":"ping"}]"#.into(),
            "invalid_message",
            None,
        ),
        ("string", r#""chat""#.into(), "invalid_message", None),
        ("null", "null".into(), "invalid_message", None),
        ("number", "42".into(), "invalid_message", None),
        (
            "missing type",
            r#"{"id":"b1","text":"hi"}"#.into(),
            "invalid_message",
            Some("b1"),
        ),
        (
            "numeric type",
            r#"{"id":"b2","type":7}"#.into(),
            "invalid_message",
            Some("b2"),
        ),
        (
            "null type",
            r#"{"id":"b3","type":null}"#.into(),
            "invalid_message",
            Some("b3"),
        ),
        // Unknown types.
        (
            "unknown type",
            r#"{"id":"b4","type":"fly"}"#.into(),
            "unknown_type",
            Some("b4"),
        ),
        (
            "type in capitals",
            r#"{"id":"b5","type":"CHAT","text":"hi"}"#.into(),
            "unknown_type",
            Some("b5"),
        ),
        (
            "empty type",
            r#"{"id":"b6","type":""}"#.into(),
            "unknown_type",
            Some("b6"),
        ),
        (
            "server message type",
            r#"{"id":"b7","type":"welcome"}"#.into(),
            "unknown_type",
            Some("b7"),
        ),
        (
            "non-string id",
            r#"{"id":5,"type":"fly"}"#.into(),
            "unknown_type",
            None,
        ),
        // Known types, missing or ill-typed fields.
        (
            "chat without text",
            r#"{"id":"b8","type":"chat"}"#.into(),
            "invalid_message",
            Some("b8"),
        ),
        (
            "chat with numeric text",
            r#"{"id":"b9","type":"chat","text":5}"#.into(),
            "invalid_message",
            Some("b9"),
        ),
        (
            "note with unknown scope",
            r#"{"id":"b10","type":"note","text":"x","scope":"secret"}"#.into(),
            "invalid_message",
            Some("b10"),
        ),
        (
            "note without scope",
            r#"{"id":"b11","type":"note","text":"x"}"#.into(),
            "invalid_message",
            Some("b11"),
        ),
        (
            "admit without participant",
            r#"{"id":"b12","type":"admit"}"#.into(),
            "invalid_message",
            Some("b12"),
        ),
        (
            "admit with a list",
            r#"{"id":"b13","type":"admit","participant":["p"]}"#.into(),
            "invalid_message",
            Some("b13"),
        ),
        (
            "unknown outcome",
            r#"{"id":"b14","type":"record_outcome","outcome":"won"}"#.into(),
            "invalid_message",
            Some("b14"),
        ),
        (
            "caucus members not a list",
            r#"{"id":"b15","type":"caucus_start","members":"p_x"}"#.into(),
            "invalid_message",
            Some("b15"),
        ),
        (
            "consent given as a string",
            r#"{"id":"b16","type":"consent","kind":"recording","given":"yes"}"#.into(),
            "invalid_message",
            Some("b16"),
        ),
        (
            "join without token",
            r#"{"id":"b17","type":"join"}"#.into(),
            "invalid_message",
            Some("b17"),
        ),
        (
            "case not a string",
            r#"{"id":"b18","type":"ping","case":5}"#.into(),
            "invalid_message",
            Some("b18"),
        ),
        // Well-formed, but the content is refused.
        (
            "blank chat",
            r#"{"id":"b19","type":"chat","text":"   "}"#.into(),
            "invalid_message",
            Some("b19"),
        ),
        (
            "chat over 4000 characters",
            json!({"id": "b20", "type": "chat", "text": long_chat}).to_string(),
            "invalid_message",
            Some("b20"),
        ),
        (
            "empty terms",
            r#"{"id":"b21","type":"propose_terms","text":""}"#.into(),
            "invalid_message",
            Some("b21"),
        ),
        (
            "caucus with nobody",
            r#"{"id":"b22","type":"caucus_start","members":[]}"#.into(),
            "invalid_message",
            Some("b22"),
        ),
    ];

    // The mediator's first join is recorded; later connections of theirs are not.
    mediator(&server, &case).await.close().await;
    let before = head(&server, &case.id).await;
    // A joined mediator may do everything, so each frame is refused for its shape alone.
    for chunk in frames.chunks(PER_CONNECTION / 2) {
        let mut c = mediator(&server, &case).await;
        for (what, frame, code, id) in chunk {
            bad_frame(&mut c, what, frame, code, *id).await;
        }
        c.close().await;
    }
    // Before joining, bad frames get the same codes.
    let mut c = Client::connect(&server.ws_url()).await.expect("connect");
    for (what, frame, code, id) in frames.iter().take(PER_CONNECTION / 2) {
        bad_frame(&mut c, &format!("{what} (before join)"), frame, code, *id).await;
    }
    assert_eq!(
        head(&server, &case.id).await,
        before,
        "bad frames changed the case log"
    );
    still_serving(&server, &case).await;
}

#[tokio::test]
async fn malformed_messages_get_their_codes_embedded() {
    malformed_messages_get_their_codes(StoreKind::Embedded).await;
}

#[tokio::test]
async fn malformed_messages_get_their_codes_redis() {
    let redis = RedisServer::start().expect("start redis-server");
    malformed_messages_get_their_codes(StoreKind::Redis(redis.url.clone())).await;
}

// ---------------------------------------------------------------------------------------------
// Oversized, binary and non-UTF-8 frames
// ---------------------------------------------------------------------------------------------

/// `{"type":"ping","id":"<id>"}` padded with spaces (valid JSON whitespace) to `len` bytes.
fn padded_ping(id: &str, len: usize) -> String {
    let mut s = json!({"type": "ping", "id": id}).to_string();
    assert!(s.len() <= len);
    s.push_str(&" ".repeat(len - s.len()));
    s
}

async fn oversized_and_binary_frames_are_refused(store: StoreKind) {
    let server = Server::start(store, &[]).await.expect("start server");
    let case = server.four_party_case().await.expect("case");
    // The mediator's first join is recorded; later connections of theirs are not.
    mediator(&server, &case).await.close().await;
    let before = head(&server, &case.id).await;
    let limit = 64 * 1024;

    // Text frames over the limit: a 70 KiB chat, one byte over, well over.
    let mut c = mediator(&server, &case).await;
    let big_chat = json!({"type": "chat", "id": "big", "text": "x".repeat(70 * 1024)}).to_string();
    bad_frame(&mut c, "70 KiB chat", &big_chat, "frame_too_large", None).await;
    bad_frame(
        &mut c,
        "one byte over the limit",
        &padded_ping("over", limit + 1),
        "frame_too_large",
        None,
    )
    .await;
    bad_frame(
        &mut c,
        "200 KiB frame",
        &padded_ping("huge", 200 * 1024),
        "frame_too_large",
        None,
    )
    .await;
    // Exactly at the limit is accepted.
    c.send_text(padded_ping("edge", limit)).await.expect("send");
    let pong = c
        .wait_for(|m| m["id"] == "edge" || m["type"] == "error")
        .await
        .expect("answer at the limit");
    assert_eq!(
        pong["type"], "pong",
        "a frame of exactly the limit is accepted: {pong}"
    );
    c.close().await;

    // Binary frames: protocol v1 is JSON in text frames.
    let mut raw = Raw::join(&server, &case.mediator().token).await;
    for (what, payload) in [
        (
            "binary frame holding a valid chat",
            br#"{"type":"chat","text":"in binary"}"#.to_vec(),
        ),
        ("binary garbage", vec![0u8, 159, 146, 150, 255]),
        ("empty binary frame", Vec::new()),
    ] {
        assert!(
            raw.send(Message::Binary(payload.into())).await,
            "{what}: send"
        );
        let e = raw
            .wait_for(|m| m["type"] == "error")
            .await
            .unwrap_or_else(|| panic!("{what}: no error"));
        assert_eq!(e["code"], "malformed_json", "{what}: {e}");
        assert!(
            raw.ping(what).await,
            "{what}: connection unusable afterwards"
        );
    }
    assert!(
        raw.send(Message::Binary(vec![b'x'; 70 * 1024].into()))
            .await
    );
    let e = raw
        .wait_for(|m| m["type"] == "error")
        .await
        .expect("70 KiB binary: no error");
    assert_eq!(e["code"], "frame_too_large", "70 KiB binary: {e}");
    assert!(raw.ping("after big binary").await);
    assert_eq!(
        head(&server, &case.id).await,
        before,
        "refused frames changed the case log"
    );

    // A text frame that is not UTF-8: refused one way or another (an error or the connection
    // closed), never acted upon.
    let mut raw = Raw::join(&server, &case.mediator().token).await;
    let mut bytes = br#"{"type":"chat","text":""#.to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    bytes.extend_from_slice(br#""}"#);
    raw.send(Message::Frame(Frame::message(
        bytes,
        OpCode::Data(Data::Text),
        true,
    )))
    .await;
    if let Some(e) = raw.wait_for(|m| m["type"] == "error").await {
        assert_eq!(e["code"], "malformed_json", "non-UTF-8 text: {e}");
        assert!(raw.ping("after non-utf8").await);
    }

    // A grossly oversized frame (over the websocket layer's own cap) may cost the connection,
    // but nothing else.
    let mut raw = Raw::join(&server, &case.mediator().token).await;
    let gross = json!({"type": "chat", "text": "x".repeat(2 * 1024 * 1024)}).to_string();
    raw.send(Message::Text(gross.into())).await;
    if let Some(e) = raw.wait_for(|m| m["type"] == "error").await {
        assert_eq!(e["code"], "frame_too_large", "2 MiB frame: {e}");
    }

    assert_eq!(
        head(&server, &case.id).await,
        before,
        "refused frames changed the case log"
    );
    still_serving(&server, &case).await;
}

#[tokio::test]
async fn oversized_and_binary_frames_are_refused_embedded() {
    oversized_and_binary_frames_are_refused(StoreKind::Embedded).await;
}

#[tokio::test]
async fn oversized_and_binary_frames_are_refused_redis() {
    let redis = RedisServer::start().expect("start redis-server");
    oversized_and_binary_frames_are_refused(StoreKind::Redis(redis.url.clone())).await;
}

// ---------------------------------------------------------------------------------------------
// Messages out of order or for another case
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn out_of_order_and_wrong_case_messages_are_refused() {
    let server = Server::embedded().await.expect("start server");
    let case = server.four_party_case().await.expect("case");
    let other = server.four_party_case().await.expect("second case");
    let before = head(&server, &case.id).await;
    let other_before = head(&server, &other.id).await;
    let consumer = case.consumer().participant.clone();

    // Before join: only `join` and `ping`.
    let mut c = Client::connect(&server.ws_url()).await.expect("connect");
    for msg in [
        json!({"type": "chat", "text": "hello?"}),
        json!({"type": "chat", "text": "hello?", "case": case.id}),
        json!({"type": "admit", "participant": consumer}),
        json!({"type": "note", "text": "x", "scope": "staff"}),
        json!({"type": "propose_terms", "text": "refund"}),
        json!({"type": "leave"}),
        json!({"type": "consent", "kind": "recording", "given": true}),
    ] {
        c.err(msg.clone(), "not_joined")
            .await
            .unwrap_or_else(|e| panic!("{msg} before join: {e}"));
    }
    c.sync().await.expect("ping before join");

    // `case` naming another case than the token's, on join.
    c.err(
        json!({"type": "join", "token": case.mediator().token, "case": other.id}),
        "wrong_case",
    )
    .await
    .expect("join naming another case");
    c.sync().await.expect("ping after wrong-case join");

    // Joined: a second join, whatever its token, is refused.
    let w = c
        .request(json!({"type": "join", "token": case.mediator().token, "case": case.id}))
        .await
        .expect("join");
    assert_eq!(w["type"], "welcome", "{w}");
    let joined_head = head(&server, &case.id).await;
    for (what, token) in [
        ("same token", case.mediator().token.clone()),
        ("another participant's token", case.consumer().token.clone()),
        ("another case's token", other.mediator().token.clone()),
        ("garbage token", "garbage".to_owned()),
    ] {
        c.err(json!({"type": "join", "token": token}), "already_joined")
            .await
            .unwrap_or_else(|e| panic!("second join, {what}: {e}"));
    }

    // Joined: anything naming another case.
    for msg in [
        json!({"type": "chat", "text": "hi", "case": other.id}),
        json!({"type": "chat", "text": "hi", "case": "c_nosuchcase"}),
        json!({"type": "chat", "text": "hi", "case": ""}),
        json!({"type": "admit", "participant": other.consumer().participant, "case": other.id}),
        json!({"type": "note", "text": "x", "scope": "staff", "case": other.id}),
        json!({"type": "ping", "case": other.id}),
    ] {
        c.err(msg.clone(), "wrong_case")
            .await
            .unwrap_or_else(|e| panic!("{msg}: {e}"));
    }
    c.sync().await.expect("ping");
    assert_eq!(
        head(&server, &case.id).await,
        joined_head,
        "refused messages changed the case log"
    );
    assert_eq!(
        head(&server, &other.id).await,
        other_before,
        "the other case changed"
    );

    // Still the mediator of this case: naming it is fine.
    let seq = c
        .ok(json!({"type": "chat", "text": "right case", "case": case.id}))
        .await
        .expect("chat naming the right case");
    assert_eq!(seq, Some(joined_head + 1));
    assert!(joined_head > before, "the mediator's join was recorded");
    still_serving(&server, &case).await;
}

// ---------------------------------------------------------------------------------------------
// Roles and the lobby
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn roles_and_the_lobby_are_enforced() {
    let server = Server::embedded().await.expect("start server");
    let case = server.four_party_case().await.expect("case");
    let other = server.four_party_case().await.expect("second case");
    let consumer_id = case.consumer().participant.clone();
    let merchant_id = case.merchant().participant.clone();

    let mut staff = mediator(&server, &case).await;
    let (mut consumer, _) = Client::join(&server.ws_url(), &case.consumer().token, None)
        .await
        .expect("consumer joins");
    let (mut merchant, w) = Client::join(&server.ws_url(), &case.merchant().token, None)
        .await
        .expect("merchant joins");
    assert_eq!(w["status"], "lobby");
    staff
        .ok(json!({"type": "admit", "participant": consumer_id}))
        .await
        .expect("admit consumer");
    consumer.wait_event("admitted").await.expect("admitted");
    // Terms on the table, so a party's `confirm_terms` names real terms.
    staff
        .ok(json!({"type": "propose_terms", "text": "退款 500 元 (refund 500 yuan)"}))
        .await
        .expect("propose");
    let terms = consumer
        .wait_event("terms_proposed")
        .await
        .expect("terms seen")["terms"]
        .as_str()
        .expect("terms id")
        .to_owned();

    let before = head(&server, &case.id).await;
    let other_before = head(&server, &other.id).await;

    // An admitted party doing staff things.
    let staff_things = [
        json!({"type": "admit", "participant": merchant_id}),
        json!({"type": "deny", "participant": merchant_id}),
        json!({"type": "remove", "participant": merchant_id}),
        json!({"type": "note", "text": "the merchant is lying", "scope": "shared"}),
        json!({"type": "note", "text": "x", "scope": "staff"}),
        json!({"type": "note", "text": "x", "scope": "private"}),
        json!({"type": "caucus_start", "members": [merchant_id]}),
        json!({"type": "caucus_end", "caucus": "k1"}),
        json!({"type": "propose_terms", "text": "refund 5000 yuan"}),
        json!({"type": "record_outcome", "outcome": "settled"}),
        json!({"type": "record_outcome", "outcome": "failed", "reason": "x"}),
        json!({"type": "confirm_terms", "terms": terms}),
    ];
    for msg in &staff_things {
        consumer
            .err(msg.clone(), "forbidden")
            .await
            .unwrap_or_else(|e| panic!("admitted consumer {msg}: {e}"));
    }
    // The same from the lobby: still forbidden (the role decides first) ...
    for msg in staff_things.iter().take(10) {
        merchant
            .err(msg.clone(), "forbidden")
            .await
            .unwrap_or_else(|e| panic!("merchant in the lobby {msg}: {e}"));
    }
    // ... and what a party may do once admitted is refused in the lobby.
    for msg in [
        json!({"type": "chat", "text": "let me in"}),
        json!({"type": "accept_terms", "terms": terms}),
        json!({"type": "reject_terms", "terms": terms}),
    ] {
        merchant
            .err(msg.clone(), "not_admitted")
            .await
            .unwrap_or_else(|e| panic!("merchant in the lobby {msg}: {e}"));
    }

    // Staff doing party things.
    for msg in [
        json!({"type": "accept_terms", "terms": terms}),
        json!({"type": "reject_terms", "terms": terms}),
        json!({"type": "confirm_terms", "terms": terms}),
    ] {
        staff
            .err(msg.clone(), "forbidden")
            .await
            .unwrap_or_else(|e| panic!("mediator {msg}: {e}"));
    }

    // The mediator naming participants who are not in this case.
    let foreign = other.consumer().participant.clone();
    let foreign_staff = other.mediator().participant.clone();
    for msg in [
        json!({"type": "admit", "participant": foreign}),
        json!({"type": "admit", "participant": foreign_staff}),
        json!({"type": "admit", "participant": "p_nosuchperson"}),
        json!({"type": "deny", "participant": foreign}),
        json!({"type": "remove", "participant": foreign}),
        json!({"type": "caucus_start", "members": [foreign]}),
        json!({"type": "caucus_start", "members": [consumer_id, foreign]}),
        json!({"type": "caucus_end", "caucus": "k_nosuchcaucus"}),
        json!({"type": "accept_terms", "terms": "t_nosuchterms"}),
    ] {
        let expected = if msg["type"] == "accept_terms" {
            "forbidden"
        } else {
            "not_found"
        };
        staff
            .err(msg.clone(), expected)
            .await
            .unwrap_or_else(|e| panic!("mediator {msg}: {e}"));
    }

    consumer.sync().await.expect("consumer ping");
    merchant.sync().await.expect("merchant ping");
    staff.sync().await.expect("mediator ping");
    assert_eq!(
        head(&server, &case.id).await,
        before,
        "refused requests changed the case log"
    );
    assert_eq!(
        head(&server, &other.id).await,
        other_before,
        "the other case changed"
    );
    // Nobody in the other case was admitted.
    let (mut foreigner, w) = Client::join(&server.ws_url(), &other.consumer().token, None)
        .await
        .expect("foreign consumer joins");
    assert_eq!(w["status"], "lobby", "{w}");
    foreigner.sync().await.expect("ping");

    // The room is intact: the mediator admits the merchant, who can now chat.
    still_serving(&server, &case).await;
}

// ---------------------------------------------------------------------------------------------
// Flooding
// ---------------------------------------------------------------------------------------------

/// What came back from a flood.
#[derive(Debug, Default)]
struct FloodResult {
    answered: usize,
    rate_limited: usize,
    closed_with: Option<String>,
    connection_closed: bool,
}

impl FloodResult {
    /// Counts one message from the server; `false` once the connection has ended.
    fn tally(
        &mut self,
        next: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> bool {
        match next {
            Some(Ok(Message::Text(t))) => {
                let m: Value = serde_json::from_str(t.as_str()).expect("server sent JSON");
                match m["type"].as_str() {
                    Some("error") if m["code"] == "rate_limited" => self.rate_limited += 1,
                    Some("error") => panic!("unexpected error in a flood: {m}"),
                    Some("pong") | Some("ack") => self.answered += 1,
                    Some("closed") => self.closed_with = m["code"].as_str().map(str::to_owned),
                    _ => {}
                }
                true
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                self.connection_closed = true;
                false
            }
            Some(Ok(_)) => true,
        }
    }
}

/// Sends `n` frames made by `frame` as fast as possible and reads what comes back, until the
/// connection ends or stays quiet for 2 s.
///
/// The first 100 go out alone and the first `rate_limited` answer is awaited before the rest
/// follow: 100 is past the burst (60) but short of the consecutive-refusal count at which the
/// server closes the connection (200), so that answer is sure to arrive. Sending all at once
/// would also be a valid flood, but the server then sometimes resets the connection before its
/// answers are out (see `a_flooding_client_is_told_why_it_is_cut_off`), which would make this
/// test's "at least one rate_limited" flaky for a reason that test already covers.
async fn flood(raw: &mut Raw, n: usize, frame: impl Fn(usize) -> String) -> FloodResult {
    let warm = n.min(100);
    let mut r = FloodResult::default();
    for i in 0..warm {
        assert!(raw.send(Message::Text(frame(i).into())).await, "send");
    }
    while r.rate_limited == 0 && !r.connection_closed {
        let next = tokio::time::timeout(Duration::from_secs(10), raw.ws.next())
            .await
            .expect("an answer to the first 100 frames");
        r.tally(next);
    }
    if r.connection_closed {
        raw.closed = true;
        return r;
    }

    let (mut sink, mut stream) = (&mut raw.ws).split();
    let send = async {
        for i in warm..n {
            if sink.send(Message::Text(frame(i).into())).await.is_err() {
                break;
            }
        }
    };
    let read = async {
        while let Ok(next) = tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
            if !r.tally(next) {
                break;
            }
        }
    };
    tokio::join!(send, read);
    raw.closed = r.connection_closed;
    r
}

#[tokio::test]
async fn floods_are_rate_limited_and_others_unaffected() {
    let server = Server::embedded().await.expect("start server");
    let case = server.four_party_case().await.expect("case");
    let n = 300;

    // Pings, not joined.
    let mut pinger = Raw::connect(&server).await;
    let r = flood(&mut pinger, n, |i| {
        json!({"type": "ping", "id": format!("f{i}")}).to_string()
    })
    .await;
    assert!(
        r.rate_limited >= 1 || r.closed_with.as_deref() == Some("rate_limited"),
        "a ping flood was not rate limited: {r:?}"
    );
    assert!(r.answered >= 1, "nothing answered: {r:?}");
    assert!(r.answered + r.rate_limited <= n, "{r:?}");
    if let Some(code) = &r.closed_with {
        assert_eq!(code, "rate_limited", "{r:?}");
    }
    if !r.connection_closed {
        // Left open: it answers again once the bucket refills.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(pinger.ping("after").await, "no pong after the flood");
    }

    // Chats from a joined mediator: every acknowledged chat is stored, and nothing dropped is.
    let before = head(&server, &case.id).await;
    let mut chatter = Raw::join(&server, &case.mediator().token).await;
    let r = flood(&mut chatter, n, |i| {
        json!({"type": "chat", "text": format!("flood {i}"), "id": format!("c{i}")}).to_string()
    })
    .await;
    assert!(
        r.rate_limited >= 1 || r.closed_with.as_deref() == Some("rate_limited"),
        "a chat flood was not rate limited: {r:?}"
    );
    let stored = events(&server, &case.id)
        .await
        .into_iter()
        .filter(|e| e["seq"].as_u64() > Some(before) && e["kind"] == "chat")
        .count();
    assert!(
        stored >= r.answered,
        "acknowledged {} chats but stored {stored}",
        r.answered
    );
    assert!(
        stored <= n - r.rate_limited,
        "stored {stored} chats though {} were refused",
        r.rate_limited
    );
    if !r.connection_closed {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(chatter.ping("after").await, "no pong after the flood");
    }

    // Other clients were never affected.
    still_serving(&server, &case).await;
    let (status, body) = server
        .admin(
            Method::GET,
            &format!("/admin/cases/{}/verify", case.id),
            None,
        )
        .await
        .expect("verify");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["ok"], true,
        "the hash chain is intact after the flood: {body}"
    );
}

/// A client flooding far past the limit is cut off, and must be told why: the `closed` message
/// (code `rate_limited`) has to reach it before the connection ends. Today the server drops the
/// socket right after queuing the close while the client's unread frames are still in its
/// receive buffer, so the kernel answers with a TCP reset and the explanation (often with the
/// last errors) is lost.
#[tokio::test]
async fn a_flooding_client_is_told_why_it_is_cut_off() {
    let server = Server::embedded().await.expect("start server");
    let case = server.four_party_case().await.expect("case");
    for round in 0..10 {
        let mut raw = Raw::connect(&server).await;
        for i in 0..2000 {
            let ping = json!({"type": "ping", "id": format!("f{i}")}).to_string();
            if !raw.send(Message::Text(ping.into())).await {
                break;
            }
        }
        let closed = raw.wait_for(|m| m["type"] == "closed").await;
        assert!(
            closed.as_ref().is_some_and(|m| m["code"] == "rate_limited"),
            "round {round}: the flooding connection ended without a `closed` rate_limited \
             message (got {closed:?}); it was reset instead of closed"
        );
    }
    still_serving(&server, &case).await;
}
