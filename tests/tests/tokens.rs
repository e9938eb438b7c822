//! Invite tokens and the admin API, against the real `yuntiao` binary over real websockets.
//!
//! DESIGN.md, decision 3: invite links are signed tokens; the algorithm is pinned (`none` and
//! algorithm switching are refused), revoked `jti` are kept in the store, and tokens are never
//! logged. "How we know it works": forged, expired or wrong-case tokens get a clear error and
//! change nothing.
//!
//! Every refused `join` below must answer `{"type":"error","code":...}` with its own code, leave
//! the connection usable (a `ping` still gets its `pong`) and append nothing to the case log
//! (`head_seq` of `GET /admin/cases/{case}` is unchanged). The odd tokens are built here: the
//! claims of a genuinely minted invite are decoded, one field is changed, and the result is
//! re-signed with the harness's HS256 secret (or another key, or another algorithm), so each
//! token differs from a valid one in exactly one respect. A re-signed but unchanged copy is
//! accepted, which shows the rejections are due to the change and not to the forging.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use yuntiao_tests::server::{binary, ADMIN_TOKEN, JWT_SECRET};
use yuntiao_tests::{Client, RedisServer, Server, StoreKind};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The claims of a token, read without verifying it.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload segment");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("payload is base64url");
    serde_json::from_slice(&bytes).expect("payload is JSON")
}

/// Signs `claims` with `alg` and `secret`.
fn sign(claims: &Value, alg: Algorithm, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret))
        .expect("sign test token")
}

/// Signs with the server's own algorithm and secret: a token the server would have minted.
fn sign_ok(claims: &Value) -> String {
    sign(claims, Algorithm::HS256, JWT_SECRET.as_bytes())
}

/// `header.payload` (already encoded) with a correct HS256 signature under the server's secret.
fn sign_raw(header_b64: &str, payload_b64: &str) -> String {
    let message = format!("{header_b64}.{payload_b64}");
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .expect("sign raw");
    format!("{message}.{sig}")
}

/// `claims` with `key` set to `value`.
fn with(claims: &Value, key: &str, value: Value) -> Value {
    let mut c = claims.clone();
    c[key] = value;
    c
}

/// The case's `head_seq` as the admin API reports it.
async fn head(server: &Server, case: &str) -> u64 {
    let (status, body) = server
        .admin(Method::GET, &format!("/admin/cases/{case}"), None)
        .await
        .expect("GET case record");
    assert_eq!(status, 200, "case record: {body}");
    body["head_seq"].as_u64().expect("head_seq")
}

/// Sends `join` with `token`, expects `error` with `code`, then checks the connection still
/// answers a ping and nothing was appended to `case`'s log.
async fn refused(server: &Server, c: &mut Client, case: &str, what: &str, token: &str, code: &str) {
    let before = head(server, case).await;
    let answer = c
        .request(json!({"type": "join", "token": token}))
        .await
        .unwrap_or_else(|e| panic!("{what}: no answer to join: {e}"));
    assert_eq!(answer["type"], "error", "{what}: {answer}");
    assert_eq!(answer["code"], code, "{what}: {answer}");
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{what}: error without a message");
    if token.len() > 8 {
        assert!(
            !message.contains(token),
            "{what}: the error repeats the token"
        );
    }
    c.sync()
        .await
        .unwrap_or_else(|e| panic!("{what}: connection unusable after a refused join: {e}"));
    assert_eq!(
        head(server, case).await,
        before,
        "{what}: the refused join changed the case log"
    );
}

