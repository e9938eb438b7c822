//! The `yuntiao` binary: `serve`, `invite` and `verify`.

use anyhow::{bail, Context};
use clap::Parser;
use tracing_subscriber::EnvFilter;
use yuntiao_server::config::{AdminClientArgs, Cli, Command};

fn admin_token(args: &AdminClientArgs) -> anyhow::Result<String> {
    if let Some(t) = &args.admin_token {
        return Ok(t.clone());
    }
    match yuntiao_server::secrets::read_dev_secrets(&args.data_dir)? {
        Some(s) => Ok(s.admin_token),
        None => bail!(
            "no admin token: pass --admin-token (or YUNTIAO_ADMIN_TOKEN), or --data pointing at the server's data directory"
        ),
    }
}

async fn admin_call(
    args: &AdminClientArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let token = admin_token(args)?;
    let url = format!("{}{}", args.server.trim_end_matches('/'), path);
    let mut req = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("reaching {}", args.server))?;
    let status = resp.status();
    let value: serde_json::Value = resp.json().await.context("reading the server's answer")?;
    if !status.is_success() {
        bail!(
            "{} ({}): {}",
            value["code"].as_str().unwrap_or("error"),
            status,
            value["message"].as_str().unwrap_or("")
        );
    }
    Ok(value)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Whatever the operator asks for, libraries that would log message bodies or headers (and
    // so tokens) at debug/trace level are capped: tokens are never logged.
    let mut filter =
        EnvFilter::try_from_env("YUNTIAO_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    for quiet in [
        "tungstenite=info",
        "tokio_tungstenite=info",
        "hyper=info",
        "hyper_util=info",
        "h2=info",
        "reqwest=info",
    ] {
        filter = filter.add_directive(quiet.parse()?);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => yuntiao_server::server::serve(*args).await,
        Command::Invite(args) => {
            let mut body = serde_json::json!({"role": args.role, "name": args.name});
            if let Some(ttl) = &args.ttl {
                body["ttl"] = serde_json::Value::String(ttl.clone());
            }
            let path = format!("/admin/cases/{}/invites", args.case);
            let v = admin_call(&args.admin, reqwest::Method::POST, &path, Some(body)).await?;
            println!("{}", v["url"].as_str().unwrap_or(""));
            eprintln!(
                "expires {}  participant {}  invite id {}",
                v["expires_at"].as_str().unwrap_or("?"),
                v["participant"].as_str().unwrap_or("?"),
                v["jti"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        Command::Verify(args) => {
            let path = format!("/admin/cases/{}/verify", args.case);
            let v = admin_call(&args.admin, reqwest::Method::GET, &path, None).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            if v["ok"].as_bool() != Some(true) {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
