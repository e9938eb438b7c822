//! Shared documents (issue 4) against the real binary, on both stores: the stock Yjs client
//! (node, `yjs` + `y-websocket`) and a `yrs` client co-edit the agreement with Chinese text and
//! emoji and converge; read-only participants cannot write and a mediator's grant takes effect
//! live; caucus documents stay with the caucus; every edit anyone saw survives kill -9 (with
//! compaction into snapshots on the way); a late joiner gets the whole document; bad input
//! closes the connection with a clear code and stores nothing.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use yrs::sync::protocol::SyncMessage;
use yrs::sync::Message;
use yrs::updates::encoder::Encode;
use yuntiao_tests::doc_session::{session, Session};
use yuntiao_tests::ydoc::{doc_url, scratch_update, utf16_len, NodeYjsClient, YrsClient};
use yuntiao_tests::{RedisServer, Server, StoreKind};

const QUIET: Duration = Duration::from_millis(400);

/// A metric's value from `/metrics`.
async fn metric(server: &Server, name: &str) -> u64 {
    let body = server.metrics().await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .trim()
        .parse()
        .unwrap()
}

/// The UTF-16 offset of `needle` in `hay` (what JavaScript's indexOf returns).
fn utf16_index(hay: &str, needle: &str) -> u32 {
    let byte = hay.find(needle).expect("needle present");
    hay[..byte].encode_utf16().count() as u32
}

// ----- convergence between the stock Yjs client and yrs ----------------------------------------

async fn yjs_and_yrs_converge(store: StoreKind) {
    let mut s = session(store, &[]).await;
    let consumer_id = s.case.consumer().participant.clone();
    s.grant(&consumer_id, true).await;

    // The mediator types in the stock JavaScript client; the consumer (granted) in yrs; the
    // merchant (yrs) and the judge (JavaScript) read.
    let mut mediator = NodeYjsClient::start(&s.node_base(), "agreement", &s.case.mediator().token)
        .await
        .unwrap();
    mediator.wait_synced().await.unwrap();
    let mut consumer = YrsClient::connect_synced(&s.url(s.case.consumer(), "agreement"))
        .await
        .unwrap();
    let mut merchant = YrsClient::connect_synced(&s.url(s.case.merchant(), "agreement"))
        .await
        .unwrap();
    let mut judge = NodeYjsClient::start(&s.node_base(), "agreement", &s.case.judge().token)
        .await
        .unwrap();
    judge.wait_synced().await.unwrap();

    let head = "调解协议：";
    mediator.insert(0, head).await.unwrap();
    consumer.wait_text(|t| t == head).await.unwrap();

    // Concurrent edits from both implementations, at UTF-16 offsets past CJK text and emoji.
    let tail = "商家退款1299元😀。";
    let front = "🎉消费者退货；";
    mediator.insert(utf16_len(head), tail).await.unwrap();
    consumer.insert(0, front).await.unwrap();
    let both = |t: &str| t.contains(tail) && t.contains(front) && t.contains(head);
    let m_text = mediator.wait_text(both).await.unwrap();
    let c_text = consumer.wait_text(both).await.unwrap();
    let r_text = merchant.wait_text(both).await.unwrap();
    let j_text = judge.wait_text(both).await.unwrap();
    assert_eq!(m_text, c_text);
    assert_eq!(m_text, r_text);
    assert_eq!(m_text, j_text);
    assert!(!m_text.contains('\u{FFFD}'), "{m_text}");

    // yrs deletes the emoji by its UTF-16 offset and length (2 units); JavaScript agrees.
    let at = utf16_index(&c_text, "😀");
    consumer.delete(at, utf16_len("😀")).await.unwrap();
    let no_emoji = |t: &str| !t.contains('😀') && t.contains("1299元。");
    let m_text = mediator.wait_text(no_emoji).await.unwrap();
    assert_eq!(consumer.text(), m_text);
    assert_eq!(merchant.wait_text(no_emoji).await.unwrap(), m_text);
    // JavaScript deletes a CJK character by UTF-16 offset; yrs agrees.
    let at = utf16_index(&m_text, "退货");
    mediator.delete(at, 2).await.unwrap();
    let gone = |t: &str| !t.contains("退货");
    let c_text = consumer.wait_text(gone).await.unwrap();
    assert_eq!(mediator.wait_text(gone).await.unwrap(), c_text);
    assert_eq!(judge.wait_text(gone).await.unwrap(), c_text);
    assert_eq!(c_text, "🎉消费者；调解协议：商家退款1299元。");

    // A late joiner gets the whole document at once.
    let late = YrsClient::connect_synced(&s.url(s.case.judge(), "agreement"))
        .await
        .unwrap();
    assert_eq!(late.text(), c_text);
    mediator.quit().await;
    judge.quit().await;
}