/// A plain HTTP call with an arbitrary `Authorization` header (or none).
async fn call(
    http: &reqwest::Client,
    method: Method,
    url: String,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url);
    if let Some(a) = auth {
        req = req.header(reqwest::header::AUTHORIZATION, a);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("HTTP request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("HTTP body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

// ---------------------------------------------------------------------------------------------
// Forged, expired, misaddressed and damaged tokens
// ---------------------------------------------------------------------------------------------

async fn forged_tokens_are_refused(store: StoreKind) {
    let server = Server::start(store, &[]).await.expect("start server");
    let case = server.four_party_case().await.expect("case");
    let genuine = case.consumer().token.clone();
    let base = claims_of(&genuine);
    assert_eq!(base["aud"], server.url(""), "audience is the public URL");
    assert_eq!(base["iss"], "yuntiao");

    let [h, p, s]: [&str; 3] = genuine
        .split('.')
        .collect::<Vec<_>>()
        .try_into()
        .expect("three segments");
    let now = now();
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(base.to_string().as_bytes());
    let escalated = b64(with(&base, "role", json!("mediator"))
        .to_string()
        .as_bytes());
    let mut missing_case = base.clone();
    missing_case
        .as_object_mut()
        .expect("claims object")
        .remove("case");

    let cases: Vec<(&str, String, &str)> = vec![
        // Signature.
        (
            "signed with another secret",
            sign(
                &base,
                Algorithm::HS256,
                b"another-secret-0123456789abcdef012345",
            ),
            "token_signature",
        ),
        (
            "payload changed after signing (role escalation)",
            format!("{h}.{escalated}.{s}"),
            "token_signature",
        ),
        (
            "signature cut short",
            format!("{h}.{p}.{}", &s[..s.len() - 3]),
            "token_signature",
        ),
        ("empty signature", format!("{h}.{p}."), "token_signature"),
        // Algorithm.
        (
            "alg none, unsigned",
            format!("{none_header}.{payload}."),
            "token_algorithm",
        ),
        (
            "alg none with a signature",
            format!("{none_header}.{p}.{s}"),
            "token_algorithm",
        ),
        (
            "alg NoNe",
            format!("{}.{payload}.", b64(br#"{"alg":"NoNe","typ":"JWT"}"#)),
            "token_algorithm",
        ),
        (
            "no alg",
            format!("{}.{p}.{s}", b64(br#"{"typ":"JWT"}"#)),
            "token_algorithm",
        ),
        (
            "HS384, right secret",
            sign(&base, Algorithm::HS384, JWT_SECRET.as_bytes()),
            "token_algorithm",
        ),
        (
            "HS512, right secret",
            sign(&base, Algorithm::HS512, JWT_SECRET.as_bytes()),
            "token_algorithm",
        ),
        (
            "RS256 header on an HS256 signature",
            format!("{}.{p}.{s}", b64(br#"{"alg":"RS256","typ":"JWT"}"#)),
            "token_algorithm",
        ),
        (
            "EdDSA header on an HS256 signature",
            format!("{}.{p}.{s}", b64(br#"{"alg":"EdDSA","typ":"JWT"}"#)),
            "token_algorithm",
        ),
        // Time window (the server allows 30 s of clock skew).
        (
            "expired",
            sign_ok(&with(
                &with(&base, "exp", json!(now - 120)),
                "nbf",
                json!(now - 7200),
            )),
            "token_expired",
        ),
        (
            "not valid for another 5 minutes",
            sign_ok(&with(&base, "nbf", json!(now + 300))),
            "token_not_yet_valid",
        ),
        // Audience and issuer.
        (
            "another deployment's audience",
            sign_ok(&with(&base, "aud", json!("https://mediation.example.org"))),
            "token_audience",
        ),
        (
            "same host, another port",
            sign_ok(&with(&base, "aud", json!("http://127.0.0.1:1"))),
            "token_audience",
        ),
        (
            "another issuer",
            sign_ok(&with(&base, "iss", json!("someone-else"))),
            "token_issuer",
        ),
        // Damaged.
        ("garbage", "garbage".to_owned(), "token_malformed"),
        ("empty", String::new(), "token_malformed"),
        ("two parts", format!("{h}.{p}"), "token_malformed"),
        ("four parts", format!("{genuine}.{s}"), "token_malformed"),
        (
            "bad base64 everywhere",
            "!!!.@@@.###".to_owned(),
            "token_malformed",
        ),
        (
            "header is not JSON",
            format!("{}.{p}.{s}", b64(b"not json")),
            "token_malformed",
        ),
        (
            "signature is not base64",
            format!("{h}.{p}.***"),
            "token_malformed",
        ),
        (
            "payload is not base64 (signed)",
            sign_raw(h, "*** not base64 ***"),
            "token_malformed",
        ),
        (
            "payload is not JSON (signed)",
            sign_raw(h, &b64(b"{not json")),
            "token_malformed",
        ),
        (
            "signed, but no case claim",
            sign_ok(&missing_case),
            "token_malformed",
        ),
        (
            "the whole invite URL",
            case.consumer().url.clone(),
            "token_malformed",
        ),
    ];

    // All on one connection: a refused join must not poison it. (About two messages per token,
    // well within the default burst of 60.)
    let mut c = Client::connect(&server.ws_url()).await.expect("connect");
    for (what, token, code) in &cases {
        refused(&server, &mut c, &case.id, what, token, code).await;
    }

    // Positive control: the same claims re-signed by us, unchanged, are accepted on the very
    // connection that saw every refusal above.
    let before = head(&server, &case.id).await;
    let welcome = c
        .request(json!({"type": "join", "token": sign_ok(&base)}))
        .await
        .expect("join with re-signed genuine claims");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["participant"], case.consumer().participant);
    assert_eq!(welcome["role"], "consumer");
    assert_eq!(welcome["status"], "lobby");
    assert_eq!(
        head(&server, &case.id).await,
        before + 1,
        "a successful join appends one event"
    );
    c.sync().await.expect("ping after join");
}

#[tokio::test]
async fn forged_tokens_are_refused_embedded() {
    forged_tokens_are_refused(StoreKind::Embedded).await;
}

#[tokio::test]
async fn forged_tokens_are_refused_redis() {
    let redis = RedisServer::start().expect("start redis-server");
    forged_tokens_are_refused(StoreKind::Redis(redis.url.clone())).await;
}

// ---------------------------------------------------------------------------------------------
// Tokens checked against the case record
// ---------------------------------------------------------------------------------------------

async fn tokens_are_checked_against_the_case_record(store: StoreKind) {
    let server = Server::start(store, &[]).await.expect("start server");
    let case = server.four_party_case().await.expect("case");
    let other = server.four_party_case().await.expect("second case");
    let base = claims_of(&case.consumer().token);
    let mut c = Client::connect(&server.ws_url()).await.expect("connect");

    // A case that does not exist: refused, and not created as a side effect.
    let ghost = "c_doesnotexist0000";
    refused(
        &server,
        &mut c,
        &case.id,
        "well-signed token for a case that does not exist",
        &sign_ok(&with(&base, "case", json!(ghost))),
        "case_not_found",
    )
    .await;
    let (status, body) = server
        .admin(Method::GET, &format!("/admin/cases/{ghost}"), None)
        .await
        .expect("GET ghost case");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "case_not_found", "{body}");

    let merchant = case.merchant().participant.clone();
    let checks: Vec<(&str, Value, &str)> = vec![
        (
            "unknown role",
            with(&base, "role", json!("admin")),
            "token_role",
        ),
        ("empty role", with(&base, "role", json!("")), "token_role"),
        (
            "role in capitals",
            with(&base, "role", json!("Consumer")),
            "token_role",
        ),
        (
            "jti never issued",
            with(&base, "jti", json!("i_neverissued00000")),
            "token_unknown",
        ),
        // The consumer's invite, rewritten to claim more than it was issued for.
        (
            "consumer's jti, mediator role",
            with(&base, "role", json!("mediator")),
            "token_unknown",
        ),
        (
            "consumer's jti, judge role",
            with(&base, "role", json!("judge")),
            "token_unknown",
        ),
        (
            "consumer's jti, merchant's subject",
            with(&base, "sub", json!(merchant)),
            "token_unknown",
        ),
        // An invite of this case presented to another existing case.
        (
            "jti issued for another case",
            with(&base, "case", json!(other.id)),
            "token_unknown",
        ),
    ];
    let before = head(&server, &case.id).await;
    for (what, claims, code) in &checks {
        let case_id = claims["case"].as_str().expect("case claim").to_owned();
        refused(&server, &mut c, &case_id, what, &sign_ok(claims), code).await;
    }
    assert_eq!(head(&server, &case.id).await, before);

    // The genuine token still works on the same connection.
    let welcome = c
        .request(json!({"type": "join", "token": case.consumer().token}))
        .await
        .expect("join");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
}

#[tokio::test]
async fn tokens_are_checked_against_the_case_record_embedded() {
    tokens_are_checked_against_the_case_record(StoreKind::Embedded).await;
}

#[tokio::test]
async fn tokens_are_checked_against_the_case_record_redis() {
    let redis = RedisServer::start().expect("start redis-server");
    tokens_are_checked_against_the_case_record(StoreKind::Redis(redis.url.clone())).await;
}

// ---------------------------------------------------------------------------------------------
// Revocation
// ---------------------------------------------------------------------------------------------

async fn revoked_invites_are_refused_and_their_connections_closed(store: StoreKind) {
    let server = Server::start(store, &[]).await.expect("start server");
    let case = server.four_party_case().await.expect("case");
    let consumer = case.consumer().clone();

    let (mut mediator, _) = Client::join(&server.ws_url(), &case.mediator().token, None)
        .await
        .expect("mediator joins");
    let (mut party, welcome) = Client::join(&server.ws_url(), &consumer.token, None)
        .await
        .expect("consumer joins");
    assert_eq!(welcome["status"], "lobby");
    mediator
        .wait_event("participant_joined")
        .await
        .expect("mediator sees the consumer in the lobby");
    mediator
        .ok(json!({"type": "admit", "participant": consumer.participant}))
        .await
        .expect("admit");
    party
        .wait_event("admitted")
        .await
        .expect("consumer admitted");

    // A second invite for the same participant, used on a second connection: revoking the
    // first invite must close only the connection that used it.
    let (status, body) = server
        .admin(
            Method::POST,
            &format!("/admin/cases/{}/invites", case.id),
            Some(json!({"role": "consumer", "name": "张三", "participant": consumer.participant, "ttl": "1h"})),
        )
        .await
        .expect("re-issue");
    assert_eq!(status, 201, "{body}");
    let reissued = body["url"]
        .as_str()
        .expect("url")
        .split_once("#token=")
        .expect("fragment")
        .1
        .to_owned();
    let (mut second, _) = Client::join(&server.ws_url(), &reissued, None)
        .await
        .expect("consumer joins with the re-issued invite");

    let (status, body) = server
        .admin(
            Method::DELETE,
            &format!("/admin/cases/{}/invites/{}", case.id, consumer.jti),
            None,
        )
        .await
        .expect("revoke");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"], consumer.jti.as_str(), "{body}");

    // The connection that used the revoked invite is told why, at once, and closed.
    let closed = tokio::time::timeout(
        Duration::from_secs(3),
        party.wait_for(|m| m["type"] == "closed"),
    )
    .await
    .expect("`closed` within 3 s of the revocation")
    .expect("a `closed` message");
    assert_eq!(closed["code"], "token_revoked", "{closed}");
    let rest = party
        .drain(Duration::from_millis(500))
        .await
        .expect("drain");
    assert!(
        party.closed,
        "the revoked connection is closed; got {rest:?}"
    );

    // The connection with the other invite and the mediator are unaffected.
    second
        .sync()
        .await
        .expect("the re-issued invite's connection stays open");
    mediator.sync().await.expect("the mediator stays connected");
    second
        .ok(json!({"type": "chat", "text": "still here"}))
        .await
        .expect("chat");

    // Joining again with the revoked token is refused and changes nothing.
    let mut c = Client::connect(&server.ws_url()).await.expect("connect");
    refused(
        &server,
        &mut c,
        &case.id,
        "revoked invite",
        &consumer.token,
        "token_revoked",
    )
    .await;
    // Re-signing the revoked claims does not revive them.
    refused(
        &server,
        &mut c,
        &case.id,
        "revoked invite, re-signed with a later expiry",
        &sign_ok(&with(
            &claims_of(&consumer.token),
            "exp",
            json!(now() + 7200),
        )),
        "token_revoked",
    )
    .await;

    // Revoking again is a conflict and appends nothing.
    let before = head(&server, &case.id).await;
    let (status, body) = server
        .admin(
            Method::DELETE,
            &format!("/admin/cases/{}/invites/{}", case.id, consumer.jti),
            None,
        )
        .await
        .expect("revoke again");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "conflict", "{body}");
    assert_eq!(head(&server, &case.id).await, before);

    // The revocation is in the store: it survives a restart.
    let mut server = server;
    server.restart().await.expect("restart");
    let mut c = Client::connect(&server.ws_url())
        .await
        .expect("connect after restart");
    refused(
        &server,
        &mut c,
        &case.id,
        "revoked invite after a restart",
        &consumer.token,
        "token_revoked",
    )
    .await;
}

#[tokio::test]
async fn revoked_invites_are_refused_and_their_connections_closed_embedded() {
    revoked_invites_are_refused_and_their_connections_closed(StoreKind::Embedded).await;
}

#[tokio::test]
async fn revoked_invites_are_refused_and_their_connections_closed_redis() {
    let redis = RedisServer::start().expect("start redis-server");
    revoked_invites_are_refused_and_their_connections_closed(StoreKind::Redis(redis.url.clone()))
        .await;
}

// ---------------------------------------------------------------------------------------------
// Admin API
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn admin_api_requires_the_admin_token() {
    let server = Server::embedded().await.expect("start server");
    let case = server.four_party_case().await.expect("case");
    let http = reqwest::Client::new();
    let (_, list) = server
        .admin(Method::GET, "/admin/cases", None)
        .await
        .expect("list");
    let cases_before = list["cases"].as_array().map(Vec::len);
    let head_before = head(&server, &case.id).await;

    let wrong = format!("Bearer {ADMIN_TOKEN}x");
    let prefix = format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]);
    let basic = format!("Basic {ADMIN_TOKEN}");
    let bare = ADMIN_TOKEN.to_owned();
    let auths: Vec<Option<&str>> = vec![
        None,
        Some(""),
        Some("Bearer "),
        Some("Bearer wrong-token"),
        Some(&wrong),
        Some(&prefix),
        Some(&basic),
        Some(&bare),
    ];
    let endpoints: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/admin/cases".into(),
            Some(json!({"title": "intruder", "participants": []})),
        ),
        (Method::GET, "/admin/cases".into(), None),
        (Method::GET, format!("/admin/cases/{}", case.id), None),
        (
            Method::GET,
            format!("/admin/cases/{}/verify", case.id),
            None,
        ),
        (
            Method::POST,
            format!("/admin/cases/{}/invites", case.id),
            Some(json!({"role": "mediator", "name": "intruder"})),
        ),
        (
            Method::DELETE,
            format!("/admin/cases/{}/invites/{}", case.id, case.consumer().jti),
            None,
        ),
    ];
    for (method, path, body) in &endpoints {
        for auth in &auths {
            let (status, answer) =
                call(&http, method.clone(), server.url(path), *auth, body.clone()).await;
            assert_eq!(status, 401, "{method} {path} with {auth:?}: {answer}");
            assert_eq!(
                answer["code"], "unauthorized",
                "{method} {path} with {auth:?}: {answer}"
            );
            let text = answer.to_string();
            assert!(
                !text.contains(ADMIN_TOKEN),
                "the answer repeats the admin token"
            );
        }
    }

    // Nothing happened: no case created, no invite minted or revoked.
    let (_, list) = server
        .admin(Method::GET, "/admin/cases", None)
        .await
        .expect("list");
    assert_eq!(
        list["cases"].as_array().map(Vec::len),
        cases_before,
        "{list}"
    );
    assert_eq!(head(&server, &case.id).await, head_before);
    let (c, _) = Client::join(&server.ws_url(), &case.consumer().token, None)
        .await
        .expect("the invite an unauthorized caller tried to revoke still works");
    c.close().await;
}

#[tokio::test]
async fn admin_api_rejects_bad_invite_requests() {
    let server = Server::embedded().await.expect("start server");
    let case = server.four_party_case().await.expect("case");
    let invites = format!("/admin/cases/{}/invites", case.id);

    let before = head(&server, &case.id).await;
    for role in ["admin", "", "Mediator", "administrator"] {
        let (status, body) = server
            .admin(
                Method::POST,
                &invites,
                Some(json!({"role": role, "name": "x", "ttl": "1h"})),
            )
            .await
            .expect("mint");
        assert_eq!(status, 400, "role {role:?}: {body}");
        assert_eq!(body["code"], "invalid_message", "role {role:?}: {body}");
    }
    for (what, body) in [
        (
            "zero ttl",
            json!({"role": "consumer", "name": "x", "ttl": 0}),
        ),
        (
            "ttl over 90 days",
            json!({"role": "consumer", "name": "x", "ttl": "100d"}),
        ),
        (
            "ttl not a duration",
            json!({"role": "consumer", "name": "x", "ttl": "soon"}),
        ),
        ("no name", json!({"role": "consumer"})),
        ("not an object", json!(["consumer"])),
    ] {
        let (status, answer) = server
            .admin(Method::POST, &invites, Some(body))
            .await
            .expect("mint");
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(answer["code"], "invalid_message", "{what}: {answer}");
    }
    assert_eq!(
        head(&server, &case.id).await,
        before,
        "a refused mint changed the case log"
    );

    let (status, body) = server
        .admin(
            Method::DELETE,
            &format!("{invites}/i_neverissued00000"),
            None,
        )
        .await
        .expect("revoke unknown");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "not_found", "{body}");
    assert_eq!(
        head(&server, &case.id).await,
        before,
        "a refused revoke changed the case log"
    );

    // A case that does not exist: minting and revoking are refused and create nothing.
    let ghost = "c_doesnotexist0000";
    let (status, body) = server
        .admin(
            Method::POST,
            &format!("/admin/cases/{ghost}/invites"),
            Some(json!({"role": "consumer", "name": "x"})),
        )
        .await
        .expect("mint for ghost case");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "case_not_found", "{body}");
    let (status, body) = server
        .admin(
            Method::DELETE,
            &format!("/admin/cases/{ghost}/invites/{}", case.consumer().jti),
            None,
        )
        .await
        .expect("revoke in ghost case");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "case_not_found", "{body}");
    let (status, _) = server
        .admin(Method::GET, &format!("/admin/cases/{ghost}"), None)
        .await
        .expect("GET ghost");
    assert_eq!(status, 404);

    // The consumer's invite, revoked in the wrong case, is untouched.
    let (c, _) = Client::join(&server.ws_url(), &case.consumer().token, None)
        .await
        .expect("join");
    c.close().await;
}

