//! The web client in a real browser: four people open their invite links in headless Chromium
//! and go through the device check (the parties' consent to online mediation, the measured
//! connection check, voice only), lobby, admit and deny, video, switching camera, chat, notes of
//! each visibility, caucus (media and chat hidden, a dropped connection inside it), the terms
//! flow (a rejection, then judicial confirmation), a dropped connection, video that cannot flow
//! (voice only), the removal of a participant, the outcome, and revoked, expired and broken links
//! (`tests/e2e/session.mjs`, playwright-core driving Debian's `/usr/bin/chromium`).
//!
//! Besides the case's four invites this mints a fifth person's link (the mediator denies them
//! from the lobby), a link that is then revoked, and an expired one (the consumer's claims
//! re-signed with the harness's secret and an expiry in the past).
//!
//! Needs the built client (`web-client/dist`, which `scripts/test.sh` builds before the Rust
//! tests) and `npm ci` in `tests/e2e`. Screenshots of each step land in `test-artifacts/e2e/`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use yuntiao_tests::server::JWT_SECRET;
use yuntiao_tests::{Case, Server};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test]
async fn four_people_in_chromium() {
    let root = root();
    let dist = root.join("web-client/dist/index.html");
    assert!(
        dist.exists(),
        "the web client is not built ({} is missing): run `cd web-client && npm ci && npm run build` \
         (scripts/test.sh does this before the Rust tests)",
        dist.display()
    );
    assert!(
        root.join("tests/e2e/node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci --prefix tests/e2e` (scripts/test.sh does this)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        PathBuf::from(&chromium).exists(),
        "{chromium} is missing: `apt-get install chromium` (scripts/test.sh does this)"
    );

    let server = Server::embedded().await.unwrap();
    let case = server.four_party_case().await.unwrap();
    let more = extra_links(&server, &case).await;
    let base = server.url("");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(root.join("tests/e2e/session.mjs"))
            .arg(&base)
            .args(case.invites.iter().map(|i| i.url.clone()))
            .args(more)
            .current_dir(&root)
            .output()
    })
    .await
    .unwrap()
    .expect("running node (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success(),
        "the browser test failed ({}); screenshots in test-artifacts/e2e/\n{stderr}",
        out.status
    );
    drop(server);
}

/// The links beyond the case's four: someone the mediator will deny from the lobby, a link
/// revoked before it is opened, and one that has expired.
async fn extra_links(server: &Server, case: &Case) -> [String; 3] {
    let denied = server
        .invite(&case.id, "consumer", "赵六", "2h")
        .await
        .expect("mint the invite of the person to be denied");

    // A second link for the consumer, revoked at once: only that link stops working.
    let (status, body) = server
        .admin(
            Method::POST,
            &format!("/admin/cases/{}/invites", case.id),
            Some(json!({"role": "consumer", "name": "张三", "participant": case.consumer().participant, "ttl": "1h"})),
        )
        .await
        .expect("re-issue the consumer's link");
    assert_eq!(status, 201, "{body}");
    let revoked = body["url"].as_str().expect("url").to_owned();
    let jti = body["jti"].as_str().expect("jti");
    let (status, body) = server
        .admin(
            Method::DELETE,
            &format!("/admin/cases/{}/invites/{jti}", case.id),
            None,
        )
        .await
        .expect("revoke");
    assert_eq!(status, 200, "{body}");

    // The consumer's own claims, expired two minutes ago (beyond the server's 30 s of skew).
    let genuine = &case.consumer().token;
    let payload = genuine.split('.').nth(1).expect("payload segment");
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url payload"),
    )
    .expect("JSON claims");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    claims["nbf"] = json!(now - 7200);
    claims["exp"] = json!(now - 120);
    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign the expired token");
    let expired = format!("{}#token={expired}", server.url("/join"));
    [denied.url, revoked, expired]
}