#[tokio::test]
async fn yjs_and_yrs_converge_embedded() {
    yjs_and_yrs_converge(StoreKind::Embedded).await;
}

#[tokio::test]
async fn yjs_and_yrs_converge_redis() {
    let redis = RedisServer::start().unwrap();
    yjs_and_yrs_converge(StoreKind::Redis(redis.url.clone())).await;
}

// ----- read-only participants and live grants ------------------------------------------------

/// A grant is in force on the document connection by the time the grantee hears of it, and a
/// withdrawal likewise: the merchant types the instant each `doc_permission` event arrives, many
/// times over. (Before the room published the policy ahead of delivering the event, an edit
/// made at once could reach the document task first and be dropped as read-only, silently.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_in_force_when_announced() {
    let mut s = session(StoreKind::Embedded, &[]).await;
    let mut mediator = YrsClient::connect_synced(&s.url(s.case.mediator(), "agreement"))
        .await
        .unwrap();
    let mut merchant = YrsClient::connect_synced(&s.url(s.case.merchant(), "agreement"))
        .await
        .unwrap();
    let merchant_id = s.case.merchant().participant.clone();
    let mut expected = String::new();
    for round in 0..15 {
        s.grant(&merchant_id, true).await;
        s.merchant
            .wait_for(|m| m["kind"] == "doc_permission" && m["write"] == true)
            .await
            .unwrap();
        let word = format!("[{round}]");
        merchant.insert(utf16_len(&expected), &word).await.unwrap();
        expected.push_str(&word);
        mediator
            .wait_text(|t| t == expected)
            .await
            .unwrap_or_else(|e| panic!("round {round}: the edit made at the grant was lost: {e}"));

        s.grant(&merchant_id, false).await;
        s.merchant
            .wait_for(|m| m["kind"] == "doc_permission" && m["write"] == false)
            .await
            .unwrap();
        let dropped = metric(&s.server, "yuntiao_docs_dropped_read_only_total").await;
        merchant.insert(0, "x").await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while metric(&s.server, "yuntiao_docs_dropped_read_only_total").await < dropped + 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: an edit after the withdrawal was not dropped"
            );
            merchant.pump(Duration::from_millis(50)).await.unwrap();
        }
        // Resynchronise the merchant's replica with the server's document (its own "x" stays
        // local only), as a real client is by reconnecting.
        merchant = YrsClient::connect_synced(&s.url(s.case.merchant(), "agreement"))
            .await
            .unwrap();
        assert_eq!(merchant.text(), expected);
    }
    mediator.pump(QUIET).await.unwrap();
    assert_eq!(mediator.text(), expected);
}

