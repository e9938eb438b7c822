//! The case record is tamper-evident: the verify endpoint and the `yuntiao verify` command
//! recompute the hash chain of the log as stored, and a server that loads a tampered log refuses
//! to serve the case instead of building on it.

use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};
use yuntiao_tests::{server::binary, Client, RedisServer, Server, StoreKind};

fn cli_verify(server: &Server, case: &str) -> (bool, Value) {
    let out = Command::new(binary().unwrap())
        .args(["verify", "--server", &server.url(""), "--case", case])
        .env("YUNTIAO_ADMIN_TOKEN", &server.admin_token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.success(), v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_the_stored_log_is_detected() {
    let redis = RedisServer::start().unwrap();
    let mut server = Server::start(StoreKind::Redis(redis.url.clone()), &[])
        .await
        .unwrap();
    let case = server.four_party_case().await.unwrap();
    let (mut mediator, _) = Client::join(&server.ws_url(), &case.mediator().token, None)
        .await
        .unwrap();
    let seq = mediator
        .ok(json!({"type": "note", "scope": "shared", "text": "商家同意退款800元"}))
        .await
        .unwrap()
        .unwrap();
    mediator
        .ok(json!({"type": "chat", "text": "好的"}))
        .await
        .unwrap();

    let (ok, v) = cli_verify(&server, &case.id);
    assert!(ok, "{v}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["events"].as_u64().unwrap(), seq + 1);

    // Rewrite the note in Redis ("800" becomes "80"), keeping every other entry: the stream is
    // rebuilt with the same ids, as someone with access to Redis could do.
    let mut conn = redis.client().unwrap().get_connection().unwrap();
    let key = format!("yt:{{{}}}:log", case.id);
    type StreamEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;
    let entries: StreamEntries = {
        let raw: redis::Value = redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .query(&mut conn)
            .unwrap();
        redis::from_redis_value(raw).unwrap()
    };
    let _: () = redis::cmd("DEL").arg(&key).query(&mut conn).unwrap();
    for (id, fields) in entries {
        let data = String::from_utf8(fields[0].1.clone()).unwrap();
        let data = data.replace("800元", "80元");
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg(&id)
            .arg(&fields[0].0)
            .arg(data)
            .query(&mut conn)
            .unwrap();
    }

    let (ok, v) = cli_verify(&server, &case.id);
    assert!(!ok, "verify must fail on a tampered log: {v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["problem"], "bad_hash");
    assert_eq!(v["error"]["seq"].as_u64(), Some(seq));

    // A server loading the tampered log refuses the case rather than extending it.
    server.restart().await.unwrap();
    let mut c = Client::connect(&server.ws_url()).await.unwrap();
    let e = c
        .request(json!({"type": "join", "token": case.mediator().token}))
        .await
        .unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "internal");
    assert!(e["message"].as_str().unwrap().contains("verification"));
    let (status, _) = server
        .admin(Method::GET, &format!("/admin/cases/{}", case.id), None)
        .await
        .unwrap();
    assert_eq!(status, 500);
}
