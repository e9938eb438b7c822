//! Batched requests (server/src/rooms.rs, "Batches"): when several requests of one room are
//! queued, the room stores them with one append. These tests send bursts of requests without
//! waiting for the answers, so they queue up behind the first one's append, and check that the
//! outcome is exactly that of the same requests sent one at a time: the same answers in the same
//! order, the same events with the same seqs to each participant, by visibility. And that when
//! the store fails, no request of a batch is acknowledged and none of it is delivered or kept.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use yuntiao_tests::{Client, RedisServer, Server, StoreKind};

const QUIET: Duration = Duration::from_millis(300);

/// The four participants of a fresh case, everyone admitted, nothing pending.
struct Room {
    case: String,
    consumer_id: String,
    mediator: Client,
    others: Vec<(&'static str, Client)>,
}

async fn room(server: &Server) -> Room {
    let (case, [consumer, merchant, mut mediator, judge]) = server.four_admitted().await.unwrap();
    let mut others = vec![
        ("judge", judge),
        ("consumer", consumer),
        ("merchant", merchant),
    ];
    // Everything of the setup has arrived; start every log of received events afresh.
    mediator.sync().await.unwrap();
    mediator.drain(QUIET).await.unwrap();
    mediator.events.clear();
    for (_, c) in others.iter_mut() {
        c.sync().await.unwrap();
        c.drain(QUIET).await.unwrap();
        c.events.clear();
    }
    Room {
        case: case.id.clone(),
        consumer_id: case.consumer().participant.clone(),
        mediator,
        others,
    }
}

/// Sends `requests` with ids `b0`, `b1`, ... without waiting, then collects one answer per
/// request, checking that the answers arrive in the order the requests were sent.
async fn burst(c: &mut Client, requests: &[Value]) -> Vec<Value> {
    for (i, r) in requests.iter().enumerate() {
        let mut r = r.clone();
        r["id"] = json!(format!("b{i}"));
        c.send_text(r.to_string()).await.unwrap();
    }
    let mut answers = Vec::new();
    for i in 0..requests.len() {
        let a = c
            .wait_for(|m| m["id"].as_str().is_some_and(|id| id.starts_with('b')))
            .await
            .unwrap();
        assert_eq!(a["id"], json!(format!("b{i}")), "answers out of order");
        answers.push(a);
    }
    answers
}

/// Sends `requests` one at a time, waiting for each answer.
async fn one_by_one(c: &mut Client, requests: &[Value]) -> Vec<Value> {
    let mut answers = Vec::new();
    for r in requests {
        answers.push(c.request(r.clone()).await.unwrap());
    }
    answers
}

/// What an answer says, without its id: `ack <seq>` or `error <code>`.
fn outcome(a: &Value) -> String {
    match a["type"].as_str() {
        Some("ack") => format!("ack {}", a["seq"]),
        Some("error") => format!("error {}", a["code"].as_str().unwrap_or("?")),
        other => format!("{other:?}"),
    }
}

/// The events a client received, as `(seq, kind, text)`.
fn received(c: &Client) -> Vec<(u64, String, String)> {
    c.events
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap_or(0),
                e["kind"].as_str().unwrap_or("").to_owned(),
                e["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Requests that exercise what a batch must get right: record-only events ahead of a state
/// change (the caucus, the terms), refusals in the middle, and requests after a state change
/// that must see it (the chat after `caucus_start` goes to the caucus only).
fn mixed_requests(consumer: &str) -> Vec<Value> {
    vec![
        json!({"type": "chat", "text": "one"}),
        json!({"type": "note", "scope": "staff", "text": "two"}),
        json!({"type": "accept_terms", "terms": "t_none"}), // a mediator may not: forbidden
        json!({"type": "chat", "text": "   "}),             // empty: invalid_message
        json!({"type": "note", "scope": "private", "text": "three"}),
        json!({"type": "note", "scope": "shared", "text": "four"}),
        json!({"type": "caucus_start", "members": [consumer]}),
        json!({"type": "chat", "text": "in the caucus"}),
        json!({"type": "note", "scope": "shared", "text": "shared in the caucus"}),
        json!({"type": "propose_terms", "text": "refund 1,299 within 7 days"}),
        json!({"type": "chat", "text": "after the terms"}),
    ]
}

async fn batched_requests_behave_like_sequential_ones(store: StoreKind) {
    let store_is_embedded = matches!(store, StoreKind::Embedded);
    let server = Server::start(store, &[]).await.unwrap();
    let mut batched = room(&server).await;
    let mut sequential = room(&server).await;
    let requests = mixed_requests(&batched.consumer_id);
    let seq_requests = mixed_requests(&sequential.consumer_id);
    // Many rounds, so that some bursts really queue up behind an append.
    let mut all_batched = Vec::new();
    let mut all_sequential = Vec::new();
    for _ in 0..5 {
        all_batched.extend(burst(&mut batched.mediator, &requests).await);
        all_sequential.extend(one_by_one(&mut sequential.mediator, &seq_requests).await);
    }
    let a: Vec<String> = all_batched.iter().map(outcome).collect();
    let b: Vec<String> = all_sequential.iter().map(outcome).collect();
    assert_eq!(a, b);
    assert!(a.iter().any(|o| o == "error forbidden"), "{a:?}");
    assert!(a.iter().any(|o| o == "error invalid_message"), "{a:?}");

    for room in [&mut batched, &mut sequential] {
        room.mediator.sync().await.unwrap();
        for (_, c) in room.others.iter_mut() {
            c.sync().await.unwrap();
        }
    }
    assert_eq!(received(&batched.mediator), received(&sequential.mediator));
    for ((name, x), (_, y)) in batched.others.iter().zip(sequential.others.iter()) {
        assert_eq!(received(x), received(y), "{name}");
    }
    // Visibility held inside batches: the merchant never saw the caucus or staff/private notes.
    let merchant = &batched.others[2].1;
    let texts: Vec<String> = received(merchant).into_iter().map(|r| r.2).collect();
    for secret in ["two", "three", "in the caucus", "shared in the caucus"] {
        assert!(!texts.contains(&secret.to_owned()), "merchant got {secret}");
    }
    for public in ["one", "four"] {
        assert!(texts.contains(&public.to_owned()), "{texts:?}");
    }

    store_metrics_are_exposed(&server, store_is_embedded).await;

    // The stored records are the same too (and verify).
    for room in [&batched, &sequential] {
        let (status, body) = server
            .admin(
                Method::GET,
                &format!("/admin/cases/{}/verify", room.case),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

/// A sample's value on a `/metrics` page, by its full series name (with labels).
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// The embedded store's histograms on `/metrics` (its log's group commits, its checkpoints)
/// count what the store did: one log sync per group commit of the case store, a checkpoint
/// within a few seconds, cumulative buckets ending at the count. A Redis-backed server has
/// neither.
async fn store_metrics_are_exposed(server: &Server, embedded: bool) {
    let page = || async { server.metrics().await.unwrap() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut body = page().await;
    if !embedded {
        assert!(!body.contains("yuntiao_store_log_sync_seconds"), "{body}");
        assert!(!body.contains("yuntiao_store_checkpoint_seconds"), "{body}");
        return;
    }
    // Checkpoints run every second (or sooner with a large tail).
    while sample(
        &body,
        "yuntiao_store_checkpoint_seconds_count{store=\"cases\"}",
    )
    .unwrap_or(0.0)
        < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint counted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        body = page().await;
    }
    for name in [
        "yuntiao_store_log_sync_seconds",
        "yuntiao_store_checkpoint_seconds",
    ] {
        assert!(body.contains(&format!("# TYPE {name} histogram")), "{body}");
        for store in ["cases", "documents"] {
            let labels = format!("store=\"{store}\"");
            let count = sample(&body, &format!("{name}_count{{{labels}}}")).unwrap();
            let inf = sample(&body, &format!("{name}_bucket{{{labels},le=\"+Inf\"}}")).unwrap();
            assert_eq!(count, inf, "{name} {store}");
            let first = sample(&body, &format!("{name}_bucket{{{labels},le=\"0.0001\"}}")).unwrap();
            assert!(first <= inf, "{name} {store}: buckets not cumulative");
            assert!(sample(&body, &format!("{name}_sum{{{labels}}}")).unwrap() >= 0.0);
        }
    }
    // Every request of the bursts above was stored by some group commit of the case log; the
    // document store was not used.
    let commits = sample(
        &body,
        "yuntiao_store_log_sync_seconds_count{store=\"cases\"}",
    )
    .unwrap();
    assert!(commits >= 10.0, "{commits} log syncs counted");
    let docs = sample(
        &body,
        "yuntiao_store_log_sync_seconds_count{store=\"documents\"}",
    )
    .unwrap();
    assert_eq!(docs, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_requests_behave_like_sequential_ones_embedded() {
    batched_requests_behave_like_sequential_ones(StoreKind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_requests_behave_like_sequential_ones_redis() {
    let redis = RedisServer::start().unwrap();
    batched_requests_behave_like_sequential_ones(StoreKind::Redis(redis.url.clone())).await;
}

/// The store fails under a burst: no request of it is acknowledged, nothing of it is delivered
/// or kept, refusals keep their own codes, and the log continues without a gap afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_acknowledges_none_of_it() {
    let mut redis = RedisServer::start().unwrap();
    let server = Server::start(StoreKind::Redis(redis.url.clone()), &[])
        .await
        .unwrap();
    let mut room = room(&server).await;
    let before = room
        .mediator
        .ok(json!({"type": "note", "scope": "staff", "text": "before"}))
        .await
        .unwrap()
        .unwrap();
    room.mediator.sync().await.unwrap();
    for (_, c) in room.others.iter_mut() {
        c.sync().await.unwrap();
        c.events.clear();
    }

    redis.kill();
    let mut requests: Vec<Value> = (0..12)
        .map(|i| json!({"type": "note", "scope": "staff", "text": format!("lost {i}")}))
        .collect();
    requests.insert(5, json!({"type": "accept_terms", "terms": "t_none"}));
    requests.push(json!({"type": "chat", "text": "lost chat"}));
    let answers = burst(&mut room.mediator, &requests).await;
    let outcomes: Vec<String> = answers.iter().map(outcome).collect();
    for (i, o) in outcomes.iter().enumerate() {
        let expected = if i == 5 {
            "error forbidden"
        } else {
            "error store_unavailable"
        };
        assert_eq!(o, expected, "request {i}: {outcomes:?}");
    }
    for (name, c) in room.others.iter_mut() {
        c.drain(QUIET).await.unwrap();
        assert!(c.events.is_empty(), "{name} received {:?}", c.events);
    }

    redis.kill_and_restart().unwrap();
    let mut seq = None;
    for _ in 0..50 {
        let a = room
            .mediator
            .request(json!({"type": "note", "scope": "staff", "text": "after"}))
            .await
            .unwrap();
        if a["type"] == "ack" {
            seq = a["seq"].as_u64();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seq, Some(before + 1), "the failed batch took no seq");
    let (_, rec) = server
        .admin(Method::GET, &format!("/admin/cases/{}", room.case), None)
        .await
        .unwrap();
    let texts: Vec<&str> = rec["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert_eq!(texts, vec!["before", "after"]);
}