#[tokio::test]
async fn read_only_edits_are_dropped_and_grants_apply_live() {
    let mut s = session(StoreKind::Embedded, &[]).await;
    let mut mediator = YrsClient::connect_synced(&s.url(s.case.mediator(), "agreement"))
        .await
        .unwrap();
    mediator.insert(0, "第一条").await.unwrap();
    let mut merchant = YrsClient::connect_synced(&s.url(s.case.merchant(), "agreement"))
        .await
        .unwrap();
    merchant.wait_text(|t| t == "第一条").await.unwrap();
    let stored = metric(&s.server, "yuntiao_docs_updates_stored_total").await;
    let dropped = metric(&s.server, "yuntiao_docs_dropped_read_only_total").await;

    // A read-only participant's edit is dropped, counted, stored nowhere and reaches nobody.
    merchant
        .send(Message::Sync(SyncMessage::Update(scratch_update(
            "商家改写",
        ))))
        .await
        .unwrap();
    merchant.pump(QUIET).await.unwrap();
    mediator.pump(QUIET).await.unwrap();
    assert_eq!(mediator.text(), "第一条");
    assert!(
        merchant.closed.is_none(),
        "read-only edits do not close the connection"
    );
    assert_eq!(
        metric(&s.server, "yuntiao_docs_dropped_read_only_total").await,
        dropped + 1
    );
    assert_eq!(
        metric(&s.server, "yuntiao_docs_updates_stored_total").await,
        stored
    );
    // The judge reads the agreement but may not write it either.
    let mut judge = YrsClient::connect_synced(&s.url(s.case.judge(), "agreement"))
        .await
        .unwrap();
    judge.insert(0, "法官").await.unwrap();
    judge.pump(QUIET).await.unwrap();
    mediator.pump(QUIET).await.unwrap();
    assert_eq!(mediator.text(), "第一条");

    // The mediator lets the merchant type: the same connection may now edit.
    let merchant_id = s.case.merchant().participant.clone();
    s.grant(&merchant_id, true).await;
    s.merchant.wait_event("doc_permission").await.unwrap();
    merchant.insert(3, "，商家同意").await.unwrap();
    mediator
        .wait_text(|t| t == "第一条，商家同意")
        .await
        .unwrap();

    // ... and takes it back: dropped again.
    s.grant(&merchant_id, false).await;
    s.merchant
        .wait_for(|m| m["kind"] == "doc_permission" && m["write"] == false)
        .await
        .unwrap();
    let dropped = metric(&s.server, "yuntiao_docs_dropped_read_only_total").await;
    merchant.insert(0, "撤回后").await.unwrap();
    merchant.pump(QUIET).await.unwrap();
    mediator.pump(QUIET).await.unwrap();
    assert_eq!(mediator.text(), "第一条，商家同意");
    assert_eq!(
        metric(&s.server, "yuntiao_docs_dropped_read_only_total").await,
        dropped + 1
    );
    // A fresh reader sees exactly what the mediator sees.
    let fresh = YrsClient::connect_synced(&s.url(s.case.consumer(), "agreement"))
        .await
        .unwrap();
    assert_eq!(fresh.text(), "第一条，商家同意");
}

// ----- caucus documents -------------------------------------------------------------------

#[tokio::test]
async fn caucus_documents_are_open_only_to_the_caucus() {
    let mut s = session(StoreKind::Embedded, &[]).await;
    let consumer_id = s.case.consumer().participant.clone();
    let started = s
        .mediator
        .ok(json!({"type": "caucus_start", "members": [consumer_id]}))
        .await
        .unwrap();
    assert!(started.is_some());
    let ev = s.consumer.wait_event("caucus_started").await.unwrap();
    let caucus = ev["caucus"].as_str().unwrap().to_owned();
    let doc = format!("caucus-{caucus}");

    let mut consumer = NodeYjsClient::start(&s.node_base(), &doc, &s.case.consumer().token)
        .await
        .unwrap();
    consumer.wait_synced().await.unwrap();
    let mut mediator = YrsClient::connect_synced(&s.url(s.case.mediator(), &doc))
        .await
        .unwrap();
    consumer.insert(0, "底线：退款八成").await.unwrap();
    mediator.wait_text(|t| t == "底线：退款八成").await.unwrap();
    mediator.insert(7, "（不告诉商家）").await.unwrap();
    consumer
        .wait_text(|t| t == "底线：退款八成（不告诉商家）")
        .await
        .unwrap();

    // The merchant and the judge (not a member) cannot open it; nothing of it reaches them.
    for who in [s.case.merchant(), s.case.judge()] {
        let mut c = YrsClient::connect(&s.url(who, &doc)).await.unwrap();
        let (code, reason) = c.wait_close().await.unwrap();
        assert_eq!((code, reason.as_str()), (4003, "forbidden"));
        assert_eq!(c.received, 0, "nothing of the caucus document was sent");
        assert_eq!(c.text(), "");
    }
    // A caucus that never ran has no document.
    let mut c = YrsClient::connect(&s.url(s.case.merchant(), "caucus-k9999"))
        .await
        .unwrap();
    assert_eq!(c.wait_close().await.unwrap(), (4004, "not_found".into()));

    // After the caucus ends its members keep their notes; the merchant still may not open them.
    s.mediator
        .ok(json!({"type": "caucus_end", "caucus": caucus}))
        .await
        .unwrap();
    let again = YrsClient::connect_synced(&s.url(s.case.consumer(), &doc))
        .await
        .unwrap();
    assert_eq!(again.text(), "底线：退款八成（不告诉商家）");
    let mut c = YrsClient::connect(&s.url(s.case.merchant(), &doc))
        .await
        .unwrap();
    assert_eq!(c.wait_close().await.unwrap().0, 4003);
    // The agreement is a different document: the caucus notes are not in it.
    let agreement = YrsClient::connect_synced(&s.url(s.case.merchant(), "agreement"))
        .await
        .unwrap();
    assert_eq!(agreement.text(), "");
    consumer.quit().await;
}

