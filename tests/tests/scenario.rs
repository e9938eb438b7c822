//! The foundation scenario, end to end against the real binary, on both stores: four roles join
//! from four links, lobby and admit, chat fan-out, a caucus the merchant cannot see into, notes
//! of each visibility, the decision flow to judicial confirmation and the outcome, resume after
//! reconnect, and kill -9 with nothing acknowledged lost.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use yuntiao_tests::{Client, RedisServer, Server, StoreKind};

const QUIET: Duration = Duration::from_millis(300);

fn texts(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["text"].as_str().map(str::to_owned))
        .collect()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
        .collect()
}

async fn record(server: &Server, case: &str) -> Value {
    let (status, body) = server
        .admin(Method::GET, &format!("/admin/cases/{case}"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

async fn verify(server: &Server, case: &str) -> Value {
    let (status, body) = server
        .admin(Method::GET, &format!("/admin/cases/{case}/verify"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

async fn scenario(store: StoreKind) {
    let mut server = Server::start(store, &[]).await.unwrap();
    let case = server.four_party_case().await.unwrap();
    let url = server.ws_url();

    // Staff enter directly.
    let (mut mediator, w) = Client::join(&url, &case.mediator().token, None)
        .await
        .unwrap();
    assert_eq!(w["status"], "admitted");
    assert_eq!(w["role"], "mediator");
    assert_eq!(w["case"], case.id.as_str());
    let (mut judge, w) = Client::join(&url, &case.judge().token, None).await.unwrap();
    assert_eq!(w["status"], "admitted");
    let j = mediator
        .wait_for(|m| {
            m["kind"] == "participant_joined"
                && m["participant"] == case.judge().participant.as_str()
        })
        .await
        .unwrap();
    assert_eq!(j["joined_as"], "admitted");

    // Parties wait in the lobby and see nobody else.
    let (mut consumer, w) = Client::join(&url, &case.consumer().token, None)
        .await
        .unwrap();
    assert_eq!(w["status"], "lobby");
    let roster = w["roster"].as_array().unwrap();
    assert_eq!(
        roster.len(),
        1,
        "a lobby party sees only itself: {roster:?}"
    );
    let (mut merchant, w) = Client::join(&url, &case.merchant().token, None)
        .await
        .unwrap();
    assert_eq!(w["status"], "lobby");
    let lobby = mediator
        .wait_for(|m| {
            m["kind"] == "participant_joined"
                && m["participant"] == case.merchant().participant.as_str()
        })
        .await
        .unwrap();
    assert_eq!(lobby["joined_as"], "lobby");
    consumer
        .err(json!({"type": "chat", "text": "有人吗"}), "not_admitted")
        .await
        .unwrap();
    // The judge (staff) sees the lobby in the roster.
    judge.sync().await.unwrap();

    // Admit both; everyone sees the roster change.
    mediator
        .ok(json!({"type": "admit", "participant": case.consumer().participant}))
        .await
        .unwrap();
    let w = consumer.wait_for(|m| m["type"] == "welcome").await.unwrap();
    assert_eq!(w["status"], "admitted");
    assert!(w["roster"].as_array().unwrap().len() >= 3);
    mediator
        .ok(json!({"type": "admit", "participant": case.merchant().participant}))
        .await
        .unwrap();
    merchant.wait_for(|m| m["type"] == "welcome").await.unwrap();
    for c in [&mut judge, &mut consumer] {
        let a = c
            .wait_for(|m| {
                m["kind"] == "admitted" && m["participant"] == case.merchant().participant.as_str()
            })
            .await
            .unwrap();
        // The consumer never saw the merchant in the lobby: the event says who came in.
        assert_eq!(a["role"], "merchant");
        assert_eq!(a["name"], "某某电器店");
    }

    // Chat fans out to all four.
    let seq = consumer
        .ok(json!({"type": "chat", "text": "我要求全额退款"}))
        .await
        .unwrap()
        .unwrap();
    for c in [&mut mediator, &mut judge, &mut merchant, &mut consumer] {
        let e = c.wait_event("chat").await.unwrap();
        assert_eq!(e["seq"], seq);
        assert_eq!(e["text"], "我要求全额退款");
        assert_eq!(e["from"], case.consumer().participant.as_str());
    }

    // Caucus: mediator with the consumer. The merchant learns only that a caucus runs.
    let seq = mediator
        .ok(json!({"type": "caucus_start", "members": [case.consumer().participant]}))
        .await
        .unwrap()
        .unwrap();
    let inside = consumer.wait_event("caucus_started").await.unwrap();
    assert_eq!(inside["seq"], seq);
    assert_eq!(inside["members"].as_array().unwrap().len(), 2);
    let outside = merchant.wait_event("caucus_started").await.unwrap();
    assert!(outside.get("members").is_none(), "{outside}");
    assert!(outside.get("by").is_none(), "{outside}");
    let caucus = inside["caucus"].as_str().unwrap().to_owned();
    consumer
        .ok(json!({"type": "chat", "text": "私下说：八成退款我也能接受"}))
        .await
        .unwrap();
    mediator
        .ok(json!({"type": "note", "scope": "shared", "text": "消费者在背对背中表示可让步"}))
        .await
        .unwrap();
    let m1 = mediator.wait_event("chat").await.unwrap();
    assert_eq!(m1["visibility"]["to"], "caucus");
    consumer.wait_event("note_added").await.unwrap();
    mediator
        .ok(json!({"type": "caucus_end", "caucus": caucus}))
        .await
        .unwrap();
    merchant.wait_event("caucus_ended").await.unwrap();
    merchant.sync().await.unwrap();
    let merchant_seen = merchant.drain(QUIET).await.unwrap();
    for t in texts(&merchant.events) {
        assert!(
            !t.contains("八成") && !t.contains("背对背"),
            "caucus content leaked to the merchant: {t}"
        );
    }
    assert!(merchant_seen
        .iter()
        .all(|m| m["visibility"]["to"] != "caucus"));
    judge.sync().await.unwrap();
    assert!(
        texts(&judge.events).iter().all(|t| !t.contains("八成")),
        "a judge outside the caucus must not receive it"
    );

    // Notes of each visibility.
    mediator
        .ok(json!({"type": "note", "scope": "staff", "text": "STAFF: 商家态度强硬"}))
        .await
        .unwrap();
    mediator
        .ok(json!({"type": "note", "scope": "private", "text": "PRIVATE: 记得核对发票"}))
        .await
        .unwrap();
    mediator
        .ok(json!({"type": "note", "scope": "shared", "text": "SHARED: 双方同意继续调解"}))
        .await
        .unwrap();
    let staff_note = judge
        .wait_for(|m| m["kind"] == "note_added" && m["scope"] == "staff")
        .await
        .unwrap();
    assert_eq!(staff_note["text"], "STAFF: 商家态度强硬");
    for c in [&mut consumer, &mut merchant] {
        c.wait_for(|m| m["kind"] == "note_added" && m["text"] == "SHARED: 双方同意继续调解")
            .await
            .unwrap();
    }
    judge.sync().await.unwrap();
    for (who, c) in [
        ("consumer", &consumer),
        ("merchant", &merchant),
        ("judge", &judge),
    ] {
        assert!(
            texts(&c.events).iter().all(|t| !t.starts_with("PRIVATE")),
            "{who} received the mediator's private note"
        );
    }
    for (who, c) in [("consumer", &consumer), ("merchant", &merchant)] {
        assert!(
            texts(&c.events).iter().all(|t| !t.starts_with("STAFF")),
            "{who} received a staff note"
        );
    }

    // Decision flow: propose, both accept, judge confirms, mediator records the outcome.
    let terms_text = "商家于三日内退还货款的80%，即人民币800元。";
    mediator
        .ok(json!({"type": "propose_terms", "text": terms_text}))
        .await
        .unwrap();
    let proposed = consumer.wait_event("terms_proposed").await.unwrap();
    let terms = proposed["terms"].as_str().unwrap().to_owned();
    merchant.wait_event("terms_proposed").await.unwrap();
    judge
        .err(json!({"type": "confirm_terms", "terms": terms}), "conflict")
        .await
        .unwrap();
    consumer
        .ok(json!({"type": "accept_terms", "terms": terms}))
        .await
        .unwrap();
    mediator
        .err(json!({"type": "accept_terms", "terms": terms}), "forbidden")
        .await
        .unwrap();
    merchant
        .ok(json!({"type": "accept_terms", "terms": terms}))
        .await
        .unwrap();
    mediator
        .err(
            json!({"type": "confirm_terms", "terms": terms}),
            "forbidden",
        )
        .await
        .unwrap();
    judge
        .ok(json!({"type": "confirm_terms", "terms": terms}))
        .await
        .unwrap();
    mediator
        .ok(json!({"type": "record_outcome", "outcome": "settled"}))
        .await
        .unwrap();
    for c in [&mut consumer, &mut merchant, &mut judge] {
        let confirmed = c.wait_event("terms_confirmed").await.unwrap();
        assert_eq!(confirmed["text_hash"], proposed["text_hash"]);
        let outcome = c.wait_event("outcome_recorded").await.unwrap();
        assert_eq!(outcome["outcome"], "settled");
        assert_eq!(outcome["terms"], terms.as_str());
    }
    consumer
        .err(
            json!({"type": "reject_terms", "terms": terms}),
            "case_closed",
        )
        .await
        .unwrap();

    // Resume: the merchant drops off, things happen, it comes back from its last seq.
    merchant.sync().await.unwrap();
    let last = merchant.last_seq();
    let before: Vec<u64> = merchant
        .events
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    merchant.close().await;
    mediator
        .ok(json!({"type": "chat", "text": "商家掉线了，稍等"}))
        .await
        .unwrap();
    mediator
        .ok(json!({"type": "note", "scope": "staff", "text": "STAFF: 商家掉线"}))
        .await
        .unwrap();
    mediator
        .ok(json!({"type": "note", "scope": "shared", "text": "SHARED: 等待商家重连"}))
        .await
        .unwrap();
    let (mut merchant, w) = Client::join(&url, &case.merchant().token, Some(last))
        .await
        .unwrap();
    assert_eq!(w["status"], "admitted");
    merchant.sync().await.unwrap();
    let replayed = texts(&merchant.events);
    assert_eq!(replayed, vec!["商家掉线了，稍等", "SHARED: 等待商家重连"]);
    assert!(merchant.events.iter().all(
        |e| e["seq"].as_u64().unwrap() > last && !before.contains(&e["seq"].as_u64().unwrap())
    ));

    // A fresh join from the start replays the whole visible history, still filtered.
    let (mut merchant2, _) = Client::join(&url, &case.merchant().token, Some(0))
        .await
        .unwrap();
    merchant2.sync().await.unwrap();
    let all = texts(&merchant2.events);
    assert!(all.contains(&"我要求全额退款".to_owned()));
    assert!(all
        .iter()
        .all(|t| !t.starts_with("STAFF") && !t.starts_with("PRIVATE") && !t.contains("八成")));
    assert!(kinds(&merchant2.events).contains(&"caucus_started".to_owned()));

    // kill -9, restart: the whole record is still there and verifies.
    mediator.sync().await.unwrap();
    let head_before = record(&server, &case.id).await;
    let acked_head = head_before["head_seq"].as_u64().unwrap();
    server.kill9();
    server.restart().await.unwrap();
    let after = record(&server, &case.id).await;
    assert_eq!(after["head_seq"].as_u64().unwrap(), acked_head);
    assert_eq!(after["head_hash"], head_before["head_hash"]);
    assert_eq!(after["events"], head_before["events"]);
    let v = verify(&server, &case.id).await;
    assert_eq!(v["ok"], true, "{v}");

    // Clients reconnect and resume where they were; the room state survived (caucus ended,
    // outcome recorded, participants admitted).
    let last_consumer = {
        consumer.drain(QUIET).await.unwrap();
        consumer.last_seq()
    };
    let (mut consumer, w) = Client::join(&url, &case.consumer().token, Some(last_consumer))
        .await
        .unwrap();
    assert_eq!(w["status"], "admitted");
    assert_eq!(w["caucuses"].as_array().unwrap().len(), 0);
    consumer.sync().await.unwrap();
    assert!(consumer
        .events
        .iter()
        .all(|e| e["seq"].as_u64().unwrap() > last_consumer));
    let (mut mediator, _) = Client::join(&url, &case.mediator().token, Some(acked_head))
        .await
        .unwrap();
    consumer
        .ok(json!({"type": "chat", "text": "谢谢调解员"}))
        .await
        .unwrap();
    let e = mediator.wait_event("chat").await.unwrap();
    assert_eq!(e["seq"].as_u64().unwrap(), acked_head + 1);
    consumer
        .err(
            json!({"type": "accept_terms", "terms": terms}),
            "case_closed",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_embedded_store() {
    scenario(StoreKind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_redis_store() {
    let redis = RedisServer::start().unwrap();
    scenario(StoreKind::Redis(redis.url.clone())).await;
}

/// A client sends notes as fast as it can; the server is killed mid-stream. Every note that was
/// acknowledged is in the record after restart, in order, with a valid hash chain.
async fn kill9_loses_nothing_acknowledged(store: StoreKind) {
    let mut server = Server::start(store, &["--rate-limit", "10000", "--rate-burst", "10000"])
        .await
        .unwrap();
    let case = server.four_party_case().await.unwrap();
    let (mut mediator, _) = Client::join(&server.ws_url(), &case.mediator().token, None)
        .await
        .unwrap();
    // Pipeline 200 notes without waiting, then kill the server while acks are still coming.
    for i in 0..200 {
        mediator
            .send_text(json!({"type": "note", "scope": "staff", "id": format!("n{i}"), "text": format!("note {i}")}).to_string())
            .await
            .unwrap();
    }
    let mut acked: Vec<(String, u64)> = Vec::new();
    while acked.len() < 60 {
        let m = mediator.wait_for(|m| m["type"] == "ack").await.unwrap();
        acked.push((
            m["id"].as_str().unwrap().to_owned(),
            m["seq"].as_u64().unwrap(),
        ));
    }
    server.kill9();
    // Collect any acks that were already on the wire.
    while let Ok(m) = mediator.wait_for(|m| m["type"] == "ack").await {
        acked.push((
            m["id"].as_str().unwrap().to_owned(),
            m["seq"].as_u64().unwrap(),
        ));
    }
    server.restart().await.unwrap();
    let rec = record(&server, &case.id).await;
    let events = rec["events"].as_array().unwrap();
    for (id, seq) in &acked {
        let n: usize = id[1..].parse().unwrap();
        let e = events
            .iter()
            .find(|e| e["seq"].as_u64() == Some(*seq))
            .unwrap_or_else(|| panic!("acknowledged event {seq} lost"));
        assert_eq!(e["text"], format!("note {n}"));
    }
    assert!(acked.len() >= 60);
    assert_eq!(verify(&server, &case.id).await["ok"], true);
    // The log continues cleanly after the crash.
    let (mut mediator, _) = Client::join(&server.ws_url(), &case.mediator().token, None)
        .await
        .unwrap();
    let head = rec["head_seq"].as_u64().unwrap();
    let seq = mediator
        .ok(json!({"type": "note", "scope": "staff", "text": "after restart"}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seq, head + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_embedded_store() {
    kill9_loses_nothing_acknowledged(StoreKind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_redis_store() {
    let redis = RedisServer::start().unwrap();
    kill9_loses_nothing_acknowledged(StoreKind::Redis(redis.url.clone())).await;
}
