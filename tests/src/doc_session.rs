//! A mediation in session for the document tests (`documents.rs`, `documents_more.rs`): a
//! four-party case with everyone joined and both parties admitted, its signaling clients kept
//! open, and the document URLs and admin reads those tests use.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::ydoc::{doc_url, YrsClient};
use crate::{Case, Client, Server, StoreKind};

/// A case with everyone joined and both parties admitted; the signaling clients stay open.
pub struct Session {
    pub server: Server,
    pub case: Case,
    pub mediator: Client,
    pub consumer: Client,
    pub merchant: Client,
    /// Kept open so the judge stays online.
    pub judge: Client,
}

/// Starts a server (`extra` arguments) and brings a four-party case into session on it.
pub async fn session(store: StoreKind, extra: &[&str]) -> Session {
    let server = Server::start(store, extra).await.unwrap();
    let (case, [consumer, merchant, mediator, judge]) = server.four_admitted().await.unwrap();
    Session {
        server,
        case,
        mediator,
        consumer,
        merchant,
        judge,
    }
}

impl Session {
    /// The agreement's (or another document's) websocket URL for `who`.
    pub fn url(&self, who: &crate::Invite, doc: &str) -> String {
        doc_url(self.server.port, &self.case.id, doc, &who.token)
    }

    /// The base URL the stock provider appends `/<doc>?token=…` to.
    pub fn node_base(&self) -> String {
        format!("ws://127.0.0.1:{}/docs/{}", self.server.port, self.case.id)
    }

    /// The mediator grants (or withdraws) `who`'s write access to the agreement.
    pub async fn grant(&mut self, who: &str, write: bool) {
        self.mediator
            .ok(json!({"type": "doc_permission", "doc": "agreement", "participant": who, "write": write}))
            .await
            .unwrap();
    }

    /// `GET /admin/cases/{case}/documents/agreement`: (status, body).
    pub async fn agreement(&self) -> (u16, Value) {
        self.server
            .admin(
                Method::GET,
                &format!("/admin/cases/{}/documents/agreement", self.case.id),
                None,
            )
            .await
            .unwrap()
    }

    /// The HTML export.
    pub async fn export(&self) -> String {
        let r = reqwest::Client::new()
            .get(
                self.server
                    .url(&format!("/admin/cases/{}/export", self.case.id)),
            )
            .bearer_auth(&self.server.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// Opens the agreement as `who` once the server serves it again (the store may still be
    /// coming back: `store_unavailable` closes are retried until a deadline).
    pub async fn open_when_back(&self, who: &crate::Invite) -> YrsClient {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut c = YrsClient::connect(&self.url(who, "agreement"))
                .await
                .unwrap();
            match c.wait_synced().await {
                Ok(()) => return c,
                Err(e) => {
                    assert_eq!(
                        c.closed,
                        Some((4503, "store_unavailable".into())),
                        "only the store may keep the document closed: {e}"
                    );
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the document did not come back"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}