// ----- durability -----------------------------------------------------------------------------

async fn restart_keeps_every_edit(store: StoreKind) {
    // Compact every 25 updates, so the restart rebuilds from a snapshot plus a tail.
    let mut s = session(store, &["--doc-snapshot-every", "25"]).await;
    let mut writer = YrsClient::connect_synced(&s.url(s.case.mediator(), "agreement"))
        .await
        .unwrap();
    let mut reader = YrsClient::connect_synced(&s.url(s.case.judge(), "agreement"))
        .await
        .unwrap();
    let mut expected = String::new();
    for i in 0..120u32 {
        let piece = if i % 10 == 9 { "条😀\n" } else { "字" };
        writer.insert(utf16_len(&expected), piece).await.unwrap();
        expected.push_str(piece);
    }
    // What the reader received was broadcast, i.e. stored first.
    let seen = reader.wait_text(|t| t == expected).await.unwrap();
    // Compaction runs in the background; wait for the first snapshot to be written.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(&s.server, "yuntiao_docs_snapshots_total").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    s.server.kill9();
    s.server.restart().await.unwrap();
    let late = YrsClient::connect_synced(&s.url(s.case.merchant(), "agreement"))
        .await
        .unwrap();
    assert_eq!(late.text(), seen);
    let mut node = NodeYjsClient::start(&s.node_base(), "agreement", &s.case.consumer().token)
        .await
        .unwrap();
    assert_eq!(node.wait_text(|t| t == seen).await.unwrap(), seen);
    // Editing continues after the restart, on top of the rebuilt document.
    let mut writer = YrsClient::connect_synced(&s.url(s.case.mediator(), "agreement"))
        .await
        .unwrap();
    writer.insert(0, "重启后：").await.unwrap();
    let after = format!("重启后：{seen}");
    assert_eq!(node.wait_text(|t| t == after).await.unwrap(), after);
    node.quit().await;
}

#[tokio::test]
async fn restart_keeps_every_edit_embedded() {
    restart_keeps_every_edit(StoreKind::Embedded).await;
}

#[tokio::test]
async fn restart_keeps_every_edit_redis() {
    let redis = RedisServer::start().unwrap();
    restart_keeps_every_edit(StoreKind::Redis(redis.url.clone())).await;
}

// ----- bad input ------------------------------------------------------------------------------

async fn expect_close(url: &str, frame: Option<Vec<u8>>, code: u16, reason: &str) {
    let mut c = YrsClient::connect(url).await.unwrap();
    if let Some(bytes) = frame {
        c.wait_synced().await.unwrap();
        c.send_raw(bytes).await.unwrap();
    }
    let (got, why) = c.wait_close().await.unwrap();
    assert_eq!((got, why.as_str()), (code, reason), "{url}");
}

