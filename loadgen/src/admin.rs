//! The admin API calls the load generator needs: create a case, mint its invites.

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// The four roles of a benchmark room, in the order their connections are kept.
pub const ROLES: [&str; 4] = ["mediator", "judge", "consumer", "merchant"];

/// One participant of a created case, with the invite token that lets it join.
#[derive(Clone, Debug)]
pub struct Seat {
    pub participant: String,
    pub token: String,
}

/// A case ready to be joined: its id and one seat per role of [`ROLES`], in that order.
#[derive(Clone, Debug)]
pub struct PreparedRoom {
    pub case: String,
    pub seats: Vec<Seat>,
}

#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Admin> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(Admin {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.base, path);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = resp.status();
        let value: Value = resp
            .json()
            .await
            .with_context(|| format!("reading the answer to POST {path}"))?;
        if !status.is_success() {
            bail!(
                "POST {path}: {status} {} {}",
                value["code"].as_str().unwrap_or("?"),
                value["message"].as_str().unwrap_or("")
            );
        }
        Ok(value)
    }

    /// Creates a case with one participant per role.
    pub async fn create_case(&self, n: usize) -> anyhow::Result<String> {
        let participants: Vec<Value> = ROLES
            .iter()
            .map(|r| json!({"role": r, "name": format!("{r} {n}")}))
            .collect();
        let v = self
            .post(
                "/admin/cases",
                json!({"title": format!("loadgen room {n}"), "participants": participants}),
            )
            .await?;
        match v["case"].as_str() {
            Some(c) => Ok(c.to_owned()),
            None => bail!("create case: no `case` in the answer"),
        }
    }

    /// Mints the invite of the participant named `"{role} {n}"` in `case`.
    pub async fn invite(&self, case: &str, role: &'static str, n: usize) -> anyhow::Result<Seat> {
        let v = self
            .post(
                &format!("/admin/cases/{case}/invites"),
                json!({"role": role, "name": format!("{role} {n}"), "ttl": "2h"}),
            )
            .await?;
        let url = v["url"].as_str().unwrap_or("");
        let Some((_, token)) = url.split_once("#token=") else {
            bail!("invite: no token in the url");
        };
        let Some(participant) = v["participant"].as_str() else {
            bail!("invite: no participant in the answer");
        };
        Ok(Seat {
            participant: participant.to_owned(),
            token: token.to_owned(),
        })
    }
}