// ---------------------------------------------------------------------------------------------
// The `yuntiao invite` command
// ---------------------------------------------------------------------------------------------

fn yuntiao_command() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary().expect("yuntiao binary"));
    // Only what the test passes on the command line counts.
    for (k, _) in std::env::vars() {
        if k.starts_with("YUNTIAO_") && k != "YUNTIAO_BIN" {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[tokio::test]
async fn cli_invite_prints_a_link_that_joins() {
    let server = Server::embedded().await.expect("start server");
    let case = server.four_party_case().await.expect("case");
    let base = server.url("");
    let data = tempfile::tempdir().expect("temp dir");

    let out = yuntiao_command()
        .args([
            "invite",
            "--server",
            &base,
            "--admin-token",
            ADMIN_TOKEN,
            "--data",
        ])
        .arg(data.path())
        .args([
            "--case", &case.id, "--role", "consumer", "--name", "赵六", "--ttl", "1h",
        ])
        .output()
        .await
        .expect("run yuntiao invite");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "yuntiao invite failed: {stderr}");
    let url = stdout
        .lines()
        .find(|l| l.contains("/join#token="))
        .unwrap_or_else(|| panic!("no invite URL in {stdout:?}"))
        .trim()
        .to_owned();
    assert!(url.starts_with(&format!("{base}/join#token=")), "{url}");
    let token = url.split_once("#token=").expect("fragment").1;
    let claims = claims_of(token);
    assert_eq!(claims["case"], case.id.as_str());
    assert_eq!(claims["role"], "consumer");
    assert_eq!(claims["name"], "赵六");
    let ttl = claims["exp"].as_i64().expect("exp") - claims["nbf"].as_i64().expect("nbf");
    assert!(
        (3590..=3610).contains(&ttl),
        "--ttl 1h gave a lifetime of {ttl} s"
    );

    let before = head(&server, &case.id).await;
    let (mut c, welcome) = Client::join(&server.ws_url(), token, None)
        .await
        .expect("the printed link joins");
    assert_eq!(welcome["role"], "consumer");
    assert_eq!(welcome["name"], "赵六");
    assert_eq!(welcome["status"], "lobby");
    assert_eq!(head(&server, &case.id).await, before + 1);
    c.sync().await.expect("ping");

    // Failures are reported with the server's code and a non-zero exit.
    let out = yuntiao_command()
        .args([
            "invite",
            "--server",
            &base,
            "--admin-token",
            "wrong-token",
            "--data",
        ])
        .arg(data.path())
        .args([
            "--case", &case.id, "--role", "consumer", "--name", "x", "--ttl", "1h",
        ])
        .output()
        .await
        .expect("run yuntiao invite");
    assert!(!out.status.success(), "a wrong admin token must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("/join#token="));

    let out = yuntiao_command()
        .args([
            "invite",
            "--server",
            &base,
            "--admin-token",
            ADMIN_TOKEN,
            "--data",
        ])
        .arg(data.path())
        .args([
            "--case", &case.id, "--role", "admin", "--name", "x", "--ttl", "1h",
        ])
        .output()
        .await
        .expect("run yuntiao invite");
    assert!(!out.status.success(), "an unknown role must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_message"));
}

// ---------------------------------------------------------------------------------------------
// Tokens never reach the log
// ---------------------------------------------------------------------------------------------

/// Kills the server this test started itself when the test ends, passing or failing.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

async fn wait_healthy(http: &reqwest::Client, base: &str, child: &mut Child, log: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "yuntiao exited during start-up ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "yuntiao did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn tokens_never_appear_in_the_server_log(level: &str) {
    // The harness lets the server inherit stderr, so this test runs the binary itself at the
    // given log level with both output streams going to a file.
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = dir.path().join("yuntiao.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(binary().expect("yuntiao binary"));
    for (k, _) in std::env::vars() {
        if k.starts_with("YUNTIAO_") && k != "YUNTIAO_BIN" {
            cmd.env_remove(k);
        }
    }
    cmd.arg("serve")
        .args(["--media-listen", "127.0.0.1:0"])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path().join("data"))
        .env("YUNTIAO_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("YUNTIAO_JWT_SECRET", JWT_SECRET)
        .env("YUNTIAO_LOG", level)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log);
    let mut child = Child(cmd.spawn().expect("start yuntiao"));
    let http = reqwest::Client::new();
    wait_healthy(&http, &base, &mut child, &log_path).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");

    let (status, body) = call(
        &http,
        Method::POST,
        format!("{base}/admin/cases"),
        Some(&auth),
        Some(json!({"title": "log check", "participants": [{"role": "consumer", "name": "张三"}]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let case = body["case"].as_str().expect("case").to_owned();
    let mut tokens = Vec::new();
    for role in ["consumer", "mediator"] {
        let (status, body) = call(
            &http,
            Method::POST,
            format!("{base}/admin/cases/{case}/invites"),
            Some(&auth),
            Some(json!({"role": role, "name": role, "ttl": "1h"})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let url = body["url"].as_str().expect("url");
        tokens.push((
            body["jti"].as_str().expect("jti").to_owned(),
            url.split_once("#token=").expect("fragment").1.to_owned(),
        ));
    }
    let (consumer_jti, valid) = tokens[0].clone();
    let mediator_token = tokens[1].1.clone();
    let forged = sign(
        &claims_of(&valid),
        Algorithm::HS256,
        b"another-secret-0123456789abcdef012345",
    );
    let expired = sign_ok(&with(&claims_of(&valid), "exp", json!(now() - 3600)));
    let ws = format!("ws://127.0.0.1:{port}/ws");

    // Valid joins, refused joins, and frames that carry a token but are otherwise bad.
    let (mut mediator, _) = Client::join(&ws, &mediator_token, None)
        .await
        .expect("mediator joins");
    let (mut consumer, _) = Client::join(&ws, &valid, None)
        .await
        .expect("consumer joins");
    consumer
        .err(json!({"type": "join", "token": valid}), "already_joined")
        .await
        .expect("second join");
    let mut c = Client::connect(&ws).await.expect("connect");
    c.err(json!({"type": "join", "token": forged}), "token_signature")
        .await
        .expect("forged");
    c.err(json!({"type": "join", "token": expired}), "token_expired")
        .await
        .expect("expired");
    c.err(
        json!({"type": "join", "token": valid, "resume_from": "x"}),
        "invalid_message",
    )
    .await
    .expect("bad resume_from");
    c.err(
        json!({"type": "join", "token": valid, "case": "c_other"}),
        "wrong_case",
    )
    .await
    .expect("join naming another case");
    c.send_text(format!("{{\"type\":\"join\",\"token\":\"{valid}\""))
        .await
        .expect("send");
    c.wait_for(|m| m["code"] == "malformed_json")
        .await
        .expect("truncated join");
    mediator
        .ok(json!({"type": "admit", "participant": consumer.participant}))
        .await
        .expect("admit");
    // Revocation closes the consumer's connection (and logs about it).
    let (status, body) = call(
        &http,
        Method::DELETE,
        format!("{base}/admin/cases/{case}/invites/{consumer_jti}"),
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    consumer
        .wait_for(|m| m["type"] == "closed")
        .await
        .expect("closed");
    c.err(json!({"type": "join", "token": valid}), "token_revoked")
        .await
        .expect("revoked");
    c.close().await;
    mediator.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(child);

    let text = std::fs::read_to_string(&log_path).expect("read log");
    // The log was captured at this level and saw the joins and refusals.
    assert!(text.contains("joined"), "{level} log not captured:\n{text}");
    assert!(
        text.contains("join refused"),
        "refusals not logged at {level}:\n{text}"
    );
    for (what, token) in [
        ("valid", &valid),
        ("forged", &forged),
        ("expired", &expired),
        ("mediator", &mediator_token),
    ] {
        assert!(
            !text.contains(token.as_str()),
            "the {what} token is in the server log at {level}"
        );
        // The signature alone is what makes a token usable.
        let sig = token.rsplit('.').next().expect("signature");
        assert!(
            !text.contains(sig),
            "the {what} token's signature is in the server log at {level}"
        );
        // Nor as a hex dump of a websocket frame.
        let hex: String = sig.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(
            !text.contains(&hex),
            "the {what} token's signature is in the server log at {level}, hex-encoded"
        );
    }
    assert!(
        !text.contains(ADMIN_TOKEN),
        "the admin token is in the server log"
    );
    assert!(
        !text.contains(JWT_SECRET),
        "the JWT secret is in the server log"
    );
}

#[tokio::test]
async fn tokens_never_appear_in_the_server_log_at_debug() {
    tokens_never_appear_in_the_server_log("debug").await;
}

/// "Tokens are never logged" holds at every level an operator can set. Today it does not at
/// `trace`: `YUNTIAO_LOG` applies to every crate, and tungstenite traces each received message
/// in full ("Received message {...\"token\":\"eyJ...\"}"), so every join's token (and every
/// chat and note) lands in the log.
#[tokio::test]
async fn tokens_never_appear_in_the_server_log_at_trace() {
    tokens_never_appear_in_the_server_log("trace").await;
}