#[tokio::test]
async fn bad_input_closes_with_a_code_and_stores_nothing() {
    let mut s = session(StoreKind::Embedded, &["--doc-max-frame-bytes", "65536"]).await;
    let mut mediator = YrsClient::connect_synced(&s.url(s.case.mediator(), "agreement"))
        .await
        .unwrap();
    mediator.insert(0, "原文").await.unwrap();
    let mut reader = YrsClient::connect_synced(&s.url(s.case.consumer(), "agreement"))
        .await
        .unwrap();
    reader.wait_text(|t| t == "原文").await.unwrap();
    let stored = metric(&s.server, "yuntiao_docs_updates_stored_total").await;
    let writer_url = s.url(s.case.mediator(), "agreement");

    // Truncated: a sync update announcing 5 bytes and carrying none.
    expect_close(&writer_url, Some(vec![0, 2, 5]), 4400, "invalid_message").await;
    // A well-framed update whose payload is not a Yjs update.
    expect_close(
        &writer_url,
        Some(vec![0, 2, 3, 0xff, 0xff, 0xff]),
        4400,
        "invalid_message",
    )
    .await;
    // A sync message of an unknown kind.
    expect_close(&writer_url, Some(vec![0, 9, 0]), 4400, "invalid_message").await;
    // A message type y-websocket does not have.
    expect_close(&writer_url, Some(vec![7, 0]), 4400, "unknown_type").await;
    // An empty frame.
    expect_close(&writer_url, Some(vec![]), 4400, "invalid_message").await;
    // A valid update followed by garbage in the same frame: none of it applies.
    let mut frame = Message::Sync(SyncMessage::Update(scratch_update("半截"))).encode_v1();
    frame.extend_from_slice(&[0, 2, 200]);
    expect_close(&writer_url, Some(frame), 4400, "invalid_message").await;
    // Oversized.
    let mut big =
        Message::Sync(SyncMessage::Update(scratch_update(&"长".repeat(40_000)))).encode_v1();
    big.truncate(100_000);
    assert!(big.len() > 65_536);
    expect_close(&writer_url, Some(big), 1009, "frame_too_large").await;
    // A text frame.
    let mut c = YrsClient::connect_synced(&writer_url).await.unwrap();
    c.send_text_frame("{\"type\":\"update\"}").await.unwrap();
    assert_eq!(
        c.wait_close().await.unwrap(),
        (4400, "invalid_message".into())
    );

    // Documents that do not exist, tokens that do not fit.
    let port = s.server.port;
    let case = s.case.id.clone();
    let token = s.case.mediator().token.clone();
    expect_close(
        &doc_url(port, &case, "minutes", &token),
        None,
        4004,
        "not_found",
    )
    .await;
    expect_close(
        &doc_url(port, &case, "caucus-k1", &token),
        None,
        4004,
        "not_found",
    )
    .await;
    expect_close(
        &format!("ws://127.0.0.1:{port}/docs/{case}/agreement"),
        None,
        4001,
        "token_malformed",
    )
    .await;
    expect_close(
        &doc_url(port, &case, "agreement", "not.a.jwt"),
        None,
        4001,
        "token_malformed",
    )
    .await;
    let other = s.server.four_party_case().await.unwrap();
    expect_close(
        &doc_url(port, &other.id, "agreement", &token),
        None,
        4003,
        "wrong_case",
    )
    .await;
    // The other case's mediator never joined its room: a participant not admitted has no access.
    expect_close(
        &doc_url(port, &other.id, "agreement", &other.consumer().token),
        None,
        4003,
        "forbidden",
    )
    .await;

    // Nothing of all that was stored or reached anyone.
    reader.pump(QUIET).await.unwrap();
    assert_eq!(reader.text(), "原文");
    assert!(reader.closed.is_none());
    assert_eq!(
        metric(&s.server, "yuntiao_docs_updates_stored_total").await,
        stored
    );
    assert!(metric(&s.server, "yuntiao_docs_rejected_total").await >= 8);

    // Revoking an invite closes its document connections at once.
    let merchant_doc = YrsClient::connect_synced(&s.url(s.case.merchant(), "agreement")).await;
    let mut merchant_doc = merchant_doc.unwrap();
    let (status, body) = s
        .server
        .admin(
            Method::DELETE,
            &format!(
                "/admin/cases/{}/invites/{}",
                s.case.id,
                s.case.merchant().jti
            ),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        merchant_doc.wait_close().await.unwrap(),
        (4001, "token_revoked".into())
    );
    expect_close(
        &s.url(s.case.merchant(), "agreement"),
        None,
        4001,
        "token_revoked",
    )
    .await;

    // Removing a participant closes theirs.
    let consumer_id = s.case.consumer().participant.clone();
    s.mediator
        .ok(json!({"type": "remove", "participant": consumer_id}))
        .await
        .unwrap();
    assert_eq!(
        reader.wait_close().await.unwrap(),
        (4003, "forbidden".into())
    );
}

// ----- signed versions and the exported record ------------------------------------------------

fn sha256_hex(s: &str) -> String {
    yuntiao_signaling::event::sha256_hex(s.as_bytes())
}

