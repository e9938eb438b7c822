//! Configuration and operating conditions: dev-mode secrets, production refusal, EdDSA invite
//! tokens with key files, and a store outage (nothing acknowledged that was not stored).

use std::process::{Command, Stdio};

use base64::Engine;
use reqwest::Method;
use serde_json::json;
use yuntiao_tests::{server::binary, Client, RedisServer, Server, StoreKind};

#[tokio::test]
async fn dev_mode_generates_secrets_once_and_keeps_links_valid_across_restarts() {
    let mut server = Server::dev_mode().await.unwrap();
    let token = server.admin_token.clone();
    assert!(
        token.len() >= 32,
        "generated admin token is long: {}",
        token.len()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(server.data.path().join("secrets.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "secrets.json must not be readable by others"
        );
    }
    let case = server.four_party_case().await.unwrap();
    server.restart().await.unwrap();
    assert_eq!(
        server.admin_token, token,
        "the admin token survives a restart"
    );
    // A link minted before the restart still joins: the signing secret was kept.
    let (_c, w) = Client::join(&server.ws_url(), &case.mediator().token, None)
        .await
        .unwrap();
    assert_eq!(w["role"], "mediator");
    // A wrong admin token is refused.
    let r = reqwest::Client::new()
        .get(server.url("/admin/cases"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[test]
fn production_refuses_to_start_without_secrets() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(binary().unwrap())
        .args(["serve", "--production", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env_remove("YUNTIAO_ADMIN_TOKEN")
        .env_remove("YUNTIAO_JWT_SECRET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--production needs --admin-token"),
        "{stderr}"
    );
    assert!(
        !data.path().join("secrets.json").exists(),
        "production mode must not generate secrets"
    );
    // With an admin token but no signing secret: still refused.
    let out = Command::new(binary().unwrap())
        .args(["serve", "--production", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env("YUNTIAO_ADMIN_TOKEN", "a-long-enough-admin-token")
        .env_remove("YUNTIAO_JWT_SECRET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jwt-secret"));
}

#[tokio::test]
async fn eddsa_tokens_with_key_files() {
    let keys = tempfile::tempdir().unwrap();
    let private = keys.path().join("ed25519.pem");
    let public = keys.path().join("ed25519.pub.pem");
    let ok = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&private)
        .status()
        .unwrap()
        .success()
        && Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl could not generate an ed25519 key pair");
    let server = Server::start(
        StoreKind::Embedded,
        &[
            "--jwt-algorithm",
            "EdDSA",
            "--jwt-private-key",
            private.to_str().unwrap(),
            "--jwt-public-key",
            public.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let case = server.four_party_case().await.unwrap();
    let token = &case.mediator().token;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    let (_c, w) = Client::join(&server.ws_url(), token, None).await.unwrap();
    assert_eq!(w["status"], "admitted");

    // The same claims signed with HS256 (algorithm switching) are refused.
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&std::fs::read(&public).unwrap()),
    )
    .unwrap();
    let mut c = Client::connect(&server.ws_url()).await.unwrap();
    c.err(json!({"type": "join", "token": forged}), "token_algorithm")
        .await
        .unwrap();
}

/// While the store is down, requests are refused with `store_unavailable`, nothing is
/// acknowledged and `/readyz` says so; the record afterwards holds exactly the acknowledged events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_acknowledges_nothing() {
    let mut redis = RedisServer::start().unwrap();
    let server = Server::start(StoreKind::Redis(redis.url.clone()), &[])
        .await
        .unwrap();
    let case = server.four_party_case().await.unwrap();
    let (mut mediator, _) = Client::join(&server.ws_url(), &case.mediator().token, None)
        .await
        .unwrap();
    let acked = mediator
        .ok(json!({"type": "note", "scope": "staff", "text": "before the outage"}))
        .await
        .unwrap()
        .unwrap();
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    redis.kill();
    let e = mediator
        .request(json!({"type": "note", "scope": "staff", "text": "during the outage"}))
        .await
        .unwrap();
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "store_unavailable", "{e}");
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let (status, _) = server
        .admin(Method::POST, "/admin/cases", Some(json!({"title": "x"})))
        .await
        .unwrap();
    assert_eq!(status, 503);

    redis.kill_and_restart().unwrap();
    // The connection manager reconnects; the next request goes through.
    let mut seq = None;
    for _ in 0..50 {
        let a = mediator
            .request(json!({"type": "note", "scope": "staff", "text": "after the outage"}))
            .await
            .unwrap();
        if a["type"] == "ack" {
            seq = a["seq"].as_u64();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        seq,
        Some(acked + 1),
        "the refused note took no sequence number"
    );
    let (_, rec) = server
        .admin(Method::GET, &format!("/admin/cases/{}", case.id), None)
        .await
        .unwrap();
    let texts: Vec<&str> = rec["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert_eq!(texts, vec!["before the outage", "after the outage"]);
}

/// With TURN configured, the welcome carries time-limited coturn credentials:
/// `<expiry>:<participant>` and base64(HMAC-SHA1(secret, username)), as coturn checks them.
#[tokio::test]
async fn welcome_carries_turn_credentials() {
    let server = Server::start(
        StoreKind::Embedded,
        &[
            "--turn-url",
            "turn:turn.example.org:3478?transport=udp,turn:turn.example.org:3478?transport=tcp",
            "--turn-secret",
            "coturn-shared-secret",
            "--turn-ttl",
            "1h",
        ],
    )
    .await
    .unwrap();
    let case = server.four_party_case().await.unwrap();
    let (_c, w) = Client::join(&server.ws_url(), &case.consumer().token, None)
        .await
        .unwrap();
    let ice = &w["ice_servers"][0];
    assert_eq!(ice["urls"].as_array().unwrap().len(), 2);
    let username = ice["username"].as_str().unwrap();
    let (expiry, participant) = username.split_once(':').unwrap();
    assert_eq!(participant, case.consumer().participant);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expiry: i64 = expiry.parse().unwrap();
    assert!(
        (expiry - now - 3600).abs() < 60,
        "expiry {expiry} vs now {now}"
    );
    // The password as coturn computes it, via openssl.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf %s '{username}' | openssl dgst -sha1 -hmac coturn-shared-secret -binary | base64"
        ))
        .output()
        .unwrap();
    assert_eq!(
        ice["credential"].as_str().unwrap(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    // Without TURN configured the field is absent.
    let plain = Server::embedded().await.unwrap();
    let case = plain.four_party_case().await.unwrap();
    let (_c, w) = Client::join(&plain.ws_url(), &case.mediator().token, None)
        .await
        .unwrap();
    assert!(w.get("ice_servers").is_none());
}
