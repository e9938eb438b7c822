//! The web client in a real browser: four people open their invite links in headless Chromium
//! and go through the device check (the parties' consent to online mediation, the measured
//! connection check, voice only), lobby, admit, video, switching camera, chat, caucus and the
//! terms flow to judicial confirmation, a dropped connection, and the removal of a participant
//! (`tests/e2e/session.mjs`, playwright-core driving Debian's `/usr/bin/chromium`).
//!
//! Needs the built client (`web-client/dist`, which `scripts/test.sh` builds before the Rust
//! tests) and `npm ci` in `tests/e2e`. Screenshots of each step land in `test-artifacts/e2e/`.

use std::path::PathBuf;
use std::process::Command;

use yuntiao_tests::Server;

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
    let base = server.url("");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(root.join("tests/e2e/session.mjs"))
            .arg(&base)
            .args(case.invites.iter().map(|i| i.url.clone()))
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