#[tokio::test]
async fn parties_sign_the_agreement_text_and_the_export_shows_which_version() {
    let mut s = session(StoreKind::Embedded, &[]).await;
    let mut editor = NodeYjsClient::start(&s.node_base(), "agreement", &s.case.mediator().token)
        .await
        .unwrap();
    editor.wait_synced().await.unwrap();
    let agreed = "调解协议\n一、商家于三日内退还货款1299元；\n二、消费者退回电视机。<b>Both parties agree.</b> ✅";
    editor.insert(0, agreed).await.unwrap();
    let mut consumer_doc = YrsClient::connect_synced(&s.url(s.case.consumer(), "agreement"))
        .await
        .unwrap();
    consumer_doc.wait_text(|t| t == agreed).await.unwrap();

    // The mediator puts the agreement document's current text to the parties.
    s.mediator
        .ok(json!({"type": "propose_terms", "document": "agreement"}))
        .await
        .unwrap();
    let proposed = s.consumer.wait_event("terms_proposed").await.unwrap();
    assert_eq!(proposed["text"], agreed);
    assert_eq!(proposed["text_hash"], sha256_hex(agreed));
    assert_eq!(proposed["document"], "agreement");
    assert!(!proposed["doc_state"].as_str().unwrap().is_empty());
    let terms = proposed["terms"].as_str().unwrap().to_owned();

    // Each party signs exactly the text on their screen; a stale screen is refused.
    let on_screen = sha256_hex(&consumer_doc.text());
    s.consumer
        .ok(json!({"type": "accept_terms", "terms": terms, "text_hash": on_screen}))
        .await
        .unwrap();
    s.merchant
        .err(
            json!({"type": "accept_terms", "terms": terms, "text_hash": sha256_hex("旧版本")}),
            "conflict",
        )
        .await
        .unwrap();
    s.merchant
        .ok(json!({"type": "accept_terms", "terms": terms, "text_hash": sha256_hex(agreed)}))
        .await
        .unwrap();
    s.mediator
        .ok(json!({"type": "record_outcome", "outcome": "settled"}))
        .await
        .unwrap();

    // Export now: the signed text, who signed which hash, and that the document matches.
    let export = |s: &Session| {
        let url = s.server.url(&format!("/admin/cases/{}/export", s.case.id));
        let token = s.server.admin_token.clone();
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"));
            r.text().await.unwrap()
        }
    };
    let page = export(&s).await;
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<meta charset=\"utf-8\">"));
    assert!(page.contains("调解记录 Mediation record"));
    assert!(page.contains("网购退款纠纷 (refund dispute)"));
    assert!(page.contains("张三") && page.contains("某某电器店"));
    // The agreement text, escaped, with its hash and both signatures.
    assert!(page.contains("二、消费者退回电视机。&lt;b&gt;Both parties agree.&lt;/b&gt; ✅"));
    assert!(!page.contains("<b>Both"));
    assert!(page.matches(&sha256_hex(agreed)).count() >= 3);
    assert!(page.contains("接受并签署 Accepted and signed"));
    assert!(page.contains("哈希链校验通过 hash chain verified"));
    assert!(page.contains("still matches the signed text"));
    // Self-contained: no scripts, no external resources.
    assert!(!page.contains("<script"));
    assert!(!page.contains("src=") && !page.contains("href=") && !page.contains("url("));

    // A later edit shows that the signed version and the current one differ.
    editor.insert(0, "【修改】").await.unwrap();
    consumer_doc
        .wait_text(|t| t.starts_with("【修改】"))
        .await
        .unwrap();
    let (status, doc) = s
        .server
        .admin(
            Method::GET,
            &format!("/admin/cases/{}/documents/agreement", s.case.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["text"], format!("【修改】{agreed}"));
    assert_ne!(doc["text_hash"], sha256_hex(agreed));
    let page = export(&s).await;
    assert!(page.contains("was edited after signing"));
    assert!(page.contains("【修改】调解协议"));
    // The record still shows the version each party signed.
    let (_, record) = s
        .server
        .admin(Method::GET, &format!("/admin/cases/{}", s.case.id), None)
        .await
        .unwrap();
    let signed: Vec<&serde_json::Value> = record["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "terms_accepted")
        .collect();
    assert_eq!(signed.len(), 2);
    for e in signed {
        assert_eq!(e["text_hash"], sha256_hex(agreed));
    }
    // Unknown documents and unauthenticated exports are refused.
    let (status, _) = s
        .server
        .admin(
            Method::GET,
            &format!("/admin/cases/{}/documents/minutes", s.case.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
    let r = reqwest::get(s.server.url(&format!("/admin/cases/{}/export", s.case.id)))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    editor.quit().await;
}
